package estuite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/bolt"
	"github.com/estuite/estuite/table/mem"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// BenchmarkAppendTracing compares appends with tracing off (no TracerProvider) and on (a
// provider that samples and records every span, exported in batches to an exporter that drops
// them), side by side on the memory and bolt backends (bolt without fsync, so that the
// difference is not lost in the disk's):
//
//	go test -run '^$' -bench AppendTracing -benchmem -count 5 .
func BenchmarkAppendTracing(b *testing.B) {
	backends := []struct {
		name string
		open func(b *testing.B) table.Backend
	}{
		{"mem", func(*testing.B) table.Backend { return mem.New(nil) }},
		{"bolt", func(b *testing.B) table.Backend {
			bb, err := bolt.Open(filepath.Join(b.TempDir(), "estuite.db"), &bolt.Options{NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			return bb
		}},
	}
	for _, be := range backends {
		for _, tracing := range []string{"off", "on"} {
			for _, n := range []int{1, 50} {
				b.Run(fmt.Sprintf("backend=%s/tracing=%s/events=%d", be.name, tracing, n), func(b *testing.B) {
					var tp trace.TracerProvider
					if tracing == "on" {
						p := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()), sdktrace.WithSampler(sdktrace.AlwaysSample()))
						b.Cleanup(func() { _ = p.Shutdown(context.Background()) })
						tp = p
					}
					s := openStore(b, be.open(b), &estuite.Options{TracerProvider: tp})
					benchAppendOneStream(b, s, n)
				})
			}
		}
	}
}

// benchAppendOneStream appends n events at a time to one stream, b.N times, from one goroutine.
func benchAppendOneStream(b *testing.B, s *estuite.Store, n int) {
	events := benchEvents(n)
	ctx := context.Background()
	if _, err := s.Append(ctx, "bench-tracing", events, nil); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := s.Append(ctx, "bench-tracing", events, nil); err != nil {
			b.Fatal(err)
		}
	}
}
