package aggregate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/estuite/estuite"
)

// Options configure a Repository. nil means defaults.
type Options struct {
	// StreamPrefix starts the stream name of every aggregate of the repository: aggregate id
	// lives in stream StreamPrefix+id, e.g. "account-" and "42" make "account-42". A prefix
	// per aggregate type keeps types apart and makes the feed filterable by type
	// (FeedOptions.StreamPrefix). Default: none, the stream name is the ID.
	StreamPrefix string
	// Retry bounds Update's retries after version conflicts. Zero means DefaultRetryPolicy.
	Retry RetryPolicy
	// Snapshots, when set, makes saves take snapshots of the aggregate's state by this policy,
	// and loads start from the latest snapshot of its Schema. The aggregate type must implement
	// Snapshotter. nil: no snapshots (loads replay every event; snapshots stored earlier are
	// ignored).
	Snapshots *SnapshotPolicy
}

// A Repository loads and saves aggregates of one type, A, in a store: each aggregate is one
// stream, its events encoded and decoded by a registry. It is safe for concurrent use; the
// aggregates it returns are not (load one per command).
type Repository[A Root] struct {
	store    *estuite.Store
	registry *Registry
	newAgg   func() A
	opts     Options
}

// NewRepository returns a repository of aggregates made by newAggregate, which returns a fresh
// aggregate with its initial state (usually a pointer to a zero struct). opts may be nil. It
// panics when opts.Snapshots is set and the aggregate does not implement Snapshotter with a
// pointer to its state.
func NewRepository[A Root](store *estuite.Store, registry *Registry, newAggregate func() A, opts *Options) *Repository[A] {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Snapshots != nil {
		p := *o.Snapshots // the caller's policy cannot change under the repository
		o.Snapshots = &p
		checkSnapshotter(newAggregate())
	}
	if o.Retry == (RetryPolicy{}) {
		o.Retry = DefaultRetryPolicy
	}
	o.Retry.MaxAttempts = max(o.Retry.MaxAttempts, 1)
	o.Retry.Backoff = max(o.Retry.Backoff, 0)
	o.Retry.MaxBackoff = max(o.Retry.MaxBackoff, o.Retry.Backoff)
	return &Repository[A]{store: store, registry: registry, newAgg: newAggregate, opts: o}
}

// Stream returns the name of the stream that holds aggregate id.
func (r *Repository[A]) Stream(id string) string { return r.opts.StreamPrefix + id }

// New returns a fresh aggregate with ID id at version 0. Saving it creates its stream; it fails
// with a *estuite.WrongExpectedVersionError when the stream exists already.
func (r *Repository[A]) New(id string) A {
	a := r.newAgg()
	b := a.base()
	*b = Base{id: id}
	return a
}

// Load returns aggregate id as stored: its events folded into a fresh aggregate (see New),
// at the version of its last event. An aggregate without events is ErrNotFound, as
// hallgren/eventsourcing's ErrAggregateNotFound (use New to create one, or Update, which starts
// from a fresh aggregate). An event the registry cannot decode is a *DecodeError.
//
// A stream whose events fit one storage page costs one request. With snapshots
// (Options.Snapshots), Load reads the latest snapshot of the policy's schema and the events
// after it (at most two requests while those fit one page) and folds only those events: the
// state is the one a full replay gives, provided the state survives the codec (see
// Snapshotter). A snapshot the codec cannot decode is ignored: the stream is read again and
// replayed from the start, and the next save the policy allows writes a new snapshot.
func (r *Repository[A]) Load(ctx context.Context, id string) (A, error) {
	a, err := r.load(ctx, id)
	if errors.Is(err, estuite.ErrStreamNotFound) {
		err = fmt.Errorf("%w: %q (stream %q)", ErrNotFound, id, r.Stream(id))
	}
	return a, err
}

func (r *Repository[A]) load(ctx context.Context, id string) (A, error) {
	var zero A
	a := r.New(id)
	b := a.base()
	var opts *estuite.ReadOptions
	if p := r.opts.Snapshots; p != nil {
		opts = &estuite.ReadOptions{WithSnapshot: true, SnapshotSchema: p.Schema}
	}
	read, err := r.store.Read(ctx, r.Stream(id), opts)
	if err != nil {
		return zero, err
	}
	if sn := read.Snapshot; sn != nil {
		if err := r.restoreSnapshot(a, sn); err != nil {
			// An undecodable snapshot (a state type changed without a new Schema): replay
			// everything, and let the next save write a snapshot that decodes.
			a = r.New(id)
			b = a.base()
			if read, err = r.store.Read(ctx, r.Stream(id), nil); err != nil {
				return zero, err
			}
		} else {
			b.version, b.snapshotVersion = sn.Version, sn.Version
			for _, subject := range sn.Subjects {
				b.subjects = addSubject(b.subjects, subject, false)
			}
		}
	}
	for rec, err := range read.Events {
		if err != nil {
			return zero, err
		}
		ev, err := r.registry.Decode(rec)
		if err != nil {
			return zero, err
		}
		a.Apply(ev.Value)
		b.version = rec.Version
		b.bytesSince += eventBytes(rec.Data, rec.Metadata)
		if !rec.Erased {
			// An erased event gave Apply no data of its subject (the zero value of its type):
			// the state holds none, and a snapshot need not name the subject.
			b.subjects = addSubject(b.subjects, rec.Subject, false)
		}
	}
	if b.version != read.Version {
		return zero, fmt.Errorf("aggregate: stream %q read up to version %d of %d", read.Stream, b.version, read.Version)
	}
	return a, nil
}

func eventBytes(data, metadata []byte) int64 { return int64(len(data) + len(metadata)) }

// SaveOptions are the per-call knobs of Save and Update. nil means defaults.
type SaveOptions struct {
	// CommitID identifies the command for idempotency (see estuite.AppendOptions.CommitID): a
	// command retried with its commit ID — after a lost response, a timeout, a crash — that
	// decides the same events is recognised and writes nothing (Save reports Duplicate;
	// Update returns the aggregate as stored). Empty: a generated ID, and no idempotency.
	CommitID string
	// Metadata is a JSON object stored with every event of the save, e.g. correlation and
	// causation IDs. The key SchemaKey is the registry's.
	Metadata json.RawMessage
}

// Save appends the aggregate's uncommitted events to its stream in one atomic append, expecting
// the stream at the aggregate's version (estuite.Exactly(v); for a new aggregate, at version 0,
// estuite.NoStream). opts may be nil. An aggregate without uncommitted events writes nothing and
// costs no request.
//
// On success the aggregate is at the append's last version, with no uncommitted events. When
// the stream has moved on since the aggregate was loaded, the error is the store's
// *estuite.WrongExpectedVersionError (errors.As works; errors.Is(err,
// estuite.ErrWrongExpectedVersion) too) and the aggregate is unchanged: load it again and rerun
// the command (Update does this). When the result is Duplicate, the commit ID had been saved
// before and nothing was written: the aggregate then holds the events twice and must be loaded
// again. At most estuite.MaxAppendRows events fit one save.
//
// With snapshots (Options.Snapshots), a save that the policy says is due carries a snapshot of
// the aggregate's state after its events, written by the store in the same batch: no extra
// request. The store leaves it out when the batch cannot carry it (the result's SnapshotSaved is
// false), and so does Save when the encoded state is over estuite.MaxSnapshotBytes; the save
// succeeds all the same, and a later save takes the snapshot. The snapshot names the data
// subjects of every event its state was folded from (see SnapshotPolicy): it is sealed under
// them, and goes when one of them is forgotten.
func (r *Repository[A]) Save(ctx context.Context, a A, opts *SaveOptions) (estuite.AppendResult, error) {
	return r.save(ctx, a, opts, nil)
}

// save is Save with the append announced early by an (nil: not announced).
func (r *Repository[A]) save(ctx context.Context, a A, opts *SaveOptions, an *estuite.Announcement) (estuite.AppendResult, error) {
	var o SaveOptions
	if opts != nil {
		o = *opts
	}
	b := a.base()
	if len(b.changes) == 0 {
		return estuite.AppendResult{}, nil
	}
	events := make([]estuite.EventData, len(b.changes))
	var size int64
	subjects := maps.Clone(b.subjects) // the state's subjects once the events are stored
	for i, ev := range b.changes {
		d, err := r.registry.Encode(ev, o.Metadata)
		if err != nil {
			return estuite.AppendResult{}, err
		}
		events[i] = d
		size += eventBytes(d.Data, d.Metadata)
		subjects = addSubject(subjects, d.Subject, false)
	}
	expected := estuite.Exactly(b.version)
	if b.version == 0 {
		expected = estuite.NoStream
	}
	ao := &estuite.AppendOptions{Expected: expected, CommitID: o.CommitID, Announcement: an}
	if p := r.opts.Snapshots; p != nil && p.due(b.version+int64(len(events)), b.snapshotVersion, b.bytesSince+size) {
		if names, ok := snapshotSubjects(subjects); ok {
			sn, err := r.encodeSnapshot(a)
			if err != nil {
				return estuite.AppendResult{}, err
			}
			if sn != nil {
				sn.Subjects = names
			}
			ao.Snapshot = sn
		}
	}
	res, err := r.store.Append(ctx, r.Stream(b.id), events, ao)
	var fe *estuite.SubjectForgottenError
	if ao.Snapshot != nil && errors.As(err, &fe) && !slices.ContainsFunc(events, func(e estuite.EventData) bool { return e.Subject == fe.Subject }) {
		// A subject of the state, named by no event of the save, was forgotten since the load:
		// the refused append wrote nothing, and the events go without the snapshot.
		ao.Snapshot = nil
		subjects = addSubject(subjects, fe.Subject, true)
		res, err = r.store.Append(ctx, r.Stream(b.id), events, ao)
	}
	if err != nil || res.Duplicate {
		return res, err
	}
	b.version = res.LastVersion
	b.changes = nil
	b.subjects = subjects
	if res.SnapshotSaved {
		b.snapshotVersion, b.bytesSince = res.LastVersion, 0
	} else {
		b.bytesSince += size
	}
	return res, nil
}
