package simsched

import (
	"context"
	"time"

	"github.com/estuite/estuite"
)

// Clock is one simulated machine's clock: it reads the virtual time shifted by an offset and
// running fast or slow by a drift, and waits in virtual time. It implements estuite.Clock.
//
// With drift δ, Now advances (1+δ) seconds per virtual second, and a wait of d on this clock
// lasts d/(1+δ) of virtual time. Wait returns at once with the context's error when the actor
// (whose context it is given) has crashed.
type Clock struct {
	s      *Scheduler
	offset time.Duration
	drift  float64
}

// Clock returns a clock offset from the virtual time by offset and drifting by drift (0.02 runs
// 2 % fast, -0.02 2 % slow). drift must lie in (-1, 1).
func (s *Scheduler) Clock(offset time.Duration, drift float64) *Clock {
	return &Clock{s: s, offset: offset, drift: drift}
}

// Offset and Drift return the clock's settings.
func (c *Clock) Offset() time.Duration { return c.offset }

// Drift returns how fast the clock runs: 0.02 is 2 % fast.
func (c *Clock) Drift() float64 { return c.drift }

// Now returns the clock's reading.
func (c *Clock) Now() time.Time {
	passed := time.Since(c.s.epoch)
	return c.s.cfg.Start.Add(c.offset + passed + time.Duration(float64(passed)*c.drift))
}

// Virtual converts a duration measured on this clock to virtual time.
func (c *Clock) Virtual(d time.Duration) time.Duration {
	return time.Duration(float64(d) / (1 + c.drift))
}

// Wait blocks until d has passed on this clock, a value is received from wake (when not nil), or
// ctx is done. It reports whether it received from wake.
func (c *Clock) Wait(ctx context.Context, d time.Duration, wake <-chan struct{}) (bool, error) {
	// Inside the bubble the system clock's timers are virtual: wait the virtual length of d.
	return estuite.SystemClock().Wait(ctx, c.Virtual(d), wake)
}
