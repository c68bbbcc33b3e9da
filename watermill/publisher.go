package watermill

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"

	wm "github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/estuite/estuite"
	"github.com/google/uuid"
)

// ErrPublisherClosed is returned by Publish after Close.
var ErrPublisherClosed = errors.New("estuite/watermill: publisher closed")

// PublisherConfig configures NewPublisher. The zero value is ready to use.
type PublisherConfig struct {
	// DefaultEventType is the event type of a message without TypeKey in its metadata. Default
	// DefaultEventType ("message").
	DefaultEventType string
	// BinaryPayloads stores every payload as binary data. By default a payload that is JSON
	// text (valid UTF-8, no escaped surrogates) is stored as JSON, readable as such in the feed
	// and over Estuite's HTTP API, and any other as binary; either reads back byte for byte.
	BinaryPayloads bool
	// Logger logs what the publisher does at debug level. Default watermill.NopLogger.
	Logger wm.LoggerAdapter
}

// Publisher is a watermill message.Publisher that appends messages to Estuite streams: the topic
// is the stream's name. See the package documentation for how a message maps to an event.
type Publisher struct {
	store *estuite.Store
	cfg   PublisherConfig

	mu     sync.RWMutex // Publish holds it for reading; Close for writing, to wait for them
	closed bool
}

// NewPublisher returns a publisher that appends to store. The store stays the caller's: Close
// does not close it.
func NewPublisher(store *estuite.Store, cfg PublisherConfig) (*Publisher, error) {
	if store == nil {
		return nil, errors.New("estuite/watermill: NewPublisher needs a store")
	}
	if cfg.DefaultEventType == "" {
		cfg.DefaultEventType = DefaultEventType
	}
	if err := validateName("defaultEventType", cfg.DefaultEventType, estuite.MaxEventTypeLength); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = wm.NopLogger{}
	}
	return &Publisher{store: store, cfg: cfg}, nil
}

// Publish appends messages to the stream named topic, in order, and returns once they are
// committed (durable; subscribers see them once the dispatcher has moved them into the feed).
// It runs under the first message's Context().
//
// Atomicity: the messages of one call are one atomic append — all of them or none — when they
// fit one (estuite.MaxAppendRows rows, one per message plus one per event ID, so 48 messages
// with UUIDs, and estuite.MaxAppendBytes). A larger call is split into several appends, in
// order, each atomic; if one fails, the ones before it stay committed and Publish returns the
// error. Concurrent calls to one topic may interleave between those appends.
//
// Idempotency: every message with a UUID is stored under an event ID derived from it
// (EventID), and each append's commit ID is derived from its event IDs, so calling Publish again
// with the same messages — after an error, a timeout, a crash — commits nothing twice: a
// repeated append is answered as a duplicate commit, and a message whose event ID the stream
// already holds is left out of the append (not an error). A UUID identifies a message: one
// republished under its UUID with another payload is refused with an *estuite.CommitConflictError
// when it comes in the same append of messages as before, and is otherwise left out (the stream
// keeps the first). Two messages with one UUID in one call are an *estuite.DuplicateEventError,
// and nothing is written.
//
// Errors are Estuite's typed errors, matched with errors.As and errors.Is: an invalid topic (as
// a stream name: the error's Field is "stream"), event type or metadata is an
// *estuite.InvalidInputError (estuite.ErrInvalidInput), a message too large for one event an
// *estuite.TooLargeError (estuite.ErrTooLarge); nothing of that append is written. Estuite's
// "events[i]" in them counts the events of the failed append.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrPublisherClosed
	}
	if err := validateTopic(topic); err != nil {
		return err
	}
	if len(msgs) == 0 {
		return nil
	}
	ctx := msgs[0].Context()
	events := make([]estuite.EventData, len(msgs))
	seen := make(map[uuid.UUID]bool, len(msgs))
	for i, msg := range msgs {
		ev, err := toEvent(i, msg, p.cfg.DefaultEventType, p.cfg.BinaryPayloads)
		if err != nil {
			return err
		}
		if ev.ID != uuid.Nil {
			if seen[ev.ID] {
				return &estuite.DuplicateEventError{Stream: topic, EventID: ev.ID}
			}
			seen[ev.ID] = true
		}
		events[i] = ev
	}
	// Split by the row limit, which is known here; a chunk over the byte limit is halved below.
	for start := 0; start < len(events); {
		end, rows := start, 0
		for end < len(events) && rows+rowsOf(events[end]) <= estuite.MaxAppendRows {
			rows += rowsOf(events[end])
			end++
		}
		if err := p.appendChunk(ctx, topic, events[start:end]); err != nil {
			return err
		}
		start = end
	}
	p.cfg.Logger.Trace("published", wm.LogFields{"topic": topic, "messages": len(msgs)})
	return nil
}

// rowsOf is the rows an event takes in an append: its own, and one for a caller-given ID.
func rowsOf(ev estuite.EventData) int {
	if ev.ID != uuid.Nil {
		return 2
	}
	return 1
}

// appendChunk appends events as one append, or as two halves if they are over the byte limit of
// one; it leaves out events the stream already holds.
func (p *Publisher) appendChunk(ctx context.Context, topic string, events []estuite.EventData) error {
	for {
		res, err := p.store.Append(ctx, topic, events, &estuite.AppendOptions{CommitID: commitID(events)})
		var tooLarge *estuite.TooLargeError
		var dup *estuite.DuplicateEventError
		switch {
		case err == nil:
			if res.Duplicate {
				p.cfg.Logger.Debug("append already committed", wm.LogFields{"topic": topic, "commit": res.CommitID})
			}
			return nil
		case errors.As(err, &tooLarge) && tooLarge.What == "append" && len(events) > 1:
			half := len(events) / 2
			if err := p.appendChunk(ctx, topic, events[:half]); err != nil {
				return err
			}
			return p.appendChunk(ctx, topic, events[half:])
		case errors.As(err, &dup) && dup.EventID != uuid.Nil:
			i := slices.IndexFunc(events, func(ev estuite.EventData) bool { return ev.ID == dup.EventID })
			if i < 0 {
				return err
			}
			p.cfg.Logger.Debug("message already in the stream", wm.LogFields{"topic": topic, "event_id": dup.EventID.String()})
			events = slices.Delete(slices.Clone(events), i, i+1)
			if len(events) == 0 {
				return nil
			}
		default:
			return fmt.Errorf("estuite/watermill: publish to %q: %w", topic, err)
		}
	}
}

// commitID derives an append's commit ID from its events' IDs ("" — a generated one — when an
// event has none), so that the same messages make the same commit.
func commitID(events []estuite.EventData) string {
	h := sha256.New()
	for _, ev := range events {
		if ev.ID == uuid.Nil {
			return ""
		}
		h.Write(ev.ID[:])
	}
	return "watermill-" + hex.EncodeToString(h.Sum(nil))
}

// Close makes later calls to Publish fail with ErrPublisherClosed; it waits for the calls in
// progress. It does not close the store. Closing again does nothing.
func (p *Publisher) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	return nil
}
