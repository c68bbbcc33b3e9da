package simsched

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/estuite/estuite/table"
)

// Backend wraps a backend so that every storage call of its tables goes through the scheduler's
// gate. Close does nothing: the wrapped backend outlives the simulated processes. Use Wrap to
// keep the wrapped backend's optional capabilities.
type Backend struct {
	Inner table.Backend
	S     *Scheduler
}

// MultiBackend is a Backend whose wrapped backend is a table.MultiSubmitter: SubmitParts goes
// through the gate too, as one call.
type MultiBackend struct {
	Backend
}

// Wrap returns the gated backend: a *MultiBackend when inner is a table.MultiSubmitter (so that
// the store above takes its one-transaction paths), a Backend otherwise.
func Wrap(inner table.Backend, s *Scheduler) table.Backend {
	if _, ok := inner.(table.MultiSubmitter); ok {
		return &MultiBackend{Backend{Inner: inner, S: s}}
	}
	return Backend{Inner: inner, S: s}
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

// SubmitParts implements table.MultiSubmitter: the parts, on tables of this backend, are sent to
// the wrapped backend in one scheduled call.
func (b *MultiBackend) SubmitParts(ctx context.Context, parts []table.Part) ([][]string, error) {
	ms := b.Inner.(table.MultiSubmitter)
	inner := make([]table.Part, len(parts))
	var desc strings.Builder
	desc.WriteString("submit-parts")
	var wrote []Written
	for i, p := range parts {
		t, ok := p.Table.(*Table)
		if !ok || t.s != b.S {
			return nil, &table.PartError{Part: i, Err: table.Invalidf("simsched: table of another backend")}
		}
		inner[i] = table.Part{Table: t.inner, PartitionKey: p.PartitionKey, Ops: p.Ops}
		fmt.Fprintf(&desc, " [%s]", describeSubmit(t.name, p.PartitionKey, p.Ops))
		wrote = append(wrote, Written{Table: t.name, PartitionKey: p.PartitionKey})
	}
	submit := func(parts []table.Part) func(context.Context) ([][]string, error) {
		return func(ctx context.Context) ([][]string, error) { return ms.SubmitParts(ctx, parts) }
	}
	return gate(b.S, ctx, desc.String(), wrote, submit(inner), func() func(context.Context) ([][]string, error) {
		copied := make([]table.Part, len(inner))
		for i, p := range inner {
			copied[i] = table.Part{Table: p.Table, PartitionKey: p.PartitionKey, Ops: cloneOps(p.Ops)}
		}
		return submit(copied)
	})
}

// Table is a table whose calls are scheduled.
type Table struct {
	inner table.Table
	name  string
	s     *Scheduler
}

func injected(desc string, when string) error {
	return &table.TransientError{Err: fmt.Errorf("%w: %s %s", ErrInjected, desc, when)}
}

// injectedUnknown is the error of a write that took effect (or will) although its caller is
// told it failed: the outcome is unknown to it, as a real backend reports it.
func injectedUnknown(desc string, when string) error {
	return table.UnknownOutcome(fmt.Errorf("%w: %s %s", ErrInjected, desc, when))
}

// gate runs f as one scheduled call. wrote is nil for reads; for writes it names the
// partitions written, and the call may be made a ghost.
//
// A ghost runs the function ghost returns; ghost is called when the fault is decided, while the
// caller still waits, so that it can copy what the caller might reuse.
func gate[T any](s *Scheduler, ctx context.Context, desc string, wrote []Written, f func(context.Context) (T, error), ghost func() func(context.Context) (T, error)) (T, error) {
	var zero T
	fault, err := s.enter(ctx, desc, wrote != nil)
	if err != nil {
		return zero, err
	}
	switch fault {
	case FailBefore, Crash:
		return zero, injected(desc, "before")
	case Ghost:
		// The write is on its way and lands later, whatever happens to its caller.
		g := ghost()
		s.ghost(desc, wrote, func() error {
			_, err := g(context.Background())
			return err
		})
		return zero, injectedUnknown(desc, "(ghost: lands later)")
	}
	v, err := f(ctx)
	s.outcome(err)
	var be *table.BatchError
	var pe *table.PartError
	if wrote != nil && !errors.As(err, &be) && !errors.As(err, &pe) {
		s.noteWrites(wrote)
	}
	if fault == FailAfter {
		if wrote != nil {
			return zero, injectedUnknown(desc, "after")
		}
		return zero, injected(desc, "after")
	}
	return v, err
}

// Get implements table.Table.
func (t *Table) Get(ctx context.Context, pk, rk string) (table.Entity, error) {
	return gate(t.s, ctx, fmt.Sprintf("%s get %s/%s", t.name, pk, rk), nil, func(ctx context.Context) (table.Entity, error) {
		return t.inner.Get(ctx, pk, rk)
	}, nil)
}

// Query implements table.Table.
func (t *Table) Query(ctx context.Context, q table.Query) (table.Page, error) {
	desc := fmt.Sprintf("%s query %s [%s,%s) limit=%d cont=%q", t.name, q.PartitionKey, q.From, q.To, q.Limit, stableKey(q.PartitionKey, q.Continuation))
	return gate(t.s, ctx, desc, nil, func(ctx context.Context) (table.Page, error) { return t.inner.Query(ctx, q) }, nil)
}

// Scan implements table.Table.
func (t *Table) Scan(ctx context.Context, q table.ScanQuery) (table.Page, error) {
	desc := fmt.Sprintf("%s scan [%s,%s) cont=%q", t.name, q.FromPartition, q.ToPartition, q.Continuation)
	return gate(t.s, ctx, desc, nil, func(ctx context.Context) (table.Page, error) { return t.inner.Scan(ctx, q) }, nil)
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

func describeSubmit(name, pk string, ops []table.Op) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s submit %s:", name, pk)
	for _, op := range ops {
		fmt.Fprintf(&b, " %s(%s", op.Kind, stableKey(pk, op.Entity.RowKey))
		if op.IfMatch != "" {
			fmt.Fprintf(&b, " if %s", op.IfMatch)
		}
		b.WriteString(")")
	}
	return b.String()
}

// cloneOps copies a batch, so that a ghost write is the one that was sent even if its caller
// reuses the rows.
func cloneOps(ops []table.Op) []table.Op {
	out := make([]table.Op, len(ops))
	for i, op := range ops {
		op.Entity = table.CloneEntity(op.Entity)
		out[i] = op
	}
	return out
}

// Submit implements table.Table.
func (t *Table) Submit(ctx context.Context, pk string, ops []table.Op) ([]string, error) {
	wrote := []Written{{Table: t.name, PartitionKey: pk}}
	submit := func(ops []table.Op) func(context.Context) ([]string, error) {
		return func(ctx context.Context) ([]string, error) { return t.inner.Submit(ctx, pk, ops) }
	}
	return gate(t.s, ctx, describeSubmit(t.name, pk, ops), wrote, submit(ops), func() func(context.Context) ([]string, error) {
		return submit(cloneOps(ops))
	})
}
