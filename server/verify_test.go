package server_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/estuite/estuite/table/mem"
)

// verifyJob is the body of GET /admin/verify/{id}.
type verifyJob struct {
	ID       string  `json:"id"`
	State    string  `json:"state"`
	Started  string  `json:"started"`
	Finished *string `json:"finished"`
	Progress struct {
		Phase         string  `json:"phase"`
		Rows          int64   `json:"rows"`
		FeedPositions int64   `json:"feedPositions"`
		FeedHead      int64   `json:"feedHead"`
		Fraction      float64 `json:"fraction"`
	} `json:"progress"`
	Report *struct {
		OK          bool              `json:"ok"`
		Events      int64             `json:"events"`
		Unparseable []json.RawMessage `json:"unparseable"`
		Missing     []json.RawMessage `json:"missing"`
		Counts      map[string]int    `json:"counts"`
		Truncated   bool              `json:"truncated"`
	} `json:"report"`
	Error *string `json:"error"`
}

// waitVerify polls a verification until it has ended.
func (h *harness) waitVerify(id string) verifyJob {
	h.t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		r := h.do("GET", "/admin/verify/"+id, nil)
		mustStatus(h.t, r, 200)
		var j verifyJob
		r.decode(h.t, &j)
		if j.State != "running" {
			return j
		}
		if j.Finished != nil || j.Report != nil || j.Progress.Fraction < 0 || j.Progress.Fraction >= 1 {
			h.t.Fatalf("a running job: %s", r.body)
		}
	}
	h.t.Fatalf("verification %s did not end", id)
	return verifyJob{}
}

func TestVerifyEndpoints(t *testing.T) {
	h := newHarness(t)
	mustStatus(t, h.do("GET", "/admin/verify", nil), 404)
	h.appendEvents("a", "T", 5)
	h.appendEvents("b", "T", 3)
	h.dispatch()

	r := h.do("POST", "/admin/verify", nil, "Content-Type", "")
	mustStatus(t, r, 202)
	var started struct{ ID, State string }
	r.decode(t, &started)
	if started.State != "running" || r.header.Get("Location") != "/admin/verify/"+started.ID {
		t.Fatalf("POST /admin/verify: %s (Location %q)", r.body, r.header.Get("Location"))
	}
	j := h.waitVerify(started.ID)
	if j.State != "done" || j.Report == nil || !j.Report.OK || j.Report.Events != 8 || j.Finished == nil || j.Error != nil ||
		j.Progress.Fraction != 1 || j.Progress.FeedHead != 8 || j.Report.Truncated || j.Report.Missing == nil {
		t.Fatalf("a finished job: %+v", j)
	}
	if _, err := time.Parse(time.RFC3339, j.Started); err != nil {
		t.Fatalf("started %q: %v", j.Started, err)
	}

	// A planted fault is found; the body may be {} too.
	streams, err := h.mem.Table("estuitestreams")
	if err != nil {
		t.Fatal(err)
	}
	streams.Remove("a", "E0000000000000000002")
	r = h.do("POST", "/admin/verify", " { } ")
	mustStatus(t, r, 202)
	r.decode(t, &started)
	j = h.waitVerify(started.ID)
	if j.State != "done" || j.Report.OK || len(j.Report.Unparseable) != 1 || j.Report.Counts["unparseable"] != 1 {
		t.Fatalf("a job that found a fault: %+v", j.Report)
	}
	latest := h.do("GET", "/admin/verify", nil)
	mustStatus(t, latest, 200)
	if !strings.Contains(string(latest.body), started.ID) {
		t.Fatalf("GET /admin/verify: %s, want job %s", latest.body, started.ID)
	}
	mustStatus(t, h.do("DELETE", "/admin/verify/"+started.ID, nil), 204) // finished: nothing to do
	if j := h.waitVerify(started.ID); j.State != "done" {
		t.Fatalf("a finished job after DELETE: %s", j.State)
	}

	// One at a time: hold the next one on its first storage read.
	gate := make(chan struct{})
	h.mem.SetFaults(func(c mem.Call) mem.Fault {
		if c.Method == mem.MethodScan || c.Method == mem.MethodQuery {
			<-gate
		}
		return mem.NoFault
	})
	r = h.do("POST", "/admin/verify", "{}")
	mustStatus(t, r, 202)
	r.decode(t, &started)
	r = h.do("POST", "/admin/verify", nil)
	mustStatus(t, r, 409)
	if r.errorCode(t) != "verify_running" || r.json(t)["id"] != started.ID {
		t.Fatalf("a second POST: %s", r.body)
	}
	done := make(chan response, 1)
	go func() { done <- h.do("DELETE", "/admin/verify/"+started.ID, nil) }()
	time.Sleep(10 * time.Millisecond)
	close(gate)
	mustStatus(t, <-done, 204)
	h.mem.SetFaults(nil)
	if j := h.waitVerify(started.ID); j.State != "canceled" || j.Report != nil || j.Finished == nil {
		t.Fatalf("a canceled job: %+v", j)
	}
}

// TestVerifyEndpointsRefuseBadInput: every bad request is a 4xx with a JSON error body, and none
// starts a verification.
func TestVerifyEndpointsRefuseBadInput(t *testing.T) {
	h := newHarness(t)
	cases := []struct {
		name, method, path, body string
		header                   []string
		status                   int
		code                     string
	}{
		{"a body with members", "POST", "/admin/verify", `{"repair": true}`, nil, 400, "invalid_request"},
		{"a body that is not an object", "POST", "/admin/verify", `[]`, nil, 400, "invalid_request"},
		{"a body that is not JSON", "POST", "/admin/verify", `verify`, nil, 400, "invalid_request"},
		{"a body without a JSON Content-Type", "POST", "/admin/verify", `{}`, []string{"Content-Type", "text/plain"}, 415, "unsupported_media_type"},
		{"a body too large", "POST", "/admin/verify", "{" + strings.Repeat(" ", 2000) + "}", nil, 413, "too_large"},
		{"a query string", "POST", "/admin/verify?repair=true", "", nil, 400, "invalid_request"},
		{"a malformed ID", "GET", "/admin/verify/not-an-id", "", nil, 400, "invalid_request"},
		{"an uppercase ID", "GET", "/admin/verify/6BA7B810-9DAD-11D1-80B4-00C04FD430C8", "", nil, 400, "invalid_request"},
		{"an unknown ID", "GET", "/admin/verify/6ba7b810-9dad-11d1-80b4-00c04fd430c8", "", nil, 404, "verify_not_found"},
		{"canceling an unknown ID", "DELETE", "/admin/verify/6ba7b810-9dad-11d1-80b4-00c04fd430c8", "", nil, 404, "verify_not_found"},
		{"a query on a job", "GET", "/admin/verify/6ba7b810-9dad-11d1-80b4-00c04fd430c8?x=1", "", nil, 400, "invalid_request"},
		{"PUT", "PUT", "/admin/verify", "{}", nil, 405, "method_not_allowed"},
		{"POST on a job", "POST", "/admin/verify/6ba7b810-9dad-11d1-80b4-00c04fd430c8", "{}", nil, 405, "method_not_allowed"},
	}
	for _, c := range cases {
		var body any
		if c.body != "" {
			body = c.body
		}
		r := h.do(c.method, c.path, body, c.header...)
		if r.status != c.status || r.errorCode(t) != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, r.status, r.body, c.status, c.code)
		}
	}
	mustStatus(t, h.do("GET", "/admin/verify", nil), 404) // none was started
}

// TestVerifyIsCanceledByClose: Server.Close cancels a running verification and waits for it.
func TestVerifyIsCanceledByClose(t *testing.T) {
	h := newHarness(t)
	h.appendEvents("a", "T", 2)
	gate := make(chan struct{})
	h.mem.SetFaults(func(c mem.Call) mem.Fault {
		if c.Method == mem.MethodScan || c.Method == mem.MethodQuery {
			select {
			case <-gate:
			case <-time.After(100 * time.Millisecond):
			}
		}
		return mem.NoFault
	})
	r := h.do("POST", "/admin/verify", nil)
	mustStatus(t, r, 202)
	var started struct{ ID string }
	r.decode(t, &started)
	h.srv.Close()
	close(gate)
	h.mem.SetFaults(nil)
	j := h.waitVerify(started.ID)
	if j.State != "canceled" {
		t.Fatalf("after Close: %+v", j)
	}
	r = h.do("POST", "/admin/verify", nil)
	if r.status != 503 || r.errorCode(t) != "unavailable" {
		t.Fatalf("POST after Close: %d %s", r.status, r.body)
	}
}

// TestSlashInANameGetsAHint: a name with an unencoded "/" hits no route; the answer says to write
// it as %2F.
func TestSlashInANameGetsAHint(t *testing.T) {
	h := newHarness(t)
	cases := []struct {
		method, path string
		status       int
		want         string
	}{
		{"GET", "/streams/a/b/events", 404, "the stream a/b is /streams/a%2Fb"},
		{"POST", "/streams/tenant/1", 404, "the stream tenant/1 is /streams/tenant%2F1"},
		{"GET", "/streams/x%20y/z", 404, "the stream x y/z is /streams/x%20y%2Fz"},
		{"GET", "/subjects/u/7", 404, "the subject u/7 is /subjects/u%2F7"},
		{"GET", "/groups/a/b/parked", 404, "the group a/b is /groups/a%2Fb"},
	}
	for _, c := range cases {
		r := h.do(c.method, c.path, nil)
		code := r.errorCode(t)
		msg, _ := r.json(t)["message"].(string)
		if r.status != c.status || !strings.Contains(msg, c.want) || !strings.Contains(msg, "%2F") {
			t.Errorf("%s %s: %d %s %q, want %d and %q", c.method, c.path, r.status, code, msg, c.status, c.want)
		}
	}
	// No hint where no name was split, nor on a 405: the path is a route (DELETE
	// /streams/orders/events is the events of the stream orders, which take GET).
	for _, c := range []struct{ method, path string }{
		{"PUT", "/nowhere"}, {"PUT", "/streams/a"}, {"PUT", "/feed/x"}, {"DELETE", "/streams/orders/events"},
	} {
		r := h.do(c.method, c.path, nil)
		if msg, _ := r.json(t)["message"].(string); strings.Contains(msg, "%2F") {
			t.Errorf("%s %s: %q has a hint", c.method, c.path, msg)
		}
	}
	// The hint's advice works.
	h.appendEvents("a/b", "T", 1)
	mustStatus(t, h.do("GET", "/streams/a%2Fb/events", nil), 200)
}
