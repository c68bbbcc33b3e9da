package azure

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"

	"github.com/estuite/estuite/table"
)

// The SDK (aztables v1.4.1) writes the keys of a batch's update, merge and delete operations
// into their URLs without doubling single quotes, as OData requires and as the SDK itself does
// for single-entity calls: a key containing ' gives a URL like
// "(PartitionKey='p',RowKey='it%27s')", which decodes to "RowKey='it's'". Azurite happens to
// accept it; Azure's OData parser has no reason to. quotedKeyPolicy repairs the
// batch body before it is sent, for the operations that withBatchKeys marked on the context.

type batchKeysKey struct{}

// withBatchKeys marks ctx with the keys of the ops whose URLs need repair, if any.
func withBatchKeys(ctx context.Context, ops []table.Op) context.Context {
	var keys [][2]string
	for _, op := range ops {
		e := op.Entity
		if op.Kind != table.Insert && strings.ContainsRune(e.PartitionKey+e.RowKey, '\'') {
			keys = append(keys, [2]string{e.PartitionKey, e.RowKey})
		}
	}
	if keys == nil {
		return ctx
	}
	return context.WithValue(ctx, batchKeysKey{}, keys)
}

// entityPath is how the SDK writes an entity's keys into a URL, with quotes doubled when quote
// is set.
func entityPath(partitionKey, rowKey string, quote bool) string {
	if quote {
		partitionKey = strings.ReplaceAll(partitionKey, "'", "''")
		rowKey = strings.ReplaceAll(rowKey, "'", "''")
	}
	return "(PartitionKey='" + url.PathEscape(partitionKey) + "',RowKey='" + url.PathEscape(rowKey) + "')"
}

// quotedKeyPolicy doubles the single quotes in the keys of batch operations' URLs.
type quotedKeyPolicy struct{}

// Do implements policy.Policy.
func (quotedKeyPolicy) Do(req *policy.Request) (*http.Response, error) {
	keys, _ := req.Raw().Context().Value(batchKeysKey{}).([][2]string)
	if keys == nil || req.Body() == nil {
		return req.Next()
	}
	body, err := io.ReadAll(req.Body())
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	for _, k := range keys { // the ops appear in the body in order
		broken := []byte(entityPath(k[0], k[1], false))
		i := bytes.Index(body, broken)
		if i < 0 {
			return nil, fmt.Errorf("azure: batch request holds no operation for row %q/%q", k[0], k[1])
		}
		out.Write(body[:i])
		out.WriteString(entityPath(k[0], k[1], true))
		body = body[i+len(broken):]
	}
	out.Write(body)
	if err := req.SetBody(streaming.NopCloser(bytes.NewReader(out.Bytes())), req.Raw().Header.Get("Content-Type")); err != nil {
		return nil, err
	}
	return req.Next()
}
