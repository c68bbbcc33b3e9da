package estuite_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table/mem"
)

// A store on the memory backend: append to a stream, then read it back.
func Example() {
	ctx := context.Background()
	store, err := estuite.Open(ctx, mem.New(nil), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	res, err := store.Append(ctx, "order-42", []estuite.EventData{
		{Type: "OrderPlaced", Data: []byte(`{"total":12}`)},
		{Type: "OrderPaid", Data: []byte(`{"amount":12}`)},
	}, &estuite.AppendOptions{Expected: estuite.NoStream})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("appended versions %d to %d\n", res.FirstVersion, res.LastVersion)

	read, err := store.Read(ctx, "order-42", nil)
	if err != nil {
		log.Fatal(err)
	}
	for ev, err := range read.Events {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(ev.Version, ev.Type, string(ev.Data))
	}
	// Output:
	// appended versions 1 to 2
	// 1 OrderPlaced {"total":12}
	// 2 OrderPaid {"amount":12}
}

// Optimistic concurrency: an append that expects a version the stream no longer has is refused
// with the actual version.
func ExampleStore_Append_expectedVersion() {
	ctx := context.Background()
	store, _ := estuite.Open(ctx, mem.New(nil), nil)
	defer store.Close()

	placed := []estuite.EventData{{Type: "OrderPlaced", Data: []byte(`{}`)}}
	store.Append(ctx, "order-7", placed, nil)

	_, err := store.Append(ctx, "order-7", placed, &estuite.AppendOptions{Expected: estuite.NoStream})
	var wrong *estuite.WrongExpectedVersionError
	if errors.As(err, &wrong) {
		fmt.Println("refused; the stream is at version", wrong.Actual)
	}
	// Output:
	// refused; the stream is at version 1
}

// Idempotent commits: retrying an append with its commit ID returns the original result and
// writes nothing, even after the stream moved on.
func ExampleStore_Append_idempotentRetry() {
	ctx := context.Background()
	store, _ := estuite.Open(ctx, mem.New(nil), nil)
	defer store.Close()

	pay := []estuite.EventData{{Type: "PaymentReceived", Data: []byte(`{"amount":5}`)}}
	opts := &estuite.AppendOptions{CommitID: "payment-123"}
	first, _ := store.Append(ctx, "account-9", pay, opts)
	store.Append(ctx, "account-9", []estuite.EventData{{Type: "Other"}}, nil)
	retry, _ := store.Append(ctx, "account-9", pay, opts)

	fmt.Println(first.LastVersion, first.Duplicate)
	fmt.Println(retry.LastVersion, retry.Duplicate)
	// Output:
	// 1 false
	// 1 true
}

// Reading the last events of a stream, newest first.
func ExampleStore_Read_backward() {
	ctx := context.Background()
	store, _ := estuite.Open(ctx, mem.New(nil), nil)
	defer store.Close()
	for i := 1; i <= 5; i++ {
		store.Append(ctx, "log", []estuite.EventData{{Type: "Tick", Data: []byte(fmt.Sprint(i))}}, nil)
	}

	read, _ := store.Read(ctx, "log", &estuite.ReadOptions{Direction: estuite.Backward, Limit: 2})
	for ev, err := range read.Events {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(ev.Version, string(ev.Data))
	}
	// Output:
	// 5 5
	// 4 4
}

// A command announced early: the append's dirty marker is written while the command reads the
// stream, so that read and append are two round trips on Azure. A command that decides to append
// nothing withdraws its announcement.
func ExampleStore_Announce() {
	ctx := context.Background()
	store, err := estuite.Open(ctx, mem.New(nil), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	if _, err := store.Append(ctx, "account-7", []estuite.EventData{{Type: "Opened", Data: []byte(`{}`)}}, nil); err != nil {
		log.Fatal(err)
	}

	deposit := func(commitID string, amount int) error {
		an, err := store.Announce(ctx, "account-7", commitID)
		if err != nil {
			return err
		}
		defer an.Withdraw() // a no-op once the append landed
		read, err := store.Read(ctx, "account-7", nil)
		if err != nil {
			return err
		}
		if amount <= 0 {
			return nil // nothing to append: the deferred Withdraw takes the marker back
		}
		res, err := store.Append(ctx, "account-7", []estuite.EventData{{Type: "Deposited", Data: fmt.Appendf(nil, `{"amount":%d}`, amount)}},
			&estuite.AppendOptions{Expected: estuite.Exactly(read.Version), Announcement: an})
		if err != nil {
			return err
		}
		fmt.Println("deposited at version", res.LastVersion, "with commit", res.CommitID)
		return nil
	}
	if err := deposit("deposit-1", 30); err != nil {
		log.Fatal(err)
	}
	if err := deposit("deposit-2", 0); err != nil {
		log.Fatal(err)
	}
	// Output:
	// deposited at version 2 with commit deposit-1
}
