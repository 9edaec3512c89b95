package otelretry

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/breaker"
)

// WaitBuckets are the httpretry.retry.wait histogram's bucket boundaries,
// in seconds, those of the Prometheus collector: from the shortest useful
// backoff to past the default MaxWait of 10 s, so that waits stretched by
// Retry-After still land in a finite bucket.
var WaitBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30}

// Values of the httpretry.breaker.state gauge. They grow with how degraded
// the breaker is, so that max() and alert thresholds read naturally.
const (
	StateClosed   = 0
	StateHalfOpen = 1
	StateOpen     = 2
)

// instruments are the metrics; see the package documentation.
type instruments struct {
	attempts, retries, resumes, bodyFailures metric.Int64Counter
	hedges, hedgeWins                        metric.Int64Counter
	giveUps, budgetRefusals, refusals        metric.Int64Counter
	transitions                              metric.Int64Counter
	wait                                     metric.Float64Histogram
	state                                    metric.Int64ObservableGauge
}

func (in *instruments) init(m metric.Meter) error {
	var errs []error
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	in.attempts = counter("httpretry.attempts", "{attempt}",
		"HTTP attempts sent, by what the attempt told the breaker (success, failure, neutral).")
	in.retries = counter("httpretry.retries", "{retry}",
		"Retries decided: a failed attempt followed by a wait and another attempt, resumes of a cut body included.")
	in.resumes = counter("httpretry.resumes", "{resume}",
		"Range requests decided to continue a response body cut after its headers (also counted in httpretry.retries).")
	in.bodyFailures = counter("httpretry.body_failures", "{failure}",
		"Response bodies that failed after their headers: reset, cut short or stalled.")
	in.hedges = counter("httpretry.hedges", "{hedge}",
		"Hedged attempts sent: a second attempt of a request whose headers were late.")
	in.hedgeWins = counter("httpretry.hedge_wins", "{round}",
		"Rounds whose winning response came from a hedge.")
	in.giveUps = counter("httpretry.give_ups", "{call}",
		"Retryable failures that were not retried, by reason.")
	in.budgetRefusals = counter("httpretry.budget_refusals", "{retry}",
		"Retries refused by the retry budget (also counted in httpretry.give_ups with reason budget).")
	in.refusals = counter("httpretry.refusals", "{call}",
		"Calls refused by the circuit breaker before any attempt, by breaker state (open, half-open).")
	in.transitions = counter("httpretry.breaker.transitions", "{transition}",
		"Circuit breaker state changes.")
	var err error
	in.wait, err = m.Float64Histogram("httpretry.retry.wait", metric.WithUnit("s"),
		metric.WithDescription("Wait before each retry, Retry-After floors included."),
		metric.WithExplicitBucketBoundaries(WaitBuckets...))
	errs = append(errs, err)
	in.state, err = m.Int64ObservableGauge("httpretry.breaker.state", metric.WithUnit("{state}"),
		metric.WithDescription("Circuit breaker state: 0 closed, 1 half-open, 2 open."))
	errs = append(errs, err)
	return errors.Join(errs...)
}

// hostSets are the attribute sets of one host, made once so that counting
// an event neither builds a set nor allocates.
type hostSets struct {
	other    bool                 // the entry of the hosts past MaxHosts
	attrs    []attribute.KeyValue // server.address and server.port
	plain    []metric.AddOption
	record   []metric.RecordOption
	attempts [3][]metric.AddOption // by breaker.Outcome
	refused  [2][]metric.AddOption // open, half-open
	giveUps  [numStopReasons][]metric.AddOption
}

// numStopReasons is how many reasons get precomputed attribute sets; a
// reason added later takes the slower path.
const numStopReasons = int(httpretry.StopMaxResumes) + 1

func newHostSets(hostport, scheme string) *hostSets {
	h := &hostSets{}
	if hostport == Other {
		h.other = true
		h.attrs = []attribute.KeyValue{semconv.ServerAddress(Other)}
	} else {
		host, port := hostPort(hostport, scheme)
		h.attrs = []attribute.KeyValue{semconv.ServerAddress(host)}
		if port > 0 {
			h.attrs = append(h.attrs, semconv.ServerPort(port))
		}
	}
	with := func(extra ...attribute.KeyValue) metric.MeasurementOption {
		return metric.WithAttributeSet(attribute.NewSet(append(slices.Clip(h.attrs), extra...)...))
	}
	plain := with()
	h.plain = []metric.AddOption{plain}
	h.record = []metric.RecordOption{plain}
	for o := range h.attempts {
		h.attempts[o] = []metric.AddOption{with(OutcomeKey.String(breaker.Outcome(o).String()))}
	}
	h.refused[0] = []metric.AddOption{with(BreakerStateKey.String(breaker.Open.String()))}
	h.refused[1] = []metric.AddOption{with(BreakerStateKey.String(breaker.HalfOpen.String()))}
	for r := range h.giveUps {
		h.giveUps[r] = []metric.AddOption{with(StopReasonKey.String(httpretry.StopReason(r).Label()))}
	}
	return h
}

// count records e in the metrics. The request's context goes with each
// measurement, so that an SDK can attach the caller's span as an exemplar.
func (t *Telemetry) count(e httpretry.Event) {
	if t.noMetrics {
		return
	}
	ctx, scheme := context.Background(), ""
	if e.Request != nil {
		ctx, scheme = e.Request.Context(), e.Request.URL.Scheme
	}
	h := t.hosts.get(e.Host, func(key string) *hostSets { return newHostSets(key, scheme) })
	in := &t.inst
	switch e.Kind {
	case httpretry.EventAttempt:
		if int(e.Outcome) < len(h.attempts) {
			in.attempts.Add(ctx, 1, h.attempts[e.Outcome]...)
		} else {
			in.attempts.Add(ctx, 1, metric.WithAttributes(append(slices.Clip(h.attrs), OutcomeKey.String(e.Outcome.String()))...))
		}
	case httpretry.EventRetry:
		in.retries.Add(ctx, 1, h.plain...)
		in.wait.Record(ctx, e.Wait.Seconds(), h.record...)
		if e.Resume {
			in.resumes.Add(ctx, 1, h.plain...)
		}
	case httpretry.EventBodyFailed:
		in.bodyFailures.Add(ctx, 1, h.plain...)
	case httpretry.EventHedge:
		in.hedges.Add(ctx, 1, h.plain...)
	case httpretry.EventHedgeWon:
		in.hedgeWins.Add(ctx, 1, h.plain...)
	case httpretry.EventGiveUp:
		if int(e.Reason) < len(h.giveUps) {
			in.giveUps.Add(ctx, 1, h.giveUps[e.Reason]...)
		} else {
			in.giveUps.Add(ctx, 1, metric.WithAttributes(append(slices.Clip(h.attrs), StopReasonKey.String(StopReason(e.Reason)))...))
		}
		if e.Reason == httpretry.StopBudget {
			in.budgetRefusals.Add(ctx, 1, h.plain...)
		}
	case httpretry.EventRefused:
		// A half-open refusal means the probe slots are taken, not that the
		// cooldown is running: worth telling apart on a dashboard.
		i := 0
		if oe, ok := errors.AsType[*breaker.OpenError](e.Err); ok && oe.State == breaker.HalfOpen {
			i = 1
		}
		in.refusals.Add(ctx, 1, h.refused[i]...)
	}
}

// OnStateChange counts one breaker transition. Its signature fits
// breaker.Config.OnStateChange.
func (t *Telemetry) OnStateChange(name string, from, to breaker.State) {
	t.inst.transitions.Add(context.Background(), 1, metric.WithAttributes(
		BreakerNameKey.String(t.breakerName(name)),
		BreakerFromKey.String(from.String()), BreakerToKey.String(to.String())))
}

func (t *Telemetry) breakerName(name string) string {
	return t.names.get(name, func(key string) string { return key })
}

// WatchSet exports the state of every breaker in s, as it is at each
// collection. A nil s (a Transport whose breaker is off) is ignored.
func (t *Telemetry) WatchSet(s *breaker.Set) {
	if s != nil {
		t.watch(s.Statuses)
	}
}

// WatchBreaker exports the state of b, as it is at each collection: for a
// breaker outside any Set, such as a Transport's shared Breaker.
func (t *Telemetry) WatchBreaker(b breaker.CircuitBreaker) {
	if b != nil {
		t.watch(func() []breaker.Status { return []breaker.Status{b.Status()} })
	}
}

func (t *Telemetry) watch(statuses func() []breaker.Status) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.callback != nil { // not closed
		t.watched = append(t.watched, statuses)
	}
}

// observeStates reports each watched breaker's state. A name seen twice is
// reported once (the first); the breakers past MaxHosts names are reported
// together as Other, with the most degraded state among them.
func (t *Telemetry) observeStates(_ context.Context, o metric.Observer) error {
	t.mu.Lock()
	watched := slices.Clone(t.watched)
	t.mu.Unlock()
	states := map[string]int64{}
	for _, statuses := range watched {
		for _, st := range statuses() {
			name, v := t.breakerName(st.Name), StateValue(st.State)
			if old, seen := states[name]; !seen || name == Other && v > old {
				states[name] = v
			}
		}
	}
	for name, v := range states {
		o.ObserveInt64(t.inst.state, v, metric.WithAttributes(BreakerNameKey.String(name)))
	}
	return nil
}

// StateValue is the httpretry.breaker.state value of s.
func StateValue(s breaker.State) int64 {
	switch s {
	case breaker.Closed:
		return StateClosed
	case breaker.HalfOpen:
		return StateHalfOpen
	}
	return StateOpen
}

// StopReason is the httpretry.stop_reason value of r: r.Label(), the
// Prometheus collector's reason label.
func StopReason(r httpretry.StopReason) string { return r.Label() }

// labels maps a raw value (a host, a breaker name) to what the metrics
// record for it, for at most max distinct values; past them, every new
// value maps to Other's. Once a value has been seen, get neither locks nor
// allocates.
type labels[T any] struct {
	m   sync.Map // string -> T
	n   atomic.Int64
	max int64
}

func (l *labels[T]) init(max int) { l.max = int64(max) }

// get returns key's entry, made by mk on first sight.
func (l *labels[T]) get(key string, mk func(key string) T) T {
	if v, ok := l.m.Load(key); ok {
		return v.(T)
	}
	if key != Other && l.n.Load() >= l.max {
		return l.get(Other, mk)
	}
	v, loaded := l.m.LoadOrStore(key, mk(key))
	if !loaded && key != Other {
		l.n.Add(1)
	}
	return v.(T)
}
