package estuite_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table/mem"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// newRecordingProvider returns a provider that samples every span and hands it, ended, to the
// returned exporter.
func newRecordingProvider(t testing.TB) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, exp
}

func spansNamed(exp *tracetest.InMemoryExporter, name string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func attrOf(s tracetest.SpanStub, key string) (attribute.Value, bool) {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func traceparentOf(t *testing.T, md json.RawMessage) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(md, &m); err != nil {
		t.Fatalf("metadata %s: %v", md, err)
	}
	tp, _ := m["traceparent"].(string)
	return tp
}

func linksTo(s tracetest.SpanStub, sc trace.SpanContext) bool {
	for _, l := range s.Links {
		if l.SpanContext.TraceID() == sc.TraceID() && l.SpanContext.SpanID() == sc.SpanID() {
			return true
		}
	}
	return false
}

// TestTracingSpanTree checks the spans of one traced append and of the handlers that see its
// event in another process (another Store, with a tracer provider of its own, on the same
// backend): the append span is a child of the caller's, records its storage requests as span
// events and stores its trace context in the event's metadata; the dispatch step that wrote the
// event has a span, idle steps none; a subscription's and a group member's handler spans link to
// the append span.
func TestTracingSpanTree(t *testing.T) {
	b := mem.New(nil)
	wtp, wexp := newRecordingProvider(t)
	writer := openStore(t, b, &estuite.Options{TracerProvider: wtp})
	ctx, caller := wtp.Tracer("test").Start(context.Background(), "caller")
	appended := []estuite.EventData{
		{Type: "Placed", Data: []byte(`{}`), Metadata: json.RawMessage(` {"correlation": "c-1"}`)},
		{Type: "Paid", Data: []byte(`{}`)},
		{Type: "Shipped", Data: []byte(`{}`), Metadata: json.RawMessage(`{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}`)},
	}
	res, err := writer.Append(ctx, "order-1", appended, &estuite.AppendOptions{Expected: estuite.NoStream, CommitID: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	caller.End()

	appends := spansNamed(wexp, "estuite.append")
	if len(appends) != 1 {
		t.Fatalf("%d append spans, want 1", len(appends))
	}
	ap := appends[0]
	if ap.Parent.SpanID() != caller.SpanContext().SpanID() || ap.SpanContext.TraceID() != caller.SpanContext().TraceID() {
		t.Errorf("append span's parent is %v, want the caller's span %v", ap.Parent.SpanID(), caller.SpanContext().SpanID())
	}
	for key, want := range map[string]attribute.Value{
		"estuite.stream":           attribute.StringValue("order-1"),
		"estuite.events":           attribute.IntValue(3),
		"estuite.expected_version": attribute.StringValue("no stream"),
		"estuite.version":          attribute.Int64Value(3),
	} {
		if got, ok := attrOf(ap, key); !ok || got != want {
			t.Errorf("append span attribute %s = %v, want %v", key, got.Emit(), want.Emit())
		}
	}
	var batches int
	for _, ev := range ap.Events {
		if !strings.HasPrefix(ev.Name, "storage.") {
			t.Errorf("unexpected span event %q", ev.Name)
		}
		if ev.Name == "storage.batch" {
			batches++
		}
	}
	if batches != 1 || len(ap.Events) < 2 {
		t.Errorf("append span events %v: want its storage requests, one of them the batch", eventNames(ap))
	}

	// The event's metadata carries the append span's trace context, before the caller's members;
	// an event whose metadata had a traceparent keeps its own.
	_, events := readAll(t, writer, "order-1", nil)
	wantTP := fmt.Sprintf("00-%s-%s-01", ap.SpanContext.TraceID(), ap.SpanContext.SpanID())
	if got := string(events[0].Metadata); got != `{"traceparent":"`+wantTP+`","correlation": "c-1"}` {
		t.Errorf("event 1 metadata %s", got)
	}
	if got := traceparentOf(t, events[1].Metadata); got != wantTP {
		t.Errorf("event 2 traceparent %q, want %q", got, wantTP)
	}
	if got := traceparentOf(t, events[2].Metadata); got != "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" {
		t.Errorf("event 3's own traceparent was replaced: %q", got)
	}

	// A retry of the commit in another trace is still the same commit.
	ctx2, other := wtp.Tracer("test").Start(context.Background(), "retry")
	if appended[1].Metadata != nil || string(appended[0].Metadata) != ` {"correlation": "c-1"}` {
		t.Fatalf("the caller's events were changed: %+v", appended)
	}
	again, err := writer.Append(ctx2, "order-1", appended, &estuite.AppendOptions{Expected: estuite.NoStream, CommitID: "c1"})
	other.End()
	if err != nil || !again.Duplicate || again.LastVersion != res.LastVersion {
		t.Fatalf("retry in another trace: %+v, %v; want the original result as a duplicate", again, err)
	}

	// A failed append's span says so.
	wexp.Reset()
	if _, err := writer.Append(context.Background(), "order-1", []estuite.EventData{{Type: "Late"}}, &estuite.AppendOptions{Expected: estuite.NoStream}); err == nil {
		t.Fatal("append with a wrong expected version succeeded")
	}
	if failed := spansNamed(wexp, "estuite.append"); len(failed) != 1 || failed[0].Status.Code != codes.Error || failed[0].Parent.IsValid() {
		t.Errorf("failed append's spans %+v: want one root span with an error status", failed)
	}

	// Dispatch: the step that wrote the events has a span, with its requests; idle steps none.
	wexp.Reset()
	d := estuite.NewDispatcher(writer, nil)
	steps := 0
	for {
		st, err := d.Step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		steps++
		if st.Streams == 0 {
			break
		}
	}
	for range 3 {
		if _, err := d.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	dispatched := spansNamed(wexp, "estuite.dispatch.step")
	if len(dispatched) == 0 || len(dispatched) >= steps+3 {
		t.Fatalf("%d dispatch step spans for %d steps, 3 of them idle", len(dispatched), steps+3)
	}
	if ev, _ := attrOf(dispatched[0], "estuite.events"); ev.AsInt64() != 3 || len(dispatched[0].Events) == 0 {
		t.Errorf("first dispatch span: events attribute %v, %d span events", ev.Emit(), len(dispatched[0].Events))
	}

	// Another process: its handler spans link to the append span.
	rtp, rexp := newRecordingProvider(t)
	reader := openStore(t, b, &estuite.Options{TracerProvider: rtp})
	got := newCollector()
	// Subscribed under a span of the reader's own: the handler spans are roots all the same.
	subCtx, starter := rtp.Tracer("test").Start(context.Background(), "subscribe")
	sub, err := reader.Subscribe(subCtx, estuite.SubscriptionOptions{Name: "traced", Handler: got.handle})
	starter.End()
	if err != nil {
		t.Fatal(err)
	}
	got.waitFor(t, 3)
	sub.Stop()
	var mu sync.Mutex
	handled := 0
	m := join(t, reader, fastGroup("traced", "m", func(context.Context, estuite.FeedEvent) error {
		mu.Lock()
		handled++
		mu.Unlock()
		return nil
	}))
	groupWait(t, "the group handled the events", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return handled >= 3
	})
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"estuite.subscription.handle", "estuite.group.handle"} {
		spans := spansNamed(rexp, name)
		if len(spans) < 3 {
			t.Fatalf("%d %s spans, want 3", len(spans), name)
		}
		linked := 0
		for _, s := range spans {
			if linksTo(s, ap.SpanContext) {
				linked++
			}
			if s.SpanKind != trace.SpanKindConsumer || s.Parent.IsValid() {
				t.Errorf("%s span kind %v, parent %v: want a consumer span without a parent", name, s.SpanKind, s.Parent.SpanID())
			}
		}
		// Events 1 and 2 link to the append span; event 3 to the traceparent its caller wrote.
		if linked != 2 {
			t.Errorf("%d of the %s spans link to the append span, want 2", linked, name)
		}
	}
}

func eventNames(s tracetest.SpanStub) []string {
	var out []string
	for _, e := range s.Events {
		out = append(out, e.Name)
	}
	return out
}

// TestTracingOffWritesNoTraceContext: without a TracerProvider, a span in the caller's context
// (of the application's own provider) leaves the metadata alone and gets no events from Estuite.
func TestTracingOffWritesNoTraceContext(t *testing.T) {
	s := openStore(t, mem.New(nil), nil)
	tp, exp := newRecordingProvider(t)
	ctx, span := tp.Tracer("app").Start(context.Background(), "app")
	mustAppendCtx(t, ctx, s, "s-1", []estuite.EventData{{Type: "A", Metadata: json.RawMessage(`{"a":1}`)}})
	span.End()
	_, events := readAll(t, s, "s-1", nil)
	if string(events[0].Metadata) != `{"a":1}` {
		t.Errorf("metadata %s", events[0].Metadata)
	}
	if spans := exp.GetSpans(); len(spans) != 1 || len(spans[0].Events) != 0 {
		t.Errorf("spans %v", spans)
	}
}

func mustAppendCtx(t *testing.T, ctx context.Context, s *estuite.Store, stream string, events []estuite.EventData) {
	t.Helper()
	if _, err := s.Append(ctx, stream, events, nil); err != nil {
		t.Fatal(err)
	}
}

// TestTracingTraceContextCountsInLimits: metadata at the limit still appends with tracing on
// (the trace context is dropped, and the span says so), and metadata that fits only with
// the trace context's room is measured with it.
func TestTracingTraceContextCountsInLimits(t *testing.T) {
	tp, exp := newRecordingProvider(t)
	s := openStore(t, mem.New(nil), &estuite.Options{TracerProvider: tp})
	full := `{"pad":"` + strings.Repeat("x", estuite.MaxMetadataLength-len(`{"pad":""}`)) + `"}`
	mustAppendCtx(t, context.Background(), s, "big", []estuite.EventData{{Type: "A", Metadata: json.RawMessage(full)}})
	_, events := readAll(t, s, "big", nil)
	if string(events[0].Metadata) != full {
		t.Errorf("metadata at the limit changed (%d bytes)", len(events[0].Metadata))
	}
	spans := spansNamed(exp, "estuite.append")
	if len(spans) != 1 || len(spans[0].Events) == 0 || spans[0].Events[0].Name != "estuite.traceparent_dropped" {
		t.Errorf("append span %+v: want the dropped trace context as its first event", spans)
	}
	if _, err := s.Append(context.Background(), "big", []estuite.EventData{{Type: "A", Metadata: json.RawMessage(full + " ")}}, nil); err == nil {
		t.Error("metadata over the limit appended")
	}
}

// TestTracingSubscriptionHandlerErrorSpan: a failed handler call's span carries the error.
func TestTracingSubscriptionHandlerErrorSpan(t *testing.T) {
	tp, exp := newRecordingProvider(t)
	s := openStore(t, mem.New(nil), &estuite.Options{TracerProvider: tp})
	mustAppend(t, s, "s", []estuite.EventData{jsonEvent("A", `{}`)}, nil)
	stepUntilIdle(t, estuite.NewDispatcher(s, nil))
	done := make(chan struct{})
	calls := 0
	sub, err := s.Subscribe(context.Background(), estuite.SubscriptionOptions{RetryBackoff: time.Millisecond, Handler: func(context.Context, estuite.FeedEvent) error {
		calls++
		if calls == 1 {
			return fmt.Errorf("first call fails")
		}
		close(done)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	<-done
	sub.Stop()
	spans := spansNamed(exp, "estuite.subscription.handle")
	if len(spans) != 2 || spans[0].Status.Code != codes.Error || spans[1].Status.Code == codes.Error {
		t.Fatalf("handler spans %+v: want a failed call, then a good one", spans)
	}
	if a, _ := attrOf(spans[1], "estuite.attempt"); a.AsInt64() != 2 {
		t.Errorf("second call's attempt %v", a.Emit())
	}
}

// TestTracingTraceContextSkipsSealedEventsAndKeepsTracestate: an event naming a subject gets no
// trace context (its metadata is sealed), and a span context's tracestate is stored beside the
// traceparent.
func TestTracingTraceContextSkipsSealedEventsAndKeepsTracestate(t *testing.T) {
	tp, _ := newRecordingProvider(t)
	s := openStore(t, mem.New(nil), &estuite.Options{TracerProvider: tp})
	ts, err := trace.ParseTraceState("vendor=abc")
	if err != nil {
		t.Fatal(err)
	}
	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2},
		TraceFlags: trace.FlagsSampled, TraceState: ts, Remote: true})
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), parent)
	mustAppendCtx(t, ctx, s, "user-1", []estuite.EventData{
		{Type: "Registered", Subject: "user-1", Metadata: json.RawMessage(`{"a":1}`)},
		{Type: "Noted", Metadata: json.RawMessage(`{}`)},
	})
	_, events := readAll(t, s, "user-1", nil)
	if string(events[0].Metadata) != `{"a":1}` {
		t.Errorf("sealed event's metadata %s", events[0].Metadata)
	}
	var md struct{ Traceparent, Tracestate string }
	if err := json.Unmarshal(events[1].Metadata, &md); err != nil || !strings.HasPrefix(md.Traceparent, "00-01000000000000000000000000000000-") || md.Tracestate != "vendor=abc" {
		t.Errorf("plain event's metadata %s", events[1].Metadata)
	}
	if !strings.HasSuffix(string(events[1].Metadata), `"vendor=abc"}`) {
		t.Errorf("empty object's metadata %s: want only the trace context", events[1].Metadata)
	}
}
