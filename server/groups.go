package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/jsoncheck"
	"github.com/estuite/estuite/internal/wire"
)

// Limits of the consumer group routes.
const (
	// MaxParkedRefs is how many parked events one replay or discard request may name.
	MaxParkedRefs = 1000
	// maxParkedBodyBytes bounds a replay or discard body: MaxParkedRefs references of the
	// longest form ({"shard":63,"position":4611686018427387904}) with room for whitespace.
	maxParkedBodyBytes = 256 << 10
	// DefaultGroupWait is how long GET /groups/{group}/wait waits without a timeout parameter;
	// MaxGroupWait is the longest it accepts.
	DefaultGroupWait = 10 * time.Second
	MaxGroupWait     = 60 * time.Second
	// groupWaitWriteSlack is how long past its timeout a wait's answer may take to be written:
	// the wait replaces the http.Server's WriteTimeout, for its own response, by its timeout plus
	// this.
	groupWaitWriteSlack = 10 * time.Second
)

// The causes of a group wait's context ending other than its client going away: its timeout
// passed, or the server is closing (Server.Close).
var (
	errWaitTimeout   = errors.New("the wait timed out")
	errServerClosing = errors.New("the server is closing")
)

// The consumer groups' answers as the API shows them (internal/wire).
type (
	groupInfoJSON   = wire.GroupInfo
	groupStateJSON  = wire.GroupState
	groupMemberJSON = wire.GroupMember
	groupSlotJSON   = wire.GroupSlot
	parkedJSON      = wire.Parked
)

// optionalTime is t as the API formats it, or nil (null) for the zero time.
func optionalTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := formatTime(t)
	return &s
}

func toGroupsJSON(groups []estuite.GroupInfo) map[string][]groupInfoJSON {
	out := make([]groupInfoJSON, len(groups))
	for i, g := range groups {
		out[i] = groupInfoJSON{Group: g.Name, Shards: g.Shards, Ranges: g.Ranges}
	}
	return map[string][]groupInfoJSON{"groups": out}
}

func toGroupStateJSON(st estuite.GroupState) groupStateJSON {
	out := groupStateJSON{Group: st.Name, Shards: st.Shards, Ranges: st.Ranges, Parked: st.Parked,
		Members: make([]groupMemberJSON, len(st.Members)), Slots: make([]groupSlotJSON, len(st.Slots))}
	for i, m := range st.Members {
		out.Members[i] = groupMemberJSON{Member: m.Name, Updated: optionalTime(m.Updated), Slots: m.Slots}
	}
	for i, sl := range st.Slots {
		j := groupSlotJSON{Shard: sl.Shard, Range: sl.Range, Position: sl.Position, Lag: sl.Lag, Updated: optionalTime(sl.Updated)}
		if sl.Owner != "" {
			owner := sl.Owner
			j.Owner = &owner
		}
		out.Slots[i] = j
	}
	return out
}

func toParkedJSON(parked []estuite.ParkedEvent) map[string][]parkedJSON {
	out := make([]parkedJSON, len(parked))
	for i, p := range parked {
		out[i] = parkedJSON{Shard: p.Shard, Range: p.Range, Position: p.Position, Stream: p.Stream, Version: p.Version,
			Type: p.Type, EventID: p.EventID, Error: p.Error, Attempts: p.Attempts, Waiting: p.Waiting, Replay: p.Replay,
			Parked: optionalTime(p.Parked)}
	}
	return map[string][]parkedJSON{"parked": out}
}

// MarshalGroups encodes consumer groups as GET /groups answers them. Command-line tools use these
// Marshal functions so that their output matches the API.
func MarshalGroups(groups []estuite.GroupInfo) ([]byte, error) {
	return marshalJSON(toGroupsJSON(groups))
}

// MarshalGroupState encodes a consumer group's state as GET /groups/{group} answers it.
func MarshalGroupState(st estuite.GroupState) ([]byte, error) {
	return marshalJSON(toGroupStateJSON(st))
}

// MarshalParkedEvents encodes parked events as GET /groups/{group}/parked answers them.
func MarshalParkedEvents(parked []estuite.ParkedEvent) ([]byte, error) {
	return marshalJSON(toParkedJSON(parked))
}

// group returns the request's consumer group name: its path segment, percent-decoded once.
func (s *Server) group(r *http.Request) string {
	name := r.PathValue("group")
	requestInfoOf(r).group = name
	return name
}

// handleGroups serves GET /groups.
func (s *Server) handleGroups(w http.ResponseWriter, r *http.Request) {
	if _, err := parseQuery(r, nil, nil); err != nil {
		s.fail(w, r, err)
		return
	}
	groups, err := s.store.Groups(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toGroupsJSON(groups))
}

// handleGroup serves GET /groups/{group}.
func (s *Server) handleGroup(w http.ResponseWriter, r *http.Request) {
	group := s.group(r)
	if _, err := parseQuery(r, nil, nil); err != nil {
		s.fail(w, r, err)
		return
	}
	st, err := s.store.GroupState(r.Context(), group)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toGroupStateJSON(st))
}

// handleParked serves GET /groups/{group}/parked?limit=N.
func (s *Server) handleParked(w http.ResponseWriter, r *http.Request) {
	group := s.group(r)
	limit, err := limitQuery(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	parked, err := s.store.ParkedEvents(r.Context(), group, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toParkedJSON(parked))
}

// handleReplay serves POST /groups/{group}/parked/replay.
func (s *Server) handleReplay(w http.ResponseWriter, r *http.Request) {
	s.changeParked(w, r, "replayed", s.store.ReplayParked)
}

// handleDiscard serves POST /groups/{group}/parked/discard.
func (s *Server) handleDiscard(w http.ResponseWriter, r *http.Request) {
	s.changeParked(w, r, "discarded", s.store.DiscardParked)
}

// changeParked reads a replay or discard body and applies change to the events it names (all of
// them for {"all": true}), answering {member: n}.
func (s *Server) changeParked(w http.ResponseWriter, r *http.Request, member string,
	change func(context.Context, string, []estuite.ParkedRef) (int, error)) {
	group := s.group(r)
	if _, err := parseQuery(r, nil, nil); err != nil {
		s.fail(w, r, err)
		return
	}
	body, err := readBody(w, r, min(s.maxBody, maxParkedBodyBytes))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	refs, err := decodeParkedRefs(body, s.store.FeedShards())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	n, err := change(r.Context(), group, refs)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{member: n})
}

// decodeParkedRefs decodes a replay or discard body strictly: {"events": [{"shard": s,
// "position": p}, …]} naming 1 to MaxParkedRefs distinct parked events of a store of shards feed
// shards, or {"all": true} (nil refs: every parked event).
func decodeParkedRefs(body []byte, shards int) ([]estuite.ParkedRef, error) {
	const what = "the request body"
	const want = `it must be a JSON object with "events" (the parked events, as {"shard": s, "position": p}) or "all": true`
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, badRequest("the request body is empty; %s", want)
	}
	if err := jsoncheck.Check(body); err != nil {
		return nil, badRequest("%s is not JSON text every reader reads alike: %v", what, err)
	}
	if !json.Valid(body) {
		return nil, badJSON(what, json.Unmarshal(body, &struct{}{}))
	}
	if jsonKind(body) != '{' {
		return nil, badRequest("%s must be a JSON object: %s", what, want)
	}
	var events, all []byte
	err := decodeObject(body, what, []string{"events", "all"}, func(name string, v []byte) error {
		if name == "events" {
			events = v
		} else {
			all = v
		}
		return nil
	})
	switch {
	case err != nil:
		return nil, err
	case events != nil && all != nil:
		return nil, badRequest(`give "events" or "all", not both`)
	case all != nil:
		if string(bytes.TrimSpace(all)) != "true" {
			return nil, badRequest(`all must be true (to name some events, give "events" instead), not %.40s`, bytes.TrimSpace(all))
		}
		return nil, nil
	case events == nil:
		return nil, badRequest("%s", want)
	case jsonKind(events) != '[':
		return nil, badRequest(`events must be an array of {"shard": s, "position": p}`)
	}
	var refs []estuite.ParkedRef
	seen := make(map[estuite.ParkedRef]bool)
	err = eachElement(events, func(raw []byte) error {
		i := len(refs)
		if i == MaxParkedRefs {
			return &apiError{Status: http.StatusRequestEntityTooLarge, Code: codeTooLarge,
				Message: "a request names at most " + strconv.Itoa(MaxParkedRefs) + ` parked events (use "all": true for every one)`}
		}
		ref, err := decodeParkedRef(i, raw, shards)
		if err != nil {
			return err
		}
		if seen[ref] {
			return badRequest("events[%d] names shard %d, position %d a second time", i, ref.Shard, ref.Position)
		}
		seen[ref] = true
		refs = append(refs, ref)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(refs) == 0 {
		return nil, badRequest(`events must not be empty (use "all": true for every parked event)`)
	}
	return refs, nil
}

// decodeParkedRef decodes the i-th element of a replay or discard body's events.
func decodeParkedRef(i int, raw []byte, shards int) (estuite.ParkedRef, error) {
	what := "events[" + strconv.Itoa(i) + "]"
	var ref estuite.ParkedRef
	if jsonKind(raw) != '{' {
		return ref, badRequest(`%s must be a JSON object {"shard": s, "position": p}`, what)
	}
	var shard, position []byte
	if err := decodeObject(raw, what, []string{"shard", "position"}, func(name string, v []byte) error {
		if name == "shard" {
			shard = v
		} else {
			position = v
		}
		return nil
	}); err != nil {
		return ref, err
	}
	if shard == nil || position == nil {
		return ref, badRequest(`%s must have both "shard" and "position"`, what)
	}
	sh, ok := jsonInt(shard)
	if !ok || sh < 0 || sh >= int64(shards) {
		return ref, badRequest("%s.shard must be an integer from 0 to %d (the store's feed shards), not %.40s", what, shards-1, bytes.TrimSpace(shard))
	}
	pos, ok := jsonInt(position)
	if !ok || pos < 1 || pos > estuite.MaxPosition {
		return ref, badRequest("%s.position must be an integer from 1 to %d, not %.40s", what, estuite.MaxPosition, bytes.TrimSpace(position))
	}
	return estuite.ParkedRef{Shard: int(sh), Position: pos}, nil
}

// jsonInt parses a JSON number that is an integer written without fraction or exponent.
func jsonInt(raw []byte) (int64, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
		return 0, false
	}
	v, err := strconv.ParseInt(string(raw), 10, 64)
	return v, err == nil
}

// handleGroupWait serves GET /groups/{group}/wait?stream=S&version=V&timeout=D: it answers once
// the group has handled the event (200), parked it (409), or the timeout passed (408).
func (s *Server) handleGroupWait(w http.ResponseWriter, r *http.Request) {
	group := s.group(r)
	q, err := parseQuery(r, []string{"stream", "version", "timeout"}, nil)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !q.Has("stream") || !q.Has("version") {
		s.fail(w, r, badRequest("stream and version are required: the event waited for"))
		return
	}
	stream := q.Get("stream")
	requestInfoOf(r).stream = stream
	version, err := intParam(q, "version", 1, 1<<62)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	timeout := DefaultGroupWait
	if q.Has("timeout") {
		text := q.Get("timeout")
		d, err := time.ParseDuration(text)
		if err != nil || d < time.Millisecond || d > MaxGroupWait {
			s.fail(w, r, badRequest("timeout must be a duration from 1ms to %v (e.g. 5s, 500ms), not %.40q", MaxGroupWait, text))
			return
		}
		timeout = d
	}
	select {
	case <-s.closing:
		s.fail(w, r, &apiError{Status: http.StatusServiceUnavailable, Code: codeUnavailable, Message: "the server is shutting down"})
		return
	default:
	}
	// The answer may come after the http.Server's WriteTimeout: give this response its own.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(timeout + groupWaitWriteSlack))
	base, stop := context.WithCancelCause(r.Context())
	defer stop(nil)
	ctx, cancel := context.WithTimeoutCause(base, timeout, errWaitTimeout)
	defer cancel()
	go func() {
		select {
		case <-s.closing:
			stop(errServerClosing)
		case <-ctx.Done():
		}
	}()
	err = s.store.WaitGroupHandled(ctx, group, stream, version)
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, map[string]bool{"handled": true})
	case r.Context().Err() != nil:
		s.fail(w, r, r.Context().Err()) // the client went away: a 499, never answered
	case ctx.Err() != nil && context.Cause(ctx) == errWaitTimeout:
		s.fail(w, r, &apiError{Status: http.StatusRequestTimeout, Code: codeTimeout,
			Message: "the group has not handled " + strconv.Quote(stream) + "@" + strconv.FormatInt(version, 10) + " within " + timeout.String(), Err: err})
	case ctx.Err() != nil && context.Cause(ctx) == errServerClosing:
		s.fail(w, r, &apiError{Status: http.StatusServiceUnavailable, Code: codeUnavailable, Message: "the server is shutting down", Err: err})
	default:
		s.fail(w, r, err)
	}
}
