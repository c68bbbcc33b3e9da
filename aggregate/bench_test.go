package aggregate_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/estuite/estuite"
	"github.com/estuite/estuite/aggregate"
	"github.com/estuite/estuite/internal/azuritetest"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/azure"
	"github.com/estuite/estuite/table/bolt"
)

// Benchmarks of the aggregate layer on bbolt and Azurite, each beside the bare storage work of
// the same rows on the same backend, in one run:
//
//	go test -run '^$' -bench 'Aggregate' -benchtime 2s -count 3 ./aggregate/
//
// BenchmarkAggregateLoad: Repository.Load of an aggregate of 10, 100 and 10,000 events, "plain"
// without snapshots and "snapshots" with a snapshot every 100 events (written in saves of 97
// events). "raw" is the bare range query of the rows a plain load reads (the events and the
// head), "raw-snapshot" the bare reads of the rows a load with a snapshot reads (a point read of
// the snapshot row, a range query of the events after it and the head). On bbolt the raw reads go
// through the backend's table.Table (which decodes the rows into table.Entity values); on Azurite
// through the SDK alone, each row's JSON unmarshalled into a map.
//
// BenchmarkAggregateUpdate: Repository.Update on an aggregate of 4 events (load, decide, append
// one event), each op on a stream of its own; "raw" is one range query of a partition of the
// same rows and one transactional batch of the rows an append writes (a commit row, the head
// replaced, the event row), without Estuite's dirty marker.

// benchBackend is a store on one backend with bare access to the same storage beside it.
type benchBackend struct {
	name  string
	store *estuite.Store
	// unannounced is a second store on the same backend with early announcements off
	// (AnnounceWindow < 0), or nil.
	unannounced *estuite.Store
	// get is a point read of a row of the stream table; query a range query of its rows in
	// [from, to), every page; both return the rows read.
	get   func(pk, rk string) (int, error)
	query func(pk, from, to string) (int, error)
	// submit writes one batch into the raw table: the rows an append at version v writes.
	submit func(pk string, v int64, first bool) error
	// rawQuery is query on the raw table.
	rawQuery func(pk, from, to string) (int, error)
}

func benchBackends(b *testing.B) []benchBackend {
	ctx := context.Background()
	var out []benchBackend

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
	braw, err := bb.OpenTable(ctx, "rawcommands")
	if err != nil {
		b.Fatal(err)
	}
	boltQuery := func(t table.Table) func(pk, from, to string) (int, error) {
		return func(pk, from, to string) (int, error) {
			q := table.Query{PartitionKey: pk, From: from, To: to}
			n := 0
			for {
				p, err := t.Query(ctx, q)
				if err != nil {
					return n, err
				}
				n += len(p.Entities)
				if p.Continuation == "" {
					return n, nil
				}
				q.Continuation = p.Continuation
			}
		}
	}
	out = append(out, benchBackend{
		name:  "bolt",
		store: s,
		get: func(pk, rk string) (int, error) {
			_, err := bt.Get(ctx, pk, rk)
			return 1, err
		},
		query: boltQuery(bt),
		submit: func(pk string, v int64, first bool) error {
			rows := rawAppendRows(pk, v)
			ops := make([]table.Op, len(rows))
			for i, r := range rows {
				ops[i] = table.Op{Kind: table.Insert, Entity: r}
			}
			if !first {
				ops[1].Kind, ops[1].IfMatch = table.Replace, table.AnyETag
			}
			_, err := braw.Submit(ctx, pk, ops)
			return err
		},
		rawQuery: boltQuery(braw),
	})

	out = append(out, azuriteBench(b, "azurite", 0))
	return out
}

// azuriteBench is the Azurite case of the benchmarks, named name. With rtt > 0 every request,
// Estuite's and the raw SDK's alike, waits rtt before it is sent: a round trip to a storage
// account in another data centre, so that what the figures show is how many requests are made
// one after another, rather than Azurite's own speed on one machine.
func azuriteBench(b *testing.B, name string, rtt time.Duration) benchBackend {
	ctx := context.Background()
	conn := azuritetest.ConnectionString(b)
	var backend table.Backend
	backend, err := azure.Open(conn, nil)
	if err != nil {
		b.Fatal(err)
	}
	if rtt > 0 {
		backend = delayedBackend{backend, rtt}
	}
	prefix := "aggbench" + fmt.Sprint(time.Now().UnixNano())
	as, err := estuite.Open(ctx, backend, &estuite.Options{TablePrefix: prefix})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { as.Close() })
	unannounced, err := estuite.Open(ctx, backend, &estuite.Options{TablePrefix: prefix, AnnounceWindow: -1})
	if err != nil {
		b.Fatal(err)
	}
	service, err := aztables.NewServiceClientFromConnectionString(conn, &aztables.ClientOptions{
		ClientOptions: policy.ClientOptions{Retry: policy.RetryOptions{MaxRetries: -1}}})
	if err != nil {
		b.Fatal(err)
	}
	client := service.NewClient(prefix + "streams")
	rawName := prefix + "rawcommands"
	if _, err := service.CreateTable(ctx, rawName, nil); err != nil {
		b.Fatal(err)
	}
	rawClient := service.NewClient(rawName)
	sdkQuery := func(c *aztables.Client) func(pk, from, to string) (int, error) {
		return func(pk, from, until string) (int, error) {
			filter := fmt.Sprintf("PartitionKey eq '%s' and RowKey ge '%s' and RowKey lt '%s'", pk, from, until)
			time.Sleep(rtt)
			pager := c.NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: to.Ptr(filter), Top: to.Ptr(int32(1000))})
			n := 0
			for pager.More() {
				page, err := pager.NextPage(ctx)
				if pager.More() {
					time.Sleep(rtt) // the next page is one more round trip
				}
				if err != nil {
					return n, err
				}
				for _, raw := range page.Entities { // what a caller of the SDK does at least
					var row map[string]any
					if err := json.Unmarshal(raw, &row); err != nil {
						return n, err
					}
				}
				n += len(page.Entities)
			}
			return n, nil
		}
	}
	return benchBackend{
		name:        name,
		store:       as,
		unannounced: unannounced,
		get: func(pk, rk string) (int, error) {
			time.Sleep(rtt)
			resp, err := client.GetEntity(ctx, pk, rk, nil)
			if err != nil {
				return 0, err
			}
			var row map[string]any
			return 1, json.Unmarshal(resp.Value, &row)
		},
		query: sdkQuery(client),
		submit: func(pk string, v int64, first bool) error {
			rows := rawAppendRows(pk, v)
			actions := make([]aztables.TransactionAction, len(rows))
			for i, r := range rows {
				actions[i] = aztables.TransactionAction{ActionType: aztables.TransactionTypeAdd, Entity: table.EncodeJSON(r)}
			}
			if !first {
				actions[1].ActionType = aztables.TransactionTypeUpdateReplace
				actions[1].IfMatch = to.Ptr(azcore.ETagAny)
			}
			time.Sleep(rtt)
			_, err := rawClient.SubmitTransaction(ctx, actions, nil)
			return err
		},
		rawQuery: sdkQuery(rawClient),
	}
}

// delayedBackend makes every storage call of a backend wait a round trip first.
type delayedBackend struct {
	table.Backend
	rtt time.Duration
}

func (d delayedBackend) OpenTable(ctx context.Context, name string) (table.Table, error) {
	t, err := d.Backend.OpenTable(ctx, name)
	return delayedTable{t, d.rtt}, err
}

type delayedTable struct {
	table.Table
	rtt time.Duration
}

func (d delayedTable) Get(ctx context.Context, pk, rk string) (table.Entity, error) {
	time.Sleep(d.rtt)
	return d.Table.Get(ctx, pk, rk)
}

func (d delayedTable) Query(ctx context.Context, q table.Query) (table.Page, error) {
	time.Sleep(d.rtt)
	return d.Table.Query(ctx, q)
}

func (d delayedTable) Scan(ctx context.Context, q table.ScanQuery) (table.Page, error) {
	time.Sleep(d.rtt)
	return d.Table.Scan(ctx, q)
}

func (d delayedTable) Submit(ctx context.Context, pk string, ops []table.Op) ([]string, error) {
	time.Sleep(d.rtt)
	return d.Table.Submit(ctx, pk, ops)
}

// rawAppendRows returns the rows of an append of one deposit at version v: a commit row, the
// head, the event row, with the properties Estuite writes.
func rawAppendRows(pk string, v int64) []table.Entity {
	now := time.Now().UTC()
	return []table.Entity{
		{PartitionKey: pk, RowKey: fmt.Sprintf("C%064d", v), Properties: map[string]any{
			"CommitId": fmt.Sprint(v), "First": v + 1, "Last": v + 1, "Hash": fmt.Sprintf("%064d", v), "Attempt": "6f1c1f3e-5c5d-4a9e-9d55-0d6f1f0b7a11", "Recorded": now}},
		{PartitionKey: pk, RowKey: "H", Properties: map[string]any{"Version": v + 1, "Format": int64(1)}},
		{PartitionKey: pk, RowKey: fmt.Sprintf("E%019d", v+1), Properties: map[string]any{
			"Version": v + 1, "Id": "6f1c1f3e-5c5d-4a9e-9d55-0d6f1f0b7a11", "Type": "MoneyDeposited", "CommitId": fmt.Sprint(v),
			"Recorded": now, "DataFormat": "json", "Data": []byte(`{"Amount":1}`)}},
	}
}

func eventKey(v int64) string { return fmt.Sprintf("E%019d", v) }

// benchLoad loads id b.N times and reports the requests and events decoded per load.
func benchLoad(b *testing.B, s *estuite.Store, repo *aggregate.Repository[*account], id string, version int64) {
	ctx := context.Background()
	applied := 0
	before := s.RequestCounts()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a, err := repo.Load(ctx, id)
		if err != nil || a.Version() != version {
			b.Fatalf("Load: version %d, %v; want %d", a.Version(), err, version)
		}
		applied += a.applied
	}
	b.StopTimer()
	b.ReportMetric(float64(s.RequestCounts().Sub(before).Total())/float64(b.N), "requests/op")
	b.ReportMetric(float64(applied)/float64(b.N), "events/op")
}

// benchRawOps runs op b.N times and reports requests per op.
func benchRawOps(b *testing.B, requests int, op func(i int) error) {
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := op(i); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(requests), "requests/op")
}

func BenchmarkAggregateLoad(b *testing.B) {
	reg := accountRegistry()
	for _, bb := range benchBackends(b) {
		plain := newRepo(bb.store, reg, nil)
		snaps := snapshotRepo(bb.store, reg, aggregate.SnapshotPolicy{Schema: 1, Every: 100})
		for _, n := range []int{10, 100, 10_000} {
			plainID, snapID := fmt.Sprintf("plain-%d", n), fmt.Sprintf("snap-%d", n)
			depositMany(b, plain, plainID, n, 97)
			depositMany(b, snaps, snapID, n, 97)
			a, err := snaps.Load(context.Background(), snapID)
			if err != nil {
				b.Fatal(err)
			}
			snapAt := a.Version() - int64(a.applied) // 0: no snapshot yet
			prefix := fmt.Sprintf("%s/events=%d", bb.name, n)
			b.Run(prefix+"/plain", func(b *testing.B) { benchLoad(b, bb.store, plain, plainID, int64(n)) })
			b.Run(prefix+"/raw", func(b *testing.B) {
				pk := plain.Stream(plainID)
				benchRawOps(b, (n+1+999)/1000, func(int) error {
					rows, err := bb.query(pk, eventKey(1), "I")
					if err == nil && rows != n+1 {
						err = fmt.Errorf("raw query returned %d rows, want %d", rows, n+1)
					}
					return err
				})
			})
			b.Run(fmt.Sprintf("%s/snapshots(at=%d)", prefix, snapAt), func(b *testing.B) { benchLoad(b, bb.store, snaps, snapID, int64(n)) })
			b.Run(fmt.Sprintf("%s/raw-snapshot(at=%d)", prefix, snapAt), func(b *testing.B) {
				pk := snaps.Stream(snapID)
				requests, tail := 1, n-int(snapAt)+1
				if snapAt > 0 {
					requests = 2
				}
				benchRawOps(b, requests+(tail-1)/1000, func(int) error {
					if snapAt > 0 {
						if _, err := bb.get(pk, "D"); err != nil {
							return err
						}
					}
					rows, err := bb.query(pk, eventKey(snapAt+1), "I")
					if err == nil && rows != tail {
						err = fmt.Errorf("raw query returned %d rows, want %d", rows, tail)
					}
					return err
				})
			})
		}
	}
}

func BenchmarkAggregateUpdate(b *testing.B) {
	const events = 4 // in each aggregate before the update
	ctx := context.Background()
	reg := accountRegistry()
	deposit := func(a *account) error { return a.Deposit(1) }
	for _, bb := range append(benchBackends(b), azuriteBench(b, "azurite+10ms", 10*time.Millisecond)) {
		repo := newRepo(bb.store, reg, nil)
		// Each op updates an aggregate no op updated before, created outside the timed loop.
		used := 0
		b.Run(bb.name+"/update", func(b *testing.B) {
			for id := used; id < used+b.N; id++ {
				depositMany(b, repo, fmt.Sprint(id), events, events)
			}
			before := bb.store.RequestCounts()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				a, err := repo.Update(ctx, fmt.Sprint(used+i), deposit, nil)
				if err != nil || a.Version() != events+1 {
					b.Fatalf("Update: version %d, %v", a.Version(), err)
				}
			}
			used += b.N
			b.StopTimer()
			b.ReportMetric(float64(bb.store.RequestCounts().Sub(before).Total())/float64(b.N), "requests/op")
		})
		if bb.unannounced != nil {
			// The same command with the marker written between the load and the batch.
			repo := newRepo(bb.unannounced, reg, nil)
			b.Run(bb.name+"/update-unannounced", func(b *testing.B) {
				for id := used; id < used+b.N; id++ {
					depositMany(b, repo, fmt.Sprint(id), events, events)
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if a, err := repo.Update(ctx, fmt.Sprint(used+i), deposit, nil); err != nil || a.Version() != events+1 {
						b.Fatalf("Update: version %d, %v", a.Version(), err)
					}
				}
				used += b.N
			})
		}
		rawUsed := 0
		b.Run(bb.name+"/raw", func(b *testing.B) {
			for id := rawUsed; id < rawUsed+b.N; id++ {
				pk := fmt.Sprintf("raw-%d", id)
				for v := int64(0); v < events; v++ {
					if err := bb.submit(pk, v, v == 0); err != nil {
						b.Fatal(err)
					}
				}
			}
			benchRawOps(b, 2, func(i int) error {
				pk := fmt.Sprintf("raw-%d", rawUsed+i)
				rows, err := bb.rawQuery(pk, eventKey(1), "I")
				if err != nil {
					return err
				}
				if rows != events+1 {
					return fmt.Errorf("raw query returned %d rows, want %d", rows, events+1)
				}
				return bb.submit(pk, int64(rows-1), false)
			})
			rawUsed += b.N
		})
	}
}
