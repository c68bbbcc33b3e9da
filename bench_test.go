package estuite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/azuritetest"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/azure"
	"github.com/estuite/estuite/table/bolt"
	"go.etcd.io/bbolt"
)

// Benchmarks of appends, each beside the bare storage doing the same writes, in one run:
//
//	go test -run '^$' -bench 'Append' -benchtime 3s .
//
// Every worker appends to its own stream, so Estuite's appends are warm (one batch each) and the
// baselines write the same rows: the commit row, the head row and the event rows.

var benchConcurrency = []int{1, 16}
var benchEventCounts = []int{1, 50}

// benchEvent is an event of about 200 bytes of JSON, as a typical domain event.
func benchEvents(n int) []estuite.EventData {
	events := make([]estuite.EventData, n)
	for i := range events {
		events[i] = estuite.EventData{Type: "OrderLinePlaced",
			Data:     []byte(fmt.Sprintf(`{"order":"o-1234567","line":%d,"sku":"SKU-000123","quantity":3,"price":"12.50","currency":"EUR","note":"deliver to the back door"}`, i)),
			Metadata: []byte(`{"correlationId":"6f1c1f3e-5c5d-4a9e-9d55-0d6f1f0b7a11"}`)}
	}
	return events
}

// runWorkers runs op b.N times spread over conc goroutines, each with its own worker number, and
// reports appends per second.
func runWorkers(b *testing.B, conc int, op func(worker, i int) error) {
	b.Helper()
	runWorkersThen(b, conc, op, nil)
}

// runWorkersThen is runWorkers with settle, when not nil, run after the last op and before the
// clock stops.
func runWorkersThen(b *testing.B, conc int, op func(worker, i int) error, settle func()) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				if next.Add(1) > int64(b.N) {
					return
				}
				if err := op(w, i); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if settle != nil {
		settle()
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
}

func estuiteAppender(b *testing.B, s *estuite.Store, events []estuite.EventData) func(worker, i int) error {
	prefix := fmt.Sprintf("bench-%d-", time.Now().UnixNano())
	return func(worker, i int) error {
		_, err := s.Append(context.Background(), fmt.Sprintf("%s%d", prefix, worker), events, nil)
		return err
	}
}

func BenchmarkAppendAzurite(b *testing.B) {
	conn := azuritetest.ConnectionString(b)
	for _, n := range benchEventCounts {
		for _, conc := range benchConcurrency {
			b.Run(fmt.Sprintf("estuite/events=%d/conc=%d", n, conc), func(b *testing.B) {
				backend, err := azure.Open(conn, nil)
				if err != nil {
					b.Fatal(err)
				}
				s, err := estuite.Open(context.Background(), backend, &estuite.Options{TablePrefix: "bench" + fmt.Sprint(time.Now().UnixNano())})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				runWorkers(b, conc, estuiteAppender(b, s, benchEvents(n)))
			})
			b.Run(fmt.Sprintf("rawsdk/events=%d/conc=%d", n, conc), func(b *testing.B) {
				runWorkers(b, conc, rawSDKAppender(b, conn, n, false))
			})
			b.Run(fmt.Sprintf("rawsdk+marker/events=%d/conc=%d", n, conc), func(b *testing.B) {
				runWorkers(b, conc, rawSDKAppender(b, conn, n, true))
			})
		}
	}
}

// rawTable returns an SDK client, without retries as Estuite's backend, for a table that it
// creates (when create is set) or that exists.
func rawTable(b *testing.B, conn, name string, create bool) *aztables.Client {
	opts := &aztables.ClientOptions{}
	opts.Retry = policy.RetryOptions{MaxRetries: -1}
	service, err := aztables.NewServiceClientFromConnectionString(conn, opts)
	if err != nil {
		b.Fatal(err)
	}
	if create {
		if _, err := service.CreateTable(context.Background(), name, nil); err != nil {
			b.Fatal(err)
		}
	}
	return service.NewClient(name)
}

// rawSDKAppender submits, with the SDK alone, the batch an Estuite append sends: insert a commit
// row, replace the head row, insert the event rows. With marker set it first upserts a dirty
// marker row, as Estuite does before every append batch: the same storage work as Estuite.
func rawSDKAppender(b *testing.B, conn string, n int, marker bool) func(worker, i int) error {
	client := rawTable(b, conn, fmt.Sprintf("raw%d", time.Now().UnixNano()), true)
	events := benchEvents(n)
	versions := make([]int64, 64)
	return func(worker, i int) error {
		pk := fmt.Sprintf("stream-%d", worker)
		v := versions[worker]
		if marker {
			row := table.Entity{PartitionKey: "dirty00", RowKey: fmt.Sprintf("%032d-%019d", worker, v+int64(n)), Properties: map[string]any{
				"Stream": pk, "First": v + 1, "Announced": v + int64(n)}}
			if _, err := client.SubmitTransaction(context.Background(), []aztables.TransactionAction{{ActionType: aztables.TransactionTypeInsertReplace, Entity: table.EncodeJSON(row)}}, nil); err != nil {
				return err
			}
		}
		actions := rawBatch(pk, v, events)
		if v > 0 {
			// As Estuite's warm append: replace the head under an ETag condition.
			actions[1].ActionType = aztables.TransactionTypeUpdateReplace
			actions[1].IfMatch = to.Ptr(azcore.ETagAny)
		}
		if _, err := client.SubmitTransaction(context.Background(), actions, nil); err != nil {
			return err
		}
		versions[worker] = v + int64(len(events))
		return nil
	}
}

// rawBatch builds the batch of an append at version v for the SDK.
func rawBatch(pk string, v int64, events []estuite.EventData) []aztables.TransactionAction {
	rows := rawRows(pk, v, events)
	actions := make([]aztables.TransactionAction, len(rows))
	for i, r := range rows {
		actions[i] = aztables.TransactionAction{ActionType: aztables.TransactionTypeAdd, Entity: table.EncodeJSON(r)}
	}
	return actions
}

// rawRows builds the rows of an append at version v, with the same properties Estuite writes.
func rawRows(pk string, v int64, events []estuite.EventData) []table.Entity {
	now := time.Now().UTC()
	rows := []table.Entity{
		{PartitionKey: pk, RowKey: fmt.Sprintf("C%064d", v), Properties: map[string]any{
			"CommitId": fmt.Sprint(v), "First": v + 1, "Last": v + int64(len(events)), "Hash": fmt.Sprintf("%064d", v), "Attempt": "6f1c1f3e-5c5d-4a9e-9d55-0d6f1f0b7a11", "Recorded": now}},
		{PartitionKey: pk, RowKey: "H", Properties: map[string]any{"Version": v + int64(len(events)), "Format": int64(1)}},
	}
	for i, e := range events {
		rows = append(rows, table.Entity{PartitionKey: pk, RowKey: fmt.Sprintf("E%019d", v+int64(i)+1), Properties: map[string]any{
			"Version": v + int64(i) + 1, "Id": "6f1c1f3e-5c5d-4a9e-9d55-0d6f1f0b7a11", "Type": e.Type, "CommitId": fmt.Sprint(v),
			"Recorded": now, "DataFormat": "json", "Metadata": string(e.Metadata), "Data": e.Data}})
	}
	return rows
}

// BenchmarkAppendEmbedded compares, side by side, a bare bbolt Update per append, Estuite without
// a feed (no dispatcher), and Estuite with its feed kept: a dispatcher runs, and the clock stops
// when the feed holds every appended event. The feed case also reports the commit-to-feed lag
// (p99, from the dispatcher's own measure) and how fast the feed drained against the appends
// (drain/append: the events per second the feed took, over the events per second appended,
// each from the start; 1: the feed held every event when the last append returned).
func BenchmarkAppendEmbedded(b *testing.B) {
	for _, n := range benchEventCounts {
		for _, conc := range benchConcurrency {
			b.Run(fmt.Sprintf("estuite/events=%d/conc=%d", n, conc), func(b *testing.B) {
				s := openEmbeddedB(b)
				runWorkers(b, conc, estuiteAppender(b, s, benchEvents(n)))
			})
			b.Run(fmt.Sprintf("estuite-feed/events=%d/conc=%d", n, conc), func(b *testing.B) {
				benchAppendFeedKept(b, n, conc)
			})
			b.Run(fmt.Sprintf("barebolt/events=%d/conc=%d", n, conc), func(b *testing.B) {
				db, err := bbolt.Open(filepath.Join(b.TempDir(), "bare.db"), 0o600, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer db.Close()
				runWorkers(b, conc, bareBoltAppender(b, db, n))
			})
		}
	}
}

// bareBoltAppender writes the rows of an append (as JSON, the same bytes Azure would get) with
// one plain bbolt Update per append.
func bareBoltAppender(b *testing.B, db *bbolt.DB, n int) func(worker, i int) error {
	if err := db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("streams")); return err }); err != nil {
		b.Fatal(err)
	}
	events := benchEvents(n)
	versions := make([]int64, 64)
	return func(worker, i int) error {
		pk := fmt.Sprintf("stream-%d", worker)
		v := versions[worker]
		rows := rawRows(pk, v, events)
		err := db.Update(func(tx *bbolt.Tx) error {
			bucket := tx.Bucket([]byte("streams"))
			for _, r := range rows {
				if err := bucket.Put([]byte(pk+"\x00"+r.RowKey), table.EncodeJSON(r)); err != nil {
					return err
				}
			}
			return nil
		})
		versions[worker] = v + int64(n)
		return err
	}
}

// openEmbeddedB opens a store on a fresh embedded backend (fsync on), closed at cleanup.
func openEmbeddedB(b *testing.B) *estuite.Store {
	backend, err := bolt.Open(filepath.Join(b.TempDir(), "estuite.db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	s, err := estuite.Open(context.Background(), backend, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// benchAppendFeedKept runs the appends of BenchmarkAppendEmbedded with a started dispatcher, and
// stops the clock when the feed holds every event appended.
func benchAppendFeedKept(b *testing.B, n, conc int) {
	s := openEmbeddedB(b)
	var mu sync.Mutex
	var lags []time.Duration
	var fed atomic.Int64 // events written into the feed
	d := estuite.NewDispatcher(s, &estuite.DispatcherOptions{OnStep: func(st estuite.DispatchStats, err error) {
		fed.Add(int64(st.Events))
		mu.Lock()
		lags = append(lags, st.Lags...)
		mu.Unlock()
	}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := d.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer d.Stop()
	appendOp := estuiteAppender(b, s, benchEvents(n))
	want := int64(b.N) * int64(n)
	var appendsDone, fedDone time.Duration
	start := time.Now()
	runWorkersThen(b, conc, appendOp, func() {
		appendsDone = time.Since(start)
		for fed.Load() < want {
			time.Sleep(100 * time.Microsecond)
		}
		fedDone = time.Since(start)
	})
	mu.Lock()
	defer mu.Unlock()
	if len(lags) > 0 {
		slices.Sort(lags)
		b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds())/1000, "lag-p99-ms")
	}
	if fedDone > 0 {
		// The feed's rate (all events over the time until it held them) over the appends' rate
		// (all events over the time until the last append returned).
		b.ReportMetric(appendsDone.Seconds()/fedDone.Seconds(), "drain/append")
	}
}
