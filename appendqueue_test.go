package estuite_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/bolt"
	"github.com/estuite/estuite/table/mem"
	"github.com/google/uuid"
)

// hotBackends are the backends of the hot-stream tests: memory, with a little latency on stream
// batches so that appends overlap, and the embedded store.
var hotBackends = []backendCase{
	{"mem", func(t *testing.T) *estuite.Store {
		return openStore(t, mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
			if c.Table == "estuitestreams" && c.Method == mem.MethodSubmit {
				time.Sleep(200 * time.Microsecond)
			}
			return mem.NoFault
		}}), nil)
	}},
	{"bolt", func(t *testing.T) *estuite.Store {
		b, err := bolt.Open(filepath.Join(t.TempDir(), "estuite.db"), &bolt.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		return openStore(t, b, nil)
	}},
}

// Many goroutines appending with expected version Any to one stream of one store do not fight:
// none fails, their versions are distinct and contiguous, the stream holds each append once, the
// feed gets every event once, and a retry of each commit ID returns the original versions.
func TestConcurrentAnyAppendsToOneStreamAllLand(t *testing.T) {
	for _, bc := range hotBackends {
		t.Run(bc.name, func(t *testing.T) {
			s := bc.open(t)
			const writers, each = 32, 15
			type landed struct {
				commit      string
				events      []estuite.EventData
				first, last int64
			}
			var mu sync.Mutex
			var all []landed
			before := s.RequestCounts()
			var wg sync.WaitGroup
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < each; i++ {
						commit := fmt.Sprintf("w%d-%d", w, i)
						events := make([]estuite.EventData, 1+(w+i)%3)
						for j := range events {
							events[j] = jsonEvent("Hot", fmt.Sprintf(`{"commit":%q,"j":%d}`, commit, j))
						}
						res, err := s.Append(context.Background(), "hot", events, &estuite.AppendOptions{CommitID: commit})
						if err != nil {
							t.Errorf("append %s: %v", commit, err)
							return
						}
						if res.Duplicate || res.LastVersion-res.FirstVersion+1 != int64(len(events)) {
							t.Errorf("append %s: %+v", commit, res)
						}
						mu.Lock()
						all = append(all, landed{commit, events, res.FirstVersion, res.LastVersion})
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			d := s.RequestCounts().Sub(before)
			// Alone, each append would be at least one batch (and, on memory, a marker write):
			// queued appends share them.
			if d.Batches >= writers*each {
				t.Errorf("%d appends made %d batches; want them combined", writers*each, d.Batches)
			}
			t.Logf("%d appends: %+v", writers*each, d)

			sort.Slice(all, func(i, j int) bool { return all[i].first < all[j].first })
			next := int64(1)
			for _, l := range all {
				if l.first != next {
					t.Fatalf("append %s got versions %d-%d; want it to start at %d", l.commit, l.first, l.last, next)
				}
				next = l.last + 1
			}
			version, events := readAll(t, s, "hot", nil)
			if version != next-1 || int64(len(events)) != version {
				t.Fatalf("stream at version %d with %d events; the appends reported %d", version, len(events), next-1)
			}
			for _, l := range all {
				for j := range l.events {
					if e := events[l.first-1+int64(j)]; e.CommitID != l.commit || string(e.Data) != string(l.events[j].Data) {
						t.Fatalf("version %d holds %s of %s; want event %d of %s", e.Version, e.Data, e.CommitID, j, l.commit)
					}
				}
			}
			for _, l := range all[:20] {
				res, err := s.Append(context.Background(), "hot", l.events, &estuite.AppendOptions{CommitID: l.commit})
				if err != nil || !res.Duplicate || res.FirstVersion != l.first || res.LastVersion != l.last {
					t.Fatalf("retry of %s: %+v, %v; want duplicate at %d-%d", l.commit, res, err, l.first, l.last)
				}
			}
			stepUntilIdle(t, estuite.NewDispatcher(s, nil))
			checkFeedMatchesStreams(t, s, []string{"hot"})
		})
	}
}

// gatedStore is a store on memory whose first stream batch after the appends to warm waits
// until the returned function is called: the append that sends it leads, and the appends made
// meanwhile queue behind it.
func gatedStore(t *testing.T, warm ...string) (*estuite.Store, func()) {
	gate := make(chan struct{})
	var armed atomic.Bool
	b := mem.New(nil)
	b.SetFaults(func(c mem.Call) mem.Fault {
		if c.Table == "estuitestreams" && c.Method == mem.MethodSubmit && armed.CompareAndSwap(true, false) {
			<-gate
		}
		return mem.NoFault
	})
	s := openStore(t, b, nil)
	for _, stream := range warm {
		mustAppend(t, s, stream, []estuite.EventData{jsonEvent("Warm", "{}")}, nil)
	}
	armed.Store(true)
	var once sync.Once
	return s, func() { once.Do(func() { close(gate) }) }
}

// queued is one append made behind a blocked leader, and its answer.
type queued struct {
	name string
	opts estuite.AppendOptions
	evs  []estuite.EventData
	res  estuite.AppendResult
	err  error
	ctx  context.Context
}

// appendQueued makes the appends one after the other while the first (the leader) is blocked,
// pausing after each so that they queue in the order given (the pause orders arrivals; nothing
// is timed), then releases the leader and waits for all answers.
func appendQueued(t *testing.T, s *estuite.Store, release func(), stream string, qs []*queued) {
	t.Helper()
	var wg sync.WaitGroup
	for _, q := range qs {
		if q.evs == nil {
			q.evs = []estuite.EventData{jsonEvent("Q", fmt.Sprintf(`{"name":%q}`, q.name))}
		}
		if q.ctx == nil {
			q.ctx = context.Background()
		}
		if q.opts.CommitID == "" {
			q.opts.CommitID = q.name
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			q.res, q.err = s.Append(q.ctx, stream, q.evs, &q.opts)
		}()
		time.Sleep(30 * time.Millisecond)
	}
	release()
	wg.Wait()
}

// Appends queued behind one leader are checked in queue order against the version the appends
// before them bring the stream to. A refused one is answered with a version the stream's head
// really had: the head its batch landed on, or the head once it landed (a version reached only
// part-way through a combined batch was never a head, so such an append is judged again on the
// head as stored); the commit ID of a refused append is looked up first.
func TestQueuedExpectedVersionsAreCheckedInOrder(t *testing.T) {
	s, release := gatedStore(t)
	qs := []*queued{
		{name: "lead", opts: estuite.AppendOptions{Expected: estuite.NoStream}}, // → 1
		{name: "nostream", opts: estuite.AppendOptions{Expected: estuite.NoStream}},
		{name: "exact1", opts: estuite.AppendOptions{Expected: estuite.Exactly(1)}}, // → 2
		{name: "exact1-again", opts: estuite.AppendOptions{Expected: estuite.Exactly(1)}},
		{name: "any", opts: estuite.AppendOptions{Expected: estuite.Any}},           // → 3
		{name: "exact3", opts: estuite.AppendOptions{Expected: estuite.Exactly(3)}}, // → 4
		{name: "exact9", opts: estuite.AppendOptions{Expected: estuite.Exactly(9)}},
		{name: "exists", opts: estuite.AppendOptions{Expected: estuite.StreamExists}}, // → 5
	}
	before := s.RequestCounts()
	appendQueued(t, s, release, "order", qs)
	want := map[string]int64{"lead": 1, "exact1": 2, "any": 3, "exact3": 4, "exists": 5}
	refusedAt := map[string]int64{"nostream": 1, "exact1-again": 5, "exact9": 5}
	for _, q := range qs {
		if v, ok := want[q.name]; ok {
			if q.err != nil || q.res.FirstVersion != v || q.res.Duplicate {
				t.Errorf("%s: %+v, %v; want version %d", q.name, q.res, q.err, v)
			}
			continue
		}
		var wev *estuite.WrongExpectedVersionError
		if !errors.As(q.err, &wev) || wev.Actual != refusedAt[q.name] || wev.Expected != q.opts.Expected {
			t.Errorf("%s: %+v, %v; want a WrongExpectedVersionError with Actual %d", q.name, q.res, q.err, refusedAt[q.name])
		}
	}
	// The leader: a marker and a batch. The seven queued behind it: one marker, one batch, a
	// commit lookup for each of the three refused, and one head read to judge the two refused
	// part-way through the batch on the head as stored.
	d := s.RequestCounts().Sub(before)
	if d.Writes != 2 || d.Batches != 2 || d.PointReads != 4 || d.Total() != 8 {
		t.Errorf("requests: %+v; want 2 marker writes, 2 batches, 3 commit lookups and a head read", d)
	}
	got := commitIDs(t, s, "order")
	if fmt.Sprint(got) != "[lead exact1 any exact3 exists]" {
		t.Errorf("stream holds %v", got)
	}
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	checkFeedMatchesStreams(t, s, []string{"order"})
}

// N appends queued behind a leader cost one dirty-marker write and one batch together; a lone
// append costs what it always did.
func TestCoalescedAppendsCostOneMarkerAndOneBatch(t *testing.T) {
	s, release := gatedStore(t, "coalesced")
	const n = 30
	one := []estuite.EventData{jsonEvent("E", "{}")}
	before := s.RequestCounts()
	var wg sync.WaitGroup
	for i := 0; i <= n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Append(context.Background(), "coalesced", one, nil); err != nil {
				t.Error(err)
			}
		}()
		if i == 0 {
			time.Sleep(30 * time.Millisecond) // the leader first (orders arrivals; nothing is timed)
		}
	}
	time.Sleep(100 * time.Millisecond) // let the others queue behind it
	release()
	wg.Wait()
	d := s.RequestCounts().Sub(before)
	if d.Writes != 2 || d.Batches != 2 || d.Total() != 4 {
		t.Errorf("a leader and %d appends queued behind it: %+v requests; want 2 marker writes and 2 batches", n, d)
	}
	if v, _ := readAll(t, s, "coalesced", nil); v != n+2 {
		t.Errorf("stream at version %d; want %d", v, n+2)
	}
	if d := requestsOf(s, func() { mustAppend(t, s, "coalesced", one, nil) }); d.Writes != 1 || d.Batches != 1 || d.Total() != 2 {
		t.Errorf("a lone warm append: %+v requests; want a marker write and a batch", d)
	}
	if d := requestsOf(s, func() { mustAppend(t, s, "lone", one, &estuite.AppendOptions{Expected: estuite.NoStream}) }); d.Total() != 2 {
		t.Errorf("a lone append creating a stream: %+v requests; want a marker write and a batch", d)
	}
}

// In a queued batch, an append whose event ID the stream holds fails alone with a
// DuplicateEventError, a retried commit is answered with its original result, two appends with
// the same new event ID land once, and the others land.
func TestQueuedAppendFailuresStayWithTheirAppend(t *testing.T) {
	s, release := gatedStore(t)
	old, fresh := uuid.New(), uuid.New()
	qs := []*queued{
		{name: "lead", evs: []estuite.EventData{{ID: old, Type: "Old"}}}, // → 1
		{name: "a"}, // → 2
		{name: "dup-old", evs: []estuite.EventData{{ID: old, Type: "X"}}}, // holds old's ID
		{name: "lead", evs: []estuite.EventData{{ID: old, Type: "Old"}}},  // a retry of lead
		{name: "fresh1", evs: []estuite.EventData{{ID: fresh, Type: "F"}}},
		{name: "fresh2", evs: []estuite.EventData{{ID: fresh, Type: "F"}, jsonEvent("G", "{}")}},
		{name: "b"},
	}
	appendQueued(t, s, release, "dups", qs)
	var de *estuite.DuplicateEventError
	if qs[0].err != nil || qs[0].res.FirstVersion != 1 {
		t.Fatalf("lead: %+v, %v", qs[0].res, qs[0].err)
	}
	for _, q := range []*queued{qs[1], qs[6]} {
		if q.err != nil || q.res.Duplicate {
			t.Errorf("%s: %+v, %v; want it to land", q.name, q.res, q.err)
		}
	}
	if !errors.As(qs[2].err, &de) || de.EventID != old {
		t.Errorf("dup-old: %v; want a DuplicateEventError for %s", qs[2].err, old)
	}
	if r := qs[3].res; qs[3].err != nil || !r.Duplicate || r.FirstVersion != 1 || r.LastVersion != 1 {
		t.Errorf("retried lead: %+v, %v; want the original versions 1-1 as a duplicate", r, qs[3].err)
	}
	if qs[4].err != nil || !errors.As(qs[5].err, &de) || de.EventID != fresh {
		t.Errorf("same new event ID twice: %v and %v; want the first to land and the second refused", qs[4].err, qs[5].err)
	}
	got := commitIDs(t, s, "dups")
	if fmt.Sprint(got) != "[lead a fresh1 b]" {
		t.Errorf("stream holds %v; want [lead a fresh1 b]", got)
	}
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	checkFeedMatchesStreams(t, s, []string{"dups"})
}

// A queued append whose caller gives up before its batch is sent is not written, and the
// others are not held up by it.
func TestCanceledQueuedAppendIsNotWritten(t *testing.T) {
	s, release := gatedStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	qs := []*queued{{name: "lead"}, {name: "canceled", ctx: ctx}, {name: "after"}}
	appendQueued(t, s, func() { cancel(); time.Sleep(10 * time.Millisecond); release() }, "cancel", qs)
	if qs[0].err != nil || qs[2].err != nil || !errors.Is(qs[1].err, context.Canceled) {
		t.Fatalf("answers: %v, %v, %v; want the middle one canceled", qs[0].err, qs[1].err, qs[2].err)
	}
	_, events := readAll(t, s, "cancel", nil)
	if len(events) != 2 || events[0].CommitID != "lead" || events[1].CommitID != "after" {
		t.Fatalf("stream holds %d events: %+v", len(events), events)
	}
}

// When other processes move the head under every attempt, the append gives up with a
// ContentionError — not ErrUnavailable: storage answered, and nothing was written.
func TestPersistentContentionIsContentionNotUnavailable(t *testing.T) {
	b := mem.New(nil)
	s := openStore(t, b, nil)
	mustAppend(t, s, "busy", []estuite.EventData{jsonEvent("E", "{}")}, nil)
	streams, err := b.Table("estuitestreams")
	if err != nil {
		t.Fatal(err)
	}
	var fences atomic.Int64
	b.SetFaults(func(c mem.Call) mem.Fault {
		if c.Table == "estuitestreams" && c.Method == mem.MethodSubmit && len(c.Ops) > 1 {
			// Another process writes the head just before each batch.
			fences.Add(1)
			head := table.Entity{PartitionKey: c.PartitionKey, RowKey: "H", Properties: map[string]any{"Version": int64(1), "Format": int64(1)}}
			if _, err := streams.Submit(context.Background(), c.PartitionKey, []table.Op{{Kind: table.Replace, Entity: head, IfMatch: table.AnyETag}}); err != nil {
				t.Error(err)
			}
		}
		return mem.NoFault
	})
	_, err = s.Append(context.Background(), "busy", []estuite.EventData{jsonEvent("E", "{}")}, nil)
	var ce *estuite.ContentionError
	if !errors.As(err, &ce) || !errors.Is(err, estuite.ErrContention) || errors.Is(err, estuite.ErrUnavailable) || ce.Stream != "busy" {
		t.Fatalf("append under persistent contention: %v; want a ContentionError, not ErrUnavailable", err)
	}
	if ce.Attempts != int(fences.Load()) || ce.Attempts < 2 {
		t.Errorf("ContentionError says %d attempts; %d batches were sent", ce.Attempts, fences.Load())
	}
	b.SetFaults(nil)
	if v, _ := readAll(t, s, "busy", nil); v != 1 {
		t.Fatalf("stream at version %d after a refused append; want 1", v)
	}
}

// Lost responses and transient failures of combined batches are settled by the commit rows: with
// faults on every kind of call, each append to a hot stream lands once or not at all, and a
// retry of its commit ID (faults off) tells which, with the versions it landed at.
func TestFaultyCombinedBatchesKeepEachAppendOnce(t *testing.T) {
	for seed := uint64(1); seed <= 16; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			var mu sync.Mutex
			r := rand.New(rand.NewPCG(seed, 7))
			b := mem.New(nil)
			b.SetFaults(func(c mem.Call) mem.Fault {
				mu.Lock()
				defer mu.Unlock()
				switch x := r.Float64(); {
				case x < 0.1:
					return mem.FailBefore
				case x < 0.2:
					return mem.FailAfter
				}
				if c.Table == "estuitestreams" && c.Method == mem.MethodSubmit {
					time.Sleep(100 * time.Microsecond) // let appends queue
				}
				return mem.NoFault
			})
			s := openStore(t, b, &estuite.Options{Retry: fastRetry})
			const writers, each = 12, 8
			type outcome struct {
				res estuite.AppendResult
				err error
			}
			results := make([][]outcome, writers)
			var wg sync.WaitGroup
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < each; i++ {
						res, err := s.Append(context.Background(), "faulty", commitEvents(w, i), &estuite.AppendOptions{CommitID: fmt.Sprintf("w%d-%d", w, i)})
						results[w] = append(results[w], outcome{res, err})
					}
				}()
			}
			wg.Wait()
			b.SetFaults(nil)
			var commits []estuite.AppendResult
			for w := range results {
				for i, o := range results[w] {
					if o.err != nil && !errors.Is(o.err, estuite.ErrUnavailable) {
						t.Fatalf("w%d-%d: unexpected error %v", w, i, o.err)
					}
					res, err := s.Append(context.Background(), "faulty", commitEvents(w, i), &estuite.AppendOptions{CommitID: fmt.Sprintf("w%d-%d", w, i)})
					if err != nil {
						t.Fatalf("retry of w%d-%d: %v", w, i, err)
					}
					if o.err == nil && (!res.Duplicate || res.FirstVersion != o.res.FirstVersion || o.res.Duplicate) {
						t.Fatalf("w%d-%d: answered %+v, its retry %+v", w, i, o.res, res)
					}
					commits = append(commits, res)
				}
			}
			sort.Slice(commits, func(i, j int) bool { return commits[i].FirstVersion < commits[j].FirstVersion })
			next := int64(1)
			for _, c := range commits {
				if c.FirstVersion != next {
					t.Fatalf("commit %s at %d-%d; want it to start at %d", c.CommitID, c.FirstVersion, c.LastVersion, next)
				}
				next = c.LastVersion + 1
			}
			version, events := readAll(t, s, "faulty", nil)
			if version != next-1 || int64(len(events)) != version {
				t.Fatalf("stream at version %d with %d events; the commits cover %d", version, len(events), next-1)
			}
			for _, c := range commits {
				for v := c.FirstVersion; v <= c.LastVersion; v++ {
					if events[v-1].CommitID != c.CommitID {
						t.Fatalf("version %d belongs to %s, not %s", v, events[v-1].CommitID, c.CommitID)
					}
				}
			}
			// Appends that gave up may have left markers of batches that never landed: the
			// dispatcher fences them at once.
			stepUntilIdle(t, estuite.NewDispatcher(s, &estuite.DispatcherOptions{FenceAfter: time.Nanosecond}))
			checkFeedMatchesStreams(t, s, []string{"faulty"})
		})
	}
}

// commitEvents are the events of writer w's i-th commit: one to three of them.
func commitEvents(w, i int) []estuite.EventData {
	events := make([]estuite.EventData, 1+(w+i)%3)
	for j := range events {
		events[j] = jsonEvent("F", fmt.Sprintf(`{"w":%d,"i":%d,"j":%d}`, w, i, j))
	}
	return events
}

// commitIDs returns the commit ID of each event of stream, in version order.
func commitIDs(t *testing.T, s *estuite.Store, stream string) []string {
	t.Helper()
	_, events := readAll(t, s, stream, nil)
	var ids []string
	for _, e := range events {
		ids = append(ids, e.CommitID)
	}
	return ids
}
