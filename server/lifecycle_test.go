package server_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/estuite/estuite"
)

type metadataDoc struct {
	Stream          string          `json:"stream"`
	MetadataVersion int64           `json:"metadataVersion"`
	MaxAge          *int64          `json:"maxAge"`
	MaxCount        *int64          `json:"maxCount"`
	TruncateBefore  *int64          `json:"truncateBefore"`
	Custom          json.RawMessage `json:"custom"`
}

// The metadata contract of docs/http-api.md: GET before anything is set, PUT with an expected
// version, absent fields null, 409 with the actual version, 400 for bad values, and retention on
// the stream's reads.
func TestMetadataContract(t *testing.T) {
	h := newHarness(t)
	r := h.do("GET", "/streams/orders/metadata", nil)
	mustStatus(t, r, http.StatusOK)
	if body := strings.TrimSpace(string(r.body)); body != `{"stream":"orders","metadataVersion":0,"maxAge":null,"maxCount":null,"truncateBefore":null,"custom":null}` {
		t.Fatalf("metadata of a new stream: %s", body)
	}
	r = h.do("PUT", "/streams/orders/metadata", `{"expectedMetadataVersion": 0, "maxCount": 2, "custom": {"owner": "a"}}`)
	mustStatus(t, r, http.StatusOK)
	var md metadataDoc
	r.decode(t, &md)
	if md.MetadataVersion != 1 || md.MaxCount == nil || *md.MaxCount != 2 || md.MaxAge != nil || md.TruncateBefore != nil || string(md.Custom) != `{"owner":"a"}` {
		t.Fatalf("PUT answered %s", string(r.body))
	}
	for i := 0; i < 3; i++ {
		mustStatus(t, h.do("POST", "/streams/orders", `{"events":[{"type":"A","data":{}}]}`), http.StatusCreated)
	}
	r = h.do("GET", "/streams/orders/events", nil)
	mustStatus(t, r, http.StatusOK)
	if !strings.Contains(string(r.body), `"version":2`) || !strings.Contains(string(r.body), `"version":3`) || strings.Contains(string(r.body), `"version":1,`) {
		t.Fatalf("events with maxCount 2: %s", string(r.body))
	}
	r = h.do("PUT", "/streams/orders/metadata", `{"expectedMetadataVersion": 0, "maxAge": 60}`)
	mustStatus(t, r, http.StatusConflict)
	if !strings.Contains(string(r.body), `"error":"wrong_expected_version"`) || !strings.Contains(string(r.body), `"actualVersion":1`) {
		t.Fatalf("409 body: %s", string(r.body))
	}
	r = h.do("PUT", "/streams/orders/metadata", `{"expectedMetadataVersion": "any", "maxAge": 60}`)
	mustStatus(t, r, http.StatusOK)
	r.decode(t, &md)
	if md.MetadataVersion != 2 || md.MaxAge == nil || *md.MaxAge != 60 || md.MaxCount != nil || string(md.Custom) != "null" {
		t.Fatalf("second PUT (absent fields become null): %s", string(r.body))
	}
	for _, bad := range []string{
		`{"maxCount": -1}`, `{"maxAge": 1.5}`, `{"truncateBefore": "3"}`, `{"maxAge": 1e3}`,
		`{"custom": [1]}`, `{"custom": "x"}`, `{"expectedMetadataVersion": -1}`, `{"maxCount": 1, "maxCount": 2}`,
		`{"unknown": 1}`, `[]`, `{`,
	} {
		r := h.do("PUT", "/streams/orders/metadata", bad)
		if r.status != http.StatusBadRequest || !strings.Contains(string(r.body), `"error":"invalid_request"`) {
			t.Errorf("PUT %s: %d %s; want 400 invalid_request", bad, r.status, string(r.body))
		}
	}
	if r := h.do("GET", "/streams/orders/metadata", nil); !strings.Contains(string(r.body), `"metadataVersion":2`) {
		t.Fatalf("refused PUTs changed the metadata: %s", string(r.body))
	}
}

// The delete contract: soft delete, 404 after it, recreation with versions going on; hard delete,
// 410 for reads, appends and metadata; 409 on a wrong expected version; 404 for a stream never
// written.
func TestDeleteContract(t *testing.T) {
	h := newHarness(t)
	mustStatus(t, h.do("DELETE", "/streams/never", nil), http.StatusNotFound)
	for i := 0; i < 2; i++ {
		mustStatus(t, h.do("POST", "/streams/cart", `{"events":[{"type":"A","data":{}}]}`), http.StatusCreated)
	}
	r := h.do("DELETE", "/streams/cart?expectedVersion=1", nil)
	mustStatus(t, r, http.StatusConflict)
	if !strings.Contains(string(r.body), `"error":"wrong_expected_version"`) || !strings.Contains(string(r.body), `"actualVersion":2`) {
		t.Fatalf("409 body: %s", string(r.body))
	}
	r = h.do("DELETE", "/streams/cart?expectedVersion=2", nil)
	mustStatus(t, r, http.StatusNoContent)
	if string(r.body) != "" {
		t.Fatalf("204 with a body: %q", string(r.body))
	}
	r = h.do("GET", "/streams/cart/events", nil)
	mustStatus(t, r, http.StatusNotFound)
	if !strings.Contains(string(r.body), `"error":"stream_not_found"`) {
		t.Fatalf("events after a soft delete: %s", string(r.body))
	}
	r = h.do("POST", "/streams/cart", `{"expectedVersion":"no_stream","events":[{"type":"B","data":{}}]}`)
	mustStatus(t, r, http.StatusCreated)
	if !strings.Contains(string(r.body), `"firstVersion":3`) {
		t.Fatalf("recreating append: %s", string(r.body))
	}
	mustStatus(t, h.do("POST", "/streams/cart", `{"expectedVersion":"any","events":[{"type":"C","data":{}}]}`), http.StatusCreated)
	r = h.do("GET", "/streams/cart/events", nil)
	mustStatus(t, r, http.StatusOK)
	if strings.Contains(string(r.body), `"version":1,`) || !strings.Contains(string(r.body), `"version":3`) || !strings.Contains(string(r.body), `"version":4`) {
		t.Fatalf("events after recreating: %s", string(r.body))
	}

	mustStatus(t, h.do("DELETE", "/streams/cart?hard=true&expectedVersion=4", nil), http.StatusNoContent)
	for _, req := range []struct{ method, path, body string }{
		{"GET", "/streams/cart/events", ""},
		{"GET", "/streams/cart", ""},
		{"POST", "/streams/cart", `{"events":[{"type":"D","data":{}}]}`},
		{"POST", "/streams/cart", `{"expectedVersion":"no_stream","events":[{"type":"D","data":{}}]}`},
		{"GET", "/streams/cart/metadata", ""},
		{"PUT", "/streams/cart/metadata", `{"maxCount":1}`},
		{"DELETE", "/streams/cart", ""},
	} {
		var body any
		if req.body != "" {
			body = req.body
		}
		r := h.do(req.method, req.path, body)
		if r.status != http.StatusGone || !strings.Contains(string(r.body), `"error":"stream_deleted"`) {
			t.Errorf("%s %s after a hard delete: %d %s; want 410 stream_deleted", req.method, req.path, r.status, string(r.body))
		}
	}
	mustStatus(t, h.do("DELETE", "/streams/cart?hard=true", nil), http.StatusNoContent) // again: nothing changes
	for _, bad := range []string{"/streams/x?hard=yes", "/streams/x?expectedVersion=-1", "/streams/x?expectedVersion=soon", "/streams/x?other=1"} {
		if r := h.do("DELETE", bad, nil); r.status != http.StatusBadRequest {
			t.Errorf("DELETE %s: %d %s; want 400", bad, r.status, string(r.body))
		}
	}
}

// POST /admin/scavenge removes a deleted stream's events; the feed then passes over their
// positions, or shows them as {"position": p, "redacted": true} with redacted=true.
func TestScavengeAndRedactedFeedContract(t *testing.T) {
	h := newHarness(t, withDispatcher(estuite.DispatcherOptions{}))
	mustStatus(t, h.do("POST", "/streams/a", `{"events":[{"type":"A","data":{"secret":1}},{"type":"A","data":{"secret":2}}]}`), http.StatusCreated)
	mustStatus(t, h.do("POST", "/streams/b", `{"events":[{"type":"B","data":{}}]}`), http.StatusCreated)
	mustStatus(t, h.do("DELETE", "/streams/a?hard=true", nil), http.StatusNoContent)
	for i := 0; i < 10; i++ {
		if st, err := h.dispatcher.Step(t.Context()); err != nil || st.Streams == 0 {
			break
		}
	}
	r := h.do("POST", "/admin/scavenge", nil)
	mustStatus(t, r, http.StatusOK)
	if got := strings.TrimSpace(string(r.body)); got != `{"streams":1,"removed":2,"redacted":2,"waiting":0}` {
		t.Fatalf("scavenge: %s", got)
	}
	r = h.do("GET", "/feed", nil)
	mustStatus(t, r, http.StatusOK)
	if body := string(r.body); strings.Count(body, `"position"`) != 1 || !strings.Contains(body, `"stream":"b"`) || !strings.Contains(body, `"next":3`) || strings.Contains(body, "secret") {
		t.Fatalf("feed after scavenging: %s", body)
	}
	r = h.do("GET", "/feed?redacted=true", nil)
	mustStatus(t, r, http.StatusOK)
	if body := string(r.body); !strings.Contains(body, `{"position":1,"redacted":true},{"position":2,"redacted":true},{"position":3,`) || strings.Contains(body, "secret") {
		t.Fatalf("feed with redacted entries: %s", body)
	}
	if r := h.do("GET", "/feed?redacted=yes", nil); r.status != http.StatusBadRequest {
		t.Fatalf("redacted=yes: %d", r.status)
	}
	if r := h.do("GET", "/admin/scavenge", nil); r.status != http.StatusMethodNotAllowed {
		t.Fatalf("GET /admin/scavenge: %d", r.status)
	}
}
