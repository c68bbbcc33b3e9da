package estuite

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/estuite/estuite/table"
)

// lookUpEarly resolves the early markers (early.go) of a step's streams by their commit rows —
// one point read each — and sums up each stream's markers (summarize). An early marker whose
// commit row exists covers that commit's versions, like an ordinary marker; one whose row is
// missing covers nothing stored yet, and may go only once it has been seen for FenceAfter and
// the head fenced. A stream whose only markers are such young early markers is not read this
// step: there is nothing of theirs to dispatch, and nothing to fence yet.
func (d *Dispatcher) lookUpEarly(ctx context.Context, work []*streamWork, waiting *int) ([]*streamWork, error) {
	type lookup struct {
		w *streamWork
		i int
	}
	var lookups []lookup
	for _, w := range work {
		for i := range w.markers {
			if w.markers[i].early() {
				lookups = append(lookups, lookup{w, i})
			}
		}
	}
	if len(lookups) > 0 {
		// In commit-ID order: the row keys end in random attempt IDs, and a replayed schedule
		// must make the same calls in the same order.
		slices.SortStableFunc(lookups, func(a, b lookup) int {
			return strings.Compare(a.w.markers[a.i].commitID, b.w.markers[b.i].commitID)
		})
		errs := make([]error, len(lookups))
		sem := make(chan struct{}, d.o.Workers)
		var wg sync.WaitGroup
		for j, l := range lookups {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				errs[j] = d.lookUpCommit(ctx, &l.w.markers[l.i])
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		now := d.o.Clock.Now()
		for _, l := range lookups {
			m := &l.w.markers[l.i]
			if m.landed {
				delete(d.earlySeen, m.rowKey)
				continue
			}
			seen, ok := d.earlySeen[m.rowKey]
			if !ok {
				seen = waitInfo{shard: m.shard, since: now}
				d.earlySeen[m.rowKey] = seen
			}
			// FenceAfter, or twice the writer's window if that is longer (early.go).
			m.aged = now.Sub(seen.since) >= max(d.o.FenceAfter, 2*time.Duration(m.windowMs)*time.Millisecond)
		}
	}
	read := work[:0]
	for _, w := range work {
		if w.summarize() {
			read = append(read, w)
		} else {
			*waiting++
		}
	}
	return read, nil
}

// lookUpCommit reads the commit row an early marker names: found, the marker takes the commit's
// versions and event size.
func (d *Dispatcher) lookUpCommit(ctx context.Context, m *dirtyMarker) error {
	row, err := d.s.streams.get(ctx, m.pk, commitKey(m.commitID))
	if errors.Is(err, table.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	c, err := decodeCommit(row)
	if err != nil {
		return err
	}
	if c.commitID != m.commitID {
		return corrupt(m.pk, row.RowKey, "commit row of %q holds commit ID %q", m.commitID, c.commitID)
	}
	m.landed, m.first, m.announced, m.maxBytes = true, c.first, c.last, c.maxBytes
	return nil
}

// summarize works out what a stream's markers ask of this step: the first version to read
// (fmin; 0 when only early markers to be fenced away ask for a read: from where the feed
// stands), the version the head must reach (amax), the largest event to budget for, and whether an
// early marker has waited long enough to be fenced away. It reports false when there is nothing
// to read: every marker is an early one whose append has not landed and that is not old enough
// to be fenced.
func (w *streamWork) summarize() bool {
	w.fmin, w.amax, w.maxBytes, w.agedEarly = 0, 0, 0, false
	read := false
	for _, m := range w.markers {
		switch {
		case m.early() && !m.landed && !m.aged:
			continue // it covers nothing stored, and cannot go yet
		case m.early() && !m.landed:
			w.agedEarly = true // no version to read from: 0 leaves fmin to the feed's progress
		default:
			if w.fmin == 0 || m.first < w.fmin {
				w.fmin = m.first
			}
			w.amax = max(w.amax, m.announced)
		}
		read = true
		b := m.maxBytes
		if b <= 0 {
			b = unknownEventBytes
		}
		w.maxBytes = max(w.maxBytes, b)
	}
	return read
}
