package main

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// tracingSetting describes how `estuite serve` traces, from the standard OpenTelemetry
// environment variables: OTLP over HTTP (http/protobuf) to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
// OTEL_EXPORTER_OTLP_ENDPOINT, unless OTEL_TRACES_EXPORTER is "none". Without an endpoint,
// tracing is off. It returns the endpoint ("" for off).
func tracingSetting() (string, error) {
	switch exporter := strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER")); exporter {
	case "", "otlp":
	case "none":
		return "", nil
	default:
		return "", usagef("OTEL_TRACES_EXPORTER=%q: estuite serve exports traces with otlp (or none)", exporter)
	}
	endpoint := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if endpoint == "" {
		endpoint = os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	if endpoint == "" {
		return "", nil
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := os.Getenv(name); p != "" {
			if p != "http/protobuf" {
				return "", usagef("%s=%q: estuite serve exports OTLP over HTTP only (http/protobuf, usually port 4318)", name, p)
			}
			break
		}
	}
	return endpoint, nil
}

// newTracerProvider returns the tracer provider of `estuite serve`, exporting OTLP over HTTP in
// batches, or nil when tracing is off (tracingSetting). The exporter takes its endpoint, headers,
// timeout and TLS settings from the OTEL_EXPORTER_OTLP_* variables, the provider its sampler
// (OTEL_TRACES_SAMPLER, default parent-based always-on) and batching (OTEL_BSP_*) from theirs;
// the resource is service.name "estuite" unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES
// say otherwise. Shut it down to flush the spans not yet sent.
func newTracerProvider(ctx context.Context) (*sdktrace.TracerProvider, string, error) {
	endpoint, err := tracingSetting()
	if err != nil || endpoint == "" {
		return nil, "", err
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("tracing: the OTLP exporter: %w", err)
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", "estuite")}
	if info, ok := debug.ReadBuildInfo(); ok {
		attrs = append(attrs, attribute.String("service.version", info.Main.Version))
	}
	// Later options win: the environment's service name and attributes over the defaults here.
	res, err := resource.New(ctx, resource.WithAttributes(attrs...), resource.WithTelemetrySDK(), resource.WithFromEnv())
	if err != nil {
		return nil, "", fmt.Errorf("tracing: OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), endpoint, nil
}
