package watermill_test

import (
	"context"
	"fmt"
	"log"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table/mem"
	estuitewm "github.com/estuite/estuite/watermill"
)

// Publish a message to a topic (a stream), then receive it in a consumer group.
func Example() {
	ctx := context.Background()
	store, err := estuite.Open(ctx, mem.New(nil), nil) // or table/bolt, table/azure
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	// The dispatcher moves committed events into the feed that subscribers read: one per process.
	d := estuite.NewDispatcher(store, nil)
	if err := d.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer d.Stop()

	pub, err := estuitewm.NewPublisher(store, estuitewm.PublisherConfig{})
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()
	msg := message.NewMessage(watermill.NewUUID(), []byte(`{"order":42,"total":"12.50"}`))
	msg.Metadata.Set(estuitewm.TypeKey, "OrderPlaced") // the event type; default "message"
	msg.Metadata.Set("correlation_id", "req-1")
	err = pub.Publish("order-42", msg) // one atomic, idempotent append
	if err != nil {
		log.Fatal(err)
	}

	sub, err := estuitewm.NewSubscriber(store, estuitewm.SubscriberConfig{ConsumerGroup: "billing"})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	messages, err := sub.Subscribe(ctx, "order-42")
	if err != nil {
		log.Fatal(err)
	}
	got := <-messages
	fmt.Println(got.UUID == msg.UUID, string(got.Payload))
	fmt.Println(got.Metadata.Get(estuitewm.TypeKey), got.Metadata.Get("correlation_id"))
	// Where the event is: its version in the stream, its position in the feed.
	fmt.Println(got.Metadata.Get(estuitewm.VersionKey), got.Metadata.Get(estuitewm.PositionKey))
	got.Ack() // or got.Nack(): it comes again after a backoff
	// Output:
	// true {"order":42,"total":"12.50"}
	// OrderPlaced req-1
	// 1 1
}

// A watermill Router handler on a topic: it runs until the router is closed.
func Example_router() {
	ctx := context.Background()
	store, err := estuite.Open(ctx, mem.New(nil), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	d := estuite.NewDispatcher(store, nil)
	if err := d.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer d.Stop()

	pub, err := estuitewm.NewPublisher(store, estuitewm.PublisherConfig{})
	if err != nil {
		log.Fatal(err)
	}
	sub, err := estuitewm.NewSubscriber(store, estuitewm.SubscriberConfig{ConsumerGroup: "mailer"})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	// Three messages in one Publish: one atomic append.
	err = pub.Publish("signups",
		message.NewMessage(watermill.NewUUID(), []byte(`{"user":"ada"}`)),
		message.NewMessage(watermill.NewUUID(), []byte(`{"user":"grace"}`)),
		message.NewMessage(watermill.NewUUID(), []byte(`{"user":"edsger"}`)))
	if err != nil {
		log.Fatal(err)
	}

	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		log.Fatal(err)
	}
	handled := make(chan struct{})
	n := 0
	router.AddConsumerHandler("welcome-mail", "signups", sub, func(msg *message.Message) error {
		fmt.Println("welcome", string(msg.Payload), "version", msg.Metadata.Get(estuitewm.VersionKey))
		if n++; n == 3 {
			close(handled)
		}
		return nil // the router acks; an error nacks, and the message comes again
	})
	go func() {
		<-handled
		router.Close()
	}()
	if err := router.Run(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// welcome {"user":"ada"} version 1
	// welcome {"user":"grace"} version 2
	// welcome {"user":"edsger"} version 3
}
