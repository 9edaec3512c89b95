package otelenv

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/hordekit/httpretry/clock"
	"github.com/hordekit/httpretry/internal/leaktest"
	"github.com/hordekit/httpretry/internal/otlptest"
)

// otelVars are the variables a test may set; each test starts with all of
// them empty, whatever the environment of the test run holds.
var otelVars = []string{
	"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER",
	"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
	"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
	"OTEL_PROPAGATORS", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "TRACEPARENT", "TRACESTATE", "BAGGAGE",
}

func clearEnv(t *testing.T) {
	for _, v := range otelVars {
		t.Setenv(v, "")
	}
}

func TestWhatTheEnvironmentAsksFor(t *testing.T) {
	leaktest.Check(t)
	recv := otlptest.Start(t)
	for _, c := range []struct {
		name            string
		env             map[string]string
		traces, metrics bool
		warnings        []string
	}{
		{name: "nothing set: nothing at all"},
		{name: "an endpoint: both", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": recv.URL}, traces: true, metrics: true},
		{name: "a traces endpoint only", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": recv.URL + "/v1/traces"}, traces: true},
		{name: "exporter otlp, default endpoint", env: map[string]string{"OTEL_METRICS_EXPORTER": "otlp"}, metrics: true},
		{name: "disabled", env: map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": recv.URL}},
		{name: "traces none", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": recv.URL, "OTEL_TRACES_EXPORTER": "none"}, metrics: true},
		{name: "an exporter not bundled",
			env:    map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": recv.URL, "OTEL_METRICS_EXPORTER": "prometheus"},
			traces: true, warnings: []string{"OTEL_METRICS_EXPORTER=prometheus: only otlp and none are supported here; ignored"}},
		{name: "grpc",
			env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": recv.URL, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
			warnings: []string{
				"OTEL_EXPORTER_OTLP_PROTOCOL=grpc: traces are exported over http/protobuf or http/json only; traces are not exported",
				"OTEL_EXPORTER_OTLP_PROTOCOL=grpc: metrics are exported over http/protobuf only; metrics are not exported"}},
		{name: "json metrics",
			env:    map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": recv.URL, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/json"},
			traces: true, warnings: []string{"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL=http/json: metrics are exported over http/protobuf only; metrics are not exported"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			var warnings []string
			sdk, err := Start(t.Context(), Config{Service: "test", Warn: func(m string) { warnings = append(warnings, m) }})
			if err != nil {
				t.Fatal(err)
			}
			defer sdk.Shutdown(context.Background())
			if (sdk != nil) != (c.traces || c.metrics) {
				t.Fatalf("Start = %v; want an SDK: %v", sdk, c.traces || c.metrics)
			}
			if sdk != nil && ((sdk.Traces != nil) != c.traces || (sdk.Metrics != nil) != c.metrics) {
				t.Errorf("traces %v metrics %v; want %v %v", sdk.Traces != nil, sdk.Metrics != nil, c.traces, c.metrics)
			}
			if !slices.Equal(warnings, c.warnings) {
				t.Errorf("warnings\n got %q\nwant %q", warnings, c.warnings)
			}
		})
	}
}

// TRACEPARENT makes the command's span a child of the parent process's;
// OTEL_PROPAGATORS=none ignores it, and an unknown propagator is a warning.
func TestContextFromEnv(t *testing.T) {
	leaktest.Check(t)
	recv := otlptest.Start(t)
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, c := range []struct {
		propagators string
		joined      bool
		warning     string
	}{
		{"", true, ""},
		{"tracecontext", true, ""},
		{"none", false, ""},
		{"b3,tracecontext", true, "OTEL_PROPAGATORS: b3 is not supported here (tracecontext, baggage, none); ignored"},
	} {
		t.Run(c.propagators, func(t *testing.T) {
			clearEnv(t)
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", recv.URL)
			t.Setenv("OTEL_PROPAGATORS", c.propagators)
			t.Setenv("TRACEPARENT", parent)
			var warning string
			sdk, err := Start(t.Context(), Config{Warn: func(m string) { warning = m }})
			if err != nil {
				t.Fatal(err)
			}
			defer sdk.Shutdown(context.Background())
			sc := trace.SpanContextFromContext(sdk.ContextFromEnv(context.Background()))
			joined := sc.TraceID().String() == "4bf92f3577b34da6a3ce929d0e0e4736" && sc.SpanID().String() == "00f067aa0ba902b7" && sc.IsRemote()
			if joined != c.joined || warning != c.warning {
				t.Errorf("joined %v, warning %q; want %v, %q", joined, warning, c.joined, c.warning)
			}
		})
	}
}

// What Start set up exports to the endpoint: a span and a counter arrive,
// under the service's name unless OTEL_SERVICE_NAME says otherwise.
func TestExports(t *testing.T) {
	leaktest.Check(t)
	clearEnv(t)
	recv := otlptest.Start(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", recv.URL)
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
	sdk, err := Start(t.Context(), Config{Service: "svc"})
	if err != nil || sdk == nil {
		t.Fatal(sdk, err)
	}
	_, span := sdk.TracerProvider().Tracer("t").Start(context.Background(), "work")
	span.End()
	counter, _ := sdk.MeterProvider().Meter("t").Int64Counter("things")
	counter.Add(context.Background(), 3)
	if err := sdk.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	spans := recv.Spans()
	if len(spans) != 1 || spans[0].GetName() != "work" {
		t.Fatalf("spans %v", spans)
	}
	for key, want := range map[string]string{"service.name": "svc", "deployment.environment.name": "test", "telemetry.sdk.language": "go"} {
		if got, _ := otlptest.Attr(spans[0].Resource, key); got != want {
			t.Errorf("resource %s = %q, want %q", key, got, want)
		}
	}
	m, ok := recv.Last("things")
	if v, _ := otlptest.Sum(m, nil); !ok || v != 3 {
		t.Errorf("counter things = %v (%v), want 3", v, ok)
	}
}

// Export failures reach Warn at most once per interval, with the count of
// those held back.
func TestExportWarningsAreLimited(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	var got []string
	l := &limitedWarn{warn: func(m string) { got = append(got, m) }, every: 30 * time.Second, clk: clk}
	for i := range 3 {
		l.Handle(fmt.Errorf("export failed %d", i))
		clk.Advance(time.Second)
	}
	clk.Advance(30 * time.Second)
	l.Handle(errors.New("export failed 3"))
	want := []string{"telemetry: export failed 0", "telemetry: export failed 3 (2 similar message(s) held back)"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("warnings\n got %q\nwant %q", got, want)
	}
}
