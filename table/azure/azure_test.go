package azure

// Tests against Azurite (see internal/azuritetest). What Azurite 3.35.0 does at the contract's
// size limits, measured with these tests and by sending over-limit requests through the SDK
// directly:
//
//   - A binary property of exactly 64 KiB is stored and read back; 64 KiB + 1 byte is refused
//     (400 PropertyValueTooLarge).
//   - A string of 32,768 characters is stored and read back, whether the characters are ASCII,
//     two UTF-8 bytes each, or 16,384 surrogate pairs; 32,769 characters are refused
//     (PropertyValueTooLarge): Azurite counts UTF-16 code units, like Azure's 64 KiB.
//   - An entity of exactly table.MaxEntityBytes by table.EntitySize (1.4 MB of JSON) is stored
//     and read back. Azurite does not enforce the 1 MiB entity limit at all: an entity of 17
//     binary properties of 64 KiB (EntitySize about 1.1 MiB, 1.5 MB of JSON) is accepted.
//   - A batch of 100 inserts whose table.BatchSize is just under 4 MiB is accepted. A request
//     body over about 4 MiB is refused with 413 RequestBodyTooLarge, which the SDK's JSON
//     encoding can reach with a batch the contract allows: the SDK re-encodes each entity with
//     encoding/json, which writes '<', '>' and '&' as six-byte escapes that table.JSONSize counts
//     as one byte (100 strings of 32,768 '<': BatchSize 3.4 MB, refused with 413).
//   - Azurite does not check that a batch stays in one partition, nor the 1 MiB entity limit;
//     table.ValidateBatch does. More than 100 operations are refused, in a response with a stray
//     line that the SDK cannot parse (this package can).

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/estuite/estuite/internal/azuritetest"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/tabletest"
)

func TestMain(m *testing.M) { azuritetest.Main(m) }

// newTable returns a new, empty table on Azurite, deleted when the test ends.
func newTable(t *testing.T, opts *Options) *Table {
	t.Helper()
	b, err := Open(azuritetest.ConnectionString(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	name := azuritetest.NewTableName(t)
	tb, err := b.OpenTable(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.DeleteTable(context.Background(), name); err != nil {
			t.Errorf("deleting table %s: %v", name, err)
		}
	})
	return tb.(*Table)
}

func TestConformance(t *testing.T) {
	tabletest.Run(t, tabletest.Harness{NewTable: func(t *testing.T) table.Table { return newTable(t, nil) }})
}

func TestOpenTableTwice(t *testing.T) {
	b, err := Open(azuritetest.ConnectionString(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	name := azuritetest.NewTableName(t)
	for i := 0; i < 2; i++ {
		if _, err := b.OpenTable(context.Background(), name); err != nil {
			t.Fatalf("OpenTable #%d: %v", i+1, err)
		}
	}
	if _, err := b.OpenTable(context.Background(), "no_underscores"); !errors.Is(err, table.ErrInvalid) {
		t.Errorf("OpenTable with an invalid name: %v", err)
	}
	_ = b.DeleteTable(context.Background(), name)
}

func submit(t *testing.T, tb *Table, pk string, ops ...table.Op) []string {
	t.Helper()
	etags, err := tb.Submit(context.Background(), pk, ops)
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	return etags
}

func TestRoundTrip(t *testing.T) {
	tb := newTable(t, nil)
	ctx := context.Background()
	big := make([]byte, table.MaxPropertyBytes)
	for i := range big {
		big[i] = byte(i * 7)
	}
	props := map[string]any{
		"Str":      `quotes ' '' " and non-ASCII: é 日本 😀 <&> \ %`,
		"Empty":    "",
		"Long":     strings.Repeat("ü", table.MaxPropertyBytes/2),
		"Bin":      []byte{0, 1, 2, 0xff},
		"Bin64K":   big,
		"BinEmpty": []byte{},
		"Max":      int64(math.MaxInt64),
		"Min":      int64(math.MinInt64),
		"Zero":     int64(0),
		"True":     true,
		"False":    false,
		"Time":     time.Date(2024, 2, 29, 23, 59, 58, 123456000, time.FixedZone("x", 3600)),
		"Epoch":    time.Date(1601, 1, 1, 0, 0, 0, 1000, time.UTC),
	}
	for _, pk := range []string{"plain", "it's", "100%", "with space", "日本語 é", "''"} {
		for _, rk := range []string{"r", "a'b", "%41%", " lead and trail ", "ключ", "😀"} {
			e := table.Entity{PartitionKey: pk, RowKey: rk, Properties: props}
			etags := submit(t, tb, pk, table.Op{Kind: table.Insert, Entity: e})
			got, err := tb.Get(ctx, pk, rk)
			if err != nil {
				t.Fatalf("Get(%q, %q): %v", pk, rk, err)
			}
			if got.PartitionKey != pk || got.RowKey != rk || got.ETag != etags[0] {
				t.Errorf("Get(%q, %q) gave keys %q/%q etag %s, want etag %s", pk, rk, got.PartitionKey, got.RowKey, got.ETag, etags[0])
			}
			want := table.CloneProperties(props)
			if err := equalProperties(got.Properties, want); err != nil {
				t.Errorf("Get(%q, %q): %v", pk, rk, err)
			}
			// The same row through a query bounded by its own key, and updated and deleted by key.
			page, err := tb.Query(ctx, table.Query{PartitionKey: pk, From: rk, To: rk + "\u00ff"})
			if err != nil || len(page.Entities) != 1 || page.Entities[0].RowKey != rk || page.Entities[0].ETag != etags[0] {
				t.Fatalf("Query for %q/%q: %d rows, %v", pk, rk, len(page.Entities), err)
			}
			if err := equalProperties(page.Entities[0].Properties, want); err != nil {
				t.Errorf("Query(%q, %q): %v", pk, rk, err)
			}
			etags = submit(t, tb, pk, table.Op{Kind: table.Merge, Entity: table.Entity{PartitionKey: pk, RowKey: rk,
				Properties: map[string]any{"Zero": int64(1)}}, IfMatch: etags[0]})
			submit(t, tb, pk, table.Op{Kind: table.Delete, Entity: e, IfMatch: etags[0]})
			if _, err := tb.Get(ctx, pk, rk); !errors.Is(err, table.ErrNotFound) {
				t.Errorf("Get after delete of %q/%q: %v", pk, rk, err)
			}
		}
	}
}

func TestGetMissing(t *testing.T) {
	tb := newTable(t, nil)
	if _, err := tb.Get(context.Background(), "p", "missing"); !errors.Is(err, table.ErrNotFound) {
		t.Errorf("Get of a missing row: %v", err)
	}
	if _, err := tb.Get(context.Background(), "p", "a/b"); !errors.Is(err, table.ErrInvalid) {
		t.Errorf("Get with a forbidden key: %v", err)
	}
}

func entity(pk, rk string, props map[string]any) table.Entity {
	return table.Entity{PartitionKey: pk, RowKey: rk, Properties: props}
}

func TestSubmitETagsMatchGet(t *testing.T) {
	tb := newTable(t, nil)
	ctx := context.Background()
	submit(t, tb, "p", table.Op{Kind: table.Insert, Entity: entity("p", "r", map[string]any{"N": int64(0)})},
		table.Op{Kind: table.Insert, Entity: entity("p", "gone", nil)})
	head, _ := tb.Get(ctx, "p", "r")
	// Each op kind in turn, always with the ETag the previous write returned, as the core does.
	etag := head.ETag
	for i, kind := range []table.OpKind{table.Replace, table.Merge, table.Upsert, table.Replace, table.Merge} {
		e := entity("p", "r", map[string]any{"N": int64(i + 1)})
		etags := submit(t, tb, "p", table.Op{Kind: kind, Entity: e, IfMatch: etag},
			table.Op{Kind: table.Upsert, Entity: entity("p", fmt.Sprint("other", i), nil)})
		got, err := tb.Get(ctx, "p", "r")
		if err != nil {
			t.Fatal(err)
		}
		if etags[0] != got.ETag || etags[0] == etag {
			t.Fatalf("%v returned ETag %s, Get returns %s, previous %s", kind, etags[0], got.ETag, etag)
		}
		other, _ := tb.Get(ctx, "p", fmt.Sprint("other", i))
		if etags[1] != other.ETag {
			t.Errorf("upsert returned ETag %s, Get returns %s", etags[1], other.ETag)
		}
		etag = etags[0]
	}
	etags := submit(t, tb, "p", table.Op{Kind: table.Delete, Entity: entity("p", "gone", nil)},
		table.Op{Kind: table.Insert, Entity: entity("p", "new", nil)})
	got, _ := tb.Get(ctx, "p", "new")
	if etags[0] != "" || etags[1] != got.ETag {
		t.Errorf("delete+insert returned %q, inserted row has %s", etags, got.ETag)
	}
}

func TestBatchErrors(t *testing.T) {
	tb := newTable(t, nil)
	ctx := context.Background()
	etags := submit(t, tb, "p", table.Op{Kind: table.Insert, Entity: entity("p", "a", nil)},
		table.Op{Kind: table.Insert, Entity: entity("p", "b", nil)})
	stale := etags[0]
	submit(t, tb, "p", table.Op{Kind: table.Replace, Entity: entity("p", "a", map[string]any{"V": int64(2)})})
	for _, tc := range []struct {
		name  string
		ops   []table.Op
		index int
		code  string
		kind  error
	}{
		{"insert exists", []table.Op{{Kind: table.Insert, Entity: entity("p", "a", nil)}}, 0, "EntityAlreadyExists", table.ErrAlreadyExists},
		{"insert exists at 2", []table.Op{{Kind: table.Insert, Entity: entity("p", "x1", nil)},
			{Kind: table.Upsert, Entity: entity("p", "x2", nil)}, {Kind: table.Insert, Entity: entity("p", "b", nil)}}, 2, "EntityAlreadyExists", table.ErrAlreadyExists},
		{"replace with a stale etag", []table.Op{{Kind: table.Replace, Entity: entity("p", "a", nil), IfMatch: stale}}, 0, "UpdateConditionNotSatisfied", table.ErrPreconditionFailed},
		{"merge on a missing row", []table.Op{{Kind: table.Insert, Entity: entity("p", "x3", nil)},
			{Kind: table.Merge, Entity: entity("p", "missing", nil)}}, 1, "ResourceNotFound", table.ErrNotFound},
		{"replace on a missing row", []table.Op{{Kind: table.Replace, Entity: entity("p", "missing", nil)}}, 0, "ResourceNotFound", table.ErrNotFound},
		{"delete with a stale etag at 1", []table.Op{{Kind: table.Upsert, Entity: entity("p", "x4", nil)},
			{Kind: table.Delete, Entity: entity("p", "a", nil), IfMatch: stale}}, 1, "UpdateConditionNotSatisfied", table.ErrPreconditionFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tb.Submit(ctx, "p", tc.ops)
			var be *table.BatchError
			if !errors.As(err, &be) || be.Index != tc.index || be.Code != tc.code || !errors.Is(err, tc.kind) {
				t.Fatalf("Submit = %v, want op %d failing with %s", err, tc.index, tc.code)
			}
			for _, rk := range []string{"x1", "x2", "x3", "x4"} { // nothing of the batch was written
				if _, err := tb.Get(ctx, "p", rk); !errors.Is(err, table.ErrNotFound) {
					t.Errorf("row %s after the failed batch: %v", rk, err)
				}
			}
		})
	}
}

func TestBatchRulesCheckedBeforeSending(t *testing.T) {
	var requests atomic.Int32
	counting := &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
		requests.Add(1)
		return http.DefaultTransport.RoundTrip(r)
	})}
	tb := newTable(t, &Options{HTTPClient: counting})
	before := requests.Load()
	ops := []table.Op{{Kind: table.Insert, Entity: entity("p", "a", nil)}, {Kind: table.Insert, Entity: entity("q", "b", nil)}}
	_, err := tb.Submit(context.Background(), "p", ops)
	var be *table.BatchError
	if !errors.As(err, &be) || be.Index != 1 || !errors.Is(err, table.ErrInvalid) {
		t.Errorf("batch over two partitions: %v", err)
	}
	if n := requests.Load() - before; n != 0 {
		t.Errorf("%d requests sent for an invalid batch", n)
	}
}

// insertRows writes n rows "r00000".. into partition pk, 100 to a batch.
func insertRows(t *testing.T, tb *Table, pk string, n int) {
	t.Helper()
	for start := 0; start < n; start += table.MaxBatchOps {
		var ops []table.Op
		for i := start; i < n && i < start+table.MaxBatchOps; i++ {
			ops = append(ops, table.Op{Kind: table.Insert, Entity: entity(pk, fmt.Sprintf("r%05d", i), map[string]any{"I": int64(i)})})
		}
		etags := submit(t, tb, pk, ops...)
		if len(etags) != len(ops) {
			t.Fatalf("%d etags for %d ops", len(etags), len(ops))
		}
	}
}

func TestPaging(t *testing.T) {
	tb := newTable(t, nil)
	ctx := context.Background()
	const n = 2150
	insertRows(t, tb, "p", n)
	insertRows(t, tb, "p'", 3) // a neighbouring partition that must not leak in
	insertRows(t, tb, "o", 3)
	for _, tc := range []struct {
		q          table.Query
		first, end int
	}{
		{table.Query{PartitionKey: "p"}, 0, n},
		{table.Query{PartitionKey: "p", Limit: 333}, 0, n},
		{table.Query{PartitionKey: "p", Limit: 5000}, 0, n},
		{table.Query{PartitionKey: "p", From: "r00010", To: "r01234", Limit: 100}, 10, 1234},
		{table.Query{PartitionKey: "p", From: "r02100"}, 2100, n},
		{table.Query{PartitionKey: "p", From: "s"}, n, n},
	} {
		t.Run(fmt.Sprintf("%+v", tc.q), func(t *testing.T) {
			q, next, pages := tc.q, tc.first, 0
			for {
				page, err := tb.Query(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				pages++
				if len(page.Entities) > table.PageLimit(q) {
					t.Fatalf("page of %d rows, limit %d", len(page.Entities), table.PageLimit(q))
				}
				for _, e := range page.Entities {
					if want := fmt.Sprintf("r%05d", next); e.PartitionKey != "p" || e.RowKey != want || e.Properties["I"] != int64(next) {
						t.Fatalf("row %s/%s %v, want %s", e.PartitionKey, e.RowKey, e.Properties, want)
					}
					next++
				}
				if page.Continuation == "" {
					break
				}
				q.Continuation = page.Continuation
			}
			if next != tc.end {
				t.Errorf("read rows up to %d, want %d", next, tc.end)
			}
			t.Logf("%d pages", pages)
		})
	}
}

func TestSizeLimits(t *testing.T) {
	tb := newTable(t, nil)
	ctx := context.Background()
	check := func(name string, ops ...table.Op) {
		t.Helper()
		if _, err := tb.Submit(ctx, "p", ops); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		e, err := tb.Get(ctx, "p", ops[0].Entity.RowKey)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := equalProperties(e.Properties, ops[0].Entity.Properties); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	check("binary of 64 KiB", table.Op{Kind: table.Insert, Entity: entity("p", "bin", map[string]any{"B": make([]byte, 64<<10)})})
	for i, s := range []string{strings.Repeat("x", 32768), strings.Repeat("é", 32768), strings.Repeat("😀", 16384)} {
		check("string of 32K UTF-16 code units", table.Op{Kind: table.Insert, Entity: entity("p", fmt.Sprint("str", i), map[string]any{"S": s})})
	}

	props := map[string]any{}
	for i := 0; i < 15; i++ {
		props[fmt.Sprintf("B%02d", i)] = make([]byte, 64<<10)
	}
	big := entity("p", "big", props)
	props["Zzz"] = make([]byte, table.MaxEntityBytes-table.EntitySize(big)-(8+2*3+4))
	if n := table.EntitySize(big); n != table.MaxEntityBytes {
		t.Fatalf("entity of %d bytes", n)
	}
	check("entity of 1 MiB", table.Op{Kind: table.Insert, Entity: big})

	var ops []table.Op
	for i := 0; i < table.MaxBatchOps; i++ {
		ops = append(ops, table.Op{Kind: table.Insert, Entity: entity("p", fmt.Sprintf("r%03d", i), map[string]any{"B": []byte{}})})
	}
	per := (table.MaxBatchBytes - table.BatchSize(ops)) / len(ops) * 3 / 4 // base64 makes 4 bytes of 3
	for i := range ops {
		ops[i].Entity.Properties = map[string]any{"B": make([]byte, per-3)}
	}
	if n := table.BatchSize(ops); n > table.MaxBatchBytes || n < table.MaxBatchBytes-1000 {
		t.Fatalf("batch of %d bytes", n)
	}
	check("batch of 4 MiB", ops...)
}
