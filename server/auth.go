package server

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// Browser authentication. A web page cannot give EventSource an Authorization header, and must
// not keep the long-lived token in a URL (it ends up in logs and history). Two ways out, both
// MACs over an expiry and random bytes, keyed by Options.SessionKey (random per process when not
// set) and the token's hash, so that they need no state, and changing the token ends them all:
//
//   - a session: POST /auth/session with the token sets an HttpOnly, SameSite=Strict cookie that
//     authenticates the page's own fetches and EventSources for SessionDuration (the console);
//   - a ticket: POST /auth/ticket (authenticated) returns a string that authenticates GET requests
//     as ?ticket= for TicketDuration — an EventSource of a page on another origin.
//
// The key is not derived from the token alone: a ticket, which may end up in a log, must not let
// its reader test guesses of the token offline.
const (
	// SessionCookie is the name of the console's session cookie.
	SessionCookie = "estuite_session"
	// SessionDuration is how long a session lasts.
	SessionDuration = 12 * time.Hour
	// TicketDuration is how long a ticket authenticates GET requests.
	TicketDuration = 60 * time.Second

	maxAuthBodyBytes = 4 << 10
	credentialNonce  = 16
)

// Credential kinds, part of what a credential's MAC covers, so that a ticket is never a session.
const (
	kindSession = "session"
	kindTicket  = "ticket"
)

// MinSessionKeyBytes is the shortest Options.SessionKey.
const MinSessionKeyBytes = 32

// credentialKey is the key of the MACs of sessions and tickets of kind: the session key's MAC of
// the kind and the token's hash.
func (s *Server) credentialKey(kind string) []byte {
	m := hmac.New(sha256.New, s.sessionKey)
	m.Write([]byte("estuite-credential-v1/" + kind + "/"))
	m.Write(s.tokenHash[:])
	return m.Sum(nil)
}

// issueCredential returns a credential of kind that expires at expires:
// base64url(expiry seconds ‖ nonce) "." base64url(MAC).
func (s *Server) issueCredential(kind string, expires time.Time) string {
	payload := make([]byte, 8+credentialNonce)
	binary.BigEndian.PutUint64(payload, uint64(expires.Unix()))
	_, _ = rand.Read(payload[8:])
	m := hmac.New(sha256.New, s.credentialKey(kind))
	m.Write(payload)
	enc := base64.RawURLEncoding
	return enc.EncodeToString(payload) + "." + enc.EncodeToString(m.Sum(nil))
}

// checkCredential reports whether c is a credential of kind that has not expired, and when it
// expires.
func (s *Server) checkCredential(kind, c string, now time.Time) (time.Time, bool) {
	p, mac, ok := strings.Cut(c, ".")
	if !ok || len(c) > 128 {
		return time.Time{}, false
	}
	enc := base64.RawURLEncoding
	payload, err1 := enc.DecodeString(p)
	sum, err2 := enc.DecodeString(mac)
	if err1 != nil || err2 != nil || len(payload) != 8+credentialNonce {
		return time.Time{}, false
	}
	m := hmac.New(sha256.New, s.credentialKey(kind))
	m.Write(payload)
	if subtle.ConstantTimeCompare(m.Sum(nil), sum) != 1 {
		return time.Time{}, false
	}
	secs := binary.BigEndian.Uint64(payload)
	if secs > 1<<40 {
		return time.Time{}, false
	}
	expires := time.Unix(int64(secs), 0)
	return expires, now.Before(expires)
}

// session returns the expiry of the request's valid session cookie, if it has one.
func (s *Server) session(r *http.Request) (time.Time, bool) {
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return time.Time{}, false
	}
	return s.checkCredential(kindSession, c.Value, time.Now())
}

// takeTicket removes the ticket parameter from a GET or HEAD request's query, so that the
// handlers never see it, and records whether it was valid. Other methods keep their query (and
// their handlers refuse a ticket parameter as unknown).
func (s *Server) takeTicket(r *http.Request, info *requestInfo) {
	if (r.Method != http.MethodGet && r.Method != http.MethodHead) || !strings.Contains(r.URL.RawQuery, "ticket=") {
		return
	}
	var kept []string
	for part := range strings.SplitSeq(r.URL.RawQuery, "&") {
		if v, ok := strings.CutPrefix(part, "ticket="); ok {
			info.ticketSent = true
			_, valid := s.checkCredential(kindTicket, v, time.Now())
			info.ticketValid = valid && !info.ticketBad
			info.ticketBad = info.ticketBad || !valid // a second ticket parameter, valid or not, spoils it
			continue
		}
		kept = append(kept, part)
	}
	r.URL.RawQuery = strings.Join(kept, "&")
}

// credentialsOK reports whether the request carries the token, a valid session cookie or (for
// GET and HEAD) a valid ticket. Always true without a token.
func (s *Server) credentialsOK(r *http.Request) bool {
	if !s.auth {
		return true
	}
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	h := sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(h[:], s.tokenHash[:]) == 1 && strings.EqualFold(scheme, "Bearer") {
		return true
	}
	if requestInfoOf(r).ticketValid {
		return true
	}
	_, ok := s.session(r)
	return ok
}

// sessionJSON is the body of GET /auth/session.
type sessionJSON struct {
	Required      bool    `json:"required"`
	Authenticated bool    `json:"authenticated"`
	Expires       *string `json:"expires"`
}

// handleGetSession serves GET /auth/session: whether the server needs credentials, and whether
// the request has them (its session's expiry, when it is a session). Open to everyone.
func (s *Server) handleGetSession(w http.ResponseWriter, r *http.Request) {
	if _, err := parseQuery(r, nil, nil); err != nil {
		s.fail(w, r, err)
		return
	}
	out := sessionJSON{Required: s.auth, Authenticated: s.credentialsOK(r)}
	if exp, ok := s.session(r); ok && s.auth {
		e := formatTime(exp)
		out.Expires = &e
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, out)
}

// handleCreateSession serves POST /auth/session {"token": "…"}: 204 with the session cookie when
// the token is right, 401 when not. Without a token on the server, 204 and no cookie.
func (s *Server) handleCreateSession(w http.ResponseWriter, r *http.Request) {
	if _, err := parseQuery(r, nil, nil); err != nil {
		s.fail(w, r, err)
		return
	}
	body, err := readBody(w, r, maxAuthBodyBytes)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var token *string
	if !json.Valid(body) || jsonKind(body) != '{' {
		s.fail(w, r, badRequest(`the body must be a JSON object {"token": "…"}`))
		return
	}
	err = decodeObject(body, "the body", []string{"token"}, func(_ string, v []byte) error {
		var t string
		if jsonKind(v) != '"' || !decodeString(v, &t) {
			return badRequest("token must be a string")
		}
		token = &t
		return nil
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if token == nil {
		s.fail(w, r, badRequest(`the body must have a token member: {"token": "…"}`))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	if !s.auth {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	h := sha256.Sum256([]byte(*token))
	if subtle.ConstantTimeCompare(h[:], s.tokenHash[:]) != 1 {
		s.writeError(w, r, &apiError{Status: http.StatusUnauthorized, Code: codeUnauthorized, Message: "the token is not valid"})
		return
	}
	expires := time.Now().Add(SessionDuration)
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: s.issueCredential(kindSession, expires), Path: "/",
		Expires: expires, MaxAge: int(SessionDuration.Seconds()), HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}

// handleDeleteSession serves DELETE /auth/session: 204, and the cookie cleared. Open to everyone
// (it changes nothing on the server: a session ends when it expires or the token changes).
func (s *Server) handleDeleteSession(w http.ResponseWriter, r *http.Request) {
	if _, err := parseQuery(r, nil, nil); err != nil {
		s.fail(w, r, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// handleTicket serves POST /auth/ticket: a ticket for GET requests, valid for TicketDuration.
// It needs credentials itself (the token or a session; not a ticket, which only GETs take).
func (s *Server) handleTicket(w http.ResponseWriter, r *http.Request) {
	if _, err := parseQuery(r, nil, nil); err != nil {
		s.fail(w, r, err)
		return
	}
	expires := time.Now().Add(TicketDuration)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, struct {
		Ticket           string `json:"ticket"`
		Expires          string `json:"expires"`
		ExpiresInSeconds int    `json:"expiresInSeconds"`
	}{s.issueCredential(kindTicket, expires), formatTime(expires), int(TicketDuration.Seconds())})
}
