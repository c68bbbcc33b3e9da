package estuite

import (
	"bytes"
	"context"
	"crypto/cipher"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf16"

	"github.com/estuite/estuite/internal/jsoncheck"
	"github.com/estuite/estuite/table"
	"github.com/google/uuid"
)

// Limits of one append, derived from one entity group transaction (see docs/storage-format.md).
const (
	// MaxAppendRows is how many event rows plus caller-given event ID rows one append may write:
	// a batch holds table.MaxBatchOps operations, of which the commit row, the head row and one
	// operation reserved for dispatch bookkeeping are not events. So an append holds up to 97
	// events with generated IDs, or up to 48 events with caller-given IDs.
	MaxAppendRows = table.MaxBatchOps - 3
	// MaxAppendBytes is the largest append batch, as measured by table.BatchSize.
	MaxAppendBytes = table.MaxBatchBytes
	// MaxMetadataLength is the longest metadata, in UTF-16 code units (one string property).
	MaxMetadataLength = table.MaxPropertyBytes / 2
)

// maxConflictRetries bounds how often an append re-reads a head that another process moved under
// it before giving up with a *ContentionError (appends of one Store to one stream queue and do
// not conflict with each other).
const maxConflictRetries = 64

// Append appends events to a stream atomically: all of them or none become visible. opts may be
// nil (expected version Any, generated commit ID).
//
// A retry with the same commit ID — after a lost response, a timeout, or long after the stream
// moved on — returns the original result with Duplicate set and writes nothing. The same commit
// ID with other events is an ErrCommitConflict. Other errors: ErrWrongExpectedVersion (a
// *WrongExpectedVersionError with the actual version), ErrDuplicateEvent, ErrInvalidInput and
// ErrTooLarge (nothing written), ErrUnavailable (storage kept failing: the append may or may not
// have been committed; retry it with the same commit ID to find out), ErrContention (a
// *ContentionError: other processes or Stores moved the stream at each of the append's
// attempts; nothing was written, and it is safe to retry).
//
// Concurrent appends of one Store to one stream queue rather than race each other: one batch at
// a time carries as many of them as one entity group transaction holds, each with its own commit
// row, checked against its expected version in queue order (so they are never refused for each
// other's sake, and cost one dirty-marker write and one batch together). Each stays atomic and
// idempotent on its own. Only appends from other Stores on the same backend can make an append
// meet a moved head, and only they can lead to ErrContention.
func (s *Store) Append(ctx context.Context, stream string, events []EventData, opts *AppendOptions) (AppendResult, error) {
	if err := s.checkOpen(); err != nil {
		return AppendResult{}, err
	}
	var o AppendOptions
	if opts != nil {
		o = *opts
	}
	if s.tr != nil {
		return s.tracedAppend(ctx, stream, events, o)
	}
	return s.appendEvents(ctx, stream, events, events, o)
}

// appendEvents is Append of the events stored, whose commit is identified by the events as the
// caller gave them (hashed): stored differs from hashed only by the trace context a traced
// append adds to their metadata, which a retry of the commit (in another trace) need not repeat.
func (s *Store) appendEvents(ctx context.Context, stream string, stored, hashed []EventData, o AppendOptions) (AppendResult, error) {
	a, err := s.prepareAppend(stream, stored, hashed, o)
	if err != nil {
		return AppendResult{}, err
	}
	if a.sealed != nil || a.snapshot != nil && len(a.snapshot.Subjects) > 0 {
		if err := s.sealAppend(ctx, a, hashed); err != nil {
			return s.refusedSealed(ctx, a, err)
		}
	}
	return s.commit(ctx, a)
}

// appendPlan is a validated append with its rows built, waiting for a head version.
type appendPlan struct {
	stream, pk string
	expected   ExpectedVersion
	commitID   string
	hash       string
	attempt    string // random ID of this Append call, stored on its commit row
	recorded   time.Time
	events     []table.Entity // event rows without row keys (nor, when sealed, data)
	eventIDs   []eventID      // caller-given IDs (each gets an ID row)
	// sealed holds, per event, the plaintext of an event that names a subject (nil: none); the
	// slice is nil when no event does. Its ciphertext is made with the row's version.
	sealed []*sealedEvent
	// maxEventBytes is the size of its largest event row (or of that row in the feed, if larger),
	// recorded on the dirty marker so that the dispatcher can budget its reads.
	maxEventBytes int64

	// Measured at the largest versions, for combining appends in one batch: the operations
	// besides the head, the head operation's bytes and the other operations' bytes (as
	// table.BatchSize counts them), and the row keys that must be unique in a batch (the commit
	// row and the event-ID rows).
	rowOps               int
	headBytes, bodyBytes int
	rowKeys              []string

	// snapshot is the caller's AppendOptions.Snapshot (nil: none), its subjects sorted;
	// snapshotBytes is its upsert's size as table.BatchSize counts it, at the largest version;
	// snapshotKey seals it when it names subjects (set by sealAppend).
	snapshot      *Snapshot
	snapshotBytes int
	snapshotKey   cipher.AEAD

	// ann is the caller's AppendOptions.Announcement (nil: none).
	ann *Announcement
}

// eventID is a caller-given event ID and the index of its event in the append.
type eventID struct {
	id    uuid.UUID
	index int
}

// prepareAppend validates an append of events and builds its rows; hashed are the events as the
// caller gave them, whose hash identifies the commit (appendEvents).
func (s *Store) prepareAppend(stream string, events, hashed []EventData, o AppendOptions) (*appendPlan, error) {
	if err := validateStreamName(stream); err != nil {
		return nil, err
	}
	if len(events) == 0 {
		return nil, invalid("events", "an append needs at least one event")
	}
	if an := o.Announcement; an != nil {
		switch {
		case an.s != s:
			return nil, invalid("announcement", "was made by another Store")
		case an.stream != stream:
			return nil, invalid("announcement", "is for stream %q, not %q", an.stream, stream)
		case o.CommitID == "":
			o.CommitID = an.commitID
		case o.CommitID != an.commitID:
			return nil, invalid("announcement", "is for commit ID %q, not %q", an.commitID, o.CommitID)
		}
	}
	if o.CommitID == "" {
		o.CommitID = uuid.NewString()
	} else if err := validateName("commitID", o.CommitID, MaxCommitIDLength); err != nil {
		return nil, err
	}
	if v, exact := o.Expected.Version(); exact && v < 0 {
		return nil, invalid("expected version", "%d is negative", v)
	}
	if o.Snapshot != nil {
		sn, err := validateSnapshot(o.Snapshot)
		if err != nil {
			return nil, err
		}
		o.Snapshot = sn
	}
	a := &appendPlan{
		stream:   stream,
		pk:       streamKey(stream),
		expected: o.Expected,
		commitID: o.CommitID,
		attempt:  uuid.NewString(),
		recorded: s.now().UTC().Truncate(time.Microsecond),
		ann:      o.Announcement,
	}
	seen := make(map[uuid.UUID]bool)
	for i := range events {
		e := &events[i]
		if err := validateEvent(i, e); err != nil {
			return nil, err
		}
		id := e.ID
		if id == uuid.Nil {
			id = uuid.New()
		} else {
			if seen[id] {
				return nil, &DuplicateEventError{Stream: stream, EventID: id}
			}
			seen[id] = true
			a.eventIDs = append(a.eventIDs, eventID{id: id, index: i})
		}
		a.events = append(a.events, table.Entity{PartitionKey: a.pk, Properties: eventProperties(e, id, o.CommitID, a.recorded)})
		if e.Subject != "" {
			if a.sealed == nil {
				a.sealed = make([]*sealedEvent, len(events))
			}
			a.sealed[i] = newSealedEvent(e)
		}
	}
	if a.sealed == nil {
		a.hash = commitHash(hashed, nil) // otherwise sealAppend computes it, with the subjects' keys
	}
	if rows := len(a.events) + len(a.eventIDs); rows > MaxAppendRows {
		return nil, &TooLargeError{What: "append", Size: rows, Limit: MaxAppendRows,
			Unit: "rows (one per event, one more per caller-given event ID)"}
	}
	// Check sizes on the batch as it will be sent, with the largest version numbers possible, the
	// largest event size the commit row can record and the largest lifecycle state on the head (a
	// sealed event's ciphertext has its exact size already: sealedEvent.seal).
	a.maxEventBytes = table.MaxEntityBytes
	ops := a.ops(head{version: 1<<62 - 1, etag: "x", meta: largestMeta})
	a.maxEventBytes = 0
	for i, op := range ops[firstOp : firstOp+len(a.events)] {
		// The event's feed row carries a few more properties than its stream row: it must fit too.
		feedRow := feedEventEntity(MaxFeedShards-1, MaxPosition, stream, op.Entity, a.recorded)
		n := max(table.EntitySize(op.Entity), table.EntitySize(feedRow))
		if n > table.MaxEntityBytes {
			return nil, &TooLargeError{What: fmt.Sprintf("events[%d]", i), Size: n, Limit: table.MaxEntityBytes, Unit: "bytes as stored"}
		}
		a.maxEventBytes = max(a.maxEventBytes, int64(n))
	}
	batchBytes := table.BatchSize(ops)
	if batchBytes > MaxAppendBytes {
		return nil, &TooLargeError{What: "append", Size: batchBytes, Limit: MaxAppendBytes, Unit: "bytes as sent"}
	}
	// What the append adds to a combined batch (appendqueue.go), at most: these sizes.
	a.rowOps = len(ops) - 1
	a.headBytes = table.BatchSize(ops[headOp : headOp+1])
	a.bodyBytes = batchBytes - a.headBytes
	a.rowKeys = append(a.rowKeys, commitKey(a.commitID))
	for _, id := range a.eventIDs {
		a.rowKeys = append(a.rowKeys, eventIDKey(id.id))
	}
	if o.Snapshot != nil {
		a.snapshot = o.Snapshot
		a.snapshotBytes = table.BatchSize([]table.Op{a.snapshotOp(1<<62 - 1)})
	}
	// Keys and property names are valid by construction; the backend validates the batch again.
	return a, nil
}

func validateEvent(i int, e *EventData) error {
	field := func(name string) string { return fmt.Sprintf("events[%d].%s", i, name) }
	if err := validateName(field("type"), e.Type, MaxEventTypeLength); err != nil {
		return err
	}
	if e.Subject != "" {
		if err := validateSubject(field("subject"), e.Subject); err != nil {
			return err
		}
	}
	switch e.Format {
	case JSON:
		if len(e.Data) > 0 && !json.Valid(e.Data) {
			return invalid(field("data"), "is not valid JSON (mark binary data as Binary)")
		}
		if err := jsoncheck.Check(e.Data); err != nil {
			return invalid(field("data"), "is not JSON text every reader reads alike: %v (mark binary data as Binary)", err)
		}
	case Binary:
	default:
		return invalid(field("format"), "unknown data format %d", e.Format)
	}
	if len(e.Metadata) > 0 {
		if trimmed := bytes.TrimLeft(e.Metadata, " \t\r\n"); len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(e.Metadata) {
			return invalid(field("metadata"), "must be a JSON object")
		}
		if err := jsoncheck.Check(e.Metadata); err != nil {
			return invalid(field("metadata"), "is not JSON text every reader reads alike: %v", err)
		}
		if n := len(utf16.Encode([]rune(string(e.Metadata)))); n > MaxMetadataLength {
			return &TooLargeError{What: field("metadata"), Size: n, Limit: MaxMetadataLength, Unit: "UTF-16 code units"}
		}
	}
	return nil
}

// Indexes of a single append's batch operations: the commit row comes first (index 0), so that a
// retried commit is recognized before anything else can fail; the head row second. A combined
// batch (appendqueue.go) keeps the order: every commit row, the head, every append's other rows.
const (
	headOp  = 1
	firstOp = 2
)

// ops builds the append's batch on top of head h, as it is sent when it goes alone.
func (a *appendPlan) ops(h head) []table.Op {
	ops := make([]table.Op, 0, 1+a.rowOps)
	ops = append(ops, a.commitOp(h.version+1), headWrite(a.pk, h, h.version+int64(len(a.events))))
	return a.appendRowOps(ops, h.version+1)
}

// commitOp inserts the append's commit row, for events from version first on.
func (a *appendPlan) commitOp(first int64) table.Op {
	rec := commitRecord{commitID: a.commitID, first: first, last: first + int64(len(a.events)) - 1, hash: a.hash, attempt: a.attempt, maxBytes: a.maxEventBytes}
	return table.Op{Kind: table.Insert, Entity: rec.entity(a.pk, a.recorded)}
}

// headWrite writes the head of partition pk at version, on top of head h: an insert for a stream
// without a head row, otherwise a replace under h's ETag.
func headWrite(pk string, h head, version int64) table.Op {
	if h.etag == "" {
		return table.Op{Kind: table.Insert, Entity: headEntity(pk, version, h.meta)}
	}
	return table.Op{Kind: table.Replace, Entity: headEntity(pk, version, h.meta), IfMatch: h.etag}
}

// appendRowOps appends to ops the inserts of the append's event rows, from version first on,
// and of its event-ID rows.
func (a *appendPlan) appendRowOps(ops []table.Op, first int64) []table.Op {
	for i, e := range a.events {
		e.RowKey = eventKey(first + int64(i))
		if a.sealed != nil && a.sealed[i] != nil {
			// Sealed here, where the version is known: it is part of the additional data.
			e.Properties = a.sealed[i].rowProperties(e.Properties, a.stream, first+int64(i))
		}
		e.Properties[propVersion] = first + int64(i)
		ops = append(ops, table.Op{Kind: table.Insert, Entity: e})
	}
	for _, id := range a.eventIDs {
		ops = append(ops, table.Op{Kind: table.Insert, Entity: table.Entity{PartitionKey: a.pk, RowKey: eventIDKey(id.id),
			Properties: map[string]any{propVersion: first + int64(id.index)}}})
	}
	return ops
}

// snapshotOp upserts the append's snapshot, at version (the batch's last). A sealed snapshot is
// sealed here, where the version is known: it is part of the additional data.
func (a *appendPlan) snapshotOp(version int64) table.Op {
	return table.Op{Kind: table.Upsert, Entity: snapshotEntity(a.stream, a.pk, a.snapshot, a.snapshotKey, version, a.commitID, a.recorded)}
}

// readHead reads the head row from storage and caches it.
func (s *Store) readHead(ctx context.Context, pk string) (head, error) {
	h, found, err := s.fetchHead(ctx, pk)
	if found {
		s.heads.put(pk, h)
	}
	return h, err
}

// fetchHead reads a stream's head with one point read, past the head cache: the zero head when
// there is none.
func (s *Store) fetchHead(ctx context.Context, pk string) (h head, found bool, err error) {
	row, err := s.streams.get(ctx, pk, headRowKey)
	if errors.Is(err, table.ErrNotFound) {
		return head{}, false, nil
	}
	if err != nil {
		return head{}, false, err
	}
	h, err = decodeHead(row)
	return h, err == nil, err
}

// findCommit looks for the append's commit row. found is false when the commit is not stored.
func (s *Store) findCommit(ctx context.Context, a *appendPlan) (res AppendResult, found bool, err error) {
	row, err := s.streams.get(ctx, a.pk, commitKey(a.commitID))
	if errors.Is(err, table.ErrNotFound) {
		return AppendResult{}, false, nil
	}
	if err != nil {
		return AppendResult{}, false, err
	}
	c, err := decodeCommit(row)
	if err != nil {
		return AppendResult{}, true, err
	}
	// a.hash is empty only for an append naming a forgotten subject (refusedSealed): its events
	// can no longer be hashed to compare.
	if c.commitID != a.commitID || a.hash != "" && c.hash != a.hash {
		return AppendResult{}, true, &CommitConflictError{Stream: a.stream, CommitID: a.commitID}
	}
	return AppendResult{
		Stream: a.stream, FirstVersion: c.first, LastVersion: c.last, CommitID: a.commitID,
		// A row written by this very call (its response was lost) is not a duplicate to the caller.
		Duplicate: c.attempt != a.attempt,
	}, true, nil
}

// findDuplicateEventID returns a *DuplicateEventError for the first caller-given event ID of the
// append that the stream already holds, a storage error, or nil when there is none.
func (s *Store) findDuplicateEventID(ctx context.Context, a *appendPlan) error {
	for _, id := range a.eventIDs {
		_, err := s.streams.get(ctx, a.pk, eventIDKey(id.id))
		if err == nil {
			return &DuplicateEventError{Stream: a.stream, EventID: id.id}
		}
		if !errors.Is(err, table.ErrNotFound) {
			return err
		}
	}
	return nil
}
