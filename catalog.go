package estuite

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/estuite/estuite/table"
)

// The stream catalog: one row per stream in the event table, so that streams can be listed in
// pages without a scan of the stream table (Azure has no way to list a table's partitions but to
// read every row). The dispatcher of a feed shard writes the rows of the streams it dispatches
// for the first time, before their first events enter the feed; see docs/storage-format.md.
const (
	catalogPartitionFmt = "streams%02d" // one partition per feed shard
	propCatalogStream   = "Stream"
)

// Limits of ListStreams.
const (
	// DefaultListStreamsLimit is how many streams a ListStreams page holds when Limit is 0.
	DefaultListStreamsLimit = 100
	// MaxListStreamsLimit is the largest Limit ListStreams accepts.
	MaxListStreamsLimit = 1000
	// listHeadReaders is how many head reads of one ListStreams page run at once.
	listHeadReaders = 8
)

// catalogPartition is the catalog partition of feed shard shard.
func catalogPartition(shard int) string { return fmt.Sprintf(catalogPartitionFmt, shard) }

// catalogEntity is the catalog row of the stream whose partition key is pk, in feed shard shard.
func catalogEntity(shard int, pk, stream string) table.Entity {
	return table.Entity{PartitionKey: catalogPartition(shard), RowKey: pk, Properties: map[string]any{propCatalogStream: stream}}
}

// ListStreamsOptions select a page of ListStreams. The zero value lists the first
// DefaultListStreamsLimit streams.
type ListStreamsOptions struct {
	// Prefix, when set, lists only the streams whose names start with it.
	Prefix string
	// After lists the streams after this one: pass the previous page's Next.
	After string
	// Limit is the most streams the page holds: 1 to MaxListStreamsLimit, 0 for
	// DefaultListStreamsLimit.
	Limit int
}

// StreamInfo is one stream of a ListStreams page.
type StreamInfo struct {
	Name    string // the stream's name
	Version int64  // its version: its number of events, deleted ones included
}

// StreamList is a page of ListStreams.
type StreamList struct {
	// Streams are the page's streams, in the order of their partition keys: name order, but for
	// names holding one of the characters escaped in keys ('%', '/', '\', '#', '?'), which sort
	// as their escapes ("%2F" for '/').
	Streams []StreamInfo
	// Next, when not empty, is the After of the next page; empty when no stream follows.
	Next string
}

// ListStreams lists the store's streams from the stream catalog, a page at a time, with their
// versions. Deleted streams are left out. A stream appears in the catalog once the dispatcher has
// written its first events into the feed: a stream appended to a moment ago may be missing until
// then (Repair adds streams of stores written before the catalog existed).
//
// Cost: per feed shard, one query of its catalog partition (more only when storage returns
// partial pages), then one point read of each listed stream's head (up to 8 at once) — in
// proportion to the streams listed, never a scan. A page may hold fewer than Limit streams
// when some listed in the catalog were deleted.
func (s *Store) ListStreams(ctx context.Context, opts *ListStreamsOptions) (StreamList, error) {
	if err := s.checkOpen(); err != nil {
		return StreamList{}, err
	}
	var o ListStreamsOptions
	if opts != nil {
		o = *opts
	}
	switch {
	case o.Limit == 0:
		o.Limit = DefaultListStreamsLimit
	case o.Limit < 0 || o.Limit > MaxListStreamsLimit:
		return StreamList{}, invalid("limit", "is %d, it must be 1 to %d", o.Limit, MaxListStreamsLimit)
	}
	if o.Prefix != "" {
		if err := validateName("prefix", o.Prefix, MaxStreamNameLength); err != nil {
			return StreamList{}, err
		}
	}
	if o.After != "" {
		if err := validateName("after", o.After, MaxStreamNameLength); err != nil {
			return StreamList{}, err
		}
	}
	prefix, after := streamKey(o.Prefix), streamKey(o.After)
	from := max(prefix, after)

	// Each shard's next rows, merged in key order.
	var rows []table.Entity
	more := false
	for shard := range s.feedShards {
		got, full, err := s.catalogRows(ctx, shard, from, after, prefix, o.Limit)
		if err != nil {
			return StreamList{}, err
		}
		rows = append(rows, got...)
		more = more || full
	}
	slices.SortFunc(rows, func(a, b table.Entity) int { return cmp.Compare(a.RowKey, b.RowKey) })
	if len(rows) > o.Limit {
		rows, more = rows[:o.Limit], true
	}

	infos := make([]StreamInfo, len(rows))
	for i, row := range rows {
		name, _ := row.Properties[propCatalogStream].(string)
		if name == "" {
			n, err := streamName(row.RowKey)
			if err != nil {
				return StreamList{}, corrupt(row.PartitionKey, row.RowKey, "a catalog row without a stream name: %v", err)
			}
			name = n
		}
		infos[i].Name = name
	}
	// The heads, 8 at a time, read past the head cache: a listing must not push the heads of
	// the streams being appended to out of it.
	errs := make([]error, len(rows))
	var wg sync.WaitGroup
	sem := make(chan struct{}, listHeadReaders)
	for i := range infos {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			infos[i].Version, errs[i] = s.uncachedVersion(ctx, infos[i].Name)
		}()
	}
	wg.Wait()
	var out StreamList
	for i, info := range infos {
		var deleted *StreamDeletedError
		switch err := errs[i]; {
		case err == nil:
			out.Streams = append(out.Streams, info)
		case errors.Is(err, ErrStreamNotFound), errors.As(err, &deleted):
		default:
			return StreamList{}, err
		}
	}
	if more && len(rows) > 0 {
		n, _ := streamName(rows[len(rows)-1].RowKey)
		out.Next = n
	}
	return out, nil
}

// catalogRows reads up to limit catalog rows of shard from the key from on, skipping the row
// after and stopping at the first key without prefix. full reports that more rows may follow.
func (s *Store) catalogRows(ctx context.Context, shard int, from, after, prefix string, limit int) (rows []table.Entity, full bool, err error) {
	errStop := errors.New("stop")
	// limit rows, one more to know whether more follow, and one more for the row after itself,
	// which the query returns first when it is there: one query page for a full page.
	q := table.Query{PartitionKey: catalogPartition(shard), From: from, Limit: limit + 2}
	err = s.events.queryPages(ctx, q, func(p table.Page) error {
		for _, e := range p.Entities {
			if e.RowKey == after && after != "" {
				continue
			}
			if !strings.HasPrefix(e.RowKey, prefix) {
				return errStop
			}
			if len(rows) == limit {
				full = true
				return errStop
			}
			rows = append(rows, e)
		}
		return nil
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	return rows, full, err
}

// catalogNew writes the catalog rows of the streams of work that enter the feed for the first
// time (their pending events begin at version 1), before the feed write: a crash between the two
// writes them again, and a catalog row is never missing for a stream the feed holds. One batch
// per 100 new streams; none in a step without new streams.
func (d *Dispatcher) catalogNew(ctx context.Context, work []*streamWork) error {
	var ops []table.Op
	for _, w := range work {
		if len(w.pending) == 0 {
			continue
		}
		if v, _ := parseEventKey(w.pending[0].RowKey); v != 1 {
			continue
		}
		ops = append(ops, table.Op{Kind: table.Upsert, Entity: catalogEntity(d.shard, w.pk, w.stream)})
	}
	slices.SortFunc(ops, func(a, b table.Op) int { return cmp.Compare(a.Entity.RowKey, b.Entity.RowKey) })
	pk := catalogPartition(d.shard)
	for chunk := range slices.Chunk(ops, table.MaxBatchOps) {
		// Upserts: sent again on any transient error, a lost answer included.
		_, err := withRetry(ctx, d.s.events.retry, func() ([]string, error) { return d.s.events.submitOnce(ctx, pk, chunk) })
		if err != nil {
			return fmt.Errorf("estuite: stream catalog write: %w", err)
		}
	}
	return nil
}

// walkCatalog reads the stream catalog, after the feed: every stream whose events the feed
// walk saw has its row by then (the dispatcher writes it before the stream's first feed write).
// One query per 1,000 streams.
func (v *verifier) walkCatalog(ctx context.Context) error {
	v.prog.Phase = "catalog"
	listed := make(map[string]bool)
	for shard := range v.s.feedShards {
		err := v.queryAll(ctx, v.s.events, table.Query{PartitionKey: catalogPartition(shard)}, func(e table.Entity) {
			listed[e.RowKey] = true
		})
		if err != nil {
			return err
		}
	}
	for pk, st := range v.streams {
		if st.feedMax >= 1 && st.inStreams && st.hasHead && !st.badHead && !listed[pk] {
			v.r.Uncatalogued = append(v.r.Uncatalogued, st.name)
		}
	}
	return nil
}

// uncachedVersion is Version without the head cache: a point read of the head, not kept.
func (s *Store) uncachedVersion(ctx context.Context, stream string) (int64, error) {
	h, _, err := s.fetchHead(ctx, streamKey(stream))
	if err != nil {
		return 0, err
	}
	if err := checkReadable(stream, h); err != nil {
		return 0, err
	}
	return h.version, nil
}
