package client_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/client"
	"github.com/estuite/estuite/server"
	"github.com/estuite/estuite/table/mem"
)

// TestReview2AppendWithLostAnswerIsUnknownOutcome: the server commits an append, and the
// connection is lost before its answer arrives. On the store, an append whose outcome is unknown
// fails with estuite.ErrUnavailable ("may or may not have been committed: retry it with the same
// commit ID"); the client, whose methods mirror the store's, returns a bare transport error that
// matches no sentinel, and — since Client.Append sends no commit ID unless given one — the caller
// has no commit ID to retry with: a retry appends the event a second time.
func TestReview2AppendWithLostAnswerIsUnknownOutcome(t *testing.T) {
	b := mem.New(nil)
	store, err := estuite.Open(context.Background(), b, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	srv, err := server.New(server.Options{Store: store, Token: testToken,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var drop atomic.Bool
	drop.Store(true)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !drop.Swap(false) {
			srv.Handler().ServeHTTP(w, r)
			return
		}
		// Serve the request to its end (the append commits), then lose the answer.
		srv.Handler().ServeHTTP(httptest.NewRecorder(), r)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		conn.Close()
	}))
	defer ts.Close()
	c, err := client.New(ts.URL, &client.Options{Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ev := []estuite.EventData{{Type: "OrderPlaced", Data: []byte(`{"n":1}`)}}
	_, err = c.Append(ctx, "order-1", ev, nil)
	v, verr := store.Version(ctx, "order-1")
	t.Logf("Append = %v; the store's version: %d, %v (committed)", err, v, verr)
	if err == nil {
		t.Fatal("the answer was lost, yet Append succeeded")
	}
	if !errors.Is(err, estuite.ErrUnavailable) {
		t.Errorf("an append whose answer was lost (committed on the server) returns %q (%T), which is not estuite.ErrUnavailable: "+
			"a caller following Store.Append's contract takes it as a definite failure", err, err)
	}
	// The caller retries with the commit ID the client generated (the error holds it; a retry
	// with opts nil is a new append, as it is on the store), and learns it was committed.
	var unknown *client.UnknownOutcomeError
	if !errors.As(err, &unknown) || unknown.CommitID == "" || !strings.Contains(err.Error(), unknown.CommitID) {
		t.Fatalf("the error %q holds no commit ID to retry with", err)
	}
	if res, err := c.Append(ctx, "order-1", ev, &estuite.AppendOptions{CommitID: unknown.CommitID}); err != nil || !res.Duplicate {
		t.Fatalf("the retry = %+v, %v; want a duplicate", res, err)
	}
	if v, _ := store.Version(ctx, "order-1"); v != 1 {
		t.Errorf("after a retry of the append the stream's version is %d: the event was appended twice "+
			"(Client.Append generated no commit ID that would have made the retry a duplicate)", v)
	}
}

// TestReview2EmptyNameIsInvalidInput: the store answers ErrInvalidInput for an empty stream,
// group or subject name; the client sends a request to a path with an empty segment and returns
// a not_found (or, for a group, a "no route") *Error that matches no sentinel.
func TestReview2EmptyNameIsInvalidInput(t *testing.T) {
	s := newTestServer(t)
	c := s.client(t, nil)
	ctx := context.Background()
	calls := map[string]func() error{
		"Version":      func() error { _, err := c.Version(ctx, ""); return err },
		"Append":       func() error { _, err := c.Append(ctx, "", []estuite.EventData{{Type: "T"}}, nil); return err },
		"Delete":       func() error { _, err := c.Delete(ctx, "", nil); return err },
		"Metadata":     func() error { _, err := c.Metadata(ctx, ""); return err },
		"ReadPage":     func() error { _, err := c.ReadPage(ctx, "", client.ReadOptions{}); return err },
		"GroupState":   func() error { _, err := c.GroupState(ctx, ""); return err },
		"ParkedEvents": func() error { _, err := c.ParkedEvents(ctx, "", 0); return err },
		"Forget":       func() error { return c.Forget(ctx, "") },
		"Forgotten":    func() error { _, err := c.Forgotten(ctx, ""); return err },
	}
	if _, err := s.store.Version(ctx, ""); !errors.Is(err, estuite.ErrInvalidInput) {
		t.Fatalf("the store: Version(\"\") = %v", err)
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, estuite.ErrInvalidInput) {
			t.Errorf("%s(\"\") = %v; the store answers estuite.ErrInvalidInput", name, err)
		}
	}
}

// TestReview2SetMetadataCustomNull: Store.SetMetadata refuses Custom "null" (not a JSON object);
// the client sends it as "custom": null, which the server reads as no custom object, and the
// metadata is written.
func TestReview2SetMetadataCustomNull(t *testing.T) {
	s := newTestServer(t)
	c := s.client(t, nil)
	ctx := context.Background()
	if _, err := c.Append(ctx, "s", []estuite.EventData{{Type: "T"}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.SetMetadata(ctx, "s", estuite.StreamMetadata{Custom: []byte("null")}, estuite.AnyMetadataVersion); !errors.Is(err, estuite.ErrInvalidInput) {
		t.Fatalf("the store: SetMetadata with Custom null = %v", err)
	}
	md, err := c.SetMetadata(ctx, "s", estuite.StreamMetadata{Custom: []byte("null")}, estuite.AnyMetadataVersion)
	if !errors.Is(err, estuite.ErrInvalidInput) {
		t.Errorf("the client: SetMetadata with Custom null = %+v, %v; the store refuses it with ErrInvalidInput", md, err)
	}
	ev := []estuite.EventData{{Type: "T", Data: []byte(`{}`), Metadata: []byte("null")}}
	if _, err := s.store.Append(ctx, "s", ev, nil); !errors.Is(err, estuite.ErrInvalidInput) {
		t.Fatalf("the store: Append with Metadata null = %v", err)
	}
	if res, err := c.Append(ctx, "s", ev, nil); !errors.Is(err, estuite.ErrInvalidInput) {
		t.Errorf("the client: Append with Metadata null = %+v, %v; the store refuses it with ErrInvalidInput", res, err)
	}
}

// TestReview2AppendFollowsARedirectAsAGet: the client follows redirects (http.Client's default).
// A front that answers 301 (an http → https redirect, a path moved) turns the append's POST into
// a GET of /streams/{stream}, whose 200 answer Append decodes as its own: it reports success for
// an append that was never made.
func TestReview2AppendFollowsARedirectAsAGet(t *testing.T) {
	s := newTestServer(t)
	ctx := context.Background()
	if _, err := s.store.Append(ctx, "order-1", []estuite.EventData{{Type: "T"}}, nil); err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, s.ts.URL+r.URL.RequestURI(), http.StatusMovedPermanently)
	}))
	defer front.Close()
	// The same host (127.0.0.1), so that Go keeps the Authorization header on the redirect.
	c, err := client.New(front.URL, &client.Options{Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Append(ctx, "order-1", []estuite.EventData{{Type: "OrderPaid", Data: []byte(`{}`)}}, nil)
	v, _ := s.store.Version(ctx, "order-1")
	if err == nil && v == 1 {
		t.Errorf("Append through a redirect = %+v, nil: a success, yet the stream's version is still %d (nothing appended)", res, v)
	}
	// A DELETE becomes a GET too: Forget (DELETE /subjects/{subject}) reports an erasure it never made.
	if _, err := s.store.Append(ctx, "user-7", []estuite.EventData{{Type: "T", Data: []byte(`{"email":"a@b"}`), Subject: "user-7"}}, nil); err != nil {
		t.Fatal(err)
	}
	err = c.Forget(ctx, "user-7")
	forgotten, ferr := s.store.SubjectForgotten(ctx, "user-7")
	if err == nil && !forgotten {
		t.Errorf("Forget through a redirect = nil: a success, yet the store's Forgotten = %v, %v (the subject was not erased)", forgotten, ferr)
	}
	dres, err := c.Delete(ctx, "order-1", nil)
	if _, verr := s.store.Version(ctx, "order-1"); err == nil && verr == nil {
		t.Errorf("Delete through a redirect = %+v, nil: a success, yet the stream is still there", dres)
	}
}

// TestReview2AppendTimeoutIsUnknownOutcome: as above, with the client's own timeout
// (Options.HTTPClient's, 60 s by default) running out after the server committed.
func TestReview2AppendTimeoutIsUnknownOutcome(t *testing.T) {
	s := newTestServer(t)
	release := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		s.srv.Handler().ServeHTTP(rec, r) // committed
		<-release                         // the answer is slow to come back
	}))
	defer ts.Close()
	defer close(release)
	c, err := client.New(ts.URL, &client.Options{Token: testToken, HTTPClient: &http.Client{Timeout: 300 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, err = c.Append(ctx, "order-2", []estuite.EventData{{Type: "T", Data: []byte(`{}`)}}, nil)
	v, _ := s.store.Version(ctx, "order-2")
	t.Logf("Append = %v; the store's version: %d", err, v)
	if err == nil || !errors.Is(err, estuite.ErrUnavailable) {
		t.Errorf("an append that timed out after committing returns %v (%T), not estuite.ErrUnavailable", err, err)
	}
}

// TestReview2ReadOfLargeEventsExceedsTheResponseBound: Client.Read asks for MaxPageLimit (1,000)
// events a page whatever their size, and the server's stream read has no byte budget per answer;
// with events of ~300 KB a page is larger than DefaultMaxResponseBytes (64 MiB) and Read fails
// with ErrResponseTooLarge, where Store.Read reads the stream (so does `estuite read` on the
// store, while `estuite read --server` fails).
func TestReview2ReadOfLargeEventsExceedsTheResponseBound(t *testing.T) {
	s := newTestServer(t)
	ctx := context.Background()
	data := []byte(`{"s":"` + strings.Repeat("x", 300<<10) + `"}`)
	const n = 240
	for range n {
		if _, err := s.store.Append(ctx, "big", []estuite.EventData{{Type: "T", Data: data}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	read, err := s.store.Read(ctx, "big", &estuite.ReadOptions{PageBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for _, err := range read.Events {
		if err != nil {
			t.Fatal(err)
		}
		got++
	}
	if got != n {
		t.Fatalf("Store.Read: %d events", got)
	}
	c := s.client(t, nil)
	got = 0
	for _, err := range c.Read(ctx, "big", client.ReadOptions{}) {
		if err != nil {
			t.Fatalf("Client.Read after %d of %d events (Store.Read read them all): %v", got, n, err)
		}
		got++
	}
}

// TestReview2AppendRetryOfACommitWithHTMLCharacters: Client.Append re-encodes the data with
// json.Marshal, which escapes <, > and & (\u003c…). A commit first sent as is (by the store, curl,
// or any client that sends the bytes it was given) and retried through the client with the same
// commit ID and the same data is not the same commit to the store.
func TestReview2AppendRetryOfACommitWithHTMLCharacters(t *testing.T) {
	s := newTestServer(t)
	ctx := context.Background()
	ev := []estuite.EventData{{Type: "T", Data: []byte(`{"html":"<b>a & b</b>"}`)}}
	if _, err := s.store.Append(ctx, "page-1", ev, &estuite.AppendOptions{CommitID: "c-1"}); err != nil {
		t.Fatal(err)
	}
	c := s.client(t, nil)
	res, err := c.Append(ctx, "page-1", ev, &estuite.AppendOptions{CommitID: "c-1"})
	if err != nil || !res.Duplicate {
		t.Errorf("the retry through the client = %+v, %v; want a duplicate", res, err)
	}
	read, err := s.store.Read(ctx, "page-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	for e, err := range read.Events {
		t.Logf("stored by the store: %s %v", e.Data, err)
	}
	// And the bytes a client append stores are not the caller's.
	if _, err := c.Append(ctx, "page-2", ev, nil); err != nil {
		t.Fatal(err)
	}
	read, err = s.store.Read(ctx, "page-2", nil)
	if err != nil {
		t.Fatal(err)
	}
	for e, err := range read.Events {
		if err != nil || string(e.Data) != string(ev[0].Data) {
			t.Errorf("appended through the client %s, stored %s (%v)", ev[0].Data, e.Data, err)
		}
	}
}
