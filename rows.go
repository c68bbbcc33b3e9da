package estuite

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/estuite/estuite/table"
	"github.com/google/uuid"
)

// FormatVersion is the version of the stream table's row format written by this release, stored
// on every head row. docs/storage-format.md describes it.
const FormatVersion = 1

// Property names of the stream table's rows.
const (
	propVersion  = "Version"  // head: stream version; commit: -
	propFormat   = "Format"   // head: FormatVersion
	propCommitID = "CommitId" // commit and event rows
	propFirst    = "First"    // commit: first version
	propLast     = "Last"     // commit: last version
	propHash     = "Hash"     // commit: hash of the committed events
	propAttempt  = "Attempt"  // commit: random ID of the Append call that wrote it
	propRecorded = "Recorded" // commit and event rows
	propID       = "Id"       // event: UUID
	propType     = "Type"     // event: type
	propDataFmt  = "DataFormat"
	propMeta     = "Metadata"
	propData     = "Data" // event data chunks: Data, Data1, Data2, …
)

// dataChunkName names the property holding the i-th chunk of an event's data.
func dataChunkName(i int) string {
	if i == 0 {
		return propData
	}
	return fmt.Sprintf("%s%d", propData, i)
}

// maxDataChunks is the most data chunks an event row can have: enough for MaxEntityBytes.
const maxDataChunks = table.MaxEntityBytes/table.MaxPropertyBytes + 1

// eventProperties are the properties of an event row, except its version.
func eventProperties(e *EventData, id uuid.UUID, commitID string, recorded time.Time) map[string]any {
	props := map[string]any{
		propID:       id.String(),
		propType:     e.Type,
		propCommitID: commitID,
		propRecorded: recorded,
		propDataFmt:  e.Format.String(),
	}
	if e.Subject != "" {
		// Sealed: the data and metadata go into the data chunks as ciphertext once the event's
		// version is known (appendPlan.appendRowOps).
		props[propSubject] = e.Subject
		props[propDataFmt] = sealedFormat(e.Format)
		return props
	}
	if len(e.Metadata) > 0 {
		props[propMeta] = string(e.Metadata)
	}
	putChunks(props, dataChunkName, e.Data)
	return props
}

// decodeEvent turns an event row into a RecordedEvent.
func decodeEvent(stream string, row table.Entity) (RecordedEvent, error) {
	fail := func(format string, args ...any) (RecordedEvent, error) {
		return RecordedEvent{}, corrupt(row.PartitionKey, row.RowKey, format, args...)
	}
	version, ok := parseEventKey(row.RowKey)
	if !ok {
		return fail("not an event row key")
	}
	ev := RecordedEvent{Stream: stream, Version: version}
	var err error
	idText, _ := row.Properties[propID].(string)
	if ev.ID, err = uuid.Parse(idText); err != nil {
		return fail("bad event ID %q", idText)
	}
	if ev.Type, ok = row.Properties[propType].(string); !ok || ev.Type == "" {
		return fail("missing event type")
	}
	ev.CommitID, _ = row.Properties[propCommitID].(string)
	ev.RecordedAt, _ = row.Properties[propRecorded].(time.Time)
	sealed := false
	switch f, _ := row.Properties[propDataFmt].(string); f {
	case "json":
		ev.Format = JSON
	case "binary":
		ev.Format = Binary
	case sealedJSON, sealedBinary:
		ev.Format, sealed = JSON, true
		if f == sealedBinary {
			ev.Format = Binary
		}
		if ev.Subject, _ = row.Properties[propSubject].(string); ev.Subject == "" {
			return fail("sealed event without a subject")
		}
	default:
		return fail("unknown data format %q", f)
	}
	if m, ok := row.Properties[propMeta].(string); ok && m != "" {
		ev.Metadata = json.RawMessage(m)
	}
	// One allocation of the data's size (a chunk alone is used as it is: the row is the store's
	// own copy), rather than a doubling one per chunk: events may be 1 MiB.
	n, size := 0, 0
	for ; n < maxDataChunks; n++ {
		chunk, ok := row.Properties[dataChunkName(n)].([]byte)
		if !ok {
			break
		}
		size += len(chunk)
	}
	switch n {
	case 0:
	case 1:
		ev.Data = row.Properties[propData].([]byte)
	default:
		ev.Data = make([]byte, 0, size)
		for i := range n {
			ev.Data = append(ev.Data, row.Properties[dataChunkName(i)].([]byte)...)
		}
	}
	if sealed {
		// The data chunks hold the ciphertext of data and metadata: Store.openEvent opens it.
		ev.sealed, ev.Data, ev.Metadata = ev.Data, nil, nil
		if ev.sealed == nil {
			ev.sealed = []byte{}
		}
	}
	return ev, nil
}

// head is what the store knows of a stream head row.
type head struct {
	version int64
	etag    string // "" when the stream has no head row yet
	meta    headMeta
}

// headMeta is the stream's lifecycle state kept on its head row (lifecycle.go): retention, and
// whether it was deleted. On the head so that every read, which reads the head anyway, enforces
// it at no cost, and so that a delete or a change of retention moves the head's ETag, which
// fences every append prepared before it.
//
// The zero value is a stream whose metadata was never set and that was never deleted.
type headMeta struct {
	metaVersion            int64 // MetadataVersion: how often the metadata was set (0: never)
	maxAge                 int64 // seconds, when hasMaxAge
	maxCount               int64 // when hasMaxCount
	hasMaxAge, hasMaxCount bool
	truncateBefore         int64 // 0: none
	deletedBefore          int64 // soft delete: versions below it are deleted (0: never deleted)
	tombstone              bool  // hard delete: never written again
	// removedBefore is the scavenger's floor (scavenge.go): versions below it were hidden when
	// it looked and may be removed, so they stay hidden whatever the metadata says later.
	removedBefore int64
}

// Head row properties of the lifecycle state, written only when set.
const (
	propMetaVersion    = "MetadataVersion"
	propMaxAge         = "MaxAge"
	propMaxCount       = "MaxCount"
	propTruncateBefore = "TruncateBefore"
	propDeletedBefore  = "DeletedBefore"
	propTombstone      = "Tombstone"
	propRemovedBefore  = "RemovedBefore"
)

// softDeleted reports whether the stream, at version, is soft-deleted: deleted, and not written
// since.
func (m headMeta) softDeleted(version int64) bool { return m.deletedBefore > version }

// visibleFrom is the first version a read of a stream at version may return, by its deletion,
// truncation and maxCount (maxAge is judged per event).
func (m headMeta) visibleFrom(version int64) int64 {
	from := max(int64(1), m.deletedBefore, m.truncateBefore, m.removedBefore)
	if m.hasMaxCount {
		from = max(from, version-m.maxCount+1)
	}
	return from
}

func decodeHead(row table.Entity) (head, error) {
	v, ok := row.Properties[propVersion].(int64)
	if !ok || v < 0 {
		return head{}, corrupt(row.PartitionKey, row.RowKey, "head row without a valid version")
	}
	h := head{version: v, etag: row.ETag}
	bad := false
	num := func(name string) (n int64, present bool) {
		x, present := row.Properties[name]
		if !present {
			return 0, false
		}
		n, ok := x.(int64)
		bad = bad || !ok || n < 0 || n > MaxPosition
		return n, true
	}
	h.meta.metaVersion, _ = num(propMetaVersion)
	h.meta.maxAge, h.meta.hasMaxAge = num(propMaxAge)
	bad = bad || h.meta.maxAge > int64(MaxAgeLimit/time.Second) // its arithmetic would overflow
	h.meta.maxCount, h.meta.hasMaxCount = num(propMaxCount)
	h.meta.truncateBefore, _ = num(propTruncateBefore)
	h.meta.deletedBefore, _ = num(propDeletedBefore)
	h.meta.removedBefore, _ = num(propRemovedBefore)
	tomb, present := row.Properties[propTombstone]
	h.meta.tombstone, ok = tomb.(bool)
	if bad || (present && !ok) {
		return head{}, corrupt(row.PartitionKey, row.RowKey, "head row with malformed lifecycle properties")
	}
	return h, nil
}

// headEntity is the head row of partition pk at version, carrying the lifecycle state meta.
func headEntity(pk string, version int64, meta headMeta) table.Entity {
	props := map[string]any{
		propVersion: version,
		propFormat:  int64(FormatVersion),
	}
	if meta.metaVersion > 0 {
		props[propMetaVersion] = meta.metaVersion
	}
	if meta.hasMaxAge {
		props[propMaxAge] = meta.maxAge
	}
	if meta.hasMaxCount {
		props[propMaxCount] = meta.maxCount
	}
	if meta.truncateBefore > 0 {
		props[propTruncateBefore] = meta.truncateBefore
	}
	if meta.deletedBefore > 0 {
		props[propDeletedBefore] = meta.deletedBefore
	}
	if meta.tombstone {
		props[propTombstone] = true
	}
	if meta.removedBefore > 0 {
		props[propRemovedBefore] = meta.removedBefore
	}
	return table.Entity{PartitionKey: pk, RowKey: headRowKey, Properties: props}
}

// commitRecord is the content of a commit row.
type commitRecord struct {
	commitID    string
	first, last int64
	hash        string
	attempt     string
	// maxBytes is the size of the commit's largest event row (0: not recorded, rows of earlier
	// releases): a dispatcher that resolves an early marker by this row budgets its read by it.
	maxBytes int64
}

func (c commitRecord) entity(pk string, recorded time.Time) table.Entity {
	return table.Entity{PartitionKey: pk, RowKey: commitKey(c.commitID), Properties: map[string]any{
		propCommitID: c.commitID,
		propFirst:    c.first,
		propLast:     c.last,
		propHash:     c.hash,
		propAttempt:  c.attempt,
		propRecorded: recorded,
		propMaxBytes: c.maxBytes,
	}}
}

func decodeCommit(row table.Entity) (commitRecord, error) {
	var c commitRecord
	var ok1, ok2, ok3 bool
	c.commitID, _ = row.Properties[propCommitID].(string)
	c.first, ok1 = row.Properties[propFirst].(int64)
	c.last, ok2 = row.Properties[propLast].(int64)
	c.hash, ok3 = row.Properties[propHash].(string)
	c.attempt, _ = row.Properties[propAttempt].(string)
	if b, ok := row.Properties[propMaxBytes].(int64); ok && b > 0 {
		c.maxBytes = min(b, table.MaxEntityBytes)
	}
	if !ok1 || !ok2 || !ok3 || c.first < 1 || c.last < c.first {
		return c, corrupt(row.PartitionKey, row.RowKey, "malformed commit row")
	}
	return c, nil
}

// commitHash identifies the content of an append's events, so that a retried commit ID can be
// told from the same ID reused for other events. Generated event IDs are not part of it: a retry
// generates new ones. A sealed event (sealed[i] set, with its key) counts by its subject and a
// hash of its plaintext keyed by the subject's key, so that the commit row tells nothing of the
// plaintext once the key is forgotten; commits without a subject hash as they always did.
func commitHash(events []EventData, sealed []*sealedEvent) string {
	h := sha256.New()
	var n [8]byte
	field := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	for i := range events {
		e := &events[i]
		id := ""
		if e.ID != uuid.Nil {
			id = e.ID.String()
		}
		field([]byte(id))
		field([]byte(e.Type))
		if i < len(sealed) && sealed[i] != nil {
			field([]byte{byte(e.Format) | 0x80}) // never a plain event's format byte
			field([]byte(e.Subject))
			field(sealed[i].commitMAC())
			continue
		}
		field([]byte{byte(e.Format)})
		field(e.Data)
		field(e.Metadata)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// largestMeta is the lifecycle state whose head row is the largest: append batches are measured
// with it, so that an append's limits do not depend on its stream's metadata.
var largestMeta = headMeta{metaVersion: MaxPosition, maxAge: MaxPosition, maxCount: MaxPosition, hasMaxAge: true, hasMaxCount: true,
	truncateBefore: MaxPosition, deletedBefore: MaxPosition, tombstone: true, removedBefore: MaxPosition}
