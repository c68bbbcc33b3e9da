package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// estuite streams lists what was appended, with versions, paged and by prefix; it never creates
// a store.
func TestStreamsCommandListsTheCatalog(t *testing.T) {
	data := t.TempDir()
	if _, code := estuiteCLI(t, "streams", "--data", filepath.Join(data, "none")); code != 1 {
		t.Fatalf("streams on a missing store: exit %d, want 1", code)
	}
	for _, s := range []string{"cart-1", "cart-2", "cart-2", "user/7"} {
		if _, code := estuiteCLI(t, "append", "--data", data, s, "T", `{"n":1}`); code != 0 {
			t.Fatalf("append %s: exit %d", s, code)
		}
	}
	out, code := estuiteCLI(t, "streams", "--data", data)
	if code != 0 || strings.Fields(out)[0] != "STREAM" || !strings.Contains(out, "cart-2  2") || !strings.Contains(out, "user/7  1") {
		t.Fatalf("streams: exit %d\n%s", code, out)
	}
	out, code = estuiteCLI(t, "streams", "--data", data, "--prefix", "cart-", "--limit", "1")
	if code != 0 || !strings.Contains(out, "cart-1  1") || !strings.Contains(out, `more: --after "cart-1"`) {
		t.Fatalf("streams --prefix cart- --limit 1: exit %d\n%s", code, out)
	}
	out, code = estuiteCLI(t, "streams", "--data", data, "--prefix", "cart-", "--after", "cart-1", "--json")
	if want := `{"streams":[{"stream":"cart-2","version":2}],"next":null}` + "\n"; code != 0 || out != want {
		t.Fatalf("streams --json: exit %d, %q, want %q", code, out, want)
	}
	if _, code := estuiteCLI(t, "streams", "--data", data, "--limit", "0"); code != 2 {
		t.Fatalf("streams --limit 0: exit %d, want 2", code)
	}
}
