package estuite

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf16"

	"github.com/estuite/estuite/internal/jsoncheck"
	"github.com/estuite/estuite/table"
)

// Stream lifecycle: metadata with retention, soft and hard deletes (docs/storage-format.md,
// "Stream metadata and deletes").
//
// Retention and the deletion state live on the stream's head row (headMeta), which every read
// reads anyway and every append replaces under its ETag: a read enforces them without another
// request, and setting them moves the head's ETag, so that no append prepared before can land
// after. The metadata's custom JSON, which reads do not need, is a row of its own (M).

// ErrStreamDeleted: the stream was deleted for good (a hard delete): it cannot be read or
// written again. The error is a *StreamDeletedError.
var ErrStreamDeleted = errors.New("estuite: stream deleted")

// StreamDeletedError reports an operation on a stream that was hard-deleted.
type StreamDeletedError struct{ Stream string }

func (e *StreamDeletedError) Error() string {
	return fmt.Sprintf("estuite: stream %q was deleted for good", e.Stream)
}

// Is makes errors.Is(err, ErrStreamDeleted) true.
func (e *StreamDeletedError) Is(target error) bool { return target == ErrStreamDeleted }

// Limits of stream metadata.
const (
	// MaxCustomMetadataLength is the longest custom metadata, in UTF-16 code units.
	MaxCustomMetadataLength = MaxMetadataLength
	// MaxAgeLimit is the largest MaxAge: about 136 years.
	MaxAgeLimit = (1 << 32) * time.Second
)

// metadataRowKey is the row of a stream's custom metadata. It sorts after the event-ID rows, out
// of every range a read or the dispatcher queries.
const metadataRowKey = "M"

// StreamMetadata is a stream's metadata: its retention and a custom JSON object.
type StreamMetadata struct {
	// MetadataVersion counts the times the metadata was set: 0 when it never was.
	MetadataVersion int64
	// MaxAge, when set, hides events recorded longer ago than it (by the event's recorded time,
	// its writer's clock, against the reader's clock). Whole seconds, at most MaxAgeLimit.
	MaxAge *time.Duration
	// MaxCount, when set, hides all but the stream's last MaxCount events.
	MaxCount *int64
	// TruncateBefore, when set, hides the events below this version.
	TruncateBefore *int64
	// Custom is a JSON object of the application's, stored as given; nil when none.
	Custom json.RawMessage
}

// MetadataExpected is the condition of SetMetadata: AnyMetadataVersion, or the MetadataVersion
// the caller last read.
type MetadataExpected int64

// AnyMetadataVersion makes SetMetadata write whatever the metadata's version.
const AnyMetadataVersion MetadataExpected = -1

// DeleteOptions are the knobs of Store.Delete. nil means defaults.
type DeleteOptions struct {
	// Expected is the concurrency condition, as for an append; the zero value is Any.
	Expected ExpectedVersion
	// Hard deletes the stream for good: it reads as deleted (ErrStreamDeleted) and can never be
	// written again. Otherwise the delete is soft: the stream reads as not found, and an append
	// (expected version Any or NoStream) recreates it, its versions going on after the last one.
	Hard bool
}

// DeleteResult describes a delete.
type DeleteResult struct {
	Stream string
	// Version is the stream's version when it was deleted: its events up to it are deleted.
	Version int64
}

// Delete deletes a stream: all its events up to its current version. opts may be nil (a soft
// delete, expected version Any). A stream never written is an ErrStreamNotFound; a hard-deleted
// one an ErrStreamDeleted (a second hard delete succeeds and changes nothing, as does a second soft
// delete of a stream not written since). ErrWrongExpectedVersion when the stream is not at
// opts.Expected (a soft-deleted stream is at its last version, and also matches NoStream).
//
// The delete is one conditional write of the stream's head (after a read of it, unless the store
// has it cached): an append prepared on the head before the delete fails on it and is judged
// again — refused after a hard delete, or recreating the stream after a soft one. The events stay
// stored (invisible to reads) and in the feed until a scavenger removes them. A write whose answer
// is lost is judged by the head read after it: a soft delete that finds the head's DeletedBefore
// where its write put it has taken effect, and is answered so (not judged again on its own effect,
// nor repeated on events appended since). ErrUnavailable when storage kept failing: the delete may
// or may not have taken effect.
func (s *Store) Delete(ctx context.Context, stream string, opts *DeleteOptions) (DeleteResult, error) {
	if err := s.checkOpen(); err != nil {
		return DeleteResult{}, err
	}
	if err := validateStreamName(stream); err != nil {
		return DeleteResult{}, err
	}
	var o DeleteOptions
	if opts != nil {
		o = *opts
	}
	if v, exact := o.Expected.Version(); exact && v < 0 {
		return DeleteResult{}, invalid("expected version", "%d is negative", v)
	}
	pk := streamKey(stream)
	h, cached := s.heads.get(pk)
	// sent is the DeletedBefore of a soft delete's write that failed without an answer: it may
	// have landed, and the head read after it tells. transient counts those failures.
	var sent int64
	transient := 0
	for attempt := 0; ; attempt++ {
		if !cached {
			var err error
			if h, err = s.readHead(ctx, pk); err != nil {
				return DeleteResult{}, err
			}
		}
		if sent > 0 && h.meta.deletedBefore >= sent {
			// It landed (or another delete reached as far): the events up to it are deleted. Judging
			// the head as it now is would refuse the delete for its own effect (a soft-deleted stream
			// does not satisfy StreamExists), or delete events appended since a second time.
			return DeleteResult{Stream: stream, Version: sent - 1}, nil
		}
		res := DeleteResult{Stream: stream, Version: h.version}
		switch {
		case h.meta.tombstone && o.Hard:
			return res, nil
		case h.meta.tombstone:
			return DeleteResult{}, &StreamDeletedError{Stream: stream}
		case h.etag == "" || h.version == 0:
			if cached {
				cached = false // a cache may make a delete cheaper, never refuse it
				continue
			}
			return DeleteResult{}, ErrStreamNotFound
		}
		deleted := h.meta.softDeleted(h.version)
		if !o.Expected.admitsAt(h.version, deleted) {
			if cached {
				cached = false
				continue
			}
			return DeleteResult{}, &WrongExpectedVersionError{Stream: stream, Expected: o.Expected, Actual: h.version}
		}
		if deleted && !o.Hard {
			if cached {
				// A cached head may be of a stream recreated since by another store: deleting it
				// again is not a no-op then.
				cached = false
				continue
			}
			return res, nil
		}
		// Write-ahead: the scavenger's work row before the head hides the events.
		if err := s.scavengeWork(ctx, pk, stream); err != nil {
			return DeleteResult{}, err
		}
		meta := h.meta
		if o.Hard {
			meta.tombstone = true
		}
		meta.deletedBefore = h.version + 1
		op := table.Op{Kind: table.Replace, Entity: headEntity(pk, h.version, meta), IfMatch: h.etag}
		etags, err := s.streams.submitOnce(ctx, pk, []table.Op{op})
		var be *table.BatchError
		switch {
		case err == nil:
			s.heads.put(pk, head{version: h.version, etag: etags[0], meta: meta})
			return res, nil
		case errors.As(err, &be) && attempt < maxConflictRetries:
			cached = false // the head moved: an append, a dispatcher's fence, another delete
			s.heads.forget(pk)
		case errors.As(err, &be):
			return DeleteResult{}, &ContentionError{Stream: stream, Attempts: attempt + 1}
		default:
			// A transient failure may have taken effect: read the head again and see.
			s.heads.forget(pk)
			if !errors.Is(err, table.ErrTransient) {
				return DeleteResult{}, fmt.Errorf("estuite: deleting %q: %w", stream, err)
			}
			if !o.Hard {
				sent = meta.deletedBefore
			}
			if transient++; transient >= s.streams.retry.MaxAttempts {
				return DeleteResult{}, &unavailableError{err: fmt.Errorf("deleting %q may or may not have taken effect (read the stream to find out): %w", stream, err)}
			}
			cached = false
			if err := sleep(ctx, s.streams.retry.backoff(transient, err)); err != nil {
				return DeleteResult{}, err
			}
		}
	}
}

// Metadata returns a stream's metadata: a MetadataVersion of 0 and nothing set when it was never
// set (also for a stream never written). ErrStreamDeleted after a hard delete. Two point reads
// (the head and the custom metadata row), made together.
func (s *Store) Metadata(ctx context.Context, stream string) (StreamMetadata, error) {
	if err := s.checkOpen(); err != nil {
		return StreamMetadata{}, err
	}
	if err := validateStreamName(stream); err != nil {
		return StreamMetadata{}, err
	}
	pk := streamKey(stream)
	h, custom, _, err := s.readMetadata(ctx, pk)
	if err != nil {
		return StreamMetadata{}, err
	}
	if h.meta.tombstone {
		return StreamMetadata{}, &StreamDeletedError{Stream: stream}
	}
	return metadataOf(h.meta, custom), nil
}

// sequentialMetadataReads makes readMetadata read one row after the other: the simulation lets
// an actor make one storage call at a time.
var sequentialMetadataReads = false

// readMetadata reads the head and the custom metadata row of partition pk, side by side.
// customETag is "" when there is no custom row.
func (s *Store) readMetadata(ctx context.Context, pk string) (h head, custom json.RawMessage, customETag string, err error) {
	type got struct {
		row table.Entity
		err error
	}
	done := make(chan got, 1)
	readCustom := func() {
		row, err := s.streams.get(ctx, pk, metadataRowKey)
		done <- got{row, err}
	}
	if sequentialMetadataReads {
		readCustom()
	} else {
		go readCustom()
	}
	h, err = s.readHead(ctx, pk)
	m := <-done
	if err != nil {
		return head{}, nil, "", err
	}
	switch {
	case m.err == nil:
		text, _ := m.row.Properties[propCustom].(string)
		if text == "" || !json.Valid([]byte(text)) {
			return head{}, nil, "", corrupt(pk, metadataRowKey, "custom metadata that is not JSON")
		}
		return h, json.RawMessage(text), m.row.ETag, nil
	case errors.Is(m.err, table.ErrNotFound):
		return h, nil, "", nil
	default:
		return head{}, nil, "", m.err
	}
}

// propCustom is the custom metadata row's property: the JSON object, as given.
const propCustom = "Custom"

func metadataOf(m headMeta, custom json.RawMessage) StreamMetadata {
	md := StreamMetadata{MetadataVersion: m.metaVersion, Custom: custom}
	if m.hasMaxAge {
		d := time.Duration(m.maxAge) * time.Second
		md.MaxAge = &d
	}
	if m.hasMaxCount {
		n := m.maxCount
		md.MaxCount = &n
	}
	if m.truncateBefore > 0 {
		n := m.truncateBefore
		md.TruncateBefore = &n
	}
	return md
}

// SetMetadata replaces a stream's metadata with md (every field: one left nil is cleared), if its
// MetadataVersion is expected (or whatever it is, with AnyMetadataVersion), and returns it as
// stored, its MetadataVersion one more. It may be set before the stream's first event. A wrong
// expected version is a *WrongExpectedVersionError whose Actual is the current MetadataVersion;
// ErrStreamDeleted after a hard delete; ErrInvalidInput for a negative or too large value or a
// custom value that is not a JSON object (nothing written).
//
// Retention takes effect on reads at once. It is one batch in the stream's partition (the head
// and the custom row), after reading both.
func (s *Store) SetMetadata(ctx context.Context, stream string, md StreamMetadata, expected MetadataExpected) (StreamMetadata, error) {
	if err := s.checkOpen(); err != nil {
		return StreamMetadata{}, err
	}
	if err := validateStreamName(stream); err != nil {
		return StreamMetadata{}, err
	}
	if expected < AnyMetadataVersion {
		return StreamMetadata{}, invalid("expectedMetadataVersion", "%d is negative", int64(expected))
	}
	var want headMeta
	if md.MaxAge != nil {
		d := *md.MaxAge
		if d < 0 || d > MaxAgeLimit || d%time.Second != 0 {
			return StreamMetadata{}, invalid("maxAge", "%v is not a whole number of seconds from 0 to %v", d, MaxAgeLimit)
		}
		want.maxAge, want.hasMaxAge = int64(d/time.Second), true
	}
	if md.MaxCount != nil {
		if n := *md.MaxCount; n < 0 || n > MaxPosition {
			return StreamMetadata{}, invalid("maxCount", "%d is not from 0 to %d", n, MaxPosition)
		}
		want.maxCount, want.hasMaxCount = *md.MaxCount, true
	}
	if md.TruncateBefore != nil {
		if n := *md.TruncateBefore; n < 0 || n > MaxPosition {
			return StreamMetadata{}, invalid("truncateBefore", "%d is not from 0 to %d", n, MaxPosition)
		}
		want.truncateBefore = *md.TruncateBefore
	}
	var custom json.RawMessage
	if md.Custom != nil {
		if trimmed := bytes.TrimLeft(md.Custom, " \t\r\n"); len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(md.Custom) {
			return StreamMetadata{}, invalid("custom", "must be a JSON object")
		}
		if err := jsoncheck.Check(md.Custom); err != nil {
			return StreamMetadata{}, invalid("custom", "is not JSON text every reader reads alike: %v", err)
		}
		if n := len(utf16.Encode([]rune(string(md.Custom)))); n > MaxCustomMetadataLength {
			return StreamMetadata{}, &TooLargeError{What: "custom", Size: n, Limit: MaxCustomMetadataLength, Unit: "UTF-16 code units"}
		}
		custom = md.Custom
	}
	pk := streamKey(stream)
	for attempt := 0; ; attempt++ {
		h, _, customETag, err := s.readMetadata(ctx, pk)
		if err != nil {
			return StreamMetadata{}, err
		}
		if h.meta.tombstone {
			return StreamMetadata{}, &StreamDeletedError{Stream: stream}
		}
		if expected != AnyMetadataVersion && int64(expected) != h.meta.metaVersion {
			return StreamMetadata{}, &WrongExpectedVersionError{Stream: stream, Expected: Exactly(int64(expected)), Actual: h.meta.metaVersion}
		}
		if want.hasMaxAge || want.hasMaxCount || want.truncateBefore > 0 {
			// Write-ahead: the scavenger's work row before the head hides events.
			if err := s.scavengeWork(ctx, pk, stream); err != nil {
				return StreamMetadata{}, err
			}
		}
		meta := want
		meta.metaVersion = h.meta.metaVersion + 1
		meta.deletedBefore, meta.tombstone, meta.removedBefore = h.meta.deletedBefore, h.meta.tombstone, h.meta.removedBefore
		ops := []table.Op{headWrite(pk, h, h.version)}
		ops[0].Entity = headEntity(pk, h.version, meta)
		switch {
		case custom != nil:
			ops = append(ops, table.Op{Kind: table.Upsert, Entity: table.Entity{PartitionKey: pk, RowKey: metadataRowKey,
				Properties: map[string]any{propCustom: string(custom)}}})
		case customETag != "":
			ops = append(ops, table.Op{Kind: table.Delete, Entity: table.Entity{PartitionKey: pk, RowKey: metadataRowKey}, IfMatch: customETag})
		}
		etags, err := s.streams.submitOnce(ctx, pk, ops)
		var be *table.BatchError
		switch {
		case err == nil:
			s.heads.put(pk, head{version: h.version, etag: etags[0], meta: meta})
			return metadataOf(meta, custom), nil
		case errors.As(err, &be) && attempt < maxConflictRetries:
			s.heads.forget(pk) // an append or another writer moved the head: judge again
		case errors.As(err, &be):
			return StreamMetadata{}, &ContentionError{Stream: stream, Attempts: attempt + 1}
		default:
			s.heads.forget(pk)
			return StreamMetadata{}, &unavailableError{err: fmt.Errorf("setting the metadata of %q may or may not have taken effect (read it to find out): %w", stream, err)}
		}
	}
}

// visibility is what a read of a stream may return, by its lifecycle state: the first visible
// version, and the oldest recorded time (zero: no age limit).
func (s *Store) visibility(h head) (from int64, notBefore time.Time) {
	from = h.meta.visibleFrom(h.version)
	if h.meta.hasMaxAge {
		notBefore = s.now().Add(-time.Duration(h.meta.maxAge) * time.Second)
	}
	return from, notBefore
}

// checkReadable returns the error of a read of a stream in state h, or nil: not found (never
// written, or soft-deleted and not written since), or deleted for good.
func checkReadable(stream string, h head) error {
	switch {
	case h.meta.tombstone:
		return &StreamDeletedError{Stream: stream}
	case h.etag == "" || h.version == 0 || h.meta.softDeleted(h.version):
		return ErrStreamNotFound
	}
	return nil
}
