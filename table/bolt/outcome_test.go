package bolt

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	bbolt "go.etcd.io/bbolt"

	"github.com/estuite/estuite/table"
)

// errFsync stands for an I/O error of bbolt's commit (a failed write or fsync).
var errFsync = errors.New("injected: fsync failed")

// failCommits makes the commits of b numbered in fail (1 for the first) report errFsync: after
// writing when wrote is set, else instead of committing. Install it before the first Submit.
func failCommits(b *Backend, wrote bool, fail ...int32) {
	var n atomic.Int32
	b.gc.commitTx = func(tx *bbolt.Tx) error {
		i := n.Add(1)
		for _, f := range fail {
			if f != i {
				continue
			}
			if !wrote {
				_ = tx.Rollback()
				return errFsync
			}
			if err := tx.Commit(); err != nil {
				return err
			}
			return errFsync
		}
		return tx.Commit()
	}
}

// checkUnknown fails the test unless err is the contract's unknown outcome caused by errFsync,
// with no ETags (withETags false).
func checkUnknown(t *testing.T, what string, withETags bool, err error) {
	t.Helper()
	var te *table.TransientError
	if !errors.As(err, &te) || !errors.Is(err, table.ErrTransient) || !errors.Is(err, table.ErrUnknownOutcome) || !errors.Is(err, errFsync) {
		t.Errorf("%s: %v; want a *table.TransientError that is ErrTransient and ErrUnknownOutcome, caused by the failed commit", what, err)
	}
	var be *table.BatchError
	if errors.As(err, &be) {
		t.Errorf("%s: a failed commit reported as a refused operation: %v", what, err)
	}
	if withETags {
		t.Errorf("%s: ETags returned with an unknown outcome", what)
	}
}

// A commit that fails after it began writing may or may not be durable: Submit must say the
// outcome is unknown, never that the batch failed — whether the rows landed (the failure came
// after the write) or not.
func TestFailedCommitIsUnknownOutcome(t *testing.T) {
	for _, wrote := range []bool{true, false} {
		name := map[bool]string{true: "written", false: "not written"}[wrote]
		t.Run(name, func(t *testing.T) {
			b, _ := openTest(t)
			tb := openTable(t, b, "rows")
			failCommits(b, wrote, 1)
			ctx := context.Background()
			etags, err := tb.Submit(ctx, "p", []table.Op{insert("p", "a", nil), insert("p", "b", nil)})
			checkUnknown(t, "Submit", etags != nil, err)
			_, err = tb.Get(ctx, "p", "a")
			if wrote && err != nil || !wrote && !errors.Is(err, table.ErrNotFound) {
				t.Errorf("row a after a commit that failed (%s): %v", name, err)
			}
			// The backend goes on working.
			mustSubmit(t, tb, "p", table.Op{Kind: table.Upsert, Entity: entity("p", "a", nil)})
		})
	}
}

// Every caller whose request took part in a failed group commit gets the unknown outcome — the
// followers as well as the leader, SubmitParts as well as Submit — while a request whose own
// plan failed in that transaction keeps its definite error.
func TestFailedGroupCommitIsUnknownForEveryCaller(t *testing.T) {
	b, _ := openTest(t)
	tb := openTable(t, b, "rows")
	other := openTable(t, b, "other")
	failCommits(b, true, 2)
	g := holdCommits(b)
	ctx := context.Background()

	first := submitAsync(ctx, tb, "p", insert("p", "exists", nil))
	<-g.entered
	leader := submitAsync(ctx, tb, "p", insert("p", "a", nil))
	waitQueued(t, b, 1)
	follower := submitAsync(ctx, tb, "q", insert("q", "b", nil))
	waitQueued(t, b, 2)
	refused := submitAsync(ctx, tb, "p", insert("p", "c", nil), insert("p", "exists", nil))
	waitQueued(t, b, 3)
	type partsResult struct {
		etags [][]string
		err   error
	}
	parts := make(chan partsResult, 1)
	go func() {
		etags, err := b.SubmitParts(ctx, []table.Part{
			{Table: other, PartitionKey: "m", Ops: []table.Op{{Kind: table.Upsert, Entity: entity("m", "marker", nil)}}},
			{Table: tb, PartitionKey: "r", Ops: []table.Op{insert("r", "d", nil)}},
		})
		parts <- partsResult{etags, err}
	}()
	waitQueued(t, b, 4)

	g.release <- struct{}{}
	if r := <-first; r.err != nil {
		t.Fatalf("first commit: %v", r.err)
	}
	if n := <-g.entered; n != 4 {
		t.Fatalf("second transaction carries %d requests, want 4", n)
	}
	close(g.release)
	for name, ch := range map[string]<-chan result{"leader": leader, "follower": follower} {
		r := <-ch
		checkUnknown(t, name, r.etags != nil, r.err)
	}
	pr := <-parts
	checkUnknown(t, "SubmitParts", pr.etags != nil, pr.err)
	r := <-refused
	var be *table.BatchError
	if !errors.As(r.err, &be) || be.Index != 1 || !errors.Is(r.err, table.ErrAlreadyExists) || errors.Is(r.err, table.ErrTransient) {
		t.Errorf("refused request in the failed commit: %v; want its own definite refusal at op 1", r.err)
	}
	// The commit wrote before it failed: what the callers were told may have happened, did.
	for _, k := range []struct {
		t      table.Table
		pk, rk string
	}{{tb, "p", "a"}, {tb, "q", "b"}, {other, "m", "marker"}, {tb, "r", "d"}} {
		if _, err := k.t.Get(ctx, k.pk, k.rk); err != nil {
			t.Errorf("row %s/%s of the failed commit: %v", k.pk, k.rk, err)
		}
	}
	if _, err := tb.Get(ctx, "p", "c"); !errors.Is(err, table.ErrNotFound) {
		t.Errorf("row c of the refused request was written: %v", err)
	}
}
