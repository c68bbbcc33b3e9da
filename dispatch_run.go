package estuite

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/estuite/estuite/table"
)

// DefaultLinger is how long a woken dispatcher waits for more appends before it steps, so that
// one step carries many streams.
const DefaultLinger = 10 * time.Millisecond

// Start runs the dispatcher in the background until ctx is done or Stop is called. It holds the
// store's dispatcher lease while it works, so that of several processes on one store one
// dispatches at a time (the others wait to take the lease over); it steps at once when this
// process appends, and looks for other processes' appends with a poll that backs off while idle.
// Start returns an error if the dispatcher is already running.
func (d *Dispatcher) Start(ctx context.Context) error {
	d.run.Lock()
	defer d.run.Unlock()
	if d.run.done != nil {
		select {
		case <-d.run.done:
		default:
			return errors.New("estuite: dispatcher already running")
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	d.run.cancel, d.run.done, d.run.err = cancel, make(chan struct{}), nil
	go func(done chan struct{}) {
		err := d.loop(ctx)
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
	defer d.releaseLease(context.WithoutCancel(ctx))
	poll := d.o.PollInterval
	shards := allShards()
	var renewAt time.Time
	held := false
	for ctx.Err() == nil {
		if now := d.o.Clock.Now(); !held || !now.Before(renewAt) {
			var err error
			held, err = d.acquireLease(ctx)
			if err != nil || !held {
				if sleep(ctx, d.o.LeaseDuration/3) != nil {
					break
				}
				continue
			}
			renewAt = now.Add(d.o.LeaseDuration / 3)
		}
		st, err := d.step(ctx, shards)
		if d.o.OnStep != nil {
			d.o.OnStep(st, err)
		}
		switch {
		case errors.Is(err, ErrClosed):
			return err
		case err != nil:
			if ctx.Err() != nil {
				return nil
			}
			// Storage trouble or another dispatcher's write: back off, then look at every shard.
			shards = allShards()
			if sleep(ctx, poll) != nil {
				return nil
			}
			poll = min(2*poll, d.o.MaxPollInterval)
			continue
		case st.Events > 0 || st.Resolved > 0 || st.Fenced > 0 || st.Incomplete:
			// Progress: look again at once, at these shards and any marked since.
			poll = d.o.PollInterval
			shards = union(shards, d.s.dirty.take())
			continue
		}
		wait, waiting := poll, []int(nil)
		if st.Streams > 0 {
			// Only announcements that have not landed yet: look again well before they may be
			// fenced, without spinning.
			wait, waiting = max(d.o.PollInterval, d.o.FenceAfter/4), shards
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-d.s.dirty.wake:
			timer.Stop()
			if sleep(ctx, DefaultLinger) != nil {
				return nil
			}
			shards = union(waiting, d.s.dirty.take())
			poll = d.o.PollInterval
		case <-timer.C:
			shards = allShards()
			if st.Streams == 0 {
				poll = min(2*poll, d.o.MaxPollInterval)
			}
		}
	}
	return nil
}

func union(a, b []int) []int {
	out := append(slices.Clone(a), b...)
	slices.Sort(out)
	return slices.Compact(out)
}

// acquireLease takes or renews the dispatcher lease. It reports whether this dispatcher holds it.
func (d *Dispatcher) acquireLease(ctx context.Context) (bool, error) {
	ev := d.s.events
	now := d.o.Clock.Now()
	lease := table.Entity{PartitionKey: leasePartition, RowKey: dispatcherLeaseRow, Properties: map[string]any{
		propOwner: d.o.Owner, propExpires: now.Add(d.o.LeaseDuration).UTC(),
	}}
	op := table.Op{Kind: table.Insert, Entity: lease}
	row, err := ev.get(ctx, leasePartition, dispatcherLeaseRow)
	switch {
	case err == nil:
		owner, _ := row.Properties[propOwner].(string)
		expires, _ := row.Properties[propExpires].(time.Time)
		if owner != d.o.Owner && now.Before(expires) {
			return false, nil
		}
		op = table.Op{Kind: table.Replace, Entity: lease, IfMatch: row.ETag}
	case !errors.Is(err, table.ErrNotFound):
		return false, err
	}
	_, err = ev.submitOnce(ctx, leasePartition, []table.Op{op})
	var be *table.BatchError
	if errors.As(err, &be) {
		return false, nil // someone else took or renewed it first
	}
	return err == nil, err
}

// releaseLease ends this dispatcher's lease early, so that another process can take over at once.
func (d *Dispatcher) releaseLease(ctx context.Context) {
	ev := d.s.events
	row, err := ev.get(ctx, leasePartition, dispatcherLeaseRow)
	if err != nil || row.Properties[propOwner] != d.o.Owner {
		return
	}
	row.Properties[propExpires] = d.o.Clock.Now().UTC()
	_, _ = ev.submitOnce(ctx, leasePartition, []table.Op{{Kind: table.Replace, Entity: row, IfMatch: row.ETag}})
}
