package estuite_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table/mem"
)

func sameVersions(got []estuite.RecordedEvent, want ...int64) bool {
	v := versions(got)
	if len(v) != len(want) {
		return false
	}
	for i := range v {
		if v[i] != want[i] {
			return false
		}
	}
	return true
}

func ptr[T any](v T) *T { return &v }

// A soft-deleted stream reads as not found; an append expecting no stream (or any) recreates it,
// its versions going on after the last one, and only the new events are visible.
func TestSoftDeleteThenRecreate(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		ctx := context.Background()
		appendN(t, s, "cart", 3)
		res, err := s.Delete(ctx, "cart", &estuite.DeleteOptions{Expected: estuite.Exactly(3)})
		if err != nil || res.Version != 3 {
			t.Fatalf("Delete = %+v, %v", res, err)
		}
		if _, err := s.Read(ctx, "cart", nil); !errors.Is(err, estuite.ErrStreamNotFound) {
			t.Fatalf("Read after a soft delete = %v; want ErrStreamNotFound", err)
		}
		if _, err := s.Version(ctx, "cart"); !errors.Is(err, estuite.ErrStreamNotFound) {
			t.Fatalf("Version after a soft delete = %v; want ErrStreamNotFound", err)
		}
		// A second soft delete changes nothing; StreamExists is refused; NoStream recreates.
		if _, err := s.Delete(ctx, "cart", nil); err != nil {
			t.Fatalf("second soft delete: %v", err)
		}
		if _, err := s.Append(ctx, "cart", []estuite.EventData{jsonEvent("X", "{}")}, &estuite.AppendOptions{Expected: estuite.StreamExists}); !errors.Is(err, estuite.ErrWrongExpectedVersion) {
			t.Fatalf("append expecting an existing stream = %v; want ErrWrongExpectedVersion", err)
		}
		got := mustAppend(t, s, "cart", []estuite.EventData{jsonEvent("Recreated", "{}")}, &estuite.AppendOptions{Expected: estuite.NoStream})
		if got.FirstVersion != 4 {
			t.Fatalf("recreating append = %+v; want version 4", got)
		}
		version, events := readAll(t, s, "cart", nil)
		if version != 4 || !sameVersions(events, 4) {
			t.Fatalf("after recreating: version %d, events %v; want version 4 with event 4 alone", version, versions(events))
		}
		if _, events := readAll(t, s, "cart", &estuite.ReadOptions{Direction: estuite.Backward}); !sameVersions(events, 4) {
			t.Fatalf("backward read after recreating: %v", versions(events))
		}
		// Deleted events were committed: the feed still has them (until a scavenger redacts them).
		stepUntilIdle(t, estuite.NewDispatcher(s, nil))
		if feed := readFeedAll(t, s); len(feed) != 4 {
			t.Fatalf("the feed holds %d events, want 4", len(feed))
		}
	})
}

// A hard-deleted stream can never be read or written again, whatever a store had cached.
func TestHardDeleteIsForGood(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		ctx := context.Background()
		appendN(t, s, "gone", 2)
		mustAppend(t, s, "gone", []estuite.EventData{jsonEvent("Last", "{}")}, &estuite.AppendOptions{CommitID: "last"})
		if _, err := s.Delete(ctx, "gone", &estuite.DeleteOptions{Hard: true, Expected: estuite.StreamExists}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Read(ctx, "gone", nil); !errors.Is(err, estuite.ErrStreamDeleted) {
			t.Fatalf("Read = %v; want ErrStreamDeleted", err)
		}
		for _, exp := range []estuite.ExpectedVersion{estuite.Any, estuite.NoStream, estuite.Exactly(3), estuite.StreamExists} {
			_, err := s.Append(ctx, "gone", []estuite.EventData{jsonEvent("Late", "{}")}, &estuite.AppendOptions{Expected: exp})
			var de *estuite.StreamDeletedError
			if !errors.As(err, &de) || de.Stream != "gone" {
				t.Fatalf("append expecting %v = %v; want a *StreamDeletedError", exp, err)
			}
		}
		// A retried commit that had landed before the delete is answered as it was.
		if res, err := s.Append(ctx, "gone", []estuite.EventData{jsonEvent("Last", "{}")}, &estuite.AppendOptions{CommitID: "last"}); err != nil || !res.Duplicate || res.LastVersion != 3 {
			t.Fatalf("retried commit = %+v, %v; want the duplicate", res, err)
		}
		if _, err := s.Delete(ctx, "gone", &estuite.DeleteOptions{Hard: true}); err != nil {
			t.Fatalf("second hard delete: %v", err)
		}
		if _, err := s.Delete(ctx, "gone", nil); !errors.Is(err, estuite.ErrStreamDeleted) {
			t.Fatalf("soft delete of a hard-deleted stream = %v", err)
		}
		if _, err := s.Metadata(ctx, "gone"); !errors.Is(err, estuite.ErrStreamDeleted) {
			t.Fatalf("Metadata = %v", err)
		}
		if _, err := s.SetMetadata(ctx, "gone", estuite.StreamMetadata{}, estuite.AnyMetadataVersion); !errors.Is(err, estuite.ErrStreamDeleted) {
			t.Fatalf("SetMetadata = %v", err)
		}
	})
}

// A delete races appends of other stores (here one with the head cached from before): the head's
// ETag orders them, and the append prepared before the delete is judged again after it.
func TestDeleteFencesAppendsOfOtherStores(t *testing.T) {
	ctx := context.Background()
	b := mem.New(nil)
	writer, deleter := openStore(t, b, nil), openStore(t, b, nil)
	appendN(t, writer, "s", 2) // the writer has the head at version 2 cached
	if _, err := deleter.Delete(ctx, "s", &estuite.DeleteOptions{Hard: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := writer.Append(ctx, "s", []estuite.EventData{jsonEvent("A", "{}")}, &estuite.AppendOptions{Expected: estuite.Exactly(2)}); !errors.Is(err, estuite.ErrStreamDeleted) {
		t.Fatalf("append on a cached head after a hard delete = %v; want ErrStreamDeleted", err)
	}
	appendN(t, writer, "t", 2)
	if _, err := deleter.Delete(ctx, "t", nil); err != nil {
		t.Fatal(err)
	}
	// Expecting the version it had cached is right: a soft-deleted stream keeps its version.
	res := mustAppend(t, writer, "t", []estuite.EventData{jsonEvent("A", "{}")}, &estuite.AppendOptions{Expected: estuite.Exactly(2)})
	if res.FirstVersion != 3 {
		t.Fatalf("append after a soft delete = %+v", res)
	}
	if _, events := readAll(t, deleter, "t", nil); !sameVersions(events, 3) {
		t.Fatalf("events after the soft delete and the append: %v", versions(events))
	}
}

// A delete takes an expected version like an append; a stream never written cannot be deleted.
func TestDeleteChecksItsExpectedVersion(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		ctx := context.Background()
		if _, err := s.Delete(ctx, "never", nil); !errors.Is(err, estuite.ErrStreamNotFound) {
			t.Fatalf("Delete of a stream never written = %v", err)
		}
		appendN(t, s, "kept", 2)
		var wev *estuite.WrongExpectedVersionError
		if _, err := s.Delete(ctx, "kept", &estuite.DeleteOptions{Expected: estuite.Exactly(1), Hard: true}); !errors.As(err, &wev) || wev.Actual != 2 {
			t.Fatalf("Delete expecting 1 = %v; want a WrongExpectedVersionError at 2", err)
		}
		if version, events := readAll(t, s, "kept", nil); version != 2 || len(events) != 2 {
			t.Fatalf("a refused delete changed the stream: version %d, %d events", version, len(events))
		}
		if _, err := s.Delete(ctx, "bad\x00name", nil); !errors.Is(err, estuite.ErrInvalidInput) {
			t.Fatalf("Delete of a bad name = %v", err)
		}
	})
}

// Metadata: versions, retention enforced on reads at once, custom JSON, and appends that keep it.
func TestStreamMetadataAndRetention(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		ctx := context.Background()
		md, err := s.Metadata(ctx, "orders")
		if err != nil || md.MetadataVersion != 0 || md.MaxCount != nil || md.Custom != nil {
			t.Fatalf("metadata of a new stream = %+v, %v", md, err)
		}
		// Set before the stream's first event.
		md, err = s.SetMetadata(ctx, "orders", estuite.StreamMetadata{MaxCount: ptr(int64(3)), Custom: json.RawMessage(`{"owner":"team-a"}`)}, 0)
		if err != nil || md.MetadataVersion != 1 {
			t.Fatalf("SetMetadata = %+v, %v", md, err)
		}
		if _, err := s.Read(ctx, "orders", nil); !errors.Is(err, estuite.ErrStreamNotFound) {
			t.Fatalf("a stream with metadata and no events reads %v; want not found", err)
		}
		mustAppend(t, s, "orders", []estuite.EventData{jsonEvent("A", "{}"), jsonEvent("B", "{}")}, &estuite.AppendOptions{Expected: estuite.NoStream})
		appendN(t, s, "orders", 3)
		if version, events := readAll(t, s, "orders", nil); version != 5 || !sameVersions(events, 3, 4, 5) {
			t.Fatalf("maxCount 3: version %d, events %v", version, versions(events))
		}
		if _, events := readAll(t, s, "orders", &estuite.ReadOptions{Direction: estuite.Backward}); !sameVersions(events, 5, 4, 3) {
			t.Fatalf("maxCount 3 backward: %v", versions(events))
		}
		if _, events := readAll(t, s, "orders", &estuite.ReadOptions{Direction: estuite.Backward, Limit: 10}); !sameVersions(events, 5, 4, 3) {
			t.Fatalf("maxCount 3 backward with a limit: %v", versions(events))
		}
		// The appends kept the metadata on the head.
		got, err := s.Metadata(ctx, "orders")
		if err != nil || got.MetadataVersion != 1 || got.MaxCount == nil || *got.MaxCount != 3 || string(got.Custom) != `{"owner":"team-a"}` {
			t.Fatalf("metadata after appends = %+v, %v", got, err)
		}
		// A wrong expected version is refused with the actual one; nothing changes.
		var wev *estuite.WrongExpectedVersionError
		if _, err := s.SetMetadata(ctx, "orders", estuite.StreamMetadata{}, 0); !errors.As(err, &wev) || wev.Actual != 1 {
			t.Fatalf("SetMetadata expecting 0 = %v", err)
		}
		// Replace: truncateBefore 2 and no maxCount, no custom (cleared).
		md, err = s.SetMetadata(ctx, "orders", estuite.StreamMetadata{TruncateBefore: ptr(int64(2))}, 1)
		if err != nil || md.MetadataVersion != 2 || md.MaxCount != nil || md.Custom != nil || *md.TruncateBefore != 2 {
			t.Fatalf("second SetMetadata = %+v, %v", md, err)
		}
		if got, _ := s.Metadata(ctx, "orders"); got.Custom != nil || got.MetadataVersion != 2 {
			t.Fatalf("metadata read back = %+v", got)
		}
		if _, events := readAll(t, s, "orders", nil); !sameVersions(events, 2, 3, 4, 5) {
			t.Fatalf("truncateBefore 2: %v", versions(events))
		}
		if _, events := readAll(t, s, "orders", &estuite.ReadOptions{From: 1, Limit: 2}); !sameVersions(events, 2, 3) {
			t.Fatalf("truncateBefore 2, from 1, limit 2: %v", versions(events))
		}
		// Bad values are refused, and write nothing.
		for name, bad := range map[string]estuite.StreamMetadata{
			"negative maxCount":       {MaxCount: ptr(int64(-1))},
			"negative truncateBefore": {TruncateBefore: ptr(int64(-5))},
			"fractional maxAge":       {MaxAge: ptr(1500 * time.Millisecond)},
			"negative maxAge":         {MaxAge: ptr(-time.Second)},
			"custom array":            {Custom: json.RawMessage(`[1]`)},
			"custom not JSON":         {Custom: json.RawMessage(`{`)},
		} {
			if _, err := s.SetMetadata(ctx, "orders", bad, estuite.AnyMetadataVersion); !errors.Is(err, estuite.ErrInvalidInput) {
				t.Errorf("%s: SetMetadata = %v; want ErrInvalidInput", name, err)
			}
		}
		if got, _ := s.Metadata(ctx, "orders"); got.MetadataVersion != 2 {
			t.Fatalf("refused metadata wrote: %+v", got)
		}
	})
}

// maxAge hides events recorded longer ago than it, judged on the reader's clock.
func TestMaxAgeHidesOldEvents(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{now: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	s := openStore(t, mem.New(nil), &estuite.Options{Now: clock.Now})
	appendN(t, s, "audit", 2)
	clock.Add(time.Hour)
	appendN(t, s, "audit", 1)
	if _, err := s.SetMetadata(ctx, "audit", estuite.StreamMetadata{MaxAge: ptr(30 * time.Minute)}, estuite.AnyMetadataVersion); err != nil {
		t.Fatal(err)
	}
	if version, events := readAll(t, s, "audit", nil); version != 3 || !sameVersions(events, 3) {
		t.Fatalf("maxAge 30 min: version %d, events %v; want event 3 alone", version, versions(events))
	}
	clock.Add(time.Hour)
	if _, events := readAll(t, s, "audit", nil); len(events) != 0 {
		t.Fatalf("maxAge 30 min, an hour later: %v; want none", versions(events))
	}
	if md, _ := s.Metadata(ctx, "audit"); md.MaxAge == nil || *md.MaxAge != 30*time.Minute {
		t.Fatalf("metadata = %+v", md)
	}
}

// A soft delete races appends of another store while storage fails now and then, before and
// after taking effect: the delete is answered with the version it deleted up to, every append
// acknowledged at or below it is hidden, every one above it is visible at the versions it was
// told, and the feed holds every stored event once, in order.
func TestSoftDeleteRacesAppendsUnderFaults(t *testing.T) {
	interleaved := 0 // runs with acknowledged appends both before and after the delete
	defer func() {
		if !t.Failed() && interleaved < 3 {
			t.Errorf("only %d of 20 runs had appends on both sides of the delete: the race was not run", interleaved)
		}
	}()
	for seed := int64(1); seed <= 20; seed++ {
		ctx := context.Background()
		var n atomic.Int64
		b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
			if c.Method != mem.MethodSubmit || c.Table != "estuitestreams" {
				return mem.NoFault
			}
			switch x := n.Add(1) * (seed*7919 + 1) % 100; {
			case x < 6:
				return mem.FailBefore
			case x < 12:
				return mem.FailAfter
			}
			return mem.NoFault
		}})
		retry := estuite.RetryPolicy{MaxAttempts: 6, BaseDelay: time.Microsecond, MaxDelay: time.Microsecond}
		writer := openStore(t, b, &estuite.Options{Retry: retry})
		deleter := openStore(t, b, &estuite.Options{Retry: retry})
		type acked struct{ first, last int64 }
		var mu sync.Mutex
		var acks []acked
		var wg sync.WaitGroup
		for w := 0; w < 3; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 15; i++ {
					res, err := writer.Append(ctx, "race", []estuite.EventData{jsonEvent("E", "{}"), jsonEvent("F", "{}")}, nil)
					if err == nil {
						mu.Lock()
						acks = append(acks, acked{res.FirstVersion, res.LastVersion})
						mu.Unlock()
					}
				}
			}()
		}
		var del estuite.DeleteResult
		var derr error
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(seed%5) * time.Millisecond)
			for attempt := 0; attempt < 20; attempt++ {
				if del, derr = deleter.Delete(ctx, "race", nil); derr == nil || errors.Is(derr, estuite.ErrStreamNotFound) {
					return
				}
			}
		}()
		wg.Wait()
		if errors.Is(derr, estuite.ErrStreamNotFound) {
			continue // the delete came before the first append: nothing to delete
		}
		if derr != nil {
			t.Fatalf("seed %d: Delete kept failing: %v", seed, derr)
		}
		r, err := deleter.Read(ctx, "race", nil)
		visible := map[int64]bool{}
		if err == nil {
			for e, err := range r.Events {
				if err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
				if e.Version <= del.Version {
					t.Fatalf("seed %d: version %d is visible after a delete up to %d", seed, e.Version, del.Version)
				}
				visible[e.Version] = true
			}
		} else if !errors.Is(err, estuite.ErrStreamNotFound) {
			t.Fatalf("seed %d: Read: %v", seed, err)
		}
		before, after := false, false
		for _, a := range acks {
			before, after = before || a.last <= del.Version, after || a.first > del.Version
			for v := a.first; v <= a.last; v++ {
				if v > del.Version && !visible[v] {
					t.Fatalf("seed %d: acknowledged version %d (append %d-%d) is not visible after a delete up to %d", seed, v, a.first, a.last, del.Version)
				}
			}
		}
		if before && after {
			interleaved++
		}
		b.SetFaults(nil)
		// Appends whose batches failed before they took effect left markers that only a fence
		// resolves: step on a clock that passes FenceAfter between steps.
		clock := &fakeClock{now: time.Unix(1e9, 0)}
		d := estuite.NewDispatcher(deleter, &estuite.DispatcherOptions{Clock: clock, FenceAfter: time.Second})
		for i := 0; ; i++ {
			st, err := d.Step(ctx)
			if err != nil {
				t.Fatalf("seed %d: Step: %v", seed, err)
			}
			if st.Streams == 0 {
				break
			}
			if i == 100 {
				t.Fatalf("seed %d: the dispatcher did not become idle", seed)
			}
			clock.Add(1100 * time.Millisecond)
		}
		feed := readFeedAll(t, deleter)
		version, _ := deleter.Version(ctx, "race")
		if errors.Is(err, estuite.ErrStreamNotFound) {
			version = del.Version
		}
		if int64(len(feed)) < version {
			t.Fatalf("seed %d: the feed holds %d events, the stream is at version %d", seed, len(feed), version)
		}
		for i, e := range feed {
			if e.Version != int64(i+1) || e.Position != int64(i+1) {
				t.Fatalf("seed %d: feed position %d holds version %d", seed, e.Position, e.Version)
			}
		}
	}
}

// A hard delete whose answer is lost is found done when it is retried, and an append that lost
// the race to it is refused, not written.
func TestHardDeleteWithALostAnswer(t *testing.T) {
	ctx := context.Background()
	s, lose := storeLosingAnAnswer(t)
	appendN(t, s, "lost", 2)
	lose.Store(true)
	res, err := s.Delete(ctx, "lost", &estuite.DeleteOptions{Hard: true, Expected: estuite.Exactly(2)})
	if err != nil || res.Version != 2 {
		t.Fatalf("Delete with a lost answer = %+v, %v; want it found done", res, err)
	}
	if _, err := s.Append(ctx, "lost", []estuite.EventData{jsonEvent("Late", "{}")}, &estuite.AppendOptions{Expected: estuite.Exactly(2)}); !errors.Is(err, estuite.ErrStreamDeleted) {
		t.Fatalf("append = %v; want ErrStreamDeleted", err)
	}
}

// Regressions found by the simulation's deletion seeds (sim_delete_test.go).

// A store whose cached head says the stream is soft-deleted must not answer a delete from it: the
// stream may have been recreated by another store since (simulation seed 6).
func TestDeleteOfStreamRecreatedByAnotherStore(t *testing.T) {
	ctx := context.Background()
	b := mem.New(nil)
	deleter, writer := openStore(t, b, nil), openStore(t, b, nil)
	appendN(t, deleter, "s", 2)
	if _, err := deleter.Delete(ctx, "s", nil); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, writer, "s", []estuite.EventData{jsonEvent("Recreated", "{}")}, &estuite.AppendOptions{Expected: estuite.NoStream})
	res, err := deleter.Delete(ctx, "s", &estuite.DeleteOptions{Expected: estuite.Exactly(2)})
	var wev *estuite.WrongExpectedVersionError
	if !errors.As(err, &wev) || wev.Actual != 3 {
		t.Fatalf("Delete expecting the cached version 2 of a stream recreated at 3 = %+v, %v; want a WrongExpectedVersionError at 3", res, err)
	}
	if res, err := deleter.Delete(ctx, "s", nil); err != nil || res.Version != 3 {
		t.Fatalf("Delete = %+v, %v; want version 3", res, err)
	}
	if _, err := writer.Read(ctx, "s", nil); !errors.Is(err, estuite.ErrStreamNotFound) {
		t.Fatalf("Read after deleting the recreated stream = %v; want ErrStreamNotFound", err)
	}
}

// An append whose cached head (from before another store's hard delete) refuses its expected
// version reads the head again, and must be refused on the tombstone it finds — not judged by the
// soft-deleted rules, which admit NoStream (simulation seeds 461, 475).
func TestAppendOnStaleHeadAfterHardDelete(t *testing.T) {
	ctx := context.Background()
	b := mem.New(nil)
	deleter := openStore(t, b, nil)
	appendN(t, deleter, "s", 2)
	exps := []estuite.ExpectedVersion{estuite.NoStream, estuite.Exactly(5), estuite.StreamExists}
	var writers []*estuite.Store
	for range exps {
		w := openStore(t, b, nil)
		readAll(t, w, "s", nil) // caches the head at version 2
		writers = append(writers, w)
	}
	if _, err := deleter.Delete(ctx, "s", &estuite.DeleteOptions{Hard: true}); err != nil {
		t.Fatal(err)
	}
	for i, exp := range exps {
		if _, err := writers[i].Append(ctx, "s", []estuite.EventData{jsonEvent("A", "{}")}, &estuite.AppendOptions{Expected: exp}); !errors.Is(err, estuite.ErrStreamDeleted) {
			t.Fatalf("append expecting %v on a stale cached head after a hard delete = %v; want ErrStreamDeleted", exp, err)
		}
	}
	if sh, _, _, err := deleter.ReadStored(ctx, "s"); err != nil || sh.Version != 2 || !sh.Tombstone {
		t.Fatalf("the hard-deleted stream's head is %+v (%v); want version 2, tombstoned", sh, err)
	}
}

// A read with a snapshot ignores one written before the stream's soft delete: it is the state of
// deleted events (simulation seeds 48, 307, 391, 496).
func TestReadIgnoresSnapshotFromBeforeDelete(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		ctx := context.Background()
		mustAppend(t, s, "s", []estuite.EventData{jsonEvent("A", "{}"), jsonEvent("B", "{}")},
			&estuite.AppendOptions{Snapshot: &estuite.Snapshot{Schema: 1, Data: []byte("old")}})
		if _, err := s.Delete(ctx, "s", nil); err != nil {
			t.Fatal(err)
		}
		mustAppend(t, s, "s", []estuite.EventData{jsonEvent("C", "{}")}, nil)
		r, err := s.Read(ctx, "s", &estuite.ReadOptions{WithSnapshot: true, SnapshotSchema: 1})
		if err != nil {
			t.Fatal(err)
		}
		var got []estuite.RecordedEvent
		for e, err := range r.Events {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, e)
		}
		if r.Snapshot != nil || !sameVersions(got, 3) {
			t.Fatalf("read with snapshot after a delete: snapshot %+v, events %v; want no snapshot and event 3", r.Snapshot, versions(got))
		}
		// A snapshot written since is used.
		mustAppend(t, s, "s", []estuite.EventData{jsonEvent("D", "{}")}, &estuite.AppendOptions{Snapshot: &estuite.Snapshot{Schema: 1, Data: []byte("new")}})
		mustAppend(t, s, "s", []estuite.EventData{jsonEvent("E", "{}")}, nil)
		r, err = s.Read(ctx, "s", &estuite.ReadOptions{WithSnapshot: true, SnapshotSchema: 1})
		if err != nil || r.Snapshot == nil || r.Snapshot.Version != 4 {
			t.Fatalf("read with a snapshot written after the delete = %+v, %v", r, err)
		}
	})
}

// A soft delete whose write landed but whose answer was lost is answered by what it finds on the
// head: deleted. It was judged again on its own effect: StreamExists refused on the stream it had
// just deleted (simulation seed 216), or, after an append recreated the stream meanwhile, the
// append's events deleted too. Storage that keeps failing makes an ErrUnavailable.
func TestDeleteWhoseAnswerWasLost(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	var lose, appendOnRead, failWrites bool
	var other *estuite.Store
	headWrite := func(c mem.Call) bool {
		return c.Method == mem.MethodSubmit && len(c.Ops) == 1 && c.Ops[0].Entity.RowKey == "H"
	}
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case failWrites && headWrite(c):
			return mem.FailBefore
		case lose && headWrite(c):
			lose = false
			return mem.FailAfter
		case appendOnRead && c.Method == mem.MethodGet && c.RowKey == "H":
			// The delete looks at the head after its lost answer: another store appends first.
			appendOnRead = false
			mu.Unlock()
			mustAppend(t, other, "b", []estuite.EventData{jsonEvent("After", "{}")}, &estuite.AppendOptions{Expected: estuite.NoStream})
			mu.Lock()
		}
		return mem.NoFault
	}})
	s, other := openStore(t, b, nil), openStore(t, b, nil)
	set := func(f *bool) { mu.Lock(); *f = true; mu.Unlock() }

	appendN(t, s, "a", 2)
	set(&lose)
	if res, err := s.Delete(ctx, "a", &estuite.DeleteOptions{Expected: estuite.StreamExists}); err != nil || res.Version != 2 {
		t.Fatalf("Delete expecting an existing stream, its answer lost = %+v, %v; want version 2", res, err)
	}

	appendN(t, s, "b", 2)
	set(&lose)
	set(&appendOnRead)
	if res, err := s.Delete(ctx, "b", nil); err != nil || res.Version != 2 {
		t.Fatalf("Delete, its answer lost and the stream recreated meanwhile = %+v, %v; want version 2", res, err)
	}
	if version, events := readAll(t, s, "b", nil); version != 3 || !sameVersions(events, 3) {
		t.Fatalf("after the delete and the append: version %d, events %v; want the appended event 3", version, versions(events))
	}

	appendN(t, s, "c", 1)
	set(&failWrites)
	if _, err := s.Delete(ctx, "c", nil); !errors.Is(err, estuite.ErrUnavailable) {
		t.Fatalf("Delete with storage failing = %v; want ErrUnavailable", err)
	}
}

// storeLosingAnAnswer returns a store on memory whose next stream-table write, once lose is set,
// takes effect and then fails as if its answer were lost.
func storeLosingAnAnswer(t *testing.T) (*estuite.Store, *atomic.Bool) {
	var lose atomic.Bool
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if lose.Load() && c.Method == mem.MethodSubmit && c.Table == "estuitestreams" {
			lose.Store(false)
			return mem.FailAfter
		}
		return mem.NoFault
	}})
	return openStore(t, b, nil), &lose
}
