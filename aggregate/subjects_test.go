package aggregate_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/aggregate"
)

// A club whose members' joins are personal data: a snapshot of it holds their names.

type Joined struct{ Member, Name string }
type Renamed struct{ Club string }

func (j Joined) DataSubject() string { return j.Member }

type clubState struct {
	Club  string
	Names []string
}

type club struct {
	aggregate.Base
	State   clubState
	applied int
}

func (c *club) Apply(event any) {
	c.applied++
	switch e := event.(type) {
	case Joined:
		c.State.Names = append(c.State.Names, e.Name) // "" for an erased join
	case Renamed:
		c.State.Club = e.Club
	}
}

func (c *club) SnapshotState() any { return &c.State }

func clubRegistry() *aggregate.Registry {
	reg := aggregate.NewRegistry(nil)
	aggregate.Register[Joined](reg, "Joined")
	aggregate.Register[Renamed](reg, "Renamed")
	return reg
}

func clubRepo(s *estuite.Store, reg *aggregate.Registry) *aggregate.Repository[*club] {
	return aggregate.NewRepository(s, reg, func() *club { return &club{} }, &aggregate.Options{
		StreamPrefix: "club-", Snapshots: &aggregate.SnapshotPolicy{Schema: 1, Every: 1}, Retry: fastRetry,
	})
}

// storedSnapshot reads stream's snapshot of schema 1 (nil: none).
func storedSnapshot(t *testing.T, s *estuite.Store, stream string) *estuite.Snapshot {
	t.Helper()
	read, err := s.Read(context.Background(), stream, &estuite.ReadOptions{WithSnapshot: true, SnapshotSchema: 1})
	if err != nil {
		t.Fatal(err)
	}
	return read.Snapshot
}

// A save's snapshot names the union of the subjects of every event its state was folded from:
// the loaded snapshot's, the events read after it (appended by someone else), the saved ones —
// through Save and Update. Once one of them is forgotten, a load replays the events (the
// forgotten member's erased), and the next save takes a snapshot that no longer names it (the
// state holds nothing of it).
func TestSnapshotSubjectsAreTheUnionOfTheFoldedEvents(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		ctx := context.Background()
		reg := clubRegistry()
		repo := clubRepo(s, reg)
		join := func(member string) func(*club) error {
			return func(c *club) error {
				aggregate.Raise(c, Joined{Member: member, Name: member + "-name"})
				return nil
			}
		}
		c := repo.New("chess")
		join("ann")(c)
		if res, err := repo.Save(ctx, c, nil); err != nil || !res.SnapshotSaved {
			t.Fatalf("first save: %+v, %v", res, err)
		}
		if sn := storedSnapshot(t, s, "club-chess"); sn == nil || !slices.Equal(sn.Subjects, []string{"ann"}) {
			t.Fatalf("first snapshot: %+v; want it to name ann", sn)
		}
		// Another writer's event, without a snapshot.
		bob, err := reg.Encode(Joined{Member: "bob", Name: "bob-name"}, nil)
		if err != nil || bob.Subject != "bob" {
			t.Fatalf("Encode of a PersonalData event: %+v, %v; want subject bob", bob, err)
		}
		if _, err := s.Append(ctx, "club-chess", []estuite.EventData{bob}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := repo.Update(ctx, "chess", join("cat"), nil); err != nil {
			t.Fatal(err)
		}
		if sn := storedSnapshot(t, s, "club-chess"); sn == nil || sn.Version != 3 || !slices.Equal(sn.Subjects, []string{"ann", "bob", "cat"}) {
			t.Fatalf("snapshot after Update: %+v; want it at 3 naming ann, bob, cat", sn)
		}
		// A save of an event without a subject still names the state's subjects, carried by the
		// loaded snapshot.
		c, err = repo.Load(ctx, "chess")
		if err != nil || c.applied != 0 {
			t.Fatalf("load from the snapshot: %d events applied, %v", c.applied, err)
		}
		aggregate.Raise(c, Renamed{Club: "Chess Club"})
		if res, err := repo.Save(ctx, c, nil); err != nil || !res.SnapshotSaved {
			t.Fatalf("save of a plain event: %+v, %v", res, err)
		}
		if sn := storedSnapshot(t, s, "club-chess"); sn == nil || sn.Version != 4 || !slices.Equal(sn.Subjects, []string{"ann", "bob", "cat"}) {
			t.Fatalf("snapshot after a plain event: %+v; want it at 4 naming ann, bob, cat", sn)
		}

		if err := s.Forget(ctx, "bob"); err != nil {
			t.Fatal(err)
		}
		c, err = repo.Load(ctx, "chess")
		if err != nil || c.applied != 4 || c.Version() != 4 || fmt.Sprint(c.State.Names) != "[ann-name  cat-name]" || c.State.Club != "Chess Club" {
			t.Fatalf("load after Forget: %d applied, version %d, %+v, %v; want a replay of 4 events, bob's erased", c.applied, c.Version(), c.State, err)
		}
		if sn := storedSnapshot(t, s, "club-chess"); sn != nil {
			t.Fatalf("after Forget: snapshot %+v; want none readable", sn)
		}
		aggregate.Raise(c, Renamed{Club: "Chess"})
		if res, err := repo.Save(ctx, c, nil); err != nil || !res.SnapshotSaved {
			t.Fatalf("save after Forget: %+v, %v; want it saved with a snapshot", res, err)
		}
		if sn := storedSnapshot(t, s, "club-chess"); sn == nil || sn.Version != 5 || !slices.Equal(sn.Subjects, []string{"ann", "cat"}) {
			t.Fatalf("snapshot after Forget: %+v; want it at 5 naming ann and cat, not bob", sn)
		}
		c, err = repo.Update(ctx, "chess", join("dan"), nil)
		if err != nil || c.Version() != 6 || len(c.State.Names) != 4 || c.applied != 1 {
			t.Fatalf("Update after Forget: version %d, %+v, %d applied (want 1: the snapshot loaded, the new event), %v", c.Version(), c.State, c.applied, err)
		}
	})
}

// A subject forgotten between a load and its save, named by the state but by none of the saved
// events: the save lands without its snapshot. A save whose own event names a forgotten subject
// is refused, as an append is.
func TestSnapshotSubjectForgottenBeforeTheSaveIsLeftOut(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	repo := clubRepo(s, clubRegistry())
	c := repo.New("go")
	aggregate.Raise(c, Joined{Member: "eve", Name: "Eve"})
	if _, err := repo.Save(ctx, c, nil); err != nil {
		t.Fatal(err)
	}
	c, err := repo.Load(ctx, "go")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Forget(ctx, "eve"); err != nil {
		t.Fatal(err)
	}
	aggregate.Raise(c, Renamed{Club: "Go"})
	if res, err := repo.Save(ctx, c, nil); err != nil || res.SnapshotSaved || res.LastVersion != 2 {
		t.Fatalf("save after its state's subject was forgotten: %+v, %v; want it landed without a snapshot", res, err)
	}
	aggregate.Raise(c, Joined{Member: "eve", Name: "Eve again"})
	if _, err := repo.Save(ctx, c, nil); !errors.Is(err, estuite.ErrSubjectForgotten) {
		t.Fatalf("save of an event of a forgotten subject: %v; want ErrSubjectForgotten", err)
	}
}

// An aggregate whose events name more than MaxSnapshotSubjects subjects takes no snapshot, and
// loads by replay; up to the limit, it does.
func TestSnapshotOfTooManySubjectsIsNotTaken(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		ctx := context.Background()
		repo := clubRepo(s, clubRegistry())
		c := repo.New("big")
		for i := range estuite.MaxSnapshotSubjects {
			aggregate.Raise(c, Joined{Member: fmt.Sprintf("m%02d", i), Name: "n"})
		}
		aggregate.Raise(c, Joined{Member: "m00", Name: "again"}) // a subject counts once
		if res, err := repo.Save(ctx, c, nil); err != nil || !res.SnapshotSaved {
			t.Fatalf("save of %d subjects: %+v, %v; want a snapshot", estuite.MaxSnapshotSubjects, res, err)
		}
		if sn := storedSnapshot(t, s, "club-big"); sn == nil || len(sn.Subjects) != estuite.MaxSnapshotSubjects {
			t.Fatalf("snapshot of %d subjects: %+v", estuite.MaxSnapshotSubjects, sn)
		}
		_, err := repo.Update(ctx, "big", func(c *club) error {
			aggregate.Raise(c, Joined{Member: "one-too-many", Name: "x"})
			return nil
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if sn := storedSnapshot(t, s, "club-big"); sn == nil || sn.Version != 17 {
			t.Fatalf("after the 17th subject: %+v; want the snapshot at 17 kept, no new one", sn)
		}
		for i := range 2 {
			c, err := repo.Update(ctx, "big", func(c *club) error {
				aggregate.Raise(c, Renamed{Club: "big"})
				return nil
			}, nil)
			// Folded: the events after the snapshot at 17, then the raised one.
			if err != nil || c.applied != 2+i {
				t.Fatalf("update past the limit: %d applied, %v; want a load from the last snapshot", c.applied, err)
			}
		}
		if sn := storedSnapshot(t, s, "club-big"); sn == nil || sn.Version != 17 {
			t.Fatalf("after saves past the limit: %+v; want no new snapshot", sn)
		}
	})
}
