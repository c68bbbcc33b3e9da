package azure

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/estuite/estuite/internal/azuritetest"
	"github.com/estuite/estuite/table"
)

// Tests in this file need no Azurite: they run against captured responses and fake transports.

func TestQuoteKeepsFilterMeaning(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "''"},
		{"abc", "'abc'"},
		{"it's", "'it''s'"},
		{"'", "''''"},
		{"''", "''''''"},
		{"x' or RowKey ne '", "'x'' or RowKey ne '''"},
	} {
		if got := quote(tc.in); got != tc.want {
			t.Errorf("quote(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
	got := rangeFilter("p' or PartitionKey ne 'x", "a'", "b'")
	want := "PartitionKey eq 'p'' or PartitionKey ne ''x' and RowKey ge 'a''' and RowKey lt 'b'''"
	if got != want {
		t.Errorf("rangeFilter = %s, want %s", got, want)
	}
	if got := rangeFilter("p", "", ""); got != "PartitionKey eq 'p'" {
		t.Errorf("rangeFilter without bounds = %s", got)
	}
}

func TestPartitionRangeFilter(t *testing.T) {
	for _, tc := range []struct{ from, to, want string }{
		{"", "", ""},
		{"a", "", "PartitionKey ge 'a'"},
		{"", "b", "PartitionKey lt 'b'"},
		{"a'", "b' or 1 eq 1 or '", "PartitionKey ge 'a''' and PartitionKey lt 'b'' or 1 eq 1 or '''"},
	} {
		if got := partitionRangeFilter(tc.from, tc.to); got != tc.want {
			t.Errorf("partitionRangeFilter(%q, %q) = %s, want %s", tc.from, tc.to, got, tc.want)
		}
	}
}

func TestContinuationRoundTrip(t *testing.T) {
	for _, tc := range []struct{ pk, rk *string }{
		{ptr("1!8!cGsx"), ptr("1!12!cm93IDEwMDA-")},
		{ptr("1!8!cGsx"), nil},
		{nil, ptr("a&b=c d")},
	} {
		s := encodeContinuation(tc.pk, tc.rk)
		pk, rk, err := decodeContinuation(s)
		if err != nil || deref(pk) != deref(tc.pk) || deref(rk) != deref(tc.rk) {
			t.Errorf("round trip of %v/%v via %q gave %v/%v, %v", deref(tc.pk), deref(tc.rk), s, deref(pk), deref(rk), err)
		}
	}
	if s := encodeContinuation(nil, ptr("")); s != "" {
		t.Errorf("no continuation encoded as %q", s)
	}
	if _, _, err := decodeContinuation("garbage%zz"); !errors.Is(err, table.ErrInvalid) {
		t.Errorf("malformed continuation: %v", err)
	}
}

func ptr(s string) *string { return &s }

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

func TestDecodeEntity(t *testing.T) {
	data := `{"odata.metadata":"x","odata.etag":"W/\"e\"","PartitionKey":"p","RowKey":"r",` +
		`"Timestamp":"2024-01-01T00:00:00.1234567Z","Timestamp@odata.type":"Edm.DateTime",` +
		`"I64":"-9223372036854775808","I64@odata.type":"Edm.Int64","I32":42,"D":3.0,"D@odata.type":"Edm.Double",` +
		`"Bin":"AAEC","Bin@odata.type":"Edm.Binary","T":"2024-05-06T07:08:09.1234567Z","T@odata.type":"Edm.DateTime",` +
		`"S":"it's","B":true,"G":"8a5b4c3d-0000-0000-0000-000000000000","G@odata.type":"Edm.Guid"}`
	e, err := decodeEntity([]byte(data), "")
	if err != nil {
		t.Fatal(err)
	}
	if e.PartitionKey != "p" || e.RowKey != "r" || e.ETag != `W/"e"` {
		t.Errorf("keys/etag: %+v", e)
	}
	want := map[string]any{
		"I64": int64(-1 << 63), "I32": int64(42), "D": int64(3), "Bin": []byte{0, 1, 2},
		"T": time.Date(2024, 5, 6, 7, 8, 9, 123456700, time.UTC), "S": "it's", "B": true,
		"G": "8a5b4c3d-0000-0000-0000-000000000000",
	}
	if err := equalProperties(e.Properties, want); err != nil {
		t.Error(err)
	}
	if _, err := decodeEntity([]byte(`{"PartitionKey":"p","RowKey":"r","D":1.5}`), ""); !errors.Is(err, table.ErrInvalid) {
		t.Errorf("fractional double: %v", err)
	}
}

// equalProperties compares property maps of contract values.
func equalProperties(got, want map[string]any) error {
	if len(got) != len(want) {
		return fmt.Errorf("got %d properties %v, want %d", len(got), keys(got), len(want))
	}
	for k, w := range want {
		g, ok := got[k]
		var equal bool
		switch w := w.(type) {
		case []byte:
			gb, isBytes := g.([]byte)
			equal = isBytes && bytes.Equal(gb, w)
		case time.Time:
			gt, isTime := g.(time.Time)
			equal = isTime && gt.Equal(w) && gt.Location() == time.UTC
		default:
			equal = g == w
		}
		if !ok || !equal {
			return fmt.Errorf("property %s = %T %.80v, want %T %.80v", k, g, g, w, w)
		}
	}
	return nil
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestBatchETagsFromAzurite(t *testing.T) {
	ops := []table.Op{{Kind: table.Insert}, {Kind: table.Upsert}, {Kind: table.Insert}}
	etags, err := batchOutcome(fixture(t, "azurite-success-insert-upsert-insert.txt"), ops)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`W/"datetime'2026-11-26T01%3A20%3A51.9659118Z'"`, `W/"datetime'2026-11-26T01%3A20%3A51.9659122Z'"`, `W/"datetime'2026-11-26T01%3A20%3A51.9659124Z'"`}
	if fmt.Sprint(etags) != fmt.Sprint(want) {
		t.Errorf("etags = %q, want %q", etags, want)
	}
	ops = []table.Op{{Kind: table.Replace}, {Kind: table.Delete}, {Kind: table.Merge}}
	etags, err = batchOutcome(fixture(t, "azurite-success-replace-delete-merge.txt"), ops)
	if err != nil || etags[0] == "" || etags[1] != "" || etags[2] == "" {
		t.Errorf("etags = %q, %v", etags, err)
	}
	if _, err := batchOutcome(fixture(t, "azurite-success-replace-delete-merge.txt"), ops[:2]); !isUnknownOutcome(err) {
		t.Errorf("a response count that differs from the op count: %v, want an unknown outcome", err)
	}
}

// cosmosConflict is the shape a Cosmos DB Table API failure is expected to have (inferred, not
// captured: the SDK tolerates a missing closing boundary "for Cosmos", and Cosmos messages need
// not carry the "N:" index prefix).
const cosmosConflict = "--batchresponse_66925647-d0cb-46b3-a5ed-d5e3ad1e6bd0\r\n" +
	"Content-Type: multipart/mixed; boundary=changesetresponse_a3d3bd3c-5d5c-4ef4-b0f4-ea1c0a3ff2f4\r\n\r\n" +
	"--changesetresponse_a3d3bd3c-5d5c-4ef4-b0f4-ea1c0a3ff2f4\r\n" +
	"Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n" +
	"HTTP/1.1 409 Conflict\r\nContent-Type: application/json;odata=minimalmetadata;streaming=true;charset=utf-8\r\n\r\n" +
	`{"odata.error":{"code":"EntityAlreadyExists","message":{"lang":"en-us","value":"The specified entity already exists.\nRequestID:5f1d7e5c-0000-0000-0000-000000000000\n"}}}` + "\r\n" +
	"--changesetresponse_a3d3bd3c-5d5c-4ef4-b0f4-ea1c0a3ff2f4--\r\n"

// storageXMLError is the sample error response of Azure's documentation on entity group
// transactions, in the XML form older API versions answer with.
const storageXMLError = "--batchresponse_7ab1c2ad-a9f7-4cd1-a2b6-bd4c5b3f7b72\r\n" +
	"Content-Type: multipart/mixed; boundary=changesetresponse_0d3b6a0c-4dc4-4b5a-9a0d-3df1e8a0b2f9\r\n\r\n" +
	"--changesetresponse_0d3b6a0c-4dc4-4b5a-9a0d-3df1e8a0b2f9\r\n" +
	"Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n" +
	"HTTP/1.1 400 Bad Request\r\nContent-ID: 1\r\nContent-Type: application/xml\r\n\r\n" +
	`<?xml version="1.0" encoding="utf-8" standalone="yes"?>` + "\r\n" +
	`<error xmlns="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata"><code>InvalidInput</code>` +
	`<message xml:lang="en-US">1:One of the request inputs is not valid.</message></error>` + "\r\n" +
	"--changesetresponse_0d3b6a0c-4dc4-4b5a-9a0d-3df1e8a0b2f9--\r\n" +
	"--batchresponse_7ab1c2ad-a9f7-4cd1-a2b6-bd4c5b3f7b72--\r\n"

// azuriteTooManyOps is what Azurite 3.35.0 answers to a batch of 101 operations: a stray line
// before the status line, which the SDK cannot parse.
const azuriteTooManyOps = "--batchresponse_a079dcd1-b84c-45f0-622d-21e886dcc633\r\n" +
	"Content-Type: multipart/mixed; boundary=changesetresponse_d9000340-33b1-4f43-42ee-4b578dde59b9\r\n\r\n" +
	"--changesetresponse_d9000340-33b1-4f43-42ee-4b578dde59b9\r\n" +
	"Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n" +
	"changesetresponse_d9000340-33b1-4f43-42ee-4b578dde59b9\r\n" +
	"HTTP/1.1 400 Bad Request\r\nX-Content-Type-Options: nosniff\r\nDataServiceVersion: 3.0;\r\n" +
	"Content-Type: application/json;odata=minimalmetadata;charset=utf-8\r\n\r\n" +
	`{"odata.error":{"code":"InvalidInput","message":{"lang":"en-US","value":"0:The batch request operation exceeds the maximum 100 changes per change set.\nRequestId:dd561e26-0aff-4e49-b4d3-4eb8735f61b6\nTime:2026-11-26T01:21:27.7820000Z"}}}` + "\r\n" +
	"--changesetresponse_d9000340-33b1-4f43-42ee-4b578dde59b9--\r\n" +
	"--batchresponse_a079dcd1-b84c-45f0-622d-21e886dcc633--\r\n"

func TestBatchFailure(t *testing.T) {
	for _, tc := range []struct {
		name  string
		body  []byte
		nops  int
		index int
		code  string
		kind  error
	}{
		{"insert exists", fixture(t, "azurite-fail-1-EntityAlreadyExists.txt"), 2, 1, "EntityAlreadyExists", table.ErrAlreadyExists},
		{"etag mismatch", fixture(t, "azurite-fail-0-UpdateConditionNotSatisfied.txt"), 1, 0, "UpdateConditionNotSatisfied", table.ErrPreconditionFailed},
		{"merge missing", fixture(t, "azurite-fail-1-ResourceNotFound.txt"), 2, 1, "ResourceNotFound", table.ErrNotFound},
		{"delete missing", fixture(t, "azurite-fail-0-ResourceNotFound-delete.txt"), 1, 0, "ResourceNotFound", table.ErrNotFound},
		{"cosmos, one op", []byte(cosmosConflict), 1, 0, "EntityAlreadyExists", table.ErrAlreadyExists},
		{"cosmos, index unknown", []byte(cosmosConflict), 3, -1, "EntityAlreadyExists", table.ErrAlreadyExists},
		{"xml", []byte(storageXMLError), 2, 1, "InvalidInput", table.ErrInvalid},
		{"azurite stray line", []byte(azuriteTooManyOps), 101, 0, "InvalidInput", table.ErrInvalid},
		{"index out of range", fixture(t, "azurite-fail-1-EntityAlreadyExists.txt"), 1, 0, "EntityAlreadyExists", table.ErrAlreadyExists},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := batchOutcome(tc.body, make([]table.Op, tc.nops))
			var be *table.BatchError
			if !errors.As(err, &be) || be.Index != tc.index || be.Code != tc.code || be.Err != tc.kind || !errors.Is(err, tc.kind) {
				t.Fatalf("got %#v (%v), want index %d code %s kind %v", be, err, tc.index, tc.code, tc.kind)
			}
			if errors.Is(err, table.ErrTransient) || errors.Is(err, table.ErrUnknownOutcome) {
				t.Fatalf("a refusal the service spelled out became %v", err)
			}
		})
	}
	throttled := strings.Replace(cosmosConflict, "409 Conflict", "429 Too Many Requests\r\nx-ms-retry-after-ms: 250", 1)
	_, err := batchOutcome([]byte(throttled), make([]table.Op, 1))
	if !errors.Is(err, table.ErrTransient) || errors.Is(err, table.ErrUnknownOutcome) || table.RetryAfter(err) != 250*time.Millisecond {
		t.Errorf("throttled operation: %v, want a transient refusal asking for 250ms", err)
	}
	timedOut := strings.Replace(cosmosConflict, "409 Conflict", "500 Internal Server Error", 1)
	timedOut = strings.Replace(timedOut, "EntityAlreadyExists", "OperationTimedOut", 1)
	if _, err := batchOutcome([]byte(timedOut), make([]table.Op, 1)); !isUnknownOutcome(err) {
		t.Errorf("operation that timed out on the server: %v, want an unknown outcome", err)
	}
	if _, err := batchOutcome([]byte("not multipart"), make([]table.Op, 1)); !isUnknownOutcome(err) {
		t.Errorf("unreadable batch body: %v, want an unknown outcome", err)
	}
}

func TestErrorMapping(t *testing.T) {
	respErr := func(status int, code string, header http.Header) error {
		return &azcore.ResponseError{StatusCode: status, ErrorCode: code, RawResponse: &http.Response{StatusCode: status, Header: header}}
	}
	ctx := context.Background()
	for _, tc := range []struct {
		err  error
		want error
	}{
		{respErr(404, "ResourceNotFound", nil), table.ErrNotFound},
		{respErr(409, "EntityAlreadyExists", nil), table.ErrAlreadyExists},
		{respErr(409, "TableAlreadyExists", nil), table.ErrAlreadyExists},
		{respErr(409, "TableBeingDeleted", nil), table.ErrTransient},
		{respErr(412, "UpdateConditionNotSatisfied", nil), table.ErrPreconditionFailed},
		{respErr(400, "InvalidInput", nil), table.ErrInvalid},
		{respErr(413, "RequestBodyTooLarge", nil), table.ErrInvalid},
		{respErr(403, "AuthenticationFailed", nil), table.ErrInvalid},
		{respErr(408, "", nil), table.ErrTransient},
		{respErr(429, "", nil), table.ErrTransient},
		{respErr(500, "InternalError", nil), table.ErrTransient},
		{respErr(503, "ServerBusy", nil), table.ErrTransient},
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, table.ErrTransient},
		{fmt.Errorf("reading: %w", io.ErrUnexpectedEOF), table.ErrTransient},
		{context.DeadlineExceeded, table.ErrTransient}, // a try timed out, not the caller's ctx
	} {
		if got := mapError(ctx, tc.err); !errors.Is(got, tc.want) || errors.Is(got, table.ErrUnknownOutcome) {
			t.Errorf("mapError(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	// A batch's error status: definite unless it may have come after the batch was applied.
	sent := func(status int) *exchange { return &exchange{sent: true, response: &http.Response{StatusCode: status}} }
	for _, tc := range []struct {
		err     error
		want    error
		unknown bool
	}{
		{respErr(404, "TableNotFound", nil), table.ErrNotFound, false},
		{respErr(400, "InvalidInput", nil), table.ErrInvalid, false},
		{respErr(413, "RequestBodyTooLarge", nil), table.ErrInvalid, false},
		{respErr(403, "AuthenticationFailed", nil), table.ErrInvalid, false},
		{respErr(429, "", nil), table.ErrTransient, false},
		{respErr(503, "ServerBusy", nil), table.ErrTransient, false},
		{respErr(409, "TableBeingDeleted", nil), table.ErrTransient, false},
		{respErr(500, "OperationTimedOut", nil), table.ErrUnknownOutcome, true},
		{respErr(500, "InternalError", nil), table.ErrUnknownOutcome, true},
		{respErr(502, "", nil), table.ErrUnknownOutcome, true},
		{respErr(503, "", nil), table.ErrUnknownOutcome, true}, // not Azure's ServerBusy: Cosmos DB, a proxy
		{respErr(504, "", nil), table.ErrUnknownOutcome, true},
		{respErr(408, "RequestTimeout", nil), table.ErrUnknownOutcome, true},
	} {
		var re *azcore.ResponseError
		errors.As(tc.err, &re)
		_, got := submitOutcome(ctx, tc.err, sent(re.StatusCode), nil)
		if !errors.Is(got, tc.want) || isUnknownOutcome(got) != tc.unknown {
			t.Errorf("batch answered %v: %v, want %v (unknown outcome: %v)", tc.err, got, tc.want, tc.unknown)
		}
	}
	// Nothing sent: the error is what it is; sent without an answer: unknown.
	if _, got := submitOutcome(ctx, errors.New("building the request"), &exchange{}, nil); errors.Is(got, table.ErrTransient) {
		t.Errorf("a batch never sent: %v", got)
	}
	if _, got := submitOutcome(ctx, &net.OpError{Op: "read", Err: errors.New("connection reset")}, &exchange{sent: true}, nil); !isUnknownOutcome(got) {
		t.Errorf("a batch whose connection broke: %v, want an unknown outcome", got)
	}
	for _, tc := range []struct {
		header http.Header
		want   time.Duration
	}{
		{http.Header{"X-Ms-Retry-After-Ms": {"1500"}}, 1500 * time.Millisecond},
		{http.Header{"Retry-After-Ms": {"20"}}, 20 * time.Millisecond},
		{http.Header{"Retry-After": {"3"}}, 3 * time.Second},
		{http.Header{}, 0},
	} {
		if got := table.RetryAfter(mapError(ctx, respErr(503, "ServerBusy", tc.header))); got != tc.want {
			t.Errorf("RetryAfter(%v) = %v, want %v", tc.header, got, tc.want)
		}
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if got := mapError(canceled, context.Canceled); got != context.Canceled {
		t.Errorf("caller's cancellation became %v", got)
	}
}

// fakeBackend opens a Backend whose requests go to handle instead of the network.
func fakeBackend(t *testing.T, opts Options, handle func(*http.Request) (*http.Response, error)) *Table {
	t.Helper()
	opts.HTTPClient = &http.Client{Transport: roundTripper(handle)}
	b, err := Open(azuritetest.WellKnownConnectionString(1), &opts)
	if err != nil {
		t.Fatal(err)
	}
	return &Table{client: b.service.NewClient("faketable")}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func response(status int, header http.Header, body string) *http.Response {
	if header == nil {
		header = http.Header{}
	}
	return &http.Response{StatusCode: status, Status: http.StatusText(status), Header: header,
		Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body))}
}

func TestNoSDKRetries(t *testing.T) {
	var requests atomic.Int32
	tb := fakeBackend(t, Options{}, func(r *http.Request) (*http.Response, error) {
		requests.Add(1)
		return response(503, http.Header{"Retry-After": {"2"}}, `{"odata.error":{"code":"ServerBusy","message":{"value":"busy"}}}`), nil
	})
	_, err := tb.Get(context.Background(), "p", "r")
	if !errors.Is(err, table.ErrTransient) || table.RetryAfter(err) != 2*time.Second {
		t.Errorf("Get = %v, want a transient error asking for 2s", err)
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("%d requests sent, want 1 (the SDK must not retry)", n)
	}
}

func TestTryTimeoutIsTransient(t *testing.T) {
	tb := fakeBackend(t, Options{TryTimeout: 50 * time.Millisecond}, func(r *http.Request) (*http.Response, error) {
		<-r.Context().Done()
		return nil, r.Context().Err()
	})
	if _, err := tb.Get(context.Background(), "p", "r"); !errors.Is(err, table.ErrTransient) {
		t.Errorf("Get = %v, want a transient error", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := tb.Get(ctx, "p", "r"); errors.Is(err, table.ErrTransient) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Get with the caller's deadline = %v, want the context's error as it is", err)
	}
}

// The SDK writes keys into batch URLs without doubling single quotes; quotedKeyPolicy must.
func TestBatchURLsDoubleQuotes(t *testing.T) {
	var sent string
	tb := fakeBackend(t, Options{}, func(r *http.Request) (*http.Response, error) {
		body, _ := io.ReadAll(r.Body)
		sent = string(body)
		return response(202, http.Header{"Content-Type": {"multipart/mixed"}},
			string(fixture(t, "azurite-success-replace-delete-merge.txt"))), nil
	})
	ops := []table.Op{
		{Kind: table.Replace, Entity: table.Entity{PartitionKey: "p'1", RowKey: "it's", Properties: map[string]any{"S": "'"}}},
		{Kind: table.Delete, Entity: table.Entity{PartitionKey: "p'1", RowKey: "a'b'c"}},
		{Kind: table.Merge, Entity: table.Entity{PartitionKey: "p'1", RowKey: "plain"}},
	}
	if _, err := tb.Submit(context.Background(), "p'1", ops); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"PUT http://127.0.0.1:1/devstoreaccount1/faketable(PartitionKey='p%27%271',RowKey='it%27%27s')",
		"DELETE http://127.0.0.1:1/devstoreaccount1/faketable(PartitionKey='p%27%271',RowKey='a%27%27b%27%27c')",
		"PATCH http://127.0.0.1:1/devstoreaccount1/faketable(PartitionKey='p%27%271',RowKey='plain')",
		`"RowKey":"it's"`,
	} {
		if !strings.Contains(sent, want) {
			t.Errorf("batch request lacks %s:\n%s", want, sent)
		}
	}
}
