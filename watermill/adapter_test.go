package watermill_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	wm "github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table/mem"
	estuitewm "github.com/estuite/estuite/watermill"
	"github.com/google/uuid"
)

func mustPublisher(t *testing.T, store *estuite.Store, cfg estuitewm.PublisherConfig) *estuitewm.Publisher {
	t.Helper()
	pub, err := estuitewm.NewPublisher(store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Close() })
	return pub
}

func mustSubscriber(t *testing.T, store *estuite.Store, group string) *estuitewm.Subscriber {
	t.Helper()
	cfg := testSubscriberConfig
	cfg.ConsumerGroup = group
	return mustSubscriberConfig(t, store, cfg)
}

func mustSubscriberConfig(t *testing.T, store *estuite.Store, cfg estuitewm.SubscriberConfig) *estuitewm.Subscriber {
	t.Helper()
	sub, err := estuitewm.NewSubscriber(store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sub.Close(); err != nil {
			t.Error(err)
		}
	})
	return sub
}

func subscribe(t *testing.T, sub message.Subscriber, topic string) <-chan *message.Message {
	t.Helper()
	ch, err := sub.Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// receive reads one message from ch and acknowledges it.
func receive(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case msg, ok := <-ch:
		if !ok {
			t.Fatal("channel closed")
		}
		msg.Ack()
		return msg
	case <-time.After(10 * time.Second):
		t.Fatal("no message")
	}
	return nil
}

// noMessage checks that nothing comes on ch for a while.
func noMessage(t *testing.T, ch <-chan *message.Message, wait time.Duration) {
	t.Helper()
	select {
	case msg, ok := <-ch:
		if ok {
			t.Fatalf("unexpected message %s %q %v", msg.UUID, msg.Payload, msg.Metadata)
		}
	case <-time.After(wait):
	}
}

func readStream(t *testing.T, store *estuite.Store, stream string) []estuite.RecordedEvent {
	t.Helper()
	read, err := store.Read(context.Background(), stream, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []estuite.RecordedEvent
	for ev, err := range read.Events {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

func messages(n int, prefix string) []*message.Message {
	out := make([]*message.Message, n)
	for i := range out {
		out[i] = message.NewMessage(wm.NewUUID(), []byte(fmt.Sprintf(`{"n":%d,"p":%q}`, i, prefix)))
	}
	return out
}

func commits(events []estuite.RecordedEvent) int {
	seen := map[string]bool{}
	for _, ev := range events {
		seen[ev.CommitID] = true
	}
	return len(seen)
}

// One Publish is one atomic append while its messages fit one (48 with IDs); a larger one is
// split in order; publishing the same messages again, whole or in part, adds nothing.
func TestPublishAtomicAndIdempotent(t *testing.T) {
	store := newTestStore(t)
	pub := mustPublisher(t, store, estuitewm.PublisherConfig{})

	fits := messages(48, "fits")
	if err := pub.Publish("atomic", fits...); err != nil {
		t.Fatal(err)
	}
	evs := readStream(t, store, "atomic")
	if len(evs) != 48 || commits(evs) != 1 {
		t.Fatalf("48 messages: %d events in %d commits, want 48 in 1", len(evs), commits(evs))
	}

	big := messages(130, "big")
	if err := pub.Publish("split", big...); err != nil {
		t.Fatal(err)
	}
	evs = readStream(t, store, "split")
	if len(evs) != 130 || commits(evs) != 3 {
		t.Fatalf("130 messages: %d events in %d commits, want 130 in 3", len(evs), commits(evs))
	}
	for i, ev := range evs {
		if ev.ID.String() != big[i].UUID || !bytes.Equal(ev.Data, big[i].Payload) {
			t.Fatalf("event %d is %s %s, want message %s %s", i, ev.ID, ev.Data, big[i].UUID, big[i].Payload)
		}
	}

	// A retried Publish: each append is answered as a duplicate commit, in a few requests (on a
	// store of its own, without a dispatcher's requests in the count).
	quiet, err := estuite.Open(context.Background(), mem.New(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer quiet.Close()
	quietPub := mustPublisher(t, quiet, estuitewm.PublisherConfig{})
	if err := quietPub.Publish("split", big...); err != nil {
		t.Fatal(err)
	}
	before := quiet.RequestCounts()
	if err := quietPub.Publish("split", big...); err != nil {
		t.Fatal(err)
	}
	if n := quiet.RequestCounts().Sub(before).Total(); n > 15 {
		t.Errorf("a retried Publish of 130 messages (3 appends) took %d requests", n)
	}
	if evs := readStream(t, quiet, "split"); len(evs) != 130 {
		t.Fatalf("after a retry: %d events, want 130", len(evs))
	}
	if err := pub.Publish("split", big...); err != nil {
		t.Fatal(err)
	}
	// A regrouped retry (the messages in other appends, some new): only the new ones land.
	again := append(append([]*message.Message{}, big[100:]...), big[:5]...)
	fresh := messages(3, "fresh")
	again = append(again, fresh...)
	if err := pub.Publish("split", again...); err != nil {
		t.Fatal(err)
	}
	evs = readStream(t, store, "split")
	if len(evs) != 133 {
		t.Fatalf("after the retries: %d events, want 133", len(evs))
	}
	for i, m := range fresh {
		if evs[130+i].ID.String() != m.UUID {
			t.Fatalf("event %d is %s, want %s", 130+i, evs[130+i].ID, m.UUID)
		}
	}

	// The same UUID twice in one call is refused, and nothing is written.
	m := message.NewMessage(wm.NewUUID(), []byte("x"))
	err = pub.Publish("dup", m, m.Copy())
	var dup *estuite.DuplicateEventError
	if !errors.As(err, &dup) || dup.EventID.String() != m.UUID {
		t.Fatalf("the same UUID twice: %v, want a *DuplicateEventError naming it", err)
	}
	if _, err := store.Version(context.Background(), "dup"); !errors.Is(err, estuite.ErrStreamNotFound) {
		t.Fatalf("stream dup: %v, want ErrStreamNotFound", err)
	}
}

// Messages over the byte limit of one append are split by size, in order.
func TestPublishSplitsBySize(t *testing.T) {
	store := newTestStore(t)
	pub := mustPublisher(t, store, estuitewm.PublisherConfig{})
	var msgs []*message.Message
	for i := range 10 {
		msgs = append(msgs, message.NewMessage(wm.NewUUID(), bytes.Repeat([]byte{byte('a' + i)}, 700_000)))
	}
	if err := pub.Publish("large", msgs...); err != nil {
		t.Fatal(err)
	}
	evs := readStream(t, store, "large")
	if len(evs) != 10 || commits(evs) < 2 {
		t.Fatalf("%d events in %d commits, want 10 in several", len(evs), commits(evs))
	}
	for i, ev := range evs {
		if !bytes.Equal(ev.Data, msgs[i].Payload) {
			t.Fatalf("event %d: wrong data", i)
		}
	}
	// One message too large for an event is Estuite's typed error.
	err := pub.Publish("large", message.NewMessage(wm.NewUUID(), make([]byte, 2<<20)))
	if !errors.Is(err, estuite.ErrTooLarge) {
		t.Fatalf("a 2 MiB message: %v, want ErrTooLarge", err)
	}
}

// The topic is checked as a stream name, with Estuite's typed error.
func TestInvalidTopic(t *testing.T) {
	store := newTestStore(t)
	pub := mustPublisher(t, store, estuitewm.PublisherConfig{})
	sub := mustSubscriber(t, store, "g")
	for _, topic := range []string{"", "a\nb", "bad\xffutf8", strings.Repeat("x", estuite.MaxStreamNameLength+1)} {
		err := pub.Publish(topic, message.NewMessage(wm.NewUUID(), []byte("x")))
		var invalid *estuite.InvalidInputError
		if !errors.As(err, &invalid) || invalid.Field != "stream" {
			t.Errorf("Publish(%q): %v, want an *InvalidInputError for the stream", topic, err)
		}
		if err := pub.Publish(topic); !errors.Is(err, estuite.ErrInvalidInput) {
			t.Errorf("Publish(%q) without messages: %v, want ErrInvalidInput", topic, err)
		}
		if _, err := sub.Subscribe(context.Background(), topic); !errors.As(err, &invalid) || invalid.Field != "stream" {
			t.Errorf("Subscribe(%q): %v, want an *InvalidInputError for the stream", topic, err)
		}
	}
	for _, group := range []string{"a/b", "a\tb", strings.Repeat("g", estuitewm.MaxConsumerGroupLength+1)} {
		if _, err := estuitewm.NewSubscriber(store, estuitewm.SubscriberConfig{ConsumerGroup: group}); !errors.Is(err, estuite.ErrInvalidInput) {
			t.Errorf("consumer group %q: %v, want ErrInvalidInput", group, err)
		}
	}
	// A topic of the longest stream name works, under a group name cut to size.
	topic := strings.Repeat("é", estuite.MaxStreamNameLength)
	if err := pub.Publish(topic, message.NewMessage(wm.NewUUID(), []byte("x"))); err != nil {
		t.Fatal(err)
	}
	receive(t, subscribe(t, sub, topic))
	name := estuitewm.GroupName("g", topic)
	if n := len([]rune(name)); n != estuite.MaxGroupNameLength {
		t.Errorf("group name of %d characters, want %d", n, estuite.MaxGroupNameLength)
	}
	if _, err := store.GroupState(context.Background(), name); err != nil {
		t.Errorf("GroupState(%q): %v", name, err)
	}
}

// A message maps to an event and back: UUID, payload (JSON or binary), metadata, type, and the
// event's place in the store.
func TestMessageMapping(t *testing.T) {
	store := newTestStore(t)
	pub := mustPublisher(t, store, estuitewm.PublisherConfig{})

	plain := message.NewMessage(wm.NewUUID(), []byte(" { \"a\" : [1, 2] }\n"))
	plain.Metadata.Set("correlation_id", "c-1")
	plain.Metadata.Set("quote", `he said "hi" <&>`)
	plain.Metadata.Set(estuitewm.TypeKey, "OrderPlaced")
	plain.Metadata.Set(estuitewm.PositionKey, "999") // the adapter's: not stored
	ulid := message.NewMessage(wm.NewULID(), []byte("not json"))
	upper := message.NewMessage(strings.ToUpper(wm.NewUUID()), []byte(`"\ud83d\ude00"`))
	empty := message.NewMessage("", nil)
	if err := pub.Publish("orders", plain, ulid, upper, empty); err != nil {
		t.Fatal(err)
	}
	evs := readStream(t, store, "orders")
	if len(evs) != 4 {
		t.Fatalf("%d events", len(evs))
	}
	if evs[0].Type != "OrderPlaced" || evs[0].Format != estuite.JSON || evs[0].ID.String() != plain.UUID {
		t.Errorf("event 0: type %q, format %v, ID %s", evs[0].Type, evs[0].Format, evs[0].ID)
	}
	if got := string(evs[0].Metadata); got != `{"correlation_id":"c-1","quote":"he said \"hi\" \u003c\u0026\u003e"}` {
		t.Errorf("event 0 metadata %s", got)
	}
	if evs[1].Type != estuitewm.DefaultEventType || evs[1].Format != estuite.Binary || evs[1].ID != estuitewm.EventID(ulid.UUID) {
		t.Errorf("event 1: type %q, format %v, ID %s", evs[1].Type, evs[1].Format, evs[1].ID)
	}
	if evs[1].ID.Version() != 5 || evs[2].ID != estuitewm.EventID(upper.UUID) || evs[2].Format != estuite.Binary {
		t.Errorf("derived IDs: %s (v%d), %s; format %v", evs[1].ID, evs[1].ID.Version(), evs[2].ID, evs[2].Format)
	}
	if evs[3].ID == uuid.Nil || evs[3].Metadata != nil {
		t.Errorf("event 3: ID %s, metadata %s", evs[3].ID, evs[3].Metadata)
	}

	ch := subscribe(t, mustSubscriber(t, store, "g"), "orders")
	want := []*message.Message{plain, ulid, upper, empty}
	for i, w := range want {
		got := receive(t, ch)
		wantUUID := w.UUID
		if w.UUID == "" {
			wantUUID = evs[3].ID.String()
		}
		if got.UUID != wantUUID || !bytes.Equal(got.Payload, w.Payload) {
			t.Errorf("message %d: %q %q, want %q %q", i, got.UUID, got.Payload, wantUUID, w.Payload)
		}
		md := got.Metadata
		if md.Get(estuitewm.StreamKey) != "orders" || md.Get(estuitewm.VersionKey) != strconv.Itoa(i+1) ||
			md.Get(estuitewm.ShardKey) != "0" || md.Get(estuitewm.EventIDKey) != evs[i].ID.String() ||
			md.Get(estuitewm.TypeKey) != evs[i].Type || md.Get(estuitewm.RecordedAtKey) == "" {
			t.Errorf("message %d metadata %v", i, md)
		}
		if p, err := strconv.ParseInt(md.Get(estuitewm.PositionKey), 10, 64); err != nil || p < 1 {
			t.Errorf("message %d position %q", i, md.Get(estuitewm.PositionKey))
		}
		if _, ok := md[estuitewm.MessageUUIDKey]; ok {
			t.Errorf("message %d carries %s", i, estuitewm.MessageUUIDKey)
		}
	}
	if md := want[0]; md.Metadata.Get("correlation_id") != "c-1" {
		t.Fatal("the published message was changed")
	}

	// BinaryPayloads stores JSON payloads as binary too.
	bin := mustPublisher(t, store, estuitewm.PublisherConfig{BinaryPayloads: true, DefaultEventType: "Blob"})
	if err := bin.Publish("blobs", message.NewMessage(wm.NewUUID(), []byte(`{"a":1}`))); err != nil {
		t.Fatal(err)
	}
	if evs := readStream(t, store, "blobs"); evs[0].Format != estuite.Binary || evs[0].Type != "Blob" {
		t.Errorf("BinaryPayloads: format %v, type %q", evs[0].Format, evs[0].Type)
	}
	// A bad event type is Estuite's typed error.
	m := message.NewMessage(wm.NewUUID(), nil)
	m.Metadata.Set(estuitewm.TypeKey, "")
	if err := pub.Publish("orders", m); !errors.Is(err, estuite.ErrInvalidInput) {
		t.Errorf("empty type: %v, want ErrInvalidInput", err)
	}
}

// A subscriber gets its topic's messages only, not those of streams whose names start with it.
func TestTopicIsExactStream(t *testing.T) {
	store := newTestStore(t)
	pub := mustPublisher(t, store, estuitewm.PublisherConfig{})
	for _, topic := range []string{"orders", "orders-2", "orders2", "order"} {
		if err := pub.Publish(topic, message.NewMessage(wm.NewUUID(), []byte(strconv.Quote(topic)))); err != nil {
			t.Fatal(err)
		}
	}
	sub := mustSubscriber(t, store, "")
	ch := subscribe(t, sub, "orders")
	if got := receive(t, ch); string(got.Payload) != `"orders"` {
		t.Fatalf("got %s", got.Payload)
	}
	noMessage(t, ch, 300*time.Millisecond)
}

// A Nack redelivers (forever by default); with MaxRetries, the message is parked after that many
// retries and, with ParkSkipsEvent, the topic goes on.
func TestNackAndPark(t *testing.T) {
	ctx := context.Background()
	store := newTestStore(t)
	pub := mustPublisher(t, store, estuitewm.PublisherConfig{})
	msgs := messages(2, "park")
	if err := pub.Publish("poison", msgs...); err != nil {
		t.Fatal(err)
	}

	ch := subscribe(t, mustSubscriber(t, store, "forever"), "poison")
	for range 20 {
		select {
		case m := <-ch:
			if m.UUID != msgs[0].UUID {
				t.Fatalf("got %s while the first was nacked", m.UUID)
			}
			m.Nack()
		case <-time.After(10 * time.Second):
			t.Fatal("no redelivery")
		}
	}
	if got := receive(t, ch); got.UUID != msgs[0].UUID {
		t.Fatalf("got %s, want the nacked one", got.UUID)
	}
	if got := receive(t, ch); got.UUID != msgs[1].UUID {
		t.Fatalf("got %s, want the second", got.UUID)
	}

	cfg := testSubscriberConfig
	cfg.ConsumerGroup = "parking"
	cfg.MaxRetries = 2
	cfg.Park = estuite.ParkSkipsEvent
	ch = subscribe(t, mustSubscriberConfig(t, store, cfg), "poison")
	for range 3 {
		m := <-ch
		if m.UUID != msgs[0].UUID {
			t.Fatalf("got %s while the first was nacked", m.UUID)
		}
		m.Nack()
	}
	if got := receive(t, ch); got.UUID != msgs[1].UUID {
		t.Fatalf("got %s, want the second after the first was parked", got.UUID)
	}
	parked, err := store.ParkedEvents(ctx, estuitewm.GroupName("parking", "poison"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(parked) != 1 || parked[0].EventID != msgs[0].UUID || parked[0].Attempts != 3 || !strings.Contains(parked[0].Error, "nacked") {
		t.Fatalf("parked %+v", parked)
	}
	// A replay delivers it again.
	if _, err := store.ReplayParked(ctx, estuitewm.GroupName("parking", "poison"), nil); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, ch); got.UUID != msgs[0].UUID {
		t.Fatalf("replay: got %s", got.UUID)
	}
}

// The message's context carries the Subscribe context's values and ends after Ack; the channel
// closes when that context ends, and the group goes on after the last acknowledged message.
func TestContexts(t *testing.T) {
	store := newTestStore(t)
	pub := mustPublisher(t, store, estuitewm.PublisherConfig{})
	msgs := messages(3, "ctx")
	if err := pub.Publish("ctx", msgs...); err != nil {
		t.Fatal(err)
	}
	type key struct{}
	sub := mustSubscriber(t, store, "g")
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
	ch, err := sub.Subscribe(ctx, "ctx")
	if err != nil {
		t.Fatal(err)
	}
	m := receive(t, ch)
	if m.Context().Value(key{}) != "v" {
		t.Error("the message's context lacks the Subscribe context's value")
	}
	if _, ok := m.Context().Deadline(); !ok {
		t.Error("the message's context has no deadline (the end of the member's hold)")
	}
	select {
	case <-m.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the message's context did not end after Ack")
	}
	second := <-ch // not acknowledged
	cancel()
	select {
	case <-second.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the message's context did not end with the subscription")
	}
	for range ch {
	}
	ch = subscribe(t, sub, "ctx")
	if got := receive(t, ch); got.UUID != msgs[1].UUID {
		t.Fatalf("after the restart: %s, want the unacknowledged %s", got.UUID, msgs[1].UUID)
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-ch; ok {
		t.Fatal("a message after Close")
	}
	if _, err := sub.Subscribe(context.Background(), "ctx"); !errors.Is(err, estuitewm.ErrSubscriberClosed) {
		t.Fatalf("Subscribe after Close: %v", err)
	}
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish("ctx", msgs[0]); !errors.Is(err, estuitewm.ErrPublisherClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
}

// Competing consumers in separate processes (Stores on one backend): one member of the group
// delivers the topic; when it closes, another one goes on from its checkpoint, and a second group
// gets everything.
func TestCompetingAcrossStores(t *testing.T) {
	ctx := context.Background()
	backend := mem.New(nil)
	open := func() *estuite.Store {
		s, err := estuite.Open(ctx, backend, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b, c := open(), open(), open()
	d := estuite.NewDispatcher(a, &estuite.DispatcherOptions{PollInterval: 5 * time.Millisecond, MaxPollInterval: 20 * time.Millisecond})
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop() })

	pub := mustPublisher(t, a, estuitewm.PublisherConfig{})
	msgs := messages(40, "x")
	if err := pub.Publish("shared", msgs[:20]...); err != nil {
		t.Fatal(err)
	}
	subB := mustSubscriber(t, b, "workers")
	subC := mustSubscriber(t, c, "workers")
	chB, chC := subscribe(t, subB, "shared"), subscribe(t, subC, "shared")
	got := map[string]int{}
	var order []string
	read := func(n int) {
		for len(order) < n {
			select {
			case m := <-chB:
				got[m.UUID]++
				order = append(order, m.UUID)
				m.Ack()
			case m := <-chC:
				got[m.UUID]++
				order = append(order, m.UUID)
				m.Ack()
			case <-time.After(10 * time.Second):
				t.Fatalf("%d of %d messages", len(order), n)
			}
		}
	}
	read(20)
	// Close whichever holds the topic (both, one after the other, is not needed: close B; if C
	// held it, nothing changes).
	if err := subB.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish("shared", msgs[20:]...); err != nil {
		t.Fatal(err)
	}
	for len(order) < 40 {
		select {
		case m := <-chC:
			got[m.UUID]++
			order = append(order, m.UUID)
			m.Ack()
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of 40 messages after B closed", len(order))
		}
	}
	for i, m := range msgs {
		if order[i] != m.UUID || got[m.UUID] != 1 {
			t.Fatalf("message %d: got %s (%d times), want %s once", i, order[i], got[m.UUID], m.UUID)
		}
	}
	noMessage(t, chC, 200*time.Millisecond)

	// Another group reads the topic from its start.
	other := subscribe(t, mustSubscriber(t, b, "audit"), "shared")
	for i := range msgs {
		if m := receive(t, other); m.UUID != msgs[i].UUID {
			t.Fatalf("group audit, message %d: %s", i, m.UUID)
		}
	}
}

// An event erased by Store.Forget comes as a message without payload, marked erased.
func TestErasedSubject(t *testing.T) {
	ctx := context.Background()
	store := newTestStore(t)
	pub := mustPublisher(t, store, estuitewm.PublisherConfig{})
	m := message.NewMessage(wm.NewUUID(), []byte(`{"email":"a@example.com"}`))
	m.Metadata.Set(estuitewm.SubjectKey, "user-7")
	m.Metadata.Set("k", "v")
	if err := pub.Publish("people", m); err != nil {
		t.Fatal(err)
	}
	if err := store.Forget(ctx, "user-7"); err != nil {
		t.Fatal(err)
	}
	got := receive(t, subscribe(t, mustSubscriber(t, store, ""), "people"))
	if len(got.Payload) != 0 || got.Metadata.Get(estuitewm.ErasedKey) != "true" || got.Metadata.Get("k") != "" ||
		got.Metadata.Get(estuitewm.SubjectKey) != "user-7" || got.UUID != m.UUID {
		t.Fatalf("erased message: %s %q %v", got.UUID, got.Payload, got.Metadata)
	}
}
