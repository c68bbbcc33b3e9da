package estuite

import (
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// Sentinel errors. Every error Estuite returns for one of these conditions matches the sentinel
// with errors.Is; the typed errors below carry the details and match with errors.As.
var (
	// ErrWrongExpectedVersion: the stream's version is not the one the append expected.
	// The error is a *WrongExpectedVersionError carrying the actual version.
	ErrWrongExpectedVersion = errors.New("estuite: wrong expected version")
	// ErrCommitConflict: the commit ID was already committed in this stream with other events.
	ErrCommitConflict = errors.New("estuite: commit ID already used with different events")
	// ErrDuplicateEvent: an event ID given by the caller is already in the stream (or appears
	// twice in one append). The error is a *DuplicateEventError naming it.
	ErrDuplicateEvent = errors.New("estuite: duplicate event ID")
	// ErrStreamNotFound: the stream has never been written.
	ErrStreamNotFound = errors.New("estuite: stream not found")
	// ErrInvalidInput: the request is malformed (a bad stream name, event type, commit ID, JSON
	// data or metadata, …). Nothing was written. The error is an *InvalidInputError.
	ErrInvalidInput = errors.New("estuite: invalid input")
	// ErrTooLarge: the append exceeds what one atomic storage batch can hold (events, bytes)
	// or an event exceeds what one entity can hold. Nothing was written. The error is a
	// *TooLargeError.
	ErrTooLarge = errors.New("estuite: too large")
	// ErrUnavailable: storage kept failing transiently until the retries or the context ran
	// out. An append that fails so may or may not have been committed: retry it with the same
	// commit ID to learn which.
	ErrUnavailable = errors.New("estuite: storage unavailable")
	// ErrCorrupt: a stored row could not be understood.
	ErrCorrupt = errors.New("estuite: corrupt stored data")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("estuite: store closed")
	// ErrGroupNotFound: no consumer group of that name has been created (JoinGroup creates one).
	ErrGroupNotFound = errors.New("estuite: consumer group not found")
)

// WrongExpectedVersionError reports an optimistic-concurrency conflict.
type WrongExpectedVersionError struct {
	Stream   string
	Expected ExpectedVersion
	Actual   int64 // the stream's version when the append was refused (0: no stream)
}

func (e *WrongExpectedVersionError) Error() string {
	return fmt.Sprintf("estuite: stream %q: expected version %v, actual version %d", e.Stream, e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrWrongExpectedVersion) true.
func (e *WrongExpectedVersionError) Is(target error) bool { return target == ErrWrongExpectedVersion }

// CommitConflictError reports a commit ID reused with different events.
type CommitConflictError struct {
	Stream   string
	CommitID string
}

func (e *CommitConflictError) Error() string {
	return fmt.Sprintf("estuite: stream %q: commit %q was already committed with different events", e.Stream, e.CommitID)
}

// Is makes errors.Is(err, ErrCommitConflict) true.
func (e *CommitConflictError) Is(target error) bool { return target == ErrCommitConflict }

// DuplicateEventError names an event ID that is already in the stream or repeated in the append.
type DuplicateEventError struct {
	Stream  string
	EventID uuid.UUID
}

func (e *DuplicateEventError) Error() string {
	return fmt.Sprintf("estuite: stream %q: event ID %s is already in the stream or repeated in the append", e.Stream, e.EventID)
}

// Is makes errors.Is(err, ErrDuplicateEvent) true.
func (e *DuplicateEventError) Is(target error) bool { return target == ErrDuplicateEvent }

// InvalidInputError says which input was refused and why.
type InvalidInputError struct {
	Field  string // e.g. "stream", "events[2].type", "commitID"
	Reason string
}

func (e *InvalidInputError) Error() string {
	return fmt.Sprintf("estuite: invalid %s: %s", e.Field, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidInput) true.
func (e *InvalidInputError) Is(target error) bool { return target == ErrInvalidInput }

func invalid(field, format string, args ...any) error {
	return &InvalidInputError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// TooLargeError says which limit an append exceeds.
type TooLargeError struct {
	What  string // what is too large, e.g. "append", "events[3]"
	Size  int    // its size, in Unit
	Limit int    // the largest size allowed, in Unit
	Unit  string // "events", "bytes", …
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("estuite: %s is too large: %d %s, at most %d", e.What, e.Size, e.Unit, e.Limit)
}

// Is makes errors.Is(err, ErrTooLarge) true.
func (e *TooLargeError) Is(target error) bool { return target == ErrTooLarge }

// CorruptError reports a stored row that could not be understood.
type CorruptError struct {
	Partition, Row string
	Reason         string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("estuite: corrupt row %q/%q: %s", e.Partition, e.Row, e.Reason)
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

func corrupt(pk, rk, format string, args ...any) error {
	return &CorruptError{Partition: pk, Row: rk, Reason: fmt.Sprintf(format, args...)}
}

// unavailableError wraps the last transient storage error once retries are exhausted.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string {
	return fmt.Sprintf("estuite: storage unavailable: %v", e.err)
}
func (e *unavailableError) Is(target error) bool { return target == ErrUnavailable }
func (e *unavailableError) Unwrap() error        { return e.err }

// ErrContention: the stream kept changing under the append — other processes appended to it
// at every attempt — until the store's attempts ran out. The append was not committed (each
// attempt's batch was refused whole); it is safe to retry. The error is a *ContentionError.
// Contention is not unavailability: storage answered every request.
var ErrContention = errors.New("estuite: stream contended")

// ContentionError reports an append refused because its stream kept changing under it.
type ContentionError struct {
	Stream   string
	Attempts int // how many times the append was tried
}

func (e *ContentionError) Error() string {
	return fmt.Sprintf("estuite: stream %q kept changing under %d attempts of the append; nothing was written, retry it", e.Stream, e.Attempts)
}

// Is makes errors.Is(err, ErrContention) true.
func (e *ContentionError) Is(target error) bool { return target == ErrContention }
