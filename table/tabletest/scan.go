package tabletest

import (
	"cmp"
	"fmt"
	"slices"
	"testing"

	"github.com/estuite/estuite/table"
)

// rowID names a row as "partitionKey/rowKey" ('/' may not appear in keys).
func rowID(pk, rk string) string { return pk + "/" + rk }

func rowIDs(es []table.Entity) []string {
	ids := make([]string, len(es))
	for i, e := range es {
		ids[i] = rowID(e.PartitionKey, e.RowKey)
	}
	return ids
}

// compareRows orders rows by partition key, then row key: the order of Table.Scan.
func compareRows(a, b table.Entity) int {
	return cmp.Or(cmp.Compare(a.PartitionKey, b.PartitionKey), cmp.Compare(a.RowKey, b.RowKey))
}

// sortedRows returns the rows sorted in scan order.
func sortedRows(es []table.Entity) []table.Entity {
	return slices.SortedFunc(slices.Values(es), compareRows)
}

// scan runs q to the end with ScanAll's loop, checking that no page is larger than allowed and
// that every row is in q's partition range, carries an ETag and comes strictly after the row
// before it in (partition key, row key) order, so that no row comes twice.
func (s *suite) scan(t *testing.T, tbl table.Table, q table.ScanQuery) []table.Entity {
	t.Helper()
	limit := s.pageCap(q.Limit)
	var all []table.Entity
	for pages := 1; ; pages++ {
		page, err := tbl.Scan(t.Context(), q)
		if err != nil {
			t.Fatalf("Scan(%+v), page %d: %v", q, pages, err)
		}
		if len(page.Entities) > limit {
			t.Fatalf("Scan(%+v), page %d: %d rows, more than the %d allowed", q, pages, len(page.Entities), limit)
		}
		for _, e := range page.Entities {
			if e.PartitionKey < q.FromPartition || (q.ToPartition != "" && e.PartitionKey >= q.ToPartition) {
				t.Fatalf("Scan of partitions [%q, %q) returned the row %q", q.FromPartition, q.ToPartition,
					rowID(e.PartitionKey, e.RowKey))
			}
			if n := len(all); n > 0 && compareRows(all[n-1], e) >= 0 {
				t.Fatalf("Scan(%+v) returned row %q after row %q, want strictly increasing (partition, row) keys",
					q, rowID(e.PartitionKey, e.RowKey), rowID(all[n-1].PartitionKey, all[n-1].RowKey))
			}
			if e.ETag == "" {
				t.Fatalf("Scan returned row %q without an ETag", rowID(e.PartitionKey, e.RowKey))
			}
			all = append(all, e)
		}
		if page.Continuation == "" {
			return all
		}
		if pages > 100000 {
			t.Fatalf("Scan(%+v): more than %d pages; the continuations never end", q, pages)
		}
		q.Continuation = page.Continuation
	}
}

// fillPartitions inserts rows with the given row keys (in reverse order, one batch a
// partition) into each partition, with the properties P (partition key) and R (row key), and
// returns the inserted rows with their ETags.
func fillPartitions(t *testing.T, tbl table.Table, pks, rks []string) []table.Entity {
	t.Helper()
	var rows []table.Entity
	for _, pk := range pks {
		var ops []table.Op
		for _, rk := range slices.Backward(rks) {
			ops = append(ops, insertOp(pk, rk, props("P", pk, "R", rk)))
		}
		etags := submit(t, tbl, pk, ops...)
		for i, op := range ops {
			e := op.Entity
			e.ETag = etags[i]
			rows = append(rows, e)
		}
	}
	return rows
}

// inPartitions returns the rows whose partition keys lie in [from, to) ("" to: no bound).
func inPartitions(rows []table.Entity, from, to string) []table.Entity {
	return slices.DeleteFunc(slices.Clone(rows), func(e table.Entity) bool {
		return e.PartitionKey < from || (to != "" && e.PartitionKey >= to)
	})
}

func (s *suite) testScanOrder(t *testing.T) {
	tbl := s.table(t)
	// Partitions whose keys are prefixes or extensions of one another, or differ in case,
	// inserted out of order; row keys that sort differently from their partitions'.
	pks := []string{"ab", "a", "abc", "ab!", "ab~", "ab'", "aB", "b", "ab a", "B", "0", "~"}
	rks := []string{"r2", "r1", "a", "A", "r1x", "~"}
	inserted := fillPartitions(t, tbl, pks, rks)
	want := sortedRows(inserted)

	for _, limit := range []int{0, 1, 5, 7} {
		got := s.scan(t, tbl, table.ScanQuery{Limit: limit})
		if !slices.Equal(rowIDs(got), rowIDs(want)) {
			t.Fatalf("scan with limit %d returned\n%q\nwant\n%q", limit, rowIDs(got), rowIDs(want))
		}
		if limit == 0 {
			for i, e := range got {
				wantEntity(t, e, want[i].PartitionKey, want[i].RowKey, want[i].ETag, want[i].Properties)
			}
		}
	}
	all, _, err := ScanAll(t.Context(), tbl, table.ScanQuery{})
	if err != nil {
		t.Fatalf("ScanAll: %v", err)
	}
	if !slices.Equal(rowIDs(all), rowIDs(want)) {
		t.Fatalf("ScanAll returned\n%q\nwant\n%q", rowIDs(all), rowIDs(want))
	}

	// Deleted rows, and partitions whose every row is deleted, are gone from scans.
	submit(t, tbl, "ab", deleteOp("ab", "r1", ""), deleteOp("ab", "~", ""))
	var ops []table.Op
	for _, rk := range rks {
		ops = append(ops, deleteOp("aB", rk, ""))
	}
	submit(t, tbl, "aB", ops...)
	want = slices.DeleteFunc(want, func(e table.Entity) bool {
		return e.PartitionKey == "aB" || (e.PartitionKey == "ab" && (e.RowKey == "r1" || e.RowKey == "~"))
	})
	if got := s.scan(t, tbl, table.ScanQuery{Limit: 4}); !slices.Equal(rowIDs(got), rowIDs(want)) {
		t.Fatalf("after deletes, scan returned\n%q\nwant\n%q", rowIDs(got), rowIDs(want))
	}
}

func (s *suite) testScanBounds(t *testing.T) {
	tbl := s.table(t)
	pks := []string{"a", "ab", "ab!", "b", "ba", "c"}
	rows := sortedRows(fillPartitions(t, tbl, pks, []string{"r1", "r2"}))
	cases := []struct {
		from, to string
		want     []string // partitions
	}{
		{"", "", pks},
		{"a", "", pks},
		{"ab", "", []string{"ab", "ab!", "b", "ba", "c"}},
		{"", "ab", []string{"a"}},
		{"a", "ab", []string{"a"}}, // FromPartition included, ToPartition excluded
		{"ab", "b", []string{"ab", "ab!"}},
		{"a", "b", []string{"a", "ab", "ab!"}},
		{"aa", "bb", []string{"ab", "ab!", "b", "ba"}},
		{"b", "ba", []string{"b"}},
		{"b", "b", nil},
		{"c", "a", nil}, // FromPartition after ToPartition
		{"d", "", nil},
		{"", "a", nil},
		{"c", "", []string{"c"}},
		{"", "c", []string{"a", "ab", "ab!", "b", "ba"}},
		{"a#", "b/", []string{"ab", "ab!", "b"}}, // bounds may hold characters keys may not
		{"a'", "b'", []string{"ab", "ab!", "b"}},
		{"ab ", "ab\"", []string{"ab!"}},
		{"a%", "b?", []string{"ab", "ab!", "b"}},
		{"b\\", "b~", []string{"ba"}},
		{"c", "é", []string{"c"}},
		{"é", "", nil},
	}
	for _, c := range cases {
		want := slices.DeleteFunc(slices.Clone(rows), func(e table.Entity) bool {
			return !slices.Contains(c.want, e.PartitionKey)
		})
		if got := inPartitions(rows, c.from, c.to); !slices.Equal(rowIDs(got), rowIDs(want)) {
			t.Fatalf("test case [%q, %q) is wrong: its partitions hold %q, want %q", c.from, c.to, rowIDs(got), rowIDs(want))
		}
		for _, limit := range []int{0, 1} {
			got := s.scan(t, tbl, table.ScanQuery{FromPartition: c.from, ToPartition: c.to, Limit: limit})
			if !slices.Equal(rowIDs(got), rowIDs(want)) {
				t.Errorf("scan of partitions [%q, %q) with limit %d returned %q, want %q",
					c.from, c.to, limit, rowIDs(got), rowIDs(want))
			}
		}
	}
}

func (s *suite) testScanLimit(t *testing.T) {
	tbl := s.table(t)
	var rows []table.Entity
	for i, n := range []int{3, 4, 3} {
		pk := fmt.Sprintf("p%d", i)
		var rks []string
		for j := range n {
			rks = append(rks, fmt.Sprintf("r%02d", j))
		}
		rows = append(rows, fillPartitions(t, tbl, []string{pk}, rks)...)
	}
	want := rowIDs(sortedRows(rows))
	for _, limit := range []int{1, 2, 3, 4, 9, 10, 11, table.MaxPageSize, table.MaxPageSize + 1} {
		// s.scan checks that no page holds more than limit rows.
		if got := rowIDs(s.scan(t, tbl, table.ScanQuery{Limit: limit})); !slices.Equal(got, want) {
			t.Errorf("scan with limit %d returned %q, want %q", limit, got, want)
		}
	}
	got := rowIDs(s.scan(t, tbl, table.ScanQuery{FromPartition: "p1", ToPartition: "p2", Limit: 3}))
	if w := want[3:7]; !slices.Equal(got, w) {
		t.Errorf("scan of partitions [p1, p2) with limit 3 returned %q, want %q", got, w)
	}
}

func (s *suite) testScanPaging(t *testing.T) {
	tbl := s.table(t)
	sizes := []int{400, 400, table.MaxPageSize - 750}
	var want []string
	for i, n := range sizes {
		pk := fmt.Sprintf("p%d", i)
		for start := 0; start < n; start += table.MaxBatchOps {
			var ops []table.Op
			for j := start; j < min(start+table.MaxBatchOps, n); j++ {
				rk := fmt.Sprintf("r%05d", j)
				ops = append(ops, insertOp(pk, rk, props("N", int64(j))))
				want = append(want, rowID(pk, rk))
			}
			submit(t, tbl, pk, ops...)
		}
	}
	n := len(want) // MaxPageSize + 50

	// s.scan checks the page sizes, the order and that no row comes twice.
	if got := rowIDs(s.scan(t, tbl, table.ScanQuery{})); !slices.Equal(got, want) {
		t.Fatalf("scan returned %d rows (first %q, last %q), want %d", len(got), first(got), last(got), n)
	}
	all, pages, err := ScanAll(t.Context(), tbl, table.ScanQuery{})
	if err != nil {
		t.Fatalf("ScanAll: %v", err)
	}
	if got := rowIDs(all); !slices.Equal(got, want) {
		t.Fatalf("ScanAll returned %d rows (first %q, last %q), want %d", len(got), first(got), last(got), n)
	}
	if minPages := (n + s.pageCap(0) - 1) / s.pageCap(0); pages < minPages {
		t.Fatalf("ScanAll read %d rows in %d pages, want at least %d", n, pages, minPages)
	}
	if got := rowIDs(s.scan(t, tbl, table.ScanQuery{Limit: 5000})); !slices.Equal(got, want) {
		t.Fatalf("scan with limit 5000 returned %d rows, want %d", len(got), n)
	}
	if got := rowIDs(s.scan(t, tbl, table.ScanQuery{FromPartition: "p1", Limit: 300})); !slices.Equal(got, want[sizes[0]:]) {
		t.Fatalf("scan from p1 with limit 300 returned %d rows (first %q, last %q), want %d",
			len(got), first(got), last(got), n-sizes[0])
	}
}

func (s *suite) testScanEmpty(t *testing.T) {
	tbl := s.table(t)
	queries := []table.ScanQuery{{}, {Limit: 1}, {FromPartition: "a", ToPartition: "z"}, {ToPartition: "p"}}
	wantNone := func(when string) {
		t.Helper()
		for _, q := range queries {
			if got := s.scan(t, tbl, q); len(got) != 0 {
				t.Fatalf("%s, Scan(%+v) returned %q, want no rows", when, q, rowIDs(got))
			}
			rows, _, err := ScanAll(t.Context(), tbl, q)
			if err != nil || len(rows) != 0 {
				t.Fatalf("%s, ScanAll(%+v): %d rows, %v; want none and no error", when, q, len(rows), err)
			}
		}
	}
	wantNone("on a new table")
	etags := submit(t, tbl, "p", insertOp("p", "a", props("V", "v")), insertOp("p", "b", props("V", "v")))
	submit(t, tbl, "p", deleteOp("p", "a", etags[0]), deleteOp("p", "b", etags[1]))
	wantNone("after every row is deleted")
}

func (s *suite) testScanInvalid(t *testing.T) {
	tbl := s.table(t)
	submit(t, tbl, "p", insertOp("p", "r", props("V", "v")))
	cases := map[string]table.ScanQuery{
		"a negative limit":                  {Limit: -1},
		"a lower bound with a NUL":          {FromPartition: "a\x00"},
		"an upper bound with a newline":     {ToPartition: "a\nb"},
		"a lower bound with DEL":            {FromPartition: "\x7f"},
		"a lower bound of invalid UTF-8":    {FromPartition: "\xff"},
		"an upper bound with U+0085":        {ToPartition: "\u0085"},
		"an upper bound of invalid UTF-8":   {FromPartition: "a", ToPartition: "b\xc3"},
		"a lower bound with a tab, limit 1": {FromPartition: "\t", Limit: 1},
	}
	for name, q := range cases {
		_, err := tbl.Scan(t.Context(), q)
		wantIs(t, err, table.ErrInvalid, "scan with "+name)
	}
}
