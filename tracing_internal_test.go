package estuite

import (
	"context"
	"testing"

	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/mem"
)

// TestTracingOffAllocatesNothing: with tracing off, the storage wrapper's requests allocate
// exactly what the same requests made without its tracing hooks do (the hook is one nil check).
func TestTracingOffAllocatesNothing(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, mem.New(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.tr != nil || s.streams.tr != nil {
		t.Fatal("a store without a TracerProvider traces")
	}
	st := s.streams
	row := table.Entity{PartitionKey: "p", RowKey: "r", Properties: map[string]any{"V": int64(1)}}
	if _, err := st.submitOnce(ctx, "p", []table.Op{{Kind: table.Upsert, Entity: row}}); err != nil {
		t.Fatal(err)
	}
	ops := []table.Op{{Kind: table.Upsert, Entity: row}}
	bare := func(call func()) float64 { return testing.AllocsPerRun(200, call) }
	for _, c := range []struct {
		name           string
		wrapped, plain func()
	}{
		{"get", func() { _, _ = st.get(ctx, "p", "r") }, func() {
			_, _ = withRetry(ctx, st.retry, func() (table.Entity, error) {
				st.counts.pointReads.Add(1)
				return st.t.Get(ctx, "p", "r")
			})
		}},
		{"query", func() { _, _ = st.query(ctx, table.Query{PartitionKey: "p"}) }, func() {
			_, _ = withRetry(ctx, st.retry, func() (table.Page, error) {
				st.counts.page("")
				return st.t.Query(ctx, table.Query{PartitionKey: "p"})
			})
		}},
		{"submit", func() { _, _ = st.submitOnce(ctx, "p", ops) }, func() {
			st.counts.submit(ops)
			_, _ = st.t.Submit(ctx, "p", ops)
		}},
	} {
		w, p := bare(c.wrapped), bare(c.plain)
		t.Logf("%s: %v allocations through the wrapper, %v without it", c.name, w, p)
		if w > p {
			t.Errorf("%s with tracing off: %v allocations, %v without the hooks", c.name, w, p)
		}
	}
}
