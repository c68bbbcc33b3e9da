package estuite

import (
	"context"
	"errors"
	"strings"

	"github.com/estuite/estuite/table"
)

// Defaults of FeedOptions.
const (
	// DefaultFeedLimit is FeedOptions.Limit when it is 0.
	DefaultFeedLimit = 1000
	// DefaultFeedMaxScan is FeedOptions.MaxScan when it is 0.
	DefaultFeedMaxScan = 10000
)

// MaxPosition is the largest position the feed can hold, and so the largest position a reader
// may give as After (to ReadFeed, Subscribe, or over HTTP): 2^62, which no store reaches (at a
// million events a second, it takes 146,000 years). A larger or negative After is an
// *InvalidInputError. Below it, every sum and product of positions and page numbers fits an
// int64.
const MaxPosition int64 = 1 << 62

// FeedOptions select a read of the feed. nil means: from the start, DefaultFeedLimit events.
type FeedOptions struct {
	// Shard is the feed shard read (0 to Store.FeedShards()-1); positions are the shard's.
	// Default 0, the whole feed of a store with one shard.
	Shard int
	// After is the last position already seen: the read starts at After+1. 0 to MaxPosition.
	After int64
	// Limit is the most events returned. 0 means DefaultFeedLimit; negative is invalid.
	Limit int
	// Types keeps only events of these types; empty keeps all.
	Types []string
	// StreamPrefix keeps only events of streams whose names start with it (a category).
	StreamPrefix string
	// MaxScan bounds the rows one read looks at before it returns, so that a filtered read over a
	// long run of unwanted events still comes back. 0 means DefaultFeedMaxScan; negative is
	// invalid.
	MaxScan int
	// MaxBytes, when positive, bounds a read by the size of its events as stored (the sum of
	// their rows' table.EntitySize, about the size of their data and metadata): the read stops
	// after the event that brings the sum to MaxBytes or more, so that it returns at least one
	// event, fewer than Limit when the events are large, and Next is the last position it
	// looked at, as always. Its storage requests are sized by the same budget (see
	// ReadOptions.PageBytes), so that the rows it holds at once stay near MaxBytes: events
	// filtered out are dropped with their page, and count only towards MaxScan. Events of about
	// MaxBytes each take a storage request each. 0 means no byte budget: pages of up to 1,000
	// rows whatever their size.
	MaxBytes int64
	// IncludeRedacted returns the entries of events a scavenger removed (FeedEvent.Redacted: a
	// position and nothing else), whatever the filters. Without it a read passes over them, and
	// Next moves past them as past filtered-out events.
	IncludeRedacted bool

	keepRedactedKeys bool // tests: redacted entries keep their stream and version
}

// FeedPage is the result of a feed read.
type FeedPage struct {
	// Events are the matching events, in position order.
	Events []FeedEvent
	// Next is the last position the read looked at (matching or not): pass it as After to read
	// on. It moves past filtered-out events, so a consumer's checkpoint does too.
	Next int64
}

func (o *FeedOptions) matches(ev *FeedEvent) bool {
	if ev.Redacted {
		return o.IncludeRedacted
	}
	if o.StreamPrefix != "" && !strings.HasPrefix(ev.Stream, o.StreamPrefix) {
		return false
	}
	if len(o.Types) == 0 {
		return true
	}
	for _, t := range o.Types {
		if ev.Type == t {
			return true
		}
	}
	return false
}

func (o *FeedOptions) filtered() bool { return o.StreamPrefix != "" || len(o.Types) > 0 }

// ReadFeed reads the feed after a position: every event the dispatcher has written, in one global
// order. Positions are gapless: a reader that finds nothing after position p knows that nothing
// more has been dispatched yet. An unfiltered read costs one storage request per 1,000 events
// (two where it crosses a page of FeedPageSize positions; with MaxBytes, one per MaxBytes of
// events when they are large).
//
// An After below 0 or above MaxPosition, or a negative Limit, MaxScan or MaxBytes, is an
// *InvalidInputError (ErrInvalidInput) and reads nothing. A read after MaxPosition itself
// returns no events.
func (s *Store) ReadFeed(ctx context.Context, opts *FeedOptions) (FeedPage, error) {
	if err := s.checkOpen(); err != nil {
		return FeedPage{}, err
	}
	var o FeedOptions
	if opts != nil {
		o = *opts
	}
	switch {
	case o.Shard < 0 || o.Shard >= s.feedShards:
		return FeedPage{}, invalid("shard", "%d is not a feed shard of the store (0 to %d)", o.Shard, s.feedShards-1)
	case o.After < 0 || o.After > MaxPosition:
		return FeedPage{}, invalid("after", "position %d is not a feed position (0 to MaxPosition, %d)", o.After, MaxPosition)
	case o.Limit < 0:
		return FeedPage{}, invalid("limit", "%d is negative", o.Limit)
	case o.MaxScan < 0:
		return FeedPage{}, invalid("maxScan", "%d is negative", o.MaxScan)
	}
	if o.Limit == 0 {
		o.Limit = DefaultFeedLimit
	}
	if o.MaxScan == 0 {
		o.MaxScan = DefaultFeedMaxScan
	}
	if o.MaxBytes < 0 {
		return FeedPage{}, invalid("maxBytes", "%d is negative", o.MaxBytes)
	}
	budget := feedBudget{sizer: newPageSizer(s.events), max: o.MaxBytes}
	res := FeedPage{Next: o.After}
	scanned := 0
	// Every round either moves res.Next on (by one per row looked at, so at most MaxScan rounds)
	// or ends the read; res.Next stays at most MaxPosition, so res.Next+1 cannot wrap.
	for len(res.Events) < o.Limit && scanned < o.MaxScan && res.Next < MaxPosition && !budget.spent() {
		before := res.Next
		pos := res.Next + 1
		page := pageOf(pos)
		q := table.Query{PartitionKey: feedPartition(o.Shard, page), From: feedEventKey(pos), To: feedPageEndKey(page)}
		q.Limit = o.MaxScan - scanned
		if !o.filtered() {
			q.Limit = min(q.Limit, o.Limit-len(res.Events))
		}
		q.Limit = budget.rows(q.Limit)
		atEnd := false
		for {
			p, err := s.events.query(ctx, q)
			if err != nil {
				return res, err
			}
			budget.observe(p.Entities)
			for _, row := range p.Entities {
				if len(res.Events) == o.Limit || budget.spent() {
					break // the page may hold more matches than wanted: stop at the limit or the budget
				}
				ev, err := decodeFeedEvent(row)
				if err != nil {
					return res, err
				}
				ev.Shard = o.Shard
				if ev.Position != res.Next+1 {
					return res, corrupt(row.PartitionKey, row.RowKey, "feed position %d is missing", res.Next+1)
				}
				res.Next = ev.Position
				scanned++
				if o.matches(&ev) {
					res.Events = append(res.Events, ev)
					budget.take(row)
				}
			}
			if len(res.Events) == o.Limit || budget.spent() {
				break
			}
			if p.Continuation != "" && len(p.Entities) == 0 {
				if err := ctx.Err(); err != nil {
					return res, err
				}
				q.Continuation = p.Continuation // an empty page: read on
				continue
			}
			// Rows came back (the outer loop reads on from the last one), or the page's range is
			// exhausted: short of the page's end, that is the end of the feed.
			atEnd = p.Continuation == "" && res.Next < pageLast(page)
			break
		}
		if atEnd || res.Next == before {
			break
		}
	}
	if n := len(res.Events); n > 0 {
		s.shards[o.Shard].feedHead.publish(res.Events[n-1].Position)
	}
	for i := range res.Events {
		if res.Events[i].Redacted {
			if !o.keepRedactedKeys {
				res.Events[i] = FeedEvent{Shard: o.Shard, Position: res.Events[i].Position, Redacted: true} // nothing else is shown
			}
			continue
		}
		if err := s.openEvent(ctx, &res.Events[i].RecordedEvent); err != nil {
			return FeedPage{Next: o.After}, err
		}
	}
	return res, nil
}

// FeedHead returns the highest position in the feed (0 when it is empty) of a store with one
// feed shard; with more, it is an *InvalidInputError: use FeedHeadOf.
func (s *Store) FeedHead(ctx context.Context) (int64, error) {
	if s.feedShards > 1 {
		return 0, invalid("shard", "the store has %d feed shards: FeedHeadOf reads the head of one", s.feedShards)
	}
	return s.FeedHeadOf(ctx, 0)
}

// FeedHeadOf returns the highest position in feed shard shard (0 when it is empty).
func (s *Store) FeedHeadOf(ctx context.Context, shard int) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if shard < 0 || shard >= s.feedShards {
		return 0, invalid("shard", "%d is not a feed shard of the store (0 to %d)", shard, s.feedShards-1)
	}
	page := int64(0)
	if row, err := s.events.get(ctx, metaPartition, feedHintRowOf(shard)); err == nil {
		if p, ok := row.Properties[propPage].(int64); ok && validPage(p) {
			page = p
		}
	} else if !errors.Is(err, table.ErrNotFound) {
		return 0, err
	}
	return s.feedHeadFrom(ctx, shard, page)
}

// feedHeadFrom finds the highest position in feed shard shard, reading page headers from page on
// (back from it while it has none), and publishes it to this process's subscribers.
func (s *Store) feedHeadFrom(ctx context.Context, shard int, page int64) (int64, error) {
	head := int64(0)
	for {
		row, err := s.events.get(ctx, feedPartition(shard, page), feedHeaderRowKey)
		if errors.Is(err, table.ErrNotFound) {
			if page > 0 && head == 0 {
				page--
				continue
			}
			break
		}
		if err != nil {
			return 0, err
		}
		next, ok := row.Properties[propNext].(int64)
		if !ok || next < pageFirst(page) || next > pageLast(page)+1 {
			return 0, corrupt(row.PartitionKey, row.RowKey, "feed page header with next position %v", row.Properties[propNext])
		}
		head = next - 1
		if next <= pageLast(page) || page == lastPage() {
			break
		}
		page++
	}
	s.shards[shard].feedHead.publish(head)
	return head, nil
}
