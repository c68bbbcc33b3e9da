package estuite

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/estuite/estuite/table"
)

// FuzzStreamKey checks that every valid stream name maps to a valid partition key and back.
func FuzzStreamKey(f *testing.F) {
	for _, s := range []string{"a", "with/slash", `b\s`, "#?", "100%", "%25", "émoji-🎉", "quote'd", strings.Repeat("/", MaxStreamNameLength), strings.Repeat("🎉", MaxStreamNameLength)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if validateStreamName(name) != nil {
			return
		}
		key := streamKey(name)
		if err := table.ValidateKey("partition key", key); err != nil {
			t.Fatalf("stream %q maps to invalid key %q: %v", name, key, err)
		}
		back, err := streamName(key)
		if err != nil || back != name {
			t.Fatalf("stream %q -> key %q -> %q, %v", name, key, back, err)
		}
	})
}

func TestOrdinaryStreamNamesStayReadable(t *testing.T) {
	for _, name := range []string{"order-42", "Customer.Account 7", "日本語", "it's"} {
		if k := streamKey(name); k != name {
			t.Errorf("streamKey(%q) = %q; want it unchanged", name, k)
		}
	}
	if k := streamKey("a/b%c"); k != "a%2Fb%25c" {
		t.Errorf("streamKey(a/b%%c) = %q", k)
	}
}

func TestEventKeysSortByVersion(t *testing.T) {
	prev := ""
	for _, v := range []int64{1, 2, 9, 10, 99, 100, 1 << 40, 1<<63 - 1} {
		k := eventKey(v)
		if k <= prev || !utf8.ValidString(k) {
			t.Fatalf("eventKey(%d) = %q does not sort after %q", v, k, prev)
		}
		if got, ok := parseEventKey(k); !ok || got != v {
			t.Fatalf("parseEventKey(%q) = %d, %v", k, got, ok)
		}
		prev = k
	}
}
