package aggregate

import (
	"slices"

	"github.com/estuite/estuite"
)

// Root is what a Repository needs of an aggregate: a pointer to a struct that embeds Base and
// folds events into its state with Apply.
//
//	type Account struct {
//		aggregate.Base
//		Balance int
//	}
//
//	func (a *Account) Apply(event any) {
//		switch e := event.(type) {
//		case Deposited:
//			a.Balance += e.Amount
//		}
//	}
type Root interface {
	// Apply folds one event, in its current form, into the aggregate's state. It is called for
	// every stored event on Load (after a snapshot's, for those after it) and for every event
	// raised with Raise. It must not fail and must not depend on anything but the state and the
	// event: a load replays it.
	Apply(event any)
	base() *Base
}

// Base records an aggregate's identity, version and uncommitted events. Embed it (as a value,
// not a pointer) in an aggregate's struct; its zero value is an aggregate without ID at
// version 0.
type Base struct {
	id      string
	version int64
	changes []any

	// Snapshot bookkeeping: the version of the latest snapshot of the aggregate known to be
	// stored (0: none), and the bytes of the events stored after it that were folded; the data
	// subjects of every stored event folded into the state (through the snapshot it was loaded
	// from, or read or saved since; erased events hold no data and do not count), which the
	// snapshots a save takes name, each true when a save found it forgotten since the state was
	// folded (the state in memory holds its data: no snapshot of it). It stops growing past
	// estuite.MaxSnapshotSubjects: no snapshot can name them all.
	snapshotVersion int64
	bytesSince      int64
	subjects        map[string]bool
}

func (b *Base) base() *Base { return b }

// addSubject counts subject ("" for none) among the subjects of the state in set, forgotten or
// not, and returns set (made when nil).
func addSubject(set map[string]bool, subject string, forgotten bool) map[string]bool {
	if _, ok := set[subject]; subject == "" || !ok && len(set) > estuite.MaxSnapshotSubjects {
		return set
	}
	if set == nil {
		set = make(map[string]bool)
	}
	set[subject] = set[subject] || forgotten
	return set
}

// snapshotSubjects returns the subjects a snapshot of a state of subjects set names (nil for
// none), sorted; ok is false when no snapshot can be taken: there are more than
// estuite.MaxSnapshotSubjects, or one is known to be forgotten (the store refuses a snapshot
// that names it).
func snapshotSubjects(set map[string]bool) (subjects []string, ok bool) {
	if len(set) > estuite.MaxSnapshotSubjects {
		return nil, false
	}
	for subject, forgotten := range set {
		if forgotten {
			return nil, false
		}
		subjects = append(subjects, subject)
	}
	slices.Sort(subjects)
	return subjects, true
}

// ID returns the aggregate's ID, set by the Repository that created or loaded it.
func (b *Base) ID() string { return b.id }

// Version returns the version of the aggregate as stored: the version of the last stored event
// folded into it (0 for an aggregate never saved). Events raised since are not counted; Save
// appends them expecting exactly this version.
func (b *Base) Version() int64 { return b.version }

// Uncommitted returns the events raised since the aggregate was loaded or last saved, in the
// order raised. The slice is the aggregate's own: do not change it.
func (b *Base) Uncommitted() []any { return b.changes }

// Raise records a new event on the aggregate: it folds it into the state with Apply and keeps it
// to be appended by the next Save. Commands call it once they have decided.
//
//	func (a *Account) Deposit(amount int) error {
//		if amount <= 0 {
//			return errors.New("a deposit must be positive")
//		}
//		aggregate.Raise(a, Deposited{Amount: amount})
//		return nil
//	}
func Raise(a Root, event any) {
	a.Apply(event)
	b := a.base()
	b.changes = append(b.changes, event)
}
