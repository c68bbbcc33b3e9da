package estuite_test

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/simsched"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/bolt"
	"github.com/estuite/estuite/table/mem"
)

// The simulation runs what production runs: several processes on one storage account, each a
// Store with its writers, a dispatcher started with Start (lease, wake-ups, linger, poll backoff,
// fences) and sometimes a durable subscription, each process on a machine clock of its own (offset
// by up to an hour, drifting by up to 2 %). A cooperative scheduler (internal/simsched) orders every
// storage call by a seed, inside a testing/synctest bubble whose fake clock is the virtual time:
// every timer, sleep and Clock wait of the code under test passes in virtual time, and a schedule
// depends on the seed alone. The scheduler injects faults — transient failures before a call takes
// effect, lost responses after it took effect, writes that land after their caller got an error
// and moved on (ghosts), crashes of whole processes (restarted, or not, after a delay), and pauses
// of dispatchers longer than their lease. The storage is the memory backend with random page sizes
// and empty pages, or the bbolt backend (whose appends write marker and batch in one transaction),
// and feed pages are small, so that schedules cross pages. In quiet seeds a second dispatcher,
// stepped by hand without the lease, runs beside the first machine's: it meets streams through an
// out-of-date view of the feed page, and must never stay stuck on work it does nothing with.
//
// While it runs, a monitor checks at every settled point (sim_check_test.go): the write-ahead
// invariant (every stored version the feed does not hold is covered by a live dirty marker),
// liveness (a stored event reaches the feed within simLiveness's allowance while the processes
// run: while writers write, and for a drain period after), that the
// feed stays in per-stream order, that no durable subscription's checkpoint passes an event its
// handler did not finish; each dispatcher is watched for busy loops (simBusy). After the schedule,
// every WrongExpectedVersionError is checked against the head versions the stream had during its
// call, a fault-free dispatcher runs until idle, and the feed is checked against the stream table
// and against what the writers were told: gapless, exactly once, in per-stream order, commits as
// reported.
//
// Measured on the 2-core development machine (go1.26), with the defects of sim_teeth_test.go
// fixed: TestSimulation's 500 default seeds take 30-45 s without -race, `go test -race -run
// 'TestSimulation' .` about 160 s. With the consumer group seeds (2026-12-01): 85-108 s without
// -race for the 500 seeds. The long run is `go test -run 'TestSimulation$' -sim.seeds
// 20000 -sim.maxfail 20 -timeout 0 -v .`. On commit 1a25e9b it found two failing seeds: 10204
// (a busy loop, fixed) and 11100 (an overloaded big schedule that the liveness check judged
// without its backlog; the check now allows for it). Both are in simRegressionSeeds. On commit
// 94017cd all 20,000 seeds passed: 28,788,320 storage calls in 34 min 18 s, on the machine
// shared with other test runs.
//
// Virtual time comes from testing/synctest rather than from a wait that the scheduler schedules
// as a pseudo-call: the Start loop waits on its Clock, but the store's retry backoff sleeps and
// sets timers directly (time.NewTimer), and in a bubble those pass in virtual time too. A Clock wait
// (simsched.Clock) is a bubble timer scaled by the clock's drift: it ends when its virtual deadline
// has passed, when wake is ready, or at once when the actor has crashed (its context is done).
//
// Stream deletes enter in the deletion seeds (sim_delete_test.go): a deleter actor in one process
// soft- and hard-deletes streams while the writers write; the final checks read the stored rows
// (whatever a delete hides) for the checks above, and check separately what reads show.
//
// Consumer groups enter in the group seeds (sim_group_test.go): a member in every process, with
// checks of overlap, per-stream order, balance, progress and at-least-once delivery.
//
// The teeth — which check catches which known defect, on which seeds, and how to put a defect
// back to see it fail — are in sim_teeth_test.go.
var (
	simSeeds       = flag.Int("sim.seeds", simDefaultSeeds, "simulation: how many schedules TestSimulation runs (seeds 1..n; 500, or 100 under -race)")
	simSeed        = flag.Int("sim.seed", -1, "simulation: run only this seed")
	simTrace       = flag.Bool("sim.trace", false, "simulation: print the schedule (every storage call) of a failing seed, or of -sim.seed")
	simBig         = flag.Bool("sim.big", false, "simulation: make every schedule a big one (long appends, many feed pages)")
	simSmall       = flag.Bool("sim.small", false, "simulation: no big schedules")
	simMaxFail     = flag.Int("sim.maxfail", 10, "simulation: stop after this many failing seeds")
	simRegressions = flag.Bool("sim.regressions", false, "simulation: run TestSimulationRegressions' seeds of known, unfixed bugs")
	simBackend     = flag.String("sim.backend", "", `simulation: "mem" or "bolt" for every seed (default: bolt for every simBoltEvery-th seed)`)
	simVerbose     = flag.Bool("sim.v", false, "simulation: log every seed's summary")
)

const (
	simBigEvery  = 50 // every 50th seed is a big schedule
	simBoltEvery = 4  // every 4th seed runs on bbolt
	simMaxSteps  = 400000
)

// simStart is the virtual time at which every schedule starts.
var simStart = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// simFeedPageSize is the feed page size of the schedule running (estuite.SetFeedPageSize).
var simFeedPageSize int64 = estuite.FeedPageSize

// simShardOf is the store's dirty-marker shard function, repeated here so that the monitor and
// the parameters can place streams.
func simShardOf(name string) int {
	sum := sha256.Sum256([]byte(name))
	return int(uint32(sum[0])<<8|uint32(sum[1])) % 4
}

// simStreams returns the streams the writers share: four in one dirty-marker shard, or six spread
// over the shards.
func simStreams(spread bool) []string {
	var out []string
	want := simShardOf("sim-0")
	for i := 0; len(out) < 4 || spread && len(out) < 6; i++ {
		name := fmt.Sprintf("sim-%d", i)
		if spread || simShardOf(name) == want {
			out = append(out, name)
		}
	}
	return out
}

// simParams are what a seed decides about a schedule before it starts.
type simParams struct {
	machines int
	// feedShards is the store's number of feed shards (1, or 2 or 3 in the shard seeds): each
	// process runs a dispatcher and a subscription per shard.
	feedShards int
	writersOn  []int // machine of each writer
	steady     []bool
	appends    []int
	think      []time.Duration
	startAfter []time.Duration // when each writer begins
	upAfter    []time.Duration // when each machine's process comes up
	offsets    []time.Duration
	drifts     []float64
	subs       []bool // machines with a durable subscription

	minEvents, maxEvents int
	big                  bool
	spread               bool
	quiet, calm          bool
	trueVersion          float64 // how often a writer expects the stream's true version
	// announce is how often a writer announces its append early (Store.Announce) and reads the
	// stream before it appends; announceWindow is the stores' AnnounceWindow.
	announce       float64
	announceWindow time.Duration
	// scavengeInterval is the dispatchers' ScavengeInterval (0: the default).
	scavengeInterval time.Duration

	lease, fenceAfter, poll, maxPoll time.Duration
	dispatcherWeight                 int
	restart, sameOwner               float64       // probabilities that a crashed process comes up again, with its owner name
	restartDelay                     time.Duration // longest a process takes to come up
	drain                            time.Duration // how long processes run on after the writers are gone

	bolt         bool
	pageSize     int
	emptyPages   bool
	feedPageSize int64
	cfg          simsched.Config
}

// simIsBig reports whether a seed makes a big schedule, by default and under the flags.
func simIsBig(seed uint64) bool { return *simBig || (!*simSmall && seed%simBigEvery == 0) }

func simParamsFor(seed uint64, big bool) simParams {
	r := rand.New(rand.NewPCG(seed, 0xd15a7c4))
	dur := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(r.Int64N(int64(hi-lo)+1)) }
	p := simParams{
		machines:         2 + r.IntN(3),
		minEvents:        1,
		maxEvents:        3,
		big:              big,
		spread:           r.Float64() < 0.75,
		trueVersion:      0.1 + 0.15*r.Float64(),
		lease:            dur(time.Second, 1500*time.Millisecond),
		fenceAfter:       dur(150*time.Millisecond, 300*time.Millisecond),
		poll:             dur(80*time.Millisecond, 150*time.Millisecond),
		dispatcherWeight: 1 + r.IntN(3),
		restart:          0.3 + 0.6*r.Float64(),
		sameOwner:        r.Float64(),
		bolt:             seed%simBoltEvery == 3,
		emptyPages:       r.Float64() < 0.5,
		feedPageSize:     int64(25 + r.IntN(75)),
	}
	p.maxPoll = dur(3*p.poll, 5*p.poll)
	// Seed classes: quiet seeds have no steady writers and many pauses and crashes, so that the
	// lease changes hands often between bursts of writes; calm seeds have few faults, so that a
	// dispatcher runs long stretches without a failed step.
	quiet, calm := seed%4 == 1, seed%4 == 2
	p.quiet, p.calm = quiet, calm
	for i := 0; i < p.machines; i++ {
		// In calm seeds the first machine's process comes up first, and takes the lease.
		var up time.Duration
		if calm && i > 0 {
			up = dur(30*time.Millisecond, 200*time.Millisecond)
		}
		p.upAfter = append(p.upAfter, up)
	}
	if quiet {
		// Announced appends that never land wait for a fence as long as by default.
		p.fenceAfter = dur(estuite.DefaultFenceAfter/2, estuite.DefaultFenceAfter*3/2)
	}
	p.restartDelay = dur(0, p.lease/2)
	if r.Float64() < 0.6 {
		p.pageSize = 5 + r.IntN(26)
	}
	switch *simBackend {
	case "mem":
		p.bolt = false
	case "bolt":
		p.bolt = true
	}
	for i := 0; i < p.machines; i++ {
		off := dur(-50*time.Millisecond, 50*time.Millisecond)
		if r.Float64() < 0.3 {
			off = time.Hour * time.Duration(1-2*r.IntN(2)) // an hour ahead or behind
		}
		p.offsets = append(p.offsets, off)
		p.drifts = append(p.drifts, 0.04*r.Float64()-0.02)
		p.subs = append(p.subs, r.Float64() < 0.3)
	}
	writers := 3 + r.IntN(3)
	for i := 0; i < writers; i++ {
		m := i % p.machines // every machine has a writer, some two
		if i >= p.machines {
			m = r.IntN(p.machines)
		}
		if quiet {
			// The first machine only dispatches: its dispatcher outlives the writers' crashes,
			// loses the lease when paused, and comes back to it with what it knew.
			m = 1 + i%(p.machines-1)
		}
		p.writersOn = append(p.writersOn, m)
		// In a calm seed, the first writer is the only steady one, the others start later: the
		// first dispatcher to step finds nothing to do, then may be woken by its own process's
		// writer before anyone else writes.
		steady := !quiet && r.Float64() < 0.35
		if calm {
			steady = i == 0
		}
		p.steady = append(p.steady, steady)
		if steady {
			// A client that writes all the time: its process's dispatcher is woken again and again.
			p.appends = append(p.appends, 60+r.IntN(60)+240*b2i(calm))
			p.think = append(p.think, dur(0, 4*time.Millisecond))
			p.startAfter = append(p.startAfter, dur(0, 200*time.Millisecond))
		} else {
			p.appends = append(p.appends, 10+r.IntN(20))
			p.think = append(p.think, dur(50*time.Millisecond, 600*time.Millisecond))
			p.startAfter = append(p.startAfter, dur(0, 3*time.Second))
		}
	}
	p.cfg = simsched.Config{
		Seed:       seed,
		FailBefore: 0.01 + 0.02*r.Float64(),
		FailAfter:  0.01 + 0.02*r.Float64(),
		Crash:      0.0005 + 0.0025*r.Float64() + 0.004*float64(b2i(quiet)),
		Ghost:      0.005 + 0.015*r.Float64(),
		GhostMin:   1,
		GhostMax:   60,
		Pause:      0.002 + 0.006*r.Float64() + 0.02*float64(b2i(quiet)),
		PauseMin:   20 * time.Millisecond,
		PauseShort: 200 * time.Millisecond,
		PauseLong:  p.lease,
		PauseMax:   p.lease * 2,
		Tick:       2 * time.Millisecond,
		Start:      simStart,
		MaxSteps:   simMaxSteps,
		MaxTime:    30 * time.Minute,
	}
	if calm {
		p.cfg.FailBefore /= 10
		p.cfg.FailAfter /= 10
		p.cfg.Ghost /= 5
		p.cfg.Crash /= 10
	}
	if big {
		// Appends of 50 to 90 events: streams grow past a read page (1,000 versions), and the feed
		// crosses many pages.
		p.minEvents, p.maxEvents = 50, 90
		p.feedPageSize = int64(800 + r.IntN(1500))
		for i := range p.appends {
			p.appends[i] = 30 + r.IntN(30)
			p.think[i] = dur(0, 20*time.Millisecond)
		}
		p.pageSize = 0
	}
	base, _, disruption := simLiveness(p)
	p.drain = base + disruption
	// Early announcements (drawn last, so that the draws above stay as they were): none in some
	// seeds, otherwise for a fifth to two thirds of the appends. The window is as long as the
	// stores may have against these dispatchers' FenceAfter with 2 % drift.
	if r.Float64() >= 0.25 {
		p.announce = 0.2 + 0.45*r.Float64()
	}
	p.announceWindow = p.fenceAfter * 45 / 100
	// In the deletion seeds the lease holders scavenge often, so that passes meet appends,
	// deletes and dispatch under way (elsewhere the default interval: a pass when a holder
	// starts).
	if simDeletes(seed) {
		p.scavengeInterval = dur(30*time.Millisecond, 300*time.Millisecond)
	}
	p.feedShards = 1
	if simShards(seed) {
		p.feedShards = 2 + int(seed/5)%2
	}
	return p
}

// simShards reports whether a seed runs a store of several feed shards (a fifth of the seeds).
func simShards(seed uint64) bool { return seed%5 == 2 }

// simFeedShardOf is the store's feed shard function (feedShardOf), repeated as simShardOf is.
func simFeedShardOf(name string, shards int) int {
	if shards <= 1 {
		return 0
	}
	sum := sha256.Sum256([]byte(name))
	return int((uint32(sum[4])<<24 | uint32(sum[5])<<16 | uint32(sum[6])<<8 | uint32(sum[7])) % uint32(shards))
}

// simLiveness returns how long, in virtual time, a stored event may wait for the feed while the
// processes run (while writers write, and for p.drain after): base when nothing disturbs the
// lease holder, plus an extra allowance for each disruption of the lease from disruption before
// the event was stored until now. The terms:
//
//   - base = 2·maxPoll + fenceAfter/4 + 1.5 s. The holder finds another process's append at its
//     next scan of the shard: an idle dispatcher looks at least every maxPoll (its poll backs off
//     up to it), one that waits for an announced append every fenceAfter/4, one woken by its own
//     process's append after DefaultLinger; a step that fails (a storage error) is followed by a
//     poll. The 1.5 s are for the steps themselves: each call lasts Tick (2 ms) and waits its turn
//     behind the other actors' calls (about ten); a step makes a few dozen calls, up to a few
//     hundred with small storage pages, empty pages and small feed pages (a rollover confirms
//     every stream's progress), and a step that fails part-way starts again. Over 400 seeds of
//     correct code the longest wait less the disruptions' allowance was 0.96 s.
//   - takeover = lease·(1+δ)/(1−δ) + lease/3, δ = 2 % drift: a holder that stopped renewing loses
//     the lease once the others have seen it unchanged for one lease on their own clocks (which
//     may run slow against the holder's), looking every lease/3.
//   - a crash of the holder's process allows takeover + restartDelay more (if every process is
//     down, the next comes up within restartDelay), and so does a crash of any process while the
//     holder is dead (it may have been taking the lease over); a pause of the holder's dispatcher for d
//     (or of any dispatcher while the holder is dead: it may be the next holder) allows d more,
//     and takeover more if d ≥ lease/2 (it may lose the lease meanwhile); a change
//     of holder allows maxPoll + 1 s more (the new holder's view of the feed page may be stale:
//     one failed feed write, a poll, and the step again).
//   - disruption = takeover + PauseMax + restartDelay bounds the extra of one disruption; it is
//     also how far back disruptions count.
//
// The summary of a seed reports the longest wait, and the longest wait less the disruptions'
// allowance (the "calm" wait, to compare with base). A defect that starves a shard makes events
// wait for as long as the holder's process writes; one that stalls the lease, an hour.
func simLiveness(p simParams) (base, takeover, disruption time.Duration) {
	const drift = 0.02
	takeover = time.Duration(float64(p.lease)*(1+drift)/(1-drift)) + p.lease/3
	return 2*p.maxPoll + p.fenceAfter/4 + 1500*time.Millisecond, takeover, takeover + p.cfg.PauseMax + p.restartDelay
}

// simPerEvent is how much longer, in virtual time, each event of the backlog may make an event
// wait for the feed. Storage calls go through one gate, one at a time, each for Tick; with every
// actor at the gate, the dispatcher gets one call in actors. It moves up to 100 events per feed
// write, and reads them, finds and deletes their markers and, after faults, reads again: allow
// four calls per 100 events.
func simPerEvent(p simParams) time.Duration {
	actors := len(p.writersOn) + p.machines + 1 // a writer each, a dispatcher per machine, a stepper
	for _, sub := range p.subs {
		actors += b2i(sub)
	}
	return p.cfg.Tick * time.Duration(actors) * 4 / 100
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// simRun is one schedule being run.
type simRun struct {
	p        simParams
	sched    *simsched.Scheduler
	gated    table.Backend
	world    *simWorld
	machines []*simMachine
	procOf   map[*simsched.Actor]*simProc
	crashRNG *rand.Rand
	restarts int
	crashes  int
}

// open opens a process's store on the gated backend.
func (sim *simRun) open(clock *simsched.Clock) *estuite.Store {
	// Retries without backoff: a random backoff would make virtual time depend on math/rand's
	// global source; the scheduler decides what happens between the tries anyway.
	retry := estuite.RetryPolicy{MaxAttempts: 3}
	o := &estuite.Options{Retry: retry, Now: clock.Now, AnnounceWindow: sim.p.announceWindow, KeyCacheLifetime: simKeyCacheLifetime}
	s, err := estuite.Open(context.Background(), sim.gated, estuite.WithKnownFeedShards(o, sim.p.feedShards))
	if err != nil {
		panic(err) // opening makes no scheduled calls
	}
	return s
}

// simResult is the outcome of one schedule.
type simResult struct {
	problems []string
	hash     uint64
	steps    int
	trace    []string
	summary  string
}

// runSimulation runs one schedule in a synctest bubble of its own.
func runSimulation(t *testing.T, seed uint64, big, trace bool) simResult {
	var res simResult
	p := simParamsFor(seed, big)
	p.cfg.Trace = trace
	restore := estuite.SetFeedPageSize(p.feedPageSize)
	simFeedPageSize = p.feedPageSize
	defer func() { restore(); simFeedPageSize = estuite.FeedPageSize }()
	defer estuite.SetSequentialMetadataReads()()
	dir := ""
	if p.bolt {
		dir = t.TempDir()
	}
	synctest.Test(t, func(t *testing.T) { res = runSimulationInBubble(p, dir) })
	return res
}

func runSimulationInBubble(p simParams, dir string) (res simResult) {
	var backend table.Backend
	if p.bolt {
		b, err := bolt.Open(filepath.Join(dir, "sim.db"), &bolt.Options{NoSync: true})
		if err != nil {
			return simResult{problems: []string{err.Error()}}
		}
		defer b.Close()
		backend = b
	} else {
		backend = mem.New(&mem.Options{PageSize: p.pageSize, EmptyPages: p.emptyPages})
	}
	streams := simStreams(p.spread)
	if p.feedShards > 1 {
		// The store is created with its shards before the schedule starts.
		if _, err := estuite.Open(context.Background(), sharedSimBackend{backend}, &estuite.Options{FeedShards: p.feedShards}); err != nil {
			return simResult{problems: []string{err.Error()}}
		}
	}
	sched := simsched.New(p.cfg)
	sim := &simRun{p: p, sched: sched, gated: simsched.Wrap(backend, sched), procOf: make(map[*simsched.Actor]*simProc),
		crashRNG: rand.New(rand.NewPCG(p.cfg.Seed, 0xc4a54))}
	world := &simWorld{sched: sched, commits: make(map[string]*simCommit), subs: make(map[string][]*simInstance), done: make(map[string]*simHandled)}
	sim.world = world
	world.erase = newSimErasure(p.cfg.Seed)
	if simGroups(p.cfg.Seed) {
		world.group = newSimGroupWorld(p.cfg.Seed)
	}
	del, deleter, deleterOn := newSimDeleter(p, streams)
	world.del = del
	mon, err := newSimMonitor(world, backend, streams, func(s string) int { return simFeedShardOf(s, p.feedShards)*4 + simShardOf(s) })
	if err != nil {
		return simResult{problems: []string{err.Error()}}
	}
	world.mon = mon
	mon.base, mon.takeover, mon.disruption = simLiveness(p)
	mon.handover, mon.lease = p.maxPoll+time.Second, p.lease
	mon.perEvent = simPerEvent(p)
	mon.writersLive = func() bool { return sched.Live("dispatcher") > 0 }
	sched.Check = mon.check
	sched.OnCrash = sim.crashed
	sched.OnPause = sim.paused

	for i := 0; i < p.machines; i++ {
		m := &simMachine{id: i + 1, clock: sched.Clock(p.offsets[i], p.drifts[i]), owner: fmt.Sprintf("m%d", i+1)}
		if p.subs[i] {
			m.sub = fmt.Sprintf("sub-%d", i+1)
		}
		if i == deleterOn {
			m.deleter = deleter
		}
		sim.machines = append(sim.machines, m)
	}
	for i, mi := range p.writersOn {
		name := fmt.Sprintf("w%d", i+1)
		mine := streams
		if p.steady[i] {
			// A steady writer keeps to the streams of one dirty-marker shard, as a service writes
			// to its own aggregates.
			home := simShardOf(streams[i%len(streams)])
			mine = nil
			for _, s := range streams {
				if simShardOf(s) == home {
					mine = append(mine, s)
				}
			}
		}
		sim.machines[mi].writers = append(sim.machines[mi].writers, &simWriter{name: name, world: world,
			r: rand.New(rand.NewPCG(p.cfg.Seed, uint64(i+1))), streams: mine, appends: p.appends[i],
			minEvents: p.minEvents, maxEvents: p.maxEvents, think: p.think[i], trueVersion: p.trueVersion, startAfter: p.startAfter[i],
			announce: p.announce, announceWindow: p.announceWindow, known: make(map[string]int64)})
	}
	for i, m := range sim.machines {
		sim.spawnProcess(m, p.upAfter[i], false)
	}
	sim.spawnForgetter()
	runErr := sched.Run()
	if runErr != nil {
		res.problems = append(res.problems, "scheduler: "+runErr.Error())
	}
	sched.Wait()
	res.hash, res.steps, res.trace = sched.Hash(), sched.Steps(), sched.Trace()
	virtual := sched.Now().Sub(simStart)
	mon.checkWrongVersions()
	res.problems = append(res.problems, sim.checkDeletes()...)

	// The final, fault-free dispatcher, a new process on the same storage.
	final, err := estuite.Open(context.Background(), backend, &estuite.Options{Now: sched.Now})
	if err != nil {
		res.problems = append(res.problems, err.Error())
		return res
	}
	clock := sched.Clock(0, 0)
	var ds []*estuite.Dispatcher // one per feed shard
	for shard := range p.feedShards {
		ds = append(ds, estuite.NewDispatcher(final, &estuite.DispatcherOptions{Shard: shard, Clock: clock, FenceAfter: p.fenceAfter}))
	}
	idle, finalEvents := false, 0
	var finalSteps []string
	for i := 0; i < 30 && !idle; i++ {
		idle = true
		for shard, d := range ds {
			st, err := d.Step(context.Background())
			finalEvents += st.Events
			finalSteps = append(finalSteps, fmt.Sprintf("%+v", st))
			if err != nil {
				res.problems = append(res.problems, fmt.Sprintf("final dispatcher of shard %d, step %d: %v", shard, i+1, err))
				idle = true
				i = 30
				break
			}
			idle = idle && st.Streams == 0
		}
		sched.Advance(p.fenceAfter + time.Millisecond) // let announced appends that never landed be fenced
	}
	if !idle {
		res.problems = append(res.problems, "the final dispatcher did not become idle within 30 steps: "+strings.Join(finalSteps, ", "))
	}
	world.mu.Lock()
	res.problems = append(res.problems, world.problems...)
	world.mu.Unlock()
	problems, feedLen := simCheck(final, backend, world, streams)
	res.problems = append(res.problems, problems...)
	problems, erasure := sim.checkErasure(final, streams)
	res.problems = append(res.problems, problems...)
	if world.del != nil {
		res.problems = append(res.problems, world.del.checkFinalScavenge(final, streams)...)
	}
	problems, groupSummary := sim.checkGroup(final, finalEvents)
	res.problems = append(res.problems, problems...)
	s := world.stats
	kind := "small"
	if p.big {
		kind = "big"
	}
	store := "mem"
	if p.bolt {
		store = "bolt"
	} else if p.pageSize > 0 || p.emptyPages {
		store = fmt.Sprintf("mem(pages of %d, empty pages %v)", p.pageSize, p.emptyPages)
	}
	res.summary = fmt.Sprintf("%s on %s, %d feed shard(s), feed pages of %d; %d machines (clocks %v), %d writers, %d crashes, %d restarts; %d steps in %v virtual; appends: %d ok, %d duplicate, %d wrong version, %d unavailable, %d crashed, %d with their snapshot saved (%d streams end with one), %d commands withdrawn (of those announced early, %.0f%% of all), %d feed entries redacted by the scavenger; subscriptions handled %d positions (%d redelivered); feed %d events (%d by the final dispatcher); longest wait for the feed %v (calm %v, base allowance %v); backlog up to %d events (%v each)",
		kind, store, p.feedShards, p.feedPageSize, p.machines, p.offsets, len(p.writersOn), sim.crashes, sim.restarts, res.steps, virtual.Round(time.Millisecond),
		s.ok, s.dup, s.wev, s.unavailable, s.crashed, s.snapSaved, s.snapshots, s.withdrawn, 100*p.announce, s.redacted, world.handledTotal(), s.redelivered, feedLen, finalEvents, mon.maxWait.Round(time.Millisecond), mon.maxCalm.Round(time.Millisecond), mon.base.Round(time.Millisecond), mon.maxPeak, mon.perEvent) + erasure + del.summary(world) + groupSummary
	return res
}

func simReport(t *testing.T, seed uint64, big bool, res simResult) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d: %d problems (%s)\n", seed, len(res.problems), res.summary)
	for i, p := range res.problems {
		if i == 20 {
			fmt.Fprintf(&b, "  … and %d more\n", len(res.problems)-i)
			break
		}
		fmt.Fprintf(&b, "  - %s\n", p)
	}
	flags := ""
	switch defaultBig := seed%simBigEvery == 0; {
	case big && !defaultBig:
		flags += " -sim.big"
	case !big && defaultBig:
		flags += " -sim.small"
	}
	if *simBackend != "" {
		flags += " -sim.backend=" + *simBackend
	}
	fmt.Fprintf(&b, "replay: go test -run 'TestSimulation$' -sim.seed=%d%s -v .   (add -sim.trace for every storage call)", seed, flags)
	t.Error(b.String())
}

// TestSimulation runs -sim.seeds seeded schedules (or just -sim.seed) of processes under injected
// faults, and checks the store's guarantees while and after each runs.
func TestSimulation(t *testing.T) {
	seeds := make([]uint64, 0, *simSeeds)
	if *simSeed >= 0 {
		seeds = append(seeds, uint64(*simSeed))
	} else {
		for i := 1; i <= *simSeeds; i++ {
			seeds = append(seeds, uint64(i))
		}
	}
	failed := 0
	start := time.Now()
	steps := 0
	for _, seed := range seeds {
		trace := *simTrace && *simSeed >= 0
		res := runSimulation(t, seed, simIsBig(seed), trace)
		steps += res.steps
		if len(res.problems) > 0 && *simTrace && !trace {
			res = runSimulation(t, seed, simIsBig(seed), true)
		}
		if *simTrace && res.trace != nil {
			t.Logf("seed %d schedule:\n%s", seed, strings.Join(res.trace, "\n"))
		}
		if len(res.problems) > 0 {
			simReport(t, seed, simIsBig(seed), res)
			if failed++; failed >= *simMaxFail {
				t.Fatalf("stopping after %d failing seeds", failed)
			}
		} else if len(seeds) == 1 || *simVerbose {
			t.Logf("seed %d: %s", seed, res.summary)
		}
	}
	t.Logf("%d schedules, %d storage calls, %d failed, in %v", len(seeds), steps, failed, time.Since(start).Round(time.Millisecond))
}

// TestSimulationIsDeterministic replays seeds and checks that each gives the same schedule: the
// same calls of the same actors, at the same virtual times, in the same order, with the same
// faults — on both backends, across feed pages, with processes running Start.
func TestSimulationIsDeterministic(t *testing.T) {
	for seed := uint64(1); seed <= 16; seed++ {
		big := seed == 16
		a, b := runSimulation(t, seed, big, false), runSimulation(t, seed, big, false)
		if a.hash != b.hash || a.steps != b.steps {
			a, b = runSimulation(t, seed, big, true), runSimulation(t, seed, big, true)
			i := 0
			for i < len(a.trace) && i < len(b.trace) && a.trace[i] == b.trace[i] {
				i++
			}
			at := func(tr []string) string {
				if i < len(tr) {
					return tr[i]
				}
				return "(end)"
			}
			t.Fatalf("seed %d: two runs differ (%d and %d steps); first difference at step %d:\n  %s\n  %s", seed, a.steps, b.steps, i+1, at(a.trace), at(b.trace))
		}
	}
}

// sharedSimBackend lets a Store be opened on the schedule's backend without owning it.
type sharedSimBackend struct{ table.Backend }

func (sharedSimBackend) Close() error { return nil }
