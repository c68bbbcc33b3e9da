package server_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/estuite/estuite"
)

// GET /streams/{s}/events of a stream whose events fit one storage page is one storage request:
// the events and the head in one range query.
func TestReadingASmallStreamIsOneStorageRequest(t *testing.T) {
	for _, bc := range backends {
		t.Run(bc.name, func(t *testing.T) {
			h := newHarnessOn(t, bc)
			events := make([]estuite.EventData, 10)
			for i := range events {
				events[i] = estuite.EventData{Type: "Counted", Data: fmt.Appendf(nil, `{"n":%d}`, i+1)}
			}
			if _, err := h.store.Append(context.Background(), "small", events, nil); err != nil {
				t.Fatal(err)
			}
			for _, path := range []string{"/streams/small/events", "/streams/small/events?from=8&limit=5"} {
				before := h.store.RequestCounts()
				r := h.do("GET", path, nil)
				mustStatus(t, r, http.StatusOK)
				var read readResult
				r.decode(t, &read)
				if read.Version != 10 || len(read.Events) == 0 {
					t.Fatalf("GET %s: %+v", path, read)
				}
				if spent := h.store.RequestCounts().Sub(before); spent.Total() != 1 {
					t.Errorf("GET %s: %+v storage requests; want 1", path, spent)
				}
			}
		})
	}
}
