package estuite_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/simsched"
	"github.com/estuite/estuite/table"
	"github.com/google/uuid"
)

// The simulated processes. A process is what one `estuite serve` is in production: one Store (one
// head cache, one dirty signal that wakes its dispatcher), on one machine's clock, with its
// writers, a dispatcher run by Start, and perhaps a durable subscription. Each part is an actor of
// its own (they make storage calls concurrently, as the goroutines of a server do). When any part
// crashes, the whole process dies; it may be restarted — a new Store on the same machine's clock,
// its writers resuming their plans, its dispatcher under the same Owner or a new one.

// simProc is one generation of a simulated process.
type simProc struct {
	machine *simMachine
	gen     int
	name    string            // "p1", then "p1.1", "p1.2" after restarts
	owner   string            // its dispatcher's Owner
	disp    *simsched.Actor   // shard 0's dispatcher
	disps   []*simsched.Actor // every shard's
	store   *estuite.Store
	actors  []*simsched.Actor
	dead    bool
}

// simMachine is what survives a process's crash: its clock, its writers' plans and memory, the
// dispatcher's owner name and the subscription's name.
type simMachine struct {
	id      int
	clock   *simsched.Clock
	owner   string
	writers []*simWriter
	sub     string      // durable subscription name; "" for none
	deleter *simDeleter // the deleter's plan, on the one machine that runs it (sim_delete_test.go)
	gens    int
	current *simProc
}

// simWriter is a writer's plan and memory: it appends to the shared streams, new commits with
// random expected versions and retries of its earlier commits with the same commit ID. A writer
// whose process crashed may be resumed by a restarted process (a new Store, so no cached heads),
// which first retries the append it was making, then goes on with the plan.
type simWriter struct {
	name                 string
	world                *simWorld
	r                    *rand.Rand
	streams              []string
	appends              int // appends left to make
	minEvents, maxEvents int
	think                time.Duration // the longest pause between two appends
	startAfter           time.Duration // when the writer begins (on its clock)
	trueVersion          float64       // how often an append expects the stream's true version
	announce             float64       // how often a command announces its append early
	announceWindow       time.Duration // the store's AnnounceWindow
	known                map[string]int64
	mine                 []*simCommit
	inflight             *simCommit
	exp                  estuite.ExpectedVersion
	failed               bool
	done                 chan struct{} // closed when the latest generation's goroutine has returned
}

// simAnnounceReq asks a writer's companion actor to announce an append early.
type simAnnounceReq struct {
	stream, commitID string
	reply            chan simAnnounced // buffered
}

type simAnnounced struct {
	an  *estuite.Announcement
	err error
}

// run carries on with the writer's plan in one process generation. announcer reaches the
// generation's companion actor, which writes early markers while the writer reads the stream (an
// actor makes one storage call at a time); nil when the writer never announces.
func (wr *simWriter) run(ctx context.Context, s *estuite.Store, clock *simsched.Clock, resume bool, announcer chan<- simAnnounceReq) {
	w, r := wr.world, wr.r
	if len(wr.mine) == 0 && wr.startAfter > 0 {
		if _, err := clock.Wait(ctx, wr.startAfter, nil); err != nil {
			return
		}
	}
	for ; wr.appends > 0 && ctx.Err() == nil; wr.appends-- {
		if wr.think > 0 && !resume {
			if _, err := clock.Wait(ctx, time.Duration(r.Int64N(int64(wr.think)+1)), nil); err != nil {
				return
			}
		}
		var c *simCommit
		var exp estuite.ExpectedVersion
		trueRead := false
		switch {
		case resume && wr.inflight != nil:
			c, exp = wr.inflight, wr.exp // the restarted process retries what it was doing
		case len(wr.mine) > 0 && r.Float64() < 0.3:
			c = wr.mine[r.IntN(len(wr.mine))]
			if wr.failed && r.Float64() < 0.7 {
				c = wr.mine[len(wr.mine)-1]
			}
			exp = c.expected
			if r.Float64() < 0.3 {
				exp = estuite.Any
			}
		default:
			stream := wr.streams[r.IntN(len(wr.streams))]
			switch x := r.Float64(); {
			case x < wr.trueVersion:
				// A client of another server read the stream a moment ago: the expected version
				// is the true one, whatever this process has cached.
				exp, trueRead = estuite.Exactly(w.trueHead(stream)), true
			case x < 0.4:
				exp = estuite.Any
			case x < 0.8:
				exp = estuite.Exactly(wr.known[stream])
			case wr.known[stream] == 0:
				exp = estuite.NoStream
			default:
				exp = estuite.StreamExists
			}
			c = &simCommit{id: fmt.Sprintf("%s-c%d", wr.name, len(wr.mine)+1), stream: stream, expected: exp}
			ids := 0
			for i, k := 0, max(wr.minEvents, 1)+r.IntN(wr.maxEvents-max(wr.minEvents, 1)+1); i < k; i++ {
				ev := jsonEvent("Sim", fmt.Sprintf(`{"commit":%q,"i":%d}`, c.id, i))
				if r.Float64() < 0.3 && k+ids < estuite.MaxAppendRows {
					ids++
					var b [16]byte
					for j := range b {
						b[j] = byte(r.Uint32())
					}
					ev.ID = uuid.Must(uuid.FromBytes(b[:]))
					ev.ID[6], ev.ID[8] = ev.ID[6]&0x0f|0x40, ev.ID[8]&0x3f|0x80 // version 4, RFC 4122 variant
				}
				c.events = append(c.events, ev)
			}
			c.snapshot = simSnapshotOf(c.id)
			w.erase.label(c)
			w.mu.Lock()
			w.commits[c.id] = c
			w.mu.Unlock()
			wr.mine = append(wr.mine, c)
		}
		resume = false
		// A command announced early: the marker is written while the writer reads the stream and
		// thinks (sometimes past the announcement's window), and sometimes it decides to append
		// nothing and withdraws.
		var an *estuite.Announcement
		if announcer != nil && r.Float64() < wr.announce {
			if ctx.Err() != nil {
				return
			}
			reply := make(chan simAnnounced, 1)
			select {
			case announcer <- simAnnounceReq{stream: c.stream, commitID: c.id, reply: reply}:
			case <-ctx.Done():
				return
			}
			if rd, err := s.Read(ctx, c.stream, &estuite.ReadOptions{Limit: 20, WithSnapshot: true}); err == nil {
				for _, err := range rd.Events {
					if err != nil {
						break
					}
				}
			}
			var got simAnnounced
			select {
			case got = <-reply:
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				return // crashed: no more draws from the writer's random source in this generation
			}
			if got.err != nil {
				w.problem("%s: Announce(%s, %s): %v", wr.name, c.stream, c.id, got.err)
				return
			}
			an = got.an // its marker may have failed to be written: the append then writes its own
			if _, err := clock.Wait(ctx, time.Duration(r.Int64N(int64(wr.announceWindow)*3/2+1)), nil); err != nil {
				return // crashed while thinking: the announcement stays for the dispatcher to fence
			}
			if r.Float64() < 0.15 {
				an.WithdrawAndWait(ctx)
				if ctx.Err() != nil {
					return // crashed: this generation must not touch the plan any more
				}
				w.noteWithdrawn()
				continue
			}
		}
		wr.inflight, wr.exp = c, exp
		from := w.sched.Steps()
		res, err := s.Append(ctx, c.stream, c.events, &estuite.AppendOptions{CommitID: c.id, Expected: exp, Snapshot: c.snapshot, Announcement: an})
		crashed := ctx.Err() != nil
		w.record(c, exp, res, err, crashed)
		w.del.noteAppend(c, res, err, from, w.sched.Steps(), crashed)
		var wev *estuite.WrongExpectedVersionError
		if errors.As(err, &wev) {
			w.noteWrongVersion(c, exp, wev.Actual, from, w.sched.Steps(), trueRead)
		}
		if crashed {
			return // the process is gone; the append stays in flight for a restarted process
		}
		if an != nil && r.Float64() < 0.7 {
			// As aggregate.Update does after every attempt: a no-op once the append landed or
			// may have, a delete after a refused one.
			if an.WithdrawAndWait(ctx); ctx.Err() != nil {
				return
			}
		}
		wr.inflight, wr.failed = nil, err != nil
		switch {
		case err == nil:
			wr.known[c.stream] = max(wr.known[c.stream], res.LastVersion)
		case errors.As(err, &wev):
			wr.known[c.stream] = wev.Actual
		}
	}
}

// spawnProcess starts a new generation of a machine's process: its writers with plans left, its
// dispatcher and its subscription. delay is how long the process takes to come up.
func (sim *simRun) spawnProcess(m *simMachine, delay time.Duration, resume bool) {
	p := &simProc{machine: m, gen: m.gens, name: fmt.Sprintf("p%d", m.id), owner: m.owner}
	if m.gens > 0 {
		p.name = fmt.Sprintf("p%d.%d", m.id, m.gens)
	}
	m.gens++
	m.current = p
	p.store = sim.open(m.clock)
	// up waits until the process is up. The parts of a process come up a microsecond apart: parts
	// woken at one instant would run at once, and the order in which two writers reach the
	// store's shared marker writer (one leads, the other waits for its batch) would be the Go
	// scheduler's.
	part := 0
	up := func(ctx context.Context, part int) bool {
		if delay <= 0 && part == 0 {
			return true
		}
		_, err := m.clock.Wait(ctx, delay+time.Duration(part)*time.Microsecond, nil)
		return err == nil
	}
	writersGone := sim.sched.Gone("writer")
	for _, wr := range m.writers {
		if wr.appends == 0 || isClosed(writersGone) {
			continue // nothing left to write, or the writers are gone: the plan is abandoned
		}
		prev, done := wr.done, make(chan struct{})
		wr.done = done // the next generation waits for this one's
		part++
		part := part
		var announcer chan simAnnounceReq
		if wr.announce > 0 {
			announcer = make(chan simAnnounceReq)
		}
		// In quiet seeds writers pause too (a slow client, a garbage collection): an append whose
		// marker is stored waits at its batch, and dispatchers wait for it, then fence it.
		a := sim.sched.Spawn(simsched.ActorOptions{Name: p.name + "/" + wr.name, Kind: "writer", Pausable: sim.p.quiet}, func(ctx context.Context) {
			defer close(done)
			defer func() {
				// The plan is done (not crashed: then the companion dies with the process, in
				// the scheduler's order): let the companion go.
				if announcer != nil && ctx.Err() == nil {
					close(announcer)
				}
			}()
			if prev != nil {
				select {
				case <-prev: // the crashed process has finished with the writer's memory
				case <-ctx.Done():
					return
				}
			}
			if !up(ctx, part) {
				return
			}
			wr.run(ctx, p.store, m.clock, resume, announcer)
		})
		p.actors = append(p.actors, a)
		sim.procOf[a] = p
		if announcer != nil {
			a := sim.spawnAnnouncer(p, wr, announcer)
			p.actors = append(p.actors, a)
			sim.procOf[a] = p
		}
	}
	sim.spawnDeleter(p, up, writersGone)
	o := sim.p
	// In quiet seeds the first machine only dispatches, and does not crash: it loses the lease when
	// paused, and comes back to it later with what it knew of the feed.
	sturdy := o.quiet && m.id == 1
	// One dispatcher per feed shard, each an actor of its own (shard 0's named as with one shard).
	// With several shards they form the process's dispatch group, which spreads the shards'
	// leases over the processes.
	dopts := estuite.DispatcherOptions{
		Owner: m.owner, LeaseDuration: o.lease, FenceAfter: o.fenceAfter, ScavengeInterval: o.scavengeInterval,
		PollInterval: o.poll, MaxPollInterval: o.maxPoll, Workers: 1, Clock: m.clock,
	}
	busies := make([]*simBusy, o.feedShards)
	dopts.OnStep = func(st estuite.DispatchStats, err error) {
		if b := busies[st.Shard]; b != nil {
			b.step(st, err)
		}
	}
	var group *estuite.DispatchGroup
	if o.feedShards > 1 {
		group = estuite.NewDispatchGroup(p.store, &dopts)
	}
	for shard := range o.feedShards {
		name := p.name + "/d"
		if shard > 0 {
			name = fmt.Sprintf("%s/d%d", p.name, shard)
		}
		a := sim.sched.Spawn(simsched.ActorOptions{Name: name, Kind: "dispatcher", Pausable: true, Weight: o.dispatcherWeight, Sturdy: sturdy}, func(ctx context.Context) {
			if !up(ctx, 0) {
				return
			}
			busies[shard] = &simBusy{name: name, world: sim.world, actor: simsched.ActorOf(ctx), clock: m.clock}
			var d *estuite.Dispatcher
			if group != nil {
				d = group.Dispatchers()[shard]
			} else {
				so := dopts
				so.Shard = shard
				d = estuite.NewDispatcher(p.store, &so)
			}
			if err := d.Start(ctx); err != nil {
				sim.world.problem("%s: Start: %v", name, err)
				return
			}
			sim.drain(ctx, writersGone)
			if err := d.Stop(); err != nil && ctx.Err() == nil {
				if errors.Is(err, estuite.ErrCorrupt) {
					sim.world.problem("%s: dispatcher stopped with %v", name, err)
				}
			}
		})
		p.actors = append(p.actors, a)
		if shard == 0 {
			p.disp = a
		}
		p.disps = append(p.disps, a)
		sim.procOf[a] = p
	}
	if sturdy {
		sim.spawnStepper(p, writersGone)
	}
	for shard := range o.feedShards {
		if m.sub == "" || sturdy {
			break
		}
		name := p.name + "/s"
		if shard > 0 {
			name = fmt.Sprintf("%s/s%d", p.name, shard)
		}
		a := sim.sched.Spawn(simsched.ActorOptions{Name: name, Kind: "subscriber"}, func(ctx context.Context) {
			if !up(ctx, 99) {
				return
			}
			sim.subscribe(ctx, p, m.sub, shard, writersGone)
		})
		p.actors = append(p.actors, a)
		sim.procOf[a] = p
	}
	if sim.world.group != nil && !sturdy {
		sim.spawnMember(p, up, writersGone)
	}
}

// spawnAnnouncer starts a writer's companion actor for this generation: it writes early markers
// on the writer's behalf, while the writer reads, until the writer closes req (its plan done) or
// the process dies.
func (sim *simRun) spawnAnnouncer(p *simProc, wr *simWriter, req <-chan simAnnounceReq) *simsched.Actor {
	return sim.sched.Spawn(simsched.ActorOptions{Name: p.name + "/" + wr.name + "/a", Kind: "announcer", Pausable: sim.p.quiet}, func(ctx context.Context) {
		for ctx.Err() == nil {
			select {
			case q, ok := <-req:
				if !ok {
					return
				}
				an, err := p.store.AnnounceAndWait(ctx, q.stream, q.commitID)
				q.reply <- simAnnounced{an: an, err: err}
			case <-ctx.Done():
				return
			}
		}
	})
}

// crashed handles an actor's crash: the rest of its process dies with it, and the machine may
// come up again. A machine whose process is the last one running a dispatcher always comes up
// again, so that someone dispatches while writers write.
func (sim *simRun) crashed(a *simsched.Actor) {
	p := sim.procOf[a]
	if p == nil || p.dead {
		return
	}
	p.dead = true
	sim.noteMemberChange(sim.sched.Now())
	if mon := sim.world.mon; p.owner == mon.owner || sim.p.feedShards > 1 && mon.holds(p.owner) {
		mon.disrupt(sim.sched.Now(), mon.takeover+sim.p.restartDelay, "the lease holder "+p.name+" crashed")
		mon.orphaned = true
	} else if mon.orphaned {
		// As for a pause: while the holder is dead, the process that crashed may have been the one
		// taking the lease over (its successor watches the lease anew for a lease duration). Recorded
		// without a note in the schedule's trace (notes enter its hash): under -race, schedule
		// hashes vary now and then (seeds 8, 11, 16 of TestSimulationIsDeterministic, also before
		// this allowance), and with a note here seed 16 varied more often.
		mon.disrupts = append(mon.disrupts, simDisruption{at: sim.sched.Now(), extra: mon.takeover + sim.p.restartDelay})
	}
	for _, o := range p.actors {
		if o != a {
			sim.sched.Crash(o)
		}
	}
	sim.crashes++
	others := 0
	for _, m := range sim.machines {
		if m.current != nil && !m.current.dead {
			others++
		}
	}
	if others > 0 && sim.crashRNG.Float64() >= sim.p.restart {
		sim.sched.Note("%s crashed and stays down", p.name)
		return
	}
	m := p.machine
	if sim.crashRNG.Float64() >= sim.p.sameOwner {
		m.owner = fmt.Sprintf("%s-owner%d", p.name, m.gens)
	}
	delay := time.Duration(sim.crashRNG.Int64N(int64(sim.p.restartDelay) + 1))
	sim.restarts++
	sim.sched.Note("%s crashed; restarts in %v (owner %s)", p.name, delay, m.owner)
	sim.spawnProcess(m, delay, true)
}

// drain returns when the process dies, or some time after the writers are gone: the servers run
// on after their clients stopped, so that the liveness check sees whether what was written
// reaches the feed.
func (sim *simRun) drain(ctx context.Context, writersGone <-chan struct{}) {
	select {
	case <-ctx.Done():
		return
	case <-writersGone:
	}
	t := time.NewTimer(sim.p.drain)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// paused notes a pause of the lease holder's dispatcher, or of any dispatcher while the lease is
// orphaned (its holder crashed): the one paused may be the one to take over.
func (sim *simRun) paused(a *simsched.Actor, d time.Duration) {
	if a.Kind == "member" {
		sim.noteMemberChange(sim.sched.Now().Add(d))
	}
	if p := sim.procOf[a]; p != nil && slices.Contains(p.disps, a) && (p.owner == sim.world.mon.owner || sim.world.mon.orphaned || sim.p.feedShards > 1) {
		mon := sim.world.mon
		extra := d // it holds its lease and goes on
		if d >= mon.lease/2 {
			extra += mon.takeover // or the lease goes to another
		}
		mon.disrupt(sim.sched.Now(), extra, fmt.Sprintf("the lease holder %s paused for %v", p.name, d))
	}
}

// simBusy watches one dispatcher's steps for a busy loop: steps that did nothing (no event
// written, no marker resolved, no head fenced, no error) one after another, without the
// dispatcher waiting for virtual time in between. A dispatcher that works correctly waits after
// every step that did nothing — at least its poll interval, or DefaultLinger after a wake-up — so
// more than simBusySteps of them in a row is a loop that burns storage requests without end.
//
// It counts steps that did nothing rather than storage calls per virtual second: a dispatcher's
// calls per virtual second depend on how the scheduler interleaves the other actors' calls (each
// call waits its turn, Tick each), so a busy loop makes about as many calls per second as a
// correct dispatcher polling briskly; whether it waited between two idle steps does not.
type simBusy struct {
	name    string
	world   *simWorld
	actor   *simsched.Actor
	clock   *simsched.Clock
	idles   int
	streak  int
	since   time.Time
	calls   int
	done    bool
	corrupt bool // a step failed with ErrCorrupt (reported once)
}

const simBusySteps = 5

func (b *simBusy) step(st estuite.DispatchStats, err error) {
	if errors.Is(err, estuite.ErrCorrupt) && !b.corrupt {
		// A row the dispatcher does not understand in a stream's range (a snapshot row, say):
		// it would stop that stream's dispatch for good.
		b.corrupt = true
		b.world.problem("dispatcher %s: a step failed with %v", b.name, err)
	}
	idles := b.actor.Idles()
	waited := idles != b.idles
	b.idles = idles
	if waited || err != nil || st.Events > 0 || st.Resolved > 0 || st.Fenced > 0 {
		b.streak = 0
		return
	}
	if b.streak == 0 {
		b.since, b.calls = b.clock.Now(), b.actor.Calls()
	}
	b.streak++
	if b.streak == simBusySteps && !b.done {
		b.done = true
		b.world.problem("busy loop: dispatcher %s stepped %d times in a row without doing anything and without waiting: %d storage calls in %v (last step %+v)",
			b.name, b.streak, b.actor.Calls()-b.calls, b.clock.Now().Sub(b.since).Round(time.Millisecond), st)
	}
}

// subscribe runs a durable subscription until the writers are gone or the process dies. Its
// handler records every position it finishes; the checks compare them with the checkpoint.
func (sim *simRun) subscribe(ctx context.Context, p *simProc, name string, shard int, writersGone <-chan struct{}) {
	w := sim.world
	inst := w.newInstance(simSubKey(name, shard), p.name)
	sub, err := p.store.Subscribe(ctx, estuite.SubscriptionOptions{
		Name:               name,
		Shard:              shard,
		CheckpointEvery:    1 + int(p.gen%3),
		CheckpointInterval: 50 * time.Millisecond,
		PollInterval:       20 * time.Millisecond,
		MaxPollInterval:    200 * time.Millisecond,
		BatchSize:          7,
		// Every position, the scavenger's redacted entries too: the checks match the handled
		// positions with the checkpoint, one by one.
		IncludeRedacted: true,
		Handler: func(ctx context.Context, ev estuite.FeedEvent) error {
			w.handled(inst, ev.Position)
			return nil
		},
	})
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, estuite.ErrUnavailable) && !errors.Is(err, table.ErrTransient) {
			w.problem("subscription %s in %s: Subscribe: %v", name, p.name, err)
		}
		return
	}
	sim.drain(ctx, writersGone)
	if err := sub.Stop(); err != nil && ctx.Err() == nil && errors.Is(err, estuite.ErrCorrupt) {
		w.problem("subscription %s in %s: %v", name, p.name, err)
	}
}

// spawnStepper starts, beside the sturdy machine's started dispatcher, a second dispatcher that
// steps by hand (as a maintenance tool or a test harness may, with Step): it takes no lease, so it
// keeps what it knows of the feed's page while the lease holders write on, and meets streams
// through an out-of-date view. Whatever it meets, it must move the work on (write, resolve,
// fence), fail a write on the page it knew (and read the page anew), or find the work gone: a
// dispatcher that reports work left and does nothing with it simStuckSteps steps in a row is stuck
// — it cannot see the work it reports, and will not fence it.
func (sim *simRun) spawnStepper(p *simProc, writersGone <-chan struct{}) {
	o, m := sim.p, p.machine
	a := sim.sched.Spawn(simsched.ActorOptions{Name: p.name + "/step", Kind: "stepper", Pausable: true}, func(ctx context.Context) {
		d := estuite.NewDispatcher(p.store, &estuite.DispatcherOptions{FenceAfter: o.fenceAfter, Workers: 1, Clock: m.clock})
		stuck, since := 0, time.Time{}
		for ctx.Err() == nil && !isClosed(writersGone) {
			st, err := d.Step(ctx)
			if err == nil && st.Incomplete && st.Events == 0 && st.Resolved == 0 && st.Fenced == 0 {
				if stuck == 0 {
					since = m.clock.Now()
				}
				if stuck++; stuck == simStuckSteps {
					sim.world.problem("stuck: hand-stepped dispatcher %s reported work left and did nothing with it %d steps in a row, for %v (last step %+v)",
						p.name+"/step", stuck, m.clock.Now().Sub(since).Round(time.Millisecond), st)
				}
			} else {
				stuck = 0
			}
			if _, err := m.clock.Wait(ctx, o.poll, nil); err != nil {
				return
			}
		}
	})
	p.actors = append(p.actors, a)
	sim.procOf[a] = p
}

// simStuckSteps is how many steps in a row a dispatcher may report work it does nothing with.
const simStuckSteps = 3

// simSnapshotOf decides, from the commit ID alone (so that no seed's random choices change), whether
// a new commit carries a snapshot, and which: two commits in three do, of schema 1 or 2, with data
// naming the commit and the schema.
func simSnapshotOf(commitID string) *estuite.Snapshot {
	sum := sha256.Sum256([]byte(commitID))
	if sum[0]%3 == 0 {
		return nil
	}
	schema := 1 + int(sum[1]%2)
	return &estuite.Snapshot{Schema: schema, Data: fmt.Appendf(nil, "%s|%d", commitID, schema)}
}

// simSubKey names a durable subscription's run over one feed shard in the world's records.
func simSubKey(name string, shard int) string {
	if shard == 0 {
		return name
	}
	return fmt.Sprintf("%s@%d", name, shard)
}
