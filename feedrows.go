package estuite

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/estuite/estuite/table"
)

// The event table's layout; docs/storage-format.md describes it.
const (
	// FeedPageSize is how many positions one feed partition (page) holds: page k holds positions
	// k*FeedPageSize+1 … (k+1)*FeedPageSize.
	FeedPageSize = 10000

	feedHeaderRowKey   = "H" // page header: the fence of every write to the page, and its high-water mark
	feedEventPrefix    = "P" // P<position, 19 digits>: one per event
	feedMarkerPrefix   = "S" // S<stream hash>: the last version of the stream written into this page
	dirtyPartitionFmt  = "dirty%02d"
	leasePartition     = "lease"
	dispatcherLeaseRow = "dispatcher"
	metaPartition      = "meta"
	feedHintRow        = "feed"
	checkpointPart     = "checkpoint"

	// dirtyShards is how many partitions hold dirty markers. Every process must agree on it: it is
	// part of the storage format.
	dirtyShards = 4

	// progressRowKey is the stream table row that records how far a stream has been dispatched.
	// It sorts after the event rows and before the head, so that one range query from a version
	// returns the events, the progress and the head together.
	progressRowKey = "G"
)

// MaxFeedShards is the most feed shards a store may have (Options.FeedShards).
const MaxFeedShards = 64

// feedPartition is the partition of page of feed shard shard. With one shard, shard 0 is the
// feed of earlier releases, unchanged.
func feedPartition(shard int, page int64) string { return fmt.Sprintf("feed%02d-%012d", shard, page) }

// feedHintRowOf is the meta row that hints where feed shard shard stands (shard 0: the one row of
// earlier releases).
func feedHintRowOf(shard int) string {
	if shard == 0 {
		return feedHintRow
	}
	return fmt.Sprintf("%s%02d", feedHintRow, shard)
}

// leaseRowOf is the lease row of the dispatcher of feed shard shard (shard 0: the one lease of
// earlier releases).
func leaseRowOf(shard int) string {
	if shard == 0 {
		return dispatcherLeaseRow
	}
	return fmt.Sprintf("%s%02d", dispatcherLeaseRow, shard)
}

// feedShardOf is the feed shard of the stream in partition pk, of shards: from other bytes of the
// hash than its dirty-marker shard's, so that the two are independent.
func feedShardOf(pk string, shards int) int {
	if shards <= 1 {
		return 0
	}
	sum := sha256.Sum256([]byte(pk))
	return int((uint32(sum[4])<<24 | uint32(sum[5])<<16 | uint32(sum[6])<<8 | uint32(sum[7])) % uint32(shards))
}

// dirtyIndex is the dirty-marker partition number of the stream in partition pk: feed shard k's
// markers are in partitions k*dirtyShards to k*dirtyShards+dirtyShards-1 (with one shard, the
// four partitions of earlier releases).
func dirtyIndex(pk string, shards int) int {
	return feedShardOf(pk, shards)*dirtyShards + dirtyShard(pk, dirtyShards)
}

// dirtyIndexes are the dirty-marker partition numbers of feed shard shard.
func dirtyIndexes(shard int) []int {
	out := make([]int, dirtyShards)
	for i := range out {
		out[i] = shard*dirtyShards + i
	}
	return out
}

// feedPageSize is FeedPageSize, except in tests that make pages small so that every schedule
// crosses pages (export_test.go). It is part of the storage format: never change it otherwise.
var feedPageSize int64 = FeedPageSize

// Page arithmetic. Pages are never negative; positions past MaxPosition never exist, but the
// arithmetic stays exact or saturates for every int64, so that no input can make it wrap.

// pageOf is the page that holds position (page 0 for positions below 1).
func pageOf(position int64) int64 {
	if position < 1 {
		return 0
	}
	return (position - 1) / feedPageSize
}

// pageFirst is the first position of page, or math.MaxInt64 for a page past every int64.
func pageFirst(page int64) int64 {
	if page > (math.MaxInt64-1)/feedPageSize {
		return math.MaxInt64
	}
	return page*feedPageSize + 1
}

// pageLast is the last position of page, or math.MaxInt64 for a page past every int64.
func pageLast(page int64) int64 {
	if page >= math.MaxInt64/feedPageSize {
		return math.MaxInt64
	}
	return (page + 1) * feedPageSize
}

// lastPage is the page of MaxPosition: no page past it is ever written.
func lastPage() int64 { return pageOf(MaxPosition) }

// validPage reports whether page can hold positions (a page number read from storage).
func validPage(page int64) bool { return page >= 0 && page <= lastPage() }

func feedEventKey(position int64) string {
	return fmt.Sprintf("%s%0*d", feedEventPrefix, versionDigits, position)
}

// feedPageEndKey is the exclusive upper bound of the event rows of page: the key of the position
// after its last, or a key after every position key when that position is past every int64.
func feedPageEndKey(page int64) string {
	last := pageLast(page)
	if last == math.MaxInt64 {
		return feedEventPrefix + ":" // ':' sorts after every digit
	}
	return feedEventKey(last + 1)
}

func parseFeedEventKey(rk string) (int64, bool) {
	if len(rk) != len(feedEventPrefix)+versionDigits || !strings.HasPrefix(rk, feedEventPrefix) {
		return 0, false
	}
	v, err := strconv.ParseInt(rk[len(feedEventPrefix):], 10, 64)
	return v, err == nil && v > 0 && v <= MaxPosition
}

// streamHash is a short, key-safe stand-in for a stream in event-table row keys, whatever the
// stream name's length and characters.
func streamHash(pk string) string {
	sum := sha256.Sum256([]byte(pk))
	return hex.EncodeToString(sum[:16])
}

func feedMarkerKey(pk string) string { return feedMarkerPrefix + streamHash(pk) }

func dirtyPartition(shard int) string { return fmt.Sprintf(dirtyPartitionFmt, shard) }

// dirtyShard is the dirty-marker shard of a stream.
func dirtyShard(pk string, shards int) int {
	sum := sha256.Sum256([]byte(pk))
	return int(uint32(sum[0])<<8|uint32(sum[1])) % shards
}

// dirtyMarkerKey is the row key of the marker one attempt writes: the stream's hash, the version
// it announces, and an ID of the attempt, so that no two attempts share a row and an attempt whose
// batch was refused can take its own marker back.
func dirtyMarkerKey(pk string, announced int64, attempt string) string {
	return fmt.Sprintf("%s-%0*d-%s", streamHash(pk), versionDigits, announced, attempt)
}

// Properties of event-table rows (besides those an event row shares with the stream table).
const (
	propNext       = "Next"
	propPage       = "Page"
	propPosition   = "Position"
	propStream     = "Stream"
	propAnnounced  = "Announced"
	propDispatched = "Dispatched"
	propOwner      = "Owner"
	propExpires    = "Expires"
	propDuration   = "DurationMs"
	propMaxBytes   = "MaxEventBytes"
	propUpdated    = "Updated"
	propWindowMs   = "AnnounceWindowMs"
)

// FeedEvent is an event as the feed holds it: a recorded event with its global position.
type FeedEvent struct {
	RecordedEvent
	// Shard is the feed shard that holds the event (its stream's; always 0 in a store with one).
	Shard int
	// Position is the event's place in its shard's feed: 1 for the first event ever dispatched
	// into the shard, then every integer in turn.
	Position int64
	// DispatchedAt is when the dispatcher wrote the event into the feed.
	DispatchedAt time.Time
	// Redacted is true for the entry of an event a scavenger removed (a deleted stream's, or one
	// its retention hid): it has a Position and nothing else. Reads return such entries only
	// when asked to (FeedOptions.IncludeRedacted, SubscriptionOptions.IncludeRedacted).
	Redacted bool
}

// propRedacted marks a redacted feed row: Position, Stream, Version and Redacted, nothing else.
// Stream and Version (keys, never personal data) stay so that Verify tells redaction from loss
// and a scavenger that resumes finds what it redacted.
const propRedacted = "Redacted"

// redactedFeedEntity is the row that replaces the feed row of a removed event.
func redactedFeedEntity(row table.Entity) table.Entity {
	return table.Entity{PartitionKey: row.PartitionKey, RowKey: row.RowKey, Properties: map[string]any{
		propPosition: row.Properties[propPosition],
		propStream:   row.Properties[propStream],
		propVersion:  row.Properties[propVersion],
		propRedacted: true,
	}}
}

// isRedacted reports whether a feed row is a redacted entry.
func isRedacted(row table.Entity) bool {
	r, _ := row.Properties[propRedacted].(bool)
	return r
}

// feedEventEntity builds the feed row of a stream event read from the stream table.
func feedEventEntity(shard int, position int64, stream string, row table.Entity, dispatched time.Time) table.Entity {
	props := make(map[string]any, len(row.Properties)+3)
	for k, v := range row.Properties {
		props[k] = v
	}
	props[propPosition] = position
	props[propStream] = stream
	props[propDispatched] = dispatched
	return table.Entity{PartitionKey: feedPartition(shard, pageOf(position)), RowKey: feedEventKey(position), Properties: props}
}

// decodeFeedEvent turns a feed row into a FeedEvent.
func decodeFeedEvent(row table.Entity) (FeedEvent, error) {
	pos, ok := parseFeedEventKey(row.RowKey)
	if !ok {
		return FeedEvent{}, corrupt(row.PartitionKey, row.RowKey, "not a feed event row key")
	}
	stream, _ := row.Properties[propStream].(string)
	version, _ := row.Properties[propVersion].(int64)
	if stream == "" || version < 1 {
		return FeedEvent{}, corrupt(row.PartitionKey, row.RowKey, "feed row without stream or version")
	}
	if isRedacted(row) {
		return FeedEvent{RecordedEvent: RecordedEvent{Stream: stream, Version: version}, Position: pos, Redacted: true}, nil
	}
	// The event's own properties are those of its stream row: decode them the same way.
	ev, err := decodeEvent(stream, table.Entity{PartitionKey: row.PartitionKey, RowKey: eventKey(version), Properties: row.Properties})
	if err != nil {
		return FeedEvent{}, corrupt(row.PartitionKey, row.RowKey, "%v", err)
	}
	dispatched, _ := row.Properties[propDispatched].(time.Time)
	return FeedEvent{RecordedEvent: ev, Position: pos, DispatchedAt: dispatched}, nil
}

// dirtyMarker is a write-ahead announcement that an append may land up to version Announced.
type dirtyMarker struct {
	shard     int
	rowKey    string
	etag      string
	stream    string // stream name
	pk        string // its partition key in the stream table
	first     int64  // first version the append writes
	announced int64  // the stream version once the append lands
	maxBytes  int64  // the size of the append's largest event row (0: not recorded)
	// commitID is set on an early marker (early.go): written before the append was prepared, it
	// names the commit ID the append will use, and its versions are those of that commit row.
	commitID string
	// windowMs is an early marker's AnnounceWindow, in milliseconds rounded up: a dispatcher
	// waits at least twice it before it fences the marker away.
	windowMs int64

	// What a dispatcher learned of an early marker in this step (lookUpEarly): landed when its
	// commit row was found (first and announced are then the commit's), and otherwise whether it
	// has been seen for FenceAfter (aged: a fence may take it).
	landed, aged bool
}

// early reports whether m is an early marker.
func (m dirtyMarker) early() bool { return m.commitID != "" }

func (m dirtyMarker) entity() table.Entity {
	e := table.Entity{PartitionKey: dirtyPartition(m.shard), RowKey: m.rowKey, Properties: map[string]any{
		propStream:    m.stream,
		propFirst:     m.first,
		propAnnounced: m.announced,
		propMaxBytes:  m.maxBytes,
	}}
	if m.commitID != "" {
		e.Properties[propCommitID] = m.commitID
		e.Properties[propWindowMs] = m.windowMs
	}
	return e
}

func decodeDirtyMarker(shard int, row table.Entity) (dirtyMarker, error) {
	m := dirtyMarker{shard: shard, rowKey: row.RowKey, etag: row.ETag}
	var ok1, ok2 bool
	m.stream, _ = row.Properties[propStream].(string)
	m.first, ok1 = row.Properties[propFirst].(int64)
	m.announced, ok2 = row.Properties[propAnnounced].(int64)
	if b, ok := row.Properties[propMaxBytes].(int64); ok && b > 0 {
		m.maxBytes = min(b, table.MaxEntityBytes)
	}
	m.commitID, _ = row.Properties[propCommitID].(string)
	if w, ok := row.Properties[propWindowMs].(int64); ok && w > 0 {
		m.windowMs = min(w, int64(time.Hour/time.Millisecond)) // an absurd window waits an hour at most
	}
	// An early marker announces no version (First 0); an ordinary one its first.
	if m.stream == "" || !ok1 || !ok2 || m.first < 0 || (m.first == 0) != (m.commitID != "") || m.announced < m.first {
		return m, corrupt(row.PartitionKey, row.RowKey, "malformed dirty marker")
	}
	m.pk = streamKey(m.stream)
	return m, nil
}
