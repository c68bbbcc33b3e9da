package azure

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/estuite/estuite/internal/azuritetest"
	"github.com/estuite/estuite/table"
)

// Tests in this file run a batch against an httptest server that accepts it (so it may have
// been applied) and then answers in a way that does not say so: every such batch must come back
// as an unknown outcome, never as a definite failure.

// isUnknownOutcome reports whether err is what the contract asks for a write that may or may
// not have taken effect: a *table.TransientError that is both an ErrTransient and an
// ErrUnknownOutcome.
func isUnknownOutcome(err error) bool {
	var te *table.TransientError
	return errors.As(err, &te) && errors.Is(err, table.ErrTransient) && errors.Is(err, table.ErrUnknownOutcome)
}

// serverTable returns a Table whose requests go to an httptest server running handler, and a
// counter of the batch requests the server received in full.
func serverTable(t *testing.T, handler func(w http.ResponseWriter, r *http.Request)) (*Table, *atomic.Int32) {
	t.Helper()
	var batches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			t.Errorf("reading the request: %v", err)
			return
		}
		if strings.HasSuffix(r.URL.Path, "/$batch") {
			batches.Add(1)
		}
		handler(w, r)
	}))
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(azuritetest.WellKnownConnectionString(port), nil)
	if err != nil {
		t.Fatal(err)
	}
	return &Table{client: b.service.NewClient("outcome")}, &batches
}

// threeInserts is the batch the fixture azurite-success-insert-upsert-insert.txt answers.
func threeInserts() []table.Op {
	op := func(kind table.OpKind, rk string) table.Op {
		return table.Op{Kind: kind, Entity: table.Entity{PartitionKey: "p", RowKey: rk, Properties: map[string]any{"V": int64(1)}}}
	}
	return []table.Op{op(table.Insert, "a"), op(table.Upsert, "b"), op(table.Insert, "c")}
}

// accepted answers 202 with body, as Azure answers an entity group transaction.
func accepted(body []byte) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "multipart/mixed; boundary="+boundaryOf(body))
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusAccepted)
		w.Write(body)
	}
}

func submitExpectingUnknown(t *testing.T, tb *Table, batches *atomic.Int32, ops []table.Op) {
	t.Helper()
	etags, err := tb.Submit(context.Background(), "p", ops)
	if !isUnknownOutcome(err) {
		t.Fatalf("Submit = %q, %v; want an error that is both table.ErrTransient and table.ErrUnknownOutcome", etags, err)
	}
	var be *table.BatchError
	if errors.As(err, &be) {
		t.Fatalf("an answer that does not say the batch failed became a refusal: %v", err)
	}
	if n := batches.Load(); n != 1 {
		t.Fatalf("the server received %d batches, want 1", n)
	}
}

func TestAcceptedBatchWithUndecodableBodyIsUnknownOutcome(t *testing.T) {
	success := fixture(t, "azurite-success-insert-upsert-insert.txt")
	withoutETags := regexpReplaceLines(success, "ETag:")
	for _, tc := range []struct {
		name    string
		handler func(http.ResponseWriter, *http.Request)
	}{
		{"not multipart", accepted([]byte("this is not a batch response\r\n"))},
		{"empty", accepted(nil)},
		{"JSON instead of multipart", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusAccepted)
			io.WriteString(w, `{"odata.error":{"code":"InternalError","message":{"value":"?"}}}`)
		}},
		{"success without ETags", accepted(withoutETags)},
		{"no content", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }},
		{"server timed out", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, `{"odata.error":{"code":"OperationTimedOut","message":{"value":"The operation could not be completed within the permitted time."}}}`)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb, batches := serverTable(t, tc.handler)
			submitExpectingUnknown(t, tb, batches, threeInserts())
		})
	}
}

// regexpReplaceLines drops the lines of data that start with prefix.
func regexpReplaceLines(data []byte, prefix string) []byte {
	var out bytes.Buffer
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		if !bytes.HasPrefix(line, []byte(prefix)) {
			out.Write(line)
		}
	}
	return out.Bytes()
}

// A body cut short (but delivered as a complete HTTP response) may hide the rest of the
// operations' answers. The SDK even reports some of these as success.
func TestTruncatedBatchBodyIsUnknownOutcome(t *testing.T) {
	success := fixture(t, "azurite-success-insert-upsert-insert.txt")
	second := bytes.Index(success, []byte("HTTP/1.1 204")) + 1
	second += bytes.Index(success[second:], []byte("HTTP/1.1 204"))
	third := second + 1 + bytes.Index(success[second+1:], []byte("HTTP/1.1 204"))
	for _, tc := range []struct {
		name string
		cut  int
	}{
		{"inside the first line", 10},
		{"before the changeset", bytes.Index(success, []byte("\n--changeset"))},
		{"after one of three operations", second - 60},
		{"inside an operation's headers", second + 30},
		{"after two of three operations", third - 60},
		{"inside the last operation's headers, before its ETag", third + 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cut <= 0 || tc.cut >= len(success) {
				t.Fatalf("cut %d outside the body of %d bytes", tc.cut, len(success))
			}
			tb, batches := serverTable(t, accepted(success[:tc.cut]))
			submitExpectingUnknown(t, tb, batches, threeInserts())
		})
	}
	// The whole body is a success, and so is one whose changeset is complete but whose closing
	// batch boundary is missing (as Cosmos DB may answer): the cuts above are what makes the
	// difference.
	closing := bytes.Index(success, []byte("--batchresponse_3623c5bd-0bad-41f9-69f1-c0fd2ab1c479--"))
	for _, body := range [][]byte{success, success[:closing]} {
		tb, _ := serverTable(t, accepted(body))
		if etags, err := tb.Submit(context.Background(), "p", threeInserts()); err != nil || len(etags) != 3 || etags[2] == "" {
			t.Fatalf("a complete answer of %d bytes: %q, %v", len(body), etags, err)
		}
	}
}

// A connection that breaks after the batch was sent — before the answer, or in the middle of it —
// leaves the outcome unknown.
func TestConnectionDroppedMidResponseIsUnknownOutcome(t *testing.T) {
	success := fixture(t, "azurite-success-insert-upsert-insert.txt")
	failure := fixture(t, "azurite-fail-1-EntityAlreadyExists.txt")
	drop := func(body []byte, n int) func(http.ResponseWriter, *http.Request) {
		return func(w http.ResponseWriter, _ *http.Request) {
			conn, buf, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("hijack: %v", err)
				return
			}
			defer conn.Close()
			if body != nil {
				writeHead(buf, body)
				buf.Write(body[:n])
				buf.Flush()
			}
		}
	}
	for _, tc := range []struct {
		name    string
		handler func(http.ResponseWriter, *http.Request)
	}{
		{"before the answer", drop(nil, 0)},
		{"after the status line", drop(success, 0)},
		{"in a success body", drop(success, len(success)/2)},
		{"at the end of a success body", drop(success, len(success)-1)},
		{"in a failure body", drop(failure, len(failure)/2)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb, batches := serverTable(t, tc.handler)
			submitExpectingUnknown(t, tb, batches, threeInserts())
		})
	}
}

// writeHead writes the status line and headers of a 202 answer whose body is body.
func writeHead(w *bufio.ReadWriter, body []byte) {
	fmt.Fprintf(w, "HTTP/1.1 202 Accepted\r\nContent-Type: multipart/mixed; boundary=%s\r\nContent-Length: %d\r\n\r\n", boundaryOf(body), len(body))
}
