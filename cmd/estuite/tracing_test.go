package main

import (
	"bytes"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// fakeCollector stands in for an OpenTelemetry collector's OTLP/HTTP receiver.
type fakeCollector struct {
	mu    sync.Mutex
	paths []string
	spans []*tracepb.Span
	bad   []string
}

func (c *fakeCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req collectortrace.ExportTraceServiceRequest
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paths = append(c.paths, r.Method+" "+r.URL.Path)
	if err := proto.Unmarshal(body, &req); err != nil || r.Header.Get("Content-Type") != "application/x-protobuf" {
		c.bad = append(c.bad, r.Header.Get("Content-Type"))
	}
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			c.spans = append(c.spans, ss.Spans...)
		}
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

// TestServeExportsTracesOverOTLP runs `estuite serve` with OTEL_EXPORTER_OTLP_ENDPOINT pointing
// at a stand-in collector: an append sent with a traceparent header makes an estuite.append span
// in the client's trace, under the client's span, and the server posts it to /v1/traces by the
// time it has stopped (its provider is flushed on shutdown).
func TestServeExportsTracesOverOTLP(t *testing.T) {
	col := &fakeCollector{}
	hs := httptest.NewServer(col)
	defer hs.Close()
	t.Setenv("ESTUITE_TOKEN", "")
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", hs.URL)
	p := serveInProcess(t, nil, "--data", t.TempDir())
	traceID, parentID := "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	body := `{"expectedVersion":"no_stream","events":[{"type":"Placed","data":{},"metadata":{"by":"test"}}]}`
	req, _ := http.NewRequest("POST", p.url("/streams/order-1"), strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-"+traceID+"-"+parentID+"-01")
	res, err := p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 201 {
		t.Fatalf("append: %d", res.StatusCode)
	}
	// The event read back carries the append span's trace context.
	got, err := p.client.Get(p.url("/streams/order-1/events"))
	if err != nil {
		t.Fatal(err)
	}
	events, _ := io.ReadAll(got.Body)
	got.Body.Close()
	if !bytes.Contains(events, []byte(`"traceparent":"00-`+traceID+"-")) || !bytes.Contains(events, []byte(`"by":"test"`)) {
		t.Errorf("events read back: %s", events)
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("serve exited with %d:\n%s", code, p.logs.String())
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.paths) == 0 || col.paths[0] != "POST /v1/traces" || len(col.bad) > 0 {
		t.Fatalf("collector got %v (bad: %v)", col.paths, col.bad)
	}
	found := false
	for _, s := range col.spans {
		if s.Name != "estuite.append" {
			continue
		}
		found = true
		if hex.EncodeToString(s.TraceId) != traceID || hex.EncodeToString(s.ParentSpanId) != parentID {
			t.Errorf("append span in trace %x under %x, want %s under %s", s.TraceId, s.ParentSpanId, traceID, parentID)
		}
	}
	if !found {
		var names []string
		for _, s := range col.spans {
			names = append(names, s.Name)
		}
		t.Errorf("no estuite.append span among %v", names)
	}
}

// TestServeTracingSettings: OTEL_TRACES_EXPORTER=none turns tracing off however the endpoint is
// set; an exporter or a protocol serve does not speak is a usage error.
func TestServeTracingSettings(t *testing.T) {
	for _, c := range []struct {
		env      map[string]string
		endpoint string
		problem  string
	}{
		{env: map[string]string{}},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, endpoint: "http://127.0.0.1:4318"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4318/v1/traces"}, endpoint: "http://b:4318/v1/traces"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"}},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "zipkin"}, problem: "otlp"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, problem: "http/protobuf"},
	} {
		for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
			"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"} {
			t.Setenv(k, c.env[k])
		}
		endpoint, err := tracingSetting()
		switch {
		case c.problem == "" && (err != nil || endpoint != c.endpoint):
			t.Errorf("%v: %q, %v; want %q", c.env, endpoint, err, c.endpoint)
		case c.problem != "" && (err == nil || !strings.Contains(err.Error(), c.problem)):
			t.Errorf("%v: %q, %v; want an error about %q", c.env, endpoint, err, c.problem)
		}
	}
}
