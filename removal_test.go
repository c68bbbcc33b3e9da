package estuite_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/mem"
)

// Regression tests of deletes, retention and the scavenger, from an adversarial review: each
// failed before its fix, and the comment above it says the defect it caught.

// A Delete whose work-row upsert the scavenger sees, but whose head write lands after the
// scavenger read the head (and found nothing to raise), loses its work row.
func TestRemovalWorkRowSurvivesARacingScavenger(t *testing.T) {
	ctx := context.Background()
	var s *estuite.Store
	var armed, fired atomic.Bool
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if armed.Load() && c.Method == mem.MethodSubmit && c.Table == "estuitestreams" && len(c.Ops) == 1 &&
			c.Ops[0].Entity.RowKey == "H" && c.Ops[0].Entity.Properties["DeletedBefore"] != nil && !fired.Load() {
			fired.Store(true)
			st, err := s.Scavenge(ctx) // between Delete's work-row upsert and its head write
			t.Logf("racing scavenge: %+v %v", st, err)
		}
		return mem.NoFault
	}})
	s = openStore(t, b, nil)
	appendN(t, s, "s", 5)
	if _, err := s.SetMetadata(ctx, "s", estuite.StreamMetadata{TruncateBefore: ptr(int64(3))}, estuite.AnyMetadataVersion); err != nil {
		t.Fatal(err)
	}
	d := estuite.NewDispatcher(s, nil)
	stepUntilIdle(t, d)
	t.Logf("first scavenge: %+v", mustScavenge(t, s))
	armed.Store(true)
	if _, err := s.Delete(ctx, "s", &estuite.DeleteOptions{Hard: true}); err != nil {
		t.Fatal(err)
	}
	armed.Store(false)
	stepUntilIdle(t, d)
	st := mustScavenge(t, s)
	t.Logf("scavenge after the delete: %+v", st)
	if got := eventRowVersions(t, s, b, "s"); len(got) != 0 {
		t.Fatalf("hard-deleted stream's event rows never scavenged: %v (work list lost the stream)", got)
	}
}

// A soft delete judged on a cached head that says "already deleted" succeeds without deleting
// what another store appended since (recreating the stream).
func TestRemovalSoftDeleteOnAStaleCachedHead(t *testing.T) {
	ctx := context.Background()
	b := mem.New(nil)
	s1 := openStore(t, b, nil)
	s2 := openStore(t, b, nil)
	appendN(t, s1, "c", 3)
	if _, err := s1.Delete(ctx, "c", nil); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s2, "c", []estuite.EventData{jsonEvent("Again", "{}")}, nil) // recreates: version 4
	res, err := s1.Delete(ctx, "c", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, rerr := s2.Read(ctx, "c", nil)
	t.Logf("Delete returned %+v; read after it: %v", res, rerr)
	if rerr == nil {
		_, events := readAll(t, s2, "c", nil)
		t.Fatalf("Delete succeeded but the stream still reads %v", versions(events))
	}
}

// A read with a snapshot older than the first visible version: snapshot@5 plus events from 8.
func TestRemovalSnapshotBelowTheVisibleFloorIsIgnored(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, mem.New(nil), nil)
	appendN(t, s, "acct", 4)
	mustAppend(t, s, "acct", []estuite.EventData{jsonEvent("E", "{}")}, &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Schema: 1, Data: []byte("state@5")}})
	appendN(t, s, "acct", 5)
	if _, err := s.SetMetadata(ctx, "acct", estuite.StreamMetadata{TruncateBefore: ptr(int64(8))}, estuite.AnyMetadataVersion); err != nil {
		t.Fatal(err)
	}
	r, err := s.Read(ctx, "acct", &estuite.ReadOptions{WithSnapshot: true, SnapshotSchema: 1})
	if err != nil {
		t.Fatal(err)
	}
	var vs []int64
	for e, err := range r.Events {
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, e.Version)
	}
	t.Logf("snapshot %+v, events %v", r.Snapshot, vs)
	if r.Snapshot != nil && len(vs) > 0 && vs[0] != r.Snapshot.Version+1 {
		t.Fatalf("snapshot at %d followed by event %d: versions %d..%d are silently missing from the state", r.Snapshot.Version, vs[0], r.Snapshot.Version+1, vs[0]-1)
	}
}

// A soft delete with expected version StreamExists whose answer is lost: the retry finds the
// stream deleted and reports a wrong expected version for a delete that took effect.
func TestRemovalSoftDeleteWithALostAnswer(t *testing.T) {
	ctx := context.Background()
	s, lose := storeLosingAnAnswer(t)
	appendN(t, s, "lost", 2)
	lose.Store(true)
	res, err := s.Delete(ctx, "lost", &estuite.DeleteOptions{Expected: estuite.StreamExists})
	_, rerr := s.Read(ctx, "lost", nil)
	t.Logf("Delete = %+v, %v; read after: %v", res, err, rerr)
	if err != nil {
		t.Fatalf("the delete took effect (read: %v) but Delete returned %v", rerr, err)
	}
}

// truncateBefore past the head: the scavenger raises the floor over versions not yet written, so
// events appended after the truncation is lifted are hidden (and later removed).
func TestRemovalFloorNeverPassesTheHead(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, mem.New(nil), nil)
	appendN(t, s, "t", 3)
	if _, err := s.SetMetadata(ctx, "t", estuite.StreamMetadata{TruncateBefore: ptr(int64(100))}, estuite.AnyMetadataVersion); err != nil {
		t.Fatal(err)
	}
	d := estuite.NewDispatcher(s, nil)
	stepUntilIdle(t, d)
	t.Logf("scavenge: %+v", mustScavenge(t, s))
	if _, err := s.SetMetadata(ctx, "t", estuite.StreamMetadata{}, estuite.AnyMetadataVersion); err != nil { // lifted
		t.Fatal(err)
	}
	res := mustAppend(t, s, "t", []estuite.EventData{jsonEvent("AfterLift", "{}")}, nil)
	_, events := readAll(t, s, "t", nil)
	t.Logf("append after the lift: %+v; read: %v", res, versions(events))
	stepUntilIdle(t, d)
	t.Logf("scavenge: %+v", mustScavenge(t, s))
	if len(events) == 0 {
		t.Fatalf("acknowledged event %d, appended when no rule hid it, is invisible", res.LastVersion)
	}
}

// A stream with retention stays on the work list: what does an idle pass cost per such stream?
// maxAge judged on the scavenger's clock: a scavenger whose clock runs ahead removes events that
// readers on other machines still return.
func TestRemovalMaxAgeAllowsTheScavengersClockAhead(t *testing.T) {
	ctx := context.Background()
	b := mem.New(nil)
	reader := openStore(t, b, nil)
	scav := openStore(t, b, &estuite.Options{Now: func() time.Time { return time.Now().Add(10 * time.Minute) }})
	appendN(t, reader, "a", 3)
	if _, err := reader.SetMetadata(ctx, "a", estuite.StreamMetadata{MaxAge: ptr(5 * time.Minute)}, estuite.AnyMetadataVersion); err != nil {
		t.Fatal(err)
	}
	stepUntilIdle(t, estuite.NewDispatcher(reader, nil))
	_, before := readAll(t, reader, "a", nil)
	st := mustScavenge(t, scav)
	reader.ForgetHeads()
	_, after := readAll(t, reader, "a", nil)
	t.Logf("reader saw %v; scavenger (clock +10 min) %+v; reader then sees %v", versions(before), st, versions(after))
	if len(before) == 3 && st.Removed > 0 {
		t.Fatalf("removed %d events a reader was still returning", st.Removed)
	}
}

// ageFloor with a backend that answers an empty page with a continuation first (as Azure may).
func TestRemovalMaxAgeOverEmptyPages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	b := mem.New(&mem.Options{EmptyPages: true})
	s := openStore(t, b, nil)
	appendN(t, s, "a", 3)
	if _, err := s.SetMetadata(ctx, "a", estuite.StreamMetadata{MaxAge: ptr(time.Hour)}, estuite.AnyMetadataVersion); err != nil {
		t.Fatal(err)
	}
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	st, err := s.Scavenge(ctx)
	t.Logf("scavenge: %+v %v", st, err)
	if err != nil {
		t.Fatalf("scavenge with empty pages: %v", err)
	}
}

// A forward read with a Limit over a maxAge stream whose first events are too old.
func TestRemovalMaxAgeReadWithALimit(t *testing.T) {
	ctx := context.Background()
	b := mem.New(nil)
	old := openStore(t, b, &estuite.Options{Now: func() time.Time { return time.Now().Add(-2 * time.Hour) }})
	s := openStore(t, b, nil)
	appendN(t, old, "a", 10)
	appendN(t, s, "a", 10)
	if _, err := s.SetMetadata(ctx, "a", estuite.StreamMetadata{MaxAge: ptr(time.Hour)}, estuite.AnyMetadataVersion); err != nil {
		t.Fatal(err)
	}
	_, all := readAll(t, s, "a", nil)
	_, limited := readAll(t, s, "a", &estuite.ReadOptions{Limit: 5})
	t.Logf("all: %v; Limit 5: %v", versions(all), versions(limited))
	if len(limited) != 5 {
		t.Fatalf("a read with Limit 5 of a stream with 10 visible events returned %d", len(limited))
	}
}

// With the unfixed ageFloor, a background pass on a backend that answers empty pages first hangs
// the lease holder's loop: nothing more is dispatched.
func TestRemovalEmptyPagesDoNotHangTheDispatcher(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, mem.New(&mem.Options{EmptyPages: true}), nil)
	appendN(t, s, "a", 3)
	if _, err := s.SetMetadata(ctx, "a", estuite.StreamMetadata{MaxAge: ptr(time.Hour)}, estuite.AnyMetadataVersion); err != nil {
		t.Fatal(err)
	}
	d := estuite.NewDispatcher(s, &estuite.DispatcherOptions{PollInterval: 5 * time.Millisecond, ScavengeInterval: 10 * time.Millisecond})
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	time.Sleep(100 * time.Millisecond)
	res := mustAppend(t, s, "hot", []estuite.EventData{jsonEvent("E", "{}")}, nil)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := s.WaitDispatched(wctx, "hot", res.LastVersion); err != nil {
		t.Fatalf("not dispatched within 2 s: %v", err)
	}
}

// A hot stream with retention (an append lands between the scavenger's head read and its write,
// every time) fails the whole pass: the streams after it on the list are never scavenged.
func TestRemovalAHotStreamDoesNotFailThePass(t *testing.T) {
	ctx := context.Background()
	var s2 *estuite.Store
	var hot atomic.Bool
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if hot.Load() && c.Method == mem.MethodSubmit && c.Table == "estuitestreams" && len(c.Ops) == 1 && c.Ops[0].Kind == table.Replace &&
			c.Ops[0].Entity.RowKey == "H" && c.Ops[0].Entity.Properties["RemovedBefore"] != nil && c.PartitionKey == "hot" {
			_, _ = s2.Append(ctx, "hot", []estuite.EventData{jsonEvent("E", "{}")}, nil)
		}
		return mem.NoFault
	}})
	s := openStore(t, b, nil)
	s2 = openStore(t, b, nil)
	appendN(t, s, "hot", 5)
	if _, err := s.SetMetadata(ctx, "hot", estuite.StreamMetadata{MaxCount: ptr(int64(1))}, estuite.AnyMetadataVersion); err != nil {
		t.Fatal(err)
	}
	var others []string
	for i := 0; i < 8; i++ {
		name := "gone" + string(rune('a'+i))
		others = append(others, name)
		appendN(t, s, name, 2)
		if _, err := s.Delete(ctx, name, &estuite.DeleteOptions{Hard: true}); err != nil {
			t.Fatal(err)
		}
	}
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	hot.Store(true)
	st, err := s.Scavenge(ctx)
	hot.Store(false)
	left := 0
	for _, n := range others {
		left += len(eventRowVersions(t, s, b, n))
	}
	t.Logf("pass: %+v, %v; event rows of the deleted streams left: %d", st, err, left)
	if err != nil && left > 0 {
		t.Fatalf("contention on one stream failed the pass; %d deleted events of other streams stay", left)
	}
}

// Two scavengers at once over the same deletion.
func TestRemovalTwoScavengersAtOnce(t *testing.T) {
	ctx := context.Background()
	b := mem.New(nil)
	s1 := openStore(t, b, nil)
	s2 := openStore(t, b, nil)
	for i := 0; i < 6; i++ {
		events := make([]estuite.EventData, 97)
		for j := range events {
			events[j] = jsonEvent("E", "{}")
		}
		mustAppend(t, s1, "big", events, nil)
		appendN(t, s1, "side", 3)
	}
	if _, err := s1.Delete(ctx, "big", nil); err != nil {
		t.Fatal(err)
	}
	stepUntilIdle(t, estuite.NewDispatcher(s1, nil))
	errs := make(chan error, 2)
	stats := make(chan estuite.ScavengeStats, 2)
	for _, s := range []*estuite.Store{s1, s2} {
		go func() { st, err := s.Scavenge(ctx); stats <- st; errs <- err }()
	}
	for i := 0; i < 2; i++ {
		t.Logf("pass: %+v %v", <-stats, <-errs)
	}
	st := mustScavenge(t, s1)
	t.Logf("third pass: %+v", st)
	if r, err := s1.Verify(ctx, nil); err != nil || !r.OK() || r.Redacted != 6*97 {
		t.Fatalf("Verify: %+v %v", r, err)
	}
	if got := eventRowVersions(t, s1, b, "big"); len(got) != 0 {
		t.Fatalf("left %d", len(got))
	}
}

// Event rows gone below the removal floor that the feed never held are lost, not removed: Verify
// reports them (not as pending, though the stream's dirty marker is there), and the dispatcher
// stops at the stream with a CorruptError instead of waiting for them forever.
func TestRemovalRowsLostBeforeDispatchAreReported(t *testing.T) {
	ctx := context.Background()
	b := mem.New(nil)
	s := openStore(t, b, nil)
	appendN(t, s, "lost", 4)
	if _, err := s.SetMetadata(ctx, "lost", estuite.StreamMetadata{TruncateBefore: ptr(int64(3))}, estuite.AnyMetadataVersion); err != nil {
		t.Fatal(err)
	}
	if st := mustScavenge(t, s); st.Removed != 0 || st.Waiting != 2 {
		t.Fatalf("scavenge before dispatch: %+v, want nothing removed and 2 waiting for the feed", st)
	}
	// Rows 1 and 2 go by a hand outside the store, before the dispatcher copied them.
	ops := []table.Op{
		{Kind: table.Delete, Entity: table.Entity{PartitionKey: "lost", RowKey: fmt.Sprintf("E%019d", 1)}, IfMatch: table.AnyETag},
		{Kind: table.Delete, Entity: table.Entity{PartitionKey: "lost", RowKey: fmt.Sprintf("E%019d", 2)}, IfMatch: table.AnyETag},
	}
	if _, err := s.StreamTable().Submit(ctx, "lost", ops); err != nil {
		t.Fatal(err)
	}
	if got := eventRowVersions(t, s, b, "lost"); !slices.Equal(got, []int64{3, 4}) {
		t.Fatalf("event rows %v, want [3 4]", got)
	}
	r, err := s.Verify(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("verify: %+v", r)
	if r.OK() || !slices.Equal(r.Lost, []estuite.StreamRange{{Stream: "lost", From: 1, To: 2}}) || len(r.Pending) != 1 || r.Pending[0].From != 3 {
		t.Fatalf("Verify: lost %v, pending %v, OK %v; want lost 1-2, pending from 3, not OK", r.Lost, r.Pending, r.OK())
	}
	d := estuite.NewDispatcher(s, nil)
	var cerr *estuite.CorruptError
	for i := 0; i < 5 && cerr == nil; i++ {
		_, err := d.Step(ctx)
		if err != nil && !errors.As(err, &cerr) {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if cerr == nil {
		t.Fatal("the dispatcher stepped 5 times over rows lost below the floor without reporting them")
	}
	t.Logf("dispatcher: %v", cerr)
}

// Finding where an old event is in the feed costs a few reads however far the feed has gone on
// since: the stream's progress row keeps the pages that hold it. A scavenger in a process that
// never dispatched (nothing cached) removes a stream whose events lie in three pages far apart,
// among 60 pages of another stream's events.
func TestRemovalFindsOldEventsWithoutWalkingTheFeed(t *testing.T) {
	defer estuite.SetFeedPageSize(10)()
	ctx := context.Background()
	b := mem.New(nil)
	writer := openStore(t, b, nil)
	d := estuite.NewDispatcher(writer, nil)
	for _, step := range []struct {
		stream string
		n      int
	}{{"old", 2}, {"busy", 100}, {"old", 1}, {"busy", 200}, {"old", 2}, {"busy", 300}} {
		for i := 0; i < step.n; i += 50 {
			mustAppend(t, writer, step.stream, countedEvents(i+1, min(50, step.n-i)), nil)
		}
		stepUntilIdle(t, d)
	}
	if _, err := writer.Delete(ctx, "old", &estuite.DeleteOptions{Hard: true}); err != nil {
		t.Fatal(err)
	}
	scavenger := openStore(t, b, nil)
	var st estuite.ScavengeStats
	reqs := requestsOf(scavenger, func() { st = mustScavenge(t, scavenger) })
	t.Logf("scavenge: %+v in %+v requests", st, reqs)
	if st.Removed != 5 || st.Redacted != 5 {
		t.Fatalf("scavenge removed %d and redacted %d, want 5 and 5", st.Removed, st.Redacted)
	}
	// Three runs: per run a lookup (the feed head's page, a marker or two, the progress row) and
	// a query of the page, a feed batch; then the stream-table batch, the head and the work list.
	if n := reqs.Total(); n > 36 {
		t.Fatalf("the pass made %d requests for 3 runs of removed events: it walked the feed's pages", n)
	}
	waiter := openStore(t, b, nil)
	r, err := waiter.Verify(ctx, nil)
	if err != nil || !r.OK() || r.Redacted != 5 {
		t.Fatalf("verify after: %+v %v", r, err)
	}
}
