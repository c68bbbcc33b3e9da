package estuite_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/simsched"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/mem"
	"github.com/google/uuid"
)

// The simulation: writers and dispatchers, each a simulated process, run against one memory
// backend under a cooperative scheduler (internal/simsched) that orders every storage call by a
// seed and injects faults — transient failures before a call takes effect, lost responses after
// it took effect, crashes, and paused dispatchers. After each schedule a fault-free dispatcher
// runs until idle, and the feed is checked against the stream table and against what the
// writers were told.
var (
	simSeeds       = flag.Int("sim.seeds", 120, "simulation: how many schedules TestSimulation runs (seeds 1..n)")
	simSeed        = flag.Int("sim.seed", -1, "simulation: run only this seed")
	simTrace       = flag.Bool("sim.trace", false, "simulation: print the schedule (every storage call) of a failing seed, or of -sim.seed")
	simBig         = flag.Bool("sim.big", false, "simulation: make every schedule a big one (its feed crosses a page)")
	simSmall       = flag.Bool("sim.small", false, "simulation: no big schedules")
	simMaxFail     = flag.Int("sim.maxfail", 5, "simulation: stop after this many failing seeds")
	simRegressions = flag.Bool("sim.regressions", false, "simulation: run TestSimulationRegressions, the seeds of known, unfixed bugs")
	simSpread      = flag.Bool("sim.spread", false, "simulation: spread the streams over several dirty-marker shards (replays may then differ, see simStreams)")
)

const (
	simBigEvery   = 40                    // every 40th seed is a big schedule
	simTick       = 10 * time.Millisecond // virtual time per scheduled call
	simFenceAfter = 200 * time.Millisecond
	simMaxSteps   = 200000
)

// simStreams returns the streams the writers share. The dispatcher deletes resolved markers
// shard by shard in the order of a Go map, which is random: with streams in more than one shard
// the order of a dispatcher's calls, and so a schedule, would not depend on the seed alone. By
// default all streams are taken from one shard (the shard function is repeated here; if it
// changes, TestSimulationIsDeterministic notices). The dispatcher's rollover confirms progress
// rows in map order too, so a big schedule replays exactly only up to its first rollover.
func simStreams(spread bool) []string {
	shardOf := func(name string) int {
		sum := sha256.Sum256([]byte(name))
		return int(uint32(sum[0])<<8|uint32(sum[1])) % 4
	}
	var out []string
	want := shardOf("sim-0")
	for i := 0; len(out) < 4; i++ {
		name := fmt.Sprintf("sim-%d", i)
		if spread || shardOf(name) == want {
			out = append(out, name)
		}
	}
	return out
}

// simParams are what a seed decides about a schedule before it starts.
type simParams struct {
	writers, dispatchers, appends int
	dispatcherWeight              int     // how much likelier a dispatcher is picked than a writer
	restartWriters                float64 // probability that a crashed writer is restarted
	// An append holds minEvents (at least 1) to maxEvents events. A big schedule appends 50 to
	// 90 at a time, so that the feed fills its first page (FeedPageSize positions) and the
	// dispatchers roll over to the next.
	minEvents, maxEvents int
	big                  bool
	cfg                  simsched.Config
}

// simIsBig reports whether a seed makes a big schedule, by default and under the flags.
func simIsBig(seed uint64) bool { return *simBig || (!*simSmall && seed%simBigEvery == 0) }

func simParamsFor(seed uint64, big bool) simParams {
	r := rand.New(rand.NewPCG(seed, 0xd15a7c4))
	if big {
		return simParams{
			writers:          4,
			dispatchers:      2 + r.IntN(2),
			appends:          100 + r.IntN(30),
			minEvents:        50,
			dispatcherWeight: 2 + r.IntN(3),
			restartWriters:   0.5 + 0.5*r.Float64(),
			maxEvents:        90,
			big:              true,
			cfg: simsched.Config{
				Seed:       seed,
				FailBefore: 0.02 + 0.03*r.Float64(),
				FailAfter:  0.02 + 0.03*r.Float64(),
				Crash:      0.002 + 0.008*r.Float64(),
				Pause:      0.02,
				PauseMin:   5,
				PauseMax:   80,
				Tick:       simTick,
				Start:      time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
				MaxSteps:   simMaxSteps,
			},
		}
	}
	return simParams{
		maxEvents:        3,
		writers:          3 + r.IntN(2),
		dispatchers:      2 + r.IntN(2),
		appends:          10 + r.IntN(11),
		dispatcherWeight: 1 + r.IntN(4),
		restartWriters:   r.Float64(),
		cfg: simsched.Config{
			Seed:       seed,
			FailBefore: 0.02 + 0.03*r.Float64(),
			FailAfter:  0.02 + 0.03*r.Float64(),
			Crash:      0.005 + 0.015*r.Float64(),
			Pause:      0.02,
			PauseMin:   5,
			PauseMax:   80,
			Tick:       simTick,
			Start:      time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
			MaxSteps:   simMaxSteps,
		},
	}
}

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
}

// simWorld is what the simulated processes report to the checks.
type simWorld struct {
	mu       sync.Mutex
	commits  map[string]*simCommit
	problems []string
	stats    struct{ ok, dup, wev, unavailable, crashed, steps, stepErrs, fenced int }
}

func (w *simWorld) problem(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.problems = append(w.problems, fmt.Sprintf(format, args...))
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
		if c.state != present {
			c.first, c.last = res.FirstVersion, res.LastVersion
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
		c.state = absent // the store looked for the commit and did not find it
		c.attempts = append(c.attempts, fmt.Sprintf("wrong expected version (actual %d)", wev.Actual))
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

// simWriter is a writer's plan and memory: it appends to the shared streams, new commits with
// random expected versions and retries of its earlier commits with the same commit ID. A writer
// that crashes may be restarted as a new process (a new Store, so no cached heads) that first
// retries the append it was making, then goes on with the plan.
type simWriter struct {
	name                 string
	world                *simWorld
	r                    *rand.Rand
	streams              []string
	appends              int // appends left to make
	minEvents, maxEvents int
	known                map[string]int64 // each stream's version as far as this writer knows
	mine                 []*simCommit     // the commits it made
	inflight             *simCommit       // the commit of the append being made
	exp                  estuite.ExpectedVersion
	failed               bool          // the last append failed
	done                 chan struct{} // closed when the current process's goroutine has returned
}

func (wr *simWriter) run(ctx context.Context, s *estuite.Store, resume bool) {
	defer close(wr.done)
	w, r := wr.world, wr.r
	for ; wr.appends > 0 && ctx.Err() == nil; wr.appends-- {
		var c *simCommit
		var exp estuite.ExpectedVersion
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
			w.mu.Lock()
			w.commits[c.id] = c
			w.mu.Unlock()
			wr.mine = append(wr.mine, c)
		}
		resume = false
		wr.inflight, wr.exp = c, exp
		res, err := s.Append(ctx, c.stream, c.events, &estuite.AppendOptions{CommitID: c.id, Expected: exp})
		crashed := ctx.Err() != nil
		w.record(c, exp, res, err, crashed)
		if crashed {
			return // the process is gone; the append stays in flight for a restarted process
		}
		wr.inflight, wr.failed = nil, err != nil
		var wev *estuite.WrongExpectedVersionError
		switch {
		case err == nil:
			wr.known[c.stream] = max(wr.known[c.stream], res.LastVersion)
		case errors.As(err, &wev):
			wr.known[c.stream] = wev.Actual
		}
	}
}

// simDispatcher steps a dispatcher until the writers are done (or it crashes).
func simDispatcher(ctx context.Context, w *simWorld, sched *simsched.Scheduler, s *estuite.Store) {
	d := estuite.NewDispatcher(s, &estuite.DispatcherOptions{Workers: 1, Clock: simClock{sched}, FenceAfter: simFenceAfter})
	for ctx.Err() == nil && sched.Live("writer") > 0 {
		st, err := d.Step(ctx)
		w.mu.Lock()
		w.stats.steps++
		w.stats.fenced += st.Fenced
		if err != nil {
			w.stats.stepErrs++
		}
		w.mu.Unlock()
		if errors.Is(err, estuite.ErrCorrupt) {
			w.problem("dispatcher step: %v", err)
		}
	}
}

// simClock reads the scheduler's virtual time. Its Wait is not used while dispatchers are
// stepped by hand.
type simClock struct{ s *simsched.Scheduler }

func (c simClock) Now() time.Time { return c.s.Now() }

func (c simClock) Wait(ctx context.Context, d time.Duration, wake <-chan struct{}) (bool, error) {
	c.s.Advance(d)
	return false, ctx.Err()
}

// simResult is the outcome of one schedule.
type simResult struct {
	problems []string
	hash     uint64
	steps    int
	trace    []string
	summary  string
}

func runSimulation(seed uint64, big, trace bool) simResult {
	p := simParamsFor(seed, big)
	p.cfg.Trace = trace
	streams := simStreams(*simSpread)
	backend := mem.New(nil)
	sched := simsched.New(p.cfg)
	gated := simsched.Backend{Inner: backend, S: sched}
	world := &simWorld{commits: make(map[string]*simCommit)}
	retry := estuite.RetryPolicy{MaxAttempts: 3, BaseDelay: time.Microsecond, MaxDelay: time.Microsecond}
	open := func() *estuite.Store {
		s, err := estuite.Open(context.Background(), gated, &estuite.Options{Retry: retry, Now: sched.Now})
		if err != nil {
			panic(err) // opening makes no storage calls on the memory backend
		}
		return s
	}

	spawnDispatcher := func(name string) {
		s := open()
		sched.Spawn(simsched.ActorOptions{Name: name, Kind: "dispatcher", Pausable: true, Weight: p.dispatcherWeight}, func(ctx context.Context) {
			simDispatcher(ctx, world, sched, s)
		})
	}
	writers := make(map[string]*simWriter)
	spawnWriter := func(name string, wr *simWriter, resume bool) {
		s := open()
		prev := wr.done
		wr.done = make(chan struct{})
		sched.Spawn(simsched.ActorOptions{Name: name, Kind: "writer"}, func(ctx context.Context) {
			if prev != nil {
				<-prev // the crashed process has finished with the writer's memory
			}
			wr.run(ctx, s, resume)
		})
	}
	restarts, writerRestarts := 0, 0
	crashRNG := rand.New(rand.NewPCG(seed, 0xc4a54))
	sched.OnCrash = func(a *simsched.Actor) {
		base := strings.Split(a.Name, ".")[0]
		switch {
		case a.Kind == "dispatcher":
			restarts++
			spawnDispatcher(fmt.Sprintf("%s.%d", base, restarts))
		case a.Kind == "writer" && crashRNG.Float64() < p.restartWriters:
			// A new process of the same writer retries the append in flight, then goes on.
			writerRestarts++
			spawnWriter(fmt.Sprintf("%s.%d", base, writerRestarts), writers[base], true)
		}
	}
	for i := 1; i <= p.writers; i++ {
		name := fmt.Sprintf("w%d", i)
		writers[name] = &simWriter{name: name, world: world, r: rand.New(rand.NewPCG(seed, uint64(i))),
			streams: streams, appends: p.appends, minEvents: p.minEvents, maxEvents: p.maxEvents, known: make(map[string]int64)}
		spawnWriter(name, writers[name], false)
	}
	for i := 1; i <= p.dispatchers; i++ {
		spawnDispatcher(fmt.Sprintf("d%d", i))
	}
	runErr := sched.Run()
	var res simResult
	if runErr != nil {
		res.problems = append(res.problems, "scheduler: "+runErr.Error())
		waited := make(chan struct{})
		go func() { sched.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(10 * time.Second):
			res.problems = append(res.problems, "actors still running 10s after the schedule was abandoned")
			return res
		}
	} else {
		sched.Wait()
	}
	res.hash, res.steps, res.trace = sched.Hash(), sched.Steps(), sched.Trace()

	// The final, fault-free dispatcher, a new process on the same storage.
	final, err := estuite.Open(context.Background(), backend, &estuite.Options{Now: sched.Now})
	if err != nil {
		res.problems = append(res.problems, err.Error())
		return res
	}
	res.problems = append(res.problems, world.problems...)
	d := estuite.NewDispatcher(final, &estuite.DispatcherOptions{Clock: simClock{sched}, FenceAfter: simFenceAfter})
	idle, finalEvents := false, 0
	var finalSteps []string
	for i := 0; i < 20 && !idle; i++ {
		st, err := d.Step(context.Background())
		finalEvents += st.Events
		finalSteps = append(finalSteps, fmt.Sprintf("%+v", st))
		if err != nil {
			res.problems = append(res.problems, fmt.Sprintf("final dispatcher step %d: %v", i+1, err))
			break
		}
		idle = st.Streams == 0
		sched.Advance(simFenceAfter + simTick) // let announced appends that never landed be fenced
	}
	if !idle {
		res.problems = append(res.problems, "the final dispatcher did not become idle within 20 steps: "+strings.Join(finalSteps, ", "))
	}
	problems, feedLen := simCheck(final, backend, world, streams)
	res.problems = append(res.problems, problems...)
	s := world.stats
	kind := "small"
	if p.big {
		kind = "big"
	}
	res.summary = fmt.Sprintf("%s: %d writers × %d appends (%d restarts), %d dispatchers (%d restarts); %d steps; appends: %d ok, %d duplicate, %d wrong version, %d unavailable, %d crashed; dispatch steps %d (%d errors), %d fences; feed %d events (%d by the final dispatcher)",
		kind, p.writers, p.appends, writerRestarts, p.dispatchers, restarts, res.steps, s.ok, s.dup, s.wev, s.unavailable, s.crashed, s.steps, s.stepErrs, s.fenced, feedLen, finalEvents)
	return res
}

// simCheck checks the stream table against what the writers were told, and the feed against
// the stream table. It reads with a fault-free store.
func simCheck(s *estuite.Store, backend *mem.Backend, world *simWorld, streams []string) (problems []string, feedLen int) {
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	ctx := context.Background()

	// No dirty marker is left.
	events, err := backend.Table(estuite.DefaultTablePrefix + "events")
	if err != nil {
		return []string{err.Error()}, 0
	}
	var left []string
	for shard := 0; shard < 4; shard++ {
		pk := fmt.Sprintf("dirty%02d", shard)
		p, err := events.Query(ctx, table.Query{PartitionKey: pk})
		if err != nil {
			bad("reading %s: %v", pk, err)
			continue
		}
		for _, row := range p.Entities {
			left = append(left, fmt.Sprintf("%v %v-%v", row.Properties["Stream"], row.Properties["First"], row.Properties["Announced"]))
		}
	}
	if len(left) > 0 {
		if len(left) > 6 {
			left = append(left[:6], fmt.Sprintf("… %d in all", len(left)))
		}
		bad("dirty markers left after the final dispatcher: %s", strings.Join(left, ", "))
	}

	// The streams hold each commit once, contiguously, at the versions its writer was told.
	stored := make(map[string][]estuite.RecordedEvent)
	seen := make(map[string]int64) // commit ID → first version stored
	for _, stream := range streams {
		var got []estuite.RecordedEvent
		r, err := s.Read(ctx, stream, nil)
		if err != nil && !errors.Is(err, estuite.ErrStreamNotFound) {
			bad("Read(%s): %v", stream, err)
			continue
		}
		if err == nil {
			for e, err := range r.Events {
				if err != nil {
					bad("Read(%s): %v", stream, err)
					break
				}
				got = append(got, e)
			}
			if int64(len(got)) != r.Version {
				bad("%s: version %d, but %d events read", stream, r.Version, len(got))
			}
		}
		stored[stream] = got
		for i := 0; i < len(got); {
			e := got[i]
			c := world.commits[e.CommitID]
			if c == nil || c.stream != stream {
				bad("%s version %d: commit %q that no writer made to this stream", stream, e.Version, e.CommitID)
				i++
				continue
			}
			if _, dup := seen[c.id]; dup {
				bad("%s version %d: commit %s stored a second time (first at %d)", stream, e.Version, c.id, seen[c.id])
			}
			seen[c.id] = e.Version
			for k, want := range c.events {
				if i+k >= len(got) || got[i+k].CommitID != c.id {
					bad("%s: commit %s is cut short at version %d", stream, c.id, e.Version+int64(k))
					break
				}
				g := got[i+k]
				if g.Type != want.Type || string(g.Data) != string(want.Data) || (want.ID != uuid.Nil && g.ID != want.ID) {
					bad("%s version %d holds %s %s %s; commit %s has %s %s %s there", stream, g.Version, g.Type, g.Data, g.ID, c.id, want.Type, want.Data, want.ID)
				}
			}
			i += len(c.events)
		}
	}
	for _, c := range world.commits {
		first, stored := seen[c.id]
		switch {
		case c.state == present && !stored:
			bad("commit %s was reported committed at %d-%d, but %s does not hold it (attempts: %v)", c.id, c.first, c.last, c.stream, c.attempts)
		case c.state == present && first != c.first:
			bad("commit %s was reported committed at %d-%d, but %s holds it from version %d (attempts: %v)", c.id, c.first, c.last, c.stream, first, c.attempts)
		case c.state == absent && stored:
			bad("commit %s was refused (or never landed), but %s holds it from version %d (attempts: %v)", c.id, c.stream, first, c.attempts)
		}
	}

	// The feed: positions 1..n without a gap, every stored event exactly once, nothing else, each
	// stream in version order.
	var feed []estuite.FeedEvent
	after := int64(0)
	for {
		page, err := s.ReadFeed(ctx, &estuite.FeedOptions{After: after})
		if err != nil {
			bad("ReadFeed after %d: %v", after, err)
			break
		}
		feed = append(feed, page.Events...)
		if page.Next == after {
			break
		}
		after = page.Next
	}
	last := make(map[string]int64)
	for i, ev := range feed {
		if ev.Position != int64(i+1) {
			bad("feed position %d holds position %d", i+1, ev.Position)
			break
		}
		if ev.Version != last[ev.Stream]+1 {
			bad("feed position %d: %s version %d follows version %d", ev.Position, ev.Stream, ev.Version, last[ev.Stream])
		}
		last[ev.Stream] = max(last[ev.Stream], ev.Version)
		st, ok := stored[ev.Stream]
		if !ok || ev.Version < 1 || ev.Version > int64(len(st)) {
			bad("feed position %d: %s version %d is not in the stream table", ev.Position, ev.Stream, ev.Version)
			continue
		}
		want := st[ev.Version-1]
		if ev.ID != want.ID || ev.CommitID != want.CommitID || ev.Type != want.Type || string(ev.Data) != string(want.Data) {
			bad("feed position %d: %s version %d is %s/%s %s; the stream holds %s/%s %s", ev.Position, ev.Stream, ev.Version, ev.CommitID, ev.ID, ev.Data, want.CommitID, want.ID, want.Data)
		}
	}
	total := 0
	for _, stream := range streams {
		total += len(stored[stream])
		if last[stream] != int64(len(stored[stream])) {
			bad("%s is at version %d, the feed holds it up to version %d", stream, len(stored[stream]), last[stream])
		}
	}
	if total != len(feed) {
		bad("the feed holds %d events, the streams %d", len(feed), total)
	}
	if head, err := s.FeedHead(ctx); err != nil || head != int64(len(feed)) {
		bad("FeedHead = %d, %v; the feed holds %d events", head, err, len(feed))
	}
	return problems, len(feed)
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
	if *simSpread {
		flags += " -sim.spread"
	}
	fmt.Fprintf(&b, "replay: go test -run 'TestSimulation$' -sim.seed=%d%s -v .   (add -sim.trace for every storage call)", seed, flags)
	t.Error(b.String())
}

// TestSimulation runs -sim.seeds seeded schedules (or just -sim.seed) of writers and dispatchers
// under injected faults, and checks the store's guarantees after each.
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
		res := runSimulation(seed, simIsBig(seed), trace)
		steps += res.steps
		if len(res.problems) > 0 && *simTrace && !trace {
			res = runSimulation(seed, simIsBig(seed), true)
		}
		if *simTrace && res.trace != nil {
			t.Logf("seed %d schedule:\n%s", seed, strings.Join(res.trace, "\n"))
		}
		if len(res.problems) > 0 {
			simReport(t, seed, simIsBig(seed), res)
			if failed++; failed >= *simMaxFail {
				t.Fatalf("stopping after %d failing seeds", failed)
			}
		} else if len(seeds) == 1 {
			t.Logf("seed %d: %s", seed, res.summary)
		}
	}
	t.Logf("%d schedules, %d storage calls, %d failed, in %v", len(seeds), steps, failed, time.Since(start).Round(time.Millisecond))
}

// TestSimulationIsDeterministic replays a few seeds and checks that each gives the same schedule:
// the same calls of the same actors, in the same order, with the same faults.
//
// Big schedules are left out: when the feed's page is full the dispatcher confirms each stream's
// progress in the order of a Go map, which is random.
func TestSimulationIsDeterministic(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		if simIsBig(seed) {
			continue
		}
		a, b := runSimulation(seed, false, false), runSimulation(seed, false, false)
		if a.hash != b.hash || a.steps != b.steps {
			a, b = runSimulation(seed, false, true), runSimulation(seed, false, true)
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

// simRegressions are seeds that found bugs. A seed whose bug is not fixed yet has known set: it is
// run only with -sim.regressions (go test -run TestSimulationRegressions -sim.regressions -v .),
// so that the default run stays green while the fix is under way. Once fixed, clear known.
var simRegressionSeeds = []struct {
	seed  uint64
	big   bool
	known string // the unfixed bug it shows; "" once fixed
}{
	// After a rollover, a stream with no marker in the new page is read from its oldest dirty
	// marker's First version instead of from its progress row (G). When G is 1,000 or more
	// versions past that First, the one-page read holds only dispatched events, plan marks the
	// stream truncated with nothing pending, and every later Step does the same: the stream's
	// newer events never reach the feed and its markers are never deleted.
	//
	// Seed 4: the old marker (sim-0, First 1) comes from a restarted writer (no cached head)
	// whose Exactly(0) append announces versions 1..55 without reading the head (commit's
	// assumeNew), then fails on the head insert of a stream at version ~3000.
	// Fixed: plan reads the stream again from its dispatched version when a truncated read held
	// nothing pending.
	{seed: 4, big: true},
	// Seed 31: the old markers (sim-7, First 1530…) stayed because sim-7 kept a backlog of more
	// than a read page (its steps were truncated, which keeps markers); at the rollover its
	// progress row was confirmed at 2543.
	{seed: 31, big: true},
}

// TestSimulationRegressions replays the seeds that once failed.
func TestSimulationRegressions(t *testing.T) {
	for _, r := range simRegressionSeeds {
		t.Run(fmt.Sprintf("seed=%d/big=%v", r.seed, r.big), func(t *testing.T) {
			if r.known != "" && !*simRegressions {
				t.Skipf("known bug, not fixed yet (run with -sim.regressions): %s", r.known)
			}
			if res := runSimulation(r.seed, r.big, *simTrace); len(res.problems) > 0 {
				simReport(t, r.seed, r.big, res)
			}
		})
	}
}
