package estuite_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/azuritetest"
	"github.com/estuite/estuite/internal/throttle"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/azure"
)

// BenchmarkFeedShardIngest measures how fast the feed takes events in with P = 1, 2, 4 and 8 feed
// shards, on Azurite behind a proxy that imposes Azure's scalability targets divided by ten (200
// entities a second per partition, 2,000 transactions a second per account; internal/throttle),
// answering 503 ServerBusy over them as Azure does. The events (1,600 a shard, in appends of 10
// over 16 streams a shard) are appended first, straight to Azurite; then one dispatcher per shard
// runs (as the servers of a deployment would) through the proxy until the feed holds every event.
// Reported: events/s into the feed, and the ratio to P = 1 comes from the side-by-side runs.
//
//	go test -run '^$' -bench BenchmarkFeedShardIngest -benchtime 1x .
func BenchmarkFeedShardIngest(b *testing.B) {
	limits := throttle.Limits{PartitionEntitiesPerSecond: 200, AccountTransactionsPerSecond: 2000}
	for _, shards := range []int{1, 2, 4, 8} {
		// The same load per shard, so that the buckets' one-second bursts weigh the same in
		// every run: 1,600 events over 16 streams a shard.
		eventsPerRun, streams := 1600*shards, 16*shards
		b.Run(fmt.Sprintf("shards=%d", shards), func(b *testing.B) {
			for range b.N {
				ctx := context.Background()
				conn := azuritetest.ConnectionString(b)
				prefix := uniquePrefix(b)
				direct, err := azure.Open(conn, nil)
				if err != nil {
					b.Fatal(err)
				}
				writer, err := estuite.Open(ctx, direct, &estuite.Options{TablePrefix: prefix, FeedShards: shards})
				if err != nil {
					b.Fatal(err)
				}
				var wg sync.WaitGroup
				errs := make(chan error, streams)
				for i := range streams {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for n := 0; n < eventsPerRun/streams; n += 10 {
							evs := make([]estuite.EventData, min(10, eventsPerRun/streams-n))
							for j := range evs {
								evs[j] = estuite.EventData{Type: "Ticked", Data: []byte(`{"n":1}`)}
							}
							if _, err := writer.Append(ctx, fmt.Sprintf("s-%d", i), evs, nil); err != nil {
								errs <- err
								return
							}
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
				written := eventsPerRun / streams * streams

				srv, err := throttle.Front(conn, limits)
				if err != nil {
					b.Fatal(err)
				}
				throttled, err := azure.Open(srv.ConnectionString, nil)
				if err != nil {
					b.Fatal(err)
				}
				retry := estuite.RetryPolicy{MaxAttempts: 50, BaseDelay: 2 * time.Millisecond, MaxDelay: 50 * time.Millisecond}
				s, err := estuite.Open(ctx, throttled, &estuite.Options{TablePrefix: prefix, Retry: retry})
				if err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				start := time.Now()
				// One dispatcher per shard, started as a server starts them; the feed is watched
				// through the direct connection, every 20 ms.
				var ds []*estuite.Dispatcher
				for shard := range shards {
					d := estuite.NewDispatcher(s, &estuite.DispatcherOptions{Shard: shard, PollInterval: 20 * time.Millisecond, ScavengeInterval: -1})
					if err := d.Start(ctx); err != nil {
						b.Fatal(err)
					}
					ds = append(ds, d)
				}
				heads := func() int {
					n := 0
					for shard := range shards {
						head, err := writer.FeedHeadOf(ctx, shard)
						if err != nil {
							b.Fatal(err)
						}
						n += int(head)
					}
					return n
				}
				for heads() < written && time.Since(start) < 2*time.Minute {
					time.Sleep(20 * time.Millisecond)
				}
				elapsed := time.Since(start)
				b.StopTimer()
				for _, d := range ds {
					d.Stop()
				}
				total := heads()
				st := srv.Stats()
				if total != written {
					b.Fatalf("the feed holds %d of %d events after %v", total, written, elapsed)
				}
				b.ReportMetric(float64(total)/elapsed.Seconds(), "events/s")
				b.ReportMetric(float64(st.Throttled)/elapsed.Seconds(), "refused/s")
				b.Logf("%d shards: %d events in %v; %d requests through the proxy, %d refused", shards, total, elapsed.Round(time.Millisecond), st.Requests, st.Throttled)
				srv.Close()
				s.Close()
				writer.Close()
			}
		})
	}
}

// BenchmarkGroupProjection measures a consumer group's projection throughput with 1, 2 and 4
// members, each a process of its own (a Store on the throttling proxy), through Azure's targets
// scaled down as for BenchmarkFeedShardIngest. The projection upserts one read-model row per
// event (partition: the event's stream) through the same proxy, so a member goes as fast as its
// handler's storage writes, one at a time; or it stands for a call to another service (5 ms). Two layouts of 8 slots: 8 feed shards of one range
// each, and 4 feed shards of 2 ranges each (two members then read the same shard's feed, each
// for its own range). The 3,072 events over 256 streams are in the feed before the members start;
// the rate is taken from the moment every member holds its share of the slots to the last event
// handled.
//
//	go test -run '^$' -bench BenchmarkGroupProjection -benchtime 1x .
func BenchmarkGroupProjection(b *testing.B) {
	limits := throttle.Limits{PartitionEntitiesPerSecond: 200, AccountTransactionsPerSecond: 2000}
	const streams, perStream = 256, 12
	for _, layout := range []struct {
		shards, ranges int
		handler        string
	}{{8, 1, "upsert"}, {8, 1, "call5ms"}, {4, 2, "upsert"}} {
		for _, members := range []int{1, 2, 4} {
			benchGroupProjection(b, limits, layout.shards, layout.ranges, members, streams, perStream, layout.handler)
		}
	}
}

// benchGroupProjection runs one case of BenchmarkGroupProjection. Handler "upsert" writes the
// read-model row; "call5ms" stands for a projection that calls another service: it waits 5 ms,
// and writes nothing.
func benchGroupProjection(b *testing.B, limits throttle.Limits, shards, ranges, members, streams, perStream int, handler string) {
	{
		b.Run(fmt.Sprintf("handler=%s/shards=%d/ranges=%d/members=%d", handler, shards, ranges, members), func(b *testing.B) {
			for range b.N {
				ctx := context.Background()
				conn := azuritetest.ConnectionString(b)
				prefix := uniquePrefix(b)
				direct, err := azure.Open(conn, nil)
				if err != nil {
					b.Fatal(err)
				}
				writer, err := estuite.Open(ctx, direct, &estuite.Options{TablePrefix: prefix, FeedShards: shards})
				if err != nil {
					b.Fatal(err)
				}
				for i := range streams {
					evs := make([]estuite.EventData, perStream)
					for j := range evs {
						evs[j] = estuite.EventData{Type: "Ticked", Data: []byte(`{"n":1}`)}
					}
					if _, err := writer.Append(ctx, fmt.Sprintf("p-%d", i), evs, nil); err != nil {
						b.Fatal(err)
					}
				}
				g := estuite.NewDispatchGroup(writer, &estuite.DispatcherOptions{PollInterval: 10 * time.Millisecond, ScavengeInterval: -1})
				if err := g.Start(ctx); err != nil {
					b.Fatal(err)
				}
				for i := range streams {
					if _, err := writer.WaitDispatched(ctx, fmt.Sprintf("p-%d", i), int64(perStream)); err != nil {
						b.Fatal(err)
					}
				}
				g.Stop()
				total := int64(streams * perStream)

				srv, err := throttle.Front(conn, limits)
				if err != nil {
					b.Fatal(err)
				}
				retry := estuite.RetryPolicy{MaxAttempts: 50, BaseDelay: 2 * time.Millisecond, MaxDelay: 50 * time.Millisecond}
				var handled atomic.Int64
				var ms []*estuite.GroupMember
				var stores []*estuite.Store
				b.ResetTimer()
				for k := range members {
					throttled, err := azure.Open(srv.ConnectionString, nil)
					if err != nil {
						b.Fatal(err)
					}
					s, err := estuite.Open(ctx, throttled, &estuite.Options{TablePrefix: prefix, Retry: retry})
					if err != nil {
						b.Fatal(err)
					}
					model, err := throttled.OpenTable(ctx, prefix+"model")
					if err != nil {
						b.Fatal(err)
					}
					stores = append(stores, s)
					m, err := s.JoinGroup(ctx, estuite.GroupOptions{
						Group: "projection", Member: fmt.Sprintf("member-%d", k), Ranges: ranges,
						LeaseDuration: time.Second, PollInterval: 10 * time.Millisecond, MaxPollInterval: 50 * time.Millisecond,
						Handler: func(ctx context.Context, ev estuite.FeedEvent) error {
							if handler == "call5ms" {
								time.Sleep(5 * time.Millisecond)
								handled.Add(1)
								return nil
							}
							row := table.Entity{PartitionKey: ev.Stream, RowKey: "count", Properties: map[string]any{"Version": ev.Version}}
							for attempt := 0; ; attempt++ {
								_, err := model.Submit(ctx, ev.Stream, []table.Op{{Kind: table.Upsert, Entity: row}})
								if err == nil {
									handled.Add(1)
									return nil
								}
								if !errors.Is(err, table.ErrTransient) || attempt > 50 {
									return err
								}
								time.Sleep(2 * time.Millisecond) // refused by the proxy: as the SDK's retry would
							}
						},
					})
					if err != nil {
						b.Fatal(err)
					}
					ms = append(ms, m)
				}
				share := shards * ranges / members
				settled := func() bool {
					for _, m := range ms {
						if len(m.Slots()) != share {
							return false
						}
					}
					return true
				}
				for !settled() && handled.Load() < total {
					time.Sleep(time.Millisecond)
				}
				start, from := time.Now(), handled.Load()
				for handled.Load() < total && time.Since(start) < 3*time.Minute {
					time.Sleep(5 * time.Millisecond)
				}
				elapsed := time.Since(start)
				b.StopTimer()
				var redelivered int64
				for _, m := range ms {
					redelivered += m.Stats().Redelivered
					m.Stop()
				}
				if got := handled.Load(); got < total {
					b.Fatalf("%d of %d events handled after %v", got, total, elapsed)
				}
				if from == total {
					b.Fatalf("every event was handled before the members settled: nothing measured")
				}
				st := srv.Stats()
				b.ReportMetric(float64(total-from)/elapsed.Seconds(), "events/s")
				b.Logf("%d shards × %d ranges, %d members: %d events after settling in %v (%d before); %d requests through the proxy, %d refused; %d redelivered",
					shards, ranges, members, total-from, elapsed.Round(time.Millisecond), from, st.Requests, st.Throttled, redelivered)
				for _, s := range stores {
					s.Close()
				}
				srv.Close()
				writer.Close()
			}
		})
	}
}
