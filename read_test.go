package estuite_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table/bolt"
	"github.com/estuite/estuite/table/mem"
)

// appendN appends n single-field events to stream in batches of up to 90.
func appendN(t *testing.T, s *estuite.Store, stream string, n int) {
	t.Helper()
	for done := 0; done < n; {
		k := min(90, n-done)
		events := make([]estuite.EventData, k)
		for i := range events {
			events[i] = jsonEvent("Counted", fmt.Sprintf(`{"n":%d}`, done+i+1))
		}
		mustAppend(t, s, stream, events, nil)
		done += k
	}
}

func versions(events []estuite.RecordedEvent) []int64 {
	out := make([]int64, len(events))
	for i, e := range events {
		out[i] = e.Version
	}
	return out
}

func TestReadDirectionsFromAndLimit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		appendN(t, s, "r", 10)
		cases := []struct {
			opts estuite.ReadOptions
			want []int64
		}{
			{estuite.ReadOptions{}, []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
			{estuite.ReadOptions{From: 4, Limit: 3}, []int64{4, 5, 6}},
			{estuite.ReadOptions{From: 9, Limit: 5}, []int64{9, 10}},
			{estuite.ReadOptions{From: 11}, nil},
			{estuite.ReadOptions{Direction: estuite.Backward, Limit: 3}, []int64{10, 9, 8}},
			{estuite.ReadOptions{Direction: estuite.Backward, From: 4}, []int64{4, 3, 2, 1}},
			{estuite.ReadOptions{Direction: estuite.Backward, From: 2, Limit: 5}, []int64{2, 1}},
			{estuite.ReadOptions{Direction: estuite.Backward, From: 50, Limit: 2}, []int64{10, 9}},
		}
		for _, c := range cases {
			version, got := readAll(t, s, "r", &c.opts)
			if version != 10 || fmt.Sprint(versions(got)) != fmt.Sprint(c.want) {
				t.Errorf("Read(%+v) = version %d, %v; want 10, %v", c.opts, version, versions(got), c.want)
			}
		}
	})
}

func TestReadOfUnknownStreamIsNotFound(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		if _, err := s.Read(context.Background(), "never-written", nil); !errors.Is(err, estuite.ErrStreamNotFound) {
			t.Fatalf("Read error = %v; want ErrStreamNotFound", err)
		}
		if _, err := s.Version(context.Background(), "never-written"); !errors.Is(err, estuite.ErrStreamNotFound) {
			t.Fatalf("Version error = %v; want ErrStreamNotFound", err)
		}
	})
}

func TestStreamNamesRoundTrip(t *testing.T) {
	names := []string{
		"plain-name", "with/slash", `back\slash`, "hash#tag", "what?", "100%", "%2F", "quote'd",
		"two words", "émoji-🎉", "日本語", "a%b/c?d#e\\f'g", "trailing ", "~tilde", "E0000000000000000001",
	}
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		for i, name := range names {
			mustAppend(t, s, name, []estuite.EventData{jsonEvent("Named", fmt.Sprintf(`{"i":%d}`, i))}, nil)
		}
		for i, name := range names {
			version, got := readAll(t, s, name, nil)
			if version != 1 || len(got) != 1 || got[0].Stream != name || string(got[0].Data) != fmt.Sprintf(`{"i":%d}`, i) {
				t.Errorf("stream %q read back as version %d, %+v", name, version, got)
			}
		}
	})
}

func TestReadPagesPastOneThousandEvents(t *testing.T) {
	s := openStore(t, mem.New(&mem.Options{EmptyPages: true}), nil)
	appendN(t, s, "long", 2500)
	_, got := readAll(t, s, "long", nil)
	if len(got) != 2500 {
		t.Fatalf("read %d events, want 2500", len(got))
	}
	for i, e := range got {
		if e.Version != int64(i+1) {
			t.Fatalf("event %d has version %d", i, e.Version)
		}
	}
	_, back := readAll(t, s, "long", &estuite.ReadOptions{Direction: estuite.Backward})
	if len(back) != 2500 || back[0].Version != 2500 || back[2499].Version != 1 {
		t.Fatalf("backward read: %d events, first %d", len(back), back[0].Version)
	}
}

func TestStorageRequestsPerOperation(t *testing.T) {
	b := mem.New(nil)
	s := openStore(t, b, nil)
	one := []estuite.EventData{jsonEvent("E", "{}")}
	// Every append writes its dirty marker (one request) before its batch (one request).
	if d := requestsOf(s, func() { mustAppend(t, s, "new", one, &estuite.AppendOptions{Expected: estuite.NoStream}) }); d.Total() != 2 {
		t.Errorf("append creating a stream with NoStream: %+v requests, want 2", d)
	}
	if d := requestsOf(s, func() { mustAppend(t, s, "new", one, &estuite.AppendOptions{Expected: estuite.Exactly(1)}) }); d.Total() != 2 || d.Batches != 1 || d.Writes != 1 {
		t.Errorf("warm append: %+v requests, want exactly 2 (a marker write and a batch)", d)
	}
	if d := requestsOf(s, func() { mustAppend(t, s, "new", one, nil) }); d.Total() != 2 {
		t.Errorf("warm append with Any: %+v requests, want 2", d)
	}

	// A second store on the same backend has not seen the stream: a cold append.
	cold := openStore(t, b, nil)
	if d := requestsOf(cold, func() { mustAppend(t, cold, "new", one, &estuite.AppendOptions{Expected: estuite.Exactly(3)}) }); d.Total() > 3 {
		t.Errorf("cold append: %+v requests, want at most 3", d)
	}
	if d := requestsOf(cold, func() { mustAppend(t, cold, "fresh", one, nil) }); d.Total() > 3 {
		t.Errorf("cold append to a new stream: %+v requests, want at most 3", d)
	}

	appendN(t, s, "thousand", 1000)
	reader := openStore(t, b, nil)
	if d := requestsOf(reader, func() {
		_, got := readAll(t, reader, "thousand", nil)
		if len(got) != 1000 {
			t.Fatalf("read %d events", len(got))
		}
	}); d.Total() > 2 {
		t.Errorf("reading 1000 events: %+v requests, want at most 2", d)
	}
	if d := requestsOf(reader, func() { readAll(t, reader, "thousand", &estuite.ReadOptions{Direction: estuite.Backward}) }); d.Total() > 2 {
		t.Errorf("reading 1000 events backward: %+v requests, want at most 2", d)
	}
}

// requestsOf returns the storage requests s makes while f runs.
func requestsOf(s *estuite.Store, f func()) estuite.RequestCounts {
	before := s.RequestCounts()
	f()
	return s.RequestCounts().Sub(before)
}

func TestSizeCountsEveryRowOfBothTables(t *testing.T) {
	s := openStore(t, mem.New(&mem.Options{PageSize: 4}), nil)
	size, err := s.Size(context.Background())
	if err != nil || size.Streams.Rows != 0 || size.Events.Rows != 0 {
		t.Fatalf("empty store: %+v, %v", size, err)
	}
	mustAppend(t, s, "a", []estuite.EventData{jsonEvent("A", "{}"), jsonEvent("B", "{}")}, nil)
	size, err = s.Size(context.Background())
	// Stream table: head, commit row, two events. Event table: one dirty marker.
	if err != nil || size.Streams.Rows != 4 || size.Events.Rows != 1 || size.Streams.Bytes < 4*100 {
		t.Fatalf("after one append: %+v, %v", size, err)
	}
}

// On the embedded store an append's dirty marker and batch are one transaction.
func TestEmbeddedWarmAppendIsOneTransaction(t *testing.T) {
	b, err := bolt.Open(filepath.Join(t.TempDir(), "estuite.db"), &bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	s := openStore(t, b, nil)
	one := []estuite.EventData{jsonEvent("E", "{}")}
	mustAppend(t, s, "warm", one, nil)
	if d := requestsOf(s, func() { mustAppend(t, s, "warm", one, nil) }); d.Total() != 1 || d.Batches != 1 {
		t.Fatalf("warm embedded append: %+v requests, want one batch", d)
	}
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	checkFeedMatchesStreams(t, s, []string{"warm"})
}
