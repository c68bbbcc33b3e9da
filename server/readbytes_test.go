package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/server"
	"github.com/estuite/estuite/table/mem"
)

// TestFeedPagesAreCutByMaxResponseBytes checks the byte budget of GET /feed with a budget
// smaller than any event: every page holds exactly one event, next is its position, and
// clients paging by next read every event once, filtered or not.
func TestFeedPagesAreCutByMaxResponseBytes(t *testing.T) {
	h := newHarness(t, withServerOptions(func(o *server.Options) { o.MaxResponseBytes = 1 }))
	h.appendEvents("order-1", "OrderPlaced", 3)
	h.appendEvents("user-1", "UserRegistered", 2)
	h.appendEvents("order-2", "OrderPlaced", 2)
	h.dispatch()
	// The dispatcher orders streams as it finds them: take the expected positions from the feed.
	all, err := h.store.ReadFeed(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]int64{}
	for _, ev := range all.Events {
		want["limit=1000"] = append(want["limit=1000"], ev.Position)
		if strings.HasPrefix(ev.Stream, "order-") {
			want["prefix=order-"] = append(want["prefix=order-"], ev.Position)
		}
		if ev.Type == "UserRegistered" {
			want["type=UserRegistered"] = append(want["type=UserRegistered"], ev.Position)
		}
	}
	for _, query := range []string{"limit=1000", "prefix=order-", "type=UserRegistered"} {
		var got []int64
		after := int64(0)
		for pages := 0; ; pages++ {
			if pages > 10 {
				t.Fatalf("%s: the feed does not end", query)
			}
			r := h.do("GET", fmt.Sprintf("/feed?after=%d&%s", after, query), nil)
			mustStatus(t, r, http.StatusOK)
			var page feedResult
			r.decode(t, &page)
			if page.Head != 7 || len(page.Events) > 1 {
				t.Fatalf("%s: head %d, %d events in a page", query, page.Head, len(page.Events))
			}
			if page.Next == after {
				break
			}
			if len(page.Events) == 1 {
				got = append(got, page.Events[0].Position)
				if page.Next != page.Events[0].Position {
					t.Fatalf("%s: next %d after event %d", query, page.Next, page.Events[0].Position)
				}
			}
			after = page.Next
		}
		if len(got) == 0 || fmt.Sprint(got) != fmt.Sprint(want[query]) {
			t.Errorf("%s: read %v, want %v", query, got, want[query])
		}
	}
}

// TestStreamReadsAreNotCutByMaxResponseBytes checks that a stream read returns limit events
// whatever the byte budget: its clients stop at a page of fewer than limit events, so a read is
// never cut short; the budget only sizes its storage requests.
func TestStreamReadsAreNotCutByMaxResponseBytes(t *testing.T) {
	h := newHarness(t, withServerOptions(func(o *server.Options) { o.MaxResponseBytes = 1 }))
	h.appendEvents("s", "E", 10)
	for _, c := range []struct {
		query string
		want  []int64
	}{
		{"?limit=4", []int64{1, 2, 3, 4}},
		{"?from=5&limit=100", []int64{5, 6, 7, 8, 9, 10}},
		{"?direction=backward&limit=3", []int64{10, 9, 8}},
		{"?direction=backward", []int64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}},
	} {
		r := h.do("GET", "/streams/s/events"+c.query, nil)
		mustStatus(t, r, http.StatusOK)
		var read readResult
		r.decode(t, &read)
		var got []int64
		for _, ev := range read.Events {
			got = append(got, ev.Version)
		}
		if read.Stream != "s" || read.Version != 10 || fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: %s %d %v, want s 10 %v", c.query, read.Stream, read.Version, got, c.want)
		}
	}
}

// TestHeadReadsNoEvents checks that HEAD on the read routes answers GET's status and headers
// without reading events: no storage query.
func TestHeadReadsNoEvents(t *testing.T) {
	h := newHarness(t)
	h.appendEvents("s", "E", 3)
	h.dispatch()
	for _, c := range []struct {
		path   string
		status int
	}{
		{"/feed?limit=1000", http.StatusOK},
		{"/streams/s/events?limit=1000", http.StatusOK},
		{"/streams/missing/events", http.StatusNotFound},
		{"/feed?limit=0", http.StatusBadRequest},
	} {
		before := h.store.RequestCounts()
		r := h.do("HEAD", c.path, nil)
		if d := h.store.RequestCounts().Sub(before); d.QueryPages != 0 {
			t.Errorf("HEAD %s: %d query pages, want none", c.path, d.QueryPages)
		}
		if r.status != c.status || len(r.body) != 0 || r.header.Get("Content-Type") != "application/json" {
			t.Errorf("HEAD %s: %d, %q, %d bytes; want %d, application/json, none", c.path, r.status, r.header.Get("Content-Type"), len(r.body), c.status)
		}
	}
}

// TestStorageFailureMidStreamCutsTheResponseShort checks what a client of a stream read sees
// when storage fails: before anything was sent, an ordinary 503; after the first part of the
// body was sent, a body cut short (never a complete-looking JSON document missing events).
func TestStorageFailureMidStreamCutsTheResponseShort(t *testing.T) {
	h := newHarness(t,
		withStoreOptions(&estuite.Options{Retry: estuite.RetryPolicy{MaxAttempts: 1}}),
		withServerOptions(func(o *server.Options) { o.MaxResponseBytes = 100_000 }))
	data := `"` + strings.Repeat("x", 30_000) + `"`
	for range 3 {
		var evs []map[string]any
		for range 4 {
			evs = append(evs, map[string]any{"type": "E", "data": json.RawMessage(data)})
		}
		mustStatus(t, h.do("POST", "/streams/s", map[string]any{"events": evs}), http.StatusCreated)
	}
	// Storage fails from the query numbered failFrom of the stream's events on.
	var queries, failFrom atomic.Int64
	h.mem.SetFaults(func(c mem.Call) mem.Fault {
		if c.Method == mem.MethodQuery && strings.HasSuffix(c.Table, "streams") && queries.Add(1) >= failFrom.Load() {
			return mem.FailBefore
		}
		return mem.NoFault
	})
	get := func() (int, []byte, error) {
		res, err := http.Get(h.ts.URL + "/streams/s/events")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		return res.StatusCode, body, err
	}

	queries.Store(0)
	failFrom.Store(1) // the first page fails: nothing is sent yet
	status, body, err := get()
	if err != nil || status != http.StatusServiceUnavailable || !strings.Contains(string(body), `"unavailable"`) {
		t.Errorf("failure on the first page: %d, %v, %.100s; want 503 unavailable", status, err, body)
	}

	queries.Store(0)
	failFrom.Store(3) // the third page fails: the first two (over 64 KiB) are sent
	status, body, err = get()
	if status != http.StatusOK || (err == nil && json.Valid(body)) {
		t.Errorf("failure mid-stream: %d, %d bytes, %v; want 200 and a body cut short", status, len(body), err)
	}
	t.Logf("failure mid-stream: %d bytes, then %v", len(body), err)

	h.mem.SetFaults(nil)
	status, body, _ = get()
	var read readResult
	if err := json.Unmarshal(body, &read); err != nil || status != http.StatusOK || len(read.Events) != 12 {
		t.Errorf("without faults: %d, %d events, %v", status, len(read.Events), err)
	}
}
