package server

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/estuite/estuite"
)

// appendResponse answers an append.
type appendResponse struct {
	Stream       string `json:"stream"`
	FirstVersion int64  `json:"firstVersion"`
	LastVersion  int64  `json:"lastVersion"`
	CommitID     string `json:"commitId"`
	Duplicate    bool   `json:"duplicate"`
}

// handleAppend serves POST /streams/{stream}.
func (s *Server) handleAppend(w http.ResponseWriter, r *http.Request) {
	stream := s.stream(r)
	if _, err := parseQuery(r, nil, nil); err != nil {
		s.fail(w, r, err)
		return
	}
	body, err := readBody(w, r, s.maxBody)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	req, err := decodeAppend(body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	start := time.Now()
	res, err := s.store.Append(r.Context(), stream, req.events, &estuite.AppendOptions{Expected: req.expected, CommitID: req.commitID})
	outcome := "committed"
	switch {
	case err != nil:
		outcome = requestError(r, err).Code
	case res.Duplicate:
		outcome = "duplicate"
	}
	s.metrics.appendSeconds.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	status := http.StatusCreated
	if res.Duplicate {
		status = http.StatusOK
	}
	writeJSON(w, status, appendResponse{Stream: res.Stream, FirstVersion: res.FirstVersion, LastVersion: res.LastVersion,
		CommitID: res.CommitID, Duplicate: res.Duplicate})
}

// handleStream serves GET /streams/{stream}.
func (s *Server) handleStream(w http.ResponseWriter, r *http.Request) {
	stream := s.stream(r)
	if _, err := parseQuery(r, nil, nil); err != nil {
		s.fail(w, r, err)
		return
	}
	v, err := s.store.Version(r.Context(), stream)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Stream  string `json:"stream"`
		Version int64  `json:"version"`
	}{stream, v})
}

// handleEvents serves GET /streams/{stream}/events.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	stream := s.stream(r)
	q, err := parseQuery(r, []string{"from", "limit", "direction"}, nil)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	opts := estuite.ReadOptions{Limit: DefaultLimit}
	switch d := q.Get("direction"); d {
	case "", "forward":
	case "backward":
		opts.Direction = estuite.Backward
	default:
		s.fail(w, r, badRequest("direction must be \"forward\" or \"backward\", not %q", d))
		return
	}
	if q.Has("from") {
		from, err := intParam(q, "from", 1, 1<<62)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		opts.From = from
	}
	limit, err := limitParam(q)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	opts.Limit = limit
	opts.PageBytes = s.maxResp
	if r.Method == http.MethodHead {
		// GET's status from the head alone (one point read): no event is read.
		if _, err := s.store.Version(r.Context(), stream); err != nil {
			s.fail(w, r, err)
			return
		}
		newJSONWriter(w, http.StatusOK).close()
		return
	}
	read, err := s.store.Read(r.Context(), stream, &opts)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	j := newJSONWriter(w, http.StatusOK)
	// Sent as read: the store holds a page of about MaxResponseBytes, this handler one event.
	j.raw(`{"stream":`)
	j.value(stream)
	j.raw(`,"version":` + strconv.FormatInt(read.Version, 10) + `,"events":[`)
	n := 0
	for ev, err := range read.Events {
		if err == nil {
			if n > 0 {
				j.raw(",")
			}
			n++
			err = j.value(toEventJSON(ev))
		}
		if err != nil {
			s.failStream(j, r, err)
			return
		}
		if j.err != nil {
			return // the client is gone: stop reading storage
		}
	}
	j.raw("]}\n")
	j.close()
}

// handleFeed serves GET /feed.
func (s *Server) handleFeed(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r, []string{"after", "limit", "prefix", "redacted", "shard"}, []string{"type"})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	opts, err := feedFilter(q)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if opts.Shard, err = s.shardParam(q); err != nil {
		s.fail(w, r, err)
		return
	}
	if q.Has("after") {
		if opts.After, err = intParam(q, "after", 0, estuite.MaxPosition); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if opts.Limit, err = limitParam(q); err != nil {
		s.fail(w, r, err)
		return
	}
	opts.MaxBytes = s.maxResp
	var page estuite.FeedPage
	if r.Method != http.MethodHead { // HEAD reads no events
		if page, err = s.store.ReadFeed(r.Context(), &opts); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	head, err := s.store.FeedHeadOf(r.Context(), opts.Shard)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if opts.Shard == 0 {
		s.metrics.observeFeedHead(head)
	}
	j := newJSONWriter(w, http.StatusOK)
	if r.Method == http.MethodHead {
		j.close()
		return
	}
	j.raw(`{"events":[`)
	for i := range page.Events {
		if i > 0 {
			j.raw(",")
		}
		var v any = toFeedEventJSON(page.Events[i])
		if page.Events[i].Redacted {
			v = redactedJSON{Position: page.Events[i].Position, Redacted: true}
		}
		if err := j.value(v); err != nil {
			s.failStream(j, r, err)
			return
		}
		page.Events[i] = estuite.FeedEvent{} // sent: let it go
		if j.err != nil {
			return
		}
	}
	shard := ""
	if s.store.FeedShards() > 1 {
		shard = `,"shard":` + strconv.Itoa(opts.Shard)
	}
	j.raw(`],"next":` + strconv.FormatInt(page.Next, 10) + `,"head":` + strconv.FormatInt(head, 10) + shard + "}\n")
	j.close()
}

// shardParam is the request's feed shard: 0 without the parameter, else one of the store's.
func (s *Server) shardParam(q url.Values) (int, error) {
	if !q.Has("shard") {
		return 0, nil
	}
	v, err := intParam(q, "shard", 0, int64(s.store.FeedShards()-1))
	return int(v), err
}

// shardHealthJSON is what /healthz says of one feed shard's dispatcher in this process.
type shardHealthJSON struct {
	Shard                int     `json:"shard"`
	Running              bool    `json:"running"`
	LeaseHeld            bool    `json:"leaseHeld"`
	FeedHead             int64   `json:"feedHead"`
	PendingStreams       int     `json:"pendingStreams"`
	OldestPendingSeconds float64 `json:"oldestPendingSeconds"`
}

// healthJSON is the body of GET /healthz.
type healthJSON struct {
	Status     string            `json:"status"`
	Version    string            `json:"version,omitempty"`
	Backend    string            `json:"backend,omitempty"`
	FeedShards int               `json:"feedShards"`
	FeedHead   *int64            `json:"feedHead"`
	LeaseHeld  bool              `json:"leaseHeld"`
	Dispatcher dispatcherJSON    `json:"dispatcher"`
	Shards     []shardHealthJSON `json:"shards,omitempty"`
}

// dispatcherJSON is what /healthz says of this process's dispatchers.
type dispatcherJSON struct {
	// State: "leading" (holds a lease), "standby" (running, holds none), "stopped", or "none"
	// (the server was given no dispatcher).
	State                string  `json:"state"`
	Owner                string  `json:"owner,omitempty"`
	LeaseHolder          *string `json:"leaseHolder,omitempty"`
	LastError            *string `json:"lastError,omitempty"`
	LastStep             *string `json:"lastStep,omitempty"`
	PendingStreams       int     `json:"pendingStreams"`
	OldestPendingSeconds float64 `json:"oldestPendingSeconds"`
}

// handleHealth serves GET /healthz: the version and backend, and what this process's
// dispatchers know of the feed, from memory (no storage request). Names and error texts (the
// owner, the lease holder, the last error) are shown only to a request with credentials when the
// server has a token, and only under an allowed Host when it has none.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	out := healthJSON{Status: "ok", Version: s.version, Backend: s.backend, FeedShards: s.store.FeedShards()}
	disps := s.shardDisps
	if len(disps) == 0 && s.dispatcher != nil {
		disps = []*estuite.Dispatcher{s.dispatcher}
	}
	// Names and error texts: with credentials on a token server; on one without, only under an
	// allowed Host (a DNS-rebinding page must not read them: /healthz answers under any Host).
	detail := s.credentialsOK(r) && (s.auth || s.hostAllowed(r.Host))
	out.Dispatcher.State = "none"
	var head int64
	for i, d := range disps {
		h := d.Health()
		head += h.FeedHead
		out.LeaseHeld = out.LeaseHeld || h.LeaseHeld
		out.Dispatcher.PendingStreams += h.Pending
		out.Dispatcher.OldestPendingSeconds = max(out.Dispatcher.OldestPendingSeconds, h.OldestPending.Seconds())
		switch {
		case h.LeaseHeld:
			out.Dispatcher.State = "leading"
		case h.Running && out.Dispatcher.State != "leading":
			out.Dispatcher.State = "standby"
		case out.Dispatcher.State == "none":
			out.Dispatcher.State = "stopped"
		}
		if i == 0 && detail {
			out.Dispatcher.Owner = h.Owner
			holder := h.LeaseHolder
			out.Dispatcher.LeaseHolder = &holder
			if !h.LastStep.IsZero() {
				t := formatTime(h.LastStep)
				out.Dispatcher.LastStep = &t
			}
		}
		if h.LastError != nil && detail && out.Dispatcher.LastError == nil {
			e := h.LastError.Error()
			out.Dispatcher.LastError = &e
		}
		if len(s.shardDisps) > 0 {
			out.Shards = append(out.Shards, shardHealthJSON{Shard: i, Running: h.Running, LeaseHeld: h.LeaseHeld, FeedHead: h.FeedHead,
				PendingStreams: h.Pending, OldestPendingSeconds: h.OldestPending.Seconds()})
		}
	}
	if len(disps) > 0 {
		out.FeedHead = &head
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, out)
}

// stream returns the request's stream name: its path segment, percent-decoded once.
func (s *Server) stream(r *http.Request) string {
	name := r.PathValue("stream")
	requestInfoOf(r).stream = name
	return name
}

// feedFilter reads the type, prefix and redacted parameters of a feed request (redacted is
// never set where parseQuery refused it).
func feedFilter(q url.Values) (estuite.FeedOptions, error) {
	var o estuite.FeedOptions
	types := q["type"]
	if len(types) > MaxFeedTypes {
		return o, badRequest("at most %d type parameters are allowed, not %d", MaxFeedTypes, len(types))
	}
	for _, t := range types {
		if t == "" {
			return o, badRequest("type must not be empty")
		}
	}
	o.Types = types
	if q.Has("prefix") {
		o.StreamPrefix = q.Get("prefix")
		if o.StreamPrefix == "" {
			return o, badRequest("prefix must not be empty (leave it out to read every stream)")
		}
	}
	switch v := q.Get("redacted"); {
	case !q.Has("redacted"), v == "false":
	case v == "true":
		o.IncludeRedacted = true
	default:
		return o, badRequest(`redacted must be "true" or "false", not %q`, v)
	}
	return o, nil
}

// parseQuery parses the request's query, refusing malformed ones and parameters other than
// single (each at most once) and multi (repeatable).
func parseQuery(r *http.Request, single, multi []string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, badRequest("the query string is malformed: %v", err)
	}
	for name, vals := range q {
		switch {
		case contains(single, name):
			if len(vals) > 1 {
				return nil, badRequest("the query parameter %q is given %d times", name, len(vals))
			}
		case contains(multi, name):
		default:
			return nil, badRequest("unknown query parameter %q", name)
		}
	}
	return q, nil
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

// intParam parses the integer parameter name, which must lie in [lo, hi].
func intParam(q url.Values, name string, lo, hi int64) (int64, error) {
	s := q.Get(name)
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < lo || v > hi {
		return 0, badRequest("%s must be an integer from %d to %d, not %q", name, lo, hi, s)
	}
	return v, nil
}

// limitQuery parses a query that may hold a limit and nothing else (see limitParam).
func limitQuery(r *http.Request) (int, error) {
	q, err := parseQuery(r, []string{"limit"}, nil)
	if err != nil {
		return 0, err
	}
	return limitParam(q)
}

// limitParam parses the limit parameter: DefaultLimit when absent, 1 to MaxLimit.
func limitParam(q url.Values) (int, error) {
	if !q.Has("limit") {
		return DefaultLimit, nil
	}
	v, err := intParam(q, "limit", 1, MaxLimit)
	return int(v), err
}

// handleSubject serves GET /subjects/{subject}.
func (s *Server) handleSubject(w http.ResponseWriter, r *http.Request) {
	subject := r.PathValue("subject")
	if _, err := parseQuery(r, nil, nil); err != nil {
		s.fail(w, r, err)
		return
	}
	forgotten, err := s.store.SubjectForgotten(r.Context(), subject)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Subject   string `json:"subject"`
		Forgotten bool   `json:"forgotten"`
	}{subject, forgotten})
}

// handleForget serves DELETE /subjects/{subject}: it erases the subject (idempotent).
func (s *Server) handleForget(w http.ResponseWriter, r *http.Request) {
	if _, err := parseQuery(r, nil, nil); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.store.Forget(r.Context(), r.PathValue("subject")); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleFeedAll serves GET /feed/all: every feed shard merged into one page, by commit time across
// shards (best effort) and by position within each, with a cursor of every shard's position.
func (s *Server) handleFeedAll(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r, []string{"cursor", "limit", "prefix", "redacted"}, []string{"type"})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	filter, err := feedFilter(q)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	opts := estuite.MergedFeedOptions{Types: filter.Types, StreamPrefix: filter.StreamPrefix, IncludeRedacted: filter.IncludeRedacted, MaxBytes: s.maxResp}
	if opts.After, err = estuite.ParseFeedCursor(q.Get("cursor"), s.store.FeedShards()); err != nil {
		s.fail(w, r, err)
		return
	}
	if opts.Limit, err = limitParam(q); err != nil {
		s.fail(w, r, err)
		return
	}
	page := estuite.MergedFeedPage{Next: opts.After}
	if r.Method != http.MethodHead {
		if page, err = s.store.ReadMerged(r.Context(), &opts); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	events := make([]any, len(page.Events))
	for i, ev := range page.Events {
		shard := ev.Shard
		if ev.Redacted {
			events[i] = redactedJSON{Shard: &shard, Position: ev.Position, Redacted: true}
			continue
		}
		e := toFeedEventJSON(ev)
		e.Shard = &shard
		events[i] = e
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": events, "next": page.Next.String()})
}

// readBody reads the request body, at most limit bytes: 413 too_large beyond (also when the
// Content-Length says so, before reading), 400 when it cannot be read.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, &apiError{Status: http.StatusRequestEntityTooLarge, Code: codeTooLarge,
			Message: "the request body is larger than " + strconv.FormatInt(limit, 10) + " bytes"}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if !errors.As(err, &mbe) {
			err = badRequest("the request body could not be read: %v", err)
		}
		return nil, err
	}
	return body, nil
}
