package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/estuite/estuite"
)

// Error codes: the "error" member of every error response (docs/http-api.md lists them).
const (
	codeInvalidRequest       = "invalid_request"
	codeTooLarge             = "too_large"
	codeUnauthorized         = "unauthorized"
	codeNotFound             = "not_found"
	codeMethodNotAllowed     = "method_not_allowed"
	codeStreamNotFound       = "stream_not_found"
	codeStreamDeleted        = "stream_deleted"
	codeSubjectForgotten     = "subject_forgotten"
	codeWrongExpectedVersion = "wrong_expected_version"
	codeCommitConflict       = "commit_conflict"
	codeDuplicateEvent       = "duplicate_event"
	codeStreamContended      = "stream_contended"
	codeUnavailable          = "unavailable"
	codeTooManyLiveStreams   = "too_many_live_streams"
	codeGroupNotFound        = "group_not_found"
	codeEventParked          = "event_parked"
	codeTimeout              = "timeout"
	codeInternal             = "internal"
	// codeClientClosed is never sent (nobody is listening): it labels the metrics and logs of
	// a request whose client went away before it was answered.
	codeClientClosed = "client_closed_request"
)

// StatusClientClosedRequest is the status counted (in estuite_http_requests_total) for a request
// whose client went away before the answer was ready: nginx's 499. The client never sees it.
const StatusClientClosedRequest = 499

// apiError is an error response: its status and JSON body, and the error behind it (for the
// logs, never for the client unless it is the client's fault).
type apiError struct {
	Status        int    `json:"-"`
	Code          string `json:"error"`
	Message       string `json:"message"`
	ActualVersion *int64 `json:"actualVersion,omitempty"`
	CommitID      string `json:"commitId,omitempty"`
	EventID       string `json:"eventId,omitempty"`
	Parked        bool   `json:"parked,omitempty"` // event_parked: the event waited for was parked
	ID            string `json:"id,omitempty"`     // verify_running: the running verification's ID
	Err           error  `json:"-"`
	// quiet logs the answer at Debug: see logLevel.
	quiet bool
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

// logLevel is how loud a failed request is in the logs: Error for the server's faults (5xx; Warn
// for a live stream refused because the server has as many as it may hold),
// Debug for a client that went away (nothing went wrong on the server), Info for every answer a
// client caused (4xx: bad input, conflicts, a stream not yet written), which are part of normal
// operation and must not page anyone. Refusals that any client can cause without the token —
// 401, 403 (Host, Origin), 415 and 405 on /healthz — are Debug too: at the default level (Info)
// a client could otherwise fill the log as fast as it can send requests. They are still counted
// in estuite_http_requests_total.
func (e *apiError) logLevel() slog.Level {
	switch {
	case e.Code == codeTooManyLiveStreams:
		return slog.LevelWarn // the server is full, not failing
	case e.Status >= 500:
		return slog.LevelError
	case e.quiet, e.Code == codeClientClosed, e.Code == codeUnauthorized, e.Code == codeForbiddenHost,
		e.Code == codeForbiddenOrigin, e.Code == codeUnsupportedMediaType:
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// badRequest is a 400 invalid_request with a message for the client.
func badRequest(format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: codeInvalidRequest, Message: fmt.Sprintf(format, args...)}
}

// toAPIError maps any error a handler meets — the store's, the request body's, the server's own —
// to its response. It is the one place where errors become statuses and codes.
func toAPIError(err error) *apiError {
	var (
		ae    *apiError
		wrong *estuite.WrongExpectedVersionError
		cc    *estuite.CommitConflictError
		dup   *estuite.DuplicateEventError
		mbe   *http.MaxBytesError
	)
	msg := strings.TrimPrefix(err.Error(), "estuite: ")
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &mbe):
		return &apiError{Status: http.StatusRequestEntityTooLarge, Code: codeTooLarge,
			Message: fmt.Sprintf("the request body is larger than %d bytes", mbe.Limit), Err: err}
	case errors.As(err, &wrong):
		actual := wrong.Actual
		return &apiError{Status: http.StatusConflict, Code: codeWrongExpectedVersion, Message: msg, ActualVersion: &actual, Err: err}
	case errors.Is(err, estuite.ErrWrongExpectedVersion):
		return &apiError{Status: http.StatusConflict, Code: codeWrongExpectedVersion, Message: msg, Err: err}
	case errors.As(err, &cc):
		return &apiError{Status: http.StatusConflict, Code: codeCommitConflict, Message: msg, CommitID: cc.CommitID, Err: err}
	case errors.Is(err, estuite.ErrCommitConflict):
		return &apiError{Status: http.StatusConflict, Code: codeCommitConflict, Message: msg, Err: err}
	case errors.As(err, &dup):
		return &apiError{Status: http.StatusConflict, Code: codeDuplicateEvent, Message: msg, EventID: dup.EventID.String(), Err: err}
	case errors.Is(err, estuite.ErrDuplicateEvent):
		return &apiError{Status: http.StatusConflict, Code: codeDuplicateEvent, Message: msg, Err: err}
	case errors.Is(err, estuite.ErrContention):
		// Storage answered every request; other writers kept moving the stream. Nothing was written.
		return &apiError{Status: http.StatusConflict, Code: codeStreamContended, Message: msg, Err: err}
	case errors.Is(err, estuite.ErrStreamDeleted):
		return &apiError{Status: http.StatusGone, Code: codeStreamDeleted, Message: "the stream was deleted for good", Err: err}
	case errors.Is(err, estuite.ErrSubjectForgotten):
		return &apiError{Status: http.StatusGone, Code: codeSubjectForgotten, Message: msg, Err: err}
	case errors.Is(err, estuite.ErrStreamNotFound):
		return &apiError{Status: http.StatusNotFound, Code: codeStreamNotFound, Message: "the stream has never been written, or was deleted", Err: err}
	case errors.Is(err, estuite.ErrGroupNotFound):
		return &apiError{Status: http.StatusNotFound, Code: codeGroupNotFound, Message: msg, Err: err}
	case errors.Is(err, estuite.ErrEventParked):
		return &apiError{Status: http.StatusConflict, Code: codeEventParked, Message: msg, Parked: true, Err: err}
	case errors.Is(err, estuite.ErrInvalidInput):
		return &apiError{Status: http.StatusBadRequest, Code: codeInvalidRequest, Message: msg, Err: err}
	case errors.Is(err, estuite.ErrTooLarge):
		return &apiError{Status: http.StatusRequestEntityTooLarge, Code: codeTooLarge, Message: msg, Err: err}
	case errors.Is(err, estuite.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return &apiError{Status: http.StatusServiceUnavailable, Code: codeUnavailable,
			Message: "storage is unavailable; retry later (an append may or may not have been committed: retry it with the same commitId to learn which)", Err: err}
	case errors.Is(err, estuite.ErrClosed):
		return &apiError{Status: http.StatusServiceUnavailable, Code: codeUnavailable, Message: "the store is closed", Err: err}
	case errors.Is(err, context.Canceled):
		// A cancellation that is not the request's own (requestError catches a client that went
		// away): the server is stopping.
		return &apiError{Status: http.StatusServiceUnavailable, Code: codeUnavailable, Message: "the request was canceled", Err: err}
	}
	return &apiError{Status: http.StatusInternalServerError, Code: codeInternal, Message: "internal error", Err: err}
}

// requestError maps err, met while serving r, to its response: toAPIError, except that an error
// that is r's own context ending — the client went away — is a client_closed_request (499), not
// a server fault.
func requestError(r *http.Request, err error) *apiError {
	if cerr := r.Context().Err(); cerr != nil && errors.Is(err, cerr) {
		return &apiError{Status: StatusClientClosedRequest, Code: codeClientClosed,
			Message: "the client went away before the answer was ready", Err: err}
	}
	return toAPIError(err)
}

// fail answers err as an error response.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	s.writeError(w, r, requestError(r, err))
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, e *apiError) {
	requestInfoOf(r).err = e
	if e.Status == http.StatusServiceUnavailable || e.Code == codeStreamContended {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, e.Status, e)
}
