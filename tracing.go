package estuite

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Tracing (docs/operations.md, "Tracing"). A Store without Options.TracerProvider has a nil
// *tracing and makes no OpenTelemetry call at all: every hook starts with a nil check, so that
// tracing off costs one comparison and no allocation.

// tracerName is the instrumentation scope of Estuite's spans.
const tracerName = "github.com/estuite/estuite"

// Span names.
const (
	spanAppend       = "estuite.append"
	spanDispatchStep = "estuite.dispatch.step"
	spanSubscription = "estuite.subscription.handle"
	spanGroup        = "estuite.group.handle"
)

// Metadata keys of the W3C trace context an append stores in its events' metadata.
const (
	metaTraceparent = "traceparent"
	metaTracestate  = "tracestate"
)

// tracing is a store's tracer: nil when tracing is off.
type tracing struct {
	tracer trace.Tracer
}

func newTracing(tp trace.TracerProvider) *tracing {
	if tp == nil {
		return nil
	}
	return &tracing{tracer: tp.Tracer(tracerName)}
}

// recorderKey keys the *traceRecorder of a context: the operation (an append, a dispatch step)
// whose storage requests are to be recorded as span events.
type recorderKey struct{}

// traceRecorder takes the storage requests of one traced operation: straight onto span, or,
// when span is nil, into a buffer, for a dispatch step whose span is made only once the step is
// known to have done work.
type traceRecorder struct {
	span trace.Span
	mu   sync.Mutex
	buf  []storageEvent
}

// storageEvent is one storage request, as a span event.
type storageEvent struct {
	name  string
	at    time.Time
	attrs []attribute.KeyValue
}

func (r *traceRecorder) add(ev storageEvent) {
	if r.span != nil {
		r.span.AddEvent(ev.name, trace.WithTimestamp(ev.at), trace.WithAttributes(ev.attrs...))
		return
	}
	r.mu.Lock()
	r.buf = append(r.buf, ev)
	r.mu.Unlock()
}

// flush adds the buffered requests to span.
func (r *traceRecorder) flush(span trace.Span) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range r.buf {
		span.AddEvent(ev.name, trace.WithTimestamp(ev.at), trace.WithAttributes(ev.attrs...))
	}
	r.buf = nil
}

// request records one storage request made under ctx, if ctx belongs to a traced operation:
// kind is its RequestCounts kind ("get", "query", "batch", …), started when it was sent, err what
// it returned. Requests outside a traced operation (reads, checkpoints) are not recorded.
func (t *tracing) request(ctx context.Context, kind, tableName, pk string, ops int, started time.Time, err error) {
	r, ok := ctx.Value(recorderKey{}).(*traceRecorder)
	if !ok {
		return
	}
	attrs := []attribute.KeyValue{
		attribute.String("estuite.table", tableName),
		attribute.String("estuite.partition", pk),
		attribute.Int64("estuite.duration_us", time.Since(started).Microseconds()),
	}
	if ops > 0 {
		attrs = append(attrs, attribute.Int("estuite.operations", ops))
	}
	if err != nil {
		attrs = append(attrs, attribute.String("error", err.Error()))
	}
	r.add(storageEvent{name: "storage." + kind, at: time.Now(), attrs: attrs})
}

// endSpan ends span with err's status.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// tracedAppend is Append with its span: it stores the span's trace context in the events'
// metadata (withTraceContext) and records the append's storage requests as span events.
func (s *Store) tracedAppend(ctx context.Context, stream string, events []EventData, o AppendOptions) (res AppendResult, err error) {
	ctx, span := s.tr.tracer.Start(ctx, spanAppend, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		attribute.String("estuite.stream", stream),
		attribute.Int("estuite.events", len(events)),
		attribute.String("estuite.expected_version", o.Expected.String()),
	))
	defer func() {
		if err == nil {
			span.SetAttributes(
				attribute.Int64("estuite.first_version", res.FirstVersion),
				attribute.Int64("estuite.version", res.LastVersion),
				attribute.String("estuite.commit_id", res.CommitID),
				attribute.Bool("estuite.duplicate", res.Duplicate),
			)
		}
		endSpan(span, err)
	}()
	ctx = context.WithValue(ctx, recorderKey{}, &traceRecorder{span: span})
	stored, injected := withTraceContext(span.SpanContext(), events)
	res, err = s.appendEvents(ctx, stream, stored, events, o)
	var tooLarge *TooLargeError
	if injected && errors.As(err, &tooLarge) {
		// The trace context may be what made the append too large (TooLargeError comes only from
		// validation, before any request): it goes without, and fails as before if still too large.
		span.AddEvent("estuite.traceparent_dropped", trace.WithAttributes(attribute.String("reason", err.Error())))
		res, err = s.appendEvents(ctx, stream, events, events, o)
	}
	return res, err
}

// withTraceContext returns events with sc's W3C trace context in the metadata of each event that
// can take it, and true; or events itself and false when none can (or sc is not valid). An event
// can take it when its metadata is empty or a JSON object without a "traceparent" key, and it
// names no subject (its metadata would be sealed, and the commit's hash covers it). events is
// not modified.
func withTraceContext(sc trace.SpanContext, events []EventData) ([]EventData, bool) {
	if !sc.IsValid() {
		return events, false
	}
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), sc), carrier)
	var out []EventData
	for i := range events {
		if events[i].Subject != "" {
			continue
		}
		md, ok := injectTraceContext(events[i].Metadata, carrier[metaTraceparent], carrier[metaTracestate])
		if !ok {
			continue
		}
		if out == nil {
			out = append([]EventData(nil), events...)
		}
		out[i].Metadata = md
	}
	if out == nil {
		return events, false
	}
	return out, true
}

// injectTraceContext returns md with "traceparent" (and "tracestate", when set and md has none)
// as its first members, and true; or false when md is not a JSON object or already has a
// traceparent. The caller's members keep their text and order.
func injectTraceContext(md json.RawMessage, traceparent, tracestate string) (json.RawMessage, bool) {
	rest := []byte("}")
	if len(md) > 0 {
		var members map[string]json.RawMessage
		trimmed := bytes.TrimLeft(md, " \t\r\n")
		if len(trimmed) == 0 || trimmed[0] != '{' || json.Unmarshal(md, &members) != nil {
			return nil, false
		}
		if _, ok := members[metaTraceparent]; ok {
			return nil, false
		}
		if _, ok := members[metaTracestate]; ok {
			tracestate = ""
		}
		rest = trimmed[1:]
		if r := bytes.TrimLeft(rest, " \t\r\n"); len(r) == 0 || r[0] != '}' {
			rest = append([]byte(","), rest...)
		}
	}
	out := make([]byte, 0, len(md)+100+len(tracestate))
	out = append(out, `{"traceparent":`...)
	out, _ = appendJSONString(out, traceparent)
	if tracestate != "" {
		out = append(out, `,"tracestate":`...)
		out, _ = appendJSONString(out, tracestate)
	}
	return append(out, rest...), true
}

func appendJSONString(b []byte, s string) ([]byte, error) {
	q, err := json.Marshal(s)
	return append(b, q...), err
}

// eventLink returns a link to the span that appended ev, from the trace context in its metadata
// (withTraceContext), and true; false when its metadata carries none.
func eventLink(ev *RecordedEvent) (trace.Link, bool) {
	if len(ev.Metadata) == 0 || !bytes.Contains(ev.Metadata, []byte(metaTraceparent)) {
		return trace.Link{}, false
	}
	var tc struct {
		Traceparent string `json:"traceparent"`
		Tracestate  string `json:"tracestate"`
	}
	if json.Unmarshal(ev.Metadata, &tc) != nil || tc.Traceparent == "" {
		return trace.Link{}, false
	}
	carrier := propagation.MapCarrier{metaTraceparent: tc.Traceparent}
	if tc.Tracestate != "" {
		carrier[metaTracestate] = tc.Tracestate
	}
	sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), carrier))
	if !sc.IsValid() {
		return trace.Link{}, false
	}
	return trace.Link{SpanContext: sc}, true
}

// handlerSpan starts the span of one handler call on ev, linked to the span that appended it. It
// is a root: a subscription or group member runs long after (and apart from) the call that
// started it, whose span its context may still carry.
func (t *tracing) handlerSpan(ctx context.Context, name string, ev *FeedEvent, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	opts := []trace.SpanStartOption{
		trace.WithNewRoot(),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("estuite.stream", ev.Stream),
			attribute.Int64("estuite.version", ev.Version),
			attribute.Int("estuite.shard", ev.Shard),
			attribute.Int64("estuite.position", ev.Position),
			attribute.String("estuite.event_type", ev.Type),
		),
		trace.WithAttributes(attrs...),
	}
	if l, ok := eventLink(&ev.RecordedEvent); ok {
		opts = append(opts, trace.WithLinks(l))
	}
	return t.tracer.Start(ctx, name, opts...)
}

// untraced returns ctx without the span it may carry, for a background loop started under it: the
// loop's spans are roots of their own.
func (t *tracing) untraced(ctx context.Context) context.Context {
	if t == nil || !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	return trace.ContextWithSpanContext(ctx, trace.SpanContext{})
}

// step runs one dispatch step, in a span when tracing is on and the step did work (wrote events,
// fenced heads, resolved markers, or failed other than by its context's end): a child of ctx's span, if any (Step; the run loop's
// steps are roots, see Start). An idle poll makes no span, since a dispatcher polls every shard
// at least every MaxPollInterval for ever and such spans would bury the ones that matter. The
// step's storage requests are buffered until its outcome is known, then recorded as its span's
// events.
func (d *Dispatcher) step(ctx context.Context, shards []int) (DispatchStats, error) {
	t := d.s.tr
	if t == nil {
		return d.stepOnce(ctx, shards)
	}
	started := time.Now()
	rec := &traceRecorder{}
	st, err := d.stepOnce(context.WithValue(ctx, recorderKey{}, rec), shards)
	if st.Events == 0 && st.Fenced == 0 && st.Resolved == 0 && (err == nil || ctx.Err() != nil) {
		return st, err // idle, or cut short by the dispatcher's stop
	}
	_, span := t.tracer.Start(ctx, spanDispatchStep, trace.WithTimestamp(started), trace.WithAttributes(
		attribute.Int("estuite.shard", st.Shard),
		attribute.Int("estuite.streams", st.Streams),
		attribute.Int("estuite.events", st.Events),
		attribute.Int("estuite.batches", st.Batches),
		attribute.Int("estuite.fenced", st.Fenced),
		attribute.Int("estuite.resolved", st.Resolved),
		attribute.Int64("estuite.feed_head", st.FeedHead),
		attribute.Bool("estuite.incomplete", st.Incomplete),
		attribute.Int64("estuite.max_lag_ms", st.MaxLag.Milliseconds()),
	))
	rec.flush(span)
	endSpan(span, err)
	return st, err
}

// callHandler calls a subscription's handler on ev, in a span when tracing is on.
func (sub *Subscription) callHandler(ctx context.Context, ev FeedEvent, attempt int) error {
	t := sub.s.tr
	if t == nil {
		return sub.o.Handler(ctx, ev)
	}
	ctx, span := t.handlerSpan(ctx, spanSubscription, &ev,
		attribute.String("estuite.subscription", sub.o.Name), attribute.Int("estuite.attempt", attempt))
	err := sub.o.Handler(ctx, ev)
	endSpan(span, err)
	return err
}

// callHandler calls a group member's handler on ev, held in slot, in a span when tracing is on;
// replay is true for a parked event's replay.
func (m *GroupMember) callHandler(ctx context.Context, slot GroupSlot, ev FeedEvent, replay bool) error {
	t := m.s.tr
	if t == nil {
		return m.o.Handler(ctx, ev)
	}
	ctx, span := t.handlerSpan(ctx, spanGroup, &ev,
		attribute.String("estuite.group", m.o.Group), attribute.String("estuite.member", m.o.Member),
		attribute.String("estuite.slot", slot.String()), attribute.Bool("estuite.replay", replay))
	err := m.o.Handler(ctx, ev)
	endSpan(span, err)
	return err
}
