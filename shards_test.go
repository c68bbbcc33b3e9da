package estuite_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table/mem"
)

// readShard reads a whole feed shard.
func readShard(t *testing.T, s *estuite.Store, shard int, redacted bool) []estuite.FeedEvent {
	t.Helper()
	var out []estuite.FeedEvent
	after := int64(0)
	for {
		p, err := s.ReadFeed(context.Background(), &estuite.FeedOptions{Shard: shard, After: after, IncludeRedacted: redacted})
		if err != nil {
			t.Fatalf("ReadFeed(shard %d): %v", shard, err)
		}
		out = append(out, p.Events...)
		if p.Next == after {
			return out
		}
		after = p.Next
	}
}

// A store with four feed shards: each stream's events go to one shard, each shard is a gapless
// feed of its own with every event of its streams once and in order, written by the dispatcher
// of that shard alone; Verify checks them all; WaitDispatched and the scavenger find events in
// their stream's shard. On every backend.
func TestFeedShards(t *testing.T) {
	for _, b := range eraseBackends {
		t.Run(b.name, func(t *testing.T) {
			defer estuite.SetFeedPageSize(7)()
			ctx := context.Background()
			env := b.open(t)
			s := env.open(t, &estuite.Options{FeedShards: 4})
			if s.FeedShards() != 4 {
				t.Fatalf("FeedShards() = %d", s.FeedShards())
			}
			const streams = 12
			for round := 0; round < 3; round++ {
				for i := 0; i < streams; i++ {
					mustAppend(t, s, fmt.Sprintf("s-%d", i), countedEvents(round*2+1, 2), nil)
				}
			}
			// Shard 0's dispatcher writes shard 0 only: the others' events wait for theirs.
			d0 := estuite.NewDispatcher(s, nil)
			stepUntilIdle(t, d0)
			for shard := 1; shard < 4; shard++ {
				if got := readShard(t, s, shard, false); len(got) != 0 {
					t.Fatalf("shard %d holds %d events before its dispatcher ran", shard, len(got))
				}
			}
			for shard := 1; shard < 4; shard++ {
				stepUntilIdle(t, estuite.NewDispatcher(s, &estuite.DispatcherOptions{Shard: shard}))
			}
			seen := map[string][]int64{}
			total := 0
			for shard := 0; shard < 4; shard++ {
				evs := readShard(t, s, shard, false)
				total += len(evs)
				for i, e := range evs {
					if e.Position != int64(i+1) || e.Shard != shard {
						t.Fatalf("shard %d entry %d: position %d, shard %d", shard, i, e.Position, e.Shard)
					}
					if prev, ok := seen[e.Stream]; ok && len(prev) > 0 && prev[0] != int64(shard) {
						t.Fatalf("stream %s in shards %d and %d", e.Stream, prev[0], shard)
					}
					if len(seen[e.Stream]) == 0 {
						seen[e.Stream] = []int64{int64(shard)}
					}
					seen[e.Stream] = append(seen[e.Stream], e.Version)
				}
			}
			if total != streams*6 || len(seen) != streams {
				t.Fatalf("the shards hold %d events of %d streams, want %d of %d", total, len(seen), streams*6, streams)
			}
			used := map[int64]bool{}
			for stream, vs := range seen {
				used[vs[0]] = true
				for i, v := range vs[1:] {
					if v != int64(i+1) {
						t.Fatalf("%s versions in its shard: %v", stream, vs[1:])
					}
				}
			}
			if len(used) < 3 {
				t.Fatalf("12 streams spread over %d shards only", len(used))
			}
			r, err := s.Verify(ctx, nil)
			if err != nil || !r.OK() || r.FeedHead != streams*6 || len(r.FeedHeads) != 4 {
				t.Fatalf("Verify: %+v, %v", r, err)
			}
			// WaitDispatched answers the position in the stream's shard.
			other := env.open(t, nil)
			if other.FeedShards() != 4 {
				t.Fatalf("reopened with FeedShards 0: %d shards", other.FeedShards())
			}
			pos, err := other.WaitDispatched(ctx, "s-5", 3)
			shard := int(seen["s-5"][0])
			evs := readShard(t, s, shard, false)
			if err != nil || pos < 1 || pos > int64(len(evs)) || evs[pos-1].Stream != "s-5" || evs[pos-1].Version != 3 {
				t.Fatalf("WaitDispatched(s-5, 3) = %d, %v", pos, err)
			}
			// The scavenger redacts in the stream's shard.
			if _, err := s.Delete(ctx, "s-5", &estuite.DeleteOptions{Hard: true}); err != nil {
				t.Fatal(err)
			}
			if st := mustScavenge(t, s); st.Removed != 6 || st.Redacted != 6 {
				t.Fatalf("scavenge: %+v", st)
			}
			redacted := 0
			for _, e := range readShard(t, s, shard, true) {
				if e.Redacted {
					redacted++
				}
			}
			if redacted != 6 {
				t.Fatalf("shard %d holds %d redacted entries, want 6", shard, redacted)
			}
			if r, err := s.Verify(ctx, nil); err != nil || !r.OK() || r.Redacted != 6 {
				t.Fatalf("Verify after the scavenge: %+v, %v", r, err)
			}
			// Bad shards are refused.
			if _, err := s.ReadFeed(ctx, &estuite.FeedOptions{Shard: 4}); !errors.Is(err, estuite.ErrInvalidInput) {
				t.Fatalf("ReadFeed(shard 4): %v", err)
			}
			if _, err := estuite.NewDispatcher(s, &estuite.DispatcherOptions{Shard: -1}).Step(ctx); !errors.Is(err, estuite.ErrInvalidInput) {
				t.Fatalf("Step(shard -1): %v", err)
			}
			if _, err := s.FeedHead(ctx); !errors.Is(err, estuite.ErrInvalidInput) {
				t.Fatalf("FeedHead of a sharded store: %v", err)
			}
		})
	}
}

// A store's shard count is fixed when it is created: another count is refused, and a store with
// streams under one shard cannot take more.
func TestFeedShardsAreFixed(t *testing.T) {
	ctx := context.Background()
	b := mem.New(nil)
	s4, err := estuite.Open(ctx, b, &estuite.Options{FeedShards: 4})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := estuite.Open(ctx, b, &estuite.Options{FeedShards: 2}); !errors.Is(err, estuite.ErrInvalidInput) {
		t.Fatalf("Open with 2 shards of a 4-shard store: %v", err)
	}
	if _, err := estuite.Open(ctx, b, &estuite.Options{FeedShards: 1}); !errors.Is(err, estuite.ErrInvalidInput) {
		t.Fatalf("Open with 1 shard of a 4-shard store: %v", err)
	}
	_ = s4
	one := openStore(t, mem.New(nil), nil)
	mustAppend(t, one, "x", countedEvents(1, 1), nil)
	if _, err := estuite.Open(ctx, one.Backend(), &estuite.Options{FeedShards: 4}); !errors.Is(err, estuite.ErrInvalidInput) {
		t.Fatalf("Open with 4 shards of a one-shard store with streams: %v", err)
	}
	if _, err := estuite.Open(ctx, mem.New(nil), &estuite.Options{FeedShards: estuite.MaxFeedShards + 1}); !errors.Is(err, estuite.ErrInvalidInput) {
		t.Fatalf("Open with too many shards: %v", err)
	}
}

// A durable subscription follows one shard and keeps its checkpoint per shard.
func TestSubscriptionPerShard(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, mem.New(nil), &estuite.Options{FeedShards: 3})
	for i := 0; i < 9; i++ {
		mustAppend(t, s, fmt.Sprintf("t-%d", i), countedEvents(1, 2), nil)
	}
	for shard := 0; shard < 3; shard++ {
		stepUntilIdle(t, estuite.NewDispatcher(s, &estuite.DispatcherOptions{Shard: shard}))
	}
	got := map[int]int{}
	for shard := 0; shard < 3; shard++ {
		want := len(readShard(t, s, shard, false))
		done := make(chan struct{})
		n := 0
		sub, err := s.Subscribe(ctx, estuite.SubscriptionOptions{Name: "proj", Shard: shard, Handler: func(_ context.Context, e estuite.FeedEvent) error {
			if e.Shard != shard {
				t.Errorf("shard %d subscription got an event of shard %d", shard, e.Shard)
			}
			if n++; n == want {
				close(done)
			}
			return nil
		}})
		if err != nil {
			t.Fatal(err)
		}
		if want > 0 {
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("shard %d: %d of %d events handled", shard, n, want)
			}
		}
		if err := sub.Stop(); err != nil {
			t.Fatal(err)
		}
		got[shard] = want
	}
	cps, err := s.Checkpoints(ctx, 0)
	if err != nil || len(cps) != 3 {
		t.Fatalf("Checkpoints: %+v, %v", cps, err)
	}
	for _, c := range cps {
		if c.Name != "proj" || c.Position != int64(got[c.Shard]) {
			t.Fatalf("checkpoint %+v, want position %d", c, got[c.Shard])
		}
	}
}

// ReadMerged reads every shard into one sequence: each event once, each shard in position order,
// and — the feed being complete when it reads — by recorded time across shards; its cursor
// survives its text form. With one shard it reads what ReadFeed reads.
func TestReadMergedAcrossShards(t *testing.T) {
	ctx := context.Background()
	var tick atomic.Int64
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := func() time.Time { return base.Add(time.Duration(tick.Add(1)) * time.Millisecond) }
	for _, shards := range []int{1, 3} {
		s := openStore(t, mem.New(nil), &estuite.Options{FeedShards: shards, Now: now})
		for round := range 4 {
			for i := range 7 {
				mustAppend(t, s, fmt.Sprintf("m-%d", i), countedEvents(round+1, 1), nil)
			}
		}
		for shard := range shards {
			stepUntilIdle(t, estuite.NewDispatcher(s, &estuite.DispatcherOptions{Shard: shard}))
		}
		var got []estuite.FeedEvent
		var cursor estuite.FeedCursor
		for pages := 0; pages < 20; pages++ {
			p, err := s.ReadMerged(ctx, &estuite.MergedFeedOptions{After: cursor, Limit: 5})
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Events) == 0 {
				break
			}
			got = append(got, p.Events...)
			if cursor, err = estuite.ParseFeedCursor(p.Next.String(), shards); err != nil {
				t.Fatalf("cursor %q: %v", p.Next, err)
			}
		}
		if len(got) != 28 {
			t.Fatalf("%d shards: merged %d events, want 28", shards, len(got))
		}
		lastPos := map[int]int64{}
		latest := map[int]time.Time{}
		var prevKey time.Time
		seen := map[string]bool{}
		for i, e := range got {
			if e.Position <= lastPos[e.Shard] {
				t.Fatalf("%d shards: shard %d position %d after %d", shards, e.Shard, e.Position, lastPos[e.Shard])
			}
			lastPos[e.Shard] = e.Position
			key := fmt.Sprint(e.Stream, e.Version)
			if seen[key] {
				t.Fatalf("%s twice", key)
			}
			seen[key] = true
			// Across shards, by commit time: each shard's latest recorded time so far (its
			// own order is by position) never goes back from one merged event to the next.
			if e.RecordedAt.After(latest[e.Shard]) {
				latest[e.Shard] = e.RecordedAt
			}
			if i > 0 && latest[e.Shard].Before(prevKey) {
				t.Fatalf("%d shards: event %d (shard %d, commit time up to %v) after one of %v", shards, i, e.Shard, latest[e.Shard], prevKey)
			}
			prevKey = latest[e.Shard]
		}
		if shards == 1 {
			all := readShard(t, s, 0, false)
			for i := range all {
				if all[i].Position != got[i].Position {
					t.Fatalf("one shard: merged position %d where ReadFeed has %d", got[i].Position, all[i].Position)
				}
			}
		}
	}
	s := openStore(t, mem.New(nil), &estuite.Options{FeedShards: 2})
	for _, bad := range []string{"1", "1.2.3", "1.-2", "1.x", "01.2"} {
		if _, err := estuite.ParseFeedCursor(bad, 2); !errors.Is(err, estuite.ErrInvalidInput) {
			t.Errorf("ParseFeedCursor(%q): %v", bad, err)
		}
	}
	if _, err := s.ReadMerged(ctx, &estuite.MergedFeedOptions{After: estuite.FeedCursor{1}}); !errors.Is(err, estuite.ErrInvalidInput) {
		t.Errorf("ReadMerged with a cursor of the wrong length: %v", err)
	}
}

// A marker in another shard's partitions — written by a process that opened the store with one
// shard, before its count was recorded, or by an earlier release — is moved to the stream's
// shard and dispatched there, never into the shard whose partitions it was found in; and Verify
// reports a feed row in the wrong shard.
func TestMisplacedMarkersAreMovedToTheirShard(t *testing.T) {
	ctx := context.Background()
	b := mem.New(nil)
	stale := openStore(t, b, nil) // opens an empty store: one shard, as far as it knows
	sharded := openStore(t, b, &estuite.Options{FeedShards: 4})
	if stale.FeedShards() != 1 || sharded.FeedShards() != 4 {
		t.Fatalf("shards %d and %d", stale.FeedShards(), sharded.FeedShards())
	}
	for i := range 8 {
		mustAppend(t, stale, fmt.Sprintf("s-%d", i), countedEvents(1, 1), nil) // markers in shard 0's partitions
	}
	for range 2 { // shard 0 first moves the others' markers, then every shard dispatches its own
		for shard := range 4 {
			stepUntilIdle(t, estuite.NewDispatcher(sharded, &estuite.DispatcherOptions{Shard: shard}))
		}
	}
	total := 0
	for shard := range 4 {
		for _, e := range readShard(t, sharded, shard, false) {
			total++
			if got := feedShardOfStream(t, sharded, e.Stream); got != shard {
				t.Fatalf("%s is in shard %d; its shard is %d", e.Stream, shard, got)
			}
		}
	}
	if total != 8 {
		t.Fatalf("the shards hold %d events, want 8", total)
	}
	if r, err := sharded.Verify(ctx, nil); err != nil || !r.OK() {
		t.Fatalf("Verify: %+v, %v", r, err)
	}
	// The stale process's own dispatcher puts everything into shard 0: Verify says so.
	victim := ""
	for i := range 8 {
		if name := fmt.Sprintf("s-%d", i); feedShardOfStream(t, sharded, name) != 0 {
			victim = name
			break
		}
	}
	mustAppend(t, stale, victim, countedEvents(2, 1), nil)
	stepUntilIdle(t, estuite.NewDispatcher(stale, nil))
	r, err := sharded.Verify(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.OrderViolations) == 0 || r.OrderViolations[0].Stream != victim {
		t.Fatalf("%s's event in shard 0's feed went unreported: %+v", victim, r)
	}
}

// feedShardOfStream finds the shard whose feed holds the stream's first version.
func feedShardOfStream(t *testing.T, s *estuite.Store, stream string) int {
	t.Helper()
	pos, err := s.WaitDispatched(context.Background(), stream, 1)
	if err != nil || pos < 1 {
		t.Fatalf("WaitDispatched(%s, 1) = %d, %v", stream, pos, err)
	}
	for shard := range s.FeedShards() {
		for _, e := range readShard(t, s, shard, false) {
			if e.Stream == stream && e.Version == 1 {
				return shard
			}
		}
	}
	t.Fatalf("%s version 1 in no shard", stream)
	return -1
}
