// Package azure implements the table contract on Azure Table Storage with the official SDK
// (github.com/Azure/azure-sdk-for-go/sdk/data/aztables). It works with Azure Storage accounts,
// the Azurite emulator and the Cosmos DB Table API: anything a connection string can name.
//
// The SDK's own retries are off: every call makes exactly one HTTP request, and failures that
// may pass on a retry come back as *table.TransientError for the caller's retry policy.
//
// Entities are stored in Azure's JSON form (see table.EncodeJSON): int64 as Edm.Int64, []byte
// as Edm.Binary, time.Time as Edm.DateTime. Reading rows written by other programs, Edm.Int32
// is returned as int64, an Edm.Double as int64 when it is integral (a fractional or out-of-range
// Double makes the read fail with table.ErrInvalid), and Edm.Guid as its string. The service's
// Timestamp property is not returned.
//
// A failed batch is reported as a *table.BatchError whose index comes from the service's error
// message ("N:..."). Cosmos DB may leave the index out: then it is 0 for a batch of one
// operation and -1 (unknown) otherwise.
//
// A batch whose outcome cannot be known is reported as table.UnknownOutcome (a
// *table.TransientError wrapping table.ErrUnknownOutcome): a connection that failed or broke
// after the request was handed to the transport (also while the answer was read), a try that
// timed out, an accepted batch whose body is cut short or cannot be decoded or does not give
// every operation's ETag, and a server error other than throttling (500, 502, 504, ...). Only a
// refusal the service spelled out — an operation's error response, a 4xx status, throttling —
// is reported as definite.
//
// Known gap: the SDK re-encodes entities with encoding/json, which escapes '<', '>' and '&' as
// six bytes that table.BatchSize counts as one, so a batch of such characters that the contract
// allows can exceed Azure's 4 MiB request limit and fail with table.ErrInvalid (413).
package azure

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/estuite/estuite/table"
)

// DefaultTryTimeout bounds one HTTP request when Options.TryTimeout is zero. Azure's own
// server-side timeout for table operations is 30 seconds.
const DefaultTryTimeout = 35 * time.Second

// Options tune a Backend. The zero value (or nil) gives the defaults.
type Options struct {
	// HTTPClient sends the requests; nil means the SDK's default client.
	HTTPClient *http.Client
	// TryTimeout bounds each HTTP request; 0 means DefaultTryTimeout. A request that runs out of
	// time fails with a *table.TransientError.
	TryTimeout time.Duration
}

// Backend is a storage account reached through a connection string. It implements
// table.Backend.
type Backend struct {
	service *aztables.ServiceClient
}

var _ table.Backend = (*Backend)(nil)

// Open returns a Backend for the account of connectionString, for example Azurite's
// "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=...;TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;".
// It sends no request.
func Open(connectionString string, opts *Options) (*Backend, error) {
	if opts == nil {
		opts = &Options{}
	}
	co := &aztables.ClientOptions{}
	co.Retry = policy.RetryOptions{MaxRetries: -1, TryTimeout: opts.TryTimeout}
	if co.Retry.TryTimeout == 0 {
		co.Retry.TryTimeout = DefaultTryTimeout
	}
	if opts.HTTPClient != nil {
		co.Transport = opts.HTTPClient
	}
	co.PerCallPolicies = []policy.Policy{quotedKeyPolicy{}}
	co.PerRetryPolicies = []policy.Policy{exchangePolicy{}}
	service, err := aztables.NewServiceClientFromConnectionString(connectionString, co)
	if err != nil {
		return nil, table.Invalidf("azure: bad connection string: %v", err)
	}
	return &Backend{service: service}, nil
}

// OpenTable returns the named table, creating it when missing.
func (b *Backend) OpenTable(ctx context.Context, name string) (table.Table, error) {
	if err := table.ValidateTableName(name); err != nil {
		return nil, err
	}
	_, err := b.service.CreateTable(ctx, name, nil)
	var re *azcore.ResponseError
	if err != nil && !(errors.As(err, &re) && re.ErrorCode == string(aztables.TableAlreadyExists)) {
		return nil, mapError(ctx, err)
	}
	return &Table{client: b.service.NewClient(name)}, nil
}

// DeleteTable deletes the named table. Azure takes up to a minute before a table of the same
// name can be created again. Tests use it to clean up.
func (b *Backend) DeleteTable(ctx context.Context, name string) error {
	if _, err := b.service.DeleteTable(ctx, name, nil); err != nil {
		return mapError(ctx, err)
	}
	return nil
}

// Close does nothing: the backend holds no resources besides idle HTTP connections.
func (b *Backend) Close() error { return nil }
