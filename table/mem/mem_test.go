package mem_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/mem"
	"github.com/estuite/estuite/table/tabletest"
)

func TestConformance(t *testing.T) {
	configs := []struct {
		name string
		opts mem.Options
	}{
		{"Defaults", mem.Options{}},
		{"PageSize7", mem.Options{PageSize: 7}},
		{"EmptyPages", mem.Options{EmptyPages: true}},
	}
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			tabletest.Run(t, tabletest.Harness{
				NewTable: func(t *testing.T) table.Table {
					tbl, err := mem.New(&c.opts).OpenTable(t.Context(), "conformance")
					if err != nil {
						t.Fatal(err)
					}
					return tbl
				},
				PageSize: c.opts.PageSize,
			})
		})
	}
}

// recorder is a FaultFunc that records every call and answers with the fault set for a method.
type recorder struct {
	mu     sync.Mutex
	calls  []mem.Call
	faults map[mem.Method]mem.Fault
}

func (r *recorder) fault(c mem.Call) mem.Fault {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, c)
	return r.faults[c.Method]
}

func (r *recorder) set(m mem.Method, f mem.Fault) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults[m] = f
}

func newBackend(t *testing.T, opts *mem.Options) (*mem.Backend, *mem.Table, *recorder) {
	t.Helper()
	r := &recorder{faults: map[mem.Method]mem.Fault{}}
	b := mem.New(opts)
	b.SetFaults(r.fault)
	tbl, err := b.Table("faults")
	if err != nil {
		t.Fatal(err)
	}
	return b, tbl, r
}

func insert(pk, rk string, v string) table.Op {
	return table.Op{Kind: table.Insert, Entity: table.Entity{PartitionKey: pk, RowKey: rk, Properties: map[string]any{"V": v}}}
}

// wantInjected checks that err is a transient error caused by an injected fault.
func wantInjected(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want an injected fault", what)
	}
	if !errors.Is(err, table.ErrTransient) {
		t.Errorf("%s: %v does not wrap table.ErrTransient", what, err)
	}
	if !errors.Is(err, mem.ErrInjected) {
		t.Errorf("%s: %v does not wrap mem.ErrInjected", what, err)
	}
	for _, definite := range []error{table.ErrNotFound, table.ErrAlreadyExists, table.ErrPreconditionFailed, table.ErrInvalid} {
		if errors.Is(err, definite) {
			t.Errorf("%s: %v wraps %v", what, err, definite)
		}
	}
}

func TestFailBeforeSubmitWritesNothing(t *testing.T) {
	ctx := t.Context()
	_, tbl, r := newBackend(t, nil)
	etags, err := tbl.Submit(ctx, "p", []table.Op{insert("p", "a", "a")})
	if err != nil {
		t.Fatal(err)
	}
	r.set(mem.MethodSubmit, mem.FailBefore)
	ops := []table.Op{
		insert("p", "b", "b"),
		{Kind: table.Replace, Entity: table.Entity{PartitionKey: "p", RowKey: "a", Properties: map[string]any{"V": "changed"}}, IfMatch: etags[0]},
	}
	_, err = tbl.Submit(ctx, "p", ops)
	wantInjected(t, "Submit with FailBefore", err)
	if errors.Is(err, table.ErrUnknownOutcome) {
		t.Errorf("Submit with FailBefore: %v claims an unknown outcome, but nothing was applied", err)
	}
	r.set(mem.MethodSubmit, mem.NoFault)

	if _, err := tbl.Get(ctx, "p", "b"); !errors.Is(err, table.ErrNotFound) {
		t.Errorf("Get of the row inserted by a FailBefore batch: %v, want ErrNotFound", err)
	}
	e, err := tbl.Get(ctx, "p", "a")
	if err != nil {
		t.Fatal(err)
	}
	if e.ETag != etags[0] || e.Properties["V"] != "a" {
		t.Errorf("row replaced by a FailBefore batch is %+v, want it unchanged", e)
	}
	// The batch can be retried and succeeds: nothing of it was applied.
	if _, err := tbl.Submit(ctx, "p", ops); err != nil {
		t.Errorf("retry of the batch after FailBefore: %v", err)
	}
}

func TestFailAfterSubmitTakesEffect(t *testing.T) {
	ctx := t.Context()
	_, tbl, r := newBackend(t, nil)
	r.set(mem.MethodSubmit, mem.FailAfter)
	etags, err := tbl.Submit(ctx, "p", []table.Op{insert("p", "a", "a")})
	wantInjected(t, "Submit with FailAfter", err)
	if !errors.Is(err, table.ErrUnknownOutcome) {
		t.Errorf("Submit with FailAfter: %v does not wrap table.ErrUnknownOutcome", err)
	}
	if etags != nil {
		t.Errorf("Submit with FailAfter returned ETags %q", etags)
	}
	if d := table.RetryAfter(err); d != 0 {
		t.Errorf("RetryAfter of an injected fault is %v, want 0", d)
	}
	r.set(mem.MethodSubmit, mem.NoFault)
	e, err := tbl.Get(ctx, "p", "a")
	if err != nil {
		t.Fatalf("Get of the row inserted by a FailAfter batch: %v", err)
	}
	if e.Properties["V"] != "a" {
		t.Errorf("row inserted by a FailAfter batch is %+v", e)
	}
	// A retry of the insert now finds the row: the ambiguity callers must resolve.
	_, err = tbl.Submit(ctx, "p", []table.Op{insert("p", "a", "a")})
	if !errors.Is(err, table.ErrAlreadyExists) {
		t.Errorf("retried insert after FailAfter: %v, want ErrAlreadyExists", err)
	}
}

func TestFailAfterSubmitOfFailingBatchReportsItsError(t *testing.T) {
	ctx := t.Context()
	_, tbl, r := newBackend(t, nil)
	if _, err := tbl.Submit(ctx, "p", []table.Op{insert("p", "a", "a")}); err != nil {
		t.Fatal(err)
	}
	r.set(mem.MethodSubmit, mem.FailAfter)
	_, err := tbl.Submit(ctx, "p", []table.Op{insert("p", "b", "b"), insert("p", "a", "again")})
	var be *table.BatchError
	if !errors.As(err, &be) || be.Index != 1 || !errors.Is(err, table.ErrAlreadyExists) {
		t.Fatalf("failing batch with FailAfter: %v, want a BatchError at index 1 wrapping ErrAlreadyExists", err)
	}
	r.set(mem.MethodSubmit, mem.NoFault)
	if _, err := tbl.Get(ctx, "p", "b"); !errors.Is(err, table.ErrNotFound) {
		t.Errorf("Get of a row of the failed batch: %v, want ErrNotFound", err)
	}
}

func TestFaultsOnReads(t *testing.T) {
	for _, f := range []mem.Fault{mem.FailBefore, mem.FailAfter} {
		for _, emptyPages := range []bool{false, true} {
			ctx := t.Context()
			_, tbl, r := newBackend(t, &mem.Options{EmptyPages: emptyPages})
			if _, err := tbl.Submit(ctx, "p", []table.Op{insert("p", "a", "a")}); err != nil {
				t.Fatal(err)
			}
			r.set(mem.MethodGet, f)
			r.set(mem.MethodQuery, f)
			r.set(mem.MethodScan, f)
			e, err := tbl.Get(ctx, "p", "a")
			wantInjected(t, "Get", err)
			if e.RowKey != "" || e.Properties != nil {
				t.Errorf("Get with fault %d returned the entity %+v", f, e)
			}
			page, err := tbl.Query(ctx, table.Query{PartitionKey: "p"})
			wantInjected(t, "Query", err)
			if len(page.Entities) != 0 || page.Continuation != "" {
				t.Errorf("Query with fault %d returned the page %+v", f, page)
			}
			page, err = tbl.Scan(ctx, table.ScanQuery{})
			wantInjected(t, "Scan", err)
			if len(page.Entities) != 0 || page.Continuation != "" {
				t.Errorf("Scan with fault %d returned the page %+v", f, page)
			}
			// A fault on one method leaves the others alone.
			if _, err := tbl.Submit(ctx, "p", []table.Op{insert("p", "b", "b")}); err != nil {
				t.Errorf("Submit with faults on reads only: %v", err)
			}
		}
	}
}

func TestSeqCountsCalls(t *testing.T) {
	ctx := t.Context()
	b, tbl, r := newBackend(t, nil)
	other, err := b.Table("other")
	if err != nil {
		t.Fatal(err)
	}
	ops := []table.Op{insert("p", "a", "a")}
	if _, err := tbl.Submit(ctx, "p", ops); err != nil {
		t.Fatal(err)
	}
	if _, err := tbl.Get(ctx, "p", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Get(ctx, "q", "b"); !errors.Is(err, table.ErrNotFound) {
		t.Fatal(err)
	}
	if _, err := tbl.Query(ctx, table.Query{PartitionKey: "p"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tbl.Scan(ctx, table.ScanQuery{FromPartition: "a", ToPartition: "z"}); err != nil {
		t.Fatal(err)
	}
	r.set(mem.MethodSubmit, mem.FailBefore)
	if _, err := other.Submit(ctx, "q", []table.Op{insert("q", "c", "c")}); err == nil {
		t.Fatal("Submit with FailBefore succeeded")
	}

	want := []mem.Call{
		{Seq: 1, Table: "faults", Method: mem.MethodSubmit, PartitionKey: "p", Ops: ops},
		{Seq: 2, Table: "faults", Method: mem.MethodGet, PartitionKey: "p", RowKey: "a"},
		{Seq: 3, Table: "other", Method: mem.MethodGet, PartitionKey: "q", RowKey: "b"},
		{Seq: 4, Table: "faults", Method: mem.MethodQuery, PartitionKey: "p"},
		{Seq: 5, Table: "faults", Method: mem.MethodScan},
		{Seq: 6, Table: "other", Method: mem.MethodSubmit, PartitionKey: "q"},
	}
	if len(r.calls) != len(want) {
		t.Fatalf("fault function saw %d calls, want %d: %+v", len(r.calls), len(want), r.calls)
	}
	for i, c := range r.calls {
		w := want[i]
		if c.Seq != w.Seq || c.Table != w.Table || c.Method != w.Method || c.PartitionKey != w.PartitionKey || c.RowKey != w.RowKey {
			t.Errorf("call %d is %+v, want %+v", i, c, w)
		}
	}
	if len(r.calls[0].Ops) != 1 || r.calls[0].Ops[0].Entity.RowKey != "a" {
		t.Errorf("submit call carries the ops %+v", r.calls[0].Ops)
	}
}

func TestSeqIsUniqueUnderConcurrency(t *testing.T) {
	ctx := t.Context()
	_, tbl, r := newBackend(t, nil)
	const n, each = 8, 25
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for range each {
				_, _ = tbl.Get(ctx, "p", "r")
			}
		})
	}
	wg.Wait()
	var seqs []int64
	for _, c := range r.calls {
		seqs = append(seqs, c.Seq)
	}
	slices.Sort(seqs)
	for i, s := range seqs {
		if s != int64(i+1) {
			t.Fatalf("sorted Seq values %v are not 1..%d", seqs, n*each)
		}
	}
	if len(seqs) != n*each {
		t.Fatalf("%d calls recorded, want %d", len(seqs), n*each)
	}
}

func TestSetFaultsNilTurnsFaultsOff(t *testing.T) {
	ctx := t.Context()
	b, tbl, r := newBackend(t, nil)
	r.set(mem.MethodSubmit, mem.FailBefore)
	if _, err := tbl.Submit(ctx, "p", []table.Op{insert("p", "a", "a")}); err == nil {
		t.Fatal("Submit with FailBefore succeeded")
	}
	b.SetFaults(nil)
	if _, err := tbl.Submit(ctx, "p", []table.Op{insert("p", "a", "a")}); err != nil {
		t.Fatalf("Submit after SetFaults(nil): %v", err)
	}
}

func TestCanceledContextFailsBeforeFaults(t *testing.T) {
	_, tbl, r := newBackend(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := tbl.Submit(ctx, "p", []table.Op{insert("p", "a", "a")}); !errors.Is(err, context.Canceled) || !errors.Is(err, table.ErrTransient) {
		t.Errorf("Submit with a canceled context: %v, want a transient error wrapping context.Canceled", err)
	}
	if len(r.calls) != 0 {
		t.Errorf("fault function saw %d calls with a canceled context", len(r.calls))
	}
}

func TestBackendTables(t *testing.T) {
	ctx := t.Context()
	b := mem.New(nil)
	if _, err := b.OpenTable(ctx, "1bad"); !errors.Is(err, table.ErrInvalid) {
		t.Errorf("OpenTable of an invalid name: %v, want ErrInvalid", err)
	}
	t1, err := b.OpenTable(ctx, "events")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := t1.Submit(ctx, "p", []table.Op{insert("p", "a", "a")}); err != nil {
		t.Fatal(err)
	}
	t2, err := b.OpenTable(ctx, "events")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := t2.Get(ctx, "p", "a"); err != nil {
		t.Errorf("reopened table lost its row: %v", err)
	}
	t3, err := b.OpenTable(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := t3.Get(ctx, "p", "a"); !errors.Is(err, table.ErrNotFound) {
		t.Errorf("another table shares rows: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestPutRemovePartitions(t *testing.T) {
	ctx := t.Context()
	_, tbl, _ := newBackend(t, nil)
	tbl.Put(table.Entity{PartitionKey: "b", RowKey: "x/y", Properties: map[string]any{"V": 1.5}}) // invalid on purpose
	tbl.Put(table.Entity{PartitionKey: "a", RowKey: "r", Properties: map[string]any{"V": "v"}})
	if got := tbl.Partitions(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("Partitions() = %q, want [a b]", got)
	}
	e, err := tbl.Get(ctx, "a", "r")
	if err != nil || e.ETag == "" || e.Properties["V"] != "v" {
		t.Errorf("Get of a Put row: %+v, %v", e, err)
	}
	tbl.Remove("b", "x/y")
	tbl.Remove("a", "missing")
	if got := tbl.Partitions(); !slices.Equal(got, []string{"a"}) {
		t.Errorf("Partitions() after Remove = %q, want [a]", got)
	}
}
