package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReview2PositionalArgumentStartingWithDash: before the merge, flags ended at the first
// argument, so `estuite append s T -1` appended the JSON number -1 and `estuite append s T
// -AAA --binary`... the binary data "-AAA" (flags before). Since flags may follow the arguments,
// every later argument that starts with "-" is parsed as a flag: both fail as unknown flags.
func TestReview2PositionalArgumentStartingWithDash(t *testing.T) {
	data := t.TempDir()
	for _, args := range [][]string{
		{"append", "s", "T", "-1"},
		{"append", "--binary", "s", "T", "-AAA"},
	} {
		out, stderr, code := cli(t, append(args, "--data", data)...)
		if code != 0 {
			t.Errorf("%s: exit %d (worked before the merge: flags ended at the first argument)\n%s%s", strings.Join(args, " "), code, out, stderr)
		}
	}
}

// TestReview2MetadataCustomNullThroughAServer: `estuite metadata STREAM --set --custom null` and
// `estuite append S T {} --metadata null` are refused on the store (exit 1, nothing written) but
// write through a server (exit 0): the client sends "custom": null / "metadata": null, which the
// API reads as none. And `feed --types ,` prints nothing (exit 0) on the store, but fails (exit 1)
// through a server.
func TestReview2MetadataCustomNullThroughAServer(t *testing.T) {
	local, remote := t.TempDir(), t.TempDir()
	tokenFile := filepath.Join(t.TempDir(), "token")
	const token = "0123456789abcdef0123456789abcdef"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := serveInProcess(t, nil, "--data", remote, "--token-file", tokenFile, "--scavenge-interval", "-1s")
	for _, step := range [][]string{
		{"append", "s", "T", `{"n":1}`},
		{"metadata", "s", "--set", "--custom", "null"},
		{"metadata", "s"},
		{"feed", "--types", ","},
		{"append", "s", "T", `{}`, "--metadata", "null"},
		{"read", "s"},
	} {
		lout, lerr, lcode := cli(t, append(step, "--data", local)...)
		rout, rerr, rcode := cli(t, append(step, "--server", srv.url(""), "--token-file", tokenFile)...)
		if normalize(lout) != normalize(rout) || lcode != rcode {
			t.Errorf("%s:\n  on the store (exit %d):\n%s%s\n  through the server (exit %d):\n%s%s", strings.Join(step, " "), lcode, lout, lerr, rcode, rout, rerr)
		}
	}
}

// TestReview2ServerURLSecretsEchoed: a --server URL with a password or a query string is refused,
// and the refusal prints the URL as given, secret included.
func TestReview2ServerURLSecretsEchoed(t *testing.T) {
	const secret = "s3cr3t-t0ken-0123456789"
	for _, u := range []string{"http://estuite:" + secret + "@127.0.0.1:1", "http://127.0.0.1:1/?token=" + secret} {
		_, stderr, code := cli(t, "read", "s", "--server", u)
		if code != 2 || strings.Contains(stderr, secret) {
			t.Errorf("--server %s: exit %d; the message shows the secret:\n%s", u, code, firstLine(stderr))
		}
	}
}

// TestReview2EmptyServerFlagOpensTheLocalStore: `--server ""` (a script's `--server "$URL"` with
// URL unset) is taken as no --server: the command opens — and for a write, creates — the
// embedded store in the working directory and writes there, exit 0, instead of refusing the flag.
func TestReview2EmptyServerFlagOpensTheLocalStore(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	out, stderr, code := cli(t, "append", "order-1", "OrderPlaced", `{}`, "--server", "")
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if code != 2 {
		t.Errorf("append --server \"\": exit %d, want a usage error (2)\n%s%s\nthe working directory now holds %v", code, out, stderr, names)
	}
}
