package bolt

import (
	"bytes"
	"errors"
	"math"
	"testing"
	"time"
)

// equalProps reports whether two property maps hold the same values, times compared by instant
// and required to be in UTC on the b side.
func equalProps(a, b map[string]any) bool {
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb, ok := b[k]
		if !ok {
			return false
		}
		switch va := va.(type) {
		case []byte:
			vb, ok := vb.([]byte)
			if !ok || !bytes.Equal(va, vb) {
				return false
			}
		case time.Time:
			vb, ok := vb.(time.Time)
			if !ok || !va.Equal(vb) || vb.Location() != time.UTC {
				return false
			}
		default:
			if va != vb {
				return false
			}
		}
	}
	return true
}

func TestCodecRoundTrip(t *testing.T) {
	cases := []map[string]any{
		{},
		{"S": "", "B": []byte{}, "I": int64(0), "F": false},
		{
			"S":    "héllo, 世界 \x00",
			"B":    []byte{0, 1, 2, 255},
			"Min":  int64(math.MinInt64),
			"Max":  int64(math.MaxInt64),
			"T":    true,
			"F":    false,
			"Time": time.Date(2024, 2, 29, 23, 59, 59, 123456789, time.FixedZone("X", 3600)),
			"Old":  time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC),
			"New":  time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
			"Pre":  time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC),
		},
	}
	for _, props := range cases {
		data, err := encodeRow(`W/"7"`, props)
		if err != nil {
			t.Fatal(err)
		}
		if data[0] != FormatVersion {
			t.Fatalf("first byte %d, want the format version", data[0])
		}
		etag, got, err := decodeRow(data)
		if err != nil {
			t.Fatalf("decode %v: %v", props, err)
		}
		if etag != `W/"7"` || !equalProps(props, got) {
			t.Fatalf("round trip of %v gave %q %v", props, etag, got)
		}
		if tm, ok := got["Time"].(time.Time); ok && tm.Nanosecond() != 123456789 {
			t.Fatalf("time lost precision: %v", tm)
		}
		again, _ := encodeRow(etag, got)
		if !bytes.Equal(data, again) {
			t.Fatalf("encoding is not deterministic: %x vs %x", data, again)
		}
	}
}

func TestCodecUnsupportedType(t *testing.T) {
	if _, err := encodeRow("e", map[string]any{"X": 1.5}); err == nil {
		t.Fatal("float64 property encoded")
	}
}

func TestCodecCorrupt(t *testing.T) {
	data, err := encodeRow(`W/"1"`, map[string]any{
		"S": "abc", "B": []byte("xyz"), "I": int64(-5), "T": true, "Z": time.Unix(5, 6),
	})
	if err != nil {
		t.Fatal(err)
	}
	for n := range len(data) {
		if _, _, err := decodeRow(data[:n]); !errors.Is(err, errCorrupt) {
			t.Fatalf("truncation to %d bytes: err %v", n, err)
		}
	}
	bad := [][]byte{
		append(bytes.Clone(data), 0),                                    // trailing byte
		append([]byte{2}, data[1:]...),                                  // unknown version
		{1, 0, 1, 1, 'A', 9},                                            // unknown tag
		{1, 0, 2, 1, 'A', 4, 1, 'A', 5},                                 // duplicate name
		{1, 0, 1, 1, 'A', 6, 0, 0x80, 0x94, 0xeb, 0xdc, 0x03},           // nanoseconds 1e9
		{1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},                            // huge property count
		{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, // huge length
	}
	for _, b := range bad {
		if _, _, err := decodeRow(b); !errors.Is(err, errCorrupt) {
			t.Errorf("decodeRow(%x): err %v, want corrupt", b, err)
		}
	}
}

// FuzzCodec checks that every entity round-trips through the encoding and that decoding any
// bytes fails cleanly or yields an entity that round-trips in turn.
func FuzzCodec(f *testing.F) {
	f.Add(`W/"1"`, "Name", "value", []byte("bin"), int64(42), true, int64(1700000000), uint32(123456789), []byte{})
	f.Add("", "", "", []byte(nil), int64(math.MinInt64), false, int64(-62135596800), uint32(0), []byte{1, 0, 0})
	f.Add("e", "S", "\x00\xff", []byte{0}, int64(math.MaxInt64), false, int64(253402300799), uint32(999999999),
		[]byte{1, 1, 'e', 1, 1, 'A', 3, 0x54})
	f.Fuzz(func(t *testing.T, etag, name, s string, b []byte, i int64, flag bool, sec int64, nsec uint32, raw []byte) {
		props := map[string]any{
			"s": s, "b": b, "i": i, "f": flag,
			"t":  time.Unix(sec, int64(nsec%1e9)),
			name: s + name,
		}
		data, err := encodeRow(etag, props)
		if err != nil {
			t.Fatal(err)
		}
		gotETag, got, err := decodeRow(data)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if gotETag != etag || !equalProps(props, got) {
			t.Fatalf("round trip: got %q %v, want %q %v", gotETag, got, etag, props)
		}

		etag2, props2, err := decodeRow(raw)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("decode error %v does not wrap errCorrupt", err)
			}
			return
		}
		data2, err := encodeRow(etag2, props2)
		if err != nil {
			t.Fatal(err)
		}
		etag3, props3, err := decodeRow(data2)
		if err != nil || etag3 != etag2 || !equalProps(props2, props3) {
			t.Fatalf("re-encoding of decoded %x is unstable: %v", raw, err)
		}
	})
}
