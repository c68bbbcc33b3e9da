package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/estuite/estuite"
)

// TestReview2ParkedListThroughAServerIsCut: `estuite parked GROUP` lists every parked event on
// the store, but at most client.MaxPageLimit (1,000) through a server. docs/operations.md says so,
// but the command says nothing when it happens: the list is cut silently (verify --server says
// on stderr when its lists were cut).
func TestReview2ParkedListThroughAServerIsCut(t *testing.T) {
	const n = 1005
	local, remote := t.TempDir(), t.TempDir()
	for _, data := range []string{local, remote} {
		proj := &groupProjection{refuse: map[string]bool{"big@1": true}}
		withEmbeddedStore(t, data, func(ctx context.Context, s *estuite.Store) {
			evs := make([]estuite.EventData, 0, 100)
			for range 50 {
				evs = append(evs, estuite.EventData{Type: "T", Data: []byte(`{}`)})
			}
			for i := 0; i < n; i += 50 {
				if _, err := s.Append(ctx, "big", evs[:min(50, n-i)], nil); err != nil {
					t.Fatal(err)
				}
			}
			// The refused first event is parked, and every later one of its stream waits behind it.
			runGroupMember(t, ctx, s, "g", proj, func() bool {
				p, err := s.ParkedEvents(ctx, "g", 0)
				return err == nil && len(p) == n
			})
		})
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	const token = "0123456789abcdef0123456789abcdef"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := serveInProcess(t, nil, "--data", remote, "--token-file", tokenFile, "--scavenge-interval", "-1s")
	for _, step := range [][]string{{"parked", "g"}, {"parked", "g", "--json"}} {
		lout, lerr, lcode := cli(t, append(step, "--data", local)...)
		rout, rerr, rcode := cli(t, append(step, "--server", srv.url(""), "--token-file", tokenFile)...)
		if (normalize(lout) != normalize(rout) || lcode != rcode) && !strings.Contains(rerr, "1000") && !strings.Contains(rerr, "1,000") {
			t.Errorf("%s: on the store exit %d, %d lines, %d bytes; through the server exit %d, %d lines, %d bytes; stderr through the server: %q",
				strings.Join(step, " "), lcode, strings.Count(lout, "\n"), len(lout), rcode, strings.Count(rout, "\n"), len(rout), rerr)
			_ = lerr
		}
	}
}
