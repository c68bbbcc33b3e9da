package estuite_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table/mem"
)

// Events that name a subject are stored encrypted with the subject's key; forgetting the subject
// erases them everywhere, and the subject cannot be used again.
func ExampleStore_Forget() {
	ctx := context.Background()
	masterKey := make([]byte, 32) // in production: 32 random bytes from a secret store
	store, err := estuite.Open(ctx, mem.New(nil), &estuite.Options{MasterKey: masterKey})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	_, err = store.Append(ctx, "customer-7f3a", []estuite.EventData{
		{Type: "AddressChanged", Subject: "user-7f3a", Data: []byte(`{"street":"1 Main St"}`)},
		{Type: "TierChanged", Data: []byte(`{"tier":"gold"}`)},
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Forget(ctx, "user-7f3a"); err != nil {
		log.Fatal(err)
	}
	read, err := store.Read(ctx, "customer-7f3a", nil)
	if err != nil {
		log.Fatal(err)
	}
	for ev, err := range read.Events {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%d %s subject=%q erased=%v data=%s\n", ev.Version, ev.Type, ev.Subject, ev.Erased, ev.Data)
	}
	_, err = store.Append(ctx, "customer-7f3a", []estuite.EventData{{Type: "AddressChanged", Subject: "user-7f3a"}}, nil)
	fmt.Println(errors.Is(err, estuite.ErrSubjectForgotten))
	// Output:
	// 1 AddressChanged subject="user-7f3a" erased=true data=
	// 2 TierChanged subject="" erased=false data={"tier":"gold"}
	// true
}
