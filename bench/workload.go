package bench

import (
	"fmt"
	"math"
	"strings"
)

// ReadKind says what a workload's read phase does.
type ReadKind int

const (
	// NoRead: the workload only writes (and dispatches).
	NoRead ReadKind = iota
	// Rehydrate reads whole streams, one after another, as an aggregate is rehydrated.
	Rehydrate
	// Project runs one durable subscription over the whole feed, from the start until it has
	// caught up, after the feed was written.
	Project
	// FollowLive runs one durable subscription that follows the feed while the appends happen:
	// every event's full path (append, dispatch, projection) is timed.
	FollowLive
	// Remove removes data once the feed holds it: half the streams are deleted, a quarter get a
	// maxCount of one commit, and the last quarter's subjects are forgotten; then one scavenge
	// pass removes what was hidden. EventsRead counts the events removed or erased.
	Remove
)

func (k ReadKind) String() string {
	switch k {
	case NoRead:
		return "none"
	case Rehydrate:
		return "rehydrate"
	case Project:
		return "project"
	case FollowLive:
		return "follow-live"
	case Remove:
		return "remove"
	}
	return fmt.Sprintf("ReadKind(%d)", int(k))
}

// MarshalText writes the kind as its name.
func (k ReadKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText reads a kind from its name.
func (k *ReadKind) UnmarshalText(b []byte) error {
	for c := NoRead; c <= Remove; c++ {
		if c.String() == string(b) {
			*k = c
			return nil
		}
	}
	return fmt.Errorf("bench: unknown read kind %q", b)
}

// EventTypes is how many event types the workloads' events cycle through; a filtered projection
// keeps one of them.
const EventTypes = 10

// Workload is one named measurement: appends of CommitSize events to Streams streams, dispatched
// into the feed, then optionally read. Sizes are given at scale 1 (see Scaled).
type Workload struct {
	// Name identifies the workload on the command line and in reports.
	Name string `json:"name"`
	// Description says in a sentence what the workload does.
	Description string `json:"description"`
	// Streams is how many streams the appends go to; commit i goes to stream i mod Streams.
	Streams int `json:"streams"`
	// Commits is how many appends are made.
	Commits int `json:"commits"`
	// CommitSize is how many events one append carries (at most estuite.MaxAppendRows).
	CommitSize int `json:"commitSize"`
	// Writers is how many appenders run at once; each owns a share of the streams and appends
	// with the exact expected version, as an aggregate does after it was loaded.
	Writers int `json:"writers"`
	// LiveDispatch runs the dispatcher while the appends happen (as `estuite serve` does);
	// otherwise the dispatcher drains the backlog after them, step by step.
	LiveDispatch bool `json:"liveDispatch"`
	// Read is what the read phase does.
	Read ReadKind `json:"read"`
	// Rehydrations is how many whole-stream reads a Rehydrate workload makes (streams in turn).
	Rehydrations int `json:"rehydrations,omitempty"`
	// Readers is how many rehydrations run at once.
	Readers int `json:"readers,omitempty"`
	// Filtered makes a projection keep only one of the EventTypes event types.
	Filtered bool `json:"filtered,omitempty"`
	// SnapshotEvery, when set, makes every append that brings a stream to or past a multiple of
	// it save a snapshot of SnapshotBytes with its events, and a Rehydrate workload read with the
	// snapshot (estuite.ReadOptions.WithSnapshot): only the events after it are read.
	SnapshotEvery int `json:"snapshotEvery,omitempty"`
}

// SnapshotBytes is the size of the snapshots a workload with SnapshotEvery saves.
const SnapshotBytes = 1000

// saves reports whether the append that brings a stream from version v to v+n saves a snapshot.
func (w Workload) saves(v, n int64) bool {
	e := int64(w.SnapshotEvery)
	return e > 0 && (v+n)/e > v/e
}

// ReadPerRehydration is how many events one rehydration reads: a whole stream, or the events
// after its last snapshot.
func (w Workload) ReadPerRehydration() int64 {
	length := w.Events() / int64(max(1, w.Streams))
	last := int64(0)
	for v := int64(0); v < length; v += int64(w.CommitSize) {
		if w.saves(v, int64(w.CommitSize)) {
			last = v + int64(w.CommitSize)
		}
	}
	return length - last
}

// Events is how many events the workload appends.
func (w Workload) Events() int64 { return int64(w.Commits) * int64(w.CommitSize) }

// Scaled returns the workload with its counts (streams, commits, rehydrations) multiplied by
// factor, each at least 1; commit sizes, concurrency and stream lengths stay, so that every
// figure per event keeps its meaning. A factor of 0.01 runs every workload in seconds.
func (w Workload) Scaled(factor float64) Workload {
	scale := func(n int) int {
		if n == 0 {
			return 0
		}
		return max(1, int(math.Round(float64(n)*factor)))
	}
	perStream := max(1, w.Commits/max(1, w.Streams))
	w.Streams = scale(w.Streams)
	if w.Read == Rehydrate {
		w.Commits = w.Streams * perStream // keep stream lengths exact
	} else {
		w.Commits = max(scale(w.Commits), w.Streams)
	}
	w.Rehydrations = scale(w.Rehydrations)
	return w
}

// key is the workload's name reduced to letters and digits: the suffix of its table prefix.
func (w Workload) key() string {
	var b strings.Builder
	for _, r := range strings.ToLower(w.Name) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func (w Workload) validate() error {
	switch {
	case w.Name == "" || w.key() == "":
		return fmt.Errorf("bench: a workload needs a name with letters or digits")
	case w.Streams < 1 || w.Commits < 1:
		return fmt.Errorf("bench: workload %s: streams and commits must be at least 1", w.Name)
	case w.CommitSize < 1 || w.CommitSize > 97:
		return fmt.Errorf("bench: workload %s: commit size %d is not within 1–97", w.Name, w.CommitSize)
	case w.Writers < 1:
		return fmt.Errorf("bench: workload %s: needs at least one writer", w.Name)
	case w.Read == Rehydrate && w.Rehydrations < 1:
		return fmt.Errorf("bench: workload %s: a rehydrate workload needs rehydrations", w.Name)
	case w.SnapshotEvery < 0:
		return fmt.Errorf("bench: workload %s: negative snapshot interval", w.Name)
	case w.Read == FollowLive && !w.LiveDispatch:
		return fmt.Errorf("bench: workload %s: following the feed live needs live dispatch", w.Name)
	}
	return nil
}

// DefaultWorkloads are the workloads `estuite bench` runs, at scale 1: about two minutes on
// Azurite on a 2-core machine.
func DefaultWorkloads() []Workload {
	ws := []Workload{
		{Name: "append-1", Description: "single-event commits spread over 1,000 streams, 16 writers, dispatcher running",
			Streams: 1000, Commits: 6000, CommitSize: 1, Writers: 16, LiveDispatch: true},
		{Name: "append-10", Description: "10-event commits over 200 streams, 16 writers, dispatcher running",
			Streams: 200, Commits: 1000, CommitSize: 10, Writers: 16, LiveDispatch: true},
		{Name: "append-50", Description: "50-event commits over 100 streams, 16 writers, dispatcher running",
			Streams: 100, Commits: 400, CommitSize: 50, Writers: 16, LiveDispatch: true},
		{Name: "rehydrate-10", Description: "rehydrate aggregates: read whole streams of 10 events, 16 readers",
			Streams: 500, Commits: 500, CommitSize: 10, Writers: 16, Read: Rehydrate, Rehydrations: 1000, Readers: 16},
		{Name: "rehydrate-100", Description: "rehydrate aggregates: read whole streams of 100 events, 16 readers",
			Streams: 100, Commits: 200, CommitSize: 50, Writers: 16, Read: Rehydrate, Rehydrations: 200, Readers: 16},
		{Name: "rehydrate-1000", Description: "rehydrate aggregates: read whole streams of 1,000 events, 16 readers",
			Streams: 20, Commits: 400, CommitSize: 50, Writers: 16, Read: Rehydrate, Rehydrations: 40, Readers: 16},
		{Name: "rehydrate-1000-snapshots", Description: "the same, with a snapshot saved every 300 events (the last at 900): a read is the snapshot and 100 events",
			Streams: 20, Commits: 400, CommitSize: 50, Writers: 16, Read: Rehydrate, Rehydrations: 40, Readers: 16, SnapshotEvery: 300},
		{Name: "projection", Description: "one durable projection (subscription defaults) reads a feed of 20,000 events from the start",
			Streams: 100, Commits: 400, CommitSize: 50, Writers: 16, Read: Project},
		{Name: "projection-filtered", Description: "the same, keeping one event type in ten",
			Streams: 100, Commits: 400, CommitSize: 50, Writers: 16, Read: Project, Filtered: true},
		{Name: "remove", Description: "delete, expire and forget: 10-event commits over 200 streams; then half the streams deleted, a quarter kept to their last commit (maxCount), a quarter's subjects forgotten, and one scavenge pass",
			Streams: 200, Commits: 1000, CommitSize: 10, Writers: 16, Read: Remove},
		{Name: "full-path", Description: "each event appended alone (4 writers, 200 streams), dispatched live and read once by a live projection in another store instance",
			Streams: 200, Commits: 2000, CommitSize: 1, Writers: 4, LiveDispatch: true, Read: FollowLive},
	}
	return ws
}

// Select returns the workloads named in a comma-separated list, in the list's order; an empty
// list or "all" selects every one.
func Select(all []Workload, list string) ([]Workload, error) {
	list = strings.TrimSpace(list)
	if list == "" || list == "all" {
		return all, nil
	}
	var out []Workload
	seen := map[string]bool{}
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" || seen[name] {
			continue
		}
		seen[name] = true
		found := false
		for _, w := range all {
			if w.Name == name {
				out = append(out, w)
				found = true
			}
		}
		if !found {
			names := make([]string, len(all))
			for i, w := range all {
				names[i] = w.Name
			}
			return nil, fmt.Errorf("unknown workload %q (known: %s)", name, strings.Join(names, ", "))
		}
	}
	return out, nil
}
