package server_test

import (
	"strings"
	"sync"
	"testing"
)

// TestReview2SlashHintOnAMethodNotAllowed: a request to an existing route with a method the route
// does not take (POST /streams/order-42/events, DELETE /streams/order-42/metadata, POST
// /groups/g/parked) answers 405 — right — with the %2F hint telling the client that the stream
// is "order-42/events": no name was split, the hint is wrong.
func TestReview2SlashHintOnAMethodNotAllowed(t *testing.T) {
	h := newHarness(t)
	h.appendEvents("order-42", "T", 1)
	for _, c := range []struct{ method, path string }{
		{"POST", "/streams/order-42/events"},
		{"DELETE", "/streams/order-42/metadata"},
		{"POST", "/groups/g/parked"},
	} {
		r := h.do(c.method, c.path, "{}")
		if r.status != 405 || strings.Contains(string(r.body), "%2F") {
			t.Errorf("%s %s: %d %s", c.method, c.path, r.status, r.body)
		}
	}
}

// TestReview2VerifyConcurrentPosts: many POSTs at once start one job; the others are told its ID.
func TestReview2VerifyConcurrentPosts(t *testing.T) {
	h := newHarness(t)
	h.appendEvents("a", "T", 50)
	h.dispatch()
	var wg sync.WaitGroup
	var mu sync.Mutex
	started, conflicts := map[string]bool{}, map[string]bool{}
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := h.do("POST", "/admin/verify", "{}")
			mu.Lock()
			defer mu.Unlock()
			switch r.status {
			case 202:
				started[r.json(t)["id"].(string)] = true
			case 409:
				conflicts[r.json(t)["id"].(string)] = true
			default:
				t.Errorf("POST: %d %s", r.status, r.body)
			}
		}()
	}
	wg.Wait()
	for id := range conflicts {
		if !started[id] {
			t.Errorf("a 409 names %s, which no POST started (started: %v)", id, started)
		}
	}
	for id := range started {
		if j := h.waitVerify(id); j.State != "done" || j.Progress.Fraction != 1 {
			t.Errorf("job %s: %+v", id, j)
		}
	}
	// Close while POSTs run: no job is left running, later POSTs are 503.
	for range 8 {
		wg.Add(1)
		go func() { defer wg.Done(); h.do("POST", "/admin/verify", "{}") }()
	}
	h.srv.Close()
	wg.Wait()
	r := h.do("GET", "/admin/verify", nil)
	if !strings.Contains(string(r.body), `"state":"done"`) && !strings.Contains(string(r.body), `"state":"canceled"`) {
		t.Errorf("after Close, the latest job: %s", r.body)
	}
	if r := h.do("POST", "/admin/verify", "{}"); r.status != 503 {
		t.Errorf("a POST after Close: %d %s", r.status, r.body)
	}
}
