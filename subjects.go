package estuite

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/estuite/estuite/table"
)

// The key table: one row per subject, holding its data key (wrapped by the master key when the
// store has one) or, once the subject is forgotten, a tombstone without key material.

// DefaultKeyCacheLifetime is Options.KeyCacheLifetime when it is 0.
const DefaultKeyCacheLifetime = 10 * time.Second

// DefaultKeyCacheSize is Options.KeyCacheSize when it is 0.
const DefaultKeyCacheSize = 10000

const (
	keyRowKey        = "K"
	propKey          = "Key"         // the data key: 32 bytes, or wrapped by the master key
	propMasterKeyID  = "MasterKeyId" // absent: the key is not wrapped
	propForgotten    = "Forgotten"   // tombstone: when the subject was forgotten
	propCreated      = "Created"
	wrapScheme       = 1 // the first byte of a wrapped key: AES-256-GCM under the master key
	wrappedKeySize   = 1 + sealNonceSize + dataKeySize + sealTagSize
	masterKeyIDBytes = 8
)

// ErrSubjectForgotten: the append names a subject that was forgotten (Store.Forget), in an event
// or in its snapshot (Snapshot.Subjects). Nothing was written. The error is a
// *SubjectForgottenError.
var ErrSubjectForgotten = errors.New("estuite: subject forgotten")

// SubjectForgottenError names the forgotten subject an append named.
type SubjectForgottenError struct {
	Subject string
}

func (e *SubjectForgottenError) Error() string {
	return fmt.Sprintf("estuite: subject %q was forgotten: it cannot be used for new events", e.Subject)
}

// Is makes errors.Is(err, ErrSubjectForgotten) true.
func (e *SubjectForgottenError) Is(target error) bool { return target == ErrSubjectForgotten }

// ErrMasterKey: a subject's data key cannot be unwrapped: it was wrapped by another master key
// than the store's (or the store has none). Events of the subject can be neither read nor
// appended until the store is opened with the right Options.MasterKey. Nothing was written.
var ErrMasterKey = errors.New("estuite: data key not wrapped by this master key")

// subjectKeyPartition is the key table partition of a subject: a hash, since a subject may hold
// characters that keys forbid.
func subjectKeyPartition(subject string) string {
	sum := sha256.Sum256([]byte(subject))
	return hex.EncodeToString(sum[:])
}

func validateSubject(field, subject string) error {
	return validateName(field, subject, MaxSubjectLength)
}

// masterKey wraps and unwraps data keys.
type masterKey struct {
	aead cipher.AEAD
	id   string // a fingerprint, stored with the keys it wraps
}

func newMasterKey(raw []byte) (*masterKey, error) {
	aead, err := newGCM(raw)
	if err != nil {
		return nil, invalid("master key", "must be %d bytes (AES-256), not %d", dataKeySize, len(raw))
	}
	sum := sha256.Sum256(append([]byte("estuite/master-key-id/v1\x00"), raw...))
	return &masterKey{aead: aead, id: hex.EncodeToString(sum[:masterKeyIDBytes])}, nil
}

func wrapAD(subject string) []byte { return append([]byte("estuite/data-key/v1\x00"), subject...) }

func (m *masterKey) wrap(subject string, raw []byte) []byte {
	out := make([]byte, 1+sealNonceSize, wrappedKeySize)
	out[0] = wrapScheme
	if _, err := rand.Read(out[1:]); err != nil {
		panic(err)
	}
	return m.aead.Seal(out, out[1:], raw, wrapAD(subject))
}

// keyState is what the key table says of a subject.
type keyState struct {
	key       *dataKey // the data key; nil when forgotten or absent
	forgotten bool     // a tombstone
	absent    bool     // no row: the subject was never used (or its row was deleted by hand)
}

// keyEntry is a cached keyState, or a fetch of it under way.
type keyEntry struct {
	ready   chan struct{} // closed once state, err and fetched are set
	state   keyState
	err     error
	fetched time.Time // on this process's clock
}

// keyCache keeps subjects' key states for a bounded time (a tombstone for ever: forgetting is
// final), and lets one fetch per subject run at a time.
type keyCache struct {
	lifetime time.Duration // negative: fetch every time
	max      int
	mu       sync.Mutex
	m        map[string]*keyEntry
}

// acquire returns the subject's entry and whether the caller must fetch it (then fill it).
func (c *keyCache) acquire(subject string) (*keyEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[subject]; e != nil {
		select {
		case <-e.ready:
			if e.state.forgotten || time.Since(e.fetched) < c.lifetime {
				return e, false
			}
		default:
			return e, false // a fetch is under way: wait for it
		}
	}
	if len(c.m) >= c.max {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	e := &keyEntry{ready: make(chan struct{})}
	c.m[subject] = e
	return e, true
}

// fill settles a fetch. Only keys and tombstones stay cached: an error or an absent row is asked
// again by the next caller.
func (c *keyCache) fill(subject string, e *keyEntry, st keyState, err error, fetched time.Time) {
	c.mu.Lock()
	e.state, e.err, e.fetched = st, err, fetched
	if err != nil || st.absent || c.lifetime < 0 && !st.forgotten {
		if c.m[subject] == e {
			delete(c.m, subject)
		}
	}
	c.mu.Unlock()
	close(e.ready)
}

// forgotten caches subject as forgotten.
func (c *keyCache) forgotten(subject string) {
	e := &keyEntry{ready: make(chan struct{}), state: keyState{forgotten: true}}
	close(e.ready)
	c.mu.Lock()
	c.m[subject] = e
	c.mu.Unlock()
}

// subjectKey returns the subject's key state, from the cache while it is fresh. With create, a
// subject without a key row gets one.
func (s *Store) subjectKey(ctx context.Context, subject string, create bool) (keyState, error) {
	for {
		e, fetch := s.keyCache.acquire(subject)
		if fetch {
			// The time is taken before the read: the cached state is at most lifetime older than
			// what the row said when the read began.
			fetched := time.Now()
			st, err := s.fetchKey(ctx, subject, create)
			s.keyCache.fill(subject, e, st, err, fetched)
			return st, err
		}
		select {
		case <-e.ready:
		case <-ctx.Done():
			return keyState{}, ctx.Err()
		}
		if e.err == nil && !(create && e.state.absent) {
			return e.state, nil
		}
		if err := ctx.Err(); err != nil {
			return keyState{}, err
		}
		// The fetch failed (perhaps for its caller's reasons) or found no row where this caller
		// must create one: fetch again.
	}
}

// fetchKey reads the subject's key row; with create, it inserts a new key when there is none (a
// concurrent creator's row wins: it is read back).
func (s *Store) fetchKey(ctx context.Context, subject string, create bool) (keyState, error) {
	pk := subjectKeyPartition(subject)
	row, err := s.keys.get(ctx, pk, keyRowKey)
	if errors.Is(err, table.ErrNotFound) {
		if !create {
			return keyState{absent: true}, nil
		}
		raw := make([]byte, dataKeySize)
		if _, err := rand.Read(raw); err != nil {
			return keyState{}, err
		}
		props := map[string]any{propSubject: subject, propKey: raw, propCreated: s.now().UTC()}
		if s.master != nil {
			props[propKey], props[propMasterKeyID] = s.master.wrap(subject, raw), s.master.id
		}
		entity := table.Entity{PartitionKey: pk, RowKey: keyRowKey, Properties: props}
		err = s.keys.submit(ctx, pk, []table.Op{{Kind: table.Insert, Entity: entity}})
		if err == nil {
			k, err := newDataKey(raw)
			return keyState{key: k}, err
		}
		if !errors.Is(err, table.ErrAlreadyExists) {
			return keyState{}, err
		}
		// Another creator's row is there (or this insert's own, its answer lost): it wins.
		row, err = s.keys.get(ctx, pk, keyRowKey)
	}
	if err != nil {
		return keyState{}, err
	}
	return s.decodeKeyRow(subject, row)
}

func (s *Store) decodeKeyRow(subject string, row table.Entity) (keyState, error) {
	raw, forgotten, err := s.rawKey(subject, row)
	if err != nil || forgotten {
		return keyState{forgotten: forgotten}, err
	}
	k, err := newDataKey(raw)
	return keyState{key: k}, err
}

// rawKey reads the subject's data key from its key row, unwrapped; forgotten for a tombstone.
func (s *Store) rawKey(subject string, row table.Entity) (raw []byte, forgotten bool, err error) {
	if got, _ := row.Properties[propSubject].(string); got != subject {
		return nil, false, corrupt(row.PartitionKey, row.RowKey, "key row of another subject")
	}
	if _, ok := row.Properties[propForgotten]; ok {
		return nil, true, nil
	}
	raw, _ = row.Properties[propKey].([]byte)
	if id, wrapped := row.Properties[propMasterKeyID].(string); wrapped {
		if raw, err = s.unwrap(subject, id, raw, row); err != nil {
			return nil, false, err
		}
	}
	if len(raw) != dataKeySize {
		return nil, false, corrupt(row.PartitionKey, row.RowKey, "malformed data key")
	}
	return raw, false, nil
}

// unwrap unwraps the subject's data key, wrapped by the master key with fingerprint id: the
// store's, or one of its previous ones.
func (s *Store) unwrap(subject, id string, wrapped []byte, row table.Entity) ([]byte, error) {
	m := s.previous[id]
	switch {
	case s.master != nil && id == s.master.id:
		m = s.master
	case m == nil && s.master == nil:
		return nil, fmt.Errorf("%w: the key of subject %q is wrapped by master key %s, and the store has no master key", ErrMasterKey, subject, id)
	case m == nil:
		return nil, fmt.Errorf("%w: the key of subject %q is wrapped by master key %s, the store's is %s (and no previous master key is that one)", ErrMasterKey, subject, id, s.master.id)
	}
	if len(wrapped) != wrappedKeySize || wrapped[0] != wrapScheme {
		return nil, corrupt(row.PartitionKey, row.RowKey, "malformed wrapped key")
	}
	plain, err := m.aead.Open(nil, wrapped[1:1+sealNonceSize], wrapped[1+sealNonceSize:], wrapAD(subject))
	if err != nil {
		return nil, fmt.Errorf("%w: the key of subject %q does not unwrap with master key %s", ErrMasterKey, subject, id)
	}
	return plain, nil
}

// submit sends a batch with the store's retries. Only for operations whose retry is harmless
// (an upsert, or an insert whose caller reads the row back when it finds it existing).
func (st storage) submit(ctx context.Context, pk string, ops []table.Op) error {
	_, err := withRetry(ctx, st.retry, func() ([]string, error) { return st.submitOnce(ctx, pk, ops) })
	return err
}

// Forget erases a data subject: it replaces the subject's key row with a tombstone that holds no
// key material (one storage write), so that every event that names the subject — in every
// stream, in the feed, in subscriptions, in backups of the tables — can no longer be decrypted:
// it reads as Erased, without data and metadata. Forgetting is final and idempotent (forgetting
// a subject again, or one never used, succeeds and leaves a tombstone), and an append that names
// a forgotten subject is refused with a *SubjectForgottenError.
//
// Snapshots that name the subject (Snapshot.Subjects) are sealed under a key derived from its
// data key too: they become unreadable with it, and a read of their stream returns no snapshot
// and replays the events. No snapshot row is scanned or rewritten.
//
// The bound: this Store stops decrypting the subject's events at once. Another Store (in this
// process or another) keeps using a key it cached for at most its Options.KeyCacheLifetime after
// it read the key row (DefaultKeyCacheLifetime, 10 s) — so for at most that long after Forget
// returns, it may still decrypt the subject's events and accept appends naming the subject
// (sealed with the forgotten key: they read as erased). See docs/operations.md.
func (s *Store) Forget(ctx context.Context, subject string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if err := validateSubject("subject", subject); err != nil {
		return err
	}
	pk := subjectKeyPartition(subject)
	tomb := table.Entity{PartitionKey: pk, RowKey: keyRowKey, Properties: map[string]any{
		propSubject: subject, propForgotten: s.now().UTC(),
	}}
	if err := s.keys.submit(ctx, pk, []table.Op{{Kind: table.Upsert, Entity: tomb}}); err != nil {
		return err
	}
	s.keyCache.forgotten(subject)
	return nil
}

// SubjectForgotten reports whether the subject was forgotten. It reads the key table (one point
// read), whatever the cache holds.
func (s *Store) SubjectForgotten(ctx context.Context, subject string) (bool, error) {
	if err := s.checkOpen(); err != nil {
		return false, err
	}
	if err := validateSubject("subject", subject); err != nil {
		return false, err
	}
	row, err := s.keys.get(ctx, subjectKeyPartition(subject), keyRowKey)
	if errors.Is(err, table.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if got, _ := row.Properties[propSubject].(string); got != subject {
		return false, corrupt(row.PartitionKey, row.RowKey, "key row of another subject")
	}
	_, forgotten := row.Properties[propForgotten]
	if forgotten {
		s.keyCache.forgotten(subject)
	}
	return forgotten, nil
}

// sealAppend fetches (or creates) the keys of the subjects an append names — its events' and its
// snapshot's — and computes the append's commit hash with them. A forgotten subject refuses the
// append before anything of it is written; creating a key is the only write before the append's
// batch. Each subject is looked up once per append (and through the key cache): a snapshot that
// names the events' subjects adds no lookup.
func (s *Store) sealAppend(ctx context.Context, a *appendPlan, events []EventData) error {
	var subjects []string
	for _, se := range a.sealed {
		if se != nil {
			subjects = append(subjects, se.subject)
		}
	}
	if a.snapshot != nil {
		subjects = append(subjects, a.snapshot.Subjects...)
	}
	keys, err := s.subjectKeys(ctx, subjects, true)
	if err != nil {
		return err
	}
	for _, se := range a.sealed {
		if se != nil {
			se.key = keys[se.subject]
		}
	}
	if sn := a.snapshot; sn != nil && len(sn.Subjects) > 0 {
		if a.snapshotKey, err = snapshotKey(sn.Subjects, keys); err != nil {
			return err
		}
	}
	if a.sealed != nil {
		a.hash = commitHash(events, a.sealed)
	}
	return nil
}

// subjectKeys returns the data keys of subjects, each looked up once, through the key cache;
// with create, a subject without a key row gets one. A subject without a key — forgotten, or
// (without create) without a key row — is a *SubjectForgottenError.
func (s *Store) subjectKeys(ctx context.Context, subjects []string, create bool) (map[string]*dataKey, error) {
	keys := make(map[string]*dataKey, len(subjects))
	for _, subject := range subjects {
		if _, ok := keys[subject]; ok {
			continue
		}
		st, err := s.subjectKey(ctx, subject, create)
		if err != nil {
			return nil, err
		}
		if st.key == nil {
			return nil, &SubjectForgottenError{Subject: subject}
		}
		keys[subject] = st.key
	}
	return keys, nil
}

// refusedSealed answers an append that sealAppend refused. A retry of a commit that landed
// before its subject was forgotten is still answered as the duplicate it is (idempotency outlives
// the key), judged by its commit ID alone: without the key, its events cannot be compared with
// the commit's hash. Anything else is refused with err.
func (s *Store) refusedSealed(ctx context.Context, a *appendPlan, err error) (AppendResult, error) {
	if !errors.Is(err, ErrSubjectForgotten) {
		return AppendResult{}, err
	}
	if a.sealed != nil {
		a.hash = "" // otherwise the events are plain, and their hash is known
	}
	res, found, ferr := s.findCommit(ctx, a)
	switch {
	case ferr != nil:
		return AppendResult{}, ferr
	case found:
		return res, nil
	}
	return AppendResult{}, err
}

// openEvent decrypts ev when it is sealed, or marks it erased when its subject's key is gone.
func (s *Store) openEvent(ctx context.Context, ev *RecordedEvent) error {
	if ev.sealed == nil {
		return nil
	}
	st, err := s.subjectKey(ctx, ev.Subject, false)
	if err != nil {
		return err
	}
	if st.key == nil {
		erase(ev)
		return nil
	}
	return unseal(ev, st.key)
}
