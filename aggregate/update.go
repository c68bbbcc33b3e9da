package aggregate

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/estuite/estuite"
	"github.com/google/uuid"
)

// RetryPolicy bounds Update's attempts at a command whose save meets a version conflict.
type RetryPolicy struct {
	// MaxAttempts is how many times, in all, Update runs the command. 1 (or less) means no
	// retries.
	MaxAttempts int
	// Backoff is the wait before the first retry; each retry waits twice as long as the one
	// before, up to MaxBackoff (at least Backoff), with jitter (a random wait between half and
	// all of it).
	Backoff    time.Duration
	MaxBackoff time.Duration
}

// DefaultRetryPolicy is the retry policy of a Repository whose Options.Retry is zero: ten
// attempts, waiting 5 ms before the first retry, at most 500 ms before any.
var DefaultRetryPolicy = RetryPolicy{MaxAttempts: 10, Backoff: 5 * time.Millisecond, MaxBackoff: 500 * time.Millisecond}

// Update runs a command on aggregate id and saves what it decided, retrying after conflicts.
// It loads the aggregate (a fresh one at version 0 when it has no events, so that a command may
// create it), calls command, and saves the events the command raised with opts (which may be
// nil). When another writer moved the stream in between (a *estuite.WrongExpectedVersionError,
// or an estuite.ErrContention), it loads the aggregate again and reruns the command on the new
// state, up to the repository's RetryPolicy.MaxAttempts times in all, waiting with backoff
// between attempts; the last conflict is returned when they run out. The context bounds it all.
//
// A command that returns an error aborts the update: no event is written and the error is
// returned as is. A command that raises no events writes no event. Update returns the aggregate
// as saved; when the save was a duplicate of an earlier commit with opts.CommitID (a retried
// command), it loads and returns the aggregate as stored.
//
// Each attempt announces its append before it loads (estuite.Store.Announce): the dirty marker
// that an append writes before its batch is written while the load is in flight, so that an
// update of a stream whose events fit one page is two sequential storage round trips on Azure —
// the load (with the marker beside it), then the batch. An attempt that saves nothing takes its
// announcement back in the background (one more request, off the caller's path). On the embedded
// store the marker goes in the append's own transaction, and announcing costs nothing.
func (r *Repository[A]) Update(ctx context.Context, id string, command func(A) error, opts *SaveOptions) (A, error) {
	var zero A
	p := r.opts.Retry
	wait := p.Backoff
	for attempt := 1; ; attempt++ {
		// The append is announced while the aggregate loads (estuite.Store.Announce), so that
		// load and save are two round trips, not three. An announcement left unused is withdrawn.
		o := SaveOptions{}
		if opts != nil {
			o = *opts
		}
		if o.CommitID == "" {
			o.CommitID = uuid.NewString() // one per attempt: a rerun command may decide other events
		}
		an, err := r.store.Announce(ctx, r.Stream(id), o.CommitID)
		if err != nil {
			return zero, err
		}
		a, res, err := r.attempt(ctx, id, command, an, &o)
		an.Withdraw() // no-op when the save landed or may have
		switch {
		case err == nil && res.Duplicate:
			return r.Load(ctx, id)
		case err == nil:
			return a, nil
		case !isConflict(err):
			return zero, err
		case attempt >= p.MaxAttempts:
			return zero, fmt.Errorf("aggregate: %q: %d attempts met conflicts: %w", id, attempt, err)
		}
		if err := sleep(ctx, wait); err != nil {
			return zero, err
		}
		wait = min(2*wait, p.MaxBackoff)
	}
}

// attempt is one run of Update's command: load, run, save with the announcement an.
func (r *Repository[A]) attempt(ctx context.Context, id string, command func(A) error, an *estuite.Announcement, opts *SaveOptions) (A, estuite.AppendResult, error) {
	var zero A
	a, err := r.load(ctx, id)
	if errors.Is(err, estuite.ErrStreamNotFound) {
		a, err = r.New(id), nil
	}
	if err != nil {
		return zero, estuite.AppendResult{}, err
	}
	if err := command(a); err != nil {
		return zero, estuite.AppendResult{}, err
	}
	res, err := r.save(ctx, a, opts, an)
	return a, res, err
}

// isConflict reports whether err means that the stream moved under a save, so that a command
// rerun on a fresh load may succeed.
func isConflict(err error) bool {
	return errors.Is(err, estuite.ErrWrongExpectedVersion) || errors.Is(err, estuite.ErrContention)
}

// sleep waits between half and all of d, or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	if d > 0 {
		d = d/2 + rand.N(d/2+1)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
