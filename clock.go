package estuite

import (
	"context"
	"time"
)

// Clock is one process's own time. A dispatcher measures every wait on it — poll intervals,
// lease renewals and expiry, how long an announced append has been missing before it fences —
// and never compares its readings with a time another process wrote, so that correctness and
// liveness do not depend on the clocks of several machines agreeing.
type Clock interface {
	// Now returns the clock's current reading. Only differences between two readings of the same
	// clock are used; they must never be negative (time.Now's monotonic reading is not).
	Now() time.Time
	// Wait blocks until d has passed on this clock, a value can be received from wake (when wake
	// is not nil: it then receives it), or ctx is done. It reports whether it received from
	// wake, and returns ctx.Err() when ctx ended first.
	Wait(ctx context.Context, d time.Duration, wake <-chan struct{}) (woken bool, err error)
}

// SystemClock returns the machine's clock: time.Now and real timers.
func SystemClock() Clock { return systemClock{} }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) Wait(ctx context.Context, d time.Duration, wake <-chan struct{}) (bool, error) {
	return waitOn(ctx, time.NewTimer, d, wake)
}

// waitOn is Wait with the timers of newTimer. It decides ties the same way every time, so that
// a simulation on virtual time replays exactly: a wake-up already there when the wait starts or
// when its timer fires counts as a wake-up (a select that finds both ready would choose at
// random).
func waitOn(ctx context.Context, newTimer func(time.Duration) *time.Timer, d time.Duration, wake <-chan struct{}) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	select {
	case <-wake:
		return true, nil
	default:
	}
	if d <= 0 {
		return false, nil
	}
	t := newTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-wake:
		return true, nil
	case <-t.C:
	}
	select {
	case <-wake:
		return true, nil
	default:
		return false, nil
	}
}
