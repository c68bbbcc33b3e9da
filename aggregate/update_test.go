package aggregate_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/aggregate"
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
	if spent := s.RequestCounts().Sub(before); spent.Batches+spent.Writes+spent.Deletes != 0 {
		t.Fatalf("a failed command wrote: %+v", spent)
	}
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
	if spent := s.RequestCounts().Sub(before); spent.Batches+spent.Writes+spent.Deletes != 0 {
		t.Fatalf("an Update without events wrote: %+v", spent)
	}
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
