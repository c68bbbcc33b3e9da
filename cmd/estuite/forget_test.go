package main

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `estuite forget` erases a subject for every later read, and the master key comes from
// $ESTUITE_MASTER_KEY or --master-key-file: without it, or with another one, the subject's events
// cannot be read.
func TestForgetCommandWithAMasterKey(t *testing.T) {
	data := t.TempDir()
	key := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))
	keyFile := filepath.Join(t.TempDir(), "master.key")
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(masterKeyEnv, key)
	if _, code := estuiteCLI(t, "append", "--data", data, "--subject", "user-9", "people", "Registered", `{"name":"Ann"}`); code != 0 {
		t.Fatalf("append exited %d", code)
	}
	t.Setenv(masterKeyEnv, "")
	if out, code := estuiteCLI(t, "read", "--data", data, "people"); code != 1 || strings.Contains(out, "Ann") {
		t.Fatalf("read without the master key: exit %d, want 1\n%s", code, out)
	}
	t.Setenv(masterKeyEnv, base64.StdEncoding.EncodeToString([]byte(strings.Repeat("x", 32))))
	if out, code := estuiteCLI(t, "read", "--data", data, "people"); code != 1 || strings.Contains(out, "Ann") {
		t.Fatalf("read with another master key: exit %d, want 1\n%s", code, out)
	}
	if out, code := estuiteCLI(t, "read", "--data", data, "--master-key-file", keyFile, "people"); code != 0 || !strings.Contains(out, `"data":{"name":"Ann"}`) || !strings.Contains(out, `"subject":"user-9"`) {
		t.Fatalf("read with --master-key-file: exit %d\n%s", code, out)
	}
	t.Setenv(masterKeyEnv, "not a key")
	if _, code := estuiteCLI(t, "read", "--data", data, "people"); code != 2 {
		t.Fatalf("a malformed master key: exit %d, want 2", code)
	}
	t.Setenv(masterKeyEnv, key)
	for range 2 {
		if out, code := estuiteCLI(t, "forget", "--data", data, "user-9"); code != 0 || strings.TrimSpace(out) != `{"forgotten":true,"subject":"user-9"}` {
			t.Fatalf("forget: exit %d\n%s", code, out)
		}
	}
	out, code := estuiteCLI(t, "read", "--data", data, "people")
	if code != 0 || strings.Contains(out, "Ann") || !strings.Contains(out, `"erased":true`) {
		t.Fatalf("read after forget: exit %d\n%s", code, out)
	}
	if _, code := estuiteCLI(t, "append", "--data", data, "--subject", "user-9", "people", "Back"); code != 1 {
		t.Fatalf("append naming a forgotten subject: exit %d, want 1", code)
	}
	if _, code := estuiteCLI(t, "forget", "--data", data); code != 2 {
		t.Fatalf("forget without a subject: exit %d, want 2", code)
	}
}

// `estuite rewrap-keys` rotates the master key: with the new key and the old one as
// --previous-master-key-file it rewraps the subjects' keys, after which the new key alone reads
// them and the old one no longer does.
func TestRewrapKeysCommandRotatesTheMasterKey(t *testing.T) {
	data, dir := t.TempDir(), t.TempDir()
	oldKey, newKey := filepath.Join(dir, "old.key"), filepath.Join(dir, "new.key")
	for file, fill := range map[string]string{oldKey: "o", newKey: "n"} {
		if err := os.WriteFile(file, []byte(base64.StdEncoding.EncodeToString([]byte(strings.Repeat(fill, 32)))), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(masterKeyEnv, "")
	if _, code := estuiteCLI(t, "append", "--data", data, "--master-key-file", oldKey, "--subject", "user-1", "people", "Registered", `{"name":"Bo"}`); code != 0 {
		t.Fatalf("append exited %d", code)
	}
	if _, code := estuiteCLI(t, "read", "--data", data, "--master-key-file", newKey, "people"); code != 1 {
		t.Fatalf("read with the new key before rewrapping: exit %d, want 1", code)
	}
	if _, code := estuiteCLI(t, "rewrap-keys", "--data", data, "--previous-master-key-file", oldKey); code != 2 {
		t.Fatalf("rewrap-keys without a new master key: exit %d, want 2", code)
	}
	out, code := estuiteCLI(t, "rewrap-keys", "--data", data, "--master-key-file", newKey, "--previous-master-key-file", oldKey)
	if code != 0 || !strings.Contains(out, `"rewrapped":1`) || !strings.Contains(out, `"failures":0`) {
		t.Fatalf("rewrap-keys: exit %d\n%s", code, out)
	}
	if out, code := estuiteCLI(t, "read", "--data", data, "--master-key-file", newKey, "people"); code != 0 || !strings.Contains(out, `"name":"Bo"`) {
		t.Fatalf("read with the new key after rewrapping: exit %d\n%s", code, out)
	}
	if _, code := estuiteCLI(t, "read", "--data", data, "--master-key-file", oldKey, "people"); code != 1 {
		t.Fatalf("read with the old key after rewrapping: exit %d, want 1", code)
	}
	// A key wrapped by a master key not given is named, and the exit code says so.
	other := filepath.Join(dir, "other.key")
	if err := os.WriteFile(other, []byte(base64.StdEncoding.EncodeToString([]byte(strings.Repeat("x", 32)))), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := estuiteCLI(t, "rewrap-keys", "--data", data, "--master-key-file", other); code != 3 || !strings.Contains(out, `"failed":["user-1"]`) {
		t.Fatalf("rewrap-keys under a key that cannot unwrap: exit %d, want 3\n%s", code, out)
	}
}
