package estuite

import (
	"context"
	"errors"
	"fmt"

	"github.com/estuite/estuite/table"
)

// The store's feed shard count: a row of the event table's meta partition, written when a store
// is created with more than one shard. A store without it has one shard (the layout of earlier
// releases). docs/storage-format.md, "Feed shards".
const (
	feedShardsRow  = "shards"
	propFeedShards = "FeedShards"
)

// openFeedShards returns the store's feed shard count: the one recorded, or for a store without
// a record, 1 — or want, recorded now, when want is more than one and the store holds no stream
// yet. want 0 takes whatever the store has.
func openFeedShards(ctx context.Context, events, streams storage, want int) (int, error) {
	if want < 0 || want > MaxFeedShards {
		return 0, invalid("feed shards", "%d is not between 1 and MaxFeedShards (%d)", want, MaxFeedShards)
	}
	for attempt := 0; ; attempt++ {
		row, err := events.get(ctx, metaPartition, feedShardsRow)
		switch {
		case err == nil:
			n, ok := row.Properties[propFeedShards].(int64)
			if !ok || n < 2 || n > MaxFeedShards {
				return 0, corrupt(row.PartitionKey, row.RowKey, "feed shard count %v", row.Properties[propFeedShards])
			}
			if want != 0 && int64(want) != n {
				return 0, invalid("feed shards", "the store has %d feed shards, not %d: a store's shard count does not change (docs/operations.md, \"Feed shards\"); open it with 0 to take what it has", n, want)
			}
			return int(n), nil
		case !errors.Is(err, table.ErrNotFound):
			return 0, err
		case want <= 1:
			return 1, nil
		}
		// A new sharded store: only if no stream was written under one shard.
		found := false
		err = streams.scanPages(ctx, table.ScanQuery{Limit: 1}, func(p table.Page) error {
			if found = len(p.Entities) > 0; found {
				return errStopPages
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStopPages) {
			return 0, err
		}
		if found {
			return 0, invalid("feed shards", "the store was created with one feed shard and holds streams: it cannot take %d (docs/operations.md, \"Feed shards\")", want)
		}
		rec := table.Entity{PartitionKey: metaPartition, RowKey: feedShardsRow, Properties: map[string]any{propFeedShards: int64(want)}}
		err = events.submit(ctx, metaPartition, []table.Op{{Kind: table.Insert, Entity: rec}})
		if err == nil {
			return want, nil
		}
		if !errors.Is(err, table.ErrAlreadyExists) || attempt > 0 {
			return 0, fmt.Errorf("estuite: recording the feed shard count: %w", err)
		}
		// Another process created the store meanwhile (or this insert's answer was lost): read it.
	}
}
