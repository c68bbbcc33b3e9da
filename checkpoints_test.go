package estuite_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/mem"
)

// runSubscription runs a durable subscription until it has handled n events, then stops it, so
// that its checkpoint is stored at the n-th event's position.
func runSubscription(t *testing.T, s *estuite.Store, name string, n int) {
	t.Helper()
	c := newCollector()
	sub, err := s.Subscribe(context.Background(), estuite.SubscriptionOptions{Name: name, Handler: c.handle})
	if err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, n)
	if err := sub.Stop(); err != nil {
		t.Fatal(err)
	}
}

// TestCheckpointsListDurableSubscriptions checks that Checkpoints returns each durable
// subscription's name and the position it will resume after, sorted by name, in one query (one
// storage request on a backend with full pages), and that a limit bounds it.
func TestCheckpointsListDurableSubscriptions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *estuite.Store) {
		ctx := context.Background()
		if cps, err := s.Checkpoints(ctx, 0); err != nil || len(cps) != 0 {
			t.Fatalf("on a new store: %v, %v", cps, err)
		}
		before := time.Now().Add(-time.Minute)
		appendN(t, s, "a", 5)
		stepUntilIdle(t, estuite.NewDispatcher(s, nil))
		runSubscription(t, s, "projector/b%2F", 5) // a name that must be escaped in a row key
		appendN(t, s, "a", 3)
		stepUntilIdle(t, estuite.NewDispatcher(s, nil))
		runSubscription(t, s, "audit", 8)

		rc := s.RequestCounts()
		cps, err := s.Checkpoints(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		// One query: one request, unless the backend pages small or answers empty pages first.
		if spent := s.RequestCounts().Sub(rc); spent.Queries != 1 || spent.Total() != spent.QueryPages {
			t.Errorf("Checkpoints spent %+v; want one query", spent)
		}
		if got := fmt.Sprint(names(cps)); got != "[audit/8 projector/b%2F/5]" {
			t.Fatalf("checkpoints %s; want [audit/8 projector/b%%2F/5]", got)
		}
		for _, c := range cps {
			if c.Updated.Before(before) || c.Updated.After(time.Now().Add(time.Minute)) {
				t.Errorf("%s updated at %v", c.Name, c.Updated)
			}
		}
		one, err := s.Checkpoints(ctx, 1)
		if err != nil || len(one) != 1 {
			t.Fatalf("with limit 1: %v, %v", one, err)
		}
		if _, err := s.Checkpoints(ctx, -1); !errors.Is(err, estuite.ErrInvalidInput) {
			t.Errorf("a negative limit: %v, want ErrInvalidInput", err)
		}
	})
}

func names(cps []estuite.Checkpoint) []string {
	var out []string
	for _, c := range cps {
		out = append(out, fmt.Sprintf("%s/%d", c.Name, c.Position))
	}
	return out
}

// TestCheckpointsRefuseMalformedRows checks that a checkpoint row that is not what Subscribe
// writes is reported as corrupt, not read as a position.
func TestCheckpointsRefuseMalformedRows(t *testing.T) {
	valid := func() map[string]any {
		return map[string]any{"Stream": "p", "Position": int64(3), "Owner": "tok", "Updated": time.Now().UTC()}
	}
	for _, c := range []struct {
		name   string
		rowKey string
		change func(map[string]any)
	}{
		{"valid", "p", func(map[string]any) {}},
		{"position as a string", "p", func(p map[string]any) { p["Position"] = "3" }},
		{"negative position", "p", func(p map[string]any) { p["Position"] = int64(-1) }},
		{"no position", "p", func(p map[string]any) { delete(p, "Position") }},
		{"no name", "p", func(p map[string]any) { delete(p, "Stream") }},
		{"name not the row key", "q", func(map[string]any) {}},
		{"no update time", "p", func(p map[string]any) { delete(p, "Updated") }},
		{"no owner", "p", func(p map[string]any) { delete(p, "Owner") }},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := mem.New(nil)
			s := openStore(t, b, nil)
			tbl, err := b.Table(estuite.DefaultTablePrefix + "events")
			if err != nil {
				t.Fatal(err)
			}
			props := valid()
			c.change(props)
			tbl.Put(table.Entity{PartitionKey: "checkpoint", RowKey: c.rowKey, Properties: props})
			cps, err := s.Checkpoints(context.Background(), 0)
			if c.name == "valid" {
				if err != nil || len(cps) != 1 || cps[0].Name != "p" || cps[0].Position != 3 {
					t.Fatalf("%v, %v", cps, err)
				}
				return
			}
			if !errors.Is(err, estuite.ErrCorrupt) {
				t.Fatalf("%v, %v; want ErrCorrupt", cps, err)
			}
		})
	}
}
