package tabletest_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/mem"
	"github.com/estuite/estuite/table/tabletest"
)

// pagedTable answers queries from a fixed list of pages, the continuation being the next index.
type pagedTable struct {
	table.Table
	pages [][]string
	seen  []table.Query
}

func (p *pagedTable) Query(_ context.Context, q table.Query) (table.Page, error) {
	p.seen = append(p.seen, q)
	i := 0
	if q.Continuation != "" {
		i = int(q.Continuation[0] - '0')
	}
	var page table.Page
	for _, rk := range p.pages[i] {
		page.Entities = append(page.Entities, table.Entity{PartitionKey: q.PartitionKey, RowKey: rk})
	}
	if i+1 < len(p.pages) {
		page.Continuation = string(rune('0' + i + 1))
	}
	return page, nil
}

func TestQueryAllFollowsEmptyPages(t *testing.T) {
	p := &pagedTable{pages: [][]string{{}, {"a", "b"}, {}, {}, {"c"}, {}}}
	q := table.Query{PartitionKey: "p", From: "a", To: "z", Limit: 2}
	rows, pages, err := tabletest.QueryAll(t.Context(), p, q)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range rows {
		keys = append(keys, e.RowKey)
	}
	if !slices.Equal(keys, []string{"a", "b", "c"}) || pages != 6 {
		t.Fatalf("QueryAll returned %q in %d pages, want [a b c] in 6", keys, pages)
	}
	for i, s := range p.seen {
		want := q
		if i > 0 {
			want.Continuation = string(rune('0' + i))
		}
		if s != want {
			t.Errorf("query %d was %+v, want %+v", i, s, want)
		}
	}
}

// pagedScanTable answers scans from a fixed list of pages, the continuation being the next index.
type pagedScanTable struct {
	table.Table
	pages [][]string // row keys, all in partition "p"
	seen  []table.ScanQuery
}

func (p *pagedScanTable) Scan(_ context.Context, q table.ScanQuery) (table.Page, error) {
	p.seen = append(p.seen, q)
	i := 0
	if q.Continuation != "" {
		i = int(q.Continuation[0] - '0')
	}
	var page table.Page
	for _, rk := range p.pages[i] {
		page.Entities = append(page.Entities, table.Entity{PartitionKey: "p", RowKey: rk})
	}
	if i+1 < len(p.pages) {
		page.Continuation = string(rune('0' + i + 1))
	}
	return page, nil
}

func TestScanAllFollowsEmptyPages(t *testing.T) {
	p := &pagedScanTable{pages: [][]string{{}, {"a", "b"}, {}, {}, {"c"}, {}}}
	q := table.ScanQuery{FromPartition: "a", ToPartition: "z", Limit: 2}
	rows, pages, err := tabletest.ScanAll(t.Context(), p, q)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range rows {
		keys = append(keys, e.RowKey)
	}
	if !slices.Equal(keys, []string{"a", "b", "c"}) || pages != 6 {
		t.Fatalf("ScanAll returned %q in %d pages, want [a b c] in 6", keys, pages)
	}
	for i, s := range p.seen {
		want := q
		if i > 0 {
			want.Continuation = string(rune('0' + i))
		}
		if s != want {
			t.Errorf("scan %d was %+v, want %+v", i, s, want)
		}
	}
}

func TestScanAllReturnsErrors(t *testing.T) {
	tbl, err := mem.New(nil).Table("errors")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tabletest.ScanAll(t.Context(), tbl, table.ScanQuery{FromPartition: "a\x00"}); !errors.Is(err, table.ErrInvalid) {
		t.Fatalf("ScanAll with an invalid bound: %v, want ErrInvalid", err)
	}
}

func TestQueryAllReturnsErrors(t *testing.T) {
	tbl, err := mem.New(nil).Table("errors")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tabletest.QueryAll(t.Context(), tbl, table.Query{PartitionKey: "a/b"}); !errors.Is(err, table.ErrInvalid) {
		t.Fatalf("QueryAll of an invalid partition: %v, want ErrInvalid", err)
	}
}

// Mutants: memory tables broken in one way each. The suite must fail on every one of them, in
// the subtest named; TestSuiteCatchesMutants runs the suite on each in a child process.

type mutant struct {
	table.Table
	kind string
}

func (m *mutant) Get(ctx context.Context, pk, rk string) (table.Entity, error) {
	if m.kind == "ignore-context" {
		ctx = context.Background()
	}
	e, err := m.Table.Get(ctx, pk, rk)
	switch {
	case m.kind == "missing-is-empty" && errors.Is(err, table.ErrNotFound):
		return table.Entity{PartitionKey: pk, RowKey: rk}, nil
	case m.kind == "local-times" && err == nil:
		for k, v := range e.Properties {
			if tm, ok := v.(time.Time); ok {
				e.Properties[k] = tm.In(time.FixedZone("X", 3600))
			}
		}
	case m.kind == "drop-empty-strings" && err == nil:
		for k, v := range e.Properties {
			if v == "" {
				delete(e.Properties, k)
			}
		}
	}
	return e, err
}

func (m *mutant) Query(ctx context.Context, q table.Query) (table.Page, error) {
	switch m.kind {
	case "ignore-context":
		ctx = context.Background()
	case "ignore-limit":
		q.Limit = 0
	case "ignore-to":
		q.To = ""
	case "one-page":
		rows, _, err := tabletest.QueryAll(ctx, m.Table, q)
		return table.Page{Entities: rows}, err
	}
	return m.Table.Query(ctx, q)
}

func (m *mutant) Scan(ctx context.Context, q table.ScanQuery) (table.Page, error) {
	switch m.kind {
	case "ignore-context":
		ctx = context.Background()
	case "scan-ignore-to":
		q.ToPartition = ""
	case "scan-ignore-limit":
		q.Limit = 0
	}
	return m.Table.Scan(ctx, q)
}

func (m *mutant) Submit(ctx context.Context, pk string, ops []table.Op) ([]string, error) {
	ops = slices.Clone(ops)
	for i := range ops {
		op := &ops[i]
		switch {
		case m.kind == "insert-is-upsert" && op.Kind == table.Insert:
			op.Kind = table.Upsert
		case m.kind == "replace-may-create" && op.Kind == table.Replace && (op.IfMatch == "" || op.IfMatch == table.AnyETag):
			op.Kind = table.Upsert
		case m.kind == "merge-is-replace" && op.Kind == table.Merge:
			op.Kind = table.Replace
		case m.kind == "ignore-etags":
			op.IfMatch = table.AnyETag
		}
	}
	switch m.kind {
	case "ignore-context":
		ctx = context.Background()
	case "not-atomic":
		if err := table.ValidateBatch(pk, ops); err != nil {
			return nil, err
		}
		etags := make([]string, len(ops))
		for i, op := range ops {
			e, err := m.Table.Submit(ctx, pk, []table.Op{op})
			if err != nil {
				var be *table.BatchError
				if errors.As(err, &be) {
					be.Index = i
				}
				return nil, err
			}
			etags[i] = e[0]
		}
		return etags, nil
	case "split-large-batches":
		var etags []string
		for len(ops) > 0 {
			n := min(len(ops), table.MaxBatchOps)
			e, err := m.Table.Submit(ctx, pk, ops[:n])
			if err != nil {
				return nil, err
			}
			etags, ops = append(etags, e...), ops[n:]
		}
		return etags, nil
	}
	etags, err := m.Table.Submit(ctx, pk, ops)
	var be *table.BatchError
	switch {
	case m.kind == "index-zero" && errors.As(err, &be):
		be.Index = 0
	case m.kind == "made-up-etags" && err == nil:
		for i := range etags {
			if etags[i] != "" {
				etags[i] += "x"
			}
		}
	}
	return etags, err
}

// mutants maps each mutant to a subtest that must fail on it.
var mutants = map[string]string{
	"missing-is-empty":    "Get/MissingRowIsNotFound",
	"local-times":         "Properties/RoundTripEveryType",
	"drop-empty-strings":  "Properties/RoundTripEveryType",
	"ignore-context":      "Context/CanceledCallsFailAndWriteNothing",
	"ignore-limit":        "Query/Limit",
	"ignore-to":           "Query/Range",
	"one-page":            "Query/PagingPast1000Rows",
	"scan-ignore-to":      "Scan/PartitionBounds",
	"scan-ignore-limit":   "Scan/Limit",
	"insert-is-upsert":    "Insert/ExistingRowFailsWholeBatch",
	"replace-may-create":  "Replace/MissingRowIsNotFound",
	"merge-is-replace":    "Merge/KeepsOtherProperties",
	"ignore-etags":        "Concurrency/ReplaceSameETagOneWins",
	"not-atomic":          "Batch/FailingOpIndex/DeleteMissingAtLast",
	"split-large-batches": "Batch/TooManyOpsIsInvalid",
	"index-zero":          "Batch/FailingOpIndex/InsertExistingAtMiddle",
	"made-up-etags":       "ETag/SubmitReturnsStoredETags",
}

const mutantEnv = "TABLETEST_MUTANT"

// TestMutantSuite runs the suite on the mutant named by $TABLETEST_MUTANT; it is meant to fail,
// and runs only as TestSuiteCatchesMutants's child.
func TestMutantSuite(t *testing.T) {
	kind := os.Getenv(mutantEnv)
	if kind == "" {
		t.Skip("runs only as the child process of TestSuiteCatchesMutants")
	}
	tabletest.Run(t, tabletest.Harness{NewTable: func(t *testing.T) table.Table {
		tbl, err := mem.New(nil).Table("mutant")
		if err != nil {
			t.Fatal(err)
		}
		return &mutant{Table: tbl, kind: kind}
	}})
}

func TestSuiteCatchesMutants(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the suite in child processes")
	}
	if os.Getenv(mutantEnv) != "" {
		t.Skip("in a child process")
	}
	for kind, subtest := range mutants {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			run := "^TestMutantSuite$"
			for _, part := range strings.Split(subtest, "/") {
				run += "/^" + part + "$"
			}
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run="+run, "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), mutantEnv+"="+kind)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("the suite did not fail on the mutant %q (err %v):\n%s", kind, err, tail(out))
			}
			if want := "--- FAIL: TestMutantSuite/" + subtest + " "; !strings.Contains(string(out), want) {
				t.Fatalf("the subtest %s did not fail on the mutant %q:\n%s", subtest, kind, tail(out))
			}
		})
	}
}

func tail(out []byte) string {
	lines := strings.Split(string(out), "\n")
	var fails []string
	for _, l := range lines {
		if strings.Contains(l, "--- FAIL") {
			fails = append(fails, l)
		}
	}
	return strings.Join(fails, "\n")
}
