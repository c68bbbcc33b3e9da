package server_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/estuite/estuite"
)

// TestLiveFeedRefusesPositionsPastTheMaximum checks that a Last-Event-ID or after past
// estuite.MaxPosition (or not plainly a number) is answered 400 invalid_request before the stream
// starts, and that the largest positions allowed open a stream that waits quietly.
func TestLiveFeedRefusesPositionsPastTheMaximum(t *testing.T) {
	h := newHarness(t)
	h.appendEvents("s", "A", 3)
	h.dispatch()
	max := strconv.FormatInt(estuite.MaxPosition, 10)
	for _, c := range []struct{ query, lastEventID string }{
		{"", "9223372036854775807"},
		{"", "9223372036854775806"},
		{"", "9223372036854775808"},
		{"", strconv.FormatInt(estuite.MaxPosition+1, 10)},
		{"", "+5"},
		{"", "-0"},
		{"", "5 6"},
		{"", "1e3"},
		{"", "0x10"},
		{"", strings.Repeat("9", 400)},
		{"?after=9223372036854775807", ""},
		{"?after=" + strconv.FormatInt(estuite.MaxPosition+1, 10), ""},
	} {
		var header []string
		if c.lastEventID != "" {
			header = []string{"Last-Event-ID", c.lastEventID}
		}
		ls := h.openLive(c.query, header...)
		if ls.resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s Last-Event-ID %.30q: status %d, want 400", c.query, c.lastEventID, ls.resp.StatusCode)
			ls.close()
			continue
		}
		var body []string
		for line := range ls.lines {
			body = append(body, line)
		}
		r := response{status: ls.resp.StatusCode, header: ls.resp.Header, body: []byte(strings.Join(body, "\n"))}
		if code := r.errorCode(t); code != "invalid_request" {
			t.Errorf("%s Last-Event-ID %.30q: code %s, want invalid_request", c.query, c.lastEventID, code)
		}
	}
	for _, c := range []struct{ query, lastEventID, start string }{
		{"", max, max},
		{"", "00" + max, max},
		{"", strconv.FormatInt(estuite.MaxPosition-1, 10), strconv.FormatInt(estuite.MaxPosition-1, 10)},
		{"?after=" + max, "", max},
		{"?after=3", " 2 ", "2"},
	} {
		var header []string
		if c.lastEventID != "" {
			header = []string{"Last-Event-ID", c.lastEventID}
		}
		ls := h.openLive(c.query, header...)
		if ls.resp.StatusCode != http.StatusOK {
			t.Fatalf("%s Last-Event-ID %q: status %d, want 200", c.query, c.lastEventID, ls.resp.StatusCode)
		}
		select {
		case line := <-ls.lines:
			if want := ": estuite live feed after " + c.start; line != want {
				t.Errorf("%s Last-Event-ID %q: first line %q, want %q", c.query, c.lastEventID, line, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s Last-Event-ID %q: the stream did not start", c.query, c.lastEventID)
		}
		ls.close()
	}
}
