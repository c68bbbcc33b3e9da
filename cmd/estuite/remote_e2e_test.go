package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/client"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/bolt"
)

// Commands against a running server (--server): each prints what it prints on the store itself.

// cli runs a command line in this process and returns its stdout, stderr and exit code.
func cli(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return stdout.String(), stderr.String(), code
}

var (
	uuidText = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	timeText = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)
)

// normalize replaces what differs between two stores given the same commands: generated IDs and
// times.
func normalize(s string) string {
	return timeText.ReplaceAllString(uuidText.ReplaceAllString(s, "UUID"), "TIME")
}

// parkPoison appends the stream "poison" (3 events) to the embedded store in data and runs a
// group member that refuses its second event until the group has parked it and the one behind it.
func parkPoison(t *testing.T, data string) {
	t.Helper()
	proj := &groupProjection{refuse: map[string]bool{"poison@2": true}}
	withEmbeddedStore(t, data, func(ctx context.Context, s *estuite.Store) {
		evs := []estuite.EventData{{Type: "T", Data: []byte(`{}`)}, {Type: "T", Data: []byte(`{}`)}, {Type: "T", Data: []byte(`{}`)}}
		if _, err := s.Append(ctx, "poison", evs, nil); err != nil {
			t.Fatal(err)
		}
		runGroupMember(t, ctx, s, "orders/projection", proj, func() bool {
			p, err := s.ParkedEvents(ctx, "orders/projection", 0)
			return err == nil && len(p) == 2
		})
	})
}

// removeStreamRow deletes a row of the embedded store's stream table: a fault for verify to find.
func removeStreamRow(t *testing.T, data, pk, rk string) {
	t.Helper()
	ctx := context.Background()
	b, err := bolt.Open(filepath.Join(data, "estuite.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	tbl, err := b.OpenTable(ctx, estuite.DefaultTablePrefix+"streams")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tbl.Submit(ctx, pk, []table.Op{{Kind: table.Delete, Entity: table.Entity{PartitionKey: pk, RowKey: rk}}}); err != nil {
		t.Fatal(err)
	}
}

func TestCommandsThroughAServerPrintWhatTheyPrintOnTheStore(t *testing.T) {
	local, remote := t.TempDir(), t.TempDir()
	parkPoison(t, local)
	parkPoison(t, remote)
	tokenFile := filepath.Join(t.TempDir(), "token")
	const token = "0123456789abcdef0123456789abcdef"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := serveInProcess(t, nil, "--data", remote, "--token-file", tokenFile, "--scavenge-interval", "-1s")
	url := srv.url("")
	c, err := client.New(url, &client.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	feedHead := func() int64 {
		p, err := c.Feed(context.Background(), client.FeedOptions{Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		return p.Head
	}

	// While the server holds the embedded store, a command on it says to go through the server.
	if _, stderr, code := cli(t, "read", "poison", "--data", remote); code != 1 || !strings.Contains(stderr, "--server http://"+DefaultAddr) {
		t.Fatalf("a command on a store a server holds: exit %d\n%s", code, stderr)
	}

	// A second server on it is told that the store has one server, not to go through the first.
	if _, stderr, code := cli(t, "serve", "--data", remote, "--addr", freePort(t)); code != 1 ||
		!strings.Contains(stderr, "one embedded store has one server") || strings.Contains(stderr, "--server") {
		t.Fatalf("a second serve: exit %d\n%s", code, stderr)
	}

	events := int64(3) // the feed heads of both stores: poison's 3 events
	steps := [][]string{
		{"append", "order-1", "Placed", `{"n":1}`, "--commit-id", "c1"},
		{"append", "order-1", "Placed", `{"n":1}`, "--commit-id", "c1"}, // a retry: duplicate
		{"append", "order-1", "Paid", `{"n":2}`, "--expected-version", "5"},
		{"append", "order-1", "Paid", `{"n":2}`, "--expected-version", "1", "--metadata", `{"by":"me"}`},
		{"append", "tenant/1", "Created", "abc", "--binary"},
		{"append", "user-7", "Registered", `{"name":"A"}`, "--subject", "user-7"},
		{"read", "order-1"},
		{"read", "order-1", "--backward", "--limit", "1"},
		{"read", "tenant/1"},
		{"read", "no-such-stream"},
		{"feed"},
		{"feed", "--types", "Paid,Placed", "--prefix", "order-"},
		{"feed", "--after", "4", "--limit", "1"},
		{"metadata", "order-1"},
		{"metadata", "order-1", "--set", "--max-count", "1", "--custom", `{"o":1}`},
		{"metadata", "order-1", "--set", "--expected-metadata-version", "7"},
		{"read", "order-1"},
		{"forget", "user-7"},
		{"read", "user-7"},
		{"append", "user-7", "Again", "--subject", "user-7"},
		{"delete", "tenant/1", "--expected-version", "9"},
		{"delete", "tenant/1"},
		{"delete", "tenant/1", "--hard"},
		{"read", "tenant/1"},
		{"scavenge"},
		{"feed"},
		{"verify"},
		{"verify", "--json"},
		{"streams"},
		{"streams", "--prefix", "order-", "--json"},
		{"streams", "--limit", "1", "--after", "order-1"},
		{"groups"},
		{"groups", "--json"},
		{"group", "orders/projection"},
		{"group", "orders/projection", "--json"},
		{"group", "nope"},
		{"parked", "orders/projection"},
		{"parked", "orders/projection", "--json"},
		{"parked", "replay", "orders/projection", "0:9"},
		{"parked", "replay", "orders/projection", "0:2"},
		{"parked", "discard", "orders/projection", "--all", "--json"},
		{"parked", "orders/projection"},
	}
	for _, step := range steps {
		name := strings.Join(step, " ")
		lout, lerr, lcode := cli(t, append(step, "--data", local)...)
		if step[0] == "append" && lcode == 0 && strings.Contains(lout, `"duplicate":false`) {
			events++
		}
		rout, rerr, rcode := cli(t, append(step, "--server", url, "--token-file", tokenFile)...)
		// The server dispatches in the background: the next command waits for it, as the local
		// append dispatched before it returned.
		for deadline := time.Now().Add(10 * time.Second); feedHead() < events && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		if step[0] == "scavenge" || step[0] == "verify" {
			// What they find depends on the dispatcher having written everything, a moment
			// after the head: look again until the answers agree.
			for deadline := time.Now().Add(10 * time.Second); normalize(rout) != normalize(lout) && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
				rout, rerr, rcode = cli(t, append(step, "--server", url, "--token-file", tokenFile)...)
			}
		}
		if os.Getenv("E2E_DEBUG") != "" {
			t.Logf("%s: exit %d\n%s%s", name, rcode, rout, rerr)
		}
		if normalize(lout) != normalize(rout) || lcode != rcode {
			t.Errorf("%s:\n  on the store (exit %d):\n%s%s\n  through the server (exit %d):\n%s%s", name, lcode, lout, lerr, rcode, rout, rerr)
		}
		if lout == "" && lcode == 0 {
			t.Errorf("%s printed nothing", name)
		}
	}

	// The token from $ESTUITE_TOKEN; none is refused by the server.
	t.Setenv("ESTUITE_TOKEN", token)
	if out, _, code := cli(t, "read", "order-1", "--server", url); code != 0 || !strings.Contains(out, `"type":"Paid"`) {
		t.Fatalf("with $ESTUITE_TOKEN: exit %d\n%s", code, out)
	}
	t.Setenv("ESTUITE_TOKEN", "")
	if _, stderr, code := cli(t, "read", "order-1", "--server", url); code != 1 || !strings.Contains(stderr, "Authorization") {
		t.Fatalf("without a token: exit %d\n%s", code, stderr)
	}

	// A fault found through the server as on the store: the same report, exit 3.
	if code := srv.stop(); code != 0 {
		t.Fatalf("serve exited %d", code)
	}
	removeStreamRow(t, local, "poison", "E0000000000000000001")
	removeStreamRow(t, remote, "poison", "E0000000000000000001")
	srv = serveInProcess(t, nil, "--data", remote, "--token-file", tokenFile, "--scavenge-interval", "-1s")
	for _, args := range [][]string{{"verify"}, {"verify", "--json"}} {
		lout, _, lcode := cli(t, append(args, "--data", local)...)
		rout, rerr, rcode := cli(t, append(args, "--server", srv.url(""), "--token-file", tokenFile)...)
		if lcode != exitInconsistent || rcode != exitInconsistent || normalize(lout) != normalize(rout) || !strings.Contains(lout, "E0000000000000000001") {
			t.Errorf("%s with a fault:\n  on the store (exit %d):\n%s\n  through the server (exit %d):\n%s%s", args, lcode, lout, rcode, rout, rerr)
		}
	}
}

func TestCommandLineFlags(t *testing.T) {
	data := t.TempDir()
	if _, stderr, code := cli(t, "append", "s/1", "T", `{"a":1}`, "--data", data, "--commit-id", "c"); code != 0 {
		t.Fatalf("append with flags after the arguments: exit %d\n%s", code, stderr)
	}
	out, _, code := cli(t, "read", "s/1", "--limit", "5", "--data", data)
	if code != 0 || !strings.Contains(out, `"commitId":"c"`) {
		t.Fatalf("read with flags after the argument: exit %d\n%s", code, out)
	}
	if out, _, code := cli(t, "read", "--data", data, "--", "s/1"); code != 0 || out == "" {
		t.Fatalf("read -- STREAM: exit %d", code)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"read", "s/1", "--limit", "abc"}, `invalid value "abc" for flag --limit`},
		{[]string{"read", "s/1", "--limit", "-1"}, "--limit must not be negative"},
		{[]string{"read", "s/1", "--from", "-3"}, "--from must not be negative"},
		{[]string{"feed", "--after", "-1"}, "--after must be a position"},
		{[]string{"feed", "--shard", "-1"}, "--shard must not be negative"},
		{[]string{"feed", "--follow", "--limit", "3"}, "--limit is not for --follow"},
		{[]string{"read", "s/1", "--bogus"}, "flag provided but not defined: --bogus"},
		{[]string{"append", "s/1", "T", "--data", data, "--expected-version"}, "flag needs an argument: --expected-version"},
		{[]string{"verify", "--backward"}, "not defined: --backward"},
		{[]string{"read", "s/1", "--server", "127.0.0.1:2113"}, "want the server's URL, http://HOST:PORT"},
		{[]string{"read", "s/1", "--server", "http://127.0.0.1:1", "--data", data}, "--data says how to open a store"},
		{[]string{"read", "s/1", "--token", "0123456789abcdef"}, "--token and --token-file are for --server"},
		{[]string{"verify", "--repair", "--server", "http://127.0.0.1:1"}, "--repair works on the store itself"},
		{[]string{"rewrap-keys", "--server", "http://127.0.0.1:1"}, "rewrap-keys works on the store itself"},
		{[]string{"bench", "--server", "http://127.0.0.1:1"}, "bench works on the store itself"},
	} {
		args := c.args
		if j := strings.Join(args, " "); !strings.Contains(j, "--server") && !strings.Contains(j, "--data") {
			args = append(args, "--data", data)
		}
		_, stderr, code := cli(t, args...)
		if code != 2 || !strings.Contains(stderr, c.want) || !strings.Contains(stderr, "usage: estuite "+c.args[0]) {
			t.Errorf("%s: exit %d, want 2 and %q:\n%s", strings.Join(c.args, " "), code, c.want, stderr)
		}
		if regexp.MustCompile(`\b(Limit|From|After|Shard|ReadOptions|FeedOptions)\b`).MatchString(stderr) {
			t.Errorf("%s: a Go name in the message:\n%s", strings.Join(c.args, " "), stderr)
		}
	}
	remote := map[string]bool{"append": true, "read": true, "feed": true, "delete": true, "metadata": true, "scavenge": true,
		"forget": true, "verify": true, "groups": true, "group": true, "parked": true}
	for name := range commands {
		_, stderr, code := cli(t, name, "--help")
		if code != 0 || !strings.Contains(stderr, "usage: estuite "+name) {
			t.Errorf("%s --help: exit %d\n%s", name, code, stderr)
		}
		if remote[name] && (!strings.Contains(stderr, "  --server URL") || !strings.Contains(stderr, "  --token-file")) {
			t.Errorf("%s --help does not list --server and --token-file:\n%s", name, stderr)
		}
		if regexp.MustCompile(`(?m)^  -[a-z]`).MatchString(stderr) {
			t.Errorf("%s --help lists a flag with one dash:\n%s", name, stderr)
		}
	}
	if _, stderr, _ := cli(t, "read", "--help"); !strings.Contains(stderr, "  --limit int") {
		t.Errorf("read --help:\n%s", stderr)
	}
}
