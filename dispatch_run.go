package estuite

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/estuite/estuite/table"
)

// DefaultLinger is DispatcherOptions.Linger when it is 0: how long a woken dispatcher waits for
// more appends before it steps, so that one step carries many streams.
const DefaultLinger = 10 * time.Millisecond

// Start runs the dispatcher in the background until ctx is done or Stop is called. It holds the
// store's dispatcher lease while it works, so that of several processes on one store one
// dispatches at a time (the others watch the lease and take it over when its holder stops
// renewing it); it steps at once when this process appends, and looks at every dirty-marker
// shard at least every PollInterval while busy (with a poll that backs off to MaxPollInterval
// while idle), so that other processes' appends are found however busy this process is.
// Start returns an error if the dispatcher is already running, and an *InvalidInputError for a
// negative DispatcherOptions.Linger.
func (d *Dispatcher) Start(ctx context.Context) error {
	if d.o.Linger < 0 {
		return invalid("linger", "%v is negative", d.o.Linger)
	}
	if err := d.checkShard(); err != nil {
		return err
	}
	d.run.Lock()
	defer d.run.Unlock()
	if d.run.done != nil {
		select {
		case <-d.run.done:
		default:
			return errors.New("estuite: dispatcher already running")
		}
	}
	ctx, cancel := context.WithCancel(d.s.tr.untraced(ctx))
	d.run.cancel, d.run.done, d.run.err = cancel, make(chan struct{}), nil
	d.setRunning(true)
	go func(done chan struct{}) {
		err := d.loop(ctx)
		d.setRunning(false)
		d.run.Lock()
		d.run.err = err
		d.run.Unlock()
		close(done)
	}(d.run.done)
	return nil
}

// Stop stops a dispatcher started with Start, waits for its current step to end, and gives up
// its lease. It returns the error that ended the loop, if any other than the stop itself.
func (d *Dispatcher) Stop() error {
	d.run.Lock()
	cancel, done := d.run.cancel, d.run.done
	d.run.Unlock()
	if done == nil {
		return nil
	}
	cancel()
	<-done
	d.run.Lock()
	defer d.run.Unlock()
	return d.run.err
}

// Done is closed when a started dispatcher has stopped.
func (d *Dispatcher) Done() <-chan struct{} {
	d.run.Lock()
	defer d.run.Unlock()
	if d.run.done == nil {
		closed := make(chan struct{})
		close(closed)
		return closed
	}
	return d.run.done
}

func (d *Dispatcher) loop(ctx context.Context) error {
	var lease leaseState
	defer func() { d.releaseLease(context.WithoutCancel(ctx), &lease) }()
	clock := d.o.Clock
	poll := d.o.PollInterval
	shards := dirtyIndexes(d.shard)
	var lastFull time.Time // when a step last looked at every shard
	fullDone := false
	var lastScavenge time.Time // when this holder last ran a scavenge pass
	scavengeMore := false      // the last pass stopped at its time bound
	for ctx.Err() == nil {
		if now := clock.Now(); !lease.held || !now.Before(lease.renewAt) {
			wasHeld := lease.held
			err := d.acquireLease(ctx, &lease)
			if errors.Is(err, ErrClosed) {
				return err
			}
			d.setLeaseHeld(lease.held)
			if !lease.held {
				if wasHeld {
					d.forgetPending() // a dispatcher without the lease looks at no markers
				}
				if _, err := clock.Wait(ctx, d.o.LeaseDuration/4, nil); err != nil {
					break
				}
				continue
			}
			if !wasHeld {
				// Taken anew: another dispatcher may have written the feed meanwhile, so what this
				// one knows of the feed's page is a guess. Read it again.
				d.invalidate()
				shards = dirtyIndexes(d.shard)
			}
		}
		now := clock.Now()
		if d.shard == 0 && d.o.ScavengeInterval > 0 && (lastScavenge.IsZero() || scavengeMore || now.Sub(lastScavenge) >= d.o.ScavengeInterval) {
			// Shard 0's lease holder scavenges too: one query of the work list, and what it removes —
			// in slices of at most 250 ms (or a quarter of the lease), so that dispatch and the
			// lease's renewal never wait longer; a slice cut short is followed by another at the
			// loop's next round, after a dispatch step.
			lastScavenge = now
			st, err := d.s.scavenge(ctx, time.Now().Add(min(250*time.Millisecond, d.o.LeaseDuration/4)))
			scavengeMore = st.Incomplete && err == nil
			if d.o.OnScavenge != nil {
				d.o.OnScavenge(st, err)
			}
		}
		if !fullDone || now.Sub(lastFull) >= poll {
			// However busy this process is, every shard is looked at at least every poll interval:
			// other processes' appends wake no one here.
			shards = dirtyIndexes(d.shard)
		}
		if len(shards) == dirtyShards {
			lastFull, fullDone = now, true
		}
		st, err := d.step(ctx, shards)
		d.observeStep(st, err)
		if d.o.OnStep != nil {
			d.o.OnStep(st, err)
		}
		progress := st.Events > 0 || st.Resolved > 0 || st.Fenced > 0
		switch {
		case errors.Is(err, ErrClosed):
			return err
		case err != nil:
			if ctx.Err() != nil {
				return nil
			}
			shards = dirtyIndexes(d.shard)
			var be *table.BatchError
			if errors.As(err, &be) {
				// A conditional write was refused: another dispatcher's write (or one of this
				// dispatcher's own whose answer was lost) moved a row. The step read the feed's
				// page anew for the next one: go on after a linger, no backoff.
				if _, werr := clock.Wait(ctx, lease.cap(clock.Now(), d.o.Linger), nil); werr != nil {
					return nil
				}
				continue
			}
			// Storage trouble: back off, then look at every shard.
			if _, werr := clock.Wait(ctx, lease.cap(clock.Now(), poll), nil); werr != nil {
				return nil
			}
			poll = min(2*poll, d.o.MaxPollInterval)
			continue
		case progress:
			// Look again at once, at these shards and any marked since.
			poll = d.o.PollInterval
			shards = union(shards, d.takeDirty())
			continue
		}
		// No progress. A step that was incomplete without making progress must not be repeated
		// at once: that would spin. Wait like a step that found only announcements.
		wait, waiting := poll, []int(nil)
		switch {
		case st.Streams > 0 && st.Streams == st.Waiting:
			// Only early announcements whose appends have not landed: they usually land within a
			// round trip or two, in this process or another, so look again at the poll interval.
			wait, waiting = d.o.PollInterval, shards
		case st.Streams > 0:
			// Announcements that have not landed yet (or work that could not move): look again
			// well before they may be fenced, without spinning.
			wait, waiting = max(d.o.PollInterval, d.o.FenceAfter/4), shards
		}
		woken, werr := clock.Wait(ctx, lease.cap(clock.Now(), wait), d.state().dirty.wake)
		if werr != nil {
			return nil
		}
		if woken {
			if _, err := clock.Wait(ctx, d.o.Linger, nil); err != nil {
				return nil
			}
			shards = union(waiting, d.takeDirty())
			poll = d.o.PollInterval
			continue
		}
		shards = dirtyIndexes(d.shard)
		if st.Streams == 0 {
			poll = min(2*poll, d.o.MaxPollInterval)
		}
	}
	return nil
}

// takeDirty returns the dirty-marker partitions this process's appends marked for the dispatcher's
// shard since the last take.
func (d *Dispatcher) takeDirty() []int {
	subs := d.state().dirty.take()
	for i := range subs {
		subs[i] += d.shard * dirtyShards
	}
	return subs
}

func union(a, b []int) []int {
	out := append(slices.Clone(a), b...)
	slices.Sort(out)
	return slices.Compact(out)
}

// invalidate makes the next step read the feed's page again.
func (d *Dispatcher) invalidate() {
	d.mu.Lock()
	d.st = nil
	d.mu.Unlock()
}

// leaseState is what a dispatcher knows of the lease row. Every time in it is a reading of the
// dispatcher's own clock: a lease is never judged by a time another process wrote.
type leaseState struct {
	held    bool
	etag    string        // the row's ETag as this dispatcher last wrote or read it
	seenAt  time.Time     // when this dispatcher first saw etag (another's lease)
	renewAt time.Time     // when to renew the lease held
	until   time.Time     // the lease held is safe to use until then
	waitFor time.Duration // how long another's lease must stay unchanged to have expired
}

// cap shortens a wait so that a held lease is renewed in time.
func (l *leaseState) cap(now time.Time, wait time.Duration) time.Duration {
	if l.held {
		wait = min(wait, max(l.renewAt.Sub(now), 0))
	}
	return wait
}

// Lease timing. The holder renews every LeaseDuration/leaseRenewDivisor and stops relying on its
// lease leaseSafeFraction of a duration after the renewal it last sent; another dispatcher takes
// the lease over once it has seen the row's ETag unchanged for the holder's duration on its own
// clock. The lease only saves work: every write of the dispatcher is fenced by ETags.
const (
	leaseRenewDivisor = 3
	leaseRetryDivisor = 12 // a renewal that failed is tried again after LeaseDuration/12
	leaseSafeFraction = 2.0 / 3
	maxLeaseDuration  = 24 * time.Hour
)

// acquireLease takes, renews or watches the dispatcher lease, and records in l whether this
// dispatcher holds it.
//
// The row names its owner and the holder's lease duration. A lease is another's until its owner
// clears it (release) or until this dispatcher has seen the same ETag for that duration: a holder
// that renews changes the ETag, so a lease whose ETag stays put for a whole duration has not been
// renewed, whatever any clock says. A row that names this dispatcher's owner is its own (a
// restarted process with a stable owner takes its lease back at once).
func (d *Dispatcher) acquireLease(ctx context.Context, l *leaseState) error {
	if err := d.s.checkOpen(); err != nil {
		return err
	}
	if d.group != nil && d.shard == 0 {
		d.group.refresh(ctx) // its member row, renewed as its leases are (at most a third of a duration apart)
	}
	ev := d.s.events
	clock := d.o.Clock
	op := table.Op{Kind: table.Insert}
	row, err := ev.get(ctx, leasePartition, leaseRowOf(d.shard))
	now := clock.Now()
	switch {
	case err == nil:
		owner, _ := row.Properties[propOwner].(string)
		d.noteLeaseHolder(owner)
		if owner != "" && owner != d.o.Owner {
			l.held = false
			if d.group != nil {
				d.group.noteHeld(d.shard, false)
			}
			if row.ETag != l.etag {
				l.etag, l.seenAt, l.waitFor = row.ETag, now, leaseDurationOf(row, d.o.LeaseDuration)
				return nil
			}
			if now.Sub(l.seenAt) < l.waitFor {
				return nil
			}
			// Unchanged for its whole duration: its holder stopped renewing it. Take it over.
		}
		if d.group != nil && owner == d.o.Owner && l.held && d.group.shouldRelease(d.shard) {
			// The group holds more than its share and another member less: give this one back,
			// under the ETag this dispatcher last wrote (a row another writer moved stays).
			d.releaseLease(ctx, l)
			d.group.noteHeld(d.shard, false)
			l.etag = ""
			return nil
		}
		if d.group != nil && owner != d.o.Owner && !d.group.mayTake() {
			l.held = false
			return nil // another member is better placed to take it
		}
		op = table.Op{Kind: table.Replace, IfMatch: row.ETag}
	case errors.Is(err, table.ErrNotFound):
		d.noteLeaseHolder("")
		if d.group != nil && !d.group.mayTake() {
			l.held = false
			return nil // another member is better placed to take it
		}
	default:
		if l.held && now.Before(l.until) {
			// Keep working on the lease as last renewed, and try again a little later (not at
			// once: a loop that renews at every round while storage fails would spin).
			l.renewAt = now.Add(d.o.LeaseDuration / leaseRetryDivisor)
			return nil
		}
		l.held = false
		return err
	}
	op.Entity = table.Entity{PartitionKey: leasePartition, RowKey: leaseRowOf(d.shard), Properties: map[string]any{
		propOwner:    d.o.Owner,
		propDuration: d.o.LeaseDuration.Milliseconds(),
		// Informational only (and read by dispatchers of format 1 releases before this one):
		// no dispatcher of this release compares it with its own clock.
		propExpires: d.s.now().Add(d.o.LeaseDuration).UTC(),
	}}
	etags, err := ev.submitOnce(ctx, leasePartition, []table.Op{op})
	var be *table.BatchError
	switch {
	case errors.As(err, &be):
		l.held, l.etag = false, "" // someone else took or renewed it first: watch it anew
		return nil
	case err != nil:
		if l.held && now.Before(l.until) {
			l.renewAt = now.Add(d.o.LeaseDuration / leaseRetryDivisor)
		} else {
			l.held = false
		}
		l.etag = ""
		return err
	}
	l.held, l.etag = true, etags[0]
	if d.group != nil {
		d.group.noteHeld(d.shard, true)
	}
	l.renewAt = now.Add(d.o.LeaseDuration / leaseRenewDivisor)
	l.until = now.Add(time.Duration(float64(d.o.LeaseDuration) * leaseSafeFraction))
	return nil
}

// leaseDurationOf is how long the lease row's holder said its lease lasts, within sane bounds;
// fallback when the row does not say (rows of earlier releases).
func leaseDurationOf(row table.Entity, fallback time.Duration) time.Duration {
	ms, ok := row.Properties[propDuration].(int64)
	if !ok || ms <= 0 {
		return fallback
	}
	return min(time.Duration(ms)*time.Millisecond, maxLeaseDuration)
}

// releaseLease ends this dispatcher's lease early, so that another process can take over at once:
// it clears the owner, under the ETag of its last renewal, so that a lease another dispatcher has
// taken meanwhile stays.
func (d *Dispatcher) releaseLease(ctx context.Context, l *leaseState) {
	if !l.held || l.etag == "" || d.s.checkOpen() != nil {
		return
	}
	l.held = false
	row := table.Entity{PartitionKey: leasePartition, RowKey: leaseRowOf(d.shard), Properties: map[string]any{
		propOwner: "", propDuration: d.o.LeaseDuration.Milliseconds(), propExpires: d.s.now().UTC(),
	}}
	_, _ = d.s.events.submitOnce(ctx, leasePartition, []table.Op{{Kind: table.Replace, Entity: row, IfMatch: l.etag}})
}
