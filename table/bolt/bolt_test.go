package bolt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	berrors "go.etcd.io/bbolt/errors"

	"github.com/estuite/estuite/table"
)

// openTest opens a backend in a fresh directory (NoSync: tests only) and closes it at cleanup.
func openTest(t *testing.T) (*Backend, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sub", "dir", "estuite.db")
	b, err := Open(path, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, path
}

func openTable(t *testing.T, b *Backend, name string) *Table {
	t.Helper()
	tb, err := b.OpenTable(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return tb.(*Table)
}

func entity(pk, rk string, props map[string]any) table.Entity {
	return table.Entity{PartitionKey: pk, RowKey: rk, Properties: props}
}

func insert(pk, rk string, props map[string]any) table.Op {
	return table.Op{Kind: table.Insert, Entity: entity(pk, rk, props)}
}

func mustSubmit(t *testing.T, tb table.Table, pk string, ops ...table.Op) []string {
	t.Helper()
	etags, err := tb.Submit(context.Background(), pk, ops)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	return etags
}

func TestOpenCreatesFile(t *testing.T) {
	_, path := openTest(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600", fi.Mode().Perm())
	}
	di, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, want 0700", di.Mode().Perm())
	}
}

func TestBadTableName(t *testing.T) {
	b, _ := openTest(t)
	for _, name := range []string{"_meta", "ab", "1abc", "a-b-c"} {
		if _, err := b.OpenTable(context.Background(), name); !errors.Is(err, table.ErrInvalid) {
			t.Errorf("OpenTable(%q): err %v, want ErrInvalid", name, err)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	b, _ := openTest(t)
	tb := openTable(t, b, "rows")
	at := time.Date(2025, 3, 4, 5, 6, 7, 891234567, time.FixedZone("CET", 3600))
	props := map[string]any{
		"S": "héllo", "B": []byte{0, 1, 2}, "E": []byte{}, "I": int64(-7), "T": true, "F": false, "At": at,
	}
	etags := mustSubmit(t, tb, "p", insert("p", "r1", props), insert("p", "r2", nil))
	got, err := tb.Get(context.Background(), "p", "r1")
	if err != nil {
		t.Fatal(err)
	}
	want := table.CloneProperties(props) // times in UTC, to the microsecond
	if got.PartitionKey != "p" || got.RowKey != "r1" || got.ETag != etags[0] || !equalProps(want, got.Properties) {
		t.Fatalf("Get = %+v, want props %v and ETag %s", got, want, etags[0])
	}
	if _, err := tb.Get(context.Background(), "p", "r3"); !errors.Is(err, table.ErrNotFound) {
		t.Fatalf("Get of a missing row: %v", err)
	}
	if _, err := tb.Get(context.Background(), "q", "r1"); !errors.Is(err, table.ErrNotFound) {
		t.Fatalf("Get in a missing partition: %v", err)
	}
	page, err := tb.Query(context.Background(), table.Query{PartitionKey: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Entities) != 2 || page.Continuation != "" || page.Entities[1].ETag != etags[1] ||
		!equalProps(want, page.Entities[0].Properties) || len(page.Entities[1].Properties) != 0 {
		t.Fatalf("Query = %+v", page)
	}
}

func TestQueryPagingAndPartitions(t *testing.T) {
	b, _ := openTest(t)
	tb := openTable(t, b, "rows")
	other := openTable(t, b, "other")
	// Partitions "a", "a!" and "ab" share prefixes; "a!" sorts between "a\x00…" and "ab".
	for _, pk := range []string{"a", "a!", "ab"} {
		var ops []table.Op
		for i := range 25 {
			ops = append(ops, insert(pk, fmt.Sprintf("r%02d", i), map[string]any{"I": int64(i)}))
		}
		mustSubmit(t, tb, pk, ops...)
	}
	mustSubmit(t, other, "a", insert("a", "zz", nil))

	q := table.Query{PartitionKey: "a", From: "r03", To: "r20", Limit: 4}
	var keys []string
	for pages := 0; ; pages++ {
		page, err := tb.Query(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Entities) > 4 {
			t.Fatalf("page of %d rows, limit 4", len(page.Entities))
		}
		for _, e := range page.Entities {
			if e.PartitionKey != "a" {
				t.Fatalf("row of partition %q", e.PartitionKey)
			}
			keys = append(keys, e.RowKey)
		}
		if page.Continuation == "" {
			break
		}
		q.Continuation = page.Continuation
	}
	if len(keys) != 17 || keys[0] != "r03" || keys[16] != "r19" {
		t.Fatalf("rows %v", keys)
	}
	if _, err := tb.Query(context.Background(), table.Query{PartitionKey: "a", Continuation: "bogus"}); !errors.Is(err, table.ErrInvalid) {
		t.Fatalf("bad continuation: %v", err)
	}
	page, err := tb.Query(context.Background(), table.Query{PartitionKey: "zzz"})
	if err != nil || len(page.Entities) != 0 || page.Continuation != "" {
		t.Fatalf("empty partition: %+v, %v", page, err)
	}
}

func TestETagChanges(t *testing.T) {
	b, _ := openTest(t)
	tb := openTable(t, b, "rows")
	seen := map[string]bool{}
	check := func(etags []string) string {
		t.Helper()
		for _, e := range etags {
			if e == "" || seen[e] {
				t.Fatalf("ETag %q empty or repeated", e)
			}
			seen[e] = true
		}
		return etags[0]
	}
	e := check(mustSubmit(t, tb, "p", insert("p", "r", map[string]any{"A": int64(1)}), insert("p", "s", nil)))
	e = check(mustSubmit(t, tb, "p", table.Op{Kind: table.Replace, Entity: entity("p", "r", map[string]any{"A": int64(2)}), IfMatch: e}))
	check(mustSubmit(t, tb, "p", table.Op{Kind: table.Merge, Entity: entity("p", "r", map[string]any{"B": "x"}), IfMatch: e}))
	_, err := tb.Submit(context.Background(), "p", []table.Op{{Kind: table.Replace, Entity: entity("p", "r", nil), IfMatch: `W/"0"`}})
	var be *table.BatchError
	if !errors.As(err, &be) || be.Index != 0 || !errors.Is(err, table.ErrPreconditionFailed) {
		t.Fatalf("stale IfMatch: %v", err)
	}
	e = check(mustSubmit(t, tb, "p", table.Op{Kind: table.Upsert, Entity: entity("p", "r", map[string]any{"C": true})}))
	got, err := tb.Get(context.Background(), "p", "r")
	if err != nil || got.ETag != e || !equalProps(map[string]any{"C": true}, got.Properties) {
		t.Fatalf("Get = %+v, %v; want ETag %s", got, err, e)
	}
	etags := mustSubmit(t, tb, "p", table.Op{Kind: table.Delete, Entity: entity("p", "r", nil), IfMatch: e})
	if len(etags) != 1 || etags[0] != "" {
		t.Fatalf("delete ETags %q", etags)
	}
	if _, err := tb.Get(context.Background(), "p", "r"); !errors.Is(err, table.ErrNotFound) {
		t.Fatalf("deleted row: %v", err)
	}
}

func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "estuite.db")
	b, err := Open(path, nil) // real fsync
	if err != nil {
		t.Fatal(err)
	}
	tb := openTable(t, b, "rows")
	first := mustSubmit(t, tb, "p", insert("p", "r1", map[string]any{"S": "one"}), insert("p", "r2", nil))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Get(context.Background(), "p", "r1"); !errors.Is(err, berrors.ErrDatabaseNotOpen) {
		t.Fatalf("Get after Close: %v", err)
	}
	if _, err := tb.Submit(context.Background(), "p", []table.Op{insert("p", "r9", nil)}); !errors.Is(err, berrors.ErrDatabaseNotOpen) {
		t.Fatalf("Submit after Close: %v", err)
	}

	b, err = Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	tb = openTable(t, b, "rows")
	got, err := tb.Get(context.Background(), "p", "r1")
	if err != nil || got.ETag != first[0] || got.Properties["S"] != "one" {
		t.Fatalf("after reopen: %+v, %v", got, err)
	}
	next := mustSubmit(t, tb, "p", table.Op{Kind: table.Upsert, Entity: entity("p", "r1", nil)}, insert("p", "r3", nil))
	for _, e := range next {
		if e == first[0] || e == first[1] {
			t.Fatalf("ETag %s reused after reopen", e)
		}
	}
}

func TestOpenLocked(t *testing.T) {
	_, path := openTest(t)
	start := time.Now()
	if _, err := Open(path, &Options{Timeout: 50 * time.Millisecond}); err == nil {
		t.Fatal("second Open of a locked file succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Open waited %v", d)
	}
}

// TestConcurrentIfMatch runs read-modify-write increments with IfMatch from many goroutines:
// every ETag is won by exactly one writer, so no increment is lost.
func TestConcurrentIfMatch(t *testing.T) {
	b, _ := openTest(t)
	tb := openTable(t, b, "rows")
	mustSubmit(t, tb, "p", insert("p", "n", map[string]any{"N": int64(0)}))
	const workers, incs = 16, 20
	var mu sync.Mutex
	won := map[string]int{} // IfMatch ETag -> successful writes with it
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			ctx := context.Background()
			for done := 0; done < incs; {
				e, err := tb.Get(ctx, "p", "n")
				if err != nil {
					t.Error(err)
					return
				}
				n := e.Properties["N"].(int64)
				_, err = tb.Submit(ctx, "p", []table.Op{{Kind: table.Replace, IfMatch: e.ETag,
					Entity: entity("p", "n", map[string]any{"N": n + 1})}})
				switch {
				case err == nil:
					done++
					mu.Lock()
					won[e.ETag]++
					mu.Unlock()
				case !errors.Is(err, table.ErrPreconditionFailed):
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for etag, n := range won {
		if n != 1 {
			t.Errorf("ETag %s won %d times", etag, n)
		}
	}
	e, err := tb.Get(context.Background(), "p", "n")
	if err != nil || e.Properties["N"] != int64(workers*incs) {
		t.Fatalf("final %+v, %v; want N = %d", e, err, workers*incs)
	}
}

// TestConcurrentIfMatchRounds makes all contenders race on the same ETag, round after round:
// exactly one of them wins each round.
func TestConcurrentIfMatchRounds(t *testing.T) {
	b, _ := openTest(t)
	tb := openTable(t, b, "rows")
	etag := mustSubmit(t, tb, "p", insert("p", "r", nil))[0]
	for round := range 20 {
		results := make([]error, 8)
		var wg sync.WaitGroup
		for i := range results {
			wg.Go(func() {
				_, results[i] = tb.Submit(context.Background(), "p", []table.Op{{Kind: table.Replace,
					IfMatch: etag, Entity: entity("p", "r", map[string]any{"W": int64(i)})}})
			})
		}
		wg.Wait()
		wins := 0
		for _, err := range results {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, table.ErrPreconditionFailed):
				t.Fatal(err)
			}
		}
		if wins != 1 {
			t.Fatalf("round %d: %d winners", round, wins)
		}
		e, err := tb.Get(context.Background(), "p", "r")
		if err != nil || e.ETag == etag {
			t.Fatalf("round %d: %+v, %v", round, e, err)
		}
		etag = e.ETag
	}
}

// gate holds every transaction of b inside its commit until released, and reports the batch
// sizes. Install it before the first Submit.
type gate struct {
	entered chan int
	release chan struct{}
}

func holdCommits(b *Backend) *gate {
	g := &gate{entered: make(chan int, 100), release: make(chan struct{}, 100)}
	b.gc.testHook = func(n int) {
		g.entered <- n
		<-g.release
	}
	return g
}

// waitQueued waits until n requests wait in b's queue.
func waitQueued(t *testing.T, b *Backend, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		b.gc.mu.Lock()
		q := len(b.gc.queue)
		b.gc.mu.Unlock()
		if q == n {
			return
		}
	}
	t.Fatalf("queue never reached %d requests", n)
}

type result struct {
	etags []string
	err   error
}

func submitAsync(ctx context.Context, tb table.Table, pk string, ops ...table.Op) <-chan result {
	ch := make(chan result, 1)
	go func() {
		etags, err := tb.Submit(ctx, pk, ops)
		ch <- result{etags, err}
	}()
	return ch
}

// TestGroupCommit queues requests behind a held commit and checks that they share the next
// transaction, that each sees the effects of the earlier ones, and that failing requests write
// nothing and do not affect the others.
func TestGroupCommit(t *testing.T) {
	b, _ := openTest(t)
	tb := openTable(t, b, "rows")
	other := openTable(t, b, "other")
	g := holdCommits(b)
	ctx := context.Background()

	first := submitAsync(ctx, tb, "p", insert("p", "a", nil))
	if n := <-g.entered; n != 1 {
		t.Fatalf("first transaction carries %d requests", n)
	}
	var queued []<-chan result
	add := func(tb table.Table, pk string, ops ...table.Op) {
		queued = append(queued, submitAsync(ctx, tb, pk, ops...))
		waitQueued(t, b, len(queued))
	}
	add(tb, "p", insert("p", "b", map[string]any{"V": int64(1)}))                                  // 0: ok
	add(tb, "p", insert("p", "b", nil))                                                            // 1: exists (inserted by 0)
	add(tb, "p", insert("p", "c", nil), insert("p", "a", nil))                                     // 2: op 1 fails, c not written
	add(tb, "p", table.Op{Kind: table.Merge, Entity: entity("p", "b", map[string]any{"W": true})}) // 3: sees 0
	add(other, "p", insert("p", "a", nil))                                                         // 4: other table: ok
	add(tb, "p", table.Op{Kind: table.Delete, Entity: entity("p", "zz", nil)})                     // 5: missing
	add(tb, "q", insert("q", "x", nil), insert("q", "y", nil))                                     // 6: ok

	g.release <- struct{}{}
	if r := <-first; r.err != nil {
		t.Fatal(r.err)
	}
	if n := <-g.entered; n != len(queued) {
		t.Fatalf("second transaction carries %d requests, want %d", n, len(queued))
	}
	g.release <- struct{}{}
	var res []result
	for _, ch := range queued {
		res = append(res, <-ch)
	}
	var be *table.BatchError
	for i, want := range []struct {
		err   error
		index int
	}{{nil, 0}, {table.ErrAlreadyExists, 0}, {table.ErrAlreadyExists, 1}, {nil, 0}, {nil, 0}, {table.ErrNotFound, 0}, {nil, 0}} {
		r := res[i]
		switch {
		case want.err == nil && r.err != nil:
			t.Errorf("request %d: %v", i, r.err)
		case want.err != nil && (!errors.Is(r.err, want.err) || !errors.As(r.err, &be) || be.Index != want.index):
			t.Errorf("request %d: err %v, want %v at op %d", i, r.err, want.err, want.index)
		case want.err != nil && r.etags != nil:
			t.Errorf("request %d failed but returned ETags %q", i, r.etags)
		}
	}
	if _, err := tb.Get(ctx, "p", "c"); !errors.Is(err, table.ErrNotFound) {
		t.Errorf("row c of a failed request was written: %v", err)
	}
	e, err := tb.Get(ctx, "p", "b")
	if err != nil || e.ETag != res[3].etags[0] || !equalProps(map[string]any{"V": int64(1), "W": true}, e.Properties) {
		t.Errorf("row b = %+v, %v", e, err)
	}
	page, err := tb.Query(ctx, table.Query{PartitionKey: "q"})
	if err != nil || len(page.Entities) != 2 {
		t.Errorf("partition q = %+v, %v", page, err)
	}
	close(g.release) // let later commits through
}

func TestContextCancel(t *testing.T) {
	b, _ := openTest(t)
	tb := openTable(t, b, "rows")
	g := holdCommits(b)
	bg := context.Background()

	// Done before the call: nothing happens.
	done, cancel := context.WithCancel(bg)
	cancel()
	if _, err := tb.Submit(done, "p", []table.Op{insert("p", "x", nil)}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Submit with a done context: %v", err)
	}
	if _, err := tb.Get(done, "p", "x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with a done context: %v", err)
	}

	// The leader's own request is taken at once: cancelling it does not stop it.
	leadCtx, cancelLead := context.WithCancel(bg)
	leader := submitAsync(leadCtx, tb, "p", insert("p", "a", nil))
	<-g.entered
	cancelLead()

	// Queued and cancelled before being taken: returns at once, never applied.
	qctx, cancelQ := context.WithCancel(bg)
	dropped := submitAsync(qctx, tb, "p", insert("p", "dropped", nil))
	waitQueued(t, b, 1)
	// Queued behind it: these two are taken together into the next transaction.
	next := submitAsync(bg, tb, "p", insert("p", "b", nil))
	waitQueued(t, b, 2)
	fctx, cancelF := context.WithCancel(bg)
	follower := submitAsync(fctx, tb, "p", insert("p", "c", nil))
	waitQueued(t, b, 3)

	cancelQ()
	if r := <-dropped; !errors.Is(r.err, context.Canceled) || !errors.Is(r.err, table.ErrTransient) {
		t.Fatalf("cancelled queued request: %v", r.err)
	}
	waitQueued(t, b, 2)

	g.release <- struct{}{}
	if r := <-leader; r.err != nil {
		t.Fatalf("leader with a cancelled context: %v", r.err)
	}
	if n := <-g.entered; n != 2 {
		t.Fatalf("second transaction carries %d requests, want 2", n)
	}
	cancelF() // taken: must wait for the outcome
	select {
	case r := <-follower:
		t.Fatalf("taken request returned before its commit: %v", r.err)
	case <-time.After(20 * time.Millisecond):
	}
	g.release <- struct{}{}
	if r := <-next; r.err != nil {
		t.Fatal(r.err)
	}
	if r := <-follower; r.err != nil {
		t.Fatalf("taken request with a cancelled context: %v", r.err)
	}
	close(g.release)
	for _, rk := range []string{"a", "b", "c"} {
		if _, err := tb.Get(bg, "p", rk); err != nil {
			t.Errorf("row %s: %v", rk, err)
		}
	}
	if _, err := tb.Get(bg, "p", "dropped"); !errors.Is(err, table.ErrNotFound) {
		t.Errorf("cancelled request was applied: %v", err)
	}
}

func TestInvalidBatch(t *testing.T) {
	b, _ := openTest(t)
	tb := openTable(t, b, "rows")
	for _, ops := range [][]table.Op{
		nil,
		{insert("q", "r", nil)},
		{insert("p", "r", nil), insert("p", "r", nil)},
		{insert("p", "r\x00", nil)},
		{insert("p", "r", map[string]any{"X": 1.5})},
	} {
		if _, err := tb.Submit(context.Background(), "p", ops); !errors.Is(err, table.ErrInvalid) {
			t.Errorf("Submit(%v): %v, want ErrInvalid", ops, err)
		}
	}
	page, err := tb.Query(context.Background(), table.Query{PartitionKey: "p"})
	if err != nil || len(page.Entities) != 0 {
		t.Fatalf("invalid batches wrote %+v, %v", page, err)
	}
}

// TestCommitPanic checks that a panic inside a transaction fails that transaction's requests
// and leaves the backend usable.
func TestCommitPanic(t *testing.T) {
	b, _ := openTest(t)
	tb := openTable(t, b, "rows")
	var once sync.Once
	b.gc.testHook = func(int) { once.Do(func() { panic("boom") }) }
	if _, err := tb.Submit(context.Background(), "p", []table.Op{insert("p", "a", nil)}); err == nil || errors.Is(err, table.ErrTransient) {
		t.Fatalf("Submit during a panicking commit: %v", err)
	}
	if _, err := tb.Get(context.Background(), "p", "a"); !errors.Is(err, table.ErrNotFound) {
		t.Fatalf("row of a panicked commit: %v", err)
	}
	mustSubmit(t, tb, "p", insert("p", "a", nil))
}

func TestScanStaysInItsTable(t *testing.T) {
	b, _ := openTest(t)
	t1, t2 := openTable(t, b, "first"), openTable(t, b, "second")
	mustSubmit(t, t1, "p", insert("p", "a", map[string]any{"V": "1"}))
	mustSubmit(t, t2, "p", insert("p", "b", map[string]any{"V": "2"}))
	mustSubmit(t, t2, "q", insert("q", "c", map[string]any{"V": "3"}))
	page, err := t1.Scan(context.Background(), table.ScanQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Entities) != 1 || page.Entities[0].RowKey != "a" || page.Continuation != "" {
		t.Fatalf("scan of the first table returned %+v", page)
	}
}

func TestScanContinuation(t *testing.T) {
	b, _ := openTest(t)
	tb := openTable(t, b, "scan")
	mustSubmit(t, tb, "p", insert("p", "a", nil), insert("p", "b", nil))
	mustSubmit(t, tb, "q", insert("q", "c", nil))
	ctx := context.Background()
	page, err := tb.Scan(ctx, table.ScanQuery{Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Entities) != 2 || page.Continuation == "" {
		t.Fatalf("first page %+v, want 2 rows and a continuation", page)
	}
	page, err = tb.Scan(ctx, table.ScanQuery{Limit: 2, Continuation: page.Continuation})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Entities) != 1 || page.Entities[0].PartitionKey != "q" || page.Continuation != "" {
		t.Fatalf("second page %+v, want the row q/c and no continuation", page)
	}
	for _, bad := range []string{"x", "k", "k!!", "kcA", "r" + "p\x00a"} { // "cA" decodes to "p" (no NUL)
		if _, err := tb.Scan(ctx, table.ScanQuery{Continuation: bad}); !errors.Is(err, table.ErrInvalid) {
			t.Errorf("scan with the continuation %q: %v, want ErrInvalid", bad, err)
		}
	}
}

// SubmitParts writes batches of several tables and partitions in one transaction: all or none.
func TestSubmitPartsIsAtomicAcrossTables(t *testing.T) {
	path := filepath.Join(t.TempDir(), "parts.db")
	b, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ta, _ := b.OpenTable(ctx, "alpha")
	tb, _ := b.OpenTable(ctx, "beta")
	row := func(pk, rk string) table.Entity {
		return table.Entity{PartitionKey: pk, RowKey: rk, Properties: map[string]any{"V": int64(1)}}
	}
	etags, err := b.SubmitParts(ctx, []table.Part{
		{Table: ta, PartitionKey: "p", Ops: []table.Op{{Kind: table.Upsert, Entity: row("p", "marker")}}},
		{Table: tb, PartitionKey: "q", Ops: []table.Op{{Kind: table.Insert, Entity: row("q", "1")}, {Kind: table.Insert, Entity: row("q", "2")}}},
	})
	if err != nil || len(etags) != 2 || len(etags[0]) != 1 || len(etags[1]) != 2 {
		t.Fatalf("SubmitParts = %v, %v", etags, err)
	}
	if got, _ := tb.Get(ctx, "q", "2"); got.ETag != etags[1][1] {
		t.Fatalf("returned ETag %q, stored %q", etags[1][1], got.ETag)
	}
	// The second part fails: nothing of the first is written either.
	_, err = b.SubmitParts(ctx, []table.Part{
		{Table: ta, PartitionKey: "p", Ops: []table.Op{{Kind: table.Insert, Entity: row("p", "new")}}},
		{Table: tb, PartitionKey: "q", Ops: []table.Op{{Kind: table.Insert, Entity: row("q", "3")}, {Kind: table.Insert, Entity: row("q", "1")}}},
	})
	var pe *table.PartError
	var be *table.BatchError
	if !errors.As(err, &pe) || pe.Part != 1 || !errors.As(err, &be) || be.Index != 1 || !errors.Is(err, table.ErrAlreadyExists) {
		t.Fatalf("failing part: %v; want part 1, op 1, already exists", err)
	}
	for _, k := range []struct {
		t      table.Table
		pk, rk string
	}{{ta, "p", "new"}, {tb, "q", "3"}} {
		if _, err := k.t.Get(ctx, k.pk, k.rk); !errors.Is(err, table.ErrNotFound) {
			t.Fatalf("%s/%s written by a failed multi-part write: %v", k.pk, k.rk, err)
		}
	}
	// Parts must be distinct partitions of this backend's tables.
	other, _ := Open(filepath.Join(t.TempDir(), "other.db"), nil)
	defer other.Close()
	foreign, _ := other.OpenTable(ctx, "alpha")
	for _, parts := range [][]table.Part{
		{{Table: foreign, PartitionKey: "p", Ops: []table.Op{{Kind: table.Upsert, Entity: row("p", "x")}}}},
		{{Table: ta, PartitionKey: "p", Ops: []table.Op{{Kind: table.Upsert, Entity: row("p", "x")}}},
			{Table: ta, PartitionKey: "p", Ops: []table.Op{{Kind: table.Upsert, Entity: row("p", "y")}}}},
	} {
		if _, err := b.SubmitParts(ctx, parts); !errors.Is(err, table.ErrInvalid) {
			t.Fatalf("invalid parts: %v; want ErrInvalid", err)
		}
	}
	b.Close()
	b, err = Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ta, _ = b.OpenTable(ctx, "alpha")
	if _, err := ta.Get(ctx, "p", "marker"); err != nil {
		t.Fatalf("multi-part write lost after reopen: %v", err)
	}
}
