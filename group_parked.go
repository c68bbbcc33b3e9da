package estuite

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

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

	token string // the run of the member that parked it
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

// parkReason is an error's text as a parked row holds it: valid UTF-8, at most 4 KiB.
func parkReason(reason string) string {
	reason = strings.ToValidUTF8(reason, "\uFFFD")
	if len(reason) > maxParkedText {
		reason = strings.ToValidUTF8(reason[:maxParkedText], "")
	}
	return reason
}

// park writes the parked row of ev, and (ParkBlocksStream) blocks its stream in the slot.
func (m *GroupMember) park(ctx context.Context, slot GroupSlot, h *heldSlot, ev FeedEvent, attempts int, reason string, waiting bool) error {
	pk := parkedPartition(m.o.Group)
	row := table.Entity{PartitionKey: pk, RowKey: parkedRowKey(ev.Shard, ev.Position), Properties: map[string]any{
		propShard: int64(ev.Shard), propRange: int64(slot.Range), propPosition: ev.Position,
		propStream: ev.Stream, propVersion: ev.Version, propType: ev.Type, propID: ev.ID.String(),
		propError: parkReason(reason), propAttempts: int64(attempts), propWaiting: waiting, propReplay: false,
		propToken: m.token, propUpdated: m.s.now().UTC(),
	}}
	// Written while the hold lasts, and not after: a park that landed after another member took
	// the slot over would mark an event that member handles.
	pctx, cancel := context.WithTimeout(ctx, max(h.until.Sub(m.o.Clock.Now()), 0))
	defer cancel()
	if _, err := m.s.events.submitRefused(pctx, pk, []table.Op{{Kind: table.Upsert, Entity: row}}); err != nil {
		// Perhaps written: should the event be handled when tried again, its row is deleted.
		if h.stale == nil {
			h.stale = make(map[int64]bool)
		}
		h.stale[ev.Position] = true
		return err
	}
	delete(h.stale, ev.Position)
	if !m.o.Clock.Now().Before(h.until) {
		m.lateParks[ParkedRef{ev.Shard, ev.Position}] = slot
	}
	h.parked = true
	m.count(func(st *GroupStats) { st.Parked++ })
	if m.o.Park == ParkBlocksStream {
		m.block(h, ev.Stream, ev.Position)
	}
	return nil
}

func (m *GroupMember) block(h *heldSlot, stream string, position int64) {
	if h.blocking == nil {
		h.blocking = make(map[string]int64)
	}
	if _, ok := h.blocking[stream]; !ok {
		h.blocking[stream] = position
	}
}

// dropParked deletes a parked row that may be left at a position just handled (one request).
func (m *GroupMember) dropParked(ctx context.Context, shard int, position int64) error {
	pk := parkedPartition(m.o.Group)
	op := table.Op{Kind: table.Delete, Entity: table.Entity{PartitionKey: pk, RowKey: parkedRowKey(shard, position)}, IfMatch: table.AnyETag}
	if _, err := m.s.events.submitRefused(ctx, pk, []table.Op{op}); err != nil && !errors.Is(err, table.ErrNotFound) {
		return err
	}
	return nil
}

// loadParked takes in the parked events of a slot just taken (read before the take). Those the
// slot's checkpoint has passed block their streams (ParkBlocksStream), and are replayed at the
// member's next look at the group if asked for; those after it were parked by a holder that
// stopped before saving past them: the feed hands those events over again, as if never parked.
func (m *GroupMember) loadParked(slot GroupSlot, h *heldSlot, rows []ParkedEvent) {
	for _, p := range rows {
		if p.Shard != slot.Shard || p.Range != slot.Range {
			continue
		}
		if p.Position > h.position {
			if h.stale == nil {
				h.stale = make(map[int64]bool)
			}
			h.stale[p.Position] = true
			continue
		}
		h.parked, h.replayDue = true, true
		if m.o.Park == ParkBlocksStream {
			m.block(h, p.Stream, p.Position)
		}
	}
}

// cmpCut keeps the first reason a replay was cut short.
func cmpCut(cut error) error {
	if cut != nil {
		return cut
	}
	return errReplayCut
}

// errReplayCut: a replay stopped before it looked at every due parked event (the hold ran out,
// or the member is stopping); the next look at the group goes on with it.
var errReplayCut = errors.New("estuite: replay of parked events cut short")

// replayParked looks at the parked events of every slot held (a replay or a discard was asked
// for, a slot was taken, or streams wait): one query of the parked partition.
func (m *GroupMember) replayParked(ctx context.Context) error {
	rows, err := m.s.parkedRows(ctx, m.o.Group, -1, 0)
	if err != nil {
		return err
	}
	var cut error
	for _, slot := range sortedSlots(m.held) {
		if err := m.replaySlot(ctx, slot, m.held[slot], rows); err != nil {
			if !errors.Is(err, errReplayCut) {
				return err
			}
			cut = err
		}
	}
	return cut
}

// replaySlot handles, in position order, the slot's parked events that are due and that its
// checkpoint has passed: those a replay was asked for, and (ParkBlocksStream) waiting ones with
// no failed event of their stream before them. A stream whose parked event fails again, or is
// not asked for, stays blocked from there.
func (m *GroupMember) replaySlot(ctx context.Context, slot GroupSlot, h *heldSlot, rows []ParkedEvent) error {
	h.blocking, h.parked = nil, false
	stopped := make(map[string]bool) // streams blocked from here on
	var cut error
	failedStorage := false // a storage error: no more replays this look
	for _, p := range rows {
		if p.Shard != slot.Shard || p.Range != slot.Range {
			continue // another slot's
		}
		if p.Position > h.position {
			// One the feed hands over again (parked by a holder before, perhaps landed late):
			// when handled then, its row goes.
			if h.stale == nil {
				h.stale = make(map[int64]bool)
			}
			h.stale[p.Position] = true
			continue
		}
		h.parked = true
		due := p.Replay || p.Waiting && m.o.Park == ParkBlocksStream
		blocks := m.o.Park == ParkBlocksStream
		if !due || stopped[p.Stream] {
			if blocks {
				stopped[p.Stream] = true
				m.block(h, p.Stream, p.Position)
			}
			continue
		}
		if failedStorage || ctx.Err() != nil || !m.o.Clock.Now().Before(h.until) {
			cut = cmpCut(cut)
			stopped[p.Stream] = true
			if blocks {
				m.block(h, p.Stream, p.Position)
			}
			continue
		}
		if m.renewDue(m.o.Clock.Now()) {
			// A long replay: renew the holds on the way.
			m.saveCheckpoints(ctx, true)
			if m.held[slot] != h {
				return errReplayCut // lost meanwhile
			}
		}
		ok, err := m.replayOne(ctx, slot, h, p)
		if err != nil {
			// Cut short, or storage failed: the rest waits for the next look, its streams
			// blocked meanwhile (and this one: its row may still be there).
			if !errors.Is(err, errReplayCut) && !errors.Is(err, ErrCorrupt) {
				err = fmt.Errorf("%w: %w", errReplayCut, err)
			}
			if errors.Is(err, ErrCorrupt) {
				return err
			}
			cut, ok = err, false
			failedStorage = true
		}
		if !ok {
			stopped[p.Stream] = true
			if blocks {
				m.block(h, p.Stream, p.Position)
			}
		}
	}
	if cut == nil {
		h.replayDue = false
	}
	return cut
}

// replayOne reads a parked event from the feed and hands it to the handler, with the member's
// retries and backoff (within the slot's hold, on the member's loop): on success its row goes; on failure the row records the new error, no longer waiting or asked for.
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
		if err != nil && !errors.Is(err, table.ErrNotFound) {
			return false, err
		}
		return true, nil
	}
	ev := page.Events[0]
	if ev.Stream != p.Stream || ev.Version != p.Version {
		return false, corrupt(pk, parkedRowKey(p.Shard, p.Position), "parked row names %s@%d, the feed holds %s@%d there", p.Stream, p.Version, ev.Stream, ev.Version)
	}
	clock := m.o.Clock
	var herr error
	ref := ParkedRef{p.Shard, p.Position}
	first := m.replayTries[ref] + 1 // a replay cut short goes on with its count
	delay := m.o.RetryBackoff
	for i := 1; i < first && delay < m.o.MaxRetryBackoff; i++ {
		delay = min(2*delay, m.o.MaxRetryBackoff)
	}
	attempts := 0
	for attempt := first; ; attempt++ {
		attempts = attempt - first + 1
		m.replayTries[ref] = attempt
		hctx, cancel := context.WithTimeout(ctx, max(h.until.Sub(clock.Now()), 0))
		herr = m.callHandler(hctx, slot, ev, true)
		cancel()
		if herr == nil || ctx.Err() != nil || !clock.Now().Before(h.until) || m.o.MaxRetries >= 0 && attempt > m.o.MaxRetries {
			break
		}
		if !clock.Now().Add(delay).Before(h.until) {
			if delay < time.Duration(float64(m.o.LeaseDuration)*leaseSafeFraction)/2 {
				return false, errReplayCut // the hold is ending: the replay goes on at the next look, with its count
			}
			break // a backoff longer than half a hold: the failure is recorded after the attempts made
		}
		m.count(func(st *GroupStats) { st.Retries++ })
		if _, err := clock.Wait(ctx, delay, nil); err != nil {
			return false, errReplayCut
		}
		delay = min(2*delay, m.o.MaxRetryBackoff)
	}
	if herr != nil {
		if ctx.Err() != nil || !clock.Now().Before(h.until) {
			return false, errReplayCut // not a failure of the event: tried again at the next look
		}
		delete(m.replayTries, ref)
		merge := table.Entity{PartitionKey: pk, RowKey: del.Entity.RowKey, Properties: map[string]any{
			propError: parkReason(herr.Error()), propAttempts: int64(p.Attempts + attempts), propWaiting: false, propReplay: false, propUpdated: m.s.now().UTC(),
		}}
		_, err := m.s.events.submitRefused(ctx, pk, []table.Op{{Kind: table.Merge, Entity: merge, IfMatch: table.AnyETag}})
		if err != nil && !errors.Is(err, table.ErrNotFound) {
			return false, err
		}
		return false, nil
	}
	delete(m.replayTries, ref)
	m.count(func(st *GroupStats) {
		st.Handled++
		st.Replayed++
	})
	if _, err := m.s.events.submitRefused(ctx, pk, []table.Op{del}); err != nil && !errors.Is(err, table.ErrNotFound) {
		return true, err
	}
	return true, nil
}

// parkedRows reads the group's parked events (of one shard, or all when shard < 0), in shard and
// position order: the first limit of them when limit > 0.
func (s *Store) parkedRows(ctx context.Context, group string, shard, limit int) ([]ParkedEvent, error) {
	q := table.Query{PartitionKey: parkedPartition(group)}
	if shard >= 0 {
		q.From, q.To = fmt.Sprintf("%02d-", shard), fmt.Sprintf("%02d.", shard)
	}
	var out []ParkedEvent
	errEnough := errors.New("enough parked events")
	err := s.events.queryPages(ctx, q, func(p table.Page) error {
		for _, row := range p.Entities {
			pe, err := decodeParked(row)
			if err != nil {
				return err
			}
			out = append(out, pe)
			if limit > 0 && len(out) == limit {
				return errEnough
			}
		}
		return nil
	})
	if errors.Is(err, errEnough) {
		err = nil
	}
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
	p.token, _ = row.Properties[propToken].(string)
	return p, nil
}

// ParkedEvents returns the consumer group's parked events, in shard and position order: the first
// limit of them when limit > 0 (row keys sort by shard, then position). One point read of the
// group's catalog row and a query of its parked partition (a request per 1,000 events). A group
// that does not exist is ErrGroupNotFound.
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
	return s.parkedRows(ctx, group, -1, limit)
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
// group (within a third of its lease duration), in position order within each stream, with the member's
// retries and backoff; an event that fails again stays parked with its new error. It returns how many events it
// marked; a ref that names no parked event, or one named twice, is an *InvalidInputError, and
// nothing is marked. Cost: a point read, a query of the parked partition, a batch per 100
// events marked, and one write that tells the members (the group's replay row). Should that
// last write fail, the members still find the marks within a lease duration: while a slot they
// hold has parked events, they look at them at least that often.
//
// A replay (or discard) acts on events the group's checkpoints have passed. An event parked by a
// member that stopped before saving its checkpoint past it is handed over again from the feed
// to the slot's next holder, as if it had never been parked.
func (s *Store) ReplayParked(ctx context.Context, group string, refs []ParkedRef) (int, error) {
	return s.changeParked(ctx, group, refs, false)
}

// DiscardParked deletes parked events (those named, or every one when refs is empty) without
// handling them; with ParkBlocksStream the events waiting behind them are then handled. It
// returns how many it deleted. WaitGroupHandled on a discarded event returns nil: the group has
// passed it. Costs and errors as for ReplayParked.
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
	rows, err := s.parkedRows(ctx, group, -1, 0)
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
		named := make(map[ParkedRef]bool, len(refs))
		for _, r := range refs {
			p, ok := have[r]
			switch {
			case named[r]:
				return 0, invalid("events", "shard %d, position %d is named twice", r.Shard, r.Position)
			case !ok:
				return 0, invalid("events", "no event is parked at shard %d, position %d", r.Shard, r.Position)
			}
			named[r] = true
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
