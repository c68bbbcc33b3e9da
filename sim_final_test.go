package estuite_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
	"github.com/google/uuid"
)

// The checks after a schedule, once a fault-free dispatcher has run until idle.

// simCheck checks the stream table against what the writers were told, and the feed against
// the stream table. It reads with a fault-free store.
func simCheck(s *estuite.Store, backend table.Backend, world *simWorld, streams []string) (problems []string, feedLen int) {
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	ctx := context.Background()

	// No dirty marker is left.
	events, err := backend.OpenTable(ctx, estuite.DefaultTablePrefix+"events")
	if err != nil {
		return []string{err.Error()}, 0
	}
	var left []string
	for shard := 0; shard < 4*s.FeedShards(); shard++ {
		pk := fmt.Sprintf("dirty%02d", shard)
		q := table.Query{PartitionKey: pk}
		for {
			p, err := events.Query(ctx, q)
			if err != nil {
				bad("reading %s: %v", pk, err)
				break
			}
			for _, row := range p.Entities {
				left = append(left, fmt.Sprintf("%v %v-%v", row.Properties["Stream"], row.Properties["First"], row.Properties["Announced"]))
			}
			if p.Continuation == "" {
				break
			}
			q.Continuation = p.Continuation
		}
	}
	if len(left) > 0 {
		if len(left) > 6 {
			left = append(left[:6], fmt.Sprintf("… %d in all", len(left)))
		}
		bad("dirty markers left after the final dispatcher: %s", strings.Join(left, ", "))
	}

	// The streams hold each commit once, contiguously, at the versions its writer was told: in
	// the rows stored, whatever a delete hides from reads (ReadStored). What a read shows of them
	// is checked after (simCheckVisible).
	stored := make(map[string][]estuite.RecordedEvent)
	heads := make(map[string]estuite.StoredHead)
	seen := make(map[string]int64) // commit ID → first version stored
	for _, stream := range streams {
		sh, got, beyond, err := s.ReadStored(ctx, stream)
		if err != nil {
			bad("ReadStored(%s): %v", stream, err)
			continue
		}
		if sh.Removed > 0 && sh.Removed >= sh.RemovedBefore {
			bad("%s: %d first versions removed, but the head's removal floor is %d", stream, sh.Removed, sh.RemovedBefore)
		}
		if len(got) > 0 && got[0].Version != sh.Removed+1 || int64(len(got))+sh.Removed != sh.Version {
			bad("%s: version %d, but %d events stored after %d removed", stream, sh.Version, len(got), sh.Removed)
		}
		// Versions the scavenger removed stand as placeholders (no commit ID), so that the slice
		// is indexed by version.
		full := make([]estuite.RecordedEvent, 0, sh.Version)
		for v := int64(1); v <= sh.Removed; v++ {
			full = append(full, estuite.RecordedEvent{Stream: stream, Version: v})
		}
		got = append(full, got...)
		if beyond > 0 {
			bad("%s: %d event rows stored past the head's version %d", stream, beyond, sh.Version)
		}
		stored[stream], heads[stream] = got, sh
		problems = append(problems, simCheckVisible(ctx, s, stream, sh, got)...)
		if world.del != nil {
			problems = append(problems, world.del.checkStoredDeletion(stream, sh)...)
		}
		for i := 0; i < len(got); {
			e := got[i]
			if e.Version <= sh.Removed {
				i++ // removed by the scavenger
				continue
			}
			c := world.commits[e.CommitID]
			if c != nil && c.stream == stream && i > 0 && got[i-1].Version <= sh.Removed && e.Version > c.first && c.first <= sh.Removed {
				// The rest of a commit whose first events a pass cut short by its time bound removed.
				i += int(c.first + int64(len(c.events)) - e.Version)
				continue
			}
			if c == nil || c.stream != stream {
				bad("%s version %d: commit %q that no writer made to this stream", stream, e.Version, e.CommitID)
				i++
				continue
			}
			if _, dup := seen[c.id]; dup {
				bad("%s version %d: commit %s stored a second time (first at %d)", stream, e.Version, c.id, seen[c.id])
			}
			seen[c.id] = e.Version
			for k, want := range c.events {
				if i+k >= len(got) || got[i+k].CommitID != c.id {
					bad("%s: commit %s is cut short at version %d", stream, c.id, e.Version+int64(k))
					break
				}
				g := got[i+k]
				if g.Type != want.Type || (!g.Erased && string(g.Data) != string(want.Data)) || (want.ID != uuid.Nil && g.ID != want.ID) {
					bad("%s version %d holds %s %s %s; commit %s has %s %s %s there", stream, g.Version, g.Type, g.Data, g.ID, c.id, want.Type, want.Data, want.ID)
				}
			}
			i += len(c.events)
		}
	}
	for _, c := range world.commits {
		first, stored := seen[c.id]
		if h := heads[c.stream]; c.state == present && !stored && c.first <= h.Removed {
			continue // its events were deleted and the scavenger removed them
		}
		switch {
		case c.state == present && !stored:
			bad("commit %s was reported committed at %d-%d, but %s does not hold it (attempts: %v)", c.id, c.first, c.last, c.stream, c.attempts)
		case c.state == present && first != c.first:
			bad("commit %s was reported committed at %d-%d, but %s holds it from version %d (attempts: %v)", c.id, c.first, c.last, c.stream, first, c.attempts)
		case c.state == absent && stored:
			bad("commit %s was refused (or never landed), but %s holds it from version %d (attempts: %v)", c.id, c.stream, first, c.attempts)
		}
	}

	// Snapshots: the stream's one snapshot is that of a stored commit whose last event is at its
	// version, no older than a snapshot an append reported saved; a read with it holds the
	// events after it.
	for _, stream := range streams {
		var saved int64
		for _, c := range world.commits {
			if c.stream == stream && c.snapSaved && c.state == present {
				saved = max(saved, c.last)
			}
		}
		sh := heads[stream]
		visible := simFirstVisible(sh) // the first version a read shows
		// A snapshot from before a delete reflects deleted events, and one older than the
		// version before the first visible one would leave versions out: a read ignores both.
		stale := func(v int64) bool { return v < sh.DeletedBefore || v+1 < visible }
		if stale(saved) {
			saved = 0
		}
		var found *estuite.Snapshot
		for schema := 1; schema <= 2; schema++ {
			r, err := s.Read(ctx, stream, &estuite.ReadOptions{WithSnapshot: true, SnapshotSchema: schema})
			if errors.Is(err, estuite.ErrStreamNotFound) || errors.Is(err, estuite.ErrStreamDeleted) {
				saved = 0 // simCheckVisible checked the error
				break
			}
			if err != nil {
				bad("Read(%s) with snapshot schema %d: %v", stream, schema, err)
				continue
			}
			var after []estuite.RecordedEvent
			for e, err := range r.Events {
				if err != nil {
					bad("Read(%s) with snapshot schema %d: %v", stream, schema, err)
					break
				}
				after = append(after, e)
			}
			from := int64(0)
			if sn := r.Snapshot; sn != nil {
				if found != nil {
					bad("%s: snapshots of schemas %d and %d", stream, found.Schema, sn.Schema)
				}
				found, from = sn, sn.Version
				id, _, _ := strings.Cut(string(sn.Data), "|")
				c, st := world.commits[id], stored[stream]
				v := sn.Version
				switch {
				case sn.Schema != schema || string(sn.Data) != fmt.Sprintf("%s|%d", id, schema):
					bad("%s: snapshot %q read as schema %d", stream, sn.Data, sn.Schema)
				case c == nil || c.stream != stream || c.snapshot == nil:
					bad("%s: snapshot %q of no commit of the stream with a snapshot", stream, sn.Data)
				case v < 1 || v > int64(len(st)) || v > sh.Removed && st[v-1].CommitID != id || v < int64(len(st)) && st[v].CommitID == id:
					// (At a version the scavenger removed, the snapshot's commit is not stored to compare.)
					bad("%s: snapshot of commit %s at version %d, which is not that commit's last event", stream, id, v)
				case stale(v):
					bad("%s: a read returned the snapshot of commit %s at version %d, from before the stream's delete or older than its first visible version (%+v)", stream, id, v, sh)
				}
				world.stats.snapshots++
			}
			st := stored[stream]
			from = max(from, visible-1)
			if from > int64(len(st)) || len(after) != len(st)-int(from) {
				bad("%s: read with snapshot schema %d from version %d holds %d events; the stream %d", stream, schema, from, len(after), len(st))
				continue
			}
			for i, e := range after {
				if e.Version != from+int64(i)+1 || e.ID != st[from+int64(i)].ID {
					bad("%s: read with snapshot schema %d: event %d is version %d", stream, schema, i, e.Version)
					break
				}
			}
		}
		if saved > 0 && (found == nil || found.Version < saved) {
			bad("%s: an append saved a snapshot at version %d; the stream's snapshot is %+v", stream, saved, found)
		}
	}

	// The feed, shard by shard: positions 1..n without a gap, every stored event of the shard's
	// streams exactly once, nothing else, each stream in version order.
	var feed []estuite.FeedEvent
	shardLen := make([]int64, s.FeedShards())
	for shard := range s.FeedShards() {
		after := int64(0)
		for {
			page, err := s.ReadFeedWithRedacted(ctx, shard, after)
			if err != nil {
				bad("ReadFeed(shard %d) after %d: %v", shard, after, err)
				break
			}
			feed = append(feed, page.Events...)
			shardLen[shard] += int64(len(page.Events))
			if page.Next == after {
				break
			}
			after = page.Next
		}
	}
	last := make(map[string]int64)
	redacted := 0
	var inShard int64
	for i, ev := range feed {
		if i > 0 && ev.Shard != feed[i-1].Shard {
			inShard = 0
		}
		inShard++
		if ev.Position != inShard {
			bad("feed shard %d position %d holds position %d", ev.Shard, inShard, ev.Position)
			break
		}
		if want := simFeedShardOf(ev.Stream, s.FeedShards()); ev.Shard != want {
			bad("feed shard %d position %d holds %s, a stream of shard %d", ev.Shard, ev.Position, ev.Stream, want)
		}
		if ev.Version != last[ev.Stream]+1 {
			bad("feed position %d: %s version %d follows version %d", ev.Position, ev.Stream, ev.Version, last[ev.Stream])
		}
		last[ev.Stream] = max(last[ev.Stream], ev.Version)
		st, ok := stored[ev.Stream]
		if !ok || ev.Version < 1 || ev.Version > int64(len(st)) {
			bad("feed position %d: %s version %d is not in the stream table", ev.Position, ev.Stream, ev.Version)
			continue
		}
		h := heads[ev.Stream]
		switch {
		case ev.Redacted && ev.Version >= h.RemovedBefore:
			bad("feed position %d: %s version %d is redacted, but the head's removal floor is %d: a visible event lost", ev.Position, ev.Stream, ev.Version, h.RemovedBefore)
			continue
		case ev.Redacted:
			redacted++
			continue // its contents are gone, as they should be
		case ev.Version <= h.Removed:
			bad("feed position %d: %s version %d was removed from the stream table, but not redacted in the feed", ev.Position, ev.Stream, ev.Version)
			continue
		}
		want := st[ev.Version-1]
		if ev.ID != want.ID || ev.CommitID != want.CommitID || ev.Type != want.Type || string(ev.Data) != string(want.Data) {
			bad("feed position %d: %s version %d is %s/%s %s; the stream holds %s/%s %s", ev.Position, ev.Stream, ev.Version, ev.CommitID, ev.ID, ev.Data, want.CommitID, want.ID, want.Data)
		}
	}
	world.stats.redacted = redacted
	// Verify, over the same tables, finds nothing wrong: no loss, no wrong redaction.
	if r, err := s.Verify(ctx, nil); err != nil || !r.OK() {
		bad("Verify at the end: %+v, %v", r, err)
	}
	problems = append(problems, simCheckCatalog(ctx, s, streams)...)
	total := 0
	for _, stream := range streams {
		total += len(stored[stream])
		if last[stream] != int64(len(stored[stream])) {
			bad("%s is at version %d, the feed holds it up to version %d", stream, len(stored[stream]), last[stream])
		}
	}
	if total != len(feed) {
		bad("the feed holds %d events, the streams %d", len(feed), total)
	}
	for shard, n := range shardLen {
		if head, err := s.FeedHeadOf(ctx, shard); err != nil || head != n {
			bad("FeedHeadOf(%d) = %d, %v; the shard holds %d events", shard, head, err, n)
		}
	}
	// WaitDispatched, from storage alone (the store dispatched nothing itself), finds each
	// stream's every 7th version and its last at their positions.
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	fresh, err := estuite.Open(ctx, backend, nil) // not closed: that would close the backend
	if err != nil {
		bad("opening a store: %v", err)
		return problems, len(feed)
	}
	for i, ev := range feed {
		if i%7 != 0 && ev.Version != int64(len(stored[ev.Stream])) {
			continue
		}
		if pos, err := fresh.WaitDispatched(wctx, ev.Stream, ev.Version); err != nil || pos != ev.Position {
			bad("WaitDispatched(%s, %d) = %d, %v; the feed holds it at %d", ev.Stream, ev.Version, pos, err, ev.Position)
			break
		}
	}

	// Durable subscriptions: every position up to the stored checkpoint was handled.
	for key := range world.subs {
		name, shard := key, 0
		partition := "checkpoint"
		if i := strings.LastIndexByte(key, '@'); i >= 0 {
			name = key[:i]
			fmt.Sscanf(key[i+1:], "%d", &shard)
			partition = fmt.Sprintf("checkpoint%02d", shard)
		}
		row, err := events.Get(ctx, partition, name)
		if err != nil {
			continue
		}
		pos, _ := row.Properties["Position"].(int64)
		if done := world.handledUpTo(key); pos > done {
			bad("subscription %s: final checkpoint at %d, but its handlers finished every position only up to %d", key, pos, done)
		}
		if pos > shardLen[shard] {
			bad("subscription %s: checkpoint at %d past the shard's end %d", key, pos, shardLen[shard])
		}
	}
	return problems, len(feed)
}

// simCheckVisible checks what a read of a stream shows against what is stored: exactly the events
// from the head's DeletedBefore on (the simulation sets no retention), ErrStreamNotFound when there
// are none (never written, or soft-deleted and not written since), ErrStreamDeleted after a hard
// delete — forward, backward with a limit, and Version alike.
func simCheckVisible(ctx context.Context, s *estuite.Store, stream string, sh estuite.StoredHead, stored []estuite.RecordedEvent) (problems []string) {
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	var want error
	switch {
	case sh.Tombstone:
		want = estuite.ErrStreamDeleted
	case !sh.Exists || sh.Version == 0 || sh.DeletedBefore > sh.Version:
		want = estuite.ErrStreamNotFound
	}
	visible := stored[min(int64(len(stored)), simFirstVisible(sh)-1):]
	for _, o := range []*estuite.ReadOptions{nil, {Direction: estuite.Backward, Limit: 3}} {
		r, err := s.Read(ctx, stream, o)
		switch {
		case want != nil && !errors.Is(err, want):
			bad("Read(%s, %+v) = %v; the head (%+v) says %v", stream, o, err, sh, want)
			continue
		case want != nil:
			continue
		case err != nil:
			bad("Read(%s, %+v): %v; the head is %+v", stream, o, err, sh)
			continue
		}
		var got []estuite.RecordedEvent
		for e, err := range r.Events {
			if err != nil {
				bad("Read(%s, %+v): %v", stream, o, err)
				break
			}
			got = append(got, e)
		}
		exp := visible
		if o != nil {
			exp = slices.Clone(visible[max(0, len(visible)-o.Limit):])
			slices.Reverse(exp)
		}
		ok := r.Version == sh.Version && len(got) == len(exp)
		for i := 0; ok && i < len(got); i++ {
			ok = got[i].Version == exp[i].Version && got[i].ID == exp[i].ID && got[i].CommitID == exp[i].CommitID
		}
		if !ok {
			bad("Read(%s, %+v) shows version %d, events %v; stored: %+v, visible events %v", stream, o, r.Version, simVersions(got), sh, simVersions(exp))
		}
	}
	v, err := s.Version(ctx, stream)
	if want != nil && !errors.Is(err, want) || want == nil && (err != nil || v != sh.Version) {
		bad("Version(%s) = %d, %v; the head is %+v", stream, v, err, sh)
	}
	return problems
}

// simFirstVisible is the first version a read of the stream shows: the first that no delete,
// truncation, maxCount or removal floor hides (the floor stays whatever the metadata says later).
func simFirstVisible(sh estuite.StoredHead) int64 {
	first := max(1, sh.DeletedBefore, sh.TruncateBefore, sh.RemovedBefore)
	if sh.MaxCount > 0 {
		first = max(first, sh.Version-sh.MaxCount+1)
	}
	return first
}

func simVersions(events []estuite.RecordedEvent) []int64 {
	out := make([]int64, len(events))
	for i, e := range events {
		out[i] = e.Version
	}
	return out
}

// simCheckCatalog checks the stream catalog: ListStreams, in pages of 3, lists every readable
// stream once, at its version, and nothing else.
func simCheckCatalog(ctx context.Context, s *estuite.Store, streams []string) (problems []string) {
	want := make(map[string]int64)
	for _, stream := range streams {
		if v, err := s.Version(ctx, stream); err == nil {
			want[stream] = v
		}
	}
	got := make(map[string]int64)
	after := ""
	for pages := 0; ; pages++ {
		if pages > len(streams)+2 {
			return append(problems, fmt.Sprintf("ListStreams: more than %d pages of 3 for %d streams", pages, len(streams)))
		}
		list, err := s.ListStreams(ctx, &estuite.ListStreamsOptions{Prefix: "sim-", After: after, Limit: 3})
		if err != nil {
			return append(problems, fmt.Sprintf("ListStreams after %q: %v", after, err))
		}
		for _, st := range list.Streams {
			if _, dup := got[st.Name]; dup {
				problems = append(problems, fmt.Sprintf("ListStreams lists %s twice", st.Name))
			}
			got[st.Name] = st.Version
		}
		if list.Next == "" {
			break
		}
		after = list.Next
	}
	for stream, v := range want {
		if g, ok := got[stream]; !ok || g != v {
			problems = append(problems, fmt.Sprintf("ListStreams: %s at version %d (listed: %v), want version %d", stream, g, ok, v))
		}
	}
	for stream := range got {
		if _, ok := want[stream]; !ok {
			problems = append(problems, fmt.Sprintf("ListStreams lists %s, which is not readable", stream))
		}
	}
	return problems
}
