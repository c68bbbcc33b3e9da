package watermill

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
	"github.com/google/uuid"
)

// Metadata keys the adapter reads on Publish and sets on the messages it delivers. Every key
// that starts with ReservedPrefix belongs to the adapter: Publish does not store such keys in
// the event's metadata (it reads TypeKey and SubjectKey, and ignores the others), so a message
// received from one topic and published to another does not carry its old position along.
const (
	// ReservedPrefix starts every key the adapter owns.
	ReservedPrefix = "estuite_"
	// TypeKey names the event type of a published message (default
	// PublisherConfig.DefaultEventType, "message"); a delivered message carries its event's type
	// under it.
	TypeKey = "estuite_type"
	// SubjectKey, when set on a published message, names the event's data subject
	// (estuite.EventData.Subject): its payload and metadata are stored encrypted under the
	// subject's key, and Store.Forget erases them. A delivered message carries its event's subject
	// under it.
	SubjectKey = "estuite_subject"
	// StreamKey, VersionKey, PositionKey and ShardKey are set on a delivered message: the
	// event's stream (the topic), its version in the stream (decimal), its position in the
	// feed shard (decimal) and that shard (decimal).
	StreamKey   = "estuite_stream"
	VersionKey  = "estuite_version"
	PositionKey = "estuite_position"
	ShardKey    = "estuite_shard"
	// EventIDKey is the event's ID on a delivered message (the message UUID when that was a
	// UUID in canonical form).
	EventIDKey = "estuite_event_id"
	// RecordedAtKey is when the event was committed, RFC 3339 with nanoseconds, UTC.
	RecordedAtKey = "estuite_recorded_at"
	// ErasedKey is "true" on a delivered message whose event's subject was forgotten: its
	// payload and stored metadata are gone (and its UUID is the event ID).
	ErasedKey = "estuite_erased"
	// MessageUUIDKey is stored in the event's metadata when the message UUID is not a UUID in
	// canonical form (lower-case, hyphenated), so that the delivered message gets the UUID it
	// was published with. It is not set on delivered messages.
	MessageUUIDKey = "estuite_message_uuid"
)

// DefaultEventType is the event type of a published message without TypeKey when
// PublisherConfig.DefaultEventType is empty.
const DefaultEventType = "message"

// MaxConsumerGroupLength is the longest SubscriberConfig.ConsumerGroup, in characters.
const MaxConsumerGroupLength = 64

// idNamespace is the namespace of the name-based (version 5) UUIDs that become the event IDs of
// messages whose UUIDs are not UUIDs.
var idNamespace = uuid.MustParse("6b0b3d4e-8f0e-5c39-9a51-2f8e64c1d7a0")

// EventID returns the event ID a message with this UUID is stored under: the UUID itself when
// it is a non-nil UUID in canonical form (lower-case, hyphenated, as watermill.NewUUID makes
// them), otherwise the name-based (SHA-1, version 5) UUID of the text, so that publishing a
// message again yields the same ID and Estuite recognizes it. An empty UUID yields uuid.Nil:
// Estuite generates a random ID, and the message is not deduplicated.
func EventID(messageUUID string) uuid.UUID {
	if messageUUID == "" {
		return uuid.Nil
	}
	if id, err := uuid.Parse(messageUUID); err == nil && id != uuid.Nil && id.String() == messageUUID {
		return id
	}
	return uuid.NewSHA1(idNamespace, []byte(messageUUID))
}

// GroupName returns the Estuite consumer group that the subscribers of a watermill consumer
// group read a topic with: "<consumerGroup>/<topic>" when that is at most 127 characters long;
// otherwise it is cut to 128 characters, ending in "~" and 32 hexadecimal digits of the
// SHA-256 of the topic. Use it with Store.ParkedEvents, ReplayParked, DiscardParked, GroupState
// and WaitGroupHandled.
func GroupName(consumerGroup, topic string) string {
	name := consumerGroup + "/" + topic
	if utf8.RuneCountInString(name) < estuite.MaxGroupNameLength {
		return name
	}
	sum := sha256.Sum256([]byte(topic))
	suffix := "~" + hex.EncodeToString(sum[:16])
	keep := estuite.MaxGroupNameLength - utf8.RuneCountInString(consumerGroup) - 1 - len(suffix)
	runes := []rune(topic)
	return consumerGroup + "/" + string(runes[:keep]) + suffix
}

// validateName checks a topic (as a stream name) or a consumer group as Estuite checks names:
// not empty, valid UTF-8, at most max characters, no control characters.
func validateName(field, s string, max int) error {
	bad := func(format string, args ...any) error {
		return &estuite.InvalidInputError{Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	if s == "" {
		return bad("must not be empty")
	}
	if !utf8.ValidString(s) {
		return bad("is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(s); n > max {
		return bad("is %d characters long, at most %d are allowed", n, max)
	}
	for _, r := range s {
		if table.IsControl(r) {
			return bad("contains the control character %U", r)
		}
	}
	return nil
}

// validateTopic checks a topic as a stream name (the *estuite.InvalidInputError Append returns
// for a bad stream name, Field "stream").
func validateTopic(topic string) error {
	return validateName("stream", topic, estuite.MaxStreamNameLength)
}

func validateConsumerGroup(group string) error {
	if err := validateName("consumerGroup", group, MaxConsumerGroupLength); err != nil {
		return err
	}
	if strings.Contains(group, "/") {
		return &estuite.InvalidInputError{Field: "consumerGroup", Reason: "must not contain '/', which separates it from the topic in the Estuite group name"}
	}
	return nil
}

// toEvent maps a message to the event Publish appends.
func toEvent(i int, msg *message.Message, defaultType string, binary bool) (estuite.EventData, error) {
	ev := estuite.EventData{ID: EventID(msg.UUID), Type: defaultType, Data: msg.Payload, Format: estuite.Binary}
	if !binary && isPortableJSON(msg.Payload) {
		ev.Format = estuite.JSON
	}
	md := make(map[string]string, len(msg.Metadata)+1)
	for k, v := range msg.Metadata {
		switch {
		case k == TypeKey:
			ev.Type = v
		case k == SubjectKey:
			ev.Subject = v
		case strings.HasPrefix(k, ReservedPrefix):
		default:
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return ev, &estuite.InvalidInputError{Field: fmt.Sprintf("messages[%d].metadata", i),
					Reason: fmt.Sprintf("key %q: keys and values must be valid UTF-8", k)}
			}
			md[k] = v
		}
	}
	if err := validateName(fmt.Sprintf("messages[%d].metadata[%s]", i, TypeKey), ev.Type, estuite.MaxEventTypeLength); err != nil {
		return ev, err
	}
	if ev.ID != uuid.Nil && ev.ID.String() != msg.UUID {
		md[MessageUUIDKey] = msg.UUID
		if !utf8.ValidString(msg.UUID) {
			return ev, &estuite.InvalidInputError{Field: fmt.Sprintf("messages[%d].uuid", i), Reason: "is not valid UTF-8"}
		}
	}
	if len(md) > 0 {
		raw, err := json.Marshal(md)
		if err != nil {
			return ev, err
		}
		ev.Metadata = raw
	}
	return ev, nil
}

// isPortableJSON reports whether a payload can be stored as JSON data: valid UTF-8 JSON text
// without escaped surrogates (Estuite refuses lone ones; paired ones are left to binary, which is
// simpler than telling them apart). Either format reads back byte for byte.
func isPortableJSON(p []byte) bool {
	if len(p) == 0 || !utf8.Valid(p) || !json.Valid(p) {
		return false
	}
	for i := 0; ; {
		j := bytes.Index(p[i:], []byte(`\u`))
		if j < 0 {
			return true
		}
		i += j + 2
		if i < len(p) && (p[i] == 'd' || p[i] == 'D') && i+1 < len(p) && strings.IndexByte("89abcdefABCDEF", p[i+1]) >= 0 {
			return false
		}
	}
}

// toMessage maps a feed event to the message delivered.
func toMessage(ev estuite.FeedEvent) *message.Message {
	msg := message.NewMessage(ev.ID.String(), message.Payload(ev.Data))
	if len(ev.Metadata) > 0 {
		var md map[string]json.RawMessage
		if err := json.Unmarshal(ev.Metadata, &md); err == nil {
			for k, raw := range md {
				var s string
				if err := json.Unmarshal(raw, &s); err != nil {
					s = string(raw) // not a string (an event appended by other code): its JSON text
				}
				if k == MessageUUIDKey {
					msg.UUID = s
					continue
				}
				msg.Metadata.Set(k, s)
			}
		}
	}
	msg.Metadata.Set(TypeKey, ev.Type)
	msg.Metadata.Set(StreamKey, ev.Stream)
	msg.Metadata.Set(VersionKey, strconv.FormatInt(ev.Version, 10))
	msg.Metadata.Set(PositionKey, strconv.FormatInt(ev.Position, 10))
	msg.Metadata.Set(ShardKey, strconv.Itoa(ev.Shard))
	msg.Metadata.Set(EventIDKey, ev.ID.String())
	msg.Metadata.Set(RecordedAtKey, ev.RecordedAt.UTC().Format(time.RFC3339Nano))
	if ev.Subject != "" {
		msg.Metadata.Set(SubjectKey, ev.Subject)
	}
	if ev.Erased {
		msg.Metadata.Set(ErasedKey, "true")
	}
	return msg
}
