package demo

import (
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/metrics"
)

// Monitor exports a running demo: /metrics with every strategy's metrics
// (labelled strategy="..."), and /heartbeat with the breakers of the
// strategies that have one, as a service using httpretry would serve them.
type Monitor struct {
	reg     *prometheus.Registry
	current atomic.Pointer[breaker.Heartbeat]
}

// NewMonitor returns a Monitor with an empty registry.
func NewMonitor() *Monitor {
	m := &Monitor{reg: prometheus.NewRegistry()}
	m.current.Store(&breaker.Heartbeat{})
	return m
}

// Handler serves GET /metrics and /heartbeat.
func (m *Monitor) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/heartbeat", func(w http.ResponseWriter, r *http.Request) {
		m.current.Load().ServeHTTP(w, r)
	})
	return mux
}

// instrument returns a metrics collector for one strategy, registered with
// the strategy's label so that the strategies' series sit side by side.
func (m *Monitor) instrument(slug string) (*metrics.Collector, error) {
	return metrics.New(prometheus.WrapRegistererWith(prometheus.Labels{"strategy": slug}, m.reg))
}

// watch exports the breakers of hb through c.
func watch(c *metrics.Collector, hb breaker.Heartbeat) {
	for _, b := range hb.Breakers {
		c.WatchBreaker(b)
	}
	for _, s := range hb.Sets {
		c.WatchSet(s)
	}
}

// serve serves hb on /heartbeat from now on.
func (m *Monitor) serve(hb breaker.Heartbeat) { m.current.Store(&hb) }
