package otelretry_test

import (
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/internal/faultserver"
	"github.com/hordekit/httpretry/internal/leaktest"
	"github.com/hordekit/httpretry/otelretry"
)

// otelhttp.NewTransport in front of the Transport makes the logical call's
// span, and otelretry one span per attempt beneath it: one span for the
// call, one per attempt, none twice. The server sees each attempt's span,
// and the retry is an event on the logical span.
func TestComposesWithOtelhttpOutside(t *testing.T) {
	leaktest.Check(t)
	w := newWorld(t)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(faultserver.Status(503), faultserver.OK())})
	inner := w.transport(t, &httpretry.Transport{})
	client := &http.Client{Transport: otelhttp.NewTransport(inner.Transport,
		otelhttp.WithTracerProvider(w.tp), otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelhttp.WithPropagators(propagation.TraceContext{}))}
	ctx, handler := w.caller("handler")
	if _, _, err := get(t, client, ctx, srv.URL+"/v2/status"); err != nil {
		t.Fatal(err)
	}
	handler.End()

	var logical []sdktrace.ReadOnlySpan
	for _, s := range w.spans.Ended() {
		if strings.Contains(s.InstrumentationScope().Name, "otelhttp") {
			logical = append(logical, s)
		}
	}
	attempts := w.attemptSpans()
	if n := len(w.spans.Ended()); n != 4 || len(logical) != 1 || len(attempts) != 2 {
		t.Fatalf("%d spans: %d from otelhttp, %d attempts; want 4: the handler's, one logical, two attempts",
			n, len(logical), len(attempts))
	}
	call := logical[0]
	if call.Parent().SpanID() != handler.SpanContext().SpanID() || call.SpanKind() != trace.SpanKindClient {
		t.Errorf("the logical span is not the handler's client child")
	}
	for i, a := range attempts {
		if a.Parent().SpanID() != call.SpanContext().SpanID() {
			t.Errorf("attempt %d is not a child of the logical span", i+1)
		}
		if a.StartTime().Before(call.StartTime()) || a.EndTime().After(call.EndTime()) {
			t.Errorf("attempt %d is not within the logical span's time", i+1)
		}
		want := a.SpanContext().SpanID().String()
		if tp := srv.Log()[i].Header.Get("Traceparent"); !strings.Contains(tp, want) {
			t.Errorf("request %d carried %q, want attempt %d's span %s", i+1, tp, i+1, want)
		}
	}
	if v, _ := attr(call.Attributes(), semconv.HTTPResponseStatusCodeKey); v.AsInt64() != 200 {
		t.Errorf("the logical span's status is %v, want the call's 200", v.Emit())
	}
	if v, _ := attr(call.Attributes(), otelretry.AttemptsKey); v.AsInt64() != 2 || len(events(call, otelretry.EventRetry)) != 1 {
		t.Errorf("the logical span has httpretry.attempts %v and events %v; want 2 and one retry", v.Emit(), call.Events())
	}
}
