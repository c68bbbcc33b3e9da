package tabletest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/estuite/estuite/table"
)

// race runs f(i) for i in [0, n) on n goroutines released together, and returns their results.
func race(n int, f func(i int) (string, error)) ([]string, []error) {
	etags := make([]string, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			etags[i], errs[i] = f(i)
		})
	}
	close(start)
	wg.Wait()
	return etags, errs
}

// oneWinner checks that exactly one call succeeded and every other failed with a *BatchError
// at index 0 wrapping loser, and returns the winner.
func oneWinner(t *testing.T, errs []error, loser error) int {
	t.Helper()
	winner := -1
	for i, err := range errs {
		var be *table.BatchError
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("goroutines %d and %d both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, loser):
			t.Errorf("goroutine %d: %v, want an error wrapping %v", i, err, loser)
		case !errors.As(err, &be) || be.Index != 0:
			t.Errorf("goroutine %d: %v, want a *table.BatchError with index 0", i, err)
		}
	}
	if winner < 0 {
		t.Fatalf("no goroutine succeeded; errors: %v", errs)
	}
	return winner
}

func (s *suite) testConcurrentReplace(t *testing.T) {
	tbl := s.table(t)
	e0 := submit(t, tbl, "p", insertOp("p", "r", props("W", int64(-1))))[0]
	etags, errs := race(s.goroutines(), func(i int) (string, error) {
		etags, err := tbl.Submit(t.Context(), "p", []table.Op{replaceOp("p", "r", e0, props("W", int64(i)))})
		if err != nil {
			return "", err
		}
		return etags[0], nil
	})
	w := oneWinner(t, errs, table.ErrPreconditionFailed)
	wantEntity(t, get(t, tbl, "p", "r"), "p", "r", etags[w], props("W", int64(w)))
}

func (s *suite) testConcurrentInsert(t *testing.T) {
	tbl := s.table(t)
	etags, errs := race(s.goroutines(), func(i int) (string, error) {
		etags, err := tbl.Submit(t.Context(), "p", []table.Op{insertOp("p", "r", props("W", int64(i)))})
		if err != nil {
			return "", err
		}
		return etags[0], nil
	})
	w := oneWinner(t, errs, table.ErrAlreadyExists)
	wantEntity(t, get(t, tbl, "p", "r"), "p", "r", etags[w], props("W", int64(w)))
}

func (s *suite) testConcurrentDistinct(t *testing.T) {
	tbl := s.table(t)
	const each = 5
	n := s.goroutines()
	_, errs := race(n, func(i int) (string, error) {
		for j := range each {
			rk := fmt.Sprintf("g%02d-%02d", i, j)
			if _, err := tbl.Submit(t.Context(), "p", []table.Op{insertOp("p", rk, props("G", int64(i), "J", int64(j)))}); err != nil {
				return "", fmt.Errorf("insert %s: %w", rk, err)
			}
		}
		return "", nil
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("goroutine %d: %v", i, err)
		}
	}
	rows := s.rows(t, tbl, "p")
	if len(rows) != n*each {
		t.Fatalf("query returned %d rows, want %d", len(rows), n*each)
	}
	for k, e := range rows {
		i, j := k/each, k%each
		wantEntity(t, e, "p", fmt.Sprintf("g%02d-%02d", i, j), "", props("G", int64(i), "J", int64(j)))
	}
}

// testConcurrentCounter increments a counter with read-modify-write cycles guarded by ETags,
// from several goroutines: no increment may be lost.
func (s *suite) testConcurrentCounter(t *testing.T) {
	tbl := s.table(t)
	const each = 5
	n := s.goroutines()
	submit(t, tbl, "p", insertOp("p", "counter", props("N", int64(0))))
	_, errs := race(n, func(int) (string, error) {
		done := 0
		for attempt := 0; done < each; attempt++ {
			if attempt > 100*n*each {
				return "", fmt.Errorf("only %d of %d increments after %d attempts", done, each, attempt)
			}
			e, err := tbl.Get(t.Context(), "p", "counter")
			if err != nil {
				return "", err
			}
			v, _ := e.Properties["N"].(int64)
			_, err = tbl.Submit(t.Context(), "p", []table.Op{replaceOp("p", "counter", e.ETag, props("N", v+1))})
			switch {
			case err == nil:
				done++
			case !errors.Is(err, table.ErrPreconditionFailed):
				return "", err
			}
		}
		return "", nil
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("goroutine %d: %v", i, err)
		}
	}
	if got := get(t, tbl, "p", "counter").Properties["N"]; got != int64(n*each) {
		t.Fatalf("counter is %v after %d increments", got, n*each)
	}
}

func (s *suite) testCanceled(t *testing.T) {
	tbl := s.table(t)
	e := submit(t, tbl, "p", insertOp("p", "exists", props("V", "v")))[0]
	before := s.rows(t, tbl, "p")

	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	expired, cancel2 := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel2()
	for name, ctx := range map[string]context.Context{"canceled": canceled, "expired": expired} {
		// A canceled call must fail, and not with an answer about the data.
		check := func(what string, err error) {
			t.Helper()
			if err == nil {
				t.Errorf("%s with a %s context succeeded", what, name)
				return
			}
			for _, definite := range []error{table.ErrNotFound, table.ErrAlreadyExists, table.ErrPreconditionFailed} {
				if errors.Is(err, definite) {
					t.Errorf("%s with a %s context: %v, which claims something about the data", what, name, err)
				}
			}
		}
		_, err := tbl.Get(ctx, "p", "exists")
		check("Get", err)
		_, err = tbl.Query(ctx, table.Query{PartitionKey: "p"})
		check("Query", err)
		_, err = tbl.Scan(ctx, table.ScanQuery{})
		check("Scan", err)
		_, err = tbl.Submit(ctx, "p", []table.Op{insertOp("p", "new", props("V", "new"))})
		check("Submit of an insert", err)
		_, err = tbl.Submit(ctx, "p", []table.Op{replaceOp("p", "exists", e, props("V", "w"))})
		check("Submit of a replace", err)
		_, err = tbl.Submit(ctx, "p", []table.Op{deleteOp("p", "exists", e)})
		check("Submit of a delete", err)
		_, err = tbl.Submit(ctx, "q", []table.Op{upsertOp("q", "new", props("V", "new"))})
		check("Submit of an upsert", err)
	}
	sameRows(t, before, s.rows(t, tbl, "p"))
	s.wantEmpty(t, tbl, "q")
}
