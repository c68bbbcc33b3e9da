package client

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/estuite/estuite"
)

// Error codes of the HTTP API's error bodies (the "error" member; docs/http-api.md, Errors).
const (
	CodeInvalidRequest       = "invalid_request"
	CodeTooLarge             = "too_large"
	CodeUnauthorized         = "unauthorized"
	CodeForbiddenHost        = "forbidden_host"
	CodeForbiddenOrigin      = "forbidden_origin"
	CodeNotFound             = "not_found"
	CodeMethodNotAllowed     = "method_not_allowed"
	CodeStreamNotFound       = "stream_not_found"
	CodeStreamDeleted        = "stream_deleted"
	CodeSubjectForgotten     = "subject_forgotten"
	CodeWrongExpectedVersion = "wrong_expected_version"
	CodeCommitConflict       = "commit_conflict"
	CodeDuplicateEvent       = "duplicate_event"
	CodeStreamContended      = "stream_contended"
	CodeUnsupportedMediaType = "unsupported_media_type"
	CodeUnavailable          = "unavailable"
	CodeTooManyLiveStreams   = "too_many_live_streams"
	CodeGroupNotFound        = "group_not_found"
	CodeEventParked          = "event_parked"
	CodeTimeout              = "timeout"
	CodeVerifyRunning        = "verify_running"
	CodeVerifyNotFound       = "verify_not_found"
	CodeInternal             = "internal"
)

// Error is an error answer of the server: its status, its error code and message, and the extra
// members some codes carry. errors.Is matches it against the estuite sentinel of its code, where
// one exists (see Is).
type Error struct {
	// Status is the HTTP status.
	Status int
	// Code is the body's "error" member, e.g. "wrong_expected_version"; for an answer without
	// an error body, "http_" and the status.
	Code string
	// Message is the body's "message": for people, never to branch on.
	Message string
	// ActualVersion is the stream's (or metadata's) version of a wrong_expected_version, when
	// the server said it.
	ActualVersion *int64
	// CommitID is the commit of a commit_conflict; EventID the event of a duplicate_event.
	CommitID, EventID string
	// ID is the running verification of a verify_running.
	ID string
	// RetryAfter is the Retry-After header's wait, when the server sent one in seconds.
	RetryAfter int
}

// Error returns the message as the store's errors read: "estuite: " and the server's message.
func (e *Error) Error() string {
	if e.Message == "" {
		return "estuite: the server answered " + strconv.Itoa(e.Status) + " " + e.Code
	}
	return "estuite: " + e.Message
}

// sentinels maps error codes to the estuite errors they stand for.
var sentinels = map[string]error{
	CodeInvalidRequest:       estuite.ErrInvalidInput,
	CodeTooLarge:             estuite.ErrTooLarge,
	CodeStreamNotFound:       estuite.ErrStreamNotFound,
	CodeStreamDeleted:        estuite.ErrStreamDeleted,
	CodeSubjectForgotten:     estuite.ErrSubjectForgotten,
	CodeWrongExpectedVersion: estuite.ErrWrongExpectedVersion,
	CodeCommitConflict:       estuite.ErrCommitConflict,
	CodeDuplicateEvent:       estuite.ErrDuplicateEvent,
	CodeStreamContended:      estuite.ErrContention,
	CodeUnavailable:          estuite.ErrUnavailable,
	CodeGroupNotFound:        estuite.ErrGroupNotFound,
	CodeEventParked:          estuite.ErrEventParked,
}

// Is reports whether target is the estuite sentinel error of e's code: estuite.ErrInvalidInput
// (invalid_request), ErrTooLarge, ErrStreamNotFound, ErrStreamDeleted, ErrSubjectForgotten,
// ErrWrongExpectedVersion, ErrCommitConflict, ErrDuplicateEvent, ErrContention
// (stream_contended), ErrUnavailable, ErrGroupNotFound or ErrEventParked.
func (e *Error) Is(target error) bool {
	s, ok := sentinels[e.Code]
	return ok && s == target
}

// errorBody is the JSON error body.
type errorBody struct {
	Error         string `json:"error"`
	Message       string `json:"message"`
	ActualVersion *int64 `json:"actualVersion"`
	CommitID      string `json:"commitId"`
	EventID       string `json:"eventId"`
	ID            string `json:"id"`
}

// errorFrom makes the *Error of an answer of status 400 or above with body data.
func errorFrom(resp *http.Response, data []byte) *Error {
	e := &Error{Status: resp.StatusCode, Code: "http_" + strconv.Itoa(resp.StatusCode)}
	var b errorBody
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") && json.Unmarshal(data, &b) == nil && b.Error != "" {
		e.Code, e.Message, e.ActualVersion, e.CommitID, e.EventID, e.ID = b.Error, b.Message, b.ActualVersion, b.CommitID, b.EventID, b.ID
	} else {
		e.Message = "the server answered " + resp.Status
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
		e.RetryAfter = s
	}
	return e
}

// As lets errors.As find a *estuite.WrongExpectedVersionError in a wrong_expected_version that
// carries the actual version (its Expected is not known to the client and left Any).
func (e *Error) As(target any) bool {
	if t, ok := target.(**estuite.WrongExpectedVersionError); ok && e.Code == CodeWrongExpectedVersion && e.ActualVersion != nil {
		*t = &estuite.WrongExpectedVersionError{Actual: *e.ActualVersion}
		return true
	}
	return false
}

// RedirectError is a 3xx answer. The client never follows a redirect (Go's client would resend a
// POST or a DELETE as a GET, whose answer reads as a success): give New the URL the server
// redirects to instead.
type RedirectError struct {
	// Status is the HTTP status, e.g. 301.
	Status int
	// Method and Path are the request's (the path from the server URL's root, escaped).
	Method, Path string
	// Location is the Location header: where the server redirects to ("" when it sent none).
	Location string
}

func (e *RedirectError) Error() string {
	to := "without a Location"
	if e.Location != "" {
		to = "to " + strconv.Quote(e.Location)
	}
	return "client: the server answered " + e.Method + " " + e.Path + " with a redirect (" + strconv.Itoa(e.Status) + ") " + to +
		": redirects are not followed; give the client the URL the server redirects to"
}

// UnknownOutcomeError is an append whose outcome is unknown: the request was sent, and no answer
// says whether it was committed (the connection was lost, the client's timeout or ctx ran out,
// or the server or a proxy answered 5xx). It matches estuite.ErrUnavailable, as such an append of
// Store.Append does: retry it with the same commit ID, CommitID, to learn which — a retry of a
// commit that was made answers Duplicate true.
type UnknownOutcomeError struct {
	// Stream and CommitID are the append's (CommitID the one the client generated, if the
	// caller gave none).
	Stream, CommitID string
	// Err is what went wrong: a transport error, or the server's *Error.
	Err error
}

func (e *UnknownOutcomeError) Error() string {
	return fmt.Sprintf("estuite: stream %q: the append may or may not have been committed (%v): retry it with the same commit ID, %q",
		e.Stream, trimPrefix(e.Err), e.CommitID)
}

// Is makes errors.Is(err, estuite.ErrUnavailable) true.
func (e *UnknownOutcomeError) Is(target error) bool { return target == estuite.ErrUnavailable }

func (e *UnknownOutcomeError) Unwrap() error { return e.Err }

// trimPrefix is err's message without a leading "estuite: ", for a message that has one already.
func trimPrefix(err error) string { return strings.TrimPrefix(err.Error(), "estuite: ") }
