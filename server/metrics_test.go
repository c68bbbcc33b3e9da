package server_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/server"
	"github.com/prometheus/client_golang/prometheus"
)

// TestMetrics checks that /metrics serves the named metrics after some traffic and dispatch steps.
func TestMetrics(t *testing.T) {
	h := newHarness(t)
	h.appendEvents("s", "A", 3)
	mustStatus(t, h.do("POST", "/streams/s", `{"expectedVersion": 0, "events": [{"type": "A"}]}`), http.StatusConflict)
	mustStatus(t, h.do("GET", "/streams/s/events", nil), http.StatusOK)
	mustStatus(t, h.do("GET", "/nope", nil), http.StatusNotFound)
	h.dispatch() // by hand: ObserveDispatch below is what a started dispatcher would call
	h.srv.ObserveDispatch(estuite.DispatchStats{}, errors.New("a failed step"))
	h.srv.ObserveDispatch(estuite.DispatchStats{FeedHead: 3, Backlog: 7, MaxLag: 1500 * time.Millisecond}, nil)
	live := h.openLive("")
	if _, ok := <-live.lines; !ok {
		t.Fatal("live stream ended")
	}

	r := h.do("GET", "/metrics", nil)
	mustStatus(t, r, http.StatusOK)
	body := string(r.body)
	for _, want := range []string{
		`estuite_append_duration_seconds_bucket{outcome="committed",le="+Inf"} 1`,
		`estuite_append_duration_seconds_count{outcome="wrong_expected_version"} 1`,
		`estuite_http_requests_total{code="201",route="POST /streams/{stream}"} 1`,
		`estuite_http_requests_total{code="409",route="POST /streams/{stream}"} 1`,
		`estuite_http_requests_total{code="200",route="GET /streams/{stream}/events"} 1`,
		`estuite_http_requests_total{code="404",route="unmatched"} 1`,
		`estuite_storage_requests_total{kind="point_read"}`,
		`estuite_storage_requests_total{kind="query_page"}`,
		`estuite_storage_requests_total{kind="batch"}`,
		`estuite_dispatch_lag_seconds 1.5`,
		`estuite_dispatch_backlog_events 7`,
		`estuite_feed_head_position 3`,
		`estuite_dispatch_steps_total 2`,
		`estuite_dispatch_errors_total 1`,
		`estuite_live_subscriptions 1`,
		`estuite_live_lowest_position`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Log(grepLines(body, "estuite_"))
	}
}

// TestRegistries checks the metrics registry options: servers with registries of their own do
// not clash, a shared registry refuses a second server, and a Registerer that cannot gather needs
// a Gatherer.
func TestRegistries(t *testing.T) {
	h := newHarness(t)
	if _, err := server.New(server.Options{Store: h.store}); err != nil {
		t.Fatalf("a second server with its own registry: %v", err)
	}
	reg := prometheus.NewRegistry()
	if _, err := server.New(server.Options{Store: h.store, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := server.New(server.Options{Store: h.store, Registerer: reg}); err == nil {
		t.Error("two servers registered in one registry")
	}
	reg2 := prometheus.NewRegistry()
	wrapped := prometheus.WrapRegistererWith(prometheus.Labels{"server": "b"}, reg2)
	if _, err := server.New(server.Options{Store: h.store, Registerer: wrapped}); err == nil {
		t.Error("a Registerer that is no Gatherer was accepted without a Gatherer")
	}
	if _, err := server.New(server.Options{Store: h.store, Registerer: wrapped, Gatherer: reg2}); err != nil {
		t.Error(err)
	}
	if _, err := server.New(server.Options{}); err == nil {
		t.Error("a server without a store")
	}
}
