package main

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/internal/otelenv"
	"github.com/hordekit/httpretry/otelretry"
)

// telemetryFlush bounds the export of what is left at shutdown.
const telemetryFlush = 5 * time.Second

// proxyTelemetry exports the service's traces and httpretry's metrics when
// the OTEL_* environment asks for export (see package otelenv). It is nil
// when the environment does not: every method then hands back what it was
// given, and nothing of OpenTelemetry is even created.
//
// A request to a data endpoint is a server span; the AI Horde API calls it
// leads to are client spans beneath it, one per attempt, and the waits
// between them, the give-ups and the breaker's refusals are events on the
// server span. The heartbeat and /metrics, polled all day, are not traced.
type proxyTelemetry struct {
	sdk    *otelenv.SDK
	tel    *otelretry.Telemetry
	logger *slog.Logger
}

// untraced are the paths whose requests make no span.
var untraced = map[string]bool{"/metrics": true, "/api/heartbeat": true}

// startTelemetry starts the SDK the environment asks for, if any. Warnings
// go to logger.
func startTelemetry(ctx context.Context, logger *slog.Logger) *proxyTelemetry {
	warn := func(msg string) { logger.Warn(msg) }
	sdk, err := otelenv.Start(ctx, otelenv.Config{Service: "hordeproxy", Warn: warn})
	if err != nil {
		logger.Warn("telemetry is off", "error", err)
		return nil
	}
	if sdk == nil {
		return nil
	}
	tel, err := otelretry.New(otelretry.Config{TracerProvider: sdk.TracerProvider(),
		MeterProvider: sdk.MeterProvider(), Propagator: sdk.Propagator})
	if err != nil {
		logger.Warn("telemetry is off", "error", err)
		sdk.Shutdown(ctx)
		return nil
	}
	logger.Info("hordeproxy telemetry on", "traces", sdk.Traces != nil, "metrics", sdk.Metrics != nil)
	return &proxyTelemetry{sdk: sdk, tel: tel, logger: logger}
}

// observer returns an Observer that feeds the telemetry, then next.
func (p *proxyTelemetry) observer(next func(httpretry.Event)) func(httpretry.Event) {
	if p == nil {
		return next
	}
	return func(e httpretry.Event) {
		p.tel.Observe(e)
		next(e)
	}
}

// onStateChange returns a transition hook that counts the transition, then
// calls next.
func (p *proxyTelemetry) onStateChange(next func(string, breaker.State, breaker.State)) func(string, breaker.State, breaker.State) {
	if p == nil {
		return next
	}
	return func(name string, from, to breaker.State) {
		p.tel.OnStateChange(name, from, to)
		next(name, from, to)
	}
}

// watch exports cb's state.
func (p *proxyTelemetry) watch(cb breaker.CircuitBreaker) {
	if p != nil {
		p.tel.WatchBreaker(cb)
	}
}

// tracer returns the hook that makes a client span for each attempt of
// the AI Horde API calls (resumes and hedges included, with
// http.request.resend_count), or nil with traces off.
func (p *proxyTelemetry) tracer() httpretry.Tracer {
	if p == nil || p.sdk.Traces == nil {
		return nil
	}
	return p.tel
}

// handler returns h with a server span for each request to a traced path.
func (p *proxyTelemetry) handler(h http.Handler) http.Handler {
	if p == nil || p.sdk.Traces == nil {
		return h
	}
	opts := append(p.options(),
		otelhttp.WithFilter(func(r *http.Request) bool { return !untraced[r.URL.Path] }),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			// The endpoints are few and fixed; any other path is named
			// by its method alone, so that scanners cannot mint names.
			if knownPath[r.URL.Path] {
				return r.Method + " " + r.URL.Path
			}
			return r.Method
		}))
	return otelhttp.NewHandler(h, "hordeproxy", opts...)
}

var knownPath = map[string]bool{
	"/api/v2/status/models":     true,
	"/api/v2/stats/img/models":  true,
	"/api/v2/stats/text/models": true,
	"/api/v2/workers":           true,
}

func (p *proxyTelemetry) options() []otelhttp.Option {
	return []otelhttp.Option{otelhttp.WithTracerProvider(p.sdk.TracerProvider()),
		otelhttp.WithMeterProvider(p.sdk.MeterProvider()), otelhttp.WithPropagators(p.sdk.Propagator)}
}

// shutdown exports what is left, for telemetryFlush at most.
func (p *proxyTelemetry) shutdown() {
	if p == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), telemetryFlush)
	defer cancel()
	defer p.tel.Close() // after the last export, which reads the breaker states
	if err := p.sdk.Shutdown(ctx); err != nil {
		p.logger.Warn("telemetry: the last export failed", "error", err)
	}
}
