// Package otelenv starts the OpenTelemetry SDK for the commands the way the
// standard OTEL_* environment variables ask: traces and metrics exported
// with OTLP over HTTP, and nothing at all, not even an SDK object, when no
// variable asks for export.
//
// Export of a signal is on when OTEL_{TRACES,METRICS}_EXPORTER lists otlp,
// or when it is unset and OTEL_EXPORTER_OTLP_ENDPOINT or the signal's own
// OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT is set. OTEL_SDK_DISABLED=true
// turns everything off. The exporters read the rest of the OTLP variables
// themselves (headers, timeout, compression, certificates), the SDK reads
// OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_* and OTEL_METRIC_EXPORT_INTERVAL, and
// the resource OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES. OTEL_PROPAGATORS
// accepts tracecontext, baggage and none. A value this package cannot honour
// (another exporter or protocol) is reported as a warning and that signal
// stays off, as the specification asks of invalid settings.
package otelenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/hordekit/httpretry/clock"
)

// Config says what to name the service and where to warn.
type Config struct {
	// Service is service.name unless OTEL_SERVICE_NAME or
	// OTEL_RESOURCE_ATTRIBUTES names it.
	Service string
	// Warn receives each warning: a setting that is not honoured, or an
	// export that failed (at most one of those per WarnEvery). nil
	// discards them.
	Warn func(msg string)
	// WarnEvery bounds the export failure warnings; 0 means 30 s.
	WarnEvery time.Duration
	// Clock times WarnEvery; nil means the system clock.
	Clock clock.Clock
}

// SDK is the OpenTelemetry SDK the environment asked for.
type SDK struct {
	// Traces and Metrics are nil when that signal is off.
	Traces  *sdktrace.TracerProvider
	Metrics *sdkmetric.MeterProvider
	// Propagator is OTEL_PROPAGATORS' choice; tracecontext and baggage by
	// default.
	Propagator propagation.TextMapPropagator
}

// Start returns the SDK the environment asks for, or nil when it asks for
// no export. It installs an error handler that passes the SDK's export
// failures to cfg.Warn. The caller must call Shutdown, which flushes what
// is left.
func Start(ctx context.Context, cfg Config) (*SDK, error) {
	warn := cfg.Warn
	if warn == nil {
		warn = func(string) {}
	}
	if strings.EqualFold(strings.TrimSpace(os.Getenv("OTEL_SDK_DISABLED")), "true") {
		return nil, nil
	}
	traces := wanted("TRACES", []string{"http/protobuf", "http/json"}, warn)
	metrics := wanted("METRICS", []string{"http/protobuf"}, warn)
	if !traces && !metrics {
		return nil, nil
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", cfg.Service)),
		resource.WithFromEnv(), resource.WithTelemetrySDK(), resource.WithHost())
	if err != nil {
		if res == nil {
			return nil, fmt.Errorf("otelenv: resource: %w", err)
		}
		warn("telemetry resource: " + err.Error()) // a partial resource is still of use
	}
	every := cfg.WarnEvery
	if every == 0 {
		every = 30 * time.Second
	}
	otel.SetErrorHandler(&limitedWarn{warn: warn, every: every, clk: clock.Or(cfg.Clock)})

	s := &SDK{Propagator: propagators(warn)}
	if traces {
		exp, err := otlptracehttp.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("otelenv: trace exporter: %w", err)
		}
		s.Traces = sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	}
	if metrics {
		exp, err := otlpmetrichttp.New(ctx)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("otelenv: metric exporter: %w", err), s.Shutdown(ctx))
		}
		s.Metrics = sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)),
			sdkmetric.WithResource(res))
	}
	return s, nil
}

// wanted reports whether the environment asks for OTLP export of signal
// (TRACES or METRICS) with a protocol among protocols.
func wanted(signal string, protocols []string, warn func(string)) bool {
	exporters := strings.TrimSpace(os.Getenv("OTEL_" + signal + "_EXPORTER"))
	if exporters == "" {
		if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_"+signal+"_ENDPOINT") == "" {
			return false
		}
		exporters = "otlp"
	}
	on := false
	for e := range strings.SplitSeq(exporters, ",") {
		switch e = strings.ToLower(strings.TrimSpace(e)); e {
		case "otlp":
			on = true
		case "none", "":
		default:
			warn(fmt.Sprintf("OTEL_%s_EXPORTER=%s: only otlp and none are supported here; ignored", signal, e))
		}
	}
	if !on {
		return false
	}
	name := "OTEL_EXPORTER_OTLP_" + signal + "_PROTOCOL"
	protocol := os.Getenv(name)
	if protocol == "" {
		name = "OTEL_EXPORTER_OTLP_PROTOCOL"
		protocol = os.Getenv(name)
	}
	if protocol != "" && !slices.Contains(protocols, protocol) {
		warn(fmt.Sprintf("%s=%s: %s are exported over %s only; %s are not exported",
			name, protocol, strings.ToLower(signal), strings.Join(protocols, " or "), strings.ToLower(signal)))
		return false
	}
	return true
}

// propagators reads OTEL_PROPAGATORS.
func propagators(warn func(string)) propagation.TextMapPropagator {
	v := os.Getenv("OTEL_PROPAGATORS")
	if v == "" {
		return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	var ps []propagation.TextMapPropagator
	for p := range strings.SplitSeq(v, ",") {
		switch p = strings.ToLower(strings.TrimSpace(p)); p {
		case "tracecontext":
			ps = append(ps, propagation.TraceContext{})
		case "baggage":
			ps = append(ps, propagation.Baggage{})
		case "none", "":
		default:
			warn(fmt.Sprintf("OTEL_PROPAGATORS: %s is not supported here (tracecontext, baggage, none); ignored", p))
		}
	}
	return propagation.NewCompositeTextMapPropagator(ps...)
}

// TracerProvider returns the SDK's, or a no-op one when traces are off.
func (s *SDK) TracerProvider() trace.TracerProvider {
	if s == nil || s.Traces == nil {
		return tracenoop.NewTracerProvider()
	}
	return s.Traces
}

// MeterProvider returns the SDK's, or a no-op one when metrics are off.
func (s *SDK) MeterProvider() metric.MeterProvider {
	if s == nil || s.Metrics == nil {
		return metricnoop.NewMeterProvider()
	}
	return s.Metrics
}

// ContextFromEnv returns ctx with the trace context a parent process passed
// in TRACEPARENT, TRACESTATE and BAGGAGE, the environment carriers of the
// specification, so that a command run from a traced job joins its trace.
func (s *SDK) ContextFromEnv(ctx context.Context) context.Context {
	if s == nil {
		return ctx
	}
	carrier := propagation.MapCarrier{}
	for _, k := range []string{"traceparent", "tracestate", "baggage"} {
		if v := os.Getenv(strings.ToUpper(k)); v != "" {
			carrier[k] = v
		}
	}
	return s.Propagator.Extract(ctx, carrier)
}

// Shutdown exports what is left and stops the SDK, within ctx's deadline.
func (s *SDK) Shutdown(ctx context.Context) error {
	if s == nil {
		return nil
	}
	var errs []error
	if s.Traces != nil {
		errs = append(errs, s.Traces.Shutdown(ctx))
	}
	if s.Metrics != nil {
		errs = append(errs, s.Metrics.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

// limitedWarn passes the SDK's errors on, at most one per interval, with
// the count of those held back: a collector that is down would otherwise
// fill the log.
type limitedWarn struct {
	warn  func(string)
	every time.Duration
	clk   clock.Clock

	mu     sync.Mutex
	last   time.Time
	held   int
	hadOne bool
}

// Handle implements otel.ErrorHandler.
func (l *limitedWarn) Handle(err error) {
	l.mu.Lock()
	now := l.clk.Now()
	if l.hadOne && now.Sub(l.last) < l.every {
		l.held++
		l.mu.Unlock()
		return
	}
	held := l.held
	l.last, l.held, l.hadOne = now, 0, true
	l.mu.Unlock()
	msg := "telemetry: " + err.Error()
	if held > 0 {
		msg += fmt.Sprintf(" (%d similar message(s) held back)", held)
	}
	l.warn(msg)
}
