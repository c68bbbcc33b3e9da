package estuite_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/estuite/estuite"
)

// forEachFullPageBackend runs f on every backend whose pages are full ones (1,000 rows): memory,
// bbolt and Azurite. The request counts of reads are asserted there; mem-paged answers three rows
// a page, with an empty page before each.
func forEachFullPageBackend(t *testing.T, f func(t *testing.T, s *estuite.Store)) {
	for _, b := range backends {
		if b.name == "mem-paged" {
			continue
		}
		t.Run(b.name, func(t *testing.T) { f(t, b.open(t)) })
	}
}

// readCost reads stream with opts, iterating Events once, and returns the versions read and the
// storage requests the read and its iteration made.
func readCost(t *testing.T, s *estuite.Store, stream string, opts *estuite.ReadOptions) ([]int64, estuite.RequestCounts) {
	t.Helper()
	var got []int64
	d := requestsOf(s, func() {
		_, events := readAll(t, s, stream, opts)
		got = versions(events)
	})
	return got, d
}

func seq(from, to int64) []int64 {
	var out []int64
	for v := from; v <= to; v++ {
		out = append(out, v)
	}
	return out
}

// A read of a stream whose events fit one storage page is one range query: the events and the
// head, which sorts after them.
func TestReadAtTheFloorIsOneRequest(t *testing.T) {
	forEachFullPageBackend(t, func(t *testing.T, s *estuite.Store) {
		appendN(t, s, "ten", 10)
		appendN(t, s, "hundred", 100)
		backward := estuite.Backward
		cases := []struct {
			stream string
			opts   *estuite.ReadOptions
			want   []int64
			cost   int64
		}{
			{"ten", nil, seq(1, 10), 1},
			{"hundred", nil, seq(1, 100), 1},
			{"hundred", &estuite.ReadOptions{From: 95}, seq(95, 100), 1},
			{"hundred", &estuite.ReadOptions{From: 101}, nil, 1},
			{"hundred", &estuite.ReadOptions{Limit: 200}, seq(1, 100), 1},
			{"hundred", &estuite.ReadOptions{From: 90, Limit: 11}, seq(90, 100), 1},
			{"hundred", &estuite.ReadOptions{Direction: backward}, reversed(seq(1, 100)), 1},
			{"hundred", &estuite.ReadOptions{Direction: backward, From: 40}, reversed(seq(1, 40)), 1},
			{"hundred", &estuite.ReadOptions{WithSnapshot: true}, seq(1, 100), 1},
			// As before: the events wanted, then the head; the head, then the last events.
			{"hundred", &estuite.ReadOptions{Limit: 5}, seq(1, 5), 2},
			{"hundred", &estuite.ReadOptions{Direction: backward, Limit: 3}, []int64{100, 99, 98}, 2},
		}
		for _, c := range cases {
			got, d := readCost(t, s, c.stream, c.opts)
			if fmt.Sprint(got) != fmt.Sprint(c.want) || d.Total() != c.cost {
				t.Errorf("Read(%s, %+v) = %v with %+v requests; want %v with %d", c.stream, c.opts, got, d, c.want, c.cost)
			}
		}
		if d := requestsOf(s, func() {
			if _, err := s.Read(context.Background(), "never", nil); !errors.Is(err, estuite.ErrStreamNotFound) {
				t.Errorf("read of a stream never written: %v", err)
			}
		}); d.Total() != 1 {
			t.Errorf("read of a stream never written: %+v requests; want 1", d)
		}

		// Events may be iterated again: the first pass yields what the first query read, later
		// passes read storage again.
		var r *estuite.StreamRead
		if d := requestsOf(s, func() {
			var err error
			if r, err = s.Read(context.Background(), "ten", nil); err != nil {
				t.Fatal(err)
			}
		}); d.Total() != 1 {
			t.Errorf("Read: %+v requests; want 1", d)
		}
		for pass, cost := range []int64{0, 1, 1} {
			var got []int64
			d := requestsOf(s, func() {
				for e, err := range r.Events {
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, e.Version)
				}
			})
			if fmt.Sprint(got) != fmt.Sprint(seq(1, 10)) || d.Total() != cost {
				t.Errorf("pass %d over Events: %v with %+v requests; want 1…10 with %d", pass+1, got, d, cost)
			}
		}
		// A pass stopped early leaves nothing behind for the next: it reads storage.
		r, _ = s.Read(context.Background(), "ten", nil)
		for range r.Events {
			break
		}
		if got := readVersions(t, r); fmt.Sprint(got) != fmt.Sprint(seq(1, 10)) {
			t.Errorf("pass after a stopped one: %v", got)
		}
	})
}

func readVersions(t *testing.T, r *estuite.StreamRead) []int64 {
	t.Helper()
	var got []int64
	for e, err := range r.Events {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e.Version)
	}
	return got
}

// Past one page, a read costs what it did: the first page, the head, then a request per 1,000
// events; a backward read yields the first page last.
func TestReadPastOnePageCostsWhatItDid(t *testing.T) {
	forEachFullPageBackend(t, func(t *testing.T, s *estuite.Store) {
		appendN(t, s, "long", 1500)
		got, d := readCost(t, s, "long", nil)
		if fmt.Sprint(got) != fmt.Sprint(seq(1, 1500)) || d.Total() != 3 {
			t.Errorf("forward: %d events with %+v requests; want 1500 with 3", len(got), d)
		}
		got, d = readCost(t, s, "long", &estuite.ReadOptions{Direction: estuite.Backward})
		if fmt.Sprint(got) != fmt.Sprint(reversed(seq(1, 1500))) || d.Total() != 3 {
			t.Errorf("backward: %d events with %+v requests; want 1500 to 1 with 3", len(got), d)
		}
		got, d = readCost(t, s, "long", &estuite.ReadOptions{From: 1200, WithSnapshot: true})
		if fmt.Sprint(got) != fmt.Sprint(seq(1200, 1500)) || d.Total() != 2 {
			t.Errorf("from 1200 with a snapshot asked for (none saved): %d events with %+v requests; want 301 with 2", len(got), d)
		}
	})
}

// A stream of 10,000 events with a snapshot every 100 events loads in two requests and decodes
// only the events after the snapshot.
func TestReadWithSnapshotOfALongStreamIsTwoRequests(t *testing.T) {
	forEachFullPageBackend(t, func(t *testing.T, s *estuite.Store) {
		for v := 0; v < 10000; v += 50 {
			var opts *estuite.AppendOptions
			if (v+50)%100 == 0 && v+50 <= 9900 {
				opts = &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Schema: 7, Data: fmt.Appendf(nil, "state@%d", v+50)}}
			}
			mustAppend(t, s, "ten-thousand", countedEvents(v+1, 50), opts)
		}
		var sn *estuite.Snapshot
		var events []estuite.RecordedEvent
		d := requestsOf(s, func() { sn, _, events = readWithSnapshot(t, s, "ten-thousand", 7, estuite.ReadOptions{}) })
		if sn == nil || sn.Version != 9900 || string(sn.Data) != "state@9900" || fmt.Sprint(versions(events)) != fmt.Sprint(seq(9901, 10000)) {
			t.Fatalf("snapshot %+v and %d events; want the snapshot at 9900 and events 9901…10000", sn, len(events))
		}
		if d.Total() != 2 || d.PointReads != 1 {
			t.Errorf("read with a snapshot: %+v requests; want 2 (the snapshot row, then the events after it and the head)", d)
		}
		// A store that has not met the stream yet probes it: the snapshot row and a few events,
		// then the events after the snapshot and the head.
		s.ForgetHeads()
		d = requestsOf(s, func() { sn, _, events = readWithSnapshot(t, s, "ten-thousand", 7, estuite.ReadOptions{}) })
		if sn == nil || sn.Version != 9900 || len(events) != 100 || d.Total() != 2 || d.QueryPages != 2 {
			t.Errorf("cold read with a snapshot: %+v, %d events, %+v requests; want the snapshot, 100 events and 2 queries", sn, len(events), d)
		}
		// Another schema: the snapshot row, then the whole stream as a plain read reads it.
		d = requestsOf(s, func() { sn, _, events = readWithSnapshot(t, s, "ten-thousand", 8, estuite.ReadOptions{}) })
		if sn != nil || len(events) != 10000 || d.Total() != 12 {
			t.Errorf("read with another schema: snapshot %+v, %d events, %+v requests; want none, 10000 and 12", sn, len(events), d)
		}
		// The same cold: a probe, a page from after it, the head, the rest.
		s.ForgetHeads()
		d = requestsOf(s, func() { sn, _, events = readWithSnapshot(t, s, "ten-thousand", 8, estuite.ReadOptions{}) })
		if sn != nil || len(events) != 10000 || d.Total() != 12 {
			t.Errorf("cold read with another schema: snapshot %+v, %d events, %+v requests; want none, 10000 and 12", sn, len(events), d)
		}
		// A snapshot at the head: nothing after it.
		mustAppend(t, s, "ten-thousand", countedEvents(10001, 1), &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Schema: 7}})
		d = requestsOf(s, func() { sn, _, events = readWithSnapshot(t, s, "ten-thousand", 7, estuite.ReadOptions{}) })
		if sn == nil || sn.Version != 10001 || len(events) != 0 || d.Total() != 2 {
			t.Errorf("snapshot at the head: %+v, %d events, %+v requests; want it, none and 2", sn, len(events), d)
		}
		// A small stream with a snapshot: one request, known or not. So is one of 500 events
		// that the store has met.
		appendN(t, s, "small", 30)
		mustAppend(t, s, "small", countedEvents(31, 2), &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Schema: 7}})
		appendN(t, s, "small", 5)
		appendN(t, s, "medium", 500)
		for _, cold := range []bool{false, true} {
			if cold {
				s.ForgetHeads()
			}
			d = requestsOf(s, func() { sn, _, events = readWithSnapshot(t, s, "small", 7, estuite.ReadOptions{}) })
			if sn == nil || sn.Version != 32 || fmt.Sprint(versions(events)) != fmt.Sprint(seq(33, 37)) || d.Total() != 1 {
				t.Errorf("small stream with a snapshot (cold %v): %+v, %v, %+v requests; want the snapshot at 32, 33…37, one request", cold, sn, versions(events), d)
			}
			want := int64(1)
			if cold {
				want = 2 // a probe, then the rest and the head
			}
			d = requestsOf(s, func() { sn, _, events = readWithSnapshot(t, s, "medium", 7, estuite.ReadOptions{}) })
			if sn != nil || fmt.Sprint(versions(events)) != fmt.Sprint(seq(1, 500)) || d.Total() != want {
				t.Errorf("500 events without a snapshot (cold %v): %+v, %d events, %+v requests; want %d", cold, sn, len(events), d, want)
			}
		}
	})
}

func reversed(v []int64) []int64 {
	out := slices.Clone(v)
	slices.Reverse(out)
	return out
}
