package simsched

import (
	"context"
	"fmt"
	"time"
)

// Actor is one simulated process, or one part of one.
type Actor struct {
	ID       int
	Name     string
	Kind     string
	Pausable bool
	Weight   int
	Sturdy   bool

	s           *Scheduler
	ctx         context.Context
	cancel      context.CancelFunc
	state       state
	pending     []*call
	pausedUntil time.Time
	lastDone    time.Time // virtual time its last call was applied
	calls       int
	idles       int // calls that arrived after the actor had waited for virtual time
}

// Calls returns how many storage calls the actor has made so far.
func (a *Actor) Calls() int {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	return a.calls
}

// Idles returns how many of the actor's calls arrived after it had waited (virtual time passed
// between its previous call and this one): an actor whose Idles stays put while Calls grows is
// going from call to call without ever waiting.
func (a *Actor) Idles() int {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	return a.idles
}

// Context returns the actor's context: calls made with it (or one derived from it) are the
// actor's.
func (a *Actor) Context() context.Context { return a.ctx }

// ActorOptions describe an actor to spawn.
type ActorOptions struct {
	Name     string
	Kind     string // free-form; Live and Gone count actors by kind
	Pausable bool
	// Weight makes the actor that many times as likely to be picked as an actor of weight 1.
	// 0 means 1.
	Weight int
	// Sturdy actors never crash at their own calls (Crash makes them fail before instead); they
	// still die with their process (Scheduler.Crash).
	Sturdy bool
}

// Spawn starts an actor running fn in its own goroutine. fn must make every storage call with
// the context it is given (or one derived from it), and return when that context is canceled
// (after every goroutine it started has stopped making calls).
func (s *Scheduler) Spawn(o ActorOptions, fn func(ctx context.Context)) *Actor {
	s.mu.Lock()
	a := &Actor{ID: len(s.actors), Name: o.Name, Kind: o.Kind, Pausable: o.Pausable, Weight: max(o.Weight, 1), Sturdy: o.Sturdy, s: s}
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
// changes at scheduled steps and when an actor finishes, so an actor may use it between calls
// without making the schedule nondeterministic.
func (s *Scheduler) Live(kind string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live(kind)
}

func (s *Scheduler) live(kind string) int {
	n := 0
	for _, a := range s.actors {
		if a.Kind == kind && (a.state == running || a.state == waiting) {
			n++
		}
	}
	return n
}

// Gone returns a channel that Run closes, at a settled point, once no actor of the kind is live
// (and one has been spawned). Actors of a kind must not be spawned after it is gone.
func (s *Scheduler) Gone(kind string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.gone[kind]
	if ch == nil {
		ch = make(chan struct{})
		s.gone[kind] = ch
	}
	return ch
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

// ActorOf returns the actor a context belongs to, or nil.
func ActorOf(ctx context.Context) *Actor {
	a, _ := ctx.Value(actorKey{}).(*Actor)
	return a
}
