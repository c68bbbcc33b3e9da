package aggregate_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/aggregate"
	"github.com/estuite/estuite/table/mem"
)

// The examples' domain: an order.

// ItemAdded and OrderPlaced are the order's events.
type ItemAdded struct {
	SKU   string
	Cents int
}
type OrderPlaced struct{}

// Order is an aggregate: it embeds aggregate.Base and folds its events into its state in Apply.
type Order struct {
	aggregate.Base
	OrderState
}

// OrderState is everything Apply changes: what a snapshot holds.
type OrderState struct {
	Items  []string
	Total  int
	Placed bool
}

// SnapshotState makes Order an aggregate.Snapshotter.
func (o *Order) SnapshotState() any { return &o.OrderState }

func (o *Order) Apply(event any) {
	switch e := event.(type) {
	case ItemAdded:
		o.Items = append(o.Items, e.SKU)
		o.Total += e.Cents
	case OrderPlaced:
		o.Placed = true
	}
}

// AddItem and Place are commands: they check the state, then raise events.
func (o *Order) AddItem(sku string, cents int) error {
	if o.Placed {
		return errors.New("order already placed")
	}
	aggregate.Raise(o, ItemAdded{SKU: sku, Cents: cents})
	return nil
}

func (o *Order) Place() error {
	if len(o.Items) == 0 {
		return errors.New("empty order")
	}
	aggregate.Raise(o, OrderPlaced{})
	return nil
}

func orderRegistry() *aggregate.Registry {
	reg := aggregate.NewRegistry(nil)
	aggregate.Register[ItemAdded](reg, "ItemAdded")
	aggregate.Register[OrderPlaced](reg, "OrderPlaced")
	return reg
}

func newOrder() *Order { return &Order{} }

// An order repository: commands run with Update, which loads the order, runs the command and
// saves its events, rerunning it after a conflict with another writer.
func Example() {
	ctx := context.Background()
	store, err := estuite.Open(ctx, mem.New(nil), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	reg := aggregate.NewRegistry(nil)
	aggregate.Register[ItemAdded](reg, "ItemAdded")
	aggregate.Register[OrderPlaced](reg, "OrderPlaced")
	orders := aggregate.NewRepository(store, reg, func() *Order { return &Order{} },
		&aggregate.Options{
			StreamPrefix: "order-", // order 42 is stream "order-42"
			Snapshots:    &aggregate.SnapshotPolicy{Schema: 1, Every: 100},
		})

	_, err = orders.Update(ctx, "42", func(o *Order) error { return o.AddItem("tea", 450) }, nil)
	if err != nil {
		log.Fatal(err)
	}
	o, err := orders.Update(ctx, "42", (*Order).Place, &aggregate.SaveOptions{CommitID: "place-42"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(o.ID(), o.Version(), o.Items, o.Total, o.Placed)
	// Output:
	// 42 2 [tea] 450 true
}

// Load and Save by hand: a save expects the version the aggregate was loaded at, so a save from
// a stale copy is refused with the store's WrongExpectedVersionError.
func ExampleRepository_Save() {
	ctx := context.Background()
	store, _ := estuite.Open(ctx, mem.New(nil), nil)
	defer store.Close()
	orders := aggregate.NewRepository(store, orderRegistry(), newOrder, &aggregate.Options{StreamPrefix: "order-"})

	o := orders.New("7")
	o.AddItem("tea", 450)
	o.AddItem("cake", 300)
	if _, err := orders.Save(ctx, o, nil); err != nil {
		log.Fatal(err)
	}

	mine, _ := orders.Load(ctx, "7")
	theirs, _ := orders.Load(ctx, "7")
	theirs.Place()
	orders.Save(ctx, theirs, nil)

	mine.AddItem("scone", 250)
	_, err := orders.Save(ctx, mine, nil)
	var wrong *estuite.WrongExpectedVersionError
	if errors.As(err, &wrong) {
		fmt.Printf("refused: loaded at version %d, the stream is at %d\n", mine.Version(), wrong.Actual)
	}
	_, err = orders.Load(ctx, "8")
	fmt.Println(errors.Is(err, aggregate.ErrNotFound))
	// Output:
	// refused: loaded at version 2, the stream is at 3
	// true
}

// Update with a commit ID: a command retried with its commit ID (its caller did not get the
// answer) writes nothing the second time. A command that fails writes nothing at all.
func ExampleRepository_Update() {
	ctx := context.Background()
	store, _ := estuite.Open(ctx, mem.New(nil), nil)
	defer store.Close()
	orders := aggregate.NewRepository(store, orderRegistry(), newOrder, &aggregate.Options{StreamPrefix: "order-"})

	add := func(o *Order) error { return o.AddItem("tea", 450) }
	req := &aggregate.SaveOptions{CommitID: "request-1"}
	orders.Update(ctx, "9", add, req)
	o, _ := orders.Update(ctx, "9", add, req) // the same request again
	fmt.Println(o.Version(), o.Items)

	_, err := orders.Update(ctx, "10", (*Order).Place, nil)
	fmt.Println(err)
	_, err = orders.Load(ctx, "10")
	fmt.Println(errors.Is(err, aggregate.ErrNotFound))
	// Output:
	// 1 [tea]
	// empty order
	// true
}

// ItemAddedV1 is how ItemAdded was first stored: a price in whole euros.
type ItemAddedV1 struct {
	SKU   string
	Euros int
}

// Upcasting: events stored in an old form are turned into the current one on every read, so
// Apply only knows the current form. ItemAdded moved to schema 2 (cents); an upcaster turns
// the schema-1 events that old code stored into schema-2 ones.
func ExampleUpcast() {
	ctx := context.Background()
	store, _ := estuite.Open(ctx, mem.New(nil), nil)
	defer store.Close()
	// Old code stored an item priced in euros (schema 1: no schema in the metadata).
	store.Append(ctx, "order-1", []estuite.EventData{{Type: "ItemAdded", Data: []byte(`{"SKU":"tea","Euros":4}`)}}, nil)

	reg := aggregate.NewRegistry(nil)
	aggregate.RegisterSchema[ItemAdded](reg, "ItemAdded", 2)
	aggregate.Upcast(reg, "ItemAdded", 1, func(e ItemAddedV1) ItemAdded {
		return ItemAdded{SKU: e.SKU, Cents: 100 * e.Euros}
	})
	aggregate.Register[OrderPlaced](reg, "OrderPlaced")
	orders := aggregate.NewRepository(store, reg, newOrder, &aggregate.Options{StreamPrefix: "order-"})

	o, _ := orders.Update(ctx, "1", func(o *Order) error { return o.AddItem("cake", 300) }, nil)
	fmt.Println(o.Items, o.Total)

	read, _ := reg.Read(ctx, store, "order-1", nil)
	for ev, err := range read.Events {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%d %s schema %d: %+v (stored metadata %s)\n", ev.Recorded.Version, ev.Type, ev.Schema, ev.Value, ev.Recorded.Metadata)
	}
	// Output:
	// [tea cake] 700
	// 1 ItemAdded schema 2: {SKU:tea Cents:400} (stored metadata )
	// 2 ItemAdded schema 2: {SKU:cake Cents:300} (stored metadata {"eventSchema":2})
}

// Snapshots: with a policy, the saves that pass a multiple of 100 versions carry a snapshot of
// the order's state in their own batch, and a load reads the latest snapshot and the events
// after it in one storage request, folding only those events.
func ExampleSnapshotPolicy() {
	ctx := context.Background()
	store, _ := estuite.Open(ctx, mem.New(nil), nil)
	defer store.Close()
	orders := aggregate.NewRepository(store, orderRegistry(), newOrder, &aggregate.Options{
		StreamPrefix: "order-",
		Snapshots:    &aggregate.SnapshotPolicy{Schema: 1, Every: 100},
	})

	o := orders.New("big")
	for i := range 250 {
		o.AddItem(fmt.Sprint("sku-", i), 1)
		if len(o.Uncommitted()) == 50 {
			res, err := orders.Save(ctx, o, nil)
			if err != nil {
				log.Fatal(err)
			}
			if res.SnapshotSaved {
				fmt.Println("snapshot at version", res.LastVersion)
			}
		}
	}

	before := store.RequestCounts()
	o, _ = orders.Load(ctx, "big")
	fmt.Println("loaded version", o.Version(), "total", o.Total, "in", store.RequestCounts().Sub(before).Total(), "request")
	// Output:
	// snapshot at version 100
	// snapshot at version 200
	// loaded version 250 total 250 in 1 request
}
