package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/wire"
	"github.com/google/uuid"
)

// MaxPageLimit is the most events the server returns in one page (its server.MaxLimit).
const MaxPageLimit = 1000

// StreamVersionHeader is the header of a delete's answer that holds the stream's version when it
// was deleted (server.StreamVersionHeader).
const StreamVersionHeader = "Estuite-Stream-Version"

// feedEventJSON is an event as the API shows it (a feed entry may be a redacted one).
type feedEventJSON struct {
	wire.Event
	Redacted bool `json:"redacted"`
}

// parseTime reads a time as the API writes it; "" is the zero time.
func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339Nano, s)
}

// recorded returns the event e stands for.
func recorded(e *wire.Event) (estuite.RecordedEvent, error) {
	ev := estuite.RecordedEvent{Stream: e.Stream, Version: e.Version, Type: e.Type, CommitID: e.CommitID,
		Subject: e.Subject, Erased: e.Erased}
	var err error
	if ev.ID, err = uuid.Parse(e.ID); err != nil {
		return ev, fmt.Errorf("client: event %s@%d: its id %q: %w", e.Stream, e.Version, e.ID, err)
	}
	if ev.RecordedAt, err = parseTime(e.RecordedAt); err != nil {
		return ev, fmt.Errorf("client: event %s@%d: its recordedAt: %w", e.Stream, e.Version, err)
	}
	switch {
	case e.DataBase64 != nil:
		ev.Format = estuite.Binary
		if ev.Data, err = base64.StdEncoding.DecodeString(*e.DataBase64); err != nil {
			return ev, fmt.Errorf("client: event %s@%d: its dataBase64: %w", e.Stream, e.Version, err)
		}
	case len(e.Data) > 0:
		ev.Data = []byte(e.Data)
	}
	if len(e.Metadata) > 0 {
		ev.Metadata = e.Metadata
	}
	return ev, nil
}

// feed returns the feed event e stands for.
func (e *feedEventJSON) feed() (estuite.FeedEvent, error) {
	fe := estuite.FeedEvent{Position: e.Position, Redacted: e.Redacted}
	if e.Shard != nil {
		fe.Shard = *e.Shard
	}
	if e.Redacted {
		return fe, nil
	}
	var err error
	if fe.RecordedEvent, err = recorded(&e.Event); err != nil {
		return fe, err
	}
	if fe.DispatchedAt, err = parseTime(e.DispatchedAt); err != nil {
		return fe, fmt.Errorf("client: feed position %d: its dispatchedAt: %w", e.Position, err)
	}
	return fe, nil
}

// expectedJSON is an expected version as an append's body writes it.
func expectedJSON(e estuite.ExpectedVersion) any {
	if v, ok := e.Version(); ok {
		return v
	}
	switch e {
	case estuite.NoStream:
		return "no_stream"
	case estuite.StreamExists:
		return "exists"
	}
	return "any"
}

// Append appends events to a stream atomically (POST /streams/{stream}). opts may be nil; of it,
// Expected and CommitID are sent (a snapshot cannot be sent over HTTP: a Snapshot is refused).
// Each event's data, metadata and custom JSON are sent as the caller's bytes, unchanged.
//
// Without a CommitID, Append generates one (a random UUID), as Store.Append does, and sends it. An
// append whose outcome is unknown — the request was sent, and the connection was lost, the
// timeout or ctx ran out, or the server (or a proxy) answered 5xx — fails with an
// *UnknownOutcomeError, which matches estuite.ErrUnavailable and holds the commit ID: retry the
// append with that commit ID (AppendOptions.CommitID) to learn whether it was committed; a retry
// of a commit that was made answers with Duplicate true, as Store.Append does.
func (c *Client) Append(ctx context.Context, stream string, events []estuite.EventData, opts *estuite.AppendOptions) (estuite.AppendResult, error) {
	var o estuite.AppendOptions
	if opts != nil {
		o = *opts
	}
	if o.Snapshot != nil {
		return estuite.AppendResult{}, &estuite.InvalidInputError{Field: "snapshot", Reason: "cannot be sent over HTTP"}
	}
	if o.CommitID == "" {
		o.CommitID = uuid.NewString()
	}
	list := make([]object, len(events))
	for i, ev := range events {
		field := func(name string) string { return fmt.Sprintf("events[%d].%s", i, name) }
		e := object{{"type", ev.Type}}
		if ev.ID != uuid.Nil {
			e = append(e, member{"id", ev.ID.String()})
		}
		switch {
		case ev.Format == estuite.Binary:
			e = append(e, member{"dataBase64", base64.StdEncoding.EncodeToString(ev.Data)})
		case len(ev.Data) > 0:
			if !json.Valid(ev.Data) {
				return estuite.AppendResult{}, &estuite.InvalidInputError{Field: field("data"), Reason: "is not valid JSON (mark binary data as Binary)"}
			}
			e = append(e, member{"data", json.RawMessage(ev.Data)})
		}
		if len(ev.Metadata) > 0 {
			// As the store: JSON null is not an object (the API would take it as no metadata).
			if !isJSONObject(ev.Metadata) {
				return estuite.AppendResult{}, &estuite.InvalidInputError{Field: field("metadata"), Reason: "must be a JSON object"}
			}
			e = append(e, member{"metadata", json.RawMessage(ev.Metadata)})
		}
		if ev.Subject != "" {
			e = append(e, member{"subject", ev.Subject})
		}
		list[i] = e
	}
	body := object{{"expectedVersion", expectedJSON(o.Expected)}, {"commitId", o.CommitID}, {"events", list}}
	var out struct {
		Stream       string `json:"stream"`
		FirstVersion int64  `json:"firstVersion"`
		LastVersion  int64  `json:"lastVersion"`
		CommitID     string `json:"commitId"`
		Duplicate    bool   `json:"duplicate"`
	}
	req := request{method: http.MethodPost, path: streamPath(stream, ""), body: body}.named("stream", stream)
	if _, _, err := c.call(ctx, req, &out); err != nil {
		if outcomeUnknown(err) {
			return estuite.AppendResult{}, &UnknownOutcomeError{Stream: stream, CommitID: o.CommitID, Err: err}
		}
		return estuite.AppendResult{}, err
	}
	return estuite.AppendResult{Stream: out.Stream, FirstVersion: out.FirstVersion, LastVersion: out.LastVersion,
		CommitID: out.CommitID, Duplicate: out.Duplicate}, nil
}

// outcomeUnknown reports whether a write that failed with err may have been made: every error
// but a refusal (an invalid input, an answer of 4xx, a redirect) or a failure to connect (the
// request was never sent) is one — a transport error after the request was sent, a timeout, an
// answer of 5xx, an answer that could not be read.
func outcomeUnknown(err error) bool {
	var e *Error
	var r *RedirectError
	var in *estuite.InvalidInputError
	var op *net.OpError
	switch {
	case errors.As(err, &e):
		return e.Status >= 500
	case errors.As(err, &r), errors.As(err, &in):
		return false
	case errors.As(err, &op):
		return op.Op != "dial" && op.Op != "proxyconnect"
	}
	return true
}

// isJSONObject reports whether b is a JSON object, as the store checks metadata and custom JSON.
func isJSONObject(b []byte) bool {
	trimmed := bytes.TrimLeft(b, " \t\r\n")
	return len(trimmed) > 0 && trimmed[0] == '{' && json.Valid(b)
}

// Version returns a stream's version (GET /streams/{stream}): estuite.ErrStreamNotFound for a
// stream never written or soft-deleted, estuite.ErrStreamDeleted after a hard delete.
func (c *Client) Version(ctx context.Context, stream string) (int64, error) {
	var out struct {
		Version int64 `json:"version"`
	}
	_, _, err := c.call(ctx, request{method: http.MethodGet, path: streamPath(stream, "")}.named("stream", stream), &out)
	return out.Version, err
}

// ReadOptions say what a stream read returns.
type ReadOptions struct {
	// From is the first version returned; 0 means the first (forward) or the last (backward).
	From int64
	// Limit is the most events: for ReadPage, 0 means the server's default (100) and at most
	// MaxPageLimit; for Read, 0 means all.
	Limit int
	// Backward reads newest first.
	Backward bool
}

// StreamPage is one page of a stream read.
type StreamPage struct {
	// Version is the stream's version when the read began.
	Version int64
	// Events are the page's events, in the read's direction.
	Events []estuite.RecordedEvent
}

// ReadPage reads one page of a stream's events (GET /streams/{stream}/events). A page of fewer
// than the limit's events is the end of the stream.
func (c *Client) ReadPage(ctx context.Context, stream string, opts ReadOptions) (StreamPage, error) {
	q := url.Values{}
	if opts.From > 0 {
		q.Set("from", strconv.FormatInt(opts.From, 10))
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	if opts.Backward {
		q.Set("direction", "backward")
	}
	var out struct {
		Version int64        `json:"version"`
		Events  []wire.Event `json:"events"`
	}
	if _, _, err := c.call(ctx, request{method: http.MethodGet, path: streamPath(stream, "/events"), query: q}.named("stream", stream), &out); err != nil {
		return StreamPage{}, err
	}
	page := StreamPage{Version: out.Version, Events: make([]estuite.RecordedEvent, 0, len(out.Events))}
	for i := range out.Events {
		ev, err := recorded(&out.Events[i])
		if err != nil {
			return StreamPage{}, err
		}
		page.Events = append(page.Events, ev)
	}
	return page, nil
}

// ReadPageLimit is the most events Read asks for a page.
const ReadPageLimit = 100

// Read reads a stream's events page by page, ReadPageLimit events a request, and yields them in
// order until opts.Limit events (0: all) or the end. A page whose answer is larger than
// Options.MaxResponseBytes (large events) is asked again for fewer events, down to one, before
// Read fails with ErrResponseTooLarge. Unlike Store.Read, it is not one snapshot: events appended
// while it pages forward may be part of it. The first error ends it.
func (c *Client) Read(ctx context.Context, stream string, opts ReadOptions) iter.Seq2[estuite.RecordedEvent, error] {
	return func(yield func(estuite.RecordedEvent, error) bool) {
		from, left := opts.From, opts.Limit
		pageLimit := ReadPageLimit
		for {
			limit := pageLimit
			if opts.Limit > 0 {
				limit = min(limit, left)
			}
			page, err := c.ReadPage(ctx, stream, ReadOptions{From: from, Limit: limit, Backward: opts.Backward})
			if errors.Is(err, ErrResponseTooLarge) && limit > 1 {
				pageLimit = max(1, limit/4) // the events are large: fewer a page from here on
				continue
			}
			if err != nil {
				yield(estuite.RecordedEvent{}, err)
				return
			}
			for _, ev := range page.Events {
				if !yield(ev, nil) {
					return
				}
			}
			left -= len(page.Events)
			if len(page.Events) < limit || (opts.Limit > 0 && left <= 0) {
				return
			}
			last := page.Events[len(page.Events)-1].Version
			if opts.Backward {
				if from = last - 1; from < 1 {
					return
				}
			} else {
				from = last + 1
			}
		}
	}
}

// Delete deletes a stream (DELETE /streams/{stream}): soft, or for good with opts.Hard. opts may
// be nil. The result's Version is the stream's version when it was deleted, as the server says it.
func (c *Client) Delete(ctx context.Context, stream string, opts *estuite.DeleteOptions) (estuite.DeleteResult, error) {
	q := url.Values{}
	if opts != nil {
		q.Set("expectedVersion", fmt.Sprint(expectedJSON(opts.Expected)))
		if opts.Hard {
			q.Set("hard", "true")
		}
	}
	_, h, err := c.call(ctx, request{method: http.MethodDelete, path: streamPath(stream, ""), query: q}.named("stream", stream), nil)
	if err != nil {
		return estuite.DeleteResult{}, err
	}
	v, _ := parseInt(h.Get(StreamVersionHeader))
	return estuite.DeleteResult{Stream: stream, Version: v}, nil
}

// metadataOf returns the metadata m stands for.
func metadataOf(m wire.Metadata) estuite.StreamMetadata {
	md := estuite.StreamMetadata{MetadataVersion: m.MetadataVersion, MaxCount: m.MaxCount, TruncateBefore: m.TruncateBefore}
	if m.MaxAge != nil {
		d := time.Duration(*m.MaxAge) * time.Second
		md.MaxAge = &d
	}
	if len(m.Custom) > 0 && string(m.Custom) != "null" {
		md.Custom = m.Custom
	}
	return md
}

// Metadata returns a stream's metadata (GET /streams/{stream}/metadata).
func (c *Client) Metadata(ctx context.Context, stream string) (estuite.StreamMetadata, error) {
	var out wire.Metadata
	if _, _, err := c.call(ctx, request{method: http.MethodGet, path: streamPath(stream, "/metadata")}.named("stream", stream), &out); err != nil {
		return estuite.StreamMetadata{}, err
	}
	return metadataOf(out), nil
}

// SetMetadata replaces a stream's metadata (PUT /streams/{stream}/metadata) if its metadata
// version is expected (or whatever it is, with estuite.AnyMetadataVersion), and returns it as
// stored. MaxAge is sent in whole seconds.
func (c *Client) SetMetadata(ctx context.Context, stream string, md estuite.StreamMetadata, expected estuite.MetadataExpected) (estuite.StreamMetadata, error) {
	body := object{{"expectedMetadataVersion", "any"}}
	if expected != estuite.AnyMetadataVersion {
		body[0].value = int64(expected)
	}
	if md.MaxAge != nil {
		if *md.MaxAge%time.Second != 0 || *md.MaxAge < 0 {
			return estuite.StreamMetadata{}, &estuite.InvalidInputError{Field: "maxAge", Reason: fmt.Sprintf("%v is not a whole number of seconds from 0", *md.MaxAge)}
		}
		body = append(body, member{"maxAge", int64(*md.MaxAge / time.Second)})
	}
	if md.MaxCount != nil {
		body = append(body, member{"maxCount", *md.MaxCount})
	}
	if md.TruncateBefore != nil {
		body = append(body, member{"truncateBefore", *md.TruncateBefore})
	}
	if md.Custom != nil {
		// As the store: JSON null is not an object (the API would take it as no custom object).
		if !isJSONObject(md.Custom) {
			return estuite.StreamMetadata{}, &estuite.InvalidInputError{Field: "custom", Reason: "must be a JSON object"}
		}
		body = append(body, member{"custom", json.RawMessage(md.Custom)})
	}
	var out wire.Metadata
	if _, _, err := c.call(ctx, request{method: http.MethodPut, path: streamPath(stream, "/metadata"), body: body}.named("stream", stream), &out); err != nil {
		return estuite.StreamMetadata{}, err
	}
	return metadataOf(out), nil
}

// Scavenge runs one scavenge pass on the server and returns what it did (POST /admin/scavenge).
func (c *Client) Scavenge(ctx context.Context) (estuite.ScavengeStats, error) {
	var out struct {
		Streams  int `json:"streams"`
		Removed  int `json:"removed"`
		Redacted int `json:"redacted"`
		Waiting  int `json:"waiting"`
	}
	_, _, err := c.call(ctx, request{method: http.MethodPost, path: "/admin/scavenge"}, &out)
	return estuite.ScavengeStats{Streams: out.Streams, Removed: out.Removed, Redacted: out.Redacted, Waiting: out.Waiting}, err
}

// Forget erases a data subject (DELETE /subjects/{subject}). Idempotent.
func (c *Client) Forget(ctx context.Context, subject string) error {
	_, _, err := c.call(ctx, request{method: http.MethodDelete, path: "/subjects/" + PathSegment(subject)}.named("subject", subject), nil)
	return err
}

// Forgotten reports whether a data subject was forgotten (GET /subjects/{subject}).
func (c *Client) Forgotten(ctx context.Context, subject string) (bool, error) {
	var out struct {
		Forgotten bool `json:"forgotten"`
	}
	_, _, err := c.call(ctx, request{method: http.MethodGet, path: "/subjects/" + PathSegment(subject)}.named("subject", subject), &out)
	return out.Forgotten, err
}

// ListStreams returns a page of the server's streams with their versions (GET /streams), as
// Store.ListStreams does: pass the page's Next as the next call's After.
func (c *Client) ListStreams(ctx context.Context, opts *estuite.ListStreamsOptions) (estuite.StreamList, error) {
	var o estuite.ListStreamsOptions
	if opts != nil {
		o = *opts
	}
	q := url.Values{}
	if o.Prefix != "" {
		q.Set("prefix", o.Prefix)
	}
	if o.After != "" {
		q.Set("after", o.After)
	}
	if o.Limit != 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	var out wire.StreamList
	if _, _, err := c.call(ctx, request{method: http.MethodGet, path: "/streams", query: q}, &out); err != nil {
		return estuite.StreamList{}, err
	}
	list := out.ToStreamList()
	return list, nil
}
