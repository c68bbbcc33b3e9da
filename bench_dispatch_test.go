package estuite_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/azuritetest"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/azure"
)

// Benchmarks of the feed, on Azurite unless named otherwise:
//
//	go test -run '^$' -bench 'Dispatch|Lag|FeedRead' -benchtime 1x -timeout 30m .
//
// Each opens two stores on one account: one appends, the other only dispatches, so that the
// dispatcher's storage requests are counted apart from the appends'.

func openAzuriteStores(b *testing.B) (writer, dispatcher *estuite.Store, prefix string) {
	conn := azuritetest.ConnectionString(b)
	prefix = fmt.Sprintf("b%d", time.Now().UnixNano())
	open := func() *estuite.Store {
		backend, err := azure.Open(conn, nil)
		if err != nil {
			b.Fatal(err)
		}
		s, err := estuite.Open(context.Background(), backend, &estuite.Options{TablePrefix: prefix})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		return s
	}
	return open(), open(), prefix
}

// appendBacklog appends commits of commitSize events to streams in turn, total events in all,
// with 16 writers.
func appendBacklog(b *testing.B, s *estuite.Store, streams, commitSize, total int) {
	b.Helper()
	events := benchEvents(commitSize)
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if _, err := s.Append(context.Background(), fmt.Sprintf("stream-%d", i%streams), events, nil); err != nil {
					b.Error(err)
				}
			}
		}()
	}
	for i := 0; i < total/commitSize; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
}

// BenchmarkDispatchAzurite drains a backlog of commits with one dispatcher and reports events per
// second into the feed and the dispatcher's storage requests per event.
func BenchmarkDispatchAzurite(b *testing.B) {
	cases := []struct{ commitSize, streams, events int }{
		{1, 2000, 4000},
		{50, 100, 20000},
	}
	for _, c := range cases {
		b.Run(fmt.Sprintf("commit=%d/streams=%d", c.commitSize, c.streams), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				writer, dispatcherStore, _ := openAzuriteStores(b)
				appendBacklog(b, writer, c.streams, c.commitSize, c.events)
				d := estuite.NewDispatcher(dispatcherStore, nil)
				start := time.Now()
				dispatched := 0
				for {
					st, err := d.Step(context.Background())
					if err != nil {
						b.Fatal(err)
					}
					dispatched += st.Events
					if st.Streams == 0 {
						break
					}
				}
				elapsed := time.Since(start)
				if dispatched != c.events {
					b.Fatalf("dispatched %d events, want %d", dispatched, c.events)
				}
				reqs := dispatcherStore.RequestCounts()
				b.ReportMetric(float64(dispatched)/elapsed.Seconds(), "events/s")
				b.ReportMetric(float64(reqs.Total())/float64(dispatched), "requests/event")
			}
		})
	}
}

// BenchmarkLagAzurite appends single events at a fixed rate across 100 streams for a few seconds
// with a dispatcher running in the same process, and reports the commit-to-feed lag: from the
// moment an append returned to the moment the dispatcher wrote the event into the feed.
func BenchmarkLagAzurite(b *testing.B) {
	for _, rate := range []int{100, 200, 250, 300, 400} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				s, _, _ := openAzuriteStores(b)
				measureLag(b, s, rate, 100, 5*time.Second)
			}
		})
	}
}

func measureLag(b *testing.B, s *estuite.Store, rate, streams int, duration time.Duration) {
	d := estuite.NewDispatcher(s, nil)
	if err := d.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer d.Stop()
	var mu sync.Mutex
	acked := make(map[string]time.Time) // "stream/version" → when the append returned
	var lags []time.Duration
	sub, err := s.Subscribe(context.Background(), estuite.SubscriptionOptions{Handler: func(_ context.Context, ev estuite.FeedEvent) error {
		key := fmt.Sprintf("%s/%d", ev.Stream, ev.Version)
		mu.Lock()
		defer mu.Unlock()
		for {
			if t, ok := acked[key]; ok {
				lags = append(lags, ev.DispatchedAt.Sub(t))
				return nil
			}
			// The feed can be faster than the appender's bookkeeping: wait for it.
			mu.Unlock()
			time.Sleep(100 * time.Microsecond)
			mu.Lock()
		}
	}})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Stop()

	total := int(duration.Seconds() * float64(rate))
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	late := 0
	for i := 0; i < total; i++ {
		due := start.Add(time.Duration(i) * interval)
		if w := time.Until(due); w > 0 {
			time.Sleep(w)
		} else if w < -interval {
			late++
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			stream := fmt.Sprintf("lag-%d", i%streams)
			res, err := s.Append(context.Background(), stream, benchEvents(1), nil)
			if err != nil {
				b.Error(err)
				return
			}
			mu.Lock()
			acked[fmt.Sprintf("%s/%d", stream, res.LastVersion)] = time.Now()
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	achieved := float64(total) / time.Since(start).Seconds()
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(lags)
		mu.Unlock()
		if n >= total || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lags) < total {
		b.Fatalf("only %d of %d events reached the feed", len(lags), total)
	}
	slices.Sort(lags)
	pct := func(p float64) float64 { return float64(lags[int(p*float64(len(lags)-1))].Milliseconds()) }
	b.ReportMetric(achieved, "appends/s")
	b.ReportMetric(pct(0.50), "p50-lag-ms")
	b.ReportMetric(pct(0.99), "p99-lag-ms")
	b.ReportMetric(float64(late), "late-appends")
}

// BenchmarkSingleBatchRateAzurite is the raw SDK's rate of single-entity batches at 16 at once,
// measured beside the lag benchmark as the ceiling an append (two requests) is compared with.
func BenchmarkSingleBatchRateAzurite(b *testing.B) {
	conn := azuritetest.ConnectionString(b)
	b.Run("rawsdk/conc=16", func(b *testing.B) {
		client := rawTable(b, conn, fmt.Sprintf("single%d", time.Now().UnixNano()), true)
		runWorkers(b, 16, func(worker, i int) error {
			row := rawRows(fmt.Sprintf("s-%d", worker), int64(i), benchEvents(1))[2]
			_, err := client.SubmitTransaction(context.Background(), []aztables.TransactionAction{{ActionType: aztables.TransactionTypeAdd, Entity: table.EncodeJSON(row)}}, nil)
			return err
		})
	})
}

// BenchmarkFeedReadAzurite reads 20,000 feed events with ReadFeed, beside the raw SDK listing the
// same rows of the same partitions page by page and decoding each row's JSON into a map.
func BenchmarkFeedReadAzurite(b *testing.B) {
	writer, _, prefix := openAzuriteStores(b)
	const n = 20000
	appendBacklog(b, writer, 50, 50, n)
	stepUntilIdleB(b, estuite.NewDispatcher(writer, nil))
	b.Run("estuite", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			start := time.Now()
			before := writer.RequestCounts()
			read, after := 0, int64(0)
			for read < n {
				page, err := writer.ReadFeed(context.Background(), &estuite.FeedOptions{After: after})
				if err != nil {
					b.Fatal(err)
				}
				read += len(page.Events)
				after = page.Next
			}
			b.ReportMetric(float64(read)/time.Since(start).Seconds(), "events/s")
			b.ReportMetric(float64(read)/float64(writer.RequestCounts().Sub(before).Total()), "events/request")
		}
	})
	b.Run("rawsdk", func(b *testing.B) {
		client := rawTable(b, azuritetest.ConnectionString(b), prefix+"events", false)
		for i := 0; i < b.N; i++ {
			start := time.Now()
			read := 0
			for page := int64(0); page <= int64(n-1)/estuite.FeedPageSize; page++ {
				pager := client.NewListEntitiesPager(&aztables.ListEntitiesOptions{
					Filter: to.Ptr(fmt.Sprintf("PartitionKey eq 'feed00-%012d' and RowKey ge 'P' and RowKey lt 'Q'", page)),
					Top:    to.Ptr(int32(1000)),
				})
				for pager.More() {
					resp, err := pager.NextPage(context.Background())
					if err != nil {
						b.Fatal(err)
					}
					// Decode each row, as any reader of the rows must.
					for _, raw := range resp.Entities {
						var row map[string]any
						if err := json.Unmarshal(raw, &row); err != nil {
							b.Fatal(err)
						}
						read++
					}
				}
			}
			if read != n {
				b.Fatalf("raw read %d rows, want %d", read, n)
			}
			b.ReportMetric(float64(read)/time.Since(start).Seconds(), "events/s")
		}
	})
}

func stepUntilIdleB(b *testing.B, d *estuite.Dispatcher) {
	for {
		st, err := d.Step(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if st.Streams == 0 {
			return
		}
	}
}

// BenchmarkDispatchEmbedded drains a backlog on the embedded store.
func BenchmarkDispatchEmbedded(b *testing.B) {
	for _, commitSize := range []int{1, 50} {
		b.Run(fmt.Sprintf("commit=%d", commitSize), func(b *testing.B) {
			s := openEmbeddedB(b)
			total := 5000
			appendBacklog(b, s, 500, commitSize, total)
			before := s.RequestCounts()
			start := time.Now()
			stepUntilIdleB(b, estuite.NewDispatcher(s, nil))
			b.ReportMetric(float64(total)/time.Since(start).Seconds(), "events/s")
			b.ReportMetric(float64(s.RequestCounts().Sub(before).Total())/float64(total), "requests/event")
		})
	}
}
