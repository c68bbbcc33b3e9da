package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/estuite/estuite/internal/azuritetest"
	"github.com/estuite/estuite/table/azure"
)

// kill9 kills the server the way a crash does: no shutdown, no lease release.
func (p *proc) kill9(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	err := <-p.exited
	p.exited <- err // for the cleanup
	http.DefaultClient.CloseIdleConnections()
}

// appendTick appends one event to stream through p and fails the test unless it is committed.
func appendTick(t *testing.T, p *proc, stream string) {
	t.Helper()
	var res appendResult
	body := map[string]any{"events": []any{map[string]any{"type": "Tick"}}}
	if code := call(t, "POST", p.url("/streams/"+stream), body, &res); code != 201 {
		t.Fatalf("append to %s via %s: %d", stream, p.addr, code)
	}
}

// timeUntilInFeed polls p's feed until it holds an event of stream, and returns how long that
// took from start; it gives up (failing the test) after 60 s.
func timeUntilInFeed(t *testing.T, p *proc, stream string, start time.Time) time.Duration {
	t.Helper()
	for {
		for _, ev := range readFeed(t, p) {
			if ev.Stream == stream {
				return time.Since(start)
			}
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("%s never reached the feed", stream)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRestartAfterKill9FeedsAtOnce kills a server with -9 — its dispatcher lease is left
// unexpired — and restarts it at once with the same flags: it must take its own lease back and
// dispatch a new append within 2 s, not wait out the lease (15 s by default).
func TestRestartAfterKill9FeedsAtOnce(t *testing.T) {
	for _, bc := range serveBackends("rs") {
		t.Run(bc.name, func(t *testing.T) {
			env, args := bc.env(t)
			addr := freePort(t)
			p := startServeAt(t, addr, env, args...)
			appendTick(t, p, "before-crash")
			timeUntilInFeed(t, p, "before-crash", time.Now()) // the dispatcher holds the lease now
			p.kill9(t)

			p2 := startServeAt(t, addr, env, args...)
			start := time.Now()
			appendTick(t, p2, "after-restart")
			took := timeUntilInFeed(t, p2, "after-restart", start)
			t.Logf("after the restart, an append reached the feed in %v", took)
			if took > 2*time.Second {
				t.Fatalf("after a kill -9 and a restart with the same flags, the feed stalled for %v (want at most 2 s)", took)
			}
			checkFeedExactlyOnce(t, readFeed(t, p2), map[string]int64{"before-crash": 1, "after-restart": 1})
		})
	}
}

// TestSurvivorTakesOverTheLeaseAfterKill9 runs two servers on one Azurite account with a short
// lease, kills the one holding the dispatcher lease with -9, and checks that the other takes the
// lease over and dispatches a new append once the dead server's lease has run out: within the
// lease duration plus the survivor's polling interval (a third of it), and a second of slack.
func TestSurvivorTakesOverTheLeaseAfterKill9(t *testing.T) {
	const lease = 3 * time.Second
	conn := azuritetest.ConnectionString(t)
	prefix := fmt.Sprintf("sv%d", time.Now().UnixNano())
	env := []string{"AZURE_STORAGE_CONNECTION_STRING=" + conn}
	args := []string{"--table-prefix", prefix, "--lease-duration", lease.String()}
	servers := []*proc{startServe(t, env, args...), startServe(t, env, args...)}
	appendTick(t, servers[0], "first")
	timeUntilInFeed(t, servers[0], "first", time.Now())

	holder := leaseOwner(t, conn, prefix)
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	var dead, survivor *proc
	for i, p := range servers {
		if holder == host+"/"+p.addr {
			dead, survivor = p, servers[1-i]
		}
	}
	if dead == nil {
		t.Fatalf("the lease is held by %q, neither %s/%s nor %s/%s", holder, host, servers[0].addr, host, servers[1].addr)
	}
	dead.kill9(t)
	start := time.Now()
	appendTick(t, survivor, "after-crash")
	took := timeUntilInFeed(t, survivor, "after-crash", start)
	t.Logf("lease %v: the survivor dispatched %v after the holder was killed", lease, took)
	if limit := lease + lease/3 + time.Second; took > limit {
		t.Fatalf("the survivor took %v to take over (want at most %v)", took, limit)
	}
	if now := leaseOwner(t, conn, prefix); now != host+"/"+survivor.addr {
		t.Fatalf("the lease is held by %q after the take-over, want the survivor %s/%s", now, host, survivor.addr)
	}
	checkFeedExactlyOnce(t, readFeed(t, survivor), map[string]int64{"first": 1, "after-crash": 1})
}

// leaseOwner reads who holds the dispatcher lease, from its row in the event table
// (docs/storage-format.md: partition "lease", row "dispatcher", property Owner).
func leaseOwner(t *testing.T, conn, prefix string) string {
	t.Helper()
	b, err := azure.Open(conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	tbl, err := b.OpenTable(ctx, prefix+"events")
	if err != nil {
		t.Fatal(err)
	}
	row, err := tbl.Get(ctx, "lease", "dispatcher")
	if err != nil {
		t.Fatal(err)
	}
	owner, _ := row.Properties["Owner"].(string)
	return owner
}

// TestDefaultInstanceNames checks the instance names serve gives itself: on the embedded store a
// random ID kept in the data directory, the same at every start; on Azure the host name and the
// listen address.
func TestDefaultInstanceNames(t *testing.T) {
	dir := t.TempDir()
	b := &backendFlags{data: dir, dataSet: true}
	first, err := defaultInstance(b, nil, DefaultAddr)
	if err != nil {
		t.Fatal(err)
	}
	again, err := defaultInstance(b, nil, DefaultAddr)
	if err != nil || again != first || first == "" {
		t.Fatalf("embedded instance %q, then %q (%v): want one stable name", first, again, err)
	}
	if other, err := defaultInstance(&backendFlags{data: t.TempDir(), dataSet: true}, nil, DefaultAddr); err != nil || other == first {
		t.Fatalf("another data directory's instance %q (%v), the first %q", other, err, first)
	}
	if err := os.WriteFile(filepath.Join(dir, instanceFile), []byte("\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := defaultInstance(b, nil, DefaultAddr); err == nil || !strings.Contains(err.Error(), instanceFile) {
		t.Fatalf("an empty instance file: %v", err)
	}

	host, _ := os.Hostname()
	az := &backendFlags{azureConn: "UseDevelopmentStorage=true"}
	if name, err := defaultInstance(az, nil, "10.0.0.5:2113"); err != nil || name != host+"/10.0.0.5:2113" {
		t.Fatalf("Azure instance %q (%v)", name, err)
	}
}
