package estuite_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/azuritetest"
	"github.com/estuite/estuite/internal/throttle"
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
