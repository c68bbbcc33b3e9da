package server_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/server"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/mem"
)

// hookBackend is a memory backend whose tables pass every Submit through a hook, so that a test
// can block an append's batch or change a stream under it.
type hookBackend struct {
	*mem.Backend
	submit func(ctx context.Context, tableName, pk string, ops []table.Op, next func(context.Context) ([]string, error)) ([]string, error)
}

func (b *hookBackend) OpenTable(ctx context.Context, name string) (table.Table, error) {
	t, err := b.Backend.OpenTable(ctx, name)
	if err != nil {
		return nil, err
	}
	return &hookTable{Table: t, name: name, b: b}, nil
}

type hookTable struct {
	table.Table
	name string
	b    *hookBackend
}

func (t *hookTable) Submit(ctx context.Context, pk string, ops []table.Op) ([]string, error) {
	next := func(ctx context.Context) ([]string, error) { return t.Table.Submit(ctx, pk, ops) }
	if t.b.submit == nil {
		return next(ctx)
	}
	return t.b.submit(ctx, t.name, pk, ops, next)
}

// hookCase is a backendCase on a hookBackend over m.
func hookCase(hb *hookBackend) backendCase {
	return backendCase{"hooked mem", func(*testing.T) (table.Backend, *mem.Backend) { return hb, hb.Backend }}
}

// logRecorder is a slog.Handler that keeps every record (all levels), and tells waiters of each.
type logRecorder struct {
	t       *testing.T
	mu      sync.Mutex
	records []logRecord
	added   chan struct{}
}

type logRecord struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func newLogRecorder(t *testing.T) *logRecorder {
	return &logRecorder{t: t, added: make(chan struct{}, 1)}
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	r.Attrs(func(a slog.Attr) bool { rec.attrs[a.Key] = a.Value.String(); return true })
	l.t.Logf("log %s %s %v", r.Level, r.Message, rec.attrs)
	l.mu.Lock()
	l.records = append(l.records, rec)
	l.mu.Unlock()
	select {
	case l.added <- struct{}{}:
	default:
	}
	return nil
}

func (l *logRecorder) snapshot() []logRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]logRecord(nil), l.records...)
}

// waitFor waits until a record satisfies match, and returns it.
func (l *logRecorder) waitFor(t *testing.T, what string, match func(logRecord) bool) logRecord {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		for _, r := range l.snapshot() {
			if match(r) {
				return r
			}
		}
		select {
		case <-l.added:
		case <-deadline:
			t.Fatalf("no log record: %s", what)
		}
	}
}

// scrape returns the server's /metrics text.
func (h *harness) scrape() string {
	h.t.Helper()
	r := h.do("GET", "/metrics", nil)
	mustStatus(h.t, r, http.StatusOK)
	return string(r.body)
}

// feedOf reads the whole feed through the API and returns the events of stream.
func (h *harness) feedOf(stream string) []wireEvent {
	h.t.Helper()
	var out []wireEvent
	after := int64(0)
	for {
		r := h.do("GET", fmt.Sprintf("/feed?after=%d&limit=1000", after), nil)
		mustStatus(h.t, r, http.StatusOK)
		var page feedResult
		r.decode(h.t, &page)
		for _, ev := range page.Events {
			if ev.Stream == stream {
				out = append(out, ev)
			}
		}
		if page.Next == after {
			return out
		}
		after = page.Next
	}
}

// TestClientGoneMidAppendIsNoServerError cancels a client while its append's batch is in storage:
// the server must neither log an error nor count a 5xx (it counts a 499), and the commit — when
// its batch landed all the same — reaches the feed exactly once; a retry with the same commit ID
// learns which happened.
func TestClientGoneMidAppendIsNoServerError(t *testing.T) {
	for _, landed := range []bool{false, true} {
		t.Run(fmt.Sprintf("landed=%v", landed), func(t *testing.T) {
			var armed atomic.Bool
			entered := make(chan struct{})
			hb := &hookBackend{Backend: mem.New(nil)}
			hb.submit = func(ctx context.Context, tableName, pk string, ops []table.Op, next func(context.Context) ([]string, error)) ([]string, error) {
				if pk != "gone" || !strings.HasSuffix(tableName, "streams") || !armed.CompareAndSwap(true, false) {
					return next(ctx)
				}
				close(entered)
				<-ctx.Done() // the batch is "in flight" until the client has gone
				if landed {
					// It reaches storage all the same; only its answer is lost.
					if _, err := next(context.WithoutCancel(ctx)); err != nil {
						t.Errorf("the landing batch failed: %v", err)
					}
				}
				return nil, ctx.Err()
			}
			logs := newLogRecorder(t)
			h := newHarnessOn(t, hookCase(hb), withServerOptions(func(o *server.Options) { o.Logger = slog.New(logs) }))
			armed.Store(true)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			body := `{"commitId": "c-gone", "events": [{"type": "A"}]}`
			clientErr := make(chan error, 1)
			go func() {
				req, _ := http.NewRequestWithContext(ctx, "POST", h.ts.URL+"/streams/gone", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					resp.Body.Close()
				}
				clientErr <- err
			}()
			select {
			case <-entered:
			case <-time.After(10 * time.Second):
				t.Fatal("the append's batch never reached storage")
			}
			cancel()
			if err := <-clientErr; !errors.Is(err, context.Canceled) {
				t.Fatalf("the client's request ended with %v, want it canceled", err)
			}
			// The server finishes the request after the client left: wait for its request line.
			logs.waitFor(t, "the append's request line", func(r logRecord) bool {
				return r.msg == "http request" && r.attrs["route"] == "POST /streams/{stream}"
			})

			for _, r := range logs.snapshot() {
				if r.level >= slog.LevelWarn {
					t.Errorf("logged at %s: %s %v", r.level, r.msg, r.attrs)
				}
			}
			failed := logs.waitFor(t, "the failed request's line", func(r logRecord) bool { return r.msg == "http request failed" })
			if failed.level != slog.LevelDebug || failed.attrs["code"] != "client_closed_request" || failed.attrs["status"] != "499" {
				t.Errorf("failed request logged as %s %v; want Debug, client_closed_request, 499", failed.level, failed.attrs)
			}
			metrics := h.scrape()
			if want := `estuite_http_requests_total{code="499",route="POST /streams/{stream}"} 1`; !strings.Contains(metrics, want) {
				t.Errorf("metrics lack %q", want)
			}
			if want := `estuite_append_duration_seconds_count{outcome="client_closed_request"} 1`; !strings.Contains(metrics, want) {
				t.Errorf("metrics lack %q", want)
			}
			if m := regexp.MustCompile(`estuite_http_requests_total\{code="5\d\d".*`).FindString(metrics); m != "" {
				t.Errorf("a 5xx was counted: %s", m)
			}

			// The client retries with the same commit ID: the answer tells whether it had landed.
			r := h.do("POST", "/streams/gone", body)
			want := http.StatusCreated
			if landed {
				want = http.StatusOK
			}
			mustStatus(t, r, want)
			h.dispatch()
			if evs := h.feedOf("gone"); len(evs) != 1 || evs[0].Version != 1 || evs[0].CommitID != "c-gone" {
				t.Fatalf("the feed holds %+v of the stream; want its one event once", evs)
			}
		})
	}
}

// TestFailedRequestsLogAtInfo checks that answers a client caused (4xx) are Info lines, never
// warnings or errors: they are part of normal operation.
func TestFailedRequestsLogAtInfo(t *testing.T) {
	logs := newLogRecorder(t)
	h := newHarness(t, withServerOptions(func(o *server.Options) { o.Logger = slog.New(logs) }))
	h.appendEvents("s", "A", 1)
	for _, c := range []struct {
		method, path, body string
		status             int
	}{
		{"POST", "/streams/s", `{"events": []}`, http.StatusBadRequest},
		{"POST", "/streams/s", `{"expectedVersion": 0, "events": [{"type": "A"}]}`, http.StatusConflict},
		{"GET", "/streams/never", "", http.StatusNotFound},
		{"GET", "/nope", "", http.StatusNotFound},
		{"DELETE", "/feed", "", http.StatusMethodNotAllowed},
		{"POST", "/streams/s", strings.Repeat("x", server.DefaultMaxBodyBytes+1), http.StatusRequestEntityTooLarge},
	} {
		mustStatus(t, h.do(c.method, c.path, c.body), c.status)
	}
	n := 0
	for _, r := range logs.snapshot() {
		if r.msg != "http request failed" {
			continue
		}
		n++
		if r.level != slog.LevelInfo {
			t.Errorf("a %s answer logged at %s, want Info: %v", r.attrs["status"], r.level, r.attrs)
		}
	}
	if n != 6 {
		t.Errorf("%d failed-request lines, want 6", n)
	}
}

// TestContendedStreamAnswers409 makes another writer append to the stream before every batch of
// an HTTP append, until the store gives up: the answer is 409 stream_contended with Retry-After,
// it is logged at Info, and nothing was written (a retry without the contention commits anew).
func TestContendedStreamAnswers409(t *testing.T) {
	base := mem.New(nil)
	var contend atomic.Bool
	other, err := estuite.Open(context.Background(), base, nil) // another process on the same account
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	hb := &hookBackend{Backend: base}
	hb.submit = func(ctx context.Context, tableName, pk string, ops []table.Op, next func(context.Context) ([]string, error)) ([]string, error) {
		if contend.Load() && pk == "hot" && strings.HasSuffix(tableName, "streams") {
			if _, err := other.Append(ctx, "hot", []estuite.EventData{{Type: "Other"}}, nil); err != nil {
				return nil, err
			}
		}
		return next(ctx)
	}
	logs := newLogRecorder(t)
	h := newHarnessOn(t, hookCase(hb), withServerOptions(func(o *server.Options) { o.Logger = slog.New(logs) }))
	h.appendEvents("hot", "A", 1)
	contend.Store(true)

	_, err = h.store.Append(t.Context(), "hot", []estuite.EventData{{Type: "Probe"}}, nil)
	if !errors.Is(err, estuite.ErrContention) {
		// Store.Append returns ErrContention from another change of issue 8; until it has landed
		// in this tree, this test cannot make the store say so. The mapping itself is tested in
		// TestContentionErrorMapsTo409 (package server).
		t.Skipf("Store.Append under persistent contention returned %v, not ErrContention: the store in this tree does not report contention yet", err)
	}
	body := `{"commitId": "c-hot", "events": [{"type": "A"}]}`
	r := h.do("POST", "/streams/hot", body)
	mustStatus(t, r, http.StatusConflict)
	if code := r.errorCode(t); code != "stream_contended" {
		t.Errorf("error code %q, want stream_contended", code)
	}
	if ra := r.header.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After %q, want 1", ra)
	}
	failed := logs.waitFor(t, "the contended append's failure line", func(r logRecord) bool {
		return r.msg == "http request failed" && r.attrs["code"] == "stream_contended"
	})
	if failed.level != slog.LevelInfo {
		t.Errorf("contention logged at %s, want Info", failed.level)
	}
	contend.Store(false)
	mustStatus(t, h.do("POST", "/streams/hot", body), http.StatusCreated) // nothing had been written
}
