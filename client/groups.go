package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/wire"
)

// groupPath is the escaped path of a consumer group's route: /groups/{group}, then suffix.
func groupPath(group, suffix string) string { return "/groups/" + PathSegment(group) + suffix }

// optionalTime reads a time the API may write as null.
func optionalTime(s *string) (time.Time, error) {
	if s == nil {
		return time.Time{}, nil
	}
	return parseTime(*s)
}

// Groups returns the store's consumer groups, in name order (GET /groups).
func (c *Client) Groups(ctx context.Context) ([]estuite.GroupInfo, error) {
	var out struct {
		Groups []wire.GroupInfo `json:"groups"`
	}
	if _, _, err := c.call(ctx, request{method: http.MethodGet, path: "/groups"}, &out); err != nil {
		return nil, err
	}
	groups := make([]estuite.GroupInfo, len(out.Groups))
	for i, g := range out.Groups {
		groups[i] = estuite.GroupInfo{Name: g.Group, Shards: g.Shards, Ranges: g.Ranges}
	}
	return groups, nil
}

// GroupState returns a consumer group's members, slots and parked count (GET /groups/{group}):
// estuite.ErrGroupNotFound for a group never created.
func (c *Client) GroupState(ctx context.Context, group string) (estuite.GroupState, error) {
	var out wire.GroupState
	if _, _, err := c.call(ctx, request{method: http.MethodGet, path: groupPath(group, "")}.named("group", group), &out); err != nil {
		return estuite.GroupState{}, err
	}
	st := estuite.GroupState{GroupInfo: estuite.GroupInfo{Name: out.Group, Shards: out.Shards, Ranges: out.Ranges}, Parked: out.Parked,
		Members: make([]estuite.GroupMemberState, len(out.Members)), Slots: make([]estuite.GroupSlotState, len(out.Slots))}
	var err error
	for i, m := range out.Members {
		st.Members[i] = estuite.GroupMemberState{Name: m.Member, Slots: m.Slots}
		if st.Members[i].Updated, err = optionalTime(m.Updated); err != nil {
			return estuite.GroupState{}, err
		}
	}
	for i, s := range out.Slots {
		sl := estuite.GroupSlotState{GroupSlot: estuite.GroupSlot{Shard: s.Shard, Range: s.Range}, Position: s.Position, Lag: s.Lag}
		if s.Owner != nil {
			sl.Owner = *s.Owner
		}
		if sl.Updated, err = optionalTime(s.Updated); err != nil {
			return estuite.GroupState{}, err
		}
		st.Slots[i] = sl
	}
	return st, nil
}

// ParkedEvents returns a consumer group's parked events, in shard and position order (GET
// /groups/{group}/parked): the first limit of them (0: the server's default of 100; at most
// MaxPageLimit).
func (c *Client) ParkedEvents(ctx context.Context, group string, limit int) ([]estuite.ParkedEvent, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Parked []wire.Parked `json:"parked"`
	}
	if _, _, err := c.call(ctx, request{method: http.MethodGet, path: groupPath(group, "/parked"), query: q}.named("group", group), &out); err != nil {
		return nil, err
	}
	parked := make([]estuite.ParkedEvent, len(out.Parked))
	for i, p := range out.Parked {
		at, err := optionalTime(p.Parked)
		if err != nil {
			return nil, err
		}
		parked[i] = estuite.ParkedEvent{Shard: p.Shard, Range: p.Range, Position: p.Position, Stream: p.Stream, Version: p.Version,
			Type: p.Type, EventID: p.EventID, Error: p.Error, Attempts: p.Attempts, Waiting: p.Waiting, Replay: p.Replay, Parked: at}
	}
	return parked, nil
}

// ReplayParked asks the group to handle parked events again: those named, or every one when refs
// is empty (POST /groups/{group}/parked/replay). It returns how many were marked.
func (c *Client) ReplayParked(ctx context.Context, group string, refs []estuite.ParkedRef) (int, error) {
	return c.changeParked(ctx, group, "replay", "replayed", refs)
}

// DiscardParked deletes parked events unhandled: those named, or every one when refs is empty
// (POST /groups/{group}/parked/discard). It returns how many were deleted.
func (c *Client) DiscardParked(ctx context.Context, group string, refs []estuite.ParkedRef) (int, error) {
	return c.changeParked(ctx, group, "discard", "discarded", refs)
}

func (c *Client) changeParked(ctx context.Context, group, action, member string, refs []estuite.ParkedRef) (int, error) {
	var body any = map[string]bool{"all": true}
	if len(refs) > 0 {
		list := make([]map[string]int64, len(refs))
		for i, r := range refs {
			list[i] = map[string]int64{"shard": int64(r.Shard), "position": r.Position}
		}
		body = map[string]any{"events": list}
	}
	var out map[string]int
	if _, _, err := c.call(ctx, request{method: http.MethodPost, path: groupPath(group, "/parked/"+action), body: body}.named("group", group), &out); err != nil {
		return 0, err
	}
	return out[member], nil
}
