package estuite

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/estuite/estuite/table"
	"github.com/google/uuid"
)

// Consumer groups: the members of a named group split the group's slots — each a feed shard, or a
// range of stream hashes within one — by leases on the slots' rows, and keep one checkpoint per
// slot, on the same row, so that a write of a member that lost its slot is refused by the row's
// ETag. A stream always falls in one slot, and a slot is handled by one member at a time, in feed
// order: the stream's events are handled in order. docs/operations.md, "Consumer groups"; the
// rows are in docs/storage-format.md.

// Defaults of GroupOptions.
const (
	// DefaultGroupSlots is how many slots a group is created with when GroupOptions.Ranges is 0:
	// the feed shards times ranges of max(1, DefaultGroupSlots/shards) each.
	DefaultGroupSlots    = 8
	DefaultGroupInFlight = 100
	// MaxGroupRanges is the most ranges a feed shard may be split into for a group.
	MaxGroupRanges = 64
	// MinGroupLeaseDuration is the shortest GroupOptions.LeaseDuration.
	MinGroupLeaseDuration = 100 * time.Millisecond
	// MaxGroupNameLength is the longest group (or member) name, in characters.
	MaxGroupNameLength = 128
)

// ParkPolicy says what happens to a stream's later events once one of its events is parked.
type ParkPolicy int

const (
	// ParkBlocksStream parks the stream's later events behind the parked one, unhandled (each
	// with Waiting set), until the parked event is replayed or discarded; then they are handled
	// in order. Other streams go on. The default: the stream's order is never broken.
	ParkBlocksStream ParkPolicy = iota
	// ParkSkipsEvent lets the stream's later events be handled as if the parked one had
	// been: the stream's order is broken by the parked event alone.
	ParkSkipsEvent
)

// GroupOptions configure Store.JoinGroup.
type GroupOptions struct {
	// Group names the consumer group; every member that joins under this name shares its slots
	// and checkpoints. Required.
	Group string
	// Member names this member among the group's, unique among those running at once; a member
	// started again under its name takes its slots back at once. Default: a random UUID.
	Member string
	// Ranges is how many stream-hash ranges each feed shard is split into, for a group created by
	// this join: the group has FeedShards × Ranges slots, the most members that can share its
	// work. 0 means max(1, DefaultGroupSlots/FeedShards). A group keeps the count it was created
	// with; joining with another non-zero count is an *InvalidInputError.
	Ranges int
	// Handler handles one event. A member calls it for one event at a time; the events of a
	// stream are handed to it in order, by one member at a time. Its context ends when the
	// member's lease on the event's slot may be running out: a handler that runs past it may
	// overlap with the member that takes the slot over (choose LeaseDuration longer than the
	// slowest handling). An error is retried with backoff, MaxRetries times, and then the event
	// is parked (see Park).
	Handler func(ctx context.Context, ev FeedEvent) error
	// Types and StreamPrefix filter the events handed to Handler, as for subscriptions
	// (SubscriptionOptions); the checkpoints move past the events filtered out, and past the
	// entries of events a scavenger removed. A group's filters must be the same in every member.
	Types        []string
	StreamPrefix string
	// MaxRetries is how often a failing event is retried before it is parked; 0 means
	// DefaultHandlerRetries, negative means forever (nothing is parked).
	MaxRetries int
	// RetryBackoff is the first delay before a retry; it doubles up to MaxRetryBackoff.
	// Defaults 100 ms and 10 s.
	RetryBackoff, MaxRetryBackoff time.Duration
	// Park is what a parked event means for its stream's later events. Default
	// ParkBlocksStream.
	Park ParkPolicy
	// MaxInFlight bounds the events this member holds read from the feed and not yet handled
	// (one feed read asks for at most this many). Default DefaultGroupInFlight.
	MaxInFlight int
	// MaxBatchBytes, when positive, also bounds one feed read by the size of its events (see
	// FeedOptions.MaxBytes).
	MaxBatchBytes int64
	// CheckpointEvery and CheckpointInterval: the member saves its slots' checkpoints after this
	// many handled events or this much time, whichever comes first, when caught up, when it
	// gives a slot back, and when it stops. Defaults DefaultCheckpointEvery and
	// DefaultCheckpointInterval. A save is one storage request for up to 100 slots.
	CheckpointEvery    int
	CheckpointInterval time.Duration
	// LeaseDuration is how long a member's hold on its slots lasts without renewal; it renews
	// every third of it (the renewal is the checkpoint write), and another member takes a slot
	// over once its row has stayed unchanged for that long. Default DefaultLeaseDuration.
	LeaseDuration time.Duration
	// PollInterval and MaxPollInterval: when caught up, a member wakes at once for events
	// dispatched in this process and polls for others' with a backoff between these. Defaults
	// DefaultSubscriptionPoll and DefaultSubscriptionMaxPoll.
	PollInterval, MaxPollInterval time.Duration
	// Clock is the member's clock (leases, polls, backoff). Default SystemClock().
	Clock Clock
	// OnRebalance, when set, is called on the member's goroutine with the slots it holds each
	// time that set changes.
	OnRebalance func(held []GroupSlot)
	// StartAtEnd makes a slot that has no checkpoint yet (a new group's) start at its shard's
	// feed head when first taken, as Kafka's auto.offset.reset=latest: the group handles only
	// events dispatched after that. Default: from the feed's first event. A slot with a
	// checkpoint always resumes after it.
	StartAtEnd bool
}

// GroupSlot names one slot of a consumer group: a feed shard's stream-hash range.
type GroupSlot struct {
	Shard int
	Range int
}

func (s GroupSlot) String() string { return fmt.Sprintf("%d/%d", s.Shard, s.Range) }

// GroupStats count what a member has done since it joined.
type GroupStats struct {
	// Handled is how many events the handler accepted (replays of parked events included).
	Handled int64
	// Redelivered is how many of those the group may have handed to a member before: events of
	// a slot taken over from a member that stopped without giving it back (it crashed, or lost
	// its hold), from that slot's checkpoint up to its shard's feed head when it was taken. It
	// errs on the high side: the member before may not have read so far. A slot given back
	// cleanly (a member joining, or one stopped with Stop) redelivers nothing.
	Redelivered int64
	// Retries is how many handler calls failed and were tried again.
	Retries int64
	// Parked is how many events this member parked (Waiting ones included); Replayed is how
	// many parked events it handled on replay.
	Parked, Replayed int64
	// Taken and Released count the slots this member took and gave back.
	Taken, Released int64
	// Slots is how many slots the member holds now.
	Slots int
}

// GroupMember is a running member of a consumer group. Stop it with Stop.
type GroupMember struct {
	s      *Store
	o      GroupOptions
	cfg    groupConfig
	pk     string // the group's partition
	token  string // identifies this run of the member on the slot rows it writes
	cancel context.CancelFunc
	done   chan struct{}

	// Loop state: only the member's goroutine touches it.
	held       map[GroupSlot]*heldSlot
	seen       map[GroupSlot]seenRow // other members' slot rows as last read, on this member's clock
	members    map[string]memberSeen // member name → its row as last seen
	beat       int64
	refreshed  time.Time
	replayTag  string // the replay row's ETag when the parked rows were last looked at ("": never)
	dirty      int    // events handled since the last checkpoint
	lastSave   time.Time
	replayedAt time.Time // when the parked rows were last looked at
	// lateParks are parks of this run whose write returned after the slot's hold had run out:
	// should another member have taken the slot meanwhile, the row marks an event it handled.
	// A save that renews the slot confirms them; a take of the slot back deletes those left.
	lateParks map[ParkedRef]GroupSlot
	// replayTries counts the handler calls of replays cut short (the hold ending), by event.
	replayTries map[ParkedRef]int

	mu    sync.Mutex
	err   error
	stats GroupStats
	slots []GroupSlot
}

// groupConfig is a group's catalog row: what its slots are.
type groupConfig struct {
	name   string
	shards int
	ranges int
}

func (c groupConfig) slots() []GroupSlot {
	out := make([]GroupSlot, 0, c.shards*c.ranges)
	for shard := range c.shards {
		for r := range c.ranges {
			out = append(out, GroupSlot{Shard: shard, Range: r})
		}
	}
	return out
}

// slotOf is the slot of the stream whose partition key is pk.
func (c groupConfig) slotOf(pk string) GroupSlot {
	return GroupSlot{Shard: feedShardOf(pk, c.shards), Range: streamRangeOf(pk, c.ranges)}
}

// streamRangeOf is the stream's range within its shard: other bytes of the hash the shard is
// taken from, so that a shard's streams spread over its ranges.
func streamRangeOf(pk string, ranges int) int {
	if ranges <= 1 {
		return 0
	}
	sum := sha256.Sum256([]byte(pk))
	return int((uint32(sum[8])<<24 | uint32(sum[9])<<16 | uint32(sum[10])<<8 | uint32(sum[11])) % uint32(ranges))
}

// heldSlot is a slot this member holds.
type heldSlot struct {
	etag     string
	position int64     // last position handled (or passed over)
	saved    int64     // the position on the row as last written
	until    time.Time // the hold is safe to use until then (this member's clock)
	renewAt  time.Time
	redeliv  int64 // events up to this position may have been handed out before (0: none)
	// blocking holds, for each stream with a failed parked event the slot has passed
	// (ParkBlocksStream), the position of its first: the stream's later events wait behind it.
	blocking map[string]int64
	// stale holds positions after the checkpoint that may have a parked row: parked by a holder
	// that stopped before saving past them, or by a park write of unknown outcome. The feed
	// hands them over again; one handled then has its row deleted.
	stale  map[int64]bool
	parked bool // the slot has parked events its checkpoint has passed (as last seen)
	// A slot taken from a holder that did not give it back is looked at again two leases after
	// the take (recheckAt): a park write of that holder's may have landed after the take, at a
	// position after recheckFrom (the checkpoint taken over) that this member then handled.
	recheckAt   time.Time
	recheckFrom int64
	replayDue   bool // its parked events are to be looked at (taken with some)
	// The event being retried: its position, the failed attempts so far, and when to try again.
	failPos      int64
	failAttempts int
	retryAt      time.Time
}

// seenRow is another member's slot row as this member saw it.
type seenRow struct {
	owner   string
	etag    string
	changed time.Time
	waitFor time.Duration
}

// Rows of a group. The catalog partition holds one row per group (its name and slot layout);
// the group's own partition its member rows, its slot rows and its replay row; its parked
// partition the parked events.
const (
	groupCatalogPartition = "groups"
	groupPartitionPrefix  = "group-"
	parkedPartitionPrefix = "parked-"
	slotRowPrefix         = "slot-"
	replayRow             = "replay"
	propToken             = "Token" // a random ID of the member's run (JoinGroup call)
	propRanges            = "Ranges"
	propShards            = "Shards"
	propGroupFormat       = "Format"
	groupFormat           = int64(1)
)

func groupPartition(name string) string  { return groupPartitionPrefix + streamHash(name) }
func parkedPartition(name string) string { return parkedPartitionPrefix + streamHash(name) }
func slotRowKey(s GroupSlot) string {
	return fmt.Sprintf("%s%02d-%03d", slotRowPrefix, s.Shard, s.Range)
}

func parseSlotRowKey(rk string) (GroupSlot, bool) {
	var s GroupSlot
	if n, err := fmt.Sscanf(rk, slotRowPrefix+"%02d-%03d", &s.Shard, &s.Range); n != 2 || err != nil || slotRowKey(s) != rk {
		return GroupSlot{}, false
	}
	return s, true
}

// JoinGroup starts a member of the consumer group opts.Group: it runs on its own goroutine until
// ctx is done, Stop is called, or storage says the group's rows are corrupt. The first member
// of a group creates it (its catalog row, with its slot layout).
//
// A missing Handler or Group, an invalid name, or numbers out of range are an
// *InvalidInputError, and nothing is written.
func (s *Store) JoinGroup(ctx context.Context, opts GroupOptions) (*GroupMember, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	o := opts
	if o.Handler == nil {
		return nil, invalid("handler", "a group member needs a handler")
	}
	if err := validateName("group", o.Group, MaxGroupNameLength); err != nil {
		return nil, err
	}
	if o.Member == "" {
		o.Member = uuid.NewString()
	}
	if err := validateName("member", o.Member, MaxGroupNameLength); err != nil {
		return nil, err
	}
	switch {
	case o.Ranges < 0 || o.Ranges > MaxGroupRanges:
		return nil, invalid("ranges", "%d is not 0 to %d", o.Ranges, MaxGroupRanges)
	case o.MaxInFlight < 0:
		return nil, invalid("maxInFlight", "%d is negative", o.MaxInFlight)
	case o.MaxBatchBytes < 0:
		return nil, invalid("maxBatchBytes", "%d is negative", o.MaxBatchBytes)
	case o.LeaseDuration != 0 && (o.LeaseDuration < MinGroupLeaseDuration || o.LeaseDuration > maxLeaseDuration):
		return nil, invalid("leaseDuration", "%v is not %v to %v", o.LeaseDuration, MinGroupLeaseDuration, maxLeaseDuration)
	case o.Park != ParkBlocksStream && o.Park != ParkSkipsEvent:
		return nil, invalid("park", "%d is not a park policy", o.Park)
	}
	defaults := []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&o.RetryBackoff, 100 * time.Millisecond}, {&o.MaxRetryBackoff, 10 * time.Second},
		{&o.CheckpointInterval, DefaultCheckpointInterval}, {&o.LeaseDuration, DefaultLeaseDuration},
		{&o.PollInterval, DefaultSubscriptionPoll}, {&o.MaxPollInterval, DefaultSubscriptionMaxPoll},
	}
	for _, d := range defaults {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if o.MaxRetries == 0 {
		o.MaxRetries = DefaultHandlerRetries
	}
	if o.CheckpointEvery <= 0 {
		o.CheckpointEvery = DefaultCheckpointEvery
	}
	if o.MaxInFlight == 0 {
		o.MaxInFlight = DefaultGroupInFlight
	}
	if o.Clock == nil {
		o.Clock = SystemClock()
	}
	cfg, err := s.groupConfigFor(ctx, o.Group, o.Ranges, true)
	if err != nil {
		return nil, err
	}
	m := &GroupMember{s: s, o: o, cfg: cfg, pk: groupPartition(o.Group), token: uuid.NewString(), done: make(chan struct{}), lateParks: make(map[ParkedRef]GroupSlot), replayTries: make(map[ParkedRef]int),
		held: make(map[GroupSlot]*heldSlot), seen: make(map[GroupSlot]seenRow), members: make(map[string]memberSeen)}
	ctx, m.cancel = context.WithCancel(ctx)
	go m.run(ctx)
	return m, nil
}

// groupConfigFor reads the group's catalog row, creating it (when create) with ranges (0: the
// default) if there is none.
func (s *Store) groupConfigFor(ctx context.Context, name string, ranges int, create bool) (groupConfig, error) {
	ev := s.events
	for attempt := 1; ; attempt++ {
		row, err := ev.get(ctx, groupCatalogPartition, streamKey(name))
		if err == nil {
			cfg, err := decodeGroupConfig(row)
			if err != nil {
				return groupConfig{}, err
			}
			if cfg.shards != s.feedShards {
				return groupConfig{}, corrupt(row.PartitionKey, row.RowKey, "group of %d feed shards in a store of %d", cfg.shards, s.feedShards)
			}
			if ranges != 0 && ranges != cfg.ranges {
				return groupConfig{}, invalid("ranges", "group %q has %d ranges per shard, fixed when it was created", name, cfg.ranges)
			}
			return cfg, nil
		}
		if !errors.Is(err, table.ErrNotFound) {
			return groupConfig{}, err
		}
		if !create {
			return groupConfig{}, fmt.Errorf("%w: %q", ErrGroupNotFound, name)
		}
		if ranges == 0 {
			ranges = max(1, DefaultGroupSlots/s.feedShards)
		}
		row = table.Entity{PartitionKey: groupCatalogPartition, RowKey: streamKey(name), Properties: map[string]any{
			propStream: name, propShards: int64(s.feedShards), propRanges: int64(ranges), propGroupFormat: groupFormat,
			propUpdated: s.now().UTC(),
		}}
		_, err = ev.submitRefused(ctx, groupCatalogPartition, []table.Op{{Kind: table.Insert, Entity: row}})
		var be *table.BatchError
		switch {
		case err == nil || errors.As(err, &be):
			// Created, or created by another member first: read what is stored.
		case errors.Is(err, table.ErrUnknownOutcome) && attempt < ev.retry.MaxAttempts:
			// Perhaps created: read what is stored.
		default:
			return groupConfig{}, err
		}
	}
}

func decodeGroupConfig(row table.Entity) (groupConfig, error) {
	name, _ := row.Properties[propStream].(string)
	shards, _ := row.Properties[propShards].(int64)
	ranges, _ := row.Properties[propRanges].(int64)
	if name == "" || streamKey(name) != row.RowKey || shards < 1 || shards > MaxFeedShards || ranges < 1 || ranges > MaxGroupRanges {
		return groupConfig{}, corrupt(row.PartitionKey, row.RowKey, "malformed consumer group row")
	}
	if f, _ := row.Properties[propGroupFormat].(int64); f > groupFormat {
		return groupConfig{}, corrupt(row.PartitionKey, row.RowKey, "consumer group of format %d, newer than this release's (%d)", f, groupFormat)
	}
	return groupConfig{name: name, shards: int(shards), ranges: int(ranges)}, nil
}

// Stop stops the member: the context of a handler call in progress ends (an event whose call
// does not return nil is handed to the slot's next holder), the member saves its checkpoints,
// gives its slots back (so that the others take them at once), deletes its member row, and
// waits. It returns the error that stopped the member, if any other than Stop itself.
func (m *GroupMember) Stop() error {
	m.cancel()
	<-m.done
	return m.Err()
}

// Done is closed when the member has stopped.
func (m *GroupMember) Done() <-chan struct{} { return m.done }

// Err returns what stopped the member: nil while it runs and after Stop, or the error.
func (m *GroupMember) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Name returns the member's name (GroupOptions.Member, or the UUID chosen for it).
func (m *GroupMember) Name() string { return m.o.Member }

// Stats returns what the member has done so far.
func (m *GroupMember) Stats() GroupStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.stats
	st.Slots = len(m.slots)
	return st
}

// Slots returns the slots the member holds now, in order.
func (m *GroupMember) Slots() []GroupSlot {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.slots)
}

func (m *GroupMember) count(f func(*GroupStats)) {
	m.mu.Lock()
	f(&m.stats)
	m.mu.Unlock()
}

func (m *GroupMember) run(ctx context.Context) {
	defer close(m.done)
	err := m.loop(ctx)
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		err = nil
	}
	m.leave(context.WithoutCancel(ctx))
	m.mu.Lock()
	m.err = err
	m.slots = nil
	m.mu.Unlock()
}

func (m *GroupMember) loop(ctx context.Context) error {
	clock := m.o.Clock
	poll := m.o.PollInterval
	m.lastSave = clock.Now()
	for ctx.Err() == nil {
		if err := m.s.checkOpen(); err != nil {
			return err
		}
		now := clock.Now()
		if m.refreshed.IsZero() || now.Sub(m.refreshed) >= m.o.LeaseDuration/leaseRenewDivisor || m.renewDue(now) {
			if err := m.refresh(ctx); err != nil {
				if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrClosed) {
					return err
				}
				// Storage failing: keep working on the slots while their holds last, and look again
				// a little later.
				m.refreshed = now.Add(-m.o.LeaseDuration/leaseRenewDivisor + m.o.LeaseDuration/leaseRetryDivisor)
			}
		}
		progressed, err := m.work(ctx)
		if err != nil {
			if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrClosed) || ctx.Err() != nil {
				return err
			}
			progressed = false // a storage failure: back off as if idle
		}
		if progressed {
			poll = m.o.PollInterval
			if m.dirty >= m.o.CheckpointEvery || clock.Now().Sub(m.lastSave) >= m.o.CheckpointInterval {
				m.saveCheckpoints(ctx, false)
			}
			continue
		}
		if m.dirty > 0 {
			m.saveCheckpoints(ctx, false) // caught up: save what was handled
		}
		var wake <-chan struct{}
		for _, slot := range sortedSlots(m.held) {
			_, wake = m.s.shards[slot.Shard].feedHead.current()
			break // one shard's wake-up; the others are found by the poll
		}
		wait := poll
		if next := m.nextDue(); !next.IsZero() {
			// At least a millisecond: a wait shorter than a clock's resolution would spin.
			wait = min(wait, max(next.Sub(clock.Now()), time.Millisecond))
		}
		woken, err := clock.Wait(ctx, wait, wake)
		if err != nil {
			return err
		}
		if woken {
			poll = m.o.PollInterval
		} else {
			poll = min(2*poll, m.o.MaxPollInterval)
		}
	}
	return ctx.Err()
}

// renewDue reports whether a held slot's hold must be renewed now.
func (m *GroupMember) renewDue(now time.Time) bool {
	for _, h := range m.held {
		if !now.Before(h.renewAt) {
			return true
		}
	}
	return false
}

// nextDue is the earliest of the holds' renewals, the slots' retries and the next look at the
// group.
func (m *GroupMember) nextDue() time.Time {
	var next time.Time
	earlier := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	now := m.o.Clock.Now()
	for _, h := range m.held {
		earlier(h.renewAt)
		if h.retryAt.After(now) {
			earlier(h.retryAt) // one passed is for the next round of work, not a reason to wake
		}
	}
	if !m.refreshed.IsZero() {
		earlier(m.refreshed.Add(m.o.LeaseDuration / leaseRenewDivisor))
	}
	return next
}

// refresh renews the member's row and its slots' holds, reads the group's partition, and
// rebalances: it gives back the slots the assignment gives to others, and takes the ones it
// gives to this member that are free or whose holder stopped renewing.
func (m *GroupMember) refresh(ctx context.Context) error {
	ev := m.s.events
	clock := m.o.Clock
	// Renew the member row and the slots held (and save their checkpoints): one request for up
	// to 99 slots.
	if !m.saveCheckpoints(ctx, true) {
		return errRenewal
	}
	var rows []table.Entity
	err := ev.queryPages(ctx, table.Query{PartitionKey: m.pk}, func(p table.Page) error {
		rows = append(rows, p.Entities...)
		return nil
	})
	if err != nil {
		return err
	}
	now := clock.Now()
	firstLook := m.refreshed.IsZero()
	m.refreshed = now
	slotRows := make(map[GroupSlot]table.Entity)
	replayTag := ""
	members := make(map[string]memberSeen)
	durations := make(map[string]time.Duration)
	for _, r := range rows {
		switch {
		case strings.HasPrefix(r.RowKey, memberPrefix):
			owner, _ := r.Properties[propOwner].(string)
			if owner == "" || memberKey(owner) != r.RowKey {
				continue
			}
			seen := memberSeen{etag: r.ETag, changed: now}
			if prev, ok := m.members[owner]; ok && prev.etag == r.ETag {
				seen.changed = prev.changed
			}
			members[owner] = seen
			durations[owner] = leaseDurationOf(r, m.o.LeaseDuration)
			if owner != m.o.Member && now.Sub(seen.changed) > 10*durations[owner] {
				// A member gone long ago (it crashed, and no one deleted its row): its row goes.
				op := table.Op{Kind: table.Delete, Entity: table.Entity{PartitionKey: m.pk, RowKey: r.RowKey}, IfMatch: r.ETag}
				_, _ = ev.submitOnce(ctx, m.pk, []table.Op{op})
			}
		case r.RowKey == replayRow:
			replayTag = r.ETag
		default:
			if slot, ok := parseSlotRowKey(r.RowKey); ok && slot.Shard < m.cfg.shards && slot.Range < m.cfg.ranges {
				slotRows[slot] = r
				// Watch every slot another member holds, so that one assigned to this member later
				// is known to have stopped as soon as possible.
				owner, _ := r.Properties[propOwner].(string)
				if prev, ok := m.seen[slot]; owner != "" && (owner != m.o.Member || r.Properties[propToken] != m.token) && (!ok || prev.etag != r.ETag || prev.owner != owner) {
					m.seen[slot] = seenRow{owner: owner, etag: r.ETag, changed: now, waitFor: leaseDurationOf(r, m.o.LeaseDuration)}
				}
			}
		}
	}
	m.members = members
	live := []string{m.o.Member}
	for owner, seen := range members {
		if owner != m.o.Member && now.Sub(seen.changed) <= 2*durations[owner] {
			live = append(live, owner)
		}
	}
	slices.Sort(live)
	mine := make(map[GroupSlot]bool)
	for i, slot := range m.cfg.slots() {
		if live[i%len(live)] == m.o.Member {
			mine[slot] = true
		}
	}
	changed := false
	// Give back what is assigned to another member.
	for _, slot := range sortedSlots(m.held) {
		if !mine[slot] {
			m.release(ctx, slot)
			changed = true
		}
	}
	// Take what is assigned to this one (the feed heads and parked rows a take reads are read
	// once a shard for all of this look's takes).
	reads := &takeReads{heads: make(map[int]int64), parked: make(map[int][]ParkedEvent)}
	for _, slot := range m.cfg.slots() {
		if !mine[slot] || m.held[slot] != nil {
			continue
		}
		r, exists := slotRows[slot]
		if exists {
			owner, _ := r.Properties[propOwner].(string)
			// A row naming this member under another run's token is taken back at once at the
			// member's first look (it restarted), and after that judged as another's: a run under
			// the same name that is still alive (one paused, then replaced) keeps renewing it, and
			// the two must not both hold it.
			theirs := owner != "" && (owner != m.o.Member || r.Properties[propToken] != m.token && !firstLook)
			if theirs {
				if seen := m.seen[slot]; seen.etag != r.ETag || now.Sub(seen.changed) < seen.waitFor {
					continue // its holder may still be at work
				}
			}
		}
		took, err := m.take(ctx, slot, r, exists, reads)
		if err != nil {
			if errors.Is(err, ErrCorrupt) {
				return err
			}
			continue
		}
		changed = changed || took
	}
	if changed {
		m.publishSlots()
	}
	if err := m.recheckParked(ctx, now); err != nil {
		return err
	}
	// Look at the parked events when a replay or discard was asked for, and now and then while
	// streams wait behind parked events (a request whose notice was lost is found so).
	parked, replayDue := false, false
	for _, h := range m.held {
		parked, replayDue = parked || h.parked, replayDue || h.replayDue
	}
	due := replayTag != "" && replayTag != m.replayTag || replayDue || parked && now.Sub(m.replayedAt) >= m.o.LeaseDuration
	if due && len(m.held) > 0 {
		m.replayedAt = now
		if err := m.replayParked(ctx); err == nil {
			m.replayTag = replayTag
		} else if errors.Is(err, ErrCorrupt) {
			return err
		}
	}
	return nil
}

// errRenewal: the holds could not be renewed (storage failed); the member looks again later.
var errRenewal = errors.New("estuite: renewing a group member's holds failed")

func sortedSlots(held map[GroupSlot]*heldSlot) []GroupSlot {
	out := make([]GroupSlot, 0, len(held))
	for slot := range held {
		out = append(out, slot)
	}
	slices.SortFunc(out, func(a, b GroupSlot) int {
		if a.Shard != b.Shard {
			return a.Shard - b.Shard
		}
		return a.Range - b.Range
	})
	return out
}

func (m *GroupMember) publishSlots() {
	held := sortedSlots(m.held)
	m.mu.Lock()
	m.slots = held
	m.mu.Unlock()
	if m.o.OnRebalance != nil {
		m.o.OnRebalance(slices.Clone(held))
	}
}

// slotEntity is the row of a slot held by owner ("": free) at position.
func (m *GroupMember) slotEntity(slot GroupSlot, owner string, position int64) table.Entity {
	return table.Entity{PartitionKey: m.pk, RowKey: slotRowKey(slot), Properties: map[string]any{
		propOwner: owner, propToken: m.token, propDuration: m.o.LeaseDuration.Milliseconds(), propPosition: position,
		propUpdated: m.s.now().UTC(),
	}}
}

// memberEntity is the member's row; its counter changes its ETag at every write.
func (m *GroupMember) memberEntity() table.Entity {
	m.beat++
	return table.Entity{PartitionKey: m.pk, RowKey: memberKey(m.o.Member), Properties: map[string]any{
		propOwner: m.o.Member, propDuration: m.o.LeaseDuration.Milliseconds(), propVersion: m.beat, propUpdated: m.s.now().UTC(),
	}}
}

// take writes this member's name into the slot's row, under the ETag read (or as a new row).
// takeReads are what the takes of one look at the group read, by shard.
type takeReads struct {
	heads  map[int]int64
	parked map[int][]ParkedEvent
}

// head reads the shard's feed head once for all of the look's takes.
func (t *takeReads) head(ctx context.Context, s *Store, shard int) (int64, error) {
	if h, ok := t.heads[shard]; ok {
		return h, nil
	}
	h, err := s.FeedHeadOf(ctx, shard)
	if err == nil {
		t.heads[shard] = h
	}
	return h, err
}

func (m *GroupMember) take(ctx context.Context, slot GroupSlot, r table.Entity, exists bool, reads *takeReads) (bool, error) {
	var pos int64
	owner := ""
	if exists {
		var ok bool
		pos, ok = r.Properties[propPosition].(int64)
		if !ok || pos < 0 || pos > MaxPosition {
			return false, corrupt(r.PartitionKey, r.RowKey, "malformed consumer group slot")
		}
		owner, _ = r.Properties[propOwner].(string)
	} else if m.o.StartAtEnd {
		head, err := reads.head(ctx, m.s, slot.Shard)
		if err != nil {
			return false, err
		}
		pos = head
	}
	var redeliver int64
	if owner != "" {
		// Not given back: its holder (or this member, before a restart) may have handed any event
		// after the checkpoint to its handler, up to the head.
		head, err := reads.head(ctx, m.s, slot.Shard)
		if err != nil {
			return false, err
		}
		redeliver = head
	}
	// The parked events of the slot's shard, read before the slot is taken, so that none parked
	// by the holder before is missed.
	parked, ok := reads.parked[slot.Shard]
	if !ok {
		var err error
		if parked, err = m.s.parkedRows(ctx, m.o.Group, slot.Shard, 0); err != nil {
			return false, err
		}
		reads.parked[slot.Shard] = parked
	}
	sendAt := m.o.Clock.Now()
	op := table.Op{Kind: table.Insert, Entity: m.slotEntity(slot, m.o.Member, pos)}
	if exists {
		op = table.Op{Kind: table.Replace, Entity: op.Entity, IfMatch: r.ETag}
	}
	etags, err := m.s.events.submitOnce(ctx, m.pk, []table.Op{op})
	if err != nil {
		return false, err // taken by another first, or unknown: the next refresh looks again
	}
	h := &heldSlot{etag: etags[0], position: pos, saved: pos, redeliv: redeliver}
	if owner != "" {
		h.recheckAt, h.recheckFrom = sendAt.Add(2*m.o.LeaseDuration), pos
	}
	h.renewAt = sendAt.Add(m.o.LeaseDuration / leaseRenewDivisor)
	h.until = sendAt.Add(time.Duration(float64(m.o.LeaseDuration) * leaseSafeFraction))
	m.held[slot] = h
	delete(m.seen, slot)
	m.count(func(st *GroupStats) { st.Taken++ })
	// Parks of this run that landed after it lost the slot mark events another member passed.
	kept := parked[:0:0]
	for _, p := range parked {
		ref := ParkedRef{p.Shard, p.Position}
		if got, late := m.lateParks[ref]; late && got == slot && p.token == m.token && p.Position <= pos {
			if err := m.dropParked(ctx, p.Shard, p.Position); err == nil {
				delete(m.lateParks, ref)
				continue
			}
		}
		kept = append(kept, p)
	}
	m.loadParked(slot, h, kept)
	return true, nil
}

// release saves the slot's checkpoint with its owner cleared, under the ETag this member last
// wrote, so that the next holder starts where this one stopped, at once.
func (m *GroupMember) release(ctx context.Context, slot GroupSlot) {
	h := m.held[slot]
	delete(m.held, slot)
	m.count(func(st *GroupStats) { st.Released++ })
	if h == nil || m.s.checkOpen() != nil {
		return
	}
	if !h.recheckAt.IsZero() {
		m.recheckSlot(ctx, slot, h)
	}
	op := table.Op{Kind: table.Replace, Entity: m.slotEntity(slot, "", h.position), IfMatch: h.etag}
	_, _ = m.s.events.submitOnce(ctx, m.pk, []table.Op{op})
}

// leave gives every slot back and deletes the member row.
func (m *GroupMember) leave(ctx context.Context) {
	if m.s.checkOpen() != nil {
		return
	}
	for _, slot := range sortedSlots(m.held) {
		m.release(ctx, slot)
	}
	op := table.Op{Kind: table.Delete, Entity: table.Entity{PartitionKey: m.pk, RowKey: memberKey(m.o.Member)}, IfMatch: table.AnyETag}
	_, _ = m.s.events.submitOnce(ctx, m.pk, []table.Op{op})
}

// saveCheckpoints writes the held slots' rows — their positions and the member's name, which
// renews the holds — in batches of up to 100 (one partition: one request each). With renew,
// every held slot is written, and the member row with them; otherwise only the slots whose
// position moved. A slot whose write is refused was taken by another member (or its row was
// deleted): it is dropped, and the others are written again. It reports whether every write
// succeeded.
func (m *GroupMember) saveCheckpoints(ctx context.Context, renew bool) bool {
	type item struct {
		slot   GroupSlot
		member bool // the member row (no slot)
	}
	var items []item
	if renew {
		items = append(items, item{member: true})
	}
	for _, slot := range sortedSlots(m.held) {
		if h := m.held[slot]; renew || h.position != h.saved {
			items = append(items, item{slot: slot})
		}
	}
	opOf := func(it item) table.Op {
		if it.member {
			return table.Op{Kind: table.Upsert, Entity: m.memberEntity()}
		}
		h := m.held[it.slot]
		return table.Op{Kind: table.Replace, Entity: m.slotEntity(it.slot, m.o.Member, h.position), IfMatch: h.etag}
	}
	ok, lost := true, false
	for chunk := range slices.Chunk(items, table.MaxBatchOps) {
		for attempt := 0; len(chunk) > 0; attempt++ {
			ops := make([]table.Op, len(chunk))
			for i, it := range chunk {
				ops[i] = opOf(it)
			}
			sendAt := m.o.Clock.Now()
			etags, err := m.s.events.submitOnce(ctx, m.pk, ops)
			var be *table.BatchError
			if err == nil {
				for ref, slot := range m.lateParks {
					if slices.ContainsFunc(chunk, func(it item) bool { return !it.member && it.slot == slot }) {
						delete(m.lateParks, ref) // the hold was still this member's
					}
				}
				for i, it := range chunk {
					if !it.member {
						h := m.held[it.slot]
						h.etag, h.saved = etags[i], ops[i].Entity.Properties[propPosition].(int64)
						h.renewAt = sendAt.Add(m.o.LeaseDuration / leaseRenewDivisor)
						h.until = sendAt.Add(time.Duration(float64(m.o.LeaseDuration) * leaseSafeFraction))
					}
				}
				break
			}
			conflict := errors.As(err, &be) && (errors.Is(err, table.ErrPreconditionFailed) || errors.Is(err, table.ErrNotFound))
			if !conflict || attempt > 0 {
				// Failed, or unknown: the holds last until their safe end; try again a little later
				// (a write that landed unseen moved the ETag, and the next save finds it so).
				ok = false
				retry := m.o.Clock.Now().Add(m.o.LeaseDuration / leaseRetryDivisor)
				for _, it := range chunk {
					if h := m.held[it.slot]; !it.member && h != nil && h.renewAt.Before(retry) {
						h.renewAt = retry
					}
				}
				break
			}
			// Some slot of the chunk was taken over (or its row deleted): find which by reading
			// them, drop those, and write the others again.
			var again []item
			for _, it := range chunk {
				if it.member {
					again = append(again, it)
					continue
				}
				h := m.held[it.slot]
				r, gerr := m.s.events.get(ctx, m.pk, slotRowKey(it.slot))
				switch owner, _ := r.Properties[propOwner].(string); {
				case gerr == nil && r.ETag == h.etag:
					again = append(again, it)
				case gerr == nil && owner == m.o.Member && r.Properties[propToken] == m.token:
					// This member's own write landed unseen (its answer was lost): no one took the
					// slot, since a taker writes its own name and token. Write again under the new
					// ETag.
					h.etag = r.ETag
					again = append(again, it)
				case gerr == nil || errors.Is(gerr, table.ErrNotFound):
					delete(m.held, it.slot)
					lost = true
				default:
					ok = false // unknown: left for the next save
					if retry := m.o.Clock.Now().Add(m.o.LeaseDuration / leaseRetryDivisor); h.renewAt.Before(retry) {
						h.renewAt = retry
					}
				}
			}
			chunk = again
		}
	}
	if ok {
		m.dirty, m.lastSave = 0, m.o.Clock.Now()
	}
	if lost {
		m.publishSlots()
	}
	return ok
}

// work reads the feed of each shard of which it holds a slot ready to go on (not waiting to
// retry an event), once from the lowest checkpoint of those slots, and hands each event to the
// handler of the event's slot. It reports whether any position was passed.
func (m *GroupMember) work(ctx context.Context) (bool, error) {
	now := m.o.Clock.Now()
	shards := make(map[int][]GroupSlot)
	var keys []int
	for _, slot := range sortedSlots(m.held) {
		if h := m.held[slot]; h.retryAt.After(now) {
			continue // retrying an event later: the slot's other streams wait with it, the others go on
		}
		if len(shards[slot.Shard]) == 0 {
			keys = append(keys, slot.Shard)
		}
		shards[slot.Shard] = append(shards[slot.Shard], slot)
	}
	progressed := false
	for _, shard := range keys {
		var ready []GroupSlot
		from := int64(MaxPosition)
		for _, slot := range shards[shard] {
			if h := m.held[slot]; h != nil { // a save during an earlier shard's page may have lost it
				ready = append(ready, slot)
				from = min(from, h.position)
			}
		}
		if len(ready) == 0 {
			continue
		}
		page, err := m.s.ReadFeed(ctx, &FeedOptions{Shard: shard, After: from, Limit: m.o.MaxInFlight, Types: m.o.Types,
			StreamPrefix: m.o.StreamPrefix, MaxBytes: m.o.MaxBatchBytes})
		if err != nil {
			return progressed, err
		}
		stopped := make(map[GroupSlot]bool)
		for _, ev := range page.Events {
			slot := m.cfg.slotOf(streamKey(ev.Stream))
			h := m.held[slot]
			if h == nil || stopped[slot] || !slices.Contains(ready, slot) || ev.Position <= h.position {
				continue
			}
			if m.renewDue(m.o.Clock.Now()) {
				// A long page: renew the holds (and save the checkpoints) on the way.
				m.saveCheckpoints(ctx, true)
				if h = m.held[slot]; h == nil {
					continue
				}
			}
			if !m.o.Clock.Now().Before(h.until) {
				stopped[slot] = true // the hold may be running out: handle nothing more until renewed
				continue
			}
			done, err := m.deliver(ctx, slot, h, ev)
			if err != nil && ctx.Err() != nil {
				return progressed, ctx.Err()
			}
			if !done {
				stopped[slot] = true
				continue
			}
			h.position = ev.Position
			m.dirty++
			progressed = true
		}
		// Every position up to Next is read: those not handled belong to other slots, or were
		// filtered out.
		for _, slot := range ready {
			if h := m.held[slot]; h != nil && !stopped[slot] && page.Next > h.position {
				h.position = page.Next
				progressed = true
			}
		}
	}
	return progressed, nil
}

// deliver hands one event to the handler, or parks it. It reports whether the slot may move past
// the event: false when the handler failed and the event is to be tried again (at h.retryAt),
// when the hold ran out, or when parking it failed.
func (m *GroupMember) deliver(ctx context.Context, slot GroupSlot, h *heldSlot, ev FeedEvent) (bool, error) {
	if first, ok := h.blocking[ev.Stream]; ok && m.o.Park == ParkBlocksStream && first < ev.Position {
		err := m.park(ctx, slot, h, ev, 0, fmt.Sprintf("waiting behind parked position %d of the stream", first), true)
		return err == nil, err
	}
	if h.failPos != ev.Position {
		h.failPos, h.failAttempts = ev.Position, 0
	}
	clock := m.o.Clock
	hctx, cancel := context.WithTimeout(ctx, max(h.until.Sub(clock.Now()), 0))
	err := m.callHandler(hctx, slot, ev, false)
	cancel()
	if err == nil {
		h.failPos, h.failAttempts, h.retryAt = 0, 0, time.Time{}
		m.count(func(st *GroupStats) {
			st.Handled++
			if ev.Position <= h.redeliv {
				st.Redelivered++
			}
		})
		if h.stale[ev.Position] {
			// A parked row from before may be left at this position (a park of unknown outcome,
			// or one the slot's previous holder wrote): the event is handled now, so the row goes.
			// Should the delete fail, the event is tried again later.
			if err := m.dropParked(ctx, ev.Shard, ev.Position); err != nil {
				h.retryAt = clock.Now().Add(m.o.RetryBackoff)
				return false, err
			}
			delete(h.stale, ev.Position)
		}
		return true, nil
	}
	if ctx.Err() != nil || !clock.Now().Before(h.until) {
		return false, err // stopping, or the hold ran out: the event is for whoever holds the slot next
	}
	h.failAttempts++
	if m.o.MaxRetries >= 0 && h.failAttempts > m.o.MaxRetries {
		perr := m.park(ctx, slot, h, ev, h.failAttempts, err.Error(), false)
		if perr == nil {
			h.failPos, h.failAttempts, h.retryAt = 0, 0, time.Time{}
		}
		return perr == nil, perr
	}
	// Try again after a backoff; meanwhile the member goes on with its other slots.
	delay := m.o.RetryBackoff
	for i := 1; i < h.failAttempts && delay < m.o.MaxRetryBackoff; i++ {
		delay *= 2
	}
	h.retryAt = clock.Now().Add(min(delay, m.o.MaxRetryBackoff))
	m.count(func(st *GroupStats) { st.Retries++ })
	return false, nil
}

// recheckParked deletes, for each slot taken over two leases ago from a holder that did not give it
// back, the parked rows that holder wrote after the take (late) at positions this member has
// handled since: one query of the shard's parked rows per such slot, once.
func (m *GroupMember) recheckParked(ctx context.Context, now time.Time) error {
	for _, slot := range sortedSlots(m.held) {
		if h := m.held[slot]; !h.recheckAt.IsZero() && !now.Before(h.recheckAt) {
			m.recheckSlot(ctx, slot, h)
		}
	}
	return nil
}

// recheckSlot is recheckParked's look at one slot (also made when the slot is given back before
// its time: its previous holder, still alive, may take it next).
func (m *GroupMember) recheckSlot(ctx context.Context, slot GroupSlot, h *heldSlot) {
	{
		rows, err := m.s.parkedRows(ctx, m.o.Group, slot.Shard, 0)
		if err != nil {
			return // looked at again at the next look
		}
		for _, p := range rows {
			if p.Range == slot.Range && p.Position > h.recheckFrom && p.Position <= h.position && p.token != m.token {
				if err := m.dropParked(ctx, p.Shard, p.Position); err != nil {
					return
				}
			}
		}
		h.recheckAt = time.Time{}
	}
}
