package aggregate

import (
	"fmt"
	"reflect"

	"github.com/estuite/estuite"
)

// Snapshotter is implemented by an aggregate whose state can be snapshotted: a repository with
// a SnapshotPolicy needs it.
//
// SnapshotState returns a pointer to the aggregate's state — everything Apply changes,
// usually a struct of exported fields:
//
//	func (o *Order) SnapshotState() any { return &o.State }
//
// A save that takes a snapshot encodes *SnapshotState() with the registry's codec; a load that
// finds one decodes it into a zero value of the state's type, stores it through the pointer, and
// folds only the events after it. So the state must survive the codec unchanged (with JSON:
// exported fields, no unexported ones that Apply relies on), or a load from a snapshot would
// differ from a full replay.
type Snapshotter interface {
	SnapshotState() any
}

// SnapshotPolicy says when a save takes a snapshot of the aggregate's state. The snapshot is
// written by the store in the same atomic batch as the save's events, in the stream's own
// partition: it costs no extra storage request. A stream keeps one snapshot, the latest.
//
// A save takes a snapshot when one of the set conditions holds. Every catches up: a save that
// could not carry its snapshot (the store leaves it out when the batch is full, see
// estuite.AppendOptions.Snapshot) leaves the aggregate behind its multiple of Every, and the
// next save takes one.
//
// Subjects: a snapshot names (estuite.Snapshot.Subjects) the data subjects of every event its
// state was folded from — those the loaded snapshot named, those of the events read after it,
// those of the saved events (see PersonalData) — so the store seals it under all of them, and
// forgetting any one makes the next load replay the events instead. An erased event (its subject
// forgotten) gave Apply only the zero value of its type, so the state holds nothing of its
// subject and the snapshot does not name it: after a Forget, the first save takes a snapshot
// again. No snapshot is taken of an aggregate whose events name more than
// estuite.MaxSnapshotSubjects subjects: its saves carry none, and its loads replay from its last
// readable snapshot, or from the start. A save whose snapshot names a subject forgotten since
// the load (and which none of its events names) is appended again without the snapshot.
type SnapshotPolicy struct {
	// Schema is the version of the snapshot state's shape (1, 2, …). Change it whenever the
	// state's type changes in a way the codec cannot read back: a load then ignores the
	// snapshots of other schemas, replays the stream from the start, and the next save that the
	// policy allows writes a snapshot of the new schema.
	Schema int
	// Every takes a snapshot each time the aggregate passes a multiple of Every versions: when
	// the save's last version lies in a later multiple of Every than the latest snapshot's
	// version. With Every 100, the saves that reach or pass versions 100, 200, … take one (and
	// the next save after one that could not). 0: no such condition.
	Every int64
	// MaxEvents takes a snapshot when more than MaxEvents events follow the latest snapshot.
	MaxEvents int64
	// MaxBytes takes a snapshot when the events after the latest snapshot hold more than
	// MaxBytes bytes of data and metadata.
	MaxBytes int64
}

// due reports whether a save that takes the aggregate to version, with bytes of events stored
// since its latest snapshot (at snapshotVersion), should take a snapshot.
func (p *SnapshotPolicy) due(version, snapshotVersion, bytes int64) bool {
	switch {
	case p.Every > 0 && version/p.Every > snapshotVersion/p.Every:
		return true
	case p.MaxEvents > 0 && version-snapshotVersion > p.MaxEvents:
		return true
	case p.MaxBytes > 0 && bytes > p.MaxBytes:
		return true
	}
	return false
}

// checkSnapshotter panics unless a, a fresh aggregate, can be snapshotted.
func checkSnapshotter(a any) {
	s, ok := a.(Snapshotter)
	if !ok {
		panic(fmt.Sprintf("aggregate: a repository with snapshots needs an aggregate that implements Snapshotter; %T does not", a))
	}
	if v := reflect.ValueOf(s.SnapshotState()); v.Kind() != reflect.Pointer || v.IsNil() {
		panic(fmt.Sprintf("aggregate: %T.SnapshotState returns %v, not a pointer to the state", a, v.Type()))
	}
}

// encodeSnapshot encodes a's state for a snapshot; nil when it is larger than a snapshot may be.
func (r *Repository[A]) encodeSnapshot(a A) (*estuite.Snapshot, error) {
	data, err := r.registry.codec.Marshal(any(a).(Snapshotter).SnapshotState())
	if err != nil {
		return nil, fmt.Errorf("aggregate: encoding a snapshot of %q: %w", a.base().id, err)
	}
	if len(data) > estuite.MaxSnapshotBytes {
		return nil, nil
	}
	return &estuite.Snapshot{Schema: r.opts.Snapshots.Schema, Data: data}, nil
}

// restoreSnapshot sets a's state to the snapshot's: decoded into a zero state, then stored
// through SnapshotState's pointer, so nothing of the fresh aggregate's initial state remains.
func (r *Repository[A]) restoreSnapshot(a A, sn *estuite.Snapshot) error {
	ptr := reflect.ValueOf(any(a).(Snapshotter).SnapshotState())
	state := reflect.New(ptr.Type().Elem())
	if err := r.registry.codec.Unmarshal(sn.Data, state.Interface()); err != nil {
		return err
	}
	ptr.Elem().Set(state.Elem())
	return nil
}
