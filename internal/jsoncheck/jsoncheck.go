// Package jsoncheck checks that a JSON text means the same to every reader: that it is valid
// UTF-8 and that none of its strings holds an escaped lone surrogate ("\ud800" without a low
// surrogate after it, or "\udc00" without a high one before it).
//
// Both are refused by I-JSON (RFC 7493) and read differently by different JSON libraries: Go's
// encoding/json silently turns them into U+FFFD (so "c\xff" and "c\xfe" decode to one string),
// others keep them, strict ones (Rust's serde_json, for one) refuse the whole text. An event
// store whose feed is read by all of them must keep them out.
//
// The check does not check JSON syntax (json.Valid does): outside a string a backslash is not
// JSON at all, and it is left to the parser.
package jsoncheck

import (
	"fmt"
	"unicode/utf8"
)

// Error is the first problem found in a text.
type Error struct {
	// Offset is the problem's byte offset in the text.
	Offset int
	// Problem says what is wrong, e.g. "invalid UTF-8".
	Problem string
}

func (e *Error) Error() string { return fmt.Sprintf("%s at byte %d", e.Problem, e.Offset) }

// Check returns nil when b is valid UTF-8 and no string in it holds an escaped lone surrogate,
// and otherwise an *Error for the first problem. It reads b once and allocates nothing unless it
// finds a problem.
func Check(b []byte) error {
	inString := false
	for i := 0; i < len(b); {
		c := b[i]
		switch {
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				return &Error{Offset: i, Problem: "invalid UTF-8"}
			}
			i += size
		case c == '"':
			inString = !inString
			i++
		case c == '\\' && inString:
			n, lone := escape(b[i:])
			if lone {
				return &Error{Offset: i, Problem: fmt.Sprintf("the lone surrogate escape %s (a half of a UTF-16 pair, not a character)", b[i:i+6])}
			}
			i += n
		default:
			i++
		}
	}
	return nil
}

// escape reads the escape sequence at the start of b (b[0] is a backslash inside a string): its
// length, and whether it is a lone surrogate. A malformed escape counts as the backslash and the
// ASCII byte after it (so that a byte of another character is still checked), for the parser to
// refuse.
func escape(b []byte) (n int, lone bool) {
	if len(b) < 2 || b[1] >= utf8.RuneSelf {
		return 1, false
	}
	if len(b) < 6 || b[1] != 'u' {
		return 2, false
	}
	r, ok := hex4(b[2:6])
	switch {
	case !ok:
		return 2, false
	case r >= 0xDC00 && r <= 0xDFFF:
		return 6, true // a low surrogate first
	case r < 0xD800 || r > 0xDBFF:
		return 6, false
	}
	// A high surrogate: a low one must follow at once.
	if len(b) < 12 || b[6] != '\\' || b[7] != 'u' {
		return 6, true
	}
	if lo, ok := hex4(b[8:12]); !ok || lo < 0xDC00 || lo > 0xDFFF {
		return 6, true
	}
	return 12, false
}

func hex4(b []byte) (rune, bool) {
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
