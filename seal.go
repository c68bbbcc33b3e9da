package estuite

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/estuite/estuite/table"
)

// Sealing: the data and metadata of an event that names a subject are stored as one AES-256-GCM
// ciphertext under the subject's data key. docs/storage-format.md describes the layout.

// MaxSubjectLength is the longest subject, in Unicode characters.
const MaxSubjectLength = 128

const (
	sealScheme    = 1 // the first byte of a sealed blob: AES-256-GCM, 12-byte random nonce
	sealNonceSize = 12
	sealTagSize   = 16
	// sealOverhead is what sealing adds to the plaintext (the scheme byte, the nonce, the tag).
	sealOverhead = 1 + sealNonceSize + sealTagSize
	dataKeySize  = 32

	// Data formats of a sealed event row: the event's own format, marked so that a release that
	// knows nothing of sealing refuses the row (an unknown data format) rather than hand out the
	// ciphertext as the event's data.
	sealedJSON   = "sealed-json"
	sealedBinary = "sealed-binary"
	propSubject  = "Subject" // event row (sealed) and key row
)

// dataKey is a subject's data key, ready to use.
type dataKey struct {
	aead     cipher.AEAD
	mac      []byte // key of the HMAC that stands for the sealed plaintext in the commit hash
	snapshot []byte // the subject's share of the key of a snapshot naming it (snapshot.go)
}

func newDataKey(raw []byte) (*dataKey, error) {
	aead, err := newGCM(raw)
	if err != nil {
		return nil, err
	}
	m := hmac.New(sha256.New, raw)
	m.Write([]byte("estuite/commit-hash/v1"))
	sm := hmac.New(sha256.New, raw)
	sm.Write([]byte("estuite/snapshot-subject-key/v1"))
	return &dataKey{aead: aead, mac: m.Sum(nil), snapshot: sm.Sum(nil)}, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	if len(key) != dataKeySize {
		return nil, fmt.Errorf("estuite: a key must be %d bytes, not %d", dataKeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// sealedEvent is the plaintext of an event that names a subject, waiting for its version: the
// version is part of the additional data, and an append learns it only when its batch is
// planned (appendqueue.go), so the ciphertext is made where the row gets its version.
type sealedEvent struct {
	subject   string
	format    DataFormat
	plaintext []byte   // uvarint(len(metadata)) ‖ metadata ‖ data
	key       *dataKey // nil while the append is only being sized
}

func newSealedEvent(e *EventData) *sealedEvent {
	p := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64+len(e.Metadata)+len(e.Data)), uint64(len(e.Metadata)))
	p = append(append(p, e.Metadata...), e.Data...)
	return &sealedEvent{subject: e.Subject, format: e.Format, plaintext: p}
}

// sealedFormat is the DataFormat property of a sealed row of format f.
func sealedFormat(f DataFormat) string {
	if f == Binary {
		return sealedBinary
	}
	return sealedJSON
}

// sealAD is the additional data of an event's ciphertext: it binds the ciphertext to the row it
// was written for, so that ciphertext moved to another event (of the same subject) does not open.
func sealAD(stream string, version int64, eventType, subject string, f DataFormat) []byte {
	ad := make([]byte, 0, 64+len(stream)+len(eventType)+len(subject))
	ad = append(ad, "estuite/event/v1\x00"...)
	field := func(s string) {
		ad = binary.BigEndian.AppendUint64(ad, uint64(len(s)))
		ad = append(ad, s...)
	}
	field(stream)
	ad = binary.BigEndian.AppendUint64(ad, uint64(version))
	field(eventType)
	field(subject)
	return append(ad, byte(f))
}

// seal returns the event's ciphertext for version. Without a key (an append being sized) it
// returns zeros of the ciphertext's exact length, which are never written.
func (se *sealedEvent) seal(stream string, version int64, eventType string) []byte {
	out := make([]byte, 1+sealNonceSize, sealOverhead+len(se.plaintext))
	if se.key == nil {
		return out[:cap(out)]
	}
	out[0] = sealScheme
	if _, err := rand.Read(out[1 : 1+sealNonceSize]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return se.key.aead.Seal(out, out[1:1+sealNonceSize], se.plaintext, sealAD(stream, version, eventType, se.subject, se.format))
}

// rowProperties returns a copy of props (an event row's properties without data and metadata)
// with the ciphertext for version in the data chunks.
func (se *sealedEvent) rowProperties(props map[string]any, stream string, version int64) map[string]any {
	out := make(map[string]any, len(props)+2)
	for k, v := range props {
		out[k] = v
	}
	eventType, _ := props[propType].(string)
	putChunks(out, dataChunkName, se.seal(stream, version, eventType))
	return out
}

// putChunks stores data in props as chunks of at most one property each, named by name.
func putChunks(props map[string]any, name func(int) string, data []byte) {
	for i, off := 0, 0; off < len(data); i++ {
		end := min(off+table.MaxPropertyBytes, len(data))
		props[name(i)] = data[off:end]
		off = end
	}
}

// commitMAC stands for a sealed event's plaintext in its commit's hash: a keyed hash, so that the
// commit row says nothing about the plaintext once the key is forgotten.
func (se *sealedEvent) commitMAC() []byte {
	m := hmac.New(sha256.New, se.key.mac)
	m.Write(se.plaintext)
	return m.Sum(nil)
}

// unseal opens ev's sealed data with key, setting its Data and Metadata.
func unseal(ev *RecordedEvent, key *dataKey) error {
	blob := ev.sealed
	ev.sealed = nil
	fail := func(reason string) error {
		return corrupt(streamKey(ev.Stream), eventKey(ev.Version), "sealed data of subject %q: %s", ev.Subject, reason)
	}
	if len(blob) < sealOverhead || blob[0] != sealScheme {
		return fail("not a sealed blob of a known scheme")
	}
	plain, err := key.aead.Open(nil, blob[1:1+sealNonceSize], blob[1+sealNonceSize:], sealAD(ev.Stream, ev.Version, ev.Type, ev.Subject, ev.Format))
	if err != nil {
		return fail("does not open with the subject's data key (altered, or moved from another row)")
	}
	n, w := binary.Uvarint(plain)
	if w <= 0 || n > uint64(len(plain)-w) {
		return fail("malformed plaintext")
	}
	if n > 0 {
		ev.Metadata = plain[w : w+int(n)]
	}
	if rest := plain[w+int(n):]; len(rest) > 0 {
		ev.Data = rest
	}
	return nil
}

// erase marks ev erased: its subject's key is gone.
func erase(ev *RecordedEvent) {
	ev.sealed, ev.Data, ev.Metadata, ev.Erased = nil, nil, nil, true
}
