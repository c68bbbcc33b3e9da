package server_test

import (
	"context"
	"testing"

	"github.com/estuite/estuite"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestAppendContinuesTheRequestsTrace: on a traced store, an append sent with a traceparent
// header is a child of the client's span, and one with a malformed header is a root of its own
// (not an error).
func TestAppendContinuesTheRequestsTrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tp.Shutdown(context.Background())
	h := newHarness(t, withStoreOptions(&estuite.Options{TracerProvider: tp}))
	body := map[string]any{"events": []any{map[string]any{"type": "A", "data": map[string]any{}}}}
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	if r := h.do("POST", "/streams/s-1", body, "traceparent", "00-"+traceID+"-"+parentID+"-01"); r.status != 201 {
		t.Fatalf("append: %d %s", r.status, r.body)
	}
	if r := h.do("POST", "/streams/s-1", body, "traceparent", "not a trace context"); r.status != 201 {
		t.Fatalf("append with a malformed traceparent: %d %s", r.status, r.body)
	}
	spans := exp.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2", len(spans))
	}
	if got := spans[0]; got.Name != "estuite.append" || got.SpanContext.TraceID().String() != traceID || got.Parent.SpanID().String() != parentID || !got.Parent.IsRemote() {
		t.Errorf("first append's span %s in trace %s under %s, want estuite.append in %s under the remote %s",
			got.Name, got.SpanContext.TraceID(), got.Parent.SpanID(), traceID, parentID)
	}
	if got := spans[1]; got.Parent.IsValid() || got.SpanContext.TraceID().String() == traceID {
		t.Errorf("second append's span has parent %v in trace %s: want a root of a new trace", got.Parent.SpanID(), got.SpanContext.TraceID())
	}
}
