package client_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/client"
	"github.com/estuite/estuite/server"
	"github.com/estuite/estuite/table/mem"
)

// testServer is the real server.Handler on a memory store, behind an httptest server.
type testServer struct {
	store *estuite.Store
	mem   *mem.Backend
	srv   *server.Server
	ts    *httptest.Server
}

const testToken = "a-token-of-sixteen-chars"

func newTestServer(t *testing.T) *testServer {
	t.Helper()
	b := mem.New(nil)
	store, err := estuite.Open(context.Background(), b, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Options{Store: store, Token: testToken,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		srv.Close()
		ts.Close()
		store.Close()
	})
	return &testServer{store: store, mem: b, srv: srv, ts: ts}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func (s *testServer) client(t *testing.T, opts *client.Options) *client.Client {
	t.Helper()
	if opts == nil {
		opts = &client.Options{Token: testToken}
	}
	c, err := client.New(s.ts.URL, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// dispatch writes everything appended so far into the feed.
func (s *testServer) dispatch(t *testing.T) {
	t.Helper()
	d := estuite.NewDispatcher(s.store, nil)
	for range 100 {
		st, err := d.Step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.Events == 0 && !st.Incomplete {
			return
		}
	}
}

func appendN(t *testing.T, c *client.Client, stream string, n int) {
	t.Helper()
	for n > 0 {
		k := min(n, 90)
		evs := make([]estuite.EventData, k)
		for i := range evs {
			evs[i] = estuite.EventData{Type: "T", Data: []byte(`{"n":1}`)}
		}
		if _, err := c.Append(context.Background(), stream, evs, nil); err != nil {
			t.Fatal(err)
		}
		n -= k
	}
}

func TestStreamsThroughTheClient(t *testing.T) {
	s := newTestServer(t)
	c := s.client(t, nil)
	ctx := context.Background()

	res, err := c.Append(ctx, "orders/2026 #1", []estuite.EventData{
		{Type: "Placed", Data: []byte(`{"total": "12.50"}`), Metadata: []byte(`{"by":"me"}`)},
		{Type: "Blob", Data: []byte{0, 1, 2}, Format: estuite.Binary},
	}, &estuite.AppendOptions{Expected: estuite.NoStream, CommitID: "c-1"})
	if err != nil || res.FirstVersion != 1 || res.LastVersion != 2 || res.Duplicate || res.Stream != "orders/2026 #1" {
		t.Fatalf("Append = %+v, %v", res, err)
	}
	again, err := c.Append(ctx, "orders/2026 #1", []estuite.EventData{
		{Type: "Placed", Data: []byte(`{"total": "12.50"}`), Metadata: []byte(`{"by":"me"}`)},
		{Type: "Blob", Data: []byte{0, 1, 2}, Format: estuite.Binary},
	}, &estuite.AppendOptions{Expected: estuite.NoStream, CommitID: "c-1"})
	if err != nil || !again.Duplicate || again.LastVersion != 2 {
		t.Fatalf("retried Append = %+v, %v", again, err)
	}
	_, err = c.Append(ctx, "orders/2026 #1", []estuite.EventData{{Type: "X"}}, &estuite.AppendOptions{Expected: estuite.Exactly(7)})
	var wrong *estuite.WrongExpectedVersionError
	var ce *client.Error
	if !errors.Is(err, estuite.ErrWrongExpectedVersion) || !errors.As(err, &wrong) || wrong.Actual != 2 ||
		!errors.As(err, &ce) || ce.Status != 409 || ce.Code != client.CodeWrongExpectedVersion {
		t.Fatalf("Append at a wrong version = %v", err)
	}
	if v, err := c.Version(ctx, "orders/2026 #1"); err != nil || v != 2 {
		t.Fatalf("Version = %d, %v", v, err)
	}
	// The store holds the name as given: the client encoded the "/", " " and "#".
	if v, err := s.store.Version(ctx, "orders/2026 #1"); err != nil || v != 2 {
		t.Fatalf("the store's Version = %d, %v", v, err)
	}
	page, err := c.ReadPage(ctx, "orders/2026 #1", client.ReadOptions{Backward: true})
	if err != nil || page.Version != 2 || len(page.Events) != 2 || page.Events[0].Format != estuite.Binary ||
		string(page.Events[0].Data) != "\x00\x01\x02" || string(page.Events[1].Data) != `{"total":"12.50"}` ||
		string(page.Events[1].Metadata) != `{"by":"me"}` || page.Events[1].CommitID != "c-1" || page.Events[1].RecordedAt.IsZero() {
		t.Fatalf("ReadPage = %+v, %v", page, err)
	}
	for _, name := range []string{".", "..", "%2F", "a?b"} {
		if _, err := c.Append(ctx, name, []estuite.EventData{{Type: "T"}}, nil); err != nil {
			t.Fatalf("Append to %q: %v", name, err)
		}
		if v, err := s.store.Version(ctx, name); err != nil || v != 1 {
			t.Fatalf("%q: the store's Version = %d, %v", name, v, err)
		}
	}

	// Read pages past MaxPageLimit, forward and backward.
	appendN(t, c, "long", 1234)
	var n int64
	for ev, err := range c.Read(ctx, "long", client.ReadOptions{}) {
		if err != nil || ev.Version != n+1 {
			t.Fatalf("Read: event %d: %+v, %v", n+1, ev, err)
		}
		n++
	}
	if n != 1234 {
		t.Fatalf("Read returned %d events, want 1234", n)
	}
	n = 0
	for ev, err := range c.Read(ctx, "long", client.ReadOptions{Backward: true, From: 1100, Limit: 1050}) {
		if err != nil || ev.Version != 1100-n {
			t.Fatalf("Read backward: %+v, %v", ev, err)
		}
		n++
	}
	if n != 1050 {
		t.Fatalf("Read backward returned %d events, want 1050", n)
	}
	if _, err := c.ReadPage(ctx, "never", client.ReadOptions{}); !errors.Is(err, estuite.ErrStreamNotFound) {
		t.Fatalf("ReadPage of an unknown stream = %v", err)
	}
	if _, err := c.ReadPage(ctx, "long", client.ReadOptions{Limit: 5000}); !errors.Is(err, estuite.ErrInvalidInput) {
		t.Fatalf("ReadPage with limit 5000 = %v", err)
	}

	// The feed.
	s.dispatch(t)
	fp, err := c.Feed(ctx, client.FeedOptions{Limit: 3})
	if err != nil || len(fp.Events) != 3 || fp.Events[0].Position != 1 || fp.Next != 3 || fp.Head != 1240 ||
		fp.Events[0].DispatchedAt.IsZero() {
		t.Fatalf("Feed = %+v, %v", fp, err)
	}
	fp, err = c.Feed(ctx, client.FeedOptions{Types: []string{"Blob"}, Prefix: "orders/", Limit: 1000})
	if err != nil || len(fp.Events) != 1 || fp.Events[0].Stream != "orders/2026 #1" || fp.Events[0].Format != estuite.Binary {
		t.Fatalf("filtered Feed = %+v, %v", fp, err)
	}

	// Metadata, delete, scavenge.
	age := 48 * time.Hour
	md, err := c.SetMetadata(ctx, "long", estuite.StreamMetadata{MaxAge: &age, Custom: []byte(`{"owner":"x"}`)}, estuite.AnyMetadataVersion)
	if err != nil || md.MetadataVersion != 1 || md.MaxAge == nil || *md.MaxAge != age || string(md.Custom) != `{"owner":"x"}` || md.MaxCount != nil {
		t.Fatalf("SetMetadata = %+v, %v", md, err)
	}
	if _, err := c.SetMetadata(ctx, "long", estuite.StreamMetadata{}, 5); !errors.Is(err, estuite.ErrWrongExpectedVersion) {
		t.Fatalf("SetMetadata at a wrong version = %v", err)
	}
	if md, err := c.Metadata(ctx, "long"); err != nil || md.MetadataVersion != 1 {
		t.Fatalf("Metadata = %+v, %v", md, err)
	}
	if del, err := c.Delete(ctx, "long", &estuite.DeleteOptions{Expected: estuite.Exactly(1234)}); err != nil || del.Version != 1234 || del.Stream != "long" {
		t.Fatalf("Delete = %+v, %v", del, err)
	}
	if _, err := c.Version(ctx, "long"); !errors.Is(err, estuite.ErrStreamNotFound) {
		t.Fatalf("Version after a delete = %v", err)
	}
	if _, err := c.Delete(ctx, "a?b", &estuite.DeleteOptions{Hard: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Append(ctx, "a?b", []estuite.EventData{{Type: "T"}}, nil); !errors.Is(err, estuite.ErrStreamDeleted) {
		t.Fatalf("Append after a hard delete = %v", err)
	}
	if _, err := c.Scavenge(ctx); err != nil {
		t.Fatal(err)
	}

	// Subjects.
	if _, err := c.Append(ctx, "user-7", []estuite.EventData{{Type: "Registered", Subject: "user-7", Data: []byte(`{"name":"A"}`)}}, nil); err != nil {
		t.Fatal(err)
	}
	if f, err := c.Forgotten(ctx, "user-7"); err != nil || f {
		t.Fatalf("Forgotten = %v, %v", f, err)
	}
	if err := c.Forget(ctx, "user-7"); err != nil {
		t.Fatal(err)
	}
	if f, err := c.Forgotten(ctx, "user-7"); err != nil || !f {
		t.Fatalf("Forgotten after Forget = %v, %v", f, err)
	}
	page, err = c.ReadPage(ctx, "user-7", client.ReadOptions{})
	if err != nil || len(page.Events) != 1 || !page.Events[0].Erased || page.Events[0].Data != nil || page.Events[0].Subject != "user-7" {
		t.Fatalf("an erased event = %+v, %v", page, err)
	}
	if _, err := c.Append(ctx, "user-7", []estuite.EventData{{Type: "X", Subject: "user-7"}}, nil); !errors.Is(err, estuite.ErrSubjectForgotten) {
		t.Fatalf("Append naming a forgotten subject = %v", err)
	}
}

func TestGroupsThroughTheClient(t *testing.T) {
	s := newTestServer(t)
	c := s.client(t, nil)
	ctx := context.Background()
	if groups, err := c.Groups(ctx); err != nil || len(groups) != 0 {
		t.Fatalf("Groups = %v, %v", groups, err)
	}
	if _, err := c.GroupState(ctx, "a/b"); !errors.Is(err, estuite.ErrGroupNotFound) {
		t.Fatalf("GroupState of no group = %v", err)
	}
	if _, err := c.ParkedEvents(ctx, "nope", 0); !errors.Is(err, estuite.ErrGroupNotFound) {
		t.Fatalf("ParkedEvents of no group = %v", err)
	}
	appendN(t, c, "o-1", 3)
	s.dispatch(t)
	// A member that parks every event, until its slot's checkpoint has passed them.
	var mu sync.Mutex
	seen := 0
	m, err := s.store.JoinGroup(ctx, estuite.GroupOptions{Group: "orders/proj", Member: "m1", Ranges: 2,
		Handler: func(_ context.Context, ev estuite.FeedEvent) error {
			mu.Lock()
			seen++
			mu.Unlock()
			if ev.Version == 1 {
				return errors.New("refused")
			}
			return nil
		}, MaxRetries: 1, LeaseDuration: 1500 * time.Millisecond, PollInterval: 5 * time.Millisecond, MaxPollInterval: 50 * time.Millisecond,
		CheckpointInterval: 20 * time.Millisecond, RetryBackoff: time.Millisecond, MaxRetryBackoff: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var parked []estuite.ParkedEvent
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if parked, err = c.ParkedEvents(ctx, "orders/proj", 0); err == nil && len(parked) == 3 {
			break
		}
	}
	m.Stop()
	if len(parked) != 3 || parked[0].Stream != "o-1" || parked[0].Version != 1 || parked[0].Parked.IsZero() || !parked[1].Waiting {
		t.Fatalf("ParkedEvents = %+v, %v", parked, err)
	}
	groups, err := c.Groups(ctx)
	if err != nil || len(groups) != 1 || groups[0].Name != "orders/proj" || groups[0].Ranges != 2 {
		t.Fatalf("Groups = %+v, %v", groups, err)
	}
	st, err := c.GroupState(ctx, "orders/proj")
	if err != nil || st.Name != "orders/proj" || len(st.Slots) != 2 || st.Parked != 3 {
		t.Fatalf("GroupState = %+v, %v", st, err)
	}
	if _, err := c.ReplayParked(ctx, "orders/proj", []estuite.ParkedRef{{Shard: 0, Position: 99}}); !errors.Is(err, estuite.ErrInvalidInput) {
		t.Fatalf("ReplayParked of no parked event = %v", err)
	}
	if n, err := c.ReplayParked(ctx, "orders/proj", []estuite.ParkedRef{{Shard: 0, Position: parked[0].Position}}); err != nil || n != 1 {
		t.Fatalf("ReplayParked = %d, %v", n, err)
	}
	if n, err := c.DiscardParked(ctx, "orders/proj", nil); err != nil || n != 3 {
		t.Fatalf("DiscardParked(all) = %d, %v", n, err)
	}
}

func TestClientErrors(t *testing.T) {
	s := newTestServer(t)
	ctx := context.Background()
	_, err := s.client(t, &client.Options{}).Version(ctx, "x")
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 401 || ce.Code != client.CodeUnauthorized || ce.Message == "" {
		t.Fatalf("without the token: %v", err)
	}
	if _, err := s.client(t, &client.Options{Token: testToken, MaxResponseBytes: 10}).Groups(ctx); !errors.Is(err, client.ErrResponseTooLarge) {
		t.Fatalf("an answer over MaxResponseBytes: %v", err)
	}
	for _, bad := range []string{"", "127.0.0.1:2113", "ftp://x", "http://x/?q=1"} {
		if _, err := client.New(bad, nil); err == nil {
			t.Errorf("New(%q) succeeded", bad)
		}
	}
	// A proxy's HTML error is still an *Error, with its status.
	html := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Retry-After", "3")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, "<html>down</html>")
	}))
	defer html.Close()
	c, _ := client.New(html.URL, nil)
	_, err = c.Version(ctx, "x")
	if !errors.As(err, &ce) || ce.Status != 503 || ce.Code != "http_503" || ce.RetryAfter != 3 || errors.Is(err, estuite.ErrUnavailable) {
		t.Fatalf("an HTML 503: %#v", err)
	}
}

// TestVerifyThroughTheClient runs a verification on the server, watches its progress, finds a
// planted fault, and checks that only one runs at a time and that one can be canceled.
func TestVerifyThroughTheClient(t *testing.T) {
	s := newTestServer(t)
	c := s.client(t, nil)
	ctx := context.Background()
	if _, err := c.VerifyStatus(ctx, ""); !isCode(err, client.CodeVerifyNotFound, 404) {
		t.Fatalf("the latest verification before any = %v", err)
	}
	for _, stream := range []string{"a", "b", "c/x"} {
		appendN(t, c, stream, 40)
	}
	s.dispatch(t)

	var progress []client.VerifyJob
	job, err := c.Verify(ctx, time.Millisecond, func(j client.VerifyJob) { progress = append(progress, j) })
	if err != nil || job.State != client.VerifyDone || job.Report == nil || !job.Report.OK() || job.Report.Events != 120 ||
		job.Report.Streams != 3 || job.Progress.Fraction != 1 || job.Progress.FeedHead != 120 || job.Finished.IsZero() {
		t.Fatalf("Verify = %+v, %v", job, err)
	}
	for _, p := range progress {
		if p.Progress.Fraction < 0 || p.Progress.Fraction >= 1 || p.State != client.VerifyRunning {
			t.Fatalf("progress %+v", p.Progress)
		}
	}

	// A fault: an event row gone from the stream table.
	streams, err := s.mem.Table("estuitestreams")
	if err != nil {
		t.Fatal(err)
	}
	streams.Remove("b", "E0000000000000000003")
	job, err = c.Verify(ctx, 0, nil)
	if err != nil || job.Report.OK() || job.Counts.Unparseable != 1 || len(job.Report.Unparseable) != 1 ||
		job.Report.Unparseable[0].RowKey != "E0000000000000000003" || len(job.Report.OrderViolations) != 1 || job.Truncated {
		t.Fatalf("Verify with a fault = %+v, %v", job.Report, err)
	}
	if latest, err := c.VerifyStatus(ctx, ""); err != nil || latest.ID != job.ID {
		t.Fatalf("the latest verification = %+v, %v; want %s", latest, err, job.ID)
	}

	// Hold a verification on its first scan: a second one is refused, and a cancel ends it.
	gate := make(chan struct{})
	var once sync.Once
	s.mem.SetFaults(func(call mem.Call) mem.Fault {
		if call.Method == mem.MethodScan || call.Method == mem.MethodQuery {
			<-gate
		}
		return mem.NoFault
	})
	release := func() { once.Do(func() { close(gate) }) }
	defer release()
	held, err := c.StartVerify(ctx)
	if err != nil || held.State != client.VerifyRunning {
		t.Fatalf("StartVerify = %+v, %v", held, err)
	}
	_, err = c.StartVerify(ctx)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 409 || ce.Code != client.CodeVerifyRunning || ce.ID != held.ID {
		t.Fatalf("a second StartVerify = %#v", err)
	}
	if st, err := c.VerifyStatus(ctx, held.ID); err != nil || st.State != client.VerifyRunning || st.Report != nil || !st.Finished.IsZero() {
		t.Fatalf("VerifyStatus of the running one = %+v, %v", st, err)
	}
	done := make(chan error, 1)
	go func() { done <- c.CancelVerify(ctx, held.ID) }()
	time.Sleep(20 * time.Millisecond)
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s.mem.SetFaults(nil)
	if st, err := c.VerifyStatus(ctx, held.ID); err != nil || st.State != client.VerifyCanceled {
		t.Fatalf("VerifyStatus after the cancel = %+v, %v", st, err)
	}
	if _, err := c.VerifyStatus(ctx, "6ba7b810-9dad-11d1-80b4-00c04fd430c8"); !isCode(err, client.CodeVerifyNotFound, 404) {
		t.Fatalf("an unknown ID = %v", err)
	}
	if err := c.CancelVerify(ctx, "6ba7b810-9dad-11d1-80b4-00c04fd430c8"); !isCode(err, client.CodeVerifyNotFound, 404) {
		t.Fatalf("canceling an unknown ID = %v", err)
	}
	if _, err := c.Verify(ctx, 0, nil); err != nil {
		t.Fatalf("a verification after a canceled one: %v", err)
	}
}

func isCode(err error, code string, status int) bool {
	var ce *client.Error
	return errors.As(err, &ce) && ce.Code == code && ce.Status == status
}
