package estuite

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/estuite/estuite/table"
	"github.com/google/uuid"
)

// submitAppend sends an append batch of stream (partition pk) that writes versions first to
// announced — one append, or several combined (appendqueue.go) — with its dirty marker, which
// records maxEventBytes, the batch's largest event row: the marker first, then the batch. The
// marker is write-ahead: it is stored before the batch can land, so that no dispatcher can miss
// the append. Where the backend writes several partitions
// atomically (table.MultiSubmitter, the embedded store), marker and batch go in one transaction.
// With early set (an early announcement the batch relies on, see early.go), no marker is written:
// the early one is stored already. It returns the batch's ETags, or its error (a
// *table.BatchError when the storage refused it).
func (s *Store) submitAppend(ctx context.Context, pk, stream string, ops []table.Op, first, announced, maxEventBytes int64, early *Announcement) ([]string, error) {
	if early != nil {
		etags, err := s.streams.submitOnce(ctx, pk, ops)
		var be *table.BatchError
		early.settle(!errors.As(err, &be))
		return etags, err
	}
	m := dirtyMarker{
		shard:     dirtyIndex(pk, s.feedShards),
		stream:    stream,
		first:     first,
		announced: announced,
		maxBytes:  maxEventBytes,
	}
	m.rowKey = dirtyMarkerKey(pk, m.announced, strings.ReplaceAll(uuid.NewString(), "-", "")[:16])
	if ms, ok := s.backend.(table.MultiSubmitter); ok {
		s.counts.batches.Add(1)
		etags, err := ms.SubmitParts(ctx, []table.Part{
			{Table: s.events.t, PartitionKey: dirtyPartition(m.shard), Ops: []table.Op{{Kind: table.Upsert, Entity: m.entity()}}},
			{Table: s.streams.t, PartitionKey: pk, Ops: ops},
		})
		var pe *table.PartError
		if errors.As(err, &pe) && pe.Part == 1 {
			return nil, pe.Err // the append batch was refused (and the marker not written)
		}
		if err != nil {
			return nil, err
		}
		return etags[1], nil
	}
	if err := s.announcer.announce(ctx, s.events, m); err != nil {
		return nil, fmt.Errorf("estuite: announcing append to %q: %w", stream, err)
	}
	etags, err := s.streams.submitOnce(ctx, pk, ops)
	var be *table.BatchError
	if errors.As(err, &be) {
		s.retract(ctx, m) // the storage refused the batch: it will never land
	}
	return etags, err
}

// retract deletes the marker of an attempt whose batch the storage refused: that batch can never
// land, and the marker is this attempt's alone, so no dispatcher needs to wait for it (or fence
// the stream's head). Best effort: a marker left behind is resolved by the dispatcher's fence.
func (s *Store) retract(ctx context.Context, m dirtyMarker) {
	op := table.Op{Kind: table.Delete, Entity: table.Entity{PartitionKey: dirtyPartition(m.shard), RowKey: m.rowKey}, IfMatch: table.AnyETag}
	_, _ = s.events.submitOnce(ctx, dirtyPartition(m.shard), []table.Op{op})
}

// announcer coalesces concurrent marker writes per shard: the first caller to find its shard idle
// leads, and writes every marker queued meanwhile in its batch.
type announcer struct {
	mu     sync.Mutex
	shards [MaxFeedShards * dirtyShards]announceShard

	// streams queues the appends of one stream behind its leader, which sends them in one
	// batch with one marker (appendqueue.go).
	streams streamQueues
}

type announceShard struct {
	busy  bool
	queue []*announcement
}

type announcement struct {
	m     dirtyMarker
	taken bool          // in a leader's batch: its caller waits for the outcome
	lead  bool          // set with done closed: the caller leads the next batch
	err   error         // the outcome, set before done is closed
	done  chan struct{} // closed once
}

func (an *announcer) announce(ctx context.Context, st storage, m dirtyMarker) error {
	req := &announcement{m: m, done: make(chan struct{})}
	sh := &an.shards[m.shard]
	an.mu.Lock()
	if sh.busy {
		sh.queue = append(sh.queue, req)
		an.mu.Unlock()
		select {
		case <-req.done:
		case <-ctx.Done():
			an.mu.Lock()
			if !req.taken {
				sh.queue = slices.DeleteFunc(sh.queue, func(q *announcement) bool { return q == req })
				an.mu.Unlock()
				return ctx.Err()
			}
			an.mu.Unlock()
			<-req.done
		}
		if !req.lead {
			return req.err
		}
	} else {
		sh.busy = true
		req.taken = true
		an.mu.Unlock()
	}
	// Lead: write this marker and those queued, then hand the shard on.
	batch := an.take(sh, []*announcement{req})
	err := an.write(ctx, st, m.shard, batch)
	an.mu.Lock()
	if len(sh.queue) == 0 {
		sh.busy = false
	} else {
		next := sh.queue[0]
		sh.queue = sh.queue[1:]
		next.taken, next.lead = true, true
		close(next.done)
	}
	an.mu.Unlock()
	for _, r := range batch[1:] {
		r.err = err
		close(r.done)
	}
	return err
}

// take adds queued markers to batch, up to a full batch of distinct rows.
func (an *announcer) take(sh *announceShard, batch []*announcement) []*announcement {
	an.mu.Lock()
	defer an.mu.Unlock()
	rows := map[string]bool{batch[0].m.rowKey: true}
	var rest []*announcement
	for _, r := range sh.queue {
		if len(batch) < table.MaxBatchOps && !rows[r.m.rowKey] {
			rows[r.m.rowKey] = true
			r.taken = true
			batch = append(batch, r)
		} else {
			rest = append(rest, r) // one op per row in a batch: the same row waits for the next
		}
	}
	sh.queue = rest
	return batch
}

// write upserts the markers of batch in one batch, retrying transient failures (an upsert is
// idempotent).
func (an *announcer) write(ctx context.Context, st storage, shard int, batch []*announcement) error {
	ops := make([]table.Op, len(batch))
	for i, r := range batch {
		ops[i] = table.Op{Kind: table.Upsert, Entity: r.m.entity()}
	}
	// The batch carries other callers' markers: the leader's cancellation must not fail them.
	ctx = context.WithoutCancel(ctx)
	_, err := withRetry(ctx, st.retry, func() ([]string, error) {
		return st.submitOnce(ctx, dirtyPartition(shard), ops)
	})
	return err
}
