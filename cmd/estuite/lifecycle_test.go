package main

import (
	"strings"
	"testing"
)

// `estuite metadata` prints and sets a stream's metadata; `estuite delete` deletes it, soft or hard.
func TestMetadataAndDeleteCommands(t *testing.T) {
	data := t.TempDir()
	for i := 0; i < 3; i++ {
		if _, code := estuiteCLI(t, "append", "--data", data, "cart", "Added", `{"n":1}`); code != 0 {
			t.Fatalf("append exited %d", code)
		}
	}
	out, code := estuiteCLI(t, "metadata", "--data", data, "cart")
	if code != 0 || strings.TrimSpace(out) != `{"custom":null,"maxAge":null,"maxCount":null,"metadataVersion":0,"stream":"cart","truncateBefore":null}` {
		t.Fatalf("metadata: exit %d\n%s", code, out)
	}
	out, code = estuiteCLI(t, "metadata", "--data", data, "--set", "--max-count", "2", "--custom", `{"team":"a"}`, "--expected-metadata-version", "0", "cart")
	if code != 0 || !strings.Contains(out, `"maxCount":2`) || !strings.Contains(out, `"metadataVersion":1`) || !strings.Contains(out, `"custom":{"team":"a"}`) {
		t.Fatalf("metadata --set: exit %d\n%s", code, out)
	}
	out, code = estuiteCLI(t, "read", "--data", data, "cart")
	if code != 0 || strings.Count(out, "\n") != 2 || strings.Contains(out, `"version":1,`) {
		t.Fatalf("read with maxCount 2: exit %d\n%s", code, out)
	}
	if _, code := estuiteCLI(t, "metadata", "--data", data, "--set", "--expected-metadata-version", "0", "cart"); code != 1 {
		t.Fatalf("metadata --set with a wrong expected version: exit %d, want 1", code)
	}
	if _, code := estuiteCLI(t, "metadata", "--data", data, "--max-count", "1", "cart"); code != 2 {
		t.Fatalf("metadata --max-count without --set: exit %d, want 2", code)
	}
	if _, code := estuiteCLI(t, "delete", "--data", data, "--expected-version", "2", "cart"); code != 1 {
		t.Fatalf("delete expecting a wrong version: exit %d, want 1", code)
	}
	out, code = estuiteCLI(t, "delete", "--data", data, "--expected-version", "3", "cart")
	if code != 0 || strings.TrimSpace(out) != `{"hard":false,"stream":"cart","version":3}` {
		t.Fatalf("delete: exit %d\n%s", code, out)
	}
	if _, code := estuiteCLI(t, "read", "--data", data, "cart"); code != 1 {
		t.Fatalf("read after a soft delete: exit %d, want 1", code)
	}
	if _, code := estuiteCLI(t, "delete", "--data", data, "--hard", "cart"); code != 0 {
		t.Fatalf("hard delete: exit %d", code)
	}
	if _, code := estuiteCLI(t, "append", "--data", data, "cart", "Again"); code != 1 {
		t.Fatalf("append after a hard delete: exit %d, want 1", code)
	}
	// estuite append dispatches what it appended: the feed holds the three events, which go.
	if out, code := estuiteCLI(t, "scavenge", "--data", data); code != 0 || strings.TrimSpace(out) != `{"redacted":3,"removed":3,"streams":1,"waiting":0}` {
		t.Fatalf("scavenge: exit %d\n%q", code, out)
	}
	if out, code := estuiteCLI(t, "scavenge", "--data", data); code != 0 || strings.TrimSpace(out) != `{"redacted":0,"removed":0,"streams":0,"waiting":0}` {
		t.Fatalf("second scavenge: exit %d\n%q", code, out)
	}
	if out, code := estuiteCLI(t, "verify", "--data", data); code != 0 {
		t.Fatalf("verify after scavenging: exit %d\n%s", code, out)
	}
	if _, code := estuiteCLI(t, "delete", "--data", data); code != 2 {
		t.Fatalf("delete without a stream: exit %d, want 2", code)
	}
}
