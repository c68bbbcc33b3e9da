package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/estuite/estuite/internal/azuritetest"
)

// End-to-end tests: they build the estuite binary and drive it as a user would, over HTTP and on
// the command line.

func TestMain(m *testing.M) { azuritetest.Main(m) }

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds the estuite command once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "estuite-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "estuite")
		out, err := exec.Command("go", "build", "-race", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// proc is a running `estuite serve`.
type proc struct {
	cmd    *exec.Cmd
	addr   string
	logs   *syncBuffer
	exited chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// startServe starts `estuite serve` with args and waits until it answers /healthz.
func startServe(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	return startServeAt(t, freePort(t), env, args...)
}

// startServeAt is startServe on a given address (to restart a server as it was).
func startServeAt(t *testing.T, addr string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{addr: addr, logs: &syncBuffer{}, exited: make(chan error, 1)}
	p.cmd = exec.Command(binary(t), append([]string{"serve", "--addr", addr}, args...)...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("server %s logs:\n%s", addr, p.logs.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		select {
		case err := <-p.exited:
			p.exited <- err
			t.Fatalf("estuite serve exited: %v\n%s", err, p.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("estuite serve did not come up:\n%s", p.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proc) url(path string) string { return "http://" + p.addr + path }

// call sends a request and decodes the JSON answer into out (when not nil).
func call(t *testing.T, method, u string, body any, out any) int {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, u, r)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, u, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode
}

type appendResult struct {
	Stream       string `json:"stream"`
	FirstVersion int64  `json:"firstVersion"`
	LastVersion  int64  `json:"lastVersion"`
	CommitID     string `json:"commitId"`
	Duplicate    bool   `json:"duplicate"`
}

type feedEvent struct {
	Stream   string          `json:"stream"`
	Version  int64           `json:"version"`
	Position int64           `json:"position"`
	Type     string          `json:"type"`
	Data     json.RawMessage `json:"data"`
	CommitID string          `json:"commitId"`
}

type feedPage struct {
	Events []feedEvent `json:"events"`
	Next   int64       `json:"next"`
	Head   int64       `json:"head"`
}

// readFeed reads the whole feed through the HTTP API.
func readFeed(t *testing.T, p *proc) []feedEvent {
	t.Helper()
	var all []feedEvent
	after := int64(0)
	for {
		var page feedPage
		if code := call(t, "GET", p.url(fmt.Sprintf("/feed?after=%d&limit=1000", after)), nil, &page); code != 200 {
			t.Fatalf("GET /feed: %d", code)
		}
		all = append(all, page.Events...)
		if page.Next == after {
			return all
		}
		after = page.Next
	}
}

// waitForFeed waits until the feed holds n events, then returns them.
func waitForFeed(t *testing.T, p *proc, n int) []feedEvent {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		feed := readFeed(t, p)
		if len(feed) >= n || time.Now().After(deadline) {
			return feed
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkFeedExactlyOnce checks positions 1..n and that the feed holds exactly the given
// stream/version pairs, each once, each stream in order.
func checkFeedExactlyOnce(t *testing.T, feed []feedEvent, want map[string]int64) {
	t.Helper()
	seen := map[string]int64{}
	for i, ev := range feed {
		if ev.Position != int64(i+1) {
			t.Fatalf("feed entry %d has position %d", i, ev.Position)
		}
		if ev.Version != seen[ev.Stream]+1 {
			t.Fatalf("position %d: %s version %d after version %d", ev.Position, ev.Stream, ev.Version, seen[ev.Stream])
		}
		seen[ev.Stream] = ev.Version
	}
	for stream, v := range want {
		if seen[stream] != v {
			t.Fatalf("feed holds %s up to version %d, the stream is at %d", stream, seen[stream], v)
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("feed holds %d streams, want %d", len(seen), len(want))
	}
}

func TestServeEmbeddedAppendReadFeedAndStopOnSIGTERM(t *testing.T) {
	dir := t.TempDir()
	p := startServe(t, nil, "--data", filepath.Join(dir, "data"))
	stream := "order/42 ?#%é"
	u := p.url("/streams/" + url.PathEscape(stream))
	var res appendResult
	code := call(t, "POST", u, map[string]any{"expectedVersion": "no_stream", "commitId": "c-1",
		"events": []any{map[string]any{"type": "OrderPlaced", "data": map[string]any{"total": 12}}}}, &res)
	if code != 201 || res.LastVersion != 1 || res.Stream != stream {
		t.Fatalf("append: %d %+v", code, res)
	}
	code = call(t, "POST", u, map[string]any{"commitId": "c-1",
		"events": []any{map[string]any{"type": "OrderPlaced", "data": map[string]any{"total": 12}}}}, &res)
	if code != 200 || !res.Duplicate {
		t.Fatalf("retried append: %d %+v", code, res)
	}
	var head struct {
		Version int64 `json:"version"`
	}
	if code := call(t, "GET", u, nil, &head); code != 200 || head.Version != 1 {
		t.Fatalf("GET stream: %d %+v", code, head)
	}
	feed := waitForFeed(t, p, 1)
	checkFeedExactlyOnce(t, feed, map[string]int64{stream: 1})

	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		p.exited <- err
		if err != nil {
			t.Fatalf("serve exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop after SIGTERM")
	}
}

func TestKill9UnderLoadLosesNoAcknowledgedAppend(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	p := startServe(t, nil, "--data", data)
	const writers = 8
	var (
		mu    sync.Mutex
		acked = map[string]int64{} // stream → highest acknowledged version
		stop  atomic.Bool
		wg    sync.WaitGroup
	)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream := fmt.Sprintf("load-%d", w)
			for i := 0; !stop.Load(); i++ {
				body, _ := json.Marshal(map[string]any{"commitId": fmt.Sprintf("%s-%d", stream, i),
					"events": []any{map[string]any{"type": "Tick", "data": i}}})
				resp, err := http.Post(p.url("/streams/"+stream), "application/json", bytes.NewReader(body))
				if err != nil {
					return // the server is gone
				}
				var res appendResult
				json.NewDecoder(resp.Body).Decode(&res)
				resp.Body.Close()
				if resp.StatusCode == 201 {
					mu.Lock()
					acked[stream] = max(acked[stream], res.LastVersion)
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	p.cmd.Process.Kill() // kill -9, under load
	<-p.exited
	p.exited <- nil
	stop.Store(true)
	wg.Wait()
	if len(acked) == 0 {
		t.Fatal("no append was acknowledged before the kill")
	}

	p2 := startServe(t, nil, "--data", data)
	want := map[string]int64{}
	total := 0
	for w := 0; w < writers; w++ {
		stream := fmt.Sprintf("load-%d", w)
		var head struct {
			Version int64 `json:"version"`
		}
		code := call(t, "GET", p2.url("/streams/"+stream), nil, &head)
		if acked[stream] > 0 && (code != 200 || head.Version < acked[stream]) {
			t.Fatalf("%s: acknowledged up to version %d, after the restart: %d version %d", stream, acked[stream], code, head.Version)
		}
		if code == 200 {
			want[stream] = head.Version
			total += int(head.Version)
		}
	}
	checkFeedExactlyOnce(t, waitForFeed(t, p2, total), want)
}

func TestTwoServersOnOneAzuriteAccountFeedEachEventOnce(t *testing.T) {
	conn := azuritetest.ConnectionString(t)
	prefix := "e2e" + strings.ReplaceAll(fmt.Sprint(time.Now().UnixNano()), "-", "")
	env := []string{"AZURE_STORAGE_CONNECTION_STRING=" + conn}
	a := startServe(t, env, "--table-prefix", prefix)
	b := startServe(t, env, "--table-prefix", prefix)
	var wg sync.WaitGroup
	const streams, perStream = 6, 15
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < perStream; j++ {
				srv := a
				if j%2 == 1 {
					srv = b
				}
				var res appendResult
				body := map[string]any{"events": []any{map[string]any{"type": "Tick", "data": j}}}
				if code := call(t, "POST", srv.url(fmt.Sprintf("/streams/two-%d", i)), body, &res); code != 201 {
					t.Errorf("append via %s: %d", srv.addr, code)
				}
			}
		}()
	}
	wg.Wait()
	want := map[string]int64{}
	for i := 0; i < streams; i++ {
		want[fmt.Sprintf("two-%d", i)] = perStream
	}
	checkFeedExactlyOnce(t, waitForFeed(t, a, streams*perStream), want)
	checkFeedExactlyOnce(t, readFeed(t, b), want)
}

func TestServeRefusesOpenAddressWithoutToken(t *testing.T) {
	cmd := exec.Command(binary(t), "serve", "--data", t.TempDir(), "--addr", "0.0.0.0:0")
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "without a token") {
		t.Fatalf("serve on 0.0.0.0 without a token: %v\n%s", err, out)
	}
}

func TestServeWithTokenRequiresIt(t *testing.T) {
	p := startServe(t, []string{"ESTUITE_TOKEN=s3cret-of-16-chars"}, "--data", t.TempDir())
	resp, err := http.Get(p.url("/streams/x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("without a token: %d, want 401", resp.StatusCode)
	}
	req, _ := http.NewRequest("GET", p.url("/streams/x"), nil)
	req.Header.Set("Authorization", "Bearer s3cret-of-16-chars")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("with the token, an unknown stream: %d, want 404", resp.StatusCode)
	}
}

// estuiteCLI runs a command of the binary and returns its stdout and exit code.
func estuiteCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		t.Logf("estuite %s: exit %d\n%s", strings.Join(args, " "), code, stderr.String())
	}
	return stdout.String(), code
}

func TestOperatorCommandsOnTheEmbeddedStore(t *testing.T) {
	data := t.TempDir()
	for i := 0; i < 3; i++ {
		if _, code := estuiteCLI(t, "append", "--data", data, "cart-1", "ItemAdded", fmt.Sprintf(`{"n":%d}`, i)); code != 0 {
			t.Fatalf("append exited %d", code)
		}
	}
	out, code := estuiteCLI(t, "read", "--data", data, "cart-1")
	if code != 0 || strings.Count(out, "\n") != 3 || !strings.Contains(out, `"data":{"n":2}`) {
		t.Fatalf("read: %d\n%s", code, out)
	}
	out, code = estuiteCLI(t, "feed", "--data", data)
	lines := bufio.NewScanner(strings.NewReader(out))
	n := 0
	for lines.Scan() {
		var ev feedEvent
		if err := json.Unmarshal(lines.Bytes(), &ev); err != nil || ev.Position != int64(n+1) {
			t.Fatalf("feed line %d: %s (%v)", n, lines.Text(), err)
		}
		n++
	}
	if code != 0 || n != 3 {
		t.Fatalf("feed: exit %d, %d events", code, n)
	}
	if out, code := estuiteCLI(t, "verify", "--data", data); code != 0 || !strings.Contains(out, "OK") {
		t.Fatalf("verify: exit %d\n%s", code, out)
	}
	if _, code := estuiteCLI(t, "append", "--data", data, "cart-1"); code != 2 {
		t.Fatalf("append without a type: exit %d, want 2", code)
	}
	for _, c := range []string{"serve", "append", "read", "feed", "verify", "forget"} {
		if _, code := estuiteCLI(t, c, "--help"); code != 0 {
			t.Fatalf("%s --help: exit %d", c, code)
		}
	}
	_ = context.Background
}

// TestAPIOverTheBinary drives the whole HTTP API of a running binary, on the embedded store and
// on Azurite: appends and their conflicts, reads, the feed with filters, the live feed, bad input,
// metrics.
func TestAPIOverTheBinary(t *testing.T) {
	for _, bc := range serveBackends("api") {
		t.Run(bc.name, func(t *testing.T) {
			env, args := bc.env(t)
			apiSmoke(t, startServe(t, env, args...))
		})
	}
}

func apiSmoke(t *testing.T, p *proc) {
	type errBody struct {
		Error         string `json:"error"`
		Message       string `json:"message"`
		ActualVersion int64  `json:"actualVersion"`
	}
	stream := "cart/7 #é"
	u := p.url("/streams/" + url.PathEscape(stream))
	var res appendResult
	events := []any{
		map[string]any{"type": "ItemAdded", "data": map[string]any{"sku": "a"}, "metadata": map[string]any{"correlationId": "x"}},
		map[string]any{"type": "Photo", "dataBase64": "AAEC/w=="},
	}
	if code := call(t, "POST", u, map[string]any{"expectedVersion": "no_stream", "commitId": "c1", "events": events}, &res); code != 201 || res.LastVersion != 2 {
		t.Fatalf("append: %d %+v", code, res)
	}
	var eb errBody
	if code := call(t, "POST", u, map[string]any{"expectedVersion": 1, "events": events[:1]}, &eb); code != 409 || eb.Error != "wrong_expected_version" || eb.ActualVersion != 2 {
		t.Fatalf("conflict: %d %+v", code, eb)
	}
	if code := call(t, "POST", u, map[string]any{"commitId": "c1", "events": events[1:]}, &eb); code != 409 || eb.Error != "commit_conflict" {
		t.Fatalf("commit conflict: %d %+v", code, eb)
	}
	for _, bad := range []any{
		map[string]any{"events": []any{}},
		map[string]any{"expectedVersion": "sometimes", "events": events},
		map[string]any{"events": []any{map[string]any{"type": ""}}},
		"not an object",
	} {
		if code := call(t, "POST", u, bad, &eb); code != 400 || eb.Error != "invalid_request" {
			t.Fatalf("bad input %v: %d %+v", bad, code, eb)
		}
	}
	var read struct {
		Version int64 `json:"version"`
		Events  []struct {
			Version    int64           `json:"version"`
			Data       json.RawMessage `json:"data"`
			DataBase64 string          `json:"dataBase64"`
			Metadata   json.RawMessage `json:"metadata"`
		} `json:"events"`
	}
	if code := call(t, "GET", u+"/events?direction=backward&limit=10", nil, &read); code != 200 || read.Version != 2 || len(read.Events) != 2 ||
		read.Events[0].DataBase64 != "AAEC/w==" || string(read.Events[1].Data) != `{"sku":"a"}` || string(read.Events[1].Metadata) != `{"correlationId":"x"}` {
		t.Fatalf("read back: %+v", read)
	}
	if code := call(t, "GET", p.url("/streams/never"), nil, &eb); code != 404 || eb.Error != "stream_not_found" {
		t.Fatalf("unknown stream: %d %+v", code, eb)
	}
	call(t, "POST", p.url("/streams/other"), map[string]any{"events": []any{map[string]any{"type": "Other"}}}, nil)
	feed := waitForFeed(t, p, 3)
	checkFeedExactlyOnce(t, feed, map[string]int64{stream: 2, "other": 1})
	var page feedPage
	if code := call(t, "GET", p.url("/feed?after=0&type=Other"), nil, &page); code != 200 || len(page.Events) != 1 || page.Next != 3 || page.Head != 3 {
		t.Fatalf("filtered feed: %d %+v", code, page)
	}
	// The live feed: resume after position 2, receive position 3, then a new append.
	req, _ := http.NewRequest("GET", p.url("/feed/live"), nil)
	req.Header.Set("Last-Event-ID", "2")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("live feed: %v %v", resp, err)
	}
	defer resp.Body.Close()
	call(t, "POST", p.url("/streams/other"), map[string]any{"events": []any{map[string]any{"type": "Later"}}}, nil)
	scanner := bufio.NewScanner(resp.Body)
	var ids []string
	for len(ids) < 2 && scanner.Scan() {
		if id, ok := strings.CutPrefix(scanner.Text(), "id: "); ok {
			ids = append(ids, id)
		}
	}
	if fmt.Sprint(ids) != "[3 4]" {
		t.Fatalf("live feed delivered ids %v; want [3 4]", ids)
	}
	metrics, err := http.Get(p.url("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(metrics.Body)
	metrics.Body.Close()
	for _, name := range []string{"estuite_append_duration_seconds", "estuite_storage_requests_total", "estuite_feed_head_position", "estuite_dispatch_lag_seconds"} {
		if !strings.Contains(string(body), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

// serveBackend is a backend `estuite serve` runs on in an end-to-end test: env returns the
// environment and the flags that select it.
type serveBackend struct {
	name string
	env  func(t *testing.T) ([]string, []string)
}

// serveBackends are the embedded store (in a new folder) and Azurite (under new tables whose
// names start with prefix).
func serveBackends(prefix string) []serveBackend {
	return []serveBackend{
		{"embedded", func(t *testing.T) ([]string, []string) { return nil, []string{"--data", t.TempDir()} }},
		{"azurite", func(t *testing.T) ([]string, []string) {
			conn := azuritetest.ConnectionString(t)
			return []string{"AZURE_STORAGE_CONNECTION_STRING=" + conn}, []string{"--table-prefix", fmt.Sprintf("%s%d", prefix, time.Now().UnixNano())}
		}},
	}
}

// A read-only command on a folder that holds no store says so, exits 1, and creates nothing.
func TestReadOnlyCommandsNeverCreateAStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mistyped")
	for _, args := range [][]string{
		{"read", "--data", dir, "cart-1"},
		{"feed", "--data", dir},
		{"verify", "--data", dir},
		{"groups", "--data", dir},
		{"group", "--data", dir, "g"},
	} {
		if out, code := estuiteCLI(t, args...); code != 1 || out != "" {
			t.Errorf("estuite %s: exit %d, stdout %q; want exit 1 and nothing printed", strings.Join(args, " "), code, out)
		}
		if _, err := os.Stat(filepath.Join(dir, "estuite.db")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("estuite %s created a store: %v", strings.Join(args, " "), err)
		}
	}
	// Once something is written, the same commands read it.
	if _, code := estuiteCLI(t, "append", "--data", dir, "cart-1", "ItemAdded", `{"n":1}`); code != 0 {
		t.Fatalf("append exited %d", code)
	}
	if out, code := estuiteCLI(t, "read", "--data", dir, "cart-1"); code != 0 || !strings.Contains(out, "ItemAdded") {
		t.Fatalf("read after an append: exit %d, %q", code, out)
	}
}

// estuite --version names the build: the module version and the Go release it was built with.
func TestVersion(t *testing.T) {
	out, code := estuiteCLI(t, "--version")
	if code != 0 || !strings.HasPrefix(out, "estuite ") || !strings.Contains(out, "go1.") {
		t.Fatalf("estuite --version: exit %d, %q", code, out)
	}
}
