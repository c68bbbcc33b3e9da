// Command quickstart appends events to a stream in the embedded store (./estuite-data) and reads
// them back. Run it twice: the second run finds the first run's commit already there and answers
// it as a duplicate, because commits are idempotent.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"path/filepath"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table/bolt"
)

func main() {
	dir := flag.String("data", "estuite-data", "directory of the embedded store")
	flag.Parse()
	ctx := context.Background()

	backend, err := bolt.Open(filepath.Join(*dir, "estuite.db"), nil)
	if err != nil {
		log.Fatal(err)
	}
	store, err := estuite.Open(ctx, backend, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	res, err := store.Append(ctx, "order-42", []estuite.EventData{
		{Type: "OrderPlaced", Data: []byte(`{"customer":"c-7","total":"12.50"}`), Metadata: []byte(`{"correlationId":"quickstart"}`)},
		{Type: "OrderPaid", Data: []byte(`{"amount":"12.50"}`)},
	}, &estuite.AppendOptions{CommitID: "quickstart-order-42"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("append: versions %d–%d of %q (commit %s, duplicate: %v)\n", res.FirstVersion, res.LastVersion, res.Stream, res.CommitID, res.Duplicate)

	// An append that expects a version the stream no longer has is refused.
	_, err = store.Append(ctx, "order-42", []estuite.EventData{{Type: "OrderPlaced"}}, &estuite.AppendOptions{Expected: estuite.NoStream})
	var wrong *estuite.WrongExpectedVersionError
	if errors.As(err, &wrong) {
		fmt.Printf("refused: expected no stream, actual version %d\n", wrong.Actual)
	}

	read, err := store.Read(ctx, "order-42", nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("stream %q is at version %d:\n", read.Stream, read.Version)
	for ev, err := range read.Events {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("  %d %-12s %s  recorded %s\n", ev.Version, ev.Type, ev.Data, ev.RecordedAt.Format("2006-01-02 15:04:05.000000"))
	}
	fmt.Printf("storage requests: %+v\n", store.RequestCounts())
}
