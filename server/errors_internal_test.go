package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/estuite/estuite"
)

// TestContentionErrorMapsTo409 checks the answer to an append the store refused because its
// stream kept changing under it: 409 stream_contended with Retry-After: 1, logged at Info, also
// when the store wraps the error.
func TestContentionErrorMapsTo409(t *testing.T) {
	for _, err := range []error{
		&estuite.ContentionError{Stream: "hot", Attempts: 8},
		fmt.Errorf("appending: %w", &estuite.ContentionError{Stream: "hot", Attempts: 8}),
		estuite.ErrContention,
	} {
		req := httptest.NewRequest("POST", "/streams/hot", nil)
		e := requestError(req, err)
		if e.Status != http.StatusConflict || e.Code != "stream_contended" || e.logLevel() != slog.LevelInfo {
			t.Errorf("%v: status %d, code %q, level %s; want 409 stream_contended at Info", err, e.Status, e.Code, e.logLevel())
		}
		rec := httptest.NewRecorder()
		(&Server{}).writeError(rec, req, e)
		if rec.Code != http.StatusConflict || rec.Header().Get("Retry-After") != "1" {
			t.Errorf("%v: answered %d with Retry-After %q; want 409 with Retry-After 1", err, rec.Code, rec.Header().Get("Retry-After"))
		}
	}
}

// TestClientGoneIsTheRequestsOwnCancellation checks that only a request whose own context ended
// counts as a client gone: another cancellation stays a 503.
func TestClientGoneIsTheRequestsOwnCancellation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	gone := httptest.NewRequest("POST", "/streams/s", nil).WithContext(ctx)
	if e := requestError(gone, fmt.Errorf("append: %w", context.Canceled)); e.Status != StatusClientClosedRequest || e.logLevel() != slog.LevelDebug {
		t.Errorf("client gone: %d at %s", e.Status, e.logLevel())
	}
	if e := requestError(gone, estuite.ErrUnavailable); e.Status != http.StatusServiceUnavailable {
		t.Errorf("storage unavailable while the client left: %d, want 503", e.Status)
	}
	here := httptest.NewRequest("POST", "/streams/s", nil)
	if e := requestError(here, context.Canceled); e.Status != http.StatusServiceUnavailable || e.logLevel() != slog.LevelError {
		t.Errorf("a cancellation not the request's: %d at %s, want 503 at Error", e.Status, e.logLevel())
	}
}
