package bolt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	bbolt "go.etcd.io/bbolt"

	"github.com/estuite/estuite/table"
)

// request is one Submit call waiting for, or taking part in, a group commit.
type request struct {
	table *Table
	pk    string
	ops   []table.Op
	// extra are more parts applied atomically with the first (Backend.SubmitParts).
	extra      []part
	extraETags [][]string

	// taken is set, under committer.mu, when a leader takes the request into a transaction;
	// from then on the caller waits for the outcome whatever its context says.
	taken bool

	// Set before wake is closed, read by the caller after it: either the outcome (etags, err),
	// or lead, the requests whose transaction the caller must now run as the next leader.
	etags []string
	err   error
	lead  []*request
	wake  chan struct{} // closed once: outcome ready or leadership handed over
}

// part is one batch of a multi-part request.
type part struct {
	table *Table
	pk    string
	ops   []table.Op
}

// committer coalesces concurrent Submit calls into shared bbolt transactions. At most one leader
// commits at a time; busy says one does, and queue holds the requests that arrived meanwhile.
// Invariant: the queue is empty whenever busy is false.
type committer struct {
	db *bbolt.DB

	mu    sync.Mutex
	busy  bool
	queue []*request

	// testHook, when set by a test before any Submit, is called inside each transaction with
	// the number of requests it carries, before they are applied.
	testHook func(n int)
	// commitTx, when set by a test before any Submit, commits each transaction in place of
	// tx.Commit, so that a test can make a commit fail after it wrote. nil in production.
	commitTx func(tx *bbolt.Tx) error
}

// submit runs r to its outcome (r.etags, r.err), leading commits or following as needed.
func (c *committer) submit(ctx context.Context, r *request) {
	c.mu.Lock()
	if !c.busy {
		c.busy = true
		r.taken = true
		c.mu.Unlock()
		c.lead(r, []*request{r})
		return
	}
	c.queue = append(c.queue, r)
	c.mu.Unlock()

	select {
	case <-r.wake:
	case <-ctx.Done():
		c.mu.Lock()
		if !r.taken {
			c.queue = slices.DeleteFunc(c.queue, func(q *request) bool { return q == r })
			c.mu.Unlock()
			r.err = &table.TransientError{Err: ctx.Err()}
			return
		}
		c.mu.Unlock()
		<-r.wake
	}
	if r.lead != nil {
		c.lead(r, r.lead)
	}
}

// take empties the queue into the caller's transaction. c.mu must be held.
func (c *committer) take() []*request {
	q := c.queue
	c.queue = nil
	for _, r := range q {
		r.taken = true
	}
	return q
}

// lead commits batch, whose requests are taken, together with any request queued since, in one
// transaction. Then it hands the requests queued during the commit to the next leader (their
// first caller) or ends the busy period, and finally wakes the callers of batch other than self.
func (c *committer) lead(self *request, batch []*request) {
	c.mu.Lock()
	batch = append(batch, c.take()...)
	c.mu.Unlock()

	c.commit(batch)

	c.mu.Lock()
	next := c.take()
	if len(next) == 0 {
		c.busy = false
	}
	c.mu.Unlock()
	if len(next) > 0 {
		next[0].lead = next
		close(next[0].wake)
	}
	for _, r := range batch {
		if r != self {
			close(r.wake)
		}
	}
}

// commit applies batch in one bbolt transaction and records each request's outcome.
//
// An error before the commit (the transaction could not begin, a storage failure while applying)
// rolls everything back: every request fails with it, definitely. An error of the commit itself
// — it may have written pages, or the meta page, before a write or fsync failed — leaves it
// unknown whether the transaction is durable: every request that took part in it fails with
// table.UnknownOutcome, while a request whose own plan failed keeps its error (it wrote nothing
// in any case).
func (c *committer) commit(batch []*request) {
	fail := func(err error) {
		if !errors.Is(err, table.ErrTransient) {
			err = fmt.Errorf("bolt: commit failed: %w", err)
		}
		for _, r := range batch {
			r.etags, r.extraETags, r.err = nil, nil, err
		}
	}
	tx, err := c.db.Begin(true)
	if err != nil {
		fail(err)
		return
	}
	if err := c.apply(tx, batch); err != nil {
		_ = tx.Rollback()
		fail(err)
		return
	}
	if c.commitTx != nil {
		err = c.commitTx(tx)
	} else {
		err = tx.Commit()
	}
	if err != nil {
		unknown := table.UnknownOutcome(fmt.Errorf("bolt: commit failed after it began writing: %w", err))
		for _, r := range batch {
			if r.err == nil {
				r.etags, r.extraETags, r.err = nil, nil, unknown
			}
		}
	}
}

// apply writes batch into tx. A panic would leave the committer busy forever; it fails the
// transaction instead.
func (c *committer) apply(tx *bbolt.Tx, batch []*request) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("bolt: panic during commit: %v", p)
		}
	}()
	meta := tx.Bucket(metaBucket)
	if meta == nil {
		return errors.New("bolt: meta bucket missing")
	}
	if c.testHook != nil {
		c.testHook(len(batch))
	}
	counter, err := readCounter(meta)
	if err != nil {
		return err
	}
	newETag := func() string {
		counter++
		return formatETag(counter)
	}
	for _, r := range batch {
		if err := applyRequest(tx, r, newETag); err != nil {
			return err
		}
	}
	return meta.Put(etagKey, binary.BigEndian.AppendUint64(nil, counter))
}
