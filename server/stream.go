package server

import (
	"bytes"
	"encoding/json"
	"net/http"
)

// streamFlushBytes is how much encoded JSON a jsonWriter gathers before it writes to the
// connection.
const streamFlushBytes = 64 << 10

// jsonWriter sends a JSON response as it is encoded, value by value, rather than building the
// whole body first: a page of large events is never held a second time as its JSON. The body
// has no Content-Length (HTTP/1.1 sends it chunked). Until its first write to the connection
// (streamFlushBytes of JSON, or close) the response can still become an error response;
// after, a failure can only cut it short (see Server.failStream).
type jsonWriter struct {
	w       http.ResponseWriter
	status  int
	buf     bytes.Buffer
	enc     *json.Encoder
	started bool  // the status line is sent
	err     error // the first failed write: the client is gone or too slow
}

func newJSONWriter(w http.ResponseWriter, status int) *jsonWriter {
	j := &jsonWriter{w: w, status: status}
	j.enc = json.NewEncoder(&j.buf)
	j.enc.SetEscapeHTML(false) // as writeJSON
	return j
}

// raw adds JSON text as it is.
func (j *jsonWriter) raw(s string) {
	j.buf.WriteString(s)
	j.maybeFlush()
}

// value adds v's JSON encoding. Only a value that cannot be encoded (stored data that is not
// valid JSON) fails, and then nothing of it is added.
func (j *jsonWriter) value(v any) error {
	if err := j.enc.Encode(v); err != nil {
		return err
	}
	j.buf.Truncate(j.buf.Len() - 1) // Encode's newline
	j.maybeFlush()
	return nil
}

func (j *jsonWriter) maybeFlush() {
	if j.buf.Len() >= streamFlushBytes {
		j.flush()
	}
}

// flush sends what is gathered, the status line and headers first.
func (j *jsonWriter) flush() {
	if !j.started {
		j.started = true
		setJSONHeaders(j.w.Header())
		j.w.WriteHeader(j.status)
	}
	if j.err == nil && j.buf.Len() > 0 {
		_, j.err = j.w.Write(j.buf.Bytes())
	}
	j.buf.Reset()
}

// close sends the rest of the body.
func (j *jsonWriter) close() { j.flush() }

// setJSONHeaders sets the headers of every JSON answer but Content-Length.
func setJSONHeaders(h http.Header) {
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
}

// failStream answers err met while streaming j: as an ordinary error response when nothing has
// been sent yet; otherwise by cutting the response short (http.ErrAbortHandler: the connection
// is closed, or the HTTP/2 stream reset, so that the client sees an incomplete body, never a
// complete-looking one), unless the client has gone away already. The error is logged either way.
func (s *Server) failStream(j *jsonWriter, r *http.Request, err error) {
	if !j.started {
		j.buf.Reset()
		s.fail(j.w, r, err)
		return
	}
	e := requestError(r, err)
	requestInfoOf(r).err = e
	if e.Code == codeClientClosed || j.err != nil {
		return
	}
	panic(http.ErrAbortHandler)
}
