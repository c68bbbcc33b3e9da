// Package estuite is an event store for Go whose home is Azure Table Storage.
//
// # Basics
//
// A Store keeps streams of events. Each stream is one partition of the stream table: its events
// are rows ordered by version (the first event has version 1; a stream's version is its number
// of events), beside a head row that fences concurrent appends with its ETag and one commit row
// per append that makes retries idempotent. The same store runs on three backends behind one
// small storage contract (package table): Azure Table Storage (package table/azure, also for
// Azurite and the Cosmos DB Table API), one embedded bbolt file (package table/bolt, the default
// for local use) and memory (package table/mem, with fault injection for tests).
//
//	backend, err := bolt.Open("estuite-data/estuite.db", nil)
//	...
//	store, err := estuite.Open(ctx, backend, nil)
//	...
//	res, err := store.Append(ctx, "order-42", []estuite.EventData{
//		{Type: "OrderPlaced", Data: []byte(`{"total": 12}`)},
//	}, &estuite.AppendOptions{Expected: estuite.NoStream, CommitID: "place-order-42"})
//	...
//	read, err := store.Read(ctx, "order-42", nil)
//	for ev, err := range read.Events { ... }
//
// # Guarantees
//
//   - An append is atomic: all its events or none become visible.
//   - Optimistic concurrency: AppendOptions.Expected is Any, NoStream, StreamExists or
//     Exactly(v); a mismatch is a *WrongExpectedVersionError carrying the actual version.
//   - Idempotent commits: every append carries a commit ID (given or generated). Retrying it —
//     after a lost response, or after the stream moved on — returns the original versions with
//     Duplicate set and writes nothing. This is stored in the stream's partition, not cached.
//   - Bad input is a typed error (ErrInvalidInput, ErrTooLarge) and writes nothing.
//   - Erasure: the data and metadata of an event that names a subject (EventData.Subject) are
//     stored encrypted with the subject's data key, in the stream table and the feed alike;
//     Store.Forget deletes the key, and every event of the subject then reads as Erased.
//   - Transient storage failures are retried with backoff and jitter within the context; an
//     ambiguous failure is resolved by looking at the stored commit row.
//
// # Caveats
//
//   - One append is one entity group transaction: at most MaxAppendRows rows (97 events with
//     generated IDs, 48 with caller-given IDs) and MaxAppendBytes bytes as sent. An event's data
//     may be as large as one entity can hold (about 1 MiB, split over 64 KiB properties).
//   - Stream names are 1–MaxStreamNameLength characters of any UTF-8 but control characters.
//   - Storage requests are counted (Store.RequestCounts): an append to a stream whose head the
//     store holds costs one request, a cold append two, reading up to 1,000 events two.
//
// docs/storage-format.md describes every row and property.
package estuite
