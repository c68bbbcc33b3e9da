package estuite_test

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/mem"
)

// hangLimit bounds a call that must come back at once: it only catches a call that never would,
// so it is far longer than any honest call takes.
const hangLimit = 20 * time.Second

// feedStore opens a memory store whose feed holds n events, dispatched.
func feedStore(t testing.TB, n int) *estuite.Store {
	t.Helper()
	s := openStore(t, mem.New(&mem.Options{PageSize: 3, EmptyPages: true}), nil)
	for done := 0; done < n; {
		k := min(90, n-done)
		events := make([]estuite.EventData, k)
		for i := range events {
			events[i] = estuite.EventData{Type: "T", Data: []byte(`{}`)}
		}
		if _, err := s.Append(context.Background(), "s", events, nil); err != nil {
			t.Fatal(err)
		}
		done += k
	}
	d := estuite.NewDispatcher(s, nil)
	for {
		st, err := d.Step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.Streams == 0 {
			return s
		}
	}
}

func isInvalidField(err error, field string) bool {
	var ie *estuite.InvalidInputError
	return errors.Is(err, estuite.ErrInvalidInput) && errors.As(err, &ie) && ie.Field == field
}

// TestFeedPositionsOverTheMaximumAreRefused checks that a feed read or a subscription after a
// position past MaxPosition is refused at once with a typed error, and that one after the
// largest positions allowed comes back at once, empty.
func TestFeedPositionsOverTheMaximumAreRefused(t *testing.T) {
	s := feedStore(t, 7)
	if estuite.MaxPosition != 1<<62 {
		t.Fatalf("MaxPosition = %d", int64(estuite.MaxPosition))
	}
	for _, after := range []int64{math.MaxInt64, math.MaxInt64 - 1, estuite.MaxPosition + 1, math.MinInt64, -1} {
		ctx, cancel := context.WithTimeout(context.Background(), hangLimit)
		page, err := s.ReadFeed(ctx, &estuite.FeedOptions{After: after})
		cancel()
		if !isInvalidField(err, "after") {
			t.Errorf("ReadFeed after %d: %+v, %v; want an invalid after", after, page, err)
		}
		sub, err := s.Subscribe(context.Background(), estuite.SubscriptionOptions{
			After:   after,
			Handler: func(context.Context, estuite.FeedEvent) error { return nil },
		})
		if !isInvalidField(err, "after") {
			t.Errorf("Subscribe after %d: %v; want an invalid after", after, err)
		}
		if sub != nil {
			sub.Stop()
		}
	}
	for _, after := range []int64{estuite.MaxPosition, estuite.MaxPosition - 1, estuite.MaxPosition - estuite.FeedPageSize} {
		ctx, cancel := context.WithTimeout(context.Background(), hangLimit)
		page, err := s.ReadFeed(ctx, &estuite.FeedOptions{After: after, Limit: math.MaxInt, MaxScan: math.MaxInt})
		cancel()
		if err != nil || len(page.Events) != 0 || page.Next != after {
			t.Errorf("ReadFeed after %d: %+v, %v; want an empty page at %d", after, page, err, after)
		}
		caught := make(chan int64, 1)
		sub, err := s.Subscribe(context.Background(), estuite.SubscriptionOptions{
			After:    after,
			Handler:  func(context.Context, estuite.FeedEvent) error { return nil },
			CaughtUp: func(p int64) { caught <- p },
		})
		if err != nil {
			t.Fatalf("Subscribe after %d: %v", after, err)
		}
		select {
		case p := <-caught:
			if p != after {
				t.Errorf("subscription after %d caught up at %d", after, p)
			}
		case <-time.After(hangLimit):
			t.Errorf("subscription after %d never caught up", after)
		}
		if err := sub.Stop(); err != nil {
			t.Errorf("subscription after %d: %v", after, err)
		}
	}
}

// TestFeedReadCountsAreValidated checks that negative limits are refused, and that the largest
// limits read the feed to its end and no further.
func TestFeedReadCountsAreValidated(t *testing.T) {
	s := feedStore(t, 7)
	for _, o := range []estuite.FeedOptions{{Limit: -1}, {MaxScan: -1}, {Limit: math.MinInt}} {
		if _, err := s.ReadFeed(context.Background(), &o); !errors.Is(err, estuite.ErrInvalidInput) {
			t.Errorf("ReadFeed(%+v): %v, want ErrInvalidInput", o, err)
		}
	}
	page, err := s.ReadFeed(context.Background(), &estuite.FeedOptions{Limit: math.MaxInt, MaxScan: math.MaxInt})
	if err != nil || len(page.Events) != 7 || page.Next != 7 {
		t.Fatalf("ReadFeed with the largest limits: %d events, next %d, %v", len(page.Events), page.Next, err)
	}
}

// FuzzReadFeedPosition reads a small feed (across several feed pages, with storage pages of
// three rows and empty pages) after any position, with any limits: every read either is refused
// with a typed error or returns the page the feed holds, and never hangs.
func FuzzReadFeedPosition(f *testing.F) {
	defer estuite.SetFeedPageSize(4)()
	const head = 11
	s := feedStore(f, head)
	for _, after := range []int64{0, 1, 3, 4, 5, head - 1, head, head + 1, 1<<62 - 1, 1 << 62, 1<<62 + 1, math.MaxInt64 - 1, math.MaxInt64, -1, math.MinInt64} {
		f.Add(after, int64(0), int64(0), false)
		f.Add(after, int64(1), int64(2), true)
		f.Add(after, int64(math.MaxInt64), int64(math.MaxInt64), false)
	}
	f.Fuzz(func(t *testing.T, after, limit, maxScan int64, filtered bool) {
		o := estuite.FeedOptions{After: after, Limit: int(limit), MaxScan: int(maxScan)}
		if filtered {
			o.Types = []string{"T"}
		}
		ctx, cancel := context.WithTimeout(context.Background(), hangLimit)
		defer cancel()
		page, err := s.ReadFeed(ctx, &o)
		if ctx.Err() != nil {
			t.Fatalf("ReadFeed(%+v) took longer than %v: %v", o, hangLimit, err)
		}
		switch {
		case after < 0 || after > estuite.MaxPosition:
			if !isInvalidField(err, "after") {
				t.Fatalf("ReadFeed(%+v): %v, want an invalid after", o, err)
			}
			return
		case o.Limit < 0:
			if !isInvalidField(err, "limit") {
				t.Fatalf("ReadFeed(%+v): %v, want an invalid limit", o, err)
			}
			return
		case o.MaxScan < 0:
			if !isInvalidField(err, "maxScan") {
				t.Fatalf("ReadFeed(%+v): %v, want an invalid maxScan", o, err)
			}
			return
		case err != nil:
			t.Fatalf("ReadFeed(%+v): %v", o, err)
		}
		lim, scan := o.Limit, o.MaxScan
		if lim == 0 {
			lim = estuite.DefaultFeedLimit
		}
		if scan == 0 {
			scan = estuite.DefaultFeedMaxScan
		}
		want := int64(0)
		if after < head {
			want = min(int64(lim), int64(scan), head-after)
		}
		if page.Next != after+want || int64(len(page.Events)) != want {
			t.Fatalf("ReadFeed(%+v): %d events, next %d; want %d events, next %d", o, len(page.Events), page.Next, want, after+want)
		}
		for i, ev := range page.Events {
			if ev.Position != after+1+int64(i) {
				t.Fatalf("ReadFeed(%+v): event %d at position %d", o, i, ev.Position)
			}
		}
	})
}

// TestCheckpointPastTheMaximumIsCorrupt checks that a stored checkpoint past MaxPosition is
// reported as corrupt rather than followed.
func TestCheckpointPastTheMaximumIsCorrupt(t *testing.T) {
	b := mem.New(nil)
	s := openStore(t, b, nil)
	events, err := b.Table(estuite.DefaultTablePrefix + "events")
	if err != nil {
		t.Fatal(err)
	}
	row := table.Entity{PartitionKey: "checkpoint", RowKey: "p", Properties: map[string]any{"Stream": "p", "Position": int64(estuite.MaxPosition + 1)}}
	if _, err := events.Submit(context.Background(), "checkpoint", []table.Op{{Kind: table.Insert, Entity: row}}); err != nil {
		t.Fatal(err)
	}
	sub, err := s.Subscribe(context.Background(), estuite.SubscriptionOptions{
		Name:    "p",
		Handler: func(context.Context, estuite.FeedEvent) error { return nil },
	})
	if !errors.Is(err, estuite.ErrCorrupt) {
		t.Errorf("Subscribe with a checkpoint past MaxPosition: %v, want ErrCorrupt", err)
	}
	if sub != nil {
		sub.Stop()
	}
}
