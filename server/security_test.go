package server_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/server"
)

const appendBody = `{"events": [{"type": "A"}]}`

// mustNotExist fails the test if stream was written.
func (h *harness) mustNotExist(stream string) {
	h.t.Helper()
	if _, err := h.store.Version(h.t.Context(), stream); !errors.Is(err, estuite.ErrStreamNotFound) {
		h.t.Fatalf("stream %q was written (or could not be read: %v)", stream, err)
	}
}

// port is the port the harness listens on.
func (h *harness) port() string {
	u, _ := url.Parse(h.ts.URL)
	return u.Port()
}

// TestHostMustNameTheServerWithoutToken checks the defence against DNS rebinding: without a token,
// a request whose Host is not a loopback address, "localhost" or an allowed host is refused with
// 403 forbidden_host and writes nothing; /healthz answers any Host; with a token the Host is
// not checked.
func TestHostMustNameTheServerWithoutToken(t *testing.T) {
	h := newHarness(t, withServerOptions(func(o *server.Options) {
		o.AllowedHosts = []string{"Estuite.Internal", "10.1.2.3", "[fd00::1]"}
	}))
	for _, host := range []string{
		"127.0.0.1:" + h.port(), "127.0.0.1", "127.9.8.7:2113", "localhost:2113", "LOCALHOST", "[::1]:2113", "[::1]",
		"estuite.internal:8080", "ESTUITE.INTERNAL", "10.1.2.3:2113", "[fd00::1]:80",
	} {
		mustStatus(t, h.do("GET", "/feed", nil, "Host", host), http.StatusOK)
	}
	for _, host := range []string{
		"attacker.example:2113", "attacker.example", "localhost.attacker.example:2113", "127.0.0.1.nip.io:2113",
		"estuite.internal.attacker.example", "10.1.2.4:2113", "0.0.0.0:2113", "[::]:2113", "sub.localhost:2113",
	} {
		for _, req := range []struct{ method, path string }{{"POST", "/streams/s"}, {"GET", "/feed"}, {"HEAD", "/feed/live"}, {"GET", "/metrics"}, {"GET", "/nope"}} {
			r := h.do(req.method, req.path, appendBody, "Host", host)
			if r.status != http.StatusForbidden || (req.method != "HEAD" && r.errorCode(t) != "forbidden_host") {
				t.Errorf("%s %s under Host %q: %d %s, want 403 forbidden_host", req.method, req.path, host, r.status, r.body)
			}
		}
		mustStatus(t, h.do("GET", "/healthz", nil, "Host", host), http.StatusOK)
	}
	h.mustNotExist("s")

	ht := newHarness(t, withToken("a-token-of-16-chars"))
	mustStatus(t, ht.do("POST", "/streams/s", appendBody, "Host", "attacker.example:2113"), http.StatusCreated)
	r := ht.do("GET", "/feed", nil, "Host", "attacker.example:2113", "Authorization", "")
	if r.status != http.StatusUnauthorized {
		t.Fatalf("with a token, a foreign Host without it: %d, want 401", r.status)
	}
}

// TestOriginMustBeAllowed checks that a request from a web page of another origin is refused
// (403 forbidden_origin, nothing written), with or without a token, and that the server's own
// origin and the configured CORS origins are served, the latter with CORS headers.
func TestOriginMustBeAllowed(t *testing.T) {
	for _, token := range []string{"", "a-token-of-16-chars"} {
		t.Run(fmt.Sprintf("token=%t", token != ""), func(t *testing.T) {
			h := newHarness(t, withToken(token), withServerOptions(func(o *server.Options) {
				o.CORSOrigins = []string{"https://App.Example", "http://localhost:3000"}
			}))
			own := "http://127.0.0.1:" + h.port()
			for _, origin := range []string{
				"https://attacker.example", "http://attacker.example:" + h.port(), "null", "http://localhost:3001",
				"https://app.example:8443", "http://app.example", "https://app.example.attacker.example", "http://127.0.0.1:1",
				"not an origin", "file://", "https://app.example/",
			} {
				for _, req := range []struct{ method, path string }{{"POST", "/streams/s"}, {"GET", "/feed"}, {"GET", "/streams/s/events"}, {"GET", "/nope"}, {"GET", "/healthz"}} {
					r := h.do(req.method, req.path, appendBody, "Origin", origin)
					if r.status != http.StatusForbidden || r.errorCode(t) != "forbidden_origin" {
						t.Errorf("%s %s from %q: %d %s, want 403 forbidden_origin", req.method, req.path, origin, r.status, r.body)
					}
					if r.header.Get("Access-Control-Allow-Origin") != "" {
						t.Errorf("%s %s from %q: Access-Control-Allow-Origin %q", req.method, req.path, origin, r.header.Get("Access-Control-Allow-Origin"))
					}
				}
			}
			h.mustNotExist("s")

			r := h.do("POST", "/streams/own", appendBody, "Origin", own)
			mustStatus(t, r, http.StatusCreated)
			if got := r.header.Get("Access-Control-Allow-Origin"); got != "" {
				t.Errorf("the server's own origin got Access-Control-Allow-Origin %q", got)
			}
			for _, origin := range []string{"https://app.example", "https://APP.example:443", "http://localhost:3000"} {
				r := h.do("POST", "/streams/cors", appendBody, "Origin", origin)
				mustStatus(t, r, http.StatusCreated)
				if got := r.header.Get("Access-Control-Allow-Origin"); got != origin {
					t.Errorf("from %q: Access-Control-Allow-Origin %q", origin, got)
				}
				if got := r.header.Get("Vary"); got != "Origin" {
					t.Errorf("from %q: Vary %q, want Origin", origin, got)
				}
			}
			if token != "" {
				r := h.do("GET", "/feed", nil, "Origin", "https://app.example", "Authorization", "")
				if r.status != http.StatusUnauthorized || r.header.Get("Access-Control-Allow-Origin") != "https://app.example" {
					t.Errorf("an allowed origin without the token: %d, Access-Control-Allow-Origin %q; want 401 that the page can read",
						r.status, r.header.Get("Access-Control-Allow-Origin"))
				}
			}
		})
	}
}

// TestCORSPreflight checks the answer to a browser's preflight: allowed origins learn the
// methods and headers they may use, without a token; any other origin gets 403.
func TestCORSPreflight(t *testing.T) {
	h := newHarness(t, withToken("a-token-of-16-chars"), withServerOptions(func(o *server.Options) {
		o.CORSOrigins = []string{"https://app.example"}
	}))
	r := h.do("OPTIONS", "/streams/s", nil, "Authorization", "", "Origin", "https://app.example",
		"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization,content-type")
	mustStatus(t, r, http.StatusNoContent)
	for name, want := range map[string]string{
		"Access-Control-Allow-Origin":  "https://app.example",
		"Access-Control-Allow-Methods": "GET, HEAD, POST, DELETE",
		"Access-Control-Allow-Headers": "Authorization, Content-Type, Last-Event-ID",
		"Vary":                         "Origin",
		"X-Content-Type-Options":       "nosniff",
	} {
		if got := r.header.Get(name); got != want {
			t.Errorf("preflight: %s %q, want %q", name, got, want)
		}
	}
	r = h.do("OPTIONS", "/streams/s", nil, "Authorization", "", "Origin", "https://attacker.example", "Access-Control-Request-Method", "POST")
	if r.status != http.StatusForbidden || r.errorCode(t) != "forbidden_origin" || r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from another origin: %d %s, Access-Control-Allow-Origin %q", r.status, r.body, r.header.Get("Access-Control-Allow-Origin"))
	}
	// Not a preflight: an OPTIONS request like any other method the route does not have.
	r = h.do("OPTIONS", "/streams/s", nil)
	if r.status != http.StatusMethodNotAllowed || r.errorCode(t) != "method_not_allowed" {
		t.Errorf("OPTIONS without Access-Control-Request-Method: %d %s", r.status, r.body)
	}
}

// TestAppendNeedsAJSONContentType checks that an append whose body is not declared as JSON — what
// a plain HTML form or a CORS "simple" request sends — is refused with 415 and writes nothing.
func TestAppendNeedsAJSONContentType(t *testing.T) {
	h := newHarness(t)
	for _, ct := range []string{
		"", "text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
		"application/json; charset=iso-8859-1", "application/jsonx", "text/json", "application/json;;", "json",
	} {
		r := h.do("POST", "/streams/s", appendBody, "Content-Type", ct)
		if r.status != http.StatusUnsupportedMediaType || r.errorCode(t) != "unsupported_media_type" {
			t.Errorf("Content-Type %q: %d %s, want 415 unsupported_media_type", ct, r.status, r.body)
		}
	}
	h.mustNotExist("s")
	for i, ct := range []string{"application/json", "application/json; charset=utf-8", "Application/JSON; Charset=UTF-8", "application/vnd.example+json"} {
		mustStatus(t, h.do("POST", streamPath(fmt.Sprint("ok-", i)), appendBody, "Content-Type", ct), http.StatusCreated)
	}

	ht := newHarness(t, withToken("a-token-of-16-chars"))
	if r := ht.do("POST", "/streams/s", appendBody, "Content-Type", "text/plain", "Authorization", ""); r.status != http.StatusUnauthorized {
		t.Errorf("no token and no JSON: %d, want 401 (authentication comes first)", r.status)
	}
}

// rawRequest writes head (a request line and headers, without the blank line) to a new
// connection to the harness, and reads the answer; the body, if any, is never sent. The answer
// must come within 2 s, and the server must then close the connection within 2 s.
func (h *harness) rawRequest(head string) *http.Response {
	h.t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.ts.URL, "http://"))
	if err != nil {
		h.t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(conn, strings.ReplaceAll(head, "\n", "\r\n")+"\r\n\r\n"); err != nil {
		h.t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		h.t.Fatalf("no answer within 2 s to\n%s\n: %v", head, err)
	}
	body, err := io.ReadAll(res.Body)
	if err != nil {
		h.t.Fatalf("reading the answer's body: %v", err)
	}
	res.Body = io.NopCloser(strings.NewReader(string(body)))
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if n, err := br.Read(make([]byte, 1)); err != io.EOF {
		h.t.Fatalf("after the answer to\n%s\nthe connection was not closed within 2 s: read %d bytes, %v", head, n, err)
	}
	return res
}

// TestRefusalsDoNotWaitForTheBody checks that a request refused before its body is read is
// answered at once, and its connection closed, even when the client announced a body it never
// sends: the server does not wait for the body.
func TestRefusalsDoNotWaitForTheBody(t *testing.T) {
	ht := newHarness(t, withToken("a-token-of-16-chars"))
	h := newHarness(t, withServerOptions(func(o *server.Options) { o.MaxBodyBytes = 1000 }))
	cases := []struct {
		h      *harness
		head   string
		status int
		code   string
	}{
		{ht, "POST /streams/s HTTP/1.1\nHost: localhost\nContent-Type: application/json\nContent-Length: 100000", 401, "unauthorized"},
		{ht, "POST /streams/s HTTP/1.1\nHost: localhost\nContent-Type: application/json\nTransfer-Encoding: chunked", 401, "unauthorized"},
		{h, "POST /streams/s HTTP/1.1\nHost: attacker.example\nContent-Type: application/json\nContent-Length: 100000", 403, "forbidden_host"},
		{h, "POST /streams/s HTTP/1.1\nHost: localhost\nOrigin: https://attacker.example\nContent-Type: application/json\nContent-Length: 100000", 403, "forbidden_origin"},
		{h, "POST /streams/s HTTP/1.1\nHost: localhost\nContent-Type: text/plain\nContent-Length: 100000", 415, "unsupported_media_type"},
		{h, "POST /streams/s HTTP/1.1\nHost: localhost\nContent-Type: application/json\nContent-Length: 100000", 413, "too_large"},
	}
	for _, c := range cases {
		res := c.h.rawRequest(c.head)
		if res.StatusCode != c.status || !res.Close {
			t.Errorf("%q: %d, Connection: close %t; want %d and the connection closed", c.head, res.StatusCode, res.Close, c.status)
		}
		body, _ := io.ReadAll(res.Body)
		if !strings.Contains(string(body), `"error":"`+c.code+`"`) {
			t.Errorf("%q: body %s, want error %s", c.head, body, c.code)
		}
	}
	h.mustNotExist("s")

	// An error answered after the whole body was read keeps the connection for the next request.
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	for range 2 {
		fmt.Fprintf(conn, "POST /streams/s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		if res.StatusCode != http.StatusBadRequest || res.Close {
			t.Fatalf("a bad body, read whole: %d, Connection: close %t; want 400 on a kept connection", res.StatusCode, res.Close)
		}
	}
}

// TestRefusalsAreNotLoggedAtInfo checks that the refusals any client can cause without the token
// (401, 403, 415, 405 on /healthz) do not reach a log at the default level, while other client
// errors still do.
func TestRefusalsAreNotLoggedAtInfo(t *testing.T) {
	logs := newLogRecorder(t)
	h := newHarness(t, withToken("a-token-of-16-chars"), withServerOptions(func(o *server.Options) { o.Logger = slog.New(logs) }))
	mustStatus(t, h.do("POST", "/streams/s", appendBody, "Authorization", ""), http.StatusUnauthorized)
	mustStatus(t, h.do("GET", "/feed", nil, "Authorization", "Bearer wrong"), http.StatusUnauthorized)
	mustStatus(t, h.do("GET", "/feed", nil, "Origin", "https://attacker.example"), http.StatusForbidden)
	mustStatus(t, h.do("POST", "/streams/s", appendBody, "Content-Type", "text/plain"), http.StatusUnsupportedMediaType)
	mustStatus(t, h.do("POST", "/healthz", nil, "Authorization", ""), http.StatusMethodNotAllowed)
	hn := newHarness(t, withServerOptions(func(o *server.Options) { o.Logger = slog.New(logs) }))
	mustStatus(t, hn.do("GET", "/feed", nil, "Host", "attacker.example"), http.StatusForbidden)
	for _, r := range logs.snapshot() {
		if r.level >= slog.LevelInfo {
			t.Errorf("a refusal logged at %s: %s %v", r.level, r.msg, r.attrs)
		}
	}
	mustStatus(t, h.do("POST", "/streams/s", `{"events": []}`), http.StatusBadRequest)
	logs.waitFor(t, "the bad append at Info", func(r logRecord) bool {
		return r.level == slog.LevelInfo && r.attrs["code"] == "invalid_request"
	})
	body := string(h.do("GET", "/metrics", nil).body)
	for _, want := range []string{
		`estuite_http_requests_total{code="401",route="POST /streams/{stream}"} 1`,
		`estuite_http_requests_total{code="403",route="unmatched"} 1`,
		`estuite_http_requests_total{code="415",route="POST /streams/{stream}"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestEveryAnswerIsNosniff checks X-Content-Type-Options: nosniff and Cache-Control: no-store on
// answers of every kind, errors and /metrics included.
func TestEveryAnswerIsNosniff(t *testing.T) {
	h := newHarness(t, withToken("a-token-of-16-chars"))
	h.appendEvents("s", "A", 1)
	for _, r := range []response{
		h.do("GET", "/streams/s/events", nil),
		h.do("GET", "/streams/never", nil),
		h.do("GET", "/nope", nil),
		h.do("GET", "/streams/..", nil),
		h.do("DELETE", "/streams/s", nil),
		h.do("POST", "/streams/s", `{`),
		h.do("GET", "/feed", nil, "Authorization", ""),
		h.do("GET", "/feed", nil, "Origin", "https://attacker.example"),
		h.do("POST", "/streams/s", appendBody, "Content-Type", "text/plain"),
		h.do("GET", "/healthz", nil),
		h.do("HEAD", "/feed/live", nil),
		h.do("GET", "/metrics", nil),
	} {
		if got := r.header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("a %d answer (%s): X-Content-Type-Options %q", r.status, r.body, got)
		}
		if got := r.header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("a %d answer (%s): Cache-Control %q, want no-store", r.status, r.body, got)
		}
	}
	live := h.openLive("")
	if got := live.resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("/feed/live: X-Content-Type-Options %q", got)
	}
}

// TestLiveStreamOutlivesTheServerTimeouts checks that a live feed stream stays open past the
// http.Server's ReadTimeout and WriteTimeout, which bound every other request.
func TestLiveStreamOutlivesTheServerTimeouts(t *testing.T) {
	h := newHarness(t, withHTTPServer(func(hs *http.Server) {
		hs.ReadTimeout, hs.WriteTimeout = 200*time.Millisecond, 200*time.Millisecond
	}))
	h.startDispatcher()
	live := h.openLive("")
	if _, ok := <-live.lines; !ok { // the opening comment
		t.Fatal("the live stream ended at once")
	}
	time.Sleep(time.Second) // five times the timeouts
	h.appendEvents("s", "A", 1)
	if ev := live.nextEvent(t); ev.Stream != "s" || ev.Position != 1 {
		t.Fatalf("live event %+v", ev)
	}
}

// TestNewRefusesBadHostsAndOrigins checks that malformed AllowedHosts and CORSOrigins are refused
// when the server is created, not silently never matched.
func TestNewRefusesBadHostsAndOrigins(t *testing.T) {
	h := newHarness(t)
	for _, o := range []server.Options{
		{AllowedHosts: []string{""}},
		{AllowedHosts: []string{"example.com:80"}},
		{AllowedHosts: []string{"http://example.com"}},
		{AllowedHosts: []string{"*.example.com"}},
		{CORSOrigins: []string{"example.com"}},
		{CORSOrigins: []string{"https://example.com/"}},
		{CORSOrigins: []string{"https://example.com/app"}},
		{CORSOrigins: []string{"*"}},
		{CORSOrigins: []string{"null"}},
		{CORSOrigins: []string{"ftp://example.com"}},
		{CORSOrigins: []string{"https://user@example.com"}},
	} {
		o.Store = h.store
		if _, err := server.New(o); err == nil {
			t.Errorf("New accepted %q %q", o.AllowedHosts, o.CORSOrigins)
		}
	}
}
