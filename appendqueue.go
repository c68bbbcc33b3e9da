package estuite

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/estuite/estuite/table"
)

// Group commit per stream.
//
// Concurrent appends of one Store to one stream do not race each other for the stream head: they
// queue. The first caller to find its stream idle leads: it takes as many queued appends as one
// batch holds and sends them in one combined batch — one head row, and for each append its own
// commit row, event rows and event-ID rows — announced by one dirty marker. Each append's
// expected version is checked in queue order against the version the appends before it in the
// batch bring the stream to. When the leader's own append is settled, it hands the stream to the
// oldest append still waiting, which leads the next batch. docs/storage-format.md shows the batch.

// maxCombinedOps is the most operations of a combined append batch: one operation of a batch is
// reserved for dispatch bookkeeping, as for a single append (see MaxAppendRows).
const maxCombinedOps = table.MaxBatchOps - 1

// streamQueues holds, per stream partition, the appends waiting for the stream's leader. A
// stream has an entry exactly while a leader is at work on it.
type streamQueues struct {
	mu sync.Mutex
	m  map[string]*streamQueue
}

type streamQueue struct {
	waiting []*appendReq // in arrival order; none of them taken
}

// appendReq is one Append call in its stream's queue.
type appendReq struct {
	a   *appendPlan
	ctx context.Context

	// Guarded by streamQueues.mu.
	taken     bool // a leader holds it (it is not in waiting)
	leading   bool // it was told to lead (lead is closed)
	abandoned bool // its caller returned while it was taken (its context ended)

	lead chan struct{} // closed when its caller is to lead
	done chan struct{} // closed when res and err are set

	// Owned by the leader that holds the request (handed on with the lead under the mutex).
	res       AppendResult
	err       error
	settled   bool
	attempts  int   // batches that carried it
	conflicts int   // of them, refused on the head (another process moved it)
	transient int   // of them, failed without an answer
	ambiguous bool  // a batch that carried it may have committed
	first     int64 // in the batch being planned: its first version
	actual    int64 // in the batch being planned: the version it was refused at
}

func (r *appendReq) settle(res AppendResult, err error) {
	r.res, r.err, r.settled = res, err, true
	close(r.done)
}

// canceledErr is the error of an append whose context ended before its outcome was known.
func (r *appendReq) canceledErr() error {
	err := r.ctx.Err()
	if r.ambiguous {
		return fmt.Errorf("estuite: append to %q may or may not have been committed: %w", r.a.stream, err)
	}
	return err
}

// commit runs the append against storage until it is committed or refused: it queues behind the
// stream's other appends of this store, or leads them.
func (s *Store) commit(ctx context.Context, a *appendPlan) (AppendResult, error) {
	r := &appendReq{a: a, ctx: ctx, lead: make(chan struct{}), done: make(chan struct{})}
	q := &s.announcer.streams
	q.mu.Lock()
	if q.m == nil {
		q.m = make(map[string]*streamQueue)
	}
	sq := q.m[a.pk]
	if sq == nil {
		q.m[a.pk] = &streamQueue{}
		r.taken, r.leading = true, true
		q.mu.Unlock()
		s.lead(r)
		return r.res, r.err
	}
	sq.waiting = append(sq.waiting, r)
	q.mu.Unlock()
	select {
	case <-r.done:
		return r.res, r.err
	case <-r.lead:
		s.lead(r)
		return r.res, r.err
	case <-ctx.Done():
	}
	select {
	case <-r.done:
		return r.res, r.err
	default:
	}
	q.mu.Lock()
	switch {
	case !r.taken:
		// Still waiting: nothing of it was sent since it was last handed back.
		sq.waiting = slices.DeleteFunc(sq.waiting, func(w *appendReq) bool { return w == r })
		err := r.canceledErr()
		q.mu.Unlock()
		return AppendResult{}, err
	case r.leading:
		q.mu.Unlock()
		s.lead(r) // settles r at once (its context ended) and hands the stream on
		return r.res, r.err
	default:
		// A leader holds it and may be sending it now.
		r.abandoned = true
		q.mu.Unlock()
		return AppendResult{}, &unavailableError{err: fmt.Errorf("append to %q may or may not have been committed (retry with commit ID %q to find out): %w", a.stream, a.commitID, ctx.Err())}
	}
}

// lead sends the stream's queued appends, batch after batch, until self is settled, then hands
// the stream to the oldest append still unsettled.
func (s *Store) lead(self *appendReq) {
	q := &s.announcer.streams
	pk := self.a.pk
	group := []*appendReq{self}
	for {
		q.mu.Lock()
		group = s.take(q.m[pk], group)
		q.mu.Unlock()
		group = s.round(self, group)
		if self.settled {
			break
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	sq := q.m[pk]
	back := group[:0]
	for _, r := range group {
		if r.abandoned {
			if !r.settled {
				r.settle(AppendResult{}, r.canceledErr())
			}
			continue
		}
		r.taken = false
		back = append(back, r)
	}
	sq.waiting = append(back, sq.waiting...)
	if len(sq.waiting) == 0 {
		delete(q.m, pk)
		return
	}
	next := sq.waiting[0]
	sq.waiting = sq.waiting[1:]
	next.taken, next.leading = true, true
	close(next.lead)
}

// take adds waiting appends to group, in order, as long as one batch holds them all. Sizes are
// the upper bounds prepareAppend measured, so a batch planned from them always fits.
func (s *Store) take(sq *streamQueue, group []*appendReq) []*appendReq {
	ops, bytes := 1, group[0].a.headBytes // the head, once (of one size for one stream)
	for _, r := range group {
		ops += r.a.rowOps
		bytes += r.a.bodyBytes
	}
	n := 0
	for _, r := range sq.waiting {
		o, b := ops+r.a.rowOps, bytes+r.a.bodyBytes
		if o > maxCombinedOps || b > MaxAppendBytes {
			break
		}
		ops, bytes = o, b
		r.taken = true
		group = append(group, r)
		n++
	}
	sq.waiting = sq.waiting[n:]
	return group
}

// round makes one attempt at committing group (taken appends, in queue order): it plans one
// batch from the stream's head, sends it, and settles every append whose outcome it learns. It
// returns the appends still unsettled, in order.
func (s *Store) round(self *appendReq, group []*appendReq) []*appendReq {
	live := make([]*appendReq, 0, len(group))
	for _, r := range group {
		if r.ctx.Err() != nil {
			r.settle(AppendResult{}, r.canceledErr())
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 || self.settled {
		return live // a leader whose own append is settled hands the others on
	}
	ctx, release := groupContext(self, live)
	defer release()
	pk := live[0].a.pk

	// The head: cached, assumed absent (a first try at creating a stream needs no read: if the
	// stream exists, the head insert fails), or read. validated says it was read in this round.
	h, cached := s.heads.get(pk)
	validated := false
	first := live[0]
	if !cached && !(first.attempts == 0 && first.a.expected.expectsNoStream()) {
		var err error
		if h, err = s.readHead(ctx, pk); err != nil {
			return s.failAll(live, err)
		}
		validated = true
	}
	var batch, refused []*appendReq
	var running int64
	for {
		if h.meta.tombstone {
			// Deleted for good (by the head as cached, which cannot be undone, or as read: also
			// when the cached head was from before the delete). An append that had landed before
			// is answered as it was.
			for _, r := range live {
				if res, found, err := s.findCommit(ctx, r.a); found || err != nil {
					r.settle(res, err)
				} else {
					r.settle(AppendResult{}, &StreamDeletedError{Stream: r.a.stream})
				}
			}
			return nil
		}
		batch, refused, running = plan(live, h)
		if len(batch) > 0 || validated {
			break
		}
		// Only a cached (or assumed) head says that these appends conflict. A cache may make an
		// append cheaper, never refuse it: decide on the head as stored.
		s.heads.forget(pk)
		var err error
		if h, err = s.readHead(ctx, pk); err != nil {
			return s.failAll(live, err)
		}
		validated = true
	}
	landed := len(batch) > 0 && s.send(ctx, live, batch, refused, h, running)
	// A refusal is final when the version it was judged on is one the head really had: the head
	// read in this round, or the head the batch landed on or brought the stream to. An append
	// refused at a version between those (after some of the batch's appends, before others) is
	// judged again in the next round, on the head as it then is: no reader ever saw that version.
	for _, r := range refused {
		real := r.actual == h.version && (validated || landed) || landed && r.actual == running
		if r.settled || !real {
			continue
		}
		// Maybe this commit already landed (a retry after a lost response, or long after).
		if res, found, err := s.findCommit(ctx, r.a); found || err != nil {
			r.settle(res, err)
			continue
		}
		r.settle(AppendResult{}, &WrongExpectedVersionError{Stream: r.a.stream, Expected: r.a.expected, Actual: r.actual})
	}
	return slices.DeleteFunc(live, func(r *appendReq) bool { return r.settled })
}

// plan chooses, in queue order, the appends of one batch on head h: each whose expected version
// admits the version the appends before it bring the stream to, until one would repeat a row
// key of the batch (the same commit ID or event ID twice: it waits for the next batch, where it
// finds the row stored). It returns the batch, the appends refused (each with the version it was
// refused at) and the stream's version once the batch lands.
func plan(live []*appendReq, h head) (batch, refused []*appendReq, running int64) {
	running = h.version
	keys := make(map[string]bool)
	for _, r := range live {
		if !r.a.expected.admitsAt(running, h.meta.softDeleted(running)) {
			r.actual = running
			refused = append(refused, r)
			continue
		}
		if slices.ContainsFunc(r.a.rowKeys, func(k string) bool { return keys[k] }) {
			break
		}
		for _, k := range r.a.rowKeys {
			keys[k] = true
		}
		r.first = running + 1
		running += int64(len(r.a.events))
		batch = append(batch, r)
	}
	return batch, refused, running
}

// send submits batch as one combined batch on head h, bringing the stream to version last, and
// settles what its outcome decides: all of it when it lands (send reports true); the append
// whose operation failed when the storage refused it (the others are tried again in the next
// round); nothing when the outcome is unknown.
func (s *Store) send(ctx context.Context, live, batch, refused []*appendReq, h head, last int64) bool {
	pk, stream := batch[0].a.pk, batch[0].a.stream
	// Operations: every commit row first (a retried commit is recognized before anything else can
	// fail), then the head, then each append's event and event-ID rows.
	ops := make([]table.Op, 0, maxCombinedOps)
	for _, r := range batch {
		ops = append(ops, r.a.commitOp(r.first))
	}
	ops = append(ops, headWrite(pk, h, last))
	starts := make([]int, len(batch)) // index of each append's first event row
	for i, r := range batch {
		starts[i] = len(ops)
		ops = r.a.appendRowOps(ops, r.first)
	}
	// The last append's snapshot goes last, when the batch has room for it: a snapshot reflects
	// the stream's version once the batch lands, so only the last append's can. An earlier one's
	// is left out (its state would be overwritten at once by the events after it).
	withSnapshot := false
	if lastReq := batch[len(batch)-1]; lastReq.a.snapshot != nil {
		bytes := batch[0].a.headBytes + lastReq.a.snapshotBytes
		for _, r := range batch {
			bytes += r.a.bodyBytes
		}
		if len(ops)+1 <= maxCombinedOps && bytes <= MaxAppendBytes {
			ops = append(ops, lastReq.a.snapshotOp(last))
			withSnapshot = true
		}
	}
	for _, r := range batch {
		r.attempts++
	}
	var maxEventBytes int64
	for _, r := range batch {
		maxEventBytes = max(maxEventBytes, r.a.maxEventBytes)
	}
	// An append announced early whose marker is stored (and still in its window) spares its
	// batch a marker of its own — when it goes alone: the dispatcher learns the versions from
	// its commit row, which says those of that append only.
	var early *Announcement
	if len(batch) == 1 && batch[0].a.ann.rely(ctx) {
		early = batch[0].a.ann
	}
	etags, err := s.submitAppend(ctx, pk, stream, ops, h.version+1, last, maxEventBytes, early)
	if err == nil {
		s.markDirty(dirtyIndex(pk, s.feedShards))
		s.heads.put(pk, head{version: last, etag: etags[len(batch)], meta: h.meta})
		for i, r := range batch {
			r.settle(AppendResult{Stream: stream, FirstVersion: r.first, LastVersion: r.first + int64(len(r.a.events)) - 1, CommitID: r.a.commitID,
				SnapshotSaved: withSnapshot && i == len(batch)-1}, nil)
		}
		return true
	}
	s.heads.forget(pk)
	headIndex := len(batch)
	var be *table.BatchError
	switch {
	case errors.As(err, &be) && be.Index >= 0 && be.Index < headIndex && errors.Is(err, table.ErrAlreadyExists):
		// This append's commit row exists: it is a retry. The others go again.
		r := batch[be.Index]
		res, found, ferr := s.findCommit(ctx, r.a)
		if ferr == nil && !found {
			ferr = fmt.Errorf("estuite: stream %q: commit row of %q reported existing but not found", stream, r.a.commitID)
		}
		r.settle(res, ferr)
		if ferr == nil && !res.Duplicate && r.ambiguous {
			// An earlier batch of this very call landed although its answer was lost: so did the
			// other appends it carried. Look for their commit rows rather than send them again.
			for _, o := range live {
				if !o.settled && o.ambiguous {
					if res, found, ferr := s.findCommit(ctx, o.a); found || ferr != nil {
						o.settle(res, ferr)
					}
				}
			}
		}
	case errors.As(err, &be) && be.Index == headIndex:
		// The head moved (or appeared) since it was read: another process appended, or a
		// dispatcher fenced it. Read it again.
		conflicted(batch, refused)
	case errors.As(err, &be) && be.Index > headIndex && errors.Is(err, table.ErrAlreadyExists):
		i := len(starts) - 1
		for starts[i] > be.Index {
			i--
		}
		r, row := batch[i], be.Index-starts[i]
		if row >= len(r.a.events) && row < len(r.a.events)+len(r.a.eventIDs) {
			r.settle(AppendResult{}, &DuplicateEventError{Stream: stream, EventID: r.a.eventIDs[row-len(r.a.events)].id})
		} else {
			r.settle(AppendResult{}, r.failed(err))
		}
	case errors.As(err, &be) && be.Index < 0:
		// The backend could not say which operation failed (Cosmos DB may not): find out.
		settled := false
		for _, r := range batch {
			if res, found, ferr := s.findCommit(ctx, r.a); found || ferr != nil {
				r.settle(res, ferr)
				settled = true
			} else if ferr := s.findDuplicateEventID(ctx, r.a); ferr != nil {
				r.settle(AppendResult{}, ferr)
				settled = true
			}
		}
		if !settled {
			conflicted(batch, refused) // none of them: it was the head
		}
	case errors.Is(err, table.ErrTransient):
		// The batch may or may not have committed; the next round looks at what is stored.
		worst := 0
		for _, r := range batch {
			r.transient++
			r.ambiguous = true
			switch {
			case r.ctx.Err() != nil:
				r.settle(AppendResult{}, r.canceledErr())
			case r.transient >= s.streams.retry.MaxAttempts:
				r.settle(AppendResult{}, &unavailableError{err: fmt.Errorf("append to %q may or may not have been committed (retry with commit ID %q to find out): %w", stream, r.a.commitID, err)})
			default:
				worst = max(worst, r.transient)
			}
		}
		if worst > 0 {
			_ = sleep(ctx, s.streams.retry.backoff(worst, err)) // a context that ended is seen next round
		}
	default:
		for _, r := range batch {
			r.settle(AppendResult{}, r.failed(err))
		}
	}
	return false
}

// conflicted counts a head conflict against the appends of a batch and those refused on it,
// and gives up on those that met too many: other processes keep moving the stream. Nothing of
// theirs was written (every batch that carried them was refused whole).
func conflicted(lists ...[]*appendReq) {
	for _, list := range lists {
		for _, r := range list {
			if r.settled {
				continue
			}
			r.conflicts++
			if r.conflicts > maxConflictRetries {
				r.settle(AppendResult{}, &ContentionError{Stream: r.a.stream, Attempts: r.conflicts})
			}
		}
	}
}

// failed is the error of an append whose batch failed for a reason that retrying cannot mend.
func (r *appendReq) failed(err error) error {
	if r.transient > 0 || r.ctx.Err() != nil {
		// An earlier round, or this one cut short by the context, may have committed.
		return &unavailableError{err: fmt.Errorf("append to %q may or may not have been committed (retry with commit ID %q to find out): %w", r.a.stream, r.a.commitID, err)}
	}
	return fmt.Errorf("estuite: append to %q: %w", r.a.stream, err)
}

// failAll settles every append of live with a storage error that ended the round.
func (s *Store) failAll(live []*appendReq, err error) []*appendReq {
	for _, r := range live {
		if r.ambiguous && !errors.Is(err, ErrUnavailable) {
			r.settle(AppendResult{}, &unavailableError{err: fmt.Errorf("append to %q may or may not have been committed (retry with commit ID %q to find out): %w", r.a.stream, r.a.commitID, err)})
			continue
		}
		r.settle(AppendResult{}, err)
	}
	return nil
}

// groupContext is the context of a round's storage calls: the leader's (its values), canceled
// only once every append of the round has been canceled, so that one caller's cancellation does
// not fail the others' batch.
func groupContext(self *appendReq, live []*appendReq) (context.Context, func()) {
	if len(live) == 1 && live[0] == self {
		return self.ctx, func() {}
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(self.ctx))
	var left atomic.Int64
	left.Store(int64(len(live)))
	stops := make([]func() bool, len(live))
	for i, r := range live {
		stops[i] = context.AfterFunc(r.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}
