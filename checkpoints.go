package estuite

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"time"

	"github.com/estuite/estuite/table"
)

// Checkpoint is the stored checkpoint of a durable subscription (SubscriptionOptions.Name).
type Checkpoint struct {
	// Name is the subscription's name.
	Name string
	// Shard is the feed shard the checkpoint is of (SubscriptionOptions.Shard).
	Shard int
	// Position is the last feed position the subscription has handled and saved: it resumes
	// after it. The feed head minus Position is how far the subscription is behind.
	Position int64
	// Updated is when the checkpoint was last written, on the clock of the process that wrote it.
	Updated time.Time
}

// Checkpoints returns the stored checkpoints of durable subscriptions, sorted by name (then
// shard, in a store with several feed shards: one query per shard): at most
// limit of them when limit > 0, all of them when limit is 0. It only reads: one query of the
// checkpoint partition of the event table, which is one storage request for up to 1000
// subscriptions (more pages follow only beyond that, or when storage answers an empty page with a
// continuation). It does not read the feed head; see FeedHead.
//
// With a limit, the subscriptions returned are the first in storage order (their names as
// escaped into row keys: close to, but not exactly, name order); the Cosmos DB Table API does not
// sort query results, so there they are any limit of them.
//
// A checkpoint row that is not in the format written by Subscribe is an error wrapping
// ErrCorrupt.
func (s *Store) Checkpoints(ctx context.Context, limit int) ([]Checkpoint, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if limit < 0 {
		return nil, invalid("limit", "must not be negative")
	}
	var out []Checkpoint
	errFull := errors.New("enough checkpoints")
	for shard := 0; shard < s.feedShards && (limit == 0 || len(out) < limit); shard++ {
		q := table.Query{PartitionKey: checkpointPartition(shard)}
		if limit > 0 {
			q.Limit = min(limit-len(out), table.MaxPageSize)
		}
		err := s.events.queryPages(ctx, q, func(p table.Page) error {
			for _, row := range p.Entities {
				c, err := decodeCheckpoint(row)
				if err != nil {
					return err
				}
				c.Shard = shard
				out = append(out, c)
				if limit > 0 && len(out) == limit {
					return errFull
				}
			}
			return nil
		})
		if err != nil && !errors.Is(err, errFull) {
			return nil, err
		}
	}
	slices.SortFunc(out, func(a, b Checkpoint) int { return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Shard, b.Shard)) })
	return out, nil
}

// decodeCheckpoint reads a checkpoint row strictly: every property Subscribe writes, of its type,
// and a name that is the one the row key was made of.
func decodeCheckpoint(row table.Entity) (Checkpoint, error) {
	bad := func(reason string) (Checkpoint, error) {
		return Checkpoint{}, corrupt(row.PartitionKey, row.RowKey, "checkpoint row: %s", reason)
	}
	name, ok := row.Properties[propStream].(string)
	if !ok || validateName("name", name, MaxCheckpointNameLength) != nil {
		return bad("no valid subscription name")
	}
	if checkpointKey(name) != row.RowKey {
		return bad("the name does not match the row key")
	}
	pos, ok := row.Properties[propPosition].(int64)
	if !ok || pos < 0 {
		return bad("no valid position")
	}
	updated, ok := row.Properties[propUpdated].(time.Time)
	if !ok {
		return bad("no update time")
	}
	if _, ok := row.Properties[propOwner].(string); !ok {
		return bad("no owner token")
	}
	return Checkpoint{Name: name, Position: pos, Updated: updated}, nil
}
