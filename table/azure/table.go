package azure

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/estuite/estuite/table"
)

// Table is one Azure table. It implements table.Table; get it from Backend.OpenTable.
type Table struct {
	client *aztables.Client
}

var _ table.Table = (*Table)(nil)

// Get returns the entity with the given keys, or an error wrapping table.ErrNotFound.
func (t *Table) Get(ctx context.Context, partitionKey, rowKey string) (table.Entity, error) {
	if err := table.ValidateKey("partition key", partitionKey); err != nil {
		return table.Entity{}, err
	}
	if err := table.ValidateKey("row key", rowKey); err != nil {
		return table.Entity{}, err
	}
	resp, err := t.client.GetEntity(ctx, partitionKey, rowKey, nil)
	if err != nil {
		return table.Entity{}, mapError(ctx, err)
	}
	return decodeEntity(resp.Value, string(resp.ETag))
}

// Query returns one page of a partition's key range: exactly one request, whose page may be
// empty and still carry a continuation.
func (t *Table) Query(ctx context.Context, q table.Query) (table.Page, error) {
	if err := table.ValidateQuery(q); err != nil {
		return table.Page{}, err
	}
	opts := &aztables.ListEntitiesOptions{
		Filter: to.Ptr(rangeFilter(q.PartitionKey, q.From, q.To)),
		Top:    to.Ptr(int32(table.PageLimit(q))),
	}
	if q.Continuation != "" {
		var err error
		if opts.NextPartitionKey, opts.NextRowKey, err = decodeContinuation(q.Continuation); err != nil {
			return table.Page{}, err
		}
	}
	return t.listPage(ctx, opts)
}

// Scan returns one page of the rows of a range of partitions: exactly one request, a full
// table scan when the range is unbounded, whose page may be empty and still carry a
// continuation.
func (t *Table) Scan(ctx context.Context, q table.ScanQuery) (table.Page, error) {
	if err := table.ValidateScan(q); err != nil {
		return table.Page{}, err
	}
	opts := &aztables.ListEntitiesOptions{
		Top: to.Ptr(int32(table.ScanPageLimit(q))),
	}
	if f := partitionRangeFilter(q.FromPartition, q.ToPartition); f != "" {
		opts.Filter = &f
	}
	if q.Continuation != "" {
		var err error
		if opts.NextPartitionKey, opts.NextRowKey, err = decodeContinuation(q.Continuation); err != nil {
			return table.Page{}, err
		}
	}
	return t.listPage(ctx, opts)
}

// listPage reads one page of entities: exactly one request.
func (t *Table) listPage(ctx context.Context, opts *aztables.ListEntitiesOptions) (table.Page, error) {
	resp, err := t.client.NewListEntitiesPager(opts).NextPage(ctx)
	if err != nil {
		return table.Page{}, mapError(ctx, err)
	}
	page := table.Page{
		Entities:     make([]table.Entity, 0, len(resp.Entities)),
		Continuation: encodeContinuation(resp.NextPartitionKey, resp.NextRowKey),
	}
	for _, data := range resp.Entities {
		e, err := decodeEntity(data, "")
		if err != nil {
			return table.Page{}, err
		}
		page.Entities = append(page.Entities, e)
	}
	return page, nil
}

// partitionRangeFilter is the OData filter of the rows with from <= PartitionKey < to (no
// bound for an empty from or to); "" when both are empty.
func partitionRangeFilter(from, to string) string {
	var f []string
	if from != "" {
		f = append(f, "PartitionKey ge "+quote(from))
	}
	if to != "" {
		f = append(f, "PartitionKey lt "+quote(to))
	}
	return strings.Join(f, " and ")
}

// rangeFilter is the OData filter of the rows of partitionKey with from <= RowKey < to (no
// bound for an empty from or to).
func rangeFilter(partitionKey, from, to string) string {
	f := "PartitionKey eq " + quote(partitionKey)
	if from != "" {
		f += " and RowKey ge " + quote(from)
	}
	if to != "" {
		f += " and RowKey lt " + quote(to)
	}
	return f
}

// quote writes s as an OData string literal: in single quotes, with single quotes doubled.
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// encodeContinuation packs the service's continuation headers into one opaque string; "" when
// there is no continuation.
func encodeContinuation(nextPartitionKey, nextRowKey *string) string {
	v := url.Values{}
	if nextPartitionKey != nil && *nextPartitionKey != "" {
		v.Set("npk", *nextPartitionKey)
	}
	if nextRowKey != nil && *nextRowKey != "" {
		v.Set("nrk", *nextRowKey)
	}
	return v.Encode()
}

// decodeContinuation unpacks what encodeContinuation wrote.
func decodeContinuation(s string) (nextPartitionKey, nextRowKey *string, err error) {
	v, err := url.ParseQuery(s)
	if err != nil || (v.Get("npk") == "" && v.Get("nrk") == "") {
		return nil, nil, table.Invalidf("azure: malformed query continuation %q", s)
	}
	if pk := v.Get("npk"); pk != "" {
		nextPartitionKey = &pk
	}
	if rk := v.Get("nrk"); rk != "" {
		nextRowKey = &rk
	}
	return nextPartitionKey, nextRowKey, nil
}

// Submit applies ops atomically as one entity group transaction and returns the new ETags.
func (t *Table) Submit(ctx context.Context, partitionKey string, ops []table.Op) ([]string, error) {
	// Azurite does not check everything Azure checks (one partition, for one): the contract's
	// rules are enforced here, before anything is sent.
	if err := table.ValidateBatch(partitionKey, ops); err != nil {
		return nil, err
	}
	actions := make([]aztables.TransactionAction, len(ops))
	for i, op := range ops {
		a := aztables.TransactionAction{Entity: table.EncodeJSON(op.Entity)}
		ifMatch := azcore.ETag(op.IfMatch)
		if ifMatch == "" {
			ifMatch = azcore.ETagAny
		}
		switch op.Kind {
		case table.Insert:
			a.ActionType = aztables.TransactionTypeAdd
		case table.Replace:
			// The If-Match header must be set: without it, the SDK sends an upsert.
			a.ActionType, a.IfMatch = aztables.TransactionTypeUpdateReplace, &ifMatch
		case table.Merge:
			a.ActionType, a.IfMatch = aztables.TransactionTypeUpdateMerge, &ifMatch
		case table.Upsert:
			a.ActionType = aztables.TransactionTypeInsertReplace
		case table.Delete:
			keys := table.Entity{PartitionKey: op.Entity.PartitionKey, RowKey: op.Entity.RowKey}
			a.ActionType, a.IfMatch, a.Entity = aztables.TransactionTypeDelete, &ifMatch, table.EncodeJSON(keys)
		}
		actions[i] = a
	}
	// The SDK's TransactionResponse is empty: the ETags are read from the raw response, which
	// exchangePolicy records along with whether the request went out at all.
	ex := &exchange{}
	err := t.submitTransaction(withExchange(withBatchKeys(ctx, ops), ex), actions, ex)
	return submitOutcome(ctx, err, ex, ops)
}

// submitTransaction sends the batch through the SDK. The SDK (aztables v1.4.1) panics reading an
// accepted batch's body that holds no line break (an empty or truncated answer): a panic after
// the answer arrived becomes an error, and submitOutcome judges the answer itself.
func (t *Table) submitTransaction(ctx context.Context, actions []aztables.TransactionAction, ex *exchange) (err error) {
	defer func() {
		if p := recover(); p != nil {
			if ex.response == nil {
				panic(p)
			}
			err = fmt.Errorf("azure: the SDK panicked reading the batch's answer: %v", p)
		}
	}()
	_, err = t.client.SubmitTransaction(ctx, actions, nil)
	return err
}
