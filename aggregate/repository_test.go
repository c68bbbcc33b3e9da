package aggregate_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"testing"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/aggregate"
)

func TestLoadOfAnAggregateWithoutEventsIsNotFound(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		repo := newRepo(s, accountRegistry(), nil)
		_, err := repo.Load(context.Background(), "nobody")
		if !errors.Is(err, aggregate.ErrNotFound) {
			t.Fatalf("Load of a missing aggregate: %v, want ErrNotFound", err)
		}
	})
}

func TestSaveThenLoadReturnsTheStateAtTheStoredVersion(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		ctx := context.Background()
		repo := newRepo(s, accountRegistry(), nil)
		a := repo.New("1")
		a.Open("ada")
		a.Deposit(10)
		a.Deposit(5)
		if a.Version() != 0 || len(a.Uncommitted()) != 3 {
			t.Fatalf("before Save: version %d, %d uncommitted; want 0 and 3", a.Version(), len(a.Uncommitted()))
		}
		res, err := repo.Save(ctx, a, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.FirstVersion != 1 || res.LastVersion != 3 || a.Version() != 3 || len(a.Uncommitted()) != 0 {
			t.Fatalf("after Save: result %+v, version %d, %d uncommitted", res, a.Version(), len(a.Uncommitted()))
		}
		a.Withdraw(7)
		if _, err := repo.Save(ctx, a, nil); err != nil {
			t.Fatal(err)
		}

		got, err := repo.Load(ctx, "1")
		if err != nil {
			t.Fatal(err)
		}
		if got.ID() != "1" || got.Version() != 4 || len(got.Uncommitted()) != 0 {
			t.Fatalf("Load: ID %q, version %d, %d uncommitted", got.ID(), got.Version(), len(got.Uncommitted()))
		}
		want := accountState{Owner: "ada", Open: true, Balance: 8, Deposits: 2, Amounts: []int{10, 5, -7}, ByAmount: map[int]int{10: 1, 5: 1}}
		if !reflect.DeepEqual(got.State, want) {
			t.Fatalf("Load: state %+v, want %+v", got.State, want)
		}
		if types := storedTypes(t, s, "account-1"); !slices.Equal(types, []string{"AccountOpened", "MoneyDeposited", "MoneyDeposited", "MoneyWithdrawn"}) {
			t.Fatalf("stream account-1 holds %v", types)
		}
	})
}

func TestSaveOfAStaleAggregateIsTheStoresWrongExpectedVersionError(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		ctx := context.Background()
		repo := newRepo(s, accountRegistry(), nil)
		a := repo.New("1")
		a.Open("ada")
		repo.Save(ctx, a, nil)

		first, _ := repo.Load(ctx, "1")
		second, _ := repo.Load(ctx, "1")
		first.Deposit(1)
		if _, err := repo.Save(ctx, first, nil); err != nil {
			t.Fatal(err)
		}
		second.Deposit(2)
		_, err := repo.Save(ctx, second, nil)
		var wrong *estuite.WrongExpectedVersionError
		if !errors.As(err, &wrong) || wrong.Actual != 2 || !errors.Is(err, estuite.ErrWrongExpectedVersion) {
			t.Fatalf("Save of a stale aggregate: %v, want a WrongExpectedVersionError at version 2", err)
		}
		if second.Version() != 1 || len(second.Uncommitted()) != 1 {
			t.Fatalf("a refused Save changed the aggregate: version %d, %d uncommitted", second.Version(), len(second.Uncommitted()))
		}
		if got, _ := repo.Load(ctx, "1"); got.State.Balance != 1 {
			t.Fatalf("balance %d after the refused save, want 1", got.State.Balance)
		}
	})
}

func TestSaveOfANewAggregateWhoseStreamExistsIsRefused(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	repo := newRepo(s, accountRegistry(), nil)
	a := repo.New("1")
	a.Open("ada")
	repo.Save(ctx, a, nil)

	b := repo.New("1")
	b.Open("bob")
	_, err := repo.Save(ctx, b, nil)
	var wrong *estuite.WrongExpectedVersionError
	if !errors.As(err, &wrong) || wrong.Actual != 1 {
		t.Fatalf("Save of a new aggregate over an existing stream: %v", err)
	}
}

func TestSaveWithoutUncommittedEventsMakesNoRequest(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	repo := newRepo(s, accountRegistry(), nil)
	before := s.RequestCounts()
	res, err := repo.Save(ctx, repo.New("1"), nil)
	if err != nil || res != (estuite.AppendResult{}) {
		t.Fatalf("Save of nothing: %+v, %v", res, err)
	}
	if n := s.RequestCounts().Sub(before).Total(); n != 0 {
		t.Fatalf("Save of nothing made %d requests", n)
	}
	if _, err := s.Version(ctx, "account-1"); !errors.Is(err, estuite.ErrStreamNotFound) {
		t.Fatalf("Save of nothing created the stream: %v", err)
	}
}

func TestSaveWithACommitIDIsIdempotent(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	repo := newRepo(s, accountRegistry(), nil)
	a := repo.New("1")
	a.Open("ada")
	repo.Save(ctx, a, nil)

	opts := &aggregate.SaveOptions{CommitID: "deposit-1"}
	first, _ := repo.Load(ctx, "1")
	first.Deposit(10)
	if res, err := repo.Save(ctx, first, opts); err != nil || res.Duplicate {
		t.Fatalf("first save: %+v, %v", res, err)
	}
	// The command retried (its response was lost, say): loaded again, it decides the same event.
	retry, _ := repo.Load(ctx, "1")
	retry.Deposit(10)
	res, err := repo.Save(ctx, retry, opts)
	if err != nil || !res.Duplicate || res.FirstVersion != 2 || res.LastVersion != 2 {
		t.Fatalf("retried save: %+v, %v; want the original versions, Duplicate", res, err)
	}
	if retry.Version() != 2 || len(retry.Uncommitted()) != 1 {
		t.Fatalf("a duplicate save changed the aggregate: version %d, %d uncommitted", retry.Version(), len(retry.Uncommitted()))
	}
	if got, _ := repo.Load(ctx, "1"); got.Version() != 2 || got.State.Balance != 10 {
		t.Fatalf("after the retry: version %d, balance %d; want 2 and 10", got.Version(), got.State.Balance)
	}
}

func TestSaveStoresMetadataWithEveryEvent(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	repo := newRepo(s, accountRegistry(), nil)
	a := repo.New("1")
	a.Open("ada")
	a.Deposit(1)
	if _, err := repo.Save(ctx, a, &aggregate.SaveOptions{Metadata: json.RawMessage(`{"correlationId":"c-1"}`)}); err != nil {
		t.Fatal(err)
	}
	read, _ := s.Read(ctx, "account-1", nil)
	n := 0
	for e, err := range read.Events {
		if err != nil {
			t.Fatal(err)
		}
		n++
		if string(e.Metadata) != `{"correlationId":"c-1"}` {
			t.Fatalf("event %d metadata %s", e.Version, e.Metadata)
		}
	}
	if n != 2 {
		t.Fatalf("%d events stored, want 2", n)
	}
}

func TestSaveOfAnUnregisteredEventWritesNothing(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	reg := aggregate.NewRegistry(nil)
	aggregate.Register[Opened](reg, "AccountOpened")
	repo := newRepo(s, reg, nil)
	a := repo.New("1")
	a.Open("ada")
	a.Deposit(3)
	_, err := repo.Save(ctx, a, nil)
	var unreg *aggregate.UnregisteredTypeError
	if !errors.As(err, &unreg) || unreg.GoType != reflect.TypeFor[Deposited]() || !errors.Is(err, aggregate.ErrUnregisteredType) {
		t.Fatalf("Save with an unregistered event: %v", err)
	}
	if types := storedTypes(t, s, "account-1"); len(types) != 0 {
		t.Fatalf("a failed save stored %v", types)
	}
}

func TestLoadOfAnUnknownStoredEventNamesIt(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	s.Append(ctx, "account-1", []estuite.EventData{
		{Type: "AccountOpened", Data: []byte(`{"Owner":"ada"}`)},
		{Type: "AccountFrozen", Data: []byte(`{}`)},
	}, nil)
	_, err := newRepo(s, accountRegistry(), nil).Load(ctx, "1")
	var unknown *aggregate.UnknownEventTypeError
	if !errors.As(err, &unknown) || unknown.Type != "AccountFrozen" || unknown.Schema != 1 || !errors.Is(err, aggregate.ErrUnknownEventType) {
		t.Fatalf("Load with an unknown event: %v", err)
	}
	var dec *aggregate.DecodeError
	if !errors.As(err, &dec) || dec.Stream != "account-1" || dec.Version != 2 {
		t.Fatalf("Load with an unknown event: %v, want a DecodeError at account-1 version 2", err)
	}
}

// Loading a ten-event aggregate costs one storage request: one range query for its events and
// its head.
func TestLoadOfATenEventAggregateCostsOneRequest(t *testing.T) {
	forEachCostBackend(t, func(t *testing.T, s *estuite.Store) {
		ctx := context.Background()
		repo := newRepo(s, accountRegistry(), nil)
		a := repo.New("1")
		a.Open("ada")
		for i := range 9 {
			a.Deposit(i)
		}
		repo.Save(ctx, a, nil)

		before := s.RequestCounts()
		got, err := repo.Load(ctx, "1")
		if err != nil || got.Version() != 10 {
			t.Fatalf("Load: version %d, %v", got.Version(), err)
		}
		spent := s.RequestCounts().Sub(before)
		t.Logf("load of 10 events: %+v", spent)
		if spent.Total() > maxRequestsPerShortRead || spent.Batches+spent.Writes+spent.Deletes != 0 {
			t.Fatalf("load of 10 events cost %+v, want at most %d reads", spent, maxRequestsPerShortRead)
		}
	})
}
