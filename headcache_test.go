package estuite_test

import (
	"context"
	"errors"
	"testing"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table/mem"
)

// Two servers on one backend: the head cached by one of them goes stale when the other appends.
// A stale cached head may make an append cheaper, never refuse it: the store decides a conflict
// on the head as stored, and reports a version the stream really has.
func TestStaleCachedHeadNeverRefusesTheRightExpectedVersion(t *testing.T) {
	b := mem.New(nil)
	stale := openStore(t, b, nil)
	other := openStore(t, b, nil)
	ctx := context.Background()
	one := []estuite.EventData{jsonEvent("E", "{}")}

	mustAppend(t, stale, "s", one, &estuite.AppendOptions{Expected: estuite.NoStream}) // stale caches version 1
	mustAppend(t, other, "s", append(one, one...), nil)                                // the stream is at 3 now

	// Again and again: the cache must not keep refusing.
	for round := 0; round < 3; round++ {
		// A wrong expectation is refused with the version as stored, not the cached one.
		_, err := stale.Append(ctx, "s", one, &estuite.AppendOptions{Expected: estuite.Exactly(1)})
		var wev *estuite.WrongExpectedVersionError
		if !errors.As(err, &wev) || wev.Actual != int64(3+round) {
			t.Fatalf("round %d: Exactly(1) on a stream at %d: %v; want a WrongExpectedVersionError with Actual %d", round, 3+round, err, 3+round)
		}
		mustAppend(t, other, "s", one, nil) // and the other server moves on again
	}
	// The stream is at 6; the stale store's cache still says something older.
	res, err := stale.Append(ctx, "s", one, &estuite.AppendOptions{Expected: estuite.Exactly(6)})
	if err != nil || res.FirstVersion != 7 {
		t.Fatalf("Exactly(6) on a stream at 6 through a stale cache: %+v, %v; want version 7", res, err)
	}

	// StreamExists and NoStream are decided on the stored head too.
	mustAppend(t, other, "t", one, nil)
	if _, err := stale.Append(ctx, "t", one, &estuite.AppendOptions{Expected: estuite.NoStream}); !isWrongAt(err, 1) {
		t.Fatalf("NoStream on an existing stream: %v; want a WrongExpectedVersionError with Actual 1", err)
	}
	if _, err := stale.Append(ctx, "t", one, &estuite.AppendOptions{Expected: estuite.StreamExists}); err != nil {
		t.Fatalf("StreamExists on an existing stream: %v", err)
	}
}

// A refusal that the cache suggests costs one head read more than a warm append; a correct
// cached head costs nothing more.
func TestStaleCachedHeadCostsOneHeadRead(t *testing.T) {
	b := mem.New(nil)
	stale := openStore(t, b, nil)
	other := openStore(t, b, nil)
	one := []estuite.EventData{jsonEvent("E", "{}")}
	mustAppend(t, stale, "s", one, nil)
	mustAppend(t, other, "s", one, nil)
	d := requestsOf(stale, func() {
		mustAppend(t, stale, "s", one, &estuite.AppendOptions{Expected: estuite.Exactly(2)})
	})
	// The head read, then the marker and the batch.
	if d.PointReads != 1 || d.Total() != 3 {
		t.Fatalf("append through a stale cache: %+v; want one head read, a marker write and a batch", d)
	}
	d = requestsOf(stale, func() {
		if _, err := stale.Append(context.Background(), "s", one, &estuite.AppendOptions{Expected: estuite.Exactly(1)}); !isWrongAt(err, 3) {
			t.Fatalf("Exactly(1) on a stream at 3: %v", err)
		}
	})
	// The head read (the cache is right, but only storage can say so) and the commit lookup.
	if d.PointReads != 2 || d.Total() != 2 {
		t.Fatalf("refusal with a correct cached head: %+v; want two point reads", d)
	}
}

func isWrongAt(err error, actual int64) bool {
	var wev *estuite.WrongExpectedVersionError
	return errors.As(err, &wev) && wev.Actual == actual
}
