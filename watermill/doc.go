// Package watermill is a Pub/Sub for Watermill (github.com/ThreeDotsLabs/watermill) on an
// Estuite store: a Publisher that appends messages to streams, and a Subscriber that reads them
// through Estuite's consumer groups. It is a module of its own
// (github.com/estuite/estuite/watermill), so that Estuite itself does not depend on Watermill.
// Its package name clashes with Watermill's; import it under another name:
//
//	import estuitewm "github.com/estuite/estuite/watermill"
//
//	pub, err := estuitewm.NewPublisher(store, estuitewm.PublisherConfig{})
//	err = pub.Publish("order-42", message.NewMessage(watermill.NewUUID(), payload))
//
//	sub, err := estuitewm.NewSubscriber(store, estuitewm.SubscriberConfig{ConsumerGroup: "billing"})
//	messages, err := sub.Subscribe(ctx, "order-42")
//	for msg := range messages {
//		// handle it, then
//		msg.Ack() // or msg.Nack(): it comes again after a backoff
//	}
//
// Subscribers read the feed, which a dispatcher fills (estuite.NewDispatcher, one per process,
// or estuite serve): without one, published messages are stored and never delivered.
//
// # Topics are streams
//
// A topic is the name of an Estuite stream, and must be a valid one (1–170 characters, no
// control characters: see estuite.MaxStreamNameLength); an invalid topic is the
// *estuite.InvalidInputError of a bad stream name, from Publish and Subscribe alike. A topic
// keeps Estuite's guarantees: its messages are in the order they were appended, each at a
// version, and in the feed at a position; aggregates and projections can read it as any other
// stream.
//
// # From a message to an event
//
//   - The message UUID becomes the event ID when it is a UUID in canonical form (lower-case and
//     hyphenated, as watermill.NewUUID makes them); any other UUID (a ULID, a short UUID)
//     becomes a name-based UUID derived from it (EventID), and the UUID itself is kept in the
//     event's metadata (MessageUUIDKey), so that the delivered message gets it back. Estuite
//     deduplicates event IDs within a stream, which makes Publish idempotent: a message
//     published again is not appended twice. A message without a UUID gets a random event ID,
//     and is not deduplicated.
//   - The payload becomes the event's data: JSON data when it is JSON text, binary data
//     otherwise (PublisherConfig.BinaryPayloads makes it always binary); both read back byte for
//     byte.
//   - The metadata becomes the event's metadata, a JSON object of strings, but for the keys
//     that start with ReservedPrefix ("estuite_"), which are the adapter's: TypeKey
//     ("estuite_type") gives the event type (default "message", PublisherConfig.DefaultEventType),
//     SubjectKey ("estuite_subject") the event's data subject (encrypted, erasable with
//     Store.Forget), and the others are dropped.
//
// One Publish call is one atomic append when its messages fit one (48 messages with UUIDs,
// about 3 MiB); a larger call is split into several appends, in order, each atomic. See
// Publisher.Publish.
//
// # From an event to a message
//
// A delivered message has its event's data as payload, its stored metadata (values that are
// not JSON strings, from events appended by other code, come as their JSON text), and where
// the event is: StreamKey, VersionKey, PositionKey (in the feed shard), ShardKey, EventIDKey,
// RecordedAtKey, TypeKey, and SubjectKey and ErasedKey for events naming a subject.
//
// # Subscribers are consumer group members
//
// Each Subscribe call joins an Estuite consumer group (Store.JoinGroup) named
// GroupName(ConsumerGroup, topic), whose handler hands each event of the topic to the channel
// and waits for its Ack (the group moves on) or Nack (the group retries it after
// RetryBackoff). Subscribers with one ConsumerGroup — in one process or many, on one store —
// compete: each message goes to one of them, and the group's checkpoint outlives them. An empty
// ConsumerGroup means fan-out: a new group per Subscribe, which receives every message of the
// topic from its first one. A new group, fan-out or not, reads the topic from its first
// message: its first subscriber reads the whole feed once to find them.
//
// A topic is one stream, and a consumer group hands a stream to one member at a time: the
// messages of a topic come in order, one at a time, to one subscriber of a group; more
// subscribers give failover (a closed subscriber hands over at once, a crashed one after
// about LeaseDuration), not parallelism. Spread work over several topics for that.
//
// Delivery is at least once. A message not acknowledged before its Context() ends (between a
// third and two thirds of LeaseDuration after delivery, when the member's hold on the topic may
// run out) is delivered again, and so are messages acknowledged since the group's last
// checkpoint when a subscriber crashes.
//
// By default a Nack redelivers as often as it comes (watermill's expectation), and the topic's
// later messages wait behind the nacked one. With a positive SubscriberConfig.MaxRetries a
// message nacked that many times over is parked, and SubscriberConfig.Park decides whether the
// topic's later messages wait behind it (the default, estuite.ParkBlocksStream) or go on
// (estuite.ParkSkipsEvent); Store.ParkedEvents, ReplayParked and DiscardParked, with the
// group's GroupName, deal with parked messages.
//
// # Watermill's test suite
//
// The package passes Watermill's universal Pub/Sub tests (pubsub/tests) on the memory backend
// with the features ConsumerGroups, GuaranteedOrder and Persistent, and
// NewSubscriberReceivesOldMessages for fan-out subscribers; ExactlyOnceDelivery and
// ContextPreserved are not claimed. See pubsub_test.go.
package watermill
