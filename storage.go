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
// Each is one billable storage transaction on Azure Table Storage.
type RequestCounts struct {
	PointReads int64 // Get of one row
	QueryPages int64 // one page of a range query
	Batches    int64 // one entity group transaction (any number of operations)
}

// Total is the number of requests of every kind.
func (c RequestCounts) Total() int64 { return c.PointReads + c.QueryPages + c.Batches }

// Sub returns c minus d, the requests made between two snapshots.
func (c RequestCounts) Sub(d RequestCounts) RequestCounts {
	return RequestCounts{PointReads: c.PointReads - d.PointReads, QueryPages: c.QueryPages - d.QueryPages, Batches: c.Batches - d.Batches}
}

// counter counts requests to tables.
type counter struct {
	pointReads, queryPages, batches atomic.Int64
}

func (c *counter) snapshot() RequestCounts {
	return RequestCounts{PointReads: c.pointReads.Load(), QueryPages: c.queryPages.Load(), Batches: c.batches.Load()}
}

// storage is a table with Estuite's retry policy and request counting: every call the store makes
// goes through it.
type storage struct {
	t      table.Table
	retry  RetryPolicy
	counts *counter
}

func (s storage) get(ctx context.Context, pk, rk string) (table.Entity, error) {
	return withRetry(ctx, s.retry, func() (table.Entity, error) {
		s.counts.pointReads.Add(1)
		return s.t.Get(ctx, pk, rk)
	})
}

func (s storage) query(ctx context.Context, q table.Query) (table.Page, error) {
	return withRetry(ctx, s.retry, func() (table.Page, error) {
		s.counts.queryPages.Add(1)
		return s.t.Query(ctx, q)
	})
}

// submitOnce sends a batch once, without retry: an append must look at what is stored before it
// tries again, because a failed batch may have committed.
func (s storage) submitOnce(ctx context.Context, pk string, ops []table.Op) ([]string, error) {
	s.counts.batches.Add(1)
	return s.t.Submit(ctx, pk, ops)
}
