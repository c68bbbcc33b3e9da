package estuite

import (
	"context"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/estuite/estuite/table"
)

// MaxSnapshotBytes is the most data one snapshot may hold: 750 KiB. A snapshot is one entity,
// written by an upsert, with its data in chunks of table.MaxPropertyBytes as an event's. Its
// bytes count base64-encoded in the batch, and Azurite refuses an upsert whose entity's JSON
// passes 1 MiB (a binary of about 767 KiB there); 750 KiB leaves room for the longest stream
// name and the row's other properties (a sealed snapshot's MaxSnapshotSubjects longest subjects
// included), on every backend.
const MaxSnapshotBytes = 750 << 10

// MaxSnapshotSubjects is the most subjects one snapshot may name (Snapshot.Subjects).
const MaxSnapshotSubjects = 16

// Snapshot is an aggregate's state saved with an append, in the stream's own partition. A stream
// has at most one: each snapshot saved replaces the one before. Snapshots are not events: they
// never appear in stream reads, in the feed, or in Verify's findings.
type Snapshot struct {
	// Version is the stream version the state reflects. On write the store sets it to the
	// append's LastVersion (a caller-given value is ignored).
	Version int64
	// Schema is the caller's snapshot schema version: a read asks for one schema
	// (ReadOptions.SnapshotSchema) and ignores a snapshot of any other. math.MinInt64 is
	// reserved (it marks sealed snapshot rows: docs/storage-format.md).
	Schema int
	// Data is the state, opaque to the store: at most MaxSnapshotBytes.
	Data []byte
	// Subjects are the data subjects whose personal data the state holds (see
	// EventData.Subject): those of the events the state was folded from. At most
	// MaxSnapshotSubjects, each valid as an event's subject; duplicates count once. A snapshot
	// that names subjects is stored sealed: its Data is encrypted under a key derived from all
	// of their data keys (each created on first use, as for an event), so that forgetting any
	// one of them (Store.Forget) makes the snapshot unreadable: a read then returns no snapshot
	// (StreamRead.Snapshot is nil, not an error) and the caller replays the events, whose
	// forgotten subjects' events read as Erased. An append whose snapshot names a forgotten
	// subject is an ErrSubjectForgotten, and writes nothing. The subjects themselves are stored
	// in clear on the snapshot row, as on a sealed event row. On read, Subjects holds the
	// stored subjects, sorted; nil for a snapshot that names none.
	Subjects []string

	sealed []byte // the ciphertext of a sealed snapshot, until it is opened (openSnapshot)
}

// snapshotRowKey is the stream table row of a stream's snapshot. It sorts after every commit row
// (C + hex digits) and before the first event row (E…): one range query from it returns the
// snapshot, then the events, the progress row and the head. No range the dispatcher, Verify or a
// stream read of an earlier release queries (all start at an event row) includes it.
const snapshotRowKey = "D"

// Properties of the snapshot row (besides propVersion, propCommitID, propRecorded and the data
// chunks, named as an event's).
const (
	propSchema = "Schema"
	// A sealed snapshot row (one that names subjects) holds its subjects, joined by newlines
	// (which a subject cannot hold), its schema in SealedSchema, and its ciphertext in chunks
	// named Sealed, Sealed1, …; its Schema property holds sealedSnapshotSchema and it has no
	// Data chunks. So a release that knows nothing of sealing reads it as a snapshot of a
	// schema no caller asks for, and ignores it; a caller that did ask for that schema would get
	// empty data, never the ciphertext as state.
	propSubjects     = "Subjects"
	propSealedSchema = "SealedSchema"
	propSealedData   = "Sealed"
	// sealedSnapshotSchema is the Schema property of a sealed snapshot row.
	sealedSnapshotSchema = math.MinInt64
)

// sealedChunkName names the property holding the i-th chunk of a sealed snapshot's ciphertext.
func sealedChunkName(i int) string {
	if i == 0 {
		return propSealedData
	}
	return fmt.Sprintf("%s%d", propSealedData, i)
}

// validateSnapshot checks a snapshot given to Append, and returns it with its subjects sorted
// and without duplicates (a copy: the caller's is left as it is).
func validateSnapshot(sn *Snapshot) (*Snapshot, error) {
	if n := len(sn.Data); n > MaxSnapshotBytes {
		return nil, invalid("snapshot.data", "is %d bytes long, at most MaxSnapshotBytes (%d) are allowed", n, MaxSnapshotBytes)
	}
	if int64(sn.Schema) == sealedSnapshotSchema {
		return nil, invalid("snapshot.schema", "%d is reserved (it marks sealed snapshot rows)", sn.Schema)
	}
	for i, subject := range sn.Subjects {
		if err := validateSubject(fmt.Sprintf("snapshot.subjects[%d]", i), subject); err != nil {
			return nil, err
		}
	}
	out := *sn
	out.sealed = nil
	if len(sn.Subjects) > 0 {
		out.Subjects = slices.Compact(slices.Sorted(slices.Values(sn.Subjects)))
		if n := len(out.Subjects); n > MaxSnapshotSubjects {
			return nil, invalid("snapshot.subjects", "names %d subjects, at most MaxSnapshotSubjects (%d) are allowed", n, MaxSnapshotSubjects)
		}
	} else {
		out.Subjects = nil
	}
	return &out, nil
}

// snapshotEntity is the snapshot row of stream (partition pk) for a snapshot at version, written
// by the append with commitID. A snapshot that names subjects is sealed with key; without a key
// (an append being sized) its ciphertext is zeros of the exact length, never written.
func snapshotEntity(stream, pk string, sn *Snapshot, key cipher.AEAD, version int64, commitID string, recorded time.Time) table.Entity {
	props := map[string]any{
		propVersion:  version,
		propSchema:   int64(sn.Schema),
		propCommitID: commitID,
		propRecorded: recorded,
	}
	if len(sn.Subjects) == 0 {
		putChunks(props, dataChunkName, sn.Data)
	} else {
		props[propSchema] = int64(sealedSnapshotSchema)
		props[propSealedSchema] = int64(sn.Schema)
		props[propSubjects] = strings.Join(sn.Subjects, "\n")
		putChunks(props, sealedChunkName, sealSnapshot(key, snapshotAD(stream, version, sn.Schema, sn.Subjects), sn.Data))
	}
	return table.Entity{PartitionKey: pk, RowKey: snapshotRowKey, Properties: props}
}

// decodeSnapshot reads a snapshot row. A sealed one is checked for its shape only and comes back
// with its ciphertext unopened (Store.openSnapshot opens it): Verify and the scavenger need no
// keys.
func decodeSnapshot(row table.Entity) (*Snapshot, error) {
	v, ok1 := row.Properties[propVersion].(int64)
	schema, ok2 := row.Properties[propSchema].(int64)
	subjects, sealed := row.Properties[propSubjects].(string)
	if sealed {
		// The real schema is SealedSchema; Schema holds the marker.
		inner, ok := row.Properties[propSealedSchema].(int64)
		ok2 = ok2 && ok && schema == sealedSnapshotSchema
		schema = inner
	}
	if !ok1 || !ok2 || v < 1 || int64(int(schema)) != schema {
		return nil, corrupt(row.PartitionKey, row.RowKey, "malformed snapshot row")
	}
	sn := &Snapshot{Version: v, Schema: int(schema)}
	if !sealed {
		sn.Data = chunks(row.Properties, dataChunkName)
		return sn, nil
	}
	sn.Subjects = strings.Split(subjects, "\n")
	if len(sn.Subjects) > MaxSnapshotSubjects || !slices.IsSorted(sn.Subjects) || len(slices.Compact(slices.Clone(sn.Subjects))) != len(sn.Subjects) ||
		slices.ContainsFunc(sn.Subjects, func(s string) bool { return validateSubject("subject", s) != nil }) {
		return nil, corrupt(row.PartitionKey, row.RowKey, "malformed subjects of a sealed snapshot")
	}
	sn.sealed = chunks(row.Properties, sealedChunkName)
	if len(sn.sealed) < sealOverhead || sn.sealed[0] != sealScheme {
		return nil, corrupt(row.PartitionKey, row.RowKey, "sealed snapshot: not a sealed blob of a known scheme")
	}
	return sn, nil
}

// chunks joins the chunks of props named by name (0, 1, …), as putChunks stored them; nil when
// there are none.
func chunks(props map[string]any, name func(int) string) []byte {
	var out []byte
	for i := 0; i < maxDataChunks; i++ {
		chunk, ok := props[name(i)].([]byte)
		if !ok {
			break
		}
		out = append(out, chunk...)
	}
	return out
}

// Sealed snapshots. The key is derived from the data keys of every subject the snapshot names,
// in sorted order: from each, a per-subject snapshot key HMAC-SHA256(data key,
// "estuite/snapshot-subject-key/v1") (dataKey.snapshot), and from those together HKDF-SHA256
// with the subjects in the info. Without any one subject's key the snapshot key cannot be computed. The
// blob is scheme 1 as an event's: 0x01 ‖ nonce (12 bytes, random) ‖ AES-256-GCM ciphertext ‖
// tag, with additional data that binds it to its stream, version, schema and subjects.

// snapshotKey derives the key of a snapshot naming subjects (sorted, without duplicates) from
// their data keys.
func snapshotKey(subjects []string, keys map[string]*dataKey) (cipher.AEAD, error) {
	secret := make([]byte, 0, len(subjects)*sha256.Size)
	for _, subject := range subjects {
		secret = append(secret, keys[subject].snapshot...)
	}
	info := appendFields([]byte("estuite/snapshot-key/v1\x00"), subjects)
	raw, err := hkdf.Key(sha256.New, secret, nil, string(info), dataKeySize)
	if err != nil {
		return nil, err
	}
	return newGCM(raw)
}

// appendFields appends to b the number of strings in list, then each, length-prefixed.
func appendFields(b []byte, list []string) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(len(list)))
	for _, s := range list {
		b = binary.BigEndian.AppendUint64(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

// snapshotAD is the additional data of a snapshot's ciphertext: a ciphertext moved to another
// stream or version, or given other subjects or another schema, does not open.
func snapshotAD(stream string, version int64, schema int, subjects []string) []byte {
	ad := appendFields([]byte("estuite/snapshot/v1\x00"), []string{stream})
	ad = binary.BigEndian.AppendUint64(ad, uint64(version))
	ad = binary.BigEndian.AppendUint64(ad, uint64(int64(schema)))
	return appendFields(ad, subjects)
}

// sealSnapshot returns the sealed blob of data under key with additional data ad; with a nil key,
// zeros of its exact length.
func sealSnapshot(key cipher.AEAD, ad, data []byte) []byte {
	out := make([]byte, 1+sealNonceSize, sealOverhead+len(data))
	if key == nil {
		return out[:cap(out)]
	}
	out[0] = sealScheme
	if _, err := rand.Read(out[1 : 1+sealNonceSize]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return key.Seal(out, out[1:1+sealNonceSize], data, ad)
}

// openSnapshot opens sn, as read from stream's row, when it is sealed: it returns sn with its
// Data, or nil when a subject it names was forgotten (or has no key row): the snapshot is gone
// with the subject, and the read replays the events. A ciphertext that does not open with its
// subjects' keys — altered, or moved from another stream or version — is an ErrCorrupt, as a
// sealed event's is. The keys come through the key cache, as events': a read of a snapshot and
// the events after it of the same subjects looks each key up once per cache lifetime.
func (s *Store) openSnapshot(ctx context.Context, stream string, sn *Snapshot) (*Snapshot, error) {
	if sn == nil || sn.sealed == nil {
		return sn, nil
	}
	keys, err := s.subjectKeys(ctx, sn.Subjects, false)
	if errors.Is(err, ErrSubjectForgotten) {
		return nil, nil // a subject without a key: the snapshot went with it
	}
	if err != nil {
		return nil, err
	}
	key, err := snapshotKey(sn.Subjects, keys)
	if err != nil {
		return nil, err
	}
	blob := sn.sealed
	plain, err := key.Open(nil, blob[1:1+sealNonceSize], blob[1+sealNonceSize:], snapshotAD(stream, sn.Version, sn.Schema, sn.Subjects))
	if err != nil {
		return nil, corrupt(streamKey(stream), snapshotRowKey, "sealed snapshot of subjects %q does not open with their data keys (altered, or moved from another row)", sn.Subjects)
	}
	out := *sn
	out.sealed, out.Data = nil, nil
	if len(plain) > 0 {
		out.Data = plain
	}
	return &out, nil
}
