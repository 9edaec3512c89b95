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
		{[]time.Duration{ms(1), ms(2), ms(3)}, 0.5, ms(2)},
		{[]time.Duration{ms(1), ms(2), ms(3), ms(4)}, 0.5, ms(2)}, // nearest rank: ceil(0.5*4) = 2nd
		{nil, 0.5, 0},
	} {
		if got := percentile(tc.in, tc.q); got != tc.want {
			t.Errorf("percentile(%d values, %v) = %v, want %v", len(tc.in), tc.q, got, tc.want)
		}
	}
}

func TestResultRates(t *testing.T) {
	r := Result{
		Calls: 200, Successes: 150, Upstream: 500,
		PhaseCalls:     [numPhases]int{50, 70, 40, 40},
		PhaseSuccesses: [numPhases]int{50, 0, 30, 38},
		PhaseUpstream:  [numPhases]int64{50, 300, 100, 50},
		OutageTime:     1500 * time.Millisecond,
		Latencies:      []time.Duration{ms(1), ms(2), ms(3), ms(900)},
	}
	for name, tc := range map[string]struct{ got, want float64 }{
		"amplification": {r.Amplification(), 2.5},
		"success":       {r.SuccessRate(), 0.75},
		"recovery":      {r.RecoveryRate(), 0.95},
		"outage load":   {r.OutageLoad(), 200},
	} {
		if math.Abs(tc.got-tc.want) > 1e-9 {
			t.Errorf("%s = %v, want %v", name, tc.got, tc.want)
		}
	}
	if got := r.Percentile(0.99); got != ms(900) {
		t.Errorf("p99 = %v, want 900ms", got)
	}

	var empty Result
	for name, v := range map[string]float64{
		"amplification": empty.Amplification(), "success": empty.SuccessRate(),
		"recovery": empty.RecoveryRate(), "outage load": empty.OutageLoad(),
	} {
		if !math.IsNaN(v) {
			t.Errorf("%s of an empty result = %v, want NaN (printed as -)", name, v)
		}
	}
}

// fakeReport is a report with made-up numbers for the four strategies: the
// defaults at 5 req/s in the outage, naive at 600, the seed at 50.
func fakeReport() *Report {
	sc := Scenario{Duration: 20 * time.Second, Seed: 1, Clients: 4}
	mk := func(name string, outage int64, recovered int, hasBreaker bool) Result {
		r := Result{
			Strategy: name, Summary: "summary of " + name, HasBreaker: hasBreaker, Complete: true,
			Ran: 21 * time.Second, Calls: 100, Successes: 80, Upstream: 100 + outage,
			PhaseCalls:     [numPhases]int{20, 30, 20, 30},
			PhaseSuccesses: [numPhases]int{20, 10, 20, recovered},
			PhaseUpstream:  [numPhases]int64{20, outage, 20, 30},
			OutageTime:     sc.Span(Outage).Len(),
			Latencies:      []time.Duration{ms(1), ms(5), ms(1500)},
			Bucket:         250 * time.Millisecond,
		}
		for range 84 {
			r.Buckets = append(r.Buckets, outage/14)
		}
		if hasBreaker {
			r.Transitions = []Transition{
				{At: 4 * time.Second, From: breaker.Closed, To: breaker.Open},
				{At: 5 * time.Second, From: breaker.Open, To: breaker.HalfOpen},
				{At: 5*time.Second + time.Millisecond, From: breaker.HalfOpen, To: breaker.Closed},
			}
		}
		return r
	}
	outage := sc.Span(Outage).Len().Seconds()
	return &Report{
		Scenario: sc,
		Settings: Settings{Cooldown: 625 * time.Millisecond, AttemptTimeout: attemptTimeout, CallDeadline: callDeadline, Bucket: 250 * time.Millisecond},
		Results: []Result{
			mk(NoRetries, int64(200*outage), 30, false),
			mk(Naive, int64(600*outage), 30, false),
			mk(Seed, int64(50*outage), 24, true),
			mk(Defaults, int64(5*outage), 30, true),
		},
	}
}

func TestConclusion(t *testing.T) {
	r := fakeReport()
	got := r.Conclusion()
	want := []string{
		"During the outage httpretry defaults sent the upstream 5.0 req/s: 120× fewer than naive retries (600 req/s) and 10× fewer than the seed policy (50 req/s).",
		"After the recovery 100.0% of its calls succeeded, against 100.0% for naive retries and 80.0% for the seed policy: no worse than either.",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Conclusion() =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// The numbers decide the words, whichever way they go.
	r.Results[3].PhaseUpstream[Outage] = r.Results[2].PhaseUpstream[Outage] * 2
	r.Results[3].PhaseSuccesses[Recovery] = 27
	got = r.Conclusion()
	if !strings.Contains(got[0], "2.0× more than the seed policy") {
		t.Errorf("defaults sending twice the seed's load: %q", got[0])
	}
	if !strings.HasSuffix(got[1], "worse than naive retries.") {
		t.Errorf("defaults recovering worse than naive: %q", got[1])
	}

	r.Results[3].PhaseUpstream[Outage] = 0
	if got := r.Conclusion()[0]; !strings.Contains(got, "sent no upstream requests at all") {
		t.Errorf("defaults silent in the outage: %q", got)
	}

	r.Results = r.Results[:2]
	if got := r.Conclusion(); len(got) != 1 || !strings.Contains(got[0], "no conclusion") {
		t.Errorf("without every strategy: %q", got)
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
	var header string
	for line := range strings.Lines(out) {
		if strings.HasPrefix(line, TableHeader+" ") {
			header = line
		}
	}
	for _, name := range []string{NoRetries, Naive, Seed, Defaults + " (interrupted)"} {
		if !strings.Contains(header, name) {
			t.Errorf("table header %q lacks %q", header, name)
		}
	}
	for _, want := range []string{
		"amplification (upstream/call)      15.00x         43.00x        4.50x                             1.35x",
		"upstream load in the outage     200 req/s      600 req/s     50 req/s                           5 req/s",
		"breaker transitions                     -              -            3                                 3",
		"latency p99                         1.50s          1.50s        1.50s                             1.50s",
		"Breaker cooldown scaled from the seed's 120s to 0.625s",
		"Interrupted: the numbers above are what was measured until then.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestLatencyFormat(t *testing.T) {
	for _, tc := range []struct {
		d     time.Duration
		calls int
		want  string
	}{
		{0, 0, "-"},
		{250 * time.Microsecond, 1, "0.25ms"},
		{ms(42), 1, "42ms"},
		{1234 * time.Millisecond, 1, "1.23s"},
	} {
		if got := latency(tc.d, tc.calls); got != tc.want {
			t.Errorf("latency(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestTimeline(t *testing.T) {
	tl := newTimeline(100*time.Millisecond, time.Second)
	for _, at := range []time.Duration{ms(10), ms(20), ms(150), ms(950), ms(999), 5 * time.Second} {
		tl.arrive(at, Outage)
	}
	tl.arrive(ms(30), Healthy)
	all, per := tl.totals()
	if all != 7 || per[Outage] != 6 || per[Healthy] != 1 {
		t.Errorf("totals = %d %v", all, per)
	}
	counts := tl.counts(ms(250))
	if len(counts) != 3 || counts[0] != 3 || counts[1] != 1 || counts[2] != 0 {
		t.Errorf("counts up to 250ms = %v, want [3 1 0]", counts)
	}
	// The 5 s straggler lands in the last bucket, past the 1 s span.
	if got := tl.counts(time.Hour); got[len(got)-1] != 1 || got[9] != 2 {
		t.Errorf("counts = %v", got)
	}
	if got := tl.rate(ms(200), time.Second); got != 20 {
		t.Errorf("rate over the first 200ms = %v req/s, want 20", got)
	}
	if got := tl.rate(ms(50), time.Second); got != 0 {
		t.Errorf("rate before a whole bucket = %v, want 0", got)
	}
}
