package estuite

import (
	"time"

	"github.com/estuite/estuite/table"
)

// MaxSnapshotBytes is the most data one snapshot may hold: 750 KiB. A snapshot is one entity,
// written by an upsert, with its data in chunks of table.MaxPropertyBytes as an event's. Its
// bytes count base64-encoded in the batch, and Azurite refuses an upsert whose entity's JSON
// passes 1 MiB (a binary of about 767 KiB there); 750 KiB leaves room for the longest stream
// name and the row's other properties, on every backend.
const MaxSnapshotBytes = 750 << 10

// Snapshot is an aggregate's state saved with an append, in the stream's own partition. A stream
// has at most one: each snapshot saved replaces the one before. Snapshots are not events: they
// never appear in stream reads, in the feed, or in Verify's findings.
type Snapshot struct {
	// Version is the stream version the state reflects. On write the store sets it to the
	// append's LastVersion (a caller-given value is ignored).
	Version int64
	// Schema is the caller's snapshot schema version: a read asks for one schema
	// (ReadOptions.SnapshotSchema) and ignores a snapshot of any other.
	Schema int
	// Data is the state, opaque to the store: at most MaxSnapshotBytes.
	Data []byte
}

// snapshotRowKey is the stream table row of a stream's snapshot. It sorts after every commit row
// (C + hex digits) and before the first event row (E…): one range query from it returns the
// snapshot, then the events, the progress row and the head. No range the dispatcher, Verify or a
// stream read of an earlier release queries (all start at an event row) includes it.
const snapshotRowKey = "D"

// Properties of the snapshot row (besides propVersion, propCommitID, propRecorded and the data
// chunks, named as an event's).
const propSchema = "Schema"

// validateSnapshot checks a snapshot given to Append.
func validateSnapshot(sn *Snapshot) error {
	if n := len(sn.Data); n > MaxSnapshotBytes {
		return invalid("snapshot.data", "is %d bytes long, at most MaxSnapshotBytes (%d) are allowed", n, MaxSnapshotBytes)
	}
	return nil
}

// snapshotEntity is the snapshot row of partition pk for a snapshot at version, written by the
// append with commitID.
func snapshotEntity(pk string, sn *Snapshot, version int64, commitID string, recorded time.Time) table.Entity {
	props := map[string]any{
		propVersion:  version,
		propSchema:   int64(sn.Schema),
		propCommitID: commitID,
		propRecorded: recorded,
	}
	for i, off := 0, 0; off < len(sn.Data); i++ {
		end := min(off+table.MaxPropertyBytes, len(sn.Data))
		props[dataChunkName(i)] = sn.Data[off:end]
		off = end
	}
	return table.Entity{PartitionKey: pk, RowKey: snapshotRowKey, Properties: props}
}

// decodeSnapshot reads a snapshot row.
func decodeSnapshot(row table.Entity) (*Snapshot, error) {
	v, ok1 := row.Properties[propVersion].(int64)
	schema, ok2 := row.Properties[propSchema].(int64)
	if !ok1 || !ok2 || v < 1 || int64(int(schema)) != schema {
		return nil, corrupt(row.PartitionKey, row.RowKey, "malformed snapshot row")
	}
	sn := &Snapshot{Version: v, Schema: int(schema)}
	for i := 0; i < maxDataChunks; i++ {
		chunk, ok := row.Properties[dataChunkName(i)].([]byte)
		if !ok {
			break
		}
		sn.Data = append(sn.Data, chunk...)
	}
	return sn, nil
}
