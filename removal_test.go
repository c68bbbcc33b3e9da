package estuite_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
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

// From a second review: each failed before its fix.

func workRow(t *testing.T, b *mem.Backend) table.Entity {
	t.Helper()
	tbl, err := b.Table("estuiteevents")
	if err != nil {
		t.Fatal(err)
	}
	p, err := tbl.Query(context.Background(), table.Query{PartitionKey: "scavenge"})
	if err != nil || len(p.Entities) != 1 {
		t.Fatalf("work rows: %v, %v", p.Entities, err)
	}
	return p.Entities[0]
}

// A SetMetadata that shortens maxAge upserts the work row, then writes the head. A pass (another
// process) that lists the fresh row and reads the head in between records ScavengedFloor and the
// NextAgeCheck of the OLD maxAge under the fresh row's ETag; the head write then succeeds (the
// pass did not move the head). Later passes skip the stream until the old maxAge's due time.
func TestRemovalReviewShortenedMaxAgeRacingAPassIsIgnored(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	opts := &estuite.Options{Now: func() time.Time { return time.Unix(0, clock.Load()).UTC() }}
	var hook atomic.Pointer[func()]
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if c.Method == mem.MethodSubmit && strings.HasSuffix(c.Table, "streams") && len(c.Ops) == 1 && c.Ops[0].Entity.RowKey == "H" {
			if ma, _ := c.Ops[0].Entity.Properties["MaxAge"].(int64); ma == 60 {
				if f := hook.Swap(nil); f != nil {
					(*f)()
				}
			}
		}
		return mem.NoFault
	}})
	s := openStore(t, b, opts)
	other := openStore(t, b, opts) // another process's scavenger
	appendN(t, s, "aged", 3)
	if _, err := s.SetMetadata(ctx, "aged", estuite.StreamMetadata{MaxAge: ptr(30 * 24 * time.Hour)}, estuite.AnyMetadataVersion); err != nil {
		t.Fatal(err)
	}
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	mustScavenge(t, s)
	clock.Add(int64(2 * time.Hour))
	f := func() {
		t.Logf("racing pass: %+v", mustScavenge(t, other))
		t.Logf("work row then: %v", workRow(t, b).Properties)
	}
	hook.Store(&f)
	if _, err := s.SetMetadata(ctx, "aged", estuite.StreamMetadata{MaxAge: ptr(time.Minute)}, estuite.AnyMetadataVersion); err != nil {
		t.Fatal(err)
	}
	// The events are 2 h old: past maxAge (1 min) plus the scavenger's margin (1 h).
	clock.Add(int64(24 * time.Hour))
	st := mustScavenge(t, s)
	t.Logf("pass a day later: %+v; work row %v; rows %v", st, workRow(t, b).Properties, eventRowVersions(t, s, nil, "aged"))
	if st.Removed != 3 {
		t.Fatalf("a day after maxAge was shortened to a minute the pass removed %d events, want 3", st.Removed)
	}
}

// A maxAge+maxCount stream: a pass before NextAgeCheck whose floor moves by maxCount writes
// NextAgeCheck = the zero time (ageDue is not computed with checkAge false). On Azure that value
// is out of the Edm.DateTime range (from 1601); on mem it makes every later idle pass query the
// events again (checkAge is true for ever, and the skip path never rewrites it).
func TestRemovalReviewNextAgeCheckZeroAfterMaxCountMove(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	b := mem.New(nil)
	s := openStore(t, b, &estuite.Options{Now: func() time.Time { return time.Unix(0, clock.Load()).UTC() }})
	appendN(t, s, "r", 5)
	if _, err := s.SetMetadata(ctx, "r", estuite.StreamMetadata{MaxAge: ptr(24 * time.Hour), MaxCount: ptr(int64(2))}, estuite.AnyMetadataVersion); err != nil {
		t.Fatal(err)
	}
	d := estuite.NewDispatcher(s, nil)
	stepUntilIdle(t, d)
	mustScavenge(t, s)
	t.Logf("after pass 1: %v", workRow(t, b).Properties)
	appendN(t, s, "r", 2)
	stepUntilIdle(t, d)
	mustScavenge(t, s)
	row := workRow(t, b)
	t.Logf("after pass 2: %v", row.Properties)
	for i := 0; i < 2; i++ {
		reqs := requestsOf(s, func() { mustScavenge(t, s) })
		t.Logf("idle pass: %d requests", reqs.Total())
		if reqs.Total() != 2 {
			t.Errorf("idle pass %d: %d requests, want 2 (list, head read)", i, reqs.Total())
		}
	}
	if nac, _ := row.Properties["NextAgeCheck"].(time.Time); nac.Year() < 1601 {
		t.Fatalf("NextAgeCheck written as %v: outside Azure's DateTime range, and always due", nac)
	}
}

// Two dispatchers (a handover, or a Step run by hand next to Start) and a scavenger: twice, the
// other dispatcher writes a maxCount stream's new events and the scavenger removes them between
// this dispatcher's fresh load of the feed page and its read of the stream. Nothing is lost, yet
// the second such step reports a CorruptError ("lost before they were dispatched").
func TestRemovalReviewCheckGoneFiresOnLegitimateRace(t *testing.T) {
	ctx := context.Background()
	var hook atomic.Pointer[func()]
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if c.Method == mem.MethodQuery && strings.HasSuffix(c.Table, "streams") && c.PartitionKey == "x" {
			if f := hook.Swap(nil); f != nil {
				(*f)()
			}
		}
		return mem.NoFault
	}})
	s1 := openStore(t, b, nil)
	s2 := openStore(t, b, nil)
	appendN(t, s1, "x", 1)
	if _, err := s1.SetMetadata(ctx, "x", estuite.StreamMetadata{MaxCount: ptr(int64(1))}, estuite.AnyMetadataVersion); err != nil {
		t.Fatal(err)
	}
	d1 := estuite.NewDispatcher(s1, nil)
	d2 := estuite.NewDispatcher(s2, nil)
	stepUntilIdle(t, d1)
	var stepErr error
	for round := 0; round < 3 && stepErr == nil; round++ {
		appendN(t, s1, "x", 3)
		race := func() {
			if _, err := d2.Step(ctx); err != nil {
				t.Errorf("d2: %v", err)
			}
			t.Logf("round %d scavenge: %+v", round, mustScavenge(t, s2))
		}
		hook.Store(&race)
		st, err := d1.Step(ctx)
		t.Logf("round %d d1 step: %+v, %v", round, st, err)
		stepErr = err
	}
	if stepErr != nil {
		rep, verr := s1.Verify(ctx, nil)
		t.Logf("verify: ok=%v lost=%v missing=%v err=%v", rep != nil && rep.OK(), rep.Lost, rep.Missing, verr)
		t.Fatalf("a legitimate race was reported as corruption: %v", stepErr)
	}
}

// Verify's stream walk reads a stream's event rows, then (next scan page) its head. In between,
// an append lands behind the walk's cursor and a scavenge pass raises the removal floor over the
// new, undispatched events (retention hides them; the scavenger leaves them, Waiting). The walk
// sees the head's floor above rows it never saw, calls them gone, the feed does not hold them
// yet: Verify reports them Lost, though the stream table holds them and the dispatcher writes
// them at its next step.
func TestRemovalReviewVerifyLostWhileRowsExist(t *testing.T) {
	ctx := context.Background()
	var hook atomic.Pointer[func()]
	var scans atomic.Int64
	b := mem.New(&mem.Options{PageSize: 2, Faults: func(c mem.Call) mem.Fault {
		if c.Method == mem.MethodScan && strings.HasSuffix(c.Table, "streams") && scans.Add(1) == 2 {
			if f := hook.Swap(nil); f != nil {
				(*f)()
			}
		}
		return mem.NoFault
	}})
	s := openStore(t, b, nil)
	appendN(t, s, "x", 5)
	if _, err := s.SetMetadata(ctx, "x", estuite.StreamMetadata{MaxCount: ptr(int64(1))}, estuite.AnyMetadataVersion); err != nil {
		t.Fatal(err)
	}
	d := estuite.NewDispatcher(s, nil)
	stepUntilIdle(t, d)
	mustScavenge(t, s)
	race := func() {
		appendN(t, s, "x", 5)
		t.Logf("racing scavenge: %+v", mustScavenge(t, s))
	}
	hook.Store(&race)
	rep, err := s.Verify(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rows now: %v", eventRowVersions(t, s, nil, "x"))
	t.Logf("report: lost=%v pending=%v missing=%v", rep.Lost, rep.Pending, rep.Missing)
	stepUntilIdle(t, d)
	rep2, _ := s.Verify(ctx, nil)
	t.Logf("after dispatch: ok=%v lost=%v", rep2.OK(), rep2.Lost)
	if len(rep.Lost) > 0 {
		t.Fatalf("Verify reports %v lost; the stream table holds them and they are dispatched after", rep.Lost)
	}
}

// A work row whose stream has no head (a metadata change's head write failed): the pass that finds
// nothing to remove must not write a head without a condition — an append that created the
// stream after the pass read the head would be overwritten by a head at version 0 (the
// simulation found it: seed 27, once it had feed shards).
func TestRemovalPassWithoutAHeadNeverOverwritesOne(t *testing.T) {
	ctx := context.Background()
	var writer *estuite.Store
	var failHead, raced atomic.Bool
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if c.Method != mem.MethodSubmit || !strings.HasSuffix(c.Table, "streams") || len(c.Ops) != 1 || c.Ops[0].Entity.RowKey != "H" {
			return mem.NoFault
		}
		if failHead.Load() {
			failHead.Store(false)
			return mem.FailBefore // the delete's head write
		}
		if c.Ops[0].Entity.Properties["MaxCount"] == nil && c.Ops[0].Entity.Properties["Version"] == int64(0) && !raced.Swap(true) {
			mustAppend(t, writer, "new", countedEvents(1, 2), nil) // lands between the pass's head read and its write
		}
		return mem.NoFault
	}})
	s := openStore(t, b, nil)
	writer = openStore(t, b, nil)
	failHead.Store(true)
	if _, err := s.SetMetadata(ctx, "new", estuite.StreamMetadata{MaxCount: ptr(int64(5))}, estuite.AnyMetadataVersion); err == nil {
		t.Fatal("the metadata's head write was to fail")
	}
	mustScavenge(t, s)
	if v, err := writer.Version(ctx, "new"); err != nil || v != 2 {
		t.Fatalf("after the pass the stream is at %d, %v; want 2 (the append that landed meanwhile)", v, err)
	}
}
