package estuite

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/estuite/estuite/table"
)

// GroupInfo is a consumer group's layout: its feed shards and the ranges each is split into.
type GroupInfo struct {
	Name   string
	Shards int
	Ranges int
}

// GroupState is what the rows of a consumer group say now (Store.GroupState).
type GroupState struct {
	GroupInfo
	// Members are the member rows, by name, with when each last wrote its row (its own clock).
	Members []GroupMemberState
	// Slots are the group's slots in order: who holds each, its checkpoint, and how far it is
	// behind its shard's feed head.
	Slots []GroupSlotState
	// Parked is how many events the group has parked.
	Parked int
}

// GroupMemberState is a member row of a consumer group.
type GroupMemberState struct {
	Name    string
	Updated time.Time
	Slots   int // how many slots name it as their holder
}

// GroupSlotState is one slot of a consumer group.
type GroupSlotState struct {
	GroupSlot
	// Owner is the member holding it ("" when free).
	Owner string
	// Position is its checkpoint: the feed position (of its shard) up to which it has handled
	// its streams' events; Lag is the shard's head minus Position.
	Position, Lag int64
	// Updated is when its row was last written (renewed or checkpointed).
	Updated time.Time
}

// Groups returns the store's consumer groups, in name order: one query of the group catalog.
func (s *Store) Groups(ctx context.Context) ([]GroupInfo, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	var out []GroupInfo
	err := s.events.queryPages(ctx, table.Query{PartitionKey: groupCatalogPartition}, func(p table.Page) error {
		for _, row := range p.Entities {
			cfg, err := decodeGroupConfig(row)
			if err != nil {
				return err
			}
			out = append(out, cfg.info())
		}
		return nil
	})
	slices.SortFunc(out, func(a, b GroupInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, err
}

func (c groupConfig) info() GroupInfo {
	return GroupInfo{Name: c.name, Shards: c.shards, Ranges: c.ranges}
}

// GroupState reads a consumer group's rows: its catalog row, its partition (members and slots),
// each feed shard's head (FeedHeadOf: usually two point reads), and its parked events — 3 + 2 × FeedShards requests (more for more than
// 1,000 parked events). A group that does not exist is ErrGroupNotFound.
func (s *Store) GroupState(ctx context.Context, group string) (GroupState, error) {
	if err := s.checkOpen(); err != nil {
		return GroupState{}, err
	}
	cfg, err := s.groupConfigOf(ctx, group)
	if err != nil {
		return GroupState{}, err
	}
	st := GroupState{GroupInfo: cfg.info()}
	heads := make([]int64, cfg.shards)
	for shard := range cfg.shards {
		if heads[shard], err = s.FeedHeadOf(ctx, shard); err != nil {
			return GroupState{}, err
		}
	}
	slots := make(map[GroupSlot]GroupSlotState)
	owners := make(map[string]int)
	err = s.events.queryPages(ctx, table.Query{PartitionKey: groupPartition(group)}, func(p table.Page) error {
		for _, r := range p.Entities {
			if strings.HasPrefix(r.RowKey, memberPrefix) {
				name, _ := r.Properties[propOwner].(string)
				updated, _ := r.Properties[propUpdated].(time.Time)
				if name != "" {
					st.Members = append(st.Members, GroupMemberState{Name: name, Updated: updated})
				}
				continue
			}
			slot, ok := parseSlotRowKey(r.RowKey)
			if !ok || slot.Shard >= cfg.shards || slot.Range >= cfg.ranges {
				continue
			}
			ss := GroupSlotState{GroupSlot: slot}
			ss.Owner, _ = r.Properties[propOwner].(string)
			ss.Position, _ = r.Properties[propPosition].(int64)
			ss.Updated, _ = r.Properties[propUpdated].(time.Time)
			slots[slot] = ss
			if ss.Owner != "" {
				owners[ss.Owner]++
			}
		}
		return nil
	})
	if err != nil {
		return GroupState{}, err
	}
	for _, slot := range cfg.slots() {
		ss, ok := slots[slot]
		if !ok {
			ss = GroupSlotState{GroupSlot: slot}
		}
		ss.Lag = max(heads[slot.Shard]-ss.Position, 0)
		st.Slots = append(st.Slots, ss)
	}
	for i := range st.Members {
		st.Members[i].Slots = owners[st.Members[i].Name]
	}
	slices.SortFunc(st.Members, func(a, b GroupMemberState) int { return strings.Compare(a.Name, b.Name) })
	parked, err := s.parkedRows(ctx, group, -1, 0)
	if err != nil {
		return GroupState{}, err
	}
	st.Parked = len(parked)
	return st, nil
}

// WaitGroupHandled waits until the consumer group has handled the event at version of stream
// (read-your-writes for a projection: append, then wait for the group before reading what its
// handler wrote). It returns nil once the checkpoint of the event's slot is at or past the
// event's feed position, an error wrapping ErrEventParked when the group parked the event
// instead, or ctx's error. It first waits for the event's dispatch (WaitDispatched), then reads
// the slot's row, at once and then with a backoff from 10 ms to 500 ms: one point read each.
// A member saves its checkpoint when it is caught up, so the wait ends about a save after the
// handler ran.
func (s *Store) WaitGroupHandled(ctx context.Context, group, stream string, version int64) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	cfg, err := s.groupConfigOf(ctx, group)
	if err != nil {
		return err
	}
	pos, err := s.WaitDispatched(ctx, stream, version)
	if err != nil {
		return err
	}
	slot := cfg.slotOf(streamKey(stream))
	pk := groupPartition(group)
	poll := 10 * time.Millisecond
	for {
		row, err := s.events.get(ctx, pk, slotRowKey(slot))
		if err != nil && !errors.Is(err, table.ErrNotFound) {
			return err
		}
		if p, _ := row.Properties[propPosition].(int64); err == nil && p >= pos {
			_, perr := s.events.get(ctx, parkedPartition(group), parkedRowKey(slot.Shard, pos))
			switch {
			case perr == nil:
				return fmt.Errorf("%w: %s@%d (group %q, shard %d, position %d)", ErrEventParked, stream, version, group, slot.Shard, pos)
			case errors.Is(perr, table.ErrNotFound):
				return nil
			default:
				return perr
			}
		}
		if err := sleep(ctx, poll); err != nil {
			return err
		}
		poll = min(2*poll, 500*time.Millisecond)
	}
}

// DeleteGroup deletes a consumer group: its catalog row, its members' and slots' rows (and so its
// checkpoints) and its parked events. Stop its members first: a member still running would write
// its rows again (and its group would be created anew by the next JoinGroup, from the feed's
// first event). A group that does not exist is ErrGroupNotFound. Cost: a point read, a query of
// each of the group's two partitions, and a batch per 100 rows deleted.
func (s *Store) DeleteGroup(ctx context.Context, group string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if _, err := s.groupConfigOf(ctx, group); err != nil {
		return err
	}
	for _, pk := range []string{parkedPartition(group), groupPartition(group)} {
		var keys []string
		err := s.events.queryPages(ctx, table.Query{PartitionKey: pk}, func(p table.Page) error {
			for _, r := range p.Entities {
				keys = append(keys, r.RowKey)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for chunk := range slices.Chunk(keys, table.MaxBatchOps) {
			ops := make([]table.Op, len(chunk))
			for i, rk := range chunk {
				ops[i] = table.Op{Kind: table.Delete, Entity: table.Entity{PartitionKey: pk, RowKey: rk}, IfMatch: table.AnyETag}
			}
			if _, err := s.events.submitRefused(ctx, pk, ops); err != nil && !errors.Is(err, table.ErrNotFound) {
				return err
			}
		}
	}
	op := table.Op{Kind: table.Delete, Entity: table.Entity{PartitionKey: groupCatalogPartition, RowKey: streamKey(group)}, IfMatch: table.AnyETag}
	if _, err := s.events.submitRefused(ctx, groupCatalogPartition, []table.Op{op}); err != nil && !errors.Is(err, table.ErrNotFound) {
		return err
	}
	return nil
}
