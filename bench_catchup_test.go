package estuite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/bolt"
	"github.com/estuite/estuite/table/mem"
)

// unclosable shares a backend between two stores: only the first store's Close closes it.
type unclosable struct{ table.Backend }

func (unclosable) Close() error { return nil }

// BenchmarkCatchUpAfterOutage measures a dispatcher catching up after an outage: 200,000
// single-event appends to 20,000 streams land while no dispatcher runs (200,000 dirty markers),
// then one dispatcher steps until the feed holds them all. It reports the dispatcher's storage
// requests per event and in all, its steps, and the peak heap in use while it worked (above what
// was in use when it started). On the memory backend the heap includes the feed rows the backend
// keeps; on bbolt (without fsync, a test setting) the rows live in the file, so its peak heap is
// the dispatcher's own:
//
//	go test -run '^$' -bench CatchUpAfterOutage -benchtime 1x .
func BenchmarkCatchUpAfterOutage(b *testing.B) {
	for _, name := range []string{"mem", "bolt"} {
		b.Run("backend="+name, func(b *testing.B) {
			benchCatchUp(b, func() table.Backend {
				if name == "mem" {
					return mem.New(nil)
				}
				backend, err := bolt.Open(filepath.Join(b.TempDir(), "catchup.db"), &bolt.Options{NoSync: true})
				if err != nil {
					b.Fatal(err)
				}
				return backend
			})
		})
	}
}

func benchCatchUp(b *testing.B, newBackend func() table.Backend) {
	const appends, streams = 200000, 20000
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		backend := newBackend()
		writer := openStore(b, backend, nil)
		var wg sync.WaitGroup
		next := atomic.Int64{}
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := next.Add(1); n <= appends; n = next.Add(1) {
					if _, err := writer.Append(context.Background(), fmt.Sprintf("outage-%d", n%streams), []estuite.EventData{jsonEvent("E", `{"n":1}`)}, nil); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		s, err := estuite.Open(context.Background(), &unclosable{backend}, nil) // writer closes the backend
		if err != nil {
			b.Fatal(err)
		}
		d := estuite.NewDispatcher(s, nil)
		runtime.GC()
		var base runtime.MemStats
		runtime.ReadMemStats(&base)
		peak := atomic.Uint64{}
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			t := time.NewTicker(5 * time.Millisecond)
			defer t.Stop()
			for {
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				if m.HeapInuse > peak.Load() {
					peak.Store(m.HeapInuse)
				}
				select {
				case <-stop:
					return
				case <-t.C:
				}
			}
		}()
		b.StartTimer()
		start := time.Now()
		steps, events := 0, 0
		for {
			st, err := d.Step(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			steps++
			events += st.Events
			if st.Streams == 0 {
				break
			}
		}
		elapsed := time.Since(start)
		b.StopTimer()
		close(stop)
		<-sampled
		if events != appends {
			b.Fatalf("dispatched %d events, want %d", events, appends)
		}
		req := s.RequestCounts().Total()
		b.ReportMetric(float64(req)/float64(events), "requests/event")
		b.ReportMetric(float64(req), "requests")
		b.ReportMetric(float64(steps), "steps")
		b.ReportMetric(float64(events)/elapsed.Seconds(), "events/s")
		b.ReportMetric(float64(peak.Load()-min(base.HeapInuse, peak.Load()))/(1<<20), "peak-heap-MB")
		b.StartTimer()
	}
}
