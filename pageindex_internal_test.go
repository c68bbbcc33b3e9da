package estuite

import (
	"testing"

	"github.com/estuite/estuite/table"
)

// The page index round-trips through its encoding, answers which page holds a version, starts
// again after a raise it did not see, and keeps its latest half when full.
func TestPageIndex(t *testing.T) {
	var ix pageIndex
	prev := int64(0)
	for i := int64(0); i < maxPageIndex; i++ {
		if !ix.add(prev, 3*i, prev+2) {
			t.Fatalf("entry %d not added", i)
		}
		prev += 2
	}
	if ix.add(prev, 3*(maxPageIndex-1), prev+1) {
		t.Fatal("a page not after the last entry was added")
	}
	row := table.Entity{Properties: map[string]any{propDispatched: prev, propPages: ix.encode()}}
	back, err := decodeProgress("pk", row)
	if err != nil || back.dispatched != prev || len(back.index.entries) != maxPageIndex || back.index.base != 0 {
		t.Fatalf("decoded %+v entries, base %d, %v", len(back.index.entries), back.index.base, err)
	}
	if n := len(ix.encode()); n > table.MaxPropertyBytes {
		t.Fatalf("a full index is %d bytes", n)
	}
	for v, want := range map[int64]int64{1: 0, 2: 0, 3: 3, 4: 3, 2*maxPageIndex - 1: 3 * (maxPageIndex - 1)} {
		if p, ok := back.index.pageOf(v); !ok || p != want {
			t.Errorf("version %d: page %d %v, want %d", v, p, ok, want)
		}
	}
	if _, ok := back.index.pageOf(prev + 1); ok {
		t.Error("a version past the index has a page")
	}
	// One entry more: the older half goes, and what it held is no longer known.
	ix.add(prev, 3*maxPageIndex, prev+2)
	if len(ix.entries) != maxPageIndex/2+1 || ix.base != maxPageIndex {
		t.Fatalf("after thinning: %d entries, base %d", len(ix.entries), ix.base)
	}
	if _, ok := ix.pageOf(maxPageIndex); ok {
		t.Error("a dropped version still has a page")
	}
	if p, ok := ix.pageOf(maxPageIndex + 1); !ok || p != 3*(maxPageIndex/2) {
		t.Errorf("first kept version: page %d %v", p, ok)
	}
	// A raise without a page (Repair) leaves versions unindexed: the index starts again.
	ix.add(prev+10, 3*maxPageIndex+5, prev+12)
	if len(ix.entries) != 1 || ix.base != prev+10 {
		t.Fatalf("after a gap: %d entries, base %d", len(ix.entries), ix.base)
	}
	if got := decodePageIndex(table.Entity{Properties: map[string]any{propPages: []byte{0x80}}}); len(got.entries) != 0 {
		t.Fatal("a malformed index decoded")
	}
}
