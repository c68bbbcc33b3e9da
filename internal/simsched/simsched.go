// Package simsched is a cooperative scheduler for deterministic simulation tests of code written
// against the table contract.
//
// Every actor (a writer process, a dispatcher process, …) runs in its own goroutine and carries
// itself in its context. Every storage call of a table opened through Backend blocks at a gate
// until the scheduler picks it. The scheduler waits until every live actor is blocked at a call
// (or has finished), then picks one with a seeded random number generator and decides, with the
// same generator, what happens to that call: nothing, a transient failure before it takes effect,
// a transient failure after it took effect (a lost response), or a crash (the call fails before
// it takes effect and the actor dies: its context is canceled and every later call fails at once,
// without reaching storage). A pausable actor may also be paused: left blocked at its call for a
// number of steps while the others run.
//
// Storage calls are thus strictly sequential, and a schedule depends only on the seed, provided
// that each actor makes its calls one at a time and in an order that depends only on what storage
// answered. Run reports an actor that makes two calls at once.
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
	// Pause is the probability that a picked pausable actor is paused instead, for PauseMin to
	// PauseMax steps of the others.
	Pause              float64
	PauseMin, PauseMax int
	// Tick is how far the virtual clock moves per call; Start is where it starts.
	Tick  time.Duration
	Start time.Time
	// MaxSteps bounds the calls of one run; 0 means unbounded.
	MaxSteps int
	// Stall is how long Run waits in real time for a running actor to reach its next call
	// before it gives up. Default 60s.
	Stall time.Duration
	// Trace keeps a readable line per step (Trace returns them); the hash is always kept.
	Trace bool
}

type state int

const (
	running state = iota // between calls
	waiting              // blocked at a call
	done
	crashed
)

// Actor is one simulated process.
type Actor struct {
	ID       int
	Name     string
	Kind     string
	Pausable bool
	Weight   int

	s       *Scheduler
	ctx     context.Context
	cancel  context.CancelFunc
	state   state
	pending []*call
	paused  int
}

type call struct {
	desc  string
	reply chan Fault
}

type actorKey struct{}

// Scheduler runs actors one storage call at a time.
type Scheduler struct {
	cfg Config
	rng *rand.Rand

	mu      sync.Mutex
	changed chan struct{} // capacity 1: an actor arrived at a call or finished
	actors  []*Actor      // every actor ever spawned, by ID
	now     time.Time
	steps   int
	trace   []string
	hash    uint64
	errs    []error
	wg      sync.WaitGroup

	// OnCrash, when set, is called by Run (outside the scheduler's lock) after an actor crashed,
	// for example to start a replacement.
	OnCrash func(a *Actor)
}

// New returns a scheduler.
func New(cfg Config) *Scheduler {
	if cfg.Stall <= 0 {
		cfg.Stall = 60 * time.Second
	}
	if cfg.PauseMax < cfg.PauseMin {
		cfg.PauseMax = cfg.PauseMin
	}
	h := fnv.New64a()
	return &Scheduler{
		cfg:     cfg,
		rng:     rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5eed5eed5eed5eed)),
		changed: make(chan struct{}, 1),
		now:     cfg.Start,
		hash:    h.Sum64(),
	}
}

// Now is the virtual clock: it moves Tick per scheduled call.
func (s *Scheduler) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now
}

// Advance moves the virtual clock by d (for work done after Run, without actors).
func (s *Scheduler) Advance(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = s.now.Add(d)
}

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

// ActorOptions describe an actor to spawn.
type ActorOptions struct {
	Name     string
	Kind     string // free-form; Live counts actors by kind
	Pausable bool
	// Weight makes the actor that many times as likely to be picked as an actor of weight 1.
	// 0 means 1.
	Weight int
}

// Spawn starts an actor running fn in its own goroutine. fn must make every storage call with
// the context it is given (or one derived from it), and return when that context is canceled.
func (s *Scheduler) Spawn(o ActorOptions, fn func(ctx context.Context)) *Actor {
	s.mu.Lock()
	a := &Actor{ID: len(s.actors), Name: o.Name, Kind: o.Kind, Pausable: o.Pausable, Weight: max(o.Weight, 1), s: s}
	ctx, cancel := context.WithCancel(context.Background())
	a.ctx, a.cancel = context.WithValue(ctx, actorKey{}, a), cancel
	s.actors = append(s.actors, a)
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer s.finish(a)
		fn(a.ctx)
	}()
	return a
}

// Live counts the actors of a kind that have neither finished nor crashed. Its answer only
// changes at scheduled steps and when the running actor finishes, so an actor may use it
// between calls without making the schedule nondeterministic.
func (s *Scheduler) Live(kind string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, a := range s.actors {
		if a.Kind == kind && (a.state == running || a.state == waiting) {
			n++
		}
	}
	return n
}

func (s *Scheduler) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func (s *Scheduler) finish(a *Actor) {
	s.mu.Lock()
	if a.state != crashed {
		a.state = done
	}
	if len(a.pending) > 0 {
		s.errs = append(s.errs, fmt.Errorf("simsched: actor %s finished with a call still pending", a.Name))
	}
	s.mu.Unlock()
	s.signal()
}

// errDead is what the calls of a crashed actor return: the process is gone.
func errDead() error { return &table.TransientError{Err: context.Canceled} }

// enter blocks the calling actor at the gate until the scheduler picks its call, and returns the
// fault decided for it. A crashed actor's calls return an error at once.
func (s *Scheduler) enter(ctx context.Context, desc string) (Fault, error) {
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
	c := &call{desc: desc, reply: make(chan Fault, 1)}
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

// settled reports whether every live actor is blocked at a call. Called with s.mu held.
func (s *Scheduler) settled() bool {
	for _, a := range s.actors {
		if a.state == running {
			return false
		}
	}
	return true
}

// Run schedules the actors' calls until every actor has finished or crashed. It returns an
// error when the schedule broke the scheduler's assumptions (a stall, MaxSteps, concurrent
// calls of one actor, a call outside an actor).
func (s *Scheduler) Run() error {
	stall := time.NewTimer(s.cfg.Stall)
	defer stall.Stop()
	for {
		s.mu.Lock()
		for !s.settled() {
			s.mu.Unlock()
			stall.Reset(s.cfg.Stall)
			select {
			case <-s.changed:
			case <-stall.C:
				s.mu.Lock()
				var names []string
				for _, a := range s.actors {
					if a.state == running {
						names = append(names, a.Name)
					}
				}
				s.killAll()
				s.errs = append(s.errs, fmt.Errorf("simsched: actors %v did not reach a storage call within %v", names, s.cfg.Stall))
				err := errors.Join(s.errs...)
				s.mu.Unlock()
				return err
			}
			s.mu.Lock()
		}
		var ready []*Actor
		for _, a := range s.actors {
			if a.state == waiting {
				ready = append(ready, a)
			}
		}
		if len(ready) == 0 {
			err := errors.Join(s.errs...)
			s.mu.Unlock()
			return err
		}
		if s.cfg.MaxSteps > 0 && s.steps >= s.cfg.MaxSteps {
			s.killAll()
			s.errs = append(s.errs, fmt.Errorf("simsched: no end after %d steps", s.steps))
			err := errors.Join(s.errs...)
			s.mu.Unlock()
			return err
		}
		eligible := make([]*Actor, 0, len(ready))
		for _, a := range ready {
			if a.paused == 0 {
				eligible = append(eligible, a)
			}
		}
		if len(eligible) == 0 { // only paused actors are left: resume them
			for _, a := range ready {
				a.paused = 0
			}
			eligible = ready
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
		if a.Pausable && s.rng.Float64() < s.cfg.Pause {
			a.paused = s.cfg.PauseMin + s.rng.IntN(s.cfg.PauseMax-s.cfg.PauseMin+1)
			s.record(fmt.Sprintf("%6s %-6s PAUSE for %d steps", "", a.Name, a.paused))
			s.mu.Unlock()
			continue
		}
		f := NoFault
		switch r := s.rng.Float64(); {
		case r < s.cfg.FailBefore:
			f = FailBefore
		case r < s.cfg.FailBefore+s.cfg.FailAfter:
			f = FailAfter
		case r < s.cfg.FailBefore+s.cfg.FailAfter+s.cfg.Crash:
			f = Crash
		}
		s.steps++
		s.now = s.now.Add(s.cfg.Tick)
		for _, o := range ready {
			if o != a && o.paused > 0 {
				o.paused--
			}
		}
		// Of calls made at once (reported as an error), the first in order of description.
		slices.SortStableFunc(a.pending, func(x, y *call) int { return strings.Compare(x.desc, y.desc) })
		c := a.pending[0]
		a.pending = a.pending[1:]
		if len(a.pending) == 0 {
			a.state = running
		}
		s.record(fmt.Sprintf("%6d %-6s %-11s %s", s.steps, a.Name, f, c.desc))
		if f == Crash {
			a.state = crashed
			a.cancel()
			for _, p := range a.pending {
				p.reply <- Crash
			}
			a.pending = nil
		}
		c.reply <- f
		s.mu.Unlock()
		if f == Crash && s.OnCrash != nil {
			s.OnCrash(a)
		}
	}
}

// record adds a step to the hash and, when tracing, to the trace. Called with s.mu held.
func (s *Scheduler) record(line string) {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d|%s", s.hash, line)
	s.hash = h.Sum64()
	if s.cfg.Trace {
		s.trace = append(s.trace, line)
	}
}

// killAll crashes every live actor. Called with s.mu held.
func (s *Scheduler) killAll() {
	for _, a := range s.actors {
		if a.state == running || a.state == waiting {
			a.state = crashed
			a.cancel()
			for _, p := range a.pending {
				p.reply <- Crash
			}
			a.pending = nil
		}
	}
}

// Wait waits until every actor's goroutine has returned (crashed actors included).
func (s *Scheduler) Wait() { s.wg.Wait() }
