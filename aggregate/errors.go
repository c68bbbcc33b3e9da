package aggregate

import (
	"errors"
	"fmt"
	"reflect"
)

// Sentinel errors. Errors for these conditions match them with errors.Is; the typed errors
// below carry the details and match with errors.As.
var (
	// ErrNotFound: Load found no stream for the aggregate (it has no events yet).
	ErrNotFound = errors.New("aggregate: not found")
	// ErrUnknownEventType: a stored event's type name and schema are neither registered nor
	// upcast. The error is an *UnknownEventTypeError naming them.
	ErrUnknownEventType = errors.New("aggregate: unknown event type")
	// ErrUnregisteredType: an event's Go type was not registered, so it cannot be saved. The
	// error is an *UnregisteredTypeError naming the Go type.
	ErrUnregisteredType = errors.New("aggregate: unregistered event Go type")
)

// UnknownEventTypeError reports a stored event that the registry cannot decode: no Go type is
// registered for its type name at its schema, and no upcaster turns that form into one.
type UnknownEventTypeError struct {
	Type   string // the event's type name, as stored (or as an upcaster returned it)
	Schema int    // its schema version (1 when the event records none)
}

func (e *UnknownEventTypeError) Error() string {
	return fmt.Sprintf("aggregate: unknown event type %q (schema %d): register a Go type or an upcaster for it", e.Type, e.Schema)
}

// Is makes errors.Is(err, ErrUnknownEventType) true.
func (e *UnknownEventTypeError) Is(target error) bool { return target == ErrUnknownEventType }

// UnregisteredTypeError reports an event value whose Go type has no registered type name.
type UnregisteredTypeError struct {
	GoType reflect.Type
}

func (e *UnregisteredTypeError) Error() string {
	return fmt.Sprintf("aggregate: event Go type %v is not registered (see Register)", e.GoType)
}

// Is makes errors.Is(err, ErrUnregisteredType) true.
func (e *UnregisteredTypeError) Is(target error) bool { return target == ErrUnregisteredType }

// DecodeError reports a stored event whose type is known but whose data or metadata the codec
// could not read.
type DecodeError struct {
	Stream  string
	Version int64
	Type    string
	Schema  int
	Err     error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("aggregate: decoding event %d of stream %q (%q, schema %d): %v", e.Version, e.Stream, e.Type, e.Schema, e.Err)
}

// Unwrap returns the codec's error.
func (e *DecodeError) Unwrap() error { return e.Err }
