package tabletest

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/estuite/estuite/table"
)

// props builds a property map from name, value pairs.
func props(kv ...any) map[string]any {
	if len(kv)%2 != 0 {
		panic("tabletest: props needs name, value pairs")
	}
	m := make(map[string]any, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

func entity(pk, rk string, p map[string]any) table.Entity {
	return table.Entity{PartitionKey: pk, RowKey: rk, Properties: p}
}

func insertOp(pk, rk string, p map[string]any) table.Op {
	return table.Op{Kind: table.Insert, Entity: entity(pk, rk, p)}
}

func replaceOp(pk, rk, ifMatch string, p map[string]any) table.Op {
	return table.Op{Kind: table.Replace, Entity: entity(pk, rk, p), IfMatch: ifMatch}
}

func mergeOp(pk, rk, ifMatch string, p map[string]any) table.Op {
	return table.Op{Kind: table.Merge, Entity: entity(pk, rk, p), IfMatch: ifMatch}
}

func upsertOp(pk, rk string, p map[string]any) table.Op {
	return table.Op{Kind: table.Upsert, Entity: entity(pk, rk, p)}
}

func deleteOp(pk, rk, ifMatch string) table.Op {
	return table.Op{Kind: table.Delete, Entity: entity(pk, rk, nil), IfMatch: ifMatch}
}

// submit runs a batch that must succeed and checks the shape of the returned ETags.
func submit(t *testing.T, tbl table.Table, pk string, ops ...table.Op) []string {
	t.Helper()
	etags, err := tbl.Submit(t.Context(), pk, ops)
	if err != nil {
		t.Fatalf("Submit(%q, %d ops): %v", pk, len(ops), err)
	}
	if len(etags) != len(ops) {
		t.Fatalf("Submit(%q, %d ops) returned %d ETags, want one per op", pk, len(ops), len(etags))
	}
	for i, op := range ops {
		if op.Kind == table.Delete && etags[i] != "" {
			t.Errorf("Submit: ETag of delete op %d is %q, want \"\"", i, etags[i])
		}
		if op.Kind != table.Delete && etags[i] == "" {
			t.Errorf("Submit: ETag of %v op %d is empty", op.Kind, i)
		}
	}
	return etags
}

// submitFails runs a batch that must fail and returns its error.
func submitFails(t *testing.T, tbl table.Table, pk string, ops ...table.Op) error {
	t.Helper()
	etags, err := tbl.Submit(t.Context(), pk, ops)
	if err == nil {
		t.Fatalf("Submit(%q, %d ops) succeeded with ETags %q, want an error", pk, len(ops), etags)
	}
	return err
}

func get(t *testing.T, tbl table.Table, pk, rk string) table.Entity {
	t.Helper()
	e, err := tbl.Get(t.Context(), pk, rk)
	if err != nil {
		t.Fatalf("Get(%q, %q): %v", pk, rk, err)
	}
	if e.PartitionKey != pk || e.RowKey != rk {
		t.Fatalf("Get(%q, %q) returned the keys %q, %q", pk, rk, e.PartitionKey, e.RowKey)
	}
	if e.ETag == "" {
		t.Fatalf("Get(%q, %q) returned an empty ETag", pk, rk)
	}
	return e
}

func wantMissing(t *testing.T, tbl table.Table, pk, rk string) {
	t.Helper()
	e, err := tbl.Get(t.Context(), pk, rk)
	if err == nil {
		t.Fatalf("Get(%q, %q) found %+v, want ErrNotFound", pk, rk, e)
	}
	if !errors.Is(err, table.ErrNotFound) {
		t.Fatalf("Get(%q, %q): %v, want an error wrapping ErrNotFound", pk, rk, err)
	}
}

func wantIs(t *testing.T, err, target error, what string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %v", what, target)
	}
	if !errors.Is(err, target) {
		t.Fatalf("%s: %v, want an error wrapping %v", what, err, target)
	}
}

// wantBatchError checks that err is a *BatchError at index wrapping target.
func wantBatchError(t *testing.T, err error, index int, target error) {
	t.Helper()
	var be *table.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("Submit: %v (%T), want a *table.BatchError", err, err)
	}
	if be.Index != index {
		t.Errorf("Submit: BatchError.Index = %d, want %d (%v)", be.Index, index, err)
	}
	if !errors.Is(err, target) {
		t.Errorf("Submit: %v, want an error wrapping %v", err, target)
	}
}

// wantEntity checks that got has the keys and properties given, and the ETag when etag is set.
func wantEntity(t *testing.T, got table.Entity, pk, rk, etag string, p map[string]any) {
	t.Helper()
	if got.PartitionKey != pk || got.RowKey != rk {
		t.Errorf("entity keys %q, %q, want %q, %q", got.PartitionKey, got.RowKey, pk, rk)
	}
	if etag != "" && got.ETag != etag {
		t.Errorf("entity %q/%q: ETag %q, want %q", pk, rk, got.ETag, etag)
	}
	if d := diffProps(p, got.Properties); d != "" {
		t.Errorf("entity %q/%q properties differ:\n%s", pk, rk, d)
	}
}

// diffProps describes how got differs from want, or returns "" when they are the same: the
// same names, and for each the same type and value (times: the same instant, in UTC).
func diffProps(want, got map[string]any) string {
	var d []string
	for _, name := range slices.Sorted(maps.Keys(want)) {
		w := want[name]
		g, ok := got[name]
		if !ok {
			d = append(d, fmt.Sprintf("  %s: missing, want %s", name, show(w)))
			continue
		}
		if !sameValue(w, g) {
			d = append(d, fmt.Sprintf("  %s: got %s, want %s", name, show(g), show(w)))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[name]; !ok {
			d = append(d, fmt.Sprintf("  %s: unexpected %s", name, show(got[name])))
		}
	}
	return strings.Join(d, "\n")
}

func sameValue(w, g any) bool {
	switch w := w.(type) {
	case []byte:
		g, ok := g.([]byte)
		return ok && bytes.Equal(w, g)
	case time.Time:
		g, ok := g.(time.Time)
		return ok && g.Equal(w) && g.Location() == time.UTC
	}
	return reflect.DeepEqual(w, g)
}

func show(v any) string {
	switch v := v.(type) {
	case string:
		if len(v) > 80 {
			return fmt.Sprintf("string(%d bytes) %q…", len(v), v[:40])
		}
		return fmt.Sprintf("string %q", v)
	case []byte:
		if len(v) > 40 {
			return fmt.Sprintf("[]byte(%d bytes) %x…", len(v), v[:20])
		}
		return fmt.Sprintf("[]byte %x", v)
	case time.Time:
		return fmt.Sprintf("time.Time %s (location %q)", v.Format(time.RFC3339Nano), v.Location())
	}
	return fmt.Sprintf("%T %v", v, v)
}

// rows returns every row of a partition, checking the query's pages against the page cap.
func (s *suite) rows(t *testing.T, tbl table.Table, pk string) []table.Entity {
	t.Helper()
	return s.query(t, tbl, table.Query{PartitionKey: pk})
}

// query runs q to the end with QueryAll's loop, checking that no page is larger than allowed
// and that every row is of q's partition, in range and in strictly increasing row-key order.
func (s *suite) query(t *testing.T, tbl table.Table, q table.Query) []table.Entity {
	t.Helper()
	limit := s.pageCap(q.Limit)
	var all []table.Entity
	for pages := 1; ; pages++ {
		page, err := tbl.Query(t.Context(), q)
		if err != nil {
			t.Fatalf("Query(%+v), page %d: %v", q, pages, err)
		}
		if len(page.Entities) > limit {
			t.Fatalf("Query(%+v), page %d: %d rows, more than the %d allowed", q, pages, len(page.Entities), limit)
		}
		for _, e := range page.Entities {
			if e.PartitionKey != q.PartitionKey {
				t.Fatalf("Query of partition %q returned a row of partition %q (row %q)", q.PartitionKey, e.PartitionKey, e.RowKey)
			}
			if e.RowKey < q.From || (q.To != "" && e.RowKey >= q.To) {
				t.Fatalf("Query [%q, %q) returned the row %q", q.From, q.To, e.RowKey)
			}
			if n := len(all); n > 0 && all[n-1].RowKey >= e.RowKey {
				t.Fatalf("Query of partition %q returned row %q after row %q, want strictly increasing row keys",
					q.PartitionKey, e.RowKey, all[n-1].RowKey)
			}
			if e.ETag == "" {
				t.Fatalf("Query returned row %q without an ETag", e.RowKey)
			}
			all = append(all, e)
		}
		if page.Continuation == "" {
			return all
		}
		if pages > 100000 {
			t.Fatalf("Query(%+v): more than %d pages; the continuations never end", q, pages)
		}
		q.Continuation = page.Continuation
	}
}

func rowKeys(es []table.Entity) []string {
	keys := make([]string, len(es))
	for i, e := range es {
		keys[i] = e.RowKey
	}
	return keys
}

// sameRows checks that after holds exactly the rows of before, with their ETags and properties.
func sameRows(t *testing.T, before, after []table.Entity) {
	t.Helper()
	if !slices.Equal(rowKeys(before), rowKeys(after)) {
		t.Fatalf("rows changed: before %q, after %q", rowKeys(before), rowKeys(after))
	}
	for i := range before {
		wantEntity(t, after[i], before[i].PartitionKey, before[i].RowKey, before[i].ETag, before[i].Properties)
	}
}

// wantEmpty checks that a partition holds no row.
func (s *suite) wantEmpty(t *testing.T, tbl table.Table, pk string) {
	t.Helper()
	if rows := s.rows(t, tbl, pk); len(rows) != 0 {
		t.Fatalf("partition %q holds the rows %q, want none", pk, rowKeys(rows))
	}
}
