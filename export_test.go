package estuite

import (
	"context"

	"github.com/estuite/estuite/table"
)

// SetSequentialMetadataReads makes SetMetadata and Metadata read the head and the custom row
// one after the other, until the returned function restores it.
func SetSequentialMetadataReads() (restore func()) {
	old := sequentialMetadataReads
	sequentialMetadataReads = true
	return func() { sequentialMetadataReads = old }
}

// WithKnownFeedShards makes Open take n as the store's feed shard count without reading it (the
// simulation opens its processes' stores outside their actors, where no storage call may run).
func WithKnownFeedShards(o *Options, n int) *Options {
	o.knownShards = n
	return o
}

// SetFeedPageSize makes feed pages hold n positions until the returned function restores the
// default: simulations and tests use small pages so that every schedule crosses pages. Only a
// store created under one page size can be read under it.
func SetFeedPageSize(n int64) (restore func()) {
	old := feedPageSize
	feedPageSize = n
	return func() { feedPageSize = old }
}

// ForgetHeads empties the store's head cache, as in a process that has not met the streams yet.
func (s *Store) ForgetHeads() {
	s.heads.mu.Lock()
	clear(s.heads.heads)
	s.heads.mu.Unlock()
}

// WaitStored waits until the announcement's marker write has ended, and returns its error.
func (an *Announcement) WaitStored() error {
	<-an.stored
	return an.err
}

// AnnounceAndWait is Announce with the marker written on the caller's goroutine (with ctx)
// before it returns: the simulation's actors make their storage calls one at a time.
func (s *Store) AnnounceAndWait(ctx context.Context, stream, commitID string) (*Announcement, error) {
	an, err := s.newAnnouncement(stream, commitID)
	if err != nil {
		return nil, err
	}
	an.write(ctx)
	return an, nil
}

// WithdrawAndWait is Withdraw with the marker's delete made on the caller's goroutine, with ctx.
func (an *Announcement) WithdrawAndWait(ctx context.Context) {
	if an.withdraw() {
		an.delete(ctx)
	}
}

// Backend returns the store's backend, for tests that look at the raw tables.
func (s *Store) Backend() table.Backend { return s.backend }

// StreamTable returns the store's stream table, for tests that look at raw rows.
func (s *Store) StreamTable() table.Table { return s.streams.t }

// StoredHead is a stream's head row as stored, for the simulation's checks.
type StoredHead struct {
	Exists                 bool // the head row exists
	Version, DeletedBefore int64
	Tombstone              bool
	// RemovedBefore is the scavenger's floor; Removed how many of the first versions have no
	// event row any more (removed by the scavenger: fewer than RemovedBefore).
	RemovedBefore, Removed int64
	// TruncateBefore and MaxCount are the stream's retention metadata (0: none).
	TruncateBefore, MaxCount int64
}

// ReadStored reads a stream's head and every event stored in it, versions 1 to the head's,
// whatever its deletion or retention hides (sealed events opened, as a read opens them), and
// counts the event rows stored past the head's version (none, unless the head went back). The
// simulation checks what is stored with it, and what a read shows against it.
func (s *Store) ReadStored(ctx context.Context, stream string) (sh StoredHead, events []RecordedEvent, beyond int, err error) {
	pk := streamKey(stream)
	h, err := s.readHead(ctx, pk)
	if err != nil {
		return StoredHead{}, nil, 0, err
	}
	sh = StoredHead{Exists: h.etag != "", Version: h.version, DeletedBefore: h.meta.deletedBefore, Tombstone: h.meta.tombstone, RemovedBefore: h.meta.removedBefore,
		TruncateBefore: h.meta.truncateBefore}
	if h.meta.hasMaxCount {
		sh.MaxCount = h.meta.maxCount
	}
	// The rows the scavenger removed are the first ones: the read passes over them (removedBelow).
	for e, err := range s.opened(ctx, s.streamEvents(ctx, stream, pk, 1, h.version, Forward, 0)) {
		if err != nil {
			return sh, events, 0, err
		}
		events = append(events, e)
	}
	sh.Removed = h.version - int64(len(events))
	err = s.streams.queryPages(ctx, table.Query{PartitionKey: pk, From: eventKey(h.version + 1), To: eventIDPrefix}, func(p table.Page) error {
		for _, row := range p.Entities {
			if _, ok := parseEventKey(row.RowKey); ok {
				beyond++
			}
		}
		return nil
	})
	return sh, events, beyond, err
}

// ReadFeedWithRedacted reads the feed with its redacted entries, which keep their stream and
// version here (a public read shows a position alone): the simulation checks them.
func (s *Store) ReadFeedWithRedacted(ctx context.Context, shard int, after int64) (FeedPage, error) {
	return s.ReadFeed(ctx, &FeedOptions{Shard: shard, After: after, IncludeRedacted: true, keepRedactedKeys: true})
}
