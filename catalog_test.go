package estuite_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/mem"
)

// listAll pages through ListStreams with opts, returning every stream listed and the pages read.
func listAll(t *testing.T, s *estuite.Store, opts estuite.ListStreamsOptions) (all []estuite.StreamInfo, pages int) {
	t.Helper()
	for {
		pages++
		if pages > 100 {
			t.Fatalf("ListStreams did not end after 100 pages")
		}
		list, err := s.ListStreams(context.Background(), &opts)
		if err != nil {
			t.Fatalf("ListStreams(%+v): %v", opts, err)
		}
		all = append(all, list.Streams...)
		if list.Next == "" {
			return all, pages
		}
		opts.After = list.Next
	}
}

func streamNames(infos []estuite.StreamInfo) []string {
	var names []string
	for _, i := range infos {
		names = append(names, i.Name)
	}
	return names
}

func TestListStreamsPagesThroughTheCatalog(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		ctx := context.Background()
		names := []string{"order-1", "order-2", "order-3", "tenant/a", "tenant/b", "user-9", "a%b", "gone"}
		for i, n := range names {
			appendN(t, s, n, i+1)
		}
		// Not listed until dispatched: the dispatcher writes the catalog rows.
		if list, err := s.ListStreams(ctx, nil); err != nil || len(list.Streams) != 0 {
			t.Fatalf("before dispatch: %+v, %v; want nothing listed", list, err)
		}
		stepUntilIdle(t, estuite.NewDispatcher(s, nil))
		if _, err := s.Delete(ctx, "gone", nil); err != nil {
			t.Fatal(err)
		}
		appendN(t, s, "order-1", 2) // a later append: versions are read from the heads
		all, pages := listAll(t, s, estuite.ListStreamsOptions{Limit: 2})
		want := []string{"a%b", "order-1", "order-2", "order-3", "tenant/a", "tenant/b", "user-9"}
		if got := streamNames(all); !slices.Equal(got, want) {
			t.Fatalf("listed %q, want %q", got, want)
		}
		if pages != 4 {
			t.Errorf("%d pages of 2 for 7 streams (and a deleted one), want 4", pages)
		}
		versions := map[string]int64{"a%b": 7, "order-1": 3, "order-2": 2, "order-3": 3, "tenant/a": 4, "tenant/b": 5, "user-9": 6}
		for _, i := range all {
			if i.Version != versions[i.Name] {
				t.Errorf("%s at version %d, want %d", i.Name, i.Version, versions[i.Name])
			}
		}
		for _, c := range []struct {
			prefix string
			want   []string
		}{{"order-", []string{"order-1", "order-2", "order-3"}}, {"tenant/", []string{"tenant/a", "tenant/b"}},
			{"a%", []string{"a%b"}}, {"zzz", nil}, {"user-9", []string{"user-9"}}} {
			for _, limit := range []int{1, 100} {
				got, _ := listAll(t, s, estuite.ListStreamsOptions{Prefix: c.prefix, Limit: limit})
				if !slices.Equal(streamNames(got), c.want) {
					t.Errorf("prefix %q, limit %d: %q, want %q", c.prefix, limit, streamNames(got), c.want)
				}
			}
		}
		// After a name and a prefix together.
		list, err := s.ListStreams(ctx, &estuite.ListStreamsOptions{Prefix: "order-", After: "order-1"})
		if err != nil || !slices.Equal(streamNames(list.Streams), []string{"order-2", "order-3"}) || list.Next != "" {
			t.Fatalf("after order-1: %+v, %v", list, err)
		}
	})
}

func TestListStreamsCostsOneQueryAndAHeadReadPerStream(t *testing.T) {
	s := openStore(t, mem.New(nil), nil)
	for i := range 30 {
		appendN(t, s, fmt.Sprintf("s-%02d", i), 1)
	}
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	before := s.RequestCounts()
	list, err := s.ListStreams(context.Background(), &estuite.ListStreamsOptions{Limit: 10})
	if err != nil || len(list.Streams) != 10 || list.Next != "s-09" {
		t.Fatalf("ListStreams: %d streams, next %q, %v", len(list.Streams), list.Next, err)
	}
	got := s.RequestCounts().Sub(before)
	if want := (estuite.RequestCounts{Queries: 1, QueryPages: 1, PointReads: 10}); got != want {
		t.Fatalf("requests %+v, want %+v", got, want)
	}
}

func TestListStreamsMergesFeedShards(t *testing.T) {
	s := openStore(t, mem.New(nil), &estuite.Options{FeedShards: 3})
	var want []string
	for i := range 20 {
		n := fmt.Sprintf("s-%02d", i)
		want = append(want, n)
		appendN(t, s, n, 1)
	}
	for shard := range 3 {
		stepUntilIdle(t, estuite.NewDispatcher(s, &estuite.DispatcherOptions{Shard: shard}))
	}
	for _, limit := range []int{1, 3, 7, 1000} {
		got, _ := listAll(t, s, estuite.ListStreamsOptions{Limit: limit})
		if !slices.Equal(streamNames(got), want) {
			t.Fatalf("limit %d: %q, want %q", limit, streamNames(got), want)
		}
	}
}

func TestListStreamsRefusesBadInput(t *testing.T) {
	s := openStore(t, mem.New(nil), nil)
	for _, o := range []estuite.ListStreamsOptions{{Limit: -1}, {Limit: 1001}, {Prefix: "\xff"}, {After: "a\x00"}, {Prefix: string(make([]byte, 200))}} {
		if _, err := s.ListStreams(context.Background(), &o); !errors.Is(err, estuite.ErrInvalidInput) {
			t.Errorf("ListStreams(%#v): %v, want ErrInvalidInput", o, err)
		}
	}
}

// TestVerifyFindsUncataloguedStreamsAndRepairAddsThem: a store written before the catalog
// existed (its rows deleted here) is found by Verify and mended by Repair.
func TestVerifyFindsUncataloguedStreamsAndRepairAddsThem(t *testing.T) {
	e := newVerifyEnv(t)
	ctx := context.Background()
	fillAndDispatch(t, e.s)
	p, err := e.events.Query(ctx, table.Query{PartitionKey: "streams00"})
	if err != nil || len(p.Entities) != len(verifyStreams) {
		t.Fatalf("catalog rows: %d, %v; want %d", len(p.Entities), err, len(verifyStreams))
	}
	for _, row := range p.Entities[1:] {
		if _, err := e.events.Submit(ctx, "streams00", []table.Op{{Kind: table.Delete, Entity: row}}); err != nil {
			t.Fatal(err)
		}
	}
	r := mustVerify(t, e.s, nil)
	if !r.OK() || !slices.Equal(r.Uncatalogued, []string{"b", "c/x"}) {
		t.Fatalf("Verify: OK %v, Uncatalogued %q; want OK, [b c/x]", r.OK(), r.Uncatalogued)
	}
	res, err := e.s.Repair(ctx, r)
	if err != nil || !slices.Equal(res.Catalogued, []string{"b", "c/x"}) {
		t.Fatalf("Repair: %+v, %v", res, err)
	}
	got, _ := listAll(t, e.s, estuite.ListStreamsOptions{})
	if !slices.Equal(streamNames(got), []string{"a", "b", "c/x"}) {
		t.Fatalf("after Repair: %q", streamNames(got))
	}
	if r := mustVerify(t, e.s, nil); len(r.Uncatalogued) != 0 {
		t.Fatalf("Verify after Repair: Uncatalogued %q", r.Uncatalogued)
	}
}
