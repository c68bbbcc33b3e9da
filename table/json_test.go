package table

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzJSONString checks that strings are written as valid JSON that decodes to the same text,
// that jsonStringLen is their exact length, and that it never undercounts what encoding/json (and
// so the Azure SDK, which re-encodes every entity) writes.
func FuzzJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", `q"uote\back`, "<a&b>", "\u2028\u2029", "tab\tnl\ncr\r", "\x00\x01\x1f\x7f", "émoji 🎉", "bad \xff utf8"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var buf bytes.Buffer
		writeJSONString(&buf, s)
		if n := jsonStringLen(s); n != buf.Len() {
			t.Fatalf("jsonStringLen(%q) = %d, wrote %d bytes", s, n, buf.Len())
		}
		std, _ := json.Marshal(s)
		if buf.Len() < len(std) {
			t.Fatalf("%q: wrote %d bytes, encoding/json writes %d", s, buf.Len(), len(std))
		}
		var back string
		if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
			t.Fatalf("%q: invalid JSON %s: %v", s, buf.Bytes(), err)
		}
		if utf8.ValidString(s) && back != s {
			t.Fatalf("%q decoded as %q", s, back)
		}
	})
}

func TestEncodeJSONMatchesJSONSizeAndSDKEncoding(t *testing.T) {
	e := Entity{PartitionKey: "p<1>", RowKey: "r&'", Properties: map[string]any{
		"S": "text <b> & \u2028", "B": []byte{0, 1, 2, 250}, "I": int64(-1 << 62), "T": true,
		"D": time.Date(2026, 11, 26, 1, 2, 3, 456789000, time.UTC),
	}}
	enc := EncodeJSON(e)
	if len(enc) != JSONSize(e) {
		t.Fatalf("JSONSize = %d, EncodeJSON wrote %d bytes", JSONSize(e), len(enc))
	}
	var m map[string]any
	if err := json.Unmarshal(enc, &m); err != nil {
		t.Fatalf("EncodeJSON wrote invalid JSON: %v", err)
	}
	// The SDK decodes our JSON into a map and encodes it again with encoding/json.
	again, _ := json.Marshal(m)
	if len(again) > len(enc) {
		t.Fatalf("re-encoded entity is %d bytes, JSONSize counted %d", len(again), len(enc))
	}
	want := map[string]any{"PartitionKey": "p<1>", "RowKey": "r&'", "S": "text <b> & \u2028", "B": "AAEC+g==", "B@odata.type": "Edm.Binary",
		"I": "-4611686018427387904", "I@odata.type": "Edm.Int64", "T": true, "D": "2026-11-26T01:02:03.4567890Z", "D@odata.type": "Edm.DateTime"}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	if len(m) != len(want) {
		t.Errorf("encoded %d members, want %d", len(m), len(want))
	}
}
