package estuite_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/mem"
)

// eventRowVersions lists the versions of a stream's event rows as stored.
func eventRowVersions(t *testing.T, s *estuite.Store, b table.Backend, stream string) []int64 {
	t.Helper()
	tbl := s.StreamTable()
	var out []int64
	q := table.Query{PartitionKey: stream, From: "E", To: "F"}
	for {
		p, err := tbl.Query(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		for _, row := range p.Entities {
			v, _ := row.Properties["Version"].(int64)
			out = append(out, v)
		}
		if p.Continuation == "" {
			return out
		}
		q.Continuation = p.Continuation
	}
}

// forEachBackendWithTables is forEachBackend with the store's backend, to look at raw rows.
func forEachBackendWithTables(t *testing.T, f func(t *testing.T, s *estuite.Store, b table.Backend)) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) { f(t, s, s.Backend()) })
}

func mustScavenge(t *testing.T, s *estuite.Store) estuite.ScavengeStats {
	t.Helper()
	st, err := s.Scavenge(context.Background())
	if err != nil {
		t.Fatalf("Scavenge: %v", err)
	}
	return st
}

// The scavenger removes a soft-deleted stream's old events from both tables once the feed holds
// them, leaving redacted entries at their positions: the feed stays gapless, reads pass over
// them, and a second pass has nothing to do.
func TestScavengeRemovesDeletedEventsAndRedactsTheFeed(t *testing.T) {
	forEachBackendWithTables(t, func(t *testing.T, s *estuite.Store, b table.Backend) {
		ctx := context.Background()
		appendN(t, s, "cart", 3)
		appendN(t, s, "other", 2)
		if _, err := s.Delete(ctx, "cart", nil); err != nil {
			t.Fatal(err)
		}
		// Not in the feed yet: nothing may be removed.
		if st := mustScavenge(t, s); st.Removed != 0 || st.Waiting != 3 {
			t.Fatalf("scavenge before dispatch = %+v; want 3 waiting, none removed", st)
		}
		mustAppend(t, s, "cart", []estuite.EventData{jsonEvent("Recreated", "{}")}, &estuite.AppendOptions{Expected: estuite.NoStream})
		d := estuite.NewDispatcher(s, nil)
		stepUntilIdle(t, d)
		if st := mustScavenge(t, s); st.Removed != 3 || st.Redacted != 3 || st.Waiting != 0 {
			t.Fatalf("scavenge = %+v; want 3 removed and redacted", st)
		}
		if got := eventRowVersions(t, s, b, "cart"); len(got) != 1 || got[0] != 4 {
			t.Fatalf("cart's event rows after scavenging: %v; want version 4 alone", got)
		}
		if _, events := readAll(t, s, "cart", nil); !sameVersions(events, 4) {
			t.Fatalf("read after scavenging: %v", versions(events))
		}
		page, err := s.ReadFeed(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Events) != 3 || page.Next != 6 {
			t.Fatalf("feed: %d events, next %d; want other's 2 and cart's version 4, next 6", len(page.Events), page.Next)
		}
		for _, e := range page.Events {
			if e.Redacted || e.Stream == "cart" && e.Version != 4 {
				t.Fatalf("feed read returned %+v", e)
			}
		}
		with, err := s.ReadFeed(ctx, &estuite.FeedOptions{IncludeRedacted: true, Types: []string{"none"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(with.Events) != 3 {
			t.Fatalf("feed with redacted entries: %d; want the 3 of cart", len(with.Events))
		}
		for _, e := range with.Events {
			if !e.Redacted || e.Stream != "" || e.Type != "" || e.Data != nil || e.Version != 0 || e.Position < 1 {
				t.Fatalf("a redacted entry carries more than its position: %+v", e)
			}
		}
		if st := mustScavenge(t, s); st.Removed != 0 || st.Redacted != 0 || st.Streams != 0 {
			t.Fatalf("second scavenge = %+v; want nothing on the list", st)
		}
		if r, err := s.Verify(ctx, nil); err != nil || !r.OK() {
			t.Fatalf("Verify after scavenging: %+v, %v", r, err)
		}
	})
}

// Retention by count keeps its work row: each pass removes what appends pushed out since. Once
// removed, events stay hidden even when the retention is lifted.
func TestScavengeFollowsMaxCount(t *testing.T) {
	forEachBackendWithTables(t, func(t *testing.T, s *estuite.Store, b table.Backend) {
		ctx := context.Background()
		appendN(t, s, "log", 5)
		if _, err := s.SetMetadata(ctx, "log", estuite.StreamMetadata{MaxCount: ptr(int64(2))}, estuite.AnyMetadataVersion); err != nil {
			t.Fatal(err)
		}
		d := estuite.NewDispatcher(s, nil)
		stepUntilIdle(t, d)
		if st := mustScavenge(t, s); st.Removed != 3 {
			t.Fatalf("scavenge = %+v; want 3 removed", st)
		}
		appendN(t, s, "log", 2)
		stepUntilIdle(t, d)
		if st := mustScavenge(t, s); st.Removed != 2 || st.Streams != 1 {
			t.Fatalf("second scavenge = %+v; want the 2 pushed out", st)
		}
		if got := eventRowVersions(t, s, b, "log"); len(got) != 2 || got[0] != 6 {
			t.Fatalf("event rows: %v; want 6 and 7", got)
		}
		// Lifting the retention shows what was hidden and not removed; removed events stay gone.
		if _, err := s.SetMetadata(ctx, "log", estuite.StreamMetadata{}, estuite.AnyMetadataVersion); err != nil {
			t.Fatal(err)
		}
		if _, events := readAll(t, s, "log", nil); !sameVersions(events, 6, 7) {
			t.Fatalf("after lifting the retention: %v; want 6 and 7", versions(events))
		}
		if r, err := s.Verify(ctx, nil); err != nil || !r.OK() {
			t.Fatalf("Verify: %+v, %v", r, err)
		}
	})
}

// A hard-deleted stream loses every event row and its snapshot; subscriptions pass over the
// redacted entries, or receive them when they ask.
func TestScavengeAfterAHardDelete(t *testing.T) {
	forEachBackendWithTables(t, func(t *testing.T, s *estuite.Store, b table.Backend) {
		ctx := context.Background()
		appendN(t, s, "gone", 2)
		mustAppend(t, s, "gone", []estuite.EventData{jsonEvent("E", "{}")}, &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Schema: 1, Data: []byte(`{}`)}})
		appendN(t, s, "kept", 1)
		if _, err := s.Delete(ctx, "gone", &estuite.DeleteOptions{Hard: true}); err != nil {
			t.Fatal(err)
		}
		stepUntilIdle(t, estuite.NewDispatcher(s, nil))
		if st := mustScavenge(t, s); st.Removed != 3 {
			t.Fatalf("scavenge = %+v", st)
		}
		if got := eventRowVersions(t, s, b, "gone"); len(got) != 0 {
			t.Fatalf("event rows left: %v", got)
		}
		if _, err := s.StreamTable().Get(ctx, "gone", "D"); err == nil || !strings.Contains(err.Error(), "not found") {
			t.Fatalf("the snapshot of a hard-deleted stream is still there: %v", err)
		}
		for _, include := range []bool{false, true} {
			var got []estuite.FeedEvent
			caught := make(chan int64, 10)
			sub, err := s.Subscribe(ctx, estuite.SubscriptionOptions{IncludeRedacted: include, Handler: func(_ context.Context, ev estuite.FeedEvent) error {
				got = append(got, ev)
				return nil
			}, CaughtUp: func(p int64) { caught <- p }})
			if err != nil {
				t.Fatal(err)
			}
			for p := range caught {
				if p >= 4 {
					break
				}
			}
			sub.Stop()
			want := 1
			if include {
				want = 4
			}
			if len(got) != want {
				t.Fatalf("subscription (redacted %v) handled %d entries; want %d", include, len(got), want)
			}
		}
	})
}

// A pass that fails half-way — the feed redacted, the stream rows not yet deleted — is finished
// by the next one, and Verify sees nothing wrong in between or after.
func TestScavengeResumesAfterAFailure(t *testing.T) {
	ctx := context.Background()
	var failDeletes atomic.Bool
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if failDeletes.Load() && c.Method == mem.MethodSubmit && c.Table == "estuitestreams" && len(c.Ops) > 0 && c.Ops[0].Kind == table.Delete {
			return mem.FailBefore
		}
		return mem.NoFault
	}})
	s := openStore(t, b, &estuite.Options{Retry: estuite.RetryPolicy{MaxAttempts: 1}})
	appendN(t, s, "half", 4)
	if _, err := s.Delete(ctx, "half", &estuite.DeleteOptions{Hard: true}); err != nil {
		t.Fatal(err)
	}
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	failDeletes.Store(true)
	if _, err := s.Scavenge(ctx); err == nil {
		t.Fatal("a scavenge whose deletes failed reported success")
	}
	if r, err := s.Verify(ctx, nil); err != nil || !r.OK() || r.Redacted != 4 {
		t.Fatalf("Verify half-way: %+v, %v; want OK with 4 redacted", r, err)
	}
	failDeletes.Store(false)
	if st := mustScavenge(t, s); st.Removed != 4 || st.Redacted != 0 {
		t.Fatalf("resumed scavenge = %+v; want the 4 rows deleted, nothing redacted again", st)
	}
	if got := eventRowVersions(t, s, b, "half"); len(got) != 0 {
		t.Fatalf("rows left: %v", got)
	}
	if r, err := s.Verify(ctx, nil); err != nil || !r.OK() || r.Redacted != 4 {
		t.Fatalf("Verify after: %+v, %v", r, err)
	}
}

// Verify tells redaction from loss: a redacted entry of an event a read still returns is a
// finding.
func TestVerifyFindsAWrongRedaction(t *testing.T) {
	ctx := context.Background()
	b := mem.New(nil)
	s := openStore(t, b, nil)
	appendN(t, s, "kept", 2)
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	feed, err := b.OpenTable(ctx, "estuiteevents")
	if err != nil {
		t.Fatal(err)
	}
	page, err := feed.Scan(ctx, table.ScanQuery{FromPartition: "feed", ToPartition: "feee"})
	if err != nil {
		t.Fatal(err)
	}
	var row table.Entity
	for _, r := range page.Entities {
		if r.Properties["Version"] == int64(1) {
			row = r
		}
	}
	redacted := table.Entity{PartitionKey: row.PartitionKey, RowKey: row.RowKey, Properties: map[string]any{
		"Position": row.Properties["Position"], "Stream": "kept", "Version": int64(1), "Redacted": true}}
	if _, err := feed.Submit(ctx, row.PartitionKey, []table.Op{{Kind: table.Replace, Entity: redacted, IfMatch: table.AnyETag}}); err != nil {
		t.Fatal(err)
	}
	r, err := s.Verify(ctx, nil)
	if err != nil || r.OK() || len(r.WrongRedactions) != 1 || r.WrongRedactions[0] != (estuite.StreamRange{Stream: "kept", From: 1, To: 1}) {
		t.Fatalf("Verify = %+v, %v; want the wrong redaction of kept version 1", r, err)
	}
}

// A pass costs in proportion to what it removes: a few requests per stream on the work list and
// per chunk of 100 removed events, whatever else the store holds.
func TestScavengeCostIsProportionalToWhatItRemoves(t *testing.T) {
	ctx := context.Background()
	cost := func(n int) int64 {
		s := openStore(t, mem.New(nil), nil)
		for i := 0; i < 30; i++ {
			appendN(t, s, "bystander-"+string(rune('a'+i%26))+string(rune('a'+i/26)), 5)
		}
		for done := 0; done < n; done += 90 {
			events := make([]estuite.EventData, min(90, n-done))
			for i := range events {
				events[i] = jsonEvent("E", "{}")
			}
			mustAppend(t, s, "big", events, nil)
		}
		if _, err := s.Delete(ctx, "big", &estuite.DeleteOptions{Hard: true}); err != nil {
			t.Fatal(err)
		}
		stepUntilIdle(t, estuite.NewDispatcher(s, nil))
		before := s.RequestCounts()
		if st := mustScavenge(t, s); st.Removed != n {
			t.Fatalf("scavenge removed %d; want %d", st.Removed, n)
		}
		return s.RequestCounts().Sub(before).Total()
	}
	one, three := cost(90), cost(270)
	t.Logf("a pass removing 90 events: %d requests; 270 events: %d", one, three)
	if one > 20 || three-one > 2*12 {
		t.Fatalf("a pass removing 90 events made %d requests, 270 events %d; want at most 20, and at most 12 more per 100 events", one, three)
	}
}

// The dispatcher's lease holder scavenges in the background.
func TestLeaseHolderScavenges(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, mem.New(nil), nil)
	appendN(t, s, "bg", 3)
	if _, err := s.Delete(ctx, "bg", nil); err != nil {
		t.Fatal(err)
	}
	passes := make(chan estuite.ScavengeStats, 100)
	d := estuite.NewDispatcher(s, &estuite.DispatcherOptions{PollInterval: 5 * time.Millisecond, ScavengeInterval: 10 * time.Millisecond,
		OnScavenge: func(st estuite.ScavengeStats, err error) {
			if err == nil {
				select {
				case passes <- st:
				default:
				}
			}
		}})
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	deadline := time.After(10 * time.Second)
	for removed := 0; removed < 3; {
		select {
		case st := <-passes:
			removed += st.Removed
		case <-deadline:
			t.Fatal("the lease holder did not scavenge the deleted events within 10 s")
		}
	}
}

// A dispatcher whose view of the feed is older than another's writes, meeting rows the scavenger
// removed, reads the feed's page again instead of taking them for lost.
func TestOutOfDateDispatcherMeetsScavengedRows(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, mem.New(nil), nil)
	appendN(t, s, "warm", 1)
	stale := estuite.NewDispatcher(s, nil)
	stepUntilIdle(t, stale) // it knows the feed's page as it is now
	appendN(t, s, "x", 5)
	stepUntilIdle(t, estuite.NewDispatcher(s, nil)) // another dispatcher writes them
	if _, err := s.Delete(ctx, "x", nil); err != nil {
		t.Fatal(err)
	}
	if st := mustScavenge(t, s); st.Removed != 5 {
		t.Fatalf("scavenge = %+v", st)
	}
	mustAppend(t, s, "x", []estuite.EventData{jsonEvent("Again", "{}"), jsonEvent("Again", "{}")}, &estuite.AppendOptions{Expected: estuite.NoStream})
	for i := 0; i < 5; i++ {
		st, err := stale.Step(ctx)
		if err != nil {
			t.Fatalf("step %d of the out-of-date dispatcher: %v", i+1, err)
		}
		if st.Streams == 0 {
			break
		}
	}
	feed := readFeedAll(t, s)
	if len(feed) != 3 || feed[1].Version != 6 || feed[2].Version != 7 {
		t.Fatalf("feed (without the redacted entries): %d events; want warm 1, x 6 and 7", len(feed))
	}
	if r, err := s.Verify(ctx, nil); err != nil || !r.OK() {
		t.Fatalf("Verify: %+v, %v", r, err)
	}
}

// A read paging through a stream while a scavenger removes its first events passes over what was
// removed instead of reporting the stream corrupt.
func TestReadRacingTheScavenger(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, mem.New(&mem.Options{PageSize: 3}), nil)
	for i := 0; i < 4; i++ {
		appendN(t, s, "long", 300) // longer than a first query's page, so the read pages on
	}
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	r, err := s.Read(ctx, "long", &estuite.ReadOptions{PageBytes: 1})
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for e, err := range r.Events {
		if err != nil {
			t.Fatalf("after versions %v…: %v", got[:min(len(got), 3)], err)
		}
		got = append(got, e.Version)
		if len(got) == 2 {
			if _, err := s.SetMetadata(ctx, "long", estuite.StreamMetadata{TruncateBefore: ptr(int64(1000))}, estuite.AnyMetadataVersion); err != nil {
				t.Fatal(err)
			}
			if st := mustScavenge(t, s); st.Removed != 999 {
				t.Fatalf("scavenge = %+v", st)
			}
		}
	}
	if len(got) < 3 || got[len(got)-1] != 1200 {
		t.Fatalf("the read returned %d events, the last %d; want it to end at 1200", len(got), got[len(got)-1])
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("versions out of order: %d after %d", got[i], got[i-1])
		}
	}
}

// A stream with retention stays on the work list, but a pass that finds nothing new hidden since
// the last one reads its head and no more; appends past maxCount give it work again, and so does
// time passing maxAge.
func TestScavengeIdleRetentionStreamCostsOneRead(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	s := openStore(t, mem.New(nil), &estuite.Options{Now: func() time.Time { return time.Unix(0, clock.Load()).UTC() }})
	appendN(t, s, "counted", 5)
	appendN(t, s, "aged", 3)
	if _, err := s.SetMetadata(ctx, "counted", estuite.StreamMetadata{MaxCount: ptr(int64(2))}, estuite.AnyMetadataVersion); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetMetadata(ctx, "aged", estuite.StreamMetadata{MaxAge: ptr(time.Minute)}, estuite.AnyMetadataVersion); err != nil {
		t.Fatal(err)
	}
	d := estuite.NewDispatcher(s, nil)
	stepUntilIdle(t, d)
	if st := mustScavenge(t, s); st.Removed != 3 {
		t.Fatalf("first pass removed %d, want 3 (counted 1-3)", st.Removed)
	}
	for i := 0; i < 2; i++ {
		var st estuite.ScavengeStats
		reqs := requestsOf(s, func() { st = mustScavenge(t, s) })
		t.Logf("idle pass %d: %+v in %+v", i+1, st, reqs)
		// The work list query, and per stream a head read.
		if st.Removed != 0 || st.Streams != 2 || reqs.Total() != 3 {
			t.Fatalf("idle pass %d: %+v in %d requests, want nothing removed in 3 (a list query, two head reads)", i+1, st, reqs.Total())
		}
	}
	appendN(t, s, "counted", 2)
	stepUntilIdle(t, d)
	if st := mustScavenge(t, s); st.Removed != 2 {
		t.Fatalf("after appends past maxCount the pass removed %d, want 2", st.Removed)
	}
	clock.Add(int64(time.Minute + time.Hour + time.Second)) // past maxAge and the scavenger's margin
	if st := mustScavenge(t, s); st.Removed != 3 {
		t.Fatalf("after maxAge passed the pass removed %d, want 3", st.Removed)
	}
	for _, stream := range []string{"counted", "aged"} {
		t.Logf("%s rows: %v", stream, eventRowVersions(t, s, nil, stream))
	}
}

// A stream whose retention is taken away leaves the work list at the next pass, though the pass
// before recorded how far it got.
func TestScavengeRetentionRemovedLeavesTheWorkList(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, mem.New(nil), nil)
	appendN(t, s, "r", 4)
	if _, err := s.SetMetadata(ctx, "r", estuite.StreamMetadata{MaxCount: ptr(int64(2))}, estuite.AnyMetadataVersion); err != nil {
		t.Fatal(err)
	}
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	mustScavenge(t, s)
	mustScavenge(t, s)
	if _, err := s.SetMetadata(ctx, "r", estuite.StreamMetadata{}, estuite.AnyMetadataVersion); err != nil {
		t.Fatal(err)
	}
	mustScavenge(t, s)
	if st := mustScavenge(t, s); st.Streams != 0 {
		t.Fatalf("a stream without retention is still on the work list: %+v", st)
	}
}
