package server_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/server"
)

// Consumer group routes: GET /groups, GET /groups/{group}, GET /groups/{group}/parked,
// POST /groups/{group}/parked/replay and /discard, GET /groups/{group}/wait.

// projection is a group handler that refuses the events it is told to, until told otherwise.
type projection struct {
	mu      sync.Mutex
	refuse  map[string]bool // "stream@version"
	handled map[string][]int64
}

func newProjection() *projection {
	return &projection{refuse: map[string]bool{}, handled: map[string][]int64{}}
}

func (p *projection) handle(_ context.Context, ev estuite.FeedEvent) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	key := fmt.Sprintf("%s@%d", ev.Stream, ev.Version)
	if p.refuse[key] {
		return errors.New("projection refused " + key)
	}
	p.handled[ev.Stream] = append(p.handled[ev.Stream], ev.Version)
	return nil
}

func (p *projection) setRefuse(key string, refuse bool) {
	p.mu.Lock()
	p.refuse[key] = refuse
	p.mu.Unlock()
}

func (p *projection) order(stream string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprint(p.handled[stream])
}

// testGroup returns group options quick enough for tests yet calm on a loaded machine: a lease of
// 1.5 s (a replay is seen within a third of it), polls from 5 ms.
func testGroup(name string, p *projection) estuite.GroupOptions {
	return estuite.GroupOptions{Group: name, Member: "m1", Handler: p.handle, MaxRetries: 1,
		LeaseDuration: 1500 * time.Millisecond, PollInterval: 5 * time.Millisecond, MaxPollInterval: 50 * time.Millisecond,
		CheckpointInterval: 20 * time.Millisecond, RetryBackoff: time.Millisecond, MaxRetryBackoff: 2 * time.Millisecond}
}

func (h *harness) join(o estuite.GroupOptions) *estuite.GroupMember {
	h.t.Helper()
	m, err := h.store.JoinGroup(context.Background(), o)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { m.Stop() })
	return m
}

// eventually polls ok until it holds, for at most 30 s.
func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type groupsBody struct {
	Groups []struct {
		Group  string `json:"group"`
		Shards int    `json:"shards"`
		Ranges int    `json:"ranges"`
	} `json:"groups"`
}

type groupStateBody struct {
	Group   string `json:"group"`
	Shards  int    `json:"shards"`
	Ranges  int    `json:"ranges"`
	Members []struct {
		Member  string  `json:"member"`
		Updated *string `json:"updated"`
		Slots   int     `json:"slots"`
	} `json:"members"`
	Slots []struct {
		Shard    int     `json:"shard"`
		Range    int     `json:"range"`
		Owner    *string `json:"owner"`
		Position int64   `json:"position"`
		Lag      int64   `json:"lag"`
		Updated  *string `json:"updated"`
	} `json:"slots"`
	Parked int `json:"parked"`
}

type parkedEntry struct {
	Shard    int    `json:"shard"`
	Range    int    `json:"range"`
	Position int64  `json:"position"`
	Stream   string `json:"stream"`
	Version  int64  `json:"version"`
	Type     string `json:"type"`
	EventID  string `json:"eventId"`
	Error    string `json:"error"`
	Attempts int    `json:"attempts"`
	Waiting  bool   `json:"waiting"`
	Replay   bool   `json:"replay"`
	Parked   string `json:"parked"`
}

type parkedBody struct {
	Parked []parkedEntry `json:"parked"`
}

func groupPath(name string, suffix ...string) string {
	return "/groups/" + url.PathEscape(name) + strings.Join(suffix, "")
}

func (h *harness) parked(group string) []parkedEntry {
	h.t.Helper()
	r := h.do("GET", groupPath(group, "/parked"), nil)
	mustStatus(h.t, r, http.StatusOK)
	var b parkedBody
	r.decode(h.t, &b)
	return b.Parked
}

func waitPath(group, stream string, version int64, timeout string) string {
	q := url.Values{"stream": {stream}, "version": {fmt.Sprint(version)}}
	if timeout != "" {
		q.Set("timeout", timeout)
	}
	return groupPath(group, "/wait?"+q.Encode())
}

// TestConsumerGroupRoutesRoundTrip runs a real member of a group on a store of two feed shards
// and drives it over HTTP: the group's listing and state, waiting for handled and parked events,
// the parked events, a replay and a discard.
func TestConsumerGroupRoutesRoundTrip(t *testing.T) {
	h := newHarness(t, withStoreOptions(&estuite.Options{FeedShards: 2}))
	disp := estuite.NewDispatchGroup(h.store, &estuite.DispatcherOptions{PollInterval: 5 * time.Millisecond, ScavengeInterval: -1})
	if err := disp.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { disp.Stop() })
	const group = "projections/orders é" // a '/', a space and a non-ASCII letter: percent-encoded
	path := groupPath(group)

	r := h.do("GET", "/groups", nil)
	mustStatus(t, r, http.StatusOK)
	if compact(t, r.body) != `{"groups":[]}` {
		t.Fatalf("GET /groups of a store without groups: %s", r.body)
	}
	r = h.do("GET", path, nil)
	mustStatus(t, r, http.StatusNotFound)
	if code := r.errorCode(t); code != "group_not_found" {
		t.Fatalf("unknown group: %s", r.body)
	}

	proj := newProjection()
	proj.setRefuse("poison@2", true)
	h.join(testGroup(group, proj))
	h.appendEvents("poison", "P", 3)
	h.appendEvents("healthy", "H", 2)

	r = h.do("GET", waitPath(group, "healthy", 2, "30s"), nil)
	mustStatus(t, r, http.StatusOK)
	if compact(t, r.body) != `{"handled":true}` {
		t.Fatalf("wait for a handled event: %s", r.body)
	}
	// poison@2 is parked; poison@3 waits behind it (ParkBlocksStream), parked too.
	for _, v := range []int64{2, 3} {
		r = h.do("GET", waitPath(group, "poison", v, "30s"), nil)
		mustStatus(t, r, http.StatusConflict)
		if code := r.errorCode(t); code != "event_parked" {
			t.Fatalf("wait for a parked event: %s", r.body)
		}
		if m := r.json(t); m["parked"] != true {
			t.Fatalf("wait for a parked event: %s", r.body)
		}
	}

	r = h.do("HEAD", "/groups", nil)
	mustStatus(t, r, http.StatusOK)
	if len(r.body) != 0 || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("HEAD /groups: %q %v", r.body, r.header)
	}
	r = h.do("GET", "/groups", nil)
	mustStatus(t, r, http.StatusOK)
	var groups groupsBody
	r.decode(t, &groups)
	if len(groups.Groups) != 1 || groups.Groups[0].Group != group || groups.Groups[0].Shards != 2 || groups.Groups[0].Ranges != 4 {
		t.Fatalf("GET /groups: %s", r.body)
	}

	var st groupStateBody
	eventually(t, "the member holds every slot, the group's state says so", func() bool {
		r = h.do("GET", path, nil)
		mustStatus(t, r, http.StatusOK)
		st = groupStateBody{}
		r.decode(t, &st)
		if len(st.Members) != 1 || st.Members[0].Slots != 8 || len(st.Slots) != 8 {
			return false
		}
		for _, sl := range st.Slots {
			if sl.Owner == nil || *sl.Owner != "m1" {
				return false
			}
		}
		return true
	})
	if st.Group != group || st.Shards != 2 || st.Ranges != 4 || st.Parked != 2 || st.Members[0].Member != "m1" || st.Members[0].Updated == nil {
		t.Fatalf("group state: %s", r.body)
	}
	for i, sl := range st.Slots {
		if sl.Shard != i/4 || sl.Range != i%4 || sl.Updated == nil || sl.Lag < 0 || sl.Position < 0 {
			t.Fatalf("slot %d: %+v in %s", i, sl, r.body)
		}
	}

	parked := h.parked(group)
	if len(parked) != 2 {
		t.Fatalf("parked: %+v", parked)
	}
	first, second := parked[0], parked[1]
	if first.Stream != "poison" || first.Version != 2 || first.Type != "P" || first.Attempts != 2 || first.Waiting ||
		first.Replay || first.Error != "projection refused poison@2" || first.EventID == "" || first.Parked == "" || first.Position < 1 {
		t.Fatalf("the parked event: %+v", first)
	}
	if second.Stream != "poison" || second.Version != 3 || !second.Waiting || second.Shard != first.Shard || second.Position <= first.Position {
		t.Fatalf("the event waiting behind it: %+v", second)
	}
	r = h.do("GET", groupPath(group, "/parked?limit=1"), nil)
	mustStatus(t, r, http.StatusOK)
	var one parkedBody
	r.decode(t, &one)
	if len(one.Parked) != 1 || one.Parked[0] != first {
		t.Fatalf("limit=1: %s", r.body)
	}

	// A ref naming nothing parked is refused, and marks nothing.
	r = h.do("POST", groupPath(group, "/parked/replay"), fmt.Sprintf(`{"events":[{"shard":%d,"position":%d},{"shard":%d,"position":%d}]}`,
		first.Shard, first.Position, first.Shard, first.Position+1000))
	mustStatus(t, r, http.StatusBadRequest)
	if code := r.errorCode(t); code != "invalid_request" {
		t.Fatalf("replay of nothing: %s", r.body)
	}
	for _, p := range h.parked(group) {
		if p.Replay {
			t.Fatalf("a refused replay marked %+v", p)
		}
	}

	// Replay the parked event once the projection is fixed: it and the one behind it are handled.
	proj.setRefuse("poison@2", false)
	r = h.do("POST", groupPath(group, "/parked/replay"), fmt.Sprintf(`{"events":[{"shard":%d,"position":%d}]}`, first.Shard, first.Position))
	mustStatus(t, r, http.StatusOK)
	if compact(t, r.body) != `{"replayed":1}` {
		t.Fatalf("replay: %s", r.body)
	}
	eventually(t, "the replay empties the parked events", func() bool { return len(h.parked(group)) == 0 })
	r = h.do("GET", waitPath(group, "poison", 3, "30s"), nil)
	mustStatus(t, r, http.StatusOK)
	if got := proj.order("poison"); got != "[1 2 3]" {
		t.Fatalf("poison handled in order %s, want [1 2 3]", got)
	}

	// Park another one, and discard every parked event.
	proj.setRefuse("poison@4", true)
	h.appendEvents("poison", "P", 1)
	r = h.do("GET", waitPath(group, "poison", 4, "30s"), nil)
	mustStatus(t, r, http.StatusConflict)
	r = h.do("POST", groupPath(group, "/parked/discard"), `{"all": true}`)
	mustStatus(t, r, http.StatusOK)
	if compact(t, r.body) != `{"discarded":1}` {
		t.Fatalf("discard: %s", r.body)
	}
	if p := h.parked(group); len(p) != 0 {
		t.Fatalf("parked after the discard: %+v", p)
	}
	// Nothing is parked any more: discarding or replaying all is 0, and the discarded event
	// counts as passed.
	for _, route := range []string{"replay", "discard"} {
		r = h.do("POST", groupPath(group, "/parked/"+route), `{"all":true}`)
		mustStatus(t, r, http.StatusOK)
		if compact(t, r.body) != `{"`+route+`ed":0}` {
			t.Fatalf("%s of nothing: %s", route, r.body)
		}
	}
	mustStatus(t, h.do("GET", waitPath(group, "poison", 4, "30s"), nil), http.StatusOK)
	if got := proj.order("poison"); got != "[1 2 3]" {
		t.Fatalf("poison handled %s after the discard, want [1 2 3]", got)
	}
	r = h.do("GET", path, nil)
	mustStatus(t, r, http.StatusOK)
	st = groupStateBody{}
	r.decode(t, &st)
	if st.Parked != 0 {
		t.Fatalf("state after the discard: %s", r.body)
	}
}

// stoppedGroup creates group g (a member joins and stops at once) and appends an event that no
// member will ever handle: a wait for it can only time out.
func stoppedGroup(h *harness, g string) {
	h.t.Helper()
	m := h.join(testGroup(g, newProjection()))
	if err := m.Stop(); err != nil {
		h.t.Fatal(err)
	}
	h.appendEvents("orphan", "O", 1)
	h.dispatch()
}

// A wait that passes its timeout is a 408 timeout (a client's deadline, not a server fault);
// Close ends a running wait with a 503; a client that goes away is counted as 499.
func TestConsumerGroupWaitEnds(t *testing.T) {
	h := newHarness(t, withHTTPServer(func(hs *http.Server) {
		hs.WriteTimeout = 300 * time.Millisecond // shorter than the waits: they outlive it
	}))
	stoppedGroup(h, "idle")

	start := time.Now()
	r := h.do("GET", waitPath("idle", "orphan", 1, "1s"), nil)
	mustStatus(t, r, http.StatusRequestTimeout)
	if code := r.errorCode(t); code != "timeout" {
		t.Fatalf("timed out wait: %s", r.body)
	}
	if took := time.Since(start); took < time.Second {
		t.Fatalf("a wait of 1s answered after %v", took)
	}

	// A client that goes away: counted as 499, not as a failure of the server.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", h.ts.URL+waitPath("idle", "orphan", 1, "30s"), nil)
	done := make(chan error, 1)
	go func() {
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
		}
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	if err := <-done; err == nil {
		t.Fatal("the canceled request was answered")
	}
	eventually(t, "the wait whose client went away is counted as 499", func() bool {
		v, ok := sample(h.scrape(), `estuite_http_requests_total{code="499",route="GET /groups/{group}/wait"}`)
		return ok && v == 1
	})

	// Close ends a running wait.
	answered := make(chan response, 1)
	go func() { answered <- h.do("GET", waitPath("idle", "orphan", 1, "60s"), nil) }()
	time.Sleep(200 * time.Millisecond)
	h.srv.Close()
	select {
	case r := <-answered:
		mustStatus(t, r, http.StatusServiceUnavailable)
		if code := r.errorCode(t); code != "unavailable" || r.header.Get("Retry-After") == "" {
			t.Fatalf("a wait ended by Close: %s", r.body)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not end the wait")
	}
	r = h.do("GET", waitPath("idle", "orphan", 1, "5s"), nil)
	mustStatus(t, r, http.StatusServiceUnavailable)
	if v, _ := sample(h.scrape(), `estuite_http_requests_total{code="500",route="GET /groups/{group}/wait"}`); v != 0 {
		t.Fatalf("waits counted as 500: %v", v)
	}
}

// TestConsumerGroupBadInput sends malformed requests to every group route: each is a 4xx JSON
// error, never a 5xx, and writes nothing (no storage write of any kind, the parked events
// unmarked).
func TestConsumerGroupBadInput(t *testing.T) {
	h := newHarness(t)
	h.appendEvents("s", "A", 1)
	h.dispatch()
	proj := newProjection()
	proj.setRefuse("s@1", true)
	m := h.join(testGroup("g", proj))
	eventually(t, "s@1 is parked", func() bool { return len(h.parked("g")) == 1 })
	if err := m.Stop(); err != nil { // no member writes from here on
		t.Fatal(err)
	}
	pos := h.parked("g")[0].Position
	ref := fmt.Sprintf(`{"shard":0,"position":%d}`, pos)
	events := func(refs ...string) string { return `{"events":[` + strings.Join(refs, ",") + `]}` }
	many := make([]string, 1001)
	for i := range many {
		many[i] = fmt.Sprintf(`{"shard":0,"position":%d}`, i+1)
	}

	type tc struct {
		name, method, path, body string
		header                   []string
		status                   int
		code                     string
	}
	get := func(name, path string) tc {
		return tc{name: name, method: "GET", path: path, status: 400, code: "invalid_request"}
	}
	var cases []tc
	for _, route := range []string{"replay", "discard"} {
		p := "/groups/g/parked/" + route
		bad := func(name, body string) tc {
			return tc{name: route + ": " + name, method: "POST", path: p, body: body, status: 400, code: "invalid_request"}
		}
		cases = append(cases,
			bad("empty body", ""),
			bad("not JSON", "all"),
			bad("truncated", `{"all":`),
			bad("an array", `[`+ref+`]`),
			bad("null", `null`),
			bad("neither events nor all", `{}`),
			bad("both events and all", `{"all":true,"events":[`+ref+`]}`),
			bad("all false", `{"all":false}`),
			bad("all a string", `{"all":"true"}`),
			bad("all null", `{"all":null}`),
			bad("unknown member", `{"all":true,"group":"g"}`),
			bad("member in other case", `{"All":true}`),
			bad("repeated member", `{"all":true,"all":true}`),
			bad("trailing data", `{"all":true} {}`),
			bad("events empty", events()),
			bad("events null", `{"events":null}`),
			bad("events an object", `{"events":`+ref+`}`),
			bad("event not an object", events(`1`)),
			bad("event without position", events(`{"shard":0}`)),
			bad("event without shard", events(fmt.Sprintf(`{"position":%d}`, pos))),
			bad("event unknown member", events(fmt.Sprintf(`{"shard":0,"position":%d,"stream":"s"}`, pos))),
			bad("event repeated member", events(fmt.Sprintf(`{"shard":0,"shard":0,"position":%d}`, pos))),
			bad("shard negative", events(fmt.Sprintf(`{"shard":-1,"position":%d}`, pos))),
			bad("shard past the store's", events(fmt.Sprintf(`{"shard":1,"position":%d}`, pos))),
			bad("shard a string", events(fmt.Sprintf(`{"shard":"0","position":%d}`, pos))),
			bad("position zero", events(`{"shard":0,"position":0}`)),
			bad("position a fraction", events(`{"shard":0,"position":1.5}`)),
			bad("position an exponent", events(`{"shard":0,"position":1e0}`)),
			bad("position a string", events(`{"shard":0,"position":"1"}`)),
			bad("position past MaxPosition", events(`{"shard":0,"position":4611686018427387905}`)),
			bad("position over int64", events(`{"shard":0,"position":99999999999999999999}`)),
			bad("the same event twice", events(ref, ref)),
			bad("a ref naming nothing parked", events(ref, `{"shard":0,"position":999}`)),
			bad("not UTF-8", "{\"all\":true,\"\xff\":1}"),
			bad("a lone surrogate", `{"all":true,"\ud800":1}`),
			tc{name: route + ": query parameter", method: "POST", path: p + "?all=true", body: `{"all":true}`, status: 400, code: "invalid_request"},
			tc{name: route + ": group name with a control character", method: "POST", path: "/groups/g%00/parked/" + route, body: `{"all":true}`, status: 400, code: "invalid_request"},
			tc{name: route + ": too many events", method: "POST", path: p, body: events(many...), status: 413, code: "too_large"},
			tc{name: route + ": body too large", method: "POST", path: p, body: `{"all":true,"x":"` + strings.Repeat("x", 300<<10) + `"}`, status: 413, code: "too_large"},
			tc{name: route + ": no Content-Type", method: "POST", path: p, body: `{"all":true}`, header: []string{"Content-Type", ""}, status: 415, code: "unsupported_media_type"},
			tc{name: route + ": text/plain", method: "POST", path: p, body: `{"all":true}`, header: []string{"Content-Type", "text/plain"}, status: 415, code: "unsupported_media_type"},
			tc{name: route + ": unknown group", method: "POST", path: "/groups/nope/parked/" + route, body: `{"all":true}`, status: 404, code: "group_not_found"},
			tc{name: route + ": GET", method: "GET", path: p, status: 405, code: "method_not_allowed"},
		)
	}
	cases = append(cases,
		get("groups with a query", "/groups?limit=1"),
		get("group with a query", "/groups/g?x=1"),
		get("group name with a control character", "/groups/a%00b"),
		get("group name not UTF-8", "/groups/%FF"),
		get("group name too long", "/groups/"+strings.Repeat("g", 129)),
		get("parked limit zero", "/groups/g/parked?limit=0"),
		get("parked limit over 1000", "/groups/g/parked?limit=1001"),
		get("parked limit not a number", "/groups/g/parked?limit=all"),
		get("parked unknown parameter", "/groups/g/parked?after=1"),
		get("parked repeated limit", "/groups/g/parked?limit=1&limit=2"),
		get("wait without stream", "/groups/g/wait?version=1"),
		get("wait without version", "/groups/g/wait?stream=s"),
		get("wait version zero", "/groups/g/wait?stream=s&version=0"),
		get("wait version negative", "/groups/g/wait?stream=s&version=-1"),
		get("wait version not a number", "/groups/g/wait?stream=s&version=last"),
		get("wait version of the future", "/groups/g/wait?stream=s&version=2&timeout=5s"),
		get("wait stream name empty", "/groups/g/wait?stream=&version=1"),
		get("wait stream name with a control character", "/groups/g/wait?stream=a%00&version=1"),
		get("wait timeout zero", "/groups/g/wait?stream=s&version=1&timeout=0s"),
		get("wait timeout negative", "/groups/g/wait?stream=s&version=1&timeout=-1s"),
		get("wait timeout over 60s", "/groups/g/wait?stream=s&version=1&timeout=61s"),
		get("wait timeout without a unit", "/groups/g/wait?stream=s&version=1&timeout=5"),
		get("wait timeout not a duration", "/groups/g/wait?stream=s&version=1&timeout=soon"),
		get("wait unknown parameter", "/groups/g/wait?stream=s&version=1&shard=0"),
		get("wait repeated parameter", "/groups/g/wait?stream=s&version=1&version=1"),
		tc{name: "unknown group", method: "GET", path: "/groups/nope", status: 404, code: "group_not_found"},
		tc{name: "parked of an unknown group", method: "GET", path: "/groups/nope/parked", status: 404, code: "group_not_found"},
		tc{name: "wait of an unknown group", method: "GET", path: "/groups/nope/wait?stream=s&version=1", status: 404, code: "group_not_found"},
		tc{name: "wait for an unknown stream", method: "GET", path: "/groups/g/wait?stream=never&version=1", status: 404, code: "stream_not_found"},
		tc{name: "empty group name", method: "GET", path: "/groups//parked", status: 404, code: "not_found"},
		tc{name: "DELETE a group", method: "DELETE", path: "/groups/g", status: 405, code: "method_not_allowed"},
		tc{name: "POST /groups", method: "POST", path: "/groups", body: `{}`, status: 405, code: "method_not_allowed"},
		tc{name: "POST a wait", method: "POST", path: "/groups/g/wait", body: `{}`, status: 405, code: "method_not_allowed"},
	)
	before := h.store.RequestCounts()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body any
			if c.body != "" || c.method == "POST" {
				body = c.body
			}
			r := h.do(c.method, c.path, body, c.header...)
			if r.status >= 500 {
				t.Fatalf("bad input answered %d: %s", r.status, r.body)
			}
			if r.status != c.status {
				t.Fatalf("status %d, want %d: %.300s", r.status, c.status, r.body)
			}
			if code := r.errorCode(t); code != c.code {
				t.Fatalf("code %s, want %s: %.300s", code, c.code, r.body)
			}
			if c.status == http.StatusMethodNotAllowed {
				want := "GET, HEAD"
				if strings.Contains(c.path, "/parked/") {
					want = "POST"
				}
				if got := r.header.Get("Allow"); got != want {
					t.Fatalf("Allow %q, want %q", got, want)
				}
			}
		})
	}
	spent := h.store.RequestCounts().Sub(before)
	if spent.Writes != 0 || spent.Batches != 0 || spent.Deletes != 0 {
		t.Fatalf("bad requests wrote: %+v", spent)
	}
	if p := h.parked("g"); len(p) != 1 || p[0].Replay || p[0].Position != pos {
		t.Fatalf("parked after the bad requests: %+v", p)
	}
}

// With a token, the group routes need it like every other.
func TestConsumerGroupRoutesNeedTheToken(t *testing.T) {
	h := newHarness(t, withToken("a-token-of-16-chars"))
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/groups", ""}, {"GET", "/groups/g", ""}, {"GET", "/groups/g/parked", ""},
		{"POST", "/groups/g/parked/replay", `{"all":true}`}, {"POST", "/groups/g/parked/discard", `{"all":true}`},
		{"GET", "/groups/g/wait?stream=s&version=1", ""},
	} {
		var body any
		if c.body != "" {
			body = c.body
		}
		r := h.do(c.method, c.path, body, "Authorization", "")
		mustStatus(t, r, http.StatusUnauthorized)
		if code := r.errorCode(t); code != "unauthorized" {
			t.Errorf("%s %s: %s", c.method, c.path, r.body)
		}
	}
	mustStatus(t, h.do("GET", "/groups", nil), http.StatusOK)
}

// /healthz lists each feed shard's dispatcher in this process when the server has them
// (Options.ShardDispatchers): its lease, the feed head it knows and its pending work.
func TestHealthzReportsShards(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, withStoreOptions(&estuite.Options{FeedShards: 2}))
	group := estuite.NewDispatchGroup(h.store, &estuite.DispatcherOptions{PollInterval: 5 * time.Millisecond, ScavengeInterval: -1})
	srv, err := server.New(server.Options{Store: h.store, ShardDispatchers: group.Dispatchers()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	type health struct {
		Status string `json:"status"`
		Shards []struct {
			Shard                int     `json:"shard"`
			Running              bool    `json:"running"`
			LeaseHeld            bool    `json:"leaseHeld"`
			FeedHead             int64   `json:"feedHead"`
			PendingStreams       int     `json:"pendingStreams"`
			OldestPendingSeconds float64 `json:"oldestPendingSeconds"`
		} `json:"shards"`
	}
	read := func() health {
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "http://203.0.113.9/healthz", nil)) // any Host
		r := response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
		mustStatus(t, r, http.StatusOK)
		var v health
		r.decode(t, &v)
		return v
	}
	if v := read(); v.Status != "ok" || len(v.Shards) != 2 || v.Shards[0].Running || v.Shards[1].LeaseHeld || v.Shards[1].Shard != 1 {
		t.Fatalf("healthz before the dispatchers start: %+v", v)
	}
	if err := group.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer group.Stop()
	for i := range 6 {
		h.appendEvents(fmt.Sprintf("h-%d", i), "T", 1)
	}
	eventually(t, "healthz shows both leases held and the 6 events in the heads", func() bool {
		v := read()
		return v.Status == "ok" && len(v.Shards) == 2 && v.Shards[0].Running && v.Shards[1].Running &&
			v.Shards[0].LeaseHeld && v.Shards[1].LeaseHeld && v.Shards[0].FeedHead+v.Shards[1].FeedHead == 6 &&
			v.Shards[0].PendingStreams >= 0 && v.Shards[0].OldestPendingSeconds >= 0
	})
	// Without ShardDispatchers there is no shards array, and no feed head.
	r := h.do("GET", "/healthz", nil)
	mustStatus(t, r, http.StatusOK)
	if compact(t, r.body) != `{"status":"ok","feedShards":2,"feedHead":null,"leaseHeld":false,"dispatcher":{"state":"none","pendingStreams":0,"oldestPendingSeconds":0}}` {
		t.Fatalf("healthz without shard dispatchers: %s", r.body)
	}
}
