package estuite_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/azuritetest"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/azure"
	"github.com/estuite/estuite/table/bolt"
	"github.com/estuite/estuite/table/mem"
)

// errAnswerLost is the cause of the unknown outcomes that lostAnswer makes up.
var errAnswerLost = errors.New("test: the batch took effect, its answer was lost")

// lostAnswer wraps a backend so that, once armed, the first append batch takes effect and then
// fails with the contract's unknown outcome (table.UnknownOutcome), as a batch does whose
// response is cut short or whose commit fails after it wrote. An append batch is recognised as
// the first write holding an Insert (a dirty marker is an Upsert). Where the wrapped backend
// writes several partitions atomically (bbolt), so does the wrapper.
type lostAnswer struct {
	inner table.Backend
	armed atomic.Bool
	lost  atomic.Int32 // answers lost so far
}

type lostAnswerTable struct {
	table.Table
	b *lostAnswer
}

type lostAnswerMulti struct{ *lostAnswer }

func wrapLostAnswer(inner table.Backend) (table.Backend, *lostAnswer) {
	b := &lostAnswer{inner: inner}
	if _, ok := inner.(table.MultiSubmitter); ok {
		return lostAnswerMulti{b}, b
	}
	return b, b
}

func (b *lostAnswer) OpenTable(ctx context.Context, name string) (table.Table, error) {
	t, err := b.inner.OpenTable(ctx, name)
	if err != nil {
		return nil, err
	}
	return &lostAnswerTable{Table: t, b: b}, nil
}

func (b *lostAnswer) Close() error { return b.inner.Close() }

// loseAnswer reports whether the answer to a write of ops that took effect is to be lost.
func (b *lostAnswer) loseAnswer(ops []table.Op) bool {
	for _, op := range ops {
		if op.Kind == table.Insert {
			if b.armed.CompareAndSwap(true, false) {
				b.lost.Add(1)
				return true
			}
			return false
		}
	}
	return false
}

func (t *lostAnswerTable) Submit(ctx context.Context, pk string, ops []table.Op) ([]string, error) {
	etags, err := t.Table.Submit(ctx, pk, ops)
	if err == nil && t.b.loseAnswer(ops) {
		return nil, table.UnknownOutcome(errAnswerLost)
	}
	return etags, err
}

func (b lostAnswerMulti) SubmitParts(ctx context.Context, parts []table.Part) ([][]string, error) {
	inner := make([]table.Part, len(parts))
	var ops []table.Op
	for i, p := range parts {
		inner[i] = p
		inner[i].Table = p.Table.(*lostAnswerTable).Table
		ops = append(ops, p.Ops...)
	}
	etags, err := b.inner.(table.MultiSubmitter).SubmitParts(ctx, inner)
	if err == nil && b.loseAnswer(ops) {
		return nil, table.UnknownOutcome(errAnswerLost)
	}
	return etags, err
}

// An append whose batch took effect but came back as an unknown outcome has committed: Append
// must report it as the success it is (not a duplicate: it is this call's own commit), and a
// retry with the same commit ID must find it as a duplicate, writing nothing.
func TestAppendWithUnknownOutcomeIsSettledByItsCommit(t *testing.T) {
	backendsOf := []struct {
		name string
		open func(t *testing.T) (table.Backend, *estuite.Options)
	}{
		{"mem", func(t *testing.T) (table.Backend, *estuite.Options) { return mem.New(nil), nil }},
		{"bolt", func(t *testing.T) (table.Backend, *estuite.Options) {
			b, err := bolt.Open(filepath.Join(t.TempDir(), "estuite.db"), &bolt.Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			return b, nil
		}},
		{"azurite", func(t *testing.T) (table.Backend, *estuite.Options) {
			b, err := azure.Open(azuritetest.ConnectionString(t), nil)
			if err != nil {
				t.Fatal(err)
			}
			return b, &estuite.Options{TablePrefix: uniquePrefix(t)}
		}},
	}
	for _, bc := range backendsOf {
		for _, tc := range []struct {
			name     string
			before   int // events in the stream before the append
			expected estuite.ExpectedVersion
		}{
			{"new stream, NoStream", 0, estuite.NoStream},
			{"new stream, Any", 0, estuite.Any},
			{"existing stream, Exactly", 2, estuite.Exactly(2)},
			{"existing stream, Any", 2, estuite.Any},
			{"existing stream, StreamExists", 2, estuite.StreamExists},
		} {
			t.Run(bc.name+"/"+tc.name, func(t *testing.T) {
				inner, opts := bc.open(t)
				backend, faults := wrapLostAnswer(inner)
				s := openStore(t, backend, opts)
				ctx := context.Background()
				stream := "order-1"
				if tc.before > 0 {
					if _, err := s.Append(ctx, stream, outcomeEvents(tc.before), nil); err != nil {
						t.Fatal(err)
					}
				}
				evs := outcomeEvents(3)
				want := estuite.AppendResult{Stream: stream, FirstVersion: int64(tc.before) + 1,
					LastVersion: int64(tc.before) + 3, CommitID: "commit-1"}
				aopts := &estuite.AppendOptions{Expected: tc.expected, CommitID: "commit-1"}

				faults.armed.Store(true)
				res, err := s.Append(ctx, stream, evs, aopts)
				if faults.lost.Load() != 1 {
					t.Fatalf("the append's answer was lost %d times, want 1", faults.lost.Load())
				}
				if err != nil || res != want {
					t.Fatalf("Append after its batch's outcome was unknown = %+v, %v; want %+v, nil", res, err, want)
				}
				retry, err := s.Append(ctx, stream, evs, aopts)
				want.Duplicate = true
				if err != nil || retry != want {
					t.Fatalf("retry with the same commit ID = %+v, %v; want %+v, nil", retry, err, want)
				}
				if got := readOutcomeTypes(t, s, stream); fmt.Sprint(got) != fmt.Sprint(outcomeTypes(tc.before, 3)) {
					t.Fatalf("stream holds %v, want %v: the append must be stored exactly once", got, outcomeTypes(tc.before, 3))
				}
			})
		}
	}
}

// outcomeEvents returns n events whose types number them.
func outcomeEvents(n int) []estuite.EventData {
	evs := make([]estuite.EventData, n)
	for i := range evs {
		evs[i] = estuite.EventData{Type: fmt.Sprintf("E%d", i+1), Data: []byte(`{}`)}
	}
	return evs
}

// outcomeTypes is the types a stream holds after an append of before events and one of n more.
func outcomeTypes(before, n int) []string {
	var types []string
	for _, e := range append(outcomeEvents(before), outcomeEvents(n)...) {
		types = append(types, e.Type)
	}
	return types
}

// readOutcomeTypes reads a stream forward and returns its events' types, checking their versions.
func readOutcomeTypes(t *testing.T, s *estuite.Store, stream string) []string {
	t.Helper()
	read, err := s.Read(context.Background(), stream, nil)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for ev, err := range read.Events {
		if err != nil {
			t.Fatal(err)
		}
		if ev.Version != int64(len(types))+1 {
			t.Fatalf("event %s has version %d, want %d", ev.Type, ev.Version, len(types)+1)
		}
		types = append(types, ev.Type)
	}
	return types
}

// On Azure, an append batch that Azurite committed but whose answer reaches the store cut short —
// a complete HTTP response with a truncated body, or a connection dropped in the middle of the
// body — is settled by the commit row: Append succeeds, and a retry is a duplicate.
func TestAppendWhoseAzureAnswerIsCutShortSucceeds(t *testing.T) {
	for _, mode := range []string{"truncated body", "dropped connection"} {
		t.Run(mode, func(t *testing.T) {
			var cut atomic.Bool
			proxy := cuttingProxy(t, azuritetest.ConnectionString(t), mode == "dropped connection", &cut)
			b, err := azure.Open(proxy, nil)
			if err != nil {
				t.Fatal(err)
			}
			s := openStore(t, b, &estuite.Options{TablePrefix: uniquePrefix(t)})
			ctx := context.Background()
			evs := outcomeEvents(3)
			aopts := &estuite.AppendOptions{Expected: estuite.NoStream, CommitID: "commit-1"}
			want := estuite.AppendResult{Stream: "order-1", FirstVersion: 1, LastVersion: 3, CommitID: "commit-1"}

			cut.Store(true)
			res, err := s.Append(ctx, "order-1", evs, aopts)
			if cut.Load() {
				t.Fatal("no append batch went through the proxy")
			}
			if err != nil || res != want {
				t.Fatalf("Append whose answer was cut short = %+v, %v; want %+v, nil", res, err, want)
			}
			want.Duplicate = true
			if retry, err := s.Append(ctx, "order-1", evs, aopts); err != nil || retry != want {
				t.Fatalf("retry with the same commit ID = %+v, %v; want %+v, nil", retry, err, want)
			}
			if got := readOutcomeTypes(t, s, "order-1"); fmt.Sprint(got) != fmt.Sprint(outcomeTypes(0, 3)) {
				t.Fatalf("stream holds %v, want %v", got, outcomeTypes(0, 3))
			}
		})
	}
}

// cuttingProxy starts a proxy to the Azurite of connStr and returns a connection string that
// goes through it. While cut is set, the first batch holding an insert (an append batch: a
// dirty marker is an upsert) is forwarded to Azurite, and its answer is cut after the status
// line and the first tenth of the body: sent as a complete response (drop false) or as the start
// of a longer one whose connection then closes (drop true). cut is cleared when that happens.
func cuttingProxy(t *testing.T, connStr string, drop bool, cut *atomic.Bool) string {
	t.Helper()
	m := regexp.MustCompile(`TableEndpoint=http://([^/;]+)/`).FindStringSubmatch(connStr)
	if m == nil {
		t.Fatalf("no table endpoint in %q", connStr)
	}
	target := m[1]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqBody, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("proxy: %v", err)
			return
		}
		out := r.Clone(r.Context())
		out.URL.Scheme, out.URL.Host, out.Host, out.RequestURI = "http", target, "", ""
		out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(reqBody)), int64(len(reqBody))
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			t.Errorf("proxy: %v", err)
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Errorf("proxy: %v", err)
		}
		isAppend := strings.HasSuffix(r.URL.Path, "/$batch") && bytes.Contains(reqBody, []byte("POST http"))
		if isAppend && resp.StatusCode == http.StatusAccepted && cut.CompareAndSwap(true, false) {
			n := len(body) / 10
			conn, buf, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("proxy: %v", err)
				return
			}
			defer conn.Close()
			length := n
			if drop {
				length = len(body)
			}
			fmt.Fprintf(buf, "HTTP/1.1 202 Accepted\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", resp.Header.Get("Content-Type"), length)
			buf.Write(body[:n])
			buf.Flush()
			return
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(resp.StatusCode)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return regexp.MustCompile(`TableEndpoint=http://[^/;]+/`).ReplaceAllLiteralString(connStr, "TableEndpoint="+srv.URL+"/")
}
