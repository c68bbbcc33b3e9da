package estuite

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/estuite/estuite/table"
	"github.com/google/uuid"
)

// ErrCheckpointConflict: another instance of a durable subscription moved its checkpoint, so this
// one stopped rather than deliver the same events twice over.
var ErrCheckpointConflict = errors.New("estuite: checkpoint moved by another subscriber")

// Defaults of SubscriptionOptions.
const (
	DefaultSubscriptionBatch   = 500
	DefaultCheckpointEvery     = 100
	DefaultCheckpointInterval  = time.Second
	DefaultHandlerRetries      = 5
	DefaultSubscriptionPoll    = 100 * time.Millisecond
	DefaultSubscriptionMaxPoll = 2 * time.Second
	// MaxCheckpointNameLength is the longest subscription name, in characters.
	MaxCheckpointNameLength = 128
)

// SubscriptionOptions configure Store.Subscribe.
type SubscriptionOptions struct {
	// Shard is the feed shard followed (0 to Store.FeedShards()-1); positions, After and the
	// checkpoint are the shard's. Default 0, the whole feed of a store with one shard. A durable
	// subscription keeps one checkpoint per shard under its name.
	Shard int
	// Name makes the subscription durable: its checkpoint (the last position handled) is stored
	// in the event table under this name, and a subscription started again with the name
	// resumes after it. Empty: no checkpoint; the subscription starts after After.
	Name string
	// After is the position to start after when there is no checkpoint yet: 0 to MaxPosition.
	After int64
	// Types and StreamPrefix filter the events handed to Handler (see FeedOptions). The
	// checkpoint still moves past the events filtered out.
	Types        []string
	StreamPrefix string
	// IncludeRedacted hands Handler the entries of events a scavenger removed too
	// (FeedEvent.Redacted: a position, nothing else). Without it the subscription passes over
	// them, its checkpoint moving on.
	IncludeRedacted bool
	// Handler handles one event. It is called for one event at a time, in feed order. An error
	// is retried with backoff, up to MaxRetries times; then the subscription stops with that
	// error, and its checkpoint stays before the event. Delivery is at least once: after a
	// crash, events handled since the last checkpoint are handled again.
	Handler func(ctx context.Context, ev FeedEvent) error
	// CaughtUp, when set, is called each time the subscription reaches the end of the feed, with
	// the position it reached. It runs on the subscription's goroutine.
	CaughtUp func(position int64)
	// MaxRetries is how often a failing event is retried before the subscription stops; 0 means
	// DefaultHandlerRetries, negative means forever.
	MaxRetries int
	// RetryBackoff is the first delay before a retry; it doubles up to MaxRetryBackoff.
	RetryBackoff, MaxRetryBackoff time.Duration
	// CheckpointEvery and CheckpointInterval: the checkpoint is saved after this many handled
	// positions or this much time, whichever comes first, when caught up, and when stopping.
	CheckpointEvery    int
	CheckpointInterval time.Duration
	// BatchSize is how many events one feed read asks for. Default DefaultSubscriptionBatch.
	BatchSize int
	// MaxBatchBytes, when positive, also bounds one feed read by the size of its events (see
	// FeedOptions.MaxBytes), and so the events a subscription holds while its handler works
	// through them: about MaxBatchBytes, and at least one event. 0 means no byte bound: a batch
	// of BatchSize events of 1 MiB each holds that many MiB.
	MaxBatchBytes int64
	// PollInterval and MaxPollInterval: when caught up, a subscription wakes at once for events
	// dispatched in this process, and polls for other processes' with a backoff between these.
	PollInterval, MaxPollInterval time.Duration
}

// Subscription is a running catch-up subscription: it reads the feed's history, then follows it
// live. Stop it with Stop.
type Subscription struct {
	s      *Store
	o      SubscriptionOptions
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	err       error
	position  int64   // last position handled (or skipped by the filter)
	saved     int64   // position of the stored checkpoint
	savedETag string  // its ETag; "" when none is stored
	unsure    []int64 // positions of checkpoint writes whose outcome is unknown since the last success
	token     string  // identifies this instance's checkpoint writes
}

// Subscribe starts a subscription to the feed; it runs on its own goroutine until ctx is done, Stop
// is called, or the handler keeps failing. A durable subscription (Name set) reads its checkpoint
// first.
//
// A missing Handler, an After below 0 or above MaxPosition, or an invalid Name is an
// *InvalidInputError (ErrInvalidInput), and no subscription starts.
func (s *Store) Subscribe(ctx context.Context, opts SubscriptionOptions) (*Subscription, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	o := opts
	if o.Handler == nil {
		return nil, invalid("handler", "a subscription needs a handler")
	}
	if o.After < 0 || o.After > MaxPosition {
		return nil, invalid("after", "position %d is not a feed position (0 to MaxPosition, %d)", o.After, MaxPosition)
	}
	if o.Name != "" {
		if err := validateName("name", o.Name, MaxCheckpointNameLength); err != nil {
			return nil, err
		}
	}
	defaults := []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&o.RetryBackoff, 100 * time.Millisecond}, {&o.MaxRetryBackoff, 10 * time.Second},
		{&o.CheckpointInterval, DefaultCheckpointInterval},
		{&o.PollInterval, DefaultSubscriptionPoll}, {&o.MaxPollInterval, DefaultSubscriptionMaxPoll},
	}
	for _, d := range defaults {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if o.MaxRetries == 0 {
		o.MaxRetries = DefaultHandlerRetries
	}
	if o.CheckpointEvery <= 0 {
		o.CheckpointEvery = DefaultCheckpointEvery
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultSubscriptionBatch
	}
	if o.MaxBatchBytes < 0 {
		return nil, invalid("maxBatchBytes", "%d is negative", o.MaxBatchBytes)
	}
	if o.Shard < 0 || o.Shard >= s.feedShards {
		return nil, invalid("shard", "%d is not a feed shard of the store (0 to %d)", o.Shard, s.feedShards-1)
	}
	sub := &Subscription{s: s, o: o, done: make(chan struct{}), position: o.After, saved: o.After, token: uuid.NewString()}
	if o.Name != "" {
		row, err := s.events.get(ctx, checkpointPartition(o.Shard), checkpointKey(o.Name))
		switch {
		case err == nil:
			pos, ok := row.Properties[propPosition].(int64)
			if !ok || pos < 0 || pos > MaxPosition {
				return nil, corrupt(row.PartitionKey, row.RowKey, "malformed checkpoint")
			}
			sub.position, sub.saved, sub.savedETag = pos, pos, row.ETag
		case !errors.Is(err, table.ErrNotFound):
			return nil, err
		}
	}
	ctx, sub.cancel = context.WithCancel(ctx)
	go sub.run(ctx)
	return sub, nil
}

func checkpointKey(name string) string { return streamKey(name) }

// checkpointPartition holds the checkpoints of feed shard shard (shard 0: the one partition of
// earlier releases).
func checkpointPartition(shard int) string {
	if shard == 0 {
		return checkpointPart
	}
	return fmt.Sprintf("%s%02d", checkpointPart, shard)
}

// Stop stops the subscription, saves its checkpoint and waits for it to end. It returns the error
// that stopped the subscription, if any other than Stop itself.
func (sub *Subscription) Stop() error {
	sub.cancel()
	<-sub.done
	return sub.Err()
}

// Done is closed when the subscription has stopped.
func (sub *Subscription) Done() <-chan struct{} { return sub.done }

// Err returns what stopped the subscription: nil while it runs and after Stop, the handler's
// error, ErrCheckpointConflict, or a storage error.
func (sub *Subscription) Err() error {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	return sub.err
}

// Position returns the last position the subscription has handled or skipped.
func (sub *Subscription) Position() int64 {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	return sub.position
}

func (sub *Subscription) run(ctx context.Context) {
	defer close(sub.done)
	err := sub.follow(ctx)
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		err = nil
	}
	// Save what was handled, whatever stopped us (but not over another instance's checkpoint).
	if serr := sub.checkpoint(context.WithoutCancel(ctx)); err == nil && !errors.Is(serr, context.Canceled) {
		err = serr
	}
	sub.mu.Lock()
	sub.err = err
	sub.mu.Unlock()
}

func (sub *Subscription) follow(ctx context.Context) error {
	s, o := sub.s, &sub.o
	poll := o.PollInterval
	lastSave := time.Now()
	caughtUp := false
	for {
		// Take the head's change channel before reading, so that no dispatch is missed between.
		_, changed := s.shards[o.Shard].feedHead.current()
		before := sub.Position()
		page, err := s.ReadFeed(ctx, &FeedOptions{Shard: o.Shard, After: before, Limit: o.BatchSize, Types: o.Types, StreamPrefix: o.StreamPrefix,
			MaxBytes: o.MaxBatchBytes, IncludeRedacted: o.IncludeRedacted})
		if err != nil {
			return err
		}
		for _, ev := range page.Events {
			if err := sub.handle(ctx, ev); err != nil {
				return err
			}
			sub.setPosition(ev.Position)
		}
		sub.setPosition(page.Next) // past filtered-out events too
		if page.Next > before {
			// Progress: save now and then, and read on at once.
			caughtUp = false
			poll = o.PollInterval
			if sub.Position()-sub.savedPosition() >= int64(o.CheckpointEvery) || time.Since(lastSave) >= o.CheckpointInterval {
				if err := sub.checkpoint(ctx); err != nil {
					return err
				}
				lastSave = time.Now()
			}
			continue
		}
		// Nothing after our position: caught up.
		if !caughtUp {
			caughtUp = true
			if err := sub.checkpoint(ctx); err != nil {
				return err
			}
			lastSave = time.Now()
			if o.CaughtUp != nil {
				o.CaughtUp(sub.Position())
			}
		}
		timer := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-changed:
			timer.Stop()
			poll = o.PollInterval
		case <-timer.C:
			poll = min(2*poll, o.MaxPollInterval)
		}
	}
}

// handle runs the handler on one event, retrying failures with backoff.
func (sub *Subscription) handle(ctx context.Context, ev FeedEvent) error {
	o := &sub.o
	delay := o.RetryBackoff
	for attempt := 0; ; attempt++ {
		err := sub.callHandler(ctx, ev, attempt+1)
		if err == nil {
			return nil
		}
		if o.MaxRetries >= 0 && attempt >= o.MaxRetries {
			return fmt.Errorf("estuite: subscription handler failed on position %d after %d attempts: %w", ev.Position, attempt+1, err)
		}
		if serr := sleep(ctx, delay); serr != nil {
			return serr
		}
		delay = min(2*delay, o.MaxRetryBackoff)
	}
}

func (sub *Subscription) setPosition(p int64) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if p > sub.position {
		sub.position = p
	}
}

func (sub *Subscription) savedPosition() int64 {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	return sub.saved
}

// checkpoint stores the position handled so far under the ETag read or written last, so that two
// instances of one subscription cannot both move it.
func (sub *Subscription) checkpoint(ctx context.Context) error {
	if sub.o.Name == "" {
		return nil
	}
	sub.mu.Lock()
	pos, saved, etag, unsure := sub.position, sub.saved, sub.savedETag, sub.unsure
	sub.mu.Unlock()
	if pos == saved && etag != "" && len(unsure) == 0 {
		return nil
	}
	row := table.Entity{PartitionKey: checkpointPartition(sub.o.Shard), RowKey: checkpointKey(sub.o.Name), Properties: map[string]any{
		propStream: sub.o.Name, propPosition: pos, propOwner: sub.token, propUpdated: time.Now().UTC(),
	}}
	op := table.Op{Kind: table.Insert, Entity: row}
	if etag != "" {
		op = table.Op{Kind: table.Replace, Entity: row, IfMatch: etag}
	}
	ev := sub.s.events
	for attempt := 1; ; attempt++ {
		etags, err := ev.submitOnce(ctx, checkpointPartition(sub.o.Shard), []table.Op{op})
		if err == nil {
			sub.setSaved(pos, etags[0])
			return nil
		}
		var be *table.BatchError
		if errors.As(err, &be) {
			// A write of ours whose outcome we did not learn (a lost response, a cancellation)
			// may have landed and moved the ETag: if the stored checkpoint is one of those, it did.
			// The row carries this instance's token, so another instance's write of the same
			// position is not taken for ours.
			stored, gerr := ev.get(ctx, checkpointPartition(sub.o.Shard), checkpointKey(sub.o.Name))
			if gerr != nil && !errors.Is(gerr, table.ErrNotFound) {
				return gerr // the outcome is still unknown: no conflict is proven
			}
			p, _ := stored.Properties[propPosition].(int64)
			if gerr == nil && stored.Properties[propOwner] == sub.token && sub.wasUnsure(p) {
				sub.setSaved(p, stored.ETag)
				if p == pos {
					return nil
				}
				op = table.Op{Kind: table.Replace, Entity: row, IfMatch: stored.ETag}
				continue
			}
			return fmt.Errorf("%w: %q (%v)", ErrCheckpointConflict, sub.o.Name, err)
		}
		// Any other failure leaves the outcome unknown.
		sub.noteUnsure(pos)
		if ctx.Err() != nil {
			// Stopping: the final checkpoint, written after this, settles what this one left unsure.
			return ctx.Err()
		}
		if !errors.Is(err, table.ErrTransient) || attempt >= ev.retry.MaxAttempts {
			return err
		}
		if serr := sleep(ctx, ev.retry.backoff(attempt, err)); serr != nil {
			return serr
		}
	}
}

// noteUnsure records a checkpoint write whose outcome is unknown.
func (sub *Subscription) noteUnsure(pos int64) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	sub.unsure = append(sub.unsure, pos)
}

func (sub *Subscription) wasUnsure(pos int64) bool {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	return slices.Contains(sub.unsure, pos)
}

// setSaved records the stored checkpoint; the writes in doubt are settled by it.
func (sub *Subscription) setSaved(pos int64, etag string) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	sub.saved, sub.savedETag, sub.unsure = pos, etag, nil
}
