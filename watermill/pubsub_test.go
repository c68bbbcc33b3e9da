package watermill_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table/mem"
	estuitewm "github.com/estuite/estuite/watermill"
)

// Timings for tests: short leases and polls, so that handoffs between members and redeliveries
// after a Nack take milliseconds, not seconds.
var testSubscriberConfig = estuitewm.SubscriberConfig{
	LeaseDuration:   2 * time.Second,
	PollInterval:    5 * time.Millisecond,
	MaxPollInterval: 50 * time.Millisecond,
	RetryBackoff:    5 * time.Millisecond,
	MaxRetryBackoff: 20 * time.Millisecond,
}

// newTestStore opens a store on the memory backend with a dispatcher running; both stop when the
// test ends.
func newTestStore(t testing.TB) *estuite.Store {
	t.Helper()
	ctx := context.Background()
	store, err := estuite.Open(ctx, mem.New(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	d := estuite.NewDispatcher(store, &estuite.DispatcherOptions{PollInterval: 5 * time.Millisecond, MaxPollInterval: 50 * time.Millisecond})
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Error(err)
		}
		if err := store.Close(); err != nil {
			t.Error(err)
		}
	})
	return store
}

func newPubSub(t *testing.T, store *estuite.Store, consumerGroup string) (message.Publisher, message.Subscriber) {
	t.Helper()
	pub, err := estuitewm.NewPublisher(store, estuitewm.PublisherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testSubscriberConfig
	cfg.ConsumerGroup = consumerGroup
	sub, err := estuitewm.NewSubscriber(store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return pub, sub
}

// The features the adapter has, as the universal suite understands them:
//
//   - ConsumerGroups: subscribers with one ConsumerGroup share a topic's messages, and each
//     group gets every message.
//   - GuaranteedOrder: a topic's messages come in publish order, one at a time (the next after
//     the Ack of the one before), to one member of a group at a time.
//   - Persistent: messages are stored; a group's checkpoint outlives its subscribers.
//   - ExactlyOnceDelivery: no — delivery is at least once (a message not acknowledged in time,
//     or handled before a crash and not yet checkpointed, comes again).
//   - NewSubscriberReceivesOldMessages: yes for fan-out subscribers (and for new groups), no
//     for a new subscriber in a group that already consumed them; the suite tests it with one
//     constructor, so it is declared for the fan-out run only.
//   - ContextPreserved: no — a published message's Context() is not stored.
//   - RestartServiceCommand: none — the memory backend has no service to restart, so the
//     suite's TestReconnect skips.
func competingFeatures() tests.Features {
	return tests.Features{
		ConsumerGroups:      true,
		ExactlyOnceDelivery: false,
		GuaranteedOrder:     true,
		Persistent:          true,
	}
}

// TestPubSub runs watermill's universal suite with the subscribers of its plain constructor in
// one consumer group (every test's topic is its own, so the group is too): how a service
// subscribes, and what the suite's persistence tests (a later subscriber goes on where an earlier
// one stopped) are about.
func TestPubSub(t *testing.T) {
	store := newTestStore(t)
	tests.TestPubSub(t, competingFeatures(),
		func(t *testing.T) (message.Publisher, message.Subscriber) {
			return newPubSub(t, store, "suite")
		},
		func(t *testing.T, consumerGroup string) (message.Publisher, message.Subscriber) {
			return newPubSub(t, store, consumerGroup)
		},
	)
}

// TestPubSubFanOut runs the suite's tests that apply to fan-out subscribers (no ConsumerGroup: a
// group of their own per Subscribe call), among them TestNewSubscriberReceivesOldMessages, which
// the run above skips. Left out: TestContinueAfterSubscribeClose, which checks that a later
// subscriber goes on where an earlier one stopped — what a consumer group does, not a fan-out
// subscriber, which starts from the topic's first message every time — and TestConsumerGroups
// and TestReconnect, which do not depend on the plain constructor (the run above has them).
//
// TestConcurrentSubscribe runs with the suite's ForceShort (its short-mode counts: 10 subscribers,
// 100 messages): at full size it has 50 fan-out subscribers receive all of 5,000 messages each,
// 250,000 deliveries, which takes over two minutes under -race on two cores. The others run at
// full size.
func TestPubSubFanOut(t *testing.T) {
	store := newTestStore(t)
	features := competingFeatures()
	features.NewSubscriberReceivesOldMessages = true
	constructor := func(t *testing.T) (message.Publisher, message.Subscriber) {
		return newPubSub(t, store, "")
	}
	for _, test := range []struct {
		name  string
		fn    func(*testing.T, tests.TestContext, tests.PubSubConstructor)
		short bool
	}{
		{"TestPublishSubscribe", tests.TestPublishSubscribe, false},
		{"TestConcurrentSubscribe", tests.TestConcurrentSubscribe, true},
		{"TestConcurrentSubscribeMultipleTopics", tests.TestConcurrentSubscribeMultipleTopics, false},
		{"TestResendOnError", tests.TestResendOnError, false},
		{"TestNoAck", tests.TestNoAck, false},
		{"TestConcurrentClose", tests.TestConcurrentClose, false},
		{"TestContinueAfterErrors", tests.TestContinueAfterErrors, false},
		{"TestPublishSubscribeInOrder", tests.TestPublishSubscribeInOrder, false},
		{"TestPublisherClose", tests.TestPublisherClose, false},
		{"TestTopic", tests.TestTopic, false},
		{"TestMessageCtx", tests.TestMessageCtx, false},
		{"TestSubscribeCtx", tests.TestSubscribeCtx, false},
		{"TestNewSubscriberReceivesOldMessages", tests.TestNewSubscriberReceivesOldMessages, false},
	} {
		// As the suite's TestPubSub runs each test: in parallel, under a subtest named by its ID.
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			id := tests.NewTestID()
			f := features
			f.ForceShort = test.short
			t.Run(string(id), func(t *testing.T) {
				test.fn(t, tests.TestContext{TestID: id, Features: f}, constructor)
			})
		})
	}
}
