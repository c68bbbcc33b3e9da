package estuite_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/simsched"
)

// Consumer groups in the simulation. In the group seeds every process (but the quiet seeds'
// sturdy one) runs a member of one consumer group, an actor of its own, with the machine's clock
// and the seed's lease duration, under the same faults, crashes, restarts and pauses as the
// dispatchers. Its handler takes virtual time (1 to 4 ms), and fails on some events: a few once
// (retried), and one in 40 every time while the schedule runs, so that it is parked and the
// stream's later events wait behind it. The checks:
//
//   - no two members handle one stream at once (their handler calls overlap in virtual time);
//   - a stream's events are first handled in version order;
//   - balance: when no process crashed, restarted or paused in the last four lease durations,
//     the members that ran to the end held every slot, each within one of the others;
//   - after the schedule, with the handler fixed, a replay of every parked event, and a
//     fault-free member on the real loop: every event in the feed is handled, at least once, and
//     nothing stays parked (at-least-once, and the checkpoints never passed an event unhandled).

// simGroups reports whether a seed runs a consumer group (a third of the seeds without deletes:
// a scavenger's redactions would hide versions from the order check).
func simGroups(seed uint64) bool { return seed%3 == 1 && !simDeletes(seed) }

const simGroupName = "projection"

// simGroupWorld is what the group's members did, as the checks see it.
type simGroupWorld struct {
	ranges      int
	handled     map[string]map[int64]bool // stream → versions handled
	busy        map[string]string         // stream → the member in its handler now
	fixed       bool                      // after the schedule: the handler fails no more
	calls       int
	redelivered int
	failed      int
	live        map[string]*estuite.GroupMember // members running now, by name
	ends        map[string][]estuite.GroupSlot  // member → slots held when the first drain ended
	endsAt      time.Time
	balancedAt  time.Time // when the members were last seen balanced
	lastChange  time.Time // the last crash, restart or pause of a process running a member
	stats       estuite.GroupStats
}

func newSimGroupWorld(seed uint64) *simGroupWorld {
	return &simGroupWorld{ranges: 1 + int(seed/3)%3, handled: map[string]map[int64]bool{}, busy: map[string]string{}, ends: map[string][]estuite.GroupSlot{}, live: map[string]*estuite.GroupMember{}}
}

// simEventHash is a hash of the event's stream and version (not its ID: IDs the store generates
// are random, and a schedule must depend on the seed alone).
func simEventHash(ev estuite.FeedEvent) [32]byte {
	return sha256.Sum256(fmt.Appendf(nil, "%s@%d", ev.Stream, ev.Version))
}

// balanced reports whether the members running hold all of the slots, each within one of the
// others.
func (g *simGroupWorld) balanced(slots int) bool {
	if len(g.live) == 0 {
		return false
	}
	held, lo, hi := 0, slots, 0
	for _, m := range g.live {
		n := len(m.Slots())
		held += n
		lo, hi = min(lo, n), max(hi, n)
	}
	return held == slots && hi-lo <= 1
}

// simPoison decides from the event's stream and version alone whether the handler fails on it:
// always (while the schedule runs), once, or never.
func simPoison(ev estuite.FeedEvent) (always, once bool) {
	sum := simEventHash(ev)
	return sum[0]%40 == 0, sum[0]%40 == 1 || sum[0]%40 == 2
}

// groupHandler is the handler of member name.
func (w *simWorld) groupHandler(name string, clock estuite.Clock, failedOnce map[string]bool) func(context.Context, estuite.FeedEvent) error {
	g := w.group
	return func(ctx context.Context, ev estuite.FeedEvent) error {
		w.mu.Lock()
		if other, ok := g.busy[ev.Stream]; ok {
			w.problems = append(w.problems, fmt.Sprintf("group: %s handles %s@%d while %s is handling the stream", name, ev.Stream, ev.Version, other))
		}
		g.busy[ev.Stream] = name
		g.calls++
		w.mu.Unlock()
		sum := simEventHash(ev)
		_, err := clock.Wait(ctx, time.Millisecond*time.Duration(1+sum[1]%4), nil)
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(g.busy, ev.Stream)
		if err != nil {
			return err
		}
		always, once := simPoison(ev)
		key := fmt.Sprintf("%s@%d", ev.Stream, ev.Version)
		if always && !g.fixed || once && !failedOnce[key] {
			failedOnce[key] = true
			g.failed++
			return errors.New("projection failed on " + key)
		}
		seen := g.handled[ev.Stream]
		if seen == nil {
			seen = map[int64]bool{}
			g.handled[ev.Stream] = seen
		}
		if seen[ev.Version] {
			g.redelivered++
			return nil
		}
		if ev.Version > 1 && !seen[ev.Version-1] {
			w.problems = append(w.problems, fmt.Sprintf("group: %s handles %s@%d before version %d was ever handled", name, ev.Stream, ev.Version, ev.Version-1))
		}
		seen[ev.Version] = true
		return nil
	}
}

// groupOptions are the members' options in the seed.
func (sim *simRun) groupOptions(member string, clock estuite.Clock, failedOnce map[string]bool) estuite.GroupOptions {
	o := sim.p
	return estuite.GroupOptions{
		Group: simGroupName, Member: member, Ranges: sim.world.group.ranges,
		Handler:       sim.world.groupHandler(member, clock, failedOnce),
		LeaseDuration: o.lease, Clock: clock,
		MaxRetries: 2, RetryBackoff: 5 * time.Millisecond, MaxRetryBackoff: 20 * time.Millisecond,
		MaxInFlight: 7, CheckpointEvery: 3, CheckpointInterval: 50 * time.Millisecond,
		PollInterval: 20 * time.Millisecond, MaxPollInterval: 200 * time.Millisecond,
	}
}

// spawnMember starts the process's group member: it runs until the writers are gone and the drain
// is over, or the process dies, and records the slots it held at the end.
func (sim *simRun) spawnMember(p *simProc, up func(context.Context, int) bool, writersGone <-chan struct{}) {
	m := p.machine
	w := sim.world
	a := sim.sched.Spawn(simsched.ActorOptions{Name: p.name + "/g", Kind: "member", Pausable: true}, func(ctx context.Context) {
		if !up(ctx, 98) {
			return
		}
		sim.noteMemberChange(sim.sched.Now())
		member, err := p.store.JoinGroup(ctx, sim.groupOptions(m.owner, m.clock, map[string]bool{}))
		if err != nil {
			if ctx.Err() == nil {
				w.problem("group member %s: JoinGroup: %v", p.name, err)
			}
			return
		}
		w.mu.Lock()
		w.group.live[p.name] = member
		w.mu.Unlock()
		// The drain, during which the members are watched for balance: every quarter of a lease,
		// whether the members running hold every slot, each within one of the others.
		select {
		case <-ctx.Done():
		case <-writersGone:
		}
		end := sim.sched.Now().Add(sim.p.drain)
		for ctx.Err() == nil && sim.sched.Now().Before(end) {
			w.mu.Lock()
			if w.group.balanced(sim.p.feedShards * w.group.ranges) {
				w.group.balancedAt = sim.sched.Now()
			}
			w.mu.Unlock()
			if _, err := m.clock.Wait(ctx, max(min(sim.p.lease/4, end.Sub(sim.sched.Now())), time.Millisecond), nil); err != nil {
				break
			}
		}
		w.mu.Lock()
		delete(w.group.live, p.name)
		if ctx.Err() == nil && w.group.endsAt.IsZero() {
			// The first member to finish its drain: every member's slots, at one instant.
			w.group.ends[p.name] = member.Slots()
			for name, other := range w.group.live {
				w.group.ends[name] = other.Slots()
			}
			w.group.endsAt = sim.sched.Now()
		}
		w.mu.Unlock()
		if err := member.Stop(); err != nil && ctx.Err() == nil && errors.Is(err, estuite.ErrCorrupt) {
			w.problem("group member %s: %v", p.name, err)
		}
		st := member.Stats()
		w.mu.Lock()
		w.group.stats.Parked += st.Parked
		w.group.stats.Redelivered += st.Redelivered
		w.group.stats.Taken += st.Taken
		w.mu.Unlock()
	})
	p.actors = append(p.actors, a)
	sim.procOf[a] = p
}

// noteMemberChange records a crash, restart or pause that disturbs the group's balance.
func (sim *simRun) noteMemberChange(until time.Time) {
	if g := sim.world.group; g != nil {
		sim.world.mu.Lock()
		if until.After(g.lastChange) {
			g.lastChange = until
		}
		sim.world.mu.Unlock()
	}
}

// checkGroup runs the final checks of a group seed on the final store.
func (sim *simRun) checkGroup(final *estuite.Store, finalEvents int) (problems []string, summary string) {
	g := sim.world.group
	if g == nil {
		return nil, ""
	}
	p := sim.p
	slots := p.feedShards * g.ranges
	settled := len(g.ends) > 0 && g.endsAt.Sub(g.lastChange) > 4*p.lease
	handledAtEnd := make(map[string]map[int64]bool)
	for s, vs := range g.handled {
		handledAtEnd[s] = maps.Clone(vs)
	}
	// Balance, when the members had time to settle: a storage fault may leave a member without a
	// slot for a look or two, so the members must have been balanced at some point of the last two
	// lease durations, not at every one.
	if settled && g.endsAt.Sub(g.balancedAt) > 2*p.lease {
		problems = append(problems, fmt.Sprintf("group: not balanced in the last %v before the end (%v after the last change; last balanced %v before the end): %v (of %d slots)",
			2*p.lease, g.endsAt.Sub(g.lastChange), g.endsAt.Sub(g.balancedAt), g.ends, slots))
	}
	// The handler is fixed; every parked event is replayed by a fault-free member.
	ctx := context.Background()
	sim.world.mu.Lock()
	g.fixed = true
	sim.world.mu.Unlock()
	parked, err := final.ParkedEvents(ctx, simGroupName, 0)
	if err != nil && !errors.Is(err, estuite.ErrGroupNotFound) {
		return append(problems, fmt.Sprintf("group: ParkedEvents: %v", err)), ""
	}
	if len(parked) > 0 {
		if _, err := final.ReplayParked(ctx, simGroupName, nil); err != nil {
			return append(problems, fmt.Sprintf("group: ReplayParked: %v", err)), ""
		}
	}
	var want []estuite.FeedEvent
	for shard := range p.feedShards {
		for after := int64(0); ; {
			page, err := final.ReadFeed(ctx, &estuite.FeedOptions{Shard: shard, After: after})
			if err != nil {
				return append(problems, fmt.Sprintf("group: reading the feed: %v", err)), ""
			}
			want = append(want, page.Events...)
			if page.Next == after {
				break
			}
			after = page.Next
		}
	}
	// Progress: when the members had settled and the schedule's dispatchers had written the whole
	// feed, the members had handled every event but those parked (and those waiting behind them).
	if settled && finalEvents == 0 {
		blocked := make(map[string]bool)
		var behind []string
		for _, ev := range want {
			if always, _ := simPoison(ev); always {
				blocked[ev.Stream] = true
			}
			if !blocked[ev.Stream] && !handledAtEnd[ev.Stream][ev.Version] {
				behind = append(behind, fmt.Sprintf("%s@%d (shard %d, position %d)", ev.Stream, ev.Version, ev.Shard, ev.Position))
			}
		}
		if len(behind) > 0 {
			problems = append(problems, fmt.Sprintf("group: settled members left %d events unhandled by the end of the schedule: %v", len(behind), behind[:min(len(behind), 10)]))
		}
	}
	missing := func() []string {
		sim.world.mu.Lock()
		defer sim.world.mu.Unlock()
		var out []string
		for _, ev := range want {
			if !g.handled[ev.Stream][ev.Version] {
				out = append(out, fmt.Sprintf("%s@%d (shard %d, position %d)", ev.Stream, ev.Version, ev.Shard, ev.Position))
			}
		}
		return out
	}
	clock := sim.sched.Clock(0, 0)
	m, err := final.JoinGroup(ctx, sim.groupOptions("final", clock, map[string]bool{}))
	if err != nil {
		return append(problems, fmt.Sprintf("group: the final member: %v", err)), ""
	}
	// Twenty leases, and the handler's time for every event (4 ms at most each).
	deadline := sim.sched.Now().Add(20*p.lease + time.Duration(len(want))*5*time.Millisecond)
	var left []string
	var stillParked []estuite.ParkedEvent
	for {
		left = missing()
		stillParked, err = final.ParkedEvents(ctx, simGroupName, 0)
		if len(left) == 0 && err == nil && len(stillParked) == 0 || !sim.sched.Now().Before(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := m.Stop(); err != nil {
		problems = append(problems, fmt.Sprintf("group: the final member stopped with %v", err))
	}
	if len(left) > 0 {
		problems = append(problems, fmt.Sprintf("group: %d events in the feed never handled, %v after the final member joined: %v", len(left), deadline.Sub(sim.sched.Now()), left[:min(len(left), 10)]))
	}
	if len(stillParked) > 0 {
		problems = append(problems, fmt.Sprintf("group: %d events still parked after the replay: %+v", len(stillParked), stillParked[:min(len(stillParked), 5)]))
	}
	ends := make([]string, 0, len(g.ends))
	for member, s := range g.ends {
		ends = append(ends, fmt.Sprintf("%s:%d", member, len(s)))
	}
	slices.Sort(ends)
	fst := m.Stats()
	summary = fmt.Sprintf("; group of %d slots: %d handler calls (%d failed), %d redelivered (members counted %d), %d parked (%d replayed at the end), slots at the end %v",
		slots, g.calls, g.failed, g.redelivered, g.stats.Redelivered+fst.Redelivered, g.stats.Parked+fst.Parked, len(parked), ends)
	return problems, summary
}
