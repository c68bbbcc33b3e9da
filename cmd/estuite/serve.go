package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/server"
)

// DefaultAddr is where `estuite serve` listens by default.
const DefaultAddr = "127.0.0.1:2113"

func init() {
	register(command{
		name: "serve",
		summary: "Serve the store over HTTP and run the dispatcher.\n" +
			"With no flags: the embedded store in ./estuite-data, on " + DefaultAddr + ".\n" +
			"With a connection string: Azure Table Storage; several servers may share one account.\n" +
			"SIGTERM or SIGINT stops it cleanly: in-flight requests finish, the dispatcher stops.",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			var b backendFlags
			b.register(fs)
			addr := fs.String("addr", DefaultAddr, "address to listen on")
			token := fs.String("token", os.Getenv("ESTUITE_TOKEN"), "require Authorization: Bearer TOKEN on every endpoint but /healthz (default $ESTUITE_TOKEN)")
			insecure := fs.Bool("insecure", false, "allow listening on a non-loopback address without a token")
			logFormat := fs.String("log-format", "text", "log format: text or json")
			logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
			shutdownTimeout := fs.Duration("shutdown-timeout", 30*time.Second, "how long to wait for in-flight requests on shutdown")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 0 {
					return usagef("serve takes no arguments")
				}
				logger, err := newLogger(e, *logFormat, *logLevel)
				if err != nil {
					return err
				}
				if *token == "" && !*insecure && !isLoopback(*addr) {
					return usagef("refusing to listen on %s without a token: set --token (or ESTUITE_TOKEN), or pass --insecure", *addr)
				}
				return serve(ctx, logger, &b, *addr, *token, *shutdownTimeout)
			}
		},
	})
}

func serve(ctx context.Context, logger *slog.Logger, b *backendFlags, addr, token string, shutdownTimeout time.Duration) error {
	store, err := b.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	srv, err := server.New(server.Options{Store: store, Token: token, Logger: logger})
	if err != nil {
		return err
	}
	dispatcher := estuite.NewDispatcher(store, &estuite.DispatcherOptions{
		OnStep: func(st estuite.DispatchStats, err error) {
			srv.ObserveDispatch(st, err)
			if err != nil && ctx.Err() == nil {
				logger.Warn("dispatch step failed", "error", err)
			}
		},
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	httpServer := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	if err := dispatcher.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- httpServer.Serve(ln) }()
	logger.Info("estuite serving", "addr", ln.Addr().String(), "backend", b.describe(), "auth", token != "")

	select {
	case err = <-served:
	case <-ctx.Done():
		logger.Info("shutting down")
	}
	srv.Close() // end live feeds, so that Shutdown need not wait for them
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if serr := httpServer.Shutdown(sctx); serr != nil && err == nil {
		err = fmt.Errorf("shutting down the HTTP server: %w", serr)
	}
	if derr := dispatcher.Stop(); derr != nil && err == nil {
		err = fmt.Errorf("stopping the dispatcher: %w", derr)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	logger.Info("stopped", "error", err)
	return err
}

// isLoopback reports whether addr (host:port) listens on loopback addresses only.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func newLogger(e *env, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("log level %q: %v", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(e.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(e.stderr, opts)), nil
	}
	return nil, usagef("log format %q: want text or json", format)
}
