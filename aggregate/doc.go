// Package aggregate is the aggregate layer on an Estuite store: a registry of event types with
// a codec and upcasters, and repositories that load aggregates from their streams, save the
// events their commands raise with optimistic concurrency, and rerun commands after conflicts.
// It uses only the store's public API.
//
// # Basics
//
// An aggregate is a struct that embeds Base and folds events into its state in Apply; its
// commands check the state and Raise events:
//
//	type ItemAdded struct {
//		SKU   string
//		Cents int
//	}
//
//	type Order struct {
//		aggregate.Base
//		Items []string
//		Total int
//	}
//
//	func (o *Order) Apply(event any) {
//		switch e := event.(type) {
//		case ItemAdded:
//			o.Items = append(o.Items, e.SKU)
//			o.Total += e.Cents
//		}
//	}
//
//	func (o *Order) AddItem(sku string, cents int) error {
//		if cents <= 0 {
//			return errors.New("an item has a price")
//		}
//		aggregate.Raise(o, ItemAdded{SKU: sku, Cents: cents})
//		return nil
//	}
//
// A Registry names the event types; a Repository keeps aggregates of one type, one stream each:
//
//	reg := aggregate.NewRegistry(nil) // JSON by default
//	aggregate.Register[ItemAdded](reg, "ItemAdded")
//	orders := aggregate.NewRepository(store, reg, func() *Order { return &Order{} },
//		&aggregate.Options{StreamPrefix: "order-"}) // order 42 is stream "order-42"
//
//	o, err := orders.Update(ctx, "42", func(o *Order) error { return o.AddItem("tea", 450) },
//		&aggregate.SaveOptions{CommitID: requestID}) // a retried request writes nothing twice
//
// Update loads the aggregate (a fresh one when it has no events), runs the command and saves
// the events it raised with estuite.Exactly(version) — estuite.NoStream for a new aggregate —
// and, when another writer moved the stream in between, loads again and reruns the command, a
// bounded number of times with backoff (Options.Retry). Load and Save do the steps by hand: a
// conflicting Save is the store's *estuite.WrongExpectedVersionError; Load of an aggregate
// without events is ErrNotFound.
//
// # Event types, schemas and upcasting
//
// Register binds a type name to the Go type of its current form; events are encoded with the
// registry's Codec (JSON, or any other). When an event's shape changes, give the new Go type a
// new schema version with RegisterSchema and Upcast the older forms: the event's name stays, and
// its schema is recorded in the event's metadata under SchemaKey (no key: schema 1). Every read
// through the registry — Repository.Load, Registry.Read, Registry.ReadFeed, Registry.Handler,
// Registry.Decode — upcasts old forms step by step (v1 → v2 → v3), so Apply and projections
// only ever see current forms. A stored event whose name and schema are neither registered nor
// upcast is an *UnknownEventTypeError naming them.
//
// # Snapshots
//
// With Options.Snapshots, a save that the SnapshotPolicy says is due (every N versions, or more
// than N events or B bytes since the latest snapshot) carries a snapshot of the aggregate's
// state, encoded with the registry's codec from the pointer its SnapshotState method returns
// (see Snapshotter). The store writes it in the stream's own partition, in the same atomic batch
// as the events: no extra storage request. A load reads the latest snapshot of the policy's
// Schema and the events after it — one storage request when they fit one page, two for a
// 10,000-event stream with a snapshot every 100 — and folds only those events; the state is the
// one a full replay gives. Snapshots of another schema (the state's type changed) are ignored:
// the stream is replayed, and the next due save writes a snapshot of the new schema. A batch
// too full for the snapshot, or a state over estuite.MaxSnapshotBytes, saves without one; the
// next save catches up. Snapshots never appear in stream reads or the feed.
//
// # Personal data
//
// An event type that implements PersonalData names its data subject: the store seals the event
// under the subject's key, and estuite.Store.Forget erases it (an erased event decodes as the
// zero value of its type, with Event.Erased). A snapshot names every subject its state was
// folded from and is sealed under all of them: once any one is forgotten the snapshot is gone,
// and a load replays the events, the forgotten subject's erased. An aggregate whose events name
// more than estuite.MaxSnapshotSubjects subjects takes no snapshots.
//
// # Caveats
//
//   - One Save is one atomic append: at most estuite.MaxAppendRows events.
//   - Apply must be deterministic and must not fail: it replays history.
//   - Aggregates are not safe for concurrent use; a Repository and a Registry are.
//   - Idempotency needs a commit ID per command (SaveOptions.CommitID) and a command that decides
//     the same events when retried; one that decides other events is an
//     estuite.ErrCommitConflict.
package aggregate
