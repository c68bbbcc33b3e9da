package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReview2ThroughAServerDiffers runs command lines on a store and through a server on a twin
// store, and reports every difference of stdout, stderr (IDs and times normalized) or exit code.
func TestReview2ThroughAServerDiffers(t *testing.T) {
	local, remote := t.TempDir(), t.TempDir()
	tokenFile := filepath.Join(t.TempDir(), "token")
	const token = "0123456789abcdef0123456789abcdef"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := serveInProcess(t, nil, "--data", remote, "--token-file", tokenFile, "--scavenge-interval", "-1s")
	url := srv.url("")
	steps := [][]string{
		{"append", "s", "T", `{"n":1}`, "--commit-id", "c1"},
		{"append", "s", "T", `{"n":2}`},
		{"append", "s", "T", `{"n":3}`},
		{"read", "s", "--from", "9"},
		{"read", "s", "--backward", "--from", "9"},
		{"read", "s", "--backward", "--from", "2", "--limit", "5"},
		{"read", "never"},
		{"read", "bad\x00name"},
		{"read", ""},
		{"append", "s", "T", `{"n":`},
		{"append", "s", "T", `[1,2]`},
		{"append", "s", "T", `"str"`},
		{"append", "s", "", `{}`},
		{"append", "s", "T", `{}`, "--metadata", `[1]`},
		{"append", "s", "T", `{}`, "--metadata", `{"a":`},
		{"append", "s", "T", `{}`, "--commit-id", "c1"},
		{"append", "s", "T", `{}`, "--expected-version", "no_stream"},
		{"append", "s", "T", `{}`, "--expected-version", "exists"},
		{"append", "s2", "T", `{}`, "--expected-version", "exists"},
		{"append", "s", "T", `{}`, "--expected-version", "-5"},
		{"metadata", "s", "--set", "--custom", ""},
		{"metadata", "s", "--set", "--custom", "null"},
		{"metadata", "s", "--set", "--custom", "[1]"},
		{"metadata", "s", "--set", "--max-age", "1500ms"},
		{"metadata", "s", "--set", "--max-age", "-1s"},
		{"metadata", "s", "--set", "--max-count", "-1"},
		{"metadata", "s", "--set", "--truncate-before", "-1"},
		{"metadata", "never"},
		{"metadata", "s"},
		{"feed", "--types", ","},
		{"feed", "--shard", "3"},
		{"feed", "--prefix", "s", "--limit", "2"},
		{"delete", "never"},
		{"delete", "s", "--expected-version", "exists"},
		{"read", "s"},
		{"forget", ""},
		{"group", "never"},
		{"parked", "never"},
		{"parked", "replay", "never", "0:1"},
		{"streams", "--limit", "0"},
		{"streams", "--limit", "-1"},
		{"streams", "--limit", "100000"},
		{"streams", "--after", "zzz"},
		{"append", "m", "T", `null`},
		{"append", "m", "T", `{}`, "--metadata", `{}`},
		{"append", "m", "T", `{}`, "--subject", ""},
		{"append", "m", "T", `{}`, "--commit-id", ""},
		{"append", "m", "T", `{}`, "--commit-id", " x"},
		{"read", "m"},
		{"metadata", "m", "--set", "--max-count", "1"},
		{"read", "m"},
		{"read", "m", "--from", "1"},
		{"read", "m", "--backward"},
		{"read", "m", "--backward", "--from", "1"},
		{"metadata", "m", "--set", "--truncate-before", "99"},
		{"read", "m"},
		{"metadata", "m", "--set", "--max-age", "0s"},
		{"metadata", "m"},
		{"delete", "m", "--expected-version", "any"},
		{"delete", "m"},
		{"delete", "m", "--hard"},
		{"metadata", "m"},
		{"append", "m", "T"},
		{"forget", "nobody"},
		{"forget", "a/b"},
		{"append", "m2", "T", "{}", "--subject", "nobody"},
		{"append", "bin", "T", "abc", "--binary", "--subject", "u9"},
		{"append", "bin", "T", "", "--binary"},
		{"append", "bin", "T", "\xff\xfe", "--binary"},
		{"read", "bin"},
		{"forget", "u9"},
		{"read", "bin"},
		{"feed", "--prefix", "bin"},
		{"streams"},
		{"streams", "--prefix", "b", "--json"},
	}
	for _, step := range steps {
		name := strings.Join(step, " ")
		lout, lerr, lcode := cli(t, append(step, "--data", local)...)
		rout, rerr, rcode := cli(t, append(step, "--server", url, "--token-file", tokenFile)...)
		time.Sleep(50 * time.Millisecond) // the server dispatches in the background
		if normalize(lout) != normalize(rout) || lcode != rcode {
			t.Errorf("%q: STDOUT/EXIT differ:\n  on the store (exit %d):\n%s%s\n  through the server (exit %d):\n%s%s", name, lcode, lout, lerr, rcode, rout, rerr)
		} else if normalize(lerr) != normalize(rerr) {
			t.Logf("%q: stderr differs (exit %d):\n  store:  %s  server: %s", name, lcode, firstLine(lerr), firstLine(rerr))
		}
	}
}
