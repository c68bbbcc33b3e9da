package estuite_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/mem"
)

// TestReviewListStreamsLaterPageCostsOneQueryPage: docs/storage-format.md says a listing costs
// "one query per feed shard (from the key of max(prefix, after), at most limit + 1 rows)". A page
// after the first starts its query at After's own key, which the query returns and the listing
// skips: the limit + 1 rows hold only limit new ones, and the listing reads a second page to learn
// whether more follow — every page but the first costs two query pages, not one.
func TestReviewListStreamsLaterPageCostsOneQueryPage(t *testing.T) {
	s := openStore(t, mem.New(nil), nil)
	for i := range 30 {
		appendN(t, s, fmt.Sprintf("s-%02d", i), 1)
	}
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	before := s.RequestCounts()
	list, err := s.ListStreams(context.Background(), &estuite.ListStreamsOptions{Limit: 10, After: "s-09"})
	if err != nil || len(list.Streams) != 10 || list.Next != "s-19" {
		t.Fatalf("ListStreams: %d streams, next %q, %v", len(list.Streams), list.Next, err)
	}
	got := s.RequestCounts().Sub(before)
	if want := (estuite.RequestCounts{Queries: 1, QueryPages: 1, PointReads: 10}); got != want {
		t.Fatalf("second page: requests %+v, want %+v", got, want)
	}
}

// TestReviewListStreamsPagingMatrix pages through the catalog with every limit, under partial and
// empty storage pages, with one and several shards, prefixes, escaped names and deleted streams,
// and checks that every listing is exactly the expected streams, once each, in key order.
func TestReviewListStreamsPagingMatrix(t *testing.T) {
	names := []string{"a", "a%", "a%b", "a/b", "a-b", "ab", "order-1", "order-10", "order-2", "tenant/a", "tenant/b",
		"tenant-b", "tenant#x", "tenant?y", `tenant\z`, "zz", "gone-1", "gone-2", "ünï", "日本"}
	deleted := map[string]bool{"gone-1": true, "gone-2": true, "a%": true}
	for _, shards := range []int{1, 3} {
		for _, mo := range []mem.Options{{}, {PageSize: 1}, {PageSize: 2, EmptyPages: true}, {EmptyPages: true}} {
			t.Run(fmt.Sprintf("shards=%d,pageSize=%d,empty=%v", shards, mo.PageSize, mo.EmptyPages), func(t *testing.T) {
				ctx := context.Background()
				s := openStore(t, mem.New(&mo), &estuite.Options{FeedShards: shards})
				for _, n := range names {
					appendN(t, s, n, 1)
				}
				for shard := range shards {
					stepUntilIdle(t, estuite.NewDispatcher(s, &estuite.DispatcherOptions{Shard: shard}))
				}
				for n := range deleted {
					if _, err := s.Delete(ctx, n, &estuite.DeleteOptions{Hard: n == "gone-2"}); err != nil {
						t.Fatal(err)
					}
				}
				for _, prefix := range []string{"", "a", "a%", "a/", "tenant", "tenant/", "order-1", "gone", "ü", "zzz"} {
					var want []string
					for _, n := range names {
						if !deleted[n] && len(n) >= len(prefix) && n[:len(prefix)] == prefix {
							want = append(want, n)
						}
					}
					slices.SortFunc(want, func(a, b string) int { return compareKeys(a, b) })
					for limit := 1; limit <= len(names)+1; limit++ {
						got, _ := listAll(t, s, estuite.ListStreamsOptions{Prefix: prefix, Limit: limit})
						if !slices.Equal(streamNames(got), want) {
							t.Fatalf("prefix %q, limit %d: %q, want %q", prefix, limit, streamNames(got), want)
						}
					}
				}
			})
		}
	}
}

// compareKeys orders stream names as their partition keys sort.
func compareKeys(a, b string) int {
	esc := func(s string) string {
		var out []byte
		for i := 0; i < len(s); i++ {
			switch c := s[i]; c {
			case '%', '/', '\\', '#', '?':
				out = append(out, fmt.Sprintf("%%%02X", c)...)
			default:
				out = append(out, c)
			}
		}
		return string(out)
	}
	ka, kb := esc(a), esc(b)
	switch {
	case ka < kb:
		return -1
	case ka > kb:
		return 1
	}
	return 0
}

// TestReviewListStreamsAfterLifecycle: streams soft-deleted and recreated, streams whose first
// events were hidden and scavenged, and streams of several shards all stay listed.
func TestReviewListStreamsAfterLifecycle(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, mem.New(nil), &estuite.Options{FeedShards: 2})
	disp := func() {
		for shard := range 2 {
			stepUntilIdle(t, estuite.NewDispatcher(s, &estuite.DispatcherOptions{Shard: shard}))
		}
	}
	for i := range 10 {
		appendN(t, s, fmt.Sprintf("r-%d", i), 3)
	}
	disp()
	for i := range 10 {
		name := fmt.Sprintf("r-%d", i)
		switch i % 3 {
		case 0: // soft-deleted, then recreated
			if _, err := s.Delete(ctx, name, nil); err != nil {
				t.Fatal(err)
			}
			appendN(t, s, name, 2)
		case 1: // its first events hidden, then scavenged
			one := int64(1)
			if _, err := s.SetMetadata(ctx, name, estuite.StreamMetadata{MaxCount: &one}, estuite.AnyMetadataVersion); err != nil {
				t.Fatal(err)
			}
			appendN(t, s, name, 1)
		}
	}
	disp()
	if st, err := s.Scavenge(ctx); err != nil || st.Removed == 0 {
		t.Fatalf("Scavenge: %+v, %v; want event rows removed", st, err)
	}
	disp()
	got, _ := listAll(t, s, estuite.ListStreamsOptions{Limit: 3})
	if len(got) != 10 {
		t.Fatalf("listed %q, want all 10 streams", streamNames(got))
	}
	for _, i := range got {
		want := map[int64]bool{3: true, 4: true, 5: true}
		if !want[i.Version] {
			t.Errorf("%s at version %d", i.Name, i.Version)
		}
	}
}

// TestReviewListStreamsReturnsBeforeItsHeadReadsEnd: when a catalog row cannot be decoded,
// ListStreams returns its CorruptError at once, while the head reads it already started for the
// rows before go on in the background, after the call has returned (goroutines outliving the
// call, still making storage requests with the caller's context).
func TestReviewListStreamsReturnsBeforeItsHeadReadsEnd(t *testing.T) {
	ctx := context.Background()
	var slow atomic.Bool
	var inflight atomic.Int64
	release := make(chan struct{})
	var once sync.Once
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if slow.Load() && c.Method == mem.MethodGet && c.Table == "estuitestreams" {
			inflight.Add(1)
			<-release
			inflight.Add(-1)
		}
		return mem.NoFault
	}})
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	s := openStore(t, b, nil)
	for i := range 3 {
		appendN(t, s, fmt.Sprintf("s-%d", i), 1)
	}
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	events, _ := b.Table("estuiteevents")
	// A catalog row after them whose key is not a stream key and that names no stream.
	bad := table.Entity{PartitionKey: "streams00", RowKey: "t%zz", Properties: map[string]any{}}
	if _, err := events.Submit(ctx, "streams00", []table.Op{{Kind: table.Upsert, Entity: bad}}); err != nil {
		t.Fatal(err)
	}
	slow.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := s.ListStreams(ctx, nil)
		done <- err
	}()
	select {
	case err := <-done:
		time.Sleep(50 * time.Millisecond)
		if n := inflight.Load(); n > 0 {
			t.Fatalf("ListStreams returned (%v) with %d of its head reads still running", err, n)
		}
	case <-time.After(2 * time.Second):
		once.Do(func() { close(release) })
		<-done
	}
}

// TestReviewListStreamsEvictsTheAppendPathsHeads: ListStreams reads each listed head through
// readHead, which puts it into the store's head cache. A listing (up to 1,000 heads a page, a
// console paging through a store) evicts the heads the append path keeps warm, so that appends to
// hot streams go from 2 requests to 3 afterwards: a cost of listing the documented "1 query per
// shard + 1 point read per listed stream" leaves out.
func TestReviewListStreamsEvictsTheAppendPathsHeads(t *testing.T) {
	s := openStore(t, mem.New(nil), &estuite.Options{HeadCacheSize: 8})
	for i := range 50 {
		appendN(t, s, fmt.Sprintf("s-%02d", i), 1)
	}
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	one := []estuite.EventData{jsonEvent("E", "{}")}
	mustAppend(t, s, "hot", one, nil)
	if d := requestsOf(s, func() { mustAppend(t, s, "hot", one, nil) }); d.Total() != 2 {
		t.Fatalf("warm append before listing: %+v", d)
	}
	if _, err := s.ListStreams(context.Background(), &estuite.ListStreamsOptions{Prefix: "s-"}); err != nil {
		t.Fatal(err)
	}
	if d := requestsOf(s, func() { mustAppend(t, s, "hot", one, nil) }); d.Total() != 2 {
		t.Fatalf("append to the hot stream after a listing of other streams: %+v requests, want 2 as before", d)
	}
}

// TestReviewListStreamsNoTrailingEmptyPage: when exactly Limit streams remain, the page says no
// Next (held, with partial and empty storage pages and several shards).
func TestReviewListStreamsNoTrailingEmptyPage(t *testing.T) {
	for _, shards := range []int{1, 4} {
		for _, mo := range []mem.Options{{}, {PageSize: 1, EmptyPages: true}, {PageSize: 3}} {
			s := openStore(t, mem.New(&mo), &estuite.Options{FeedShards: shards})
			for i := range 12 {
				appendN(t, s, fmt.Sprintf("s-%02d", i), 1)
			}
			for shard := range shards {
				stepUntilIdle(t, estuite.NewDispatcher(s, &estuite.DispatcherOptions{Shard: shard}))
			}
			for limit := 1; limit <= 13; limit++ {
				got, pages := listAll(t, s, estuite.ListStreamsOptions{Limit: limit})
				if want := max(1, (12+limit-1)/limit); pages != want || len(got) != 12 {
					t.Errorf("shards %d, %+v, limit %d: %d pages, %d streams; want %d pages", shards, mo, limit, pages, len(got), want)
				}
			}
		}
	}
}

// TestReviewRepairCataloguesScavengedStreamsOfAnOldStore: a store written before the catalog
// (its catalog rows deleted here) whose streams had their first events scavenged, or were
// soft-deleted and recreated, is fully listed after Verify and Repair (held).
func TestReviewRepairCataloguesScavengedStreamsOfAnOldStore(t *testing.T) {
	ctx := context.Background()
	b := mem.New(nil)
	s := openStore(t, b, &estuite.Options{FeedShards: 2})
	disp := func() {
		for shard := range 2 {
			stepUntilIdle(t, estuite.NewDispatcher(s, &estuite.DispatcherOptions{Shard: shard}))
		}
	}
	for i := range 6 {
		appendN(t, s, fmt.Sprintf("o-%d", i), 3)
	}
	disp()
	events, _ := b.Table("estuiteevents")
	for shard := range 2 {
		pk := fmt.Sprintf("streams%02d", shard)
		p, err := events.Query(ctx, table.Query{PartitionKey: pk})
		if err != nil {
			t.Fatal(err)
		}
		for _, row := range p.Entities {
			if _, err := events.Submit(ctx, pk, []table.Op{{Kind: table.Delete, Entity: row}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	one := int64(1)
	for i := range 6 {
		name := fmt.Sprintf("o-%d", i)
		switch i % 3 {
		case 0:
			if _, err := s.Delete(ctx, name, nil); err != nil {
				t.Fatal(err)
			}
			appendN(t, s, name, 1)
		case 1:
			if _, err := s.SetMetadata(ctx, name, estuite.StreamMetadata{MaxCount: &one}, estuite.AnyMetadataVersion); err != nil {
				t.Fatal(err)
			}
		}
	}
	disp()
	if _, err := s.Scavenge(ctx); err != nil {
		t.Fatal(err)
	}
	r := mustVerify(t, s, nil)
	if _, err := s.Repair(ctx, r); err != nil {
		t.Fatal(err)
	}
	got, _ := listAll(t, s, estuite.ListStreamsOptions{})
	if len(got) != 6 {
		t.Fatalf("after Repair: %q (Uncatalogued %q), want all 6", streamNames(got), r.Uncatalogued)
	}
}
