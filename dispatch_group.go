package estuite

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/estuite/estuite/table"
)

// A DispatchGroup runs a process's dispatchers, one per feed shard, and spreads the shards'
// leases over the processes that run one: each process announces itself with a member row in
// the lease partition, renewed as its leases are, and takes a free lease only while it holds
// fewer than its share (the shards divided by the live members, rounded up), and gives one back
// when it holds more and another member holds less. docs/operations.md, "Feed shards".
//
// Balance only spreads work: every dispatcher's writes are fenced by ETags whoever holds a
// lease. A free lease is taken by a live member below its share, or by any member when none is
// below (a member that died stops counting two lease durations after its row last changed).
type DispatchGroup struct {
	s           *Store
	owner       string
	dispatchers []*Dispatcher
	duration    time.Duration
	clock       Clock

	mu        sync.Mutex
	view      groupView
	beat      int64     // the member row's counter (changes its ETag)
	refreshed time.Time // when the view was last read (zero: never)
	released  time.Time // when a dispatcher of the group last gave a lease back
}

// groupView is what a group last read of the lease partition, judged on its own clock.
type groupView struct {
	members map[string]memberSeen // owner → its member row
	holders map[string]string     // lease row key → owner (non-empty owners only)
}

// memberSeen is a member row as this group saw it.
type memberSeen struct {
	etag    string
	changed time.Time // when this group first saw etag
}

// memberPrefix starts the row keys of the lease partition's member rows.
const memberPrefix = "member-"

// memberKey is the member row key of owner: its hash, since an owner name may hold characters
// that row keys forbid (estuite serve's default names hold a "/").
func memberKey(owner string) string { return memberPrefix + streamHash(owner) }

// NewDispatchGroup returns a group of dispatchers, one per feed shard of the store, with opts
// (Shard is set for each; Owner, which names this process in the lease rows and its member row,
// is the same for all, a random UUID when empty).
func NewDispatchGroup(s *Store, opts *DispatcherOptions) *DispatchGroup {
	var o DispatcherOptions
	if opts != nil {
		o = *opts
	}
	g := &DispatchGroup{s: s}
	for shard := range s.feedShards {
		so := o
		so.Shard = shard
		d := NewDispatcher(s, &so)
		if g.owner == "" {
			g.owner, g.duration, g.clock = d.o.Owner, d.o.LeaseDuration, d.o.Clock
			o.Owner = g.owner
		}
		d.group = g
		g.dispatchers = append(g.dispatchers, d)
	}
	return g
}

// Dispatchers returns the group's dispatchers, by shard.
func (g *DispatchGroup) Dispatchers() []*Dispatcher { return slices.Clone(g.dispatchers) }

// Start starts every dispatcher of the group (Dispatcher.Start).
func (g *DispatchGroup) Start(ctx context.Context) error {
	for i, d := range g.dispatchers {
		if err := d.Start(ctx); err != nil {
			for _, started := range g.dispatchers[:i] {
				started.Stop()
			}
			return err
		}
	}
	return nil
}

// Stop stops every dispatcher of the group, gives its leases back and deletes its member row,
// and returns the first error that stopped a dispatcher.
func (g *DispatchGroup) Stop() error {
	var first error
	for _, d := range g.dispatchers {
		if err := d.Stop(); err != nil && first == nil {
			first = err
		}
	}
	if g.s.checkOpen() == nil {
		op := table.Op{Kind: table.Delete, Entity: table.Entity{PartitionKey: leasePartition, RowKey: memberKey(g.owner)}, IfMatch: table.AnyETag}
		_, _ = g.s.events.submitOnce(context.Background(), leasePartition, []table.Op{op})
	}
	return first
}

// refresh renews the group's member row and reads the lease partition, at most every third of
// a lease duration. Only the group's dispatcher of shard 0 calls it, in its loop, so that the
// group's storage calls are that loop's (the others use the view as it is).
func (g *DispatchGroup) refresh(ctx context.Context) {
	now := g.clock.Now()
	g.mu.Lock()
	due := g.refreshed.IsZero() || now.Sub(g.refreshed) >= g.duration/leaseRenewDivisor
	g.beat++
	beat := g.beat
	g.mu.Unlock()
	if !due {
		return
	}
	ev := g.s.events
	row := table.Entity{PartitionKey: leasePartition, RowKey: memberKey(g.owner), Properties: map[string]any{
		propOwner: g.owner, propDuration: g.duration.Milliseconds(), propVersion: beat,
	}}
	if _, err := ev.submitOnce(ctx, leasePartition, []table.Op{{Kind: table.Upsert, Entity: row}}); err != nil {
		return // the view stays as it was; the leases' own logic goes on
	}
	var rows []table.Entity
	err := ev.queryPages(ctx, table.Query{PartitionKey: leasePartition}, func(p table.Page) error {
		rows = append(rows, p.Entities...)
		return nil
	})
	if err != nil {
		return
	}
	now = g.clock.Now()
	g.mu.Lock()
	old := g.view.members
	view := groupView{members: make(map[string]memberSeen), holders: make(map[string]string)}
	var stale []table.Entity
	for _, r := range rows {
		switch {
		case strings.HasPrefix(r.RowKey, memberPrefix):
			owner, _ := r.Properties[propOwner].(string)
			if owner == "" || memberKey(owner) != r.RowKey {
				continue // not a member row of this release
			}
			seen := memberSeen{etag: r.ETag, changed: now}
			if prev, ok := old[owner]; ok && prev.etag == r.ETag {
				seen.changed = prev.changed
			}
			view.members[owner] = seen
			if owner != g.owner && now.Sub(seen.changed) > 10*leaseDurationOf(r, g.duration) {
				stale = append(stale, r) // a member gone long ago: its row goes
			}
		case strings.HasPrefix(r.RowKey, dispatcherLeaseRow):
			if owner, _ := r.Properties[propOwner].(string); owner != "" {
				view.holders[r.RowKey] = owner
			}
		}
	}
	g.view, g.refreshed = view, now
	// The deletes go without the lock: a storage call under it would hold up the group's other
	// dispatchers for as long as the call takes (in the simulation, for good: a goroutine waiting
	// on a mutex is not durably blocked, so virtual time stood still — seed 977).
	g.mu.Unlock()
	for _, r := range stale {
		op := table.Op{Kind: table.Delete, Entity: table.Entity{PartitionKey: leasePartition, RowKey: r.RowKey}, IfMatch: r.ETag}
		_, _ = ev.submitOnce(ctx, leasePartition, []table.Op{op})
	}
}

// counts returns the live members and how many leases each holds, by the view: a member is live
// while its row's ETag has changed within two lease durations on this group's clock (this
// process always).
func (g *DispatchGroup) counts(now time.Time) (held map[string]int, share int) {
	held = map[string]int{g.owner: 0}
	for owner, m := range g.view.members {
		if now.Sub(m.changed) <= 2*g.duration {
			held[owner] = 0 // live; its leases are counted below
		}
	}
	for _, owner := range g.view.holders {
		if _, live := held[owner]; live {
			held[owner]++
		}
	}
	n := len(held)
	return held, (len(g.dispatchers) + n - 1) / n
}

// mayTake reports whether the group's dispatcher may take a free (or expired) lease: while the
// group holds fewer than its share, or when no other live member holds fewer than its share (no
// one better placed to take it).
func (g *DispatchGroup) mayTake() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	held, share := g.counts(g.clock.Now())
	if held[g.owner] < share {
		return true
	}
	for owner, n := range held {
		if owner != g.owner && n < share {
			return false
		}
	}
	return true
}

// shouldRelease reports whether the group's dispatcher of shard should give its lease back: the
// group holds more than its share, another live member fewer, this is the group's highest shard
// held, and no dispatcher of the group gave one back in the last lease duration.
func (g *DispatchGroup) shouldRelease(shard int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.clock.Now()
	held, share := g.counts(now)
	if held[g.owner] <= share || !g.released.IsZero() && now.Sub(g.released) < g.duration {
		return false
	}
	short := false
	for owner, n := range held {
		short = short || owner != g.owner && n < share
	}
	if !short {
		return false
	}
	var mine []string
	for row, owner := range g.view.holders {
		if owner == g.owner {
			mine = append(mine, row)
		}
	}
	slices.Sort(mine)
	if len(mine) == 0 || mine[len(mine)-1] != leaseRowOf(shard) {
		return false
	}
	g.released = now
	delete(g.view.holders, leaseRowOf(shard))
	return true
}

// noteHeld records in the view that the group's dispatcher of shard holds its lease (or not), so
// that the group's own counts are current between refreshes.
func (g *DispatchGroup) noteHeld(shard int, held bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.view.holders == nil {
		g.view.holders = make(map[string]string)
	}
	row := leaseRowOf(shard)
	switch {
	case held:
		g.view.holders[row] = g.owner
	case g.view.holders[row] == g.owner:
		delete(g.view.holders, row)
	}
}

// Members returns the live members of the dispatch group's store as this group last saw them,
// with how many shard leases each holds.
func (g *DispatchGroup) Members() map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	held, _ := g.counts(g.clock.Now()) // a map of its own
	return held
}
