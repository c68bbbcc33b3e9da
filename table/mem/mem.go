// Package mem is an in-memory backend of the table contract, with fault injection.
//
// It is a complete backend — it passes the conformance suite like Azure and bbolt — and the
// ground on which Estuite's crash and concurrency tests run: Options.Faults decides, call by call,
// whether a storage call fails before it takes effect or takes effect and then loses its response.
package mem

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/estuite/estuite/table"
)

// Method names a storage call, as seen by a FaultFunc.
type Method string

// The storage calls of the contract.
const (
	MethodGet    Method = "get"
	MethodQuery  Method = "query"
	MethodSubmit Method = "submit"
	MethodScan   Method = "scan"
)

// Call describes one storage call to a FaultFunc.
type Call struct {
	Seq          int64  // 1 for the backend's first call, then counting up
	Table        string // table name
	Method       Method
	PartitionKey string     // "" for MethodScan
	RowKey       string     // for MethodGet
	Ops          []table.Op // for MethodSubmit
}

// Fault is what an injected fault does to a call.
type Fault int

const (
	// NoFault lets the call run normally.
	NoFault Fault = iota
	// FailBefore fails the call with a transient error before it takes effect.
	FailBefore
	// FailAfter lets the call take effect, then fails it with a transient error, as when a
	// response is lost on the way back. For MethodSubmit the error is table.UnknownOutcome: it
	// wraps table.ErrUnknownOutcome as well, as a real backend's would.
	FailAfter
)

// FaultFunc decides the fault for one call. It may be called concurrently.
type FaultFunc func(Call) Fault

// ErrInjected is the cause inside the transient errors of injected faults.
var ErrInjected = fmt.Errorf("mem: injected fault")

// Options configure a memory backend. The zero value means no faults and full pages.
type Options struct {
	// Faults, when set, is asked about every call.
	Faults FaultFunc
	// PageSize caps query and scan pages below table.MaxPageSize, to exercise paging with few
	// rows.
	PageSize int
	// EmptyPages makes every query and scan answer an empty page with a continuation before
	// each page of rows, as Azure sometimes does.
	EmptyPages bool
}

// Backend is an in-memory storage account.
type Backend struct {
	opts Options

	mu     sync.Mutex
	seq    int64
	tables map[string]*Table
}

// New returns an empty backend. opts may be nil.
func New(opts *Options) *Backend {
	b := &Backend{tables: make(map[string]*Table)}
	if opts != nil {
		b.opts = *opts
	}
	return b
}

// SetFaults replaces the fault function; nil turns faults off.
func (b *Backend) SetFaults(f FaultFunc) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.opts.Faults = f
}

// OpenTable returns the named table, creating it when missing.
func (b *Backend) OpenTable(_ context.Context, name string) (table.Table, error) {
	return b.Table(name)
}

// Table is OpenTable with the concrete type, for tests that inspect or corrupt rows.
func (b *Backend) Table(name string) (*Table, error) {
	if err := table.ValidateTableName(name); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.tables[name]
	if !ok {
		t = &Table{name: name, backend: b, parts: make(map[string]*partition)}
		b.tables[name] = t
	}
	return t, nil
}

// Close does nothing: the data lives as long as the Backend value.
func (b *Backend) Close() error { return nil }

// fault numbers the call and asks the fault function about it.
func (b *Backend) fault(c Call) Fault {
	b.mu.Lock()
	b.seq++
	c.Seq = b.seq
	f := b.opts.Faults
	b.mu.Unlock()
	if f == nil {
		return NoFault
	}
	return f(c)
}

func injected(c Call, when string) error {
	return &table.TransientError{Err: fmt.Errorf("%w: %s %s %s", ErrInjected, c.Method, c.PartitionKey, when)}
}

// Table is one in-memory table.
type Table struct {
	name    string
	backend *Backend

	mu    sync.RWMutex
	etag  int64
	parts map[string]*partition
}

type partition struct {
	keys []string // sorted
	rows map[string]table.Entity
}

// Get implements table.Table.
func (t *Table) Get(ctx context.Context, pk, rk string) (table.Entity, error) {
	if err := ctx.Err(); err != nil {
		return table.Entity{}, &table.TransientError{Err: err}
	}
	if err := table.ValidateKey("partition key", pk); err != nil {
		return table.Entity{}, err
	}
	if err := table.ValidateKey("row key", rk); err != nil {
		return table.Entity{}, err
	}
	c := Call{Table: t.name, Method: MethodGet, PartitionKey: pk, RowKey: rk}
	f := t.backend.fault(c)
	if f == FailBefore {
		return table.Entity{}, injected(c, "before")
	}
	t.mu.RLock()
	e, ok := t.lookup(pk, rk)
	t.mu.RUnlock()
	if f == FailAfter {
		return table.Entity{}, injected(c, "after")
	}
	if !ok {
		return table.Entity{}, fmt.Errorf("%w: row %q/%q", table.ErrNotFound, pk, rk)
	}
	return table.CloneEntity(e), nil
}

func (t *Table) lookup(pk, rk string) (table.Entity, bool) {
	p := t.parts[pk]
	if p == nil {
		return table.Entity{}, false
	}
	e, ok := p.rows[rk]
	return e, ok
}

// Query implements table.Table. The continuation is the row key to resume from, prefixed by
// "e" when the next page is the empty one that Options.EmptyPages inserts, "r" otherwise.
func (t *Table) Query(ctx context.Context, q table.Query) (table.Page, error) {
	if err := ctx.Err(); err != nil {
		return table.Page{}, &table.TransientError{Err: err}
	}
	if err := table.ValidateQuery(q); err != nil {
		return table.Page{}, err
	}
	c := Call{Table: t.name, Method: MethodQuery, PartitionKey: q.PartitionKey}
	f := t.backend.fault(c)
	if f == FailBefore {
		return table.Page{}, injected(c, "before")
	}
	from, emptyFirst := q.From, t.backend.opts.EmptyPages
	if q.Continuation != "" {
		if len(q.Continuation) < 1 || (q.Continuation[0] != 'e' && q.Continuation[0] != 'r') {
			return table.Page{}, table.Invalidf("bad continuation token %q", q.Continuation)
		}
		emptyFirst = q.Continuation[0] == 'e'
		from = q.Continuation[1:]
	}
	if emptyFirst {
		if f == FailAfter {
			return table.Page{}, injected(c, "after")
		}
		return table.Page{Continuation: "r" + from}, nil
	}
	limit := table.PageLimit(q)
	if ps := t.backend.opts.PageSize; ps > 0 && ps < limit {
		limit = ps
	}
	var page table.Page
	t.mu.RLock()
	if p := t.parts[q.PartitionKey]; p != nil {
		i := sort.SearchStrings(p.keys, from)
		for ; i < len(p.keys) && (q.To == "" || p.keys[i] < q.To); i++ {
			if len(page.Entities) == limit {
				next := "r"
				if t.backend.opts.EmptyPages {
					next = "e"
				}
				page.Continuation = next + p.keys[i]
				break
			}
			page.Entities = append(page.Entities, table.CloneEntity(p.rows[p.keys[i]]))
		}
	}
	t.mu.RUnlock()
	if f == FailAfter {
		return table.Page{}, injected(c, "after")
	}
	return page, nil
}

// Scan implements table.Table. The continuation is the partition key and row key to resume
// from, joined by a NUL (which neither keys nor bounds may hold), prefixed by "e" when the next
// page is the empty one that Options.EmptyPages inserts, "r" otherwise.
func (t *Table) Scan(ctx context.Context, q table.ScanQuery) (table.Page, error) {
	if err := ctx.Err(); err != nil {
		return table.Page{}, &table.TransientError{Err: err}
	}
	if err := table.ValidateScan(q); err != nil {
		return table.Page{}, err
	}
	c := Call{Table: t.name, Method: MethodScan}
	f := t.backend.fault(c)
	if f == FailBefore {
		return table.Page{}, injected(c, "before")
	}
	fromPK, fromRK, emptyFirst := q.FromPartition, "", t.backend.opts.EmptyPages
	if q.Continuation != "" {
		// The keys are not validated: rows stored with Put may hold any key.
		pk, rk, ok := strings.Cut(q.Continuation[1:], "\x00")
		if (q.Continuation[0] != 'e' && q.Continuation[0] != 'r') || !ok {
			return table.Page{}, table.Invalidf("bad scan continuation token %q", q.Continuation)
		}
		fromPK, fromRK, emptyFirst = pk, rk, q.Continuation[0] == 'e'
	}
	if emptyFirst {
		if f == FailAfter {
			return table.Page{}, injected(c, "after")
		}
		return table.Page{Continuation: "r" + fromPK + "\x00" + fromRK}, nil
	}
	limit := table.ScanPageLimit(q)
	if ps := t.backend.opts.PageSize; ps > 0 && ps < limit {
		limit = ps
	}
	var page table.Page
	t.mu.RLock()
	pks := make([]string, 0, len(t.parts))
	for pk := range t.parts {
		if pk >= fromPK && (q.ToPartition == "" || pk < q.ToPartition) {
			pks = append(pks, pk)
		}
	}
	slices.Sort(pks)
scan:
	for _, pk := range pks {
		p := t.parts[pk]
		i := 0
		if pk == fromPK {
			i = sort.SearchStrings(p.keys, fromRK)
		}
		for ; i < len(p.keys); i++ {
			if len(page.Entities) == limit {
				next := "r"
				if t.backend.opts.EmptyPages {
					next = "e"
				}
				page.Continuation = next + pk + "\x00" + p.keys[i]
				break scan
			}
			page.Entities = append(page.Entities, table.CloneEntity(p.rows[p.keys[i]]))
		}
	}
	t.mu.RUnlock()
	if f == FailAfter {
		return table.Page{}, injected(c, "after")
	}
	return page, nil
}

// Submit implements table.Table.
func (t *Table) Submit(ctx context.Context, pk string, ops []table.Op) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, &table.TransientError{Err: err}
	}
	if err := table.ValidateBatch(pk, ops); err != nil {
		return nil, err
	}
	c := Call{Table: t.name, Method: MethodSubmit, PartitionKey: pk, Ops: ops}
	f := t.backend.fault(c)
	if f == FailBefore {
		return nil, injected(c, "before")
	}
	t.mu.Lock()
	writes, etags, err := table.PlanBatch(pk, ops,
		func(rk string) (table.Entity, bool) { return t.lookup(pk, rk) },
		func() string { t.etag++; return fmt.Sprintf("W/\"%d\"", t.etag) })
	if err == nil {
		t.apply(pk, writes)
	}
	t.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if f == FailAfter {
		return nil, table.UnknownOutcome(fmt.Errorf("%w: %s %s after", ErrInjected, c.Method, c.PartitionKey))
	}
	return etags, nil
}

func (t *Table) apply(pk string, writes []table.Write) {
	p := t.parts[pk]
	if p == nil {
		p = &partition{rows: make(map[string]table.Entity)}
		t.parts[pk] = p
	}
	for _, w := range writes {
		_, exists := p.rows[w.RowKey]
		if w.Entity == nil {
			if exists {
				delete(p.rows, w.RowKey)
				i, _ := slices.BinarySearch(p.keys, w.RowKey)
				p.keys = slices.Delete(p.keys, i, i+1)
			}
			continue
		}
		p.rows[w.RowKey] = *w.Entity
		if !exists {
			i, _ := slices.BinarySearch(p.keys, w.RowKey)
			p.keys = slices.Insert(p.keys, i, w.RowKey)
		}
	}
	if len(p.rows) == 0 {
		delete(t.parts, pk)
	}
}

// Partitions returns the partition keys that hold rows, sorted. For tests and verification.
func (t *Table) Partitions() []string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	keys := make([]string, 0, len(t.parts))
	for k := range t.parts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Put stores an entity unconditionally, bypassing validation and faults: a test's way to
// corrupt a table on purpose.
func (t *Table) Put(e table.Entity) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.etag++
	e = table.CloneEntity(e)
	e.ETag = fmt.Sprintf("W/\"%d\"", t.etag)
	t.apply(e.PartitionKey, []table.Write{{RowKey: e.RowKey, Entity: &e}})
}

// Remove deletes a row unconditionally, bypassing validation and faults.
func (t *Table) Remove(pk, rk string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.apply(pk, []table.Write{{RowKey: rk}})
}
