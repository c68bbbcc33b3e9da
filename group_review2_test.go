package estuite_test

// Regression tests from a second adversarial review of the consumer-group protocol: each failed
// on the code it reviewed.

import (
	"context"
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

// R2-1. saveCheckpoints replaces `slots` with the re-sent chunk's slots after a precondition
// failure, but the outer loop over chunks of 100 goes on indexing the new, shorter slice with
// `first = start - off`: with more than 100 ops, the next chunk's slots[j] is out of range and
// the member's goroutine panics (the process dies). One renewal whose answer is lost (it landed)
// is enough: the next renewal's first chunk is refused, adopted, and re-sent.
func TestGroupReviewTwoSaveOfMoreThan100SlotsAfterAPreconditionFailurePanics(t *testing.T) {
	var armed atomic.Bool
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		// The first chunk of a renewal: the member row leads it.
		if armed.Load() && c.Method == mem.MethodSubmit && isGroupPartition(c.PartitionKey) && len(c.Ops) == table.MaxBatchOps &&
			strings.HasPrefix(c.Ops[0].Entity.RowKey, "member-") && armed.CompareAndSwap(true, false) {
			return mem.FailAfter // lands; the answer is lost
		}
		return mem.NoFault
	}})
	s := openStore(t, b, &estuite.Options{FeedShards: 2})
	startDispatcher(t, s)
	o := fastGroup("big", "m", func(context.Context, estuite.FeedEvent) error { return nil })
	o.Ranges = 64 // 128 slots
	m := join(t, s, o)
	defer m.Stop()
	groupWait(t, "all 128 slots taken", func() bool { return len(m.Slots()) == 128 })
	armed.Store(true)
	time.Sleep(time.Second) // several renewals
	select {
	case <-m.Done():
		t.Fatalf("member stopped: %v", m.Err())
	default:
	}
	if n := len(m.Slots()); n != 128 {
		t.Fatalf("member holds %d slots", n)
	}
}

// R2-2. replaySlot clears h.blocking and rebuilds it row by row; when replayOne fails with a
// storage error (here: the replayed event's parked row cannot be deleted), replaySlot returns at
// once, and the streams of the rows after it are left unblocked: their later events are handed
// to the handler although an earlier event of theirs is parked (ParkBlocksStream broken).
func TestGroupReviewTwoReplayStorageErrorUnblocksTheSlotsOtherStreams(t *testing.T) {
	ctx := context.Background()
	var failDeletes atomic.Bool
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if failDeletes.Load() && c.Method == mem.MethodSubmit && isParkedPartition(c.PartitionKey) && c.Ops[0].Kind == table.Delete {
			return mem.FailBefore
		}
		return mem.NoFault
	}})
	s := openStore(t, b, &estuite.Options{Retry: estuite.RetryPolicy{MaxAttempts: 2, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}})
	startDispatcher(t, s)
	log := newGroupLog()
	log.fail["a@1"] = 2 // fails MaxRetries+1 times: parked; then works on replay
	log.fail["b@1"] = 1 << 30
	o := fastGroup("rb", "m", log.handler("m"))
	o.MaxRetries, o.Ranges = 1, 1 // one slot: a and b share it
	m := join(t, s, o)
	defer m.Stop()
	mustAppend(t, s, "a", countedEvents(1, 1), nil)
	if err := s.WaitGroupHandled(ctx, "rb", "a", 1); !errors.Is(err, estuite.ErrEventParked) {
		t.Fatalf("wait a@1: %v", err)
	}
	mustAppend(t, s, "b", countedEvents(1, 1), nil)
	if err := s.WaitGroupHandled(ctx, "rb", "b", 1); !errors.Is(err, estuite.ErrEventParked) {
		t.Fatalf("wait b@1: %v", err)
	}
	failDeletes.Store(true)
	parked, _ := s.ParkedEvents(ctx, "rb", 0)
	if _, err := s.ReplayParked(ctx, "rb", []estuite.ParkedRef{{Shard: parked[0].Shard, Position: parked[0].Position}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the replay runs (a@1 handled, its row not deleted)
	mustAppend(t, s, "b", countedEvents(2, 1), nil)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err := s.WaitGroupHandled(wctx, "rb", "b", 2)
	log.mu.Lock()
	got := fmt.Sprint(log.byStream["b"])
	log.mu.Unlock()
	if got != "[]" {
		t.Fatalf("b@1 is parked (failed), yet b handled %v (WaitGroupHandled(b@2) = %v)", got, err)
	}
}

// R2-3 (fixed by a second look at the parked rows two leases after a takeover; a row landing
// later than that is not caught). A parked row that lands after another member took the slot (the old holder's park write
// was slow: a request in flight, a retry's backoff, a pause after its hold check) is not in the
// taker's loadParked read, so it is not marked stale; replaySlot skips rows past the checkpoint
// without marking them either. The taker redelivers and handles the event, the row stays, the
// checkpoint passes it: WaitGroupHandled says the handled event is parked, and the next holder
// blocks the stream behind it.
func TestGroupReviewTwoParkedRowLandingAfterTakeoverIsNeverDropped(t *testing.T) {
	ctx := context.Background()
	var slowPark atomic.Bool
	slowPark.Store(true)
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if c.Method == mem.MethodSubmit && isParkedPartition(c.PartitionKey) && c.Ops[0].Kind == table.Upsert && slowPark.CompareAndSwap(true, false) {
			time.Sleep(1500 * time.Millisecond) // the old holder's park request is slow to land: after the take, before the recheck
		}
		return mem.NoFault
	}})
	s := openStore(t, b, nil)
	startDispatcher(t, s)
	log := newGroupLog()
	log.fail["s@1"] = 2 // the old holder gives up on it; the taker's call works
	o := fastGroup("late", "a", log.handler("a"))
	o.MaxRetries, o.Ranges = 1, 1
	a := join(t, s, o)
	defer a.Stop()
	groupWait(t, "a holding the slot", func() bool { return len(a.Slots()) == 1 })
	other := openStore(t, b, nil)
	ob := fastGroup("late", "b", log.handler("b"))
	ob.MaxRetries, ob.Ranges = 1, 1
	bm := join(t, other, ob)
	defer bm.Stop()
	mustAppend(t, s, "s", countedEvents(1, 1), nil)
	groupWait(t, "b handling s@1 and a's park landing", func() bool {
		log.mu.Lock()
		defer log.mu.Unlock()
		return len(log.byStream["s"]) == 1 && !slowPark.Load() && a.Stats().Parked == 1
	})
	// The taker looks at the slot's parked rows again two leases after the take, and deletes the
	// late row of the event it handled.
	var werr error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if werr = s.WaitGroupHandled(ctx, "late", "s", 1); werr == nil || time.Now().After(deadline) {
			break
		}
	}
	// The slot changes hands again.
	bm.Stop()
	a.Stop()
	c := join(t, s, fastGroup("late", "c", log.handler("c")))
	defer c.Stop()
	mustAppend(t, s, "s", countedEvents(2, 1), nil)
	wctx2, cancel2 := context.WithTimeout(ctx, 2*time.Second)
	defer cancel2()
	err2 := s.WaitGroupHandled(wctx2, "late", "s", 2)
	parked, _ := s.ParkedEvents(ctx, "late", 0)
	if werr != nil || err2 != nil || len(parked) != 0 {
		t.Fatalf("s@1 was handled (log %v), yet WaitGroupHandled(s@1) = %v, WaitGroupHandled(s@2) after a handoff = %v, parked %+v",
			log.byStream["s"], werr, err2, parked)
	}
}

// R2-4. dropParked ignores its error and forgets the stale mark: when deleting the stale row of a
// redelivered, now handled event fails, the row stays, the checkpoint passes it, and the event
// is "parked" for good (the first review's test 3, by another road).
func TestGroupReviewTwoFailedDropOfAStaleRowLeavesAPhantomParkedEvent(t *testing.T) {
	ctx := context.Background()
	var failParkedWrites atomic.Int64 // >0: fail that many parked-partition deletes, FailBefore
	var parkLost atomic.Bool
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if c.Method != mem.MethodSubmit || !isParkedPartition(c.PartitionKey) {
			return mem.NoFault
		}
		if c.Ops[0].Kind == table.Upsert && parkLost.CompareAndSwap(false, true) {
			return mem.FailAfter // the park lands, its answer is lost: the position is stale
		}
		if c.Ops[0].Kind == table.Delete && failParkedWrites.Add(-1) >= 0 {
			return mem.FailBefore
		}
		return mem.NoFault
	}})
	failParkedWrites.Store(1 << 20)
	s := openStore(t, b, &estuite.Options{Retry: estuite.RetryPolicy{MaxAttempts: 2, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}})
	startDispatcher(t, s)
	log := newGroupLog()
	log.fail["s@1"] = 2 // MaxRetries+1 failures, then it works
	o := fastGroup("drop", "m", log.handler("m"))
	o.MaxRetries = 1
	m := join(t, s, o)
	defer m.Stop()
	mustAppend(t, s, "s", countedEvents(1, 1), nil)
	groupWait(t, "s@1 handled", func() bool {
		log.mu.Lock()
		defer log.mu.Unlock()
		return len(log.byStream["s"]) >= 1 // again and again while its stale row cannot be deleted
	})
	failParkedWrites.Store(0) // storage is healthy again
	time.Sleep(300 * time.Millisecond)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := s.WaitGroupHandled(wctx, "drop", "s", 1); err != nil {
		p, _ := s.ParkedEvents(ctx, "drop", 0)
		t.Fatalf("s@1 was handled, yet WaitGroupHandled = %v; parked %+v", err, p)
	}
}

// R2-5. replayOne's retries are cut (errReplayCut) when their backoff would outlast the hold, and
// the next look starts again at attempt 1 with the row untouched: with backoff longer than a
// hold, a replay of an event that still fails is never recorded as failed (Replay stays true,
// Attempts never grows), and the member re-runs it at every look, holding its loop in backoff.
func TestGroupReviewTwoReplayWithRetriesLongerThanAHoldNeverRecordsTheFailure(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, mem.New(nil), nil)
	startDispatcher(t, s)
	o := fastGroup("rc", "m", func(ctx context.Context, ev estuite.FeedEvent) error {
		if ev.Stream == "p" {
			return errors.New("still broken")
		}
		return nil
	})
	o.MaxRetries = 1 // parks quickly
	m := join(t, s, o)
	mustAppend(t, s, "p", countedEvents(1, 1), nil)
	if err := s.WaitGroupHandled(ctx, "rc", "p", 1); !errors.Is(err, estuite.ErrEventParked) {
		t.Fatalf("wait: %v", err)
	}
	m.Stop()
	// The same group, restarted with more retries: 20+40+80+80+80+80 ms of backoff, more than a
	// hold (200 ms of a 300 ms lease).
	o.MaxRetries, o.RetryBackoff, o.MaxRetryBackoff = 6, 20*time.Millisecond, 80*time.Millisecond
	m = join(t, s, o)
	defer m.Stop()
	parked, _ := s.ParkedEvents(ctx, "rc", 0)
	before := parked[0].Attempts
	if _, err := s.ReplayParked(ctx, "rc", nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	parked, _ = s.ParkedEvents(ctx, "rc", 0)
	if len(parked) != 1 || parked[0].Replay || parked[0].Attempts == before {
		t.Fatalf("2 s after replaying an event that still fails, its row is %+v (attempts before %d): the failure is never recorded; stats %+v",
			parked, before, m.Stats())
	}
}

// R2-6. A retry's retryAt stays set (in the past) when the slot's hold runs out: nextDue then
// makes every wait 1 ms, and each loop reads the feed. While the group partition refuses the
// renewals, the member reads the feed a thousand times a second.
func TestGroupReviewTwoPastRetryAtSpinsWhileRenewalsFail(t *testing.T) {
	var failing atomic.Bool
	var reads atomic.Int64
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if !failing.Load() {
			return mem.NoFault
		}
		if c.Method == mem.MethodSubmit && isGroupPartition(c.PartitionKey) {
			return mem.FailBefore
		}
		if c.Method == mem.MethodQuery && !isGroupPartition(c.PartitionKey) && !isParkedPartition(c.PartitionKey) {
			reads.Add(1)
		}
		return mem.NoFault
	}})
	s := openStore(t, b, nil)
	startDispatcher(t, s)
	o := fastGroup("ra", "m", func(ctx context.Context, ev estuite.FeedEvent) error { return errors.New("poison") })
	o.MaxRetries, o.Ranges = -1, 1
	o.RetryBackoff, o.MaxRetryBackoff = 50*time.Millisecond, 50*time.Millisecond
	m := join(t, s, o)
	defer m.Stop()
	mustAppend(t, s, "p", countedEvents(1, 1), nil)
	groupWait(t, "retries", func() bool { return m.Stats().Retries > 2 })
	failing.Store(true)
	time.Sleep(600 * time.Millisecond)
	failing.Store(false)
	// Idle polling is every 20 ms at most and a retry every 50 ms: some 40 feed reads.
	if n := reads.Load(); n > 200 {
		t.Fatalf("%d feed queries in 600 ms while renewals failed: a busy loop", n)
	}
}

// R2-7. LeaseDuration has no lower bound: a lease of nanoseconds (LeaseDuration: 15, meant as
// seconds) is accepted, the member's holds are never safe to use, so it handles nothing, and its
// renewal is always due: it renews and queries the group partition every millisecond for ever.
func TestGroupReviewTwoTinyLeaseDurationIsAcceptedAndSpins(t *testing.T) {
	var submits atomic.Int64
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if c.Method == mem.MethodSubmit && isGroupPartition(c.PartitionKey) {
			submits.Add(1)
		}
		return mem.NoFault
	}})
	s := openStore(t, b, nil)
	startDispatcher(t, s)
	var handled atomic.Int64
	m, err := s.JoinGroup(context.Background(), estuite.GroupOptions{Group: "tiny", Member: "m", LeaseDuration: 15,
		Handler: func(context.Context, estuite.FeedEvent) error { handled.Add(1); return nil }})
	if err != nil {
		return // rejected as bad input: fine
	}
	defer m.Stop()
	mustAppend(t, s, "x", countedEvents(1, 1), nil)
	time.Sleep(500 * time.Millisecond)
	if n := submits.Load(); handled.Load() == 0 || n > 100 {
		t.Fatalf("LeaseDuration 15ns accepted: %d events handled, %d group-partition writes in 500 ms", handled.Load(), n)
	}
}

// R2-8. The adoption in saveCheckpoints ("the row names this member: its own write landed
// unseen") also adopts a row written by another live incarnation under the same name — an old
// process that was paused or partitioned while its replacement started ("a member started again
// under its name takes its slots back at once"). The old one never learns it was replaced: both
// keep every slot, and both hand every event to their handlers, for ever.
func TestGroupReviewTwoSameNameZombieIsNeverFencedOff(t *testing.T) {
	b := mem.New(nil)
	s := openStore(t, b, nil)
	startDispatcher(t, s)
	log := newGroupLog()
	old := join(t, s, fastGroup("z", "web-1", log.handler("old")))
	defer old.Stop()
	groupWait(t, "old holding the slots", func() bool { return len(old.Slots()) == 8 })
	other := openStore(t, b, nil)
	repl := join(t, other, fastGroup("z", "web-1", log.handler("new")))
	defer repl.Stop()
	groupWait(t, "the replacement holding the slots", func() bool { return len(repl.Slots()) == 8 })
	time.Sleep(time.Second) // three lease durations
	both := 0
	for range 20 {
		if len(old.Slots()) > 0 && len(repl.Slots()) > 0 {
			both++
		}
		time.Sleep(10 * time.Millisecond)
	}
	if both > 0 {
		t.Fatalf("a second after its replacement took over, the old incarnation still holds %d slots (the new one %d), in %d of 20 looks",
			len(old.Slots()), len(repl.Slots()), both)
	}
}
