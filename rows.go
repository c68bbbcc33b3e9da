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
	putDataChunks(props, e.Data)
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
}

func decodeHead(row table.Entity) (head, error) {
	v, ok := row.Properties[propVersion].(int64)
	if !ok || v < 0 {
		return head{}, corrupt(row.PartitionKey, row.RowKey, "head row without a valid version")
	}
	return head{version: v, etag: row.ETag}, nil
}

func headEntity(pk string, version int64) table.Entity {
	return table.Entity{PartitionKey: pk, RowKey: headRowKey, Properties: map[string]any{
		propVersion: version,
		propFormat:  int64(FormatVersion),
	}}
}

// commitRecord is the content of a commit row.
type commitRecord struct {
	commitID    string
	first, last int64
	hash        string
	attempt     string
}

func (c commitRecord) entity(pk string, recorded time.Time) table.Entity {
	return table.Entity{PartitionKey: pk, RowKey: commitKey(c.commitID), Properties: map[string]any{
		propCommitID: c.commitID,
		propFirst:    c.first,
		propLast:     c.last,
		propHash:     c.hash,
		propAttempt:  c.attempt,
		propRecorded: recorded,
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
