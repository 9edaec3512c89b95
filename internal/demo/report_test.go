package demo

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/hordekit/httpretry/breaker"
)

// ms is n milliseconds.
func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// testScenario is the default scenario at 10 calls/s: healthy 0-6s, flaky
// 6-15s, overloaded 15-24s, outage 24-35s, rate-limited 35-44s, recovery
// 44-54s.
var testScenario = Scenario{Duration: 54 * time.Second, Rate: 10, Seed: 1}

// addCall adds a call from start to end that succeeded or not, with one
// upstream request at each of reqs.
func (r *Result) addCall(start, end time.Duration, ok bool, reqs ...time.Duration) {
	i := len(r.calls)
	r.calls = append(r.calls, callRecord{start: start, end: end, ok: ok})
	for _, at := range reqs {
		r.requests = append(r.requests, request{at: at, call: i, phase: testScenario.PhaseAt(at)})
	}
}

// addCalls adds n calls spread evenly over phase p, each lasting lat and
// making perCall requests; the first ok of them succeed.
func (r *Result) addCalls(p Phase, n, ok, perCall int, lat time.Duration) {
	sp := testScenario.Span(p)
	step := sp.Len() / time.Duration(n)
	for i := range n {
		start := sp.Start + time.Duration(i)*step
		reqs := make([]time.Duration, perCall)
		for j := range reqs {
			reqs[j] = start
		}
		r.addCall(start, start+lat, i < ok, reqs...)
	}
}

func TestPercentile(t *testing.T) {
	var hundred []time.Duration
	for i := 1; i <= 100; i++ {
		hundred = append(hundred, ms(i))
	}
	for _, tc := range []struct {
		in   []time.Duration
		q    float64
		want time.Duration
	}{
		{hundred, 0.50, ms(50)},
		{hundred, 0.99, ms(99)},
		{hundred, 1, ms(100)},
		{hundred, 0, ms(1)},
		{[]time.Duration{ms(7)}, 0.99, ms(7)},
		{[]time.Duration{ms(1), ms(2), ms(3), ms(4)}, 0.5, ms(2)}, // nearest rank: ceil(0.5*4) = 2nd
		{nil, 0.5, 0},
	} {
		if got := percentile(tc.in, tc.q); got != tc.want {
			t.Errorf("percentile(%d values, %v) = %v, want %v", len(tc.in), tc.q, got, tc.want)
		}
	}
}

// TestStats checks every per-phase number on hand-made calls and requests.
func TestStats(t *testing.T) {
	r := Result{Strategy: Defaults, HasBreaker: true}
	sec := time.Second
	// Healthy: three calls, two overlapping; one fails.
	r.addCall(1*sec, 1*sec+ms(100), true, 1*sec)
	r.addCall(2*sec, 2*sec+ms(500), true, 2*sec)
	r.addCall(2*sec+ms(200), 2*sec+ms(300), false, 2*sec+ms(200), 2*sec+ms(250))
	// A call that ends exactly as the next starts is not in flight with it.
	r.addCall(3*sec, 4*sec, true, 3*sec)
	r.addCall(4*sec, 5*sec, true, 4*sec)
	// Overloaded: a call whose retry lands in the outage, succeeding there
	// (it cannot, but the numbers must follow the records).
	r.addCall(23*sec, 25*sec, true, 23*sec, 25*sec)
	// Rate-limited: a request that came before its Retry-After.
	r.addCall(40*sec, 42*sec, true, 40*sec)
	r.requests = append(r.requests, request{at: 41 * sec, call: 6, phase: RateLimited, early: true})
	// A call cut by an interruption counts nowhere, nor do its requests.
	r.calls = append(r.calls, callRecord{start: 50 * sec, end: 51 * sec, cut: true})
	r.requests = append(r.requests, request{at: 50 * sec, call: 7, phase: Recovery})
	r.Transitions = []Transition{{At: 25 * sec, From: breaker.Closed, To: breaker.Open}, {At: 27 * sec, From: breaker.Open, To: breaker.HalfOpen}}
	r.budgetRefusals[Flaky] = 3

	st := r.Stats(testScenario)
	h := st[Healthy]
	if h.Calls != 5 || h.Successes != 4 || h.Delivered != 4 || h.Requests != 6 || h.Arrived != 6 {
		t.Errorf("healthy: %+v", h)
	}
	if h.P50 != ms(500) || h.P99 != sec || h.PeakInFlight != 2 {
		t.Errorf("healthy p50 %v p99 %v peak %d, want 500ms, 1s, 2", h.P50, h.P99, h.PeakInFlight)
	}
	if got := h.Success(); got != 0.8 {
		t.Errorf("healthy success %v, want 0.8", got)
	}
	if got, want := h.Goodput(), 4/6.0; math.Abs(got-want) > 1e-9 {
		t.Errorf("healthy goodput %v, want %v", got, want)
	}
	if got := h.PerCall(); got != 6.0/5 {
		t.Errorf("healthy requests per call %v, want 1.2", got)
	}
	o, out := st[Overloaded], st[Outage]
	if o.Calls != 1 || o.Successes != 1 || o.Delivered != 0 || o.Requests != 2 || o.Arrived != 1 {
		t.Errorf("overloaded: %+v; want the call and its 2 requests, 1 of them arriving, and no delivery", o)
	}
	if out.Calls != 0 || out.Delivered != 1 || out.Arrived != 1 || out.Opened != 1 || !math.IsNaN(out.Success()) {
		t.Errorf("outage: %+v; want a delivery, an arrival and an opening, but no call", out)
	}
	if rl := st[RateLimited]; rl.Early != 1 || rl.Arrived != 2 || rl.Requests != 2 {
		t.Errorf("rate-limited: %+v; want 1 early of 2 requests", rl)
	}
	if rec := st[Recovery]; rec.Calls != 0 || rec.Arrived != 1 {
		t.Errorf("recovery: %+v; the cut call must not count (its request reached the upstream)", rec)
	}
	if st[Flaky].BudgetRefusals != 3 {
		t.Errorf("flaky budget refusals %d, want 3", st[Flaky].BudgetRefusals)
	}
	if r.Upstream() != 11 {
		t.Errorf("Upstream() = %d, want every request, 11", r.Upstream())
	}
}

func TestRecoveryTimes(t *testing.T) {
	var r Result
	sec := time.Second
	r.addCall(34*sec, 35*sec+ms(400), true)  // rides out the outage's end
	r.addCall(35*sec, 35*sec+ms(100), false) // fails after it
	for i := range 100 {
		start := 44*sec + time.Duration(i)*ms(50)
		r.addCall(start, start+ms(5), i >= 3) // the first three fail
	}
	rec := r.Recovery(testScenario)
	if !rec.AfterOutageOK || rec.AfterOutage != ms(400) {
		t.Errorf("after the outage: %v %v, want 400ms", rec.AfterOutage, rec.AfterOutageOK)
	}
	if !rec.FirstOK || rec.First != ms(155) {
		t.Errorf("first success after the recovery starts: %v %v, want 155ms (the 4th call's end)", rec.First, rec.FirstOK)
	}
	// From the 4th call on, 97 of 97 succeed; from the 3rd, 97 of 98 is
	// under 99%.
	if !rec.FullOK || rec.Full != ms(150) {
		t.Errorf("99%% success from %v %v, want 150ms", rec.Full, rec.FullOK)
	}
	if got := (&Result{}).Recovery(testScenario); got.FirstOK || got.FullOK || got.AfterOutageOK {
		t.Errorf("no calls: %+v, want nothing", got)
	}
}

// fakeReport is a report with hand-made results for the four strategies,
// 10 calls a second, in which httpretry defaults meets every target.
func fakeReport() *Report {
	mk := func(name string, hasBreaker bool) Result {
		return Result{Strategy: name, Summary: "summary of " + name, HasBreaker: hasBreaker, Complete: true}
	}
	none, naive, seed, def := mk(NoRetries, false), mk(Naive, false), mk(Seed, true), mk(Defaults, true)
	for _, r := range []*Result{&none, &naive, &seed, &def} {
		r.addCalls(Healthy, 60, 60, 1, ms(2))
	}
	// Calls that succeed end before the next phase, so that every phase's
	// deliveries are its own.
	none.addCalls(Flaky, 90, 63, 1, ms(2))
	naive.addCalls(Flaky, 90, 88, 2, ms(2))
	seed.addCalls(Flaky, 90, 72, 2, ms(80))
	def.addCalls(Flaky, 90, 88, 2, ms(60))

	none.addCalls(Overloaded, 90, 60, 1, ms(2))
	naive.addCalls(Overloaded, 90, 60, 3, ms(2))
	seed.addCalls(Overloaded, 90, 60, 3, ms(90))
	def.addCalls(Overloaded, 90, 60, 2, ms(50))

	none.addCalls(Outage, 110, 0, 1, ms(2))
	naive.addCalls(Outage, 110, 0, 3, ms(2))
	seed.addCalls(Outage, 110, 0, 2, 2*time.Second) // all in flight together for 2s: 20 at once
	def.addCalls(Outage, 110, 0, 0, ms(1))

	none.addCalls(RateLimited, 90, 45, 1, ms(2))
	naive.addCalls(RateLimited, 90, 45, 3, ms(2))
	seed.addCalls(RateLimited, 90, 40, 2, time.Second)
	def.addCalls(RateLimited, 90, 50, 1, ms(900))
	seed.requests[len(seed.requests)-1].early = true

	for _, r := range []*Result{&none, &naive, &seed, &def} {
		r.addCalls(Recovery, 100, 100, 1, ms(2))
	}
	seed.Transitions = []Transition{{At: 24500 * time.Millisecond, From: breaker.Closed, To: breaker.Open}}
	def.Transitions = []Transition{{At: 24100 * time.Millisecond, From: breaker.Closed, To: breaker.Open},
		{At: 26100 * time.Millisecond, From: breaker.Open, To: breaker.HalfOpen}}
	return &Report{
		Scenario: testScenario,
		Settings: Settings{Cooldown: 2 * time.Second, Deadline: DefaultDeadline, Rate: 10},
		Results:  []Result{none, naive, seed, def},
	}
}

func TestTargets(t *testing.T) {
	r := fakeReport()
	targets := r.Targets()
	if len(targets) != 10 {
		t.Fatalf("%d targets, want 10: %+v", len(targets), targets)
	}
	for _, tg := range targets {
		if !tg.Met {
			t.Errorf("target %q missed: %s", tg.Name, tg.Detail)
		}
	}
	// The numbers decide, whichever way they go: the defaults now send
	// the outage as much as the seed, and succeed less when flaky.
	r.Results[3].addCalls(Outage, 1, 0, 200, ms(1))
	r.Results[3].calls[len(r.Results[3].calls)-1].ok = false
	for i := range r.Results[3].calls {
		if c := r.Results[3].calls[i]; testScenario.PhaseAt(c.start) == Flaky && c.ok {
			r.Results[3].calls[i].ok = false
			break
		}
	}
	missed := map[string]bool{}
	for _, tg := range r.Targets() {
		if !tg.Met {
			missed[tg.Name] = true
		}
	}
	for _, want := range []string{"flaky: success at least naive's minus 1 point, and the seed's",
		"outage: upstream load at most half the seed's"} {
		if !missed[want] {
			t.Errorf("%q not missed; missed: %v", want, missed)
		}
	}
	r.Results = r.Results[:2]
	if got := r.Targets(); len(got) != 0 {
		t.Errorf("with two strategies: %d targets, want none", len(got))
	}
}

func TestVerdicts(t *testing.T) {
	r := fakeReport()
	for p, want := range map[Phase]string{
		Healthy:     "A tie.",
		Flaky:       "naive retries and httpretry defaults tie",
		Overloaded:  "no retries wins: the most goodput for the fewest requests",
		Outage:      "httpretry defaults spares the upstream most",
		RateLimited: "httpretry defaults wins",
	} {
		if got := r.Verdict(p); !strings.Contains(got, want) {
			t.Errorf("%v verdict lacks %q:\n%s", p, want, got)
		}
	}
	if got := r.RecoveryVerdict(); !strings.Contains(got, "A caller that waits out the end of an outage succeeds later") {
		t.Errorf("recovery verdict: %s", got)
	}
	r.Results = r.Results[:3]
	if got := r.Verdict(Flaky); !strings.Contains(got, "no verdict") {
		t.Errorf("without the defaults: %s", got)
	}
}

func TestWriteText(t *testing.T) {
	r := fakeReport()
	r.Results[3].Complete = false
	r.Interrupted = true
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"httpretry demo: 10 calls/s (poisson arrivals) to each strategy at once for 54s, each call with a 5s deadline, seed 1.",
		"\nflaky (6s - 15s)\n",
		"  strategy                           no retries  naive retries  seed policy  httpretry defaults (interrupted)",
		"  success                             70.0%          97.8%        80.0%                             97.8%",
		"  upstream requests per call           1.00           2.00         2.00                              2.00",
		"  peak callers in flight                  1              1           20                                 1",
		"  requests before their Retry-After           0              0            1                                 0",
		"first success after the recovery starts",
		"Breaker cooldown scaled from the seed's 120s to 2s",
		"targets for httpretry defaults:\n  met    flaky:",
		"Interrupted: the numbers above are what was measured until then.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "NaN") {
		t.Errorf("report prints NaN:\n%s", out)
	}
}

func TestLagWarning(t *testing.T) {
	r := fakeReport()
	if got := r.LagWarning(); got != "" {
		t.Errorf("no lag: %q", got)
	}
	r.Results[2].Late, r.Results[2].Lag = 1, 1500*time.Millisecond // one stall
	if got := r.LagWarning(); got != "" {
		t.Errorf("one late call in %d: %q", len(r.Results[2].calls), got)
	}
	r.Results[2].Late = 27 // of 540
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "WARNING: the machine could not keep up with the load: 5.0% of a strategy's calls went out more than 100ms after their arrival time, up to 1.50s.") {
		t.Errorf("5%% late calls without a warning:\n%s", b.String())
	}
}

func TestWrap(t *testing.T) {
	got := wrap("one two three four five", 9)
	want := []string{"one two", "three", "four five"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("wrap = %q, want %q", got, want)
	}
}
