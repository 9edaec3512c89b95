package demo

import (
	"fmt"
	"io"
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// Report is what a demo measured.
type Report struct {
	Scenario Scenario
	Settings Settings
	// Results holds one Result per strategy that ran, in order.
	Results []Result
	// Interrupted is set when the demo was stopped before every strategy
	// ran its full duration; the last Result may then be partial.
	Interrupted bool
}

// Result is what one strategy did to the upstream, and what its callers got.
type Result struct {
	Strategy string
	// Summary says how the strategy is set up.
	Summary string
	// HasBreaker is set for the strategies with a circuit breaker.
	HasBreaker bool
	// Complete is false when the demo was interrupted during this strategy.
	Complete bool
	// Ran is how long the run took, until its last call ended.
	Ran time.Duration

	// Calls counts the logical calls the clients made, Successes those that
	// got a 200 and its whole body. PhaseCalls and PhaseSuccesses split them
	// by the phase in which each call started.
	Calls, Successes           int
	PhaseCalls, PhaseSuccesses [numPhases]int
	// Latencies are the calls' latencies, failures included, sorted.
	Latencies []time.Duration

	// Upstream counts the requests the upstream received, PhaseUpstream
	// splits them by the phase in which they arrived. Requests net/http
	// resends on its own (a GET on a reused connection reset before any
	// response) are included: the upstream received them.
	Upstream      int64
	PhaseUpstream [numPhases]int64
	// OutageTime is how much of the outage the run went through: all of it
	// unless interrupted.
	OutageTime time.Duration

	// Buckets counts upstream requests per Bucket of time from the start.
	Buckets []int64
	Bucket  time.Duration

	// Transitions are the breaker's state changes, in order.
	Transitions []Transition
}

// Amplification is upstream requests per logical call; NaN without calls.
func (r *Result) Amplification() float64 { return ratio(float64(r.Upstream), float64(r.Calls)) }

// SuccessRate is the fraction of calls that succeeded; NaN without calls.
func (r *Result) SuccessRate() float64 { return ratio(float64(r.Successes), float64(r.Calls)) }

// RecoveryRate is the fraction of the calls started during the recovery
// that succeeded: how well the strategy lets its callers back in once the
// upstream is healthy again. NaN when no call started then.
func (r *Result) RecoveryRate() float64 {
	return ratio(float64(r.PhaseSuccesses[Recovery]), float64(r.PhaseCalls[Recovery]))
}

// OutageLoad is the upstream requests per second during the outage: how hard
// the strategy hits an upstream that is down. NaN when the run never got
// there.
func (r *Result) OutageLoad() float64 {
	return ratio(float64(r.PhaseUpstream[Outage]), r.OutageTime.Seconds())
}

// Percentile returns the latency below which a fraction q of the calls
// fall (nearest rank), or 0 without calls.
func (r *Result) Percentile(q float64) time.Duration {
	return percentile(r.Latencies, q)
}

// percentile is the nearest-rank percentile of sorted: the smallest value
// with at least a fraction q of the values at or below it.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// ratio is a/b, NaN when b is 0 so that the reports print "-" rather than
// a made-up number.
func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

// result returns the result of the named strategy, or nil.
func (r *Report) result(name string) *Result {
	for i := range r.Results {
		if r.Results[i].Strategy == name {
			return &r.Results[i]
		}
	}
	return nil
}

// row is one line of the table: a label and a cell per strategy.
type row struct {
	label string
	cell  func(r *Result) string
}

// rows are the table's lines.
var rows = []row{
	{"logical calls", func(r *Result) string { return fmt.Sprint(r.Calls) }},
	{"upstream requests", func(r *Result) string { return fmt.Sprint(r.Upstream) }},
	{"amplification (upstream/call)", func(r *Result) string { return number(r.Amplification(), "%.2fx") }},
	{"success rate", func(r *Result) string { return percent(r.SuccessRate()) }},
	{"latency p50", func(r *Result) string { return latency(r.Percentile(0.50), r.Calls) }},
	{"latency p99", func(r *Result) string { return latency(r.Percentile(0.99), r.Calls) }},
	{"upstream load in the outage", func(r *Result) string { return number(r.OutageLoad(), "%.0f req/s") }},
	{"success after recovery", func(r *Result) string { return percent(r.RecoveryRate()) }},
	{"breaker transitions", func(r *Result) string {
		if !r.HasBreaker {
			return "-"
		}
		return fmt.Sprint(len(r.Transitions))
	}},
}

// TableHeader is the first word of the table's header line.
const TableHeader = "strategy"

// WriteText writes the report as the command prints it: the set-up, the
// table, and the conclusion.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	sc, st := r.Scenario, r.Settings
	fmt.Fprintf(&b, "httpretry demo: %d clients, %s per strategy, seed %d; the same scenario for every strategy:\n",
		sc.Clients, seconds(sc.Duration), sc.Seed)
	for _, line := range sc.Describe() {
		fmt.Fprintf(&b, "  %s\n", line)
	}
	fmt.Fprintf(&b, "Breaker cooldown scaled from the seed's 120s to %s (the run's duration / %d) for %q and %q.\n",
		seconds(st.Cooldown), cooldownShare, Seed, Defaults)
	fmt.Fprintf(&b, "Every attempt times out after %s, every call after %s. Latencies include failed calls.\n\n",
		seconds(st.AttemptTimeout), seconds(st.CallDeadline))
	for _, res := range r.Results {
		fmt.Fprintf(&b, "  %-18s %s\n", res.Strategy+":", res.Summary)
	}
	b.WriteString("\n")

	header := []string{TableHeader}
	for _, res := range r.Results {
		name := res.Strategy
		if !res.Complete {
			name += " (interrupted)"
		}
		header = append(header, name)
	}
	table := [][]string{header}
	for _, rw := range rows {
		line := []string{rw.label}
		for i := range r.Results {
			line = append(line, rw.cell(&r.Results[i]))
		}
		table = append(table, line)
	}
	writeTable(&b, table)
	b.WriteString("Upstream requests include those net/http resends by itself: a GET whose reused connection is\n" +
		"reset before any response goes out once more on a new one, so even \"no retries\" sends more than one per call.\n")
	b.WriteString("\n")
	for _, line := range r.Conclusion() {
		b.WriteString(line + "\n")
	}
	if r.Interrupted {
		b.WriteString("Interrupted: the numbers above are what was measured until then.\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeTable writes rows of cells in columns two spaces apart: the first
// column (the labels) aligned left, the others (the numbers) right.
func writeTable(b *strings.Builder, table [][]string) {
	var widths []int
	for _, line := range table {
		for i, cell := range line {
			if i == len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(cell))
		}
	}
	for _, line := range table {
		for i, cell := range line {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(cell))
			if i == 0 {
				b.WriteString(cell + pad)
			} else {
				b.WriteString("  " + pad + cell)
			}
		}
		b.WriteString("\n")
	}
}

// Conclusion returns two lines computed from the results: how much the
// defaults spared the upstream during the outage compared with naive
// retries and the seed policy, and how their callers fared after the
// recovery. When the demo stopped before all three went through the outage
// there is nothing to compare, and it says so.
func (r *Report) Conclusion() []string {
	def, naive, seed := r.result(Defaults), r.result(Naive), r.result(Seed)
	if def == nil || naive == nil || seed == nil || def.OutageTime == 0 {
		return []string{"Not every strategy went through the outage, so there is no conclusion to draw."}
	}
	d, n, s := def.OutageLoad(), naive.OutageLoad(), seed.OutageLoad()
	var load string
	if d == 0 {
		load = fmt.Sprintf("During the outage %s sent no upstream requests at all, against %.0f req/s for %s and %.0f req/s for the %s.",
			Defaults, n, Naive, s, Seed)
	} else {
		load = fmt.Sprintf("During the outage %s sent the upstream %s req/s: %s than %s (%.0f req/s) and %s than the %s (%.0f req/s).",
			Defaults, loadNumber(d), times(d, n), Naive, n, times(d, s), Seed, s)
	}
	dr, nr, sr := def.RecoveryRate(), naive.RecoveryRate(), seed.RecoveryRate()
	verdict := "no worse than either"
	switch {
	case math.IsNaN(dr) || math.IsNaN(nr) || math.IsNaN(sr):
		verdict = "not comparable: a strategy made no call after the recovery"
	case dr < nr && dr < sr:
		verdict = "worse than both"
	case dr < nr:
		verdict = "worse than " + Naive
	case dr < sr:
		verdict = "worse than the " + Seed
	}
	after := fmt.Sprintf("After the recovery %s of its calls succeeded, against %s for %s and %s for the %s: %s.",
		percent(dr), percent(nr), Naive, percent(sr), Seed, verdict)
	return []string{load, after}
}

// times says how mine compares with other: "12× fewer", "1.3× more".
func times(mine, other float64) string {
	switch {
	case other == mine:
		return "as many"
	case other > mine:
		return factor(other/mine) + " fewer"
	}
	return factor(mine/other) + " more"
}

// factor formats a ratio with the precision it deserves.
func factor(f float64) string {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return "infinitely"
	}
	if f >= 10 {
		return fmt.Sprintf("%.0f×", f)
	}
	return fmt.Sprintf("%.1f×", f)
}

// loadNumber formats a request rate: whole numbers unless it is small.
func loadNumber(f float64) string {
	if f < 10 {
		return fmt.Sprintf("%.1f", f)
	}
	return fmt.Sprintf("%.0f", f)
}

// number formats f, or "-" when it is not a number.
func number(f float64, format string) string {
	if math.IsNaN(f) {
		return "-"
	}
	return fmt.Sprintf(format, f)
}

// percent formats a fraction as a percentage, or "-".
func percent(f float64) string { return number(100*f, "%.1f%%") }

// latency formats a latency with three significant digits at most, or "-"
// when there were no calls.
func latency(d time.Duration, calls int) string {
	switch {
	case calls == 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}
