package estuite

import (
	"sync"
	"time"
)

// DispatcherHealth is what a dispatcher knows of its own state, for metrics and alerts. Times
// and durations are measured on the dispatcher's own Clock.
type DispatcherHealth struct {
	// Owner is the name this dispatcher writes into the lease row.
	Owner string
	// Running is whether Start is running the dispatcher.
	Running bool
	// LeaseHeld is whether it holds the store's dispatcher lease now (only a started dispatcher
	// takes the lease).
	LeaseHeld bool
	// LeaseHolder is the owner the lease names: this dispatcher's Owner while it holds the lease,
	// otherwise the owner its last read of the lease row found ("" when none, or never read).
	LeaseHolder string
	// FeedHead is the highest feed position it knows of.
	FeedHead int64
	// OldestPending is how long the oldest undispatched append it knows of has been waiting:
	// from the first step that found its dirty marker until now. 0 when it knows of none. A
	// dispatcher without the lease looks at no markers, so it reports 0.
	OldestPending time.Duration
	// Pending is how many dirty streams it knows of that still have work (announced appends not
	// yet in the feed).
	Pending int
	// LastStep is when its last step ended, LastProgress when a step last wrote events, fenced a
	// head or resolved a marker (zero: never).
	LastStep, LastProgress time.Time
	// LastError is the error of the last step, nil when it succeeded.
	LastError error
}

// healthState is the part of DispatcherHealth the run loop and the steps keep up to date.
type healthState struct {
	mu           sync.Mutex
	running      bool
	leaseHeld    bool
	leaseHolder  string // the owner of the lease row at the last read
	lastStep     time.Time
	lastProgress time.Time
	lastErr      error
}

// Health returns what the dispatcher knows of its own state. It is safe to call at any time,
// also while a step runs.
func (d *Dispatcher) Health() DispatcherHealth {
	now := d.o.Clock.Now()
	d.health.mu.Lock()
	h := DispatcherHealth{
		Owner:        d.o.Owner,
		Running:      d.health.running,
		LeaseHeld:    d.health.leaseHeld,
		LeaseHolder:  d.health.leaseHolder,
		LastStep:     d.health.lastStep,
		LastProgress: d.health.lastProgress,
		LastError:    d.health.lastErr,
	}
	d.health.mu.Unlock()
	if h.LeaseHeld {
		h.LeaseHolder = h.Owner
	}
	h.FeedHead, _ = d.state().feedHead.current()
	d.pendingMu.Lock()
	for _, since := range d.pendingSince {
		h.Pending++
		if age := now.Sub(since.since); age > h.OldestPending {
			h.OldestPending = age
		}
	}
	d.pendingMu.Unlock()
	return h
}

// observeStep records a step's outcome in the health state.
func (d *Dispatcher) observeStep(st DispatchStats, err error) {
	now := d.o.Clock.Now()
	d.health.mu.Lock()
	defer d.health.mu.Unlock()
	d.health.lastStep, d.health.lastErr = now, err
	if st.Events > 0 || st.Fenced > 0 || st.Resolved > 0 {
		d.health.lastProgress = now
	}
}

func (d *Dispatcher) setLeaseHeld(held bool) {
	d.health.mu.Lock()
	d.health.leaseHeld = held
	d.health.mu.Unlock()
}

func (d *Dispatcher) setRunning(running bool) {
	d.health.mu.Lock()
	d.health.running = running
	if !running {
		d.health.leaseHeld = false
	}
	d.health.mu.Unlock()
}

// noteLeaseHolder records the owner a read of the lease row found.
func (d *Dispatcher) noteLeaseHolder(owner string) {
	d.health.mu.Lock()
	d.health.leaseHolder = owner
	d.health.mu.Unlock()
}
