package server

import (
	"net/http"

	"github.com/estuite/estuite"
)

// streamListJSON is the body of GET /streams.
type streamListJSON struct {
	Streams []streamInfoJSON `json:"streams"`
	Next    *string          `json:"next"` // null on the last page
}

type streamInfoJSON struct {
	Stream  string `json:"stream"`
	Version int64  `json:"version"`
}

// handleListStreams serves GET /streams?prefix=&after=&limit=: a page of the stream catalog
// (Store.ListStreams). An empty prefix or after is the same as none.
func (s *Server) handleListStreams(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r, []string{"prefix", "after", "limit"}, nil)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	limit, err := limitParam(q)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	list, err := s.store.ListStreams(r.Context(), &estuite.ListStreamsOptions{Prefix: q.Get("prefix"), After: q.Get("after"), Limit: limit})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := streamListJSON{Streams: make([]streamInfoJSON, len(list.Streams))}
	for i, st := range list.Streams {
		out.Streams[i] = streamInfoJSON{Stream: st.Name, Version: st.Version}
	}
	if list.Next != "" {
		out.Next = &list.Next
	}
	writeJSON(w, http.StatusOK, out)
}
