package throttle_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/estuite/estuite/internal/throttle"
	"github.com/estuite/estuite/table"
)

// scaled are Azure's targets (throttle.AzureTargets) divided by ten: 200 entities a second per
// partition, 2,000 transactions a second per account.
var scaled = throttle.Limits{PartitionEntitiesPerSecond: 200, AccountTransactionsPerSecond: 2000}

// BenchmarkInsertRate measures the sustained rate of inserts into 1 and 4 partitions of one
// table through table/azure and a proxy in front of Azurite: entity group transactions of batch
// inserts each. Four workers per partition insert as fast as they can, backing off 0–10 ms
// (growing from 1 ms) after a refusal; the rate is counted over 5 s after 1.5 s of warm-up,
// which spends the buckets' bursts. The unlimited cases measure what Azurite itself sustains on
// the machine; the scaled ones use Azure's targets divided by ten; the last has the account
// limit below the sum of the partitions'.
//
//	go test -run '^$' -bench BenchmarkInsertRate -benchtime 1x ./internal/throttle/
func BenchmarkInsertRate(b *testing.B) {
	for _, tc := range []struct {
		name              string
		limits            throttle.Limits
		partitions, batch int
	}{
		{"unlimited/partitions=4/batch=1", throttle.Limits{}, 4, 1},
		{"unlimited/partitions=4/batch=10", throttle.Limits{}, 4, 10},
		{"scaled/partitions=1/batch=1", scaled, 1, 1},
		{"scaled/partitions=4/batch=1", scaled, 4, 1},
		{"scaled/partitions=1/batch=10", scaled, 1, 10},
		{"scaled/partitions=4/batch=10", scaled, 4, 10},
		{"account50/partitions=4/batch=10", throttle.Limits{PartitionEntitiesPerSecond: 200, AccountTransactionsPerSecond: 50}, 4, 10},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				r := insertRate(b, tc.limits, tc.partitions, tc.batch, 4, 1500*time.Millisecond, 5*time.Second)
				b.ReportMetric(r.entities, "entities/s")
				b.ReportMetric(r.batches, "tx/s")
				b.ReportMetric(r.refused, "refused/s")
			}
		})
	}
}

// rates are what insertRate measured, a second.
type rates struct{ entities, batches, refused float64 }

// insertRate runs workers inserters per partition through a new proxy with limits l, each
// inserting batch entities a transaction, and returns the rates over the measured span after
// the warm-up.
func insertRate(b *testing.B, l throttle.Limits, partitions, batch, workers int, warmUp, span time.Duration) rates {
	srv, backend := front(b, l)
	tbl := openTable(b, backend)
	ctx := context.Background()
	start := time.Now()
	from, until := start.Add(warmUp), start.Add(warmUp+span)
	var ok, busy atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	for p := range partitions {
		pk := "p" + strconv.Itoa(p)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				backoff := time.Millisecond
				for i := 0; ; i++ {
					if time.Now().After(until) {
						return
					}
					ops := make([]table.Op, batch)
					for j := range ops {
						ops[j] = insert(pk, strconv.Itoa(w)+"-"+strconv.Itoa(i)+"-"+strconv.Itoa(j))[0]
					}
					_, err := tbl.Submit(ctx, pk, ops)
					now := time.Now()
					measured := now.After(from) && now.Before(until)
					switch {
					case err == nil:
						if measured {
							ok.Add(1)
						}
						backoff = time.Millisecond
					case errors.Is(err, table.ErrTransient) && !errors.Is(err, table.ErrUnknownOutcome):
						if measured {
							busy.Add(1)
						}
						time.Sleep(rand.N(backoff))
						backoff = min(2*backoff, 10*time.Millisecond)
					default:
						failed.Store(err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatalf("insert: %v", err)
	}
	s := srv.Stats()
	b.Logf("%d partitions, %d a batch: %d requests, %d throttled (%d by the account)", partitions, batch,
		s.Requests, s.Throttled, s.AccountThrottled)
	sec := span.Seconds()
	return rates{float64(ok.Load()*int64(batch)) / sec, float64(ok.Load()) / sec, float64(busy.Load()) / sec}
}
