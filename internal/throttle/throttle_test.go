package throttle

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// upstream is a fake table service that records what reaches it.
type upstream struct {
	mu       sync.Mutex
	requests []recorded
	query    string // the body of a 200 answer to a GET without keys
}

type recorded struct {
	method, uri string
	header      http.Header
	body        []byte
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.requests = append(u.requests, recorded{r.Method, r.RequestURI, r.Header.Clone(), body})
	query := u.query
	u.mu.Unlock()
	switch {
	case strings.HasSuffix(r.URL.Path, "$batch"):
		// An error the SDK reads without trouble: the tests look at what was sent.
		w.Header().Set("x-ms-error-code", "InvalidInput")
		w.WriteHeader(http.StatusBadRequest)
	case r.Method == http.MethodGet && !strings.Contains(r.URL.Path, "PartitionKey="):
		w.Header().Set("Content-Type", "application/json;odata=minimalmetadata;streaming=true;charset=utf-8")
		_, _ = io.WriteString(w, query)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.requests)
}

func (u *upstream) last() recorded {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.requests[len(u.requests)-1]
}

// clock is a settable time.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	proxy    *Proxy
	up       *upstream
	clock    *clock
	endpoint string // the proxy's URL with Azurite's account path
}

func newFixture(t *testing.T, l Limits) *fixture {
	t.Helper()
	up := &upstream{}
	us := httptest.NewServer(up)
	t.Cleanup(us.Close)
	target, _ := url.Parse(us.URL)
	p := New(target, l)
	c := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	p.now = c.Now
	ps := httptest.NewServer(p)
	t.Cleanup(ps.Close)
	return &fixture{proxy: p, up: up, clock: c, endpoint: ps.URL + "/devstoreaccount1"}
}

// do sends a request to the proxy and returns the answer with its body read.
func (f *fixture) do(t *testing.T, method, path string, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, f.endpoint+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json;odata=minimalmetadata")
	req.Header.Set("x-ms-version", "2019-02-02")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, b
}

// write updates one entity: one entity of partition pk of table tbl.
func (f *fixture) write(t *testing.T, tbl, pk, rk string) *http.Response {
	t.Helper()
	resp, _ := f.do(t, http.MethodPut, "/"+tbl+"(PartitionKey='"+pk+"',RowKey='"+rk+"')", `{"A":1}`)
	return resp
}

// wantBusy checks that resp is Azure's ServerBusy as the SDK reads it.
func wantBusy(t *testing.T, resp *http.Response, message string) {
	t.Helper()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("x-ms-error-code") != "ServerBusy" {
		t.Fatalf("got %s, x-ms-error-code %q; want 503 ServerBusy", resp.Status, resp.Header.Get("x-ms-error-code"))
	}
	if resp.Header.Get("Retry-After") != "" {
		t.Errorf("Retry-After %q: Azure sends none", resp.Header.Get("Retry-After"))
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(bytes.NewReader(body))
	var e struct {
		Error struct {
			Code    string
			Message struct{ Value string }
		} `json:"odata.error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Code != "ServerBusy" || !strings.HasPrefix(e.Error.Message.Value, message+"\nRequestId:") {
		t.Errorf("body %s (%v): want an odata.error ServerBusy %q", body, err, message)
	}
	// The SDK finds the code in the body alone too.
	resp.Header.Del("x-ms-error-code")
	var re *azcore.ResponseError
	if err := runtime.NewResponseError(resp); !errors.As(err, &re) || re.ErrorCode != "ServerBusy" || re.StatusCode != 503 {
		t.Errorf("the SDK reads %v", err)
	}
}

func TestPartitionLimit(t *testing.T) {
	f := newFixture(t, Limits{PartitionEntitiesPerSecond: 5})
	for i := 0; i < 5; i++ {
		if resp := f.write(t, "t", "a", "r"); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("write %d within the burst: %s", i, resp.Status)
		}
	}
	resp := f.write(t, "t", "a", "r")
	wantBusy(t, resp, partitionBusyMessage)
	if n := f.up.count(); n != 5 {
		t.Errorf("%d requests reached the service, want 5: the refused one must not", n)
	}
	s := f.proxy.Stats()
	a := Partition{"t", "a"}
	if s.Requests != 6 || s.Forwarded != 5 || s.Throttled != 1 || s.AccountThrottled != 0 ||
		s.PartitionThrottled[a] != 1 || s.Entities[a] != 5 {
		t.Errorf("stats %+v", s)
	}
}

func TestPartitionsIndependent(t *testing.T) {
	f := newFixture(t, Limits{PartitionEntitiesPerSecond: 3})
	for i := 0; i < 3; i++ {
		f.write(t, "t", "a", "r")
	}
	wantBusy(t, f.write(t, "t", "a", "r"), partitionBusyMessage)
	// Another key of the same table, and the same key of another table, are other partitions.
	for _, p := range []Partition{{"t", "b"}, {"u", "a"}} {
		for i := 0; i < 3; i++ {
			if resp := f.write(t, p.Table, p.PartitionKey, "r"); resp.StatusCode != http.StatusNoContent {
				t.Fatalf("%v write %d: %s", p, i, resp.Status)
			}
		}
		wantBusy(t, f.write(t, p.Table, p.PartitionKey, "r"), partitionBusyMessage)
	}
	s := f.proxy.Stats()
	if s.Throttled != 3 || len(s.PartitionThrottled) != 3 || f.up.count() != 9 {
		t.Errorf("stats %+v, %d forwarded", s, f.up.count())
	}
}

func TestAccountLimit(t *testing.T) {
	f := newFixture(t, Limits{PartitionEntitiesPerSecond: 100, AccountTransactionsPerSecond: 4})
	if resp, _ := f.do(t, http.MethodPost, "/Tables", `{"TableName":"t"}`); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("create table: %s", resp.Status)
	}
	for _, pk := range []string{"a", "b", "c"} {
		if resp := f.write(t, "t", pk, "r"); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("write to %s: %s", pk, resp.Status)
		}
	}
	// Each partition has tokens left; the account has none.
	wantBusy(t, f.write(t, "t", "d", "r"), accountBusyMessage)
	resp, _ := f.do(t, http.MethodGet, "/Tables", "")
	wantBusy(t, resp, accountBusyMessage)
	s := f.proxy.Stats()
	if s.Throttled != 2 || s.AccountThrottled != 2 || len(s.PartitionThrottled) != 0 || f.up.count() != 4 {
		t.Errorf("stats %+v, %d forwarded", s, f.up.count())
	}
	f.clock.Advance(250 * time.Millisecond) // one transaction's worth
	if resp := f.write(t, "t", "d", "r"); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("after a refill: %s", resp.Status)
	}
	wantBusy(t, f.write(t, "t", "e", "r"), accountBusyMessage)
}

func TestRefill(t *testing.T) {
	f := newFixture(t, Limits{PartitionEntitiesPerSecond: 10})
	for i := 0; i < 10; i++ {
		f.write(t, "t", "a", "r")
	}
	wantBusy(t, f.write(t, "t", "a", "r"), partitionBusyMessage)
	f.clock.Advance(500 * time.Millisecond)
	for i := 0; i < 5; i++ {
		if resp := f.write(t, "t", "a", "r"); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("write %d after half a second: %s", i, resp.Status)
		}
	}
	wantBusy(t, f.write(t, "t", "a", "r"), partitionBusyMessage)
	// An idle partition saves up no more than the burst.
	f.clock.Advance(time.Hour)
	for i := 0; i < 10; i++ {
		if resp := f.write(t, "t", "a", "r"); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("write %d after an hour: %s", i, resp.Status)
		}
	}
	wantBusy(t, f.write(t, "t", "a", "r"), partitionBusyMessage)
	if n := f.up.count(); n != 25 {
		t.Errorf("%d forwarded, want 25", n)
	}
}

func TestBurst(t *testing.T) {
	f := newFixture(t, Limits{PartitionEntitiesPerSecond: 10, PartitionBurst: 2})
	f.write(t, "t", "a", "r")
	f.write(t, "t", "a", "r")
	wantBusy(t, f.write(t, "t", "a", "r"), partitionBusyMessage)
}

// sdkClient is the SDK's client of table tbl, reaching the proxy of f without retries.
func (f *fixture) sdkClient(t *testing.T, tbl string) *aztables.Client {
	t.Helper()
	c, err := aztables.NewClientWithNoCredential(f.endpoint+"/"+tbl, &aztables.ClientOptions{
		ClientOptions: policy.ClientOptions{Retry: policy.RetryOptions{MaxRetries: -1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// entityJSON is an entity of partition pk.
func entityJSON(pk, rk string) []byte {
	b, _ := json.Marshal(map[string]any{"PartitionKey": pk, "RowKey": rk, "V": 1})
	return b
}

func TestBatchCountsEntities(t *testing.T) {
	f := newFixture(t, Limits{PartitionEntitiesPerSecond: 10, AccountTransactionsPerSecond: 100})
	c := f.sdkClient(t, "t")
	ctx := context.Background()
	etag := azcore.ETagAny
	// Every kind of operation, one of them with a key that needs its quote doubled.
	batch := []aztables.TransactionAction{
		{ActionType: aztables.TransactionTypeAdd, Entity: entityJSON("p'q", "1")},
		{ActionType: aztables.TransactionTypeUpdateReplace, Entity: entityJSON("p'q", "2"), IfMatch: &etag},
		{ActionType: aztables.TransactionTypeUpdateMerge, Entity: entityJSON("p'q", "3"), IfMatch: &etag},
		{ActionType: aztables.TransactionTypeDelete, Entity: entityJSON("p'q", "4"), IfMatch: &etag},
	}
	submit := func() error { _, err := c.SubmitTransaction(ctx, batch, nil); return err }
	p := Partition{"t", "p'q"}
	for i, want := range []int64{4, 8, 12} { // the third is admitted on 2 tokens and leaves a debt
		var re *azcore.ResponseError
		if err := submit(); !errors.As(err, &re) || re.ErrorCode != "InvalidInput" {
			t.Fatalf("batch %d: %v, want the service's answer", i, err)
		}
		if s := f.proxy.Stats(); s.Entities[p] != want || s.Forwarded != int64(i+1) {
			t.Fatalf("after batch %d: stats %+v, want %d entities of %v", i, s, want, p)
		}
	}
	var re *azcore.ResponseError
	if err := submit(); !errors.As(err, &re) || re.ErrorCode != "ServerBusy" || re.StatusCode != 503 {
		t.Fatalf("batch over the limit: %v, want ServerBusy", err)
	}
	if n := f.up.count(); n != 3 {
		t.Errorf("%d batches reached the service, want 3", n)
	}
	// The debt of 2 and one token more: 0.3 s.
	f.clock.Advance(250 * time.Millisecond)
	if err := submit(); !errors.As(err, &re) || re.ErrorCode != "ServerBusy" {
		t.Fatalf("batch with the debt not paid back: %v, want ServerBusy", err)
	}
	f.clock.Advance(50 * time.Millisecond)
	if err := submit(); !errors.As(err, &re) || re.ErrorCode != "InvalidInput" {
		t.Fatalf("batch after the debt: %v, want the service's answer", err)
	}
	if s := f.proxy.Stats(); s.PartitionThrottled[p] != 2 || len(s.Entities) != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestBatchBody(t *testing.T) {
	// The example of the Table service's documentation, as Azure's older clients write it: an
	// insert (the partition in the entity) and a merge and a delete (in the URL).
	body := strings.ReplaceAll(`--batch_a1e9d677-b28b-435e-a89e-87e6a768a431
Content-Type: multipart/mixed; boundary=changeset_8a28b620-b4bb-458c-a177-0959fb14c977

--changeset_8a28b620-b4bb-458c-a177-0959fb14c977
Content-Type: application/http
Content-Transfer-Encoding: binary

POST https://myaccount.table.core.windows.net/Blogs HTTP/1.1
Content-Type: application/json
Accept: application/json;odata=minimalmetadata
Prefer: return-no-content
DataServiceVersion: 3.0;

{"PartitionKey":"Channel_19", "RowKey":"1", "Rating":9, "Text":".NET..."}
--changeset_8a28b620-b4bb-458c-a177-0959fb14c977
Content-Type: application/http
Content-Transfer-Encoding: binary

MERGE https://myaccount.table.core.windows.net/Blogs(PartitionKey='Channel_19',%20RowKey='3') HTTP/1.1
Content-Type: application/json
Accept: application/json;odata=minimalmetadata
DataServiceVersion: 3.0;

{"PartitionKey":"Channel_19", "RowKey":"3", "Rating":9, "Text":"PDC 2008..."}
--changeset_8a28b620-b4bb-458c-a177-0959fb14c977
Content-Type: application/http
Content-Transfer-Encoding: binary

DELETE https://myaccount.table.core.windows.net/Blogs(PartitionKey='Channel_19',%20RowKey='4') HTTP/1.1
Accept: application/json;odata=minimalmetadata
If-Match: *
DataServiceVersion: 3.0;

--changeset_8a28b620-b4bb-458c-a177-0959fb14c977--
--batch_a1e9d677-b28b-435e-a89e-87e6a768a431--
`, "\n", "\r\n")
	got := batchEntities("multipart/mixed; boundary=batch_a1e9d677-b28b-435e-a89e-87e6a768a431", []byte(body))
	if len(got) != 1 || got[Partition{"Blogs", "Channel_19"}] != 3 {
		t.Errorf("got %v, want 3 operations of Blogs/Channel_19", got)
	}
	if got := batchEntities("multipart/mixed; boundary=x", []byte("garbage")); got != nil {
		t.Errorf("garbage: %v", got)
	}
}

func TestQueryCharges(t *testing.T) {
	f := newFixture(t, Limits{PartitionEntitiesPerSecond: 5})
	f.up.query = `{"odata.metadata":"x","value":[{"PartitionKey":"a","RowKey":"1"},{"PartitionKey":"a","RowKey":"2"},{"PartitionKey":"a","RowKey":"3"}]}`
	filter := "?$filter=" + url.QueryEscape("(PartitionKey eq 'a') and (RowKey ge '1')")
	resp, body := f.do(t, http.MethodGet, "/t()"+filter, "")
	if resp.StatusCode != http.StatusOK || string(body) != f.up.query {
		t.Fatalf("query: %s %s", resp.Status, body)
	}
	if s := f.proxy.Stats(); s.Entities[Partition{"t", "a"}] != 3 {
		t.Fatalf("a query of 3 entities charged %v", s.Entities)
	}
	// Two tokens left: a query of 3 is admitted and leaves a debt of 1.
	if resp, _ := f.do(t, http.MethodGet, "/t()"+filter, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("second query: %s", resp.Status)
	}
	resp, _ = f.do(t, http.MethodGet, "/t()"+filter, "")
	wantBusy(t, resp, partitionBusyMessage)
	// A point read of the same partition is refused too; another partition's is not.
	resp, _ = f.do(t, http.MethodGet, "/t(PartitionKey='a',RowKey='1')", "")
	wantBusy(t, resp, partitionBusyMessage)
	if resp, _ := f.do(t, http.MethodGet, "/t(PartitionKey='b',RowKey='1')", ""); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("point read of another partition: %s", resp.Status)
	}
	// A scan names no partition: admitted, its entities charged where they come from.
	f.up.query = `{"value":[{"PartitionKey":"b","RowKey":"1"},{"PartitionKey":"c","RowKey":"1"}]}`
	if resp, _ := f.do(t, http.MethodGet, "/t()?$filter="+url.QueryEscape("PartitionKey ge 'a'"), ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("scan: %s", resp.Status)
	}
	s := f.proxy.Stats()
	if s.Entities[Partition{"t", "b"}] != 2 || s.Entities[Partition{"t", "c"}] != 1 || s.Entities[Partition{"t", "a"}] != 6 {
		t.Errorf("entities %v", s.Entities)
	}
	// An empty page of one partition costs one entity.
	f.up.query = `{"value":[]}`
	if resp, _ := f.do(t, http.MethodGet, "/t()?$filter="+url.QueryEscape("PartitionKey eq 'd'"), ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("empty query: %s", resp.Status)
	}
	if s := f.proxy.Stats(); s.Entities[Partition{"t", "d"}] != 1 {
		t.Errorf("an empty page charged %v", s.Entities)
	}
}

func TestForwardedUnchanged(t *testing.T) {
	f := newFixture(t, Limits{PartitionEntitiesPerSecond: 100, AccountTransactionsPerSecond: 100})
	path := "/t(PartitionKey='a%20b',RowKey='it''s%2A')"
	query := "?timeout=30&$select=A,B"
	req, _ := http.NewRequest("MERGE", f.endpoint+path+query, strings.NewReader(`{"A":"x"}`))
	req.Header.Set("Authorization", "SharedKey devstoreaccount1:c2lnbmF0dXJl")
	req.Header.Set("x-ms-date", "Thu, 01 Jan 2026 00:00:00 GMT")
	req.Header.Set("If-Match", `W/"datetime'2026-01-01T00%3A00%3A00Z'"`)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got := f.up.last()
	if got.method != "MERGE" || got.uri != "/devstoreaccount1"+path+query || string(got.body) != `{"A":"x"}` {
		t.Errorf("forwarded %s %s %s", got.method, got.uri, got.body)
	}
	for _, h := range []string{"Authorization", "x-ms-date", "If-Match", "Content-Type"} {
		if got.header.Get(h) != req.Header.Get(h) {
			t.Errorf("%s forwarded as %q, sent %q", h, got.header.Get(h), req.Header.Get(h))
		}
	}
	if got.header.Get("X-Forwarded-For") != "" {
		t.Errorf("X-Forwarded-For added: %q", got.header.Get("X-Forwarded-For"))
	}
	if s := f.proxy.Stats(); s.Entities[Partition{"t", "a b"}] != 1 || len(s.Entities) != 1 {
		t.Errorf("entities %v", s.Entities)
	}
}

func TestXMLAnswer(t *testing.T) {
	f := newFixture(t, Limits{AccountTransactionsPerSecond: 1})
	f.do(t, http.MethodGet, "/Tables", "")
	req, _ := http.NewRequest(http.MethodGet, f.endpoint+"/Tables", nil)
	req.Header.Set("Accept", "application/atom+xml")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var re *azcore.ResponseError
	if err := runtime.NewResponseError(resp); !errors.As(err, &re) || re.ErrorCode != "ServerBusy" {
		t.Fatalf("%v", err)
	}
	resp.Header.Del("x-ms-error-code")
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "<code>ServerBusy</code>") || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/xml") {
		t.Errorf("%s %s", resp.Header.Get("Content-Type"), body)
	}
}

func TestParsing(t *testing.T) {
	for _, tc := range []struct {
		filter string
		pk     string
		ok     bool
	}{
		{"PartitionKey eq 'a'", "a", true},
		{"(PartitionKey eq 'it''s') and (RowKey ge 'x' and RowKey lt 'y')", "it's", true},
		{"PartitionKey eq 'a' and V eq 'or'", "a", true},
		{"PartitionKey eq 'a' or PartitionKey eq 'b'", "", false},
		{"PartitionKey ge 'a' and PartitionKey lt 'b'", "", false},
		{"not (PartitionKey eq 'a')", "", false},
		{"PartitionKey eq 'a' and PartitionKey eq 'b'", "", false},
		{"RowKey eq 'a'", "", false},
		{"", "", false},
		{"PartitionKey eq 'unterminated", "", false},
	} {
		if pk, ok := singlePartition(tc.filter); pk != tc.pk || ok != tc.ok {
			t.Errorf("singlePartition(%q) = %q, %v; want %q, %v", tc.filter, pk, ok, tc.pk, tc.ok)
		}
	}
	for _, tc := range []struct {
		inner, pk, rk string
		ok            bool
	}{
		{"PartitionKey='a',RowKey='b'", "a", "b", true},
		{"PartitionKey='a''b', RowKey='c,d'", "a'b", "c,d", true},
		{"PartitionKey='a'b',RowKey='c'", "a'b", "c", true}, // aztables' batch URLs
		{"'t'", "", "", false},
		{"PartitionKey='a'", "", "", false},
	} {
		if pk, rk, ok := entityKeys(tc.inner); pk != tc.pk || rk != tc.rk || ok != tc.ok {
			t.Errorf("entityKeys(%q) = %q, %q, %v", tc.inner, pk, rk, ok)
		}
	}
	if name, inner, ok := parseSegment("t(PartitionKey='a'"); ok {
		t.Errorf("parseSegment of an open parenthesis: %q, %q", name, inner)
	}
}
