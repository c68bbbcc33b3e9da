package estuite_test

// Regression tests from an adversarial review of the consumer-group protocol: each failed on the
// first version of group.go.

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/mem"
)

// rangeOf mirrors streamRangeOf for stream names that are their own partition keys.
func rangeOf(stream string, ranges int) int {
	sum := sha256.Sum256([]byte(stream))
	return int(binary.BigEndian.Uint32(sum[8:12]) % uint32(ranges))
}

// streamsInRanges returns two stream names (prefix-N) that fall into different ranges of 2.
func streamsInRanges(prefix string) (a, b string) {
	for i := 0; ; i++ {
		name := fmt.Sprintf("%s-%d", prefix, i)
		switch {
		case a == "" && rangeOf(name, 2) == 0:
			a = name
		case b == "" && rangeOf(name, 2) == 1:
			b = name
		}
		if a != "" && b != "" {
			return a, b
		}
	}
}

func isGroupPartition(pk string) bool  { return strings.HasPrefix(pk, "group-") }
func isParkedPartition(pk string) bool { return strings.HasPrefix(pk, "parked-") }

// 1. Retries whose backoff adds up to more than a hold are cut short "because the hold would run
// out", the slot stops, and the next round starts again at attempt 1: the event is never parked,
// however many rounds pass, and MaxRetries means nothing. With all defaults but MaxRetries: 7
// (100 ms doubling to 10 s: 12.7 s of backoff against a hold of at most 10 s) the same happens.
func TestGroupReviewGroupRetriesLongerThanAHoldNeverPark(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, mem.New(nil), nil)
	startDispatcher(t, s)
	var calls atomic.Int64
	o := fastGroup("r", "m", func(ctx context.Context, ev estuite.FeedEvent) error {
		calls.Add(1)
		return errors.New("always fails")
	})
	// 6 retries: 20+40+80+80+80+80 ms of backoff, more than a hold (200 ms of a 300 ms lease).
	o.MaxRetries, o.RetryBackoff, o.MaxRetryBackoff = 6, 20*time.Millisecond, 80*time.Millisecond
	m := join(t, s, o)
	defer m.Stop()
	mustAppend(t, s, "poison", countedEvents(1, 1), nil)
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := s.WaitGroupHandled(wctx, "r", "poison", 1)
	if !errors.Is(err, estuite.ErrEventParked) {
		t.Fatalf("after %d handler calls with MaxRetries 6: WaitGroupHandled = %v, want ErrEventParked; stats %+v",
			calls.Load(), err, m.Stats())
	}
}

// 2. work reads a shard once from the lowest checkpoint of the member's slots in it, MaxInFlight
// events at most, and moves the other slots only to that page's Next. A slot that does not move
// (an event retried forever, MaxRetries < 0; or the retries of test 1; or a park write that keeps
// failing, test 3) pins every other slot of the member in that shard to within MaxInFlight events
// of it: streams of other slots stop, though "other streams go on".
func TestGroupReviewGroupStuckSlotStarvesTheMembersOtherSlots(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, mem.New(nil), nil)
	startDispatcher(t, s)
	poison, healthy := streamsInRanges("st")
	var handled atomic.Int64
	o := fastGroup("st", "m", func(ctx context.Context, ev estuite.FeedEvent) error {
		if ev.Stream == poison {
			return errors.New("poison")
		}
		handled.Add(1)
		return nil
	})
	o.Ranges, o.MaxRetries, o.MaxInFlight = 2, -1, 5
	m := join(t, s, o)
	defer m.Stop()
	mustAppend(t, s, poison, countedEvents(1, 1), nil)
	if _, err := s.WaitDispatched(ctx, poison, 1); err != nil { // first in the feed
		t.Fatal(err)
	}
	for i := 1; i <= 20; i++ {
		mustAppend(t, s, healthy, countedEvents(i, 1), nil)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.WaitGroupHandled(wctx, "st", healthy, 20); err != nil {
		t.Fatalf("%s (another slot than %s's) handled %d of 20 events: %v", healthy, poison, handled.Load(), err)
	}
}

// 3. A park write whose outcome is unknown (it landed, the answer was lost) is taken as not
// parked: the event is tried again, and when the handler now accepts it the event is handled
// and its parked row stays. WaitGroupHandled then says the handled event was parked, and the
// next member to take the slot blocks the stream behind the handled event: the stream's later
// events are parked as Waiting, and a replay would hand the old event over again, after them.
func TestGroupReviewGroupParkWithUnknownOutcomeLeavesAPhantomParkedEvent(t *testing.T) {
	ctx := context.Background()
	var failNextPark atomic.Bool
	failNextPark.Store(true)
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if c.Method == mem.MethodSubmit && isParkedPartition(c.PartitionKey) && failNextPark.CompareAndSwap(true, false) {
			return mem.FailAfter
		}
		return mem.NoFault
	}})
	s := openStore(t, b, nil)
	startDispatcher(t, s)
	log := newGroupLog()
	log.fail["flaky@1"] = 2 // fails MaxRetries+1 times, then works
	o := fastGroup("u", "m", log.handler("m"))
	o.MaxRetries = 1
	m := join(t, s, o)
	mustAppend(t, s, "flaky", countedEvents(1, 3), nil)
	if err := s.WaitGroupHandled(ctx, "u", "flaky", 3); err != nil {
		t.Logf("WaitGroupHandled(flaky@3) = %v", err)
	}
	log.mu.Lock()
	got := fmt.Sprint(log.byStream["flaky"])
	log.mu.Unlock()
	if got != "[1 2 3]" {
		t.Fatalf("flaky handled %s", got)
	}
	parked, _ := s.ParkedEvents(ctx, "u", 0)
	werr := s.WaitGroupHandled(ctx, "u", "flaky", 1)
	// The slot changes hands (here: the member restarts).
	m.Stop()
	m = join(t, s, o)
	defer m.Stop()
	mustAppend(t, s, "flaky", countedEvents(4, 1), nil)
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	err4 := s.WaitGroupHandled(wctx, "u", "flaky", 4)
	if len(parked) != 0 || werr != nil || err4 != nil {
		t.Fatalf("flaky@1 was handled, yet parked rows %+v, WaitGroupHandled(flaky@1) = %v, and after a handoff WaitGroupHandled(flaky@4) = %v",
			parked, werr, err4)
	}
}

// 4. After a slot write whose outcome is unknown lands, the member's next save is refused, it
// drops its slots and takes them back from the checkpoint that landed: the events after it are
// redelivered, and (ParkBlocksStream) loadBlocked has already blocked the stream of an event
// parked in that stretch, so that the event itself is parked again as Waiting "behind itself":
// its row loses its error and attempts, no failed event of the stream is left to replay or
// discard, and the next member to take the slot replays it unasked.
func TestGroupReviewGroupRedeliveredParkedEventWaitsBehindItself(t *testing.T) {
	ctx := context.Background()
	var armed, fired atomic.Bool
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if armed.Load() && c.Method == mem.MethodSubmit && isGroupPartition(c.PartitionKey) && len(c.Ops) > 0 &&
			c.Ops[0].Kind == table.Replace && strings.HasPrefix(c.Ops[0].Entity.RowKey, "slot-") && armed.CompareAndSwap(true, false) {
			fired.Store(true)
			return mem.FailAfter // the renewal lands; its answer is lost
		}
		return mem.NoFault
	}})
	s := openStore(t, b, nil)
	startDispatcher(t, s)
	mustAppend(t, s, "y", countedEvents(1, 1), nil)
	if _, err := s.WaitDispatched(ctx, "y", 1); err != nil { // y@1 first in the feed
		t.Fatal(err)
	}
	mustAppend(t, s, "x", countedEvents(1, 2), nil)
	if _, err := s.WaitDispatched(ctx, "x", 2); err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	log := newGroupLog()
	log.fail["x@1"] = 1 << 30
	handle := log.handler("m")
	o := fastGroup("self", "m", func(ctx context.Context, ev estuite.FeedEvent) error {
		if ev.Stream == "y" {
			armed.Store(true)
			clock.Add(100 * time.Millisecond) // a third of the lease: the renewal before x@1 is due
		}
		return handle(ctx, ev)
	})
	o.Clock, o.CheckpointEvery, o.CheckpointInterval = clock, 1000, time.Hour
	m := join(t, s, o)
	defer m.Stop()
	deadline := time.Now().Add(5 * time.Second)
	for !(fired.Load() && m.Stats().Parked >= 2) {
		if time.Now().After(deadline) {
			p, _ := s.ParkedEvents(ctx, "self", 0)
			t.Fatalf("fired %v, stats %+v, parked %+v", fired.Load(), m.Stats(), p)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	parked, err := s.ParkedEvents(ctx, "self", 0)
	if err != nil || len(parked) == 0 {
		t.Fatalf("parked %+v, %v", parked, err)
	}
	if p := parked[0]; p.Stream != "x" || p.Version != 1 || p.Waiting || p.Attempts == 0 {
		t.Fatalf("x@1 failed on every try, yet its parked row is %+v (stats %+v)", p, m.Stats())
	}
}

// 5. A replay that runs out of hold part way through (or is stopped) leaves the rest of the
// slot's due events (Waiting ones, and those asked for) unreplayed, yet the member records the
// replay row's tag as seen: nothing looks at them again until another replay or a handoff, and
// the stream stays blocked behind no failed event at all.
func TestGroupReviewGroupReplayCutShortIsForgotten(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, mem.New(nil), nil)
	startDispatcher(t, s)
	var broken, slow atomic.Bool
	broken.Store(true)
	o := fastGroup("cut", "m", func(ctx context.Context, ev estuite.FeedEvent) error {
		if ev.Stream == "s" && ev.Version == 1 && broken.Load() {
			return errors.New("broken projection")
		}
		if slow.Load() {
			time.Sleep(25 * time.Millisecond)
		}
		return nil
	})
	o.MaxRetries = 1
	m := join(t, s, o)
	defer m.Stop()
	mustAppend(t, s, "s", countedEvents(1, 20), nil)
	if err := s.WaitGroupHandled(ctx, "cut", "s", 20); !errors.Is(err, estuite.ErrEventParked) {
		t.Fatalf("wait: %v", err)
	}
	parked, err := s.ParkedEvents(ctx, "cut", 0)
	if err != nil || len(parked) != 20 {
		t.Fatalf("parked %d, %v", len(parked), err)
	}
	broken.Store(false)
	slow.Store(true) // 20 events of 25 ms: longer than a hold (200 ms)
	if _, err := s.ReplayParked(ctx, "cut", []estuite.ParkedRef{{Shard: parked[0].Shard, Position: parked[0].Position}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		p, err := s.ParkedEvents(ctx, "cut", 0)
		if err == nil && len(p) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("5 s after the replay %d events of s are still parked, all Waiting=%v, none failed", len(p), allWaiting(p))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func allWaiting(p []estuite.ParkedEvent) bool {
	for _, e := range p {
		if !e.Waiting {
			return false
		}
	}
	return true
}

// 6. While the group partition refuses writes (throttled, or down), the member spins: its holds'
// renewAt is in the past, so renewDue makes every loop iteration refresh and nextRenewal makes
// every wait 0. Storage is hammered at the speed of the loop instead of every LeaseDuration/12.
func TestGroupReviewGroupSpinsWhileSlotWritesFail(t *testing.T) {
	var failing atomic.Bool
	var submits atomic.Int64
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if failing.Load() && c.Method == mem.MethodSubmit && isGroupPartition(c.PartitionKey) {
			submits.Add(1)
			return mem.FailBefore
		}
		return mem.NoFault
	}})
	s := openStore(t, b, nil)
	startDispatcher(t, s)
	m := join(t, s, fastGroup("spin", "m", func(context.Context, estuite.FeedEvent) error { return nil }))
	defer m.Stop()
	groupWait(t, "the slots taken", func() bool { return len(m.Slots()) == 8 })
	failing.Store(true)
	time.Sleep(600 * time.Millisecond)
	failing.Store(false)
	// A retry every LeaseDuration/12 (25 ms) is 24 refreshes in 600 ms.
	if n := submits.Load(); n > 200 {
		t.Fatalf("%d writes to the group partition in 600 ms while it failed: a busy loop", n)
	}
}

// 7. A discard whose rows are deleted but whose replay-row write fails returns an error; asked
// again, the same discard is refused ("no event is parked"), and nothing ever tells the member:
// the Waiting events behind the discarded one stay parked, with nothing failed before them.
func TestGroupReviewGroupDiscardWhoseTagWriteFailsStrandsWaitingEvents(t *testing.T) {
	ctx := context.Background()
	var failTag atomic.Bool
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if failTag.Load() && c.Method == mem.MethodSubmit && len(c.Ops) == 1 && c.Ops[0].Entity.RowKey == "replay" {
			return mem.FailBefore
		}
		return mem.NoFault
	}})
	s := openStore(t, b, &estuite.Options{Retry: estuite.RetryPolicy{MaxAttempts: 2, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}})
	startDispatcher(t, s)
	log := newGroupLog()
	log.fail["s@1"] = 1 << 30
	o := fastGroup("tag", "m", log.handler("m"))
	o.MaxRetries = 1
	m := join(t, s, o)
	defer m.Stop()
	mustAppend(t, s, "s", countedEvents(1, 3), nil)
	if err := s.WaitGroupHandled(ctx, "tag", "s", 3); !errors.Is(err, estuite.ErrEventParked) {
		t.Fatalf("wait: %v", err)
	}
	failTag.Store(true)
	_, err := s.DiscardParked(ctx, "tag", []estuite.ParkedRef{{Position: 1}})
	failTag.Store(false)
	if err == nil {
		t.Fatal("the discard's replay-row write was failed, yet DiscardParked succeeded")
	}
	// The caller tries again, as an error invites.
	_, err = s.DiscardParked(ctx, "tag", []estuite.ParkedRef{{Position: 1}})
	t.Logf("DiscardParked again: %v", err)
	time.Sleep(time.Second) // three lease durations: several looks at the group
	parked, _ := s.ParkedEvents(ctx, "tag", 0)
	if len(parked) != 0 {
		t.Fatalf("after the discard of s@1, %d events wait behind nothing (all Waiting=%v)", len(parked), allWaiting(parked))
	}
}

// 8. ReplayParked with a ref named twice (in a second batch) is bad input, yet the first batch of
// 100 rows is marked before the batch holding the repeat fails (with a storage ErrInvalid, not an
// *InvalidInputError), and the replay row is not bumped: the marks sit unnoticed.
func TestGroupReviewGroupReplayWithARepeatedRefWritesSomething(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, mem.New(nil), nil)
	startDispatcher(t, s)
	log := newGroupLog()
	log.fail["big@1"] = 1 << 30
	o := fastGroup("dup", "m", log.handler("m"))
	o.MaxRetries = 1
	m := join(t, s, o)
	defer m.Stop()
	mustAppend(t, s, "big", countedEvents(1, 51), nil)
	mustAppend(t, s, "big", countedEvents(52, 51), nil)
	if err := s.WaitGroupHandled(ctx, "dup", "big", 102); !errors.Is(err, estuite.ErrEventParked) {
		t.Fatalf("wait: %v", err)
	}
	parked, err := s.ParkedEvents(ctx, "dup", 0)
	if err != nil || len(parked) != 102 {
		t.Fatalf("parked %d, %v", len(parked), err)
	}
	var refs []estuite.ParkedRef
	for _, p := range parked[:101] {
		refs = append(refs, estuite.ParkedRef{Shard: p.Shard, Position: p.Position})
	}
	refs = append(refs, refs[100])
	n, err := s.ReplayParked(ctx, "dup", refs)
	marked := 0
	after, _ := s.ParkedEvents(ctx, "dup", 0)
	for _, p := range after {
		if p.Replay {
			marked++
		}
	}
	if !errors.Is(err, estuite.ErrInvalidInput) || marked != 0 {
		t.Fatalf("ReplayParked with a repeated ref = %d, %v; %d rows marked for replay", n, err, marked)
	}
}

// 9. A handler error whose text is not valid UTF-8 (an error quoting binary input) cannot be
// stored: park's write is refused as invalid, deliver reports it like a storage failure, and
// the event is retried forever, never parked; its slot (and, by test 2, the member's other slots
// of the shard) stops for good.
func TestGroupReviewGroupHandlerErrorWithInvalidUTF8IsNeverParked(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, mem.New(nil), nil)
	startDispatcher(t, s)
	o := fastGroup("utf", "m", func(ctx context.Context, ev estuite.FeedEvent) error {
		return errors.New("cannot decode payload \xff\xfe")
	})
	o.MaxRetries = 1
	m := join(t, s, o)
	defer m.Stop()
	mustAppend(t, s, "bin", countedEvents(1, 1), nil)
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := s.WaitGroupHandled(wctx, "utf", "bin", 1); !errors.Is(err, estuite.ErrEventParked) {
		t.Fatalf("WaitGroupHandled = %v, want ErrEventParked; stats %+v", err, m.Stats())
	}
}

// 10. JoinGroup's creation loop retries a catalog insert refused transiently at once, with no
// backoff and no bound but ctx: a throttled catalog partition is hammered.
func TestGroupReviewJoinGroupSpinsWhileTheCatalogRefusesWrites(t *testing.T) {
	var submits atomic.Int64
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if c.Method == mem.MethodSubmit && c.PartitionKey == "groups" {
			submits.Add(1)
			return mem.FailBefore
		}
		return mem.NoFault
	}})
	s := openStore(t, b, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := s.JoinGroup(ctx, estuite.GroupOptions{Group: "g", Handler: func(context.Context, estuite.FeedEvent) error { return nil }})
	if n := submits.Load(); n > 20 {
		t.Fatalf("JoinGroup made %d catalog writes in 300 ms (%v): no backoff", n, err)
	}
}
