package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/jsoncheck"
	"github.com/estuite/estuite/internal/wire"
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

// eventJSON is an event as the API shows it (internal/wire).
type eventJSON = wire.Event

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
		Subject:    ev.Subject,
		Erased:     ev.Erased,
	}
	switch {
	case ev.Erased:
		// Neither data nor dataBase64 nor metadata: there is nothing left to show.
	case ev.Format == estuite.Binary:
		b := base64.StdEncoding.EncodeToString(ev.Data)
		e.DataBase64 = &b
	case len(ev.Data) > 0:
		e.Data = ev.Data
	}
	return e
}

// redactedJSON is a redacted feed entry as the API shows it: a position, and nothing else.
type redactedJSON struct {
	Shard    *int  `json:"shard,omitempty"` // GET /feed/all only
	Position int64 `json:"position"`
	Redacted bool  `json:"redacted"`
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
// exactly as documented (no unknown, misspelt or repeated ones), values of the documented types,
// and text that every JSON reader reads alike: valid UTF-8 without escaped lone surrogates
// (jsoncheck), checked on the raw bytes before anything is decoded, since encoding/json would
// silently turn both into U+FFFD. The store checks what it owns (names, lengths, sizes) again.
//
// Decoding costs memory in proportion to the events it keeps, not to the body: the body is
// checked whole (UTF-8, then JSON syntax, neither of which copies it), then walked in place, and
// event data and metadata are slices of it. The events array is refused as soon as the walk
// passes the most events an append may hold.
func decodeAppend(body []byte) (*appendRequest, error) {
	const what = "the request body"
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, badRequest("the request body is empty; it must be a JSON object with \"events\"")
	}
	if err := jsoncheck.Check(body); err != nil {
		return nil, badRequest("%s is not JSON text every reader reads alike: %v", what, err)
	}
	if !json.Valid(body) {
		return nil, badJSON(what, json.Unmarshal(body, &struct{}{})) // the syntax error, with its offset
	}
	if jsonKind(body) != '{' {
		return nil, badRequest("%s must be a JSON object", what)
	}
	req := &appendRequest{expected: estuite.Any}
	var events []byte
	err := decodeObject(body, what, []string{"expectedVersion", "commitId", "events"}, func(name string, v []byte) error {
		switch name {
		case "events":
			events = v
		case "expectedVersion":
			ev, err := parseExpected(v)
			req.expected = ev
			return err
		case "commitId":
			if !decodeString(v, &req.commitID) {
				return badRequest("commitId must be a string")
			}
			if req.commitID == "" {
				return badRequest("commitId must not be empty (leave it out to have one generated)")
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if events == nil {
		return nil, badRequest("events is missing")
	}
	if jsonKind(events) != '[' {
		return nil, badRequest("events must be an array of event objects")
	}
	i := 0
	err = eachElement(events, func(raw []byte) error {
		if i == estuite.MaxAppendRows {
			return errTooManyEvents
		}
		ev, err := decodeEvent(i, raw)
		if err != nil {
			return err
		}
		req.events = append(req.events, ev)
		i++
		return nil
	})
	switch {
	case err == errTooManyEvents:
		return nil, &apiError{Status: http.StatusRequestEntityTooLarge, Code: codeTooLarge,
			Message: "an append holds at most " + strconv.Itoa(estuite.MaxAppendRows) + " events (fewer with caller-given event IDs)"}
	case err != nil:
		return nil, err
	case len(req.events) == 0:
		return nil, badRequest("events must not be empty")
	}
	return req, nil
}

// errTooManyEvents stops the walk of an events array at the first event past the limit.
var errTooManyEvents = errors.New("too many events")

// decodeEvent decodes the i-th event of an append, a value of a valid JSON text.
func decodeEvent(i int, raw []byte) (estuite.EventData, error) {
	var ev estuite.EventData
	field := func(name string) string { return "events[" + strconv.Itoa(i) + "]." + name }
	what := "events[" + strconv.Itoa(i) + "]"
	if jsonKind(raw) != '{' {
		return ev, badRequest("%s must be a JSON object", what)
	}
	var id, typ, data, data64, meta, subject []byte
	fields := map[string]*[]byte{"id": &id, "type": &typ, "data": &data, "dataBase64": &data64, "metadata": &meta, "subject": &subject}
	if err := decodeObject(raw, what, []string{"id", "type", "data", "dataBase64", "metadata", "subject"}, func(name string, v []byte) error {
		*fields[name] = v
		return nil
	}); err != nil {
		return ev, err
	}
	if id != nil {
		var s string
		if !decodeString(id, &s) {
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
	if !decodeString(typ, &ev.Type) {
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
		if !decodeString(data64, &s) {
			return ev, badRequest("%s must be a string of standard base64", field("dataBase64"))
		}
		b, err := base64.StdEncoding.Strict().DecodeString(s)
		if err != nil {
			return ev, badRequest("%s is not standard base64 (RFC 4648, with padding): %v", field("dataBase64"), err)
		}
		ev.Data, ev.Format = b, estuite.Binary
	}
	if subject != nil {
		if !decodeString(subject, &ev.Subject) {
			return ev, badRequest("%s must be a string", field("subject"))
		}
		if ev.Subject == "" {
			return ev, badRequest("%s must not be empty (leave it out for an event without a subject)", field("subject"))
		}
	}
	if meta != nil && !bytes.Equal(meta, []byte("null")) {
		if jsonKind(meta) != '{' {
			return ev, badRequest("%s must be a JSON object", field("metadata"))
		}
		ev.Metadata = meta
	}
	return ev, nil
}

// decodeString decodes a JSON string value into *s; false if raw is not a string.
func decodeString(raw []byte, s *string) bool {
	return jsonKind(raw) == '"' && json.Unmarshal(raw, s) == nil
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

// decodeObject calls member with the name and the value, as sent, of each member of obj, a JSON
// object of a valid JSON text, in order. A name not in names (names are exact and case-sensitive)
// or a repeated name is an error naming what (e.g. "events[2]").
func decodeObject(obj []byte, what string, names []string, member func(name string, value []byte) error) error {
	var seen []string // at most len(names)
	w := jsonWalker{b: obj}
	return w.members(func(rawName, value []byte) error {
		var name string
		if !decodeString(rawName, &name) {
			return badRequest("%s has a member name that cannot be read", what) // never, in valid JSON
		}
		if !slices.Contains(names, name) {
			return badRequest("%s has an unknown member %.64q", what, name)
		}
		if slices.Contains(seen, name) {
			return badRequest("%s has the member %q twice", what, name)
		}
		seen = append(seen, name)
		return member(name, value)
	})
}

// eachElement calls f with each element, as sent, of arr, a JSON array of a valid JSON text, in
// order, until f returns an error.
func eachElement(arr []byte, f func(value []byte) error) error {
	w := jsonWalker{b: arr}
	return w.elements(f)
}

// jsonWalker reads a value of a valid JSON text (json.Valid) in place: the members and elements
// it hands out are slices of the text, nothing is copied. It relies on the text's validity and
// must never be given anything else.
type jsonWalker struct {
	b []byte
	i int
}

func (w *jsonWalker) space() {
	for w.i < len(w.b) && (w.b[w.i] == ' ' || w.b[w.i] == '\t' || w.b[w.i] == '\r' || w.b[w.i] == '\n') {
		w.i++
	}
}

// value returns the value at w.i and moves past it.
func (w *jsonWalker) value() []byte {
	w.space()
	start := w.i
	switch w.b[w.i] {
	case '"':
		w.str()
	case '{', '[':
		for depth := 0; ; {
			switch w.b[w.i] {
			case '"':
				w.str()
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
			w.i++
			if depth == 0 {
				break
			}
		}
	default: // a number, true, false or null
		for w.i < len(w.b) && !strings.ContainsRune(" \t\r\n,]}", rune(w.b[w.i])) {
			w.i++
		}
	}
	return w.b[start:w.i]
}

// str moves past the string at w.i.
func (w *jsonWalker) str() {
	for w.i++; w.b[w.i] != '"'; w.i++ {
		if w.b[w.i] == '\\' {
			w.i++ // the escaped byte: an escaped quote does not end the string
		}
	}
	w.i++
}

// members calls f with the name (a JSON string, as sent) and the value of each member of the
// object at w.i, until f returns an error.
func (w *jsonWalker) members(f func(name, value []byte) error) error {
	w.space()
	w.i++ // {
	for {
		w.space()
		switch w.b[w.i] {
		case '}':
			w.i++
			return nil
		case ',':
			w.i++
		}
		name := w.value()
		w.space()
		w.i++ // :
		if err := f(name, w.value()); err != nil {
			return err
		}
	}
}

// elements calls f with each element of the array at w.i, until f returns an error.
func (w *jsonWalker) elements(f func(value []byte) error) error {
	w.space()
	w.i++ // [
	for {
		w.space()
		switch w.b[w.i] {
		case ']':
			w.i++
			return nil
		case ',':
			w.i++
		}
		if err := f(w.value()); err != nil {
			return err
		}
	}
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
