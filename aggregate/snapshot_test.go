package aggregate_test

import (
	"context"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/aggregate"
)

func snapshotRepo(s *estuite.Store, reg *aggregate.Registry, p aggregate.SnapshotPolicy) *aggregate.Repository[*account] {
	return newRepo(s, reg, &aggregate.Options{StreamPrefix: "account-", Snapshots: &p, Retry: fastRetry})
}

// depositMany saves n deposits of 1 into account id (opened first when new), in saves of at
// most per events.
func depositMany(t testing.TB, repo *aggregate.Repository[*account], id string, n, per int) {
	t.Helper()
	ctx := context.Background()
	a, err := repo.Load(ctx, id)
	if err != nil {
		a = repo.New(id)
		a.Open("ada")
		n--
	}
	for n > 0 {
		for range min(n, per-len(a.Uncommitted())) {
			a.Deposit(1)
			n--
		}
		if _, err := repo.Save(ctx, a, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// A load from a snapshot returns exactly what a full replay returns, whatever the commands, the
// saves and the policy: random command sequences, checked after every save against a
// repository without snapshots reading the same stream.
func TestLoadFromASnapshotEqualsAFullReplay(t *testing.T) {
	policies := []aggregate.SnapshotPolicy{
		{Schema: 1, Every: 1},
		{Schema: 1, Every: 5},
		{Schema: 2, Every: 13},
		{Schema: 1, MaxEvents: 7},
		{Schema: 1, MaxBytes: 120},
		{Schema: 3, Every: 50, MaxEvents: 9, MaxBytes: 400},
	}
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		ctx := context.Background()
		reg := accountRegistry()
		replay := newRepo(s, reg, nil)
		// Each step costs a dozen requests or so; on Azurite, at a few milliseconds each, half the
		// sequence keeps the package's run short. The embedded backends run it in full.
		steps := 60
		if onAzurite(t) {
			steps = 30
		}
		for pi, p := range policies {
			seed := uint64(1000 + pi)
			rng := rand.New(rand.NewPCG(seed, seed))
			snap := snapshotRepo(s, reg, p)
			id := strings.Repeat("x", pi+1)
			snapshotsUsed := 0
			for step := range steps {
				// A command sequence of 1–12 commands, one save; sometimes through Update.
				n := 1 + rng.IntN(12)
				command := func(a *account) error {
					for range n {
						switch k := rng.IntN(10); {
						case !a.State.Open:
							a.Open("owner")
						case k < 6:
							a.Deposit(1 + rng.IntN(20))
						case k < 9:
							a.Withdraw(1 + rng.IntN(30)) // refused when the balance is short
						}
					}
					return nil
				}
				var saved *account
				if rng.IntN(2) == 0 {
					a, err := snap.Load(ctx, id)
					if err != nil {
						a = snap.New(id)
					}
					command(a)
					if _, err := snap.Save(ctx, a, nil); err != nil {
						t.Fatalf("policy %+v seed %d step %d: Save: %v", p, seed, step, err)
					}
					saved = a
				} else {
					a, err := snap.Update(ctx, id, command, nil)
					if err != nil {
						t.Fatalf("policy %+v seed %d step %d: Update: %v", p, seed, step, err)
					}
					saved = a
				}
				fromSnapshot, err := snap.Load(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				full, err := replay.Load(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if full.Version() != saved.Version() || !reflect.DeepEqual(full.State, saved.State) {
					t.Fatalf("policy %+v seed %d step %d: saved aggregate %d %+v, full replay %d %+v", p, seed, step, saved.Version(), saved.State, full.Version(), full.State)
				}
				if fromSnapshot.Version() != full.Version() || !reflect.DeepEqual(fromSnapshot.State, full.State) {
					t.Fatalf("policy %+v seed %d step %d: from a snapshot %d %+v, full replay %d %+v", p, seed, step, fromSnapshot.Version(), fromSnapshot.State, full.Version(), full.State)
				}
				if full.applied != int(full.Version()) {
					t.Fatalf("a full replay applied %d events of %d", full.applied, full.Version())
				}
				if fromSnapshot.applied < int(full.Version()) {
					snapshotsUsed++
				}
			}
			if snapshotsUsed < steps/2 {
				t.Fatalf("policy %+v: only %d of %d loads started from a snapshot", p, snapshotsUsed, steps)
			}
		}
	})
}

func TestSnapshotsFollowThePolicy(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy aggregate.SnapshotPolicy
		saves  []int   // events per save
		want   []int64 // the version each load should start from (its snapshot's) after each save
	}{
		{"every 10", aggregate.SnapshotPolicy{Schema: 1, Every: 10}, []int{4, 4, 4, 9, 1, 12}, []int64{0, 0, 12, 21, 21, 34}},
		{"more than 5 events", aggregate.SnapshotPolicy{Schema: 1, MaxEvents: 5}, []int{3, 2, 1, 6, 5}, []int64{0, 0, 6, 12, 12}},
		// Each event is {"Amount":1} (12 bytes) but the first, {"Owner":"ada"} (15).
		{"more than 40 bytes", aggregate.SnapshotPolicy{Schema: 1, MaxBytes: 40}, []int{2, 1, 1, 3, 1}, []int64{0, 0, 4, 4, 8}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s := memStore(t)
			repo := snapshotRepo(s, accountRegistry(), tc.policy)
			for i, n := range tc.saves {
				depositMany(t, repo, "1", n, n)
				a, err := repo.Load(ctx, "1")
				if err != nil {
					t.Fatal(err)
				}
				if from := a.Version() - int64(a.applied); from != tc.want[i] {
					t.Fatalf("after save %d (version %d) the load started from version %d, want %d", i+1, a.Version(), from, tc.want[i])
				}
			}
		})
	}
}

func TestASnapshotCostsNoExtraRequest(t *testing.T) {
	forEachCostBackend(t, func(t *testing.T, s *estuite.Store) {
		ctx := context.Background()
		repo := snapshotRepo(s, accountRegistry(), aggregate.SnapshotPolicy{Schema: 1, Every: 10})
		depositMany(t, repo, "1", 5, 5)
		a, _ := repo.Load(ctx, "1")

		a.Deposit(1) // version 6: no snapshot due
		before := s.RequestCounts()
		res, err := repo.Save(ctx, a, nil)
		without := s.RequestCounts().Sub(before)
		if err != nil || res.SnapshotSaved {
			t.Fatalf("save without a snapshot due: %+v, %v", res, err)
		}
		for range 4 {
			a.Deposit(1) // version 10: a snapshot is due
		}
		before = s.RequestCounts()
		res, err = repo.Save(ctx, a, nil)
		with := s.RequestCounts().Sub(before)
		if err != nil || !res.SnapshotSaved {
			t.Fatalf("save with a snapshot due: %+v, %v", res, err)
		}
		t.Logf("save without a snapshot: %+v; with: %+v", without, with)
		if with != without {
			t.Fatalf("a save with a snapshot cost %+v, one without %+v", with, without)
		}
	})
}

// The cost of loading a long-lived aggregate: 10,000 events with a snapshot every 100, then 99
// more (the most events after the latest snapshot that the policy allows).
func TestLoadOfTenThousandEventsWithSnapshotsCostsAtMostTwoRequests(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 10,000 events")
	}
	forEachCostBackend(t, func(t *testing.T, s *estuite.Store) {
		ctx := context.Background()
		reg := accountRegistry()
		repo := snapshotRepo(s, reg, aggregate.SnapshotPolicy{Schema: 1, Every: 100})
		load := func(version int64) *account {
			t.Helper()
			before := s.RequestCounts()
			a, err := repo.Load(ctx, "1")
			spent := s.RequestCounts().Sub(before)
			if err != nil || a.Version() != version || a.State.Balance != int(version-1) {
				t.Fatalf("Load: version %d, balance %d, %v; want version %d", a.Version(), a.State.Balance, err, version)
			}
			t.Logf("load at version %d with a snapshot every 100: %+v, %d events decoded", version, spent, a.applied)
			if spent.Total() > 2 || a.applied > 100 {
				t.Fatalf("load cost %d requests (%+v) and decoded %d events; want at most 2 and 100", spent.Total(), spent, a.applied)
			}
			return a
		}
		depositMany(t, repo, "1", 10_000, 97)
		load(10_000)
		depositMany(t, repo, "1", 99, 7)
		a := load(10_099)
		if a.applied != 99 {
			t.Fatalf("the load decoded %d events, want the 99 after the snapshot at 10,000", a.applied)
		}

		before := s.RequestCounts()
		full, err := newRepo(s, reg, nil).Load(ctx, "1")
		spent := s.RequestCounts().Sub(before)
		if err != nil || full.applied != 10_099 || !reflect.DeepEqual(full.State, a.State) {
			t.Fatalf("full replay: %d events, %v", full.applied, err)
		}
		t.Logf("load of 10,099 events without snapshots: %+v", spent)
	})
}

func TestAnotherSnapshotSchemaIsIgnoredAndReplaced(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	reg := accountRegistry()
	v1 := snapshotRepo(s, reg, aggregate.SnapshotPolicy{Schema: 1, Every: 10})
	depositMany(t, v1, "1", 25, 10) // snapshots at 10 and 20, of schema 1

	v2 := snapshotRepo(s, reg, aggregate.SnapshotPolicy{Schema: 2, Every: 10})
	a, err := v2.Load(ctx, "1")
	if err != nil || a.applied != 25 || a.State.Balance != 24 {
		t.Fatalf("load with schema 2 over schema-1 snapshots: %d events applied, balance %d, %v; want a full replay", a.applied, a.State.Balance, err)
	}
	a.Deposit(1)
	res, err := v2.Save(ctx, a, nil)
	if err != nil || !res.SnapshotSaved {
		t.Fatalf("the first save with schema 2: %+v, %v; want a fresh snapshot", res, err)
	}
	if a, _ = v2.Load(ctx, "1"); a.applied != 0 || a.Version() != 26 || a.State.Balance != 25 {
		t.Fatalf("load after the fresh snapshot: %d events applied, version %d, balance %d", a.applied, a.Version(), a.State.Balance)
	}
	// The old code's schema is now the other one: it replays.
	if a, _ = v1.Load(ctx, "1"); a.applied != 26 || a.State.Balance != 25 {
		t.Fatalf("schema-1 load after a schema-2 snapshot: %d events applied, balance %d", a.applied, a.State.Balance)
	}
}

// changedAccount is account with a state type changed without a new snapshot schema: its
// snapshots do not decode the old ones.
type changedAccount struct {
	account
	Other struct{ Balance string }
}

func (a *changedAccount) SnapshotState() any { return &a.Other }

func TestAnUndecodableSnapshotIsIgnored(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	reg := accountRegistry()
	p := aggregate.SnapshotPolicy{Schema: 1, Every: 10}
	depositMany(t, snapshotRepo(s, reg, p), "1", 15, 15) // a snapshot at 15 with Balance a number

	changed := aggregate.NewRepository(s, reg, func() *changedAccount { return &changedAccount{} },
		&aggregate.Options{StreamPrefix: "account-", Snapshots: &p})
	a, err := changed.Load(ctx, "1")
	if err != nil || a.applied != 15 || a.State.Balance != 14 {
		t.Fatalf("load over an undecodable snapshot: %d applied, balance %d, %v; want a full replay", a.applied, a.State.Balance, err)
	}
}

// blob is an aggregate whose state can outgrow a snapshot.
type blob struct {
	aggregate.Base
	State struct{ Parts []string }
}

type PartAdded struct{ Part string }

func (b *blob) Apply(event any)    { b.State.Parts = append(b.State.Parts, event.(PartAdded).Part) }
func (b *blob) SnapshotState() any { return &b.State }

func TestAStateTooLargeForASnapshotIsSavedWithoutOne(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	reg := aggregate.NewRegistry(nil)
	aggregate.Register[PartAdded](reg, "PartAdded")
	repo := aggregate.NewRepository(s, reg, func() *blob { return &blob{} },
		&aggregate.Options{Snapshots: &aggregate.SnapshotPolicy{Schema: 1, Every: 1}})
	b := repo.New("b")
	part := strings.Repeat("p", 600_000)
	aggregate.Raise(b, PartAdded{part})
	aggregate.Raise(b, PartAdded{part}) // the state is 1.2 MB: more than a snapshot holds
	res, err := repo.Save(ctx, b, nil)
	if err != nil || res.SnapshotSaved {
		t.Fatalf("save of a state too large for a snapshot: %+v, %v; want success without a snapshot", res, err)
	}
	got, err := repo.Load(ctx, "b")
	if err != nil || len(got.State.Parts) != 2 || got.Version() != 2 {
		t.Fatalf("load: %d parts, version %d, %v", len(got.State.Parts), got.Version(), err)
	}
}

func TestARepositoryWithSnapshotsNeedsASnapshotter(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	aggregate.NewRepository(memStore(t), aggregate.NewRegistry(nil), func() *till { return &till{} },
		&aggregate.Options{Snapshots: &aggregate.SnapshotPolicy{Schema: 1, Every: 10}})
}
