package estuite_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/simsched"
)

// Stream deletes in the simulation. In the deletion seeds (simDeletes), one machine's process
// runs a deleter beside its writers: an actor with the process's store (and so its head cache),
// dying and coming back with its process, which soft-deletes random streams at random times with
// random expected versions (Any, the version it last learned, the true version read just
// before, StreamExists, NoStream), and hard-deletes the one or two streams the seed reserves for
// it. The writers go on appending to every stream: to a soft-deleted one their appends recreate it
// (or are refused, by the soft-deleted rules), to a hard-deleted one they are refused with
// ErrStreamDeleted.
//
// The checks (the monitor records every head state, its deletion state included):
//   - while it runs: a head's DeletedBefore never goes back and never passes its version + 1, a
//     tombstone is never lost and its stream's version never moves after it;
//   - every delete's answer is justified by the head states during its call: ok with Version v
//     means the head was, at some moment of the call, soft-deleted (hard: tombstoned) at v; a
//     WrongExpectedVersionError needs a state the expectation refuses (by the soft-deleted rules)
//     and an Actual the head had; ErrStreamNotFound a head at version 0; ErrStreamDeleted a
//     tombstone. A delete must not take effect twice in one call (DeletedBefore raised twice), nor
//     be refused when it took effect during its call (unless a ghost of an earlier unanswered
//     delete of the stream may have);
//   - every append refused with ErrStreamDeleted met a tombstone by the end of its call; no
//     append that began after a hard delete was answered is answered committed (only the duplicate
//     of a commit stored before it);
//   - at the end (simCheck): every stored event, read from the raw rows (ReadStored), is checked
//     as before (each acknowledged commit exactly once at its versions, the feed exactly once in
//     per-stream order), and a read of each stream shows exactly the stored events from
//     DeletedBefore on (ErrStreamNotFound when none, ErrStreamDeleted after a tombstone); an
//     acknowledged soft delete at v leaves DeletedBefore > v; an acknowledged hard delete at v
//     leaves the stream tombstoned at version v; a snapshot a read returns reflects no deleted
//     event.
//
// The deletion seeds are those with seed%7 == 6 that are not erasure seeds: 57 of the 500
// default seeds (6 and 13 among those of TestSimulationIsDeterministic). None of the seeds named in
// sim_teeth_test.go is one, so their schedules did not change. The deleter's draws come from a
// source of its own, so no other seed's schedule changed either.

// simDeletes reports whether a seed deletes streams.
func simDeletes(seed uint64) bool { return seed%7 == 6 && !simErases(seed) }

// simDeleteCall is one Store.Delete the deleter made, and its answer.
type simDeleteCall struct {
	stream   string
	expected estuite.ExpectedVersion
	hard     bool
	from, to int    // scheduler steps when the call began and ended (to: -1 when it crashed)
	outcome  string // ok, wrong version, not found, deleted, unavailable, contention, crashed
	version  int64  // ok: the result's Version; wrong version: Actual
	err      error
}

// ambiguous reports whether the call may have taken effect without saying so.
func (c simDeleteCall) ambiguous() bool { return c.outcome == "unavailable" || c.outcome == "crashed" }

// simAppendRefused is an append refused with ErrStreamDeleted.
type simAppendRefused struct {
	commit, stream string
	from, to       int
}

// simDeletion is what the simulation knows of its deletes.
type simDeletion struct {
	mu       sync.Mutex
	reserved map[string]bool // the streams the deleter may hard-delete
	calls    []simDeleteCall
	hardAt   map[string]simDeleteCall // stream → its first acknowledged hard delete
	// retention: stream → every metadata a SetMetadata call tried on it (landed or not)
	retention map[string][]estuite.StreamMetadata
	refused   []simAppendRefused
	problems  []string
}

// simDeleter is the deleter's plan and memory, which survive its process's crashes.
type simDeleter struct {
	del        *simDeletion
	r          *rand.Rand
	streams    []string
	left       int
	think      time.Duration
	startAfter time.Duration
	known      map[string]int64
	started    bool
	done       chan struct{} // closed when the latest generation's goroutine has returned
}

// newSimDeleter plans the deletes of a deletion seed, and places the deleter on a machine (not
// the sturdy first machine of a quiet seed). Its draws come from a source of its own.
func newSimDeleter(p simParams, streams []string) (*simDeletion, *simDeleter, int) {
	if !simDeletes(p.cfg.Seed) {
		return nil, nil, -1
	}
	r := rand.New(rand.NewPCG(p.cfg.Seed, 0xde1e7e))
	machine := r.IntN(p.machines)
	if p.quiet {
		machine = 1 + r.IntN(p.machines-1)
	}
	del := &simDeletion{reserved: make(map[string]bool), hardAt: make(map[string]simDeleteCall),
		retention: make(map[string][]estuite.StreamMetadata)}
	reserve := 1
	if len(streams) > 4 {
		reserve += r.IntN(2)
	}
	for _, i := range r.Perm(len(streams))[:reserve] {
		del.reserved[streams[i]] = true
	}
	d := &simDeleter{del: del, r: r, streams: streams, left: 4 + r.IntN(8),
		think:      time.Duration(50+r.IntN(750)) * time.Millisecond,
		startAfter: time.Duration(r.Int64N(int64(1500 * time.Millisecond))),
		known:      make(map[string]int64)}
	return del, d, machine
}

// spawnDeleter starts the deleter's actor in process p, if it lives on p's machine and has
// deletes left. up waits until the process is up.
func (sim *simRun) spawnDeleter(p *simProc, up func(context.Context, int) bool, writersGone <-chan struct{}) {
	d := p.machine.deleter
	if d == nil || d.left == 0 || isClosed(writersGone) {
		return
	}
	prev, done := d.done, make(chan struct{})
	d.done = done
	a := sim.sched.Spawn(simsched.ActorOptions{Name: p.name + "/del", Kind: "deleter", Pausable: sim.p.quiet}, func(ctx context.Context) {
		defer close(done)
		if prev != nil {
			select {
			case <-prev: // the crashed generation has finished with the plan
			case <-ctx.Done():
				return
			}
		}
		if !up(ctx, 98) {
			return
		}
		d.run(ctx, sim.world, p.store, p.machine.clock, writersGone)
	})
	p.actors = append(p.actors, a)
	sim.procOf[a] = p
}

// run carries on with the deleter's plan in one process generation.
func (d *simDeleter) run(ctx context.Context, w *simWorld, s *estuite.Store, clock *simsched.Clock, writersGone <-chan struct{}) {
	r := d.r
	if !d.started {
		d.started = true
		if _, err := clock.Wait(ctx, d.startAfter, nil); err != nil {
			return
		}
	}
	var reserved, others []string
	for _, st := range d.streams {
		if d.del.reserved[st] {
			reserved = append(reserved, st)
		} else {
			others = append(others, st)
		}
	}
	for ; d.left > 0 && ctx.Err() == nil && !isClosed(writersGone); d.left-- {
		if _, err := clock.Wait(ctx, time.Duration(r.Int64N(int64(d.think)+1)), nil); err != nil {
			return
		}
		if isClosed(writersGone) {
			return
		}
		if r.Float64() < 0.35 {
			if d.setRetention(ctx, w, s, others) {
				return // crashed
			}
			continue
		}
		stream, hard := d.pick(reserved, others)
		if w.trueHead(stream) == 0 && r.Float64() < 0.8 {
			stream, hard = d.pick(reserved, others) // mostly streams that exist (some never written)
		}
		var exp estuite.ExpectedVersion
		switch x := r.Float64(); {
		case x < 0.3:
			exp = estuite.Any
		case x < 0.55:
			exp = estuite.Exactly(d.known[stream])
		case x < 0.75:
			exp = estuite.Exactly(w.trueHead(stream))
		case x < 0.9:
			exp = estuite.StreamExists
		default:
			exp = estuite.NoStream
		}
		call := simDeleteCall{stream: stream, expected: exp, hard: hard, from: w.sched.Steps()}
		res, err := s.Delete(ctx, stream, &estuite.DeleteOptions{Expected: exp, Hard: hard})
		crashed := ctx.Err() != nil
		call.to, call.err = w.sched.Steps(), err
		var wev *estuite.WrongExpectedVersionError
		var de *estuite.StreamDeletedError
		var ce *estuite.ContentionError
		switch {
		case crashed:
			call.outcome, call.to = "crashed", -1
		case err == nil:
			call.outcome, call.version = "ok", res.Version
			if res.Stream != stream || res.Version < 1 {
				d.del.problem("Delete(%s, expected %v, hard %v) = %+v: a malformed result", stream, exp, hard, res)
			}
			d.known[stream] = res.Version
		case errors.As(err, &wev):
			call.outcome, call.version = "wrong version", wev.Actual
			if wev.Stream != stream || wev.Actual < 0 {
				d.del.problem("Delete(%s, expected %v): malformed %v", stream, exp, err)
			}
			d.known[stream] = wev.Actual
		case errors.Is(err, estuite.ErrStreamNotFound):
			call.outcome = "not found"
		case errors.As(err, &de):
			call.outcome = "deleted"
			if de.Stream != stream {
				d.del.problem("Delete(%s): malformed %v", stream, err)
			}
		case errors.As(err, &ce):
			call.outcome = "contention"
		case errors.Is(err, estuite.ErrUnavailable):
			call.outcome = "unavailable"
		default:
			call.outcome = "unavailable" // judged as ambiguous, and reported
			d.del.problem("Delete(%s, expected %v, hard %v): unexpected error %v", stream, exp, hard, err)
		}
		d.del.record(call)
		if crashed {
			return // the process is gone: no more draws in this generation
		}
	}
}

// setRetention sets a stream's retention (a maxCount, a truncateBefore near its head, both, or
// none), racing with its appends, deletes and the scavenger; the final checks judge what reads
// show and what the scavenger removed by the metadata stored at the end. maxAge is left out: the
// scavenger keeps an hour's margin, longer than a schedule. It reports whether the process
// crashed.
func (d *simDeleter) setRetention(ctx context.Context, w *simWorld, s *estuite.Store, others []string) bool {
	r := d.r
	stream := others[r.IntN(len(others))]
	var md estuite.StreamMetadata
	if x := r.Float64(); x < 0.7 {
		n := int64(1 + r.IntN(12))
		md.MaxCount = &n
	}
	if x := r.Float64(); x < 0.5 {
		v := max(0, w.trueHead(stream)-int64(r.IntN(6))+int64(r.IntN(3)))
		md.TruncateBefore = &v
	}
	expected := estuite.AnyMetadataVersion
	if r.Float64() < 0.4 {
		expected = estuite.MetadataExpected(r.IntN(3))
	}
	d.del.mu.Lock()
	d.del.retention[stream] = append(d.del.retention[stream], md) // whatever its outcome
	d.del.mu.Unlock()
	_, err := s.SetMetadata(ctx, stream, md, expected)
	if ctx.Err() != nil {
		return true
	}
	var wev *estuite.WrongExpectedVersionError
	var de *estuite.StreamDeletedError
	var ce *estuite.ContentionError
	switch {
	case err == nil, errors.As(err, &wev), errors.As(err, &de), errors.As(err, &ce), errors.Is(err, estuite.ErrUnavailable):
	default:
		d.del.problem("SetMetadata(%s, %+v, %d): unexpected error %v", stream, md, expected, err)
	}
	return false
}

// pick chooses the stream of a delete: a reserved one (hard-deleted half the time) three times in
// ten, otherwise another (soft-deleted).
func (d *simDeleter) pick(reserved, others []string) (stream string, hard bool) {
	if d.r.Float64() < 0.3 {
		return reserved[d.r.IntN(len(reserved))], d.r.Float64() < 0.5
	}
	return others[d.r.IntN(len(others))], false
}

func (del *simDeletion) problem(format string, args ...any) {
	del.mu.Lock()
	defer del.mu.Unlock()
	del.problems = append(del.problems, fmt.Sprintf(format, args...))
}

func (del *simDeletion) record(c simDeleteCall) {
	del.mu.Lock()
	defer del.mu.Unlock()
	del.calls = append(del.calls, c)
	if _, ok := del.hardAt[c.stream]; !ok && c.hard && c.outcome == "ok" {
		del.hardAt[c.stream] = c
	}
}

// noteAppend checks an append's answer against the hard deletes answered before it began (nil-safe:
// a seed without deletes), and keeps its refusals as deleted for checkDeletes.
func (del *simDeletion) noteAppend(c *simCommit, res estuite.AppendResult, err error, from, to int, crashed bool) {
	if del == nil {
		return
	}
	del.mu.Lock()
	defer del.mu.Unlock()
	if errors.Is(err, estuite.ErrStreamDeleted) && !crashed {
		del.refused = append(del.refused, simAppendRefused{commit: c.id, stream: c.stream, from: from, to: to})
	}
	hd, ok := del.hardAt[c.stream]
	switch {
	case err != nil || !ok:
	case !res.Duplicate && hd.to < from:
		del.problems = append(del.problems, fmt.Sprintf("commit %s to %s was answered committed at %d-%d, but its call began (step %d) after a hard delete of the stream at version %d was answered (step %d)",
			c.id, c.stream, res.FirstVersion, res.LastVersion, from, hd.version, hd.to))
	case res.LastVersion > hd.version && hd.to < from:
		del.problems = append(del.problems, fmt.Sprintf("commit %s to %s was answered as a duplicate at %d-%d, past version %d at which the stream was hard-deleted (step %d)",
			c.id, c.stream, res.FirstVersion, res.LastVersion, hd.version, hd.to))
	}
}

// checkDeletes checks every delete's answer, and every append refused as deleted, against the head
// states the monitor saw during the call. Called once the schedule is over.
func (sim *simRun) checkDeletes() []string {
	del, m := sim.world.del, sim.world.mon
	if del == nil {
		return nil
	}
	problems := slices.Clone(del.problems)
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	doubt := make(map[string]bool) // streams with an earlier delete that may have landed unanswered
	for _, c := range del.calls {
		if c.outcome == "crashed" {
			doubt[c.stream] = true
			continue
		}
		states := m.statesDuring(c.stream, c.from, c.to)
		// DeletedBefore raised during the call (history entries in [from, to], after the state before).
		raised := 0
		prev := states[0].deletedBefore
		for _, h := range states[1:] {
			if h.deletedBefore > prev {
				raised++
			}
			prev = h.deletedBefore
		}
		what := fmt.Sprintf("Delete(%s, expected %v, hard %v) during steps %d-%d", c.stream, c.expected, c.hard, c.from, c.to)
		has := func(f func(h simHeadAt) bool) bool { return slices.ContainsFunc(states, f) }
		switch c.outcome {
		case "ok":
			if c.hard && !has(func(h simHeadAt) bool { return h.tomb && h.version == c.version }) {
				bad("%s was answered ok at version %d, but the head was never tombstoned at that version during the call: %v", what, c.version, states)
			}
			if !c.hard && !has(func(h simHeadAt) bool { return !h.tomb && h.version == c.version && h.deletedBefore == c.version+1 }) {
				bad("%s was answered ok at version %d, but the head was never soft-deleted at that version during the call: %v", what, c.version, states)
			}
			if raised > 1 && !doubt[c.stream] {
				bad("%s took effect %d times (DeletedBefore raised each time, events appended between deleted too): %v", what, raised, states)
			}
		case "wrong version":
			if !has(func(h simHeadAt) bool { return !h.tomb && h.version == c.version }) {
				bad("%s was refused with Actual %d, a version the head did not have during the call: %v", what, c.version, states)
			}
			if !has(func(h simHeadAt) bool { return !h.tomb && !simAdmitsAt(c.expected, h.version, h.softDeleted()) }) {
				bad("%s was refused with Actual %d, but the head was always in a state the expectation admits: %v", what, c.version, states)
			}
			if raised > 0 && !doubt[c.stream] {
				bad("%s was refused with a WrongExpectedVersionError (Actual %d), but it took effect during the call: %v", what, c.version, states)
			}
		case "not found":
			if !has(func(h simHeadAt) bool { return h.version == 0 }) {
				bad("%s was answered ErrStreamNotFound, but the stream had events all through the call: %v", what, states)
			}
		case "deleted":
			if !has(func(h simHeadAt) bool { return h.tomb }) {
				bad("%s was answered ErrStreamDeleted, but the stream had no tombstone during the call: %v", what, states)
			}
		}
		if c.ambiguous() {
			doubt[c.stream] = true
		}
	}
	for _, a := range del.refused {
		if !slices.ContainsFunc(m.statesDuring(a.stream, a.from, a.to), func(h simHeadAt) bool { return h.tomb }) {
			bad("commit %s to %s was refused with ErrStreamDeleted (steps %d-%d), but the stream had no tombstone by then", a.commit, a.stream, a.from, a.to)
		}
	}
	return problems
}

// checkStoredDeletion checks a stream's final head against the deletes answered (simCheck).
func (del *simDeletion) checkStoredDeletion(stream string, sh estuite.StoredHead) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	tried, hardTried := false, false
	for _, c := range del.calls {
		if c.stream != stream {
			continue
		}
		tried, hardTried = true, hardTried || c.hard
		if c.outcome != "ok" {
			continue
		}
		if sh.DeletedBefore <= c.version {
			bad("%s: a delete was answered ok at version %d, but the stream's head has DeletedBefore %d (version %d): its events up to %d are visible again", stream, c.version, sh.DeletedBefore, sh.Version, c.version)
		}
		if c.hard && (!sh.Tombstone || sh.Version != c.version) {
			bad("%s: a hard delete was answered ok at version %d, but the head is at version %d, tombstone %v", stream, c.version, sh.Version, sh.Tombstone)
		}
	}
	if sh.DeletedBefore > 0 && !tried || sh.Tombstone && !hardTried {
		bad("%s: head with DeletedBefore %d, tombstone %v, but no such delete was made", stream, sh.DeletedBefore, sh.Tombstone)
	}
	// The removal floor never passes what the deletes and some retention tried on the stream
	// could have hidden: a floor above it removed (or hides) events no metadata ever hid.
	bound := max(1, sh.DeletedBefore)
	if sh.Tombstone {
		bound = sh.Version + 1
	}
	for _, md := range del.retention[stream] {
		if md.TruncateBefore != nil {
			bound = max(bound, min(*md.TruncateBefore, sh.Version+1))
		}
		if md.MaxCount != nil {
			bound = max(bound, sh.Version-*md.MaxCount+1)
		}
	}
	if sh.RemovedBefore > bound {
		bad("%s: removal floor %d, but no delete or retention tried on it hides more than the versions below %d (%+v; retention tried: %d)", stream, sh.RemovedBefore, bound, sh, len(del.retention[stream]))
	}
	return problems
}

// summary reports the deletes' outcomes.
func (del *simDeletion) summary(w *simWorld) string {
	if del == nil {
		return ""
	}
	n := make(map[string]int)
	hard := 0
	for _, c := range del.calls {
		n[c.outcome]++
		if c.hard && c.outcome == "ok" {
			hard++
		}
	}
	return fmt.Sprintf("; deletes: %d ok (%d hard), %d wrong version, %d not found, %d deleted, %d unavailable, %d contention, %d crashed; %d appends refused as deleted",
		n["ok"], hard, n["wrong version"], n["not found"], n["deleted"], n["unavailable"], n["contention"], n["crashed"], w.stats.refusedDeleted)
}

// checkFinalScavenge runs a fault-free scavenge pass once the final dispatcher is idle: it must
// succeed and finish, and leave no event row below any stream's removal floor (everything is
// in the feed by then, so everything hidden can go), and Verify must still find nothing wrong.
// A scavenger that cannot find where the feed holds an event, or stops short, fails here.
func (del *simDeletion) checkFinalScavenge(s *estuite.Store, streams []string) (problems []string) {
	ctx := context.Background()
	st, err := s.Scavenge(ctx)
	if err != nil || st.Incomplete || st.Waiting > 0 {
		problems = append(problems, fmt.Sprintf("final scavenge pass: %+v, %v", st, err))
	}
	for _, stream := range streams {
		sh, _, _, err := s.ReadStored(ctx, stream)
		if err != nil {
			problems = append(problems, fmt.Sprintf("ReadStored(%s) after the final scavenge: %v", stream, err))
			continue
		}
		if want := min(sh.RemovedBefore-1, sh.Version); sh.RemovedBefore > 0 && sh.Removed != want {
			problems = append(problems, fmt.Sprintf("%s: after the final scavenge pass %d first versions are removed, but its removal floor is %d (version %d)", stream, sh.Removed, sh.RemovedBefore, sh.Version))
		}
	}
	if r, err := s.Verify(ctx, nil); err != nil || !r.OK() {
		problems = append(problems, fmt.Sprintf("Verify after the final scavenge: %+v, %v", r, err))
	}
	return problems
}
