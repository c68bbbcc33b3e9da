package estuite_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table/mem"
)

// A snapshot of an aggregate's state saved with the append that brings it there, then a load that
// reads the snapshot and only the events after it.
func ExampleAppendOptions_snapshot() {
	ctx := context.Background()
	store, err := estuite.Open(ctx, mem.New(nil), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	deposit := func(n int) estuite.EventData {
		return estuite.EventData{Type: "Deposited", Data: fmt.Appendf(nil, `{"amount":%d}`, n)}
	}
	// The state after these events is a balance of 30; schema 1 is how the state is encoded.
	res, err := store.Append(ctx, "account-1", []estuite.EventData{deposit(10), deposit(20)}, &estuite.AppendOptions{
		Snapshot: &estuite.Snapshot{Schema: 1, Data: []byte(`{"balance":30}`)},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("snapshot saved at version", res.LastVersion, res.SnapshotSaved)
	if _, err := store.Append(ctx, "account-1", []estuite.EventData{deposit(5)}, nil); err != nil {
		log.Fatal(err)
	}

	read, err := store.Read(ctx, "account-1", &estuite.ReadOptions{WithSnapshot: true, SnapshotSchema: 1})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("snapshot at version %d: %s\n", read.Snapshot.Version, read.Snapshot.Data)
	for ev, err := range read.Events {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("then", ev.Version, ev.Type, string(ev.Data))
	}
	// Output:
	// snapshot saved at version 2 true
	// snapshot at version 2: {"balance":30}
	// then 3 Deposited {"amount":5}
}

// Read-your-writes without a subscription: wait for an append's last event to reach the feed, and
// learn its position (a projection whose checkpoint reaches it has seen the append).
func ExampleStore_WaitDispatched() {
	ctx := context.Background()
	store, err := estuite.Open(ctx, mem.New(nil), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	d := estuite.NewDispatcher(store, nil)
	if err := d.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer d.Stop()

	res, err := store.Append(ctx, "order-9", []estuite.EventData{{Type: "OrderPlaced", Data: []byte(`{}`)}}, nil)
	if err != nil {
		log.Fatal(err)
	}
	wait, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	pos, err := store.WaitDispatched(wait, "order-9", res.LastVersion)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("in the feed at position", pos)
	// Output:
	// in the feed at position 1
}
