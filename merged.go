package estuite

import (
	"context"
	"strconv"
	"strings"
	"time"
)

// FeedCursor is where a reader of every feed shard stands: element k is the last position of
// shard k already seen (0: none). Its String form, the shards' positions in decimal joined by
// dots ("120.7.0"), is what ReadMerged's callers store and what GET /feed/all takes.
type FeedCursor []int64

// String returns the cursor's text form.
func (c FeedCursor) String() string {
	parts := make([]string, len(c))
	for i, p := range c {
		parts[i] = strconv.FormatInt(p, 10)
	}
	return strings.Join(parts, ".")
}

// ParseFeedCursor reads a cursor's text form for a store of shards feed shards: one position per
// shard, each 0 to MaxPosition. "" is the start of every shard. Anything else is an
// *InvalidInputError.
func ParseFeedCursor(text string, shards int) (FeedCursor, error) {
	c := make(FeedCursor, shards)
	if text == "" {
		return c, nil
	}
	parts := strings.Split(text, ".")
	if len(parts) != shards {
		return nil, invalid("cursor", "has %d positions; the store has %d feed shards", len(parts), shards)
	}
	for i, p := range parts {
		v, err := strconv.ParseInt(p, 10, 64)
		if err != nil || v < 0 || v > MaxPosition || p != strconv.FormatInt(v, 10) {
			return nil, invalid("cursor", "position %d (%.30q) is not a feed position (0 to MaxPosition)", i, p)
		}
		c[i] = v
	}
	return c, nil
}

// MergedFeedOptions select a read of every feed shard at once (ReadMerged).
type MergedFeedOptions struct {
	// After is where the read starts: after each shard's position. nil: from the start.
	After FeedCursor
	// Limit is the most events returned. 0 means DefaultFeedLimit; negative is invalid.
	Limit int
	// Types, StreamPrefix and IncludeRedacted filter as in FeedOptions.
	Types           []string
	StreamPrefix    string
	IncludeRedacted bool
	// MaxBytes, when positive, bounds the events read by their size as stored (see
	// FeedOptions.MaxBytes), shared out evenly between the shards (each reads at least one
	// event). 0: no byte bound.
	MaxBytes int64
}

// MergedFeedPage is the result of ReadMerged.
type MergedFeedPage struct {
	// Events are the events read, each with its Shard and Position, ordered by commit time
	// across shards (best effort, see ReadMerged) and by position within a shard.
	Events []FeedEvent
	// Next is the cursor to pass as After to read on.
	Next FeedCursor
}

// ReadMerged reads every feed shard after a cursor and merges them into one sequence. Within a
// shard, events come in position order, so a stream's events always come in version order. Across
// shards the order is by the events' recorded (commit) times, best effort: the read merges what
// it read of each shard so that no event comes before an earlier-recorded one it has read of
// another shard, and stops at the latest time up to which every shard it read a full page of is
// known; an event dispatched late into its shard may still come after events recorded after it
// in others. Reading one shard (ReadFeed with FeedOptions.Shard) is exact. With one shard it is
// ReadFeed with a cursor of one position.
//
// It costs a feed read per shard (one storage request per shard for up to Limit small events).
func (s *Store) ReadMerged(ctx context.Context, opts *MergedFeedOptions) (MergedFeedPage, error) {
	if err := s.checkOpen(); err != nil {
		return MergedFeedPage{}, err
	}
	var o MergedFeedOptions
	if opts != nil {
		o = *opts
	}
	switch {
	case o.Limit < 0:
		return MergedFeedPage{}, invalid("limit", "%d is negative", o.Limit)
	case o.MaxBytes < 0:
		return MergedFeedPage{}, invalid("maxBytes", "%d is negative", o.MaxBytes)
	case o.After != nil && len(o.After) != s.feedShards:
		return MergedFeedPage{}, invalid("cursor", "has %d positions; the store has %d feed shards", len(o.After), s.feedShards)
	}
	if o.Limit == 0 {
		o.Limit = DefaultFeedLimit
	}
	after := make(FeedCursor, s.feedShards)
	copy(after, o.After)
	type shardRead struct {
		events []FeedEvent
		keys   []time.Time // per event: the latest recorded time up to it in the shard
		next   int64
		full   bool // the read stopped at the limit: the shard may hold more
	}
	reads := make([]shardRead, s.feedShards)
	for shard := range s.feedShards {
		budget := int64(0)
		if o.MaxBytes > 0 {
			budget = max(o.MaxBytes/int64(s.feedShards), 1)
		}
		p, err := s.ReadFeed(ctx, &FeedOptions{Shard: shard, After: after[shard], Limit: o.Limit, Types: o.Types,
			StreamPrefix: o.StreamPrefix, IncludeRedacted: o.IncludeRedacted, MaxBytes: budget})
		if err != nil {
			return MergedFeedPage{}, err
		}
		// A page cut by the limit, or possibly by the byte budget, may leave more in the shard.
		r := shardRead{events: p.Events, next: p.Next, full: len(p.Events) == o.Limit || budget > 0 && len(p.Events) > 0}
		var latest time.Time
		for _, ev := range p.Events {
			if ev.RecordedAt.After(latest) {
				latest = ev.RecordedAt // a redacted entry has none: it keeps its place in the shard
			}
			r.keys = append(r.keys, latest)
		}
		reads[shard] = r
	}
	// The bound: what a shard not read to its end may still hold comes after its last event read.
	var bound time.Time
	bounded := false
	for _, r := range reads {
		if r.full && len(r.keys) > 0 {
			if last := r.keys[len(r.keys)-1]; !bounded || last.Before(bound) {
				bound, bounded = last, true
			}
		}
	}
	res := MergedFeedPage{Next: append(FeedCursor(nil), after...)}
	taken := make([]int, len(reads))
	for len(res.Events) < o.Limit {
		pick := -1
		for shard, r := range reads {
			i := taken[shard]
			if i == len(r.events) || bounded && r.keys[i].After(bound) {
				continue
			}
			if pick < 0 || r.keys[i].Before(reads[pick].keys[taken[pick]]) {
				pick = shard
			}
		}
		if pick < 0 {
			break
		}
		ev := reads[pick].events[taken[pick]]
		taken[pick]++
		res.Events = append(res.Events, ev)
		res.Next[pick] = ev.Position
	}
	for shard, r := range reads {
		if taken[shard] == len(r.events) {
			res.Next[shard] = max(res.Next[shard], r.next) // past what the filters left out, too
		}
	}
	return res, nil
}
