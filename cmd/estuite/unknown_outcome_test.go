package main

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// TestAppendThroughAServerOfUnknownOutcome: a 502 from a proxy in front of the server leaves the
// append's outcome unknown: the command fails (exit 1), names the commit ID it sent and says to
// retry with --commit-id; given one, it names that one.
func TestAppendThroughAServerOfUnknownOutcome(t *testing.T) {
	var sent []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sent = append(sent, r.URL.Path)
		http.Error(w, "bad gateway", http.StatusBadGateway)
	}))
	defer proxy.Close()
	_, stderr, code := cli(t, "append", "s", "T", `{}`, "--server", proxy.URL, "--token", "0123456789abcdef")
	m := regexp.MustCompile(`--commit-id ([0-9a-f-]{36})`).FindStringSubmatch(stderr)
	if code != 1 || m == nil || !strings.Contains(stderr, "may or may not have been committed") || len(sent) != 1 {
		t.Fatalf("exit %d, %d requests:\n%s", code, len(sent), stderr)
	}
	_, stderr, code = cli(t, "append", "s", "T", `{}`, "--commit-id", "c-7", "--server", proxy.URL, "--token", "0123456789abcdef")
	if code != 1 || !strings.Contains(stderr, "--commit-id c-7") {
		t.Errorf("with --commit-id c-7: exit %d:\n%s", code, stderr)
	}
	// A redirect is refused, not followed (the POST would become a GET).
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, proxy.URL+r.URL.Path, http.StatusMovedPermanently)
	}))
	defer redirect.Close()
	sent = nil
	_, stderr, code = cli(t, "append", "s", "T", `{}`, "--server", redirect.URL, "--token", "0123456789abcdef")
	if code != 1 || !strings.Contains(stderr, "redirect (301) to \""+proxy.URL+"/streams/s\"") || len(sent) != 0 {
		t.Errorf("through a redirect: exit %d, %d requests followed:\n%s", code, len(sent), stderr)
	}
}
