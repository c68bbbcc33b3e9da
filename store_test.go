package estuite_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/mem"
	"github.com/google/uuid"
)

// backendCase names a way to open a store on a fresh backend.
type backendCase struct {
	name string
	open func(t *testing.T) *estuite.Store
}

// backends lists the backends every store test runs on; backends_test.go adds bbolt and Azurite.
var backends = []backendCase{
	{"mem", func(t *testing.T) *estuite.Store { return openStore(t, mem.New(nil), nil) }},
	{"mem-paged", func(t *testing.T) *estuite.Store {
		return openStore(t, mem.New(&mem.Options{PageSize: 3, EmptyPages: true}), nil)
	}},
}

// forEachBackend runs f once per backend, each with a fresh store.
func forEachBackend(t *testing.T, f func(t *testing.T, s *estuite.Store)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { f(t, b.open(t)) })
	}
}

func openStore(t testing.TB, b table.Backend, opts *estuite.Options) *estuite.Store {
	t.Helper()
	s, err := estuite.Open(context.Background(), b, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func jsonEvent(typ, data string) estuite.EventData {
	return estuite.EventData{Type: typ, Data: []byte(data)}
}

func mustAppend(t *testing.T, s *estuite.Store, stream string, events []estuite.EventData, opts *estuite.AppendOptions) estuite.AppendResult {
	t.Helper()
	res, err := s.Append(context.Background(), stream, events, opts)
	if err != nil {
		t.Fatalf("Append(%q): %v", stream, err)
	}
	return res
}

func readAll(t *testing.T, s *estuite.Store, stream string, opts *estuite.ReadOptions) (int64, []estuite.RecordedEvent) {
	t.Helper()
	r, err := s.Read(context.Background(), stream, opts)
	if err != nil {
		t.Fatalf("Read(%q): %v", stream, err)
	}
	var out []estuite.RecordedEvent
	for e, err := range r.Events {
		if err != nil {
			t.Fatalf("Read(%q) events: %v", stream, err)
		}
		out = append(out, e)
	}
	return r.Version, out
}

func TestAppendThenReadReturnsEventsAsWritten(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		id := uuid.New()
		binary := []byte{0, 1, 2, 0xff, 0xfe}
		events := []estuite.EventData{
			{ID: id, Type: "OrderPlaced", Data: []byte(`{"total": 12.5, "items": ["a"]}`), Metadata: json.RawMessage(`{"correlationId":"c-1"}`)},
			{Type: "Attachment", Data: binary, Format: estuite.Binary},
			{Type: "Empty"},
		}
		before := time.Now().UTC().Add(-time.Second)
		res := mustAppend(t, s, "order-1", events, &estuite.AppendOptions{CommitID: "commit-1"})
		if res.FirstVersion != 1 || res.LastVersion != 3 || res.Duplicate || res.CommitID != "commit-1" {
			t.Fatalf("result = %+v, want versions 1..3, not duplicate", res)
		}
		version, got := readAll(t, s, "order-1", nil)
		if version != 3 || len(got) != 3 {
			t.Fatalf("read version %d, %d events; want 3, 3", version, len(got))
		}
		for i, e := range got {
			want := events[i]
			if e.Stream != "order-1" || e.Version != int64(i+1) || e.Type != want.Type || !bytes.Equal(e.Data, want.Data) ||
				e.Format != want.Format || !bytes.Equal(e.Metadata, want.Metadata) || e.CommitID != "commit-1" {
				t.Errorf("event %d = %+v, want %+v", i, e, want)
			}
			if e.RecordedAt.Before(before) || e.RecordedAt.Location() != time.UTC || !e.RecordedAt.Equal(got[0].RecordedAt) {
				t.Errorf("event %d recorded at %v", i, e.RecordedAt)
			}
		}
		if got[0].ID != id {
			t.Errorf("given event ID read back as %v, want %v", got[0].ID, id)
		}
		if got[1].ID == uuid.Nil || got[1].ID == got[2].ID {
			t.Errorf("generated IDs %v, %v are not distinct UUIDs", got[1].ID, got[2].ID)
		}
	})
}

func TestExpectedVersion(t *testing.T) {
	cases := []struct {
		name     string
		existing int // events already in the stream
		expected estuite.ExpectedVersion
		ok       bool
	}{
		{"any on new stream", 0, estuite.Any, true},
		{"any on existing stream", 2, estuite.Any, true},
		{"no stream on new stream", 0, estuite.NoStream, true},
		{"no stream on existing stream", 2, estuite.NoStream, false},
		{"exists on new stream", 0, estuite.StreamExists, false},
		{"exists on existing stream", 2, estuite.StreamExists, true},
		{"exact match", 2, estuite.Exactly(2), true},
		{"exact zero on new stream", 0, estuite.Exactly(0), true},
		{"exact behind", 2, estuite.Exactly(1), false},
		{"exact ahead", 2, estuite.Exactly(3), false},
		{"exact on new stream", 0, estuite.Exactly(1), false},
	}
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		for i, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				stream := fmt.Sprintf("expect-%d", i)
				for j := 0; j < c.existing; j++ {
					mustAppend(t, s, stream, []estuite.EventData{jsonEvent("Seed", "{}")}, nil)
				}
				res, err := s.Append(context.Background(), stream, []estuite.EventData{jsonEvent("Next", "{}")}, &estuite.AppendOptions{Expected: c.expected})
				if c.ok {
					if err != nil || res.LastVersion != int64(c.existing+1) {
						t.Fatalf("Append = %+v, %v; want version %d", res, err, c.existing+1)
					}
					return
				}
				var wev *estuite.WrongExpectedVersionError
				if !errors.Is(err, estuite.ErrWrongExpectedVersion) || !errors.As(err, &wev) || wev.Actual != int64(c.existing) {
					t.Fatalf("Append error = %v; want wrong expected version with actual %d", err, c.existing)
				}
				if c.existing > 0 {
					if v, _ := readAll(t, s, stream, nil); v != int64(c.existing) {
						t.Fatalf("refused append changed the stream to version %d", v)
					}
				} else if _, err := s.Read(context.Background(), stream, nil); !errors.Is(err, estuite.ErrStreamNotFound) {
					t.Fatalf("refused append created the stream: %v", err)
				}
			})
		}
	})
}

func TestRetriedCommitReturnsOriginalVersions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		ctx := context.Background()
		events := []estuite.EventData{jsonEvent("A", `{"n":1}`), jsonEvent("B", `{"n":2}`)}
		first := mustAppend(t, s, "retry", events, &estuite.AppendOptions{CommitID: "c1", Expected: estuite.NoStream})
		// The same commit again, with the same (now stale) expected version.
		again, err := s.Append(ctx, "retry", events, &estuite.AppendOptions{CommitID: "c1", Expected: estuite.NoStream})
		if err != nil || !again.Duplicate || again.FirstVersion != first.FirstVersion || again.LastVersion != first.LastVersion {
			t.Fatalf("retry = %+v, %v; want duplicate of %+v", again, err, first)
		}
		// After the stream moved on, with expected version Any, and from another store instance.
		mustAppend(t, s, "retry", []estuite.EventData{jsonEvent("C", "{}")}, nil)
		for _, exp := range []estuite.ExpectedVersion{estuite.Any, estuite.Exactly(0), estuite.StreamExists} {
			late, err := s.Append(ctx, "retry", events, &estuite.AppendOptions{CommitID: "c1", Expected: exp})
			if err != nil || !late.Duplicate || late.FirstVersion != 1 || late.LastVersion != 2 {
				t.Fatalf("late retry (expected %v) = %+v, %v; want duplicate 1..2", exp, late, err)
			}
		}
		if v, got := readAll(t, s, "retry", nil); v != 3 || len(got) != 3 {
			t.Fatalf("stream has version %d with %d events after retries; want 3", v, len(got))
		}
		// The same commit ID with other events is a conflict, and writes nothing.
		_, err = s.Append(ctx, "retry", []estuite.EventData{jsonEvent("A", `{"n":999}`)}, &estuite.AppendOptions{CommitID: "c1"})
		var cce *estuite.CommitConflictError
		if !errors.Is(err, estuite.ErrCommitConflict) || !errors.As(err, &cce) || cce.CommitID != "c1" {
			t.Fatalf("reused commit ID error = %v; want commit conflict", err)
		}
		if v, _ := readAll(t, s, "retry", nil); v != 3 {
			t.Fatalf("conflicting commit changed the stream to version %d", v)
		}
		// The commit ID is per stream: another stream may use it.
		if res := mustAppend(t, s, "retry-other", events, &estuite.AppendOptions{CommitID: "c1"}); res.Duplicate {
			t.Fatalf("commit ID of another stream was taken as a duplicate")
		}
	})
}

func TestRetriedCommitIsDuplicateForAnotherStoreInstance(t *testing.T) {
	b := mem.New(nil)
	s1 := openStore(t, b, nil)
	s2 := openStore(t, b, nil)
	events := []estuite.EventData{jsonEvent("A", "{}")}
	mustAppend(t, s1, "shared", events, &estuite.AppendOptions{CommitID: "x"})
	res := mustAppend(t, s2, "shared", events, &estuite.AppendOptions{CommitID: "x"})
	if !res.Duplicate || res.LastVersion != 1 {
		t.Fatalf("second instance's retry = %+v; want duplicate of version 1", res)
	}
}

func TestDuplicateEventIDIsRefusedAndNamed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		id := uuid.New()
		mustAppend(t, s, "dedup", []estuite.EventData{{ID: id, Type: "A"}}, nil)
		_, err := s.Append(context.Background(), "dedup", []estuite.EventData{{Type: "B"}, {ID: id, Type: "A"}}, nil)
		var de *estuite.DuplicateEventError
		if !errors.Is(err, estuite.ErrDuplicateEvent) || !errors.As(err, &de) || de.EventID != id {
			t.Fatalf("error = %v; want duplicate event %v", err, id)
		}
		other := uuid.New()
		_, err = s.Append(context.Background(), "dedup", []estuite.EventData{{ID: other, Type: "A"}, {ID: other, Type: "B"}}, nil)
		if !errors.As(err, &de) || de.EventID != other {
			t.Fatalf("error for an ID twice in one append = %v; want duplicate event %v", err, other)
		}
		if v, _ := readAll(t, s, "dedup", nil); v != 1 {
			t.Fatalf("refused appends changed the stream to version %d", v)
		}
		// The same ID in another stream is fine.
		mustAppend(t, s, "dedup-2", []estuite.EventData{{ID: id, Type: "A"}}, nil)
	})
}

func TestInvalidInputIsTypedAndWritesNothing(t *testing.T) {
	long := strings.Repeat("x", estuite.MaxStreamNameLength+1)
	cases := []struct {
		name   string
		stream string
		events []estuite.EventData
		opts   *estuite.AppendOptions
		field  string
		tooBig bool
	}{
		{"empty stream name", "", []estuite.EventData{jsonEvent("A", "")}, nil, "stream", false},
		{"control character in stream", "a\x01b", []estuite.EventData{jsonEvent("A", "")}, nil, "stream", false},
		{"C1 control in stream", "a\u0085b", []estuite.EventData{jsonEvent("A", "")}, nil, "stream", false},
		{"invalid UTF-8 stream", "a\xffb", []estuite.EventData{jsonEvent("A", "")}, nil, "stream", false},
		{"stream name too long", long, []estuite.EventData{jsonEvent("A", "")}, nil, "stream", false},
		{"no events", "s", nil, nil, "events", false},
		{"empty type", "s", []estuite.EventData{jsonEvent("", "")}, nil, "events[0].type", false},
		{"control in type", "s", []estuite.EventData{jsonEvent("A\nB", "")}, nil, "events[0].type", false},
		{"bad JSON data", "s", []estuite.EventData{jsonEvent("A", "{nope")}, nil, "events[0].data", false},
		{"metadata not an object", "s", []estuite.EventData{{Type: "A", Metadata: json.RawMessage(`[1]`)}}, nil, "events[0].metadata", false},
		{"metadata not JSON", "s", []estuite.EventData{{Type: "A", Metadata: json.RawMessage(`{`)}}, nil, "events[0].metadata", false},
		{"unknown format", "s", []estuite.EventData{{Type: "A", Format: 7}}, nil, "events[0].format", false},
		{"invalid UTF-8 type", "s", []estuite.EventData{jsonEvent("c\xff", "")}, nil, "events[0].type", false},
		{"invalid UTF-8 data", "s", []estuite.EventData{jsonEvent("A", "\"\xff\"")}, nil, "events[0].data", false},
		{"invalid UTF-8 in data's member name", "s", []estuite.EventData{jsonEvent("A", "{\"\xfe\": 1}")}, nil, "events[0].data", false},
		{"lone surrogate in data", "s", []estuite.EventData{jsonEvent("A", `["\ud800"]`)}, nil, "events[0].data", false},
		{"lone low surrogate in data", "s", []estuite.EventData{jsonEvent("A", `"\udfff\ud800"`)}, nil, "events[0].data", false},
		{"invalid UTF-8 metadata", "s", []estuite.EventData{{Type: "A", Metadata: json.RawMessage("{\"k\": \"\xff\"}")}}, nil, "events[0].metadata", false},
		{"lone surrogate in metadata", "s", []estuite.EventData{{Type: "A", Metadata: json.RawMessage(`{"k": "\ud800"}`)}}, nil, "events[0].metadata", false},
		{"invalid UTF-8 commit ID", "s", []estuite.EventData{jsonEvent("A", "")}, &estuite.AppendOptions{CommitID: "c\xfe"}, "commitID", false},
		{"commit ID too long", "s", []estuite.EventData{jsonEvent("A", "")}, &estuite.AppendOptions{CommitID: strings.Repeat("c", 129)}, "commitID", false},
		{"commit ID with control", "s", []estuite.EventData{jsonEvent("A", "")}, &estuite.AppendOptions{CommitID: "a\tb"}, "commitID", false},
		{"negative expected version", "s", []estuite.EventData{jsonEvent("A", "")}, &estuite.AppendOptions{Expected: estuite.Exactly(-1)}, "expected version", false},
		{"too many events", "s", make98Events(), nil, "", true},
		{"event over one entity", "s", []estuite.EventData{{Type: "A", Format: estuite.Binary, Data: make([]byte, table.MaxEntityBytes)}}, nil, "", true},
		{"append over one batch", "s", bigEvents(4, 900<<10), nil, "", true},
		{"metadata too long", "s", []estuite.EventData{{Type: "A", Metadata: json.RawMessage(`{"k":"` + strings.Repeat("m", estuite.MaxMetadataLength) + `"}`)}}, nil, "", true},
	}
	b := mem.New(nil)
	s := openStore(t, b, nil)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := s.RequestCounts()
			_, err := s.Append(context.Background(), c.stream, c.events, c.opts)
			if c.tooBig {
				if !errors.Is(err, estuite.ErrTooLarge) {
					t.Fatalf("error = %v; want ErrTooLarge", err)
				}
			} else {
				var ie *estuite.InvalidInputError
				if !errors.Is(err, estuite.ErrInvalidInput) || !errors.As(err, &ie) || ie.Field != c.field {
					t.Fatalf("error = %v; want invalid input in field %q", err, c.field)
				}
			}
			if d := s.RequestCounts().Sub(before); d.Total() != 0 {
				t.Fatalf("refused append made %d storage requests", d.Total())
			}
		})
	}
	tbl, _ := b.Table("estuitestreams")
	if p := tbl.Partitions(); len(p) != 0 {
		t.Fatalf("refused appends wrote partitions %q", p)
	}
}

func make98Events() []estuite.EventData {
	events := make([]estuite.EventData, estuite.MaxAppendRows+1)
	for i := range events {
		events[i] = jsonEvent("E", "{}")
	}
	return events
}

func bigEvents(n, size int) []estuite.EventData {
	events := make([]estuite.EventData, n)
	for i := range events {
		events[i] = estuite.EventData{Type: "Big", Format: estuite.Binary, Data: bytes.Repeat([]byte{byte(i)}, size)}
	}
	return events
}

func TestAppendLimitsAreExact(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		ctx := context.Background()
		// The most events with generated IDs.
		full := make98Events()[:estuite.MaxAppendRows]
		if res := mustAppend(t, s, "limits", full, nil); res.LastVersion != int64(estuite.MaxAppendRows) {
			t.Fatalf("full append = %+v", res)
		}
		// With caller-given IDs every event takes two rows.
		withIDs := make([]estuite.EventData, estuite.MaxAppendRows/2+1)
		for i := range withIDs {
			withIDs[i] = estuite.EventData{ID: uuid.New(), Type: "E"}
		}
		if _, err := s.Append(ctx, "limits-ids", withIDs, nil); !errors.Is(err, estuite.ErrTooLarge) {
			t.Fatalf("append of %d events with IDs: %v; want ErrTooLarge", len(withIDs), err)
		}
		mustAppend(t, s, "limits-ids", withIDs[:estuite.MaxAppendRows/2], nil)

		// The largest event data one entity holds is accepted, one byte more is refused.
		max := largestData(t, s)
		data := bytes.Repeat([]byte("z"), max)
		mustAppend(t, s, "limits-big", []estuite.EventData{{Type: "Big", Format: estuite.Binary, Data: data}}, nil)
		_, got := readAll(t, s, "limits-big", nil)
		if len(got) != 1 || !bytes.Equal(got[0].Data, data) {
			t.Fatalf("largest event did not read back whole")
		}
		if max < 1000<<10 {
			t.Fatalf("largest event data is only %d bytes", max)
		}
		// Two events of that size fit one batch (three would pass 4 MiB in base64).
		mustAppend(t, s, "limits-batch", bigEvents(2, max-64), nil)
	})
}

// largestData finds the largest binary data a one-event append to "limits-big" with type "Big"
// accepts, by bisection on the refusal.
func largestData(t *testing.T, s *estuite.Store) int {
	lo, hi := 0, table.MaxEntityBytes
	for lo < hi {
		mid := (lo + hi + 1) / 2
		_, err := s.Append(context.Background(), "limits-big", []estuite.EventData{{Type: "Big", Format: estuite.Binary, Data: make([]byte, mid)}},
			&estuite.AppendOptions{Expected: estuite.Exactly(1 << 40)})
		// A size that passes the checks reaches storage and fails on the expected version.
		switch {
		case errors.Is(err, estuite.ErrTooLarge):
			hi = mid - 1
		case errors.Is(err, estuite.ErrWrongExpectedVersion):
			lo = mid
		default:
			t.Fatalf("append of %d bytes: %v", mid, err)
		}
	}
	return lo
}
