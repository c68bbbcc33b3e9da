package estuite

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/estuite/estuite/table"
)

// Polling of WaitDispatched for the feed writes of other processes' dispatchers.
const (
	waitDispatchedFirstPoll = 25 * time.Millisecond
	waitDispatchedMaxPoll   = time.Second
	// recentRunStreams bounds what a store remembers of its own dispatcher's latest feed writes:
	// one run of positions for each of that many streams.
	recentRunStreams = 10000
)

// WaitDispatched waits until version of stream is in the feed, and returns its feed position:
// read-your-writes without a subscription. Wait for an append's AppendResult.LastVersion, then
// wait for a projection's checkpoint to reach the position returned, and the projection has
// seen the append. It returns at once when the version is already in the feed.
//
// It learns of the feed writes of a dispatcher running in this process (Start, or Step) without
// a storage request. It also looks in storage, so that it finds what other processes' dispatchers
// write: once when called, then polling with a backoff from 25 ms to 1 s. One look costs two point
// reads (the current feed page's header, and the stream's marker row in it) or three (the stream's
// progress row too, when the stream has no events in the current page); finding the exact
// position of a version that is not the stream's last in the feed costs one more (or, rarely, a
// query of the feed page); a version in an earlier page, the page's marker of the stream (found
// through the progress row's page index), and that page's query when the version is not in one
// run with the marker's.
//
// A version the stream does not have yet is an *InvalidInputError, a stream never written an
// ErrStreamNotFound; a version below 1 is an *InvalidInputError. It returns ctx's error when ctx
// ends first.
func (s *Store) WaitDispatched(ctx context.Context, stream string, version int64) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if err := validateStreamName(stream); err != nil {
		return 0, err
	}
	if version < 1 {
		return 0, invalid("version", "%d is not a stream version (the first is 1)", version)
	}
	pk := streamKey(stream)
	if pos, ok := s.dispatchWatch.recent(pk, version); ok {
		return pos, nil
	}
	w := s.dispatchWatch.register(pk, version)
	defer s.dispatchWatch.unregister(w)
	poll := waitDispatchedFirstPoll
	for first := true; ; first = false {
		pos, found, err := s.locateDispatched(ctx, pk, stream, version)
		if err != nil {
			return 0, err
		}
		if found {
			return pos, nil
		}
		if first {
			if err := s.checkCommitted(ctx, pk, stream, version); err != nil {
				return 0, err
			}
		}
		timer := time.NewTimer(poll)
		select {
		case <-w.done:
			timer.Stop()
			return w.pos, nil
		case <-timer.C:
			poll = min(2*poll, waitDispatchedMaxPoll)
		case <-ctx.Done():
			timer.Stop()
			return 0, ctx.Err()
		}
	}
}

// checkCommitted reports an error when version of the stream is not committed: the stream was
// never written, or is not at that version yet.
func (s *Store) checkCommitted(ctx context.Context, pk, stream string, version int64) error {
	if h, ok := s.heads.get(pk); ok && h.version >= version {
		return nil
	}
	h, err := s.readHead(ctx, pk)
	if err != nil {
		return err
	}
	if h.etag == "" || h.version == 0 {
		return ErrStreamNotFound
	}
	if h.version < version {
		return invalid("version", "stream %q is at version %d: version %d is not committed", stream, h.version, version)
	}
	return nil
}

// locateDispatched looks in storage for the feed position of version of a stream. found is false
// when the version is not in the feed (yet, or as far as a look that raced a page change saw).
func (s *Store) locateDispatched(ctx context.Context, pk, stream string, version int64) (int64, bool, error) {
	shard := s.shardOf(pk)
	known, _ := s.shards[shard].feedHead.current()
	page := pageOf(max(known, 1))
	if known == 0 {
		if row, err := s.events.get(ctx, metaPartition, feedHintRowOf(shard)); err == nil {
			if p, ok := row.Properties[propPage].(int64); ok && validPage(p) {
				page = p
			}
		} else if !errors.Is(err, table.ErrNotFound) {
			return 0, false, err
		}
	}
	head, err := s.feedHeadFrom(ctx, shard, page)
	if err != nil || head == 0 {
		return 0, false, err
	}
	page = pageOf(head)
	m, ok, err := s.feedMarker(ctx, page, pk)
	switch {
	case err != nil:
		return 0, false, err
	case ok && m.version < version:
		return 0, false, nil
	case ok:
		return s.findInFeed(ctx, pk, stream, version, page, m, nil)
	}
	// The stream has no events in the current page: its progress row holds what the earlier
	// pages hold of it (raised before the current page's first write), and which pages.
	g, err := s.progress(ctx, pk)
	if err != nil {
		return 0, false, err
	}
	if g.dispatched < version || page == 0 {
		return 0, false, nil
	}
	if p, ok := g.index.pageOf(version); ok && p < page {
		return s.findInPageOf(ctx, pk, stream, version, p, page, &g)
	}
	return s.walkBack(ctx, pk, stream, version, page, &g)
}

// walkBack finds version of a stream in the pages before page, looking at them one by one from
// the last: the first that holds the stream's events (has a marker of it) holds the version or
// is after it.
func (s *Store) walkBack(ctx context.Context, pk, stream string, version, page int64, g *progressRow) (int64, bool, error) {
	for p := page - 1; p >= 0; p-- {
		m, ok, err := s.feedMarker(ctx, p, pk)
		if err != nil {
			return 0, false, err
		}
		if ok {
			if m.version < version {
				return 0, false, nil // another look will see where it went
			}
			return s.findInFeed(ctx, pk, stream, version, p, m, g)
		}
	}
	return 0, false, nil
}

// feedMarkerRow is a stream's marker row in a feed page: the last version of the stream the page
// holds, at position.
type feedMarkerRow struct {
	version, position int64
	shard             int // the feed shard of the page
}

func (s *Store) feedMarker(ctx context.Context, page int64, pk string) (feedMarkerRow, bool, error) {
	shard := s.shardOf(pk)
	row, err := s.events.get(ctx, feedPartition(shard, page), feedMarkerKey(pk))
	if errors.Is(err, table.ErrNotFound) {
		return feedMarkerRow{}, false, nil
	}
	if err != nil {
		return feedMarkerRow{}, false, err
	}
	m := feedMarkerRow{shard: shard}
	var ok1, ok2 bool
	m.version, ok1 = row.Properties[propVersion].(int64)
	m.position, ok2 = row.Properties[propPosition].(int64)
	if !ok1 || !ok2 || m.version < 1 || pageOf(m.position) != page {
		return m, false, corrupt(row.PartitionKey, row.RowKey, "malformed feed stream marker")
	}
	return m, true, nil
}

// findInPageOf finds version of a stream in page p, which the stream's page index says holds it;
// when it does not (the index is a hint), it walks back from page before, as without one.
func (s *Store) findInPageOf(ctx context.Context, pk, stream string, version, p, before int64, g *progressRow) (int64, bool, error) {
	m, ok, err := s.feedMarker(ctx, p, pk)
	if err != nil {
		return 0, false, err
	}
	if ok && m.version >= version {
		if pos, found, err := s.runPosition(ctx, stream, version, p, m); err != nil || found {
			return pos, found, err
		}
		pos, found, err := s.findInPage(ctx, stream, version, p, m)
		if err != nil || found {
			return pos, found, err
		}
	}
	g.index = pageIndex{} // wrong: do without it
	return s.walkBack(ctx, pk, stream, version, before, g)
}

// findInFeed finds the position of version of a stream whose marker m in page says the page (or
// an earlier one) holds it. The stream's versions after it up to m's are at later positions, so
// when they were written in one run with it, it is m's position less their number. Otherwise the
// stream's progress row (g, read here when nil) says whether an earlier page holds it, and its
// page index which; without an index entry, the pages before are looked at one by one.
func (s *Store) findInFeed(ctx context.Context, pk, stream string, version, page int64, m feedMarkerRow, g *progressRow) (int64, bool, error) {
	for {
		if pos, found, err := s.runPosition(ctx, stream, version, page, m); err != nil || found {
			return pos, found, err
		}
		if page == 0 {
			break
		}
		if g == nil {
			r, err := s.progress(ctx, pk)
			if err != nil {
				return 0, false, err
			}
			g = &r
		}
		if p, ok := g.index.pageOf(version); ok && version <= g.dispatched {
			if p >= page {
				break // in this page
			}
			return s.findInPageOf(ctx, pk, stream, version, p, page, g)
		}
		// Not one run, and not in the index: the version is in this page, before c, or in an
		// earlier page — the one before that holds the stream's events (pages without them
		// have no marker of it).
		earlier := false
		for p := page - 1; p >= 0 && !earlier; p-- {
			prev, ok, err := s.feedMarker(ctx, p, pk)
			if err != nil {
				return 0, false, err
			}
			if !ok {
				continue
			}
			if prev.version < version {
				break // the version is in page
			}
			page, m, earlier = p, prev, true
		}
		if !earlier {
			break
		}
	}
	return s.findInPage(ctx, stream, version, page, m)
}

// runPosition finds version of a stream in page when it was written in one run with the
// version of the page's marker m: at m's position less the versions between (one point read).
func (s *Store) runPosition(ctx context.Context, stream string, version, page int64, m feedMarkerRow) (int64, bool, error) {
	if m.version == version {
		return m.position, true, nil
	}
	c := m.position - (m.version - version)
	if c < pageFirst(page) {
		return 0, false, nil
	}
	row, err := s.events.get(ctx, feedPartition(m.shard, page), feedEventKey(c))
	if err != nil && !errors.Is(err, table.ErrNotFound) {
		return 0, false, err
	}
	return c, err == nil && isFeedRowOf(row, stream, version), nil
}

// findInPage finds version of a stream in page, whose marker of the stream is m, by a query of the
// page up to m's position.
func (s *Store) findInPage(ctx context.Context, stream string, version, page int64, m feedMarkerRow) (int64, bool, error) {
	if m.version == version {
		return m.position, true, nil
	}
	pos, found := int64(0), false
	q := table.Query{PartitionKey: feedPartition(m.shard, page), From: feedEventKey(pageFirst(page)), To: feedEventKey(m.position)}
	err := s.events.queryPages(ctx, q, func(p table.Page) error {
		for _, row := range p.Entities {
			if !found && isFeedRowOf(row, stream, version) {
				pos, found = parseFeedEventKey(row.RowKey)
			}
		}
		if found {
			return errStopPages
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopPages) {
		return 0, false, err
	}
	return pos, found, nil
}

var errStopPages = errors.New("estuite: stop paging")

func isFeedRowOf(row table.Entity, stream string, version int64) bool {
	st, _ := row.Properties[propStream].(string)
	v, _ := row.Properties[propVersion].(int64)
	return st == stream && v == version
}

// dispatchWatch tells WaitDispatched what this process's dispatchers wrote into the feed: it
// wakes the waiters of the versions written, and remembers each stream's latest run of
// positions.
type dispatchWatch struct {
	mu      sync.Mutex
	waiters map[string][]*dispatchWaiter // by stream partition key
	runs    map[string]feedRun           // by stream partition key, at most recentRunStreams
}

// feedRun is a stream's versions first…last, written at consecutive positions from position.
type feedRun struct{ first, last, position int64 }

type dispatchWaiter struct {
	pk      string
	version int64
	pos     int64         // set before done is closed
	fired   bool          // done is closed (guarded by dispatchWatch.mu)
	done    chan struct{} // closed when the version was written
}

func (dw *dispatchWatch) recent(pk string, version int64) (int64, bool) {
	dw.mu.Lock()
	defer dw.mu.Unlock()
	r, ok := dw.runs[pk]
	if !ok || version < r.first || version > r.last {
		return 0, false
	}
	return r.position + version - r.first, true
}

func (dw *dispatchWatch) register(pk string, version int64) *dispatchWaiter {
	w := &dispatchWaiter{pk: pk, version: version, done: make(chan struct{})}
	dw.mu.Lock()
	defer dw.mu.Unlock()
	if dw.waiters == nil {
		dw.waiters = make(map[string][]*dispatchWaiter)
	}
	dw.waiters[pk] = append(dw.waiters[pk], w)
	return w
}

func (dw *dispatchWatch) unregister(w *dispatchWaiter) {
	dw.mu.Lock()
	defer dw.mu.Unlock()
	list := dw.waiters[w.pk]
	for i, o := range list {
		if o == w {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(dw.waiters, w.pk)
	} else {
		dw.waiters[w.pk] = list
	}
}

// written records the feed event rows of a feed batch that was stored (ops in position order).
// It costs no storage request: it runs on the dispatcher's path, after the write.
func (dw *dispatchWatch) written(ops []table.Op) {
	dw.mu.Lock()
	defer dw.mu.Unlock()
	if dw.runs == nil {
		dw.runs = make(map[string]feedRun)
	}
	for _, op := range ops {
		pos, ok := parseFeedEventKey(op.Entity.RowKey)
		if !ok {
			continue
		}
		stream, _ := op.Entity.Properties[propStream].(string)
		version, _ := op.Entity.Properties[propVersion].(int64)
		pk := streamKey(stream)
		r, had := dw.runs[pk]
		if had && version == r.last+1 && pos == r.position+r.last-r.first+1 {
			r.last = version
		} else {
			r = feedRun{first: version, last: version, position: pos}
		}
		if !had && len(dw.runs) >= recentRunStreams {
			for k := range dw.runs {
				delete(dw.runs, k)
				break
			}
		}
		dw.runs[pk] = r
		for _, w := range dw.waiters[pk] {
			if w.version == version && !w.fired {
				w.pos, w.fired = pos, true
				close(w.done)
			}
		}
	}
}
