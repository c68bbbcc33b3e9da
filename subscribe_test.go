package estuite_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/mem"
)

// collector records what a subscription handler saw.
type collector struct {
	mu     sync.Mutex
	events []estuite.FeedEvent
	got    chan struct{} // signalled on every event
}

func newCollector() *collector { return &collector{got: make(chan struct{}, 1<<16)} }

func (c *collector) handle(_ context.Context, ev estuite.FeedEvent) error {
	c.mu.Lock()
	c.events = append(c.events, ev)
	c.mu.Unlock()
	c.got <- struct{}{}
	return nil
}

func (c *collector) positions() []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]int64, len(c.events))
	for i, e := range c.events {
		out[i] = e.Position
	}
	return out
}

// waitFor waits until the collector has n events (generously: this is no timing test).
func (c *collector) waitFor(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		c.mu.Lock()
		have := len(c.events)
		c.mu.Unlock()
		if have >= n {
			return
		}
		select {
		case <-c.got:
		case <-deadline:
			t.Fatalf("subscription delivered %d events, want %d", have, n)
		}
	}
}

func startDispatcher(t *testing.T, s *estuite.Store) *estuite.Dispatcher {
	t.Helper()
	d := estuite.NewDispatcher(s, nil)
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("dispatcher stopped with %v", err)
		}
	})
	return d
}

func TestSubscriptionCatchesUpThenFollowsLive(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		appendN(t, s, "history", 25)
		stepUntilIdle(t, estuite.NewDispatcher(s, nil))
		startDispatcher(t, s)
		c := newCollector()
		caughtUp := make(chan int64, 16)
		sub, err := s.Subscribe(context.Background(), estuite.SubscriptionOptions{
			Handler: c.handle, CaughtUp: func(p int64) { caughtUp <- p },
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Stop()
		c.waitFor(t, 25)
		select {
		case p := <-caughtUp:
			if p < 25 {
				t.Fatalf("caught up at %d before the history was delivered", p)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("no caught-up signal")
		}
		appendN(t, s, "live-a", 3)
		appendN(t, s, "live-b", 2)
		c.waitFor(t, 30)
		for i, p := range c.positions() {
			if p != int64(i+1) {
				t.Fatalf("delivery %d has position %d", i, p)
			}
		}
	})
}

func TestDurableSubscriptionResumesAfterItsCheckpoint(t *testing.T) {
	s := openStore(t, mem.New(nil), nil)
	appendN(t, s, "a", 10)
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	first := newCollector()
	sub, err := s.Subscribe(context.Background(), estuite.SubscriptionOptions{Name: "projector", Handler: first.handle})
	if err != nil {
		t.Fatal(err)
	}
	first.waitFor(t, 10)
	if err := sub.Stop(); err != nil {
		t.Fatal(err)
	}
	appendN(t, s, "a", 5)
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	second := newCollector()
	sub, err = s.Subscribe(context.Background(), estuite.SubscriptionOptions{Name: "projector", Handler: second.handle})
	if err != nil {
		t.Fatal(err)
	}
	second.waitFor(t, 5)
	sub.Stop()
	if got := fmt.Sprint(second.positions()); got != "[11 12 13 14 15]" {
		t.Fatalf("resumed subscription delivered %s; want 11..15", got)
	}
}

func TestTwoInstancesOfOneSubscriptionCannotBothAdvance(t *testing.T) {
	s := openStore(t, mem.New(nil), nil)
	appendN(t, s, "a", 3)
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	// Subscribe reads the checkpoint before it returns; the handlers wait until both have, so
	// that both instances start from the same (absent) checkpoint.
	gate := make(chan struct{})
	opts := func(c *collector) estuite.SubscriptionOptions {
		return estuite.SubscriptionOptions{Name: "twin", CheckpointEvery: 1, Handler: func(ctx context.Context, ev estuite.FeedEvent) error {
			<-gate
			return c.handle(ctx, ev)
		}}
	}
	c1, c2 := newCollector(), newCollector()
	sub1, err := s.Subscribe(context.Background(), opts(c1))
	if err != nil {
		t.Fatal(err)
	}
	sub2, err := s.Subscribe(context.Background(), opts(c2))
	if err != nil {
		t.Fatal(err)
	}
	close(gate)
	c1.waitFor(t, 3)
	c2.waitFor(t, 3)
	// Both read the same (absent) checkpoint: only one can store it.
	err1, err2 := stopWithin(t, sub1), stopWithin(t, sub2)
	conflicts := 0
	for _, err := range []error{err1, err2} {
		if errors.Is(err, estuite.ErrCheckpointConflict) {
			conflicts++
		} else if err != nil {
			t.Fatalf("unexpected error %v", err)
		}
	}
	if conflicts != 1 {
		t.Fatalf("errors %v, %v; want exactly one checkpoint conflict", err1, err2)
	}
}

func stopWithin(t *testing.T, sub *estuite.Subscription) error {
	t.Helper()
	select {
	case <-sub.Done():
		return sub.Err()
	case <-time.After(5 * time.Second):
	}
	return sub.Stop()
}

func TestFailingHandlerIsRetriedAndNeverSkipped(t *testing.T) {
	s := openStore(t, mem.New(nil), nil)
	appendN(t, s, "a", 6)
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	var mu sync.Mutex
	calls := map[int64]int{}
	failing := func(fails int) func(context.Context, estuite.FeedEvent) error {
		return func(_ context.Context, ev estuite.FeedEvent) error {
			mu.Lock()
			defer mu.Unlock()
			calls[ev.Position]++
			if ev.Position == 4 && calls[ev.Position] <= fails {
				return errors.New("projection database down")
			}
			return nil
		}
	}
	// Fails twice, then succeeds: every event is handled, position 4 three times.
	sub, err := s.Subscribe(context.Background(), estuite.SubscriptionOptions{Name: "flaky", Handler: failing(2), RetryBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return sub.Position() == 6 })
	if err := sub.Stop(); err != nil {
		t.Fatal(err)
	}
	if calls[4] != 3 || calls[5] != 1 {
		t.Fatalf("handler calls %v; want position 4 three times, the rest once", calls)
	}
	// Keeps failing: the subscription stops with the error, its checkpoint before the event.
	appendN(t, s, "a", 1)
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	calls = map[int64]int{}
	broken := func(_ context.Context, ev estuite.FeedEvent) error { return errors.New("always") }
	sub, err = s.Subscribe(context.Background(), estuite.SubscriptionOptions{Name: "flaky", Handler: broken, MaxRetries: 2, RetryBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	<-sub.Done()
	if err := sub.Err(); err == nil || sub.Position() != 6 {
		t.Fatalf("stopped at %d with %v; want an error at position 6", sub.Position(), err)
	}
	again := newCollector()
	sub, _ = s.Subscribe(context.Background(), estuite.SubscriptionOptions{Name: "flaky", Handler: again.handle})
	again.waitFor(t, 1)
	sub.Stop()
	if got := fmt.Sprint(again.positions()); got != "[7]" {
		t.Fatalf("after the failure the subscription delivered %s; want [7]", got)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not reached")
}

func TestFilteredFeedReadsMovePastUnwantedEvents(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		for i := 0; i < 4; i++ {
			mustAppend(t, s, fmt.Sprintf("order-%d", i), []estuite.EventData{jsonEvent("OrderPlaced", "{}"), jsonEvent("OrderPaid", "{}")}, nil)
			mustAppend(t, s, fmt.Sprintf("customer-%d", i), []estuite.EventData{jsonEvent("CustomerJoined", "{}")}, nil)
		}
		stepUntilIdle(t, estuite.NewDispatcher(s, nil))
		ctx := context.Background()
		page, err := s.ReadFeed(ctx, &estuite.FeedOptions{Types: []string{"OrderPaid", "CustomerJoined"}, StreamPrefix: "order-"})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Events) != 4 || page.Next != 12 {
			t.Fatalf("filtered read: %d events, next %d; want 4 OrderPaid events and next 12", len(page.Events), page.Next)
		}
		for _, ev := range page.Events {
			if ev.Type != "OrderPaid" {
				t.Fatalf("filtered read returned %s", ev.Type)
			}
		}
		// A filtered read stops at its limit, and its next position is the last event returned.
		page, err = s.ReadFeed(ctx, &estuite.FeedOptions{StreamPrefix: "order-", Limit: 3})
		if err != nil || len(page.Events) != 3 || page.Next != page.Events[2].Position {
			t.Fatalf("filtered read with limit 3: %d events, next %d, %v", len(page.Events), page.Next, err)
		}
		// A read bounded by MaxScan still reports how far it looked.
		page, err = s.ReadFeed(ctx, &estuite.FeedOptions{Types: []string{"Nothing"}, MaxScan: 5})
		if err != nil || len(page.Events) != 0 || page.Next != 5 {
			t.Fatalf("bounded scan: %d events, next %d, %v; want none, next 5", len(page.Events), page.Next, err)
		}
		// Limits and the end of the feed.
		page, _ = s.ReadFeed(ctx, &estuite.FeedOptions{After: 10, Limit: 5})
		if len(page.Events) != 2 || page.Next != 12 {
			t.Fatalf("read after 10: %d events, next %d; want 2, 12", len(page.Events), page.Next)
		}
		page, _ = s.ReadFeed(ctx, &estuite.FeedOptions{After: 12})
		if len(page.Events) != 0 || page.Next != 12 {
			t.Fatalf("read at the end: %d events, next %d", len(page.Events), page.Next)
		}
	})
}

// A checkpoint write whose response is lost has landed: the subscription must recognise its own
// write rather than report a conflict.
func TestLostCheckpointResponseIsNotAConflict(t *testing.T) {
	var lost atomic.Int32
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if c.Method == mem.MethodSubmit && c.PartitionKey == "checkpoint" && lost.Add(1) <= 2 {
			return mem.FailAfter
		}
		return mem.NoFault
	}})
	s := openStore(t, b, &estuite.Options{Retry: estuite.RetryPolicy{MaxAttempts: 3, BaseDelay: time.Microsecond, MaxDelay: time.Microsecond}})
	appendN(t, s, "a", 5)
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	c := newCollector()
	sub, err := s.Subscribe(context.Background(), estuite.SubscriptionOptions{Name: "lossy", Handler: c.handle, CheckpointEvery: 1})
	if err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, 5)
	if err := sub.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	again := newCollector()
	sub, _ = s.Subscribe(context.Background(), estuite.SubscriptionOptions{Name: "lossy", Handler: again.handle})
	appendN(t, s, "a", 1)
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	again.waitFor(t, 1)
	sub.Stop()
	if got := fmt.Sprint(again.positions()); got != "[6]" {
		t.Fatalf("after lost checkpoint responses the subscription resumed with %s; want [6]", got)
	}
}

// holdCheckpoint is a backend whose first checkpoint write waits for release, then fails without
// taking effect (a timeout), so that a test can run another instance meanwhile.
type holdCheckpoint struct {
	*mem.Backend
	entered, release chan struct{}
	once             *sync.Once
}

func (b holdCheckpoint) OpenTable(ctx context.Context, name string) (table.Table, error) {
	t, err := b.Backend.OpenTable(ctx, name)
	return holdCheckpointTable{t, b}, err
}

type holdCheckpointTable struct {
	table.Table
	b holdCheckpoint
}

func (t holdCheckpointTable) Submit(ctx context.Context, pk string, ops []table.Op) ([]string, error) {
	first := false
	if pk == "checkpoint" {
		t.b.once.Do(func() { first = true })
	}
	if first {
		close(t.b.entered)
		<-t.b.release
		return nil, &table.TransientError{Err: errors.New("timed out before taking effect")}
	}
	return t.Table.Submit(ctx, pk, ops)
}

// Instance A's checkpoint write of position 10 times out without effect; instance B stores
// position 10 meanwhile. A must not take B's write for its own: it stops with a conflict.
func TestCheckpointWrittenByAnotherInstanceIsNotTakenForOwn(t *testing.T) {
	b := mem.New(nil)
	w := openStore(t, b, nil)
	appendN(t, w, "s", 10)
	stepUntilIdle(t, estuite.NewDispatcher(w, nil))
	hold := holdCheckpoint{b, make(chan struct{}), make(chan struct{}), &sync.Once{}}
	sa := openStore(t, hold, nil)
	sb := openStore(t, b, nil)
	a, err := sa.Subscribe(context.Background(), estuite.SubscriptionOptions{Name: "n", Handler: newCollector().handle})
	if err != nil {
		t.Fatal(err)
	}
	<-hold.entered // A is writing checkpoint 10
	caught := make(chan int64, 1)
	bsub, err := sb.Subscribe(context.Background(), estuite.SubscriptionOptions{Name: "n", Handler: newCollector().handle,
		CaughtUp: func(p int64) { caught <- p }})
	if err != nil {
		t.Fatal(err)
	}
	defer bsub.Stop()
	<-caught // B has stored checkpoint 10
	close(hold.release)
	select {
	case <-a.Done():
		if !errors.Is(a.Err(), estuite.ErrCheckpointConflict) {
			t.Fatalf("instance A stopped with %v; want a checkpoint conflict", a.Err())
		}
	case <-time.After(10 * time.Second):
		a.Stop()
		t.Fatal("instance A carried on after instance B had stored the checkpoint")
	}
	if err := bsub.Err(); err != nil {
		t.Fatalf("instance B stopped with %v", err)
	}
}
