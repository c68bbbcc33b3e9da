package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReview2FollowThroughAServer compares feed --follow (stopped after a while) and feed past the
// head on the store and through a server.
func TestReview2FollowThroughAServer(t *testing.T) {
	local, remote := t.TempDir(), t.TempDir()
	tokenFile := filepath.Join(t.TempDir(), "token")
	const token = "0123456789abcdef0123456789abcdef"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{local, remote} {
		for _, s := range []string{"a", "b", "c"} {
			if _, stderr, code := cli(t, "append", s, "T", `{}`, "--data", d); code != 0 {
				t.Fatal(stderr)
			}
		}
	}
	srv := serveInProcess(t, nil, "--data", remote, "--token-file", tokenFile, "--scavenge-interval", "-1s")
	runFor := func(d time.Duration, args ...string) (string, string, int) {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		var o, e bytes.Buffer
		code := run(ctx, args, &o, &e)
		return o.String(), e.String(), code
	}
	for _, step := range [][]string{
		{"feed", "--follow"},
		{"feed", "--follow", "--after", "2"},
		{"feed", "--follow", "--after", "99"},
		{"feed", "--after", "99"},
		{"feed", "--follow", "--prefix", "b"},
		{"feed", "--follow", "--shard", "1"},
	} {
		lout, lerr, lcode := runFor(700*time.Millisecond, append(step, "--data", local)...)
		rout, rerr, rcode := runFor(700*time.Millisecond, append(step, "--server", srv.url(""), "--token-file", tokenFile)...)
		if normalize(lout) != normalize(rout) || lcode != rcode {
			t.Errorf("%s:\n  on the store (exit %d):\n%s%s\n  through the server (exit %d):\n%s%s", strings.Join(step, " "), lcode, lout, lerr, rcode, rout, rerr)
		} else if normalize(lerr) != normalize(rerr) {
			t.Logf("%s: stderr differs: %q vs %q", strings.Join(step, " "), lerr, rerr)
		}
	}
}
