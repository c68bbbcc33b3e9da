package estuite_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/mem"
)

// pageLog records the query pages a backend returns: what a reader holds at once.
type pageLog struct {
	mu    sync.Mutex
	pages []pageStat
}

type pageStat struct {
	table       string
	rows, bytes int
}

// take returns the pages recorded since the last call.
func (l *pageLog) take() []pageStat {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.pages
	l.pages = nil
	return p
}

// recordingBackend is a backend whose tables log their query pages.
type recordingBackend struct {
	table.Backend
	log *pageLog
}

func (b recordingBackend) OpenTable(ctx context.Context, name string) (table.Table, error) {
	t, err := b.Backend.OpenTable(ctx, name)
	return recordingTable{Table: t, name: name, log: b.log}, err
}

type recordingTable struct {
	table.Table
	name string
	log  *pageLog
}

func (t recordingTable) Query(ctx context.Context, q table.Query) (table.Page, error) {
	p, err := t.Table.Query(ctx, q)
	st := pageStat{table: t.name, rows: len(p.Entities)}
	for _, e := range p.Entities {
		st.bytes += table.EntitySize(e)
	}
	t.log.mu.Lock()
	t.log.pages = append(t.log.pages, st)
	t.log.mu.Unlock()
	return p, err
}

// sizedEvent is an event of type typ whose JSON data is a string of n bytes.
func sizedEvent(typ string, n int) estuite.EventData {
	return jsonEvent(typ, `"`+strings.Repeat("x", n-2)+`"`)
}

// TestFeedByteBudgetCutsPagesAndNextResumes pages through a feed of 20 KB events with
// FeedOptions.MaxBytes, filtered and not: every page holds at least one event and stops at the
// first event that reaches the budget, and paging by Next reads every event once, in order.
func TestFeedByteBudgetCutsPagesAndNextResumes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		for i := range 30 {
			mustAppend(t, s, fmt.Sprintf("s-%d", i%3), []estuite.EventData{sizedEvent("Big", 20_000), jsonEvent("Small", "{}")}, nil)
		}
		stepUntilIdle(t, estuite.NewDispatcher(s, nil))
		ctx := context.Background()
		for _, c := range []struct {
			name     string
			opts     estuite.FeedOptions
			want     int // events in all
			perPage  int // the most events a page may hold
			minPages int
		}{
			{"one event per page", estuite.FeedOptions{MaxBytes: 1}, 60, 1, 60},
			{"50 KB pages", estuite.FeedOptions{MaxBytes: 50_000}, 60, 6, 10},
			{"50 KB pages, 4 events at most", estuite.FeedOptions{MaxBytes: 50_000, Limit: 4}, 60, 4, 15},
			{"filtered", estuite.FeedOptions{MaxBytes: 50_000, Types: []string{"Big"}}, 30, 3, 10},
			{"filtered, small ones only", estuite.FeedOptions{MaxBytes: 50_000, Types: []string{"Small"}}, 30, 30, 1},
		} {
			var got []estuite.FeedEvent
			o, pages := c.opts, 0
			for {
				page, err := s.ReadFeed(ctx, &o)
				if err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				if page.Next == o.After {
					break
				}
				pages++
				if len(page.Events) > c.perPage {
					t.Fatalf("%s: a page of %d events, want at most %d", c.name, len(page.Events), c.perPage)
				}
				// Only the last event may reach the budget: the page stops after it.
				data := 0
				for i, ev := range page.Events {
					if i > 0 && int64(data) >= c.opts.MaxBytes {
						t.Fatalf("%s: event %d added after the budget was reached", c.name, ev.Position)
					}
					data += len(ev.Data)
				}
				got = append(got, page.Events...)
				o.After = page.Next
			}
			if len(got) != c.want || pages < c.minPages {
				t.Fatalf("%s: %d events in %d pages, want %d in at least %d", c.name, len(got), pages, c.want, c.minPages)
			}
			for i := 1; i < len(got); i++ {
				if got[i].Position <= got[i-1].Position {
					t.Fatalf("%s: position %d after %d", c.name, got[i].Position, got[i-1].Position)
				}
			}
		}
		if _, err := s.ReadFeed(ctx, &estuite.FeedOptions{MaxBytes: -1}); !errors.Is(err, estuite.ErrInvalidInput) {
			t.Errorf("MaxBytes -1: %v, want ErrInvalidInput", err)
		}
	})
}

// TestByteBudgetBoundsWhatAReadHolds checks the rows each storage request returns when a read
// has a byte budget: about the budget (one row more at most, when the rows are alike), for the
// feed and for stream reads in both directions, and from a store that has just started, which
// has not seen the rows yet.
func TestByteBudgetBoundsWhatAReadHolds(t *testing.T) {
	log := &pageLog{}
	b := recordingBackend{Backend: mem.New(nil), log: log}
	writer := openStore(t, b, nil)
	const rowData, events = 100_000, 40
	for range events / 2 {
		mustAppend(t, writer, "big", []estuite.EventData{sizedEvent("Big", rowData), sizedEvent("Big", rowData)}, nil)
	}
	stepUntilIdle(t, estuite.NewDispatcher(writer, nil))
	ctx := context.Background()
	const budget = 350_000
	check := func(what string, want int, read func(s *estuite.Store) int) {
		t.Helper()
		s := openStore(t, b, nil) // fresh: it knows nothing of the rows
		log.take()
		if got := read(s); got != want {
			t.Fatalf("%s: %d events, want %d", what, got, want)
		}
		pages := log.take()
		for _, p := range pages {
			if p.rows > 1 && p.bytes > budget+rowData+1000 {
				t.Errorf("%s: a page of %d rows, %d bytes; budget %d", what, p.rows, p.bytes, budget)
			}
		}
		t.Logf("%s: %d events in %d storage pages", what, want, len(pages))
	}
	check("feed", events, func(s *estuite.Store) int {
		n := 0
		for o := (estuite.FeedOptions{MaxBytes: budget}); ; {
			page, err := s.ReadFeed(ctx, &o)
			if err != nil {
				t.Fatal(err)
			}
			if page.Next == o.After {
				return n
			}
			n += len(page.Events)
			o.After = page.Next
		}
	})
	for _, dir := range []estuite.Direction{estuite.Forward, estuite.Backward} {
		check(fmt.Sprintf("stream read, direction %d", dir), events, func(s *estuite.Store) int {
			_, got := readAll(t, s, "big", &estuite.ReadOptions{Direction: dir, PageBytes: budget})
			for i, e := range got {
				want := int64(i + 1)
				if dir == estuite.Backward {
					want = events - int64(i)
				}
				if e.Version != want || len(e.Data) != rowData {
					t.Fatalf("event %d: version %d, %d bytes", i, e.Version, len(e.Data))
				}
			}
			return len(got)
		})
	}
	if _, err := writer.Read(ctx, "big", &estuite.ReadOptions{PageBytes: -1}); !errors.Is(err, estuite.ErrInvalidInput) {
		t.Errorf("PageBytes -1: %v, want ErrInvalidInput", err)
	}
}

// TestByteBudgetCostsNoRequestsForSmallEvents checks that a byte budget costs small events no
// storage requests once the store has seen their size: a read of 1,000 small events is one
// request with a budget as without. The first read after a start may take one more.
func TestByteBudgetCostsNoRequestsForSmallEvents(t *testing.T) {
	b := mem.New(nil)
	writer := openStore(t, b, nil)
	appendN(t, writer, "small", 1000)
	stepUntilIdle(t, estuite.NewDispatcher(writer, nil))
	ctx := context.Background()
	s := openStore(t, b, nil)
	feed := func() {
		if p, err := s.ReadFeed(ctx, &estuite.FeedOptions{MaxBytes: 4 << 20}); err != nil || len(p.Events) != 1000 {
			t.Fatalf("feed read: %d events, %v", len(p.Events), err)
		}
	}
	read := func() {
		if _, got := readAll(t, s, "small", &estuite.ReadOptions{PageBytes: 4 << 20}); len(got) != 1000 {
			t.Fatalf("stream read: %d events", len(got))
		}
	}
	if d := requestsOf(s, feed); d.QueryPages > 2 {
		t.Errorf("first feed read after a start: %d query pages, want at most 2", d.QueryPages)
	}
	if d := requestsOf(s, read); d.Total() > 3 {
		t.Errorf("first stream read after a start: %+v, want at most 3 requests", d)
	}
	for range 2 {
		if d := requestsOf(s, feed); d.QueryPages != 1 {
			t.Errorf("feed read of 1000 small events: %d query pages, want 1", d.QueryPages)
		}
		if d := requestsOf(s, read); d.QueryPages != 1 {
			t.Errorf("stream read of 1000 small events: %d query pages, want 1", d.QueryPages)
		}
	}
}

// TestSubscriptionBatchBytes checks SubscriptionOptions.MaxBatchBytes: a subscription bounded by
// it still delivers every event once, in order; a negative bound is refused.
func TestSubscriptionBatchBytes(t *testing.T) {
	s := openStore(t, mem.New(nil), nil)
	for range 10 {
		mustAppend(t, s, "big", []estuite.EventData{sizedEvent("Big", 50_000), sizedEvent("Big", 50_000)}, nil)
	}
	startDispatcher(t, s)
	c := newCollector()
	sub, err := s.Subscribe(context.Background(), estuite.SubscriptionOptions{Handler: c.handle, MaxBatchBytes: 120_000})
	if err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, 20)
	if err := sub.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(c.positions()); got != fmt.Sprint([]int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}) {
		t.Fatalf("delivered %s", got)
	}
	_, err = s.Subscribe(context.Background(), estuite.SubscriptionOptions{Handler: c.handle, MaxBatchBytes: -1})
	if !errors.Is(err, estuite.ErrInvalidInput) {
		t.Errorf("MaxBatchBytes -1: %v, want ErrInvalidInput", err)
	}
}
