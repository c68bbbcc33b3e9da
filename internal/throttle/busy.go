package throttle

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"net/http"
	"strings"
	"time"
)

// The messages Azure Storage gives with ServerBusy: for a partition over its target, and for an
// account over its request rate.
const (
	partitionBusyMessage = "The server is busy."
	accountBusyMessage   = "Operations per second is over the account limit."
)

// writeServerBusy answers r as Azure's Table service does when it throttles: 503 Server Unavailable,
// x-ms-error-code: ServerBusy, and an OData error whose message ends with the request's id and
// time. The body is JSON when the request accepts it (the SDK asks for
// application/json;odata=minimalmetadata), the XML of the older Atom protocol otherwise. Both
// forms let the SDK read the code from the body as well as from the header. No Retry-After:
// Azure Storage does not send one.
func writeServerBusy(w http.ResponseWriter, r *http.Request, account bool) {
	msg := partitionBusyMessage
	if account {
		msg = accountBusyMessage
	}
	id := requestID()
	msg += "\nRequestId:" + id + "\nTime:" + time.Now().UTC().Format("2006-01-02T15:04:05.0000000Z")
	h := w.Header()
	h.Set("x-ms-error-code", "ServerBusy")
	h.Set("x-ms-request-id", id)
	if v := r.Header.Get("x-ms-version"); v != "" {
		h.Set("x-ms-version", v)
	}
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	var body []byte
	if strings.Contains(r.Header.Get("Accept"), "json") {
		h.Set("Content-Type", "application/json;odata=minimalmetadata;streaming=true;charset=utf-8")
		var e struct {
			Error struct {
				Code    string `json:"code"`
				Message struct {
					Lang  string `json:"lang"`
					Value string `json:"value"`
				} `json:"message"`
			} `json:"odata.error"`
		}
		e.Error.Code, e.Error.Message.Lang, e.Error.Message.Value = "ServerBusy", "en-US", msg
		body, _ = json.Marshal(e)
	} else {
		h.Set("Content-Type", "application/xml;charset=utf-8")
		var esc strings.Builder
		_ = xml.EscapeText(&esc, []byte(msg))
		body = []byte(`<?xml version="1.0" encoding="utf-8"?>` +
			`<error xmlns="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata">` +
			`<code>ServerBusy</code><message xml:lang="en-US">` + esc.String() + `</message></error>`)
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write(body)
}

// requestID returns a random id in the form of Azure's x-ms-request-id (a UUID).
func requestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	s := hex.EncodeToString(b[:])
	return s[:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}
