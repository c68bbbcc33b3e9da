package server_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/server"
)

// TestListStreamsEndpoint pages through GET /streams with a prefix, as the console does.
func TestListStreamsEndpoint(t *testing.T) {
	h := newHarness(t, withDispatcher(estuite.DispatcherOptions{}))
	for i, name := range []string{"order-1", "order-2", "order-3", "tenant/a", "user-1"} {
		h.appendEvents(name, "T", i+1)
	}
	if _, err := h.dispatcher.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	type page struct {
		Streams []struct {
			Stream  string `json:"stream"`
			Version int64  `json:"version"`
		} `json:"streams"`
		Next *string `json:"next"`
	}
	var got []string
	after := ""
	for range 10 {
		r := h.do("GET", "/streams?limit=2&prefix=order-&after="+url.QueryEscape(after), nil)
		mustStatus(t, r, http.StatusOK)
		var p page
		r.decode(t, &p)
		for _, s := range p.Streams {
			got = append(got, fmt.Sprintf("%s@%d", s.Stream, s.Version))
		}
		if p.Next == nil {
			break
		}
		after = *p.Next
	}
	if strings.Join(got, " ") != "order-1@1 order-2@2 order-3@3" {
		t.Fatalf("listed %q", got)
	}
	r := h.do("GET", "/streams?prefix=tenant%2F", nil)
	mustStatus(t, r, http.StatusOK)
	if want := `{"streams":[{"stream":"tenant/a","version":4}],"next":null}`; compact(t, r.body) != want {
		t.Fatalf("prefix tenant/: %s, want %s", r.body, want)
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "prefix=%FF", "after=a%00", "other=1", "limit=1&limit=2"} {
		r := h.do("GET", "/streams?"+q, nil)
		if r.status != http.StatusBadRequest {
			t.Errorf("GET /streams?%s: status %d, want 400: %s", q, r.status, r.body)
			continue
		}
		if code := r.errorCode(t); code != "invalid_request" {
			t.Errorf("GET /streams?%s: code %s", q, code)
		}
	}
}

// TestHealthzSaysVersionBackendAndDispatcher: /healthz tells the version, the backend, the feed
// head and the dispatcher's state; names and errors only with credentials on a token server.
func TestHealthzSaysVersionBackendAndDispatcher(t *testing.T) {
	const token = "0123456789abcdef-token"
	h := newHarness(t, withToken(token), withDispatcher(estuite.DispatcherOptions{Owner: "node-a"}),
		withServerOptions(func(o *server.Options) { o.Version = "estuite test-1"; o.Backend = "memory" }))
	type health struct {
		Status, Version, Backend string
		FeedShards               int
		FeedHead                 *int64
		LeaseHeld                bool
		Dispatcher               struct {
			State, Owner string
			LeaseHolder  *string
			LastError    *string
		}
	}
	read := func(header ...string) health {
		r := h.do("GET", "/healthz", nil, header...)
		mustStatus(t, r, http.StatusOK)
		var v health
		r.decode(t, &v)
		return v
	}
	if v := read(); v.Version != "estuite test-1" || v.Backend != "memory" || v.Dispatcher.State != "stopped" || v.FeedHead == nil || *v.FeedHead != 0 {
		t.Fatalf("before start: %+v", v)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := h.dispatcher.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.dispatcher.Stop()
	h.appendEvents("s", "T", 3)
	eventually(t, "healthz shows the lease held and the feed head at 3", func() bool {
		v := read()
		return v.LeaseHeld && v.Dispatcher.State == "leading" && v.FeedHead != nil && *v.FeedHead == 3 &&
			v.Dispatcher.Owner == "node-a" && v.Dispatcher.LeaseHolder != nil && *v.Dispatcher.LeaseHolder == "node-a"
	})
	// Without credentials: the numbers, not the names.
	if v := read("Authorization", ""); v.Dispatcher.Owner != "" || v.Dispatcher.LeaseHolder != nil || !v.LeaseHeld || *v.FeedHead != 3 {
		t.Fatalf("without credentials: %+v", v)
	}
}

// TestBrowserSessionsAndTickets: a session cookie from POST /auth/session authenticates a
// browser's requests; a ticket authenticates GETs for a minute; neither works with another token.
func TestBrowserSessionsAndTickets(t *testing.T) {
	const token = "0123456789abcdef-token"
	h := newHarness(t, withToken(token))
	noAuth := []string{"Authorization", ""}

	r := h.do("GET", "/auth/session", nil, noAuth...)
	mustStatus(t, r, http.StatusOK)
	if want := `{"required":true,"authenticated":false,"expires":null}`; compact(t, r.body) != want {
		t.Fatalf("GET /auth/session: %s, want %s", r.body, want)
	}
	r = h.do("POST", "/auth/session", map[string]string{"token": "wrong-token-wrong-token"}, noAuth...)
	if r.status != http.StatusUnauthorized || r.header.Get("Set-Cookie") != "" {
		t.Fatalf("wrong token: %d %q", r.status, r.header.Get("Set-Cookie"))
	}
	for _, body := range []string{`{}`, `{"token":1}`, `[]`, `{"token":"a","x":1}`, `not json`} {
		if r := h.do("POST", "/auth/session", body, noAuth...); r.status != http.StatusBadRequest {
			t.Errorf("POST /auth/session %s: status %d, want 400", body, r.status)
		}
	}
	r = h.do("POST", "/auth/session", map[string]string{"token": token}, noAuth...)
	mustStatus(t, r, http.StatusNoContent)
	cookies := (&http.Response{Header: r.header}).Cookies()
	if len(cookies) != 1 || cookies[0].Name != server.SessionCookie || !cookies[0].HttpOnly || cookies[0].SameSite != http.SameSiteStrictMode || cookies[0].MaxAge != 43200 {
		t.Fatalf("session cookie: %+v", cookies)
	}
	cookie := server.SessionCookie + "=" + cookies[0].Value
	mustStatus(t, h.do("GET", "/feed", nil, "Authorization", "", "Cookie", cookie), http.StatusOK)
	h.appendEvents("s", "T", 1)
	mustStatus(t, h.do("POST", streamPath("s"), map[string]any{"events": []any{map[string]any{"type": "T", "data": map[string]int{"n": 1}}}},
		"Authorization", "", "Cookie", cookie), http.StatusCreated)
	r = h.do("GET", "/auth/session", nil, "Authorization", "", "Cookie", cookie)
	if v := r.json(t); v["authenticated"] != true || v["expires"] == nil {
		t.Fatalf("GET /auth/session with the cookie: %s", r.body)
	}
	// A forged or altered cookie is refused.
	for _, bad := range []string{cookies[0].Value[:len(cookies[0].Value)-2] + "AA", "x.y", strings.Repeat("A", 200)} {
		if r := h.do("GET", "/feed", nil, "Authorization", "", "Cookie", server.SessionCookie+"="+bad); r.status != http.StatusUnauthorized {
			t.Errorf("cookie %q: status %d, want 401", bad, r.status)
		}
	}
	// A ticket: for GETs, not for writes, not as a session.
	r = h.do("POST", "/auth/ticket", nil, "Authorization", "", "Cookie", cookie)
	mustStatus(t, r, http.StatusOK)
	var tk struct {
		Ticket           string `json:"ticket"`
		ExpiresInSeconds int    `json:"expiresInSeconds"`
	}
	r.decode(t, &tk)
	if tk.Ticket == "" || tk.ExpiresInSeconds != 60 {
		t.Fatalf("ticket: %s", r.body)
	}
	mustStatus(t, h.do("GET", "/feed?limit=5&ticket="+tk.Ticket, nil, noAuth...), http.StatusOK)
	mustStatus(t, h.do("GET", "/feed?ticket="+tk.Ticket+"&limit=5", nil, noAuth...), http.StatusOK)
	if r := h.do("DELETE", streamPath("s")+"?ticket="+tk.Ticket, nil, noAuth...); r.status != http.StatusUnauthorized && r.status != http.StatusBadRequest {
		t.Errorf("DELETE with a ticket: status %d, want 401 or 400", r.status)
	}
	if r := h.do("GET", "/feed", nil, "Authorization", "", "Cookie", server.SessionCookie+"="+tk.Ticket); r.status != http.StatusUnauthorized {
		t.Errorf("a ticket as a session cookie: status %d, want 401", r.status)
	}
	r = h.do("GET", "/feed?ticket=nope", nil, noAuth...)
	if r.status != http.StatusUnauthorized || !strings.Contains(string(r.body), "ticket") {
		t.Errorf("a bad ticket: %d %s", r.status, r.body)
	}
	if r := h.do("POST", "/auth/ticket", nil, noAuth...); r.status != http.StatusUnauthorized {
		t.Errorf("POST /auth/ticket without credentials: %d", r.status)
	}
	// Another token: the old session and ticket no longer work.
	other := newHarness(t, withToken("another-token-0123456789"))
	if r := other.do("GET", "/feed", nil, "Authorization", "", "Cookie", cookie); r.status != http.StatusUnauthorized {
		t.Errorf("the session on a server with another token: %d", r.status)
	}
	// Logging out clears the cookie.
	r = h.do("DELETE", "/auth/session", nil, noAuth...)
	mustStatus(t, r, http.StatusNoContent)
	if c := (&http.Response{Header: r.header}).Cookies(); len(c) != 1 || c[0].MaxAge >= 0 {
		t.Fatalf("logout cookie: %+v", c)
	}
}
