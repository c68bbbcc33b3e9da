package throttle_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/azuritetest"
	"github.com/estuite/estuite/internal/throttle"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/azure"
)

func TestMain(m *testing.M) { azuritetest.Main(m) }

// front starts a proxy with limits l in front of Azurite and returns it with a backend that
// reaches Azurite through it.
func front(t testing.TB, l throttle.Limits) (*throttle.Server, *azure.Backend) {
	t.Helper()
	srv, err := throttle.Front(azuritetest.ConnectionString(t), l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	b, err := azure.Open(srv.ConnectionString, nil)
	if err != nil {
		t.Fatal(err)
	}
	return srv, b
}

// openTable opens a new table of b, deleted when the test ends.
func openTable(t testing.TB, b *azure.Backend) table.Table {
	t.Helper()
	name := azuritetest.NewTableName(t)
	tbl, err := b.OpenTable(context.Background(), name)
	if err != nil {
		t.Fatalf("creating a table through the proxy: %v", err)
	}
	t.Cleanup(func() { _ = b.DeleteTable(context.Background(), name) })
	return tbl
}

func insert(pk, rk string) []table.Op {
	return []table.Op{{Kind: table.Insert, Entity: table.Entity{PartitionKey: pk, RowKey: rk, Properties: map[string]any{"V": int64(1)}}}}
}

func TestAzuriteThroughProxy(t *testing.T) {
	srv, b := front(t, throttle.Limits{PartitionEntitiesPerSecond: 5, AccountTransactionsPerSecond: 1000})
	ctx := context.Background()
	tbl := openTable(t, b)

	// Within the limits everything passes, signed for the proxy's host and accepted by Azurite's.
	if _, err := tbl.Submit(ctx, "p", insert("p", "it's")); err != nil {
		t.Fatalf("insert through the proxy: %v", err)
	}
	e, err := tbl.Get(ctx, "p", "it's")
	if err != nil || e.Properties["V"] != int64(1) {
		t.Fatalf("get through the proxy: %v, %v", e, err)
	}
	page, err := tbl.Query(ctx, table.Query{PartitionKey: "p"})
	if err != nil || len(page.Entities) != 1 {
		t.Fatalf("query through the proxy: %v, %v", page, err)
	}
	// Azurite does check the signature: a wrong key is refused through the proxy as well.
	wrongKey := strings.Replace(srv.ConnectionString, azuritetest.AccountKey, strings.Repeat("A", 86)+"==", 1)
	if wrongKey == srv.ConnectionString {
		t.Fatal("the connection string holds no well-known key to replace")
	}
	bad, err := azure.Open(wrongKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.OpenTable(ctx, azuritetest.NewTableName(t)); !errors.Is(err, table.ErrInvalid) {
		t.Fatalf("a request signed with the wrong key: %v, want a refusal", err)
	}

	// Partition p has spent 3 of its 5 entities (the insert, the get, the query's one entity).
	// Keep inserting: a refusal comes within 3 more, definite (nothing was written) and transient.
	var refused error
	rk := ""
	for i := 0; i < 4 && refused == nil; i++ {
		rk = "r" + string(rune('0'+i))
		_, refused = tbl.Submit(ctx, "p", insert("p", rk))
	}
	if !errors.Is(refused, table.ErrTransient) || errors.Is(refused, table.ErrUnknownOutcome) {
		t.Fatalf("over the limit: %v, want a transient refusal with a definite outcome", refused)
	}
	if !strings.Contains(refused.Error(), "ServerBusy") {
		t.Errorf("the refusal does not name ServerBusy: %v", refused)
	}
	if _, err := tbl.Get(ctx, "q", "x"); !errors.Is(err, table.ErrNotFound) {
		t.Fatalf("another partition over the limit of p: %v, want not found", err)
	}
	if _, err := tbl.Get(ctx, "p", rk); !errors.Is(err, table.ErrTransient) {
		t.Fatalf("a read of the throttled partition: %v, want transient", err)
	}
	time.Sleep(time.Second) // refill
	if _, err := tbl.Get(ctx, "p", rk); !errors.Is(err, table.ErrNotFound) {
		t.Fatalf("the refused insert: %v, want not found (never forwarded)", err)
	}
	s := srv.Stats()
	if s.PartitionThrottled[throttle.Partition{Table: tableName(t, s), PartitionKey: "p"}] != 2 || s.AccountThrottled != 0 {
		t.Errorf("stats %+v", s)
	}
}

// tableName is the one table whose entities s counts.
func tableName(t *testing.T, s throttle.Stats) string {
	t.Helper()
	names := map[string]bool{}
	for p := range s.Entities {
		names[p.Table] = true
	}
	if len(names) != 1 {
		t.Fatalf("entities of tables %v, want one", names)
	}
	for n := range names {
		return n
	}
	return ""
}

func TestAzuriteAccountLimit(t *testing.T) {
	srv, b := front(t, throttle.Limits{PartitionEntitiesPerSecond: 1000, AccountTransactionsPerSecond: 3})
	ctx := context.Background()
	tbl := openTable(t, b) // one transaction
	for _, pk := range []string{"a", "b"} {
		if _, err := tbl.Submit(ctx, pk, insert(pk, "r")); err != nil {
			t.Fatal(err)
		}
	}
	_, err := tbl.Submit(ctx, "c", insert("c", "r"))
	if !errors.Is(err, table.ErrTransient) || errors.Is(err, table.ErrUnknownOutcome) {
		t.Fatalf("over the account's limit: %v, want a transient refusal", err)
	}
	if s := srv.Stats(); s.AccountThrottled != 1 || s.Forwarded != 3 {
		t.Errorf("stats %+v", s)
	}
}

// An Estuite store over a throttled partition: its appends meet ServerBusy and its retries carry
// them through.
func TestAzuriteEstuiteRetries(t *testing.T) {
	// Entities a second, and the burst: low enough that 40 appends (about 120 entities of the
	// stream's partition) meet the limit however slow the machine is, up to 75 ms an append
	// (at 50 a second, appends slowed to 40 ms by a loaded machine went unthrottled).
	const rate = 30
	srv, b := front(t, throttle.Limits{PartitionEntitiesPerSecond: rate, AccountTransactionsPerSecond: 1000})
	ctx := context.Background()
	prefix := azuritetest.NewTableName(t)
	if max := 63 - len("streams") - 1; len(prefix) > max {
		prefix = prefix[len(prefix)-max:]
	}
	prefix = "t" + prefix
	store, err := estuite.Open(ctx, b, &estuite.Options{
		TablePrefix: prefix,
		Retry:       estuite.RetryPolicy{MaxAttempts: 100, BaseDelay: 10 * time.Millisecond, MaxDelay: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	const n = 40
	start := time.Now()
	for i := 0; i < n; i++ {
		if _, err := store.Append(ctx, "hot", []estuite.EventData{{Type: "Tick", Data: []byte(`{}`)}}, nil); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	elapsed := time.Since(start)
	v, err := store.Version(ctx, "hot")
	if err != nil || v != n {
		t.Fatalf("version %d, %v; want %d", v, err, n)
	}
	s := srv.Stats()
	t.Logf("%d appends in %v; %d requests, %d throttled; entities %v", n, elapsed.Round(time.Millisecond), s.Requests, s.Throttled, s.Entities)
	if s.Throttled == 0 {
		t.Errorf("no request was throttled: the test proves nothing")
	}
	// The stream's partition served its entities no faster than the rate, after the burst (and
	// a few more: a request admitted on the last token may take more than one).
	hot := s.Entities[throttle.Partition{Table: prefix + "streams", PartitionKey: "hot"}]
	if hot < 2*rate {
		t.Fatalf("%d entities of the stream's partition: too few to judge the rate", hot)
	}
	if min := time.Duration(hot-rate-10) * time.Second / rate; elapsed < min {
		t.Errorf("%d entities in %v, faster than the limit allows (%v)", hot, elapsed, min)
	}
}
