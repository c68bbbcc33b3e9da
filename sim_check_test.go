package estuite_test

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/simsched"
	"github.com/estuite/estuite/table"
)

// The checks of the simulation: what the writers were told (record), what holds while the
// processes run (simMonitor, called by the scheduler whenever every actor is settled), and what
// holds at the end (simCheck).

// commitState is what is known of a commit from the answers its writer got.
type commitState int

const (
	absent  commitState = iota // certainly not stored (never landed, or refused since)
	maybe                      // an attempt failed ambiguously: stored once or not at all
	present                    // stored, at the versions reported
)

// simCommit is one append a writer made (and perhaps retried) under one commit ID.
type simCommit struct {
	id          string
	stream      string
	expected    estuite.ExpectedVersion
	events      []estuite.EventData
	state       commitState
	first, last int64
	attempts    []string // what each attempt was answered, for reports
	snapshot    *estuite.Snapshot
	snapSaved   bool // an answer reported its snapshot saved (at last)
}

// simWrongVersion is one WrongExpectedVersionError a writer got, with the steps its call spanned.
type simWrongVersion struct {
	commit     string
	stream     string
	expected   estuite.ExpectedVersion
	actual     int64
	from, to   int // scheduler steps when the call began and ended
	trueExpect bool
}

// simInstance is one run of a durable subscription (one process generation).
type simInstance struct {
	name, proc string
	handled    []int64
}

// simHandled is what every instance of one durable subscription handled.
type simHandled struct {
	seen map[int64]bool
	upTo int64 // every position 1..upTo was handled
}

// simWorld is what the simulated processes report to the checks.
type simWorld struct {
	sched    *simsched.Scheduler
	mon      *simMonitor
	mu       sync.Mutex
	commits  map[string]*simCommit
	wrong    []simWrongVersion
	subs     map[string][]*simInstance
	done     map[string]*simHandled
	problems []string
	stats    struct{ ok, dup, wev, unavailable, crashed, redelivered, snapSaved, snapshots, withdrawn, refusedDeleted, redacted int }
	erase    *simErasure    // nil: the seed runs no erasure (sim_erase_test.go)
	del      *simDeletion   // nil: the seed deletes no stream (sim_delete_test.go)
	group    *simGroupWorld // nil: the seed runs no consumer group (sim_group_test.go)
}

// noteWithdrawn counts a command that announced its append and then withdrew it.
func (w *simWorld) noteWithdrawn() {
	w.mu.Lock()
	w.stats.withdrawn++
	w.mu.Unlock()
}

func (w *simWorld) problem(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.problems = append(w.problems, fmt.Sprintf(format, args...))
}

// trueHead is a stream's version in storage now, read behind the gate (as a client of another
// server would have read it a moment ago).
func (w *simWorld) trueHead(stream string) int64 {
	row, err := w.mon.streamsT.Get(context.Background(), stream, "H")
	if err != nil {
		return 0
	}
	v, _ := row.Properties["Version"].(int64)
	return v
}

func (w *simWorld) noteWrongVersion(c *simCommit, exp estuite.ExpectedVersion, actual int64, from, to int, trueExpect bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.wrong = append(w.wrong, simWrongVersion{commit: c.id, stream: c.stream, expected: exp, actual: actual, from: from, to: to, trueExpect: trueExpect})
}

func (w *simWorld) newInstance(name, proc string) *simInstance {
	w.mu.Lock()
	defer w.mu.Unlock()
	inst := &simInstance{name: name, proc: proc}
	w.subs[name] = append(w.subs[name], inst)
	return inst
}

// handled records that a subscription instance's handler finished position pos. Within one
// instance the positions must follow each other without a gap (the subscription has no filter);
// a position handled by an earlier instance too is a redelivery, which at-least-once allows.
func (w *simWorld) handled(inst *simInstance, pos int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := len(inst.handled); n > 0 && pos != inst.handled[n-1]+1 {
		w.problems = append(w.problems, fmt.Sprintf("subscription %s in %s handled position %d after %d: a gap or a repeat within one run", inst.name, inst.proc, pos, inst.handled[n-1]))
	}
	h := w.done[inst.name]
	if h == nil {
		h = &simHandled{seen: make(map[int64]bool)}
		w.done[inst.name] = h
	}
	if h.seen[pos] {
		w.stats.redelivered++
	}
	h.seen[pos] = true
	for h.seen[h.upTo+1] {
		h.upTo++
	}
	inst.handled = append(inst.handled, pos)
}

// handledTotal counts the positions handled by every subscription instance.
func (w *simWorld) handledTotal() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, insts := range w.subs {
		for _, inst := range insts {
			n += len(inst.handled)
		}
	}
	return n
}

// handledUpTo is the highest position p such that every position 1..p of the subscription has
// been handled to the end by some instance.
func (w *simWorld) handledUpTo(name string) int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if h := w.done[name]; h != nil {
		return h.upTo
	}
	return 0
}

// record judges the answer to one attempt of commit c and updates what is known of it.
func (w *simWorld) record(c *simCommit, exp estuite.ExpectedVersion, res estuite.AppendResult, err error, crashed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	bad := func(format string, args ...any) {
		w.problems = append(w.problems, fmt.Sprintf("commit %s to %s (expected %v, attempt %d, earlier: %v): ", c.id, c.stream, exp, len(c.attempts)+1, c.attempts)+fmt.Sprintf(format, args...))
	}
	var wev *estuite.WrongExpectedVersionError
	switch {
	case err == nil:
		if res.LastVersion-res.FirstVersion+1 != int64(len(c.events)) || res.FirstVersion < 1 || res.CommitID != c.id || res.Stream != c.stream {
			bad("success with a malformed result %+v", res)
		}
		switch {
		case c.state == present && !res.Duplicate:
			bad("reported as new (versions %d-%d), but it had already been committed at %d-%d", res.FirstVersion, res.LastVersion, c.first, c.last)
		case c.state == present && (res.FirstVersion != c.first || res.LastVersion != c.last):
			bad("duplicate reports versions %d-%d, but it was committed at %d-%d", res.FirstVersion, res.LastVersion, c.first, c.last)
		case c.state == absent && res.Duplicate:
			bad("reported as a duplicate (versions %d-%d), but no earlier attempt can have landed", res.FirstVersion, res.LastVersion)
		}
		if res.SnapshotSaved && (res.Duplicate || c.snapshot == nil) {
			bad("reports a snapshot saved: %+v", res)
		}
		if c.state != present {
			c.first, c.last = res.FirstVersion, res.LastVersion
		}
		c.snapSaved = c.snapSaved || res.SnapshotSaved
		if res.SnapshotSaved {
			w.stats.snapSaved++
		}
		c.state = present
		if res.Duplicate {
			w.stats.dup++
			c.attempts = append(c.attempts, fmt.Sprintf("duplicate %d-%d", res.FirstVersion, res.LastVersion))
		} else {
			w.stats.ok++
			c.attempts = append(c.attempts, fmt.Sprintf("ok %d-%d", res.FirstVersion, res.LastVersion))
		}
	case errors.As(err, &wev):
		w.stats.wev++
		if c.state == present {
			bad("a retry of a committed append got %v instead of the original result", err)
		}
		if wev.Actual < 0 || wev.Stream != c.stream {
			bad("malformed %v", err)
		}
		// The store looked for the commit and did not find it. A ghost of an earlier attempt
		// may still land, though: then the commit is stored after all.
		if c.state == absent {
			c.attempts = append(c.attempts, fmt.Sprintf("wrong expected version (actual %d)", wev.Actual))
		} else {
			c.attempts = append(c.attempts, fmt.Sprintf("wrong expected version (actual %d), earlier attempts in doubt", wev.Actual))
		}
	case errors.Is(err, estuite.ErrStreamDeleted):
		// Hard-deleted (sim_delete_test.go): refused after the store looked for the commit and did
		// not find it (a retry of a commit stored before the delete is answered as its duplicate).
		// A ghost of an earlier attempt cannot land after the tombstone: its head is fenced.
		w.stats.refusedDeleted++
		var de *estuite.StreamDeletedError
		if c.state == present {
			bad("a retry of a committed append got %v instead of the original result", err)
		}
		if !errors.As(err, &de) || de.Stream != c.stream {
			bad("malformed %v", err)
		}
		c.attempts = append(c.attempts, "stream deleted")
	case errors.Is(err, estuite.ErrSubjectForgotten):
		// Refused before anything was written, its commit row not found (a retry of a stored
		// commit is answered as its duplicate): as for a wrong version, a ghost may still land.
		if c.state == present {
			bad("a retry of a committed append got %v instead of the original result", err)
		}
		c.attempts = append(c.attempts, "subject forgotten")
	case errors.Is(err, estuite.ErrUnavailable) || (crashed && errors.Is(err, context.Canceled)):
		if crashed {
			w.stats.crashed++
		} else {
			w.stats.unavailable++
		}
		if c.state == absent {
			c.state = maybe
		}
		c.attempts = append(c.attempts, "error: "+err.Error())
	default:
		bad("unexpected error (crashed=%v): %v", crashed, err)
		if c.state == absent {
			c.state = maybe
		}
		c.attempts = append(c.attempts, "unexpected error: "+err.Error())
	}
}

// simMonitor checks, whenever every actor is settled, what must hold at every instant. It reads
// the storage behind the gate (nothing else runs meanwhile), re-reading only the partitions
// written since it last looked.
type simMonitor struct {
	world            *simWorld
	streamsT, events table.Table
	streams          []string
	shardOf          map[string]int
	base, disruption time.Duration // liveness: see simLiveness
	takeover         time.Duration // how long the others take to find an abandoned lease
	handover         time.Duration // what a change of lease holder may cost
	lease            time.Duration
	writersLive      func() bool

	heads    map[string]int64
	history  map[string][]simHeadAt // each stream's head versions, by step
	landed   map[string][]time.Time // stream → virtual time version v+1 was first seen stored
	feedNext map[int]int64          // feed shard → the next feed position to read
	feedHeld map[string]int64       // the highest version of each stream in the feed
	markers  map[int][]simMarker    // shard → live dirty markers
	reported map[string]bool        // one report per kind and stream
	changed  map[string]bool        // streams whose head, feed or markers changed since the last look
	maxWait  time.Duration          // the longest a landed event waited for the feed
	maxCalm  time.Duration          // the longest wait less the disruptions' and the backlog's allowance
	perEvent time.Duration          // liveness: what each event of the backlog may add to a wait
	peak     map[string]simPeak     // stream → the largest backlog since its oldest waiting event landed
	maxPeak  int64                  // the largest backlog seen
	owner    string                 // shard 0's lease row's owner
	owners   map[string]string      // every shard's: lease row → owner
	ownerTag string                 // the lease row's ETag
	orphaned bool                   // the lease holder crashed, and no one has written the lease since
	disrupts []simDisruption        // the lease holder crashed or paused, or the lease changed hands
	checks   int
}

// simPeak is the largest backlog seen while a stream's feed stood at version held.
type simPeak struct{ held, backlog int64 }

// simDisruption is a disruption of the lease holder, and how much longer it may make events wait.
type simDisruption struct {
	at    time.Time
	extra time.Duration
}

// simHeadAt is a state of a stream's head row (its version and deletion state) and the step at
// which the monitor first saw it.
type simHeadAt struct {
	step          int
	version       int64
	deletedBefore int64 // the head's DeletedBefore (0: none)
	tomb          bool  // the head's Tombstone
}

func (h simHeadAt) String() string {
	s := fmt.Sprintf("step %d: version %d", h.step, h.version)
	switch {
	case h.tomb:
		s += " (hard-deleted)"
	case h.softDeleted():
		s += " (soft-deleted)"
	case h.deletedBefore > 0:
		s += fmt.Sprintf(" (deleted before %d)", h.deletedBefore)
	}
	return s
}

func (h simHeadAt) sameState(o simHeadAt) bool {
	return h.version == o.version && h.deletedBefore == o.deletedBefore && h.tomb == o.tomb
}

// softDeleted reports whether the head is of a soft-deleted stream (deleted, not written since).
func (h simHeadAt) softDeleted() bool { return h.deletedBefore > h.version }

// checkLifecycle checks a new head state of a stream against the one before: the deletion state
// only ever grows, a delete marks exactly the versions the stream had, and a tombstone is for good.
func (m *simMonitor) checkLifecycle(stream string, history []simHeadAt, now simHeadAt) {
	if now.deletedBefore > now.version+1 {
		m.problem("lifecycle", stream, "step %d: %s head at version %d with DeletedBefore %d: a delete of versions the stream never had", now.step, stream, now.version, now.deletedBefore)
	}
	if len(history) == 0 {
		return
	}
	old := history[len(history)-1]
	switch {
	case now.deletedBefore < old.deletedBefore:
		m.problem("lifecycle", stream, "step %d: %s DeletedBefore went back from %d to %d (head version %d): deleted events are visible again", now.step, stream, old.deletedBefore, now.deletedBefore, now.version)
	case old.tomb && !now.tomb:
		m.problem("lifecycle", stream, "step %d: %s lost its tombstone (head version %d): a hard-deleted stream came back", now.step, stream, now.version)
	case old.tomb && now.version != old.version:
		m.problem("lifecycle", stream, "step %d: %s went from version %d to %d after its hard delete", now.step, stream, old.version, now.version)
	}
}

type simMarker struct {
	stream           string
	first, announced int64
	commitID         string // an early marker's (Store.Announce)
}

func newSimMonitor(w *simWorld, backend table.Backend, streams []string, shardOf func(string) int) (*simMonitor, error) {
	ctx := context.Background()
	st, err := backend.OpenTable(ctx, estuite.DefaultTablePrefix+"streams")
	if err != nil {
		return nil, err
	}
	ev, err := backend.OpenTable(ctx, estuite.DefaultTablePrefix+"events")
	if err != nil {
		return nil, err
	}
	m := &simMonitor{world: w, streamsT: st, events: ev, streams: streams, shardOf: make(map[string]int),
		heads: make(map[string]int64), history: make(map[string][]simHeadAt), landed: make(map[string][]time.Time),
		feedNext: make(map[int]int64), owners: make(map[string]string), feedHeld: make(map[string]int64), markers: make(map[int][]simMarker), reported: make(map[string]bool), changed: make(map[string]bool), peak: make(map[string]simPeak)}
	for _, s := range streams {
		m.shardOf[s] = shardOf(s)
	}
	return m, nil
}

func (m *simMonitor) problem(kind, stream, format string, args ...any) {
	if m.reported[kind+"/"+stream] {
		return
	}
	m.reported[kind+"/"+stream] = true
	msg := fmt.Sprintf(format, args...)
	m.world.problem("%s", msg)
	m.world.sched.Note("CHECK FAILED: %s", msg)
}

// check is the scheduler's Check hook.
func (m *simMonitor) check(st simsched.Settled) {
	ctx := context.Background()
	m.checks++
	streamsName, eventsName := estuite.DefaultTablePrefix+"streams", estuite.DefaultTablePrefix+"events"
	for _, wr := range st.Wrote {
		switch {
		case wr.Table == streamsName:
			if _, ok := m.shardOf[wr.PartitionKey]; !ok {
				continue
			}
			row, err := m.streamsT.Get(ctx, wr.PartitionKey, "H")
			now := simHeadAt{step: st.Step}
			if err == nil {
				now.version, _ = row.Properties["Version"].(int64)
				now.deletedBefore, _ = row.Properties["DeletedBefore"].(int64)
				now.tomb, _ = row.Properties["Tombstone"].(bool)
			}
			v := now.version
			if h := m.history[wr.PartitionKey]; len(h) == 0 && now != (simHeadAt{step: st.Step}) || len(h) > 0 && !h[len(h)-1].sameState(now) {
				m.history[wr.PartitionKey] = append(h, now)
				m.checkLifecycle(wr.PartitionKey, h, now)
			}
			if old := m.heads[wr.PartitionKey]; v != old {
				m.changed[wr.PartitionKey] = true
				m.heads[wr.PartitionKey] = v
				for int64(len(m.landed[wr.PartitionKey])) < v {
					m.landed[wr.PartitionKey] = append(m.landed[wr.PartitionKey], st.Now)
				}
				if v < old {
					m.problem("head", wr.PartitionKey, "%s: the head went back from version %d to %d", wr.PartitionKey, old, v)
				}
			}
		case wr.Table == eventsName && strings.HasPrefix(wr.PartitionKey, "dirty"):
			var shard int
			fmt.Sscanf(wr.PartitionKey, "dirty%02d", &shard)
			m.markers[shard] = m.readMarkers(ctx, wr.PartitionKey)
			for _, s := range m.streams {
				if m.shardOf[s] == shard {
					m.changed[s] = true
				}
			}
		case wr.Table == eventsName && strings.HasPrefix(wr.PartitionKey, "feed"):
			var shard int
			fmt.Sscanf(wr.PartitionKey, "feed%02d-", &shard)
			m.readFeed(ctx, shard)
		case wr.Table == eventsName && strings.HasPrefix(wr.PartitionKey, "checkpoint"):
			m.checkCheckpoints(ctx, wr.PartitionKey)
		case wr.Table == eventsName && wr.PartitionKey == "lease":
			if row, err := m.events.Get(ctx, "lease", "dispatcher"); err == nil {
				if row.ETag != m.ownerTag {
					m.ownerTag, m.orphaned = row.ETag, false
				}
				if o, _ := row.Properties["Owner"].(string); o != m.owner {
					if m.owner != "" {
						m.disrupt(st.Now, m.handover, "the lease went from "+m.owner+" to "+o)
					}
					m.owner = o
				}
			}
			// The other shards' leases (a store with several feed shards): a change of holder
			// is a disruption of that shard's dispatch, allowed for everywhere.
			if p, err := m.events.Query(ctx, table.Query{PartitionKey: "lease", From: "dispatcher0", To: "dispatcher:"}); err == nil {
				for _, row := range p.Entities {
					o, _ := row.Properties["Owner"].(string)
					if old, ok := m.owners[row.RowKey]; ok && old != o {
						m.disrupt(st.Now, m.handover, "the lease of "+row.RowKey+" went from "+old+" to "+o)
					}
					m.owners[row.RowKey] = o
				}
			}
		}
	}
	writing := m.writersLive()
	defer clear(m.changed)
	// The backlog: events stored and not in the feed yet. A stream's wait may grow with the
	// largest backlog since its oldest waiting event landed: when writers outpace the feed (every
	// storage call is a turn of one shared gate), the dispatcher works through the backlog in
	// turns across the streams, not in the order events landed.
	var backlog int64
	for _, s := range m.streams {
		backlog += max(0, m.heads[s]-m.feedHeld[s])
	}
	m.maxPeak = max(m.maxPeak, backlog)
	for _, s := range m.streams {
		held, head := m.feedHeld[s], m.heads[s]
		if held >= head {
			delete(m.peak, s)
		} else if pk, ok := m.peak[s]; !ok || pk.held != held {
			m.peak[s] = simPeak{held: held, backlog: backlog}
		} else {
			m.peak[s] = simPeak{held: held, backlog: max(pk.backlog, backlog)}
		}
		// The write-ahead invariant: every stored version the feed does not hold yet is
		// announced by a live dirty marker, so that a dispatcher can find it.
		if !m.changed[s] {
			// nothing of the stream changed since the last look
		} else if v := m.uncovered(s, held, head); v > 0 {
			m.problem("write-ahead", s, "write-ahead invariant broken at step %d: %s version %d is stored (head %d) but the feed holds the stream only up to %d and no dirty marker covers it (markers of shard %d: %v)",
				st.Step, s, v, head, held, m.shardOf[s], m.markers[m.shardOf[s]])
		}
		// Liveness: while writers run, a stored event reaches the feed within the allowance.
		if held < head && int(held) < len(m.landed[s]) {
			since := m.landed[s][held]
			wait := st.Now.Sub(since)
			if writing {
				n, extra := m.disruptedSince(since.Add(-m.disruption))
				queued := time.Duration(m.peak[s].backlog) * m.perEvent
				allowed := m.base + extra + queued
				m.maxWait = max(m.maxWait, wait)
				m.maxCalm = max(m.maxCalm, wait-extra-queued)
				if wait > allowed {
					m.problem("liveness", s, "liveness: %s version %d has been stored for %v (since %.3fs) and is still not in the feed at step %d (allowed %v: %v, %v for a backlog of up to %d events, and %v for the %d disruptions of the lease since %.3fs; the feed holds the stream up to %d, head %d)",
						s, held+1, wait.Round(time.Millisecond), since.Sub(simStart).Seconds(), st.Step, allowed.Round(time.Millisecond), m.base.Round(time.Millisecond), queued.Round(time.Millisecond), m.peak[s].backlog, extra.Round(time.Millisecond), n, since.Add(-m.disruption).Sub(simStart).Seconds(), held, head)
				}
			}
		}
	}
}

// disrupt records that the lease holder crashed or paused, or that the lease changed hands, which
// may make events wait extra longer.
func (m *simMonitor) disrupt(at time.Time, extra time.Duration, why string) {
	m.disrupts = append(m.disrupts, simDisruption{at: at, extra: extra})
	m.world.sched.Note("lease disruption: %s (allows %v more)", why, extra.Round(time.Millisecond))
}

// disruptedSince counts the disruptions at or after t, and adds up their extra time.
func (m *simMonitor) disruptedSince(t time.Time) (n int, extra time.Duration) {
	i, _ := slices.BinarySearchFunc(m.disrupts, t, func(a simDisruption, t time.Time) int { return a.at.Compare(t) })
	for _, d := range m.disrupts[i:] {
		extra += d.extra
	}
	return len(m.disrupts) - i, extra
}

func (m *simMonitor) uncovered(stream string, held, head int64) int64 {
	if held >= head {
		return 0
	}
	var iv [][2]int64
	for _, mk := range m.markers[m.shardOf[stream]] {
		if mk.stream != stream {
			continue
		}
		first, last := mk.first, mk.announced
		if mk.commitID != "" {
			// An early marker covers the versions of its commit row, once that exists; before,
			// it covers nothing stored.
			sum := sha256.Sum256([]byte(mk.commitID))
			row, err := m.streamsT.Get(context.Background(), stream, "C"+hex.EncodeToString(sum[:]))
			if err != nil {
				continue
			}
			first, _ = row.Properties["First"].(int64)
			last, _ = row.Properties["Last"].(int64)
		}
		if last > held {
			iv = append(iv, [2]int64{first, last})
		}
	}
	slices.SortFunc(iv, func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
	v := held + 1
	for _, x := range iv {
		if x[0] > v {
			break
		}
		v = max(v, x[1]+1)
		if v > head {
			return 0
		}
	}
	return v
}

func (m *simMonitor) readMarkers(ctx context.Context, pk string) []simMarker {
	var out []simMarker
	q := table.Query{PartitionKey: pk}
	for {
		p, err := m.events.Query(ctx, q)
		if err != nil {
			m.world.problem("monitor: reading %s: %v", pk, err)
			return out
		}
		for _, row := range p.Entities {
			s, _ := row.Properties["Stream"].(string)
			f, _ := row.Properties["First"].(int64)
			a, _ := row.Properties["Announced"].(int64)
			c, _ := row.Properties["CommitId"].(string)
			out = append(out, simMarker{stream: s, first: f, announced: a, commitID: c})
		}
		if p.Continuation == "" {
			return out
		}
		q.Continuation = p.Continuation
	}
}

// readFeed reads the feed rows written since the last look.
func (m *simMonitor) readFeed(ctx context.Context, shard int) {
	for {
		next := max(m.feedNext[shard], 1)
		page := (next - 1) / simFeedPageSize
		row, err := m.events.Get(ctx, fmt.Sprintf("feed%02d-%012d", shard, page), fmt.Sprintf("P%019d", next))
		if errors.Is(err, table.ErrNotFound) {
			return
		}
		if err != nil {
			m.world.problem("monitor: reading feed shard %d position %d: %v", shard, next, err)
			return
		}
		s, _ := row.Properties["Stream"].(string)
		v, _ := row.Properties["Version"].(int64)
		if v != m.feedHeld[s]+1 {
			m.problem("feed-order", s, "feed shard %d position %d holds %s version %d after version %d", shard, next, s, v, m.feedHeld[s])
		}
		if want := m.shardOf[s] / 4; shard != want {
			m.problem("feed-shard", s, "feed shard %d position %d holds %s, a stream of shard %d", shard, next, s, want)
		}
		m.feedHeld[s] = max(m.feedHeld[s], v)
		m.changed[s] = true
		m.feedNext[shard] = next + 1
	}
}

// holds reports whether owner holds the lease of some feed shard, as last seen.
func (m *simMonitor) holds(owner string) bool {
	if owner == m.owner {
		return true
	}
	for _, o := range m.owners {
		if o == owner {
			return true
		}
	}
	return false
}

// checkCheckpoints checks that no durable subscription's checkpoint has passed an event its
// handler did not finish.
func (m *simMonitor) checkCheckpoints(ctx context.Context, partition string) {
	shard := 0
	fmt.Sscanf(partition, "checkpoint%02d", &shard)
	p, err := m.events.Query(ctx, table.Query{PartitionKey: partition})
	for err == nil {
		for _, row := range p.Entities {
			name, _ := row.Properties["Stream"].(string)
			name = simSubKey(name, shard)
			pos, _ := row.Properties["Position"].(int64)
			if done := m.world.handledUpTo(name); pos > done {
				m.problem("checkpoint", name, "subscription %s: checkpoint at position %d, but its handlers finished every position only up to %d", name, pos, done)
			}
		}
		if p.Continuation == "" {
			return
		}
		p, err = m.events.Query(ctx, table.Query{PartitionKey: partition, Continuation: p.Continuation})
	}
	m.world.problem("monitor: reading checkpoints: %v", err)
}

// statesDuring returns the head state a stream had just before the step from (the zero state: no
// head), then those it had from the step from to the step to (both included), in order.
func (m *simMonitor) statesDuring(stream string, from, to int) []simHeadAt {
	out := []simHeadAt{{}}
	for _, h := range m.history[stream] {
		switch {
		case h.step < from:
			out[0] = h
		case h.step <= to:
			out = append(out, h)
		}
	}
	return out
}

// checkWrongVersions checks that every WrongExpectedVersionError was justified: during its call
// the stream's head was at some moment a version the expectation refuses (a soft-deleted stream
// is at its last version and has no events: NoStream and that version admit it, StreamExists
// does not; a hard-deleted one is refused as deleted, not for its version), and the Actual it
// reported is a version the head had during the call.
func (m *simMonitor) checkWrongVersions() {
	for _, wv := range m.world.wrong {
		states := m.statesDuring(wv.stream, wv.from, wv.to)
		var during []int64
		refused := false
		for _, h := range states {
			during = append(during, h.version)
			refused = refused || !h.tomb && !simAdmitsAt(wv.expected, h.version, h.softDeleted())
		}
		kind := "an expected version it remembered"
		if wv.trueExpect {
			kind = "the true version, read just before the call"
		}
		switch {
		case !slices.Contains(during, wv.actual):
			m.problem("wrong-version", wv.stream, "commit %s to %s, expecting %v (%s), was refused with WrongExpectedVersionError{Actual: %d}, but the head was only (just before and during the call, steps %d-%d) at %v",
				wv.commit, wv.stream, wv.expected, kind, wv.actual, wv.from, wv.to, states)
		case !refused:
			m.problem("wrong-version", wv.stream, "commit %s to %s, expecting %v (%s), was refused with WrongExpectedVersionError{Actual: %d}, but the head (just before and during the call, steps %d-%d) was always in a state it admits: %v",
				wv.commit, wv.stream, wv.expected, kind, wv.actual, wv.from, wv.to, states)
		}
	}
}

// simAdmitsAt reports whether an expected version admits a stream at version v, soft-deleted or
// not (the contract of Store.Delete and docs/storage-format.md, "Head row").
func simAdmitsAt(e estuite.ExpectedVersion, v int64, softDeleted bool) bool {
	if !softDeleted {
		return simAdmits(e, v)
	}
	if x, exact := e.Version(); exact {
		return x == v || x == 0
	}
	return e != estuite.StreamExists
}

// simAdmits reports whether an expected version admits a stream at version v.
func simAdmits(e estuite.ExpectedVersion, v int64) bool {
	if x, exact := e.Version(); exact {
		return v == x
	}
	switch e {
	case estuite.NoStream:
		return v == 0
	case estuite.StreamExists:
		return v > 0
	}
	return true
}
