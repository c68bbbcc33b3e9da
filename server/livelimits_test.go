package server_test

import (
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/estuite/estuite/server"
)

// waitFor polls cond every 20 ms until it holds, failing the test after 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting, after 20s, for %s", what)
		}
	}
}

// liveStreamsOpen returns the value of the estuite_live_subscriptions gauge, as written.
func (h *harness) liveStreamsOpen() string {
	h.t.Helper()
	r := h.do("GET", "/metrics", nil)
	for _, l := range strings.Split(string(r.body), "\n") {
		if v, ok := strings.CutPrefix(l, "estuite_live_subscriptions "); ok {
			return v
		}
	}
	return ""
}

// TestLiveStreamOfClientThatNeverReadsIsDropped opens a live stream whose client never reads
// (its socket's receive buffer is tiny) on a feed of large events: once the connection's buffers
// are full, the server's write waits; after LiveWriteTimeout it drops the stream, frees its
// slot (MaxLiveStreams is 1), and the memory it held is released. The heap the stream takes
// meanwhile is bounded too: about one read-ahead batch and one event, not the feed.
func TestLiveStreamOfClientThatNeverReadsIsDropped(t *testing.T) {
	if testing.Short() {
		t.Skip("appends 30 MB")
	}
	h := bigEventStore(t, 30, withServerOptions(func(o *server.Options) {
		o.LiveWriteTimeout = 300 * time.Millisecond
		o.MaxLiveStreams = 1
	}))
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	var conn net.Conn
	peak := heapPeak(t, func() {
		var err error
		conn, err = net.Dial("tcp", strings.TrimPrefix(h.ts.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() }) // before the harness's: a server that keeps writing would not close
		if err := conn.(*net.TCPConn).SetReadBuffer(4 << 10); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write([]byte("GET /feed/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		// The stream holds the only slot until it is dropped: others are refused meanwhile (asked
		// with HEAD, which answers as GET would without opening a stream that would never end).
		waitFor(t, "the slow stream to take the slot", func() bool {
			return h.do("HEAD", "/feed/live", nil).status == http.StatusServiceUnavailable
		})
		waitFor(t, "the slow stream to be dropped", func() bool {
			return h.liveStreamsOpen() == "0"
		})
	})
	t.Logf("slow live stream: heap peak %.1f MiB above baseline", float64(peak)/(1<<20))
	if peak > 16<<20 {
		t.Errorf("a live stream that is not read took %d MiB of heap, want at most 16", peak>>20)
	}
	// Its slot is free again (HEAD answers as GET would, without opening a stream).
	waitFor(t, "the slot to be free", func() bool {
		return h.do("HEAD", "/feed/live", nil).status == http.StatusOK
	})
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("after the drop: heap %.1f MiB above baseline", float64(grown)/(1<<20))
	if grown > 4<<20 {
		t.Errorf("heap %d MiB above what it was before the stream, after it was dropped", grown>>20)
	}
}

// TestLiveStreamsAreCapped checks Options.MaxLiveStreams: over it, GET and HEAD /feed/live answer
// 503 too_many_live_streams with Retry-After and a JSON error body; a stream that ends frees its
// slot.
func TestLiveStreamsAreCapped(t *testing.T) {
	h := newHarness(t, withServerOptions(func(o *server.Options) { o.MaxLiveStreams = 2 }))
	a, b := h.openLive(""), h.openLive("?after=3")
	for _, ls := range []*liveStream{a, b} {
		if ls.resp.StatusCode != http.StatusOK {
			t.Fatalf("live stream under the cap: %d", ls.resp.StatusCode)
		}
	}
	r := h.do("GET", "/feed/live", nil)
	mustStatus(t, r, http.StatusServiceUnavailable)
	if code := r.errorCode(t); code != "too_many_live_streams" {
		t.Errorf("over the cap: %s", code)
	}
	if ra := r.header.Get("Retry-After"); ra == "" {
		t.Error("over the cap: no Retry-After")
	}
	if r := h.do("HEAD", "/feed/live", nil); r.status != http.StatusServiceUnavailable {
		t.Errorf("HEAD over the cap: %d", r.status)
	}
	// Other routes are not affected.
	mustStatus(t, h.do("GET", "/feed", nil), http.StatusOK)

	a.close()
	waitFor(t, "a closed stream's slot", func() bool {
		live := h.openLive("")
		defer live.close()
		return live.resp.StatusCode == http.StatusOK
	})
}
