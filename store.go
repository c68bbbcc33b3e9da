package estuite

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/estuite/estuite/table"
	"go.opentelemetry.io/otel/trace"
)

// Defaults of Options.
const (
	DefaultTablePrefix   = "estuite"
	DefaultHeadCacheSize = 10000
)

// Options configure a Store. nil means defaults.
type Options struct {
	// TablePrefix starts the name of every table the store uses: the stream table is
	// TablePrefix+"streams", the event table TablePrefix+"events", the key table
	// TablePrefix+"keys". Letters and digits, starting
	// with a letter, at most 56 characters. Default "estuite".
	TablePrefix string
	// HeadCacheSize is how many stream heads (version and ETag) the store remembers, so that an
	// append to a stream it has seen costs one storage request. Default DefaultHeadCacheSize;
	// negative turns the cache off.
	HeadCacheSize int
	// Retry bounds the retries of transient storage failures. Zero means DefaultRetryPolicy.
	Retry RetryPolicy
	// Now returns the time recorded on events. Default time.Now. Announcement windows are
	// measured on it too.
	Now func() time.Time
	// AnnounceWindow is how long after Store.Announce an append may rely on the early marker
	// (later, it writes an ordinary one). It must stay below half the FenceAfter of every
	// dispatcher of the store, in every process: a dispatcher removes an early marker of an append
	// that has not landed after FenceAfter. Default DefaultAnnounceWindow (DefaultFenceAfter/2);
	// negative turns early announcements off (Announce writes nothing).
	AnnounceWindow time.Duration
	// MasterKey, when set, is a 32-byte AES-256 key that wraps the subjects' data keys in the key
	// table (TablePrefix+"keys"): whoever reads the tables (or a backup of them) without it
	// cannot decrypt any subject's events. Without it, data keys are stored unwrapped beside the
	// events: Forget still erases (the key is gone, so are the events' contents), but anyone who
	// can read the key table can decrypt the subjects not yet forgotten. A store whose keys were
	// wrapped by another master key fails with ErrMasterKey on the subjects' events. Keys written
	// without a master key still work once one is set; new keys are then wrapped.
	MasterKey []byte
	// PreviousMasterKeys are master keys that wrapped data keys before MasterKey did: the store
	// unwraps the keys they wrapped, and never wraps with them. Set them while rotating the
	// master key, until Store.RewrapKeys has rewrapped every key under MasterKey.
	PreviousMasterKeys [][]byte
	// KeyCacheLifetime is how long the store uses a subject's data key after it read it from the
	// key table, before it reads it again: the longest this store may go on decrypting (and
	// sealing new events with) the key of a subject that another Store forgot. Default
	// DefaultKeyCacheLifetime; negative reads the key row at every use (one read per event read
	// or append naming a subject). A subject forgotten through this Store is never decrypted
	// again by it.
	KeyCacheLifetime time.Duration
	// KeyCacheSize is how many subjects' keys the store caches. Default DefaultKeyCacheSize.
	KeyCacheSize int
	// FeedShards is how many feed shards a new store gets: each stream belongs to one (by a hash
	// of its name), and each shard is a feed of its own — gapless positions, exactly once, in
	// stream order — dispatched by a dispatcher of its own (DispatcherOptions.Shard), so that
	// the feed scales past one partition's throughput. At most MaxFeedShards. The store records
	// it when it is created with more than one; 0 opens an existing store with the shards it
	// has (a new one with one). Any other value must be the store's: a store's shard count does
	// not change (docs/operations.md, "Feed shards"), and Open refuses a store with events under
	// another count.
	FeedShards int
	// TracerProvider, when set, traces the store with OpenTelemetry (docs/operations.md,
	// "Tracing"): a span per append (its storage requests as span events), per dispatch step
	// that did work and per subscription or consumer group handler call (linked to the span of
	// the append that wrote the event), and each appended event's metadata carries the append
	// span's W3C trace context ("traceparent", see EventData.Metadata). nil, the default, turns
	// tracing off: the store makes no OpenTelemetry call at all — it does not fall back to the
	// global provider (pass otel.GetTracerProvider() for that) — and writes no trace context.
	TracerProvider trace.TracerProvider

	// knownShards, in tests, is the store's shard count, so that Open reads no row for it (the
	// simulation opens its processes' stores outside their actors).
	knownShards int
}

// Store is an event store: streams of events in a stream table, one partition per stream. It is
// safe for concurrent use, and several Stores (in one process or many) may share one backend.
type Store struct {
	backend table.Backend
	streams storage // the stream table
	events  storage // the event table: feed, dirty markers, lease, checkpoints
	keys    storage // the key table: subjects' data keys and tombstones
	counts  *counter
	now     func() time.Time
	heads   *headCache
	// master wraps data keys (nil: stored unwrapped); keyCache holds subjects' key states.
	master   *masterKey
	previous map[string]*masterKey // Options.PreviousMasterKeys, by fingerprint
	keyCache keyCache
	closed   atomic.Bool

	// feedShards is the store's number of feed shards; shards their in-process state.
	feedShards int
	shards     []*shardState
	// dispatchWatch tells WaitDispatched what this process's dispatchers wrote into the feed.
	dispatchWatch dispatchWatch
	// announcer writes appends' dirty markers, coalescing concurrent ones.
	announcer announcer
	// announceWindow is Options.AnnounceWindow (0: early announcements off).
	announceWindow time.Duration
	// tr traces the store (nil: tracing off).
	tr *tracing
}

// Open opens the event store kept in backend, creating its tables when missing. The store owns
// the backend from then on: Close closes it.
func Open(ctx context.Context, backend table.Backend, opts *Options) (*Store, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.TablePrefix == "" {
		o.TablePrefix = DefaultTablePrefix
	}
	if o.HeadCacheSize == 0 {
		o.HeadCacheSize = DefaultHeadCacheSize
	}
	if o.Retry == (RetryPolicy{}) {
		o.Retry = DefaultRetryPolicy
	}
	if o.Retry.MaxAttempts < 1 {
		o.Retry.MaxAttempts = 1
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.AnnounceWindow == 0 {
		o.AnnounceWindow = DefaultAnnounceWindow
	}
	if o.KeyCacheLifetime == 0 {
		o.KeyCacheLifetime = DefaultKeyCacheLifetime
	}
	if o.KeyCacheSize <= 0 {
		o.KeyCacheSize = DefaultKeyCacheSize
	}
	var master *masterKey
	if o.MasterKey != nil {
		var err error
		if master, err = newMasterKey(o.MasterKey); err != nil {
			return nil, err
		}
	}
	previous := make(map[string]*masterKey, len(o.PreviousMasterKeys))
	for _, raw := range o.PreviousMasterKeys {
		m, err := newMasterKey(raw)
		if err != nil {
			return nil, invalid("previous master keys", "%v", err)
		}
		previous[m.id] = m
	}
	if len(previous) > 0 && master == nil {
		return nil, invalid("previous master keys", "are set without a MasterKey to rewrap their keys under")
	}
	counts := &counter{}
	tr := newTracing(o.TracerProvider)
	openTable := func(suffix string) (storage, error) {
		name := o.TablePrefix + suffix
		if err := table.ValidateTableName(name); err != nil {
			return storage{}, invalid("table prefix", "%v", err)
		}
		t, err := withRetry(ctx, o.Retry, func() (table.Table, error) { return backend.OpenTable(ctx, name) })
		if err != nil {
			return storage{}, fmt.Errorf("estuite: opening table %s: %w", name, err)
		}
		return storage{t: t, name: name, retry: o.Retry, counts: counts, rows: &rowEstimate{}, tr: tr}, nil
	}
	streams, err := openTable("streams")
	if err != nil {
		return nil, err
	}
	events, err := openTable("events")
	if err != nil {
		return nil, err
	}
	keys, err := openTable("keys")
	if err != nil {
		return nil, err
	}
	s := &Store{
		backend:  backend,
		streams:  streams,
		events:   events,
		keys:     keys,
		counts:   counts,
		now:      o.Now,
		heads:    newHeadCache(o.HeadCacheSize),
		master:   master,
		previous: previous,
		keyCache: keyCache{lifetime: o.KeyCacheLifetime, max: o.KeyCacheSize, m: make(map[string]*keyEntry)},

		announceWindow: max(o.AnnounceWindow, 0),
		tr:             tr,
	}
	if o.knownShards > 0 {
		s.feedShards = o.knownShards
	} else if s.feedShards, err = openFeedShards(ctx, events, streams, o.FeedShards); err != nil {
		return nil, err
	}
	s.shards = make([]*shardState, s.feedShards)
	for i := range s.shards {
		s.shards[i] = &shardState{}
		s.shards[i].dirty.init()
		s.shards[i].feedHead.init()
	}
	return s, nil
}

// shardState is what a process keeps of one feed shard.
type shardState struct {
	// dirty collects the dirty-marker partitions of the shard this process's appends touched,
	// and wakes an in-process dispatcher of the shard.
	dirty dirtySignal
	// feedHead tells in-process subscribers how far the shard's feed has been written.
	feedHead headWatch
}

// shardOf is the feed shard of the stream in partition pk.
func (s *Store) shardOf(pk string) int { return feedShardOf(pk, s.feedShards) }

// markDirty tells the in-process dispatcher of its shard that dirty-marker partition index has a
// new marker.
func (s *Store) markDirty(index int) {
	s.shards[index/dirtyShards].dirty.mark(index % dirtyShards)
}

// FeedShards returns the store's number of feed shards.
func (s *Store) FeedShards() int { return s.feedShards }

// Close closes the store and its backend.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return s.backend.Close()
}

// RequestCounts returns how many storage requests the store has made so far, by kind.
func (s *Store) RequestCounts() RequestCounts { return s.counts.snapshot() }

func (s *Store) checkOpen() error {
	if s.closed.Load() {
		return ErrClosed
	}
	return nil
}

// headCache remembers stream heads by partition key. It is bounded: when full, an arbitrary entry
// makes room.
type headCache struct {
	mu    sync.Mutex
	max   int
	heads map[string]head
}

func newHeadCache(max int) *headCache {
	return &headCache{max: max, heads: make(map[string]head)}
}

func (c *headCache) get(pk string) (head, bool) {
	if c.max < 0 {
		return head{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.heads[pk]
	return h, ok
}

func (c *headCache) put(pk string, h head) {
	if c.max < 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.heads[pk]; !ok && len(c.heads) >= c.max {
		for k := range c.heads {
			delete(c.heads, k)
			break
		}
	}
	if cur, ok := c.heads[pk]; ok && cur.version > h.version {
		return // never move a cached head backwards
	}
	c.heads[pk] = h
}

func (c *headCache) forget(pk string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.heads, pk)
}
