package server

import (
	"net/http"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/wire"
)

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
	out := wire.FromStreamList(list)
	writeJSON(w, http.StatusOK, out)
}
