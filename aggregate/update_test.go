package aggregate_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/aggregate"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/mem"
)

var fastRetry = aggregate.RetryPolicy{MaxAttempts: 5, Backoff: time.Microsecond, MaxBackoff: time.Millisecond}

func openAccount(t *testing.T, repo *aggregate.Repository[*account], id string) {
	t.Helper()
	if _, err := repo.Update(context.Background(), id, func(a *account) error { return a.Open("ada") }, nil); err != nil {
		t.Fatal(err)
	}
}

// depositElsewhere deposits n into account id as another writer would, between a command's
// load and its save.
func depositElsewhere(t *testing.T, repo *aggregate.Repository[*account], id string, n int) {
	t.Helper()
	ctx := context.Background()
	other, err := repo.Load(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	other.Deposit(n)
	if _, err := repo.Save(ctx, other, nil); err != nil {
		t.Fatal(err)
	}
}

func TestUpdateCreatesAnAggregateThatHasNoEvents(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	repo := newRepo(s, accountRegistry(), nil)
	a, err := repo.Update(ctx, "1", func(a *account) error {
		if a.Version() != 0 || a.ID() != "1" {
			t.Errorf("command ran on version %d of %q, want a fresh aggregate 1", a.Version(), a.ID())
		}
		return a.Open("ada")
	}, nil)
	if err != nil || a.Version() != 1 || a.State.Owner != "ada" {
		t.Fatalf("Update: version %d, owner %q, %v", a.Version(), a.State.Owner, err)
	}
	// A second "create" runs on the stored aggregate, and the command refuses.
	if _, err := repo.Update(ctx, "1", func(a *account) error { return a.Open("bob") }, nil); err == nil {
		t.Fatal("opening an open account again succeeded")
	}
}

func TestUpdateRerunsTheCommandOnTheNewStateAfterAConflict(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		ctx := context.Background()
		repo := newRepo(s, accountRegistry(), &aggregate.Options{StreamPrefix: "account-", Retry: fastRetry})
		openAccount(t, repo, "1")

		var seen []int
		a, err := repo.Update(ctx, "1", func(a *account) error {
			seen = append(seen, a.State.Balance)
			if len(seen) == 1 {
				depositElsewhere(t, repo, "1", 100)
			}
			// A withdrawal of 60 is refused on the first state and allowed on the second.
			if err := a.Withdraw(60); err != nil && len(seen) > 1 {
				return err
			}
			return a.Deposit(1)
		}, nil)
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		if len(seen) != 2 || seen[0] != 0 || seen[1] != 100 {
			t.Fatalf("the command saw balances %v, want [0 100]", seen)
		}
		if a.Version() != 4 || a.State.Balance != 41 || len(a.Uncommitted()) != 0 {
			t.Fatalf("Update returned version %d, balance %d, %d uncommitted; want 4, 41, 0", a.Version(), a.State.Balance, len(a.Uncommitted()))
		}
		if got, _ := repo.Load(ctx, "1"); got.Version() != 4 || got.State.Balance != 41 {
			t.Fatalf("stored: version %d, balance %d; want 4 and 41", got.Version(), got.State.Balance)
		}
	})
}

func TestUpdateGivesUpAfterMaxAttemptsWithTheConflict(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	repo := newRepo(s, accountRegistry(), &aggregate.Options{StreamPrefix: "account-", Retry: fastRetry})
	openAccount(t, repo, "1")

	runs := 0
	_, err := repo.Update(ctx, "1", func(a *account) error {
		runs++
		depositElsewhere(t, repo, "1", 1) // every attempt loses the race
		return a.Deposit(1000)
	}, nil)
	var wrong *estuite.WrongExpectedVersionError
	if !errors.As(err, &wrong) || wrong.Actual != int64(1+runs) {
		t.Fatalf("Update that always conflicts: %v", err)
	}
	if runs != fastRetry.MaxAttempts {
		t.Fatalf("the command ran %d times, want MaxAttempts = %d", runs, fastRetry.MaxAttempts)
	}
	if got, _ := repo.Load(ctx, "1"); got.State.Balance != runs {
		t.Fatalf("balance %d: a conflicting attempt wrote (want %d, the other writer's)", got.State.Balance, runs)
	}
}

func TestUpdateCommandErrorAbortsWithoutWriting(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	repo := newRepo(s, accountRegistry(), nil)
	openAccount(t, repo, "1")

	before := s.RequestCounts()
	_, err := repo.Update(ctx, "1", func(a *account) error {
		a.Deposit(5) // raised, then the command fails: nothing may be written
		return a.Withdraw(1000)
	}, nil)
	if !errors.Is(err, errInsufficientFunds) {
		t.Fatalf("Update with a failing command: %v, want the command's error", err)
	}
	if spent := s.RequestCounts().Sub(before); spent.Batches != 0 {
		t.Fatalf("a failed command sent an append batch: %+v", spent)
	}
	announcementWithdrawn(t, s)
	if got, _ := repo.Load(ctx, "1"); got.Version() != 1 {
		t.Fatalf("version %d after a failed command, want 1", got.Version())
	}
}

func TestUpdateWithoutEventsWritesNothing(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	repo := newRepo(s, accountRegistry(), nil)
	openAccount(t, repo, "1")

	before := s.RequestCounts()
	a, err := repo.Update(ctx, "1", func(a *account) error { return nil }, nil)
	if err != nil || a.Version() != 1 {
		t.Fatalf("Update without events: version %d, %v", a.Version(), err)
	}
	if spent := s.RequestCounts().Sub(before); spent.Batches != 0 {
		t.Fatalf("an Update without events sent an append batch: %+v", spent)
	}
	announcementWithdrawn(t, s)
	// Not even a command on a missing aggregate creates its stream.
	if _, err := repo.Update(ctx, "2", func(a *account) error { return nil }, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Version(ctx, "account-2"); !errors.Is(err, estuite.ErrStreamNotFound) {
		t.Fatalf("an Update without events created a stream: %v", err)
	}
}

func TestUpdateStopsWaitingWhenTheContextEnds(t *testing.T) {
	s := memStore(t)
	repo := newRepo(s, accountRegistry(), &aggregate.Options{StreamPrefix: "account-",
		Retry: aggregate.RetryPolicy{MaxAttempts: 3, Backoff: time.Hour, MaxBackoff: time.Hour}})
	openAccount(t, repo, "1")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := repo.Update(ctx, "1", func(a *account) error {
			depositElsewhere(t, repo, "1", 1)
			return a.Deposit(1)
		}, nil)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond) // the first attempt conflicts and the hour-long wait begins
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Update cancelled in its backoff: %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Update kept waiting after its context ended")
	}
}

func TestRetriedUpdateWithACommitIDWritesOnce(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	repo := newRepo(s, accountRegistry(), nil)
	openAccount(t, repo, "1")

	deposit := func(a *account) error { return a.Deposit(25) }
	opts := &aggregate.SaveOptions{CommitID: "deposit-req-7"}
	first, err := repo.Update(ctx, "1", deposit, opts)
	if err != nil {
		t.Fatal(err)
	}
	// The caller did not get the answer and sends the command again.
	again, err := repo.Update(ctx, "1", deposit, opts)
	if err != nil {
		t.Fatalf("retried Update: %v", err)
	}
	if first.Version() != 2 || again.Version() != 2 || again.State.Balance != 25 || len(again.Uncommitted()) != 0 {
		t.Fatalf("retried Update: versions %d and %d, balance %d; want 2, 2, 25", first.Version(), again.Version(), again.State.Balance)
	}
	if got, _ := repo.Load(ctx, "1"); got.Version() != 2 {
		t.Fatalf("version %d after a retried command, want 2", got.Version())
	}
}

func TestConcurrentUpdatesAllLand(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		ctx := context.Background()
		repo := newRepo(s, accountRegistry(), &aggregate.Options{StreamPrefix: "account-",
			Retry: aggregate.RetryPolicy{MaxAttempts: 100, Backoff: 100 * time.Microsecond, MaxBackoff: 2 * time.Millisecond}})
		openAccount(t, repo, "1")

		const writers = 8
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for range writers {
			wg.Go(func() {
				if _, err := repo.Update(ctx, "1", func(a *account) error { return a.Deposit(1) }, nil); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("concurrent Update: %v", err)
		}
		if got, _ := repo.Load(ctx, "1"); got.Version() != 1+writers || got.State.Balance != writers {
			t.Fatalf("after %d concurrent deposits: version %d, balance %d", writers, got.Version(), got.State.Balance)
		}
	})
}

// announcementWithdrawn checks that an Update that saved nothing took back the dirty marker it
// announced while it loaded: soon no marker is left, and the dispatcher fenced no head for it.
func announcementWithdrawn(t *testing.T, s *estuite.Store) {
	t.Helper()
	d := estuite.NewDispatcher(s, nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := d.Step(context.Background())
		if err != nil || st.Fenced != 0 {
			t.Fatalf("dispatcher step = %+v, %v; want no fence", st, err)
		}
		if st.Streams == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the announcement's marker was still there after 10 s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Update announces its append while it loads: the marker's write and the stream's read are in
// flight together (here the marker's write cannot start before the read has), and the save then
// sends its batch without a marker of its own.
func TestUpdateAnnouncesWhileItLoads(t *testing.T) {
	ctx := context.Background()
	var armed atomic.Bool
	var markers, ordinary atomic.Int64
	readStarted := make(chan struct{})
	var once sync.Once
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if !armed.Load() {
			return mem.NoFault
		}
		switch {
		case c.Method == mem.MethodQuery && c.Table == "estuitestreams":
			once.Do(func() { close(readStarted) })
		case c.Method == mem.MethodSubmit && c.Table == "estuiteevents" && strings.HasPrefix(c.PartitionKey, "dirty"):
			for _, op := range c.Ops {
				if op.Kind == table.Upsert {
					markers.Add(1)
					if _, early := op.Entity.Properties["CommitId"]; !early {
						ordinary.Add(1)
					}
				}
			}
			select {
			case <-readStarted:
			case <-time.After(10 * time.Second):
				t.Error("the marker's write waited 10 s for the load: they do not run side by side")
			}
		}
		return mem.NoFault
	}})
	s, err := estuite.Open(ctx, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	repo := newRepo(s, accountRegistry(), nil)
	openAccount(t, repo, "1")
	armed.Store(true)
	a, err := repo.Update(ctx, "1", func(a *account) error { return a.Deposit(5) }, nil)
	armed.Store(false)
	if err != nil || a.Version() != 2 {
		t.Fatalf("Update: version %d, %v", a.Version(), err)
	}
	if markers.Load() != 1 || ordinary.Load() != 0 {
		t.Fatalf("the update wrote %d markers, %d of them ordinary; want its early one only", markers.Load(), ordinary.Load())
	}
	d := estuite.NewDispatcher(s, nil)
	for i := 0; ; i++ {
		st, err := d.Step(ctx)
		if err != nil || st.Fenced != 0 {
			t.Fatalf("step = %+v, %v; want no fence", st, err)
		}
		if st.Streams == 0 {
			break
		}
		if i == 10 {
			t.Fatal("the dispatcher did not become idle")
		}
	}
	if feed, err := s.ReadFeed(ctx, nil); err != nil || len(feed.Events) != 2 {
		t.Fatalf("feed: %d events, %v; want the opening and the deposit", len(feed.Events), err)
	}
}
