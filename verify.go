package estuite

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/estuite/estuite/table"
)

// VerifyOptions configure Store.Verify. nil means defaults.
type VerifyOptions struct {
	// Progress, when set, is called now and then (at least every 1,000 rows) with how far the
	// walk is. It is called from the goroutine that runs Verify.
	Progress func(VerifyProgress)
}

// VerifyProgress tells how far a Verify walk is.
type VerifyProgress struct {
	// Phase is the walk under way: "feed" (the feed pages), "streams" (the stream table),
	// "markers" (the dirty markers), "check" (a second look at the feed rows of streams whose
	// contents did not match) or "catalog" (the stream catalog, last).
	Phase string
	// Rows is the number of rows read so far, in every phase.
	Rows int64
	// Streams is the number of stream partitions walked so far.
	Streams int64
	// FeedPositions is the number of feed positions walked so far.
	FeedPositions int64
}

// StreamRange is a range of versions of one stream, both ends included.
type StreamRange struct {
	Stream   string
	From, To int64
}

// PositionRange is a range of feed positions, both ends included.
type PositionRange struct {
	Shard    int // the feed shard
	From, To int64
}

// FeedFault is a feed event that is wrong in itself.
type FeedFault struct {
	Shard    int    // the feed shard that holds it
	Position int64  // its position in the shard's feed
	Stream   string // the stream it names
	Version  int64  // the version it names
	Reason   string // what is wrong with it
}

// RowFault is a stored row that could not be decoded, or a row that ought to exist and does not.
type RowFault struct {
	// Table is "streams" for the stream table, "events" for the event table.
	Table        string
	PartitionKey string
	RowKey       string
	Reason       string
}

// Table names of RowFault.
const (
	verifyStreamTable = "streams"
	verifyEventTable  = "events"
)

// VerifyReport is what Store.Verify found. Ranges are sorted by stream then version, faults by
// position.
type VerifyReport struct {
	// Streams is the number of streams (partitions with a head row) in the stream table; Events
	// the number of event rows there.
	Streams, Events int64
	// FeedHead is the highest feed position seen (by a row or by a page header); with several
	// feed shards, the sum of the shards' (FeedHeads).
	FeedHead int64
	// FeedHeads is the highest position seen in each feed shard.
	FeedHeads []int64
	// Missing are committed events that are neither in the feed nor announced by a dirty marker:
	// they are lost to the feed until Repair announces them again. Ranges that Repair cannot
	// fill are also listed in Holes.
	Missing []StreamRange
	// Holes are the parts of Missing that lie at or below what the feed already claims for the
	// stream (a later version of it is in the feed, or its progress row or page marker is
	// beyond them). The dispatcher only ever appends a stream's versions after the last one it
	// dispatched, so nothing fills a hole: Repair leaves them alone.
	Holes []StreamRange
	// Pending are committed events not yet in the feed, of streams that have a dirty marker:
	// the dispatcher will write them.
	Pending []StreamRange
	// Duplicates are feed events whose stream version already appeared at an earlier position.
	Duplicates []FeedFault
	// Gaps are positions below FeedHead that hold no row.
	Gaps []PositionRange
	// OrderViolations are feed events that come after a later version of their stream, name a
	// version the stream does not have, or differ from the stream's event (ID or type).
	OrderViolations []FeedFault
	// Unparseable are rows, in either table, that could not be decoded, and rows missing from
	// the stream table below a stream's head.
	Unparseable []RowFault
	// ProgressBehind are stream progress rows (G) behind what the feed's full pages hold of
	// the stream: From is the progress row's version + 1, To the last version in a full page.
	// Informational: a dispatcher leaving a full page brings them up to date, and Repair does.
	ProgressBehind []StreamRange
	// Redacted counts the feed entries a scavenger redacted (events removed by a delete or by
	// retention): positions kept, contents gone, as intended.
	Redacted int64
	// WrongRedactions are redacted feed entries of versions a read of the stream may still
	// return (at or above the head's removal floor): events lost, not removed.
	WrongRedactions []StreamRange
	// Lost are committed versions below a stream's removal floor that neither the stream table
	// nor the feed holds: their rows went before the dispatcher copied them (the scavenger
	// removes only what the feed holds), so no feed entry, redacted or not, will ever stand for
	// them. The dispatcher stops with a CorruptError at such a stream; Repair cannot mend it.
	// They are not listed in Missing, Holes or Pending.
	Lost []StreamRange
	// Uncatalogued are streams whose events the feed holds but that have no row in the stream
	// catalog, so that ListStreams leaves them out: streams of a store written before the
	// catalog existed. Informational, like ProgressBehind: Repair adds their rows.
	Uncatalogued []string
}

// OK reports whether the feed and the stream table agree: nothing missing, duplicated, out of
// order or undecodable, and no gaps. Pending events and progress rows behind are not faults.
func (r *VerifyReport) OK() bool {
	return len(r.Missing) == 0 && len(r.Duplicates) == 0 && len(r.Gaps) == 0 &&
		len(r.OrderViolations) == 0 && len(r.Unparseable) == 0 && len(r.WrongRedactions) == 0 && len(r.Lost) == 0
}

// RepairResult is what Store.Repair did.
type RepairResult struct {
	// Announced are the Missing ranges for which a dirty marker was written: the dispatcher's
	// next step writes them into the feed.
	Announced []StreamRange
	// ProgressRaised are the progress rows raised, each to its range's To.
	ProgressRaised []StreamRange
	// Catalogued are the Uncatalogued streams given their catalog rows.
	Catalogued []string
	// Unrepaired is the number of faults of the report that Repair cannot heal: holes,
	// duplicates, gaps, order violations, unparseable rows and lost ranges.
	Unrepaired int
}

// vrange is a range of versions, both ends included.
type vrange struct{ from, to int64 }

// verifyStream is what Verify keeps of one stream: a fixed amount, plus the version ranges the
// feed skipped (none in a healthy feed).
type verifyStream struct {
	name string

	// From the feed.
	feedMax    int64    // highest version seen in the feed
	feedSum    uint64   // sum of the fingerprints of the versions seen (each once)
	skipped    []vrange // versions below feedMax not (yet) seen
	fullMax    int64    // highest version seen in a full page
	marker     int64    // version of the stream's marker row in page markerPage
	markerPage int64
	hasMarker  bool
	redacted   int64 // highest version whose feed entry is redacted (a scavenger redacts in order)

	// From the stream table.
	inStreams   bool
	hasHead     bool
	badHead     bool // the head row is there but does not decode
	head        int64
	progress    int64
	streamSum   uint64           // sum of the fingerprints of the stream's events that the feed holds
	nextEvent   int64            // next event row version expected
	suspect     bool             // the feed's contents disagree with the stream's: look closer
	dirty       bool             // the stream has a dirty marker
	snapshot    int64            // the version of the stream's snapshot row (0: none)
	floor       int64            // the head's removal floor: versions below it may be gone
	rowGaps     []vrange         // event rows missing between the rows seen, judged at the head
	gone        []vrange         // event rows missing below the removal floor: scavenged, or lost
	moved       bool             // appended behind the walk's cursor: judged at the rows it saw
	eventPrints map[int64]uint64 // suspect streams only: fingerprint by version
}

// inFeed reports whether the feed walk saw version v of the stream.
func (st *verifyStream) inFeed(v int64) bool {
	if v < 1 || v > st.feedMax {
		return false
	}
	for _, r := range st.skipped {
		if v >= r.from && v <= r.to {
			return false
		}
	}
	return true
}

// unskip removes v from the skipped ranges, and reports whether it was there.
func (st *verifyStream) unskip(v int64) bool {
	for i, r := range st.skipped {
		if v < r.from || v > r.to {
			continue
		}
		var repl []vrange
		if r.from < v {
			repl = append(repl, vrange{r.from, v - 1})
		}
		if v < r.to {
			repl = append(repl, vrange{v + 1, r.to})
		}
		st.skipped = slices.Replace(st.skipped, i, i+1, repl...)
		return true
	}
	return false
}

type verifier struct {
	s    *Store
	o    VerifyOptions
	r    *VerifyReport
	seed maphash.Seed
	prog VerifyProgress

	streams map[string]*verifyStream // by partition key

	// Feed walk, per feed shard.
	feeds []*feedWalk

	// Stream walk.
	cur     *verifyStream
	pk      string
	recheck []recheck
}

// feedWalk is where the walk of one feed shard stands.
type feedWalk struct {
	shard    int
	nextPos  int64 // next position expected
	lastPage int64 // highest page with a header; -1 when none
	page     int64 // page being walked
	inPage   bool
	pageFull bool  // the page's header says it is full
	head     int64 // the highest position seen
	mainHead int64 // head after the first walk
}

// recheck is a stream whose head row was ahead of the event rows the walk saw.
type recheck struct {
	pk   string
	st   *verifyStream
	last int64 // the last event row seen
	// belowFloor: the rows missing after it are below the head's removal floor — scavenged,
	// lost, or appended behind the walk's cursor (and hidden by retention at once).
	belowFloor bool
}

// Verify walks the stream table and the feed and compares them: every committed event should be
// in the feed exactly once, in its stream's order, with the stream's event ID and type, at
// gapless positions. It reads every row of both tables once (on Azure, full table scans: a
// maintenance operation, not for a hot path) and keeps a fixed amount of memory per stream.
//
// It may run while appends and a dispatcher are at work: events committed after its walk of
// the stream table began are not looked at, and events dispatched while it runs are checked for
// position, duplication and order but not compared with the stream table. Progress rows found
// behind may be a dispatcher's work in progress. opts may be nil.
func (s *Store) Verify(ctx context.Context, opts *VerifyOptions) (*VerifyReport, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	v := &verifier{s: s, r: &VerifyReport{}, seed: maphash.MakeSeed(), streams: make(map[string]*verifyStream)}
	for shard := range s.feedShards {
		v.feeds = append(v.feeds, &feedWalk{shard: shard, nextPos: 1, lastPage: -1})
	}
	if opts != nil {
		v.o = *opts
	}
	// The order matters for a store in use. The feed first: every event in it was committed
	// before the stream walk starts. Then the stream table, then the dirty markers: an event the
	// stream walk saw either still has its marker then, or the dispatcher wrote it into the feed
	// before deleting the marker — so it is in the feed walked so far or in its tail, read last.
	if err := v.walkFeed(ctx); err != nil {
		return nil, err
	}
	v.endFeedWalk()
	for _, fw := range v.feeds {
		fw.mainHead = fw.head
	}
	if err := v.walkStreams(ctx); err != nil {
		return nil, err
	}
	if err := v.walkMarkers(ctx); err != nil {
		return nil, err
	}
	if err := v.walkFeedTail(ctx); err != nil {
		return nil, err
	}
	v.endFeedWalk()
	if err := v.checkSuspects(ctx); err != nil {
		return nil, err
	}
	if err := v.walkCatalog(ctx); err != nil {
		return nil, err
	}
	v.finish()
	return v.r, nil
}

// scanAll pages through a range of partitions of a table with the store's retries.
func (v *verifier) scanAll(ctx context.Context, st storage, phase string, q table.ScanQuery, row func(table.Entity)) error {
	v.prog.Phase = phase
	return st.scanPages(ctx, q, v.eachRow(row))
}

// queryAll pages through a query with the store's retries.
func (v *verifier) queryAll(ctx context.Context, st storage, q table.Query, row func(table.Entity)) error {
	return st.queryPages(ctx, q, v.eachRow(row))
}

// eachRow hands every row of a page to row, counting them for the progress report.
func (v *verifier) eachRow(row func(table.Entity)) func(table.Page) error {
	return func(p table.Page) error {
		for _, e := range p.Entities {
			v.prog.Rows++
			row(e)
		}
		v.progress()
		return nil
	}
}

func (v *verifier) progress() {
	if v.o.Progress != nil {
		v.o.Progress(v.prog)
	}
}

func (v *verifier) stream(pk, name string) *verifyStream {
	st := v.streams[pk]
	if st == nil {
		st = &verifyStream{name: name}
		v.streams[pk] = st
	}
	return st
}

func (v *verifier) rowFault(tbl string, row table.Entity, format string, args ...any) {
	v.r.Unparseable = append(v.r.Unparseable, RowFault{Table: tbl, PartitionKey: row.PartitionKey, RowKey: row.RowKey,
		Reason: fmt.Sprintf(format, args...)})
}

// faultReason is the text of a decoding error.
func faultReason(err error) string {
	var ce *CorruptError
	if errors.As(err, &ce) {
		return ce.Reason
	}
	return err.Error()
}

// fingerprint identifies what Verify compares of an event: its version, ID and type, taken as
// stored (so that a row that does not decode still compares).
func (v *verifier) fingerprint(version int64, props map[string]any) uint64 {
	var h maphash.Hash
	h.SetSeed(v.seed)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(version))
	h.Write(n[:])
	for _, name := range []string{propID, propType} {
		s := fmt.Sprint(props[name])
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.WriteString(s)
	}
	return h.Sum64()
}

// verifyFeedPrefix bounds the feed partitions of a scan.
const verifyFeedPrefix = "feed"

// parseVerifyPage parses a feed page partition key of one of the store's shards.
func (v *verifier) parseVerifyPage(pk string) (*feedWalk, int64, bool) {
	const prefix = verifyFeedPrefix
	if !strings.HasPrefix(pk, prefix) || len(pk) != len(prefix)+2+1+12 || pk[len(prefix)+2] != '-' {
		return nil, 0, false
	}
	shard, err := strconv.Atoi(pk[len(prefix) : len(prefix)+2])
	if err != nil || shard < 0 || shard >= len(v.feeds) || feedPartition(shard, 0)[:len(prefix)+3] != pk[:len(prefix)+3] {
		return nil, 0, false
	}
	page, err := strconv.ParseInt(pk[len(prefix)+3:], 10, 64)
	return v.feeds[shard], page, err == nil && page >= 0
}

func (v *verifier) walkFeed(ctx context.Context) error {
	return v.scanAll(ctx, v.s.events, "feed", table.ScanQuery{FromPartition: verifyFeedPrefix, ToPartition: nextPrefix(verifyFeedPrefix)},
		func(row table.Entity) { v.feedRow(row, true) })
}

// feedRow looks at one row of a feed page. main is false for rows of the feed's tail, read after
// the stream walk: their contents are not compared with the streams.
func (v *verifier) feedRow(row table.Entity, main bool) {
	fw, page, ok := v.parseVerifyPage(row.PartitionKey)
	if !ok {
		v.rowFault(verifyEventTable, row, "not a feed page partition")
		return
	}
	if !fw.inPage || page != fw.page {
		fw.page, fw.inPage, fw.pageFull = page, true, false
	}
	switch {
	case row.RowKey == feedHeaderRowKey:
		next, ok := row.Properties[propNext].(int64)
		if !ok || next < pageFirst(page) || next > pageLast(page)+1 {
			v.rowFault(verifyEventTable, row, "feed page header with next position %v", row.Properties[propNext])
			return
		}
		fw.pageFull = next > pageLast(page)
		fw.lastPage = max(fw.lastPage, page)
		fw.head = max(fw.head, next-1)
	case strings.HasPrefix(row.RowKey, feedEventPrefix):
		v.feedEvent(fw, page, row, main)
	case strings.HasPrefix(row.RowKey, feedMarkerPrefix):
		stream, _ := row.Properties[propStream].(string)
		version, ok := row.Properties[propVersion].(int64)
		if stream == "" || !ok || version < 1 {
			v.rowFault(verifyEventTable, row, "malformed feed stream marker")
			return
		}
		st := v.stream(streamKey(stream), stream)
		st.marker, st.markerPage, st.hasMarker = version, page, true
	default:
		v.rowFault(verifyEventTable, row, "unknown row in a feed page")
	}
}

func (v *verifier) feedEvent(fw *feedWalk, page int64, row table.Entity, main bool) {
	pos, ok := parseFeedEventKey(row.RowKey)
	if !ok {
		v.rowFault(verifyEventTable, row, "not a feed event row key")
		return
	}
	if pageOf(pos) != page || pos < fw.nextPos {
		v.rowFault(verifyEventTable, row, "position %d does not belong in page %d", pos, page)
		return
	}
	if pos > fw.nextPos {
		v.r.Gaps = append(v.r.Gaps, PositionRange{fw.shard, fw.nextPos, pos - 1})
	}
	fw.nextPos = pos + 1
	fw.head = max(fw.head, pos)
	v.prog.FeedPositions++
	stream, _ := row.Properties[propStream].(string)
	version, _ := row.Properties[propVersion].(int64)
	if stream == "" || version < 1 {
		v.rowFault(verifyEventTable, row, "feed row without stream or version")
		return
	}
	if _, err := decodeFeedEvent(row); err != nil {
		v.rowFault(verifyEventTable, row, "%s", faultReason(err)) // its stream and version still count
	}
	if want := v.s.shardOf(streamKey(stream)); want != fw.shard {
		v.r.OrderViolations = append(v.r.OrderViolations, FeedFault{Shard: fw.shard, Position: pos, Stream: stream, Version: version,
			Reason: fmt.Sprintf("in feed shard %d, but the stream belongs to shard %d", fw.shard, want)})
	}
	st := v.stream(streamKey(stream), stream)
	redacted := isRedacted(row)
	if redacted && main {
		v.r.Redacted++
		st.redacted = max(st.redacted, version)
	}
	switch {
	case version > st.feedMax:
		if version > st.feedMax+1 {
			st.skipped = append(st.skipped, vrange{st.feedMax + 1, version - 1})
		}
		st.feedMax = version
	case st.unskip(version):
		v.r.OrderViolations = append(v.r.OrderViolations, FeedFault{Shard: fw.shard, Position: pos, Stream: stream, Version: version,
			Reason: fmt.Sprintf("version %d comes after version %d of the stream", version, st.feedMax)})
	default:
		v.r.Duplicates = append(v.r.Duplicates, FeedFault{Shard: fw.shard, Position: pos, Stream: stream, Version: version,
			Reason: fmt.Sprintf("version %d is already at an earlier position", version)})
		return
	}
	if main && !redacted {
		st.feedSum += v.fingerprint(version, row.Properties)
	}
	if fw.pageFull {
		st.fullMax = max(st.fullMax, version)
	}
}

// endFeedWalk reports the positions missing at the end of the feed walked so far, and sums the
// shards' heads into the report.
func (v *verifier) endFeedWalk() {
	v.r.FeedHead, v.r.FeedHeads = 0, make([]int64, len(v.feeds))
	for _, fw := range v.feeds {
		if fw.head >= fw.nextPos {
			v.r.Gaps = append(v.r.Gaps, PositionRange{fw.shard, fw.nextPos, fw.head})
			fw.nextPos = fw.head + 1
		}
		v.r.FeedHeads[fw.shard] = fw.head
		v.r.FeedHead += fw.head
	}
}

func (v *verifier) walkStreams(ctx context.Context) error {
	if err := v.scanAll(ctx, v.s.streams, "streams", table.ScanQuery{}, v.streamRow); err != nil {
		return err
	}
	if v.cur != nil {
		v.endStream()
	}
	for _, rc := range v.recheck {
		if err := v.recheckStream(ctx, rc); err != nil {
			return err
		}
	}
	v.recheck = nil
	return nil
}

// recheckStream reads again the event rows of a stream whose head was ahead of the event rows
// the walk saw. When they are all there, an append landed during the walk: the walk's view of
// the stream ends with the rows it saw. Otherwise rows are missing.
func (v *verifier) recheckStream(ctx context.Context, rc recheck) error {
	st, next := rc.st, rc.last+1
	if st.moved {
		return nil // judged at what the walk saw already
	}
	if rc.belowFloor {
		to := min(st.floor-1, st.head)
		found := false
		q := table.Query{PartitionKey: rc.pk, From: eventKey(next), To: eventKey(to + 1), Limit: 1}
		err := v.queryAll(ctx, v.s.streams, q, func(row table.Entity) { found = true })
		if err != nil {
			return err
		}
		if !found {
			st.gone = append(st.gone, vrange{next, to})
			return nil
		}
		// Appended behind the cursor: judge the stream at what the walk saw.
		st.head, st.moved = rc.last, true
		return nil
	}
	missing := int64(0)
	q := table.Query{PartitionKey: rc.pk, From: eventKey(next), To: eventKey(st.head + 1)}
	err := v.queryAll(ctx, v.s.streams, q, func(row table.Entity) {
		version, ok := parseEventKey(row.RowKey)
		if !ok || missing > 0 {
			return
		}
		if version != next {
			missing = next
		}
		next = version + 1
	})
	if err != nil {
		return err
	}
	if missing == 0 && next <= st.head {
		missing = next
	}
	if missing > 0 {
		v.r.Unparseable = append(v.r.Unparseable, RowFault{Table: verifyStreamTable, PartitionKey: rc.pk, RowKey: eventKey(missing),
			Reason: fmt.Sprintf("event row %d is missing below the head version %d", missing, st.head)})
		return nil
	}
	st.head, st.moved = rc.last, true
	return nil
}

func (v *verifier) streamRow(row table.Entity) {
	if v.cur == nil || row.PartitionKey != v.pk {
		if v.cur != nil {
			v.endStream()
		}
		name, err := streamName(row.PartitionKey)
		if err != nil {
			v.rowFault(verifyStreamTable, table.Entity{PartitionKey: row.PartitionKey}, "partition key is not a stream name: %v", err)
			name = row.PartitionKey
		}
		v.pk, v.cur = row.PartitionKey, v.stream(row.PartitionKey, name)
		v.cur.inStreams, v.cur.nextEvent = true, 1
		v.prog.Streams++
	}
	st := v.cur
	rk := row.RowKey
	switch {
	case rk == headRowKey:
		h, err := decodeHead(row)
		if err != nil {
			v.rowFault(verifyStreamTable, row, "%s", faultReason(err))
			st.badHead = true
			return
		}
		st.head, st.hasHead, st.floor = h.version, true, h.meta.removedBefore
	case rk == progressRowKey:
		g, err := decodeProgress(v.pk, row)
		if err != nil {
			v.rowFault(verifyStreamTable, row, "%s", faultReason(err))
			return
		}
		st.progress = g.dispatched
	case rk == snapshotRowKey:
		sn, err := decodeSnapshot(row)
		if err != nil {
			v.rowFault(verifyStreamTable, row, "%s", faultReason(err))
			return
		}
		st.snapshot = sn.Version
	case strings.HasPrefix(rk, commitKeyPrefix):
		if _, err := decodeCommit(row); err != nil {
			v.rowFault(verifyStreamTable, row, "%s", faultReason(err))
		}
	case strings.HasPrefix(rk, eventKeyPrefix):
		version, ok := parseEventKey(rk)
		if !ok {
			v.rowFault(verifyStreamTable, row, "not an event row key")
			return
		}
		if version > st.nextEvent {
			// Judged at the head, which sorts after the events: rows below its removal floor
			// may have been scavenged.
			st.rowGaps = append(st.rowGaps, vrange{st.nextEvent, version - 1})
		}
		st.nextEvent = version + 1
		v.r.Events++
		if _, err := decodeEvent(st.name, row); err != nil {
			v.rowFault(verifyStreamTable, row, "%s", faultReason(err))
		}
		if st.inFeed(version) && version > st.redacted {
			st.streamSum += v.fingerprint(version, row.Properties)
		}
	case rk == metadataRowKey:
		if text, _ := row.Properties[propCustom].(string); text == "" || !json.Valid([]byte(text)) {
			v.rowFault(verifyStreamTable, row, "custom metadata that is not JSON")
		}
	case strings.HasPrefix(rk, eventIDPrefix):
		if version, ok := row.Properties[propVersion].(int64); !ok || version < 1 {
			v.rowFault(verifyStreamTable, row, "malformed event ID row")
		}
	default:
		v.rowFault(verifyStreamTable, row, "unknown row")
	}
}

// endStream checks a stream once its partition has been walked.
func (v *verifier) endStream() {
	st := v.cur
	for _, g := range st.rowGaps {
		if g.from < st.floor {
			st.gone = append(st.gone, vrange{g.from, min(g.to, st.floor-1)})
		}
		if g.to >= st.floor {
			from := max(g.from, st.floor)
			v.r.Unparseable = append(v.r.Unparseable, RowFault{Table: verifyStreamTable, PartitionKey: v.pk, RowKey: eventKey(from),
				Reason: fmt.Sprintf("event rows %d to %d are missing", from, g.to)})
		}
	}
	last := st.nextEvent - 1
	if st.hasHead && last < st.floor-1 {
		if seen := last; seen < st.head {
			// Rows below the floor are missing at the end: look again once the walk is done,
			// whether they are gone or were appended behind the walk's cursor.
			v.recheck = append(v.recheck, recheck{pk: v.pk, st: st, last: seen, belowFloor: true})
		}
		last = min(st.floor-1, st.head) // every row below the floor may have been scavenged
	}
	if st.redacted >= st.floor && st.redacted > 0 {
		v.r.WrongRedactions = append(v.r.WrongRedactions, StreamRange{Stream: st.name, From: max(st.floor, 1), To: st.redacted})
	}
	if !st.hasHead {
		if last > 0 && !st.badHead {
			v.r.Unparseable = append(v.r.Unparseable, RowFault{Table: verifyStreamTable, PartitionKey: v.pk, RowKey: headRowKey,
				Reason: fmt.Sprintf("no head row, but events up to version %d", last)})
		}
		st.head = last
	} else {
		v.r.Streams++
		switch {
		case last > st.head:
			v.r.Unparseable = append(v.r.Unparseable, RowFault{Table: verifyStreamTable, PartitionKey: v.pk, RowKey: eventKey(st.head + 1),
				Reason: fmt.Sprintf("event rows %d to %d are beyond the head version %d", st.head+1, last, st.head)})
		case last < st.head:
			// Either rows are missing, or an append landed behind the walk's cursor while it
			// read the partition: look again once the walk is done.
			v.recheck = append(v.recheck, recheck{pk: v.pk, st: st, last: last})
		}
	}
	if st.snapshot > last {
		// The snapshot row sorts before the event rows, so the walk saw every event the
		// snapshot reflects: it is written in the batch of its last one.
		v.r.Unparseable = append(v.r.Unparseable, RowFault{Table: verifyStreamTable, PartitionKey: v.pk, RowKey: snapshotRowKey,
			Reason: fmt.Sprintf("snapshot at version %d, beyond the last event row %d", st.snapshot, last)})
	}
	if st.feedMax > last || st.feedSum != st.streamSum {
		st.suspect = true
	}
	if st.fullMax > st.progress {
		v.r.ProgressBehind = append(v.r.ProgressBehind, StreamRange{Stream: st.name, From: st.progress + 1, To: st.fullMax})
	}
	v.cur = nil
}

func (v *verifier) walkMarkers(ctx context.Context) error {
	const prefix = "dirty"
	return v.scanAll(ctx, v.s.events, "markers", table.ScanQuery{FromPartition: prefix, ToPartition: nextPrefix(prefix)},
		func(row table.Entity) {
			shard, err := strconv.Atoi(strings.TrimPrefix(row.PartitionKey, prefix))
			if err != nil || dirtyPartition(shard) != row.PartitionKey {
				v.rowFault(verifyEventTable, row, "not a dirty-marker partition")
				return
			}
			m, err := decodeDirtyMarker(shard, row)
			if err != nil {
				v.rowFault(verifyEventTable, row, "%s", faultReason(err))
				return
			}
			v.stream(m.pk, m.stream).dirty = true
		})
}

// walkFeedTail reads each feed shard from after the position the first walk reached to its end.
func (v *verifier) walkFeedTail(ctx context.Context) error {
	v.prog.Phase = "feed"
	for _, fw := range v.feeds {
		if err := v.walkShardTail(ctx, fw); err != nil {
			return err
		}
	}
	return nil
}

func (v *verifier) walkShardTail(ctx context.Context, fw *feedWalk) error {
	pos := fw.head + 1
	for {
		page := pageOf(pos)
		hdr, err := v.s.events.get(ctx, feedPartition(fw.shard, page), feedHeaderRowKey)
		if errors.Is(err, table.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		v.prog.Rows++
		v.feedRow(hdr, false)
		next, ok := hdr.Properties[propNext].(int64)
		if !ok {
			return nil
		}
		q := table.Query{PartitionKey: feedPartition(fw.shard, page), From: feedEventKey(pos), To: feedPageEndKey(page)}
		if err := v.queryAll(ctx, v.s.events, q, func(row table.Entity) { v.feedRow(row, false) }); err != nil {
			return err
		}
		if next <= pageLast(page) {
			return nil
		}
		pos = pageFirst(page + 1)
	}
}

// checkSuspects finds the feed events of streams whose contents disagree with the feed: it
// reads those streams' events and walks the feed again. It needs memory for the events of those
// streams only.
func (v *verifier) checkSuspects(ctx context.Context) error {
	found := false
	for pk, st := range v.streams {
		if !st.inStreams && st.feedMax > 0 {
			st.suspect = true // a stream the stream table does not have
		}
		if !st.suspect {
			continue
		}
		found = true
		st.eventPrints = make(map[int64]uint64)
		if !st.inStreams {
			continue
		}
		q := table.Query{PartitionKey: pk, From: eventKeyPrefix, To: nextPrefix(eventKeyPrefix)}
		v.prog.Phase = "check"
		err := v.queryAll(ctx, v.s.streams, q, func(row table.Entity) {
			if version, ok := parseEventKey(row.RowKey); ok {
				st.eventPrints[version] = v.fingerprint(version, row.Properties)
			}
		})
		if err != nil {
			return err
		}
	}
	if !found {
		return nil
	}
	return v.scanAll(ctx, v.s.events, "check", table.ScanQuery{FromPartition: verifyFeedPrefix, ToPartition: nextPrefix(verifyFeedPrefix)},
		func(row table.Entity) {
			pos, ok := parseFeedEventKey(row.RowKey)
			fw, _, inShard := v.parseVerifyPage(row.PartitionKey)
			if !ok || !inShard || pos > fw.mainHead {
				return
			}
			stream, _ := row.Properties[propStream].(string)
			version, _ := row.Properties[propVersion].(int64)
			st := v.streams[streamKey(stream)]
			if stream == "" || version < 1 || st == nil || !st.suspect || isRedacted(row) {
				return
			}
			fp, ok := st.eventPrints[version]
			switch {
			case !ok || version > st.head:
				v.r.OrderViolations = append(v.r.OrderViolations, FeedFault{Shard: fw.shard, Position: pos, Stream: stream, Version: version,
					Reason: fmt.Sprintf("the stream has no version %d", version)})
			case fp != v.fingerprint(version, row.Properties):
				v.r.OrderViolations = append(v.r.OrderViolations, FeedFault{Shard: fw.shard, Position: pos, Stream: stream, Version: version,
					Reason: fmt.Sprintf("differs from version %d of the stream (event ID or type)", version)})
			}
		})
}

// finish works out what of each stream is missing from the feed, and sorts the report.
func (v *verifier) finish() {
	for pk, st := range v.streams {
		st.eventPrints = nil
		if !st.inStreams {
			continue
		}
		var absent []vrange
		for _, r := range st.skipped {
			if r.from <= st.head {
				absent = append(absent, vrange{r.from, min(r.to, st.head)})
			}
		}
		if st.feedMax < st.head {
			absent = append(absent, vrange{st.feedMax + 1, st.head})
		}
		// Versions gone from the stream table that the feed does not hold either: the scavenger
		// removes a row only once the feed holds it, so these were lost.
		var lost []vrange
		absent, lost = splitRanges(absent, st.gone)
		for _, r := range lost {
			v.r.Lost = append(v.r.Lost, StreamRange{Stream: st.name, From: r.from, To: r.to})
		}
		// What the dispatcher takes as dispatched: it writes only after it.
		claimed := max(st.feedMax, st.progress)
		if st.hasMarker && st.markerPage == v.feeds[v.s.shardOf(pk)].lastPage {
			claimed = max(claimed, st.marker)
		}
		for _, r := range absent {
			if r.from <= claimed {
				h := StreamRange{Stream: st.name, From: r.from, To: min(r.to, claimed)}
				v.r.Missing = append(v.r.Missing, h)
				v.r.Holes = append(v.r.Holes, h)
			}
			if r.to > claimed {
				u := StreamRange{Stream: st.name, From: max(r.from, claimed+1), To: r.to}
				if st.dirty {
					v.r.Pending = append(v.r.Pending, u)
				} else {
					v.r.Missing = append(v.r.Missing, u)
				}
			}
		}
	}
	byStream := func(a, b StreamRange) int {
		return cmp.Or(cmp.Compare(a.Stream, b.Stream), cmp.Compare(a.From, b.From))
	}
	byPosition := func(a, b FeedFault) int { return cmp.Compare(a.Position, b.Position) }
	slices.SortFunc(v.r.Missing, byStream)
	slices.SortFunc(v.r.Holes, byStream)
	slices.SortFunc(v.r.Pending, byStream)
	slices.SortFunc(v.r.ProgressBehind, byStream)
	slices.SortFunc(v.r.Lost, byStream)
	slices.Sort(v.r.Uncatalogued)
	slices.SortStableFunc(v.r.Duplicates, byPosition)
	slices.SortStableFunc(v.r.OrderViolations, byPosition)
}

// splitRanges splits the sorted, disjoint ranges rs by the sorted, disjoint ranges cut: the parts
// outside cut, and the parts inside.
func splitRanges(rs, cut []vrange) (outside, inside []vrange) {
	for _, r := range rs {
		from := r.from
		for _, c := range cut {
			if c.to < from || c.from > r.to {
				continue
			}
			if c.from > from {
				outside = append(outside, vrange{from, c.from - 1})
			}
			inside = append(inside, vrange{max(from, c.from), min(r.to, c.to)})
			from = c.to + 1
			if from > r.to {
				break
			}
		}
		if from <= r.to {
			outside = append(outside, vrange{from, r.to})
		}
	}
	return outside, inside
}

// Repair re-announces what Verify found missing — it writes a dirty marker covering each Missing
// range that is not a hole, so that the dispatcher writes those events into the feed — and
// raises the progress rows that are behind (first, so that the dispatcher does not write again
// what full pages already hold). Then a dispatcher step (or the running dispatcher) completes
// the feed.
//
// It cannot heal holes, duplicates, gaps or order violations (the feed is append-only) or
// unparseable rows: it counts them in RepairResult.Unrepaired. The report should be recent:
// Repair trusts it.
func (s *Store) Repair(ctx context.Context, report *VerifyReport) (RepairResult, error) {
	var res RepairResult
	if err := s.checkOpen(); err != nil {
		return res, err
	}
	if report == nil {
		return res, invalid("report", "must not be nil")
	}
	d := NewDispatcher(s, nil)
	for _, r := range report.ProgressBehind {
		if err := d.confirmProgress(ctx, streamKey(r.Stream), r.To, -1); err != nil {
			return res, fmt.Errorf("estuite: raising the progress of %q to %d: %w", r.Stream, r.To, err)
		}
		res.ProgressRaised = append(res.ProgressRaised, r)
	}
	holes := make(map[StreamRange]bool, len(report.Holes))
	for _, h := range report.Holes {
		holes[h] = true
	}
	for _, r := range report.Missing {
		if holes[r] || r.From < 1 || r.To < r.From {
			continue
		}
		pk := streamKey(r.Stream)
		m := dirtyMarker{shard: dirtyIndex(pk, s.feedShards), stream: r.Stream, first: r.From, announced: r.To,
			rowKey: dirtyMarkerKey(pk, r.To, "repair")}
		_, err := withRetry(ctx, s.events.retry, func() ([]string, error) {
			return s.events.submitOnce(ctx, dirtyPartition(m.shard), []table.Op{{Kind: table.Upsert, Entity: m.entity()}})
		})
		if err != nil {
			return res, fmt.Errorf("estuite: announcing %q versions %d to %d again: %w", r.Stream, r.From, r.To, err)
		}
		s.markDirty(m.shard)
		res.Announced = append(res.Announced, r)
	}
	// Catalog rows, a batch per 100 streams of a shard.
	byShard := make(map[int][]table.Op)
	for _, stream := range report.Uncatalogued {
		if validateStreamName(stream) != nil {
			continue
		}
		pk := streamKey(stream)
		shard := s.shardOf(pk)
		byShard[shard] = append(byShard[shard], table.Op{Kind: table.Upsert, Entity: catalogEntity(shard, pk, stream)})
	}
	for _, shard := range slices.Sorted(maps.Keys(byShard)) {
		for chunk := range slices.Chunk(byShard[shard], table.MaxBatchOps) {
			_, err := withRetry(ctx, s.events.retry, func() ([]string, error) {
				return s.events.submitOnce(ctx, catalogPartition(shard), chunk)
			})
			if err != nil {
				return res, fmt.Errorf("estuite: writing stream catalog rows: %w", err)
			}
			for _, op := range chunk {
				res.Catalogued = append(res.Catalogued, op.Entity.Properties[propCatalogStream].(string))
			}
		}
	}
	res.Unrepaired = len(report.Holes) + len(report.Duplicates) + len(report.Gaps) + len(report.OrderViolations) + len(report.Unparseable) + len(report.Lost)
	return res, nil
}
