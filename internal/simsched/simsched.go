// Package simsched is a cooperative scheduler for deterministic simulation tests of code written
// against the table contract.
//
// A Scheduler must be created and run inside a testing/synctest bubble: the bubble's fake clock
// is the simulation's virtual time. Every actor (a writer, a dispatcher, a subscriber, …) runs in
// goroutines of its own and carries itself in its context. Every storage call of a table opened
// through Backend blocks at a gate until the scheduler picks it. Between calls an actor may also
// sleep or wait on timers and channels — the code under test uses time.Sleep, time.NewTimer and
// the Clocks this package hands out — and those waits pass in virtual time: the bubble's clock
// only moves when every goroutine is blocked, so a schedule does not depend on the machine's
// speed.
//
// The scheduler waits until every goroutine of the bubble is durably blocked (synctest.Wait):
// each live actor is then either at the gate or waiting for virtual time or a channel. It picks
// one of the actors at the gate with a seeded random number generator and decides, with the same
// generator, what happens to that call: nothing, a transient failure before it takes effect, a
// transient failure after it took effect (a lost response), a crash (the call fails before it
// takes effect and the actor dies: its context is canceled and every later call fails at once,
// without reaching storage), or — for writes — a ghost: the caller gets a transient error at once
// and the write lands some steps later, after the caller has moved on. A pausable actor may also
// be paused: left blocked at its call for a span of virtual time while the others run. Each call
// lasts Tick of virtual time. When no actor is at the gate, the scheduler lets virtual time run
// to the next timer of the bubble.
//
// A Check hook runs at every settled point, before the pick, and may read the storage behind the
// gate directly; OnCrash and OnPause tell the simulation what the scheduler did to an actor.
//
// Storage calls are thus strictly sequential, and a schedule depends only on the seed, provided
// that each actor makes its calls one at a time and in an order that depends only on what storage
// answered and on virtual time, and that goroutines of one process woken at the same instant do
// not race for shared state (the simulation staggers them). Run reports an actor that makes two
// calls at once.
package simsched

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing/synctest"
	"time"

	"github.com/estuite/estuite/table"
)

// Fault is what the scheduler does to a call.
type Fault int

// Faults.
const (
	NoFault    Fault = iota
	FailBefore       // a transient error; the call does not reach storage
	FailAfter        // the call takes effect, then a transient error (a lost response)
	Crash            // FailBefore, and the actor dies
	Ghost            // a transient error at once; the write lands later (writes only)
)

func (f Fault) String() string {
	switch f {
	case NoFault:
		return "ok"
	case FailBefore:
		return "fail-before"
	case FailAfter:
		return "fail-after"
	case Crash:
		return "CRASH"
	case Ghost:
		return "ghost"
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// ErrInjected is the cause inside the transient errors of injected faults.
var ErrInjected = errors.New("simsched: injected fault")

// Config configures a Scheduler.
type Config struct {
	Seed uint64
	// Probabilities of each fault, per call.
	FailBefore, FailAfter, Crash float64
	// Ghost is the probability, per write, that the caller gets a transient error at once and
	// the write is applied GhostMin to GhostMax steps later (as when a request that timed out on
	// the client still reaches the server).
	Ghost              float64
	GhostMin, GhostMax int
	// Pause is the probability that a picked pausable actor is paused instead: half the pauses
	// last PauseMin to PauseShort, the others PauseLong to PauseMax of virtual time.
	Pause                float64
	PauseMin, PauseShort time.Duration
	PauseLong, PauseMax  time.Duration
	// Tick is how long each call lasts in virtual time; Start is the virtual time when the
	// scheduler is created.
	Tick  time.Duration
	Start time.Time
	// MaxSteps bounds the calls of one run, MaxTime its virtual time; 0 means unbounded.
	MaxSteps int
	MaxTime  time.Duration
	// Idle is how much virtual time may pass with no actor at a call before Run gives up on a
	// deadlock. Default one hour.
	Idle time.Duration
	// Trace keeps a readable line per step (Trace returns them); the hash is always kept.
	Trace bool
}

type state int

const (
	running state = iota // between calls (perhaps waiting for virtual time)
	waiting              // blocked at a call
	done
	crashed
)

type call struct {
	desc  string
	write bool
	reply chan Fault
}

type actorKey struct{}

// ghostWrite is a write whose caller was told it failed; it lands at step due.
type ghostWrite struct {
	due   int
	desc  string
	apply func() error
	wrote []Written
}

// Written names a partition a write changed (or may have changed).
type Written struct {
	Table, PartitionKey string
}

// Settled is what Check is told: the step count, the virtual time, and the partitions written
// since the last Check.
type Settled struct {
	Step  int
	Now   time.Time
	Wrote []Written
}

// Scheduler runs actors one storage call at a time.
type Scheduler struct {
	cfg   Config
	rng   *rand.Rand
	epoch time.Time // the bubble's time when New ran

	mu      sync.Mutex
	changed chan struct{} // capacity 1: an actor arrived at a call or finished
	actors  []*Actor      // every actor ever spawned, by ID
	steps   int
	trace   []string
	hash    uint64
	errs    []error
	wg      sync.WaitGroup
	ghosts  []*ghostWrite
	wrote   []Written
	gone    map[string]chan struct{} // kind → closed once no actor of the kind is live

	// OnCrash, when set, is called by Run (outside the scheduler's lock) after an actor crashed
	// at a call, for example to crash the rest of its process or start a replacement.
	OnCrash func(a *Actor)
	// OnPause, when set, is called by Run (outside the scheduler's lock) when it pauses an
	// actor at its call for d of virtual time.
	OnPause func(a *Actor, d time.Duration)
	// Check, when set, is called by Run whenever every actor is settled, before the next pick
	// (and again after ghost writes landed). Nothing else runs meanwhile: it may read the
	// storage behind the gate directly.
	Check func(Settled)
}

// New returns a scheduler. It must be called inside a synctest bubble, where Run runs too.
func New(cfg Config) *Scheduler {
	if cfg.Idle <= 0 {
		cfg.Idle = time.Hour
	}
	if cfg.PauseShort < cfg.PauseMin {
		cfg.PauseShort = cfg.PauseMin
	}
	if cfg.PauseLong < cfg.PauseShort {
		cfg.PauseLong = cfg.PauseShort
	}
	if cfg.PauseMax < cfg.PauseLong {
		cfg.PauseMax = cfg.PauseLong
	}
	if cfg.GhostMax < cfg.GhostMin {
		cfg.GhostMax = cfg.GhostMin
	}
	h := fnv.New64a()
	return &Scheduler{
		cfg:     cfg,
		rng:     rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5eed5eed5eed5eed)),
		epoch:   time.Now(),
		changed: make(chan struct{}, 1),
		hash:    h.Sum64(),
		gone:    make(map[string]chan struct{}),
	}
}

// Now is the virtual time: Config.Start plus the time passed in the bubble since New.
func (s *Scheduler) Now() time.Time { return s.cfg.Start.Add(time.Since(s.epoch)) }

// Advance lets d of virtual time pass (for work done after Run, without actors).
func (s *Scheduler) Advance(d time.Duration) { time.Sleep(d) }

// Steps returns how many calls have been scheduled.
func (s *Scheduler) Steps() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.steps
}

// Hash identifies the schedule so far: every step's actor, call and fault.
func (s *Scheduler) Hash() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hash
}

// Trace returns one line per step when Config.Trace is set.
func (s *Scheduler) Trace() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.trace)
}

// Note adds a line to the trace (and the hash), for events of the simulation that are not
// storage calls (a process restarting, a check failing).
func (s *Scheduler) Note(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.record(fmt.Sprintf("%6s %s", "", fmt.Sprintf(format, args...)))
}

func (s *Scheduler) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// errDead is what the calls of a crashed actor return: the process is gone.
func errDead() error { return &table.TransientError{Err: context.Canceled} }

// enter blocks the calling actor at the gate until the scheduler picks its call, and returns the
// fault decided for it. A crashed actor's calls return an error at once.
func (s *Scheduler) enter(ctx context.Context, desc string, write bool) (Fault, error) {
	a, _ := ctx.Value(actorKey{}).(*Actor)
	if a == nil || a.s != s {
		s.mu.Lock()
		s.errs = append(s.errs, fmt.Errorf("simsched: storage call outside an actor: %s", desc))
		s.mu.Unlock()
		return NoFault, fmt.Errorf("%w: simsched: storage call outside an actor", table.ErrInvalid)
	}
	s.mu.Lock()
	if a.state == crashed || a.state == done {
		s.mu.Unlock()
		return Crash, errDead()
	}
	if len(a.pending) > 0 {
		// The actor runs two calls at once: the order of its calls may depend on the Go
		// scheduler. Tolerate it (the calls are picked in order of description) but report it.
		s.errs = append(s.errs, fmt.Errorf("simsched: actor %s made concurrent storage calls: %q and %q", a.Name, a.pending[0].desc, desc))
	}
	a.calls++
	if time.Now().After(a.lastDone) {
		a.idles++
	}
	c := &call{desc: desc, write: write, reply: make(chan Fault, 1)}
	a.pending = append(a.pending, c)
	a.state = waiting
	s.mu.Unlock()
	s.signal()
	f := <-c.reply
	if f == Crash {
		return f, errDead()
	}
	return f, nil
}

// outcome notes what the call just run answered, on the last trace line. Only the running actor
// calls it, so the line is the one of its call.
func (s *Scheduler) outcome(err error) {
	if !s.cfg.Trace {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.trace); n > 0 {
		if err != nil {
			s.trace[n-1] += "  → " + err.Error()
		} else {
			s.trace[n-1] += "  → ok"
		}
	}
}

// wrote notes partitions a write changed, for the next Check.
func (s *Scheduler) noteWrites(w []Written) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wrote = append(s.wrote, w...)
}

// ghost queues a write that will land later.
func (s *Scheduler) ghost(desc string, wrote []Written, apply func() error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	due := s.steps + s.cfg.GhostMin + s.rng.IntN(s.cfg.GhostMax-s.cfg.GhostMin+1)
	s.ghosts = append(s.ghosts, &ghostWrite{due: due, desc: desc, apply: apply, wrote: wrote})
}

// Crash kills an actor as if its next call had crashed: its context is canceled and its calls
// fail at once. For crashing the rest of a process from OnCrash.
func (s *Scheduler) Crash(a *Actor) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a.state == running || a.state == waiting {
		s.record(fmt.Sprintf("%6s %-6s CRASH with its process", "", a.Name))
		s.kill(a)
	}
}

func (s *Scheduler) kill(a *Actor) {
	a.state = crashed
	a.cancel()
	for _, p := range a.pending {
		p.reply <- Crash
	}
	a.pending = nil
}

// check runs Check with what was written since the last one.
func (s *Scheduler) check() {
	s.mu.Lock()
	st := Settled{Step: s.steps, Now: s.Now(), Wrote: s.wrote}
	s.wrote = nil
	s.mu.Unlock()
	if s.Check != nil {
		s.Check(st)
	}
}

// landGhosts applies the ghost writes that are due, in the order they were made.
func (s *Scheduler) landGhosts() bool {
	s.mu.Lock()
	var due []*ghostWrite
	s.ghosts = slices.DeleteFunc(s.ghosts, func(g *ghostWrite) bool {
		if g.due <= s.steps {
			due = append(due, g)
			return true
		}
		return false
	})
	s.mu.Unlock()
	for _, g := range due {
		err := g.apply()
		s.mu.Lock()
		line := fmt.Sprintf("%6s %-6s %-11s %s", "", "", "GHOST-LANDS", g.desc)
		if err != nil {
			line += "  → " + err.Error()
		} else {
			s.wrote = append(s.wrote, g.wrote...)
		}
		s.record(line)
		s.mu.Unlock()
	}
	return len(due) > 0
}

// Run schedules the actors' calls until every actor has finished or crashed. It returns an
// error when the schedule broke the scheduler's assumptions (a deadlock, MaxSteps, MaxTime,
// concurrent calls of one actor, a call outside an actor).
func (s *Scheduler) Run() error {
	for {
		synctest.Wait()
		// Signals sent before now are stale: every arrival so far is in the actors' states.
		select {
		case <-s.changed:
		default:
		}
		s.check()
		if s.landGhosts() {
			s.check()
		}
		s.mu.Lock()
		for kind, ch := range s.gone {
			if s.live(kind) == 0 && !isClosed(ch) && slices.ContainsFunc(s.actors, func(a *Actor) bool { return a.Kind == kind }) {
				close(ch)
			}
		}
		live, ready := false, []*Actor(nil)
		for _, a := range s.actors {
			switch a.state {
			case waiting:
				ready = append(ready, a)
				live = true
			case running:
				live = true
			}
		}
		if !live {
			err := errors.Join(s.errs...)
			s.mu.Unlock()
			return err
		}
		now := time.Now()
		if s.cfg.MaxSteps > 0 && s.steps >= s.cfg.MaxSteps || s.cfg.MaxTime > 0 && s.Now().Sub(s.cfg.Start) > s.cfg.MaxTime {
			s.killAll()
			s.errs = append(s.errs, fmt.Errorf("simsched: no end after %d steps, %v of virtual time", s.steps, s.Now().Sub(s.cfg.Start)))
			err := errors.Join(s.errs...)
			s.mu.Unlock()
			return err
		}
		eligible := make([]*Actor, 0, len(ready))
		wake := now.Add(s.cfg.Idle) // when to look again if nothing is eligible
		for _, a := range ready {
			if !a.pausedUntil.After(now) {
				eligible = append(eligible, a)
			} else if a.pausedUntil.Before(wake) {
				wake = a.pausedUntil
			}
		}
		if len(eligible) == 0 {
			// Nothing to pick: let virtual time run until an actor arrives at a call or a pause
			// ends.
			s.mu.Unlock()
			t := time.NewTimer(wake.Sub(now))
			select {
			case <-s.changed:
				t.Stop()
			case <-t.C:
				if len(ready) == 0 {
					s.mu.Lock()
					var names []string
					for _, a := range s.actors {
						if a.state == running {
							names = append(names, a.Name)
						}
					}
					if len(names) == 0 {
						s.mu.Unlock()
						continue
					}
					s.killAll()
					s.errs = append(s.errs, fmt.Errorf("simsched: deadlock: actors %v reached no storage call in %v of virtual time", names, s.cfg.Idle))
					err := errors.Join(s.errs...)
					s.mu.Unlock()
					return err
				}
			}
			continue
		}
		total := 0
		for _, e := range eligible {
			total += e.Weight
		}
		a, pick := eligible[0], s.rng.IntN(total)
		for _, e := range eligible {
			if pick -= e.Weight; pick < 0 {
				a = e
				break
			}
		}
		if a.Pausable && s.cfg.Pause > 0 && s.rng.Float64() < s.cfg.Pause {
			lo, hi := s.cfg.PauseMin, s.cfg.PauseShort
			if s.rng.IntN(2) == 1 {
				lo, hi = s.cfg.PauseLong, s.cfg.PauseMax
			}
			d := lo + time.Duration(s.rng.Int64N(int64(hi-lo)+1))
			a.pausedUntil = now.Add(d)
			s.record(fmt.Sprintf("%6s %-6s PAUSE for %v", "", a.Name, d))
			s.mu.Unlock()
			if s.OnPause != nil {
				s.OnPause(a, d)
			}
			continue
		}
		// Of calls made at once (reported as an error), the first in order of description.
		slices.SortStableFunc(a.pending, func(x, y *call) int { return strings.Compare(x.desc, y.desc) })
		c := a.pending[0]
		f := NoFault
		switch r := s.rng.Float64(); {
		case r < s.cfg.FailBefore:
			f = FailBefore
		case r < s.cfg.FailBefore+s.cfg.FailAfter:
			f = FailAfter
		case r < s.cfg.FailBefore+s.cfg.FailAfter+s.cfg.Crash:
			f = Crash
			if a.Sturdy {
				f = FailBefore
			}
		case c.write && r < s.cfg.FailBefore+s.cfg.FailAfter+s.cfg.Crash+s.cfg.Ghost:
			f = Ghost
		}
		s.steps++
		a.pending = a.pending[1:]
		if len(a.pending) == 0 {
			a.state = running
		}
		a.lastDone = now
		s.record(fmt.Sprintf("%6d %-6s %-11s %s", s.steps, a.Name, f, c.desc))
		if f != Crash {
			c.reply <- f
			s.mu.Unlock()
		} else {
			// The crashed actor's call is answered only after OnCrash has crashed the rest of
			// its process: otherwise its goroutine would run on meanwhile (and, say, end and let
			// another part of the process end too) in an order the Go scheduler picks.
			s.kill(a)
			s.mu.Unlock()
			if s.OnCrash != nil {
				s.OnCrash(a)
			}
			c.reply <- f
		}
		time.Sleep(s.cfg.Tick) // the call's own time; timers due meanwhile fire
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// record adds a step to the hash and, when tracing, to the trace. Called with s.mu held.
func (s *Scheduler) record(line string) {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d|%d|%s", s.hash, s.Now().UnixNano(), line)
	s.hash = h.Sum64()
	if s.cfg.Trace {
		s.trace = append(s.trace, fmt.Sprintf("%9.3fs %s", s.Now().Sub(s.cfg.Start).Seconds(), line))
	}
}

// killAll crashes every live actor. Called with s.mu held.
func (s *Scheduler) killAll() {
	for _, a := range s.actors {
		if a.state == running || a.state == waiting {
			s.kill(a)
		}
	}
}

// Wait waits until every actor's goroutine has returned (crashed actors included).
func (s *Scheduler) Wait() { s.wg.Wait() }
