package estuite

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/estuite/estuite/table"
	"github.com/google/uuid"
)

// DispatchStats describe what one dispatch step did.
type DispatchStats struct {
	Shard    int // the feed shard the step dispatched
	Streams  int // streams with dirty markers looked at
	Events   int // events written into the feed
	Batches  int // feed batches written
	Fenced   int // stream heads fenced because an announced append did not land in time
	Resolved int // dirty markers deleted
	// Waiting counts the streams looked at whose every marker is an early announcement
	// (Store.Announce) whose append has not landed yet and that may not be fenced yet: nothing
	// to read for them, and their appends may land at any moment.
	Waiting    int
	FeedHead   int64 // the highest position in the feed after the step
	Incomplete bool  // work was left for the next step (a stream had more than one page pending)
	// Backlog is how many committed events of the streams looked at are still not in the feed
	// after the step (events of streams beyond MaxStreamsPerStep are not counted).
	Backlog int64
	// MaxLag is the longest time from an event's commit (its recorded time) to its feed write,
	// among the events of the step.
	MaxLag time.Duration
	// Lags holds, for each event written, the time from its commit (its recorded time, on the
	// writer's clock) to its feed write (on the dispatcher's store clock), in feed order.
	Lags []time.Duration
}

// dispatcherDefaults fill in DispatcherOptions.
const (
	DefaultLeaseDuration     = 15 * time.Second
	DefaultFenceAfter        = 2 * time.Second
	DefaultPollInterval      = 100 * time.Millisecond
	DefaultMaxPollInterval   = 5 * time.Second
	DefaultDispatchWorkers   = 16
	DefaultMaxStreamsPerStep = 500
	DefaultMaxStepBytes      = 64 << 20
	DefaultScavengeInterval  = time.Minute
)

// unknownEventBytes is what a dispatcher assumes an event row may weigh when the dirty marker
// that announced it does not say (markers of earlier releases).
const unknownEventBytes = 64 << 10

// maxMarkerRowsPerStream bounds the markers of one stream a step takes (a stream with more waits
// for the next steps, which see the rest once these are resolved).
const maxMarkerRowsPerStream = 1000

// DispatcherOptions configure a Dispatcher. nil means defaults.
type DispatcherOptions struct {
	// Shard is the feed shard the dispatcher writes (0 to Store.FeedShards()-1): each shard has
	// its own lease, so a process runs one dispatcher per shard it serves. Default 0, the only
	// shard of a store with one. Out of range is an *InvalidInputError from Step and Start.
	Shard int
	// Owner names this dispatcher in the lease row. Default: a random UUID.
	Owner string
	// LeaseDuration is how long a lease lasts without renewal. Default DefaultLeaseDuration.
	LeaseDuration time.Duration
	// FenceAfter is how long an announced append may stay unlanded before the dispatcher fences
	// the stream's head so that it cannot land any more (its writer then retries). Default
	// DefaultFenceAfter. An early announcement (Store.Announce) waits at least twice its
	// writer's Options.AnnounceWindow, which its marker records.
	FenceAfter time.Duration
	// PollInterval is how soon an idle dispatcher looks for other processes' work again; it
	// doubles while idle up to MaxPollInterval. Appends in this process wake it at once.
	PollInterval, MaxPollInterval time.Duration
	// Workers bounds the stream reads a step makes at once. Default DefaultDispatchWorkers.
	Workers int
	// MaxStreamsPerStep bounds the streams one step dispatches, and so the dirty markers it
	// reads: streams take turns, shard by shard, in the order of their hash. Default
	// DefaultMaxStreamsPerStep.
	MaxStreamsPerStep int
	// MaxStepBytes bounds the event bytes one step reads from the stream table (as estimated
	// from the dirty markers, which record the largest event of their append): each stream's
	// read is limited to its share, and streams beyond the budget wait for the next step. At
	// least one event is read per step. Default DefaultMaxStepBytes.
	MaxStepBytes int64
	// Clock is this process's clock: fence waits, leases, polls and backoff are measured on it
	// (never against another process's time). Default SystemClock(). Correctness never depends
	// on it: every write of the dispatcher is fenced by ETags.
	Clock Clock
	// ScavengeInterval is how often the lease holder runs a scavenge pass (Store.Scavenge).
	// Default DefaultScavengeInterval; negative turns it off.
	ScavengeInterval time.Duration
	// OnScavenge, when set, is called after every scavenge pass that Start runs.
	OnScavenge func(ScavengeStats, error)
	// OnStep, when set, is called after every step that Start runs, with its stats and error:
	// for metrics and logs. It must not block.
	OnStep func(DispatchStats, error)
	// Linger is how long a dispatcher started with Start, woken by an append in this process,
	// waits for more appends before it steps, so that one step carries many streams (and after a
	// refused conditional feed write, how long it waits before it tries again). It adds to the
	// commit-to-feed lag of a lone append. 0 means DefaultLinger; negative is an
	// *InvalidInputError from Start.
	Linger time.Duration
}

// Dispatcher moves committed events from the stream table into the feed. Run one per process
// with Start (it takes a lease so that one dispatcher is active per store), or drive it by hand
// with Step. Several dispatchers running at once stay correct — storage ETags fence each write —
// they only waste work.
type Dispatcher struct {
	s     *Store
	o     DispatcherOptions
	shard int            // the feed shard it writes
	group *DispatchGroup // the group it belongs to, which balances leases (nil: none)

	mu    sync.Mutex          // serializes steps
	st    *feedState          // nil until loaded, and after any doubt
	waits map[string]waitInfo // stream pk → since when its announced version is ahead of its head
	// earlySeen: early marker row key → when this dispatcher first saw it without its commit row
	// (on d.o.Clock). Only a marker seen for FenceAfter may go without its commit row (early.go).
	earlySeen map[string]waitInfo
	cursors   map[int]string // per dirty-marker partition: the stream hash the next step starts at ("": the first)
	shardTurn int            // which of the scanned shards goes first
	writeTurn int            // which of a step's streams is written into the feed first
	// gone: stream pk → how many steps in a row, each on a view of the feed read afresh, found
	// its next rows gone below the removal floor though the feed does not hold them.
	gone map[string]int

	// pendingSince: stream pk → when a step first found it with work pending (on d.o.Clock), for
	// Health. Kept for the streams of the last steps only, so it stays bounded.
	pendingMu    sync.Mutex
	pendingSince map[string]pendingInfo
	health       healthState

	run struct {
		sync.Mutex
		cancel context.CancelFunc
		done   chan struct{}
		err    error
	}
}

type waitInfo struct {
	shard     int
	announced int64
	since     time.Time
}

type pendingInfo struct {
	shard int
	since time.Time
}

// feedState is what a dispatcher knows of the feed page it writes to.
type feedState struct {
	page       int64
	headerETag string // "" when the page has no header yet
	next       int64  // next position to assign
	markers    map[string]*pageMarker
}

// pageMarker is a stream's marker row in the current page: the last version of the stream the
// feed holds, written in the same batch as the events. confirmed is set once the stream's
// progress row (G) is known to be at least as far.
type pageMarker struct {
	stream    string
	version   int64
	confirmed bool
}

// NewDispatcher returns a dispatcher for the store. opts may be nil.
func NewDispatcher(s *Store, opts *DispatcherOptions) *Dispatcher {
	var o DispatcherOptions
	if opts != nil {
		o = *opts
	}
	if o.LeaseDuration <= 0 {
		o.LeaseDuration = DefaultLeaseDuration
	}
	if o.FenceAfter <= 0 {
		o.FenceAfter = DefaultFenceAfter
	}
	if o.ScavengeInterval == 0 {
		o.ScavengeInterval = DefaultScavengeInterval
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.MaxPollInterval < o.PollInterval {
		o.MaxPollInterval = max(DefaultMaxPollInterval, o.PollInterval)
	}
	if o.Workers <= 0 {
		o.Workers = DefaultDispatchWorkers
	}
	if o.MaxStreamsPerStep <= 0 {
		o.MaxStreamsPerStep = DefaultMaxStreamsPerStep
	}
	if o.MaxStepBytes <= 0 {
		o.MaxStepBytes = DefaultMaxStepBytes
	}
	if o.Clock == nil {
		o.Clock = SystemClock()
	}
	if o.Owner == "" {
		o.Owner = uuid.NewString()
	}
	if o.Linger == 0 {
		o.Linger = DefaultLinger
	}
	return &Dispatcher{s: s, o: o, shard: o.Shard, waits: make(map[string]waitInfo), earlySeen: make(map[string]waitInfo),
		pendingSince: make(map[string]pendingInfo), cursors: make(map[int]string)}
}

// checkShard reports a Shard option out of the store's range.
func (d *Dispatcher) checkShard() error {
	if d.shard < 0 || d.shard >= d.s.feedShards {
		return invalid("shard", "%d is not a feed shard of the store (0 to %d)", d.shard, d.s.feedShards-1)
	}
	return nil
}

// state is the in-process state of the dispatcher's shard.
func (d *Dispatcher) state() *shardState { return d.s.shards[d.shard] }

// page is the partition of page of the dispatcher's shard.
func (d *Dispatcher) page(page int64) string { return feedPartition(d.shard, page) }

// Step runs one dispatch cycle over every dirty-marker partition of its shard: it reads the streams announced as
// dirty, writes their undispatched events into the feed, and deletes the markers it resolved.
func (d *Dispatcher) Step(ctx context.Context) (DispatchStats, error) {
	if err := d.checkShard(); err != nil {
		return DispatchStats{}, err
	}
	return d.step(ctx, dirtyIndexes(d.shard))
}

// streamWork is one dirty stream of a step.
type streamWork struct {
	pk, stream string
	hash       string // streamHash(pk): the order in which streams take turns
	shard      int
	markers    []dirtyMarker
	fmin, amax int64
	agedEarly  bool  // an early marker has been seen for FenceAfter without its commit row
	maxBytes   int64 // the largest event row its markers announce (unknownEventBytes if one does not say)
	limit      int   // rows its read may return this step; 0: not read (over the step's byte budget)

	// read from the stream table
	events    []table.Entity // event rows, consecutive versions
	progress  table.Entity   // the G row, if any
	hasProg   bool
	head      table.Entity
	headVer   int64
	hasHead   bool
	truncated bool // more events pending than were read
	reread    bool // read again from the feed's position once already
	// removedBefore is the head's removal floor: event rows below it may have been scavenged,
	// which happens only once the feed holds them.
	removedBefore int64
	readFrom      int64 // the version the stream's read began at

	stale      bool  // the stream showed this dispatcher's view of the feed to be out of date
	dispatched int64 // last version in the feed
	pending    []table.Entity
	resolve    []dirtyMarker // markers that may go once pending is written
}

func (d *Dispatcher) stepOnce(ctx context.Context, shards []int) (stats DispatchStats, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	stats.Shard = d.shard
	if err := d.s.checkOpen(); err != nil {
		return stats, err
	}
	fresh := d.st == nil // this step's view of the feed is read now
	if fresh {
		if err := d.load(ctx); err != nil {
			return stats, err
		}
	}
	work, err := d.scanDirty(ctx, shards)
	if err != nil {
		return stats, err
	}
	stats.Streams = len(work)
	if work, err = d.lookUpEarly(ctx, work, &stats.Waiting); err != nil {
		return stats, err
	}
	if len(work) == 0 {
		stats.FeedHead = d.st.next - 1
		return stats, nil
	}
	work, deferred := d.budget(work)
	if deferred {
		stats.Incomplete = true
	}
	if err := d.readStreams(ctx, work); err != nil {
		return stats, err
	}
	stale := false
	for _, w := range work {
		if err := d.plan(ctx, w, &stats); err != nil {
			return stats, err
		}
		stats.Incomplete = stats.Incomplete || w.truncated
		stale = stale || w.stale
		if err := d.checkGone(ctx, w, fresh); err != nil {
			return stats, err
		}
	}
	if stale {
		defer func() { d.st = nil }() // read the feed's page again before the next step
	}
	// The streams take turns at being written first: a step whose feed writes fail part-way
	// (a lost answer, another dispatcher's write) has written its first streams, and the next step
	// must not leave the same last ones behind again.
	d.writeTurn++
	turn := d.writeTurn % len(work)
	work = append(work[turn:len(work):len(work)], work[:turn]...)
	if err := d.catalogNew(ctx, work); err != nil {
		return stats, err
	}
	if err := d.writeFeed(ctx, work, &stats); err != nil {
		if !errors.Is(err, table.ErrTransient) || errors.Is(err, table.ErrUnknownOutcome) {
			d.st = nil // read the page again before the next write
		}
		// A write refused before it was applied (the service busy, say) changed nothing: what
		// this dispatcher knows of the page still holds, and reading it again would only add
		// to the load that refused it (a page's markers are one entity per stream).
		return stats, err
	}
	stats.FeedHead = d.st.next - 1
	for _, w := range work {
		if last := w.dispatched + int64(len(w.pending)); w.headVer > last {
			stats.Backlog += w.headVer - last
		}
	}
	d.resolve(ctx, work, &stats)
	d.notePending(work)
	return stats, nil
}

// load reads the feed's current page: its header (the fence) and its stream markers.
func (d *Dispatcher) load(ctx context.Context) error {
	ev := d.s.events
	page := int64(0)
	if row, err := ev.get(ctx, metaPartition, feedHintRowOf(d.shard)); err == nil {
		if p, ok := row.Properties[propPage].(int64); ok && validPage(p) {
			page = p
		}
	} else if !errors.Is(err, table.ErrNotFound) {
		return err
	}
	st := &feedState{markers: make(map[string]*pageMarker)}
	for {
		row, err := ev.get(ctx, d.page(page), feedHeaderRowKey)
		if errors.Is(err, table.ErrNotFound) {
			if page > 0 {
				page-- // the hint ran ahead of the pages (it never should): step back
				continue
			}
			st.page, st.next = 0, 1
			break
		}
		if err != nil {
			return err
		}
		next, ok := row.Properties[propNext].(int64)
		if !ok || next < pageFirst(page) || next > pageLast(page)+1 {
			return corrupt(row.PartitionKey, row.RowKey, "feed page header with next position %v", row.Properties[propNext])
		}
		st.page, st.headerETag, st.next = page, row.ETag, next
		if next <= pageLast(page) || page == lastPage() {
			break
		}
		// The page is full: is there a next one already?
		if _, err := ev.get(ctx, d.page(page+1), feedHeaderRowKey); errors.Is(err, table.ErrNotFound) {
			break
		} else if err != nil {
			return err
		}
		page++
	}
	if err := d.loadMarkers(ctx, st); err != nil {
		return err
	}
	d.st = st
	d.state().feedHead.publish(st.next - 1)
	return nil
}

func (d *Dispatcher) loadMarkers(ctx context.Context, st *feedState) error {
	q := table.Query{PartitionKey: d.page(st.page), From: feedMarkerPrefix, To: nextPrefix(feedMarkerPrefix)}
	return d.s.events.queryPages(ctx, q, func(p table.Page) error {
		for _, row := range p.Entities {
			stream, _ := row.Properties[propStream].(string)
			v, ok := row.Properties[propVersion].(int64)
			if stream == "" || !ok {
				return corrupt(row.PartitionKey, row.RowKey, "malformed feed stream marker")
			}
			st.markers[streamKey(stream)] = &pageMarker{stream: stream, version: v}
		}
		return nil
	})
}

// nextPrefix is the smallest string greater than every string starting with prefix (for ASCII
// prefixes).
func nextPrefix(prefix string) string {
	return prefix[:len(prefix)-1] + string(prefix[len(prefix)-1]+1)
}

// scanDirty reads the dirty markers of the given shards, grouped by stream. Streams take turns:
// each shard is read from where the previous step stopped (its cursor, a stream hash: marker row
// keys begin with it), at most MaxStreamsPerStep streams in all, so that a step's cost does not
// grow with the markers pending and no stream waits behind others that stay dirty.
func (d *Dispatcher) scanDirty(ctx context.Context, shards []int) ([]*streamWork, error) {
	if len(shards) == 0 {
		return nil, nil
	}
	// The shards take turns at going first: when the streams of the first ones fill the step,
	// the next step begins with the first shard this one did not reach.
	start := d.shardTurn % len(shards)
	d.shardTurn = start + 1
	var work []*streamWork
	for i := range shards {
		left := d.o.MaxStreamsPerStep - len(work)
		if left <= 0 {
			d.shardTurn = start + i
			break
		}
		shard := shards[(start+i)%len(shards)]
		quota := (left + len(shards) - i - 1) / (len(shards) - i) // an even share of what is left
		ws, complete, err := d.scanShard(ctx, shard, quota)
		if err != nil {
			return nil, err
		}
		if complete {
			d.prune(shard, ws)
		}
		work = append(work, ws...)
	}
	return work, nil
}

// relocateMarker moves marker m (stored as row) into dirty-marker partition want: an upsert there,
// then a delete here under the row's ETag (a crash between leaves both, and the second is
// relocated or resolved like any marker).
func (d *Dispatcher) relocateMarker(ctx context.Context, m dirtyMarker, row table.Entity, want int) error {
	moved := m
	moved.shard = want
	if _, err := d.s.events.submitRefused(ctx, dirtyPartition(want), []table.Op{{Kind: table.Upsert, Entity: moved.entity()}}); err != nil {
		return err
	}
	d.s.markDirty(want)
	op := table.Op{Kind: table.Delete, Entity: table.Entity{PartitionKey: row.PartitionKey, RowKey: row.RowKey}, IfMatch: row.ETag}
	_, err := d.s.events.submitOnce(ctx, row.PartitionKey, []table.Op{op})
	var be *table.BatchError
	if errors.As(err, &be) {
		return nil // changed or gone meanwhile: the next scan looks again
	}
	return err
}

// errShardQuota ends a shard's scan once it has found its share of streams.
var errShardQuota = errors.New("estuite: shard quota reached")

// scanShard reads the markers of up to quota streams of one shard, from the shard's cursor on
// and then around from the start. complete reports that it read every marker of the shard.
func (d *Dispatcher) scanShard(ctx context.Context, shard, quota int) (work []*streamWork, complete bool, err error) {
	cursor := d.cursors[shard]
	var cur *streamWork
	stopAt := "" // hash of the first stream left for the next step
	read := func(from, to string) error {
		return d.s.events.queryPages(ctx, table.Query{PartitionKey: dirtyPartition(shard), From: from, To: to}, func(p table.Page) error {
			for _, row := range p.Entities {
				m, err := decodeDirtyMarker(shard, row)
				if err != nil {
					return err
				}
				if want := dirtyIndex(m.pk, d.s.feedShards); want != shard {
					// A marker in another shard's partition (a process of an earlier release, or
					// one that opened the store before its shard count was recorded): moved to
					// where the stream's dispatcher looks, never dispatched here.
					if err := d.relocateMarker(ctx, m, row, want); err != nil {
						return err
					}
					continue
				}
				if cur == nil || cur.pk != m.pk {
					if len(work) == quota {
						stopAt = streamHash(m.pk)
						return errShardQuota
					}
					cur = &streamWork{pk: m.pk, hash: streamHash(m.pk), stream: m.stream, shard: shard}
					work = append(work, cur)
				}
				if len(cur.markers) == maxMarkerRowsPerStream {
					continue // the rest of this stream's markers wait for the next steps
				}
				cur.markers = append(cur.markers, m)
			}
			return nil
		})
	}
	err = read(cursor, "")
	if err == nil && cursor != "" {
		cur = nil
		err = read("", cursor)
	}
	switch {
	case errors.Is(err, errShardQuota):
		d.cursors[shard] = stopAt
		return work, false, nil
	case err != nil:
		return nil, false, err
	}
	d.cursors[shard] = ""
	return work, true, nil
}

// budget decides how many rows each stream's read may return, so that the step reads at most
// MaxStepBytes of events as estimated from the markers. Streams past the budget are left for
// the next step (the first of them, per shard, is where that shard's next turn starts); the first
// stream is always read. deferred reports whether any was left.
func (d *Dispatcher) budget(work []*streamWork) (read []*streamWork, deferred bool) {
	share := d.o.MaxStepBytes / int64(len(work))
	left := d.o.MaxStepBytes
	rewound := make(map[int]bool)
	for i, w := range work {
		rows := min(int64(table.MaxPageSize), max(1, share/w.maxBytes))
		if cost := rows * w.maxBytes; cost > left {
			if rows = left / w.maxBytes; rows < 1 && i > 0 {
				if !rewound[w.shard] {
					rewound[w.shard] = true
					d.cursors[w.shard] = w.hash
				}
				deferred = true
				continue
			}
			rows = max(rows, 1)
		}
		left -= rows * w.maxBytes
		w.limit = int(rows)
		read = append(read, w)
	}
	return read, deferred
}

// prune forgets what this dispatcher remembered of streams of a shard that have no marker any
// more (resolved by another dispatcher, or retracted): work lists every stream of the shard.
func (d *Dispatcher) prune(shard int, work []*streamWork) {
	dirty := make(map[string]bool, len(work))
	for _, w := range work {
		dirty[w.pk] = true
	}
	marked := make(map[string]bool)
	for _, w := range work {
		for _, m := range w.markers {
			marked[m.rowKey] = true
		}
	}
	for rk, wi := range d.earlySeen {
		if wi.shard == shard && !marked[rk] {
			delete(d.earlySeen, rk)
		}
	}
	for pk, wi := range d.waits {
		if wi.shard == shard && !dirty[pk] {
			delete(d.waits, pk)
		}
	}
	d.pendingMu.Lock()
	defer d.pendingMu.Unlock()
	for pk, p := range d.pendingSince {
		if p.shard == shard && !dirty[pk] {
			delete(d.pendingSince, pk)
		}
	}
}

// notePending records, for Health, since when each stream of the step has had work pending, and
// forgets the streams the step finished.
func (d *Dispatcher) notePending(work []*streamWork) {
	now := d.o.Clock.Now()
	d.pendingMu.Lock()
	defer d.pendingMu.Unlock()
	for _, w := range work {
		if len(w.resolve) == len(w.markers) && len(w.markers) < maxMarkerRowsPerStream {
			delete(d.pendingSince, w.pk)
		} else if _, ok := d.pendingSince[w.pk]; !ok {
			d.pendingSince[w.pk] = pendingInfo{shard: w.shard, since: now}
		}
	}
}

// forgetPending clears what Health reports of pending work, when this dispatcher stops looking.
func (d *Dispatcher) forgetPending() {
	d.pendingMu.Lock()
	clear(d.pendingSince)
	d.pendingMu.Unlock()
}

// readStreams reads, for each dirty stream, its events from the first one that may be
// undispatched, its progress row and its head: one range query when fewer than a page of events
// are pending.
func (d *Dispatcher) readStreams(ctx context.Context, work []*streamWork) error {
	errs := make([]error, len(work))
	sem := make(chan struct{}, d.o.Workers)
	var wg sync.WaitGroup
	for i, w := range work {
		from := w.fmin
		if m := d.st.markers[w.pk]; m != nil {
			from = max(from, m.version+1)
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if from == 0 {
				// Only early markers to be fenced away: read from what the feed holds of the
				// stream, which its progress row says.
				v, err := d.s.progressOf(ctx, w.pk)
				if err != nil {
					errs[i] = err
					return
				}
				from = v + 1
			}
			errs[i] = d.readStream(ctx, w, from)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (d *Dispatcher) readStream(ctx context.Context, w *streamWork, from int64) error {
	w.readFrom = from
	st := d.s.streams
	limit := w.limit
	if limit <= 0 {
		limit = table.MaxPageSize
	}
	q := table.Query{PartitionKey: w.pk, From: eventKey(from), To: eventIDPrefix, Limit: limit}
	var err error
	for {
		p, err := st.query(ctx, q)
		if err != nil {
			return err
		}
		for _, row := range p.Entities {
			switch {
			case row.RowKey == progressRowKey:
				w.progress, w.hasProg = row, true
			case row.RowKey == headRowKey:
				w.head, w.hasHead = row, true
			default:
				w.events = append(w.events, row)
			}
		}
		if p.Continuation == "" || w.hasHead {
			break
		}
		if len(w.events) >= limit {
			// A long backlog: take what was read, and the progress and head directly.
			w.truncated = true
			break
		}
		q.Continuation = p.Continuation
	}
	if w.truncated {
		if w.progress, err = st.get(ctx, w.pk, progressRowKey); err == nil {
			w.hasProg = true
		} else if !errors.Is(err, table.ErrNotFound) {
			return err
		}
		if w.head, err = st.get(ctx, w.pk, headRowKey); err == nil {
			w.hasHead = true
		} else if !errors.Is(err, table.ErrNotFound) {
			return err
		}
	}
	if w.hasHead {
		h, err := decodeHead(w.head)
		if err != nil {
			return err
		}
		w.headVer, w.removedBefore = h.version, h.meta.removedBefore
	}
	if w.hasProg {
		g, err := decodeProgress(w.pk, w.progress)
		if err != nil {
			return err
		}
		w.dispatched = g.dispatched
	}
	return nil
}

// lostAfter is how many steps in a row, each on a view of the feed read afresh, must find a
// stream's next rows gone below its removal floor before the dispatcher calls them lost. One such
// step can be the work of a scavenger that ran after another dispatcher's write (during a lease
// handover); two in a row cannot, since the scavenger removes only what the feed holds.
const lostAfter = 2

// checkGone counts the steps in a row that found w's next rows scavenged though the feed does
// not hold them, and reports them corrupt — lost before they were dispatched, which no retry
// mends — once lostAfter steps on fresh views have, and a look at the feed made after the
// stream's read still finds them not dispatched (the view is read before the stream: another
// dispatcher may write them, and a scavenger remove them, in between, in every step).
func (d *Dispatcher) checkGone(ctx context.Context, w *streamWork, fresh bool) error {
	if !w.stale {
		delete(d.gone, w.pk)
		return nil
	}
	if !fresh {
		return nil
	}
	if d.gone == nil || len(d.gone) > 1024 {
		d.gone = make(map[string]int) // bounded: a stream left out keeps its count at most this long
	}
	d.gone[w.pk]++
	if d.gone[w.pk] < lostAfter {
		return nil
	}
	delete(d.gone, w.pk)
	if v, err := d.s.dispatchedVersion(ctx, w.pk); err != nil || v > w.dispatched {
		return err // dispatched after all (or the look failed): the next step reads anew
	}
	return corrupt(w.pk, eventKey(w.dispatched+1), "event rows from version %d (below the removal floor %d) are gone, but the feed does not hold them: they were lost before they were dispatched", w.dispatched+1, w.removedBefore)
}

// plan decides what of a stream goes into the feed now, and whether its markers can go. A
// stream whose announced version stays ahead of its head for FenceAfter gets its head fenced.
func (d *Dispatcher) plan(ctx context.Context, w *streamWork, stats *DispatchStats) error {
	if m := d.st.markers[w.pk]; m != nil {
		w.dispatched = max(w.dispatched, m.version)
	}
	limit := w.headVer
	next := w.dispatched + 1
	if next < w.removedBefore && next <= limit && w.readFrom <= next && !startsAt(w.events, next) {
		// Rows the scavenger removed, which it does only once the feed holds them: what this
		// dispatcher knows of the feed is older than that. Leave the stream for a step that
		// has read the feed's page again.
		w.truncated, w.stale = true, true
		return nil
	}
	for _, row := range w.events {
		v, ok := parseEventKey(row.RowKey)
		if !ok {
			return corrupt(w.pk, row.RowKey, "not an event row")
		}
		if v < next || v > limit {
			continue
		}
		if v != next {
			// The read began after the first undispatched event: markers never allow that, but a
			// lost marker would. Read again from where the feed stands.
			if w.reread {
				return corrupt(w.pk, eventKey(next), "event version %d is missing", next)
			}
			return d.rereadFrom(ctx, w, next, stats)
		}
		w.pending = append(w.pending, row)
		next++
	}
	if len(w.pending) == 0 && !w.reread && (w.truncated || next-1 < limit) {
		// Nothing to write, yet the head is past what the feed holds. Either the read began so far
		// behind that its page held only dispatched events (a stale marker's first version, below
		// the progress row), or it began past the head (what this dispatcher knows of the feed's
		// page is older than another dispatcher's writes, or a marker was lost): read again from
		// where the feed stands. A write of what that finds is fenced by the page header, so an
		// out-of-date view fails there and is read anew.
		return d.rereadFrom(ctx, w, next, stats)
	}
	if next-1 < limit {
		w.truncated = true // the read stopped short of the head
	}
	if w.truncated {
		return nil // more to do next step; the markers stay
	}
	// A marker at or below the head announced an append that has landed (and is written now) or
	// can no longer land (the head moved past the version it was prepared on): it may go.
	for _, m := range w.markers {
		if m.announced <= w.headVer {
			w.resolve = append(w.resolve, m)
		}
	}
	if w.headVer >= w.amax && !w.agedEarly {
		delete(d.waits, w.pk)
		return nil
	}
	// An announced append has not landed (yet). Wait, then fence the head. An early marker seen
	// for FenceAfter without its commit row has been waited for already.
	if !w.agedEarly {
		now := d.o.Clock.Now()
		wi, ok := d.waits[w.pk]
		if !ok || wi.announced != w.amax {
			d.waits[w.pk] = waitInfo{shard: w.shard, announced: w.amax, since: now}
			return nil
		}
		if now.Sub(wi.since) < d.o.FenceAfter {
			return nil
		}
	}
	fenced, err := d.fence(ctx, w)
	if err != nil {
		return err
	}
	if fenced {
		stats.Fenced++
		delete(d.waits, w.pk)
		// Every marker may go now — except an early one seen for less than FenceAfter without
		// its commit row: an append relying on it may yet read the fenced head (early.go).
		w.resolve = w.resolve[:0]
		for _, m := range w.markers {
			if !m.early() || m.landed || m.aged {
				w.resolve = append(w.resolve, m)
			}
		}
	}
	return nil
}

// startsAt reports whether event rows (in version order) hold version v.
func startsAt(rows []table.Entity, v int64) bool {
	for _, row := range rows {
		if x, ok := parseEventKey(row.RowKey); ok && x >= v {
			return x == v
		}
	}
	return false
}

// rereadFrom reads the stream again from version next and plans it anew (once per step).
func (d *Dispatcher) rereadFrom(ctx context.Context, w *streamWork, next int64, stats *DispatchStats) error {
	w.events, w.pending, w.truncated, w.reread = nil, nil, false, true
	// What the first read found of the progress and the head is read again too: a read that
	// stopped at the first page of events must not be taken for one that reached the head.
	w.progress, w.hasProg, w.head, w.hasHead, w.headVer = table.Entity{}, false, table.Entity{}, false, 0
	if err := d.readStream(ctx, w, next); err != nil {
		return err
	}
	return d.plan(ctx, w, stats)
}

// fence changes the head's ETag (or creates a version-0 head) so that no append prepared on the
// head as read can land any more. It reports false when the head had already moved.
func (d *Dispatcher) fence(ctx context.Context, w *streamWork) (bool, error) {
	op := table.Op{Kind: table.Insert, Entity: headEntity(w.pk, 0, headMeta{})}
	if w.hasHead {
		op = table.Op{Kind: table.Replace, Entity: table.Entity{PartitionKey: w.pk, RowKey: headRowKey, Properties: w.head.Properties}, IfMatch: w.head.ETag}
	}
	_, err := d.s.streams.submitOnce(ctx, w.pk, []table.Op{op})
	var be *table.BatchError
	switch {
	case err == nil:
		d.s.heads.forget(w.pk)
		return true, nil
	case errors.As(err, &be):
		return false, nil
	default:
		return false, err
	}
}

// feedBatch is a feed write being assembled.
type feedBatch struct {
	ops     []table.Op
	bytes   int
	markers map[string]int  // stream pk → index of its marker op
	first   int64           // first position of the batch
	next    int64           // position after the batch
	lags    []time.Duration // of its events that have a recorded time: counted once it is written
}

// writeFeed writes the pending events of every stream into the feed, in batches that each hold
// the page header (the fence), the events and one marker per stream.
func (d *Dispatcher) writeFeed(ctx context.Context, work []*streamWork, stats *DispatchStats) error {
	now := d.s.now().UTC()
	var b *feedBatch
	flush := func() error {
		if b == nil || b.next == b.first {
			return nil
		}
		err := d.submitFeed(ctx, b)
		if err == nil {
			// Counted once written: a batch that failed wrote nothing (or the next step finds
			// out what it wrote, and does not write it again).
			stats.Batches++
			stats.Events += int(b.next - b.first)
			for _, lag := range b.lags {
				stats.MaxLag = max(stats.MaxLag, lag)
			}
			stats.Lags = append(stats.Lags, b.lags...)
		}
		b = nil
		return err
	}
	for _, w := range work {
		for _, row := range w.pending {
			if d.st.next > MaxPosition || (b != nil && b.next > MaxPosition) { // never in practice: see MaxPosition
				if err := flush(); err != nil {
					return err
				}
				return fmt.Errorf("estuite: the feed is full: it holds MaxPosition (%d) events", MaxPosition)
			}
			if d.st.next > pageLast(d.st.page) {
				if err := flush(); err != nil {
					return err
				}
				if err := d.rollover(ctx); err != nil {
					return err
				}
			}
			if b == nil {
				b = d.newFeedBatch()
			}
			version, _ := parseEventKey(row.RowKey)
			entity := feedEventEntity(d.shard, b.next, w.stream, row, now)
			size := table.BatchSize([]table.Op{{Kind: table.Insert, Entity: entity}})
			_, hasMarker := b.markers[w.pk]
			extra := 1
			if !hasMarker {
				extra = 2
			}
			if len(b.ops)+extra > table.MaxBatchOps || b.bytes+size+2*table.BatchOpOverhead > table.MaxBatchBytes {
				if err := flush(); err != nil {
					return err
				}
				b = d.newFeedBatch()
				entity = feedEventEntity(d.shard, b.next, w.stream, row, now)
				hasMarker = false
			}
			b.ops = append(b.ops, table.Op{Kind: table.Insert, Entity: entity})
			b.bytes += size
			marker := table.Entity{PartitionKey: d.page(d.st.page), RowKey: feedMarkerKey(w.pk), Properties: map[string]any{
				propStream: w.stream, propVersion: version, propPosition: b.next,
			}}
			if hasMarker {
				b.ops[b.markers[w.pk]].Entity = marker
			} else {
				b.markers[w.pk] = len(b.ops)
				b.ops = append(b.ops, table.Op{Kind: table.Upsert, Entity: marker})
				b.bytes += table.BatchSize([]table.Op{{Kind: table.Upsert, Entity: marker}})
			}
			if rec, ok := row.Properties[propRecorded].(time.Time); ok {
				b.lags = append(b.lags, now.Sub(rec))
			}
			b.next++
			if b.next > pageLast(d.st.page) {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	return flush()
}

func (d *Dispatcher) newFeedBatch() *feedBatch {
	b := &feedBatch{ops: []table.Op{{}}, markers: make(map[string]int), first: d.st.next, next: d.st.next}
	b.bytes = table.BatchOpOverhead * 2
	return b
}

// submitFeed writes a batch under the page header's ETag, and advances the state on success.
func (d *Dispatcher) submitFeed(ctx context.Context, b *feedBatch) error {
	pk := d.page(d.st.page)
	header := table.Entity{PartitionKey: pk, RowKey: feedHeaderRowKey, Properties: map[string]any{
		propNext: b.next, propPage: d.st.page, propFormat: int64(FormatVersion),
	}}
	if d.st.headerETag == "" {
		b.ops[0] = table.Op{Kind: table.Insert, Entity: header}
	} else {
		b.ops[0] = table.Op{Kind: table.Replace, Entity: header, IfMatch: d.st.headerETag}
	}
	created := d.st.headerETag == ""
	etags, err := d.s.events.submitRefused(ctx, pk, b.ops)
	if err != nil {
		return fmt.Errorf("estuite: feed write at position %d: %w", b.first, err)
	}
	d.st.headerETag = etags[0]
	d.st.next = b.next
	for spk, i := range b.markers {
		e := b.ops[i].Entity
		d.st.markers[spk] = &pageMarker{stream: e.Properties[propStream].(string), version: e.Properties[propVersion].(int64)}
	}
	d.s.dispatchWatch.written(b.ops)
	d.state().feedHead.publish(b.next - 1)
	if created && d.st.page > 0 {
		// Best effort: a hint for readers and later dispatchers where the feed stands.
		hint := table.Entity{PartitionKey: metaPartition, RowKey: feedHintRowOf(d.shard), Properties: map[string]any{propPage: d.st.page}}
		_, _ = d.s.events.submitOnce(ctx, metaPartition, []table.Op{{Kind: table.Upsert, Entity: hint}})
	}
	return nil
}

// rollover leaves a full page: it makes sure every stream's progress row reaches its marker in
// the page (after that, the markers are no longer needed), then starts the next page.
func (d *Dispatcher) rollover(ctx context.Context) error {
	var todo []*pageMarker
	var pks []string
	for _, pk := range slices.Sorted(maps.Keys(d.st.markers)) { // sorted: replayable schedules
		if m := d.st.markers[pk]; !m.confirmed {
			todo = append(todo, m)
			pks = append(pks, pk)
		}
	}
	errs := make([]error, len(todo))
	sem := make(chan struct{}, d.o.Workers)
	var wg sync.WaitGroup
	for i := range todo {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = d.confirmProgress(ctx, pks[i], todo[i].version, d.st.page)
			if errs[i] == nil {
				todo[i].confirmed = true
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	d.st = &feedState{page: d.st.page + 1, next: d.st.next, markers: make(map[string]*pageMarker)}
	return nil
}

// confirmProgress raises a stream's progress row to at least version, and adds page (the page
// being left, whose marker of the stream is at version; -1: none) to the row's page index. The
// row only ever grows: it is written under the ETag it was read with.
func (d *Dispatcher) confirmProgress(ctx context.Context, pk string, version, page int64) error {
	st := d.s.streams
	for attempt := 0; ; attempt++ {
		op := table.Op{Kind: table.Insert}
		var g progressRow
		row, err := st.get(ctx, pk, progressRowKey)
		switch {
		case err == nil:
			if g, err = decodeProgress(pk, row); err != nil {
				return err
			}
			if g.dispatched >= version {
				return nil
			}
			op = table.Op{Kind: table.Replace, IfMatch: row.ETag}
		case !errors.Is(err, table.ErrNotFound):
			return err
		}
		op.Entity = table.Entity{PartitionKey: pk, RowKey: progressRowKey, Properties: map[string]any{
			propDispatched: version, propUpdated: d.s.now().UTC(),
		}}
		if page >= 0 {
			g.index.add(g.dispatched, page, version)
		}
		if len(g.index.entries) > 0 { // kept as it was when this is not a page being left
			op.Entity.Properties[propPages] = g.index.encode()
		}
		_, err = st.submitOnce(ctx, pk, []table.Op{op})
		var be *table.BatchError
		if err == nil || (!errors.As(err, &be) && !errors.Is(err, table.ErrTransient)) || attempt >= st.retry.MaxAttempts {
			return err
		}
		// Someone else moved the row (or the write may have failed transiently): look again.
	}
}

// resolve deletes the dirty markers of the streams whose announced appends are all in the feed,
// each under the ETag it was read with, so that a marker written again meanwhile stays.
func (d *Dispatcher) resolve(ctx context.Context, work []*streamWork, stats *DispatchStats) {
	byShard := make(map[int][]dirtyMarker)
	for _, w := range work {
		for _, m := range w.resolve {
			byShard[m.shard] = append(byShard[m.shard], m)
		}
	}
	for _, shard := range slices.Sorted(maps.Keys(byShard)) {
		markers := byShard[shard]
		// By stream and version, then ETag: an order that does not depend on the attempts' random
		// IDs, so that a seeded simulation replays exactly.
		slices.SortFunc(markers, func(a, b dirtyMarker) int {
			return cmp.Or(cmp.Compare(a.pk, b.pk), cmp.Compare(a.announced, b.announced), cmp.Compare(a.etag, b.etag))
		})
		for chunk := range slices.Chunk(markers, table.MaxBatchOps) {
			ops := make([]table.Op, len(chunk))
			for i, m := range chunk {
				ops[i] = table.Op{Kind: table.Delete, Entity: table.Entity{PartitionKey: dirtyPartition(shard), RowKey: m.rowKey}, IfMatch: m.etag}
			}
			if _, err := d.s.events.submitOnce(ctx, dirtyPartition(shard), ops); err == nil {
				stats.Resolved += len(ops)
				continue
			}
			// One of them changed or went: delete one by one; a marker that changed stays.
			for _, op := range ops {
				if _, err := d.s.events.submitOnce(ctx, dirtyPartition(shard), []table.Op{op}); err == nil {
					stats.Resolved++
				}
			}
		}
	}
}
