package bench

import (
	"context"
	"math"
	"sync"

	"github.com/estuite/estuite/table"
)

// The Cosmos DB Table API bills request units (RU). Its rates are not published per operation
// for the Table API; this is the model the estimate uses, from the published rules of thumb for
// Cosmos DB items. Every figure the estimate reports follows from these constants and the
// sizes of the entities each storage call actually moved in the run.
const (
	// CosmosKB is the unit sizes are rounded up to: an item of 1 to 1,024 bytes is one KB, of
	// 1,025 bytes two.
	CosmosKB = 1024
	// CosmosReadRUPerKB is what a point read of an item costs per KB: a 1 KB point read is 1 RU.
	CosmosReadRUPerKB = 1.0
	// CosmosNotFoundRU is what a point read that finds nothing costs.
	CosmosNotFoundRU = 1.0
	// CosmosWriteRUPerKB is what writing an item (insert, replace, merge or upsert) costs per KB:
	// a 1 KB write is about 5 RU. It assumes the Table API's default indexing of every property;
	// items with many properties may cost more.
	CosmosWriteRUPerKB = 5.0
	// CosmosDeleteRU is what deleting an item costs: taken as the write of a 1 KB item (the rows
	// Estuite deletes, dirty markers, are well under 1 KB).
	CosmosDeleteRU = 5.0
	// CosmosQueryRUPerKB is what a query page costs per KB it returns (the page's items added up,
	// then rounded up to whole KB).
	CosmosQueryRUPerKB = 1.0
	// CosmosQueryPageMinRU is the least a query page costs, also when it returns nothing.
	CosmosQueryPageMinRU = 1.0
)

// A transactional batch on Cosmos DB is charged the sum of its operations; a failed operation is
// assumed to be charged as if it had succeeded (the run has almost none). An item's size is the
// length of its JSON as the Table API receives it (table.JSONSize), without Cosmos DB's own system
// properties: the estimate is a lower bound in that respect.

// cosmosKBs is bytes in whole KB, at least 1.
func cosmosKBs(bytes int) float64 {
	return max(1, math.Ceil(float64(bytes)/CosmosKB))
}

// CosmosReadRU is the request charge of a point read of an item of the given size.
func CosmosReadRU(itemBytes int) float64 { return CosmosReadRUPerKB * cosmosKBs(itemBytes) }

// CosmosWriteRU is the request charge of writing an item of the given size.
func CosmosWriteRU(itemBytes int) float64 { return CosmosWriteRUPerKB * cosmosKBs(itemBytes) }

// CosmosQueryPageRU is the request charge of a query page returning items of the given total
// size.
func CosmosQueryPageRU(pageBytes int) float64 {
	if pageBytes == 0 {
		return CosmosQueryPageMinRU
	}
	return max(CosmosQueryPageMinRU, CosmosQueryRUPerKB*cosmosKBs(pageBytes))
}

// meter adds up, for one role, the request units its storage calls would cost on Cosmos DB and
// the JSON bytes of the rows it scanned.
type meter struct {
	mu        sync.Mutex
	ru        float64
	jsonBytes map[string]int64 // table name → JSON bytes of the rows scanned
}

func (m *meter) add(ru float64) {
	m.mu.Lock()
	m.ru += ru
	m.mu.Unlock()
}

func (m *meter) snapshot() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ru
}

// meteredBackend is a backend shared by several stores: it meters their calls and does not close
// the backend underneath (Run's caller does).
type meteredBackend struct {
	b table.Backend
	m *meter
}

func (mb meteredBackend) OpenTable(ctx context.Context, name string) (table.Table, error) {
	t, err := mb.b.OpenTable(ctx, name)
	if err != nil {
		return nil, err
	}
	return meteredTable{t: t, m: mb.m, name: name}, nil
}

func (mb meteredBackend) Close() error { return nil }

type meteredTable struct {
	t    table.Table
	m    *meter
	name string
}

func (mt meteredTable) Get(ctx context.Context, pk, rk string) (table.Entity, error) {
	e, err := mt.t.Get(ctx, pk, rk)
	if err == nil {
		mt.m.add(CosmosReadRU(table.JSONSize(e)))
	} else {
		mt.m.add(CosmosNotFoundRU)
	}
	return e, err
}

func (mt meteredTable) Query(ctx context.Context, q table.Query) (table.Page, error) {
	p, err := mt.t.Query(ctx, q)
	mt.m.add(CosmosQueryPageRU(pageBytes(p)))
	return p, err
}

func (mt meteredTable) Scan(ctx context.Context, q table.ScanQuery) (table.Page, error) {
	p, err := mt.t.Scan(ctx, q)
	n := pageBytes(p)
	mt.m.add(CosmosQueryPageRU(n))
	mt.m.mu.Lock()
	if mt.m.jsonBytes == nil {
		mt.m.jsonBytes = make(map[string]int64)
	}
	mt.m.jsonBytes[mt.name] += int64(n)
	mt.m.mu.Unlock()
	return p, err
}

func (mt meteredTable) Submit(ctx context.Context, pk string, ops []table.Op) ([]string, error) {
	ru := 0.0
	for _, op := range ops {
		if op.Kind == table.Delete {
			ru += CosmosDeleteRU
		} else {
			ru += CosmosWriteRU(table.JSONSize(op.Entity))
		}
	}
	mt.m.add(ru)
	return mt.t.Submit(ctx, pk, ops)
}

func pageBytes(p table.Page) int {
	n := 0
	for _, e := range p.Entities {
		n += table.JSONSize(e)
	}
	return n
}
