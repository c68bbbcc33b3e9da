package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/server"
	"github.com/estuite/estuite/table/mem"
)

// TestFeedPaging pages through the feed with after/next, with and without filters.
func TestFeedPaging(t *testing.T) {
	h := newHarness(t)
	r := h.do("GET", "/feed", nil)
	mustStatus(t, r, http.StatusOK)
	if got := compact(t, r.body); got != `{"events":[],"next":0,"head":0}` {
		t.Fatalf("empty feed: %s", got)
	}
	h.appendEvents("order-1", "OrderPlaced", 3)
	h.appendEvents("user-1", "UserRegistered", 2)
	h.appendEvents("order-2", "OrderPlaced", 1)
	h.appendEvents("order-1", "OrderShipped", 1)
	h.dispatch()

	// Unfiltered, two at a time.
	var all []wireEvent
	after := int64(0)
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("the feed does not end")
		}
		r := h.do("GET", fmt.Sprintf("/feed?after=%d&limit=2", after), nil)
		mustStatus(t, r, http.StatusOK)
		var page feedResult
		r.decode(t, &page)
		if page.Head != 7 {
			t.Fatalf("head %d, want 7", page.Head)
		}
		if len(page.Events) > 2 {
			t.Fatalf("%d events with limit 2", len(page.Events))
		}
		all = append(all, page.Events...)
		if page.Next == after {
			break
		}
		after = page.Next
	}
	if len(all) != 7 {
		t.Fatalf("read %d events, want 7", len(all))
	}
	perStream := map[string]int64{}
	for i, ev := range all {
		perStream[ev.Stream]++
		if ev.Position != int64(i+1) || ev.Version != perStream[ev.Stream] || ev.DispatchedAt == "" || ev.RecordedAt == "" {
			t.Errorf("feed event %d: %+v", i, ev)
		}
	}

	// Filters: next moves past the events filtered out.
	read := func(query string) feedResult {
		r := h.do("GET", "/feed?"+query, nil)
		mustStatus(t, r, http.StatusOK)
		var page feedResult
		r.decode(t, &page)
		return page
	}
	page := read("type=OrderShipped")
	if len(page.Events) != 1 || page.Events[0].Type != "OrderShipped" || page.Next != 7 || page.Head != 7 {
		t.Errorf("type filter: %+v", page)
	}
	page = read("type=OrderShipped&type=UserRegistered")
	if len(page.Events) != 3 {
		t.Errorf("two types: %d events", len(page.Events))
	}
	page = read("prefix=order-")
	if len(page.Events) != 5 || page.Next != 7 {
		t.Errorf("prefix: %d events, next %d", len(page.Events), page.Next)
	}
	for _, ev := range page.Events {
		if !strings.HasPrefix(ev.Stream, "order-") {
			t.Errorf("prefix filter let %q through", ev.Stream)
		}
	}
	// Across streams the feed is in dispatch order: take the expectations from the full read.
	var placed []int64
	lastUser := int64(0)
	for _, ev := range all {
		if ev.Type == "OrderPlaced" {
			placed = append(placed, ev.Position)
		}
		if ev.Stream == "user-1" {
			lastUser = ev.Position
		}
	}
	page = read("prefix=order-&type=OrderPlaced&limit=3")
	if len(page.Events) != 3 || page.Next != placed[2] {
		t.Errorf("prefix, type, limit 3: %d events, next %d, want next %d", len(page.Events), page.Next, placed[2])
	}
	page = read(fmt.Sprintf("prefix=order-&type=OrderPlaced&after=%d", page.Next))
	if len(page.Events) != 1 || page.Events[0].Position != placed[3] || page.Next != 7 {
		t.Errorf("the rest: %+v", page)
	}
	page = read(fmt.Sprintf("prefix=user-&after=%d", lastUser))
	if len(page.Events) != 0 || page.Next != 7 {
		t.Errorf("nothing matching after %d: %+v", lastUser, page)
	}
	page = read("after=100")
	if len(page.Events) != 0 || page.Next != 100 || page.Head != 7 {
		t.Errorf("after past the head: %+v", page)
	}
}

// liveStream is an open GET /feed/live.
type liveStream struct {
	cancel context.CancelFunc
	resp   *http.Response
	lines  chan string // closed at the end of the stream
}

// openLive opens the live feed; header is name, value pairs.
func (h *harness) openLive(query string, header ...string) *liveStream {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", h.ts.URL+"/feed/live"+query, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	if h.token != "" {
		req.Header.Set("Authorization", "Bearer "+h.token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		h.t.Fatal(err)
	}
	ls := &liveStream{cancel: cancel, resp: resp, lines: make(chan string, 100)}
	go func() {
		defer close(ls.lines)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			ls.lines <- sc.Text()
		}
	}()
	h.t.Cleanup(ls.close)
	return ls
}

func (ls *liveStream) close() {
	ls.cancel()
	ls.resp.Body.Close()
}

// sseEvent is one event of the stream.
type sseEvent struct {
	id, event, data string
}

// next returns the next event, skipping comments; ok is false at the end of the stream.
func (ls *liveStream) next(t *testing.T) (ev sseEvent, ok bool) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case line, open := <-ls.lines:
			switch {
			case !open:
				return ev, false
			case line == "":
				if ev != (sseEvent{}) {
					return ev, true
				}
			case strings.HasPrefix(line, ":"):
			case strings.HasPrefix(line, "id: "):
				ev.id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "event: "):
				ev.event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				if ev.data != "" {
					t.Fatalf("an event with more than one data line")
				}
				ev.data = strings.TrimPrefix(line, "data: ")
			default:
				t.Fatalf("unexpected line %q", line)
			}
		case <-timeout:
			t.Fatal("no event within 10s")
		}
	}
}

// nextEvent returns the next feed event, failing on anything else.
func (ls *liveStream) nextEvent(t *testing.T) wireEvent {
	t.Helper()
	sse, ok := ls.next(t)
	if !ok {
		t.Fatal("the live stream ended")
	}
	if sse.event != "" {
		t.Fatalf("event %q: %s", sse.event, sse.data)
	}
	var ev wireEvent
	if err := json.Unmarshal([]byte(sse.data), &ev); err != nil {
		t.Fatalf("data %q: %v", sse.data, err)
	}
	if sse.id != fmt.Sprint(ev.Position) {
		t.Fatalf("id %q for position %d", sse.id, ev.Position)
	}
	return ev
}

// startDispatcher runs a dispatcher that reports to the server, until the test ends.
func (h *harness) startDispatcher() {
	h.t.Helper()
	d := estuite.NewDispatcher(h.store, &estuite.DispatcherOptions{OnStep: h.srv.ObserveDispatch})
	if err := d.Start(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			h.t.Errorf("dispatcher: %v", err)
		}
	})
}

// TestLiveFeed follows the feed over Server-Sent Events: delivery in order, filters, resuming
// from Last-Event-ID, keep-alive comments, and Close ending the streams.
func TestLiveFeed(t *testing.T) {
	h := newHarness(t, withServerOptions(func(o *server.Options) { o.LiveKeepAlive = 50 * time.Millisecond }))
	h.startDispatcher()
	live := h.openLive("")
	if ct := live.resp.Header.Get("Content-Type"); live.resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("live: %d %s", live.resp.StatusCode, ct)
	}
	filtered := h.openLive("?type=B&prefix=s-")

	h.appendEvents("s-1", "A", 2)
	h.appendEvents("s-2", "B", 1)
	h.appendEvents("other", "B", 1)
	h.appendEvents("s-1", "B", 1)
	for i := 1; i <= 5; i++ {
		if ev := live.nextEvent(t); ev.Position != int64(i) {
			t.Fatalf("event %d at position %d", i, ev.Position)
		}
	}
	// The feed orders events of one stream by version; across streams, by dispatch.
	first, second := filtered.nextEvent(t), filtered.nextEvent(t)
	got := map[string]bool{first.Stream: true, second.Stream: true}
	if first.Type != "B" || second.Type != "B" || !got["s-1"] || !got["s-2"] || first.Position >= second.Position {
		t.Fatalf("filtered: %+v, %+v", first, second)
	}

	// Keep-alive comments while nothing happens.
	deadline := time.After(5 * time.Second)
	for keepAlive := false; !keepAlive; {
		select {
		case line := <-live.lines:
			keepAlive = strings.HasPrefix(line, ": keep-alive")
		case <-deadline:
			t.Fatal("no keep-alive comment")
		}
	}

	// Resume: Last-Event-ID wins over after.
	resumed := h.openLive("?after=1", "Last-Event-ID", "3")
	if ev := resumed.nextEvent(t); ev.Position != 4 {
		t.Fatalf("resumed after 3 at %d", ev.Position)
	}
	if ev := h.openLive("?after=4").nextEvent(t); ev.Position != 5 {
		t.Fatalf("after 4: %d", ev.Position)
	}

	// Metrics see the open streams and the lowest position.
	r := h.do("GET", "/metrics", nil)
	if !strings.Contains(string(r.body), "estuite_live_subscriptions ") || !strings.Contains(string(r.body), "estuite_live_lowest_position ") {
		t.Errorf("live metrics missing:\n%s", grepLines(string(r.body), "estuite_live"))
	}

	// Close ends every stream and refuses new ones.
	h.srv.Close()
	for _, ls := range []*liveStream{live, filtered, resumed} {
		for {
			if _, ok := ls.next(t); !ok {
				break
			}
		}
	}
	r = h.do("GET", "/feed/live", nil)
	mustStatus(t, r, http.StatusServiceUnavailable)
	if code := r.errorCode(t); code != "unavailable" {
		t.Errorf("live after Close: %s", code)
	}
	// A client sees its stream end before the server's handler has returned and counted it
	// closed: give the handlers a moment.
	closedBy := time.Now().Add(5 * time.Second)
	for {
		r = h.do("GET", "/metrics", nil)
		if strings.Contains(string(r.body), "estuite_live_subscriptions 0") {
			break
		}
		if time.Now().After(closedBy) {
			t.Fatalf("live streams left 5 s after Close:\n%s", grepLines(string(r.body), "estuite_live"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLiveFeedEndsWhenClientLeaves checks that a client going away ends its subscription.
func TestLiveFeedEndsWhenClientLeaves(t *testing.T) {
	h := newHarness(t)
	live := h.openLive("")
	if _, ok := <-live.lines; !ok {
		t.Fatal("no first comment")
	}
	live.close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := h.do("GET", "/metrics", nil)
		if strings.Contains(string(r.body), "estuite_live_subscriptions 0") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscription still open:\n%s", grepLines(string(r.body), "estuite_live"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestUnavailableStorageAnswers503 checks that storage that keeps failing is a 503, and that the
// server recovers with the storage.
func TestUnavailableStorageAnswers503(t *testing.T) {
	h := newHarness(t, withStoreOptions(&estuite.Options{Retry: estuite.RetryPolicy{MaxAttempts: 2, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}}))
	h.appendEvents("s", "A", 1)
	h.mem.SetFaults(func(mem.Call) mem.Fault { return mem.FailBefore })
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/streams/s", `{"events": [{"type": "A"}]}`},
		{"POST", "/streams/new", `{"expectedVersion": "no_stream", "events": [{"type": "A"}]}`},
		{"GET", "/streams/s", ""},
		{"GET", "/streams/s/events", ""},
		{"GET", "/feed", ""},
	} {
		r := h.do(c.method, c.path, c.body)
		if r.status != http.StatusServiceUnavailable {
			t.Errorf("%s %s: %d %s", c.method, c.path, r.status, r.body)
			continue
		}
		if code := r.errorCode(t); code != "unavailable" || r.header.Get("Retry-After") == "" {
			t.Errorf("%s %s: %s, Retry-After %q", c.method, c.path, code, r.header.Get("Retry-After"))
		}
	}
	r := h.do("GET", "/healthz", nil)
	mustStatus(t, r, http.StatusOK)
	h.mem.SetFaults(nil)
	h.appendEvents("s", "A", 1)
	if v, _ := h.store.Version(t.Context(), "s"); v != 2 {
		t.Errorf("version %d, want 2", v)
	}
}

// grepLines returns the lines of s containing sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestCorruptStorageAnswers500 checks that a storage fault that is nobody's input is a 500
// internal that tells the client nothing about the cause.
func TestCorruptStorageAnswers500(t *testing.T) {
	h := newHarness(t)
	h.appendEvents("plain", "A", 2)
	tbl, err := h.mem.Table(estuite.DefaultTablePrefix + "streams")
	if err != nil {
		t.Fatal(err)
	}
	tbl.Remove("plain", fmt.Sprintf("E%019d", 1)) // the first event row of the stream
	r := h.do("GET", "/streams/plain/events", nil)
	mustStatus(t, r, http.StatusInternalServerError)
	if got := compact(t, r.body); got != `{"error":"internal","message":"internal error"}` {
		t.Errorf("500 body: %s", got)
	}
}

// A store of several feed shards: GET /feed?shard=k reads shard k, with its own positions and
// head and the shard in the page; a shard the store does not have is a 400; the live feed
// follows one shard.
func TestFeedShardsOverHTTP(t *testing.T) {
	h := newHarness(t, withStoreOptions(&estuite.Options{FeedShards: 3}))
	for i := range 9 {
		h.appendEvents(fmt.Sprintf("acct-%d", i), "Opened", 2)
	}
	for shard := range 3 {
		d := estuite.NewDispatcher(h.store, &estuite.DispatcherOptions{Shard: shard})
		for {
			st, err := d.Step(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if st.Streams == 0 {
				break
			}
		}
	}
	total := 0
	for shard := range 3 {
		r := h.do("GET", fmt.Sprintf("/feed?shard=%d", shard), nil)
		mustStatus(t, r, http.StatusOK)
		var page struct {
			feedResult
			Shard *int `json:"shard"`
		}
		r.decode(t, &page)
		if page.Shard == nil || *page.Shard != shard || page.Head != int64(len(page.Events)) {
			t.Fatalf("shard %d: shard %v, head %d, %d events", shard, page.Shard, page.Head, len(page.Events))
		}
		for i, ev := range page.Events {
			if ev.Position != int64(i+1) {
				t.Fatalf("shard %d entry %d at position %d", shard, i, ev.Position)
			}
		}
		total += len(page.Events)
	}
	if total != 18 {
		t.Fatalf("the shards hold %d events, want 18", total)
	}
	// GET /feed/all merges the shards, with a cursor of every shard's position.
	cursor, merged := "", 0
	seen := map[string]bool{}
	for pages := 0; pages < 20; pages++ {
		r := h.do("GET", "/feed/all?limit=5&cursor="+cursor, nil)
		mustStatus(t, r, http.StatusOK)
		var page struct {
			Events []struct {
				Shard    *int   `json:"shard"`
				Position int64  `json:"position"`
				Stream   string `json:"stream"`
				Version  int64  `json:"version"`
			} `json:"events"`
			Next string `json:"next"`
		}
		r.decode(t, &page)
		if len(page.Events) == 0 {
			break
		}
		for _, e := range page.Events {
			key := fmt.Sprint(e.Stream, e.Version)
			if e.Shard == nil || seen[key] {
				t.Fatalf("/feed/all event %+v (seen before: %v)", e, seen[key])
			}
			seen[key] = true
		}
		merged += len(page.Events)
		if strings.Count(page.Next, ".") != 2 {
			t.Fatalf("cursor %q of a store of 3 shards", page.Next)
		}
		cursor = page.Next
	}
	if merged != 18 {
		t.Fatalf("/feed/all read %d events, want 18", merged)
	}
	for _, path := range []string{"/feed?shard=3", "/feed?shard=-1", "/feed?shard=x", "/feed/live?shard=3", "/feed/all?cursor=1.2", "/feed/all?cursor=a.b.c"} {
		r := h.do("GET", path, nil)
		mustStatus(t, r, http.StatusBadRequest)
	}
}
