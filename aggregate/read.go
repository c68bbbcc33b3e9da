package aggregate

import (
	"context"
	"iter"
	"time"

	"github.com/estuite/estuite"
)

// StreamRead is a stream read through a registry: Store.Read's result with its events decoded.
type StreamRead struct {
	Stream string
	// Version is the stream's version when the read began.
	Version int64
	// Snapshot is the stream's snapshot when the read asked for one (ReadOptions.WithSnapshot)
	// and found it; Events then starts after its Version. Decoding it is the caller's business.
	Snapshot *estuite.Snapshot
	// Events yields the events read, decoded and upcast to their current forms. It stops at the
	// first error (a storage error or a *DecodeError), yielding it with a zero Event. Each pass
	// reads storage again.
	Events iter.Seq2[Event, error]
}

// Read reads a stream, as Store.Read does (opts may be nil: forward from the first event), and
// decodes its events through the registry as they are iterated.
func (r *Registry) Read(ctx context.Context, store *estuite.Store, stream string, opts *estuite.ReadOptions) (*StreamRead, error) {
	read, err := store.Read(ctx, stream, opts)
	if err != nil {
		return nil, err
	}
	return &StreamRead{Stream: read.Stream, Version: read.Version, Snapshot: read.Snapshot, Events: r.decodeAll(read.Events)}, nil
}

func (r *Registry) decodeAll(events iter.Seq2[estuite.RecordedEvent, error]) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		for rec, err := range events {
			if err != nil {
				yield(Event{}, err)
				return
			}
			ev, err := r.Decode(rec)
			if err != nil {
				yield(Event{}, err)
				return
			}
			if !yield(ev, nil) {
				return
			}
		}
	}
}

// FeedEvent is an event of the feed decoded through a registry.
type FeedEvent struct {
	Event
	// Position is the event's place in the feed.
	Position int64
	// DispatchedAt is when the dispatcher wrote the event into the feed.
	DispatchedAt time.Time
}

// DecodeFeed decodes an event of the feed, as Decode does.
func (r *Registry) DecodeFeed(e estuite.FeedEvent) (FeedEvent, error) {
	ev, err := r.Decode(e.RecordedEvent)
	if err != nil {
		return FeedEvent{}, err
	}
	return FeedEvent{Event: ev, Position: e.Position, DispatchedAt: e.DispatchedAt}, nil
}

// FeedPage is a page of the feed decoded through a registry.
type FeedPage struct {
	// Events are the matching events, decoded, in position order.
	Events []FeedEvent
	// Next is the last position the read looked at: pass it as After to read on.
	Next int64
}

// ReadFeed reads the feed as Store.ReadFeed does and decodes the events. A decode error ends
// the read: Events holds the events before the one that failed and Next is the position before
// it, so a reader that fixes its registry reads on from there. The feed holds every event of
// the store: filter it (FeedOptions.Types, StreamPrefix) to the types the registry knows.
func (r *Registry) ReadFeed(ctx context.Context, store *estuite.Store, opts *estuite.FeedOptions) (FeedPage, error) {
	page, err := store.ReadFeed(ctx, opts)
	out := FeedPage{Next: page.Next, Events: make([]FeedEvent, 0, len(page.Events))}
	for _, e := range page.Events {
		ev, derr := r.DecodeFeed(e)
		if derr != nil {
			out.Next = e.Position - 1
			return out, derr
		}
		out.Events = append(out.Events, ev)
	}
	return out, err
}

// Handler adapts a handler of decoded events to SubscriptionOptions.Handler: each event of the
// subscription is decoded through the registry and handed to h. A decode error is the
// handler's error (so the subscription stops before the event, with its checkpoint): filter the
// subscription (SubscriptionOptions.Types, StreamPrefix) to the types the registry knows.
func (r *Registry) Handler(h func(ctx context.Context, ev FeedEvent) error) func(ctx context.Context, ev estuite.FeedEvent) error {
	return func(ctx context.Context, e estuite.FeedEvent) error {
		ev, err := r.DecodeFeed(e)
		if err != nil {
			return err
		}
		return h(ctx, ev)
	}
}
