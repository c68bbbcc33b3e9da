package estuite

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// DataFormat says how an event's data is to be read back.
type DataFormat uint8

const (
	// JSON data must be valid JSON (or empty); it reads back as the same JSON text.
	JSON DataFormat = iota
	// Binary data is any bytes; it reads back as the same bytes.
	Binary
)

func (f DataFormat) String() string {
	switch f {
	case JSON:
		return "json"
	case Binary:
		return "binary"
	}
	return fmt.Sprintf("DataFormat(%d)", uint8(f))
}

// EventData is an event to append.
type EventData struct {
	// ID identifies the event. The zero UUID means "generate one". An ID given by the caller
	// is deduplicated within the stream: appending it again is an ErrDuplicateEvent (unless
	// the whole commit is a retry, which is answered as a duplicate commit). Each caller-given
	// ID costs one more row in the append's batch (see MaxAppendRows).
	ID uuid.UUID
	// Type names the event, e.g. "OrderPlaced": 1–MaxEventTypeLength characters of valid
	// UTF-8, no control characters.
	Type string
	// Data is the event's payload, in Format. JSON data must be valid JSON text in UTF-8 without
	// escaped lone surrogates ("\ud800"), which JSON libraries read differently: Append refuses
	// anything else with an *InvalidInputError. Binary data may be any bytes.
	Data []byte
	// Format says whether Data is JSON (the zero value) or binary.
	Format DataFormat
	// Metadata is empty or a JSON object, e.g. correlation and causation IDs: valid UTF-8
	// without escaped lone surrogates, as JSON data. A store with tracing on
	// (Options.TracerProvider) stores it with the append span's W3C trace context added as its
	// first members, "traceparent" and "tracestate" (unless it has a "traceparent" already, or
	// the event names a Subject); the caller's slice is not changed. See docs/operations.md,
	// "Tracing".
	Metadata json.RawMessage
	// Subject, when set, names the data subject (the person) the event's data is about:
	// 1–MaxSubjectLength characters of valid UTF-8, no control characters. The event's Data and
	// Metadata are then stored encrypted with the subject's data key (created on the subject's
	// first use), in the stream table and the feed alike, and Store.Forget erases them. An
	// append that names a forgotten subject is an ErrSubjectForgotten. The subject itself, the
	// stream name and the event type are stored in clear: use a pseudonymous identifier (a user
	// ID, not an e-mail address), and keep personal data out of stream names and types.
	Subject string
}

// RecordedEvent is an event as stored in a stream.
type RecordedEvent struct {
	Stream     string
	Version    int64 // 1 for the stream's first event
	ID         uuid.UUID
	Type       string
	Data       []byte
	Format     DataFormat
	Metadata   json.RawMessage // nil when the event had none
	CommitID   string
	RecordedAt time.Time // UTC, microsecond precision; the same for every event of one commit
	// Subject is the data subject the event names ("" for none: see EventData.Subject).
	Subject string
	// Erased is true when the event's subject was forgotten (Store.Forget): Data and Metadata
	// are then nil. Reading an erased event is not an error.
	Erased bool

	sealed []byte // the ciphertext of a sealed event, until it is opened (seal.go)
}

// ExpectedVersion is an append's optimistic-concurrency condition. The zero value is Any.
type ExpectedVersion struct {
	kind    expectKind
	version int64
}

type expectKind uint8

const (
	expectAny expectKind = iota
	expectNoStream
	expectExists
	expectExact
)

var (
	// Any appends whatever the stream's version.
	Any = ExpectedVersion{kind: expectAny}
	// NoStream appends only to a stream that has no events yet.
	NoStream = ExpectedVersion{kind: expectNoStream}
	// StreamExists appends only to a stream that has at least one event.
	StreamExists = ExpectedVersion{kind: expectExists}
)

// Exactly appends only when the stream's version is v (its number of events). Exactly(0) is
// the same condition as NoStream.
func Exactly(v int64) ExpectedVersion {
	return ExpectedVersion{kind: expectExact, version: v}
}

// Version returns the exact version expected and true, or 0 and false for Any, NoStream and
// StreamExists.
func (e ExpectedVersion) Version() (int64, bool) {
	return e.version, e.kind == expectExact
}

func (e ExpectedVersion) String() string {
	switch e.kind {
	case expectNoStream:
		return "no stream"
	case expectExists:
		return "stream exists"
	case expectExact:
		return fmt.Sprint(e.version)
	}
	return "any"
}

// expectsNoStream reports whether e admits only a stream without events.
func (e ExpectedVersion) expectsNoStream() bool {
	return e.kind == expectNoStream || (e.kind == expectExact && e.version == 0)
}

// admits reports whether a stream at version current satisfies e.
func (e ExpectedVersion) admits(current int64) bool {
	switch e.kind {
	case expectNoStream:
		return current == 0
	case expectExists:
		return current > 0
	case expectExact:
		return current == e.version
	}
	return true
}

// admitsAt reports whether a stream at version current, soft-deleted or not, satisfies e. A
// soft-deleted stream is at its last version (versions never change) and has no events: it also
// satisfies NoStream, and not StreamExists.
func (e ExpectedVersion) admitsAt(current int64, softDeleted bool) bool {
	if !softDeleted {
		return e.admits(current)
	}
	switch e.kind {
	case expectNoStream:
		return true
	case expectExists:
		return false
	case expectExact:
		return e.version == current || e.version == 0
	}
	return true
}

// AppendOptions are the per-call knobs of Store.Append. nil means defaults.
type AppendOptions struct {
	// Expected is the concurrency condition; the zero value is Any.
	Expected ExpectedVersion
	// CommitID identifies the append for idempotency: 1–MaxCommitIDLength characters of valid
	// UTF-8, no control characters. Empty means a generated UUID. Retrying an append with the same
	// commit ID in the same stream returns the original result, marked Duplicate, and writes
	// nothing.
	CommitID string
	// Snapshot, when set, is written in the same storage batch as the append's events, replacing
	// the stream's previous snapshot: no extra storage request, atomic with the events. Its
	// Version is set to the append's LastVersion. Data over MaxSnapshotBytes, or bad Subjects,
	// is an *InvalidInputError; Subjects naming a forgotten subject an ErrSubjectForgotten
	// (nothing is written either way). When the batch cannot carry it — the append's rows
	// leave no operation for it, or its bytes would pass MaxAppendBytes, or the append shares a
	// combined batch (see Store.Append) with later appends to the stream — the append still
	// succeeds, without it: AppendResult.SnapshotSaved says which.
	Snapshot *Snapshot
	// Announcement, when set, is the append's early announcement (Store.Announce): the append
	// relies on its dirty marker instead of writing one, when it is sent within the store's
	// AnnounceWindow. It must be for the same stream, and for CommitID (an empty CommitID takes
	// the announcement's); otherwise the append is an *InvalidInputError.
	Announcement *Announcement
}

// AppendResult describes a committed append.
type AppendResult struct {
	Stream       string
	FirstVersion int64 // version of the append's first event
	LastVersion  int64 // version of its last event: the stream's version right after it
	CommitID     string
	// Duplicate is true when the commit ID had already been committed by an earlier call, and
	// this call wrote nothing.
	Duplicate bool
	// SnapshotSaved is true when the append's batch carried AppendOptions.Snapshot. It is false
	// for a Duplicate, and for an append whose answer was lost and that was found committed (its
	// snapshot may or may not have been saved).
	SnapshotSaved bool
}

// Direction is the order of a stream read.
type Direction uint8

const (
	// Forward reads from older to newer events.
	Forward Direction = iota
	// Backward reads from newer to older events.
	Backward
)

// ReadOptions are the per-call knobs of Store.Read. nil means: forward from the first event,
// without limit.
type ReadOptions struct {
	Direction Direction
	// From is the first version read. 0 means the first event (Forward) or the last (Backward).
	From int64
	// Limit is the most events read; 0 means no limit.
	Limit int
	// PageBytes, when positive, sizes the read's storage requests by bytes rather than rows: each
	// asks for about this many bytes of event rows (as table.EntitySize counts them, estimated
	// from the rows read before; at least one row), so that the read holds about that much at a
	// time however large its events are. It does not cut the read short: Events still yields
	// every event up to Limit, in more requests when the events are large (about one per
	// PageBytes of rows). The estimate follows the rows as they come: a run of rows much larger
	// than those just before can make one request's rows exceed PageBytes (by at most its row
	// count times their size) before the next is sized by them. 0 means requests of up to 1,000
	// rows whatever their size.
	PageBytes int64
	// WithSnapshot asks for the stream's snapshot of schema SnapshotSchema: when there is one,
	// StreamRead.Snapshot holds it and Events starts after its Version (From, if set and later,
	// still applies; so does Limit, counted from there). A snapshot of another schema is ignored:
	// the events are read from the start. Forward reads only: Backward with WithSnapshot is an
	// *InvalidInputError.
	WithSnapshot bool
	// SnapshotSchema is the snapshot schema WithSnapshot asks for.
	SnapshotSchema int
}
