package estuite

import (
	"context"
	"encoding/binary"
	"errors"
	"sort"

	"github.com/estuite/estuite/table"
)

// A stream's page index is kept on its progress row (G, property Pages): the feed pages that hold
// its events, oldest first, each with the last version of the stream it holds. The dispatcher
// adds a page when it leaves it, in the progress row write it makes then anyway, so the index
// costs no request. It lets the scavenger and WaitDispatched find the page of an old version with
// one read of the progress row instead of a walk back over every page since (docs/storage-format.md,
// "Progress rows").

// propPages is the progress row's page index.
const propPages = "Pages"

// maxPageIndex is how many pages a stream's index keeps: when a page more would pass it, the
// older half goes (a lookup of a version before the first kept page walks the feed back, as
// without an index). At most 20 bytes an entry, the index stays under 41 KiB, within one
// binary property.
const maxPageIndex = 2048

// pageIndex is a stream's page index.
type pageIndex struct {
	// base is the last version of the stream in the pages before the first entry (0: the
	// entries start at the stream's first page).
	base    int64
	entries []pageEntry
}

// pageEntry is a feed page and the last version of the stream it holds.
type pageEntry struct{ page, last int64 }

// decodePageIndex reads a progress row's page index. A missing or malformed one is empty: the
// index is a hint, and every position found through it is checked against the feed row.
func decodePageIndex(row table.Entity) pageIndex {
	b, _ := row.Properties[propPages].([]byte)
	var ix pageIndex
	base, n := binary.Uvarint(b)
	if n <= 0 {
		return pageIndex{}
	}
	ix.base, b = int64(base), b[n:]
	page, last := int64(-1), ix.base
	for len(b) > 0 {
		dp, n1 := binary.Uvarint(b)
		if n1 <= 0 {
			return pageIndex{}
		}
		dv, n2 := binary.Uvarint(b[n1:])
		if n2 <= 0 || dp == 0 || dv == 0 || dp > 1<<62 || dv > 1<<62 {
			return pageIndex{}
		}
		b = b[n1+n2:]
		page, last = page+int64(dp), last+int64(dv)
		if page < 0 || last < 1 {
			return pageIndex{}
		}
		ix.entries = append(ix.entries, pageEntry{page, last})
	}
	return ix
}

// encode writes the index as unsigned varints: base, then per entry the page and version
// differences from the entry before (the first page's from -1, its version's from base).
func (ix pageIndex) encode() []byte {
	b := binary.AppendUvarint(nil, uint64(ix.base))
	page, last := int64(-1), ix.base
	for _, e := range ix.entries {
		b = binary.AppendUvarint(b, uint64(e.page-page))
		b = binary.AppendUvarint(b, uint64(e.last-last))
		page, last = e.page, e.last
	}
	return b
}

// add records that page holds the stream's versions after prev (the progress row's version
// before, what earlier pages hold) up to last. It reports whether the index changed.
func (ix *pageIndex) add(prev, page, last int64) bool {
	if last <= prev || prev < 0 {
		return false
	}
	if n := len(ix.entries); n > 0 {
		e := ix.entries[n-1]
		if page <= e.page {
			return false
		}
		if e.last != prev {
			// The row was raised without a page in between (by Repair): what lies between is
			// not indexed, so the index starts again here.
			ix.entries = ix.entries[:0]
		}
	}
	if len(ix.entries) == 0 {
		ix.base = prev
	}
	ix.entries = append(ix.entries, pageEntry{page, last})
	if len(ix.entries) > maxPageIndex {
		drop := len(ix.entries) / 2
		ix.base = ix.entries[drop-1].last
		ix.entries = append([]pageEntry(nil), ix.entries[drop:]...)
	}
	return true
}

// pageOf returns the page that holds version, when the index knows it.
func (ix pageIndex) pageOf(version int64) (int64, bool) {
	if version <= ix.base {
		return 0, false
	}
	i := sort.Search(len(ix.entries), func(i int) bool { return ix.entries[i].last >= version })
	if i == len(ix.entries) {
		return 0, false
	}
	return ix.entries[i].page, true
}

// progressRow is what a stream's progress row says: the last version the feed's earlier pages
// hold of it (0 without a row), and the pages that hold them.
type progressRow struct {
	dispatched int64
	index      pageIndex
}

// progress reads the progress row of the stream in partition pk.
func (s *Store) progress(ctx context.Context, pk string) (progressRow, error) {
	row, err := s.streams.get(ctx, pk, progressRowKey)
	if errors.Is(err, table.ErrNotFound) {
		return progressRow{}, nil
	}
	if err != nil {
		return progressRow{}, err
	}
	return decodeProgress(pk, row)
}

// decodeProgress decodes a progress row.
func decodeProgress(pk string, row table.Entity) (progressRow, error) {
	v, ok := row.Properties[propDispatched].(int64)
	if !ok || v < 0 {
		return progressRow{}, corrupt(pk, progressRowKey, "malformed dispatch progress row")
	}
	return progressRow{dispatched: v, index: decodePageIndex(row)}, nil
}
