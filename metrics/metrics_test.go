package metrics_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/clock"
	"github.com/hordekit/httpretry/metrics"
)

// newCollector returns a Collector registered with a fresh pedantic
// registry, which also checks the metrics' consistency on every gather.
func newCollector(t *testing.T) (*metrics.Collector, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

func TestObserveCountsEvents(t *testing.T) {
	m, reg := newCollector(t)
	const host = "api.example"
	for _, e := range []httpretry.Event{
		{Kind: httpretry.EventAttempt, Host: host, Attempt: 1, StatusCode: 503, Outcome: breaker.Failure},
		{Kind: httpretry.EventRetry, Host: host, Attempt: 1, Wait: 750 * time.Millisecond},
		{Kind: httpretry.EventAttempt, Host: host, Attempt: 2, StatusCode: 429, Outcome: breaker.Neutral},
		{Kind: httpretry.EventRetry, Host: host, Attempt: 2, Wait: 3 * time.Second},
		{Kind: httpretry.EventAttempt, Host: host, Attempt: 3, StatusCode: 200, Outcome: breaker.Success},
		{Kind: httpretry.EventAttempt, Host: "other", Attempt: 1, Outcome: breaker.Failure},
		{Kind: httpretry.EventGiveUp, Host: "other", Attempt: 1, Reason: httpretry.StopBudget},
		{Kind: httpretry.EventGiveUp, Host: host, Attempt: 3, Reason: httpretry.StopExhausted},
		{Kind: httpretry.EventRefused, Host: host, Reason: httpretry.StopBreakerOpen,
			Err: &breaker.OpenError{Name: host, State: breaker.Open, RetryIn: time.Second}},
		{Kind: httpretry.EventRefused, Host: host, Reason: httpretry.StopBreakerOpen,
			Err: fmt.Errorf("wrapped: %w", &breaker.OpenError{Name: host, State: breaker.HalfOpen})},
		{Kind: httpretry.EventRefused, Host: host, Reason: httpretry.StopBreakerOpen, Err: breaker.ErrOpen},
		// A body cut after its headers, resumed once, then cut again and
		// given up on.
		{Kind: httpretry.EventBodyFailed, Host: host, Attempt: 3, Resume: true, Offset: 1 << 20},
		{Kind: httpretry.EventRetry, Host: host, Attempt: 3, Wait: 750 * time.Millisecond, Resume: true, Offset: 1 << 20},
		{Kind: httpretry.EventBodyFailed, Host: host, Attempt: 4, Resume: true, Offset: 2 << 20},
		{Kind: httpretry.EventGiveUp, Host: host, Attempt: 4, Reason: httpretry.StopNotResumable, Resume: true, Offset: 2 << 20},
		{Kind: httpretry.EventHedge, Host: host, Attempt: 5, Wait: 3 * time.Millisecond, Hedge: true},
		{Kind: httpretry.EventHedge, Host: host, Attempt: 7, Wait: 3 * time.Millisecond, Hedge: true},
		{Kind: httpretry.EventHedgeWon, Host: host, Attempt: 7, StatusCode: 200, Hedge: true},
	} {
		m.Observe(e)
	}

	wantBodies := `
# HELP httpretry_resumes_total Range requests decided to continue a response body cut after its headers (also counted in httpretry_retries_total).
# TYPE httpretry_resumes_total counter
httpretry_resumes_total{host="api.example"} 1
# HELP httpretry_body_failures_total Response bodies that failed after their headers: reset, cut short or stalled.
# TYPE httpretry_body_failures_total counter
httpretry_body_failures_total{host="api.example"} 2
# HELP httpretry_hedges_total Hedged attempts sent: a second attempt of a request whose headers were late.
# TYPE httpretry_hedges_total counter
httpretry_hedges_total{host="api.example"} 2
# HELP httpretry_hedge_wins_total Rounds whose winning response came from a hedge.
# TYPE httpretry_hedge_wins_total counter
httpretry_hedge_wins_total{host="api.example"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(wantBodies),
		"httpretry_resumes_total", "httpretry_body_failures_total", "httpretry_hedges_total", "httpretry_hedge_wins_total"); err != nil {
		t.Error(err)
	}

	want := `
# HELP httpretry_attempts_total HTTP attempts sent, by host and by what the attempt told the breaker (success, failure, neutral).
# TYPE httpretry_attempts_total counter
httpretry_attempts_total{host="api.example",outcome="failure"} 1
httpretry_attempts_total{host="api.example",outcome="neutral"} 1
httpretry_attempts_total{host="api.example",outcome="success"} 1
httpretry_attempts_total{host="other",outcome="failure"} 1
httpretry_attempts_total{host="other",outcome="neutral"} 0
httpretry_attempts_total{host="other",outcome="success"} 0
# HELP httpretry_retries_total Retries decided: a failed attempt followed by a wait and another attempt, resumes of a cut body included.
# TYPE httpretry_retries_total counter
httpretry_retries_total{host="api.example"} 3
httpretry_retries_total{host="other"} 0
# HELP httpretry_give_ups_total Retryable failures that were not retried, by reason.
# TYPE httpretry_give_ups_total counter
httpretry_give_ups_total{host="api.example",reason="exhausted"} 1
httpretry_give_ups_total{host="api.example",reason="not_resumable"} 1
httpretry_give_ups_total{host="other",reason="budget"} 1
# HELP httpretry_budget_refusals_total Retries refused by the retry budget (also counted in httpretry_give_ups_total with reason budget).
# TYPE httpretry_budget_refusals_total counter
httpretry_budget_refusals_total{host="other"} 1
# HELP httpretry_refusals_total Calls refused by the circuit breaker before any attempt, by breaker state (open, half_open).
# TYPE httpretry_refusals_total counter
httpretry_refusals_total{host="api.example",reason="half_open"} 1
httpretry_refusals_total{host="api.example",reason="open"} 2
httpretry_refusals_total{host="other",reason="half_open"} 0
httpretry_refusals_total{host="other",reason="open"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"httpretry_attempts_total", "httpretry_retries_total", "httpretry_give_ups_total",
		"httpretry_budget_refusals_total", "httpretry_refusals_total"); err != nil {
		t.Error(err)
	}

	wantWaits := `
# HELP httpretry_retry_wait_seconds Wait before each retry, Retry-After floors included.
# TYPE httpretry_retry_wait_seconds histogram
httpretry_retry_wait_seconds_bucket{host="api.example",le="0.01"} 0
httpretry_retry_wait_seconds_bucket{host="api.example",le="0.05"} 0
httpretry_retry_wait_seconds_bucket{host="api.example",le="0.1"} 0
httpretry_retry_wait_seconds_bucket{host="api.example",le="0.25"} 0
httpretry_retry_wait_seconds_bucket{host="api.example",le="0.5"} 0
httpretry_retry_wait_seconds_bucket{host="api.example",le="1"} 2
httpretry_retry_wait_seconds_bucket{host="api.example",le="2"} 2
httpretry_retry_wait_seconds_bucket{host="api.example",le="5"} 3
httpretry_retry_wait_seconds_bucket{host="api.example",le="10"} 3
httpretry_retry_wait_seconds_bucket{host="api.example",le="30"} 3
httpretry_retry_wait_seconds_bucket{host="api.example",le="+Inf"} 3
httpretry_retry_wait_seconds_sum{host="api.example"} 4.5
httpretry_retry_wait_seconds_count{host="api.example"} 3
`
	// Only the host that retried has observations; "other" has an empty
	// histogram made when its attempt was first seen.
	if err := testutil.GatherAndCompare(reg, strings.NewReader(wantWaits+`httpretry_retry_wait_seconds_bucket{host="other",le="0.01"} 0
httpretry_retry_wait_seconds_bucket{host="other",le="0.05"} 0
httpretry_retry_wait_seconds_bucket{host="other",le="0.1"} 0
httpretry_retry_wait_seconds_bucket{host="other",le="0.25"} 0
httpretry_retry_wait_seconds_bucket{host="other",le="0.5"} 0
httpretry_retry_wait_seconds_bucket{host="other",le="1"} 0
httpretry_retry_wait_seconds_bucket{host="other",le="2"} 0
httpretry_retry_wait_seconds_bucket{host="other",le="5"} 0
httpretry_retry_wait_seconds_bucket{host="other",le="10"} 0
httpretry_retry_wait_seconds_bucket{host="other",le="30"} 0
httpretry_retry_wait_seconds_bucket{host="other",le="+Inf"} 0
httpretry_retry_wait_seconds_sum{host="other"} 0
httpretry_retry_wait_seconds_count{host="other"} 0
`), "httpretry_retry_wait_seconds"); err != nil {
		t.Error(err)
	}
}

func TestReasonLabels(t *testing.T) {
	seen := map[string]httpretry.StopReason{}
	for r := httpretry.StopExhausted; r <= httpretry.StopMaxResumes; r++ {
		label := metrics.Reason(r)
		if label == "" || strings.ContainsAny(label, " -") {
			t.Errorf("Reason(%v) = %q, want a snake_case word", r, label)
		}
		if prev, dup := seen[label]; dup {
			t.Errorf("Reason(%v) = Reason(%v) = %q", r, prev, label)
		}
		seen[label] = r
	}
	if got := metrics.Reason(httpretry.StopReason(200)); strings.Contains(got, " ") {
		t.Errorf("Reason of an unknown StopReason = %q, want no spaces", got)
	}
}

// TestTransitionsAndState drives a real breaker with a fake clock through
// closed, open, half-open and closed again, and reads both the transition
// counter and the scrape-time state gauge along the way.
func TestTransitionsAndState(t *testing.T) {
	m, reg := newCollector(t)
	clk := clock.NewFake(time.Unix(1000, 0))
	set, err := breaker.NewSet(breaker.SetConfig{Config: breaker.Config{
		FailureThreshold: 2, Cooldown: 10 * time.Second, Clock: clk, OnStateChange: m.OnStateChange,
		Logger: discardLogger(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	m.WatchSet(set)
	m.WatchSet(nil) // a Transport with its breaker off: ignored
	shared := breaker.MustNew(breaker.Config{Name: "shared", Clock: clk, Logger: discardLogger()})
	m.WatchBreaker(shared)
	m.WatchBreaker(set.Get("a.example")) // also in the set: exported once

	b := set.Get("a.example")
	set.Get("b.example")
	gauge := func(want string) {
		t.Helper()
		if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP httpretry_breaker_state Circuit breaker state: 0 closed, 1 half-open, 2 open.
# TYPE httpretry_breaker_state gauge
`+want), "httpretry_breaker_state"); err != nil {
			t.Error(err)
		}
	}
	gauge(`httpretry_breaker_state{breaker="a.example"} 0
httpretry_breaker_state{breaker="b.example"} 0
httpretry_breaker_state{breaker="shared"} 0
`)

	b.RecordFailure()
	b.RecordFailure() // opens
	gauge(`httpretry_breaker_state{breaker="a.example"} 2
httpretry_breaker_state{breaker="b.example"} 0
httpretry_breaker_state{breaker="shared"} 0
`)
	clk.Advance(10 * time.Second)
	// Half-open is read from the clock even before a caller moves it.
	gauge(`httpretry_breaker_state{breaker="a.example"} 1
httpretry_breaker_state{breaker="b.example"} 0
httpretry_breaker_state{breaker="shared"} 0
`)
	if !b.Allow() {
		t.Fatal("half-open breaker refused its probe")
	}
	b.RecordSuccess()

	want := `
# HELP httpretry_breaker_transitions_total Circuit breaker state changes.
# TYPE httpretry_breaker_transitions_total counter
httpretry_breaker_transitions_total{breaker="a.example",from="closed",to="open"} 1
httpretry_breaker_transitions_total{breaker="a.example",from="half-open",to="closed"} 1
httpretry_breaker_transitions_total{breaker="a.example",from="open",to="half-open"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "httpretry_breaker_transitions_total"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg, "httpretry_breaker_state"); err != nil || n != 3 {
		t.Errorf("breaker_state series = %d, %v; want 3 (a duplicate name exported once)", n, err)
	}
}

// TestTransportFeedsCollector wires the Collector into a real Transport
// against a server that fails twice then succeeds.
func TestTransportFeedsCollector(t *testing.T) {
	m, reg := newCollector(t)
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if n.Add(1) <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	clk := clock.NewFake(time.Unix(0, 0))
	clk.SetAuto(true)
	tr := &httpretry.Transport{
		Policy:   httpretry.Policy{Clock: clk, Logger: discardLogger()},
		Observer: m.Observe,
	}
	m.WatchSet(tr.Breakers())
	resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	tr.CloseIdleConnections()

	host := strings.TrimPrefix(srv.URL, "http://")
	want := fmt.Sprintf(`
# HELP httpretry_attempts_total HTTP attempts sent, by host and by what the attempt told the breaker (success, failure, neutral).
# TYPE httpretry_attempts_total counter
httpretry_attempts_total{host=%[1]q,outcome="failure"} 2
httpretry_attempts_total{host=%[1]q,outcome="neutral"} 0
httpretry_attempts_total{host=%[1]q,outcome="success"} 1
# HELP httpretry_retries_total Retries decided: a failed attempt followed by a wait and another attempt, resumes of a cut body included.
# TYPE httpretry_retries_total counter
httpretry_retries_total{host=%[1]q} 2
# HELP httpretry_breaker_state Circuit breaker state: 0 closed, 1 half-open, 2 open.
# TYPE httpretry_breaker_state gauge
httpretry_breaker_state{breaker=%[1]q} 0
`, host)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"httpretry_attempts_total", "httpretry_retries_total", "httpretry_breaker_state"); err != nil {
		t.Error(err)
	}
}

func TestNewNilRegistererAndDuplicate(t *testing.T) {
	m, err := metrics.New(nil)
	if err != nil || m == nil {
		t.Fatalf("New(nil) = %v, %v", m, err)
	}
	m.Observe(httpretry.Event{Kind: httpretry.EventAttempt, Host: "h", Outcome: breaker.Success})
	// Unregistered, it still collects when the caller asks it directly.
	if err := testutil.CollectAndCompare(m, strings.NewReader(`
# HELP httpretry_attempts_total HTTP attempts sent, by host and by what the attempt told the breaker (success, failure, neutral).
# TYPE httpretry_attempts_total counter
httpretry_attempts_total{host="h",outcome="failure"} 0
httpretry_attempts_total{host="h",outcome="neutral"} 0
httpretry_attempts_total{host="h",outcome="success"} 1
`), "httpretry_attempts_total"); err != nil {
		t.Error(err)
	}

	reg := prometheus.NewRegistry()
	if _, err := metrics.New(reg); err != nil {
		t.Fatal(err)
	}
	_, err = metrics.New(reg)
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) {
		t.Errorf("second New on one registry: err = %v, want AlreadyRegisteredError", err)
	}
}

func TestStateValue(t *testing.T) {
	for s, want := range map[breaker.State]float64{breaker.Closed: 0, breaker.HalfOpen: 1, breaker.Open: 2} {
		if got := metrics.StateValue(s); got != want {
			t.Errorf("StateValue(%v) = %v, want %v", s, got, want)
		}
	}
}

// TestObserveAllocations reports what Observe costs in allocations once a
// host has been seen; the hot events (attempts, retries, refusals) must not
// allocate. Timings are left to BenchmarkObserve.
func TestObserveAllocations(t *testing.T) {
	m, _ := newCollector(t)
	open := &breaker.OpenError{Name: "h", State: breaker.Open}
	for _, tc := range []struct {
		name string
		e    httpretry.Event
		max  float64
	}{
		{"attempt", httpretry.Event{Kind: httpretry.EventAttempt, Host: "h", Outcome: breaker.Failure}, 0},
		{"retry", httpretry.Event{Kind: httpretry.EventRetry, Host: "h", Wait: time.Second}, 0},
		{"refused", httpretry.Event{Kind: httpretry.EventRefused, Host: "h", Err: open}, 0},
		{"give-up", httpretry.Event{Kind: httpretry.EventGiveUp, Host: "h", Reason: httpretry.StopBudget}, 2},
	} {
		m.Observe(tc.e) // the first sight of a host makes its children
		got := testing.AllocsPerRun(1000, func() { m.Observe(tc.e) })
		t.Logf("Observe(%s): %.0f allocs", tc.name, got)
		if got > tc.max {
			t.Errorf("Observe(%s) = %.0f allocs, want <= %.0f", tc.name, got, tc.max)
		}
	}
}

func BenchmarkObserve(b *testing.B) {
	m, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	e := httpretry.Event{Kind: httpretry.EventAttempt, Host: "api.example", Outcome: breaker.Success}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Observe(e)
		}
	})
}

// discardLogger keeps the breaker's transition logs out of the test output.
func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestHostLabelsAreBounded(t *testing.T) {
	c, err := metrics.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range metrics.MaxHosts + 50 {
		host := fmt.Sprintf("h%d.example", i)
		c.Observe(httpretry.Event{Kind: httpretry.EventAttempt, Host: host, Outcome: breaker.Failure})
		c.Observe(httpretry.Event{Kind: httpretry.EventGiveUp, Host: host, Reason: httpretry.StopBudget})
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		hosts := map[string]bool{}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "host" {
					hosts[l.GetValue()] = true
				}
			}
		}
		if len(hosts) > metrics.MaxHosts+1 {
			t.Errorf("%s has %d host labels, want at most %d plus %q", f.GetName(), len(hosts), metrics.MaxHosts, metrics.OtherHost)
		}
		if len(hosts) > 0 && !hosts[metrics.OtherHost] {
			t.Errorf("%s has no %q label for the hosts past the limit", f.GetName(), metrics.OtherHost)
		}
	}
}
