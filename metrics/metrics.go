// Package metrics exports what httpretry's transport and breakers do as
// Prometheus metrics. One Collector is fed by two hooks and one scrape-time
// read:
//
//	m, err := metrics.New(prometheus.DefaultRegisterer)
//	t := &httpretry.Transport{
//		Observer:      m.Observe,
//		BreakerConfig: breaker.Config{OnStateChange: m.OnStateChange},
//	}
//	m.WatchSet(t.Breakers())
//
// The metrics, all prefixed httpretry_:
//
//	attempts_total{host,outcome}                counter    attempts sent; outcome is what the attempt told the
//	                                                       breaker: success, failure or neutral
//	retries_total{host}                         counter    retries decided (a wait, then another attempt), resumes included
//	resumes_total{host}                         counter    range requests decided to continue a cut response body
//	body_failures_total{host}                   counter    response bodies that failed after their headers (cut, reset,
//	                                                       stalled), resumed or not
//	hedges_total{host}                          counter    hedged attempts sent (a late attempt backed up by another)
//	hedge_wins_total{host}                      counter    rounds a hedge won
//	retry_wait_seconds{host}                    histogram  the wait before each retry, Retry-After floors included
//	give_ups_total{host,reason}                 counter    retryable failures not retried, by reason (see Reason)
//	budget_refusals_total{host}                 counter    retries the retry budget refused (also in give_ups_total
//	                                                       with reason "budget", counted apart for alerting)
//	refusals_total{host,reason}                 counter    calls the breaker refused before any attempt; reason
//	                                                       "open", or "half_open" when every probe slot is taken
//	breaker_transitions_total{breaker,from,to}  counter    state changes; states "closed", "open", "half-open"
//	breaker_state{breaker}                      gauge      read at each scrape: 0 closed, 1 half-open, 2 open
//
// The breaker_state numbers grow with how degraded the breaker is, so that
// max() over breakers and alert thresholds read naturally; they are not the
// numeric values of breaker.State.
package metrics

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/breaker"
)

// MaxHosts is how many distinct host labels a Collector exports; events for
// further hosts are counted under OtherHost.
const MaxHosts = 256

// OtherHost is the host label of events past MaxHosts distinct hosts.
const OtherHost = "other"

// Gauge values of httpretry_breaker_state.
const (
	StateClosed   = 0
	StateHalfOpen = 1
	StateOpen     = 2
)

// WaitBuckets are the retry_wait_seconds histogram's buckets: from the
// shortest useful backoff to past the default MaxWait of 10 s, so that waits
// stretched by Retry-After still land in a finite bucket.
var WaitBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30}

// Collector turns transport events and breaker transitions into Prometheus
// metrics. It is itself a prometheus.Collector. Its methods are safe for
// concurrent use.
type Collector struct {
	attempts    *prometheus.CounterVec
	retries     *prometheus.CounterVec
	resumes     *prometheus.CounterVec
	bodyFails   *prometheus.CounterVec
	hedges      *prometheus.CounterVec
	hedgeWins   *prometheus.CounterVec
	waits       *prometheus.HistogramVec
	giveUps     *prometheus.CounterVec
	budget      *prometheus.CounterVec
	refusals    *prometheus.CounterVec
	transitions *prometheus.CounterVec
	state       *prometheus.Desc

	// hosts caches each host's hot-path children so that Observe neither
	// hashes label values nor allocates once a host has been seen. Past
	// MaxHosts hosts, new ones are counted under the label OtherHost, so a
	// client calling arbitrary URLs cannot grow the series without bound.
	hosts  sync.Map // string -> *hostMetrics
	nhosts atomic.Int64

	mu       sync.Mutex
	sets     []*breaker.Set
	breakers []breaker.CircuitBreaker
}

// hostMetrics are the children of one host on the paths taken per attempt or
// per refused call; rarer events go through the vectors.
type hostMetrics struct {
	attempts [3]prometheus.Counter // indexed by breaker.Outcome
	retries  prometheus.Counter
	wait     prometheus.Observer
	refused  [2]prometheus.Counter // open, half_open
}

// New returns a Collector registered with reg. A nil reg registers nothing:
// the Collector is a prometheus.Collector, to be registered by the caller.
func New(reg prometheus.Registerer) (*Collector, error) {
	c := &Collector{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "httpretry_attempts_total",
			Help: "HTTP attempts sent, by host and by what the attempt told the breaker (success, failure, neutral).",
		}, []string{"host", "outcome"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "httpretry_retries_total",
			Help: "Retries decided: a failed attempt followed by a wait and another attempt, resumes of a cut body included.",
		}, []string{"host"}),
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "httpretry_resumes_total",
			Help: "Range requests decided to continue a response body cut after its headers (also counted in httpretry_retries_total).",
		}, []string{"host"}),
		bodyFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "httpretry_body_failures_total",
			Help: "Response bodies that failed after their headers: reset, cut short or stalled.",
		}, []string{"host"}),
		hedges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "httpretry_hedges_total",
			Help: "Hedged attempts sent: a second attempt of a request whose headers were late.",
		}, []string{"host"}),
		hedgeWins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "httpretry_hedge_wins_total",
			Help: "Rounds whose winning response came from a hedge.",
		}, []string{"host"}),
		waits: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "httpretry_retry_wait_seconds",
			Help:    "Wait before each retry, Retry-After floors included.",
			Buckets: WaitBuckets,
		}, []string{"host"}),
		giveUps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "httpretry_give_ups_total",
			Help: "Retryable failures that were not retried, by reason.",
		}, []string{"host", "reason"}),
		budget: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "httpretry_budget_refusals_total",
			Help: "Retries refused by the retry budget (also counted in httpretry_give_ups_total with reason budget).",
		}, []string{"host"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "httpretry_refusals_total",
			Help: "Calls refused by the circuit breaker before any attempt, by breaker state (open, half_open).",
		}, []string{"host", "reason"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "httpretry_breaker_transitions_total",
			Help: "Circuit breaker state changes.",
		}, []string{"breaker", "from", "to"}),
		state: prometheus.NewDesc("httpretry_breaker_state",
			"Circuit breaker state: 0 closed, 1 half-open, 2 open.", []string{"breaker"}, nil),
	}
	if reg != nil {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Observe records one transport event. Its signature fits
// httpretry.Transport.Observer.
func (c *Collector) Observe(e httpretry.Event) {
	switch e.Kind {
	case httpretry.EventAttempt:
		h := c.host(e.Host)
		if int(e.Outcome) < len(h.attempts) {
			h.attempts[e.Outcome].Inc()
		} else {
			c.attempts.WithLabelValues(c.label(e.Host), e.Outcome.String()).Inc()
		}
	case httpretry.EventRetry:
		h := c.host(e.Host)
		h.retries.Inc()
		h.wait.Observe(e.Wait.Seconds())
		if e.Resume {
			c.resumes.WithLabelValues(c.label(e.Host)).Inc()
		}
	case httpretry.EventBodyFailed:
		c.bodyFails.WithLabelValues(c.label(e.Host)).Inc()
	case httpretry.EventHedge:
		c.hedges.WithLabelValues(c.label(e.Host)).Inc()
	case httpretry.EventHedgeWon:
		c.hedgeWins.WithLabelValues(c.label(e.Host)).Inc()
	case httpretry.EventGiveUp:
		host := c.label(e.Host)
		c.giveUps.WithLabelValues(host, Reason(e.Reason)).Inc()
		if e.Reason == httpretry.StopBudget {
			c.budget.WithLabelValues(host).Inc()
		}
	case httpretry.EventRefused:
		// A half-open refusal means the probe slots are taken, not that the
		// cooldown is running: worth telling apart on a dashboard.
		i := 0
		if oe, ok := errors.AsType[*breaker.OpenError](e.Err); ok && oe.State == breaker.HalfOpen {
			i = 1
		}
		c.host(e.Host).refused[i].Inc()
	}
}

// label returns host, or OtherHost once MaxHosts others have been seen.
func (c *Collector) label(host string) string {
	if _, ok := c.hosts.Load(host); ok || c.nhosts.Load() < MaxHosts {
		return host
	}
	return OtherHost
}

// host returns the cached children for host, making them on first sight.
func (c *Collector) host(host string) *hostMetrics {
	if v, ok := c.hosts.Load(host); ok {
		return v.(*hostMetrics)
	}
	if c.nhosts.Load() >= MaxHosts && host != OtherHost {
		return c.host(OtherHost)
	}
	h := &hostMetrics{
		retries: c.retries.WithLabelValues(host),
		wait:    c.waits.WithLabelValues(host),
		refused: [2]prometheus.Counter{
			c.refusals.WithLabelValues(host, "open"),
			c.refusals.WithLabelValues(host, "half_open"),
		},
	}
	for _, o := range []breaker.Outcome{breaker.Neutral, breaker.Success, breaker.Failure} {
		h.attempts[o] = c.attempts.WithLabelValues(host, o.String())
	}
	v, loaded := c.hosts.LoadOrStore(host, h)
	if !loaded {
		c.nhosts.Add(1)
	}
	return v.(*hostMetrics)
}

// OnStateChange counts one breaker transition. Its signature fits
// breaker.Config.OnStateChange.
func (c *Collector) OnStateChange(name string, from, to breaker.State) {
	c.transitions.WithLabelValues(name, from.String(), to.String()).Inc()
}

// WatchSet exports the state of every breaker in s, as it is at each scrape.
// A nil s (a Transport whose breaker is off) is ignored.
func (c *Collector) WatchSet(s *breaker.Set) {
	if s == nil {
		return
	}
	c.mu.Lock()
	c.sets = append(c.sets, s)
	c.mu.Unlock()
}

// WatchBreaker exports the state of b, as it is at each scrape: for a
// breaker outside any Set, such as a Transport's shared Breaker.
func (c *Collector) WatchBreaker(b breaker.CircuitBreaker) {
	c.mu.Lock()
	c.breakers = append(c.breakers, b)
	c.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	c.attempts.Describe(ch)
	c.retries.Describe(ch)
	c.resumes.Describe(ch)
	c.bodyFails.Describe(ch)
	c.hedges.Describe(ch)
	c.hedgeWins.Describe(ch)
	c.waits.Describe(ch)
	c.giveUps.Describe(ch)
	c.budget.Describe(ch)
	c.refusals.Describe(ch)
	c.transitions.Describe(ch)
	ch <- c.state
}

// Collect implements prometheus.Collector. Breaker states are read now,
// from the watched breakers; a name seen twice is exported once (the first),
// since Prometheus rejects duplicate series.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.attempts.Collect(ch)
	c.retries.Collect(ch)
	c.resumes.Collect(ch)
	c.bodyFails.Collect(ch)
	c.hedges.Collect(ch)
	c.hedgeWins.Collect(ch)
	c.waits.Collect(ch)
	c.giveUps.Collect(ch)
	c.budget.Collect(ch)
	c.refusals.Collect(ch)
	c.transitions.Collect(ch)

	c.mu.Lock()
	breakers := append([]breaker.CircuitBreaker(nil), c.breakers...)
	sets := append([]*breaker.Set(nil), c.sets...)
	c.mu.Unlock()
	statuses := make([]breaker.Status, 0, len(breakers))
	for _, b := range breakers {
		statuses = append(statuses, b.Status())
	}
	for _, s := range sets {
		statuses = append(statuses, s.Statuses()...)
	}
	seen := make(map[string]bool, len(statuses))
	for _, st := range statuses {
		if seen[st.Name] {
			continue
		}
		seen[st.Name] = true
		ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, StateValue(st.State), st.Name)
	}
}

// StateValue is the httpretry_breaker_state value of s.
func StateValue(s breaker.State) float64 {
	switch s {
	case breaker.Closed:
		return StateClosed
	case breaker.HalfOpen:
		return StateHalfOpen
	}
	return StateOpen
}

// Reason is the give_ups_total reason label of r: r.Label().
func Reason(r httpretry.StopReason) string { return r.Label() }
