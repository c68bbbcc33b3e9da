package server

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
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
	q, err := parseQuery(r, []string{"after", "prefix"}, []string{"type"})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	opts, err := feedFilter(q)
	if err != nil {
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
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		return
	}
	rc := http.NewResponseController(w)
	// A live stream outlives any write timeout the http.Server has; it is ended by the client,
	// a failure or Close. Not every ResponseWriter supports deadlines: that is fine.
	_ = rc.SetWriteDeadline(time.Time{})

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	events := make(chan estuite.FeedEvent)
	sub, err := s.store.Subscribe(ctx, estuite.SubscriptionOptions{
		After:        after,
		Types:        opts.Types,
		StreamPrefix: opts.StreamPrefix,
		MaxRetries:   -1, // the handler fails only when the stream ends
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
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriter(w)
	flush := func() error {
		if err := bw.Flush(); err != nil {
			return err
		}
		return rc.Flush()
	}
	fmt.Fprintf(bw, ": estuite live feed after %d\n\n", after)
	if err := flush(); err != nil {
		return
	}
	keepAlive := time.NewTicker(s.keepAlive)
	defer keepAlive.Stop()
	for {
		select {
		case ev := <-events:
			data, err := marshalJSON(toFeedEventJSON(ev))
			if err != nil {
				s.liveFailed(bw, r, err)
				flush()
				return
			}
			fmt.Fprintf(bw, "id: %d\ndata: %s\n\n", ev.Position, data)
			if err := flush(); err != nil {
				return
			}
		case <-keepAlive.C:
			bw.WriteString(": keep-alive\n\n")
			if err := flush(); err != nil {
				return
			}
		case <-sub.Done():
			if err := sub.Err(); err != nil {
				s.liveFailed(bw, r, err)
				flush()
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
