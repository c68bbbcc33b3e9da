package server_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// TestBadInputIsRefusedAndWritesNothing sends every kind of bad request there is and checks that
// each gets its 4xx and error code — never a 500 — and that nothing was written.
func TestBadInputIsRefusedAndWritesNothing(t *testing.T) {
	h := newHarness(t)
	h.appendEvents("existing", "A", 2)
	id := uuid.New().String()
	ev := `{"type": "A"}`
	events := func(evs ...string) string { return `{"events": [` + strings.Join(evs, ",") + `]}` }
	with := func(member string) string { return `{` + member + `, "events": [{"type": "A"}]}` }
	bigString := func(n int) string { return `"` + strings.Repeat("x", n) + `"` }
	many := make([]string, 98)
	for i := range many {
		many[i] = ev
	}

	type tc struct {
		name         string
		method, path string
		body         string
		header       []string
		status       int
		code         string
	}
	post := func(name, body string, status int, code string) tc {
		return tc{name: name, method: "POST", path: "/streams/t", body: body, status: status, code: code}
	}
	bad := func(name, body string) tc { return post(name, body, 400, "invalid_request") }
	get := func(name, path string, header ...string) tc {
		return tc{name: name, method: "GET", path: path, header: header, status: 400, code: "invalid_request"}
	}
	cases := []tc{
		// The body as a whole.
		bad("empty body", ""),
		bad("blank body", " \n\t"),
		bad("truncated JSON", `{"events": [{"type": "A"}`),
		bad("syntax error", `{"events": [{"type": "A",}]}`),
		bad("not JSON", `events=A`),
		bad("array body", `[{"type": "A"}]`),
		bad("string body", `"events"`),
		bad("null body", `null`),
		bad("trailing data", events(ev)+` {}`),
		bad("unknown member", `{"events": [{"type": "A"}], "stream": "t"}`),
		bad("member in other case", `{"Events": [{"type": "A"}]}`),
		bad("repeated member", `{"events": [{"type": "A"}], "events": [{"type": "B"}]}`),
		// events.
		bad("events missing", `{"commitId": "c"}`),
		bad("events null", `{"events": null}`),
		bad("events an object", `{"events": {"type": "A"}}`),
		bad("events empty", `{"events": []}`),
		bad("event not an object", events(`1`)),
		bad("event null", events(`null`)),
		bad("event unknown member", events(`{"type": "A", "payload": {}}`)),
		bad("event member in other case", events(`{"Type": "A"}`)),
		bad("event repeated member", events(`{"type": "A", "type": "B"}`)),
		// type.
		bad("type missing", events(`{"data": {}}`)),
		bad("type empty", events(`{"type": ""}`)),
		bad("type null", events(`{"type": null}`)),
		bad("type a number", events(`{"type": 7}`)),
		bad("type with a control character", events(`{"type": "A\u0007"}`)),
		bad("type too long", events(`{"type": `+bigString(257)+`}`)),
		// data.
		bad("data and dataBase64", events(`{"type": "A", "data": {}, "dataBase64": "QQ=="}`)),
		bad("data not JSON", events(`{"type": "A", "data": {x}}`)),
		bad("dataBase64 not base64", events(`{"type": "A", "dataBase64": "!!!"}`)),
		bad("dataBase64 unpadded", events(`{"type": "A", "dataBase64": "QQ"}`)),
		bad("dataBase64 URL alphabet", events(`{"type": "A", "dataBase64": "-_-_"}`)),
		bad("dataBase64 a number", events(`{"type": "A", "dataBase64": 12}`)),
		// id.
		bad("id not a UUID", events(`{"id": "order-1", "type": "A"}`)),
		bad("id a number", events(`{"id": 1, "type": "A"}`)),
		bad("id the nil UUID", events(`{"id": "00000000-0000-0000-0000-000000000000", "type": "A"}`)),
		bad("id as a URN", events(`{"id": "urn:uuid:`+id+`", "type": "A"}`)),
		bad("id without hyphens", events(`{"id": "`+strings.ReplaceAll(id, "-", "")+`", "type": "A"}`)),
		// metadata.
		bad("metadata an array", events(`{"type": "A", "metadata": [1]}`)),
		bad("metadata a string", events(`{"type": "A", "metadata": "{}"}`)),
		// expectedVersion.
		bad("expectedVersion unknown word", with(`"expectedVersion": "sometimes"`)),
		bad("expectedVersion negative", with(`"expectedVersion": -1`)),
		bad("expectedVersion fraction", with(`"expectedVersion": 1.5`)),
		bad("expectedVersion exponent", with(`"expectedVersion": 1e2`)),
		bad("expectedVersion too big", with(`"expectedVersion": 99999999999999999999`)),
		bad("expectedVersion a numeric string", with(`"expectedVersion": "3"`)),
		bad("expectedVersion true", with(`"expectedVersion": true`)),
		bad("expectedVersion null", with(`"expectedVersion": null`)),
		bad("expectedVersion in other case", with(`"expectedVersion": "ANY"`)),
		// commitId.
		bad("commitId empty", with(`"commitId": ""`)),
		bad("commitId a number", with(`"commitId": 42`)),
		bad("commitId too long", with(`"commitId": `+bigString(129))),
		bad("commitId with a control character", with(`"commitId": "a\nb"`)),
		// The stream name and the URL.
		{name: "stream name with a control character", method: "POST", path: "/streams/a%00b", body: events(ev), status: 400, code: "invalid_request"},
		{name: "stream name not UTF-8", method: "POST", path: "/streams/%FF", body: events(ev), status: 400, code: "invalid_request"},
		{name: "stream name too long", method: "POST", path: "/streams/" + strings.Repeat("s", 171), body: events(ev), status: 400, code: "invalid_request"},
		{name: "query on an append", method: "POST", path: "/streams/t?expectedVersion=1", body: events(ev), status: 400, code: "invalid_request"},
		// Sizes.
		post("body over MaxBodyBytes", events(`{"type": "A", "data": `+bigString(9<<20)+`}`), 413, "too_large"),
		post("too many events", events(many...), 413, "too_large"),
		post("event data over an entity", events(`{"type": "A", "data": `+bigString(1100000)+`}`), 413, "too_large"),
		post("append over a batch", events(strings.Repeat(`{"type": "A", "dataBase64": "`+strings.Repeat("AAAA", 200000)+`"},`, 6)+ev), 413, "too_large"),
		post("metadata too long", events(`{"type": "A", "metadata": {"x": `+bigString(40000)+`}}`), 413, "too_large"),
		// Conflicts inside one append.
		post("same event ID twice", events(`{"id": "`+id+`", "type": "A"}`, `{"id": "`+id+`", "type": "B"}`), 409, "duplicate_event"),
		// Reads.
		get("from not a number", "/streams/existing/events?from=one"),
		get("from negative", "/streams/existing/events?from=-1"),
		get("from zero", "/streams/existing/events?from=0"),
		get("from empty", "/streams/existing/events?from="),
		get("from too big", "/streams/existing/events?from=99999999999999999999"),
		get("limit zero", "/streams/existing/events?limit=0"),
		get("limit over 1000", "/streams/existing/events?limit=1001"),
		get("limit negative", "/streams/existing/events?limit=-5"),
		get("limit fraction", "/streams/existing/events?limit=1.5"),
		get("direction unknown", "/streams/existing/events?direction=sideways"),
		get("direction in other case", "/streams/existing/events?direction=Forward"),
		get("unknown read parameter", "/streams/existing/events?count=5"),
		get("repeated read parameter", "/streams/existing/events?from=1&from=2"),
		get("malformed query", "/streams/existing/events?from=%zz"),
		get("query on stream info", "/streams/existing?x=1"),
		get("read of a bad stream name", "/streams/%00/events"),
		get("info of a bad stream name", "/streams/"+strings.Repeat("s", 171)),
		// The feed.
		get("after negative", "/feed?after=-1"),
		get("after not a number", "/feed?after=first"),
		get("feed limit over 1000", "/feed?limit=5000"),
		get("feed limit zero", "/feed?limit=0"),
		get("feed type empty", "/feed?type=A&type="),
		get("prefix empty", "/feed?prefix="),
		get("repeated prefix", "/feed?prefix=a&prefix=b"),
		get("unknown feed parameter", "/feed?from=3"),
		get("too many types", "/feed?"+strings.Repeat("type=T&", 101)),
		get("live after negative", "/feed/live?after=-1"),
		get("live limit", "/feed/live?limit=10"),
		get("live Last-Event-ID not a number", "/feed/live", "Last-Event-ID", "abc"),
		get("live Last-Event-ID negative", "/feed/live", "Last-Event-ID", "-3"),
	}
	if len(cases) < 40 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := h.do(c.method, c.path, c.body, c.header...)
			if r.status >= 500 {
				t.Fatalf("bad input answered %d: %s", r.status, r.body)
			}
			if r.status != c.status {
				t.Fatalf("status %d, want %d: %.300s", r.status, c.status, r.body)
			}
			if code := r.errorCode(t); code != c.code {
				t.Fatalf("code %s, want %s: %.300s", code, c.code, r.body)
			}
			t.Logf("%d %s", r.status, r.body[:min(len(r.body), 300)])
			if r := h.do("GET", "/streams/t", nil); r.status != http.StatusNotFound {
				t.Fatalf("stream t was written: %d %s", r.status, r.body)
			}
			if v, err := h.store.Version(t.Context(), "existing"); v != 2 || err != nil {
				t.Fatalf("stream existing is at version %d (%v), want 2", v, err)
			}
		})
	}
	// And the store never saw a stream of a bad name.
	for _, name := range []string{"a\x00b", strings.Repeat("s", 171)} {
		if _, err := h.store.Version(t.Context(), name); err == nil {
			t.Errorf("stream %q exists", name)
		}
	}
	_ = fmt.Sprint
}
