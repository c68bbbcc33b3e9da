package estuite

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/estuite/estuite/table"
	"github.com/google/uuid"
)

// Early announcement: an append's write-ahead dirty marker written while the caller is still
// reading the stream (docs/early-announcement.md).
//
// An ordinary marker names the versions its append will write, so it can only be written once
// the head is known, between the read and the batch: a third round trip. An early marker names
// the commit ID instead; the dispatcher learns its versions from the commit row once the append
// has landed. Two rules keep the write-ahead guarantee:
//
//   - A batch relies on an early marker only if it is sent within the store's AnnounceWindow of
//     the moment Announce began (on this process's monotonic clock), only once the marker is
//     stored, and only if it carries that append alone (the commit row then says every version
//     the batch writes).
//   - A dispatcher removes an early marker whose commit row it cannot find only after it has seen
//     the marker for FenceAfter on its own clock and then fenced the stream's head. FenceAfter is
//     at least twice AnnounceWindow — the writer's window is on the marker, and a dispatcher waits
//     twice it when that is longer —, so every head a relying batch was prepared on was read
//     before the fence, and such a batch can no longer land once the fence is written.

// DefaultAnnounceWindow is Options.AnnounceWindow when it is 0.
const DefaultAnnounceWindow = DefaultFenceAfter / 2

// Announcement is an append announced before it was prepared: its dirty marker is written while
// the caller reads the stream and decides, so that the append itself is one round trip (see
// Store.Announce). Pass it in AppendOptions.Announcement. It is safe for concurrent use.
type Announcement struct {
	s                *Store
	stream, pk       string
	commitID         string
	started          time.Time // before the marker was sent, with the monotonic clock reading
	marker           dirtyMarker
	none             bool          // the backend writes markers in the append's own transaction
	stored           chan struct{} // closed when the marker's write has ended
	err              error         // its outcome, set before stored is closed
	mu               sync.Mutex
	relying          int  // batches relying on the marker whose outcome is not known yet
	keep             bool // a batch relying on it landed or may have: the dispatcher resolves it
	withdrawn, taken bool // Withdraw was called; the marker's delete was sent
}

// Announce announces an append of commitID to stream before the caller has read the stream:
// it starts writing the append's write-ahead dirty marker in the background and returns at once.
// Read the stream meanwhile, decide, and append with AppendOptions{CommitID: commitID,
// Announcement: the announcement}: the append then sends its batch without writing a marker of its
// own (it waits for the early one if that is still on its way), and a command of a read and an
// append takes two sequential round trips instead of three.
//
// The announcement serves appends sent within Options.AnnounceWindow of the call (default
// DefaultAnnounceWindow); an append sent later, or after the marker failed to be written, writes
// an ordinary marker as it would without one. Any number of appends with the commit ID may use it
// in that window (a retry after a version conflict, a retry after a lost answer).
//
// Call Withdraw when the command appends nothing after all, or when its append failed: the marker
// is deleted in the background, unless an append that relied on it landed or may have landed (its
// dispatcher needs it then). A marker that is never withdrawn is not lost data: the dispatcher
// takes it away after DispatcherOptions.FenceAfter, at the cost of fencing the stream's head once
// (which makes other processes' cached heads of the stream miss once).
//
// On a backend that writes the marker in the append's own transaction (the embedded store),
// Announce writes nothing and costs nothing. Errors: ErrInvalidInput for a bad stream name or
// commit ID; ErrClosed.
func (s *Store) Announce(ctx context.Context, stream, commitID string) (*Announcement, error) {
	an, err := s.newAnnouncement(stream, commitID)
	if err != nil {
		return nil, err
	}
	go an.write(context.WithoutCancel(ctx))
	return an, nil
}

// newAnnouncement validates an announcement and builds its marker; write stores it.
func (s *Store) newAnnouncement(stream, commitID string) (*Announcement, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if err := validateStreamName(stream); err != nil {
		return nil, err
	}
	if err := validateName("commitID", commitID, MaxCommitIDLength); err != nil {
		return nil, err
	}
	pk := streamKey(stream)
	an := &Announcement{s: s, stream: stream, pk: pk, commitID: commitID, started: time.Now(), stored: make(chan struct{})}
	if _, ok := s.backend.(table.MultiSubmitter); ok || s.announceWindow == 0 {
		an.none = true
		close(an.stored)
		return an, nil
	}
	// First 0: no version is announced (the dispatcher goes by the commit row), and a dispatcher
	// of an earlier release refuses the row as malformed rather than take it for an ordinary
	// marker, which it could delete while an append relies on it.
	an.marker = dirtyMarker{
		shard:     dirtyIndex(pk, s.feedShards),
		stream:    stream,
		pk:        pk,
		first:     0,
		announced: MaxPosition,
		commitID:  commitID,
		windowMs:  int64((s.announceWindow + time.Millisecond - 1) / time.Millisecond), // rounded up
	}
	an.marker.rowKey = dirtyMarkerKey(pk, MaxPosition, strings.ReplaceAll(uuid.NewString(), "-", "")[:16])
	return an, nil
}

// write stores the announcement's marker (through the shard's coalescing announcer), once.
func (an *Announcement) write(ctx context.Context) {
	if an.none {
		return
	}
	an.err = an.s.announcer.announce(ctx, an.s.events, an.marker)
	close(an.stored)
}

// CommitID is the commit ID the announcement was made for.
func (an *Announcement) CommitID() string { return an.commitID }

// Stream is the stream the announcement was made for.
func (an *Announcement) Stream() string { return an.stream }

// Withdraw takes the announcement back: its marker is deleted in the background, best effort,
// unless an append that relied on it landed or may have landed. Appends after Withdraw write
// ordinary markers. Calling it more than once, or after a successful append, is harmless.
func (an *Announcement) Withdraw() {
	if an.withdraw() {
		go an.delete(context.Background())
	}
}

// withdraw marks the announcement withdrawn, and reports whether the caller is to delete its
// marker now.
func (an *Announcement) withdraw() bool {
	if an == nil || an.none {
		return false
	}
	an.mu.Lock()
	defer an.mu.Unlock()
	an.withdrawn = true
	del := an.relying == 0 && !an.keep && !an.taken
	an.taken = an.taken || del
	return del
}

// delete removes the marker once its write has ended (a write still on its way would otherwise
// store it after the delete).
func (an *Announcement) delete(ctx context.Context) {
	<-an.stored // even after an error: a write whose answer was lost may have stored the marker
	m := an.marker
	op := table.Op{Kind: table.Delete, Entity: table.Entity{PartitionKey: dirtyPartition(m.shard), RowKey: m.rowKey}, IfMatch: table.AnyETag}
	_, _ = an.s.events.submitOnce(ctx, dirtyPartition(m.shard), []table.Op{op})
}

// rely reports whether a batch sent now may rely on the announcement's marker instead of writing
// one: it waits for the marker's write (while ctx lasts and the window is open), and counts the
// batch as relying on it. The caller must call settle with the batch's outcome.
func (an *Announcement) rely(ctx context.Context) bool {
	if an == nil || an.none {
		return false
	}
	window := an.s.announceWindow
	left := window - time.Since(an.started)
	if left <= 0 {
		return false
	}
	t := time.NewTimer(left)
	defer t.Stop()
	select {
	case <-an.stored:
	case <-ctx.Done():
		return false
	case <-t.C:
		return false
	}
	an.mu.Lock()
	defer an.mu.Unlock()
	// The window is judged again after the wait, just before the batch goes.
	if an.err != nil || an.withdrawn || time.Since(an.started) >= window {
		return false
	}
	an.relying++
	return true
}

// settle ends a relying batch: landed is false only when the storage refused the batch, so that it
// can never land.
func (an *Announcement) settle(landed bool) {
	an.mu.Lock()
	an.relying--
	an.keep = an.keep || landed
	del := an.withdrawn && an.relying == 0 && !an.keep && !an.taken
	an.taken = an.taken || del
	an.mu.Unlock()
	if del {
		go an.delete(context.Background())
	}
}
