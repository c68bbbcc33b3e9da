package estuite_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table/mem"
)

// A caller waits for its append to reach the feed without a subscription: the position returned
// holds its last event. With the dispatcher in the same process the wait is told of the write;
// asked again, it answers from memory.
func TestWaitDispatchedReturnsThePositionOfTheAppend(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		mustAppend(t, s, "other", countedEvents(1, 3), nil)
		d := estuite.NewDispatcher(s, &estuite.DispatcherOptions{Linger: time.Millisecond})
		if err := d.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer d.Stop()
		res := mustAppend(t, s, "mine", countedEvents(1, 4), nil)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var pos int64
		spent := requestsOf(s, func() {
			var err error
			if pos, err = s.WaitDispatched(ctx, "mine", res.LastVersion); err != nil {
				t.Fatal(err)
			}
		})
		// The dispatcher's own requests count too: bound the waiter's by what a look costs.
		t.Logf("wait: %+v requests (the dispatcher's included)", spent)
		page, err := s.ReadFeed(context.Background(), &estuite.FeedOptions{After: pos - 1, Limit: 1})
		if err != nil || len(page.Events) != 1 || page.Events[0].Stream != "mine" || page.Events[0].Version != 4 {
			t.Fatalf("position %d holds %+v (%v); want mine version 4", pos, page.Events, err)
		}
		if err := d.Stop(); err != nil {
			t.Fatal(err)
		}
		again := requestsOf(s, func() {
			for v := int64(1); v <= 4; v++ {
				p, err := s.WaitDispatched(ctx, "mine", v)
				if err != nil || p != pos-4+v {
					t.Errorf("version %d: position %d, %v; want %d", v, p, err, pos-4+v)
				}
			}
		})
		if again.Total() != 0 {
			t.Errorf("waits for versions this process dispatched: %+v requests; want none", again)
		}
	})
}

// Another process's dispatcher: the waiter finds every version's exact position in storage —
// the stream's last in a page, one written in a run with it, one in an earlier page, one whose
// run was interleaved with other streams' events — and waits, polling, for a version not yet
// dispatched.
func TestWaitDispatchedFindsOtherProcessesFeedWrites(t *testing.T) {
	defer estuite.SetFeedPageSize(7)()
	b := mem.New(nil)
	writer := openStore(t, b, nil)
	dispatcher := estuite.NewDispatcher(openStore(t, b, nil), nil)
	mustAppend(t, writer, "old", countedEvents(1, 2), nil) // only in the first page
	for round := 0; round < 6; round++ {
		for i, stream := range []string{"a", "b", "c"} {
			if (round+i)%3 != 2 {
				mustAppend(t, writer, stream, countedEvents(round*10, 1+(round+i)%3), nil)
			}
		}
		if round%2 == 1 {
			stepUntilIdle(t, dispatcher)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A store that knows nothing of the feed: the page hint, the headers, the stream's progress
	// row (it has no events in the current page), and the markers of the pages before.
	cold := openStore(t, b, nil)
	waiter := openStore(t, b, nil)
	feed := readFeedAll(t, waiter)
	for _, ev := range feed {
		if ev.Stream != "old" {
			continue
		}
		if pos, err := cold.WaitDispatched(ctx, "old", ev.Version); err != nil || pos != ev.Position {
			t.Errorf("old version %d: position %d, %v; want %d", ev.Version, pos, err, ev.Position)
		}
	}
	if len(feed) < 15 {
		t.Fatalf("feed of %d events; want a few pages", len(feed))
	}
	for _, ev := range feed {
		var pos int64
		d := requestsOf(waiter, func() {
			var err error
			if pos, err = waiter.WaitDispatched(ctx, ev.Stream, ev.Version); err != nil {
				t.Fatalf("%s version %d: %v", ev.Stream, ev.Version, err)
			}
		})
		if pos != ev.Position {
			t.Errorf("%s version %d: position %d; the feed holds it at %d", ev.Stream, ev.Version, pos, ev.Position)
		}
		if d.Total() > 12 || d.Batches+d.Writes+d.Deletes != 0 {
			t.Errorf("%s version %d: %+v requests", ev.Stream, ev.Version, d)
		}
	}

	// Not dispatched yet: the waiter polls until another process's dispatcher writes it.
	res := mustAppend(t, writer, "b", countedEvents(100, 2), nil)
	got := make(chan error, 1)
	var pos int64
	go func() {
		var err error
		pos, err = waiter.WaitDispatched(ctx, "b", res.LastVersion)
		got <- err
	}()
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-got:
		t.Fatalf("wait returned before the dispatch: %d, %v", pos, err)
	default:
	}
	stepUntilIdle(t, dispatcher)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if feed := readFeedAll(t, waiter); feed[len(feed)-1].Position != pos || feed[len(feed)-1].Version != res.LastVersion {
		t.Fatalf("position %d; the feed ends with %+v", pos, feed[len(feed)-1])
	}
}

// A version dispatched in a step before its stream's last, with another stream's events between:
// neither the marker nor a run from it says where it is, so the waiter reads the feed page; and
// the stream's pages need not follow each other.
func TestWaitDispatchedFindsAVersionOutsideItsStreamsLastRun(t *testing.T) {
	defer estuite.SetFeedPageSize(3)()
	b := mem.New(nil)
	writer := openStore(t, b, nil)
	dispatcher := estuite.NewDispatcher(writer, nil)
	// Page 0: a1, b1, a2. Page 1: b2, b3, b4. Page 2: a3.
	for _, step := range []struct {
		stream string
		n      int
	}{{"a", 1}, {"b", 1}, {"a", 1}, {"b", 3}, {"a", 1}} {
		mustAppend(t, writer, step.stream, countedEvents(1, step.n), nil)
		stepUntilIdle(t, dispatcher)
	}
	waiter := openStore(t, b, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for v, want := range []int64{1, 3, 7} {
		var pos int64
		d := requestsOf(waiter, func() {
			var err error
			if pos, err = waiter.WaitDispatched(ctx, "a", int64(v+1)); err != nil {
				t.Fatal(err)
			}
		})
		if pos != want {
			t.Errorf("a version %d: position %d; want %d", v+1, pos, want)
		}
		t.Logf("a version %d: %+v requests", v+1, d)
	}
}

func TestWaitDispatchedRefusesWhatIsNotCommitted(t *testing.T) {
	s := openStore(t, mem.New(nil), nil)
	ctx := context.Background()
	var ie *estuite.InvalidInputError
	if _, err := s.WaitDispatched(ctx, "s", 0); !errors.As(err, &ie) {
		t.Errorf("version 0: %v; want an *InvalidInputError", err)
	}
	if _, err := s.WaitDispatched(ctx, "never", 1); !errors.Is(err, estuite.ErrStreamNotFound) {
		t.Errorf("stream never written: %v; want ErrStreamNotFound", err)
	}
	mustAppend(t, s, "s", countedEvents(1, 2), nil)
	if _, err := s.WaitDispatched(ctx, "s", 3); !errors.As(err, &ie) {
		t.Errorf("version past the head: %v; want an *InvalidInputError", err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := s.WaitDispatched(short, "s", 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("no dispatcher: %v; want the context's deadline", err)
	}
}

// DispatcherOptions.Linger is how long a woken dispatcher waits before it steps.
func TestDispatcherLingerIsAnOption(t *testing.T) {
	s := openStore(t, mem.New(nil), nil)
	var ie *estuite.InvalidInputError
	if err := estuite.NewDispatcher(s, &estuite.DispatcherOptions{Linger: -time.Millisecond}).Start(context.Background()); !errors.As(err, &ie) {
		t.Fatalf("negative linger: %v; want an *InvalidInputError", err)
	}
	for _, linger := range []time.Duration{0, 300 * time.Millisecond} {
		t.Run(fmt.Sprint(linger), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := openStore(t, mem.New(nil), nil)
				stepped := make(chan time.Time, 100)
				d := estuite.NewDispatcher(s, &estuite.DispatcherOptions{Linger: linger, PollInterval: time.Hour, MaxPollInterval: time.Hour,
					OnStep: func(st estuite.DispatchStats, err error) {
						if st.Events > 0 {
							stepped <- time.Now()
						}
					}})
				if err := d.Start(t.Context()); err != nil {
					t.Fatal(err)
				}
				defer d.Stop()
				synctest.Wait() // the first step has run and the dispatcher waits
				start := time.Now()
				mustAppend(t, s, "lingered", countedEvents(1, 1), nil)
				at := <-stepped
				want := linger
				if want == 0 {
					want = estuite.DefaultLinger
				}
				if waited := at.Sub(start); waited < want || waited > want+time.Millisecond {
					t.Errorf("the step came %v after the append; want the linger, %v", waited, want)
				}
			})
		})
	}
}
