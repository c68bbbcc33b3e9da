package tabletest

import (
	"fmt"
	"slices"
	"testing"

	"github.com/estuite/estuite/table"
)

func (s *suite) testQueryOrder(t *testing.T) {
	tbl := s.table(t)
	// Byte order of UTF-8, which for these keys (no characters from U+E000 up beside
	// supplementary ones) is also the order of UTF-16 code units.
	keys := []string{"b", "a", "B", "A", "0", "9", "~", "a b", "a~", "aa", "é", "ü", "日本", "z", " lead",
		"a'b", "a%b", "😀", "ab", "a0", "a-", "Z", "_"}
	half := len(keys) / 2
	var ops1, ops2 []table.Op
	for i, k := range keys {
		op := insertOp("p", k, props("K", k))
		if i < half {
			ops1 = append(ops1, op)
		} else {
			ops2 = append(ops2, op)
		}
	}
	slices.Reverse(ops2)
	submit(t, tbl, "p", ops2...)
	submit(t, tbl, "p", ops1...)

	sorted := slices.Sorted(slices.Values(keys))
	rows := s.rows(t, tbl, "p")
	if got := rowKeys(rows); !slices.Equal(got, sorted) {
		t.Fatalf("query returned the row keys\n%q\nwant\n%q", got, sorted)
	}
	for _, e := range rows {
		wantEntity(t, e, "p", e.RowKey, get(t, tbl, "p", e.RowKey).ETag, props("K", e.RowKey))
	}

	// Deleted rows are gone from queries.
	submit(t, tbl, "p", deleteOp("p", "a", ""), deleteOp("p", "日本", ""), deleteOp("p", " lead", ""))
	want := slices.DeleteFunc(slices.Clone(sorted), func(k string) bool { return k == "a" || k == "日本" || k == " lead" })
	if got := rowKeys(s.rows(t, tbl, "p")); !slices.Equal(got, want) {
		t.Fatalf("after deletes, query returned\n%q\nwant\n%q", got, want)
	}
}

func (s *suite) testQueryRange(t *testing.T) {
	tbl := s.table(t)
	keys := []string{"a", "ab", "b", "ba", "c", "d"}
	var ops []table.Op
	for _, k := range keys {
		ops = append(ops, insertOp("p", k, props("K", k)))
	}
	submit(t, tbl, "p", ops...)
	cases := []struct {
		from, to string
		want     []string
	}{
		{"", "", keys},
		{"b", "", []string{"b", "ba", "c", "d"}},
		{"", "c", []string{"a", "ab", "b", "ba"}},
		{"b", "c", []string{"b", "ba"}},
		{"ab", "ba", []string{"ab", "b"}}, // From included, To excluded
		{"aa", "bb", []string{"ab", "b", "ba"}},
		{"a", "a", nil},
		{"c", "c", nil},
		{"d", "b", nil}, // From after To
		{"e", "", nil},
		{"", "a", nil},
		{"d", "", []string{"d"}},
		{"", "d\u00ff", keys},
		{"a#", "c/", []string{"ab", "b", "ba", "c"}}, // bounds may hold characters keys may not
		{"a'", "b'", []string{"ab", "b"}},
		{"a%", "b?", []string{"ab", "b"}},
		{"b\\", "b~", []string{"ba"}},
		{"c", "é", []string{"c", "d"}},
		{"é", "", nil},
	}
	for _, c := range cases {
		got := rowKeys(s.query(t, tbl, table.Query{PartitionKey: "p", From: c.from, To: c.to}))
		if !slices.Equal(got, c.want) && !(len(got) == 0 && len(c.want) == 0) {
			t.Errorf("query [%q, %q) returned %q, want %q", c.from, c.to, got, c.want)
		}
	}
}

func (s *suite) testQueryPartitions(t *testing.T) {
	tbl := s.table(t)
	// Partitions whose keys are prefixes or extensions of one another, or differ in case.
	pks := []string{"ab", "a", "abc", "abb", "ab!", "ab~", "ab'", "aB", "b", "ab a"}
	for _, pk := range pks {
		submit(t, tbl, pk,
			insertOp(pk, "r1", props("P", pk, "N", int64(1))),
			insertOp(pk, "r2", props("P", pk, "N", int64(2))),
			insertOp(pk, "x-"+pk, props("P", pk, "N", int64(3))))
	}
	for _, pk := range pks {
		rows := s.rows(t, tbl, pk) // checks every row's partition key
		want := slices.Sorted(slices.Values([]string{"r1", "r2", "x-" + pk}))
		if got := rowKeys(rows); !slices.Equal(got, want) {
			t.Errorf("partition %q: query returned %q, want %q", pk, got, want)
			continue
		}
		for i, e := range rows {
			if e.Properties["P"] != pk {
				t.Errorf("partition %q: row %d has P = %v", pk, i, e.Properties["P"])
			}
		}
		got := rowKeys(s.query(t, tbl, table.Query{PartitionKey: pk, From: "r2", To: "x"}))
		if !slices.Equal(got, []string{"r2"}) {
			t.Errorf("partition %q: query [r2, x) returned %q, want [r2]", pk, got)
		}
	}
	for _, pk := range []string{"abd", "aa", "A", "ab ", "abcd"} {
		s.wantEmpty(t, tbl, pk)
	}
}

func (s *suite) testQueryMissingPartition(t *testing.T) {
	tbl := s.table(t)
	s.wantEmpty(t, tbl, "p")
	submit(t, tbl, "q", insertOp("q", "r", props("V", "v")))
	s.wantEmpty(t, tbl, "p")
	if got := s.query(t, tbl, table.Query{PartitionKey: "p", From: "a", To: "z", Limit: 1}); len(got) != 0 {
		t.Fatalf("query of a missing partition returned %q", rowKeys(got))
	}
	rows, _, err := QueryAll(t.Context(), tbl, table.Query{PartitionKey: "p"})
	if err != nil || len(rows) != 0 {
		t.Fatalf("QueryAll of a missing partition: %d rows, %v; want none and no error", len(rows), err)
	}
}

func (s *suite) testQueryLimit(t *testing.T) {
	tbl := s.table(t)
	var ops []table.Op
	var keys []string
	for i := range 10 {
		k := fmt.Sprintf("r%02d", i)
		keys = append(keys, k)
		ops = append(ops, insertOp("p", k, props("N", int64(i))))
	}
	submit(t, tbl, "p", ops...)
	for _, limit := range []int{1, 3, 9, 10, 11, table.MaxPageSize, table.MaxPageSize + 1} {
		// s.query checks that no page holds more than limit rows.
		if got := rowKeys(s.query(t, tbl, table.Query{PartitionKey: "p", Limit: limit})); !slices.Equal(got, keys) {
			t.Errorf("query with limit %d returned %q, want %q", limit, got, keys)
		}
	}
	got := rowKeys(s.query(t, tbl, table.Query{PartitionKey: "p", From: "r02", To: "r08", Limit: 2}))
	if want := keys[2:8]; !slices.Equal(got, want) {
		t.Errorf("query [r02, r08) with limit 2 returned %q, want %q", got, want)
	}
}

func (s *suite) testQueryPaging(t *testing.T) {
	tbl := s.table(t)
	const n = table.MaxPageSize + 50
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("r%05d", i)
	}
	for start := 0; start < n; start += table.MaxBatchOps {
		var ops []table.Op
		for i := start; i < min(start+table.MaxBatchOps, n); i++ {
			ops = append(ops, insertOp("p", keys[i], props("N", int64(i))))
		}
		submit(t, tbl, "p", ops...)
	}

	// s.query checks the page sizes, the order and that no row comes twice.
	rows := s.rows(t, tbl, "p")
	if got := rowKeys(rows); !slices.Equal(got, keys) {
		t.Fatalf("query returned %d rows (first %q, last %q), want %d", len(got), first(got), last(got), n)
	}
	for i, e := range rows {
		if e.Properties["N"] != int64(i) {
			t.Fatalf("row %q has N = %v, want %d", e.RowKey, e.Properties["N"], i)
		}
	}

	all, pages, err := QueryAll(t.Context(), tbl, table.Query{PartitionKey: "p"})
	if err != nil {
		t.Fatalf("QueryAll: %v", err)
	}
	if got := rowKeys(all); !slices.Equal(got, keys) {
		t.Fatalf("QueryAll returned %d rows (first %q, last %q), want %d", len(got), first(got), last(got), n)
	}
	if minPages := (n + s.pageCap(0) - 1) / s.pageCap(0); pages < minPages {
		t.Fatalf("QueryAll read %d rows in %d pages, want at least %d", n, pages, minPages)
	}

	if got := rowKeys(s.query(t, tbl, table.Query{PartitionKey: "p", Limit: 5000})); !slices.Equal(got, keys) {
		t.Fatalf("query with limit 5000 returned %d rows, want %d", len(got), n)
	}
	if got := rowKeys(s.query(t, tbl, table.Query{PartitionKey: "p", Limit: 300})); !slices.Equal(got, keys) {
		t.Fatalf("query with limit 300 returned %d rows, want %d", len(got), n)
	}
	got := rowKeys(s.query(t, tbl, table.Query{PartitionKey: "p", From: keys[30], To: keys[n-5]}))
	if want := keys[30 : n-5]; !slices.Equal(got, want) {
		t.Fatalf("query [%s, %s) returned %d rows (first %q, last %q), want %d", keys[30], keys[n-5], len(got), first(got), last(got), len(want))
	}
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func last(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}

func (s *suite) testQueryInvalid(t *testing.T) {
	tbl := s.table(t)
	submit(t, tbl, "p", insertOp("p", "r", props("V", "v")))
	cases := map[string]table.Query{
		"a negative limit":                    {PartitionKey: "p", Limit: -1},
		"a lower bound with a NUL":            {PartitionKey: "p", From: "a\x00"},
		"an upper bound with a newline":       {PartitionKey: "p", To: "a\nb"},
		"a lower bound of invalid UTF-8":      {PartitionKey: "p", From: "\xff"},
		"an upper bound with U+0085":          {PartitionKey: "p", To: "\u0085"},
		"an empty partition key":              {PartitionKey: ""},
		"a partition key with a slash":        {PartitionKey: "p/q"},
		"a partition key of 513 UTF-16 units": {PartitionKey: fmt.Sprintf("%0513d", 0)},
	}
	for name, q := range cases {
		_, err := tbl.Query(t.Context(), q)
		wantIs(t, err, table.ErrInvalid, "query with "+name)
	}
}
