package estuite_test

// Regression tests for the dispatcher as it runs in production: several processes on one
// storage account, each with its Started dispatcher, their own clocks, and pages that are
// sometimes empty. Each test failed before its fix.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/mem"
)

// dirtyShardOf repeats the storage format's dirty-marker shard of a stream (docs/storage-format.md).
func dirtyShardOf(stream string) int {
	sum := sha256.Sum256([]byte(stream))
	return int(uint32(sum[0])<<8|uint32(sum[1])) % 4
}

// streamsInShards returns n stream names with the given prefix whose dirty-marker shards are
// want (in order).
func streamInShard(prefix string, shard int, not string) string {
	for i := 0; ; i++ {
		name := fmt.Sprintf("%s-%d", prefix, i)
		if dirtyShardOf(name) == shard && name != not {
			return name
		}
	}
}

// waitForFeed waits until the feed holds an event of stream at version, or fails after timeout.
func waitForFeed(t *testing.T, s *estuite.Store, stream string, version int64, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		for _, ev := range readFeedAll(t, s) {
			if ev.Stream == stream && ev.Version == version {
				return time.Since(start)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s version %d did not reach the feed within %v", stream, version, timeout)
	return 0
}

// offsetClock is the system clock shifted by an offset: a machine whose clock is wrong.
type offsetClock struct{ offset time.Duration }

func (c offsetClock) Now() time.Time { return time.Now().Add(c.offset) }
func (c offsetClock) Wait(ctx context.Context, d time.Duration, wake <-chan struct{}) (bool, error) {
	return estuite.SystemClock().Wait(ctx, d, wake)
}

// Defect 1: while the lease holder's own process appends more often than the poll interval,
// another process's append in another shard must still reach the feed.
func TestBusyDispatcherFindsOtherProcessesAppends(t *testing.T) {
	backend := mem.New(nil)
	a := openStore(t, backend, nil)
	b, err := estuite.Open(context.Background(), backend, nil)
	if err != nil {
		t.Fatal(err)
	}
	busy := streamInShard("busy", 0, "")
	other := streamInShard("other", 1, "")
	d := estuite.NewDispatcher(a, &estuite.DispatcherOptions{PollInterval: 50 * time.Millisecond})
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	ctx, stopAppending := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			a.Append(ctx, busy, []estuite.EventData{jsonEvent("Tick", "{}")}, nil)
			time.Sleep(10 * time.Millisecond)
		}
	}()
	defer func() { stopAppending(); <-done }()
	time.Sleep(100 * time.Millisecond)
	mustAppend(t, b, other, []estuite.EventData{jsonEvent("Elsewhere", "{}")}, nil)
	took := waitForFeed(t, a, other, 1, 3*time.Second)
	t.Logf("another process's append reached the feed after %v while this one appended every 10 ms", took)
}

// plantLease writes the dispatcher lease row as another process would.
func plantLease(t *testing.T, backend *mem.Backend, props map[string]any) {
	t.Helper()
	events, err := backend.Table(estuite.DefaultTablePrefix + "events")
	if err != nil {
		t.Fatal(err)
	}
	row := table.Entity{PartitionKey: "lease", RowKey: "dispatcher", Properties: props}
	if _, err := events.Submit(context.Background(), "lease", []table.Op{{Kind: table.Upsert, Entity: row}}); err != nil {
		t.Fatal(err)
	}
}

// Defect 4: a lease must not depend on clocks agreeing. A holder whose clock runs an hour ahead
// and stops cleanly hands the lease over at once.
func TestLeaseOfAHolderWithAClockAheadIsReleasedAtOnce(t *testing.T) {
	backend := mem.New(nil)
	ahead := openStore(t, backend, &estuite.Options{Now: offsetClock{time.Hour}.Now})
	d1 := estuite.NewDispatcher(ahead, &estuite.DispatcherOptions{Owner: "ahead", Clock: offsetClock{time.Hour}, LeaseDuration: time.Second})
	if err := d1.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, ahead, "first", []estuite.EventData{jsonEvent("A", "{}")}, nil)
	waitForFeed(t, ahead, "first", 1, 3*time.Second)
	if err := d1.Stop(); err != nil {
		t.Fatal(err)
	}

	s := openStore(t, backend, nil)
	d2 := estuite.NewDispatcher(s, &estuite.DispatcherOptions{Owner: "on-time", LeaseDuration: time.Second})
	if err := d2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer d2.Stop()
	mustAppend(t, s, "second", []estuite.EventData{jsonEvent("B", "{}")}, nil)
	waitForFeed(t, s, "second", 1, 3*time.Second)
}

// Defect 4: a holder that died with a clock an hour ahead (its row says its lease runs for another
// hour) stalls the feed only for the lease duration, as observed on the survivor's own clock.
func TestLeaseOfADeadHolderWithAClockAheadExpiresOnTheObserversClock(t *testing.T) {
	backend := mem.New(nil)
	plantLease(t, backend, map[string]any{
		"Owner": "dead", "DurationMs": int64(500), "Expires": time.Now().Add(time.Hour).UTC(),
	})
	s := openStore(t, backend, nil)
	d := estuite.NewDispatcher(s, &estuite.DispatcherOptions{Owner: "survivor", LeaseDuration: 500 * time.Millisecond})
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	mustAppend(t, s, "after-crash", []estuite.EventData{jsonEvent("A", "{}")}, nil)
	took := waitForFeed(t, s, "after-crash", 1, 3*time.Second)
	t.Logf("took over a dead holder's 500-ms lease after %v", took)
	if h := d.Health(); !h.LeaseHeld || h.Owner != "survivor" {
		t.Fatalf("Health = %+v; want the lease held by the survivor", h)
	}
}

// A live holder keeps its lease however far the clocks disagree: a second dispatcher with a clock
// a day ahead does not take it over while the holder renews it.
func TestLiveLeaseIsNotTakenByAnObserverWithAClockAhead(t *testing.T) {
	backend := mem.New(nil)
	s1 := openStore(t, backend, nil)
	d1 := estuite.NewDispatcher(s1, &estuite.DispatcherOptions{Owner: "holder", LeaseDuration: 300 * time.Millisecond})
	if err := d1.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer d1.Stop()
	waitFor(t, 3*time.Second, func() bool { return d1.Health().LeaseHeld })
	s2 := openStore(t, backend, nil)
	d2 := estuite.NewDispatcher(s2, &estuite.DispatcherOptions{Owner: "observer", Clock: offsetClock{24 * time.Hour}, LeaseDuration: 300 * time.Millisecond})
	if err := d2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer d2.Stop()
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if d2.Health().LeaseHeld {
			t.Fatal("an observer took over a lease its holder kept renewing")
		}
	}
	if !d1.Health().LeaseHeld {
		t.Fatal("the holder lost its lease")
	}
	// And once the holder stops, the observer takes over.
	d1.Stop()
	waitFor(t, 3*time.Second, func() bool { return d2.Health().LeaseHeld })
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("condition not met within %v", timeout)
}

// plantMarker writes a dirty marker as a writer would (docs/storage-format.md): here, one left
// behind by an attempt whose batch never landed.
func plantMarker(t *testing.T, backend *mem.Backend, stream string, first, announced int64) {
	t.Helper()
	events, err := backend.Table(estuite.DefaultTablePrefix + "events")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(stream))
	pk := fmt.Sprintf("dirty%02d", dirtyShardOf(stream))
	rk := fmt.Sprintf("%s-%019d-%s", hex.EncodeToString(sum[:16]), announced, strings.Repeat("0", 16))
	row := table.Entity{PartitionKey: pk, RowKey: rk, Properties: map[string]any{"Stream": stream, "First": first, "Announced": announced}}
	if _, err := events.Submit(context.Background(), pk, []table.Op{{Kind: table.Upsert, Entity: row}}); err != nil {
		t.Fatal(err)
	}
}

// Defect 2: a stream read again from where the feed stands (here: because a leftover marker made
// the first read begin a whole page of events behind) must not stop after an empty first page.
func TestRereadPastAnEmptyFirstPageDispatches(t *testing.T) {
	defer estuite.SetFeedPageSize(100)()
	backend := mem.New(&mem.Options{EmptyPages: true})
	s := openStore(t, backend, nil)
	d := estuite.NewDispatcher(s, nil)
	// 1,164 events of x in the feed, then a page rollover, so that the current page has no marker
	// of x (its progress row holds 1,164).
	for i := 0; i < 12; i++ {
		mustAppend(t, s, "x", make97Events(), nil)
	}
	stepUntilIdle(t, d)
	mustAppend(t, s, "y", make97Events(), nil)
	stepUntilIdle(t, d)
	// A marker left behind by an attempt that announced x's first version, then a new append.
	plantMarker(t, backend, "x", 1, 1)
	mustAppend(t, s, "x", []estuite.EventData{jsonEvent("New", "{}")}, nil)
	for i := 0; i < 5; i++ {
		if _, err := d.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	checkFeedMatchesStreams(t, s, []string{"x", "y"})
}

func make97Events() []estuite.EventData {
	events := make([]estuite.EventData, 97)
	for i := range events {
		events[i] = jsonEvent("E", fmt.Sprintf(`{"i":%d}`, i))
	}
	return events
}

// Defect 3: a dispatcher whose view of the feed page is older than another dispatcher's writes
// must still fence an announced append that never lands (and not report work it cannot do).
func TestOutOfDateDispatcherStillFences(t *testing.T) {
	s, failBatches := storeWithFailingAppends(t)
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	stale := estuite.NewDispatcher(s, &estuite.DispatcherOptions{Clock: clock, FenceAfter: time.Second})
	other := estuite.NewDispatcher(s, &estuite.DispatcherOptions{Clock: clock, FenceAfter: time.Second})
	appendN(t, s, "s", 10)
	stepUntilIdle(t, stale) // stale knows the page with s at version 10
	appendN(t, s, "s", 20)
	stepUntilIdle(t, other) // other writes s up to 30: stale's view is now out of date
	failBatches.Store(true)
	if _, err := s.Append(context.Background(), "s", []estuite.EventData{jsonEvent("Lost", "{}")}, nil); err == nil {
		t.Fatal("append succeeded through a failing batch")
	}
	failBatches.Store(false)
	fenced := false
	for i := 0; i < 10 && !fenced; i++ {
		st, _ := stale.Step(context.Background()) // a step may fail once on the page it knew
		fenced = st.Fenced > 0
		clock.Add(time.Second)
	}
	if !fenced {
		t.Fatal("the out-of-date dispatcher never fenced the stream whose announced append did not land")
	}
	stepUntilIdle(t, stale)
	checkFeedMatchesStreams(t, s, []string{"s"})
}

// Defect 6: a step reads at most MaxStreamsPerStep streams' markers, however many are pending,
// and streams still all take their turn.
func TestStepReadsBoundedMarkers(t *testing.T) {
	backend := mem.New(&mem.Options{PageSize: 50})
	s := openStore(t, backend, nil)
	const streams = 2000
	for i := 0; i < streams; i++ {
		plantMarker(t, backend, fmt.Sprintf("pending-%d", i), 1, 1) // appends that have not landed
	}
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	d := estuite.NewDispatcher(s, &estuite.DispatcherOptions{Clock: clock, MaxStreamsPerStep: 100, FenceAfter: time.Hour})
	before := s.RequestCounts()
	st, err := d.Step(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	used := s.RequestCounts().Sub(before)
	// Four shards' first pages of 50 markers (a step stops reading a shard at its share), then one
	// read per stream.
	if st.Streams != 100 || used.QueryPages > 100+4*2 {
		t.Fatalf("a step of 100 streams out of %d looked at %d streams with %d query pages; want 100 and at most %d", streams, st.Streams, used.QueryPages, 100+8)
	}
	if h := d.Health(); h.Pending != 100 {
		t.Fatalf("Health().Pending = %d after one step; want the 100 streams it saw", h.Pending)
	}
	// Over enough steps every stream is looked at: after the fence delay each is fenced once.
	clock.Add(2 * time.Hour)
	fenced := 0
	for i := 0; i < 2*streams/100+4 && fenced < streams; i++ {
		st, err := d.Step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		fenced += st.Fenced
		clock.Add(2 * time.Hour)
	}
	if fenced != streams {
		t.Fatalf("fenced %d of %d streams", fenced, streams)
	}
	if st, err := d.Step(context.Background()); err != nil || st.Streams != 0 {
		t.Fatalf("step after all were fenced = %+v, %v; want nothing left", st, err)
	}
	if h := d.Health(); h.Pending != 0 || h.OldestPending != 0 {
		t.Fatalf("Health = %+v after the work was done; want nothing pending", h)
	}
}

// Defect 6: what a dispatcher remembers of a stream it saw waiting goes once another dispatcher
// resolved the stream.
func TestForgetsStreamsResolvedElsewhere(t *testing.T) {
	s, failBatches := storeWithFailingAppends(t)
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	d1 := estuite.NewDispatcher(s, &estuite.DispatcherOptions{Clock: clock, FenceAfter: time.Second})
	d2 := estuite.NewDispatcher(s, &estuite.DispatcherOptions{Clock: clock, FenceAfter: time.Second})
	failBatches.Store(true)
	s.Append(context.Background(), "w", []estuite.EventData{jsonEvent("Lost", "{}")}, nil)
	failBatches.Store(false)
	d1.Step(context.Background())
	if h := d1.Health(); h.Pending != 1 {
		t.Fatalf("Health().Pending = %d; want the waiting stream", h.Pending)
	}
	d2.Step(context.Background())
	clock.Add(2 * time.Second)
	if st, _ := d2.Step(context.Background()); st.Fenced != 1 {
		t.Fatalf("d2 step = %+v; want a fence", st)
	}
	clock.Add(time.Minute)
	d1.Step(context.Background())
	if h := d1.Health(); h.Pending != 0 || h.OldestPending != 0 {
		t.Fatalf("Health = %+v; want the stream another dispatcher resolved forgotten", h)
	}
}

// Defect 6: a step reads at most MaxStepBytes of events (as the markers announce them); the rest
// waits for the next steps.
func TestStepReadsBoundedBytes(t *testing.T) {
	s := openStore(t, mem.New(nil), nil)
	const size = 10 << 10
	for i := 0; i < 10; i++ {
		mustAppend(t, s, fmt.Sprintf("big-%d", i), bigEvents(5, size), nil)
	}
	const budget = 3 * 64 << 10
	d := estuite.NewDispatcher(s, &estuite.DispatcherOptions{MaxStepBytes: budget})
	st, err := d.Step(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Events == 0 || st.Events > budget/size || !st.Incomplete {
		t.Fatalf("first step = %+v; want at most %d events of %d bytes, and more left", st, budget/size, size)
	}
	var streams []string
	for i := 0; i < 10; i++ {
		streams = append(streams, fmt.Sprintf("big-%d", i))
	}
	for i := 0; i < 100; i++ {
		if st, err := d.Step(context.Background()); err != nil {
			t.Fatal(err)
		} else if st.Streams == 0 {
			break
		}
	}
	checkFeedMatchesStreams(t, s, streams)
}

// Defect 3, as Start runs it: a started dispatcher whose view of the feed page another dispatcher
// has overtaken fences an announced append that never lands, without spinning meanwhile.
func TestStartedOutOfDateDispatcherFencesWithoutSpinning(t *testing.T) {
	var failBatches atomic.Bool
	backend := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if failBatches.Load() && c.Method == mem.MethodSubmit && c.Table == "estuitestreams" {
			return mem.FailBefore
		}
		return mem.NoFault
	}})
	noRetry := &estuite.Options{Retry: estuite.RetryPolicy{MaxAttempts: 1, BaseDelay: time.Microsecond, MaxDelay: time.Microsecond}}
	s := openStore(t, backend, noRetry)
	elsewhere, err := estuite.Open(context.Background(), backend, noRetry) // another process
	if err != nil {
		t.Fatal(err)
	}
	started := estuite.NewDispatcher(s, &estuite.DispatcherOptions{FenceAfter: 300 * time.Millisecond, PollInterval: 300 * time.Millisecond})
	appendN(t, s, "s", 10)
	if err := started.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer started.Stop()
	waitForFeed(t, s, "s", 10, 3*time.Second)
	// Another process appends, and its dispatcher (stepped by hand, without the lease) writes
	// the events before the started one looks again.
	appendN(t, elsewhere, "s", 20)
	other := estuite.NewDispatcher(elsewhere, nil)
	for len(readFeedAll(t, s)) < 30 {
		other.Step(context.Background())
	}
	failBatches.Store(true)
	if _, err := elsewhere.Append(context.Background(), "s", []estuite.EventData{jsonEvent("Lost", "{}")}, nil); err == nil {
		t.Fatal("append succeeded through a failing batch")
	}
	failBatches.Store(false)
	before := s.RequestCounts()
	waitFor(t, 5*time.Second, func() bool {
		h := started.Health()
		return h.Pending == 0 && h.LastStep.After(time.Now().Add(-time.Second)) && s.RequestCounts().Sub(before).Writes > 0
	})
	time.Sleep(time.Second)
	if n := s.RequestCounts().Sub(before).Total(); n > 1000 {
		t.Fatalf("the dispatcher made %d storage requests in about a second", n)
	}
	// The fence let the next append through on a fresh head.
	if res := mustAppend(t, s, "s", []estuite.EventData{jsonEvent("After", "{}")}, nil); res.LastVersion != 31 {
		t.Fatalf("append after the fence = %+v", res)
	}
	waitForFeed(t, s, "s", 31, 3*time.Second)
	checkFeedMatchesStreams(t, s, []string{"s"})
}
