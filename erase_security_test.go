package estuite_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/mem"
)

// What must never be written and what must never be read: no plaintext of a subject in storage,
// no key without the right master key, no ciphertext opened in another row, no event past the
// limits, no bad subject.

// A store opened with another master key, or none, than the one that wrapped a subject's key
// gets a clear ErrMasterKey — reading and appending — and writes nothing; the right key still
// reads. A master key of the wrong size is refused by Open.
func TestWrongMasterKeyIsAClearError(t *testing.T) {
	forEachEraseBackend(t, func(t *testing.T, env *eraseEnv) {
		ctx := context.Background()
		right := env.open(t, &estuite.Options{MasterKey: masterKeyA})
		events := subjectEvents("frank", "f")
		if _, err := right.Append(ctx, "s", events, nil); err != nil {
			t.Fatal(err)
		}
		for name, key := range map[string][]byte{"other key": masterKeyB, "no key": nil} {
			wrong := env.open(t, &estuite.Options{MasterKey: key})
			read, err := wrong.Read(ctx, "s", nil)
			if err != nil {
				t.Fatal(err)
			}
			var readErr error
			for _, err := range read.Events {
				if err != nil {
					readErr = err
				}
			}
			if !errors.Is(readErr, estuite.ErrMasterKey) {
				t.Errorf("%s: read: %v, want ErrMasterKey", name, readErr)
			}
			if _, err := wrong.Append(ctx, "s", events[:1], nil); !errors.Is(err, estuite.ErrMasterKey) {
				t.Errorf("%s: append: %v, want ErrMasterKey", name, err)
			}
			if v, _ := wrong.Version(ctx, "s"); v != int64(len(events)) {
				t.Errorf("%s: the refused append wrote: version %d", name, v)
			}
		}
		for i, ev := range readEvents(t, right, "s", nil) {
			checkEvent(t, fmt.Sprintf("right key [%d]", i), ev, events[i], false)
		}
		if _, err := estuite.Open(ctx, env.backend, &estuite.Options{TablePrefix: env.prefix, MasterKey: []byte("short")}); !errors.Is(err, estuite.ErrInvalidInput) {
			t.Errorf("Open with a 5-byte master key: %v, want ErrInvalidInput", err)
		}
	})
}

// No plaintext of a subject's data or metadata reaches any table, nor the bbolt file: neither
// before nor after Forget, with or without a master key — nor of a snapshot that names the
// subject. A plain event's data and a plain snapshot's, written the same way, are found by the
// same scan (the scan can fail).
func TestNoSubjectPlaintextInStorage(t *testing.T) {
	for _, master := range [][]byte{nil, masterKeyA} {
		t.Run(fmt.Sprintf("master key %v", master != nil), func(t *testing.T) {
			forEachEraseBackend(t, func(t *testing.T, env *eraseEnv) {
				ctx := context.Background()
				s := env.open(t, &estuite.Options{MasterKey: master})
				secret := func(who string) []estuite.EventData {
					return []estuite.EventData{
						{Type: "T", Subject: who, Data: []byte(`{"c":"CANARYDATA` + who + `"}`), Metadata: []byte(`{"c":"CANARYMETA` + who + `"}`)},
						{Type: "B", Subject: who, Format: estuite.Binary, Data: []byte("CANARYBIN" + who)},
					}
				}
				// Each subject's stream carries a snapshot of its state, sealed under the subject
				// (and a second stream one of both subjects' states); the public stream a plain
				// snapshot, which the scan must find.
				for _, who := range []string{"kept", "gone"} {
					sn := &estuite.Snapshot{Data: []byte("CANARYSNAP" + who), Subjects: []string{who}}
					if _, err := s.Append(ctx, "p-"+who, secret(who), &estuite.AppendOptions{Snapshot: sn}); err != nil {
						t.Fatal(err)
					}
				}
				both := &estuite.Snapshot{Schema: 2, Data: []byte(`{"s":"CANARYSNAPboth"}`), Subjects: []string{"kept", "gone"}}
				if _, err := s.Append(ctx, "p-both", secret("kept"), &estuite.AppendOptions{Snapshot: both}); err != nil {
					t.Fatal(err)
				}
				public := &estuite.Snapshot{Data: []byte("CONTROLSNAP")}
				if _, err := s.Append(ctx, "public", []estuite.EventData{{Type: "T", Data: []byte(`{"c":"CONTROLPLAIN"}`)}}, &estuite.AppendOptions{Snapshot: public}); err != nil {
					t.Fatal(err)
				}
				stepUntilIdle(t, estuite.NewDispatcher(s, nil))
				if err := s.Forget(ctx, "gone"); err != nil {
					t.Fatal(err)
				}
				stepUntilIdle(t, estuite.NewDispatcher(s, nil))
				canaries := []string{"CANARYDATA", "CANARYMETA", "CANARYBIN", "CANARYSNAP"}
				controls := []string{"CONTROLPLAIN", "CONTROLSNAP"}
				found := map[string]bool{}
				for _, suffix := range []string{"streams", "events", "keys"} {
					tab, err := env.backend.OpenTable(ctx, env.prefix+suffix)
					if err != nil {
						t.Fatal(err)
					}
					q := table.ScanQuery{}
					for {
						page, err := tab.Scan(ctx, q)
						if err != nil {
							t.Fatal(err)
						}
						for _, e := range page.Entities {
							all := e.PartitionKey + e.RowKey
							for k, v := range e.Properties {
								all += k + fmt.Sprintf("%s", v)
							}
							for _, c := range append(canaries, controls...) {
								if strings.Contains(all, c) {
									found[c] = true
								}
							}
						}
						if page.Continuation == "" {
							break
						}
						q.Continuation = page.Continuation
					}
				}
				for _, c := range controls {
					if !found[c] {
						t.Fatalf("the scan did not find the plain %s: it cannot find anything", c)
					}
				}
				for _, c := range canaries {
					if found[c] {
						t.Errorf("plaintext %s found in a table", c)
					}
				}
				if env.boltPath != "" {
					s.Close()
					if err := env.close(); err != nil {
						t.Fatal(err)
					}
					raw, err := os.ReadFile(env.boltPath)
					if err != nil {
						t.Fatal(err)
					}
					for _, c := range controls {
						if !bytes.Contains(raw, []byte(c)) {
							t.Fatalf("the bbolt file does not hold the plain %s: the scan cannot find anything", c)
						}
					}
					for _, c := range canaries {
						if bytes.Contains(raw, []byte(c)) {
							t.Errorf("plaintext %s found in the bbolt file", c)
						}
					}
				}
			})
		})
	}
}

// A bad subject is an *InvalidInputError, and nothing is written: no event, no key.
func TestBadSubjectWritesNothing(t *testing.T) {
	forEachEraseBackend(t, func(t *testing.T, env *eraseEnv) {
		ctx := context.Background()
		s := env.open(t, nil)
		for _, subject := range []string{strings.Repeat("x", estuite.MaxSubjectLength+1), "a\nb", "bad\xffutf8"} {
			_, err := s.Append(ctx, "s", []estuite.EventData{{Type: "T"}, {Type: "T", Subject: subject}}, nil)
			var inv *estuite.InvalidInputError
			if !errors.As(err, &inv) || inv.Field != "events[1].subject" {
				t.Errorf("subject %q: %v, want an *InvalidInputError on events[1].subject", subject, err)
			}
			if err := s.Forget(ctx, subject); !errors.Is(err, estuite.ErrInvalidInput) {
				t.Errorf("Forget(%q): %v, want ErrInvalidInput", subject, err)
			}
			if _, err := s.SubjectForgotten(ctx, subject); !errors.Is(err, estuite.ErrInvalidInput) {
				t.Errorf("SubjectForgotten(%q): %v, want ErrInvalidInput", subject, err)
			}
		}
		if err := s.Forget(ctx, ""); !errors.Is(err, estuite.ErrInvalidInput) {
			t.Errorf("Forget(\"\"): %v, want ErrInvalidInput", err)
		}
		if _, err := s.Version(ctx, "s"); !errors.Is(err, estuite.ErrStreamNotFound) {
			t.Errorf("the refused appends wrote the stream: %v", err)
		}
		size, err := s.Size(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if size.Keys.Rows != 0 {
			t.Errorf("the refused appends wrote %d key rows", size.Keys.Rows)
		}
		// The largest subject is accepted, and an append of it stays within the limits.
		max := strings.Repeat("é", estuite.MaxSubjectLength)
		if _, err := s.Append(ctx, "s", []estuite.EventData{{Type: "T", Subject: max, Data: []byte(`1`)}}, nil); err != nil {
			t.Errorf("a subject of %d characters: %v", estuite.MaxSubjectLength, err)
		}
	})
}

// The size limits count the ciphertext: the largest sealed event accepted on one backend is
// accepted on every backend (Azurite included), and one byte more is refused everywhere.
func TestSealedEventSizeLimitsAreExact(t *testing.T) {
	ctx := context.Background()
	probe := openStore(t, mem.New(nil), nil)
	event := func(n int) []estuite.EventData {
		return []estuite.EventData{{Type: "Scan", Subject: "big-subject", Format: estuite.Binary, Data: bytes.Repeat([]byte{7}, n)}}
	}
	lo, hi := 1, 2<<20 // accepted, refused
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		_, err := probe.Append(ctx, "big", event(mid), nil) // the same stream name: keys count in the size
		switch {
		case err == nil:
			lo = mid
		case errors.Is(err, estuite.ErrTooLarge):
			hi = mid
		default:
			t.Fatal(err)
		}
	}
	t.Logf("largest sealed binary event: %d bytes of data", lo)
	forEachEraseBackend(t, func(t *testing.T, env *eraseEnv) {
		s := env.open(t, &estuite.Options{MasterKey: masterKeyA})
		if _, err := s.Append(ctx, "big", event(lo), nil); err != nil {
			t.Fatalf("the largest sealed event: %v", err)
		}
		if _, err := s.Append(ctx, "big", event(lo+1), nil); !errors.Is(err, estuite.ErrTooLarge) {
			t.Fatalf("one byte more: %v, want ErrTooLarge", err)
		}
		if ev := readEvents(t, s, "big", nil); len(ev) != 1 || len(ev[0].Data) != lo {
			t.Fatalf("read back %d events", len(ev))
		}
		stepUntilIdle(t, estuite.NewDispatcher(s, nil))
		if feed := readFeedAll(t, s); len(feed) != 1 || len(feed[0].Data) != lo {
			t.Fatalf("the feed holds %d events", len(feed))
		}
	})
}

// A sealed event's ciphertext is bound to its stream, version, type and subject: ciphertext
// moved to another row of the same subject does not open, and the read fails as corrupt rather
// than return another event's data.
func TestMovedCiphertextDoesNotOpen(t *testing.T) {
	ctx := context.Background()
	backend := mem.New(nil)
	s := openStore(t, sharedBackend{backend}, nil)
	evs := []estuite.EventData{{Type: "T", Subject: "gina", Data: []byte(`1`)}, {Type: "T", Subject: "gina", Data: []byte(`2`)}}
	if _, err := s.Append(ctx, "g", evs, nil); err != nil {
		t.Fatal(err)
	}
	tab, err := backend.OpenTable(ctx, "estuitestreams")
	if err != nil {
		t.Fatal(err)
	}
	first, err := tab.Get(ctx, "g", "E0000000000000000001")
	if err != nil {
		t.Fatal(err)
	}
	second, err := tab.Get(ctx, "g", "E0000000000000000002")
	if err != nil {
		t.Fatal(err)
	}
	second.Properties["Data"] = first.Properties["Data"]
	if _, err := tab.Submit(ctx, "g", []table.Op{{Kind: table.Replace, Entity: second, IfMatch: second.ETag}}); err != nil {
		t.Fatal(err)
	}
	read, err := s.Read(ctx, "g", nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	var readErr error
	for ev, err := range read.Events {
		if err != nil {
			readErr = err
			break
		}
		got = append(got, string(ev.Data))
	}
	if !errors.Is(readErr, estuite.ErrCorrupt) || len(got) != 1 || got[0] != "1" {
		t.Fatalf("read %v, then %v; want event 1, then ErrCorrupt", got, readErr)
	}
}
