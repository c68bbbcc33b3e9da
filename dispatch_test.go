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

// readFeedAll reads the whole feed.
func readFeedAll(t *testing.T, s *estuite.Store) []estuite.FeedEvent {
	t.Helper()
	var all []estuite.FeedEvent
	after := int64(0)
	for {
		page, err := s.ReadFeed(context.Background(), &estuite.FeedOptions{After: after})
		if err != nil {
			t.Fatalf("ReadFeed after %d: %v", after, err)
		}
		all = append(all, page.Events...)
		if page.Next == after {
			return all
		}
		after = page.Next
	}
}

// checkFeedMatchesStreams checks the feed against the stream table: positions 1..n without a gap,
// every committed event exactly once, each stream in version order.
func checkFeedMatchesStreams(t *testing.T, s *estuite.Store, streams []string) {
	t.Helper()
	feed := readFeedAll(t, s)
	seen := make(map[string]int64) // stream → last version seen in the feed
	for i, ev := range feed {
		if ev.Position != int64(i+1) {
			t.Fatalf("feed position %d holds position %d", i+1, ev.Position)
		}
		if ev.Version != seen[ev.Stream]+1 {
			t.Fatalf("feed position %d: %s version %d follows version %d", ev.Position, ev.Stream, ev.Version, seen[ev.Stream])
		}
		seen[ev.Stream] = ev.Version
	}
	total := 0
	for _, stream := range streams {
		version, events := readAll(t, s, stream, nil)
		total += len(events)
		if seen[stream] != version {
			t.Fatalf("stream %s is at version %d, the feed holds it up to %d", stream, version, seen[stream])
		}
	}
	if total != len(feed) {
		t.Fatalf("the feed holds %d events, the streams %d", len(feed), total)
	}
}

func stepUntilIdle(t *testing.T, d *estuite.Dispatcher) {
	t.Helper()
	for i := 0; i < 100; i++ {
		st, err := d.Step(context.Background())
		if err != nil {
			t.Fatalf("Step: %v", err)
		}
		if st.Streams == 0 {
			return
		}
	}
	t.Fatalf("dispatcher did not become idle")
}

func TestDispatchWritesEveryEventOnceInOrder(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		var streams []string
		for i := 0; i < 7; i++ {
			stream := fmt.Sprintf("order-%d", i)
			streams = append(streams, stream)
			appendN(t, s, stream, i*13+1)
		}
		d := estuite.NewDispatcher(s, nil)
		st, err := d.Step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.Events != 7*1+13*21 || st.Streams != 7 {
			t.Fatalf("step = %+v; want %d events of 7 streams", st, 7+13*21)
		}
		checkFeedMatchesStreams(t, s, streams)
		if st, _ := d.Step(context.Background()); st.Streams != 0 || st.Events != 0 {
			t.Fatalf("second step found work: %+v", st)
		}
		// More appends, and a fresh dispatcher (as after a restart).
		appendN(t, s, "order-0", 5)
		appendN(t, s, "order-new", 2)
		stepUntilIdle(t, estuite.NewDispatcher(s, nil))
		checkFeedMatchesStreams(t, s, append(streams, "order-new"))
		head, err := s.FeedHead(context.Background())
		if err != nil || head != int64(7+13*21+7) {
			t.Fatalf("FeedHead = %d, %v", head, err)
		}
	})
}

func TestFeedCrossesPages(t *testing.T) {
	s := openStore(t, mem.New(nil), nil)
	d := estuite.NewDispatcher(s, nil)
	var streams []string
	for i := 0; i < 3; i++ {
		streams = append(streams, fmt.Sprintf("s%d", i))
	}
	for round := 0; round < 40; round++ {
		for _, stream := range streams {
			appendN(t, s, stream, 90)
		}
		if round%7 == 0 {
			stepUntilIdle(t, d)
		}
	}
	stepUntilIdle(t, d)
	checkFeedMatchesStreams(t, s, streams)
	if head, _ := s.FeedHead(context.Background()); head != 3*40*90 {
		t.Fatalf("FeedHead = %d, want %d", head, 3*40*90)
	}
	// A new dispatcher finds the latest page by itself.
	appendN(t, s, "s0", 1)
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	checkFeedMatchesStreams(t, s, streams)
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

// Wait lets d pass on the fake clock at once (after a short real pause, so that a loop that
// waits does not spin), unless ctx ends or wake fires first.
func (c *fakeClock) Wait(ctx context.Context, d time.Duration, wake <-chan struct{}) (bool, error) {
	if woken, err := estuite.SystemClock().Wait(ctx, time.Millisecond, wake); woken || err != nil {
		return woken, err
	}
	c.Add(d)
	return false, nil
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// storeWithFailingAppends returns a store without retries whose append batches fail (before
// they take effect) while the returned switch is on: its dirty markers are written, its batches
// never land, as for a writer that died between the two.
func storeWithFailingAppends(t *testing.T) (*estuite.Store, *atomic.Bool) {
	var failBatches atomic.Bool
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if failBatches.Load() && c.Method == mem.MethodSubmit && c.Table == "estuitestreams" {
			return mem.FailBefore
		}
		return mem.NoFault
	}})
	s := openStore(t, b, &estuite.Options{Retry: estuite.RetryPolicy{MaxAttempts: 1, BaseDelay: time.Microsecond, MaxDelay: time.Microsecond}})
	return s, &failBatches
}

func TestAnnouncedAppendThatNeverLandsIsFenced(t *testing.T) {
	s, failBatches := storeWithFailingAppends(t)
	appendN(t, s, "stuck", 2)
	// The next append announces version 3, then its batch fails: a writer that died.
	failBatches.Store(true)
	if _, err := s.Append(context.Background(), "stuck", []estuite.EventData{jsonEvent("Lost", "{}")}, nil); err == nil {
		t.Fatal("append succeeded through a failing batch")
	}
	failBatches.Store(false)

	clock := &fakeClock{now: time.Unix(1e9, 0)}
	d := estuite.NewDispatcher(s, &estuite.DispatcherOptions{Clock: clock, FenceAfter: time.Second})
	st, err := d.Step(context.Background())
	if err != nil || st.Events != 2 || st.Fenced != 0 || st.Resolved != 1 {
		t.Fatalf("first step = %+v, %v; want 2 events dispatched, the landed append's marker resolved, the lost one's kept", st, err)
	}
	clock.Add(500 * time.Millisecond)
	if st, _ := d.Step(context.Background()); st.Fenced != 0 || st.Resolved != 0 {
		t.Fatalf("step before FenceAfter = %+v; want no fence", st)
	}
	clock.Add(time.Second)
	if st, err := d.Step(context.Background()); err != nil || st.Fenced != 1 || st.Resolved == 0 {
		t.Fatalf("step after FenceAfter = %+v, %v; want the head fenced and the markers resolved", st, err)
	}
	// The writer's store still holds the old head; its next append must still work.
	if res, err := s.Append(context.Background(), "stuck", []estuite.EventData{jsonEvent("After", "{}")}, nil); err != nil || res.LastVersion != 3 {
		t.Fatalf("append after the fence = %+v, %v", res, err)
	}
	stepUntilIdle(t, d)
	checkFeedMatchesStreams(t, s, []string{"stuck"})
}

func TestConcurrentDispatchersWriteEachEventOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		var streams []string
		for i := 0; i < 20; i++ {
			streams = append(streams, fmt.Sprintf("c%d", i))
		}
		var stops []func()
		for w := 0; w < 3; w++ {
			// Conflicts between the dispatchers are expected: their errors are not failures.
			stops = append(stops, stepInBackground(t, estuite.NewDispatcher(s, nil), false))
		}
		for round := 0; round < 5; round++ {
			for _, stream := range streams {
				appendN(t, s, stream, round+1)
			}
		}
		for _, stop := range stops {
			stop()
		}
		stepUntilIdle(t, estuite.NewDispatcher(s, nil))
		checkFeedMatchesStreams(t, s, streams)
	})
}

// A first append that never lands gets a version-0 head as its fence: the stream still reads as
// not found, a later first append works, and the store verifies clean.
func TestFenceOfAStreamThatDoesNotExistYet(t *testing.T) {
	s, failBatches := storeWithFailingAppends(t)
	failBatches.Store(true)
	if _, err := s.Append(context.Background(), "newborn", []estuite.EventData{jsonEvent("Lost", "{}")}, &estuite.AppendOptions{Expected: estuite.NoStream}); err == nil {
		t.Fatal("append succeeded through a failing batch")
	}
	failBatches.Store(false)
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	d := estuite.NewDispatcher(s, &estuite.DispatcherOptions{Clock: clock, FenceAfter: time.Second})
	d.Step(context.Background())
	clock.Add(2 * time.Second)
	if st, err := d.Step(context.Background()); err != nil || st.Fenced != 1 {
		t.Fatalf("step = %+v, %v; want the missing head fenced", st, err)
	}
	if _, err := s.Read(context.Background(), "newborn", nil); !errors.Is(err, estuite.ErrStreamNotFound) {
		t.Fatalf("a fenced stream without events reads as %v; want not found", err)
	}
	if report, err := s.Verify(context.Background(), nil); err != nil || !report.OK() {
		t.Fatalf("verify after the fence: %+v, %v", report, err)
	}
	if res, err := s.Append(context.Background(), "newborn", []estuite.EventData{jsonEvent("Born", "{}")}, &estuite.AppendOptions{Expected: estuite.NoStream}); err != nil || res.LastVersion != 1 {
		t.Fatalf("first append after the fence = %+v, %v", res, err)
	}
	stepUntilIdle(t, d)
	checkFeedMatchesStreams(t, s, []string{"newborn"})
}

// An announcement that will never land (here: a retried commit with expected version Any) must
// not make a started dispatcher spin until it fences the head.
func TestStartedDispatcherDoesNotSpinOnAnUnlandedAnnouncement(t *testing.T) {
	s := openStore(t, mem.New(nil), nil)
	d := estuite.NewDispatcher(s, nil)
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	events := []estuite.EventData{jsonEvent("A", "{}")}
	mustAppend(t, s, "retried", events, &estuite.AppendOptions{CommitID: "c"})
	if res := mustAppend(t, s, "retried", events, &estuite.AppendOptions{CommitID: "c"}); !res.Duplicate {
		t.Fatal("retry not answered as a duplicate")
	}
	before := s.RequestCounts()
	time.Sleep(time.Second) // the marker of the retry announces version 2, which never comes
	if n := s.RequestCounts().Sub(before).Total(); n > 200 {
		t.Fatalf("the dispatcher made %d storage requests in a second while waiting to fence", n)
	}
}

func TestStartedDispatcherStopsWhenTheStoreCloses(t *testing.T) {
	s, err := estuite.Open(context.Background(), mem.New(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	d := estuite.NewDispatcher(s, &estuite.DispatcherOptions{PollInterval: time.Millisecond})
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.Close()
	select {
	case <-d.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the dispatcher kept running after the store closed")
	}
}

// With more dirty streams than a step takes, streams take turns: one that stays dirty (here, an
// announcement that has not landed) cannot keep another from the feed.
func TestDirtyStreamsTakeTurns(t *testing.T) {
	s, failBatches := storeWithFailingAppends(t)
	// The stuck streams' hashes sort before the waiting ones': without turns, the first stuck
	// stream would be taken at every step.
	stuck, waiting := []string{"turn-3", "turn-4", "turn-6"}, []string{"turn-0", "turn-2"}
	failBatches.Store(true)
	for _, stream := range stuck {
		s.Append(context.Background(), stream, []estuite.EventData{jsonEvent("Stuck", "{}")}, nil)
	}
	failBatches.Store(false)
	for _, stream := range waiting {
		mustAppend(t, s, stream, []estuite.EventData{jsonEvent("Waiting", "{}")}, nil)
	}
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	d := estuite.NewDispatcher(s, &estuite.DispatcherOptions{MaxStreamsPerStep: 1, FenceAfter: time.Hour, Clock: clock})
	dispatched := 0
	// Shards take turns, and the streams of a shard take turns: the waiting streams are reached
	// within as many steps as there are dirty streams plus one per shard.
	for i := 0; i < len(stuck)+len(waiting)+4; i++ {
		st, err := d.Step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		dispatched += st.Events
		clock.Add(time.Second)
	}
	if dispatched != 2 {
		t.Fatalf("steps of one stream each dispatched %d events; want both waiting streams' events", dispatched)
	}
}

// An append the storage refuses (here: a retried commit) takes its marker back, so the
// dispatcher has nothing to wait for and no head to fence.
func TestRefusedAppendTakesItsMarkerBack(t *testing.T) {
	s := openStore(t, mem.New(nil), nil)
	events := []estuite.EventData{jsonEvent("A", "{}")}
	mustAppend(t, s, "retried", events, &estuite.AppendOptions{CommitID: "c"})
	if res := mustAppend(t, s, "retried", events, &estuite.AppendOptions{CommitID: "c"}); !res.Duplicate {
		t.Fatal("retry not answered as a duplicate")
	}
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	d := estuite.NewDispatcher(s, &estuite.DispatcherOptions{Clock: clock})
	st, err := d.Step(context.Background())
	if err != nil || st.Events != 1 || st.Resolved != 1 {
		t.Fatalf("step = %+v, %v; want the event dispatched and the one remaining marker resolved", st, err)
	}
	if st, _ := d.Step(context.Background()); st.Streams != 0 {
		t.Fatalf("a marker was left: %+v", st)
	}
}

// stepInBackground steps d in a loop on its own goroutine until the returned stop is called
// (which waits for it). With errorsFail, a step's error fails the test and ends the loop.
func stepInBackground(t *testing.T, d *estuite.Dispatcher, errorsFail bool) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := d.Step(context.Background()); err != nil && errorsFail {
				t.Errorf("Step: %v", err)
				return
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// A step whose feed write fails counts no event as dispatched (metrics and OnStep read these).
func TestDispatchStatsCountOnlyWrittenEvents(t *testing.T) {
	var fail atomic.Bool
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if fail.Load() && c.Method == mem.MethodSubmit && strings.HasPrefix(c.PartitionKey, "feed") {
			return mem.FailBefore
		}
		return mem.NoFault
	}})
	s := openStore(t, b, &estuite.Options{Retry: estuite.RetryPolicy{MaxAttempts: 1}})
	appendN(t, s, "counted", 3)
	fail.Store(true)
	st, err := estuite.NewDispatcher(s, nil).Step(context.Background())
	if err == nil || st.Events != 0 || st.Batches != 0 || len(st.Lags) != 0 {
		t.Fatalf("a step whose feed write failed: %+v, %v; want an error and nothing counted", st, err)
	}
	fail.Store(false)
	if st, err := estuite.NewDispatcher(s, nil).Step(context.Background()); err != nil || st.Events != 3 || len(st.Lags) != 3 {
		t.Fatalf("the step after: %+v, %v", st, err)
	}
}
