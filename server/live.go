package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/estuite/estuite"
)

// liveConn is one open live feed stream.
type liveConn struct {
	sub *estuite.Subscription
}

// handleLive serves GET /feed/live: the feed as Server-Sent Events, from a non-durable
// subscription, until the client goes away, the subscription fails, or the server is closed.
func (s *Server) handleLive(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r, []string{"after", "prefix", "shard"}, []string{"type"})
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
	var after int64
	if q.Has("after") {
		if after, err = intParam(q, "after", 0, estuite.MaxPosition); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		v, ok := parsePosition(strings.TrimSpace(id))
		if !ok {
			s.fail(w, r, badRequest("the Last-Event-ID header must be a feed position, decimal digits from 0 to %d, not %.40q", estuite.MaxPosition, id))
			return
		}
		after = v
	}
	select {
	case <-s.closing:
		s.fail(w, r, &apiError{Status: http.StatusServiceUnavailable, Code: codeUnavailable, Message: "the server is shutting down"})
		return
	default:
	}
	// HEAD answers as GET would, without taking a slot.
	if !s.admitLive(r.Method != http.MethodHead) {
		s.fail(w, r, &apiError{Status: http.StatusServiceUnavailable, Code: codeTooManyLiveStreams,
			Message: "the server has " + strconv.Itoa(s.maxLive) + " live feed streams open, its limit; retry later, or read GET /feed"})
		return
	}
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		return
	}
	defer s.releaseLive()
	rc := http.NewResponseController(w)

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	// Unbuffered: one event in flight between the subscription and this loop, and the
	// subscription holds one batch of at most about liveBatchBytes.
	events := make(chan estuite.FeedEvent)
	sub, err := s.store.Subscribe(ctx, estuite.SubscriptionOptions{
		Shard:         opts.Shard,
		After:         after,
		Types:         opts.Types,
		StreamPrefix:  opts.StreamPrefix,
		MaxRetries:    -1, // the handler fails only when the stream ends
		MaxBatchBytes: liveBatchBytes,
		Handler: func(ctx context.Context, ev estuite.FeedEvent) error {
			select {
			case events <- ev:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		},
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	conn := &liveConn{sub: sub}
	s.liveMu.Lock()
	s.live[conn] = struct{}{}
	s.liveMu.Unlock()
	defer func() {
		cancel()
		sub.Stop()
		s.liveMu.Lock()
		delete(s.live, conn)
		s.liveMu.Unlock()
	}()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // tell nginx and friends not to buffer the stream
	bw := bufio.NewWriter(w)
	var msg bytes.Buffer // one event's message, encoded before it is sent
	enc := json.NewEncoder(&msg)
	enc.SetEscapeHTML(false)
	// send writes one message under its own write deadline (which replaces any WriteTimeout of
	// the http.Server for this connection: a stream outlives it): a client that does not take
	// the bytes within LiveWriteTimeout is dropped. Not every ResponseWriter supports deadlines.
	send := func(write func()) error {
		_ = rc.SetWriteDeadline(time.Now().Add(s.liveWrite))
		write()
		if err := bw.Flush(); err != nil {
			return err
		}
		return rc.Flush()
	}
	dropped := func(err error) {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			s.log.LogAttrs(r.Context(), slog.LevelInfo, "live feed stream dropped: the client did not read it within the write timeout",
				slog.Duration("timeout", s.liveWrite), slog.Int64("position", sub.Position()))
		}
	}
	err = send(func() {
		w.WriteHeader(http.StatusOK)
		fmt.Fprintf(bw, ": estuite live feed after %d\n\n", after)
	})
	if err != nil {
		dropped(err)
		return
	}
	keepAlive := time.NewTicker(s.keepAlive)
	defer keepAlive.Stop()
	for {
		select {
		case ev := <-events:
			msg.Reset()
			msg.WriteString("id: " + strconv.FormatInt(ev.Position, 10) + "\ndata: ")
			if err := enc.Encode(toFeedEventJSON(ev)); err != nil { // its newline ends the data line
				send(func() { s.liveFailed(bw, r, err) })
				return
			}
			msg.WriteString("\n")
			if err := send(func() { bw.Write(msg.Bytes()) }); err != nil {
				dropped(err)
				return
			}
			if msg.Cap() > 256<<10 {
				msg = bytes.Buffer{} // do not keep a large event's buffer while the stream idles
			}
		case <-keepAlive.C:
			if err := send(func() { bw.WriteString(": keep-alive\n\n") }); err != nil {
				dropped(err)
				return
			}
		case <-sub.Done():
			if err := sub.Err(); err != nil {
				send(func() { s.liveFailed(bw, r, err) })
			}
			return
		case <-r.Context().Done():
			return
		case <-s.closing:
			return
		}
	}
}

// parsePosition parses a feed position as the live feed sends it in id: lines: decimal digits only
// (no sign, no spaces), at most estuite.MaxPosition.
func parsePosition(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil && v <= estuite.MaxPosition
}

// liveBatchBytes bounds the events a live stream's subscription reads ahead (one feed read): a
// stream holds at most about this much of events, one more (the one that reaches it) and the JSON
// of the event being sent — a few MiB, whatever the events' size.
const liveBatchBytes = 1 << 20

// admitLive reports whether a live stream may open, under Options.MaxLiveStreams; take
// reserves its slot, to be given back with releaseLive.
func (s *Server) admitLive(take bool) bool {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	if s.liveSlots >= s.maxLive {
		return false
	}
	if take {
		s.liveSlots++
	}
	return true
}

func (s *Server) releaseLive() {
	s.liveMu.Lock()
	s.liveSlots--
	s.liveMu.Unlock()
}

// liveFailed ends a live stream on an error with an "error" event carrying the error body.
func (s *Server) liveFailed(bw *bufio.Writer, r *http.Request, err error) {
	e := toAPIError(err)
	requestInfoOf(r).err = e
	data, merr := marshalJSON(e)
	if merr != nil {
		data = []byte(`{"error":"internal","message":"internal error"}`)
	}
	fmt.Fprintf(bw, "event: error\ndata: %s\n\n", data)
}
