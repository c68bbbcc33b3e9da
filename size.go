package estuite

import (
	"context"

	"github.com/estuite/estuite/table"
)

// TableSize is how much one table holds.
type TableSize struct {
	Rows int64
	// Bytes is the sum of the rows' sizes by Azure Table Storage's entity-size formula
	// (table.EntitySize), the figure capacity is billed on.
	Bytes int64
}

// StorageSize is how much the store's tables hold.
type StorageSize struct {
	Streams TableSize // the stream table
	Events  TableSize // the event table: feed, markers, lease, checkpoints
	Keys    TableSize // the key table: subjects' data keys and tombstones
}

// Size walks the tables and adds up their rows' sizes. It reads every row: on Azure that is a
// full scan of each table, billed like any query, so use it for reports, not on a hot path.
func (s *Store) Size(ctx context.Context) (StorageSize, error) {
	if err := s.checkOpen(); err != nil {
		return StorageSize{}, err
	}
	var out StorageSize
	for _, t := range []struct {
		st   storage
		size *TableSize
	}{{s.streams, &out.Streams}, {s.events, &out.Events}, {s.keys, &out.Keys}} {
		err := t.st.scanPages(ctx, table.ScanQuery{}, func(p table.Page) error {
			for _, e := range p.Entities {
				t.size.Rows++
				t.size.Bytes += int64(table.EntitySize(e))
			}
			return nil
		})
		if err != nil {
			return out, err
		}
	}
	return out, nil
}
