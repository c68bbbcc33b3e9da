package simsched

import (
	"context"
	"fmt"
	"strings"

	"github.com/estuite/estuite/table"
)

// Backend wraps a backend so that every storage call of its tables goes through the scheduler's
// gate. Close does nothing: the wrapped backend outlives the simulated processes.
type Backend struct {
	Inner table.Backend
	S     *Scheduler
}

// OpenTable implements table.Backend. Opening a table is not a scheduled call.
func (b Backend) OpenTable(ctx context.Context, name string) (table.Table, error) {
	t, err := b.Inner.OpenTable(ctx, name)
	if err != nil {
		return nil, err
	}
	return &Table{inner: t, name: name, s: b.S}, nil
}

// Close implements table.Backend; it leaves the wrapped backend open.
func (b Backend) Close() error { return nil }

// Table is a table whose calls are scheduled.
type Table struct {
	inner table.Table
	name  string
	s     *Scheduler
}

func injected(desc string, when string) error {
	return &table.TransientError{Err: fmt.Errorf("%w: %s %s", ErrInjected, desc, when)}
}

// gate runs f as one scheduled call.
func gate[T any](s *Scheduler, ctx context.Context, desc string, f func() (T, error)) (T, error) {
	var zero T
	fault, err := s.enter(ctx, desc)
	if err != nil {
		return zero, err
	}
	if fault == FailBefore || fault == Crash {
		return zero, injected(desc, "before")
	}
	v, err := f()
	s.outcome(err)
	if fault == FailAfter {
		return zero, injected(desc, "after")
	}
	return v, err
}

// Get implements table.Table.
func (t *Table) Get(ctx context.Context, pk, rk string) (table.Entity, error) {
	return gate(t.s, ctx, fmt.Sprintf("%s get %s/%s", t.name, pk, rk), func() (table.Entity, error) {
		return t.inner.Get(ctx, pk, rk)
	})
}

// Query implements table.Table.
func (t *Table) Query(ctx context.Context, q table.Query) (table.Page, error) {
	desc := fmt.Sprintf("%s query %s [%s,%s) limit=%d cont=%q", t.name, q.PartitionKey, q.From, q.To, q.Limit, q.Continuation)
	return gate(t.s, ctx, desc, func() (table.Page, error) { return t.inner.Query(ctx, q) })
}

// Scan implements table.Table.
func (t *Table) Scan(ctx context.Context, q table.ScanQuery) (table.Page, error) {
	desc := fmt.Sprintf("%s scan [%s,%s) cont=%q", t.name, q.FromPartition, q.ToPartition, q.Continuation)
	return gate(t.s, ctx, desc, func() (table.Page, error) { return t.inner.Scan(ctx, q) })
}

// stableKey is a row key as the trace shows it. A dirty marker's key ends in a random ID of the
// append attempt that wrote it ("<stream hash>-<version>-<attempt>"): the trace leaves it out, so
// that a schedule's trace depends on the seed alone.
func stableKey(pk, rk string) string {
	if !strings.HasPrefix(pk, "dirty") {
		return rk
	}
	if i := strings.LastIndexByte(rk, '-'); i > 0 && strings.Count(rk, "-") == 2 {
		return rk[:i]
	}
	return rk
}

// Submit implements table.Table.
func (t *Table) Submit(ctx context.Context, pk string, ops []table.Op) ([]string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s submit %s:", t.name, pk)
	for _, op := range ops {
		fmt.Fprintf(&b, " %s(%s", op.Kind, stableKey(pk, op.Entity.RowKey))
		if op.IfMatch != "" {
			fmt.Fprintf(&b, " if %s", op.IfMatch)
		}
		b.WriteString(")")
	}
	return gate(t.s, ctx, b.String(), func() ([]string, error) { return t.inner.Submit(ctx, pk, ops) })
}
