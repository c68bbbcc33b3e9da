package estuite_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/azuritetest"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/azure"
	"github.com/estuite/estuite/table/bolt"
	"github.com/estuite/estuite/table/mem"
)

// eraseEnv is one backend that several Stores share, with what a test needs to look at it raw.
type eraseEnv struct {
	backend  table.Backend // shared: closing a Store does not close it
	prefix   string
	boltPath string // the bbolt file, on bbolt
	close    func() error
}

// open opens a Store on the environment's backend with opts (nil: defaults).
func (env *eraseEnv) open(t *testing.T, opts *estuite.Options) *estuite.Store {
	t.Helper()
	var o estuite.Options
	if opts != nil {
		o = *opts
	}
	o.TablePrefix = env.prefix
	return openStore(t, env.backend, &o)
}

// sharedBackend is a backend that several Stores share: Store.Close leaves it open.
type sharedBackend struct{ table.Backend }

func (sharedBackend) Close() error { return nil }

// eraseBackends are mem, mem with small and empty pages, bbolt and Azurite.
var eraseBackends = []struct {
	name string
	open func(t *testing.T) *eraseEnv
}{
	{"mem", func(t *testing.T) *eraseEnv { return newEraseEnv(t, mem.New(nil), "estuite", "") }},
	{"mem-paged", func(t *testing.T) *eraseEnv {
		return newEraseEnv(t, mem.New(&mem.Options{PageSize: 3, EmptyPages: true}), "estuite", "")
	}},
	{"bolt", func(t *testing.T) *eraseEnv {
		path := filepath.Join(t.TempDir(), "estuite.db")
		b, err := bolt.Open(path, &bolt.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		return newEraseEnv(t, b, "estuite", path)
	}},
	{"azurite", func(t *testing.T) *eraseEnv {
		b, err := azure.Open(azuritetest.ConnectionString(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		return newEraseEnv(t, b, uniquePrefix(t), "")
	}},
}

func newEraseEnv(t *testing.T, b table.Backend, prefix, boltPath string) *eraseEnv {
	env := &eraseEnv{backend: sharedBackend{b}, prefix: prefix, boltPath: boltPath, close: b.Close}
	closed := false
	env.close = func() error {
		if closed {
			return nil
		}
		closed = true
		return b.Close()
	}
	t.Cleanup(func() { env.close() })
	return env
}

func forEachEraseBackend(t *testing.T, f func(t *testing.T, env *eraseEnv)) {
	for _, b := range eraseBackends {
		t.Run(b.name, func(t *testing.T) { f(t, b.open(t)) })
	}
}

var (
	masterKeyA = bytes.Repeat([]byte{0xa5}, 32)
	masterKeyB = bytes.Repeat([]byte{0x5a}, 32)
)

// subjectEvents are events of every shape a subject's event can take.
func subjectEvents(subject, tag string) []estuite.EventData {
	return []estuite.EventData{
		{Type: "Registered", Subject: subject, Data: []byte(fmt.Sprintf(`{"name":"%s-name"}`, tag)), Metadata: []byte(fmt.Sprintf(`{"ip":"%s-ip"}`, tag))},
		{Type: "Photo", Subject: subject, Format: estuite.Binary, Data: []byte(tag + "-photo\x00\xff")},
		{Type: "Touched", Subject: subject},
		{Type: "Plain", Data: []byte(`{"public":true}`)},
	}
}

// readEvents reads a whole stream's events.
func readEvents(t *testing.T, s *estuite.Store, stream string, opts *estuite.ReadOptions) []estuite.RecordedEvent {
	t.Helper()
	_, evs := readAll(t, s, stream, opts)
	return evs
}

// checkEvent compares a read event with what was appended; erased says whether its subject was
// forgotten.
func checkEvent(t *testing.T, where string, got estuite.RecordedEvent, want estuite.EventData, erased bool) {
	t.Helper()
	if got.Type != want.Type || got.Subject != want.Subject || got.Format != want.Format {
		t.Errorf("%s: got type %q subject %q format %v, want %q %q %v", where, got.Type, got.Subject, got.Format, want.Type, want.Subject, want.Format)
	}
	if erased {
		if !got.Erased || got.Data != nil || got.Metadata != nil {
			t.Errorf("%s: got erased %v, data %q, metadata %q; want erased without data or metadata", where, got.Erased, got.Data, got.Metadata)
		}
		return
	}
	if got.Erased || !bytes.Equal(got.Data, want.Data) || !bytes.Equal(got.Metadata, want.Metadata) ||
		(len(want.Data) == 0) != (got.Data == nil) || (len(want.Metadata) == 0) != (got.Metadata == nil) {
		t.Errorf("%s: got erased %v, data %q, metadata %q; want data %q, metadata %q", where, got.Erased, got.Data, got.Metadata, want.Data, want.Metadata)
	}
}

// Events that name a subject read back exactly as appended — from the stream, forward and
// backward, and from the feed — with and without a master key.
func TestSubjectEventsRoundTrip(t *testing.T) {
	for _, master := range []struct {
		name string
		key  []byte
	}{{"unwrapped", nil}, {"master key", masterKeyA}} {
		t.Run(master.name, func(t *testing.T) {
			forEachEraseBackend(t, func(t *testing.T, env *eraseEnv) {
				ctx := context.Background()
				s := env.open(t, &estuite.Options{MasterKey: master.key})
				events := subjectEvents("user-1", "rt")
				if _, err := s.Append(ctx, "profile-1", events, nil); err != nil {
					t.Fatal(err)
				}
				got := readEvents(t, s, "profile-1", nil)
				if len(got) != len(events) {
					t.Fatalf("read %d events, want %d", len(got), len(events))
				}
				for i, ev := range got {
					checkEvent(t, fmt.Sprintf("read[%d]", i), ev, events[i], false)
				}
				back := readEvents(t, s, "profile-1", &estuite.ReadOptions{Direction: estuite.Backward, Limit: 2})
				checkEvent(t, "backward[0]", back[0], events[3], false)
				checkEvent(t, "backward[1]", back[1], events[2], false)
				stepUntilIdle(t, estuite.NewDispatcher(s, nil))
				// A Store that has not cached the key reads the feed.
				other := env.open(t, &estuite.Options{MasterKey: master.key})
				feed := readFeedAll(t, other)
				if len(feed) != len(events) {
					t.Fatalf("feed has %d events, want %d", len(feed), len(events))
				}
				for i, ev := range feed {
					checkEvent(t, fmt.Sprintf("feed[%d]", i), ev.RecordedEvent, events[i], false)
				}
			})
		})
	}
}

// After Forget, every event of the subject — in every stream, in the feed, in a subscription —
// reads as erased, other subjects' events are untouched, and the subject cannot be used again.
func TestForgetErasesEverywhere(t *testing.T) {
	forEachEraseBackend(t, func(t *testing.T, env *eraseEnv) {
		ctx := context.Background()
		s := env.open(t, &estuite.Options{MasterKey: masterKeyA})
		alice, bob := subjectEvents("alice", "a"), subjectEvents("bob", "b")
		for _, stream := range []string{"profile-a", "orders-a"} {
			if _, err := s.Append(ctx, stream, alice, nil); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Append(ctx, "profile-b", bob, nil); err != nil {
			t.Fatal(err)
		}
		stepUntilIdle(t, estuite.NewDispatcher(s, nil))
		if f, err := s.SubjectForgotten(ctx, "alice"); err != nil || f {
			t.Fatalf("SubjectForgotten(alice) before Forget = %v, %v", f, err)
		}
		for range 2 { // idempotent
			if err := s.Forget(ctx, "alice"); err != nil {
				t.Fatal(err)
			}
		}
		// This Store and a fresh one (which never cached the key) both see it erased.
		fresh := env.open(t, &estuite.Options{MasterKey: masterKeyA})
		for name, st := range map[string]*estuite.Store{"same store": s, "fresh store": fresh} {
			for _, stream := range []string{"profile-a", "orders-a"} {
				for i, ev := range readEvents(t, st, stream, nil) {
					checkEvent(t, fmt.Sprintf("%s %s[%d]", name, stream, i), ev, alice[i], alice[i].Subject != "")
				}
			}
			for i, ev := range readEvents(t, st, "profile-b", nil) {
				checkEvent(t, fmt.Sprintf("%s profile-b[%d]", name, i), ev, bob[i], false)
			}
			for _, ev := range readFeedAll(t, st) {
				want := bob
				if strings.HasSuffix(ev.Stream, "-a") {
					want = alice
				}
				checkEvent(t, fmt.Sprintf("%s feed %d", name, ev.Position), ev.RecordedEvent, want[ev.Version-1], want[ev.Version-1].Subject == "alice")
			}
		}

		if f, err := s.SubjectForgotten(ctx, "alice"); err != nil || !f {
			t.Fatalf("SubjectForgotten(alice) = %v, %v", f, err)
		}
		if f, err := s.SubjectForgotten(ctx, "bob"); err != nil || f {
			t.Fatalf("SubjectForgotten(bob) = %v, %v", f, err)
		}

		// A subscription gets the erased events, without stalling on them.
		var mu sync.Mutex
		var got []estuite.FeedEvent
		done := make(chan struct{})
		sub, err := fresh.Subscribe(ctx, estuite.SubscriptionOptions{Handler: func(_ context.Context, ev estuite.FeedEvent) error {
			mu.Lock()
			defer mu.Unlock()
			if got = append(got, ev); len(got) == 3*len(alice) {
				close(done)
			}
			return nil
		}})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("the subscription did not deliver every event")
		}
		sub.Stop()
		erased := 0
		for _, ev := range got {
			if ev.Subject == "alice" {
				checkEvent(t, fmt.Sprintf("subscription %d", ev.Position), ev.RecordedEvent, alice[ev.Version-1], true)
				erased++
			}
		}
		if erased != 6 {
			t.Errorf("the subscription got %d erased events, want 6", erased)
		}

		// The forgotten subject cannot be used again, from either Store; nothing is written.
		for name, st := range map[string]*estuite.Store{"same store": s, "fresh store": fresh} {
			_, err := st.Append(ctx, "profile-a", []estuite.EventData{{Type: "Back", Subject: "alice", Data: []byte(`{}`)}}, nil)
			var fe *estuite.SubjectForgottenError
			if !errors.Is(err, estuite.ErrSubjectForgotten) || !errors.As(err, &fe) || fe.Subject != "alice" {
				t.Errorf("%s: append naming a forgotten subject: %v, want a *SubjectForgottenError", name, err)
			}
			if v, err := st.Version(ctx, "profile-a"); err != nil || v != int64(len(alice)) {
				t.Errorf("%s: version after the refused append = %d, %v; want %d", name, v, err, len(alice))
			}
		}
		// Forgetting a subject never used leaves a tombstone: it cannot be used either.
		if err := s.Forget(ctx, "carol"); err != nil {
			t.Fatal(err)
		}
		if _, err := fresh.Append(ctx, "c", []estuite.EventData{{Type: "T", Subject: "carol"}}, nil); !errors.Is(err, estuite.ErrSubjectForgotten) {
			t.Errorf("append naming a subject forgotten before its first use: %v", err)
		}
	})
}

// A Store that cached a subject's key stops using it within KeyCacheLifetime after another
// Store forgot the subject: then its reads are erased and its appends refused.
func TestForgetReachesOtherStoresWithinTheCacheLifetime(t *testing.T) {
	forEachEraseBackend(t, func(t *testing.T, env *eraseEnv) {
		ctx := context.Background()
		const lifetime = 300 * time.Millisecond
		a := env.open(t, nil)
		b := env.open(t, &estuite.Options{KeyCacheLifetime: lifetime})
		events := subjectEvents("dave", "d")[:1]
		if _, err := a.Append(ctx, "s", events, nil); err != nil {
			t.Fatal(err)
		}
		checkEvent(t, "before Forget", readEvents(t, b, "s", nil)[0], events[0], false) // b caches the key
		forgot := time.Now()
		if err := a.Forget(ctx, "dave"); err != nil {
			t.Fatal(err)
		}
		// Within the lifetime, b may still decrypt (that is the documented bound); past it, never.
		time.Sleep(lifetime - time.Since(forgot) + 10*time.Millisecond)
		checkEvent(t, "after the cache lifetime", readEvents(t, b, "s", nil)[0], events[0], true)
		if _, err := b.Append(ctx, "s", events, nil); !errors.Is(err, estuite.ErrSubjectForgotten) {
			t.Errorf("append after the cache lifetime: %v, want ErrSubjectForgotten", err)
		}
	})
}

// Subjects' keys cost no request per event: an append or read of a subject's events costs at
// most one key read per subject (and a key's first use one insert), then nothing more while the
// key is cached.
func TestSubjectKeysCostOneReadPerSubject(t *testing.T) {
	forEachEraseBackend(t, func(t *testing.T, env *eraseEnv) {
		ctx := context.Background()
		s := env.open(t, &estuite.Options{MasterKey: masterKeyA})
		batch := func(subject string) []estuite.EventData {
			var evs []estuite.EventData
			for i := range 40 {
				evs = append(evs, estuite.EventData{Type: "T", Subject: subject, Data: []byte(fmt.Sprintf(`{"i":%d}`, i))})
			}
			return evs
		}
		plain := batch("")
		cost := func(f func()) estuite.RequestCounts {
			before := s.RequestCounts()
			f()
			return s.RequestCounts().Sub(before)
		}
		appendTo := func(stream string, evs []estuite.EventData) func() {
			return func() {
				if _, err := s.Append(ctx, stream, evs, nil); err != nil {
					t.Fatal(err)
				}
			}
		}
		// Cold streams of the same shape: the sealed append differs by its key's first use only.
		basePlain := cost(appendTo("plain", plain))
		first := cost(appendTo("sealed", batch("erin")))
		if extra := first.Sub(basePlain); extra != (estuite.RequestCounts{PointReads: 1, Writes: 1}) {
			t.Errorf("first append naming a subject cost %+v more than a plain one, want one key read and one key insert", extra)
		}
		warmPlain := cost(appendTo("plain", plain))
		warm := cost(appendTo("sealed", batch("erin")))
		if warm != warmPlain {
			t.Errorf("second append naming the subject cost %+v, want a plain append's %+v", warm, warmPlain)
		}
		readPlain := cost(func() { readEvents(t, s, "plain", nil) })
		readSealed := cost(func() { readEvents(t, s, "sealed", nil) })
		if readSealed != readPlain {
			t.Errorf("reading 80 events of a cached subject cost %+v, want a plain read's %+v", readSealed, readPlain)
		}
		// A Store without the key cached: one key read for the whole read, and for the feed.
		fresh := env.open(t, &estuite.Options{MasterKey: masterKeyA})
		before := fresh.RequestCounts()
		readEvents(t, fresh, "plain", nil)
		readPlain = fresh.RequestCounts().Sub(before)
		before = fresh.RequestCounts()
		readEvents(t, fresh, "sealed", nil)
		if extra := fresh.RequestCounts().Sub(before).Sub(readPlain); extra != (estuite.RequestCounts{PointReads: 1}) {
			t.Errorf("a cold read of 80 events of one subject cost %+v more than a plain read, want one key read", extra)
		}
		stepUntilIdle(t, estuite.NewDispatcher(s, nil))
		feedStore := env.open(t, &estuite.Options{MasterKey: masterKeyA})
		before = feedStore.RequestCounts()
		feed := readFeedAll(t, feedStore)
		got := feedStore.RequestCounts().Sub(before)
		if len(feed) != 160 || got.PointReads != 1 {
			t.Errorf("a cold feed read of %d events (80 of one subject) made %d point reads, want 1 (the key)", len(feed), got.PointReads)
		}
	})
}

// Two Stores creating the same subject's key at once agree on one key: the row inserted first
// wins, the other Store reads it back, and every event decrypts. (Teeth: with fetchKey using its
// own new key when its insert finds the row existing, mem-slow-keys fails every time, bolt and
// Azurite most times.)
func TestConcurrentKeyCreationAgrees(t *testing.T) {
	// On memory, writes to the key table are slowed so that both Stores find no key before
	// either's insert lands: the race is certain there, not just likely.
	slowKeys := mem.New(&mem.Options{Faults: func(c mem.Call) mem.Fault {
		if c.Table == "estuitekeys" && c.Method == mem.MethodSubmit {
			time.Sleep(20 * time.Millisecond)
		}
		return mem.NoFault
	}})
	t.Run("mem-slow-keys", func(t *testing.T) { checkConcurrentKeyCreation(t, newEraseEnv(t, slowKeys, "estuite", "")) })
	forEachEraseBackend(t, checkConcurrentKeyCreation)
}

func checkConcurrentKeyCreation(t *testing.T, env *eraseEnv) {
	ctx := context.Background()
	stores := []*estuite.Store{env.open(t, &estuite.Options{MasterKey: masterKeyA}), env.open(t, &estuite.Options{MasterKey: masterKeyA})}
	const subjects, writers = 5, 4
	var wg sync.WaitGroup
	errs := make(chan error, subjects*writers)
	for subj := range subjects {
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				data := []byte(fmt.Sprintf(`{"w":%d}`, w))
				_, err := stores[w%2].Append(ctx, fmt.Sprintf("s%d-w%d", subj, w), []estuite.EventData{{Type: "T", Subject: fmt.Sprintf("subject-%d", subj), Data: data}}, nil)
				errs <- err
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	reader := env.open(t, &estuite.Options{MasterKey: masterKeyA})
	for subj := range subjects {
		for w := range writers {
			ev := readEvents(t, reader, fmt.Sprintf("s%d-w%d", subj, w), nil)[0]
			if want := fmt.Sprintf(`{"w":%d}`, w); string(ev.Data) != want || ev.Erased {
				t.Errorf("subject %d writer %d: read %q (erased %v), want %s", subj, w, ev.Data, ev.Erased, want)
			}
		}
	}
}

// A retried commit naming a subject is a duplicate, also from a Store that has not cached the
// key; the same commit ID with other data of the subject is a commit conflict.
func TestRetriedSealedCommitIsADuplicate(t *testing.T) {
	forEachEraseBackend(t, func(t *testing.T, env *eraseEnv) {
		ctx := context.Background()
		evs := []estuite.EventData{{Type: "T", Subject: "hal", Data: []byte(`{"a":1}`), Metadata: []byte(`{"m":1}`)}}
		opts := &estuite.AppendOptions{CommitID: "c-1"}
		if _, err := env.open(t, &estuite.Options{MasterKey: masterKeyA}).Append(ctx, "h", evs, opts); err != nil {
			t.Fatal(err)
		}
		other := env.open(t, &estuite.Options{MasterKey: masterKeyA})
		res, err := other.Append(ctx, "h", evs, opts)
		if err != nil || !res.Duplicate || res.FirstVersion != 1 {
			t.Fatalf("retry: %+v, %v; want a duplicate of version 1", res, err)
		}
		changed := []estuite.EventData{{Type: "T", Subject: "hal", Data: []byte(`{"a":2}`), Metadata: []byte(`{"m":1}`)}}
		if _, err := other.Append(ctx, "h", changed, opts); !errors.Is(err, estuite.ErrCommitConflict) {
			t.Fatalf("the commit ID with other data: %v, want ErrCommitConflict", err)
		}
		unsealed := []estuite.EventData{{Type: "T", Data: []byte(`{"a":1}`), Metadata: []byte(`{"m":1}`)}}
		if _, err := other.Append(ctx, "h", unsealed, opts); !errors.Is(err, estuite.ErrCommitConflict) {
			t.Fatalf("the commit ID without the subject: %v, want ErrCommitConflict", err)
		}
		// Once the subject is forgotten, a retry is still the duplicate it is; a new commit is refused.
		if err := other.Forget(ctx, "hal"); err != nil {
			t.Fatal(err)
		}
		res, err = env.open(t, nil).Append(ctx, "h", evs, opts)
		if err != nil || !res.Duplicate || res.FirstVersion != 1 {
			t.Fatalf("retry after Forget: %+v, %v; want a duplicate of version 1", res, err)
		}
		if _, err := other.Append(ctx, "h", evs, &estuite.AppendOptions{CommitID: "c-2"}); !errors.Is(err, estuite.ErrSubjectForgotten) {
			t.Fatalf("a new commit after Forget: %v, want ErrSubjectForgotten", err)
		}
	})
}
