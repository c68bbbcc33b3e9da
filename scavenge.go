package estuite

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/estuite/estuite/table"
)

// The scavenger removes what deletes and retention made invisible (docs/storage-format.md,
// "Scavenging").
//
// Its work list is the event table's scavenge partition: one row per stream that a delete or a
// metadata change with retention touched, written before the head changes (write-ahead, like
// dirty markers), so that a scavenger never scans all streams. A pass over a stream:
//
//  1. reads the head and works out the versions hidden now (the delete, truncateBefore,
//     maxCount, and maxAge by the events' recorded times on this store's clock);
//  2. raises the head's removal floor (RemovedBefore) to them, under the head's ETag: from then on
//     they stay hidden whatever the metadata says later, so nothing it removes is visible again,
//     and a change of the metadata in between makes it look again;
//  3. for the hidden versions the feed holds already (the progress row), in chunks: replaces
//     their feed rows by redacted entries (position, stream and version only) under their ETags,
//     then deletes their event rows — in that order, so that a pass that stops half-way resumes
//     where the stream table's first event row is;
//  4. deletes a snapshot of a deleted incarnation, and the work row once nothing is left to do
//     (a stream with maxAge or maxCount keeps its row: it has work again as time and appends go;
//     the row then says the floor removed up to and when maxAge may hide more, so that a pass
//     with nothing new to do costs one head read).
//
// Commit rows and event-ID rows stay: they hold no event data, and keep a retried commit or a
// reused event ID recognised after its events were removed.

// scavengePartition holds the scavenger's work list in the event table.
const scavengePartition = "scavenge"

// Properties of a work row besides propStream, written by a pass that finished the removal its
// stream's floor allowed, for a stream that keeps its row (maxAge or maxCount): the next pass
// that finds the floor where it was, and (with maxAge) comes before propNextAgeCheck, has nothing
// to do after reading the head. A delete or a metadata change upserts the row without them.
const (
	propScavengedFloor = "ScavengedFloor" // the removal floor every row below which is removed
	propNextAgeCheck   = "NextAgeCheck"   // when the stream's oldest kept event may pass maxAge
	// The head's MetadataVersion and DeletedBefore the pass judged by: a metadata change or a
	// delete whose work-row upsert the pass listed, but whose head write came after the pass
	// read the head, leaves them behind the head's, so the next pass does not skip.
	propScavengedMeta    = "ScavengedMetadataVersion"
	propScavengedDeleted = "ScavengedDeletedBefore"
)

// scavengeChunk is how many versions one round of a pass removes: one batch of event-row deletes.
const scavengeChunk = table.MaxBatchOps

// ScavengeStats describe a scavenge pass.
type ScavengeStats struct {
	Streams  int // streams looked at
	Removed  int // event rows deleted from the stream table
	Redacted int // feed rows replaced by redacted entries
	Waiting  int // hidden events not in the feed yet (left for a later pass)
	// Incomplete is true when a background pass stopped at its time bound: the rest of its work
	// list is for the next pass.
	Incomplete bool
}

// scavengeWork marks stream (partition pk) as having something for the scavenger: an upsert of its
// work row, before the change that hides events.
func (s *Store) scavengeWork(ctx context.Context, pk, stream string) error {
	op := table.Op{Kind: table.Upsert, Entity: table.Entity{PartitionKey: scavengePartition, RowKey: streamHash(pk),
		Properties: map[string]any{propStream: stream}}}
	_, err := withRetry(ctx, s.events.retry, func() ([]string, error) {
		return s.events.submitOnce(ctx, scavengePartition, []table.Op{op})
	})
	return err
}

// Scavenge runs one scavenge pass now over every stream on the work list, and returns what it
// removed. Its cost is in proportion to what it removes and to the streams on the list (a query
// of the list, a few requests per stream, and per run of removed events a lookup of its feed
// positions, a feed batch and a stream-table batch); it never scans all streams or the whole
// feed. It never removes an event a read may still return, nor one the feed does not hold yet.
// Several scavengers may run at once: every write is conditional. The dispatcher's lease holder
// runs it in the background (DispatcherOptions.ScavengeInterval).
func (s *Store) Scavenge(ctx context.Context) (ScavengeStats, error) {
	return s.scavenge(ctx, time.Time{})
}

// scavenge is a pass that stops at the first chunk boundary after deadline (zero: none); the
// streams it did not finish stay on the list for the next pass. A stream that meets an error is
// left for the next pass too, and the others are scavenged; the first error is returned, unless
// it was contention (the stream moved under every attempt: nothing is wrong).
func (s *Store) scavenge(ctx context.Context, deadline time.Time) (ScavengeStats, error) {
	var stats ScavengeStats
	if err := s.checkOpen(); err != nil {
		return stats, err
	}
	var work []table.Entity
	err := s.events.queryPages(ctx, table.Query{PartitionKey: scavengePartition}, func(p table.Page) error {
		work = append(work, p.Entities...)
		return nil
	})
	if err != nil {
		return stats, err
	}
	var first error
	for _, row := range work {
		if !deadline.IsZero() && time.Now().After(deadline) {
			stats.Incomplete = true
			break
		}
		stream, _ := row.Properties[propStream].(string)
		if stream == "" {
			first = cmpErr(first, corrupt(row.PartitionKey, row.RowKey, "scavenge row without a stream"))
			continue
		}
		stats.Streams++
		err := s.scavengeStream(ctx, stream, row, deadline, &stats)
		var be *table.BatchError
		switch {
		case err == nil, errors.As(err, &be) && !errors.Is(err, table.ErrInvalid), errors.Is(err, ErrContention):
			// Done, or another writer or scavenger moved a row under it: the next pass looks again.
			// (A write storage refused as invalid is no race: it is reported.)
		case ctx.Err() != nil:
			return stats, err
		default:
			first = cmpErr(first, fmt.Errorf("estuite: scavenging %q: %w", stream, err))
		}
	}
	return stats, first
}

// cmpErr keeps the first of two errors.
func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// scavengeStream runs a pass over one stream of the work list.
func (s *Store) scavengeStream(ctx context.Context, stream string, work table.Entity, deadline time.Time, stats *ScavengeStats) error {
	pk := streamKey(stream)
	scavenged, hasScavenged := work.Properties[propScavengedFloor].(int64)
	judgedMeta, _ := work.Properties[propScavengedMeta].(int64)
	judgedDeleted, _ := work.Properties[propScavengedDeleted].(int64)
	nextAge, hasNextAge := work.Properties[propNextAgeCheck].(time.Time)
	now := s.now()
	// unchanged: the last pass that finished judged this head's metadata and delete.
	unchanged := func(h head) bool {
		return hasScavenged && h.meta.metaVersion == judgedMeta && h.meta.deletedBefore == judgedDeleted
	}
	// maxAge needs a look unless that pass said when, and nothing changed since.
	checkAge := func(h head) bool { return !unchanged(h) || !hasNextAge || !now.Before(nextAge) }
	h, ageDue, err := s.raiseFloor(ctx, pk, checkAge)
	if err != nil {
		return err
	}
	if !checkAge(h) {
		ageDue = nextAge // not looked at: still due when it was
	}
	floor := h.meta.removedBefore
	if unchanged(h) && floor == scavenged && !h.meta.tombstone && (h.meta.hasMaxAge || h.meta.hasMaxCount) {
		return nil // nothing hidden since the last pass that finished: one head read
	}
	dispatched, err := s.dispatchedVersion(ctx, pk)
	if err != nil {
		return err
	}
	upTo := min(floor-1, dispatched) // what may be removed now
	done := true
	for {
		if !deadline.IsZero() && time.Now().After(deadline) {
			stats.Incomplete = true
			return nil // the rest next pass: the work row stays
		}
		rows, err := s.eventRows(ctx, pk, upTo, scavengeChunk)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			break
		}
		if err := s.redact(ctx, pk, stream, rows, stats); err != nil {
			return err
		}
		n, err := s.deleteRows(ctx, pk, rows)
		stats.Removed += n
		if err != nil {
			return err
		}
		if len(rows) < scavengeChunk {
			break
		}
	}
	if hidden := min(floor-1, h.version); hidden > dispatched {
		stats.Waiting += int(hidden - dispatched)
		done = false // hidden events the dispatcher has still to copy: a later pass removes them
	}
	if h.meta.truncateBefore > h.version+1 {
		done = false // appends below it are hidden as they land: they have to go too
	}
	if h.meta.tombstone || h.meta.deletedBefore > 0 {
		if err := s.dropOldSnapshot(ctx, pk, h); err != nil {
			return err
		}
	}
	if done && !h.meta.tombstone && (h.meta.hasMaxAge || h.meta.hasMaxCount) {
		// Retention keeps the row: say on it how far this pass got, under the ETag it was
		// listed with (a delete or metadata change since has upserted it: the next pass judges
		// afresh).
		props := map[string]any{propStream: stream, propScavengedFloor: floor,
			propScavengedMeta: h.meta.metaVersion, propScavengedDeleted: h.meta.deletedBefore}
		if h.meta.hasMaxAge && !ageDue.IsZero() {
			props[propNextAgeCheck] = ageDue
		}
		op := table.Op{Kind: table.Replace, Entity: table.Entity{PartitionKey: scavengePartition, RowKey: work.RowKey, Properties: props}, IfMatch: work.ETag}
		_, err := s.events.submitOnce(ctx, scavengePartition, []table.Op{op})
		var be *table.BatchError
		if err != nil && !errors.As(err, &be) {
			return err
		}
		return nil
	}
	if done && (h.meta.tombstone || !h.meta.hasMaxAge && !h.meta.hasMaxCount) {
		// Nothing more to do until the next delete or metadata change. One may have upserted the
		// work row before this pass listed it and not written the head yet: write the head as it
		// is, under the ETag this pass judged it by, so that such a change fails on it, reads
		// the head again and upserts the row again (after this delete of it).
		touch := table.Op{Kind: table.Replace, Entity: headEntity(pk, h.version, h.meta), IfMatch: h.etag}
		if h.etag == "" {
			// No head (a delete or metadata change whose head write failed, or has not come
			// yet): insert one at version 0, which reads as no stream — as a fence does — so
			// that such a write fails on it and upserts the row again. Never a write without
			// a condition: it would overwrite a head written meanwhile.
			touch = table.Op{Kind: table.Insert, Entity: headEntity(pk, 0, headMeta{})}
		}
		_, err := s.streams.submitOnce(ctx, pk, []table.Op{touch})
		s.heads.forget(pk)
		var be *table.BatchError
		if errors.As(err, &be) {
			return nil // the head moved: the row stays, and the next pass looks again
		}
		if err != nil {
			return err
		}
		op := table.Op{Kind: table.Delete, Entity: table.Entity{PartitionKey: scavengePartition, RowKey: work.RowKey}, IfMatch: work.ETag}
		_, err = s.events.submitOnce(ctx, scavengePartition, []table.Op{op})
		if err != nil && !errors.As(err, &be) {
			return err
		}
	}
	return nil
}

// raiseFloor reads the head of partition pk and raises its removal floor to the first version
// its reads may return now, under its ETag (again after a change in between). It returns the
// head as it is then, and with maxAge when the first event it keeps may pass maxAge (and its
// margin) — unless checkAge(head) is false: then maxAge is not looked at (its events cannot be
// due yet), and neither is the time.
func (s *Store) raiseFloor(ctx context.Context, pk string, checkAge func(head) bool) (head, time.Time, error) {
	var ageDue time.Time
	for attempt := 0; ; attempt++ {
		h, err := s.readHead(ctx, pk)
		if err != nil || h.etag == "" {
			return h, ageDue, err
		}
		floor := h.meta.visibleFrom(h.version)
		if h.meta.tombstone {
			floor = h.version + 1
		}
		// Never over versions not written yet: an append made once the metadata no longer hides
		// it must stay visible.
		floor = min(floor, h.version+1)
		if h.meta.hasMaxAge && checkAge(h) {
			if floor, ageDue, err = s.ageFloor(ctx, pk, h, floor); err != nil {
				return head{}, ageDue, err
			}
		}
		if floor <= h.meta.removedBefore {
			return h, ageDue, nil
		}
		meta := h.meta
		meta.removedBefore = floor
		etags, err := s.streams.submitOnce(ctx, pk, []table.Op{{Kind: table.Replace, Entity: headEntity(pk, h.version, meta), IfMatch: h.etag}})
		var be *table.BatchError
		switch {
		case err == nil:
			h.meta, h.etag = meta, etags[0]
			s.heads.put(pk, h)
			return h, ageDue, nil
		case errors.As(err, &be) && attempt < maxConflictRetries:
			s.heads.forget(pk) // an append, a delete or a metadata change: look again
		default:
			s.heads.forget(pk)
			return head{}, ageDue, err
		}
	}
}

// maxAgeScavengeMargin is how much older than maxAge an event must be, on the scavenger's clock,
// before the scavenger removes it: reads judge maxAge on the reader's clock, and a reader whose
// clock is behind the scavenger's by less than this still finds hidden whatever is removed.
const maxAgeScavengeMargin = time.Hour

// ageFloor returns the first version at or after floor whose event is not older than the
// stream's maxAge plus maxAgeScavengeMargin (on this store's clock), reading the events after
// floor a page at a time: the old events a read hides are the stream's first ones, up to the
// first recent one. due is when that event will be that old (with none, when an event appended
// now would be): no pass before it can remove more by maxAge.
func (s *Store) ageFloor(ctx context.Context, pk string, h head, floor int64) (_ int64, due time.Time, _ error) {
	keep := time.Duration(h.meta.maxAge)*time.Second + maxAgeScavengeMargin
	now := s.now()
	notBefore := now.Add(-keep)
	q := table.Query{PartitionKey: pk, From: eventKey(floor), To: eventKey(h.version + 1), Limit: scavengeChunk}
	for {
		p, err := s.streams.query(ctx, q)
		if err != nil {
			return 0, due, err
		}
		for _, row := range p.Entities {
			v, ok := parseEventKey(row.RowKey)
			if !ok {
				continue
			}
			recorded, _ := row.Properties[propRecorded].(time.Time)
			if !recorded.Before(notBefore) {
				return v, recorded.Add(keep), nil
			}
			floor = v + 1
		}
		if p.Continuation == "" {
			return floor, now.Add(keep), nil
		}
		q.Continuation = p.Continuation // also past an empty page
	}
}

// progressOf is the last version of the stream in partition pk that its progress row says the
// feed holds (0 without one): what the feed's earlier pages hold of it.
func (s *Store) progressOf(ctx context.Context, pk string) (int64, error) {
	g, err := s.progress(ctx, pk)
	return g.dispatched, err
}

// dispatchedVersion is the last version of the stream the feed holds: its marker in the current
// feed page, or else its progress row (which the dispatcher raises to the marker of a page before
// it starts the next).
func (s *Store) dispatchedVersion(ctx context.Context, pk string) (int64, error) {
	var head int64
	var err error
	shard := s.shardOf(pk)
	if known, _ := s.shards[shard].feedHead.current(); known > 0 {
		head, err = s.feedHeadFrom(ctx, shard, pageOf(known))
	} else {
		head, err = s.FeedHeadOf(ctx, shard)
	}
	if err != nil {
		return 0, err
	}
	g, err := s.progressOf(ctx, pk)
	if err != nil || head == 0 {
		return g, err
	}
	m, ok, err := s.feedMarker(ctx, pageOf(head), pk)
	if err != nil {
		return 0, err
	}
	if ok {
		g = max(g, m.version)
	}
	return g, nil
}

// eventRows reads the stream's first event rows, up to version upTo, at most limit of them.
func (s *Store) eventRows(ctx context.Context, pk string, upTo int64, limit int) ([]table.Entity, error) {
	if upTo < 1 {
		return nil, nil
	}
	var rows []table.Entity
	q := table.Query{PartitionKey: pk, From: eventKey(1), To: eventKey(upTo + 1), Limit: limit}
	for len(rows) < limit {
		p, err := s.streams.query(ctx, q)
		if err != nil {
			return nil, err
		}
		rows = append(rows, p.Entities...)
		if p.Continuation == "" {
			break
		}
		q.Continuation, q.Limit = p.Continuation, limit-len(rows)
	}
	return rows, nil
}

// redact replaces the feed rows of the events rows (consecutive versions of one stream, all in
// the feed) by redacted entries. A run of a stream's versions written in one feed batch is at
// consecutive positions: one lookup finds its first, one query of its page the rest.
func (s *Store) redact(ctx context.Context, pk, stream string, rows []table.Entity, stats *ScavengeStats) error {
	first, _ := parseEventKey(rows[0].RowKey)
	last, _ := parseEventKey(rows[len(rows)-1].RowKey)
	shard := s.shardOf(pk)
	for v := first; v <= last; {
		pos, found, err := s.locateDispatched(ctx, pk, stream, v)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("version %d is dispatched but its feed position was not found", v)
		}
		page := pageOf(pos)
		var ops []table.Op
		next := v
		q := table.Query{PartitionKey: feedPartition(shard, page), From: feedEventKey(pos), To: feedPageEndKey(page)}
		err = s.events.queryPages(ctx, q, func(p table.Page) error {
			for _, row := range p.Entities {
				if next > last || len(ops) == table.MaxBatchOps {
					return errStopPages
				}
				if !isFeedRowOf(row, stream, next) {
					if next > v {
						return errStopPages // the end of the run: the next one is looked up
					}
					continue
				}
				next++
				if !isRedacted(row) {
					ops = append(ops, table.Op{Kind: table.Replace, Entity: redactedFeedEntity(row), IfMatch: row.ETag})
				}
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStopPages) {
			return err
		}
		if next == v {
			return fmt.Errorf("version %d is not at the feed position %d found for it", v, pos)
		}
		if len(ops) > 0 {
			if _, err := s.events.submitOnce(ctx, feedPartition(shard, page), ops); err != nil {
				// Another scavenger redacted some of them meanwhile: the next pass sees them.
				return err
			}
			stats.Redacted += len(ops)
		}
		v = next
	}
	return nil
}

// deleteRows deletes the event rows rows of partition pk, in one batch (one by one when some went
// meanwhile: another scavenger's), and returns how many it deleted.
func (s *Store) deleteRows(ctx context.Context, pk string, rows []table.Entity) (int, error) {
	ops := make([]table.Op, len(rows))
	for i, r := range rows {
		ops[i] = table.Op{Kind: table.Delete, Entity: table.Entity{PartitionKey: pk, RowKey: r.RowKey}, IfMatch: table.AnyETag}
	}
	_, err := s.streams.submitOnce(ctx, pk, ops)
	var be *table.BatchError
	if !errors.As(err, &be) {
		if err != nil {
			return 0, err
		}
		return len(rows), nil
	}
	n := 0
	for _, op := range ops {
		_, err := s.streams.submitOnce(ctx, pk, []table.Op{op})
		switch {
		case err == nil:
			n++
		case !errors.Is(err, table.ErrNotFound):
			return n, err
		}
	}
	return n, nil
}

// dropOldSnapshot deletes the stream's snapshot when it is of deleted events.
func (s *Store) dropOldSnapshot(ctx context.Context, pk string, h head) error {
	row, err := s.streams.get(ctx, pk, snapshotRowKey)
	if errors.Is(err, table.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	sn, err := decodeSnapshot(row)
	if err != nil {
		return err
	}
	if !h.meta.tombstone && sn.Version >= h.meta.deletedBefore {
		return nil // a snapshot of the recreated stream
	}
	op := table.Op{Kind: table.Delete, Entity: table.Entity{PartitionKey: pk, RowKey: snapshotRowKey}, IfMatch: row.ETag}
	_, err = s.streams.submitOnce(ctx, pk, []table.Op{op})
	var be *table.BatchError
	if errors.As(err, &be) {
		return nil // replaced meanwhile: by a save of the recreated stream
	}
	return err
}
