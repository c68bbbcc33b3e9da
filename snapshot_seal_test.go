package estuite_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/mem"
)

// Sealed snapshots: a snapshot that names subjects is stored encrypted under a key derived from
// all of their data keys, and goes with any one of them.

// personEvents are two sealed events of each subject given, then a plain one.
func personEvents(subjects ...string) []estuite.EventData {
	var out []estuite.EventData
	for _, who := range subjects {
		out = append(out,
			estuite.EventData{Type: "Named", Subject: who, Data: []byte(`{"name":"` + who + `"}`), Metadata: []byte(`{"by":"` + who + `"}`)},
			estuite.EventData{Type: "Photo", Subject: who, Format: estuite.Binary, Data: []byte(who + "\x00\xff")})
	}
	return append(out, estuite.EventData{Type: "Plain", Data: []byte(`{"n":1}`)})
}

// A sealed snapshot reads back as it was given — its subjects sorted, without duplicates — with
// the events after it, on every backend; an empty one too, and one naming a subject no event
// names (its key is created, as an event's would be).
func TestSealedSnapshotRoundTrips(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		ctx := context.Background()
		given := []string{"bob", "ann", "bob"}
		res := mustAppend(t, s, "person", personEvents("ann", "bob"), &estuite.AppendOptions{
			Snapshot: &estuite.Snapshot{Schema: 4, Data: []byte(`{"ann":1,"bob":2}`), Subjects: given},
		})
		if !res.SnapshotSaved {
			t.Fatalf("sealed snapshot not saved: %+v", res)
		}
		if !slices.Equal(given, []string{"bob", "ann", "bob"}) {
			t.Fatalf("the caller's subjects were changed: %q", given)
		}
		mustAppend(t, s, "person", personEvents("ann"), nil)
		sn, version, events := readWithSnapshot(t, s, "person", 4, estuite.ReadOptions{})
		if sn == nil || sn.Version != 5 || sn.Schema != 4 || string(sn.Data) != `{"ann":1,"bob":2}` || !slices.Equal(sn.Subjects, []string{"ann", "bob"}) {
			t.Fatalf("sealed snapshot read back as %+v", sn)
		}
		if version != 8 || fmt.Sprint(versions(events)) != "[6 7 8]" || string(events[0].Data) != `{"name":"ann"}` {
			t.Fatalf("after the sealed snapshot: version %d, events %v", version, versions(events))
		}
		if sn, _, events := readWithSnapshot(t, s, "person", 3, estuite.ReadOptions{}); sn != nil || len(events) != 8 {
			t.Fatalf("another schema: %+v, %d events; want no snapshot", sn, len(events))
		}
		// A plain snapshot still reads back without subjects.
		mustAppend(t, s, "plain", countedEvents(1, 1), &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Data: []byte("p")}})
		if sn, _, _ := readWithSnapshot(t, s, "plain", 0, estuite.ReadOptions{}); sn == nil || sn.Subjects != nil || string(sn.Data) != "p" {
			t.Fatalf("plain snapshot: %+v", sn)
		}
		// Empty data, and a subject named by the snapshot only.
		mustAppend(t, s, "lone", countedEvents(1, 2), &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Subjects: []string{"only-here"}}})
		if sn, _, events := readWithSnapshot(t, s, "lone", 0, estuite.ReadOptions{}); sn == nil || sn.Data != nil || sn.Version != 2 || len(events) != 0 || !slices.Equal(sn.Subjects, []string{"only-here"}) {
			t.Fatalf("empty sealed snapshot: %+v, %d events", sn, len(events))
		}
		if err := s.Forget(ctx, "only-here"); err != nil {
			t.Fatal(err)
		}
		if sn, _, events := readWithSnapshot(t, s, "lone", 0, estuite.ReadOptions{}); sn != nil || len(events) != 2 {
			t.Fatalf("after forgetting the snapshot's only subject: %+v, %d events; want no snapshot, every event", sn, len(events))
		}
	})
}

// The largest sealed snapshot — MaxSnapshotBytes of data, MaxSnapshotSubjects subjects of the
// longest escaped form, the longest escaped stream name — is saved and reads back on every
// backend, Azurite included.
func TestLargestSealedSnapshotRoundTrips(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		stream, data := largestSnapshot()
		var subjects []string
		for i := range estuite.MaxSnapshotSubjects {
			subjects = append(subjects, fmt.Sprintf("%c", 'a'+i)+strings.Repeat("<", estuite.MaxSubjectLength-1))
		}
		res := mustAppend(t, s, stream, countedEvents(1, 1), &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Schema: 3, Data: data, Subjects: subjects}})
		if !res.SnapshotSaved {
			t.Fatalf("largest sealed snapshot not saved: %+v", res)
		}
		sn, _, _ := readWithSnapshot(t, s, stream, 3, estuite.ReadOptions{})
		if sn == nil || !bytes.Equal(sn.Data, data) || !slices.Equal(sn.Subjects, subjects) {
			t.Fatalf("largest sealed snapshot read back wrong (%v)", sn != nil)
		}
	})
}

// Bad subjects on a snapshot are an *InvalidInputError and write nothing; duplicates count once.
func TestSnapshotSubjectsAreValidated(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, mem.New(nil), nil)
	many := func(n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("p%02d", i))
		}
		return out
	}
	for _, c := range []struct {
		subjects []string
		field    string
	}{
		{[]string{"ok", "a\nb"}, "snapshot.subjects[1]"},
		{[]string{""}, "snapshot.subjects[0]"},
		{[]string{strings.Repeat("x", estuite.MaxSubjectLength+1)}, "snapshot.subjects[0]"},
		{many(estuite.MaxSnapshotSubjects + 1), "snapshot.subjects"},
	} {
		_, err := s.Append(ctx, "v", countedEvents(1, 1), &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Subjects: c.subjects}})
		var ie *estuite.InvalidInputError
		if !errors.As(err, &ie) || ie.Field != c.field {
			t.Errorf("subjects %q: %v; want an *InvalidInputError for %s", c.subjects, err, c.field)
		}
	}
	var reserved int64 = math.MinInt64 // the marker of sealed rows
	_, err := s.Append(ctx, "v", countedEvents(1, 1), &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Schema: int(reserved)}})
	if ie := (*estuite.InvalidInputError)(nil); !errors.As(err, &ie) || ie.Field != "snapshot.schema" {
		t.Errorf("snapshot of the reserved schema: %v; want an *InvalidInputError for snapshot.schema", err)
	}
	if _, err := s.Version(ctx, "v"); !errors.Is(err, estuite.ErrStreamNotFound) {
		t.Fatalf("refused appends wrote the stream: %v", err)
	}
	if size, err := s.Size(ctx); err != nil || size.Keys.Rows != 0 {
		t.Fatalf("refused appends wrote key rows: %+v, %v", size.Keys, err)
	}
	subjects := append(many(estuite.MaxSnapshotSubjects), many(estuite.MaxSnapshotSubjects)...)
	slices.Reverse(subjects)
	mustAppend(t, s, "v", countedEvents(1, 1), &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Subjects: subjects}})
	if sn, _, _ := readWithSnapshot(t, s, "v", 0, estuite.ReadOptions{}); sn == nil || !slices.Equal(sn.Subjects, many(estuite.MaxSnapshotSubjects)) {
		t.Fatalf("snapshot with every subject twice: %+v", sn)
	}
}

// Forgetting one of a snapshot's two subjects makes it unreadable: a read returns no snapshot —
// on the Store that forgot and on a fresh one, from the range query and from the point read of a
// long stream — and every event from the first, the forgotten subject's erased.
func TestForgettingOneSubjectDropsTheSnapshot(t *testing.T) {
	forEachEraseBackend(t, func(t *testing.T, env *eraseEnv) {
		ctx := context.Background()
		s := env.open(t, &estuite.Options{MasterKey: masterKeyA})
		events := personEvents("ann", "bob")
		mustAppend(t, s, "pair", events, &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Data: []byte("state"), Subjects: []string{"ann", "bob"}}})
		mustAppend(t, s, "pair", countedEvents(1, 1), nil)
		if sn, _, evs := readWithSnapshot(t, s, "pair", 0, estuite.ReadOptions{}); sn == nil || len(evs) != 1 {
			t.Fatalf("before Forget: %+v, %d events", sn, len(evs))
		}
		if err := s.Forget(ctx, "bob"); err != nil {
			t.Fatal(err)
		}
		fresh := env.open(t, &estuite.Options{MasterKey: masterKeyA})
		for name, st := range map[string]*estuite.Store{"forgetter": s, "fresh": fresh} {
			sn, version, evs := readWithSnapshot(t, st, "pair", 0, estuite.ReadOptions{})
			if sn != nil || version != 6 || len(evs) != 6 {
				t.Fatalf("%s: after Forget: snapshot %+v, version %d, %d events; want no snapshot, every event", name, sn, version, len(evs))
			}
			for i, ev := range evs[:len(events)] {
				checkEvent(t, fmt.Sprintf("%s [%d]", name, i), ev, events[i], events[i].Subject == "bob")
			}
		}
		// A stream the store knows to be longer than a page: its snapshot is point-read first.
		long := countedEvents(1, estuite.MaxAppendRows)
		for range 11 { // more than a page: 1,067 events
			mustAppend(t, s, "long", long, nil)
		}
		mustAppend(t, s, "long", personEvents("ann", "bob")[:1], nil)
		mustAppend(t, s, "carol", personEvents("carol"), &estuite.AppendOptions{})
		mustAppend(t, s, "long", countedEvents(1, 1), &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Data: []byte("long"), Subjects: []string{"ann", "carol"}}})
		mustAppend(t, s, "long", countedEvents(1, 1), nil)
		if sn, _, evs := readWithSnapshot(t, s, "long", 0, estuite.ReadOptions{}); sn == nil || len(evs) != 1 {
			t.Fatalf("long stream before Forget: %+v, %d events", sn, len(evs))
		}
		if err := s.Forget(ctx, "carol"); err != nil {
			t.Fatal(err)
		}
		if sn, version, evs := readWithSnapshot(t, s, "long", 0, estuite.ReadOptions{}); sn != nil || int64(len(evs)) != version || version != 11*estuite.MaxAppendRows+3 {
			t.Fatalf("long stream after Forget: %+v, %d events of %d", sn, len(evs), version)
		}
	})
}

// An append whose snapshot names a forgotten subject is an ErrSubjectForgotten naming it, and
// writes nothing: neither its events nor its snapshot.
func TestSnapshotOfAForgottenSubjectIsRefused(t *testing.T) {
	forEachEraseBackend(t, func(t *testing.T, env *eraseEnv) {
		ctx := context.Background()
		s := env.open(t, nil)
		mustAppend(t, s, "acct", countedEvents(1, 2), &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Data: []byte("v2"), Subjects: []string{"dora"}}})
		if err := s.Forget(ctx, "erin"); err != nil {
			t.Fatal(err)
		}
		for _, stream := range []string{"acct", "new"} {
			_, err := s.Append(ctx, stream, countedEvents(3, 1), &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Data: []byte("v3"), Subjects: []string{"dora", "erin"}}})
			var fe *estuite.SubjectForgottenError
			if !errors.Is(err, estuite.ErrSubjectForgotten) || !errors.As(err, &fe) || fe.Subject != "erin" {
				t.Fatalf("%s: append with a snapshot naming a forgotten subject: %v; want a *SubjectForgottenError for erin", stream, err)
			}
		}
		if v, err := s.Version(ctx, "acct"); err != nil || v != 2 {
			t.Fatalf("acct at version %d (%v) after the refused append; want 2", v, err)
		}
		if _, err := s.Version(ctx, "new"); !errors.Is(err, estuite.ErrStreamNotFound) {
			t.Fatalf("the refused append created its stream: %v", err)
		}
		if sn, _, _ := readWithSnapshot(t, env.open(t, nil), "acct", 0, estuite.ReadOptions{}); sn == nil || string(sn.Data) != "v2" {
			t.Fatalf("after the refused append: %+v; want the snapshot at 2", sn)
		}
		// A retry of a commit that landed before its snapshot's subject was forgotten is its
		// duplicate, as for sealed events; the same commit ID with other events is a conflict.
		opts := &estuite.AppendOptions{CommitID: "c-hal", Snapshot: &estuite.Snapshot{Data: []byte("h"), Subjects: []string{"hal"}}}
		mustAppend(t, s, "acct", countedEvents(3, 1), opts)
		if err := s.Forget(ctx, "hal"); err != nil {
			t.Fatal(err)
		}
		if res, err := s.Append(ctx, "acct", countedEvents(3, 1), opts); err != nil || !res.Duplicate || res.LastVersion != 3 {
			t.Fatalf("retry after Forget: %+v, %v; want the duplicate at 3", res, err)
		}
		if _, err := s.Append(ctx, "acct", countedEvents(9, 1), opts); !errors.Is(err, estuite.ErrCommitConflict) {
			t.Fatalf("same commit ID, other events, after Forget: %v; want ErrCommitConflict", err)
		}
	})
}

// A sealed snapshot row moved to another stream of the same subjects does not open: the read is
// an ErrCorrupt rather than another stream's state. A sealed row whose shape is malformed is an
// ErrCorrupt too, and Verify reports it; well-formed sealed rows pass Verify, also once their
// subject is forgotten (it needs no key).
func TestMovedSealedSnapshotDoesNotOpen(t *testing.T) {
	ctx := context.Background()
	backend := mem.New(nil)
	s := openStore(t, sharedBackend{backend}, nil)
	for _, stream := range []string{"a", "b", "c"} {
		mustAppend(t, s, stream, personEvents("fay"), &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Data: []byte("state of " + stream), Subjects: []string{"fay"}}})
	}
	if report, err := s.Verify(ctx, nil); err != nil || !report.OK() {
		t.Fatalf("Verify with sealed snapshots: %+v, %v", report, err)
	}
	tab, err := backend.OpenTable(ctx, "estuitestreams")
	if err != nil {
		t.Fatal(err)
	}
	rowA, err := tab.Get(ctx, "a", "D")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rowA.Properties["Data"]; ok || rowA.Properties["Schema"] != int64(math.MinInt64) {
		t.Fatalf("a sealed snapshot row an earlier release would read: %v", rowA.Properties)
	}
	put := func(pk string, props map[string]any) {
		t.Helper()
		e := table.Entity{PartitionKey: pk, RowKey: "D", Properties: props}
		if _, err := tab.Submit(ctx, pk, []table.Op{{Kind: table.Upsert, Entity: e}}); err != nil {
			t.Fatal(err)
		}
	}
	put("b", rowA.Properties)
	if _, err := s.Read(ctx, "b", &estuite.ReadOptions{WithSnapshot: true}); !errors.Is(err, estuite.ErrCorrupt) {
		t.Fatalf("read of a snapshot moved from another stream: %v; want ErrCorrupt", err)
	}
	if sn, _, _ := readWithSnapshot(t, s, "a", 0, estuite.ReadOptions{}); sn == nil || string(sn.Data) != "state of a" {
		t.Fatalf("the original: %+v", sn)
	}
	bad := map[string]any{}
	for k, v := range rowA.Properties {
		bad[k] = v
	}
	bad["Subjects"] = "zed\nfay" // not sorted
	put("c", bad)
	if _, err := s.Read(ctx, "c", &estuite.ReadOptions{WithSnapshot: true}); !errors.Is(err, estuite.ErrCorrupt) {
		t.Fatalf("read of a malformed sealed snapshot: %v; want ErrCorrupt", err)
	}
	report, err := s.Verify(ctx, nil)
	if err != nil || len(report.Unparseable) != 1 || report.Unparseable[0].PartitionKey != "c" {
		t.Fatalf("Verify with a malformed sealed snapshot: %+v, %v; want the c row alone reported", report, err)
	}
	put("c", rowA.Properties) // moved, but well-formed: Verify cannot tell without keys
	if err := s.Forget(ctx, "fay"); err != nil {
		t.Fatal(err)
	}
	if report, err := s.Verify(ctx, nil); err != nil || !report.OK() {
		t.Fatalf("Verify after Forget: %+v, %v", report, err)
	}
	for _, stream := range []string{"a", "b", "c"} {
		if sn, _, evs := readWithSnapshot(t, s, stream, 0, estuite.ReadOptions{}); sn != nil || len(evs) != 3 || !evs[0].Erased {
			t.Fatalf("%s after Forget: %+v, %d events", stream, sn, len(evs))
		}
	}
}

// Sealing a snapshot costs no request beyond what the append's sealed events cost (the keys are
// looked up once per append and cached), and reading it none beyond a plain snapshot's read.
func TestSealedSnapshotCostsNoExtraRequest(t *testing.T) {
	forEachFullPageBackend(t, func(t *testing.T, s *estuite.Store) {
		mustAppend(t, s, "cost", personEvents("gus"), nil)
		plain := requestsOf(s, func() { mustAppend(t, s, "cost", personEvents("gus"), nil) })
		var res estuite.AppendResult
		with := requestsOf(s, func() {
			res = mustAppend(t, s, "cost", personEvents("gus"), &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Data: make([]byte, 10_000), Subjects: []string{"gus"}}})
		})
		if !res.SnapshotSaved || with != plain {
			t.Fatalf("warm append with a sealed snapshot: %+v requests (saved %v); without: %+v", with, res.SnapshotSaved, plain)
		}
		mustAppend(t, s, "plain", personEvents("gus"), &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Data: make([]byte, 10_000)}})
		readWithSnapshot(t, s, "plain", 0, estuite.ReadOptions{})
		readWithSnapshot(t, s, "cost", 0, estuite.ReadOptions{})
		plainRead := requestsOf(s, func() { readWithSnapshot(t, s, "plain", 0, estuite.ReadOptions{}) })
		sealedRead := requestsOf(s, func() {
			if sn, _, _ := readWithSnapshot(t, s, "cost", 0, estuite.ReadOptions{}); sn == nil {
				t.Fatal("no sealed snapshot")
			}
		})
		if sealedRead != plainRead {
			t.Fatalf("warm read of a sealed snapshot: %+v requests; of a plain one: %+v", sealedRead, plainRead)
		}
	})
}
