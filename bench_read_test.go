package estuite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/azuritetest"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/azure"
	"github.com/estuite/estuite/table/bolt"
)

// Benchmarks of stream reads, each beside one bare range query of the same rows on the same
// backend, in one run:
//
//	go test -run '^$' -bench 'StreamRead' -benchtime 2s .
//
// "store" is Store.Read with its events iterated; "raw" one range query of the rows from the first
// event to the head, undecoded (on Azurite with the SDK alone, on bbolt with the backend's
// table.Query). "snapshot" loads a 10,000-event stream with a snapshot at 9,900 (ReadOptions.
// WithSnapshot), "replay" reads all 10,000 events of it, "raw-tail" is one bare range query of the
// last 100 events and the head. "raw-head+query" is what Store.Read did before: a point read of the
// head, then the range query. "snapshot-cold" is "snapshot" in a store that has not met the
// stream (it probes with a query of 100 rows instead of reading the snapshot row alone).

// readBackend is a store on one backend, with a bare range query beside it.
type readBackend struct {
	name  string
	store *estuite.Store
	raw   func(stream string, from int64) (rows int, err error) // rows of stream from version from up to its head
	head  func(stream string) error                             // a point read of the head row
}

func readBackends(b *testing.B) []readBackend {
	ctx := context.Background()
	var out []readBackend

	bb, err := bolt.Open(filepath.Join(b.TempDir(), "estuite.db"), &bolt.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	s, err := estuite.Open(ctx, bb, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	bt, err := bb.OpenTable(ctx, estuite.DefaultTablePrefix+"streams")
	if err != nil {
		b.Fatal(err)
	}
	out = append(out, readBackend{"bolt", s, func(stream string, from int64) (int, error) {
		p, err := bt.Query(ctx, table.Query{PartitionKey: stream, From: fmt.Sprintf("E%019d", from), To: "I"})
		return len(p.Entities), err
	}, func(stream string) error {
		_, err := bt.Get(ctx, stream, "H")
		return err
	}})

	conn := azuritetest.ConnectionString(b)
	ab, err := azure.Open(conn, nil)
	if err != nil {
		b.Fatal(err)
	}
	prefix := "bench" + fmt.Sprint(time.Now().UnixNano())
	as, err := estuite.Open(ctx, ab, &estuite.Options{TablePrefix: prefix})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { as.Close() })
	client := rawTable(b, conn, prefix+"streams", false)
	out = append(out, readBackend{"azurite", as, func(stream string, from int64) (int, error) {
		filter := fmt.Sprintf("PartitionKey eq '%s' and RowKey ge 'E%019d' and RowKey lt 'I'", stream, from)
		pager := client.NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: to.Ptr(filter), Top: to.Ptr(int32(1000))})
		page, err := pager.NextPage(ctx)
		return len(page.Entities), err
	}, func(stream string) error {
		_, err := client.GetEntity(ctx, stream, "H", nil)
		return err
	}})
	return out
}

func benchAppendAll(b *testing.B, s *estuite.Store, stream string, n, snapshotAt int) {
	for v := 0; v < n; v += 50 {
		var opts *estuite.AppendOptions
		if v+50 == snapshotAt {
			opts = &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Schema: 1, Data: make([]byte, 2000)}}
		}
		if _, err := s.Append(context.Background(), stream, benchEvents(min(50, n-v)), opts); err != nil {
			b.Fatal(err)
		}
	}
}

// benchRead reads stream b.N times and reports the requests and events per read.
func benchRead(b *testing.B, s *estuite.Store, stream string, opts *estuite.ReadOptions, want int) {
	ctx := context.Background()
	before := s.RequestCounts()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := s.Read(ctx, stream, opts)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for _, err := range r.Events {
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		if n != want {
			b.Fatalf("read %d events, want %d", n, want)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(s.RequestCounts().Sub(before).Total())/float64(b.N), "requests/read")
}

func benchReadOnce(b *testing.B, s *estuite.Store, stream string, opts *estuite.ReadOptions, want int) {
	r, err := s.Read(context.Background(), stream, opts)
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, err := range r.Events {
		if err != nil {
			b.Fatal(err)
		}
		n++
	}
	if n != want {
		b.Fatalf("read %d events, want %d", n, want)
	}
}

func benchRaw(b *testing.B, raw func(string, int64) (int, error), stream string, from int64, want int) {
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n, err := raw(stream, from)
		if err != nil {
			b.Fatal(err)
		}
		if n < want {
			b.Fatalf("raw query returned %d rows, want at least %d", n, want)
		}
	}
	b.StopTimer()
	b.ReportMetric(1, "requests/read")
}

func BenchmarkStreamRead(b *testing.B) {
	for _, rb := range readBackends(b) {
		for _, n := range []int{10, 100} {
			stream := fmt.Sprintf("read-%d", n)
			benchAppendAll(b, rb.store, stream, n, 0)
			b.Run(fmt.Sprintf("%s/events=%d/store", rb.name, n), func(b *testing.B) { benchRead(b, rb.store, stream, nil, n) })
			b.Run(fmt.Sprintf("%s/events=%d/raw", rb.name, n), func(b *testing.B) { benchRaw(b, rb.raw, stream, 1, n+1) })
			b.Run(fmt.Sprintf("%s/events=%d/raw-head+query", rb.name, n), func(b *testing.B) {
				// What Store.Read did before it read the head in its range query: two requests.
				benchRaw(b, func(stream string, from int64) (int, error) {
					if err := rb.head(stream); err != nil {
						return 0, err
					}
					return rb.raw(stream, from)
				}, stream, 1, n+1)
				b.ReportMetric(2, "requests/read")
			})
		}
		benchAppendAll(b, rb.store, "snap-10000", 10000, 9900)
		b.Run(rb.name+"/events=10000/snapshot", func(b *testing.B) {
			benchRead(b, rb.store, "snap-10000", &estuite.ReadOptions{WithSnapshot: true, SnapshotSchema: 1}, 100)
		})
		b.Run(rb.name+"/events=10000/snapshot-cold", func(b *testing.B) {
			// As in a process that has not met the stream: a probe of 100 rows, then the rest.
			before := rb.store.RequestCounts()
			for i := 0; i < b.N; i++ {
				rb.store.ForgetHeads()
				benchReadOnce(b, rb.store, "snap-10000", &estuite.ReadOptions{WithSnapshot: true, SnapshotSchema: 1}, 100)
			}
			b.ReportMetric(float64(rb.store.RequestCounts().Sub(before).Total())/float64(b.N), "requests/read")
		})
		b.Run(rb.name+"/events=10000/replay", func(b *testing.B) { benchRead(b, rb.store, "snap-10000", nil, 10000) })
		b.Run(rb.name+"/events=10000/raw-tail", func(b *testing.B) { benchRaw(b, rb.raw, "snap-10000", 9901, 101) })
	}
}
