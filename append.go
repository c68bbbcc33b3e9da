package estuite

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf16"

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

// maxConflictRetries bounds how often an append re-reads a head that moved under it before
// giving up with ErrUnavailable (only expected version Any and StreamExists retry on conflicts).
const maxConflictRetries = 64

// Append appends events to a stream atomically: all of them or none become visible. opts may be
// nil (expected version Any, generated commit ID).
//
// A retry with the same commit ID — after a lost response, a timeout, or long after the stream
// moved on — returns the original result with Duplicate set and writes nothing. The same commit
// ID with other events is an ErrCommitConflict. Other errors: ErrWrongExpectedVersion (a
// *WrongExpectedVersionError with the actual version), ErrDuplicateEvent, ErrInvalidInput and
// ErrTooLarge (nothing written), ErrUnavailable (storage kept failing: the append may or may not
// have been committed; retry it with the same commit ID to find out).
func (s *Store) Append(ctx context.Context, stream string, events []EventData, opts *AppendOptions) (AppendResult, error) {
	if err := s.checkOpen(); err != nil {
		return AppendResult{}, err
	}
	var o AppendOptions
	if opts != nil {
		o = *opts
	}
	a, err := s.prepareAppend(stream, events, o)
	if err != nil {
		return AppendResult{}, err
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
	events     []table.Entity // event rows without row keys
	eventIDs   []eventID      // caller-given IDs (each gets an ID row)
}

// eventID is a caller-given event ID and the index of its event in the append.
type eventID struct {
	id    uuid.UUID
	index int
}

func (s *Store) prepareAppend(stream string, events []EventData, o AppendOptions) (*appendPlan, error) {
	if err := validateStreamName(stream); err != nil {
		return nil, err
	}
	if len(events) == 0 {
		return nil, invalid("events", "an append needs at least one event")
	}
	if o.CommitID == "" {
		o.CommitID = uuid.NewString()
	} else if err := validateName("commitID", o.CommitID, MaxCommitIDLength); err != nil {
		return nil, err
	}
	if v, exact := o.Expected.Version(); exact && v < 0 {
		return nil, invalid("expected version", "%d is negative", v)
	}
	a := &appendPlan{
		stream:   stream,
		pk:       streamKey(stream),
		expected: o.Expected,
		commitID: o.CommitID,
		hash:     commitHash(events),
		attempt:  uuid.NewString(),
		recorded: s.now().UTC().Truncate(time.Microsecond),
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
	}
	if rows := len(a.events) + len(a.eventIDs); rows > MaxAppendRows {
		return nil, &TooLargeError{What: "append", Size: rows, Limit: MaxAppendRows,
			Unit: "rows (one per event, one more per caller-given event ID)"}
	}
	// Check sizes on the batch as it will be sent, with the largest version numbers possible.
	ops := a.ops(head{version: 1<<62 - 1, etag: "x"})
	for i, op := range ops[firstOp : firstOp+len(a.events)] {
		// The event's feed row carries a few more properties than its stream row: it must fit too.
		feedRow := feedEventEntity(1<<62, stream, op.Entity, a.recorded)
		if n := max(table.EntitySize(op.Entity), table.EntitySize(feedRow)); n > table.MaxEntityBytes {
			return nil, &TooLargeError{What: fmt.Sprintf("events[%d]", i), Size: n, Limit: table.MaxEntityBytes, Unit: "bytes as stored"}
		}
	}
	if n := table.BatchSize(ops); n > MaxAppendBytes {
		return nil, &TooLargeError{What: "append", Size: n, Limit: MaxAppendBytes, Unit: "bytes as sent"}
	}
	// Keys and property names are valid by construction; the backend validates the batch again.
	return a, nil
}

func validateEvent(i int, e *EventData) error {
	field := func(name string) string { return fmt.Sprintf("events[%d].%s", i, name) }
	if err := validateName(field("type"), e.Type, MaxEventTypeLength); err != nil {
		return err
	}
	switch e.Format {
	case JSON:
		if len(e.Data) > 0 && !json.Valid(e.Data) {
			return invalid(field("data"), "is not valid JSON (mark binary data as Binary)")
		}
	case Binary:
	default:
		return invalid(field("format"), "unknown data format %d", e.Format)
	}
	if len(e.Metadata) > 0 {
		if trimmed := bytes.TrimLeft(e.Metadata, " \t\r\n"); len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(e.Metadata) {
			return invalid(field("metadata"), "must be a JSON object")
		}
		if n := len(utf16.Encode([]rune(string(e.Metadata)))); n > MaxMetadataLength {
			return &TooLargeError{What: field("metadata"), Size: n, Limit: MaxMetadataLength, Unit: "UTF-16 code units"}
		}
	}
	return nil
}

// Indexes of the append batch's operations: the commit row comes first, so that a retried commit
// is recognized before anything else can fail; the head row second.
const (
	commitOp = 0
	headOp   = 1
	firstOp  = 2
)

// ops builds the append's batch on top of head h.
func (a *appendPlan) ops(h head) []table.Op {
	n := int64(len(a.events))
	ops := make([]table.Op, 0, 2+len(a.events)+len(a.eventIDs))
	rec := commitRecord{commitID: a.commitID, first: h.version + 1, last: h.version + n, hash: a.hash, attempt: a.attempt}
	ops = append(ops, table.Op{Kind: table.Insert, Entity: rec.entity(a.pk, a.recorded)})
	if h.etag == "" {
		ops = append(ops, table.Op{Kind: table.Insert, Entity: headEntity(a.pk, h.version+n)})
	} else {
		ops = append(ops, table.Op{Kind: table.Replace, Entity: headEntity(a.pk, h.version+n), IfMatch: h.etag})
	}
	for i, e := range a.events {
		e.RowKey = eventKey(h.version + 1 + int64(i))
		e.Properties[propVersion] = h.version + 1 + int64(i)
		ops = append(ops, table.Op{Kind: table.Insert, Entity: e})
	}
	for _, id := range a.eventIDs {
		ops = append(ops, table.Op{Kind: table.Insert, Entity: table.Entity{PartitionKey: a.pk, RowKey: eventIDKey(id.id),
			Properties: map[string]any{propVersion: h.version + 1 + int64(id.index)}}})
	}
	return ops
}

// commit runs the append against storage until it is committed or refused.
func (s *Store) commit(ctx context.Context, a *appendPlan) (AppendResult, error) {
	transient, conflicts := 0, 0
	// A stream expected not to exist needs no head read: if it does exist, the head insert fails.
	_, known := s.heads.get(a.pk)
	assumeNew := !known && a.expected.expectsNoStream()
	for {
		h, cached, err := head{}, false, error(nil)
		if !assumeNew {
			h, cached, err = s.loadHead(ctx, a.pk)
		}
		assumeNew = false
		if err == nil && cached && !a.expected.admits(h.version) {
			// A cached head is a guess another process may have outdated: it may make an append
			// cheaper, never refuse it. Decide on the head as stored.
			s.heads.forget(a.pk)
			h, err = s.readHead(ctx, a.pk)
		}
		if err != nil {
			return AppendResult{}, err
		}
		if !a.expected.admits(h.version) {
			// Maybe this commit already landed (a retry after a lost response, or long after).
			if res, found, err := s.findCommit(ctx, a); found || err != nil {
				return res, err
			}
			return AppendResult{}, &WrongExpectedVersionError{Stream: a.stream, Expected: a.expected, Actual: h.version}
		}
		etags, err := s.submitAppend(ctx, a, h)
		if err == nil {
			s.dirty.mark(dirtyShard(a.pk, dirtyShards))
			s.heads.put(a.pk, head{version: h.version + int64(len(a.events)), etag: etags[headOp]})
			return AppendResult{Stream: a.stream, FirstVersion: h.version + 1, LastVersion: h.version + int64(len(a.events)), CommitID: a.commitID}, nil
		}
		s.heads.forget(a.pk)
		var be *table.BatchError
		switch {
		case errors.As(err, &be) && be.Index == commitOp && errors.Is(err, table.ErrAlreadyExists):
			res, found, ferr := s.findCommit(ctx, a)
			if ferr == nil && !found {
				ferr = fmt.Errorf("estuite: stream %q: commit row of %q reported existing but not found", a.stream, a.commitID)
			}
			return res, ferr
		case errors.As(err, &be) && be.Index == headOp:
			// The head moved (or appeared) since we read it: read it again.
			conflicts++
			if conflicts > maxConflictRetries {
				return AppendResult{}, &unavailableError{err: fmt.Errorf("stream %q kept changing under %d attempts: %w", a.stream, conflicts, err)}
			}
		case errors.As(err, &be) && be.Index >= firstOp+len(a.events) && errors.Is(err, table.ErrAlreadyExists):
			return AppendResult{}, &DuplicateEventError{Stream: a.stream, EventID: a.eventIDs[be.Index-firstOp-len(a.events)].id}
		case errors.As(err, &be) && be.Index < 0:
			// The backend could not say which operation failed (Cosmos DB may not): find out.
			if res, found, ferr := s.findCommit(ctx, a); found || ferr != nil {
				return res, ferr
			}
			if ferr := s.findDuplicateEventID(ctx, a); ferr != nil {
				return AppendResult{}, ferr
			}
			conflicts++ // otherwise it was the head: read it again
			if conflicts > maxConflictRetries {
				return AppendResult{}, &unavailableError{err: fmt.Errorf("stream %q: batch kept failing: %w", a.stream, err)}
			}
		case errors.Is(err, table.ErrTransient):
			// The batch may or may not have committed; the next round looks at what is stored.
			transient++
			if ctx.Err() != nil {
				return AppendResult{}, fmt.Errorf("estuite: append to %q may or may not have been committed: %w", a.stream, ctx.Err())
			}
			if transient >= s.streams.retry.MaxAttempts {
				return AppendResult{}, &unavailableError{err: fmt.Errorf("append to %q may or may not have been committed (retry with commit ID %q to find out): %w", a.stream, a.commitID, err)}
			}
			if err := sleep(ctx, s.streams.retry.backoff(transient, err)); err != nil {
				return AppendResult{}, err
			}
		default:
			if transient > 0 || ctx.Err() != nil {
				// An earlier round, or this one cut short by the context, may have committed.
				return AppendResult{}, &unavailableError{err: fmt.Errorf("append to %q may or may not have been committed (retry with commit ID %q to find out): %w", a.stream, a.commitID, err)}
			}
			return AppendResult{}, fmt.Errorf("estuite: append to %q: %w", a.stream, err)
		}
	}
}

// loadHead returns the stream's head from the cache (cached set) or from storage; a stream
// without a head row has version 0 and no ETag.
func (s *Store) loadHead(ctx context.Context, pk string) (h head, cached bool, err error) {
	if h, ok := s.heads.get(pk); ok {
		return h, true, nil
	}
	h, err = s.readHead(ctx, pk)
	return h, false, err
}

// readHead reads the head row from storage and caches it.
func (s *Store) readHead(ctx context.Context, pk string) (head, error) {
	row, err := s.streams.get(ctx, pk, headRowKey)
	if errors.Is(err, table.ErrNotFound) {
		return head{}, nil
	}
	if err != nil {
		return head{}, err
	}
	h, err := decodeHead(row)
	if err != nil {
		return head{}, err
	}
	s.heads.put(pk, h)
	return h, nil
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
	if c.commitID != a.commitID || c.hash != a.hash {
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
