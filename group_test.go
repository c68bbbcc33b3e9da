package estuite_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table/mem"
)

// groupLog records what a group's members handled: every delivery, by member, in order.
type groupLog struct {
	mu       sync.Mutex
	byStream map[string][]int64 // stream → versions in the order handled (redeliveries too)
	by       map[string]int     // member → events handled
	busy     map[string]string  // stream → member handling it now
	problems []string
	fail     map[string]int // "stream@version" → failures left to return
}

func newGroupLog() *groupLog {
	return &groupLog{byStream: map[string][]int64{}, by: map[string]int{}, busy: map[string]string{}, fail: map[string]int{}}
}

func (l *groupLog) handler(member string) func(context.Context, estuite.FeedEvent) error {
	return func(ctx context.Context, ev estuite.FeedEvent) error {
		l.mu.Lock()
		if other, ok := l.busy[ev.Stream]; ok {
			l.problems = append(l.problems, fmt.Sprintf("%s@%d handled by %s while %s handles the stream", ev.Stream, ev.Version, member, other))
		}
		key := fmt.Sprintf("%s@%d", ev.Stream, ev.Version)
		if l.fail[key] > 0 {
			l.fail[key]--
			l.mu.Unlock()
			return errors.New("projection refused " + key)
		}
		l.busy[ev.Stream] = member
		l.mu.Unlock()
		time.Sleep(100 * time.Microsecond) // a handler that takes a moment, so that overlaps would show
		l.mu.Lock()
		delete(l.busy, ev.Stream)
		l.byStream[ev.Stream] = append(l.byStream[ev.Stream], ev.Version)
		l.by[member]++
		l.mu.Unlock()
		return nil
	}
}

// check asserts that every stream's versions 1..n were handled, each first delivery after every
// earlier version's, and returns how many deliveries were repeats.
func (l *groupLog) check(t *testing.T, streams map[string]int64) (repeats int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.problems {
		t.Error(p)
	}
	for stream, n := range streams {
		seen := map[int64]bool{}
		for _, v := range l.byStream[stream] {
			if seen[v] {
				repeats++
				continue
			}
			if v > 1 && !seen[v-1] {
				t.Errorf("%s: version %d handled before version %d (order %v)", stream, v, v-1, l.byStream[stream])
			}
			seen[v] = true
		}
		if int64(len(seen)) != n {
			t.Errorf("%s: %d of %d versions handled", stream, len(seen), n)
		}
	}
	return repeats
}

func (l *groupLog) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, vs := range l.byStream {
		n += len(vs)
	}
	return n
}

// allHandled reports whether streams crash-0..n-1 have had versions 1..v handled.
func allHandled(l *groupLog, n int, v int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range n {
		seen := map[int64]bool{}
		for _, x := range l.byStream[fmt.Sprintf("crash-%d", i)] {
			seen[x] = true
		}
		if int64(len(seen)) < v {
			return false
		}
	}
	return true
}

func groupWait(t *testing.T, what string, ok func() bool) {
	within := 20 * time.Second
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func fastGroup(name, member string, h func(context.Context, estuite.FeedEvent) error) estuite.GroupOptions {
	return estuite.GroupOptions{Group: name, Member: member, Handler: h, LeaseDuration: 300 * time.Millisecond,
		PollInterval: 5 * time.Millisecond, MaxPollInterval: 20 * time.Millisecond, CheckpointInterval: 20 * time.Millisecond,
		RetryBackoff: time.Millisecond, MaxRetryBackoff: 2 * time.Millisecond}
}

func join(t *testing.T, s *estuite.Store, o estuite.GroupOptions) *estuite.GroupMember {
	t.Helper()
	m, err := s.JoinGroup(context.Background(), o)
	if err != nil {
		t.Fatalf("JoinGroup(%s): %v", o.Member, err)
	}
	return m
}

func TestConsumerGroupSplitsSlotsAndKeepsStreamOrder(t *testing.T) {
	for _, shards := range []int{1, 4} {
		t.Run(fmt.Sprintf("shards=%d", shards), func(t *testing.T) {
			b := mem.New(nil)
			s := openStore(t, b, &estuite.Options{FeedShards: shards})
			g := estuite.NewDispatchGroup(s, &estuite.DispatcherOptions{PollInterval: 5 * time.Millisecond, ScavengeInterval: -1})
			if err := g.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer g.Stop()
			log := newGroupLog()
			streams := map[string]int64{}
			write := func(rounds int) {
				for r := 0; r < rounds; r++ {
					for i := range 12 {
						stream := fmt.Sprintf("order-%d", i)
						mustAppend(t, s, stream, countedEvents(int(streams[stream])+1, 2), nil)
						streams[stream] += 2
					}
				}
			}
			write(3)
			a := join(t, s, fastGroup("projection", "a", log.handler("a")))
			// A second member in a process of its own (another Store on the same tables).
			other := openStore(t, b, nil)
			bm := join(t, other, fastGroup("projection", "b", log.handler("b")))
			groupWait(t, "the slots split 4/4", func() bool {
				return len(a.Slots()) == 4 && len(bm.Slots()) == 4
			})
			write(3)
			groupWait(t, "every event handled", func() bool { return log.total() >= 144 })
			if repeats := log.check(t, streams); repeats != 0 {
				t.Errorf("%d redeliveries without a crash", repeats)
			}
			log.mu.Lock()
			if log.by["a"] == 0 || log.by["b"] == 0 {
				t.Errorf("work not shared: %v", log.by)
			}
			log.mu.Unlock()
			// b leaves cleanly: a takes every slot, from b's checkpoints, and nothing is redelivered.
			if err := bm.Stop(); err != nil {
				t.Fatal(err)
			}
			groupWait(t, "a holding all 8 slots", func() bool { return len(a.Slots()) == 8 })
			write(2)
			groupWait(t, "every event handled", func() bool { return log.total() >= 192 })
			time.Sleep(50 * time.Millisecond)
			if repeats := log.check(t, streams); repeats != 0 {
				t.Errorf("%d redeliveries after a clean leave", repeats)
			}
			if st := a.Stats(); st.Redelivered != 0 || st.Handled == 0 {
				t.Errorf("stats %+v", st)
			}
			state, err := s.GroupState(context.Background(), "projection")
			if err != nil {
				t.Fatal(err)
			}
			if len(state.Slots) != 8 || state.Shards != shards || state.Ranges != 8/shards {
				t.Fatalf("state %+v", state)
			}
			if err := a.Stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestConsumerGroupTakesOverACrashedMembersSlots(t *testing.T) {
	b := mem.New(nil)
	s := openStore(t, b, nil)
	startDispatcher(t, s)
	log := newGroupLog()
	for i := range 8 {
		mustAppend(t, s, fmt.Sprintf("crash-%d", i), countedEvents(1, 3), nil)
	}
	crashed := openStore(t, b, nil)
	handle := log.handler("doomed")
	var dead atomic.Bool
	o := fastGroup("g", "doomed", func(ctx context.Context, ev estuite.FeedEvent) error {
		err := handle(ctx, ev)
		if ev.Stream == "crash-5" && ev.Version == 2 {
			// The process dies as the handler returns: the store goes away under the member, so it
			// can neither save what it handled nor give its slots back.
			crashed.Close()
			dead.Store(true)
		}
		return err
	})
	o.CheckpointEvery, o.CheckpointInterval = 1000, time.Hour // it saves only with its renewals
	doomed := join(t, crashed, o)
	groupWait(t, "the crash", func() bool { return dead.Load() })
	<-doomed.Done()
	before := log.total()
	survivor := join(t, s, fastGroup("g", "survivor", log.handler("survivor")))
	state, err := s.GroupState(context.Background(), "g")
	if err != nil || len(state.Members) == 0 || state.Members[0].Name != "doomed" || state.Members[0].Slots != 8 {
		t.Fatalf("after the crash the group is %+v, %v: the crashed member should still hold its slots", state, err)
	}
	groupWait(t, "the survivor handling everything", func() bool {
		st := survivor.Stats()
		return st.Handled > 0 && log.total() >= before && allHandled(log, 8, 3)
	})
	time.Sleep(50 * time.Millisecond)
	if repeats := log.check(t, map[string]int64{"crash-0": 3, "crash-5": 3, "crash-7": 3}); repeats == 0 {
		t.Error("no redelivery after a crash: the event handled as the process died was never saved")
	}
	if st := survivor.Stats(); st.Redelivered == 0 || st.Redelivered > st.Handled {
		t.Errorf("survivor stats %+v: the redeliveries are not counted", st)
	}
	survivor.Stop()
}

func TestConsumerGroupParksAndReplays(t *testing.T) {
	for _, policy := range []estuite.ParkPolicy{estuite.ParkBlocksStream, estuite.ParkSkipsEvent} {
		t.Run(fmt.Sprint(policy), func(t *testing.T) {
			ctx := context.Background()
			s := openStore(t, mem.New(nil), nil)
			startDispatcher(t, s)
			log := newGroupLog()
			log.fail["poison@2"] = 1000 // fails until told otherwise
			o := fastGroup("p", "m", log.handler("m"))
			o.MaxRetries, o.Park = 2, policy
			m := join(t, s, o)
			defer m.Stop()
			mustAppend(t, s, "poison", countedEvents(1, 4), nil)
			mustAppend(t, s, "healthy", countedEvents(1, 2), nil)
			if err := s.WaitGroupHandled(ctx, "p", "healthy", 2); err != nil {
				t.Fatal(err)
			}
			err := s.WaitGroupHandled(ctx, "p", "poison", 2)
			if !errors.Is(err, estuite.ErrEventParked) {
				t.Fatalf("WaitGroupHandled(poison@2) = %v, want ErrEventParked", err)
			}
			parked, err := s.ParkedEvents(ctx, "p", 0)
			if err != nil {
				t.Fatal(err)
			}
			want := 1
			if policy == estuite.ParkBlocksStream {
				want = 3 // versions 3 and 4 wait behind 2
			}
			if len(parked) != want || parked[0].Version != 2 || parked[0].Attempts != 3 || parked[0].Error != "projection refused poison@2" {
				t.Fatalf("parked %+v, want %d rows starting with poison@2 after 3 attempts", parked, want)
			}
			log.mu.Lock()
			handled := append([]int64(nil), log.byStream["poison"]...)
			log.mu.Unlock()
			if policy == estuite.ParkBlocksStream && len(handled) != 1 || policy == estuite.ParkSkipsEvent && len(handled) != 3 {
				t.Fatalf("poison handled %v before the replay", handled)
			}
			if st := m.Stats(); st.Parked != int64(want) || st.Retries != 2 {
				t.Errorf("stats %+v", st)
			}
			// Replaying a position that is not parked is refused, and marks nothing.
			if _, err := s.ReplayParked(ctx, "p", []estuite.ParkedRef{{Position: 999}}); !errors.Is(err, estuite.ErrInvalidInput) {
				t.Fatalf("replay of nothing: %v", err)
			}
			log.mu.Lock()
			log.fail["poison@2"] = 0 // the projection is fixed
			log.mu.Unlock()
			n, err := s.ReplayParked(ctx, "p", []estuite.ParkedRef{{Shard: parked[0].Shard, Position: parked[0].Position}})
			if err != nil || n != 1 {
				t.Fatalf("ReplayParked = %d, %v", n, err)
			}
			groupWait(t, "the replay", func() bool {
				p, err := s.ParkedEvents(ctx, "p", 0)
				return err == nil && len(p) == 0
			})
			if err := s.WaitGroupHandled(ctx, "p", "poison", 4); err != nil {
				t.Fatal(err)
			}
			log.mu.Lock()
			got := fmt.Sprint(log.byStream["poison"])
			log.mu.Unlock()
			wantOrder := map[estuite.ParkPolicy]string{estuite.ParkBlocksStream: "[1 2 3 4]", estuite.ParkSkipsEvent: "[1 3 4 2]"}[policy]
			if got != wantOrder {
				t.Errorf("poison handled in order %s, want %s", got, wantOrder)
			}
			// New events of the stream flow again.
			mustAppend(t, s, "poison", countedEvents(5, 1), nil)
			if err := s.WaitGroupHandled(ctx, "p", "poison", 5); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestConsumerGroupDiscardReleasesWaitingEvents(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, mem.New(nil), nil)
	startDispatcher(t, s)
	log := newGroupLog()
	log.fail["s@1"] = 1 << 30
	o := fastGroup("d", "m", log.handler("m"))
	o.MaxRetries = 1
	m := join(t, s, o)
	defer m.Stop()
	mustAppend(t, s, "s", countedEvents(1, 3), nil)
	if err := s.WaitGroupHandled(ctx, "p", "s", 3); !errors.Is(err, estuite.ErrGroupNotFound) {
		t.Fatalf("wait on a group that does not exist: %v", err)
	}
	if err := s.WaitGroupHandled(ctx, "d", "s", 3); !errors.Is(err, estuite.ErrEventParked) {
		t.Fatalf("wait: %v", err)
	}
	n, err := s.DiscardParked(ctx, "d", []estuite.ParkedRef{{Position: 1}})
	if err != nil || n != 1 {
		t.Fatalf("DiscardParked = %d, %v", n, err)
	}
	groupWait(t, "the waiting events handled", func() bool {
		p, err := s.ParkedEvents(ctx, "d", 0)
		return err == nil && len(p) == 0
	})
	log.mu.Lock()
	defer log.mu.Unlock()
	if got := fmt.Sprint(log.byStream["s"]); got != "[2 3]" {
		t.Errorf("handled %s after the discard, want [2 3]", got)
	}
}

func TestJoinGroupRejectsBadInput(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, mem.New(nil), nil)
	h := func(context.Context, estuite.FeedEvent) error { return nil }
	for _, o := range []estuite.GroupOptions{
		{Group: "g"},
		{Handler: h},
		{Group: "g", Handler: h, Ranges: estuite.MaxGroupRanges + 1},
		{Group: "g", Handler: h, MaxInFlight: -1},
		{Group: "g/x\x00", Handler: h},
		{Group: "g", Handler: h, Park: 7},
	} {
		if m, err := s.JoinGroup(ctx, o); !errors.Is(err, estuite.ErrInvalidInput) {
			if m != nil {
				m.Stop()
			}
			t.Errorf("JoinGroup(%+v) = %v, want ErrInvalidInput", o, err)
		}
	}
	if groups, err := s.Groups(ctx); err != nil || len(groups) != 0 {
		t.Fatalf("bad joins wrote groups: %v, %v", groups, err)
	}
	m := join(t, s, estuite.GroupOptions{Group: "g", Handler: h, Ranges: 3})
	defer m.Stop()
	if _, err := s.JoinGroup(ctx, estuite.GroupOptions{Group: "g", Handler: h, Ranges: 4}); !errors.Is(err, estuite.ErrInvalidInput) {
		t.Fatalf("join with another range count: %v", err)
	}
	groups, err := s.Groups(ctx)
	if err != nil || len(groups) != 1 || groups[0] != (estuite.GroupInfo{Name: "g", Shards: 1, Ranges: 3}) {
		t.Fatalf("Groups = %+v, %v", groups, err)
	}
}

func TestConsumerGroupStartAtEndAndDelete(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, mem.New(nil), nil)
	startDispatcher(t, s)
	mustAppend(t, s, "old", countedEvents(1, 3), nil)
	if _, err := s.WaitDispatched(ctx, "old", 3); err != nil {
		t.Fatal(err)
	}
	log := newGroupLog()
	o := fastGroup("late", "m", log.handler("m"))
	o.StartAtEnd = true
	m := join(t, s, o)
	groupWait(t, "the slots taken", func() bool { return len(m.Slots()) == 8 })
	mustAppend(t, s, "new", countedEvents(1, 2), nil)
	if err := s.WaitGroupHandled(ctx, "late", "new", 2); err != nil {
		t.Fatal(err)
	}
	log.mu.Lock()
	if got := fmt.Sprint(log.byStream); got != "map[new:[1 2]]" {
		t.Errorf("a group started at the end handled %s", got)
	}
	log.mu.Unlock()
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteGroup(ctx, "late"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GroupState(ctx, "late"); !errors.Is(err, estuite.ErrGroupNotFound) {
		t.Fatalf("GroupState after DeleteGroup: %v", err)
	}
	if err := s.DeleteGroup(ctx, "late"); !errors.Is(err, estuite.ErrGroupNotFound) {
		t.Fatalf("DeleteGroup twice: %v", err)
	}
	// Joining again creates the group anew, from the feed's first event.
	again := newGroupLog()
	m = join(t, s, fastGroup("late", "m", again.handler("m")))
	defer m.Stop()
	for stream, v := range map[string]int64{"old": 3, "new": 2} {
		if err := s.WaitGroupHandled(ctx, "late", stream, v); err != nil {
			t.Fatal(err)
		}
	}
	again.check(t, map[string]int64{"old": 3, "new": 2})
}

// The takes of one look at the group read each shard's parked rows once, not once a slot.
func TestConsumerGroupTakesReadParkedRowsOncePerShard(t *testing.T) {
	var queries atomic.Int64
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if c.Method == mem.MethodQuery && strings.HasPrefix(c.PartitionKey, "parked-") {
			queries.Add(1)
		}
		return mem.NoFault
	}})
	s := openStore(t, b, &estuite.Options{FeedShards: 2})
	o := fastGroup("once", "m", func(context.Context, estuite.FeedEvent) error { return nil })
	o.LeaseDuration = time.Hour // one look, and no other until the test ends
	m := join(t, s, o)
	defer m.Stop()
	groupWait(t, "the 8 slots taken", func() bool { return len(m.Slots()) == 8 })
	if n := queries.Load(); n != 2 {
		t.Fatalf("taking 8 slots of 2 shards made %d queries of the parked partition, want 2", n)
	}
}
