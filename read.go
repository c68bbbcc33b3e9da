package estuite

import (
	"context"
	"iter"
	"slices"

	"github.com/estuite/estuite/table"
)

// StreamRead is the result of Store.Read: the stream's version when the read began, and its
// events, fetched page by page as Events is iterated.
type StreamRead struct {
	Stream string
	// Version is the stream's version (its number of events) when the read began. Events
	// appended later are not part of this read.
	Version int64
	// Events yields the events read, in the read's direction. It stops at the first error,
	// yielding it with a zero event. It may be iterated more than once; each pass reads storage
	// again.
	Events iter.Seq2[RecordedEvent, error]
}

// Read reads a stream. It reads the stream's head at once — a stream that was never written is an
// ErrStreamNotFound — and its events lazily, about one storage request per 1,000 events (or per
// ReadOptions.PageBytes of events), as Events is iterated. opts may be nil: forward from the first
// event, without limit.
//
// The context is used by the iteration too: cancel it to stop a read.
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
	pk := streamKey(stream)
	h, err := s.readHead(ctx, pk)
	if err != nil {
		return nil, err
	}
	if h.etag == "" || h.version == 0 {
		return nil, ErrStreamNotFound // no head, or a head a dispatcher placed before the first append
	}
	first, last := versionRange(h.version, o)
	return &StreamRead{
		Stream:  stream,
		Version: h.version,
		Events:  s.streamEvents(ctx, stream, pk, first, last, o.Direction, o.PageBytes),
	}, nil
}

// versionRange is the range of versions [first, last] a read covers; empty when first > last.
func versionRange(version int64, o ReadOptions) (first, last int64) {
	limit := int64(o.Limit)
	if o.Direction == Backward {
		last = version
		if o.From > 0 && o.From < version {
			last = o.From
		}
		first = 1
		if limit > 0 && last-limit+1 > first {
			first = last - limit + 1
		}
		return first, last
	}
	first = max(o.From, 1)
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
	if next != last+1 {
		yield(RecordedEvent{}, corrupt(pk, eventKey(next), "event version %d is missing", next))
		return false
	}
	return true
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
	if h.etag == "" || h.version == 0 {
		return 0, ErrStreamNotFound
	}
	return h.version, nil
}
