package estuite_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/mem"
)

// markerLog watches a mem backend's calls: the dirty-marker writes (early ones carry a CommitId)
// and the append batches of one stream.
type markerLog struct {
	mu       sync.Mutex
	early    int // early marker writes
	ordinary int // ordinary marker writes
	batches  int // append batches of the stream
}

func (l *markerLog) fault(stream string) mem.FaultFunc {
	return func(c mem.Call) mem.Fault {
		l.mu.Lock()
		defer l.mu.Unlock()
		switch {
		case c.Method == mem.MethodSubmit && c.Table == "estuiteevents" && len(c.PartitionKey) > 5 && c.PartitionKey[:5] == "dirty":
			for _, op := range c.Ops {
				if op.Kind != table.Upsert {
					continue
				}
				if _, ok := op.Entity.Properties["CommitId"]; ok {
					l.early++
				} else {
					l.ordinary++
				}
			}
		case c.Method == mem.MethodSubmit && c.Table == "estuitestreams" && c.PartitionKey == stream:
			l.batches++
		}
		return mem.NoFault
	}
}

func (l *markerLog) counts() (early, ordinary, batches int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.early, l.ordinary, l.batches
}

// A command announced early takes two sequential round trips: the marker is written while the
// stream is read (here the marker's write cannot even start before the read has), and the append
// then sends its batch alone. The dispatcher finds the commit row, dispatches, resolves the marker.
func TestEarlyAnnouncedCommandTakesTwoRoundTrips(t *testing.T) {
	ctx := context.Background()
	var armed atomic.Bool
	readStarted := make(chan struct{})
	var once sync.Once
	log := &markerLog{}
	watch := log.fault("acct")
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if armed.Load() {
			switch {
			case c.Method == mem.MethodQuery && c.Table == "estuitestreams" && c.PartitionKey == "acct":
				once.Do(func() { close(readStarted) })
			case c.Method == mem.MethodSubmit && c.Table == "estuiteevents":
				// The early marker waits for the read: a store that wrote it before reading would
				// never read.
				select {
				case <-readStarted:
				case <-time.After(10 * time.Second):
					t.Error("the marker's write waited 10 s for the stream's read: they do not run side by side")
				}
			}
		}
		return watch(c)
	}})
	s := openStore(t, b, nil)
	appendN(t, s, "acct", 3)
	d := estuite.NewDispatcher(s, nil)
	stepUntilIdle(t, d)
	s.ForgetHeads() // a process that has not met the stream: the read is the head's only source
	_, ordinaryBefore, batchesBefore := log.counts()

	armed.Store(true)
	before := s.RequestCounts()
	an, err := s.Announce(ctx, "acct", "cmd-1")
	if err != nil {
		t.Fatal(err)
	}
	read, err := s.Read(ctx, "acct", nil)
	if err != nil {
		t.Fatal(err)
	}
	afterRead := s.RequestCounts()
	if err := an.WaitStored(); err != nil {
		t.Fatalf("early marker: %v", err)
	}
	armed.Store(false)
	atAppend := s.RequestCounts()
	res, err := s.Append(ctx, "acct", []estuite.EventData{jsonEvent("Deposited", `{"amount":5}`)},
		&estuite.AppendOptions{Expected: estuite.Exactly(read.Version), Announcement: an})
	if err != nil || res.FirstVersion != 4 || res.CommitID != "cmd-1" {
		t.Fatalf("append = %+v, %v; want version 4 with the announcement's commit ID", res, err)
	}
	spent := s.RequestCounts().Sub(atAppend)
	early, ordinary, batches := log.counts()
	if spent.Total() != 1 || spent.Batches != 1 || ordinary != ordinaryBefore || early != 1 || batches != batchesBefore+1 {
		t.Fatalf("the append made %+v (ordinary markers %d, early %d, batches %d); want its batch alone", spent, ordinary-ordinaryBefore, early, batches-batchesBefore)
	}
	if readCost := afterRead.Sub(before); readCost.Queries != 1 {
		t.Fatalf("the read cost %+v; want one query", readCost)
	}

	atStep := s.RequestCounts()
	st, err := d.Step(ctx)
	if err != nil || st.Events != 1 || st.Resolved != 1 || st.Fenced != 0 {
		t.Fatalf("step = %+v, %v; want the event dispatched and the early marker resolved without a fence", st, err)
	}
	if pr := s.RequestCounts().Sub(atStep).PointReads; pr != 1 {
		t.Fatalf("the step made %d point reads; want one, the commit row", pr)
	}
	stepUntilIdle(t, d)
	checkFeedMatchesStreams(t, s, []string{"acct"})
}

// A withdrawn announcement leaves no marker behind and costs the stream no fence, on every
// backend (on the embedded store, announcing writes nothing at all).
func TestWithdrawnAnnouncementLeavesNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		ctx := context.Background()
		appendN(t, s, "quiet", 2)
		d := estuite.NewDispatcher(s, nil)
		stepUntilIdle(t, d)
		an, err := s.Announce(ctx, "quiet", "nothing-to-do")
		if err != nil {
			t.Fatal(err)
		}
		if err := an.WaitStored(); err != nil {
			t.Fatal(err)
		}
		an.Withdraw()
		deadline := time.Now().Add(10 * time.Second)
		for {
			st, err := d.Step(ctx)
			if err != nil || st.Fenced != 0 {
				t.Fatalf("step = %+v, %v; want no fence", st, err)
			}
			if st.Streams == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the withdrawn marker was not deleted within 10 s")
			}
			time.Sleep(5 * time.Millisecond)
		}
		// The stream works on as before.
		mustAppend(t, s, "quiet", []estuite.EventData{jsonEvent("After", "{}")}, &estuite.AppendOptions{Expected: estuite.Exactly(2)})
		stepUntilIdle(t, d)
		checkFeedMatchesStreams(t, s, []string{"quiet"})
	})
}

// An announcement that is neither used nor withdrawn (a process that died while it read) is
// fenced away once the dispatcher has seen it for FenceAfter and twice its writer's window, and
// not before.
func TestAbandonedAnnouncementIsFencedAfterFenceAfter(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, mem.New(nil), nil)
	appendN(t, s, "left", 1)
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	d := estuite.NewDispatcher(s, &estuite.DispatcherOptions{Clock: clock, FenceAfter: time.Second})
	stepUntilIdle(t, d)
	atIdle := s.RequestCounts()
	if _, err := d.Step(ctx); err != nil {
		t.Fatal(err)
	}
	idle := s.RequestCounts().Sub(atIdle)
	an, err := s.Announce(ctx, "left", "died-reading")
	if err != nil {
		t.Fatal(err)
	}
	if err := an.WaitStored(); err != nil {
		t.Fatal(err)
	}
	atStep := s.RequestCounts()
	if st, err := d.Step(ctx); err != nil || st.Streams != 1 || st.Fenced != 0 || st.Resolved != 0 {
		t.Fatalf("first step = %+v, %v; want the marker seen and kept", st, err)
	}
	if spent := s.RequestCounts().Sub(atStep); spent.Queries != idle.Queries || spent.PointReads != idle.PointReads+1 || spent.Total() != idle.Total()+1 {
		t.Fatalf("a step that finds only a young early marker made %+v; want the marker scan and the commit row's read only", spent)
	}
	// FenceAfter is 1 s, but the writer's window (the default, 1 s, recorded on the marker) asks
	// for twice that.
	clock.Add(1500 * time.Millisecond)
	if st, _ := d.Step(ctx); st.Fenced != 0 || st.Resolved != 0 || st.Waiting != 1 {
		t.Fatalf("step after FenceAfter, before twice the writer's window = %+v; want no fence", st)
	}
	clock.Add(500 * time.Millisecond)
	if st, err := d.Step(ctx); err != nil || st.Fenced != 1 || st.Resolved != 1 {
		t.Fatalf("step after twice the window = %+v, %v; want the head fenced and the marker gone", st, err)
	}
	if st, _ := d.Step(ctx); st.Streams != 0 {
		t.Fatalf("a marker was left: %+v", st)
	}
	mustAppend(t, s, "left", []estuite.EventData{jsonEvent("After", "{}")}, &estuite.AppendOptions{Expected: estuite.Exactly(1)})
	stepUntilIdle(t, d)
	checkFeedMatchesStreams(t, s, []string{"left"})
}

// An append sent after the announcement's window writes a marker of its own: the dispatcher may
// already have fenced the early one away.
func TestAppendAfterTheAnnounceWindowWritesItsOwnMarker(t *testing.T) {
	ctx := context.Background()
	log := &markerLog{}
	// The window is measured on the monotonic clock, whatever Options.Now says (here: frozen).
	frozen := time.Unix(1e9, 0)
	s := openStore(t, mem.New(&mem.Options{Faults: log.fault("late")}), &estuite.Options{Now: func() time.Time { return frozen }, AnnounceWindow: 20 * time.Millisecond})
	an, err := s.Announce(ctx, "late", "slow-command")
	if err != nil {
		t.Fatal(err)
	}
	if err := an.WaitStored(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(25 * time.Millisecond)
	mustAppend(t, s, "late", []estuite.EventData{jsonEvent("A", "{}")}, &estuite.AppendOptions{Announcement: an})
	if early, ordinary, _ := log.counts(); early != 1 || ordinary != 1 {
		t.Fatalf("early markers %d, ordinary %d; want the late append to write its own", early, ordinary)
	}
	an.Withdraw()
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	checkFeedMatchesStreams(t, s, []string{"late"})
}

// A fence that another marker's wait brings about does not take an early marker seen for less
// than FenceAfter: the append relying on it may read the fenced head and land after the fence.
func TestFenceLeavesYoungEarlyMarkers(t *testing.T) {
	ctx := context.Background()
	s, failBatches := storeWithFailingAppends(t)
	appendN(t, s, "acct", 1)
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	d := estuite.NewDispatcher(s, &estuite.DispatcherOptions{Clock: clock, FenceAfter: time.Second})
	stepUntilIdle(t, d)
	// A writer that died between its marker and its batch: an ordinary marker for version 2.
	failBatches.Store(true)
	if _, err := s.Append(ctx, "acct", []estuite.EventData{jsonEvent("Lost", "{}")}, nil); err == nil {
		t.Fatal("append succeeded through a failing batch")
	}
	failBatches.Store(false)
	if st, _ := d.Step(ctx); st.Fenced != 0 {
		t.Fatalf("first step fenced: %+v", st)
	}
	clock.Add(900 * time.Millisecond)
	// Another command announces now, and is slow to decide.
	an, err := s.Announce(ctx, "acct", "slow")
	if err != nil {
		t.Fatal(err)
	}
	if err := an.WaitStored(); err != nil {
		t.Fatal(err)
	}
	if st, _ := d.Step(ctx); st.Fenced != 0 {
		t.Fatalf("step before FenceAfter fenced: %+v", st)
	}
	clock.Add(200 * time.Millisecond)
	if st, err := d.Step(ctx); err != nil || st.Fenced != 1 || st.Resolved != 1 {
		t.Fatalf("step = %+v, %v; want the head fenced and only the dead writer's marker gone", st, err)
	}
	// The slow command reads the fenced head and appends, relying on its marker.
	read, err := s.Read(ctx, "acct", nil)
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, "acct", []estuite.EventData{jsonEvent("Decided", "{}")}, &estuite.AppendOptions{Expected: estuite.Exactly(read.Version), Announcement: an})
	stepUntilIdle(t, d)
	checkFeedMatchesStreams(t, s, []string{"acct"})
}

// An announcement must match its append: the same store, stream and commit ID.
func TestAnnouncementMustMatchItsAppend(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, mem.New(nil), nil)
	other := openStore(t, mem.New(nil), nil)
	an, err := s.Announce(ctx, "a", "c1")
	if err != nil {
		t.Fatal(err)
	}
	defer an.Withdraw()
	ev := []estuite.EventData{jsonEvent("E", "{}")}
	for name, tc := range map[string]struct {
		s      *estuite.Store
		stream string
		opts   estuite.AppendOptions
	}{
		"other stream":    {s, "b", estuite.AppendOptions{Announcement: an}},
		"other commit ID": {s, "a", estuite.AppendOptions{CommitID: "c2", Announcement: an}},
		"other store":     {other, "a", estuite.AppendOptions{Announcement: an}},
	} {
		if _, err := tc.s.Append(ctx, tc.stream, ev, &tc.opts); !errors.Is(err, estuite.ErrInvalidInput) {
			t.Errorf("%s: append = %v; want ErrInvalidInput", name, err)
		}
	}
	if _, err := s.Read(ctx, "a", nil); !errors.Is(err, estuite.ErrStreamNotFound) {
		t.Fatalf("after the refused appends, Read = %v; want ErrStreamNotFound", err)
	}
	if _, err := s.Announce(ctx, "a", ""); !errors.Is(err, estuite.ErrInvalidInput) {
		t.Fatalf("Announce without a commit ID = %v; want ErrInvalidInput", err)
	}
}

// On every backend an append that relies on its announcement is one request — its batch — once
// the stream has been read: the marker was written beside the read (on the embedded store it goes
// in the batch's own transaction, and announcing writes nothing).
func TestAnnouncedAppendIsOneRequestOnEveryBackend(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		ctx := context.Background()
		appendN(t, s, "cmd", 4)
		before := s.RequestCounts()
		an, err := s.Announce(ctx, "cmd", "command-5")
		if err != nil {
			t.Fatal(err)
		}
		read, err := s.Read(ctx, "cmd", nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, err := range read.Events {
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := an.WaitStored(); err != nil {
			t.Fatal(err)
		}
		atAppend := s.RequestCounts()
		res := mustAppend(t, s, "cmd", []estuite.EventData{jsonEvent("Done", "{}")}, &estuite.AppendOptions{Expected: estuite.Exactly(read.Version), Announcement: an})
		an.Withdraw()
		if res.LastVersion != 5 {
			t.Fatalf("append = %+v", res)
		}
		if spent := s.RequestCounts().Sub(atAppend); spent.Total() != 1 || spent.Batches != 1 {
			t.Fatalf("the announced append made %+v; want its batch alone", spent)
		}
		// The whole command: the read's one query (of several pages on mem-paged), the batch, and
		// apart from the embedded store the early marker.
		spent := s.RequestCounts().Sub(before)
		if spent.Queries != 1 || spent.PointReads != 0 || spent.Batches != 1 || spent.Writes > 1 || spent.Deletes != 0 {
			t.Fatalf("the command made %+v; want the query, the marker and the batch", spent)
		}
		stepUntilIdle(t, estuite.NewDispatcher(s, nil))
		checkFeedMatchesStreams(t, s, []string{"cmd"})
	})
}

// An early marker is written so that a dispatcher of an earlier release refuses it as malformed
// (First 0) instead of taking it for an ordinary marker it could delete while an append relies
// on it; it records its writer's window.
func TestEarlyMarkerRowShape(t *testing.T) {
	ctx := context.Background()
	b := mem.New(nil)
	s := openStore(t, b, &estuite.Options{AnnounceWindow: 700 * time.Millisecond})
	an, err := s.Announce(ctx, "shape", "c-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := an.WaitStored(); err != nil {
		t.Fatal(err)
	}
	ev, err := b.OpenTable(ctx, "estuiteevents")
	if err != nil {
		t.Fatal(err)
	}
	page, err := ev.Scan(ctx, table.ScanQuery{FromPartition: "dirty", ToPartition: "dirtz"})
	if err != nil || len(page.Entities) != 1 {
		t.Fatalf("markers: %d, %v; want one", len(page.Entities), err)
	}
	p := page.Entities[0].Properties
	if p["First"] != int64(0) || p["CommitId"] != "c-1" || p["AnnounceWindowMs"] != int64(700) || p["Announced"] != int64(1<<62) {
		t.Fatalf("early marker properties: %v", p)
	}
	an.Withdraw()
}

// waitLog is a fake clock that records how long the dispatcher's loop asks to wait.
type waitLog struct {
	fakeClock
	mu    sync.Mutex
	waits []time.Duration
}

func (c *waitLog) Wait(ctx context.Context, d time.Duration, wake <-chan struct{}) (bool, error) {
	c.mu.Lock()
	c.waits = append(c.waits, d)
	c.mu.Unlock()
	return c.fakeClock.Wait(ctx, d, wake)
}

// A step that finds only early announcements whose appends have not landed looks again at the
// poll interval, not at a quarter of FenceAfter: those appends land within a round trip or two,
// and one from another process wakes no one.
func TestStartedDispatcherPollsSoonAfterUnlandedEarlyMarkers(t *testing.T) {
	ctx := context.Background()
	b := mem.New(nil)
	s, writer := openStore(t, b, nil), openStore(t, b, nil)
	an, err := writer.Announce(ctx, "soon", "c-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := an.WaitStored(); err != nil {
		t.Fatal(err)
	}
	defer an.Withdraw()
	clock := &waitLog{fakeClock: fakeClock{now: time.Unix(1e9, 0)}}
	steps := make(chan estuite.DispatchStats, 100)
	d := estuite.NewDispatcher(s, &estuite.DispatcherOptions{Clock: clock, PollInterval: 30 * time.Millisecond, FenceAfter: 4 * time.Second, LeaseDuration: time.Hour,
		OnStep: func(st estuite.DispatchStats, err error) {
			select {
			case steps <- st:
			default:
			}
		}})
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	for st := range steps {
		if st.Streams == 1 && st.Waiting == 1 {
			break
		}
	}
	<-steps // the next step: the loop has waited once since
	clock.mu.Lock()
	defer clock.mu.Unlock()
	if last := clock.waits[len(clock.waits)-1]; last != 30*time.Millisecond {
		t.Fatalf("after a step with only an unlanded early marker the loop waited %v (all: %v); want the poll interval", last, clock.waits)
	}
}
