package watermill

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	wm "github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/estuite/estuite"
	"github.com/google/uuid"
)

// ErrSubscriberClosed is returned by Subscribe after Close.
var ErrSubscriberClosed = errors.New("estuite/watermill: subscriber closed")

// ErrNacked is the handler error a Nack makes: the group retries the event (and records this
// error if it parks it).
var ErrNacked = errors.New("estuite/watermill: message nacked")

// FanOutPrefix starts the name of the consumer group a subscriber without ConsumerGroup creates
// for each Subscribe call: FanOutPrefix + a random UUID.
const FanOutPrefix = "fanout-"

// SubscriberConfig configures NewSubscriber. The zero value is a fan-out subscriber with
// Estuite's defaults.
type SubscriberConfig struct {
	// ConsumerGroup names the watermill consumer group: every Subscribe to a topic under one
	// ConsumerGroup, in any process on the store, joins one Estuite consumer group
	// (GroupName(ConsumerGroup, topic)), and each message of the topic is delivered to one of
	// them (competing consumers); the group's checkpoint is durable, so a subscriber that comes
	// later goes on where the group stopped. A group that did not exist reads the topic from its
	// first message. 1–MaxConsumerGroupLength characters, no control characters, no '/'.
	//
	// Empty means fan-out: each Subscribe call creates a group of its own (FanOutPrefix + a
	// random UUID), so every subscriber gets every message of the topic, from the topic's first
	// one. Those groups are not removed when the subscriber closes: each leaves its catalog row
	// and a checkpoint row per feed shard in the event table.
	ConsumerGroup string
	// LeaseDuration is how long a member's hold on the topic lasts without renewal (see
	// estuite.GroupOptions.LeaseDuration); default estuite.DefaultLeaseDuration. A message must
	// be acknowledged before its Context() ends — between a third and two thirds of
	// LeaseDuration after delivery — or it is delivered again. A member that crashed is replaced
	// after about LeaseDuration.
	LeaseDuration time.Duration
	// PollInterval and MaxPollInterval: a caught-up subscriber wakes at once for messages
	// dispatched in its own process, and polls for others' with a backoff between these.
	// Defaults estuite.DefaultSubscriptionPoll and estuite.DefaultSubscriptionMaxPoll.
	PollInterval, MaxPollInterval time.Duration
	// MaxInFlight bounds the events a member reads from the feed at a time (messages are still
	// delivered one at a time). Default estuite.DefaultGroupInFlight.
	MaxInFlight int
	// MaxRetries: 0, the default, means a Nack always redelivers — the message comes again after
	// a backoff, as often as it is nacked, and the topic's later messages wait behind it. A
	// positive MaxRetries parks a message whose MaxRetries redeliveries were nacked too
	// (MaxRetries+1 Nacks in a row, counted by the member holding the topic: the count starts
	// over when another member takes the topic over), in the group's parked events
	// (estuite.Store.ParkedEvents with GroupName); Park says what happens to the topic's later
	// messages. Negative is the same as 0.
	MaxRetries int
	// RetryBackoff is the delay before a nacked message is redelivered; it doubles up to
	// MaxRetryBackoff. Defaults 100 ms and 10 s.
	RetryBackoff, MaxRetryBackoff time.Duration
	// Park is what a parked message means for the topic's later messages: with the default,
	// estuite.ParkBlocksStream, they are parked behind it, undelivered, until it is replayed or
	// discarded (Store.ReplayParked, DiscardParked), so the topic's order is kept; with
	// estuite.ParkSkipsEvent they are delivered. Used only with a positive MaxRetries.
	Park estuite.ParkPolicy
	// CheckpointEvery and CheckpointInterval: how often the group's checkpoint is saved while
	// messages flow (see estuite.GroupOptions); it is also saved when the subscriber is caught
	// up and when it closes. A crash redelivers what was acknowledged since the last save.
	CheckpointEvery    int
	CheckpointInterval time.Duration
	// Logger logs member errors and subscriptions. Default watermill.NopLogger.
	Logger wm.LoggerAdapter
}

// Subscriber is a watermill message.Subscriber that reads Estuite streams through consumer
// groups: the topic is the stream's name. See the package documentation.
type Subscriber struct {
	store *estuite.Store
	cfg   SubscriberConfig

	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	errs    []error
	wg      sync.WaitGroup
}

// NewSubscriber returns a subscriber that reads from store. The store stays the caller's: Close
// does not close it. A store needs a dispatcher running somewhere (estuite.NewDispatcher) for
// published messages to reach the feed, and so the subscribers.
func NewSubscriber(store *estuite.Store, cfg SubscriberConfig) (*Subscriber, error) {
	if store == nil {
		return nil, errors.New("estuite/watermill: NewSubscriber needs a store")
	}
	if cfg.ConsumerGroup != "" {
		if err := validateConsumerGroup(cfg.ConsumerGroup); err != nil {
			return nil, err
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = wm.NopLogger{}
	}
	return &Subscriber{store: store, cfg: cfg, closing: make(chan struct{})}, nil
}

// Subscribe starts a member of the subscriber's consumer group for topic (a new fan-out group
// when ConsumerGroup is empty) and returns the channel it delivers the topic's messages on, one
// at a time: the next message comes after the previous one is acknowledged. Ack moves the
// group past the message; Nack has it delivered again after RetryBackoff (see MaxRetries).
//
// The messages of a topic come in the order they were published, to one member of the group at
// a time: a topic is one stream, and a stream is handled by one member at a time, so competing
// subscribers of one topic share its work by failover, not in parallel. Delivery is at least
// once: a message can come again after a crash, or when it was not acknowledged in time.
//
// A message's Context() carries ctx's values and ends after its Ack or Nack, when the
// subscriber stops, and when the member's hold on the topic may be running out. Its metadata
// holds the event's stream, version, feed position and shard (StreamKey, VersionKey,
// PositionKey, ShardKey) besides its own. The channel is closed when ctx is done, after Close,
// or when the member stops on its own (the store closed, say: the error is logged and returned
// by Close).
//
// An invalid topic is the *estuite.InvalidInputError of a bad stream name.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if err := validateTopic(topic); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrSubscriberClosed
	}
	s.wg.Add(1)
	s.mu.Unlock()

	consumerGroup := s.cfg.ConsumerGroup
	if consumerGroup == "" {
		consumerGroup = FanOutPrefix + uuid.NewString()
	}
	group := GroupName(consumerGroup, topic)
	out := make(chan *message.Message)
	h := &handler{topic: topic, out: out}
	retries := s.cfg.MaxRetries
	if retries <= 0 {
		retries = -1 // forever
	}
	mctx, cancel := context.WithCancel(ctx)
	member, err := s.store.JoinGroup(mctx, estuite.GroupOptions{
		Group: group,
		// A topic is one stream, which one slot of each shard holds: more ranges would add
		// checkpoint rows, not parallelism.
		Ranges:             1,
		Handler:            h.handle,
		StreamPrefix:       topic,
		MaxRetries:         retries,
		RetryBackoff:       s.cfg.RetryBackoff,
		MaxRetryBackoff:    s.cfg.MaxRetryBackoff,
		Park:               s.cfg.Park,
		MaxInFlight:        s.cfg.MaxInFlight,
		CheckpointEvery:    s.cfg.CheckpointEvery,
		CheckpointInterval: s.cfg.CheckpointInterval,
		LeaseDuration:      s.cfg.LeaseDuration,
		PollInterval:       s.cfg.PollInterval,
		MaxPollInterval:    s.cfg.MaxPollInterval,
	})
	if err != nil {
		cancel()
		s.wg.Done()
		return nil, err
	}
	fields := wm.LogFields{"topic": topic, "group": group, "member": member.Name()}
	s.cfg.Logger.Debug("subscribed", fields)
	go func() {
		defer s.wg.Done()
		select {
		case <-mctx.Done():
		case <-s.closing:
		case <-member.Done():
		}
		err := member.Stop() // no handler runs after it returns: the channel can be closed
		cancel()
		close(out)
		if err != nil {
			s.cfg.Logger.Error("consumer group member stopped", err, fields)
			s.mu.Lock()
			s.errs = append(s.errs, fmt.Errorf("estuite/watermill: topic %q, group %q: %w", topic, group, err))
			s.mu.Unlock()
		} else {
			s.cfg.Logger.Debug("subscription closed", fields)
		}
	}()
	return out, nil
}

// handler delivers a topic's events to its channel.
type handler struct {
	topic string
	out   chan *message.Message
}

// handle is the member's handler: it acknowledges the events of other streams (those whose
// names only start with the topic), and delivers the topic's, waiting for the Ack or Nack.
func (h *handler) handle(ctx context.Context, ev estuite.FeedEvent) error {
	if ev.Stream != h.topic {
		return nil
	}
	msg := toMessage(ev)
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msg.SetContext(mctx)
	select {
	case h.out <- msg:
	case <-ctx.Done():
		return ctx.Err() // not delivered: the group tries again, or the next holder does
	}
	select {
	case <-msg.Acked():
		return nil
	case <-msg.Nacked():
		return ErrNacked
	case <-ctx.Done():
		select {
		case <-msg.Acked():
			return nil
		default:
			return fmt.Errorf("estuite/watermill: message not acknowledged in time: %w", ctx.Err())
		}
	}
}

// Close stops every subscription — each member gives up the message it waits on (its Context()
// ends; unacknowledged, it is delivered to the group again), saves its checkpoint and gives the
// topic back to its group at once — closes their channels, and waits. It
// returns the errors that stopped members on their own, if any. It does not close the store.
// Closing again does nothing more.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.closing)
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(s.errs...)
}
