package otelretry_test

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"testing"
	"time"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/internal/faultserver"
	"github.com/hordekit/httpretry/internal/leaktest"
	"github.com/hordekit/httpretry/internal/testenv"
	"github.com/hordekit/httpretry/otelretry"
)

// Every metric equals what the Observer saw: calls that succeed after
// retries, exhaust their attempts, open a breaker and are refused by it,
// resume a cut body, run out of budget, or are told to come back in an hour.
func TestMetricsMatchTheObserver(t *testing.T) {
	leaktest.Check(t)
	w := newWorld(t)
	start := func(faults ...faultserver.Fault) *faultserver.Server {
		return faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(faults...)})
	}
	doc := &faultserver.Resource{Body: document(20_000), ETag: `"v1"`}
	flaky := start(faultserver.Status(503), faultserver.Status(503), faultserver.OK())
	dead := start(faultserver.Status(503))
	cut := start(faultserver.ServeResource(doc).WithBodyFault(faultserver.BodyFault{CutAfter: 5_000}), faultserver.ServeResource(doc))
	busy := start(faultserver.Status(429).WithRetryAfter(time.Hour))
	starved := start(faultserver.Status(502))

	one := &httpretry.Transport{BreakerConfig: breaker.Config{FailureThreshold: 1, Logger: quiet}}
	c := w.transport(t, one)
	lean := &httpretry.Transport{NoBreaker: true, Budget: httpretry.BudgetConfig{Ratio: 0.01, NoFloor: true}}
	cl := w.transport(t, lean)

	for _, call := range []struct {
		c   *http.Client
		url string
	}{
		{c, flaky.URL}, {c, dead.URL}, {c, dead.URL}, {c, cut.URL}, {c, busy.URL}, {cl, starved.URL},
	} {
		ctx, span := w.caller("call")
		get(t, call.c, ctx, call.url) // errors and statuses are what this test is about
		span.End()
	}

	want := map[string]float64{}
	seen := map[httpretry.EventKind]int{}
	for _, e := range w.observed() {
		seen[e.Kind]++
		host, port, _ := net.SplitHostPort(e.Host)
		hp := ",server.address=" + host + ",server.port=" + port + "}"
		plain := "{" + hp[1:]
		switch e.Kind {
		case httpretry.EventAttempt:
			want["httpretry.attempts{httpretry.outcome="+e.Outcome.String()+hp]++
		case httpretry.EventRetry:
			want["httpretry.retries"+plain]++
			want["httpretry.retry.wait"+plain+".count"]++
			want["httpretry.retry.wait"+plain+".sum"] += e.Wait.Seconds()
			if e.Resume {
				want["httpretry.resumes"+plain]++
			}
		case httpretry.EventBodyFailed:
			want["httpretry.body_failures"+plain]++
		case httpretry.EventGiveUp:
			want["httpretry.give_ups{httpretry.stop_reason="+otelretry.StopReason(e.Reason)+hp]++
			if e.Reason == httpretry.StopBudget {
				want["httpretry.budget_refusals"+plain]++
			}
		case httpretry.EventRefused:
			want["httpretry.refusals{httpretry.breaker.state=open"+hp]++
		}
	}
	// Each kind of event and each reason this test is about happened, so
	// the comparison below covers them.
	for _, k := range []httpretry.EventKind{httpretry.EventAttempt, httpretry.EventRetry, httpretry.EventBodyFailed,
		httpretry.EventGiveUp, httpretry.EventRefused} {
		if seen[k] == 0 {
			t.Errorf("no %v event happened", k)
		}
	}
	for _, r := range []string{"exhausted", "budget", "retry_after_too_long"} {
		found := false
		for series := range want {
			found = found || series == fmt.Sprintf("httpretry.give_ups{httpretry.stop_reason=%s,server.address=127.0.0.1,server.port=%s}", r, portOf(t, map[string]*faultserver.Server{
				"exhausted": dead, "budget": starved, "retry_after_too_long": busy}[r]))
		}
		if !found {
			t.Errorf("no give-up for reason %s", r)
		}
	}
	w.mu.Lock()
	for _, tr := range w.transitions {
		var name, from, to string
		fmt.Sscan(tr, &name, &from, &to)
		want["httpretry.breaker.transitions{httpretry.breaker.from="+from+",httpretry.breaker.name="+name+",httpretry.breaker.to="+to+"}"]++
	}
	w.mu.Unlock()
	if len(w.transitions) == 0 {
		t.Error("no breaker transition happened")
	}
	for _, st := range one.Breakers().Statuses() {
		want["httpretry.breaker.state{httpretry.breaker.name="+st.Name+"}"] = float64(otelretry.StateValue(st.State))
	}

	got := collect(t, w.reader)
	for series, v := range want {
		if math.Abs(got[series]-v) > 1e-9 {
			t.Errorf("%s = %v, want %v", series, got[series], v)
		}
	}
	for series, v := range got {
		if _, ok := want[series]; !ok {
			t.Errorf("unexpected series %s = %v", series, v)
		}
	}
	if got["httpretry.breaker.state{httpretry.breaker.name="+dead.Addr+"}"] != otelretry.StateOpen {
		t.Errorf("the dead upstream's breaker is not reported open: %v", got)
	}
}

func portOf(t *testing.T, s *faultserver.Server) string {
	_, port, err := net.SplitHostPort(s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// Past MaxHosts hosts, events count under _OTHER; past MaxHosts breaker
// names, transitions too, and the state reported for _OTHER is the most
// degraded of the rest.
func TestMaxHostsBoundsTheSeries(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	tel, err := otelretry.New(otelretry.Config{MeterProvider: mp, TracerProvider: tracenoop.NewTracerProvider(), MaxHosts: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"a.example", "b.example:8443", "c.example", "a.example"} {
		tel.Observe(httpretry.Event{Kind: httpretry.EventAttempt, Host: host, Attempt: 1, Outcome: breaker.Success})
	}
	tel.OnStateChange("x", breaker.Closed, breaker.Open)
	tel.OnStateChange("y", breaker.Closed, breaker.Open)
	tel.WatchBreaker(stateOnly{"x", breaker.Open})
	tel.WatchBreaker(stateOnly{"y", breaker.Closed})
	tel.WatchBreaker(stateOnly{"z", breaker.HalfOpen})

	got := collect(t, reader)
	want := map[string]float64{
		"httpretry.attempts{httpretry.outcome=success,server.address=a.example}":                                               2,
		"httpretry.attempts{httpretry.outcome=success,server.address=_OTHER}":                                                  2,
		"httpretry.breaker.transitions{httpretry.breaker.from=closed,httpretry.breaker.name=x,httpretry.breaker.to=open}":      1,
		"httpretry.breaker.transitions{httpretry.breaker.from=closed,httpretry.breaker.name=_OTHER,httpretry.breaker.to=open}": 1,
		"httpretry.breaker.state{httpretry.breaker.name=x}":                                                                    otelretry.StateOpen,
		"httpretry.breaker.state{httpretry.breaker.name=_OTHER}":                                                               otelretry.StateHalfOpen,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("series\n got %v\nwant %v", got, want)
	}
}

// stateOnly is a breaker that only reports a state.
type stateOnly struct {
	name  string
	state breaker.State
}

func (s stateOnly) Name() string                     { return s.name }
func (s stateOnly) Acquire() (breaker.Permit, error) { return breaker.Permit{}, nil }
func (s stateOnly) Status() breaker.Status           { return breaker.Status{Name: s.name, State: s.state} }

// After Close, breaker states are no longer reported, and watching more
// does nothing.
func TestCloseStopsReportingStates(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	tel, err := otelretry.New(otelretry.Config{MeterProvider: mp})
	if err != nil {
		t.Fatal(err)
	}
	tel.WatchBreaker(stateOnly{"x", breaker.Open})
	if got := collect(t, reader); got["httpretry.breaker.state{httpretry.breaker.name=x}"] != otelretry.StateOpen {
		t.Fatalf("before Close: %v", got)
	}
	if err := tel.Close(); err != nil {
		t.Fatal(err)
	}
	tel.WatchBreaker(stateOnly{"y", breaker.Open})
	if got := collect(t, reader); len(got) != 0 {
		t.Fatalf("after Close: %v, want nothing", got)
	}
}

// With no-op providers the hooks cost no allocation: a Transport
// instrumented with them allocates exactly what a bare one does, and the
// attempt's request goes out as it came.
func TestNoopProvidersAllocateNothing(t *testing.T) {
	if testenv.RaceEnabled {
		t.Skip("the race detector allocates")
	}
	tel, err := otelretry.New(otelretry.Config{TracerProvider: tracenoop.NewTracerProvider(), MeterProvider: metricnoop.NewMeterProvider()})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://upstream.test/v2/status", nil)
	if r, _ := tel.StartAttempt(req, httpretry.AttemptInfo{Attempt: 2}); r != req {
		t.Error("with a no-op tracer the attempt's request was copied")
	}
	bare := &httpretry.Transport{Base: okUpstream{}}
	hooked := &httpretry.Transport{Base: okUpstream{}}
	tel.Instrument(hooked)
	for _, tr := range []*httpretry.Transport{bare, hooked} {
		tr.RoundTrip(req) // first sight of the host
	}
	a := testing.AllocsPerRun(200, func() { bare.RoundTrip(req) })
	b := testing.AllocsPerRun(200, func() { hooked.RoundTrip(req) })
	if a != b {
		t.Errorf("a round trip allocates %v times with no-op hooks, %v without", b, a)
	}
	e := httpretry.Event{Kind: httpretry.EventRetry, Request: req, Host: "upstream.test", Attempt: 1, Wait: time.Second}
	if n := testing.AllocsPerRun(200, func() { tel.Observe(e) }); n != 0 {
		t.Errorf("Observe allocates %v times with no-op providers", n)
	}
}

// With a real meter and no span to annotate, counting an event from a
// known host allocates nothing either.
func TestObserveAllocatesNothingWithAnSDKMeter(t *testing.T) {
	if testenv.RaceEnabled {
		t.Skip("the race detector allocates")
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer mp.Shutdown(context.Background())
	tel, err := otelretry.New(otelretry.Config{MeterProvider: mp, TracerProvider: tracenoop.NewTracerProvider()})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://upstream.test/v2/status", nil)
	for _, e := range []httpretry.Event{
		{Kind: httpretry.EventAttempt, Request: req, Host: "upstream.test", Attempt: 1, Outcome: breaker.Failure},
		{Kind: httpretry.EventRetry, Request: req, Host: "upstream.test", Attempt: 1, Wait: time.Second},
		{Kind: httpretry.EventGiveUp, Request: req, Host: "upstream.test", Attempt: 3, Reason: httpretry.StopExhausted},
	} {
		tel.Observe(e)
		if n := testing.AllocsPerRun(200, func() { tel.Observe(e) }); n != 0 {
			t.Errorf("Observe(%v) allocates %v times", e.Kind, n)
		}
	}
}

// okUpstream answers 200 in memory.
type okUpstream struct{}

func (okUpstream) RoundTrip(req *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Body: http.NoBody, Request: req}, nil
}
