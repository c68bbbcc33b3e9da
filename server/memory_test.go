package server_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/estuite/estuite"
)

// Large events: what one request or one live stream may hold in memory.
const (
	bigEvents    = 60
	bigEventData = 1_000_000 // bytes of JSON data per event: near the 1 MiB entity limit
	// memoryBound is the most heap (in use, above the baseline) one request may take while
	// serving the big events. docs/http-api.md ("Memory per request") quotes it.
	memoryBound = 64 << 20
)

// bigEventStore returns a harness on the embedded (bolt) backend holding n events of
// bigEventData bytes each in stream "big", all dispatched to the feed. The stored events live in
// the file, not in the heap, so that the heap measures the request alone.
func bigEventStore(t *testing.T, n int, opts ...harnessOption) *harness {
	t.Helper()
	h := newHarnessOn(t, backends[1], opts...)
	data := make([]byte, bigEventData)
	for i := range data {
		data[i] = 'a' + byte(i%26)
	}
	data[0], data[len(data)-1] = '"', '"' // a JSON string
	ctx := context.Background()
	for range n {
		if _, err := h.store.Append(ctx, "big", []estuite.EventData{{Type: "Big", Data: data}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	h.dispatch()
	return h
}

// heapPeak runs f and returns the highest heap in use (HeapAlloc) seen while it ran, above what
// was in use before. The garbage collector runs at GOGC=25 meanwhile, so that the figure is
// close to the memory f kept alive rather than to garbage not yet collected.
func heapPeak(t *testing.T, f func()) uint64 {
	t.Helper()
	defer debug.SetGCPercent(debug.SetGCPercent(25))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapAlloc, ms.HeapAlloc
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Microsecond):
			}
		}
	}()
	stopped := false
	stopSampling := func() {
		if !stopped {
			stopped = true
			close(stop)
			<-done
		}
	}
	defer stopSampling() // also when f fails the test
	f()
	stopSampling()
	return peak - base
}

// get sends a request and counts its body's bytes without keeping them.
func (h *harness) get(method, path string) (status int, n int64) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.ts.URL+path, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	n, err = io.Copy(io.Discard, res.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return res.StatusCode, n
}

// TestLargeEventsMemoryPerRequest reads 60 events of 1 MB each through every read route and
// checks that no request takes more than memoryBound of heap: pages are cut by bytes, bodies are
// encoded event by event, HEAD loads no events.
func TestLargeEventsMemoryPerRequest(t *testing.T) {
	if testing.Short() {
		t.Skip("appends 60 MB")
	}
	h := bigEventStore(t, bigEvents)
	cases := []struct {
		name, method, path string
		minBytes           int64 // the body is at least this long
	}{
		{"feed page", "GET", "/feed?limit=1000", bigEventData},
		{"feed page HEAD", "HEAD", "/feed?limit=1000", 0},
		{"filtered feed page", "GET", "/feed?limit=1000&type=Other", 0},
		{"stream read", "GET", "/streams/big/events?limit=1000", bigEvents * bigEventData},
		{"stream read backward", "GET", "/streams/big/events?limit=1000&direction=backward", bigEvents * bigEventData},
		{"stream read HEAD", "HEAD", "/streams/big/events?limit=1000", 0},
	}
	for _, c := range cases {
		var status int
		var n int64
		peak := heapPeak(t, func() { status, n = h.get(c.method, c.path) })
		t.Logf("%s: %d bytes answered, heap peak %.1f MiB above baseline", c.name, n, float64(peak)/(1<<20))
		if status != http.StatusOK || n < c.minBytes {
			t.Errorf("%s: status %d, %d bytes; want 200 and at least %d bytes", c.name, status, n, c.minBytes)
		}
		if peak > memoryBound {
			t.Errorf("%s: heap peak %d MiB above baseline, want at most %d MiB", c.name, peak>>20, memoryBound>>20)
		}
	}

	// A live stream that reads the whole history.
	peak := heapPeak(t, func() {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", h.ts.URL+"/feed/live", nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if got := readLiveIDs(t, res.Body, bigEvents); got != bigEvents {
			t.Errorf("live stream: %d events, want %d", got, bigEvents)
		}
	})
	t.Logf("live stream: heap peak %.1f MiB above baseline", float64(peak)/(1<<20))
	if peak > memoryBound {
		t.Errorf("live stream: heap peak %d MiB above baseline, want at most %d MiB", peak>>20, memoryBound>>20)
	}
}

// readLiveIDs reads a live stream until it has seen want "id:" lines, keeping no more than a
// fragment of a line at a time, and returns how many it saw.
func readLiveIDs(t *testing.T, body io.Reader, want int) int {
	t.Helper()
	br := bufio.NewReaderSize(body, 64<<10)
	seen, lineStart := 0, true
	for seen < want {
		frag, isPrefix, err := br.ReadLine()
		if err != nil {
			t.Logf("live stream ended after %d events: %v", seen, err)
			return seen
		}
		if lineStart && bytes.HasPrefix(frag, []byte("id: ")) {
			seen++
		}
		if lineStart && bytes.HasPrefix(frag, []byte("event: error")) {
			t.Fatalf("live stream failed: %s", frag)
		}
		lineStart = !isPrefix
	}
	return seen
}

// TestLargeEventsPagedByBytes pages through the feed of big events by next, as clients do: every
// page holds at least one event, fewer than the limit, and together they hold every event once.
func TestLargeEventsPagedByBytes(t *testing.T) {
	if testing.Short() {
		t.Skip("appends 60 MB")
	}
	h := bigEventStore(t, bigEvents)
	after, seen, pages := int64(0), 0, 0
	for ; ; pages++ {
		if pages > bigEvents {
			t.Fatal("the feed does not end")
		}
		r := h.do("GET", fmt.Sprintf("/feed?after=%d&limit=1000", after), nil)
		mustStatus(t, r, http.StatusOK)
		var page feedResult
		r.decode(t, &page)
		if page.Next == after {
			if page.Head != bigEvents || len(page.Events) != 0 {
				t.Fatalf("end of the feed: %d events, head %d", len(page.Events), page.Head)
			}
			break
		}
		if len(page.Events) == 0 || len(page.Events) >= bigEvents {
			t.Fatalf("page after %d: %d events, want 1 to %d", after, len(page.Events), bigEvents-1)
		}
		for _, ev := range page.Events {
			seen++
			if ev.Position != int64(seen) || len(ev.Data) != bigEventData || !strings.HasPrefix(string(ev.Data), `"bcd`) {
				t.Fatalf("event %d: position %d, %d bytes of data", seen, ev.Position, len(ev.Data))
			}
		}
		if page.Next != page.Events[len(page.Events)-1].Position {
			t.Fatalf("next %d, last event %d", page.Next, page.Events[len(page.Events)-1].Position)
		}
		after = page.Next
	}
	if seen != bigEvents {
		t.Fatalf("read %d events, want %d", seen, bigEvents)
	}
	t.Logf("%d events of %d bytes in %d pages", seen, bigEventData, pages)
}
