package jsoncheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCheck(t *testing.T) {
	cases := []struct {
		text   string
		offset int // -1: no problem
	}{
		{`{"a": "b"}`, -1},
		{`"é 😀 \u00e9 \ud83d\ude00 \uD83D\uDE00 \ufffd �"`, -1},
		{`"\\ud800"`, -1}, // an escaped backslash, then text
		{`"\"\ud800"`, 3},
		{`"\ud800"`, 1},
		{`"\uDBFF"`, 1},
		{`"\udc00"`, 1},
		{`"\ud800\u0041"`, 1},
		{`"\ud800x\udc00"`, 1},
		{`"\ud83d\ude00\ud83d"`, 13},
		{`"x\ud800`, 2}, // unterminated: still a lone surrogate
		{`\ud800`, -1},  // not in a string: not JSON, left to the parser
		{`"\u12"`, -1},  // malformed: left to the parser
		{`"\uzzzz"`, -1},
		{"\"c\xff\"", 2},
		{"\"c\xfe\"", 2},
		{"{\"a\": 1}\xc3", 8},
		{"\"\xed\xa0\x80\"", 1}, // a surrogate encoded as UTF-8 (CESU-8)
		{"\"\xc0\xaf\"", 1},     // an overlong encoding
		{"", -1},
	}
	for _, c := range cases {
		err := Check([]byte(c.text))
		var e *Error
		switch {
		case c.offset < 0 && err != nil:
			t.Errorf("Check(%q) = %v, want nil", c.text, err)
		case c.offset >= 0 && (!errors.As(err, &e) || e.Offset != c.offset):
			t.Errorf("Check(%q) = %v, want a problem at byte %d", c.text, err, c.offset)
		}
	}
}

func TestCheckAllocatesNothing(t *testing.T) {
	text := []byte(strings.Repeat(`{"a": "é \ud83d\ude00 \\ \" x"}`, 100))
	if n := testing.AllocsPerRun(10, func() { _ = Check(text) }); n != 0 {
		t.Fatalf("Check allocated %v times", n)
	}
}

// FuzzCheck checks Check against encoding/json: a valid JSON text that passes it decodes without
// a replacement character that was not sent, and a text that is not UTF-8 never passes.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{`"\ud800"`, `["\ud83d\ude00", "\ud83d\u0041"]`, "\"\xff\"", `{"k": "\\ud800"}`, `"\ufffd"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := Check(b)
		if !utf8.Valid(b) && err == nil {
			t.Fatalf("Check(%q) passed a text that is not UTF-8", b)
		}
		if err != nil || !json.Valid(b) {
			return
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("Unmarshal(%q): %v", b, err)
		}
		sent := bytes.ContainsRune(b, utf8.RuneError) || bytes.Contains(bytes.ToLower(b), []byte(`\ufffd`))
		var walk func(any)
		walk = func(v any) {
			switch v := v.(type) {
			case string:
				if strings.ContainsRune(v, utf8.RuneError) && !sent {
					t.Fatalf("Check(%q) passed, but it decodes to %q", b, v)
				}
			case []any:
				for _, e := range v {
					walk(e)
				}
			case map[string]any:
				for k, e := range v {
					walk(k)
					walk(e)
				}
			}
		}
		walk(v)
	})
}
