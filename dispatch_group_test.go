package estuite_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/mem"
)

// leaseHolders reads who holds each shard's lease.
func leaseHolders(t *testing.T, s *estuite.Store) map[string]int {
	t.Helper()
	events, err := s.Backend().OpenTable(context.Background(), estuite.DefaultTablePrefix+"events")
	if err != nil {
		t.Fatal(err)
	}
	p, err := events.Query(context.Background(), table.Query{PartitionKey: "lease"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, row := range p.Entities {
		if strings.HasPrefix(row.RowKey, "dispatcher") {
			if owner, _ := row.Properties["Owner"].(string); owner != "" {
				out[owner]++
			}
		}
	}
	return out
}

// waitHolders waits until the shards' leases are held as want says.
func waitHolders(t *testing.T, s *estuite.Store, want map[string]int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := leaseHolders(t, s)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("leases held %v after %v, want %v", got, within, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Dispatch groups spread a store's shards over the processes that run one: a lone group takes
// every shard, a second one gets half of them given back, and when one stops the other takes its
// shards again — while events appended meanwhile all reach the feed.
func TestDispatchGroupsShareTheShards(t *testing.T) {
	ctx := context.Background()
	b := mem.New(nil)
	s := openStore(t, b, &estuite.Options{FeedShards: 4})
	opts := func(owner string) *estuite.DispatcherOptions {
		return &estuite.DispatcherOptions{Owner: owner, LeaseDuration: 300 * time.Millisecond, PollInterval: 10 * time.Millisecond, ScavengeInterval: -1}
	}
	a := estuite.NewDispatchGroup(s, opts("host-1/127.0.0.1:2113")) // serve's default names hold a "/"
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitHolders(t, s, map[string]int{"host-1/127.0.0.1:2113": 4}, 5*time.Second)
	other := openStore(t, b, nil)
	bg := estuite.NewDispatchGroup(other, opts("host-2/127.0.0.1:2113"))
	if err := bg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitHolders(t, s, map[string]int{"host-1/127.0.0.1:2113": 2, "host-2/127.0.0.1:2113": 2}, 10*time.Second)
	for i := range 20 {
		mustAppend(t, s, fmt.Sprintf("g-%d", i), countedEvents(1, 2), nil)
	}
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	waitHolders(t, s, map[string]int{"host-2/127.0.0.1:2113": 4}, 10*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for {
		total := int64(0)
		for shard := range 4 {
			h, err := s.FeedHeadOf(ctx, shard)
			if err != nil {
				t.Fatal(err)
			}
			total += h
		}
		if total == 40 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the feed holds %d of 40 events", total)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := bg.Stop(); err != nil {
		t.Fatal(err)
	}
}
