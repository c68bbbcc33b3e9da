package estuite

import (
	"sync/atomic"

	"github.com/estuite/estuite/table"
)

// Reads with a byte budget (FeedOptions.MaxBytes, ReadOptions.PageBytes) size their storage
// requests so that a page of rows stays near the budget however large the events are: a
// request asks for as many rows as fit in the budget at the estimated row size. Storage cannot
// be asked for bytes (a query takes a row count, and Azure returns up to that many rows whatever
// their size), so the size is an estimate from the rows read before:
//
//   - within one read, the average row size of its previous page;
//   - for a read's first request, the store's estimate for the table: the average row size of
//     the last page read, rising at once with larger rows and falling by at most half per page,
//     so that a run of small rows after large ones does not at once unleash pages of 1,000
//     large ones. Until the store has seen a page of the table it is table.MaxEntityBytes, the
//     largest row there can be: the first budgeted read after a start asks for a few rows
//     first (one extra request, once per table), and is then sized by what it received.
//
// Rows much larger than those read just before (a run of 1 MiB events after small ones) can
// still make one page larger than the budget, by at most its row count times their size; the
// next page is sized by them. Reads without a budget ask for pages of up to 1,000 rows as
// before, and spend nothing on the estimate.

// rowEstimate is a store's running estimate of the size of one table's event rows, in bytes
// as table.EntitySize counts them. Safe for concurrent use.
type rowEstimate struct{ bytes atomic.Int64 }

// get returns the estimate: table.MaxEntityBytes until a page has been observed.
func (e *rowEstimate) get() int64 {
	if v := e.bytes.Load(); v > 0 {
		return v
	}
	return table.MaxEntityBytes
}

// observe records a page whose rows averaged avg bytes.
func (e *rowEstimate) observe(avg int64) {
	if avg <= 0 {
		return
	}
	for {
		old := e.bytes.Load()
		v := avg
		if old > 0 && avg < old {
			v = max(avg, old/2)
		}
		if old == v || e.bytes.CompareAndSwap(old, v) {
			return
		}
	}
}

// pageSizer sizes the storage requests of one read.
type pageSizer struct {
	table *rowEstimate
	local int64 // the average row size of this read's last page; 0 before its first
}

func newPageSizer(s storage) *pageSizer { return &pageSizer{table: s.rows} }

// rows returns how many rows of the estimated size it takes to reach budget bytes (the last
// one may pass it: a feed page stops after the event that reaches its budget, and asking for
// that event too saves a request for it alone): at least 1, at most want. A budget of 0 or less
// means none: want rows.
func (p *pageSizer) rows(budget int64, want int) int {
	want = min(max(want, 1), table.MaxPageSize)
	if budget <= 0 {
		return want
	}
	est := p.local
	if est <= 0 {
		est = p.table.get()
	}
	est = max(est, 1)
	return int(min(int64(want), max(1, (budget+est-1)/est)))
}

// observe records the rows of a page the read received.
func (p *pageSizer) observe(rows []table.Entity) {
	if len(rows) == 0 {
		return
	}
	var sum int64
	for _, r := range rows {
		sum += int64(table.EntitySize(r))
	}
	p.local = sum / int64(len(rows))
	p.table.observe(p.local)
}

// feedBudget is the byte budget of one ReadFeed (FeedOptions.MaxBytes; 0: none).
type feedBudget struct {
	sizer     *pageSizer
	max, used int64
}

// rows returns how many rows, of at most want, the next request should ask for.
func (b *feedBudget) rows(want int) int {
	if b.max <= 0 {
		return want
	}
	return b.sizer.rows(b.max-b.used, want)
}

// take counts an event returned.
func (b *feedBudget) take(row table.Entity) {
	if b.max > 0 {
		b.used += int64(table.EntitySize(row))
	}
}

// observe records a page received (only with a budget: reads without one do not pay for it).
func (b *feedBudget) observe(rows []table.Entity) {
	if b.max > 0 {
		b.sizer.observe(rows)
	}
}

// spent reports that the events returned have reached the budget.
func (b *feedBudget) spent() bool { return b.max > 0 && b.used >= b.max }
