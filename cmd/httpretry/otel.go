package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/internal/otelenv"
	"github.com/hordekit/httpretry/otelretry"
)

// getTelemetryFlush bounds the export of what is left at exit, so that a
// collector that is down delays the command by this much at most.
const getTelemetryFlush = 3 * time.Second

// getTelemetry exports `get`'s call as a span, its attempts as child spans
// and httpretry's metrics, when the OTEL_* environment asks for export
// (see package otelenv). It is nil when the environment does not: every
// method is then a no-op, and nothing of OpenTelemetry is even created.
type getTelemetry struct {
	sdk    *otelenv.SDK
	tel    *otelretry.Telemetry
	span   trace.Span // the call's, from startCall to endCall
	stderr io.Writer
}

// startGetTelemetry starts the SDK the environment asks for, if any.
// Warnings (a setting that is not honoured, a failed export) go to stderr.
func startGetTelemetry(ctx context.Context, stderr io.Writer) *getTelemetry {
	warn := func(msg string) { fmt.Fprintf(stderr, "httpretry: %s\n", msg) }
	sdk, err := otelenv.Start(ctx, otelenv.Config{Service: "httpretry", Warn: warn})
	if err != nil {
		warn("telemetry is off: " + err.Error())
		return nil
	}
	if sdk == nil {
		return nil
	}
	tel, err := otelretry.New(otelretry.Config{TracerProvider: sdk.TracerProvider(),
		MeterProvider: sdk.MeterProvider(), Propagator: sdk.Propagator})
	if err != nil {
		warn("telemetry is off: " + err.Error())
		sdk.Shutdown(ctx)
		return nil
	}
	return &getTelemetry{sdk: sdk, tel: tel, stderr: stderr}
}

// instrument installs the hooks on the transport.
func (g *getTelemetry) instrument(t *httpretry.Transport) {
	if g != nil {
		g.tel.Instrument(t)
	}
}

// startCall starts the call's span, a child of the trace a parent process
// passed in TRACEPARENT if any, and returns ctx carrying it. With -v the
// trace ID is logged, to find the trace.
func (g *getTelemetry) startCall(ctx context.Context, method string, u *url.URL, logger *slog.Logger) context.Context {
	if g == nil {
		return ctx
	}
	ctx, g.span = g.sdk.TracerProvider().Tracer("github.com/hordekit/httpretry/cmd/httpretry").Start(
		g.sdk.ContextFromEnv(ctx), "httpretry get", trace.WithAttributes(
			semconv.HTTPRequestMethodKey.String(method), semconv.URLFull(httpretry.RedactURL(u))))
	if sc := g.span.SpanContext(); sc.IsValid() {
		logger.Info("HTTP trace", "trace_id", sc.TraceID().String(), "span_id", sc.SpanID().String())
	}
	return ctx
}

// endCall ends the call's span with the final status, the body bytes
// written and the exit code; the span is an error when the code is not 0.
func (g *getTelemetry) endCall(status int, n int64, code int, err error) {
	if g == nil || g.span == nil {
		return
	}
	attrs := []attribute.KeyValue{semconv.ProcessExitCode(code), semconv.HTTPResponseBodySize(int(n))}
	if status > 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCode(status))
	}
	g.span.SetAttributes(attrs...)
	switch {
	case err != nil:
		g.span.SetStatus(codes.Error, getRedactError(err))
	case code != getExitOK:
		g.span.SetStatus(codes.Error, fmt.Sprintf("HTTP %d", status))
	}
	g.span.End()
	g.span = nil
}

// shutdown exports what is left, for getTelemetryFlush at most.
func (g *getTelemetry) shutdown() {
	if g == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), getTelemetryFlush)
	defer cancel()
	defer g.tel.Close() // after the last export, which reads the breaker states
	if err := g.sdk.Shutdown(ctx); err != nil {
		fmt.Fprintf(g.stderr, "httpretry: telemetry: the last export failed: %v\n", err)
	}
}
