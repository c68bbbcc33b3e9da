package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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

// healthOnly is a collector of one dispatcher health, as the server reports it.
type healthOnly struct {
	h   estuite.DispatcherHealth
	now time.Time
}

func (c healthOnly) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }
func (c healthOnly) Collect(ch chan<- prometheus.Metric) { collectHealth(ch, c.h, c.now) }

func scrapeHealth(t *testing.T, h estuite.DispatcherHealth, now time.Time) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(healthOnly{h, now})
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// TestDispatcherHealthMetrics checks what /metrics makes of a dispatcher's Health: the lease as
// 0/1, the oldest pending append's age, the pending streams, and the seconds since the last
// progress (absent before any).
func TestDispatcherHealthMetrics(t *testing.T) {
	now := time.Now()
	body := scrapeHealth(t, estuite.DispatcherHealth{LeaseHeld: true, Running: true, OldestPending: 2500 * time.Millisecond,
		Pending: 3, LastProgress: now.Add(-4 * time.Second)}, now)
	for _, want := range []string{
		"\nestuite_dispatcher_lease_held 1\n",
		"\nestuite_dispatch_oldest_pending_seconds 2.5\n",
		"\nestuite_dispatch_pending_streams 3\n",
		"\nestuite_dispatch_seconds_since_progress 4\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", strings.TrimSpace(want), body)
		}
	}
	body = scrapeHealth(t, estuite.DispatcherHealth{}, now)
	for _, want := range []string{"\nestuite_dispatcher_lease_held 0\n", "\nestuite_dispatch_pending_streams 0\n", "\nestuite_dispatch_oldest_pending_seconds 0\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", strings.TrimSpace(want), body)
		}
	}
	if strings.Contains(body, "\nestuite_dispatch_seconds_since_progress ") {
		t.Errorf("seconds since progress reported before any progress:\n%s", body)
	}
}
