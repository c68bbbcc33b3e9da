package bolt

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	bbolt "go.etcd.io/bbolt"

	"github.com/estuite/estuite/table"
)

// Both benchmarks write, per op, a batch of 3 rows of about 200 bytes into a partition of its
// own, with real fsync, from exactly conc goroutines. Compare their ns/op at equal conc:
//
//	go test -run xxx -bench . -benchtime 2s ./table/bolt/

var benchConcurrency = []int{1, 16}

const benchRows = 3

var benchPayload = strings.Repeat("x", 180)

// runConcurrent calls op(i) for i in [0, b.N) from exactly conc goroutines.
func runConcurrent(b *testing.B, conc int, op func(i int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				if err := op(i); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
}

func benchProps(i, row int) map[string]any {
	return map[string]any{"Data": benchPayload, "Seq": int64(i*benchRows + row)}
}

func BenchmarkSubmit(b *testing.B) {
	for _, conc := range benchConcurrency {
		b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) {
			be, err := Open(filepath.Join(b.TempDir(), "bench.db"), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer be.Close()
			tb, err := be.OpenTable(context.Background(), "bench")
			if err != nil {
				b.Fatal(err)
			}
			runConcurrent(b, conc, func(i int) error {
				pk := fmt.Sprintf("p%010d", i)
				ops := make([]table.Op, benchRows)
				for r := range ops {
					ops[r] = table.Op{Kind: table.Insert, Entity: table.Entity{
						PartitionKey: pk, RowKey: fmt.Sprintf("r%d", r), Properties: benchProps(i, r)}}
				}
				_, err := tb.Submit(context.Background(), pk, ops)
				return err
			})
		})
	}
}

// BenchmarkBareBoltUpdate is the baseline: the same rows written with one plain db.Update per op
// on a file opened with the same bbolt options.
func BenchmarkBareBoltUpdate(b *testing.B) {
	for _, conc := range benchConcurrency {
		b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) {
			db, err := bbolt.Open(filepath.Join(b.TempDir(), "bench.db"), 0o600, boltOptions(Options{}))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			bucket := []byte("bench")
			if err := db.Update(func(tx *bbolt.Tx) error {
				_, err := tx.CreateBucket(bucket)
				return err
			}); err != nil {
				b.Fatal(err)
			}
			runConcurrent(b, conc, func(i int) error {
				prefix := partitionPrefix(fmt.Sprintf("p%010d", i))
				return db.Update(func(tx *bbolt.Tx) error {
					bk := tx.Bucket(bucket)
					for r := range benchRows {
						v, err := encodeRow(`W/"1"`, benchProps(i, r))
						if err != nil {
							return err
						}
						if err := bk.Put(rowKey(prefix, fmt.Sprintf("r%d", r)), v); err != nil {
							return err
						}
					}
					return nil
				})
			})
		})
	}
}
