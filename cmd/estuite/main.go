// Command estuite serves an Estuite event store over HTTP and runs the dispatcher, and offers
// operators commands to append, read, follow the feed and verify a store.
//
//	estuite serve                  # the embedded store in ./estuite-data on 127.0.0.1:2113
//	estuite append STREAM TYPE [JSON]
//	estuite read STREAM
//	estuite feed [--after P] [--follow]
//	estuite verify [--repair]
//	estuite groups | group GROUP | parked GROUP
//	estuite parked replay|discard GROUP (--all | SHARD:POSITION ...)
//
// Every command takes the same backend flags; `estuite COMMAND --help` lists them.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
