package estuite_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
)

// Rotating the master key: keys stored unwrapped and keys wrapped by the old master key read on
// with the new key and the old one as a previous key; RewrapKeys rewraps them all under the new
// key (a forgotten subject stays forgotten), after which the old key is no longer needed, and a
// second run has nothing to do. On every backend.
func TestRewrapKeysRotatesTheMasterKey(t *testing.T) {
	forEachEraseBackend(t, func(t *testing.T, env *eraseEnv) {
		ctx := context.Background()
		masterKeyC := bytes.Repeat([]byte{0x3c}, 32)
		plain := env.open(t, nil) // before the store had a master key
		mustAppend(t, plain, "u0", subjectEvents("user-0", "zero"), nil)
		old := env.open(t, &estuite.Options{MasterKey: masterKeyA})
		mustAppend(t, old, "u1", subjectEvents("user-1", "one"), nil)
		mustAppend(t, old, "u2", subjectEvents("user-2", "two"), nil)
		if err := old.Forget(ctx, "user-2"); err != nil {
			t.Fatal(err)
		}

		newOnly := env.open(t, &estuite.Options{MasterKey: masterKeyB, KeyCacheLifetime: -1})
		if err := readErr(newOnly, "u1"); !errors.Is(err, estuite.ErrMasterKey) {
			t.Fatalf("reading keys of the old master key with the new one alone: %v, want ErrMasterKey", err)
		}
		rotating := env.open(t, &estuite.Options{MasterKey: masterKeyB, PreviousMasterKeys: [][]byte{masterKeyC, masterKeyA}})
		for i, e := range readEvents(t, rotating, "u1", nil) {
			checkEvent(t, "u1 while rotating", e, subjectEvents("user-1", "one")[i], false)
		}
		res, err := rotating.RewrapKeys(ctx)
		t.Logf("rewrap: %+v", res)
		if err != nil || res.Keys != 3 || res.Rewrapped != 2 || res.Forgotten != 1 || res.Current != 0 || res.Failures != 0 {
			t.Fatalf("RewrapKeys = %+v, %v; want 3 keys, 2 rewrapped (user-0 unwrapped, user-1 under the old key), 1 forgotten", res, err)
		}
		again, err := rotating.RewrapKeys(ctx)
		if err != nil || again.Rewrapped != 0 || again.Current != 2 {
			t.Fatalf("second RewrapKeys = %+v, %v; want nothing rewrapped, 2 current", again, err)
		}

		after := env.open(t, &estuite.Options{MasterKey: masterKeyB})
		for stream, subject := range map[string]string{"u0": "user-0", "u1": "user-1"} {
			tag := map[string]string{"u0": "zero", "u1": "one"}[stream]
			for i, e := range readEvents(t, after, stream, nil) {
				checkEvent(t, stream+" after rotation", e, subjectEvents(subject, tag)[i], false)
			}
		}
		for i, e := range readEvents(t, after, "u2", nil) {
			want := subjectEvents("user-2", "two")[i]
			checkEvent(t, "u2 after rotation", e, want, want.Subject != "")
		}
		// The old key opens nothing any more.
		oldOnly := env.open(t, &estuite.Options{MasterKey: masterKeyA, KeyCacheLifetime: -1})
		if err := readErr(oldOnly, "u1"); !errors.Is(err, estuite.ErrMasterKey) {
			t.Fatalf("reading with the old key after rotation: %v, want ErrMasterKey", err)
		}
		// No key row is unwrapped or under another key.
		keys, err := env.backend.OpenTable(ctx, env.prefix+"keys")
		if err != nil {
			t.Fatal(err)
		}
		ids := map[string]int{}
		for q := (table.ScanQuery{}); ; {
			p, err := keys.Scan(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			for _, row := range p.Entities {
				if _, ok := row.Properties["Forgotten"]; ok {
					continue
				}
				id, _ := row.Properties["MasterKeyId"].(string)
				ids[id]++
			}
			if p.Continuation == "" {
				break
			}
			q.Continuation = p.Continuation
		}
		if len(ids) != 1 || ids[""] != 0 {
			t.Fatalf("key rows by master key: %v; want every one under the new key", ids)
		}
	})
}

// RewrapKeys needs a master key, and previous keys need one to rewrap under.
func TestRewrapKeysNeedsAMasterKey(t *testing.T) {
	env := eraseBackends[0].open(t)
	s := env.open(t, nil)
	if _, err := s.RewrapKeys(context.Background()); !errors.Is(err, estuite.ErrInvalidInput) {
		t.Fatalf("RewrapKeys without a master key: %v, want ErrInvalidInput", err)
	}
	if _, err := estuite.Open(context.Background(), env.backend, &estuite.Options{PreviousMasterKeys: [][]byte{masterKeyA}}); !errors.Is(err, estuite.ErrInvalidInput) {
		t.Fatalf("Open with previous keys and no master key: %v, want ErrInvalidInput", err)
	}
	if _, err := estuite.Open(context.Background(), env.backend, &estuite.Options{MasterKey: masterKeyA, PreviousMasterKeys: [][]byte{[]byte("short")}}); !errors.Is(err, estuite.ErrInvalidInput) {
		t.Fatalf("Open with a short previous key: %v, want ErrInvalidInput", err)
	}
}

// readErr reads a whole stream and returns the first error.
func readErr(s *estuite.Store, stream string) error {
	r, err := s.Read(context.Background(), stream, nil)
	if err != nil {
		return err
	}
	for _, err := range r.Events {
		if err != nil {
			return err
		}
	}
	return nil
}
