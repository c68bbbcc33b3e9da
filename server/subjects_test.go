package server_test

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// subjectPath is the escaped path of a subject.
func subjectPath(subject string) string { return "/subjects/" + url.PathEscape(subject) }

// An event may name a subject; reads, the feed and the live feed show it. After DELETE
// /subjects/{subject} (204, idempotent) the subject's events read "erased": true without data,
// dataBase64 or metadata everywhere, GET /subjects/{subject} says so, and an append naming the
// subject is a 410 subject_forgotten.
func TestSubjectErasureOverHTTP(t *testing.T) {
	for _, bc := range backends {
		t.Run(bc.name, func(t *testing.T) {
			h := newHarnessOn(t, bc, withToken("tok"))
			const subject = "user/1 é?#" // characters a path must escape
			photo := base64.StdEncoding.EncodeToString([]byte("face\x00"))
			body := fmt.Sprintf(`{"events": [
				{"type": "Registered", "subject": %q, "data": {"name": "Ann"}, "metadata": {"ip": "10.0.0.1"}},
				{"type": "Photo", "subject": %q, "dataBase64": %q},
				{"type": "Public", "data": {"n": 1}},
				{"type": "Other", "subject": "someone-else", "data": {"name": "Bo"}}
			]}`, subject, subject, photo)
			mustStatus(t, h.do("POST", streamPath("people"), body), http.StatusCreated)
			h.dispatch()
			live := h.openLive("?after=0")
			for i := 0; i < 4; i++ {
				if ev := live.nextEvent(t); ev.Erased || (i < 2) != (ev.Subject == subject) {
					t.Errorf("live event %d before Forget: subject %q erased %v", i, ev.Subject, ev.Erased)
				}
			}
			live.close()

			read := func() []wireEvent {
				r := h.do("GET", streamPath("people", "/events"), nil)
				mustStatus(t, r, http.StatusOK)
				var res readResult
				r.decode(t, &res)
				return res.Events
			}
			evs := read()
			if evs[0].Subject != subject || compact(t, evs[0].Data) != `{"name":"Ann"}` || compact(t, evs[0].Metadata) != `{"ip":"10.0.0.1"}` || evs[0].Erased {
				t.Errorf("event 1 before Forget: %+v", evs[0])
			}
			if evs[1].DataBase64 == nil || *evs[1].DataBase64 != photo || evs[2].Subject != "" {
				t.Errorf("events 2 and 3 before Forget: %+v %+v", evs[1], evs[2])
			}
			state := func(s string) string {
				r := h.do("GET", subjectPath(s), nil)
				mustStatus(t, r, http.StatusOK)
				return compact(t, r.body)
			}
			if got, want := state(subject), fmt.Sprintf(`{"subject":%q,"forgotten":false}`, subject); got != want {
				t.Errorf("GET subject before Forget: %s, want %s", got, want)
			}
			for range 2 {
				r := h.do("DELETE", subjectPath(subject), nil)
				mustStatus(t, r, http.StatusNoContent)
				if len(r.body) != 0 {
					t.Errorf("DELETE answered a body: %s", r.body)
				}
			}
			if got, want := state(subject), fmt.Sprintf(`{"subject":%q,"forgotten":true}`, subject); got != want {
				t.Errorf("GET subject after Forget: %s, want %s", got, want)
			}

			checkErased := func(where string, evs []wireEvent) {
				t.Helper()
				if len(evs) != 4 {
					t.Fatalf("%s: %d events", where, len(evs))
				}
				for i, ev := range evs[:2] {
					if !ev.Erased || ev.Subject != subject || ev.Data != nil || ev.DataBase64 != nil || ev.Metadata != nil {
						t.Errorf("%s: event %d after Forget: %+v, want erased without data, dataBase64, metadata", where, i+1, ev)
					}
				}
				if evs[2].Erased || compact(t, evs[2].Data) != `{"n":1}` || evs[3].Erased || compact(t, evs[3].Data) != `{"name":"Bo"}` {
					t.Errorf("%s: events of no or another subject changed: %+v %+v", where, evs[2], evs[3])
				}
			}
			checkErased("stream read", read())
			r := h.do("GET", "/feed?after=0", nil)
			mustStatus(t, r, http.StatusOK)
			var feed feedResult
			r.decode(t, &feed)
			checkErased("feed", feed.Events)
			live = h.openLive("?after=0")
			var liveEvs []wireEvent
			for range 4 {
				liveEvs = append(liveEvs, live.nextEvent(t))
			}
			checkErased("live feed", liveEvs)
			// The raw JSON has no data member at all for an erased event.
			raw := h.do("GET", streamPath("people", "/events")+"?limit=1", nil)
			if s := string(raw.body); strings.Contains(s, `"data"`) || strings.Contains(s, `"metadata"`) || !strings.Contains(s, `"erased":true`) {
				t.Errorf("an erased event's JSON: %s", s)
			}

			r = h.do("POST", streamPath("people"), fmt.Sprintf(`{"events": [{"type": "Back", "subject": %q}]}`, subject))
			mustStatus(t, r, http.StatusGone)
			if code := r.errorCode(t); code != "subject_forgotten" {
				t.Errorf("append naming a forgotten subject: code %s", code)
			}
			if got := compact(t, h.do("GET", streamPath("people"), nil).body); got != `{"stream":"people","version":4}` {
				t.Errorf("the refused append wrote: %s", got)
			}
			// Forgetting needs the token like everything else.
			r = h.do("DELETE", subjectPath("someone-else"), nil, "Authorization", "")
			mustStatus(t, r, http.StatusUnauthorized)
			if state("someone-else") != `{"subject":"someone-else","forgotten":false}` {
				t.Error("an unauthorized DELETE forgot the subject")
			}
		})
	}
}

// Bad subjects are 400 invalid_request, and write nothing.
func TestBadSubjectsOverHTTP(t *testing.T) {
	h := newHarness(t)
	for _, ev := range []string{
		`{"type": "T", "subject": ""}`,
		`{"type": "T", "subject": 7}`,
		`{"type": "T", "subject": "a\u0001b"}`,
		fmt.Sprintf(`{"type": "T", "subject": %q}`, strings.Repeat("x", 129)),
	} {
		r := h.do("POST", streamPath("s"), `{"events": [`+ev+`]}`)
		mustStatus(t, r, http.StatusBadRequest)
		if code := r.errorCode(t); code != "invalid_request" {
			t.Errorf("%s: code %s", ev, code)
		}
	}
	mustStatus(t, h.do("GET", streamPath("s"), nil), http.StatusNotFound)
	long := subjectPath(strings.Repeat("x", 129))
	for _, method := range []string{"GET", "DELETE"} {
		r := h.do(method, long, nil)
		mustStatus(t, r, http.StatusBadRequest)
		if code := r.errorCode(t); code != "invalid_request" {
			t.Errorf("%s of a too long subject: code %s", method, code)
		}
	}
	r := h.do("GET", subjectPath("x")+"?bogus=1", nil)
	mustStatus(t, r, http.StatusBadRequest)
}
