package server_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/server"
	"github.com/estuite/estuite/table/mem"
)

// TestReviewHealthzTellsNamesUnderAnyHost: /healthz is exempt from the Host check on a server
// without a token because, says guard.go, "it writes nothing and tells no data (at most each feed
// shard's lease, head and pending count)". Since 6d5039a it also tells the dispatcher's owner, the
// lease holder and the last step's error text to every request on a server without a token —
// including one naming a Host the server otherwise refuses (a DNS-rebinding page, which reads the
// answer as same-origin).
func TestReviewHealthzTellsNamesUnderAnyHost(t *testing.T) {
	h := newHarness(t, withDispatcher(estuite.DispatcherOptions{Owner: "node-secret-7"}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := h.dispatcher.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.dispatcher.Stop()
	h.mem.SetFaults(func(c mem.Call) mem.Fault {
		if c.Table == "estuiteevents" && c.Method == mem.MethodQuery {
			return mem.FailBefore
		}
		return mem.NoFault
	})
	h.appendEvents("s", "T", 1)
	foreign := []string{"Host", "rebound.attacker.example"}
	if r := h.do("GET", "/feed", nil, foreign...); r.status != http.StatusForbidden {
		t.Fatalf("GET /feed under a foreign Host: %d, want 403", r.status)
	}
	eventually(t, "healthz under the server's own Host shows a last error", func() bool {
		r := h.do("GET", "/healthz", nil)
		return strings.Contains(string(r.body), "lastError") && strings.Contains(string(r.body), "node-secret-7")
	})
	r := h.do("GET", "/healthz", nil, foreign...)
	mustStatus(t, r, http.StatusOK)
	if body := string(r.body); strings.Contains(body, "node-secret-7") || strings.Contains(body, "lastError") || !strings.Contains(body, `"state":"leading"`) {
		t.Fatalf("/healthz under the foreign Host %q tells names and error texts: %s", foreign[1], body)
	}
}

// TestReviewTicketIsAnOfflineTokenOracle: tickets are made to be put into URLs (which, says
// auth.go, "end up in logs and history"). A ticket is HMAC(HMAC(sha256(token), label), payload)
// with no secret but the token: whoever reads one ticket from a log can test token guesses
// offline, at hash speed, without asking the server — the long-lived token is exposed to a
// dictionary attack by the short-lived credential meant to keep it out of URLs.
func TestReviewTicketIsAnOfflineTokenOracle(t *testing.T) {
	const token = "correct horse battery"
	h := newHarness(t, withToken(token))
	r := h.do("POST", "/auth/ticket", nil)
	mustStatus(t, r, http.StatusOK)
	var tk struct{ Ticket string }
	r.decode(t, &tk)
	payloadText, macText, _ := strings.Cut(tk.Ticket, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(payloadText)
	mac, _ := base64.RawURLEncoding.DecodeString(macText)
	guesses := []string{"password12345678", "estuite-token-000", "correct horse battery", "letmein-letmein!"}
	for _, g := range guesses {
		th := sha256.Sum256([]byte(g))
		k := hmac.New(sha256.New, th[:])
		k.Write([]byte("estuite-credential-v1/ticket"))
		m := hmac.New(sha256.New, k.Sum(nil))
		m.Write(payload)
		if hmac.Equal(m.Sum(nil), mac) {
			t.Fatalf("the token %q was recovered offline from one ticket (%d guesses, no request to the server)", g, len(guesses))
		}
	}
}

// TestReviewTicketQueryTricks: query-string tricks around ?ticket= (these held).
func TestReviewTicketQueryTricks(t *testing.T) {
	const token = "0123456789abcdef-token"
	h := newHarness(t, withToken(token))
	r := h.do("POST", "/auth/ticket", nil)
	mustStatus(t, r, http.StatusOK)
	var tk struct{ Ticket string }
	r.decode(t, &tk)
	noAuth := []string{"Authorization", ""}
	r = h.do("POST", "/auth/session", map[string]string{"token": token}, noAuth...)
	cookies := (&http.Response{Header: r.header}).Cookies()
	session := cookies[0].Value
	for _, c := range []struct {
		query string
		want  int
	}{
		{"ticket=" + tk.Ticket, 200},
		{"ticket=" + tk.Ticket + "&ticket=" + tk.Ticket, 200},
		{"ticket=" + tk.Ticket + "&ticket=", 401},
		{"ticket=&ticket=" + tk.Ticket, 401},
		{"%74icket=" + tk.Ticket, 401},
		{"ticket=" + tk.Ticket + ";limit=1", 401},
		{"limit=1;ticket=" + tk.Ticket, 401},
		{"prefix=ticket=" + tk.Ticket, 401},
		{"ticket=" + session, 401}, // a session is not a ticket
		{"ticket=" + strings.Repeat("A", 100000), 401},
		{"ticket=" + tk.Ticket + "&limit=1&prefix=%00", 400},
	} {
		if r := h.do("GET", "/streams?"+c.query, nil, noAuth...); r.status != c.want {
			t.Errorf("GET /streams?%.80s: %d, want %d: %s", c.query, r.status, c.want, r.body)
		}
	}
	if r := h.do("HEAD", "/streams?ticket="+tk.Ticket, nil, noAuth...); r.status != 200 {
		t.Errorf("HEAD with a ticket: %d", r.status)
	}
	// A ticket on a write, or on POST /auth/ticket (to mint a fresh one): refused.
	for _, p := range []string{"/auth/ticket?ticket=" + tk.Ticket, "/auth/session?ticket=" + tk.Ticket} {
		if r := h.do("POST", p, map[string]string{"token": "x"}, noAuth...); r.status < 400 {
			t.Errorf("POST %s: %d", p, r.status)
		}
	}
	// A session cookie is refused when sent as the ticket parameter and vice versa; an Origin of
	// another port of the host (same site) is refused for the session's POSTs.
	if r := h.do("POST", "/auth/ticket", nil, "Authorization", "", "Cookie", server.SessionCookie+"="+session,
		"Origin", "http://127.0.0.1:1"); r.status != http.StatusForbidden {
		t.Errorf("POST /auth/ticket from another port's page: %d, want 403", r.status)
	}
}
