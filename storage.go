package estuite

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/estuite/estuite/table"
)

// RetryPolicy bounds how Estuite retries transient storage failures (timeouts, throttling,
// server errors): exponential backoff with full jitter, never shorter than a delay the service
// asks for, and never past the caller's context.
type RetryPolicy struct {
	// MaxAttempts is the most tries of one storage call, the first included.
	MaxAttempts int
	// BaseDelay is the backoff before the second try; it doubles with each further try.
	BaseDelay time.Duration
	// MaxDelay caps one backoff.
	MaxDelay time.Duration
}

// DefaultRetryPolicy is used when Options.Retry is zero.
var DefaultRetryPolicy = RetryPolicy{MaxAttempts: 8, BaseDelay: 20 * time.Millisecond, MaxDelay: 5 * time.Second}

// backoff is the delay before try number attempt+1 (attempt ≥ 1).
func (p RetryPolicy) backoff(attempt int, err error) time.Duration {
	ceiling := p.BaseDelay << min(attempt-1, 30)
	if ceiling > p.MaxDelay || ceiling <= 0 {
		ceiling = p.MaxDelay
	}
	d := time.Duration(rand.Int64N(int64(ceiling) + 1))
	if ra := table.RetryAfter(err); ra > d {
		d = ra
	}
	return d
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
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

// withRetry runs call until it succeeds, fails with a non-transient error, the policy's
// attempts are spent (ErrUnavailable) or ctx is done.
func withRetry[T any](ctx context.Context, p RetryPolicy, call func() (T, error)) (T, error) {
	for attempt := 1; ; attempt++ {
		v, err := call()
		if err == nil || !errors.Is(err, table.ErrTransient) {
			return v, err
		}
		if ctx.Err() != nil {
			return v, ctx.Err()
		}
		if attempt >= p.MaxAttempts {
			return v, &unavailableError{err: err}
		}
		if serr := sleep(ctx, p.backoff(attempt, err)); serr != nil {
			return v, serr
		}
	}
}

// RequestCounts are the storage requests a store has made, by kind; retries count as requests.
// Each is one billable storage transaction on Azure Table Storage (an entity group transaction is
// billed as one, whatever its size).
type RequestCounts struct {
	PointReads int64 // Get of one row
	Queries    int64 // range queries and scans started (their first pages)
	QueryPages int64 // pages of range queries and scans, first pages included
	Batches    int64 // entity group transactions of two or more operations
	Writes     int64 // single-row inserts, replaces, merges and upserts
	Deletes    int64 // single-row deletes
}

// Total is the number of requests of every kind.
func (c RequestCounts) Total() int64 {
	return c.PointReads + c.QueryPages + c.Batches + c.Writes + c.Deletes
}

// Sub returns c minus d, the requests made between two snapshots.
func (c RequestCounts) Sub(d RequestCounts) RequestCounts {
	return RequestCounts{
		PointReads: c.PointReads - d.PointReads, Queries: c.Queries - d.Queries, QueryPages: c.QueryPages - d.QueryPages,
		Batches: c.Batches - d.Batches, Writes: c.Writes - d.Writes, Deletes: c.Deletes - d.Deletes,
	}
}

// counter counts requests to tables.
type counter struct {
	pointReads, queries, queryPages, batches, writes, deletes atomic.Int64
}

func (c *counter) snapshot() RequestCounts {
	return RequestCounts{
		PointReads: c.pointReads.Load(), Queries: c.queries.Load(), QueryPages: c.queryPages.Load(),
		Batches: c.batches.Load(), Writes: c.writes.Load(), Deletes: c.deletes.Load(),
	}
}

// page counts one page of a query or scan.
func (c *counter) page(continuation string) {
	c.queryPages.Add(1)
	if continuation == "" {
		c.queries.Add(1)
	}
}

// submit counts one batch request of ops, and returns its kind: "batch", "delete" or "write".
func (c *counter) submit(ops []table.Op) string {
	switch {
	case len(ops) > 1:
		c.batches.Add(1)
		return "batch"
	case len(ops) == 1 && ops[0].Kind == table.Delete:
		c.deletes.Add(1)
		return "delete"
	default:
		c.writes.Add(1)
		return "write"
	}
}

// storage is a table with Estuite's retry policy and request counting: every call the store makes
// goes through it.
type storage struct {
	t      table.Table
	name   string // the table's name
	retry  RetryPolicy
	counts *counter
	rows   *rowEstimate // the size of the table's event rows, for reads with a byte budget
	tr     *tracing     // records requests in traced operations (nil: tracing off)
}

func (s storage) get(ctx context.Context, pk, rk string) (table.Entity, error) {
	return withRetry(ctx, s.retry, func() (table.Entity, error) {
		s.counts.pointReads.Add(1)
		if s.tr == nil {
			return s.t.Get(ctx, pk, rk)
		}
		started := time.Now()
		e, err := s.t.Get(ctx, pk, rk)
		s.tr.request(ctx, "get", s.name, pk, 0, started, err)
		return e, err
	})
}

func (s storage) query(ctx context.Context, q table.Query) (table.Page, error) {
	return withRetry(ctx, s.retry, func() (table.Page, error) {
		s.counts.page(q.Continuation)
		if s.tr == nil {
			return s.t.Query(ctx, q)
		}
		started := time.Now()
		p, err := s.t.Query(ctx, q)
		s.tr.request(ctx, "query", s.name, q.PartitionKey, 0, started, err)
		return p, err
	})
}

func (s storage) scan(ctx context.Context, q table.ScanQuery) (table.Page, error) {
	return withRetry(ctx, s.retry, func() (table.Page, error) {
		s.counts.page(q.Continuation)
		if s.tr == nil {
			return s.t.Scan(ctx, q)
		}
		started := time.Now()
		p, err := s.t.Scan(ctx, q)
		s.tr.request(ctx, "scan", s.name, "", 0, started, err)
		return p, err
	})
}

// queryPages calls each with every page of q in turn, following continuations, until the query
// ends or each returns an error.
func (s storage) queryPages(ctx context.Context, q table.Query, each func(table.Page) error) error {
	return followPages(&q.Continuation, func() (table.Page, error) { return s.query(ctx, q) }, each)
}

// scanPages is queryPages for a scan.
func (s storage) scanPages(ctx context.Context, q table.ScanQuery, each func(table.Page) error) error {
	return followPages(&q.Continuation, func() (table.Page, error) { return s.scan(ctx, q) }, each)
}

// followPages fetches pages, setting *continuation to each page's continuation before the next
// fetch, until a page has none.
func followPages(continuation *string, fetch func() (table.Page, error), each func(table.Page) error) error {
	for {
		p, err := fetch()
		if err != nil {
			return err
		}
		if err := each(p); err != nil {
			return err
		}
		if p.Continuation == "" {
			return nil
		}
		*continuation = p.Continuation
	}
}

// submitRefused sends a batch, and sends it again (with the store's retry policy) only while it
// is refused before it was applied — a transient error whose outcome is known, such as the
// service being busy: the batch changed nothing, so the same batch, under the same conditions,
// is what to send. An answer that may have been applied (table.ErrUnknownOutcome) or any other
// error is returned at once, for the caller to look at what is stored.
func (s storage) submitRefused(ctx context.Context, pk string, ops []table.Op) ([]string, error) {
	for attempt := 1; ; attempt++ {
		etags, err := s.submitOnce(ctx, pk, ops)
		if err == nil || !errors.Is(err, table.ErrTransient) || errors.Is(err, table.ErrUnknownOutcome) || attempt >= s.retry.MaxAttempts {
			return etags, err
		}
		if serr := sleep(ctx, s.retry.backoff(attempt, err)); serr != nil {
			return nil, serr
		}
	}
}

// submitOnce sends a batch once, without retry: an append must look at what is stored before it
// tries again, because a failed batch may have committed.
func (s storage) submitOnce(ctx context.Context, pk string, ops []table.Op) ([]string, error) {
	kind := s.counts.submit(ops)
	if s.tr == nil {
		return s.t.Submit(ctx, pk, ops)
	}
	started := time.Now()
	etags, err := s.t.Submit(ctx, pk, ops)
	s.tr.request(ctx, kind, s.name, pk, len(ops), started, err)
	return etags, err
}
