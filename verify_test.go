package estuite_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/mem"
)

// verifyEnv is a store on the memory backend, with its raw tables to corrupt.
type verifyEnv struct {
	s               *estuite.Store
	streams, events *mem.Table
}

func newVerifyEnv(t *testing.T) *verifyEnv {
	t.Helper()
	b := mem.New(nil)
	s := openStore(t, b, nil)
	streams, err := b.Table("estuitestreams")
	if err != nil {
		t.Fatal(err)
	}
	events, err := b.Table("estuiteevents")
	if err != nil {
		t.Fatal(err)
	}
	return &verifyEnv{s: s, streams: streams, events: events}
}

// verifyStreams are the streams the verify tests append to, with their event counts.
var verifyStreams = []struct {
	name string
	n    int
}{{"a", 5}, {"b", 3}, {"c/x", 4}}

// fillAndDispatch appends to verifyStreams and dispatches everything: 12 events at positions 1–12.
func fillAndDispatch(t *testing.T, s *estuite.Store) {
	t.Helper()
	for _, vs := range verifyStreams {
		appendN(t, s, vs.name, vs.n)
	}
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
}

func mustVerify(t *testing.T, s *estuite.Store, opts *estuite.VerifyOptions) *estuite.VerifyReport {
	t.Helper()
	r, err := s.Verify(context.Background(), opts)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return r
}

// feedRows returns the event rows of the first feed page, in position order.
func (e *verifyEnv) feedRows(t *testing.T) []table.Entity {
	t.Helper()
	var rows []table.Entity
	q := table.Query{PartitionKey: "feed00-000000000000", From: "P", To: "Q"}
	for {
		p, err := e.events.Query(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, p.Entities...)
		if p.Continuation == "" {
			return rows
		}
		q.Continuation = p.Continuation
	}
}

// feedRow returns the feed row of a stream version.
func (e *verifyEnv) feedRow(t *testing.T, stream string, version int64) table.Entity {
	t.Helper()
	for _, row := range e.feedRows(t) {
		if row.Properties["Stream"] == stream && row.Properties["Version"] == version {
			return row
		}
	}
	t.Fatalf("no feed row of %s version %d", stream, version)
	return table.Entity{}
}

// moveFeedRow stores a feed row's contents at another position.
func moveFeedRow(row table.Entity, pos int64) table.Entity {
	props := make(map[string]any, len(row.Properties))
	for k, v := range row.Properties {
		props[k] = v
	}
	props["Position"] = pos
	return table.Entity{PartitionKey: row.PartitionKey, RowKey: fmt.Sprintf("P%019d", pos), Properties: props}
}

func verifyPos(row table.Entity) int64 { return row.Properties["Position"].(int64) }

// verifyNormalized clears the reasons of a report's faults (checking that they are given), so that
// reports compare with reflect.DeepEqual.
func verifyNormalized(t *testing.T, r *estuite.VerifyReport) *estuite.VerifyReport {
	t.Helper()
	c := *r
	clear := func(faults []estuite.FeedFault) []estuite.FeedFault {
		out := make([]estuite.FeedFault, len(faults))
		for i, f := range faults {
			if f.Reason == "" {
				t.Errorf("fault without a reason: %+v", f)
			}
			f.Reason = ""
			out[i] = f
		}
		return out
	}
	if len(c.Duplicates) > 0 {
		c.Duplicates = clear(c.Duplicates)
	}
	if len(c.OrderViolations) > 0 {
		c.OrderViolations = clear(c.OrderViolations)
	}
	if len(c.Unparseable) > 0 {
		out := make([]estuite.RowFault, len(c.Unparseable))
		for i, f := range c.Unparseable {
			if f.Reason == "" {
				t.Errorf("row fault without a reason: %+v", f)
			}
			f.Reason = ""
			out[i] = f
		}
		c.Unparseable = out
	}
	// One feed shard: its head is the report's FeedHead.
	if len(c.FeedHeads) != 1 || c.FeedHeads[0] != c.FeedHead {
		t.Errorf("FeedHeads %v with FeedHead %d", c.FeedHeads, c.FeedHead)
	}
	c.FeedHeads = nil
	return &c
}

func checkVerifyReport(t *testing.T, got, want *estuite.VerifyReport) {
	t.Helper()
	if g := verifyNormalized(t, got); !reflect.DeepEqual(g, want) {
		t.Fatalf("Verify report\n got  %+v\n want %+v", g, want)
	}
	if got.OK() != want.OK() {
		t.Fatalf("OK() = %v, want %v", got.OK(), want.OK())
	}
}

// cleanVerifyReport is the report of the store fillAndDispatch leaves.
func cleanVerifyReport() *estuite.VerifyReport {
	return &estuite.VerifyReport{Streams: 3, Events: 12, FeedHead: 12}
}

func TestVerifyCleanStoreOnEveryBackend(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		r := mustVerify(t, s, nil)
		checkVerifyReport(t, r, &estuite.VerifyReport{})
		fillAndDispatch(t, s)
		r = mustVerify(t, s, nil)
		checkVerifyReport(t, r, cleanVerifyReport())
		if !r.OK() {
			t.Fatalf("a clean store does not verify: %+v", r)
		}
		// An append not dispatched yet is pending, not a fault.
		appendN(t, s, "b", 2)
		want := cleanVerifyReport()
		want.Events = 14
		want.Pending = []estuite.StreamRange{{Stream: "b", From: 4, To: 5}}
		checkVerifyReport(t, mustVerify(t, s, nil), want)
	})
}

func TestVerifyFindsEachFault(t *testing.T) {
	cases := []struct {
		name    string
		corrupt func(t *testing.T, e *verifyEnv) *estuite.VerifyReport // returns the report expected
	}{
		{"deleted feed row", func(t *testing.T, e *verifyEnv) *estuite.VerifyReport {
			row := e.feedRow(t, "a", 2)
			e.events.Remove(row.PartitionKey, row.RowKey)
			want := cleanVerifyReport()
			want.Gaps = []estuite.PositionRange{{From: verifyPos(row), To: verifyPos(row)}}
			want.Missing = []estuite.StreamRange{{Stream: "a", From: 2, To: 2}}
			want.Holes = want.Missing
			return want
		}},
		{"deleted last feed row", func(t *testing.T, e *verifyEnv) *estuite.VerifyReport {
			rows := e.feedRows(t)
			last := rows[len(rows)-1]
			e.events.Remove(last.PartitionKey, last.RowKey)
			want := cleanVerifyReport()
			want.Gaps = []estuite.PositionRange{{From: 12, To: 12}}
			// The page marker still claims the version: the dispatcher will not write it again.
			v := last.Properties["Version"].(int64)
			want.Missing = []estuite.StreamRange{{Stream: last.Properties["Stream"].(string), From: v, To: v}}
			want.Holes = want.Missing
			return want
		}},
		{"duplicate past the head", func(t *testing.T, e *verifyEnv) *estuite.VerifyReport {
			row := e.feedRow(t, "c/x", 3)
			e.events.Put(moveFeedRow(row, 13))
			want := cleanVerifyReport()
			want.FeedHead = 13
			want.Duplicates = []estuite.FeedFault{{Position: 13, Stream: "c/x", Version: 3}}
			return want
		}},
		{"swapped versions", func(t *testing.T, e *verifyEnv) *estuite.VerifyReport {
			r2, r3 := e.feedRow(t, "a", 2), e.feedRow(t, "a", 3)
			e.events.Put(moveFeedRow(r3, verifyPos(r2)))
			e.events.Put(moveFeedRow(r2, verifyPos(r3)))
			want := cleanVerifyReport()
			want.OrderViolations = []estuite.FeedFault{{Position: verifyPos(r3), Stream: "a", Version: 2}}
			return want
		}},
		{"feed version the stream does not have", func(t *testing.T, e *verifyEnv) *estuite.VerifyReport {
			row := moveFeedRow(e.feedRow(t, "b", 3), 13)
			row.Properties["Version"] = int64(7)
			e.events.Put(row)
			want := cleanVerifyReport()
			want.FeedHead = 13
			want.OrderViolations = []estuite.FeedFault{{Position: 13, Stream: "b", Version: 7}}
			return want
		}},
		{"feed event of another type", func(t *testing.T, e *verifyEnv) *estuite.VerifyReport {
			row := e.feedRow(t, "c/x", 2)
			row.Properties["Type"] = "Forged"
			e.events.Put(row)
			want := cleanVerifyReport()
			want.OrderViolations = []estuite.FeedFault{{Position: verifyPos(row), Stream: "c/x", Version: 2}}
			return want
		}},
		{"garbage rows", func(t *testing.T, e *verifyEnv) *estuite.VerifyReport {
			ev, err := e.streams.Get(context.Background(), "a", "E0000000000000000004")
			if err != nil {
				t.Fatal(err)
			}
			ev.Properties["DataFormat"] = int64(7)
			e.streams.Put(ev)
			row := e.feedRow(t, "b", 1)
			row.Properties["DataFormat"] = "garbage"
			e.events.Put(row)
			want := cleanVerifyReport()
			want.Unparseable = []estuite.RowFault{
				{Table: "events", PartitionKey: row.PartitionKey, RowKey: row.RowKey},
				{Table: "streams", PartitionKey: "a", RowKey: "E0000000000000000004"},
			}
			return want
		}},
		{"deleted event row", func(t *testing.T, e *verifyEnv) *estuite.VerifyReport {
			e.streams.Remove("a", "E0000000000000000003")
			want := cleanVerifyReport()
			want.Events = 11
			want.Unparseable = []estuite.RowFault{{Table: "streams", PartitionKey: "a", RowKey: "E0000000000000000003"}}
			want.OrderViolations = []estuite.FeedFault{{Position: verifyPos(e.feedRow(t, "a", 3)), Stream: "a", Version: 3}}
			return want
		}},
		{"feed event of a stream that does not exist", func(t *testing.T, e *verifyEnv) *estuite.VerifyReport {
			row := moveFeedRow(e.feedRow(t, "b", 1), 13)
			row.Properties["Stream"] = "ghost"
			e.events.Put(row)
			want := cleanVerifyReport()
			want.FeedHead = 13
			want.OrderViolations = []estuite.FeedFault{{Position: 13, Stream: "ghost", Version: 1}}
			return want
		}},
		{"garbage head", func(t *testing.T, e *verifyEnv) *estuite.VerifyReport {
			e.streams.Put(table.Entity{PartitionKey: "b", RowKey: "H", Properties: map[string]any{"Version": "three"}})
			want := cleanVerifyReport()
			want.Unparseable = []estuite.RowFault{
				{Table: "streams", PartitionKey: "b", RowKey: "H"},
			}
			want.Streams = 2
			return want
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newVerifyEnv(t)
			fillAndDispatch(t, e.s)
			checkVerifyReport(t, mustVerify(t, e.s, nil), cleanVerifyReport())
			want := c.corrupt(t, e)
			got := mustVerify(t, e.s, nil)
			checkVerifyReport(t, got, want)
			if got.OK() {
				t.Fatal("a corrupt store verifies OK")
			}
		})
	}
}

func TestRepairReannouncesLostAppend(t *testing.T) {
	e := newVerifyEnv(t)
	fillAndDispatch(t, e.s)
	appendN(t, e.s, "b", 2)
	// The append's marker goes missing (a lost write, a stray delete): nothing would ever
	// dispatch versions 4–5.
	for _, pk := range e.events.Partitions() {
		if !strings.HasPrefix(pk, "dirty") {
			continue
		}
		p, err := e.events.Query(context.Background(), table.Query{PartitionKey: pk})
		if err != nil {
			t.Fatal(err)
		}
		for _, row := range p.Entities {
			e.events.Remove(pk, row.RowKey)
		}
	}
	d := estuite.NewDispatcher(e.s, nil)
	if st, err := d.Step(context.Background()); err != nil || st.Events != 0 {
		t.Fatalf("Step = %+v, %v; want nothing to do", st, err)
	}
	r := mustVerify(t, e.s, nil)
	want := cleanVerifyReport()
	want.Events = 14
	want.Missing = []estuite.StreamRange{{Stream: "b", From: 4, To: 5}}
	checkVerifyReport(t, r, want)

	res, err := e.s.Repair(context.Background(), r)
	if err != nil {
		t.Fatalf("Repair: %v", err)
	}
	if !reflect.DeepEqual(res.Announced, want.Missing) || len(res.ProgressRaised) != 0 || res.Unrepaired != 0 {
		t.Fatalf("Repair = %+v", res)
	}
	want.Missing = nil
	want.Pending = []estuite.StreamRange{{Stream: "b", From: 4, To: 5}}
	checkVerifyReport(t, mustVerify(t, e.s, nil), want)

	if _, err := d.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	want = cleanVerifyReport()
	want.Events, want.FeedHead = 14, 14
	checkVerifyReport(t, mustVerify(t, e.s, nil), want)
	checkFeedMatchesStreams(t, e.s, []string{"a", "b", "c/x"})
}

func TestRepairLeavesHolesAndCountsThem(t *testing.T) {
	e := newVerifyEnv(t)
	fillAndDispatch(t, e.s)
	row := e.feedRow(t, "a", 2)
	e.events.Remove(row.PartitionKey, row.RowKey)
	r := mustVerify(t, e.s, nil)
	res, err := e.s.Repair(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Announced) != 0 || res.Unrepaired != 2 { // the hole and the gap
		t.Fatalf("Repair = %+v; want nothing announced, 2 faults left", res)
	}
	if _, err := e.s.Repair(context.Background(), nil); err == nil {
		t.Fatal("Repair(nil) succeeded")
	}
}

func TestVerifyProgressBehindAndRepair(t *testing.T) {
	e := newVerifyEnv(t)
	const n = estuite.FeedPageSize + 50
	appendN(t, e.s, "big", n)
	d := estuite.NewDispatcher(e.s, nil)
	stepUntilIdle(t, d)
	appendN(t, e.s, "small", 3)
	stepUntilIdle(t, d)

	var calls []estuite.VerifyProgress
	r := mustVerify(t, e.s, &estuite.VerifyOptions{Progress: func(p estuite.VerifyProgress) { calls = append(calls, p) }})
	want := &estuite.VerifyReport{Streams: 2, Events: n + 3, FeedHead: n + 3}
	checkVerifyReport(t, r, want)
	if len(calls) < 2 {
		t.Fatalf("Progress called %d times", len(calls))
	}
	phases := make(map[string]bool)
	for i, p := range calls {
		phases[p.Phase] = true
		if i > 0 && (p.Rows < calls[i-1].Rows || p.Rows-calls[i-1].Rows > 1000) {
			t.Fatalf("Progress calls %d and %d: rows %d then %d", i-1, i, calls[i-1].Rows, p.Rows)
		}
	}
	last := calls[len(calls)-1]
	if !phases["feed"] || !phases["streams"] || last.Streams != 2 || last.FeedPositions != n+3 || last.Rows < 2*(n+3) {
		t.Fatalf("phases %v, last progress %+v", phases, last)
	}

	// The dispatcher confirmed "big" up to the end of the full page when it left it.
	e.streams.Put(table.Entity{PartitionKey: "big", RowKey: "G", Properties: map[string]any{"Dispatched": int64(9000)}})
	r = mustVerify(t, e.s, nil)
	want.ProgressBehind = []estuite.StreamRange{{Stream: "big", From: 9001, To: estuite.FeedPageSize}}
	checkVerifyReport(t, r, want)
	res, err := e.s.Repair(context.Background(), r)
	if err != nil || !reflect.DeepEqual(res.ProgressRaised, want.ProgressBehind) || len(res.Announced) != 0 {
		t.Fatalf("Repair = %+v, %v", res, err)
	}
	want.ProgressBehind = nil
	checkVerifyReport(t, mustVerify(t, e.s, nil), want)
	// A fresh dispatcher does not write the page's events again.
	appendN(t, e.s, "big", 1)
	stepUntilIdle(t, estuite.NewDispatcher(e.s, nil))
	checkFeedMatchesStreams(t, e.s, []string{"big", "small"})
	want.Events++
	want.FeedHead++
	checkVerifyReport(t, mustVerify(t, e.s, nil), want)
}

func TestVerifyCountsStorageRequests(t *testing.T) {
	e := newVerifyEnv(t)
	fillAndDispatch(t, e.s)
	before := e.s.RequestCounts()
	mustVerify(t, e.s, nil)
	if d := e.s.RequestCounts().Sub(before); d.QueryPages == 0 || d.Batches != 0 {
		t.Fatalf("Verify made %+v requests", d)
	}
}

func TestVerifyWhileAppendingAndDispatching(t *testing.T) {
	// Small pages make the walks interleave with the writers.
	s := openStore(t, mem.New(&mem.Options{PageSize: 7}), nil)
	var streams []string
	for i := 0; i < 8; i++ {
		streams = append(streams, fmt.Sprintf("live-%d", i))
	}
	d := estuite.NewDispatcher(s, nil)
	stop := stepInBackground(t, d, true)
	var writers sync.WaitGroup
	for _, stream := range streams {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := 0; i < 30; i++ {
				if _, err := s.Append(context.Background(), stream, []estuite.EventData{jsonEvent("Live", "{}"), jsonEvent("Live", "{}")}, nil); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		}()
	}
	written := make(chan struct{})
	go func() { writers.Wait(); close(written) }()
	for done := false; !done; {
		select {
		case <-written:
			done = true
		default:
		}
		r := mustVerify(t, s, nil)
		if !r.OK() {
			t.Errorf("Verify during writes: %+v", r)
		}
	}
	stop()
	stepUntilIdle(t, d)
	checkVerifyReport(t, mustVerify(t, s, nil), &estuite.VerifyReport{Streams: 8, Events: 8 * 60, FeedHead: 8 * 60})
}
