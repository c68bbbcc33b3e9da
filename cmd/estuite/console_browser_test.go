package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table/bolt"
)

// The web console's browser tests: a real `estuite serve` on an embedded store, driven by the
// system's chromium through playwright-core (npm), one browser for every page. The script,
// testdata/console/console.mjs, prints one line per page test ("PASS name ms", "FAIL name:
// message", "SKIP name: why"), "STOP" when it wants the server stopped (it then waits for
// "STOPPED" on its standard input) and "START" when it wants it started again on the same address
// and store (then "STARTED"). A second server, with a token, serves the login test.

const chromiumPath = "/usr/bin/chromium"

// browserTools returns node's path and the repository root, or skips the test (fails it under
// CI, where .ci/run installs chromium and playwright-core) when they are missing.
func browserTools(t *testing.T) (node, root string) {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	if _, err := os.Stat(chromiumPath); err != nil {
		missing = append(missing, chromiumPath+" (apt-get install chromium)")
	}
	if _, err := os.Stat(filepath.Join(root, "node_modules", "playwright-core", "package.json")); err != nil {
		missing = append(missing, "node_modules/playwright-core (npm ci)")
	}
	node, err = exec.LookPath("node")
	if err != nil {
		missing = append(missing, "node")
	}
	if len(missing) > 0 {
		msg := "the console's browser tests need " + strings.Join(missing, ", ")
		if os.Getenv("CI") != "" {
			t.Fatal(msg + "; CI must have them (.ci/run installs them)")
		}
		t.Skip(msg)
	}
	return node, root
}

// screenshotDir is where the tests save a PNG of each page: $ESTUITE_ARTIFACTS/screenshots, or
// artifacts/screenshots in the repository.
func screenshotDir(t *testing.T, root string) string {
	t.Helper()
	dir := filepath.Join(root, "artifacts", "screenshots")
	if a := os.Getenv("ESTUITE_ARTIFACTS"); a != "" {
		dir = filepath.Join(a, "screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The screenshots of a failed page test are named NAME-failed.png: only this run's may stay.
	old, _ := filepath.Glob(filepath.Join(dir, "*-failed.png"))
	for _, f := range old {
		os.Remove(f)
	}
	return dir
}

// seedConsoleStore writes what the pages show into a new embedded store in dir, before the server
// opens it (the embedded store is one process at a time): streams with JSON and binary events, a
// durable subscription's checkpoint, and a consumer group with a parked event.
func seedConsoleStore(t *testing.T, dir string) {
	t.Helper()
	ctx := context.Background()
	b, err := bolt.Open(filepath.Join(dir, "estuite.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	store, err := estuite.Open(ctx, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	appends := []struct {
		stream string
		events []estuite.EventData
	}{
		{"order-1", []estuite.EventData{
			{Type: "OrderPlaced", Data: []byte(`{"total":"12.50","items":[{"sku":"A-1","qty":2}]}`), Metadata: []byte(`{"correlationId":"req-7"}`)},
			{Type: "OrderPaid", Data: []byte(`{"amount":"12.50"}`)}}},
		{"order-2", []estuite.EventData{{Type: "OrderPlaced", Data: []byte(`{"total":"3.10"}`)}}},
		{"blob-1", []estuite.EventData{{Type: "PhotoUploaded", Format: estuite.Binary, Data: []byte("hello")}}},
		{"invoice-1", []estuite.EventData{{Type: "InvoiceFailed", Data: []byte(`{"reason":"card declined"}`)}}},
	}
	for i := range 55 { // more than a page of the list
		appends = append(appends, struct {
			stream string
			events []estuite.EventData
		}{fmt.Sprintf("customer-%02d", i), []estuite.EventData{{Type: "CustomerRegistered", Data: []byte(`{}`)}}})
	}
	long := make([]estuite.EventData, 45)
	for i := range long {
		long[i] = estuite.EventData{Type: "Ticked", Data: []byte(fmt.Sprintf(`{"tick":%d}`, i+1))}
	}
	appends = append(appends, struct {
		stream string
		events []estuite.EventData
	}{"long-1", long})
	for _, a := range appends {
		if _, err := store.Append(ctx, a.stream, a.events, nil); err != nil {
			t.Fatal(err)
		}
	}
	d := estuite.NewDispatcher(store, nil)
	for i := 0; ; i++ {
		st, err := d.Step(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Streams == 0 || i > 100 {
			break
		}
	}
	handled := make(chan struct{}, 200)
	sub, err := store.Subscribe(ctx, estuite.SubscriptionOptions{Name: "read-model", CheckpointEvery: 1,
		Handler: func(context.Context, estuite.FeedEvent) error { handled <- struct{}{}; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	for range 105 {
		<-handled
	}
	if err := sub.Stop(); err != nil {
		t.Fatal(err)
	}
	m, err := store.JoinGroup(ctx, estuite.GroupOptions{Group: "billing", Member: "seed", MaxRetries: 1,
		RetryBackoff: time.Millisecond, MaxRetryBackoff: 2 * time.Millisecond, PollInterval: 5 * time.Millisecond,
		CheckpointInterval: 20 * time.Millisecond, LeaseDuration: time.Second,
		Handler: func(_ context.Context, ev estuite.FeedEvent) error {
			if ev.Type == "InvoiceFailed" {
				return errors.New("billing refused invoice-1: card declined")
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	deadline := time.Now().Add(20 * time.Second)
	for {
		parked, err := store.ParkedEvents(ctx, "billing", 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(parked) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the seed group parked %d events, want 1", len(parked))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestConsoleInBrowser opens every page of the web console in chromium and checks what a person
// would see: a stream's events with their pretty-printed data, the live tail (new events, pause
// and resume, and reconnecting on its own after the server restarts), the dispatcher's feed head,
// a parked event replayed, a verification's progress and result, and the cost page.
func TestConsoleInBrowser(t *testing.T) {
	node, root := browserTools(t)
	shots := screenshotDir(t, root)
	dir := t.TempDir()
	seedConsoleStore(t, dir)
	addr := freePort(t)
	args := []string{"--data", dir}
	p := startServeAt(t, addr, nil, args...)
	const token = "console-browser-test-token-0123456789"
	tokenServer := startServe(t, []string{"ESTUITE_TOKEN=" + token}, "--data", t.TempDir())

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("testdata", "console", "console.mjs"))
	cmd.Env = append(os.Environ(), "ESTUITE_URL=http://"+addr, "ESTUITE_SCREENSHOTS="+shots, "CHROMIUM="+chromiumPath,
		"ESTUITE_TOKEN_URL=http://"+tokenServer.addr, "ESTUITE_TOKEN="+token)
	cmd.Stderr = &prefixWriter{t: t, prefix: "console.mjs: "}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	results := 0
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		verdict, rest, _ := strings.Cut(line, " ")
		name, detail, _ := strings.Cut(rest, " ")
		name = strings.TrimSuffix(name, ":")
		switch verdict {
		case "STOP":
			// Stop the server as an operator would (SIGTERM), then start it again on the same
			// address and store: the page must reconnect by itself.
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if err := <-p.exited; err != nil {
				t.Fatalf("estuite serve did not stop cleanly: %v\n%s", err, p.logs.String())
			}
			p.exited <- nil // for its cleanup
			io.WriteString(stdin, "STOPPED\n")
		case "START":
			p = startServeAt(t, addr, nil, args...)
			io.WriteString(stdin, "STARTED\n")
		case "PASS", "FAIL", "SKIP":
			results++
			t.Run(name, func(t *testing.T) {
				switch verdict {
				case "FAIL":
					t.Error(detail)
				case "SKIP":
					t.Skip(detail)
				default:
					t.Logf("%s", detail)
				}
			})
		default:
			t.Log(line)
		}
	}
	err = cmd.Wait()
	t.Logf("browser part: %v for %d page tests; screenshots in %s", time.Since(start).Round(time.Millisecond), results, shots)
	if err != nil {
		t.Fatalf("console.mjs: %v", err)
	}
	if results == 0 {
		t.Fatal("console.mjs reported no test")
	}
}

// prefixWriter logs what a child process writes, line by line.
type prefixWriter struct {
	t      *testing.T
	prefix string
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.t.Log(w.prefix + line)
	}
	return len(p), nil
}
