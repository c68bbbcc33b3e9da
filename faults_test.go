package estuite_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/mem"
	"github.com/google/uuid"
)

func TestConcurrentExactAppendsWinEachVersionOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		const writers, winsEach = 32, 4
		var (
			mu  sync.Mutex
			won = map[int64]string{} // version -> writer/attempt that won it
			wg  sync.WaitGroup
		)
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				guess := int64(0)
				for wins, attempt := 0, 0; wins < winsEach; attempt++ {
					tag := fmt.Sprintf("w%d-a%d", w, attempt)
					res, err := s.Append(context.Background(), "contended", []estuite.EventData{jsonEvent("Won", fmt.Sprintf("%q", tag))},
						&estuite.AppendOptions{Expected: estuite.Exactly(guess)})
					var wev *estuite.WrongExpectedVersionError
					switch {
					case err == nil:
						mu.Lock()
						if prev, ok := won[res.LastVersion]; ok {
							t.Errorf("version %d won twice: by %s and %s", res.LastVersion, prev, tag)
						}
						won[res.LastVersion] = tag
						mu.Unlock()
						guess = res.LastVersion
						wins++
					case errors.As(err, &wev):
						guess = wev.Actual
					default:
						t.Errorf("writer %d: unexpected error %v", w, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		version, events := readAll(t, s, "contended", nil)
		if version != writers*winsEach || len(events) != writers*winsEach {
			t.Fatalf("stream has version %d and %d events; want %d", version, len(events), writers*winsEach)
		}
		for _, e := range events {
			if want := fmt.Sprintf("%q", won[e.Version]); string(e.Data) != want {
				t.Errorf("version %d holds %s, but %s won it", e.Version, e.Data, want)
			}
		}
	})
}

// fastRetry keeps fault tests quick.
var fastRetry = estuite.RetryPolicy{MaxAttempts: 4, BaseDelay: time.Microsecond, MaxDelay: 50 * time.Microsecond}

// TestEveryStorageCallFailingKeepsAppendsExactlyOnce fails each storage call of a scenario in
// turn, before and after its effect (a lost response), with and without the store's own retries.
// Every append must take effect exactly once or not at all, and a later retry with its commit ID
// must report the truth: the original versions when it had landed, a fresh commit otherwise.
func TestEveryStorageCallFailingKeepsAppendsExactlyOnce(t *testing.T) {
	type step struct {
		stream   string
		commitID string
		expected estuite.ExpectedVersion
		events   int
	}
	scenario := []step{
		{"s1", "c1", estuite.NoStream, 2},
		{"s1", "c2", estuite.Exactly(2), 1},
		{"s1", "c3", estuite.Any, 3},
		{"s2", "c4", estuite.Any, 1},
		{"s1", "c2", estuite.Exactly(2), 1}, // a retry of c2 after the stream moved on
		{"s2", "c5", estuite.StreamExists, 2},
	}
	for _, retry := range []estuite.RetryPolicy{{MaxAttempts: 1, BaseDelay: time.Microsecond, MaxDelay: time.Microsecond}, fastRetry} {
		for _, fault := range []mem.Fault{mem.FailBefore, mem.FailAfter} {
			for failAt := int64(1); failAt <= 40; failAt++ {
				name := fmt.Sprintf("attempts=%d/fault=%d/call=%d", retry.MaxAttempts, fault, failAt)
				t.Run(name, func(t *testing.T) {
					// The calls counted are the scenario's, after Open's.
					var armed atomic.Bool
					var calls atomic.Int64
					b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
						if armed.Load() && calls.Add(1) == failAt {
							return fault
						}
						return mem.NoFault
					}})
					s := openStore(t, b, &estuite.Options{Retry: retry})
					armed.Store(true)
					ctx := context.Background()
					committed, first := map[string]bool{}, map[string]int64{}
					for _, st := range scenario {
						events := make([]estuite.EventData, st.events)
						for i := range events {
							events[i] = jsonEvent("Step", fmt.Sprintf(`{"commit":%q,"i":%d}`, st.commitID, i))
						}
						res, err := s.Append(ctx, st.stream, events, &estuite.AppendOptions{CommitID: st.commitID, Expected: st.expected})
						if err != nil && !errors.Is(err, estuite.ErrUnavailable) {
							t.Fatalf("append %s: unexpected error %v", st.commitID, err)
						}
						if err == nil && res.Duplicate != committed[st.commitID] {
							t.Fatalf("append %s: duplicate = %v, but it had committed before: %v", st.commitID, res.Duplicate, committed[st.commitID])
						}
						if err != nil {
							// The truth, from a retry with the same commit ID and no expectations.
							b.SetFaults(nil)
							if res, err = s.Append(ctx, st.stream, events, &estuite.AppendOptions{CommitID: st.commitID}); err != nil {
								t.Fatalf("retry of %s: %v", st.commitID, err)
							}
						}
						if committed[st.commitID] && (res.FirstVersion != first[st.commitID]) {
							t.Fatalf("retry of %s reports first version %d, committed at %d", st.commitID, res.FirstVersion, first[st.commitID])
						}
						committed[st.commitID], first[st.commitID] = true, res.FirstVersion
					}
					b.SetFaults(nil)
					checkEachCommitOnce(t, s, map[string][]string{"s1": {"c1", "c2", "c3"}, "s2": {"c4", "c5"}})
				})
			}
		}
	}
}

// checkEachCommitOnce checks that each stream holds exactly the listed commits, each once, in
// order, with contiguous versions.
func checkEachCommitOnce(t *testing.T, s *estuite.Store, want map[string][]string) {
	t.Helper()
	for stream, commits := range want {
		_, events := readAll(t, s, stream, nil)
		var got []string
		for i, e := range events {
			if e.Version != int64(i+1) {
				t.Fatalf("%s: event %d has version %d", stream, i, e.Version)
			}
			if len(got) == 0 || got[len(got)-1] != e.CommitID {
				got = append(got, e.CommitID)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(commits) {
			t.Fatalf("%s holds commits %v; want %v each once", stream, got, commits)
		}
	}
}

// blindBackend hides which operation of a failed batch failed, as the Cosmos DB Table API may.
type blindBackend struct{ *mem.Backend }

func (b blindBackend) OpenTable(ctx context.Context, name string) (table.Table, error) {
	t, err := b.Backend.OpenTable(ctx, name)
	return blindTable{t}, err
}

type blindTable struct{ table.Table }

func (t blindTable) Submit(ctx context.Context, pk string, ops []table.Op) ([]string, error) {
	etags, err := t.Table.Submit(ctx, pk, ops)
	var be *table.BatchError
	if errors.As(err, &be) {
		return nil, &table.BatchError{Index: -1, Code: be.Code, Err: be.Err}
	}
	return etags, err
}

func TestFailedOperationOfUnknownIndexIsResolved(t *testing.T) {
	b := blindBackend{mem.New(nil)}
	s1 := openStore(t, b, nil)
	s2 := openStore(t, b, nil)
	ctx := context.Background()
	id := uuid.New()
	events := []estuite.EventData{{ID: id, Type: "A"}}
	mustAppend(t, s1, "blind", events, &estuite.AppendOptions{CommitID: "c1"})
	// A duplicate commit.
	if res, err := s1.Append(ctx, "blind", events, &estuite.AppendOptions{CommitID: "c1"}); err != nil || !res.Duplicate {
		t.Fatalf("retried commit = %+v, %v; want duplicate", res, err)
	}
	// A duplicate event ID.
	var de *estuite.DuplicateEventError
	if _, err := s1.Append(ctx, "blind", events, nil); !errors.As(err, &de) || de.EventID != id {
		t.Fatalf("duplicate event ID: %v", err)
	}
	// A head that moved: s2 appends, then s1's cached head is stale.
	mustAppend(t, s2, "blind", []estuite.EventData{jsonEvent("B", "{}")}, nil)
	if res, err := s1.Append(ctx, "blind", []estuite.EventData{jsonEvent("C", "{}")}, nil); err != nil || res.LastVersion != 3 {
		t.Fatalf("append over a stale head = %+v, %v; want version 3", res, err)
	}
}

// Concurrent appends share their dirty-marker writes: under load the marker costs an append a
// fraction of a request.
func TestConcurrentAnnouncementsShareBatches(t *testing.T) {
	b := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if c.Table == "estuiteevents" && c.Method == mem.MethodSubmit {
			time.Sleep(2 * time.Millisecond) // a slow marker write lets others queue behind it
		}
		return mem.NoFault
	}})
	s := openStore(t, b, nil)
	const writers, each = 16, 10
	before := s.RequestCounts()
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				mustAppend(t, s, fmt.Sprintf("shared-%d", w), []estuite.EventData{jsonEvent("E", "{}")}, nil)
			}
		}()
	}
	wg.Wait()
	d := s.RequestCounts().Sub(before)
	appendBatches := int64(writers * each)
	markerRequests := d.Writes + d.Batches - appendBatches
	if markerRequests <= 0 || markerRequests > appendBatches/2 {
		t.Fatalf("%d appends made %d marker requests; want them shared (at most %d)", appendBatches, markerRequests, appendBatches/2)
	}
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	var streams []string
	for w := 0; w < writers; w++ {
		streams = append(streams, fmt.Sprintf("shared-%d", w))
	}
	checkFeedMatchesStreams(t, s, streams)
}
