// Package otelretry makes what httpretry's transport and breakers do visible
// in OpenTelemetry traces and metrics, by the HTTP client semantic
// conventions. It depends on the OpenTelemetry API only; the application
// chooses the SDK and exporters.
//
//	tel, err := otelretry.New(otelretry.Config{}) // the global providers
//	if err != nil { ... }
//	t := &httpretry.Transport{}
//	tel.Instrument(t) // the last change to t before its first use
//	client := &http.Client{Transport: otelhttp.NewTransport(t)} // optional: one span for the logical call
//
// Traces. Each attempt is a client span named after the method, a child of
// the span in the request's context, with http.request.method, url.full
// (secrets redacted), server.address, server.port,
// http.response.status_code, error.type, and http.request.resend_count on
// every attempt after the first. The span of the attempt whose response the
// caller reads lasts until the body ends, as otelhttp's client span does.
// Each attempt's request carries its own span in the propagation headers,
// so the server's span is a child of the attempt that reached it. What
// happens between the attempts goes on the caller's span, as events: the
// wait before each retry (httpretry.retry), a body cut after its headers
// (httpretry.body_failed), why the call gave up (httpretry.give_up: attempts
// exhausted, the retry budget, the breaker, a Retry-After too long...), a
// breaker refusal before any attempt with the time until the next probe
// (httpretry.refused), and, with Transport.Hedge, each hedge sent
// (httpretry.hedge, with the delay) and a round a hedge won
// (httpretry.hedge_won). A hedge's span carries httpretry.hedge=true; the
// attempts a round's winner made redundant end as cancelled. A call of three attempts, in time order (the events
// belong to the caller's span, the spans are its children):
//
//	span  fetch models (the caller's)  httpretry.attempts=3
//	  span  GET    http.response.status_code=503 error.type=503
//	  event httpretry.retry  httpretry.attempt=1 http.response.status_code=503 httpretry.wait=0.75
//	  span  GET    http.response.status_code=503 error.type=503 http.request.resend_count=1
//	  event httpretry.retry  httpretry.attempt=2 http.response.status_code=503 httpretry.wait=1.6
//	  span  GET    http.response.status_code=200 http.request.resend_count=2
//
// Put a span in the request's context, or otelhttp.NewTransport in front of
// the Transport, so that a call's attempts share a trace: without one, each
// attempt starts a trace of its own. Never put otelhttp beneath the
// Transport (as its Base) as well: each attempt would then have two spans.
//
// Metrics, the same set as the Prometheus collector in package metrics
// (an OpenTelemetry Prometheus exporter gives them the same names):
//
//	httpretry.attempts             counter    {attempt}  server.address, server.port, httpretry.outcome
//	httpretry.retries              counter    {retry}    server.address, server.port (resumes included)
//	httpretry.resumes              counter    {resume}   server.address, server.port
//	httpretry.body_failures        counter    {failure}  server.address, server.port
//	httpretry.hedges               counter    {hedge}    server.address, server.port
//	httpretry.hedge_wins           counter    {round}    server.address, server.port
//	httpretry.retry.wait           histogram  s          server.address, server.port
//	httpretry.give_ups             counter    {call}     server.address, server.port, httpretry.stop_reason
//	httpretry.budget_refusals      counter    {retry}    server.address, server.port
//	httpretry.refusals             counter    {call}     server.address, server.port, httpretry.breaker.state
//	httpretry.breaker.transitions  counter    {transition} httpretry.breaker.name, httpretry.breaker.from, httpretry.breaker.to
//	httpretry.breaker.state        gauge      {state}    httpretry.breaker.name; 0 closed, 1 half-open, 2 open
//
// The number of distinct hosts and breaker names is bounded by
// Config.MaxHosts; past it, events are counted under server.address (or
// httpretry.breaker.name) "_OTHER", so a client calling arbitrary URLs cannot
// grow the series without bound.
//
// Redaction. No attribute, event or status holds a header value; url.full
// and error messages go through httpretry.RedactURL's rules (no userinfo,
// values of key, token, secret... query parameters replaced by REDACTED).
package otelretry

import (
	"fmt"
	"net/http"
	"runtime/debug"
	"sync"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/breaker"
)

// ScopeName is the instrumentation scope of the tracer and the meter.
const ScopeName = "github.com/hordekit/httpretry/otelretry"

// DefaultMaxHosts is how many distinct hosts, and breaker names, the metrics
// tell apart when Config.MaxHosts is 0.
const DefaultMaxHosts = 256

// Other is the server.address or httpretry.breaker.name of events past
// MaxHosts distinct values, as the semantic conventions spell a value they
// do not tell apart.
const Other = "_OTHER"

// Config configures a Telemetry. Its zero value uses the global providers
// and propagator, which forward to the ones the application installs later.
type Config struct {
	// TracerProvider makes the attempt spans. nil means
	// otel.GetTracerProvider().
	TracerProvider trace.TracerProvider
	// MeterProvider makes the metrics. nil means otel.GetMeterProvider().
	MeterProvider metric.MeterProvider
	// Propagator writes each attempt's span into its request headers. nil
	// means otel.GetTextMapPropagator().
	Propagator propagation.TextMapPropagator
	// MaxHosts bounds the distinct server.address and breaker name values
	// of the metrics. 0 means DefaultMaxHosts; it must not be negative.
	MaxHosts int
}

// Telemetry turns a Transport's attempts, events and breaker transitions
// into spans, span events and metrics. It is an httpretry.Tracer, and its
// Observe and OnStateChange fit the Transport's and the breakers' hooks;
// Instrument installs all three. Its methods are safe for concurrent use.
type Telemetry struct {
	tracer    trace.Tracer // nil when the provider is a no-op one: nothing to record
	noMetrics bool         // the meter provider is a no-op one
	prop      propagation.TextMapPropagator
	inst      instruments

	hosts labels[*hostSets] // server.address attribute sets, bounded
	names labels[string]    // breaker names, bounded

	mu       sync.Mutex
	watched  []func() []breaker.Status
	callback metric.Registration
}

// New returns a Telemetry with the providers of cfg. It fails on an invalid
// Config, naming the field, or when the meter refuses an instrument.
func New(cfg Config) (*Telemetry, error) {
	if cfg.MaxHosts < 0 {
		return nil, fmt.Errorf("otelretry: Config.MaxHosts must not be negative (got %d)", cfg.MaxHosts)
	}
	tp, mp, prop := cfg.TracerProvider, cfg.MeterProvider, cfg.Propagator
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if prop == nil {
		prop = otel.GetTextMapPropagator()
	}
	max := cfg.MaxHosts
	if max == 0 {
		max = DefaultMaxHosts
	}
	t := &Telemetry{prop: prop}
	tracer := tp.Tracer(ScopeName, trace.WithInstrumentationVersion(version()), trace.WithSchemaURL(semconv.SchemaURL))
	if _, noop := tracer.(tracenoop.Tracer); !noop {
		// A no-op tracer's spans are never recorded nor propagated: skipping
		// it keeps the attempts of an untraced service free of any cost.
		t.tracer = tracer
	}
	t.hosts.init(max)
	t.names.init(max)
	meter := mp.Meter(ScopeName, metric.WithInstrumentationVersion(version()), metric.WithSchemaURL(semconv.SchemaURL))
	_, t.noMetrics = meter.(metricnoop.Meter) // as for the tracer: nothing to count into
	if err := t.inst.init(meter); err != nil {
		return nil, fmt.Errorf("otelretry: %w", err)
	}
	reg, err := meter.RegisterCallback(t.observeStates, t.inst.state)
	if err != nil {
		return nil, fmt.Errorf("otelretry: registering the breaker state callback: %w", err)
	}
	t.callback = reg
	return t, nil
}

// Instrument installs t's hooks on tr: its Tracer, its Observer and its
// per-host breakers' OnStateChange (hooks already set are kept and called
// after t's), and it exports the state of tr's breakers. Call it once per
// Transport, after setting every other field and before the first request.
//
// A Transport with one shared Breaker (Transport.Breaker) gets its state
// exported, but that breaker's transitions are counted only if its own
// Config.OnStateChange calls t.OnStateChange.
func (t *Telemetry) Instrument(tr *httpretry.Transport) {
	if prev := tr.Observer; prev != nil {
		tr.Observer = func(e httpretry.Event) {
			t.Observe(e)
			prev(e)
		}
	} else {
		tr.Observer = t.Observe
	}
	if prev := tr.BreakerConfig.OnStateChange; prev != nil {
		tr.BreakerConfig.OnStateChange = func(name string, from, to breaker.State) {
			t.OnStateChange(name, from, to)
			prev(name, from, to)
		}
	} else {
		tr.BreakerConfig.OnStateChange = t.OnStateChange
	}
	if tr.Tracer != nil {
		tr.Tracer = tracers{t, tr.Tracer}
	} else {
		tr.Tracer = t
	}
	// Read at each collection, not now: Breakers initialises the Transport,
	// which would freeze its fields before the caller is done with them.
	t.watch(func() []breaker.Status {
		if s := tr.Breakers(); s != nil {
			return s.Statuses()
		}
		if tr.Breaker != nil {
			return []breaker.Status{tr.Breaker.Status()}
		}
		return nil
	})
}

// tracers lets a Transport's own Tracer follow the attempts too: it sees
// the request t made, with t's span in its context.
type tracers struct {
	first, second httpretry.Tracer
}

// StartAttempt starts both, first then second; the end runs in reverse.
func (m tracers) StartAttempt(req *http.Request, a httpretry.AttemptInfo) (*http.Request, func(httpretry.AttemptResult)) {
	req, end1 := m.first.StartAttempt(req, a)
	req, end2 := m.second.StartAttempt(req, a)
	return req, func(r httpretry.AttemptResult) {
		end2(r)
		end1(r)
	}
}

// Close stops exporting breaker states. Counters already recorded stay in
// the meter's hands.
func (t *Telemetry) Close() error {
	t.mu.Lock()
	reg := t.callback
	t.callback = nil
	t.watched = nil
	t.mu.Unlock()
	if reg == nil {
		return nil
	}
	return reg.Unregister()
}

// version is this module's version as the build recorded it, for the
// instrumentation scope; empty when unknown (a development build).
var version = sync.OnceValue(func() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, m := range append([]*debug.Module{&info.Main}, info.Deps...) {
		if m.Path == modulePath && m.Version != "(devel)" {
			return m.Version
		}
	}
	return ""
})

const modulePath = "github.com/hordekit/httpretry"
