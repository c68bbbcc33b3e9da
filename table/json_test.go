package table

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
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

// TestJSONSizeIsTheEncodedLength: JSONSize's counting without encoding (a table of escapes, digit
// counts, the fixed width of times) agrees with EncodeJSON on random entities, and utf16Len with
// the UTF-16 encoding, for every kind of string: ASCII, escapes, controls, non-ASCII, invalid
// UTF-8, U+2028/U+2029.
func TestJSONSizeIsTheEncodedLength(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	pieces := []string{"a", "Z", "0", " ", `"`, `\`, "\n", "\r", "\t", "\x00", "\x1f", "\x7f", "<", ">", "&", "é", "€", "\u2028", "\u2029", "😀", "\xff", "\xe2\x82", "/", "%"}
	str := func() string {
		var b strings.Builder
		for range rng.IntN(12) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		return b.String()
	}
	ints := []int64{0, 1, -1, 9, 10, 99, 100, -100, math.MaxInt64, math.MinInt64, 1 << 62, -(1 << 62)}
	for i := range 5000 {
		props := map[string]any{}
		for range rng.IntN(6) {
			name := "P" + str()
			switch rng.IntN(5) {
			case 0:
				props[name] = str()
			case 1:
				props[name] = []byte(str())
			case 2:
				if rng.IntN(2) == 0 {
					props[name] = ints[rng.IntN(len(ints))]
				} else {
					props[name] = rng.Int64() >> rng.IntN(63)
				}
			case 3:
				props[name] = rng.IntN(2) == 0
			case 4:
				years := []int{1, 1970, 2026, 9999, 10000, -1, 0}
				props[name] = time.Date(years[rng.IntN(len(years))], time.Month(1+rng.IntN(12)), 1+rng.IntN(28), rng.IntN(24), 0, 0, rng.IntN(1e9), time.UTC)
			}
		}
		e := Entity{PartitionKey: str(), RowKey: str(), Properties: props}
		if got, want := JSONSize(e), len(EncodeJSON(e)); got != want {
			t.Fatalf("entity %d %#v: JSONSize %d, EncodeJSON wrote %d bytes", i, e, got, want)
		}
		s := str()
		if got, want := utf16Len(s), len(utf16.Encode([]rune(s))); got != want {
			t.Fatalf("utf16Len(%q) = %d, want %d", s, got, want)
		}
	}
}

// BenchmarkBatchSize measures BatchSize of a 50-event append batch as the store builds it (the
// commit row, the head and 50 event rows of ~200-byte JSON data):
//
//	go test -run '^$' -bench BatchSize -benchmem ./table
func BenchmarkBatchSize(b *testing.B) {
	ops := benchAppendBatch()
	b.ReportAllocs()
	for b.Loop() {
		BatchSize(ops)
	}
}

// BenchmarkValidateBatch measures ValidateBatch of the batch of BenchmarkBatchSize.
func BenchmarkValidateBatch(b *testing.B) {
	ops := benchAppendBatch()
	b.ReportAllocs()
	for b.Loop() {
		if err := ValidateBatch("order-1234567", ops); err != nil {
			b.Fatal(err)
		}
	}
}

// benchAppendBatch is a 50-event append batch as the store builds it: the commit row, the head
// and 50 event rows of ~200-byte JSON data, each with its own row key.
func benchAppendBatch() (ops []Op) {
	now := time.Now().UTC()
	ops = []Op{
		{Kind: Insert, Entity: Entity{PartitionKey: "order-1234567", RowKey: "C" + strings.Repeat("ab", 32), Properties: map[string]any{
			"CommitId": "6f1c1f3e-5c5d-4a9e-9d55-0d6f1f0b7a11", "First": int64(1), "Last": int64(50), "Hash": strings.Repeat("cd", 32), "Recorded": now}}},
		{Kind: Replace, Entity: Entity{PartitionKey: "order-1234567", RowKey: "H", Properties: map[string]any{"Version": int64(50), "Format": int64(1)}}},
	}
	for i := range 50 {
		ops = append(ops, Op{Kind: Insert, Entity: Entity{PartitionKey: "order-1234567", RowKey: fmt.Sprintf("E%019d", i+1), Properties: map[string]any{
			"Version": int64(i + 1), "Id": "6f1c1f3e-5c5d-4a9e-9d55-0d6f1f0b7a11", "Type": "OrderLinePlaced", "CommitId": "6f1c1f3e-5c5d-4a9e-9d55-0d6f1f0b7a11",
			"Recorded": now, "DataFormat": "json", "Metadata": `{"correlationId":"6f1c1f3e-5c5d-4a9e-9d55-0d6f1f0b7a11"}`,
			"Data": []byte(`{"order":"o-1234567","line":1,"sku":"SKU-000123","quantity":3,"price":"12.50","currency":"EUR","note":"deliver to the back door"}`)}}})
	}
	return ops
}

// TestValidatePropertiesMeasuresAsEntitySize: the entity size ValidateProperties sums on its way
// is EntitySize's: an entity exactly at MaxEntityBytes passes, one byte-pair over fails, with
// ASCII and non-ASCII strings, binary, integers, booleans and times.
func TestValidatePropertiesMeasuresAsEntitySize(t *testing.T) {
	for _, fill := range []string{"a", "é", "😀"} {
		e := Entity{PartitionKey: "pé", RowKey: "r", Properties: map[string]any{
			"B": []byte("xyz"), "I": int64(7), "T": true, "D": time.Now(), "S": ""}}
		// Fill S to within a few bytes of the limit (a string property holds at most 64 KiB, so
		// a few of them), then pad with binary bytes.
		units := utf16Len(fill)
		for i := 0; EntitySize(e) < MaxEntityBytes-MaxPropertyBytes; i++ {
			e.Properties[fmt.Sprintf("S%d", i)] = strings.Repeat(fill, (MaxPropertyBytes/2-8)/units)
		}
		// Pad to the limit exactly with binary bytes.
		e.Properties["B"] = make([]byte, 3+MaxEntityBytes-EntitySize(e))
		if EntitySize(e) != MaxEntityBytes {
			t.Fatalf("%q: EntitySize %d, want %d", fill, EntitySize(e), MaxEntityBytes)
		}
		if err := ValidateProperties(e); err != nil {
			t.Fatalf("%q: an entity of exactly MaxEntityBytes: %v", fill, err)
		}
		e.Properties["B"] = append(e.Properties["B"].([]byte), 0)
		if err := ValidateProperties(e); err == nil || !strings.Contains(err.Error(), "entity is") {
			t.Fatalf("%q: an entity of MaxEntityBytes+1: %v, want the entity refused as too large", fill, err)
		}
	}
}
