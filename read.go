package estuite

import (
	"context"
	"errors"
	"iter"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/estuite/estuite/table"
)

// StreamRead is the result of Store.Read: the stream's version when the read began, and its
// events, fetched page by page as Events is iterated.
type StreamRead struct {
	Stream string
	// Version is the stream's version (its number of events) when the read began. Events
	// appended later are not part of this read.
	Version int64
	// Snapshot is the stream's snapshot of ReadOptions.SnapshotSchema, when the read asked for
	// one (WithSnapshot) and the stream has one; nil otherwise (also for a snapshot written before
	// the stream was deleted, and for a sealed one of a forgotten subject: see Snapshot.Subjects).
	// Events then starts after its Version.
	Snapshot *Snapshot
	// Events yields the events read, in the read's direction. It stops at the first error,
	// yielding it with a zero event. It may be iterated more than once; each pass after the
	// first reads storage again.
	Events iter.Seq2[RecordedEvent, error]
}

// Read reads a stream. opts may be nil: forward from the first event, without limit. A stream
// that was never written is an ErrStreamNotFound.
//
// A read starts with one range query that runs from its first event to the stream's head, which
// sorts after the events: a stream whose events fit one storage page (about 1,000 rows) costs one
// storage request in all. Otherwise Read reads the head too (a point read), and the rest of the
// events lazily, about one request per 1,000 events (or per ReadOptions.PageBytes of events;
// with PageBytes, the first query too asks only for the rows the budget holds at the store's
// estimate), as Events is iterated. A forward read with a
// Limit that ends before the head costs two requests (the events, the head); a backward read with
// a Limit reads the head first, then the events: two requests.
//
// With WithSnapshot the first query starts at the snapshot row, which sorts before the events (a
// probe of 100 rows when the store has not met the stream): a short stream with its snapshot is
// one request. When the stream is longer, the events before the snapshot are not read: a second
// query runs from the version after it to the head (for a stream the store knows to be long, a
// point read of the snapshot row comes first instead of the probe). So a read with a snapshot
// costs at most two requests while the events after the snapshot fit one page, and decodes only
// those. A sealed snapshot (Snapshot.Subjects) adds its subjects' key lookups, through the key
// cache as a sealed event's: none while they are cached.
//
// The first pass over Events yields the rows the first query read before it reads on; later
// passes read storage again. The context is used by the iteration too: cancel it to stop a read.
func (s *Store) Read(ctx context.Context, stream string, opts *ReadOptions) (*StreamRead, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	var o ReadOptions
	if opts != nil {
		o = *opts
	}
	if err := validateStreamName(stream); err != nil {
		return nil, err
	}
	if o.From < 0 {
		return nil, invalid("from", "version %d is negative", o.From)
	}
	if o.Limit < 0 {
		return nil, invalid("limit", "%d is negative", o.Limit)
	}
	if o.Direction != Forward && o.Direction != Backward {
		return nil, invalid("direction", "unknown direction %d", o.Direction)
	}
	if o.PageBytes < 0 {
		return nil, invalid("pageBytes", "%d is negative", o.PageBytes)
	}
	if o.WithSnapshot && o.Direction == Backward {
		return nil, invalid("direction", "a read with a snapshot reads forward")
	}
	pk := streamKey(stream)
	if o.Direction == Backward && o.Limit > 0 {
		// The last events of a stream: the head says where they are. A query from the first
		// event would read the whole stream to find the head.
		h, err := s.readHead(ctx, pk)
		if err != nil {
			return nil, err
		}
		if err := checkReadable(stream, h); err != nil {
			return nil, err
		}
		visible, notBefore := s.visibility(h)
		first, last := versionRange(h.version, visible, ageless(o, notBefore))
		events := notOlder(s.opened(ctx, s.streamEvents(ctx, stream, pk, first, last, o.Direction, o.PageBytes)), notBefore)
		return &StreamRead{Stream: stream, Version: h.version, Events: firstN(events, o.Limit, notBefore)}, nil
	}
	sz := newPageSizer(s.streams)
	op, err := s.openRead(ctx, stream, pk, o, sz)
	if err != nil {
		return nil, err
	}
	h := op.head
	// No head, or a head a dispatcher (or metadata set early) placed before the first append, or a
	// deleted stream.
	if err := checkReadable(stream, h); err != nil {
		return nil, err
	}
	visible, notBefore := s.visibility(h)
	if op.snapshot != nil && (op.snapshot.Version < h.meta.deletedBefore || op.snapshot.Version+1 < visible) {
		// A snapshot of the events a delete removed, not of the recreated stream; or one from
		// before events that retention hides: the state it gives would lack them silently.
		op.snapshot = nil
	}
	if op.snapshot != nil {
		if op.snapshot.Version > h.version {
			return nil, corrupt(pk, snapshotRowKey, "snapshot at version %d, beyond the head version %d", op.snapshot.Version, h.version)
		}
		o.From = max(o.From, op.snapshot.Version+1)
	}
	first, last := versionRange(h.version, visible, ageless(o, notBefore))
	read := &StreamRead{Stream: stream, Version: h.version, Snapshot: op.snapshot}
	// The first pass yields what the first query read; every pass reads the rest from storage.
	var kept atomic.Pointer[[]table.Entity]
	kept.Store(&op.rows)
	read.Events = s.opened(ctx, func(yield func(RecordedEvent, error) bool) {
		rows := kept.Swap(nil)
		if rows == nil || first > last {
			s.streamEvents(ctx, stream, pk, first, last, o.Direction, o.PageBytes)(yield)
			return
		}
		if o.Direction == Forward {
			next, ok := yieldKept(stream, *rows, first, last, yield)
			if ok && next <= last {
				s.scanEvents(ctx, stream, pk, next, last, o.PageBytes, sz, yield)
			}
			return
		}
		// Backward, from the first version (a backward read with a limit does not come here): the
		// kept rows are the oldest events, yielded last.
		var page []RecordedEvent
		next, ok := yieldKept(stream, *rows, first, last, func(e RecordedEvent, err error) bool {
			if err != nil {
				return yield(RecordedEvent{}, err)
			}
			page = append(page, e)
			return true
		})
		if !ok {
			return
		}
		if next <= last {
			ended := true
			s.streamEvents(ctx, stream, pk, next, last, Backward, o.PageBytes)(func(e RecordedEvent, err error) bool {
				if err != nil || !yield(e, err) {
					ended = false
					if err != nil {
						yield(RecordedEvent{}, err)
					}
					return false
				}
				return true
			})
			if !ended {
				return
			}
		}
		for _, e := range slices.Backward(page) {
			if !yield(e, nil) {
				return
			}
		}
	})
	read.Events = firstN(notOlder(read.Events, notBefore), o.Limit, notBefore)
	return read, nil
}

// ageless returns o without its Limit when a maxAge hides events (notBefore set): which versions
// hold the first Limit visible events is known only once their recorded times are read, so the
// range is read lazily and firstN applies the Limit after the age filter.
func ageless(o ReadOptions, notBefore time.Time) ReadOptions {
	if !notBefore.IsZero() {
		o.Limit = 0
	}
	return o
}

// firstN passes on the first limit events of seq (all of them when limit is 0, or when no
// maxAge hides events: the version range holds the limit then).
func firstN(seq iter.Seq2[RecordedEvent, error], limit int, notBefore time.Time) iter.Seq2[RecordedEvent, error] {
	if limit <= 0 || notBefore.IsZero() {
		return seq
	}
	return func(yield func(RecordedEvent, error) bool) {
		n := 0
		for e, err := range seq {
			if !yield(e, err) || err != nil {
				return
			}
			if n++; n == limit {
				return
			}
		}
	}
}

// notOlder passes on the events of seq recorded at or after notBefore (all of them when it is
// zero): a stream's maxAge.
func notOlder(seq iter.Seq2[RecordedEvent, error], notBefore time.Time) iter.Seq2[RecordedEvent, error] {
	if notBefore.IsZero() {
		return seq
	}
	return func(yield func(RecordedEvent, error) bool) {
		for e, err := range seq {
			if err == nil && e.RecordedAt.Before(notBefore) {
				continue
			}
			if !yield(e, err) {
				return
			}
		}
	}
}

// opened yields the events of events with sealed ones opened (or erased): see Store.openEvent.
// Keys come from the key cache, so a read costs at most one key read per subject.
func (s *Store) opened(ctx context.Context, events iter.Seq2[RecordedEvent, error]) iter.Seq2[RecordedEvent, error] {
	return func(yield func(RecordedEvent, error) bool) {
		for e, err := range events {
			if err == nil {
				if err = s.openEvent(ctx, &e); err != nil {
					e = RecordedEvent{}
				}
			}
			if !yield(e, err) || err != nil {
				return
			}
		}
	}
}

// yieldKept yields, in order, the events of versions first, first+1, … up to last that rows
// (event rows in key order) hold without a gap. It returns the version it stopped before, and
// false when yield stopped it or an error was yielded.
func yieldKept(stream string, rows []table.Entity, first, last int64, yield func(RecordedEvent, error) bool) (int64, bool) {
	next := first
	for _, row := range rows {
		if next > last {
			break
		}
		v, ok := parseEventKey(row.RowKey)
		if ok && v < next {
			continue
		}
		if ok && v > next {
			break // a gap in what the first query saw: read the rest again from storage
		}
		e, err := decodeEvent(stream, row)
		if err != nil {
			yield(RecordedEvent{}, err)
			return next, false
		}
		next++
		if !yield(e, nil) {
			return next, false
		}
	}
	return next, true
}

// eventRows returns the event rows of rows (in place when they all are).
func eventRows(rows []table.Entity) []table.Entity {
	if !slices.ContainsFunc(rows, func(r table.Entity) bool { return !strings.HasPrefix(r.RowKey, eventKeyPrefix) }) {
		return rows
	}
	return slices.DeleteFunc(slices.Clone(rows), func(r table.Entity) bool { return !strings.HasPrefix(r.RowKey, eventKeyPrefix) })
}

// openedRead is what a read's first queries found: the head, the snapshot asked for, and the
// event rows read on the way.
type openedRead struct {
	head     head
	snapshot *Snapshot
	rows     []table.Entity // event rows from the read's first version on, in key order
}

// snapshotProbeRows is the page size of the first query of a read with a snapshot of a stream
// whose length the store does not know: the snapshot row, up to 97 events, the progress row and
// the head. A longer stream costs a second query from after the snapshot, and the events this one
// read before the snapshot are wasted: so few that the second query costs about what it would
// after a point read of the snapshot row.
const snapshotProbeRows = 100

// openRead runs a read's first range query: from the read's first event (or the snapshot row) to
// the head. It follows continuations while what it read fits the query's limit (one storage page;
// snapshotProbeRows for a read from the snapshot row of a stream of unknown length). When that
// does not reach the head, a read that does not yet hold every event it wants and read none of
// them, or only a probe's worth, runs one more query from the next version it wants; then the
// head is read directly. A read with a snapshot of a stream the store knows to be longer than a
// page reads the snapshot row alone first (a point read), so that no event before it is read.
//
// A sealed snapshot (one naming subjects) is opened as soon as its row is read, before any event
// is skipped for it: one whose subject was forgotten is no snapshot, and the read keeps the
// events from its first version. Opening it looks up its subjects' keys through the key cache:
// the lookups the sealed events after it would make anyway, and no request while they are
// cached.
func (s *Store) openRead(ctx context.Context, stream, pk string, o ReadOptions, sz *pageSizer) (openedRead, error) {
	var op openedRead
	first := max(o.From, 1)
	if o.Direction == Backward {
		first = 1
	}
	// takeSnapshot keeps the snapshot of row when it is of the schema asked for and readable.
	takeSnapshot := func(row table.Entity) error {
		sn, err := decodeSnapshot(row)
		if err != nil || sn.Schema != o.SnapshotSchema {
			return err
		}
		if sn, err = s.openSnapshot(ctx, stream, sn); err != nil || sn == nil {
			return err
		}
		op.snapshot = sn
		first = max(first, sn.Version+1)
		return nil
	}
	from := eventKey(first)
	limit := table.MaxPageSize
	wantedLimit := func() int {
		if o.Direction == Forward && o.Limit > 0 {
			return min(o.Limit-len(op.rows)+2, table.MaxPageSize) // the events wanted, the progress row and the head
		}
		return table.MaxPageSize
	}
	if o.WithSnapshot {
		known, ok := s.heads.get(pk)
		switch {
		case ok && known.version > table.MaxPageSize-3:
			row, err := s.streams.get(ctx, pk, snapshotRowKey)
			switch {
			case err == nil:
				if err := takeSnapshot(row); err != nil {
					return op, err
				}
			case !errors.Is(err, table.ErrNotFound):
				return op, err
			}
			from, limit = eventKey(first), wantedLimit()
		case ok:
			from = snapshotRowKey
		default:
			from, limit = snapshotRowKey, snapshotProbeRows
		}
	} else {
		limit = wantedLimit()
	}
	for round := 0; round < 2; round++ {
		if o.PageBytes > 0 {
			limit = sz.rows(o.PageBytes, limit) // rows the byte budget holds, at the estimate
		}
		q := table.Query{PartitionKey: pk, From: from, To: eventIDPrefix, Limit: limit}
		read := 0
		kept := len(op.rows)
		for {
			page, err := s.streams.query(ctx, q)
			if err != nil {
				return op, err
			}
			if o.PageBytes > 0 {
				sz.observe(eventRows(page.Entities)) // the head and the snapshot are not what it sizes
			}
			for _, row := range page.Entities {
				read++
				switch rk := row.RowKey; {
				case rk == headRowKey:
					h, err := decodeHead(row)
					if err != nil {
						return op, err
					}
					s.heads.put(pk, h)
					op.head = h
					return op, nil
				case rk == snapshotRowKey:
					if err := takeSnapshot(row); err != nil {
						return op, err
					}
				case strings.HasPrefix(rk, eventKeyPrefix):
					if v, ok := parseEventKey(rk); ok && v < first {
						continue // before the snapshot (or From): not decoded, not kept
					}
					op.rows = append(op.rows, row)
				}
				// Other rows (the progress row, rows of a later release) are not the read's.
			}
			if page.Continuation == "" {
				return op, nil // no head: no stream
			}
			if read >= limit || o.Limit > 0 && len(op.rows) >= o.Limit {
				break // a page's worth, or every event wanted, and the head still ahead
			}
			q.Continuation = page.Continuation
		}
		haveAll := o.Limit > 0 && len(op.rows) >= o.Limit
		if round > 0 || haveAll || len(op.rows) > kept && limit == table.MaxPageSize {
			break
		}
		// Read on from the next version wanted, a full page this time.
		if n := len(op.rows); n > 0 {
			v, ok := parseEventKey(op.rows[n-1].RowKey)
			if !ok {
				break
			}
			first = v + 1
		}
		from, limit = eventKey(first), wantedLimit()
	}
	h, err := s.readHead(ctx, pk)
	if err != nil {
		return op, err
	}
	op.head = h
	return op, nil
}

// versionRange is the range of versions [first, last] a read covers; empty when first > last.
func versionRange(version, visible int64, o ReadOptions) (first, last int64) {
	limit := int64(o.Limit)
	if o.Direction == Backward {
		last = version
		if o.From > 0 && o.From < version {
			last = o.From
		}
		first = max(visible, 1)
		if limit > 0 && last-limit+1 > first {
			first = last - limit + 1
		}
		return first, last
	}
	first = max(o.From, visible, 1)
	last = version
	if limit > 0 && first+limit-1 < last {
		last = first + limit - 1
	}
	return first, last
}

// streamEvents yields the events with versions in [first, last], in direction order. A backward read
// queries forward pages from the end and yields each page reversed: the storage only reads
// forward. pageBytes, when positive, sizes the storage requests (see ReadOptions.PageBytes).
func (s *Store) streamEvents(ctx context.Context, stream, pk string, first, last int64, dir Direction, pageBytes int64) iter.Seq2[RecordedEvent, error] {
	return func(yield func(RecordedEvent, error) bool) {
		if first > last {
			return
		}
		sz := newPageSizer(s.streams)
		if dir == Forward {
			s.scanEvents(ctx, stream, pk, first, last, pageBytes, sz, yield)
			return
		}
		for hi := last; hi >= first; {
			lo := max(first, hi-int64(sz.rows(pageBytes, table.MaxPageSize))+1)
			var page []RecordedEvent
			ok := s.scanEvents(ctx, stream, pk, lo, hi, pageBytes, sz, func(e RecordedEvent, err error) bool {
				if err != nil {
					return yield(RecordedEvent{}, err)
				}
				page = append(page, e)
				return true
			})
			if !ok {
				return
			}
			for _, e := range slices.Backward(page) {
				if !yield(e, nil) {
					return
				}
			}
			hi = lo - 1
		}
	}
}

// scanEvents yields the events [first, last] forward, following continuations (also across empty
// pages), and checks that no version is missing. With pageBytes positive, each request asks for
// the rows that fit in it at sz's estimate; when the estimate changes, the next request is a new
// query from the next version rather than a continuation (a continuation must repeat its query
// unchanged), which costs the same one request. It returns false when yield stopped it or an
// error was yielded.
func (s *Store) scanEvents(ctx context.Context, stream, pk string, first, last, pageBytes int64, sz *pageSizer, yield func(RecordedEvent, error) bool) bool {
	var q table.Query
	next := first
	for next <= last {
		limit := 0
		if pageBytes > 0 {
			limit = sz.rows(pageBytes, int(min(last-next+1, table.MaxPageSize)))
		}
		if q.Continuation == "" || limit != q.Limit {
			q = table.Query{PartitionKey: pk, From: eventKey(next), To: eventKey(last + 1), Limit: limit}
		}
		page, err := s.streams.query(ctx, q)
		if err != nil {
			yield(RecordedEvent{}, err)
			return false
		}
		if pageBytes > 0 {
			sz.observe(page.Entities)
		}
		for _, row := range page.Entities {
			e, err := decodeEvent(stream, row)
			if err == nil && e.Version > next && s.removedBelow(ctx, pk, e.Version) {
				next = e.Version // a scavenger removed the versions before it since the read began
			}
			if err == nil && e.Version != next {
				err = corrupt(pk, row.RowKey, "expected event version %d", next)
			}
			if err != nil {
				yield(RecordedEvent{}, err)
				return false
			}
			next++
			if !yield(e, nil) {
				return false
			}
		}
		if page.Continuation == "" {
			break
		}
		q.Continuation = page.Continuation
	}
	if next != last+1 && !s.removedBelow(ctx, pk, last+1) {
		yield(RecordedEvent{}, corrupt(pk, eventKey(next), "event version %d is missing", next))
		return false
	}
	return true
}

// removedBelow reports whether the stream's head now says that every version below v may have
// been removed by a scavenger: what a read that began before the removal finds missing. One head
// read, only when a read meets missing rows.
func (s *Store) removedBelow(ctx context.Context, pk string, v int64) bool {
	h, err := s.readHead(ctx, pk)
	return err == nil && h.meta.removedBefore >= v
}

// Version returns a stream's current version, or ErrStreamNotFound. It always reads storage.
func (s *Store) Version(ctx context.Context, stream string) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if err := validateStreamName(stream); err != nil {
		return 0, err
	}
	h, err := s.readHead(ctx, streamKey(stream))
	if err != nil {
		return 0, err
	}
	if err := checkReadable(stream, h); err != nil {
		return 0, err
	}
	return h.version, nil
}
