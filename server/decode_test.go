package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/jsoncheck"
)

// allocated returns the bytes f allocates (on every goroutine: run it alone).
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// appendBody is an append body of a shape that costs a decoder much, and the status that refuses
// it (0: it decodes; the store refuses it later).
type appendBody struct {
	name   string
	body   []byte
	status int
}

// appendBodies are append bodies of about size bytes, of the shapes that cost a decoder most.
func appendBodies(size int) []appendBody {
	events := func(ev string, n int) []byte {
		return []byte(`{"events": [` + strings.TrimSuffix(strings.Repeat(ev+",", n), ",") + `]}`)
	}
	tiny := `{"type":"A"}`
	data := func(n int) string { return `{"type":"A","data":"` + strings.Repeat("x", n) + `"}` }
	meta := func(n int) string { return `{"type":"A","metadata":{"k":[` + strings.Repeat("1,", n) + `1]}}` }
	return []appendBody{
		{"tiny events", events(tiny, size/(len(tiny)+1)), http.StatusRequestEntityTooLarge},
		{"empty objects", events(`{}`, size/3), http.StatusBadRequest},
		{"numbers", events(`0`, size/2), http.StatusBadRequest},
		{"events with data", events(data(size/(2*estuite.MaxAppendRows)), 2*estuite.MaxAppendRows), http.StatusRequestEntityTooLarge},
		{"events with many tokens", events(meta(size/(4*estuite.MaxAppendRows)), 2*estuite.MaxAppendRows), http.StatusRequestEntityTooLarge},
		{"one large event", events(data(size), 1), 0},
	}
}

// TestAppendDecodingMemoryIsBoundedByTheEvents checks that decoding an append body, refused or
// not, allocates memory for the events it keeps, never for the body's size (8 MiB here): the body
// is walked in place, and a body of many more events than an append may hold is refused as soon
// as the walk has passed the limit, not after decoding them all. (Before, these bodies cost
// 6 to 82 times their size.)
func TestAppendDecodingMemoryIsBoundedByTheEvents(t *testing.T) {
	for _, b := range appendBodies(8 << 20) {
		var err error
		n := allocated(func() { _, err = decodeAppend(b.body) })
		t.Logf("%s: %d bytes decoded with %d bytes allocated (%.2f×): %v", b.name, len(b.body), n, float64(n)/float64(len(b.body)), err)
		if limit := uint64(1 << 20); n > limit {
			t.Errorf("%s: decoding %d bytes allocated %d bytes, more than %d", b.name, len(b.body), n, limit)
		}
		var ae *apiError
		switch {
		case b.status == 0 && err != nil:
			t.Errorf("%s: %v", b.name, err)
		case b.status != 0 && (!errors.As(err, &ae) || ae.Status != b.status):
			t.Errorf("%s: %v, want status %d", b.name, err, b.status)
		}
	}
}

// FuzzDecodeAppend decodes any body: it is either refused with a 4xx error of the API, or decoded
// into a request whose strings are the valid UTF-8 that was sent; it never panics.
func FuzzDecodeAppend(f *testing.F) {
	for _, s := range []string{
		`{"events": [{"type": "A"}]}`,
		`{"expectedVersion": 3, "commitId": "c", "events": [{"id": "0b3e8f4a-5c1d-4e2f-9a7b-1c2d3e4f5a6b", "type": "A", "data": {"x": [1, "\u00e9"]}, "metadata": {"m": null}}]}`,
		`{"expectedVersion": "no_stream", "events": [{"type": "B", "dataBase64": "QQ=="}, {"type": "C", "data": null}]}`,
		`{"commitId": "c\ud800", "events": [{"type": "A"}]}`,
		`{"commitId": "\ud83d\ude00", "events": [{"type": "\ud83d\u0041"}]}`,
		"{\"events\": [{\"type\": \"A\", \"data\": \"\xff\"}]}",
		"{\"events\": [{\"type\": \"A\xfe\"}]}",
		`{"events": [{"type": "A", "metadata": {"k": "\udc00"}}]}`,
		`{"events": [` + strings.Repeat(`{"type":"A"},`, 120) + `{"type":"A"}]}`,
		`{"events": [{"type": "A"}]} {}`,
		`{"events": {"type": "A"}}`,
		`[`, ``, `"\\u"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeAppend(body)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.Status < 400 || ae.Status >= 500 || ae.Code == "" || ae.Message == "" {
				t.Fatalf("decodeAppend(%q): %v, want a 4xx API error", body, err)
			}
			if !utf8.ValidString(ae.Message) {
				t.Fatalf("decodeAppend(%q): the message %q is not UTF-8", body, ae.Message)
			}
			return
		}
		if err := jsoncheck.Check(body); err != nil {
			t.Fatalf("decodeAppend(%q) accepted text that readers read differently: %v", body, err)
		}
		if len(req.events) == 0 || len(req.events) > estuite.MaxAppendRows {
			t.Fatalf("decodeAppend(%q): %d events", body, len(req.events))
		}
		// encoding/json reads the same request (a check of the walk in place).
		var ref struct {
			CommitID *string `json:"commitId"`
			Events   []struct {
				Type     string          `json:"type"`
				Data     json.RawMessage `json:"data"`
				Metadata json.RawMessage `json:"metadata"`
			} `json:"events"`
		}
		if err := json.Unmarshal(body, &ref); err != nil {
			t.Fatalf("decodeAppend(%q) accepted what encoding/json refuses: %v", body, err)
		}
		if ref.CommitID != nil && *ref.CommitID != req.commitID || len(ref.Events) != len(req.events) {
			t.Fatalf("decodeAppend(%q) = %+v; encoding/json reads %+v", body, req, ref)
		}
		for i, ev := range req.events {
			r := ref.Events[i]
			if string(r.Metadata) == "null" {
				r.Metadata = nil
			}
			if ev.Type != r.Type || ev.Format == estuite.JSON && !bytes.Equal(ev.Data, r.Data) || !bytes.Equal(ev.Metadata, r.Metadata) {
				t.Fatalf("decodeAppend(%q): event %d is %+v; encoding/json reads %+v", body, i, ev, r)
			}
		}
		strs := []string{req.commitID}
		for _, ev := range req.events {
			strs = append(strs, ev.Type)
			if ev.Format == estuite.JSON {
				strs = append(strs, string(ev.Data))
			}
			strs = append(strs, string(ev.Metadata))
		}
		for _, s := range strs {
			if !utf8.ValidString(s) || strings.ContainsRune(s, utf8.RuneError) && !bytes.ContainsRune(body, utf8.RuneError) && !bytes.Contains(bytes.ToLower(body), []byte(`\ufffd`)) {
				t.Fatalf("decodeAppend(%q): %q is not what was sent", body, s)
			}
		}
	})
}
