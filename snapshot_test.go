package estuite_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/estuite/estuite"
	"github.com/google/uuid"
)

// readWithSnapshot reads stream with its snapshot of schema, and returns the snapshot (nil when
// none), the stream's version and the events read.
func readWithSnapshot(t *testing.T, s *estuite.Store, stream string, schema int, o estuite.ReadOptions) (*estuite.Snapshot, int64, []estuite.RecordedEvent) {
	t.Helper()
	o.WithSnapshot, o.SnapshotSchema = true, schema
	r, err := s.Read(context.Background(), stream, &o)
	if err != nil {
		t.Fatalf("Read(%q) with a snapshot: %v", stream, err)
	}
	var out []estuite.RecordedEvent
	for e, err := range r.Events {
		if err != nil {
			t.Fatalf("Read(%q) events: %v", stream, err)
		}
		out = append(out, e)
	}
	return r.Snapshot, r.Version, out
}

func countedEvents(from, n int) []estuite.EventData {
	events := make([]estuite.EventData, n)
	for i := range events {
		events[i] = jsonEvent("Counted", fmt.Sprintf(`{"n":%d}`, from+i))
	}
	return events
}

// A snapshot saved with an append reads back with the stream's later events only; another schema's
// snapshot is ignored, and a plain read never shows one.
func TestSnapshotReadsBackWithTheEventsAfterIt(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		res := mustAppend(t, s, "acct", countedEvents(1, 5), &estuite.AppendOptions{
			Snapshot: &estuite.Snapshot{Version: 999, Schema: 1, Data: []byte("state@5")},
		})
		if !res.SnapshotSaved || res.LastVersion != 5 {
			t.Fatalf("append with a snapshot: %+v; want SnapshotSaved at version 5", res)
		}
		sn, version, events := readWithSnapshot(t, s, "acct", 1, estuite.ReadOptions{})
		if sn == nil || sn.Version != 5 || sn.Schema != 1 || string(sn.Data) != "state@5" || version != 5 || len(events) != 0 {
			t.Fatalf("read at the snapshot: %+v, version %d, %v; want the snapshot at 5 (the caller's version ignored) and no events", sn, version, versions(events))
		}
		if res := mustAppend(t, s, "acct", countedEvents(6, 3), nil); res.SnapshotSaved {
			t.Fatalf("append without a snapshot reports one saved: %+v", res)
		}
		cases := []struct {
			schema   int
			opts     estuite.ReadOptions
			snapshot bool
			want     []int64
		}{
			{1, estuite.ReadOptions{}, true, []int64{6, 7, 8}},
			{1, estuite.ReadOptions{From: 7}, true, []int64{7, 8}},
			{1, estuite.ReadOptions{From: 3}, true, []int64{6, 7, 8}},
			{1, estuite.ReadOptions{Limit: 2}, true, []int64{6, 7}},
			{2, estuite.ReadOptions{}, false, []int64{1, 2, 3, 4, 5, 6, 7, 8}},
			{2, estuite.ReadOptions{From: 4, Limit: 2}, false, []int64{4, 5}},
		}
		for _, c := range cases {
			sn, version, events := readWithSnapshot(t, s, "acct", c.schema, c.opts)
			if (sn != nil) != c.snapshot || version != 8 || fmt.Sprint(versions(events)) != fmt.Sprint(c.want) {
				t.Errorf("schema %d, %+v: snapshot %+v, version %d, %v; want snapshot %v, version 8, %v", c.schema, c.opts, sn, version, versions(events), c.snapshot, c.want)
			}
		}
		r, err := s.Read(context.Background(), "acct", nil)
		if err != nil || r.Snapshot != nil {
			t.Fatalf("plain read: %+v, %v; want no snapshot", r, err)
		}
		if _, events := readAll(t, s, "acct", nil); len(events) != 8 {
			t.Fatalf("plain read: %d events, want 8", len(events))
		}

		// The next snapshot replaces the first, whatever its schema.
		res = mustAppend(t, s, "acct", countedEvents(9, 1), &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Schema: 2, Data: nil}})
		if !res.SnapshotSaved {
			t.Fatalf("second snapshot not saved: %+v", res)
		}
		if sn, _, events := readWithSnapshot(t, s, "acct", 1, estuite.ReadOptions{}); sn != nil || len(events) != 9 {
			t.Errorf("schema 1 after a schema-2 snapshot: %+v, %d events; want no snapshot and every event", sn, len(events))
		}
		if sn, _, events := readWithSnapshot(t, s, "acct", 2, estuite.ReadOptions{}); sn == nil || sn.Version != 9 || len(sn.Data) != 0 || len(events) != 0 {
			t.Errorf("schema 2: %+v, %d events; want the empty snapshot at 9", sn, len(events))
		}
		if _, err := s.Read(context.Background(), "never", &estuite.ReadOptions{WithSnapshot: true}); !errors.Is(err, estuite.ErrStreamNotFound) {
			t.Errorf("snapshot read of a stream never written: %v; want ErrStreamNotFound", err)
		}
	})
}

// Bad input writes nothing: snapshot data over MaxSnapshotBytes, and a backward read asking for a
// snapshot.
func TestSnapshotBadInputIsRefused(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		big := &estuite.Snapshot{Data: make([]byte, estuite.MaxSnapshotBytes+1)}
		_, err := s.Append(context.Background(), "big", countedEvents(1, 1), &estuite.AppendOptions{Snapshot: big})
		var ie *estuite.InvalidInputError
		if !errors.As(err, &ie) || ie.Field != "snapshot.data" {
			t.Fatalf("oversized snapshot: %v; want an *InvalidInputError for snapshot.data", err)
		}
		if _, err := s.Version(context.Background(), "big"); !errors.Is(err, estuite.ErrStreamNotFound) {
			t.Fatalf("after a refused append: %v; want nothing written", err)
		}
		mustAppend(t, s, "big", countedEvents(1, 1), nil)
		_, err = s.Read(context.Background(), "big", &estuite.ReadOptions{WithSnapshot: true, Direction: estuite.Backward})
		if !errors.As(err, &ie) {
			t.Fatalf("backward read with a snapshot: %v; want an *InvalidInputError", err)
		}
	})
}

// largestSnapshot returns the longest stream name whose every character is escaped, and
// MaxSnapshotBytes of patterned data.
func largestSnapshot() (stream string, data []byte) {
	data = make([]byte, estuite.MaxSnapshotBytes)
	for i := range data {
		data[i] = byte(i * 7)
	}
	return strings.Repeat("/", estuite.MaxStreamNameLength), data
}

// The largest snapshot fits one entity even for the longest stream name whose every character is
// escaped, and reads back intact.
func TestLargestSnapshotRoundTrips(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		stream, data := largestSnapshot()
		res := mustAppend(t, s, stream, countedEvents(1, 1), &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Schema: 3, Data: data}})
		if !res.SnapshotSaved {
			t.Fatalf("largest snapshot not saved: %+v", res)
		}
		sn, _, _ := readWithSnapshot(t, s, stream, 3, estuite.ReadOptions{})
		if sn == nil || !bytes.Equal(sn.Data, data) {
			t.Fatalf("largest snapshot read back wrong (%v)", sn != nil)
		}
	})
}

// An append whose batch has no room left for its snapshot — rows or bytes — succeeds without it,
// and the stream keeps its previous snapshot.
func TestSnapshotThatDoesNotFitTheBatchIsLeftOut(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		if res := mustAppend(t, s, "full", countedEvents(1, 1), &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Data: []byte("v1")}}); !res.SnapshotSaved {
			t.Fatalf("first snapshot not saved: %+v", res)
		}
		// MaxAppendRows events leave no operation for the snapshot; one fewer does.
		res := mustAppend(t, s, "full", countedEvents(2, estuite.MaxAppendRows), &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Data: []byte("v98")}})
		if res.SnapshotSaved || res.LastVersion != 1+estuite.MaxAppendRows {
			t.Fatalf("append of MaxAppendRows events with a snapshot: %+v; want it landed without the snapshot", res)
		}
		if sn, _, events := readWithSnapshot(t, s, "full", 0, estuite.ReadOptions{}); sn == nil || string(sn.Data) != "v1" || len(events) != estuite.MaxAppendRows {
			t.Fatalf("after the full append: snapshot %+v, %d events; want the first snapshot and the events after it", sn, len(events))
		}
		res = mustAppend(t, s, "full", countedEvents(99, estuite.MaxAppendRows-1), &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Data: []byte("v194")}})
		if !res.SnapshotSaved {
			t.Fatalf("append of MaxAppendRows-1 events with a snapshot: %+v; want it saved", res)
		}
		// Bytes: three events of 960 KB of binary data fit a batch (3.8 MB in base64), not with
		// the largest snapshot too.
		heavy := make([]estuite.EventData, 3)
		for i := range heavy {
			heavy[i] = estuite.EventData{Type: "Heavy", Format: estuite.Binary, Data: make([]byte, 960_000)}
		}
		res = mustAppend(t, s, "full", heavy, &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Data: make([]byte, estuite.MaxSnapshotBytes)}})
		if res.SnapshotSaved {
			t.Fatalf("heavy append with a heavy snapshot: %+v; want it landed without the snapshot", res)
		}
		if sn, _, _ := readWithSnapshot(t, s, "full", 0, estuite.ReadOptions{}); sn == nil || string(sn.Data) != "v194" {
			t.Fatalf("after the heavy append: %+v; want the snapshot at version 194 kept", sn)
		}
	})
}

// A retried commit is a duplicate: it saves nothing, and says so.
func TestRetriedCommitDoesNotSaveItsSnapshot(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		opts := &estuite.AppendOptions{CommitID: "c1", Snapshot: &estuite.Snapshot{Data: []byte("first")}}
		mustAppend(t, s, "retry", countedEvents(1, 2), opts)
		mustAppend(t, s, "retry", countedEvents(3, 1), &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Data: []byte("third")}})
		res := mustAppend(t, s, "retry", countedEvents(1, 2), opts)
		if !res.Duplicate || res.SnapshotSaved {
			t.Fatalf("retry: %+v; want a duplicate without a snapshot saved", res)
		}
		if sn, _, _ := readWithSnapshot(t, s, "retry", 0, estuite.ReadOptions{}); sn == nil || sn.Version != 3 || string(sn.Data) != "third" {
			t.Fatalf("after the retry: %+v; want the snapshot at 3 untouched", sn)
		}
	})
}

// Appends combined in one batch: only the last one's snapshot reflects the batch's last version,
// so only it is saved.
func TestCombinedBatchSavesOnlyTheLastAppendsSnapshot(t *testing.T) {
	s, release := gatedStore(t, "combined")
	snap := func(name string) estuite.AppendOptions {
		return estuite.AppendOptions{Snapshot: &estuite.Snapshot{Data: []byte(name)}}
	}
	qs := []*queued{
		{name: "lead", opts: snap("lead")},
		{name: "a", opts: snap("a")},
		{name: "b"},
		{name: "c", opts: snap("c")},
		{name: "d"},
		{name: "e", opts: snap("e")},
	}
	appendQueued(t, s, release, "combined", qs)
	for _, q := range qs {
		want := q.name == "lead" || q.name == "e" // the leader's batch goes alone; the rest in one
		if q.err != nil || q.res.SnapshotSaved != want {
			t.Errorf("%s: %+v, %v; want SnapshotSaved %v", q.name, q.res, q.err, want)
		}
	}
	sn, version, events := readWithSnapshot(t, s, "combined", 0, estuite.ReadOptions{})
	if sn == nil || string(sn.Data) != "e" || sn.Version != 7 || version != 7 || len(events) != 0 {
		t.Fatalf("snapshot %+v at stream version %d with %d events after it; want e's at 7", sn, version, len(events))
	}

	// When the last append of the batch has none, no snapshot is saved.
	s, release = gatedStore(t, "combined")
	qs = []*queued{{name: "lead"}, {name: "a", opts: snap("a")}, {name: "b"}}
	appendQueued(t, s, release, "combined", qs)
	for _, q := range qs {
		if q.err != nil || q.res.SnapshotSaved {
			t.Errorf("%s: %+v, %v; want no snapshot saved", q.name, q.res, q.err)
		}
	}
	if sn, _, _ := readWithSnapshot(t, s, "combined", 0, estuite.ReadOptions{}); sn != nil {
		t.Fatalf("snapshot %+v; want none", sn)
	}
}

// Snapshots never reach the feed, nor trip the dispatcher or Verify.
func TestSnapshotsStayOutOfTheFeedAndVerify(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		streams := []string{"s1", "s2", "s3"}
		for round := 0; round < 4; round++ {
			for i, stream := range streams {
				var opts *estuite.AppendOptions
				if (round+i)%2 == 0 {
					opts = &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Schema: round, Data: []byte(fmt.Sprintf("%s@%d", stream, round))}}
				}
				events := countedEvents(round*10, 1+round)
				events[0].ID = uuid.New() // event-ID rows too
				mustAppend(t, s, stream, events, opts)
			}
		}
		stepUntilIdle(t, estuite.NewDispatcher(s, nil))
		checkFeedMatchesStreams(t, s, streams)
		page, err := s.ReadFeed(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range page.Events {
			if ev.Type != "Counted" {
				t.Errorf("feed position %d holds a %q", ev.Position, ev.Type)
			}
		}
		if len(page.Events) != 3*(1+2+3+4) {
			t.Errorf("feed holds %d events, want %d", len(page.Events), 3*(1+2+3+4))
		}
		report, err := s.Verify(context.Background(), nil)
		if err != nil || !report.OK() || report.Events != int64(len(page.Events)) || len(report.Pending) != 0 {
			t.Fatalf("Verify: %+v, %v; want OK with every event counted once", report, err)
		}
	})
}

// A snapshot costs no storage request of its own: it rides in the append's batch.
func TestSnapshotCostsNoExtraRequest(t *testing.T) {
	forEachFullPageBackend(t, func(t *testing.T, s *estuite.Store) {
		mustAppend(t, s, "cost", countedEvents(1, 1), nil)
		plain := requestsOf(s, func() { mustAppend(t, s, "cost", countedEvents(2, 3), nil) })
		var res estuite.AppendResult
		with := requestsOf(s, func() {
			res = mustAppend(t, s, "cost", countedEvents(5, 3), &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Data: make([]byte, 10_000)}})
		})
		if !res.SnapshotSaved || with != plain {
			t.Fatalf("warm append with a snapshot: %+v requests (saved %v); without: %+v", with, res.SnapshotSaved, plain)
		}
	})
}
