package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/estuite/estuite"
	"github.com/google/uuid"
)

// writeJSON answers v as JSON, encoded whole first: for small bodies (read pages go through a
// jsonWriter). HTML characters are not escaped: this is an API, and event data should read back
// as close to what was sent as JSON allows.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only stored data that is not valid JSON can get here (ErrCorrupt in all but name).
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":"internal","message":"internal error"}` + "\n")
	}
	setJSONHeaders(w.Header())
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// marshalJSON is json.Marshal without HTML escaping and without the trailing newline.
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// eventJSON is an event as the API shows it.
type eventJSON struct {
	Position     int64           `json:"position,omitempty"` // feed events only
	Stream       string          `json:"stream"`
	Version      int64           `json:"version"`
	ID           string          `json:"id"`
	Type         string          `json:"type"`
	Data         json.RawMessage `json:"data,omitempty"`       // JSON data; absent when empty
	DataBase64   *string         `json:"dataBase64,omitempty"` // binary data
	Metadata     json.RawMessage `json:"metadata,omitempty"`
	CommitID     string          `json:"commitId"`
	RecordedAt   string          `json:"recordedAt"`
	DispatchedAt string          `json:"dispatchedAt,omitempty"` // feed events only
}

// timeFormat is RFC 3339 in UTC with microseconds, the precision the store records.
const timeFormat = "2006-01-02T15:04:05.000000Z07:00"

func toEventJSON(ev estuite.RecordedEvent) eventJSON {
	e := eventJSON{
		Stream:     ev.Stream,
		Version:    ev.Version,
		ID:         ev.ID.String(),
		Type:       ev.Type,
		Metadata:   ev.Metadata,
		CommitID:   ev.CommitID,
		RecordedAt: formatTime(ev.RecordedAt),
	}
	if ev.Format == estuite.Binary {
		b := base64.StdEncoding.EncodeToString(ev.Data)
		e.DataBase64 = &b
	} else if len(ev.Data) > 0 {
		e.Data = ev.Data
	}
	return e
}

func toFeedEventJSON(ev estuite.FeedEvent) eventJSON {
	e := toEventJSON(ev.RecordedEvent)
	e.Position = ev.Position
	if !ev.DispatchedAt.IsZero() {
		e.DispatchedAt = formatTime(ev.DispatchedAt)
	}
	return e
}

// appendRequest is a decoded append body.
type appendRequest struct {
	expected estuite.ExpectedVersion
	commitID string
	events   []estuite.EventData
}

// decodeAppend decodes and checks an append body strictly: exactly one JSON object, member names
// exactly as documented (no unknown, misspelt or repeated ones), values of the documented types.
// The store checks what it owns (names, lengths, sizes) again.
func decodeAppend(body []byte) (*appendRequest, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, badRequest("the request body is empty; it must be a JSON object with \"events\"")
	}
	var expected, commitID, events json.RawMessage
	if err := decodeObject(body, "the request body", map[string]*json.RawMessage{
		"expectedVersion": &expected, "commitId": &commitID, "events": &events,
	}); err != nil {
		return nil, err
	}
	req := &appendRequest{expected: estuite.Any}
	if expected != nil {
		ev, err := parseExpected(expected)
		if err != nil {
			return nil, err
		}
		req.expected = ev
	}
	if commitID != nil {
		if err := json.Unmarshal(commitID, &req.commitID); err != nil {
			return nil, badRequest("commitId must be a string")
		}
		if req.commitID == "" {
			return nil, badRequest("commitId must not be empty (leave it out to have one generated)")
		}
	}
	if events == nil {
		return nil, badRequest("events is missing")
	}
	if jsonKind(events) != '[' {
		return nil, badRequest("events must be an array of event objects")
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(events, &raws); err != nil {
		return nil, badRequest("events must be an array of event objects")
	}
	if len(raws) == 0 {
		return nil, badRequest("events must not be empty")
	}
	if len(raws) > estuite.MaxAppendRows {
		return nil, &apiError{Status: http.StatusRequestEntityTooLarge, Code: codeTooLarge,
			Message: "an append holds at most " + strconv.Itoa(estuite.MaxAppendRows) + " events (fewer with caller-given event IDs)"}
	}
	for i, raw := range raws {
		ev, err := decodeEvent(i, raw)
		if err != nil {
			return nil, err
		}
		req.events = append(req.events, ev)
	}
	return req, nil
}

func decodeEvent(i int, raw json.RawMessage) (estuite.EventData, error) {
	var ev estuite.EventData
	field := func(name string) string { return "events[" + strconv.Itoa(i) + "]." + name }
	what := "events[" + strconv.Itoa(i) + "]"
	if jsonKind(raw) != '{' {
		return ev, badRequest("%s must be an object", what)
	}
	var id, typ, data, data64, meta json.RawMessage
	if err := decodeObject(raw, what, map[string]*json.RawMessage{
		"id": &id, "type": &typ, "data": &data, "dataBase64": &data64, "metadata": &meta,
	}); err != nil {
		return ev, err
	}
	if id != nil {
		var s string
		if err := json.Unmarshal(id, &s); err != nil {
			return ev, badRequest("%s must be a string", field("id"))
		}
		u, err := uuid.Parse(s)
		if err != nil || len(s) != 36 {
			return ev, badRequest("%s must be a UUID like \"0b3e8f4a-5c1d-4e2f-9a7b-1c2d3e4f5a6b\"", field("id"))
		}
		if u == uuid.Nil {
			return ev, badRequest("%s must not be the nil UUID (leave it out to have one generated)", field("id"))
		}
		ev.ID = u
	}
	if typ == nil {
		return ev, badRequest("%s is missing", field("type"))
	}
	if err := json.Unmarshal(typ, &ev.Type); err != nil {
		return ev, badRequest("%s must be a string", field("type"))
	}
	if ev.Type == "" {
		return ev, badRequest("%s must not be empty", field("type"))
	}
	switch {
	case data != nil && data64 != nil:
		return ev, badRequest("%s: give data or dataBase64, not both", what)
	case data != nil:
		ev.Data = data // exactly as sent
	case data64 != nil:
		var s string
		if err := json.Unmarshal(data64, &s); err != nil {
			return ev, badRequest("%s must be a string of standard base64", field("dataBase64"))
		}
		b, err := base64.StdEncoding.Strict().DecodeString(s)
		if err != nil {
			return ev, badRequest("%s is not standard base64 (RFC 4648, with padding): %v", field("dataBase64"), err)
		}
		ev.Data, ev.Format = b, estuite.Binary
	}
	if meta != nil && !bytes.Equal(meta, []byte("null")) {
		if jsonKind(meta) != '{' {
			return ev, badRequest("%s must be a JSON object", field("metadata"))
		}
		ev.Metadata = meta
	}
	return ev, nil
}

// parseExpected parses an expectedVersion: a non-negative integer or "any", "no_stream",
// "exists".
func parseExpected(raw json.RawMessage) (estuite.ExpectedVersion, error) {
	const want = `expectedVersion must be a non-negative integer or one of "any", "no_stream", "exists"`
	switch jsonKind(raw) {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return estuite.Any, badRequest(want)
		}
		switch s {
		case "any":
			return estuite.Any, nil
		case "no_stream":
			return estuite.NoStream, nil
		case "exists":
			return estuite.StreamExists, nil
		}
		return estuite.Any, badRequest("%s, not %q", want, s)
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		v, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil || v < 0 {
			return estuite.Any, badRequest("%s, not %s", want, raw)
		}
		return estuite.Exactly(v), nil
	}
	return estuite.Any, badRequest(want)
}

// jsonKind returns the first byte of a JSON value: '{', '[', '"', 'n', 't', 'f' or the first
// character of a number; 0 for nothing.
func jsonKind(raw []byte) byte {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 {
		return 0
	}
	return raw[0]
}

// decodeObject decodes the JSON object in data, storing each member's value as it was sent in the
// RawMessage named by its exact (case-sensitive) name. An unknown name, a repeated name, invalid
// JSON or anything after the object is an error naming what (e.g. "events[2]").
func decodeObject(data []byte, what string, fields map[string]*json.RawMessage) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return badJSON(what, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return badRequest("%s must be a JSON object", what)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return badJSON(what, err)
		}
		name, _ := tok.(string)
		dst, ok := fields[name]
		if !ok {
			return badRequest("%s has an unknown member %q", what, name)
		}
		if *dst != nil {
			return badRequest("%s has the member %q twice", what, name)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return badJSON(what, err)
		}
		*dst = v
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return badJSON(what, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("%s is followed by more data", what)
	}
	return nil
}

func badJSON(what string, err error) *apiError {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return badRequest("%s is not valid JSON: %v (at byte %d)", what, err, se.Offset)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return badRequest("%s is not valid JSON: it ends too early", what)
	}
	return badRequest("%s is not valid JSON: %v", what, err)
}

// formatTime formats t as the API does.
func formatTime(t time.Time) string { return t.UTC().Format(timeFormat) }

// MarshalEvent encodes a stream event in the API's event form, as GET /streams/{stream}/events
// returns it. Command-line tools use it so that their output matches the API.
func MarshalEvent(ev estuite.RecordedEvent) ([]byte, error) { return marshalJSON(toEventJSON(ev)) }

// MarshalFeedEvent encodes a feed event in the API's event form, with its position, as GET /feed
// returns it.
func MarshalFeedEvent(ev estuite.FeedEvent) ([]byte, error) {
	return marshalJSON(toFeedEventJSON(ev))
}
