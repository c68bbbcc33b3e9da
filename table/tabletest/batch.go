package tabletest

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/estuite/estuite/table"
)

func (s *suite) testFailureIndex(t *testing.T) {
	failures := []struct {
		name string
		op   func(stale string) table.Op
		err  error
	}{
		{"InsertExisting", func(string) table.Op { return insertOp("p", "r5", props("V", "x")) }, table.ErrAlreadyExists},
		{"ReplaceStaleETag", func(stale string) table.Op { return replaceOp("p", "r5", stale, props("V", "x")) }, table.ErrPreconditionFailed},
		{"ReplaceMissing", func(string) table.Op { return replaceOp("p", "gone", table.AnyETag, props("V", "x")) }, table.ErrNotFound},
		{"MergeStaleETag", func(stale string) table.Op { return mergeOp("p", "r5", stale, props("V", "x")) }, table.ErrPreconditionFailed},
		{"MergeMissing", func(string) table.Op { return mergeOp("p", "gone", "", props("V", "x")) }, table.ErrNotFound},
		{"DeleteStaleETag", func(stale string) table.Op { return deleteOp("p", "r5", stale) }, table.ErrPreconditionFailed},
		{"DeleteMissing", func(string) table.Op { return deleteOp("p", "gone", table.AnyETag) }, table.ErrNotFound},
	}
	positions := []struct {
		name  string
		index int
	}{{"First", 0}, {"Middle", 3}, {"Last", 5}}
	for _, f := range failures {
		for _, pos := range positions {
			t.Run(f.name+"At"+pos.name, func(t *testing.T) {
				tbl := s.table(t)
				etags := submit(t, tbl, "p",
					insertOp("p", "r1", props("V", "r1")),
					insertOp("p", "r2", props("V", "r2")),
					insertOp("p", "r3", props("V", "r3")),
					insertOp("p", "r4", props("V", "r4")),
					insertOp("p", "r5", props("V", "r5")))
				stale := etags[4]
				submit(t, tbl, "p", replaceOp("p", "r5", stale, props("V", "r5b")))
				before := s.rows(t, tbl, "p")

				// Five operations that would succeed on their own, and the failing one.
				ops := []table.Op{
					insertOp("p", "new1", props("V", "new1")),
					replaceOp("p", "r1", etags[0], props("V", "r1b")),
					mergeOp("p", "r2", table.AnyETag, props("W", "r2b")),
					deleteOp("p", "r3", etags[2]),
					upsertOp("p", "new2", props("V", "new2")),
				}
				ops = slices.Insert(ops, pos.index, f.op(stale))
				err := submitFails(t, tbl, "p", ops...)
				wantBatchError(t, err, pos.index, f.err)
				sameRows(t, before, s.rows(t, tbl, "p"))
			})
		}
	}
}

func (s *suite) testMaxOps(t *testing.T) {
	tbl := s.table(t)
	var ops []table.Op
	for i := range table.MaxBatchOps {
		ops = append(ops, insertOp("p", fmt.Sprintf("r%03d", i), props("N", int64(i))))
	}
	etags := submit(t, tbl, "p", ops...)
	rows := s.rows(t, tbl, "p")
	if len(rows) != table.MaxBatchOps {
		t.Fatalf("query returned %d rows after a batch of %d inserts", len(rows), table.MaxBatchOps)
	}
	for i, e := range rows {
		wantEntity(t, e, "p", fmt.Sprintf("r%03d", i), etags[i], props("N", int64(i)))
	}

	// A full batch of every kind of operation.
	want := map[string]map[string]any{}
	ops = ops[:0]
	for i := range table.MaxBatchOps {
		rk := fmt.Sprintf("r%03d", i)
		switch i % 5 {
		case 0:
			ops = append(ops, replaceOp("p", rk, etags[i], props("R", int64(i))))
			want[rk] = props("R", int64(i))
		case 1:
			ops = append(ops, mergeOp("p", rk, table.AnyETag, props("M", int64(i))))
			want[rk] = props("N", int64(i), "M", int64(i))
		case 2:
			ops = append(ops, deleteOp("p", rk, etags[i]))
		case 3:
			ops = append(ops, upsertOp("p", rk, props("U", int64(i))))
			want[rk] = props("U", int64(i))
		case 4:
			nk := fmt.Sprintf("n%03d", i)
			ops = append(ops, insertOp("p", nk, props("I", int64(i))))
			want[nk] = props("I", int64(i))
			want[rk] = props("N", int64(i))
		}
	}
	etags2 := submit(t, tbl, "p", ops...)
	rows = s.rows(t, tbl, "p")
	if got, wantKeys := rowKeys(rows), slices.Sorted(maps.Keys(want)); !slices.Equal(got, wantKeys) {
		t.Fatalf("after a mixed batch the partition holds\n%q\nwant\n%q", got, wantKeys)
	}
	for _, e := range rows {
		wantEntity(t, e, "p", e.RowKey, "", want[e.RowKey])
		if i := slices.IndexFunc(ops, func(op table.Op) bool { return op.Entity.RowKey == e.RowKey }); i >= 0 && e.ETag != etags2[i] {
			t.Errorf("row %q has the ETag %q, Submit returned %q", e.RowKey, e.ETag, etags2[i])
		}
	}
}

func (s *suite) testTooManyOps(t *testing.T) {
	tbl := s.table(t)
	var ops []table.Op
	for i := range table.MaxBatchOps + 1 {
		ops = append(ops, insertOp("p", fmt.Sprintf("r%03d", i), props("N", int64(i))))
	}
	err := submitFails(t, tbl, "p", ops...)
	wantIs(t, err, table.ErrInvalid, "a batch of 101 inserts")
	s.wantEmpty(t, tbl, "p")

	// 101 replaces of existing rows change none of them.
	submit(t, tbl, "p", ops[:table.MaxBatchOps]...)
	submit(t, tbl, "p", ops[table.MaxBatchOps:]...)
	before := s.rows(t, tbl, "p")
	for i := range ops {
		ops[i] = replaceOp("p", ops[i].Entity.RowKey, table.AnyETag, props("N", int64(-1)))
	}
	err = submitFails(t, tbl, "p", ops...)
	wantIs(t, err, table.ErrInvalid, "a batch of 101 replaces")
	sameRows(t, before, s.rows(t, tbl, "p"))
}

// maxBytesBatches returns two batches of inserts into partition pk: under, whose BatchSize is at
// most table.MaxBatchBytes and within a few bytes of it, and over, the same with a few bytes
// more. They are made of entities with several 60 KiB binary properties, each entity's JSON
// under 1 MiB.
func maxBytesBatches(t *testing.T, pk string) (under, over []table.Op) {
	t.Helper()
	chunk := make([]byte, 60<<10)
	for i := range chunk {
		chunk[i] = byte(i * 31)
	}
	const perEntity = 12
	filler := func(n int) table.Op {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i)
		}
		return insertOp(pk, "filler", props("F", b))
	}
	reserve := table.BatchSize([]table.Op{filler(0)})
	var ops []table.Op
	for {
		next := slices.Clone(ops)
		if len(next) == 0 || len(next[len(next)-1].Entity.Properties) == perEntity {
			next = append(next, insertOp(pk, fmt.Sprintf("big%d", len(next)), map[string]any{}))
		}
		last := &next[len(next)-1]
		p := maps.Clone(last.Entity.Properties)
		p[fmt.Sprintf("B%02d", len(p))] = chunk
		last.Entity.Properties = p
		if table.BatchSize(next)+2*reserve > table.MaxBatchBytes {
			break
		}
		ops = next
	}
	// The largest filler that keeps the batch within the limit.
	lo, hi := 0, table.MaxPropertyBytes-3
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if table.BatchSize(append(slices.Clone(ops), filler(mid))) <= table.MaxBatchBytes {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	under = append(slices.Clone(ops), filler(lo))
	over = append(slices.Clone(ops), filler(lo+3))
	if n := table.BatchSize(under); n > table.MaxBatchBytes || n < table.MaxBatchBytes-8 {
		t.Fatalf("built a batch of %d bytes, want just under %d", n, table.MaxBatchBytes)
	}
	if n := table.BatchSize(over); n <= table.MaxBatchBytes {
		t.Fatalf("built a batch of %d bytes, want just over %d", n, table.MaxBatchBytes)
	}
	for _, op := range over {
		if err := table.ValidateProperties(op.Entity); err != nil {
			t.Fatalf("built an invalid entity: %v", err)
		}
	}
	return under, over
}

func (s *suite) testMaxBytes(t *testing.T) {
	tbl := s.table(t)
	under, over := maxBytesBatches(t, "p")
	err := submitFails(t, tbl, "p", over...)
	wantIs(t, err, table.ErrInvalid, fmt.Sprintf("a batch of %d bytes", table.BatchSize(over)))
	s.wantEmpty(t, tbl, "p")

	etags := submit(t, tbl, "p", under...)
	for i, op := range under {
		wantEntity(t, get(t, tbl, "p", op.Entity.RowKey), "p", op.Entity.RowKey, etags[i], op.Entity.Properties)
	}
}

func (s *suite) testOtherPartition(t *testing.T) {
	tbl := s.table(t)
	submit(t, tbl, "p", insertOp("p", "exists", props("V", "v")))
	before := s.rows(t, tbl, "p")
	batches := map[string][]table.Op{
		"one op of another partition": {
			insertOp("p", "a", props("V", "a")),
			insertOp("q", "b", props("V", "b")),
			insertOp("p", "c", props("V", "c")),
		},
		"every op of another partition": {insertOp("q", "a", props("V", "a"))},
		"an op of a partition extending the key": {
			replaceOp("p", "exists", table.AnyETag, props("V", "w")),
			upsertOp("pp", "x", props("V", "x")),
		},
		"a delete of another partition": {
			insertOp("p", "d", props("V", "d")),
			deleteOp("q", "exists", table.AnyETag),
		},
	}
	for name, ops := range batches {
		err := submitFails(t, tbl, "p", ops...)
		wantIs(t, err, table.ErrInvalid, "a batch with "+name)
	}
	sameRows(t, before, s.rows(t, tbl, "p"))
	s.wantEmpty(t, tbl, "q")
	s.wantEmpty(t, tbl, "pp")
}

func (s *suite) testDuplicateRow(t *testing.T) {
	tbl := s.table(t)
	submit(t, tbl, "p", insertOp("p", "exists", props("V", "v")))
	before := s.rows(t, tbl, "p")
	batches := map[string][]table.Op{
		"two inserts": {insertOp("p", "a", props("V", "1")), insertOp("p", "a", props("V", "2"))},
		"replace and merge": {
			insertOp("p", "x", props("V", "x")),
			replaceOp("p", "exists", table.AnyETag, props("V", "w")),
			mergeOp("p", "exists", table.AnyETag, props("W", "w")),
		},
		"delete and insert": {deleteOp("p", "exists", table.AnyETag), insertOp("p", "exists", props("V", "new"))},
		"two upserts":       {upsertOp("p", "u", props("V", "1")), upsertOp("p", "u", props("V", "2"))},
	}
	for name, ops := range batches {
		err := submitFails(t, tbl, "p", ops...)
		wantIs(t, err, table.ErrInvalid, "a batch with "+name+" of one row")
	}
	sameRows(t, before, s.rows(t, tbl, "p"))
}

func (s *suite) testEmptyBatch(t *testing.T) {
	tbl := s.table(t)
	_, err := tbl.Submit(t.Context(), "p", nil)
	wantIs(t, err, table.ErrInvalid, "Submit of no ops")
	_, err = tbl.Submit(t.Context(), "p", []table.Op{})
	wantIs(t, err, table.ErrInvalid, "Submit of an empty slice of ops")
}

func (s *suite) testUnknownKind(t *testing.T) {
	tbl := s.table(t)
	for _, kind := range []table.OpKind{0, table.Delete + 1, -1} {
		err := submitFails(t, tbl, "p",
			insertOp("p", "a", props("V", "a")),
			table.Op{Kind: kind, Entity: entity("p", "b", props("V", "b"))})
		wantIs(t, err, table.ErrInvalid, fmt.Sprintf("a batch with an op of kind %v", kind))
	}
	s.wantEmpty(t, tbl, "p")
}
