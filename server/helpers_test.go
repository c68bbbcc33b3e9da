package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/server"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/bolt"
	"github.com/estuite/estuite/table/mem"
)

// harness is a server on a store, behind a real HTTP listener.
type harness struct {
	t       *testing.T
	store   *estuite.Store
	mem     *mem.Backend // nil on other backends
	srv     *server.Server
	ts      *httptest.Server
	token   string
	storeOp *estuite.Options

	dispOpts   *estuite.DispatcherOptions // withDispatcher: create dispatcher with these
	dispatcher *estuite.Dispatcher        // passed to the server as Options.Dispatcher; not started
	httpConfig func(*http.Server)         // withHTTPServer: configures the listener's http.Server
}

// backend opens a fresh table backend by name ("mem" or "bolt").
type backendCase struct {
	name string
	open func(t *testing.T) (table.Backend, *mem.Backend)
}

var backends = []backendCase{
	{"mem", func(t *testing.T) (table.Backend, *mem.Backend) { b := mem.New(nil); return b, b }},
	{"bolt", func(t *testing.T) (table.Backend, *mem.Backend) {
		b, err := bolt.Open(filepath.Join(t.TempDir(), "estuite.db"), &bolt.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		return b, nil
	}},
}

type harnessOption func(*harness, *server.Options)

func withToken(tok string) harnessOption {
	return func(h *harness, o *server.Options) { o.Token = tok; h.token = tok }
}

func withServerOptions(f func(*server.Options)) harnessOption {
	return func(_ *harness, o *server.Options) { f(o) }
}

// withHTTPServer configures the http.Server that serves the harness (timeouts, for instance).
func withHTTPServer(f func(*http.Server)) harnessOption {
	return func(h *harness, _ *server.Options) { h.httpConfig = f }
}

func withStoreOptions(so *estuite.Options) harnessOption {
	return func(h *harness, _ *server.Options) { h.storeOp = so }
}

// withDispatcher gives the server a dispatcher (h.dispatcher, not started) as
// Options.Dispatcher, whose OnStep is the server's ObserveDispatch.
func withDispatcher(o estuite.DispatcherOptions) harnessOption {
	return func(h *harness, _ *server.Options) { h.dispOpts = &o }
}

func newHarness(t *testing.T, opts ...harnessOption) *harness {
	return newHarnessOn(t, backends[0], opts...)
}

func newHarnessOn(t *testing.T, bc backendCase, opts ...harnessOption) *harness {
	t.Helper()
	h := &harness{t: t}
	so := server.Options{Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	for _, o := range opts {
		o(h, &so)
	}
	backend, mb := bc.open(t)
	h.mem = mb
	store, err := estuite.Open(context.Background(), backend, h.storeOp)
	if err != nil {
		t.Fatal(err)
	}
	h.store = store
	so.Store = store
	if h.dispOpts != nil {
		do := *h.dispOpts
		do.OnStep = func(st estuite.DispatchStats, err error) { h.srv.ObserveDispatch(st, err) }
		h.dispatcher = estuite.NewDispatcher(store, &do)
		so.Dispatcher = h.dispatcher
	}
	srv, err := server.New(so)
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	h.ts = httptest.NewUnstartedServer(srv.Handler())
	if h.httpConfig != nil {
		h.httpConfig(h.ts.Config)
	}
	h.ts.Start()
	t.Cleanup(func() {
		srv.Close()
		h.ts.Close()
		store.Close()
	})
	return h
}

// testWriter sends log lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// response is an answer as a test sees it.
type response struct {
	status int
	header http.Header
	body   []byte
}

// json decodes the body into a generic map (numbers as json.Number).
func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("response is not a JSON object: %v\n%s", err, r.body)
	}
	return m
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %T: %v\n%s", v, err, r.body)
	}
}

// errorCode returns the "error" member of an error response, checking its shape.
func (r response) errorCode(t *testing.T) string {
	t.Helper()
	m := r.json(t)
	code, _ := m["error"].(string)
	if code == "" {
		t.Fatalf("error response without an error code: %s", r.body)
	}
	if msg, _ := m["message"].(string); msg == "" {
		t.Fatalf("error response without a message: %s", r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error response Content-Type %q", ct)
	}
	return code
}

// do sends a request; rawPath is already escaped (and may hold a query). body may be a string,
// []byte, or anything else to marshal as JSON; nil sends none. A body is sent with
// "Content-Type: application/json" unless header sets Content-Type (to "" to send none). With a
// token set on the harness, it is sent unless header sets Authorization (to "" to send none).
// A "Host" in header replaces the request's Host.
func (h *harness) do(method, rawPath string, body any, header ...string) response {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, h.ts.URL+rawPath, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if h.token != "" {
		req.Header.Set("Authorization", "Bearer "+h.token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
		} else if header[i+1] == "" {
			req.Header.Del(header[i])
		} else {
			req.Header.Set(header[i], header[i+1])
		}
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// streamPath is the escaped path of a stream, with suffix appended. Like any client, it must
// encode the names "." and ".." itself: url.PathEscape leaves dots alone.
func streamPath(name string, suffix ...string) string {
	seg := url.PathEscape(name)
	if name == "." || name == ".." {
		seg = strings.Repeat("%2E", len(name))
	}
	return "/streams/" + seg + strings.Join(suffix, "")
}

// mustStatus fails the test unless r has the status.
func mustStatus(t *testing.T, r response, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
}

// appendResult is the body of a successful append.
type appendResult struct {
	Stream       string `json:"stream"`
	FirstVersion int64  `json:"firstVersion"`
	LastVersion  int64  `json:"lastVersion"`
	CommitID     string `json:"commitId"`
	Duplicate    bool   `json:"duplicate"`
}

// wireEvent is an event as the API shows it.
type wireEvent struct {
	Position     int64           `json:"position"`
	Stream       string          `json:"stream"`
	Version      int64           `json:"version"`
	ID           string          `json:"id"`
	Type         string          `json:"type"`
	Data         json.RawMessage `json:"data"`
	DataBase64   *string         `json:"dataBase64"`
	Metadata     json.RawMessage `json:"metadata"`
	CommitID     string          `json:"commitId"`
	RecordedAt   string          `json:"recordedAt"`
	DispatchedAt string          `json:"dispatchedAt"`
	Subject      string          `json:"subject"`
	Erased       bool            `json:"erased"`
}

type readResult struct {
	Stream  string      `json:"stream"`
	Version int64       `json:"version"`
	Events  []wireEvent `json:"events"`
}

type feedResult struct {
	Events []wireEvent `json:"events"`
	Next   int64       `json:"next"`
	Head   int64       `json:"head"`
}

// appendEvents appends n small JSON events of type typ and returns the result.
func (h *harness) appendEvents(stream, typ string, n int) appendResult {
	h.t.Helper()
	var evs []map[string]any
	for i := range n {
		evs = append(evs, map[string]any{"type": typ, "data": map[string]any{"i": i}})
	}
	r := h.do("POST", streamPath(stream), map[string]any{"events": evs})
	mustStatus(h.t, r, http.StatusCreated)
	var res appendResult
	r.decode(h.t, &res)
	return res
}

// dispatch moves every committed event into the feed.
func (h *harness) dispatch() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := estuite.NewDispatcher(h.store, nil)
	for {
		st, err := d.Step(ctx)
		if err != nil {
			h.t.Fatal(err)
		}
		if !st.Incomplete && st.Backlog == 0 {
			return
		}
	}
}

// compact returns the compact form of a JSON text, for comparing values modulo whitespace.
func compact(t *testing.T, b []byte) string {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	return buf.String()
}
