package server_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestAPIRoundTrip appends JSON, binary and empty data with metadata and event IDs, then reads
// everything back in both directions, on every backend.
func TestAPIRoundTrip(t *testing.T) {
	for _, bc := range backends {
		t.Run(bc.name, func(t *testing.T) {
			h := newHarnessOn(t, bc)
			id := uuid.New()
			binary := []byte{0, 1, 2, 0xff, 0xfe, '\n', '"'}
			jsonData := "{\n  \"total\": \"12.50\",\n  \"html\": \"<b>&amp;</b>\",\n  \"n\": 1.50e3,\n  \"u\": \"\\u00e9\"\n}"
			body := fmt.Sprintf(`{"expectedVersion": "no_stream", "commitId": "place-1", "events": [
				{"id": %q, "type": "OrderPlaced", "data": %s, "metadata": {"correlationId": "c-1"}},
				{"type": "Attachment", "dataBase64": %q},
				{"type": "Empty"},
				{"type": "Scalar", "data": "just a string"},
				{"type": "Null", "data": null},
				{"type": "EmptyBinary", "dataBase64": ""}
			]}`, id, jsonData, base64.StdEncoding.EncodeToString(binary))
			before := time.Now().UTC().Add(-time.Second)
			r := h.do("POST", "/streams/order-1", body)
			mustStatus(t, r, http.StatusCreated)
			var res appendResult
			r.decode(t, &res)
			if want := (appendResult{Stream: "order-1", FirstVersion: 1, LastVersion: 6, CommitID: "place-1"}); res != want {
				t.Fatalf("append result %+v, want %+v", res, want)
			}

			r = h.do("GET", "/streams/order-1", nil)
			mustStatus(t, r, http.StatusOK)
			if got := compact(t, r.body); got != `{"stream":"order-1","version":6}` {
				t.Fatalf("stream info %s", got)
			}

			r = h.do("GET", "/streams/order-1/events", nil)
			mustStatus(t, r, http.StatusOK)
			var read readResult
			r.decode(t, &read)
			if read.Stream != "order-1" || read.Version != 6 || len(read.Events) != 6 {
				t.Fatalf("read %+v", read)
			}
			evs := read.Events
			for i, ev := range evs {
				if ev.Stream != "order-1" || ev.Version != int64(i+1) || ev.CommitID != "place-1" || ev.Position != 0 {
					t.Errorf("event %d: %+v", i, ev)
				}
				if _, err := uuid.Parse(ev.ID); err != nil {
					t.Errorf("event %d: id %q", i, ev.ID)
				}
				at, err := time.Parse(time.RFC3339Nano, ev.RecordedAt)
				if err != nil || at.Before(before) || !strings.HasSuffix(ev.RecordedAt, "Z") || !strings.Contains(ev.RecordedAt, ".") {
					t.Errorf("event %d: recordedAt %q (%v)", i, ev.RecordedAt, err)
				}
			}
			if evs[0].ID != id.String() || evs[0].Type != "OrderPlaced" || compact(t, evs[0].Metadata) != `{"correlationId":"c-1"}` {
				t.Errorf("event 1: %+v", evs[0])
			}
			// JSON data reads back as the same JSON text, modulo whitespace; HTML is not escaped.
			if got, want := string(evs[0].Data), compact(t, []byte(jsonData)); got != want {
				t.Errorf("JSON data read back as %s, want %s", got, want)
			}
			if evs[1].DataBase64 == nil || evs[1].Data != nil {
				t.Fatalf("binary event: %+v", evs[1])
			}
			if got, _ := base64.StdEncoding.DecodeString(*evs[1].DataBase64); !bytes.Equal(got, binary) {
				t.Errorf("binary data read back as %x, want %x", got, binary)
			}
			if evs[2].Data != nil || evs[2].DataBase64 != nil || evs[2].Metadata != nil {
				t.Errorf("empty event: %+v", evs[2])
			}
			if !bytes.Contains(r.body, []byte(`"type":"Empty","commitId"`)) {
				t.Errorf("an event without data or metadata should have neither member: %s", r.body)
			}
			if string(evs[3].Data) != `"just a string"` || string(evs[4].Data) != "null" {
				t.Errorf("scalar data: %s, %s", evs[3].Data, evs[4].Data)
			}
			if evs[5].DataBase64 == nil || *evs[5].DataBase64 != "" {
				t.Errorf("empty binary data: %+v", evs[5])
			}

			// Backward, from, limit.
			r = h.do("GET", "/streams/order-1/events?direction=backward&limit=2", nil)
			mustStatus(t, r, http.StatusOK)
			read = readResult{}
			r.decode(t, &read)
			if got := versions(read.Events); got != "6,5" {
				t.Errorf("backward limit 2: %s", got)
			}
			r = h.do("GET", "/streams/order-1/events?direction=backward&from=3", nil)
			read = readResult{}
			r.decode(t, &read)
			if got := versions(read.Events); got != "3,2,1" {
				t.Errorf("backward from 3: %s", got)
			}
			r = h.do("GET", "/streams/order-1/events?from=5&limit=10&direction=forward", nil)
			read = readResult{}
			r.decode(t, &read)
			if got := versions(read.Events); got != "5,6" {
				t.Errorf("forward from 5: %s", got)
			}
			r = h.do("GET", "/streams/order-1/events?from=7", nil)
			mustStatus(t, r, http.StatusOK)
			if !bytes.Contains(r.body, []byte(`"events":[]`)) {
				t.Errorf("a read past the end should have an empty list: %s", r.body)
			}

			// Expected versions.
			r = h.do("POST", "/streams/order-1", `{"expectedVersion": 6, "events": [{"type": "Paid"}]}`)
			mustStatus(t, r, http.StatusCreated)
			r = h.do("POST", "/streams/order-1", `{"expectedVersion": "exists", "events": [{"type": "Shipped"}]}`)
			mustStatus(t, r, http.StatusCreated)
			res = appendResult{}
			r.decode(t, &res)
			if res.FirstVersion != 8 || res.LastVersion != 8 || res.Duplicate {
				t.Errorf("append 8: %+v", res)
			}
			if _, err := uuid.Parse(res.CommitID); err != nil {
				t.Errorf("generated commit ID %q is not a UUID", res.CommitID)
			}

			// Missing streams.
			for _, p := range []string{"/streams/nope", "/streams/nope/events"} {
				r = h.do("GET", p, nil)
				mustStatus(t, r, http.StatusNotFound)
				if code := r.errorCode(t); code != "stream_not_found" {
					t.Errorf("%s: code %s", p, code)
				}
			}
		})
	}
}

func versions(evs []wireEvent) string {
	var s []string
	for _, e := range evs {
		s = append(s, fmt.Sprint(e.Version))
	}
	return strings.Join(s, ",")
}

// TestStreamNamesRoundTrip checks that names with characters that are special in URLs travel as
// one percent-encoded path segment, decoded exactly once.
func TestStreamNamesRoundTrip(t *testing.T) {
	h := newHarness(t)
	names := []string{
		"a/b", "a/../b", "/leading", "trailing/", "what?", "frag#ment", "100%", "%2F", "%25", "with space",
		"été-日本語-🙂", "a+b", "semi;colon", "quote'd", `back\slash`, ".", "..", "...", "=&", "~tilde",
	}
	for i, name := range names {
		typ := fmt.Sprintf("T%d", i)
		r := h.do("POST", streamPath(name), fmt.Sprintf(`{"events": [{"type": %q}]}`, typ))
		mustStatus(t, r, http.StatusCreated)
		var res appendResult
		r.decode(t, &res)
		if res.Stream != name {
			t.Errorf("%q: append answered stream %q", name, res.Stream)
		}
	}
	for i, name := range names {
		r := h.do("GET", streamPath(name), nil)
		mustStatus(t, r, http.StatusOK)
		var info struct {
			Stream  string
			Version int64
		}
		r.decode(t, &info)
		if info.Stream != name || info.Version != 1 {
			t.Errorf("%q: stream info %+v", name, info)
		}
		r = h.do("GET", streamPath(name, "/events"), nil)
		mustStatus(t, r, http.StatusOK)
		var read readResult
		r.decode(t, &read)
		if len(read.Events) != 1 || read.Events[0].Stream != name || read.Events[0].Type != fmt.Sprintf("T%d", i) {
			t.Errorf("%q: read %+v", name, read)
		}
	}
	// Decoded once: "%252F" is the name "%2F", not "/".
	if v, err := h.store.Version(t.Context(), "%2F"); err != nil || v != 1 {
		t.Errorf(`stream "%%2F": version %d, %v`, v, err)
	}
	// Raw "." and ".." segments cannot name a stream: the client must encode them.
	r := h.do("GET", "/streams/..", nil)
	mustStatus(t, r, http.StatusNotFound)
	if code := r.errorCode(t); code != "not_found" {
		t.Errorf("raw ..: %s", code)
	}
}

// TestRetriedCommitAnswers200 checks that a commit ID already committed answers 200 with the
// original versions, and the same commit ID with other events a commit_conflict.
func TestRetriedCommitAnswers200(t *testing.T) {
	h := newHarness(t)
	body := `{"commitId": "c-1", "events": [{"type": "A", "data": {"x": 1}}, {"type": "B"}]}`
	r := h.do("POST", "/streams/s", body)
	mustStatus(t, r, http.StatusCreated)
	h.appendEvents("s", "Other", 3)
	r = h.do("POST", "/streams/s", body)
	mustStatus(t, r, http.StatusOK)
	var res appendResult
	r.decode(t, &res)
	if want := (appendResult{Stream: "s", FirstVersion: 1, LastVersion: 2, CommitID: "c-1", Duplicate: true}); res != want {
		t.Fatalf("retry answered %+v, want %+v", res, want)
	}
	r = h.do("POST", "/streams/s", `{"commitId": "c-1", "events": [{"type": "A", "data": {"x": 2}}]}`)
	mustStatus(t, r, http.StatusConflict)
	m := r.json(t)
	if m["error"] != "commit_conflict" || m["commitId"] != "c-1" {
		t.Errorf("commit conflict: %s", r.body)
	}
	if v, _ := h.store.Version(t.Context(), "s"); v != 5 {
		t.Errorf("version %d, want 5", v)
	}
}

// TestConflicts checks the 409 answers and what they carry.
func TestConflicts(t *testing.T) {
	h := newHarness(t)
	id := uuid.New()
	r := h.do("POST", "/streams/s", fmt.Sprintf(`{"events": [{"id": %q, "type": "A"}]}`, id))
	mustStatus(t, r, http.StatusCreated)

	r = h.do("POST", "/streams/s", `{"expectedVersion": 0, "events": [{"type": "A"}]}`)
	mustStatus(t, r, http.StatusConflict)
	m := r.json(t)
	if m["error"] != "wrong_expected_version" || m["actualVersion"] != json.Number("1") {
		t.Errorf("wrong expected version: %s", r.body)
	}
	r = h.do("POST", "/streams/new", `{"expectedVersion": "exists", "events": [{"type": "A"}]}`)
	mustStatus(t, r, http.StatusConflict)
	if m := r.json(t); m["error"] != "wrong_expected_version" || m["actualVersion"] != json.Number("0") {
		t.Errorf("exists on a new stream: %s", r.body)
	}
	r = h.do("POST", "/streams/s", `{"expectedVersion": "no_stream", "events": [{"type": "A"}]}`)
	mustStatus(t, r, http.StatusConflict)

	r = h.do("POST", "/streams/s", fmt.Sprintf(`{"events": [{"type": "B"}, {"id": %q, "type": "A"}]}`, id))
	mustStatus(t, r, http.StatusConflict)
	if m := r.json(t); m["error"] != "duplicate_event" || m["eventId"] != id.String() {
		t.Errorf("duplicate event: %s", r.body)
	}
	if v, _ := h.store.Version(t.Context(), "s"); v != 1 {
		t.Errorf("version %d after refused appends, want 1", v)
	}
	if _, err := h.store.Version(t.Context(), "new"); err == nil {
		t.Errorf("stream new was written")
	}
}

// TestRoutes checks the JSON answers to unknown routes and methods, and the health check.
func TestRoutes(t *testing.T) {
	h := newHarness(t)
	cases := []struct {
		method, path string
		status       int
		code, allow  string
	}{
		{"GET", "/nope", 404, "not_found", ""},
		{"GET", "/streams/", 404, "not_found", ""},
		{"GET", "/streams/s/events/", 404, "not_found", ""},
		{"GET", "/streams//events", 404, "not_found", ""},
		{"GET", "/feed/", 404, "not_found", ""},
		{"DELETE", "/streams/s", 404, "stream_not_found", ""},
		{"PUT", "/streams/s", 405, "method_not_allowed", "GET, HEAD, POST, DELETE"},
		{"POST", "/streams/s/metadata", 405, "method_not_allowed", "GET, HEAD, PUT"},
		{"POST", "/streams/s/events", 405, "method_not_allowed", "GET, HEAD"},
		{"POST", "/feed", 405, "method_not_allowed", "GET, HEAD"},
		{"POST", "/healthz", 405, "method_not_allowed", "GET, HEAD"},
		{"PUT", "/subjects/s", 405, "method_not_allowed", "GET, HEAD, DELETE"},
		{"POST", "/subjects/s", 405, "method_not_allowed", "GET, HEAD, DELETE"},
		{"GET", "/subjects/", 404, "not_found", ""},
	}
	for _, c := range cases {
		r := h.do(c.method, c.path, nil)
		if r.status != c.status {
			t.Errorf("%s %s: status %d, want %d: %s", c.method, c.path, r.status, c.status, r.body)
			continue
		}
		if code := r.errorCode(t); code != c.code {
			t.Errorf("%s %s: code %s, want %s", c.method, c.path, code, c.code)
		}
		if got := r.header.Get("Allow"); got != c.allow {
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, got, c.allow)
		}
	}
	r := h.do("GET", "/healthz", nil)
	mustStatus(t, r, http.StatusOK)
	if want := `{"status":"ok","feedShards":1,"feedHead":null,"leaseHeld":false,"dispatcher":{"state":"none","pendingStreams":0,"oldestPendingSeconds":0}}`; compact(t, r.body) != want {
		t.Errorf("healthz: %s, want %s", r.body, want)
	}
}

// TestAuth checks the bearer token: required everywhere but /healthz, compared exactly.
func TestAuth(t *testing.T) {
	h := newHarness(t, withToken("s3cret"))
	for _, p := range []struct{ method, path string }{
		{"POST", "/streams/s"}, {"GET", "/streams/s"}, {"GET", "/streams/s/events"}, {"GET", "/feed"},
		{"GET", "/feed/live"}, {"GET", "/metrics"}, {"GET", "/nope"}, {"DELETE", "/streams/s"}, {"GET", "/streams/.."},
	} {
		for _, auth := range []string{"", "Bearer wrong", "Bearer s3cret2", "Bearer  s3cret", "Bearer", "Bearer S3CRET", "s3cret", "Basic czNjcmV0", "Basic s3cret"} {
			r := h.do(p.method, p.path, `{"events": [{"type": "A"}]}`, "Authorization", auth)
			if r.status != http.StatusUnauthorized {
				t.Errorf("%s %s with %q: status %d: %s", p.method, p.path, auth, r.status, r.body)
				continue
			}
			if code := r.errorCode(t); code != "unauthorized" {
				t.Errorf("%s %s: code %s", p.method, p.path, code)
			}
			if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer ") {
				t.Errorf("%s %s: WWW-Authenticate %q", p.method, p.path, r.header.Get("WWW-Authenticate"))
			}
		}
	}
	if _, err := h.store.Version(t.Context(), "s"); err == nil {
		t.Fatal("an unauthorized append was written")
	}
	mustStatus(t, h.do("GET", "/healthz", nil, "Authorization", ""), http.StatusOK)
	mustStatus(t, h.do("POST", "/streams/s", `{"events": [{"type": "A"}]}`), http.StatusCreated)
	mustStatus(t, h.do("GET", "/streams/s", nil), http.StatusOK)
	mustStatus(t, h.do("GET", "/metrics", nil), http.StatusOK)
	mustStatus(t, h.do("GET", "/streams/s", nil, "Authorization", "bearer s3cret"), http.StatusOK) // the scheme is case-insensitive
}
