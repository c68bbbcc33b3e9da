package estuite

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/estuite/estuite/table"
	"github.com/google/uuid"
)

// ParkedEvent is an event a consumer group gave up on: its handler failed on it MaxRetries
// times over (or, with ParkBlocksStream, it waits behind such an event of its stream). Its row
// holds where the event is in the feed, not the event: a replay reads it from the feed again.
type ParkedEvent struct {
	// Shard and Position place the event in the feed; Range is its stream's range in the shard.
	Shard    int
	Range    int
	Position int64
	// Stream, Version, Type and EventID say which event it is.
	Stream  string
	Version int64
	Type    string
	EventID string
	// Error is the handler's last error (its first 4 KiB); Attempts how many calls failed.
	Error    string
	Attempts int
	// Waiting is true for an event parked unhandled behind an earlier parked event of its
	// stream (ParkBlocksStream): it is replayed by itself once no failed event of its stream
	// is parked before it.
	Waiting bool
	// Replay is true while a replay has been asked for and not yet tried.
	Replay bool
	// Parked is when the event was parked (or last failed on replay), on the parking member's
	// clock.
	Parked time.Time
}

// ParkedRef names a parked event: its feed shard and position.
type ParkedRef struct {
	Shard    int
	Position int64
}

// ErrEventParked: the event waited for was parked by the consumer group, not handled.
var ErrEventParked = errors.New("estuite: event parked by the consumer group")

const (
	propAttempts  = "Attempts"
	propError     = "Error"
	propWaiting   = "Waiting"
	propReplay    = "Replay"
	propRange     = "Range"
	propShard     = "Shard"
	maxParkedText = 4096
)

func parkedRowKey(shard int, position int64) string {
	return fmt.Sprintf("%02d-%019d", shard, position)
}

// park writes the parked row of ev, and (ParkBlocksStream) blocks its stream in the slot.
func (m *GroupMember) park(ctx context.Context, slot GroupSlot, h *heldSlot, ev FeedEvent, attempts int, reason string, waiting bool) error {
	if len(reason) > maxParkedText {
		reason = reason[:maxParkedText]
		for !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	pk := parkedPartition(m.o.Group)
	row := table.Entity{PartitionKey: pk, RowKey: parkedRowKey(ev.Shard, ev.Position), Properties: map[string]any{
		propShard: int64(ev.Shard), propRange: int64(slot.Range), propPosition: ev.Position,
		propStream: ev.Stream, propVersion: ev.Version, propType: ev.Type, propID: ev.ID.String(),
		propError: reason, propAttempts: int64(attempts), propWaiting: waiting, propReplay: false,
		propUpdated: m.s.now().UTC(),
	}}
	if _, err := m.s.events.submitRefused(ctx, pk, []table.Op{{Kind: table.Upsert, Entity: row}}); err != nil {
		return err
	}
	m.count(func(st *GroupStats) { st.Parked++ })
	if m.o.Park == ParkBlocksStream {
		m.block(h, ev.Stream, ev.Position)
	}
	return nil
}

func (m *GroupMember) block(h *heldSlot, stream string, position int64) {
	if h.blocked == nil {
		h.blocked, h.blocking = make(map[string]bool), make(map[string]int64)
	}
	if !h.blocked[stream] {
		h.blocked[stream], h.blocking[stream] = true, position
	}
}

// loadBlocked reads the parked events of a slot just taken: it blocks their streams
// (ParkBlocksStream) and replays those a replay was asked for. One query of the parked
// partition's rows of the slot's shard.
func (m *GroupMember) loadBlocked(ctx context.Context, slot GroupSlot, h *heldSlot) error {
	rows, err := m.s.parkedRows(ctx, m.o.Group, slot.Shard)
	if err != nil {
		return err
	}
	return m.replaySlot(ctx, slot, h, rows)
}

// replayParked looks at the parked events of every slot held: a replay (or a discard) was asked
// for.
func (m *GroupMember) replayParked(ctx context.Context) error {
	byShard := make(map[int][]ParkedEvent)
	rows, err := m.s.parkedRows(ctx, m.o.Group, -1)
	if err != nil {
		return err
	}
	for _, p := range rows {
		byShard[p.Shard] = append(byShard[p.Shard], p)
	}
	for _, slot := range sortedSlots(m.held) {
		if err := m.replaySlot(ctx, slot, m.held[slot], byShard[slot.Shard]); err != nil {
			return err
		}
	}
	return nil
}

// replaySlot handles, in position order, the slot's parked events that are due: those a replay
// was asked for, and (ParkBlocksStream) waiting ones with no failed event of their stream before
// them. A stream whose parked event fails again, or is not asked for, stays blocked from there.
func (m *GroupMember) replaySlot(ctx context.Context, slot GroupSlot, h *heldSlot, rows []ParkedEvent) error {
	h.blocked, h.blocking = nil, nil
	stopped := make(map[string]bool) // streams blocked from here on
	for _, p := range rows {
		if p.Shard != slot.Shard || p.Range != slot.Range {
			continue
		}
		due := p.Replay || p.Waiting && m.o.Park == ParkBlocksStream
		if stopped[p.Stream] || !due || ctx.Err() != nil || !m.o.Clock.Now().Before(h.until) {
			stopped[p.Stream] = true
			if m.o.Park == ParkBlocksStream {
				m.block(h, p.Stream, p.Position)
			}
			continue
		}
		ok, err := m.replayOne(ctx, slot, h, p)
		if err != nil {
			return err
		}
		if !ok {
			stopped[p.Stream] = true
			if m.o.Park == ParkBlocksStream {
				m.block(h, p.Stream, p.Position)
			}
		}
	}
	return nil
}

// replayOne reads a parked event from the feed and hands it to the handler: on success its row
// goes; on failure the row records the new error, no longer waiting or asked for.
func (m *GroupMember) replayOne(ctx context.Context, slot GroupSlot, h *heldSlot, p ParkedEvent) (bool, error) {
	pk := parkedPartition(m.o.Group)
	page, err := m.s.ReadFeed(ctx, &FeedOptions{Shard: p.Shard, After: p.Position - 1, Limit: 1, IncludeRedacted: true})
	if err != nil {
		return false, err
	}
	del := table.Op{Kind: table.Delete, Entity: table.Entity{PartitionKey: pk, RowKey: parkedRowKey(p.Shard, p.Position)}, IfMatch: table.AnyETag}
	if len(page.Events) == 0 || page.Events[0].Position != p.Position || page.Events[0].Redacted {
		// Removed from the feed since (a scavenger redacted it): nothing is left to handle.
		_, err := m.s.events.submitRefused(ctx, pk, []table.Op{del})
		return err == nil || errors.Is(err, table.ErrNotFound), nil
	}
	ev := page.Events[0]
	if ev.Stream != p.Stream || ev.Version != p.Version {
		return false, corrupt(pk, parkedRowKey(p.Shard, p.Position), "parked row names %s@%d, the feed holds %s@%d there", p.Stream, p.Version, ev.Stream, ev.Version)
	}
	attempts, _, herr := m.handle(ctx, h, ev)
	if herr != nil {
		if ctx.Err() != nil {
			return false, nil
		}
		reason := herr.Error()
		if len(reason) > maxParkedText {
			reason = strings.ToValidUTF8(reason[:maxParkedText], "")
		}
		merge := table.Entity{PartitionKey: pk, RowKey: del.Entity.RowKey, Properties: map[string]any{
			propError: reason, propAttempts: int64(p.Attempts + attempts), propWaiting: false, propReplay: false, propUpdated: m.s.now().UTC(),
		}}
		_, err := m.s.events.submitRefused(ctx, pk, []table.Op{{Kind: table.Merge, Entity: merge, IfMatch: table.AnyETag}})
		if err != nil && !errors.Is(err, table.ErrNotFound) {
			return false, err
		}
		return false, nil
	}
	if _, err := m.s.events.submitRefused(ctx, pk, []table.Op{del}); err != nil && !errors.Is(err, table.ErrNotFound) {
		return true, err
	}
	m.count(func(st *GroupStats) { st.Replayed++ })
	return true, nil
}

// parkedRows reads the group's parked events (of one shard, or all when shard < 0), in shard and
// position order.
func (s *Store) parkedRows(ctx context.Context, group string, shard int) ([]ParkedEvent, error) {
	q := table.Query{PartitionKey: parkedPartition(group)}
	if shard >= 0 {
		q.From, q.To = fmt.Sprintf("%02d-", shard), fmt.Sprintf("%02d.", shard)
	}
	var out []ParkedEvent
	err := s.events.queryPages(ctx, q, func(p table.Page) error {
		for _, row := range p.Entities {
			pe, err := decodeParked(row)
			if err != nil {
				return err
			}
			out = append(out, pe)
		}
		return nil
	})
	slices.SortFunc(out, func(a, b ParkedEvent) int {
		if a.Shard != b.Shard {
			return a.Shard - b.Shard
		}
		return int(a.Position - b.Position)
	})
	return out, err
}

func decodeParked(row table.Entity) (ParkedEvent, error) {
	shard, _ := row.Properties[propShard].(int64)
	rng, _ := row.Properties[propRange].(int64)
	pos, _ := row.Properties[propPosition].(int64)
	stream, _ := row.Properties[propStream].(string)
	if stream == "" || pos < 1 || shard < 0 || shard >= MaxFeedShards || rng < 0 || rng >= MaxGroupRanges || parkedRowKey(int(shard), pos) != row.RowKey {
		return ParkedEvent{}, corrupt(row.PartitionKey, row.RowKey, "malformed parked event row")
	}
	p := ParkedEvent{Shard: int(shard), Range: int(rng), Position: pos, Stream: stream}
	p.Version, _ = row.Properties[propVersion].(int64)
	p.Type, _ = row.Properties[propType].(string)
	p.EventID, _ = row.Properties[propID].(string)
	p.Error, _ = row.Properties[propError].(string)
	attempts, _ := row.Properties[propAttempts].(int64)
	p.Attempts = int(attempts)
	p.Waiting, _ = row.Properties[propWaiting].(bool)
	p.Replay, _ = row.Properties[propReplay].(bool)
	p.Parked, _ = row.Properties[propUpdated].(time.Time)
	return p, nil
}

// ParkedEvents returns the consumer group's parked events, in shard and position order: at most
// limit of them when limit > 0. One query of the group's parked partition (a request per 1,000
// events). A group that does not exist is ErrNotFound.
func (s *Store) ParkedEvents(ctx context.Context, group string, limit int) ([]ParkedEvent, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if limit < 0 {
		return nil, invalid("limit", "must not be negative")
	}
	if _, err := s.groupConfigOf(ctx, group); err != nil {
		return nil, err
	}
	rows, err := s.parkedRows(ctx, group, -1)
	if err != nil {
		return nil, err
	}
	if limit > 0 && len(rows) > limit {
		rows = rows[:limit]
	}
	return rows, nil
}

// groupConfigOf reads an existing group's catalog row.
func (s *Store) groupConfigOf(ctx context.Context, group string) (groupConfig, error) {
	if err := validateName("group", group, MaxGroupNameLength); err != nil {
		return groupConfig{}, err
	}
	return s.groupConfigFor(ctx, group, 0, false)
}

// ReplayParked asks the consumer group to handle parked events again: those named, or every one
// when refs is empty. The member holding an event's slot replays it at its next look at the
// group (within a third of its lease duration), in position order within each stream; an event
// that fails again stays parked with its new error. It returns how many events it marked; a ref
// that names no parked event is an *InvalidInputError, and nothing is marked.
func (s *Store) ReplayParked(ctx context.Context, group string, refs []ParkedRef) (int, error) {
	return s.changeParked(ctx, group, refs, false)
}

// DiscardParked deletes parked events (those named, or every one when refs is empty) without
// handling them; with ParkBlocksStream the events waiting behind them are then handled. It
// returns how many it deleted.
func (s *Store) DiscardParked(ctx context.Context, group string, refs []ParkedRef) (int, error) {
	return s.changeParked(ctx, group, refs, true)
}

func (s *Store) changeParked(ctx context.Context, group string, refs []ParkedRef, discard bool) (int, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if _, err := s.groupConfigOf(ctx, group); err != nil {
		return 0, err
	}
	rows, err := s.parkedRows(ctx, group, -1)
	if err != nil {
		return 0, err
	}
	chosen := rows
	if len(refs) > 0 {
		have := make(map[ParkedRef]ParkedEvent, len(rows))
		for _, p := range rows {
			have[ParkedRef{p.Shard, p.Position}] = p
		}
		chosen = nil
		for _, r := range refs {
			p, ok := have[r]
			if !ok {
				return 0, invalid("positions", "no event is parked at shard %d, position %d", r.Shard, r.Position)
			}
			chosen = append(chosen, p)
		}
	}
	pk := parkedPartition(group)
	n := 0
	for chunk := range slices.Chunk(chosen, table.MaxBatchOps) {
		ops := make([]table.Op, len(chunk))
		for i, p := range chunk {
			e := table.Entity{PartitionKey: pk, RowKey: parkedRowKey(p.Shard, p.Position)}
			if discard {
				ops[i] = table.Op{Kind: table.Delete, Entity: e, IfMatch: table.AnyETag}
			} else {
				e.Properties = map[string]any{propReplay: true}
				ops[i] = table.Op{Kind: table.Merge, Entity: e, IfMatch: table.AnyETag}
			}
		}
		if _, err := s.events.submitRefused(ctx, pk, ops); err != nil {
			return n, err
		}
		n += len(chunk)
	}
	if n > 0 {
		// Tell the members: the replay row's ETag changes, which their next look at the group sees.
		row := table.Entity{PartitionKey: groupPartition(group), RowKey: replayRow, Properties: map[string]any{
			propOwner: uuid.NewString(), propUpdated: s.now().UTC(),
		}}
		if _, err := s.events.submitRefused(ctx, row.PartitionKey, []table.Op{{Kind: table.Upsert, Entity: row}}); err != nil {
			return n, err
		}
	}
	return n, nil
}
