package estuite

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/estuite/estuite/table"
)

// Limits on names, checked before anything is written.
const (
	// MaxStreamNameLength is the longest stream name, in Unicode characters. Any name of this
	// length fits a partition key even when every character must be escaped.
	MaxStreamNameLength = 170
	// MaxCommitIDLength is the longest commit ID, in Unicode characters.
	MaxCommitIDLength = 128
	// MaxEventTypeLength is the longest event type, in Unicode characters.
	MaxEventTypeLength = 256
)

// Row keys of the stream table. Each stream is one partition; see docs/storage-format.md.
const (
	headRowKey      = "H" // the stream head: version, and the ETag that fences appends
	commitKeyPrefix = "C" // C<sha-256 of the commit ID, hex>: one per commit, for idempotency
	eventKeyPrefix  = "E" // E<version, 19 digits>: one per event
	eventIDPrefix   = "I" // I<event UUID>: one per caller-given event ID, for deduplication
	versionDigits   = 19  // enough for every positive int64
)

// streamKey maps a stream name to its partition key. The mapping is reversible and keeps
// ordinary names readable: only the characters Azure forbids in keys ('/', '\', '#', '?') and
// the escape character '%' itself are percent-encoded.
func streamKey(name string) string {
	if !strings.ContainsAny(name, `%/\#?`) {
		return name
	}
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		switch c := name[i]; c {
		case '%', '/', '\\', '#', '?':
			fmt.Fprintf(&b, "%%%02X", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// streamName is the inverse of streamKey.
func streamName(key string) (string, error) {
	if !strings.Contains(key, "%") {
		return key, nil
	}
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		if key[i] != '%' {
			b.WriteByte(key[i])
			continue
		}
		if i+2 >= len(key) {
			return "", fmt.Errorf("truncated escape in %q", key)
		}
		v, err := strconv.ParseUint(key[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("bad escape in %q", key)
		}
		b.WriteByte(byte(v))
		i += 2
	}
	return b.String(), nil
}

// validateName checks a stream name, commit ID or event type: not empty, valid UTF-8, at most
// max characters, no control characters.
func validateName(field, s string, max int) error {
	if s == "" {
		return invalid(field, "must not be empty")
	}
	if !utf8.ValidString(s) {
		return invalid(field, "is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(s); n > max {
		return invalid(field, "is %d characters long, at most %d are allowed", n, max)
	}
	for _, r := range s {
		if table.IsControl(r) {
			return invalid(field, "contains the control character %U", r)
		}
	}
	return nil
}

func validateStreamName(name string) error {
	return validateName("stream", name, MaxStreamNameLength)
}

func eventKey(version int64) string {
	return fmt.Sprintf("%s%0*d", eventKeyPrefix, versionDigits, version)
}

// parseEventKey returns the version an event row key names.
func parseEventKey(rk string) (int64, bool) {
	if len(rk) != len(eventKeyPrefix)+versionDigits || !strings.HasPrefix(rk, eventKeyPrefix) {
		return 0, false
	}
	v, err := strconv.ParseInt(rk[len(eventKeyPrefix):], 10, 64)
	return v, err == nil && v > 0
}

func commitKey(commitID string) string {
	sum := sha256.Sum256([]byte(commitID))
	return commitKeyPrefix + hex.EncodeToString(sum[:])
}

func eventIDKey(id fmt.Stringer) string {
	return eventIDPrefix + id.String()
}
