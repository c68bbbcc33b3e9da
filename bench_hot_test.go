package estuite_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/azuritetest"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/azure"
)

// BenchmarkHotStreamAzurite: 32 appenders with expected version Any to ONE stream of one store
// (group commit per stream, appendqueue.go), beside the raw SDK's rate of single batches with as
// many writers, each to its own partition, in the same run:
//
//	go test -run '^$' -bench 'HotStream' -benchtime 3s -count 3 .
//
// It reports appends/s and the median and p99 latency of one append (p50-ms, p99-ms);
// docs/benchmarks.md has the figures.
func BenchmarkHotStreamAzurite(b *testing.B) {
	conn := azuritetest.ConnectionString(b)
	const conc = 32
	b.Run(fmt.Sprintf("estuite/one-stream/conc=%d", conc), func(b *testing.B) {
		backend, err := azure.Open(conn, nil)
		if err != nil {
			b.Fatal(err)
		}
		s, err := estuite.Open(context.Background(), backend, &estuite.Options{TablePrefix: "hot" + fmt.Sprint(time.Now().UnixNano())})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		stream := fmt.Sprintf("hot-%d", time.Now().UnixNano())
		events := benchEvents(1)
		before := s.RequestCounts()
		runWorkersLatency(b, conc, func(worker, i int) error {
			_, err := s.Append(context.Background(), stream, events, nil)
			return err
		})
		b.ReportMetric(float64(s.RequestCounts().Sub(before).Total())/float64(b.N), "requests/append")
	})
	b.Run(fmt.Sprintf("rawsdk-single-entity-batch/conc=%d", conc), func(b *testing.B) {
		client := rawTable(b, conn, fmt.Sprintf("hotsingle%d", time.Now().UnixNano()), true)
		runWorkersLatency(b, conc, func(worker, i int) error {
			row := rawRows(fmt.Sprintf("s-%d", worker), int64(i), benchEvents(1))[2]
			_, err := client.SubmitTransaction(context.Background(), []aztables.TransactionAction{{ActionType: aztables.TransactionTypeAdd, Entity: table.EncodeJSON(row)}}, nil)
			return err
		})
	})
	b.Run(fmt.Sprintf("rawsdk-append-batch/own-streams/conc=%d", conc), func(b *testing.B) {
		runWorkersLatency(b, conc, rawSDKAppender(b, conn, 1, false))
	})
}

// runWorkersLatency is runWorkers that also reports the median and p99 latency of one op, in
// milliseconds.
func runWorkersLatency(b *testing.B, conc int, op func(worker, i int) error) {
	b.Helper()
	var mu sync.Mutex
	latencies := make([]time.Duration, 0, b.N)
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			defer func() {
				mu.Lock()
				latencies = append(latencies, mine...)
				mu.Unlock()
			}()
			for i := 0; next.Add(1) <= int64(b.N); i++ {
				t0 := time.Now()
				if err := op(w, i); err != nil {
					failed.Store(err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	slices.Sort(latencies)
	quantile := func(q float64) float64 {
		return float64(latencies[min(len(latencies)-1, int(float64(len(latencies))*q))]) / float64(time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
	b.ReportMetric(quantile(0.5), "p50-ms")
	b.ReportMetric(quantile(0.99), "p99-ms")
}
