// Package table is the storage contract Estuite is written against: exactly what Azure Table
// Storage promises, and nothing more.
//
// A table holds entities (rows) addressed by a partition key and a row key. Within a partition,
// rows are ordered by row key (byte order of their UTF-8 encoding; Azurite orders by UTF-16 code
// units, which differs only between characters above U+FFFF and U+E000–U+FFFF, so Estuite keeps
// the keys whose order it relies on in ASCII). Every stored entity carries an
// opaque ETag that changes on every write. Writes go in batches confined to one partition: at most
// MaxBatchOps operations, at most MaxBatchBytes bytes as measured by BatchSize, applied atomically
// (all or nothing). Reads are point reads by key and paged forward range queries within a
// partition, at most MaxPageSize rows a page; a page may be empty and still carry a continuation.
// Scan pages through the whole table (or a range of partitions) in the same way; on Azure it is
// a full table scan, meant for verification and maintenance only.
//
// Every backend (Azure, bbolt, memory) implements Table and passes the conformance suite in
// package tabletest, so that the event-store logic above this contract behaves the same on each.
//
// Backends report failures with the sentinel errors of this package (ErrNotFound,
// ErrAlreadyExists, ErrPreconditionFailed, ErrInvalid, ErrTransient, ErrUnknownOutcome), wrapped
// so that errors.Is works; a failed batch operation is reported as a *BatchError naming the
// operation's index.
//
// # Unknown outcomes
//
// A write can fail in a way that leaves its outcome unknown: the request may or may not have
// taken effect. The service accepted a batch but its answer was cut short or could not be
// decoded, the connection broke after the request went out, a commit failed on I/O after it
// began writing. A backend must never report such a write as a definite failure: it returns a
// *TransientError whose Err wraps ErrUnknownOutcome (see UnknownOutcome), so that both
// errors.Is(err, ErrTransient) and errors.Is(err, ErrUnknownOutcome) hold. The caller settles it
// by reading what is stored (Estuite reads the append's commit row), never by assuming either
// outcome. A *BatchError, by contrast, is a definite refusal: nothing was written.
package table

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Limits of Azure Table Storage that every backend enforces, so that what works on the embedded
// store also works on Azure.
const (
	// MaxBatchOps is the most operations one batch (entity group transaction) may hold.
	MaxBatchOps = 100
	// MaxBatchBytes is the largest batch payload, as measured by BatchSize.
	MaxBatchBytes = 4 << 20
	// MaxEntityBytes is the largest entity, as measured by EntitySize.
	MaxEntityBytes = 1 << 20
	// MaxProperties is the most properties an entity may carry besides its keys and timestamp.
	MaxProperties = 252
	// MaxPropertyBytes is the largest string (UTF-16 bytes) or binary property value.
	MaxPropertyBytes = 64 << 10
	// MaxKeyChars is the longest partition or row key in UTF-16 code units. Azure allows 1 KiB
	// (512 UTF-16 code units); Azurite's limit is the same 512 characters.
	MaxKeyChars = 512
	// MaxPageSize is the most rows one query page returns.
	MaxPageSize = 1000
	// MaxPropertyNameChars is the longest property name.
	MaxPropertyNameChars = 255
)

// Table is one table of a backend. All methods are safe for concurrent use.
type Table interface {
	// Get returns the entity with the given keys, or an error wrapping ErrNotFound.
	Get(ctx context.Context, partitionKey, rowKey string) (Entity, error)

	// Query returns one page of the rows of q.PartitionKey whose row keys lie in
	// [q.From, q.To) (an empty To means no upper bound), in row-key order. At most q.Limit rows
	// (MaxPageSize when Limit is 0 or larger) are returned. When Page.Continuation is not empty,
	// more rows may follow: pass it as q.Continuation, with q otherwise unchanged, to read on. A
	// page may be empty and still carry a continuation.
	Query(ctx context.Context, q Query) (Page, error)

	// Scan returns one page of all rows of the table whose partition keys lie in
	// [q.FromPartition, q.ToPartition) (empty bounds mean unbounded), ordered by partition key
	// then row key, at most q.Limit rows (MaxPageSize when 0 or larger). Continuation works as
	// in Query; a page may be empty and still carry a continuation. On Azure this is a full
	// table scan: use it only for verification and maintenance, never on a hot path.
	Scan(ctx context.Context, q ScanQuery) (Page, error)

	// Submit applies ops atomically: all of them or none. Every op must be for partitionKey, each
	// row key may appear once, there are at most MaxBatchOps ops and BatchSize(ops) is at most
	// MaxBatchBytes; otherwise Submit returns an error wrapping ErrInvalid and writes nothing.
	// When an operation fails (a key exists, an ETag does not match, a row to update or delete is
	// missing) Submit writes nothing and returns a *BatchError with that operation's index. On
	// success it returns the new ETag of every op, in op order ("" for deletes).
	//
	// When Submit cannot tell whether the batch was applied (its answer was lost, cut short or
	// not understood, or a commit failed after it began writing), it returns a *TransientError
	// wrapping ErrUnknownOutcome: the batch may have been applied in full, or not at all, never
	// in part. When ctx ends while the request is in flight, Submit returns ctx's error
	// (possibly wrapped), and the outcome is unknown as well.
	Submit(ctx context.Context, partitionKey string, ops []Op) ([]string, error)
}

// Part is one batch of a multi-part write: operations on one partition of one table.
type Part struct {
	Table        Table
	PartitionKey string
	Ops          []Op
}

// MultiSubmitter is an optional capability of a Backend: SubmitParts applies batches to several
// partitions, of one or more of the backend's tables, atomically — all of them or none. Each part
// follows Submit's rules, and the parts name distinct (table, partition) pairs. A failing
// operation is reported as a *PartError naming its part and wrapping that part's *BatchError. On
// success SubmitParts returns each part's ETags. When the outcome cannot be known, SubmitParts
// returns a *TransientError wrapping ErrUnknownOutcome, as Submit does: all of the parts may have
// been applied, or none. Azure Table Storage has no such transaction; the embedded backend has.
type MultiSubmitter interface {
	SubmitParts(ctx context.Context, parts []Part) ([][]string, error)
}

// PartError reports the part of a multi-part write whose batch failed. Nothing was written.
type PartError struct {
	Part int   // index of the failing part
	Err  error // its error, typically a *BatchError
}

func (e *PartError) Error() string { return fmt.Sprintf("table: part %d: %v", e.Part, e.Err) }

func (e *PartError) Unwrap() error { return e.Err }

// Query selects a key range of one partition. See Table.Query.
type Query struct {
	PartitionKey string
	From         string // first row key included ("" means from the start)
	To           string // first row key excluded ("" means to the end of the partition)
	Limit        int    // at most this many rows; 0 means MaxPageSize
	Continuation string // from the previous Page; "" for the first page
}

// ScanQuery selects a range of partitions of the whole table. See Table.Scan.
type ScanQuery struct {
	// FromPartition is the first partition key included ("" means from the first partition).
	FromPartition string
	// ToPartition is the first partition key excluded ("" means to the end of the table).
	ToPartition string
	// Limit is the most rows one page may hold; 0 means MaxPageSize.
	Limit int
	// Continuation is the one of the previous Page, with the ScanQuery otherwise unchanged; ""
	// for the first page.
	Continuation string
}

// Page is one page of query (or scan) results.
type Page struct {
	Entities     []Entity
	Continuation string // "" when the query is complete
}

// Entity is one row. Properties hold values of the types listed at Property.
type Entity struct {
	PartitionKey string
	RowKey       string
	ETag         string // set by reads and writes; ignored on input except through Op.IfMatch
	Properties   map[string]any
}

// Property value types a backend must store and return unchanged: string, []byte, int64, bool
// and time.Time (returned in UTC, with at least microsecond precision). Nothing else is allowed.
type Property = any

// OpKind is what a batch operation does.
type OpKind int

// Batch operations, each with Azure Table Storage's meaning.
const (
	// Insert adds the entity; it fails with ErrAlreadyExists when the row exists.
	Insert OpKind = iota + 1
	// Replace overwrites an existing row whose ETag matches IfMatch ("*" for any ETag); it fails
	// with ErrNotFound when the row is missing and ErrPreconditionFailed on an ETag mismatch.
	Replace
	// Merge updates the given properties of an existing row, with Replace's conditions.
	Merge
	// Upsert inserts the entity or replaces the row unconditionally.
	Upsert
	// Delete removes an existing row whose ETag matches IfMatch ("*" for any ETag).
	Delete
)

func (k OpKind) String() string {
	switch k {
	case Insert:
		return "insert"
	case Replace:
		return "replace"
	case Merge:
		return "merge"
	case Upsert:
		return "upsert"
	case Delete:
		return "delete"
	}
	return fmt.Sprintf("OpKind(%d)", int(k))
}

// AnyETag matches every ETag of an existing row.
const AnyETag = "*"

// Op is one operation of a batch. For Delete only the entity's keys are used.
type Op struct {
	Kind    OpKind
	Entity  Entity
	IfMatch string // Replace, Merge, Delete: the ETag the row must have, or AnyETag; "" means AnyETag
}

// Sentinel errors. Backends wrap them; callers test with errors.Is.
var (
	// ErrNotFound: the row (or table) does not exist.
	ErrNotFound = errors.New("table: not found")
	// ErrAlreadyExists: an Insert found the row already there.
	ErrAlreadyExists = errors.New("table: entity already exists")
	// ErrPreconditionFailed: the row's ETag did not match IfMatch.
	ErrPreconditionFailed = errors.New("table: precondition failed (ETag mismatch)")
	// ErrInvalid: the request breaks a rule of the contract (keys, limits, one partition per
	// batch, one op per row, property types). Nothing was written. Not worth retrying.
	ErrInvalid = errors.New("table: invalid request")
	// ErrTransient: the request failed in a way that may pass on a retry (timeout, throttling,
	// server error, lost connection). A write that failed transiently may or may not have taken
	// effect: backends wrap ErrUnknownOutcome as well whenever they cannot rule that out, and a
	// transient write error without it was, to the backend's knowledge, refused before it took
	// effect (throttled, never sent, given up before it was taken). Callers for whom a wrong
	// guess is costly settle every transient write failure by reading what is stored.
	ErrTransient = errors.New("table: transient failure")
	// ErrUnknownOutcome: the request may or may not have taken effect. It always comes inside a
	// *TransientError (see UnknownOutcome), so it is an ErrTransient too, never a definite
	// failure: read what is stored to find out.
	ErrUnknownOutcome = errors.New("table: the request may or may not have taken effect")
)

// BatchError reports the operation that made a batch fail. Nothing of the batch was written.
type BatchError struct {
	Index int    // zero-based index of the failing op in the batch; -1 when the backend cannot tell
	Code  string // the backend's own code, e.g. "EntityAlreadyExists"
	Err   error  // ErrAlreadyExists, ErrNotFound, ErrPreconditionFailed or ErrInvalid
}

func (e *BatchError) Error() string {
	return fmt.Sprintf("table: batch operation %d failed: %s (%v)", e.Index, e.Code, e.Err)
}

func (e *BatchError) Unwrap() error { return e.Err }

// TransientError is a transient failure with the delay the service asked for, if any.
type TransientError struct {
	RetryAfter time.Duration // 0 when the service did not say
	Err        error         // the underlying cause
}

func (e *TransientError) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("table: transient failure (retry after %v): %v", e.RetryAfter, e.Err)
	}
	return fmt.Sprintf("table: transient failure: %v", e.Err)
}

// Is reports that every TransientError is an ErrTransient.
func (e *TransientError) Is(target error) bool { return target == ErrTransient }

func (e *TransientError) Unwrap() error { return e.Err }

// UnknownOutcome returns the error of a write whose outcome is unknown because of cause: a
// *TransientError whose Err wraps both ErrUnknownOutcome and cause. Set its RetryAfter when the
// service asked for a delay.
func UnknownOutcome(cause error) *TransientError {
	return &TransientError{Err: fmt.Errorf("%w: %w", ErrUnknownOutcome, cause)}
}

// RetryAfter returns the delay a transient error asks for, or 0.
func RetryAfter(err error) time.Duration {
	var te *TransientError
	if errors.As(err, &te) {
		return te.RetryAfter
	}
	return 0
}

// Invalidf returns an error wrapping ErrInvalid.
func Invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Backend is a storage account: a set of tables. Estuite opens its tables through it.
type Backend interface {
	// OpenTable returns the named table, creating it when missing. Names follow Azure's rule
	// (see ValidateTableName).
	OpenTable(ctx context.Context, name string) (Table, error)
	// Close releases the backend's resources. Tables opened from it must not be used after.
	Close() error
}

// ValidateTableName checks Azure's rule for table names: 3 to 63 characters, ASCII letters and
// digits, starting with a letter.
func ValidateTableName(name string) error {
	if len(name) < 3 || len(name) > 63 {
		return Invalidf("table name %q must be 3 to 63 characters long", name)
	}
	for i, r := range name {
		letter := r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z'
		digit := r >= '0' && r <= '9'
		if !letter && !(digit && i > 0) {
			return Invalidf("table name %q must be ASCII letters and digits, starting with a letter", name)
		}
	}
	return nil
}
