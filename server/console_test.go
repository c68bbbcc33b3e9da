package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/estuite/estuite"
)

// TestConsoleFilesNeedNoTokenAndCarryTheirHeaders checks that the console's files are served
// without the token, with their Content-Type, a strict Content-Security-Policy and revalidation
// by ETag; that /ui redirects to /ui/; and that the Host and Origin checks still apply.
func TestConsoleFilesNeedNoTokenAndCarryTheirHeaders(t *testing.T) {
	h := newHarness(t, withToken("console-test-token-0123456789"))
	h.token = "" // requests without the token
	for path, ctype := range map[string]string{
		"/ui/":           "text/html; charset=utf-8",
		"/ui/index.html": "text/html; charset=utf-8",
		"/ui/app.js":     "text/javascript; charset=utf-8",
		"/ui/style.css":  "text/css; charset=utf-8",
	} {
		r := h.do("GET", path, nil)
		mustStatus(t, r, http.StatusOK)
		if got := r.header.Get("Content-Type"); got != ctype {
			t.Errorf("%s: Content-Type %q, want %q", path, got, ctype)
		}
		csp := r.header.Get("Content-Security-Policy")
		if !strings.HasPrefix(csp, "default-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: Content-Security-Policy %q", path, csp)
		}
		etag := r.header.Get("ETag")
		if r.header.Get("Cache-Control") != "no-cache" || etag == "" || r.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: Cache-Control %q, ETag %q, nosniff %q", path, r.header.Get("Cache-Control"), etag, r.header.Get("X-Content-Type-Options"))
		}
		if again := h.do("GET", path, nil, "If-None-Match", etag); again.status != http.StatusNotModified {
			t.Errorf("%s with If-None-Match: %d, want 304", path, again.status)
		}
	}
	if r := h.do("GET", "/ui/index.html", nil); !strings.Contains(string(r.body), `<script type="module" src="app.js">`) || strings.Contains(string(r.body), "<script>") {
		t.Errorf("index.html should load app.js as a module and hold no inline script:\n%s", r.body)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Get(h.ts.URL + "/ui")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMovedPermanently || res.Header.Get("Location") != "/ui/" {
		t.Errorf("GET /ui: %d to %q; want 301 to /ui/", res.StatusCode, res.Header.Get("Location"))
	}
	if r := h.do("GET", "/ui/missing.js", nil); r.status != http.StatusNotFound || r.errorCode(t) != "not_found" {
		t.Errorf("GET /ui/missing.js: %d", r.status)
	}
	if r := h.do("POST", "/ui/", nil); r.status != http.StatusMethodNotAllowed {
		t.Errorf("POST /ui/: %d, want 405", r.status)
	}
	if r := h.do("GET", "/ui/", nil, "Origin", "http://evil.example"); r.status != http.StatusForbidden || r.errorCode(t) != "forbidden_origin" {
		t.Errorf("GET /ui/ from another origin: %d, want 403 forbidden_origin", r.status)
	}
	// The API behind the console still needs the token.
	if r := h.do("GET", "/admin/stats", nil); r.status != http.StatusUnauthorized {
		t.Errorf("GET /admin/stats without the token: %d, want 401", r.status)
	}
	if r := h.do("GET", "/subscriptions", nil); r.status != http.StatusUnauthorized {
		t.Errorf("GET /subscriptions without the token: %d, want 401", r.status)
	}
}

// TestConsoleHostCheckWithoutToken checks that without a token the console answers only under a
// loopback Host, like the API (DNS rebinding).
func TestConsoleHostCheckWithoutToken(t *testing.T) {
	h := newHarness(t)
	if r := h.do("GET", "/ui/", nil, "Host", "rebind.example:2113"); r.status != http.StatusForbidden || r.errorCode(t) != "forbidden_host" {
		t.Errorf("GET /ui/ under another Host: %d, want 403 forbidden_host", r.status)
	}
}

// TestSubscriptionsListCheckpointsAndDistance checks GET /subscriptions: each durable
// subscription's checkpoint, its shard's feed head and the distance between them, and a 400 for
// a bad limit.
func TestSubscriptionsListCheckpointsAndDistance(t *testing.T) {
	h := newHarness(t)
	r := h.do("GET", "/subscriptions", nil)
	mustStatus(t, r, http.StatusOK)
	if got := compact(t, r.body); got != `{"subscriptions":[]}` {
		t.Errorf("no subscriptions: %s", got)
	}
	h.appendEvents("order-1", "OrderPlaced", 3)
	h.dispatch()
	handled := make(chan struct{}, 10)
	sub, err := h.store.Subscribe(context.Background(), estuite.SubscriptionOptions{Name: "projector", CheckpointEvery: 1,
		Handler: func(context.Context, estuite.FeedEvent) error { handled <- struct{}{}; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		<-handled
	}
	if err := sub.Stop(); err != nil {
		t.Fatal(err)
	}
	h.appendEvents("order-2", "OrderPlaced", 2)
	h.dispatch()
	var out struct {
		Subscriptions []struct {
			Subscription                 string
			Shard                        int
			Position, FeedHead, Distance int64
			Updated                      *string
		}
	}
	r = h.do("GET", "/subscriptions?limit=10", nil)
	mustStatus(t, r, http.StatusOK)
	r.decode(t, &out)
	if len(out.Subscriptions) != 1 {
		t.Fatalf("subscriptions %s", r.body)
	}
	if s := out.Subscriptions[0]; s.Subscription != "projector" || s.Shard != 0 || s.Position != 3 || s.FeedHead != 5 || s.Distance != 2 || s.Updated == nil {
		t.Errorf("subscription %+v; want projector at 3 of 5, 2 behind", s)
	}
	for _, q := range []string{"?limit=0", "?limit=1001", "?limit=x", "?after=1", "?limit=1&limit=2"} {
		if r := h.do("GET", "/subscriptions"+q, nil); r.status != http.StatusBadRequest || r.errorCode(t) != "invalid_request" {
			t.Errorf("GET /subscriptions%s: %d, want 400 invalid_request", q, r.status)
		}
	}
}
