package server

import (
	"net/http"
)

// routeSubscriptions is the route of the durable subscriptions' checkpoints.
const routeSubscriptions = "GET /subscriptions"

// subscriptionJSON is a durable subscription's checkpoint (estuite.Checkpoint) and its distance
// from its shard's feed head, as GET /subscriptions shows it.
type subscriptionJSON struct {
	Subscription string  `json:"subscription"`
	Shard        int     `json:"shard"`
	Position     int64   `json:"position"`
	FeedHead     int64   `json:"feedHead"`
	Distance     int64   `json:"distance"`
	Updated      *string `json:"updated"` // null when the row holds no time
}

// handleSubscriptions serves GET /subscriptions?limit=N: the stored checkpoints (one query of the
// checkpoint partition per feed shard), then, when there is one, each shard's feed head, read
// after the checkpoints so that no checkpoint is newer than the head it is measured against.
func (s *Server) handleSubscriptions(w http.ResponseWriter, r *http.Request) {
	limit, err := limitQuery(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	cps, err := s.store.Checkpoints(r.Context(), limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	heads := make(map[int]int64)
	out := make([]subscriptionJSON, 0, len(cps))
	for _, cp := range cps {
		head, ok := heads[cp.Shard]
		if !ok {
			if head, err = s.store.FeedHeadOf(r.Context(), cp.Shard); err != nil {
				s.fail(w, r, err)
				return
			}
			heads[cp.Shard] = head
			if cp.Shard == 0 {
				s.metrics.observeFeedHead(head)
			}
		}
		out = append(out, subscriptionJSON{Subscription: cp.Name, Shard: cp.Shard, Position: cp.Position, FeedHead: head,
			Distance: max(head-cp.Position, 0), Updated: optionalTime(cp.Updated)})
	}
	writeJSON(w, http.StatusOK, map[string][]subscriptionJSON{"subscriptions": out})
}
