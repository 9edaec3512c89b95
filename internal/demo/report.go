package demo

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hordekit/httpretry/breaker"
)

// Report is what a demo measured.
type Report struct {
	Scenario Scenario
	Settings Settings
	// Results holds one Result per strategy, in the order of the reports.
	Results []Result
	// Interrupted is set when the demo was stopped before the end; the
	// results then hold what was measured until then.
	Interrupted bool
	// Ran is how long the demo took, until its last call ended.
	Ran time.Duration
}

// Result is what one strategy did to its upstream, and what its callers got.
type Result struct {
	Strategy string
	// Summary says how the strategy is set up.
	Summary string
	// HasBreaker is set for the strategies with a circuit breaker.
	HasBreaker bool
	// Complete is false when the demo was interrupted.
	Complete bool
	// Transitions are the breaker's state changes, in order.
	Transitions []Transition
	// Late counts the calls that went out more than MaxLag after their
	// arrival time, and Lag is the latest of them: how far the machine fell
	// behind the load it was asked to make.
	Late int
	Lag  time.Duration

	// calls are the calls by arrival index, requests the upstream's
	// requests in arrival order. Requests net/http resends on its own (a
	// GET on a reused connection reset before any response) are included:
	// the upstream received them.
	calls    []callRecord
	requests []request
	// refusals counts, by the phase they happened in, retries the budget
	// refused and calls the breaker refused, from the transport's events.
	budgetRefusals, breakerRefusals [numPhases]int
}

// PhaseStats is what one strategy's callers and upstream saw in one phase.
// Calls belong to the phase they started in, and so do their requests;
// Arrived and Delivered count what happened during the phase, whichever
// call it belongs to, so that a strategy whose callers wait cannot move its
// successes or its load into the next phase.
type PhaseStats struct {
	// Length is how long the phase lasted.
	Length time.Duration
	// Calls started in the phase; Successes got a 200 and its whole body.
	Calls, Successes int
	// Delivered counts the calls that succeeded during the phase.
	Delivered int
	// Throttled counts calls that failed at once because the host was rate
	// limited and their turn was past their deadline.
	Throttled int
	// Requests counts the upstream requests of the phase's calls.
	Requests int
	// Arrived counts the upstream requests that arrived during the phase.
	Arrived int
	// Early counts requests that arrived during the phase before the
	// Retry-After their call was last given had passed.
	Early int
	// P50 and P99 are the calls' latencies, failures included.
	P50, P99 time.Duration
	// PeakInFlight is the most of the phase's calls in flight at once.
	PeakInFlight int
	// BudgetRefusals and BreakerRefusals count retries the retry budget
	// refused and calls the breaker refused during the phase.
	BudgetRefusals, BreakerRefusals int
	// Opened counts the breaker's transitions to open during the phase.
	Opened int
}

// Success is the fraction of calls that succeeded; NaN without calls.
func (s PhaseStats) Success() float64 { return ratio(float64(s.Successes), float64(s.Calls)) }

// Goodput is the calls per second that succeeded during the phase.
func (s PhaseStats) Goodput() float64 { return ratio(float64(s.Delivered), s.Length.Seconds()) }

// PerCall is the upstream requests per call; NaN without calls.
func (s PhaseStats) PerCall() float64 { return ratio(float64(s.Requests), float64(s.Calls)) }

// Load is the upstream requests per second that arrived during the phase.
func (s PhaseStats) Load() float64 { return ratio(float64(s.Arrived), s.Length.Seconds()) }

// Stats returns the strategy's numbers for every phase of sc.
func (r *Result) Stats(sc Scenario) [numPhases]PhaseStats {
	var st [numPhases]PhaseStats
	var lat [numPhases][]time.Duration
	type edge struct {
		at    time.Duration
		delta int
	}
	var edges [numPhases][]edge
	for _, sp := range sc.Spans() {
		st[sp.Phase].Length = sp.Len()
	}
	for _, c := range r.calls {
		if c.cut {
			continue
		}
		p := sc.PhaseAt(c.start)
		s := &st[p]
		s.Calls++
		if c.ok {
			s.Successes++
			st[sc.PhaseAt(c.end)].Delivered++
		}
		if c.throttled {
			s.Throttled++
		}
		lat[p] = append(lat[p], c.latency())
		edges[p] = append(edges[p], edge{c.start, 1}, edge{c.end, -1})
	}
	for _, q := range r.requests {
		st[q.phase].Arrived++
		if q.early {
			st[q.phase].Early++
		}
		if q.call >= 0 && q.call < len(r.calls) && !r.calls[q.call].cut {
			st[sc.PhaseAt(r.calls[q.call].start)].Requests++
		}
	}
	for p := range numPhases {
		slices.Sort(lat[p])
		st[p].P50, st[p].P99 = percentile(lat[p], 0.50), percentile(lat[p], 0.99)
		// Ends before starts at the same instant: a call that ends as
		// another starts is not in flight with it.
		slices.SortFunc(edges[p], func(a, b edge) int {
			if a.at != b.at {
				return int(a.at - b.at)
			}
			return a.delta - b.delta
		})
		n := 0
		for _, e := range edges[p] {
			n += e.delta
			st[p].PeakInFlight = max(st[p].PeakInFlight, n)
		}
		st[p].BudgetRefusals, st[p].BreakerRefusals = r.budgetRefusals[p], r.breakerRefusals[p]
	}
	for _, t := range r.Transitions {
		if t.To == breaker.Open {
			st[sc.PhaseAt(t.At)].Opened++
		}
	}
	return st
}

// RecoveryTimes says how soon callers got through again once the
// upstream recovered: at the end of the outage, when it answers again
// (rate-limited), and at the start of the recovery, when it is wholly
// healthy again.
type RecoveryTimes struct {
	// AfterOutage is the time from the end of the outage to the first call
	// that succeeded; ok is false when none did.
	AfterOutage   time.Duration
	AfterOutageOK bool
	// First is the time from the start of the recovery to the first call
	// that succeeded after it.
	First   time.Duration
	FirstOK bool
	// Full is the time from the start of the recovery until calls succeed
	// 99% of the time: the start of the first call from which on at least
	// 99% of the calls started during the recovery succeeded.
	Full   time.Duration
	FullOK bool
}

// Recovery returns the strategy's recovery in sc.
func (r *Result) Recovery(sc Scenario) RecoveryTimes {
	var rec RecoveryTimes
	back, up := sc.Span(Outage).End, sc.Span(Recovery).Start
	var after []callRecord
	for _, c := range r.calls {
		if c.cut {
			continue
		}
		if c.ok && c.end >= back && (!rec.AfterOutageOK || c.end-back < rec.AfterOutage) {
			rec.AfterOutage, rec.AfterOutageOK = c.end-back, true
		}
		if c.ok && c.end >= up && (!rec.FirstOK || c.end-up < rec.First) {
			rec.First, rec.FirstOK = c.end-up, true
		}
		if c.start >= up && c.start < sc.Duration {
			after = append(after, c)
		}
	}
	// Suffix success: walk back from the last call.
	ok := 0
	for i := len(after) - 1; i >= 0; i-- {
		if after[i].ok {
			ok++
		}
		if float64(ok) >= 0.99*float64(len(after)-i) {
			rec.Full, rec.FullOK = after[i].start-up, true
		}
	}
	return rec
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

// Upstream returns every request the upstream received.
func (r *Result) Upstream() int { return len(r.requests) }

// result returns the result of the named strategy, or nil.
func (r *Report) result(name string) *Result {
	for i := range r.Results {
		if r.Results[i].Strategy == name {
			return &r.Results[i]
		}
	}
	return nil
}

// row is one line of a phase's table: a label and a cell per strategy.
type row struct {
	label string
	cell  func(s PhaseStats) string
	// only, when set, limits the row to the phases it is true for.
	only func(p Phase) bool
}

// rows are the lines of every phase's table.
var rows = []row{
	{label: "success", cell: func(s PhaseStats) string { return percent(s.Success()) }},
	{label: "goodput (successful calls/s)", cell: func(s PhaseStats) string { return number(s.Goodput(), "%.1f") }},
	{label: "upstream requests per call", cell: func(s PhaseStats) string { return number(s.PerCall(), "%.2f") }},
	{label: "upstream load (req/s)", cell: func(s PhaseStats) string { return number(s.Load(), "%.0f") }},
	{label: "latency p50", cell: func(s PhaseStats) string { return latency(s.P50, s.Calls) }},
	{label: "latency p99", cell: func(s PhaseStats) string { return latency(s.P99, s.Calls) }},
	{label: "peak callers in flight", cell: func(s PhaseStats) string { return fmt.Sprint(s.PeakInFlight) }},
	{label: "requests before their Retry-After", cell: func(s PhaseStats) string { return fmt.Sprint(s.Early) },
		only: func(p Phase) bool { return p == RateLimited }},
	{label: "calls failed fast, rate limited", cell: func(s PhaseStats) string { return fmt.Sprint(s.Throttled) },
		only: func(p Phase) bool { return p == RateLimited }},
	{label: "retries refused by the budget", cell: func(s PhaseStats) string { return fmt.Sprint(s.BudgetRefusals) },
		only: func(p Phase) bool { return p != Healthy && p != Recovery }},
	{label: "breaker opened", cell: func(s PhaseStats) string { return fmt.Sprint(s.Opened) },
		only: func(p Phase) bool { return p != Healthy }},
}

// TableHeader is the first word of every table's header line.
const TableHeader = "strategy"

// WriteText writes the report as the command prints it: the set-up, a
// scorecard per phase with its verdict, the recovery, and the targets.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	sc, st := r.Scenario, r.Settings
	fmt.Fprintf(&b, "httpretry demo: %s calls/s (%s arrivals) to each strategy at once for %s, each call with a %s deadline, seed %d.\n",
		trimFloat(st.Rate), st.Arrivals, seconds(sc.Duration), seconds(st.Deadline), sc.Seed)
	b.WriteString("The same scenario for every strategy, each against its own upstream:\n")
	for _, line := range sc.Describe() {
		fmt.Fprintf(&b, "  %s\n", line)
	}
	fmt.Fprintf(&b, "Breaker cooldown scaled from the seed's 120s to %s for %q and %q.\n\n",
		seconds(st.Cooldown), Seed, Defaults)
	for _, res := range r.Results {
		fmt.Fprintf(&b, "  %-19s %s\n", res.Strategy+":", res.Summary)
	}
	stats := r.stats()
	for _, sp := range sc.Spans() {
		fmt.Fprintf(&b, "\n%s (%s - %s)\n", sp.Phase, seconds(sp.Start), seconds(sp.End))
		writeTable(&b, r.phaseTable(sp.Phase, stats))
		for _, line := range wrap(r.Verdict(sp.Phase), 100) {
			b.WriteString("  " + line + "\n")
		}
	}
	fmt.Fprintf(&b, "\nrecovery times: the outage ends at %s, the rate limit at %s\n", seconds(sc.Span(Outage).End),
		seconds(sc.Span(Recovery).Start))
	writeTable(&b, r.recoveryTable())
	for _, line := range wrap(r.RecoveryVerdict(), 100) {
		b.WriteString("  " + line + "\n")
	}
	fmt.Fprintf(&b, "\nwhole run: upstream requests")
	for _, res := range r.Results {
		fmt.Fprintf(&b, "  %s %d", res.Strategy, res.Upstream())
	}
	b.WriteString(". Upstream requests include those net/http resends by itself (a GET whose reused\n" +
		"connection is reset before any response goes out once more), so even \"no retries\" sends more than one per call.\n")
	if targets := r.Targets(); len(targets) > 0 {
		b.WriteString("\ntargets for httpretry defaults:\n")
		for _, t := range targets {
			verdict := "met"
			if !t.Met {
				verdict = "MISSED"
			}
			fmt.Fprintf(&b, "  %-6s %s: %s\n", verdict, t.Name, t.Detail)
		}
	}
	if warning := r.LagWarning(); warning != "" {
		b.WriteString("\n" + warning + "\n")
	}
	if r.Interrupted {
		b.WriteString("\nInterrupted: the numbers above are what was measured until then.\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// MaxLag is how late a call may go out after its arrival time before it
// counts as late; MaxLateShare is the share of late calls past which the
// machine did not keep up with the load.
const (
	MaxLag       = 100 * time.Millisecond
	MaxLateShare = 0.01
)

// LagWarning says, when more than MaxLateShare of some strategy's calls
// went out more than MaxLag after their arrival time, that the machine could
// not keep up and the numbers measure it as much as the strategies; ""
// otherwise. A single stall of the machine is not enough.
func (r *Report) LagWarning() string {
	var share float64
	var worst time.Duration
	for _, res := range r.Results {
		if len(res.calls) > 0 {
			share = max(share, float64(res.Late)/float64(len(res.calls)))
		}
		worst = max(worst, res.Lag)
	}
	if share <= MaxLateShare {
		return ""
	}
	return fmt.Sprintf("WARNING: the machine could not keep up with the load: %.1f%% of a strategy's calls went out more than %s "+
		"after their arrival time, up to %s. These numbers measure the machine as much as the strategies; run again on a "+
		"quieter one, or with a lower --rate.", 100*share, latency(MaxLag, 1), latency(worst, 1))
}

// stats returns every result's phase stats, in the order of Results.
func (r *Report) stats() [][numPhases]PhaseStats {
	out := make([][numPhases]PhaseStats, len(r.Results))
	for i := range r.Results {
		out[i] = r.Results[i].Stats(r.Scenario)
	}
	return out
}

// header returns the tables' header line.
func (r *Report) header() []string {
	h := []string{TableHeader}
	for _, res := range r.Results {
		name := res.Strategy
		if !res.Complete {
			name += " (interrupted)"
		}
		h = append(h, name)
	}
	return h
}

// phaseTable returns phase p's table: a header and a line per row.
func (r *Report) phaseTable(p Phase, stats [][numPhases]PhaseStats) [][]string {
	table := [][]string{r.header()}
	for _, rw := range rows {
		if rw.only != nil && !rw.only(p) {
			continue
		}
		line := []string{rw.label}
		for i := range r.Results {
			line = append(line, rw.cell(stats[i][p]))
		}
		table = append(table, line)
	}
	return table
}

// recoveryTable returns the recovery's table.
func (r *Report) recoveryTable() [][]string {
	table := [][]string{r.header()}
	back := []string{"first success after the outage ends"}
	first, full := []string{"first success after the recovery starts"}, []string{"99% success after the recovery starts"}
	for i := range r.Results {
		rec := r.Results[i].Recovery(r.Scenario)
		back = append(back, since(rec.AfterOutage, rec.AfterOutageOK))
		first = append(first, since(rec.First, rec.FirstOK))
		full = append(full, since(rec.Full, rec.FullOK))
	}
	return append(table, back, first, full)
}

// since formats a delay after the recovery, or "never".
func since(d time.Duration, ok bool) string {
	if !ok {
		return "never"
	}
	return latency(d, 1)
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
		b.WriteString("  ")
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

// wrap breaks text into lines of at most width runes, at spaces.
func wrap(text string, width int) []string {
	var lines []string
	var line strings.Builder
	for _, word := range strings.Fields(text) {
		if line.Len() > 0 && utf8.RuneCountInString(line.String())+1+utf8.RuneCountInString(word) > width {
			lines = append(lines, line.String())
			line.Reset()
		}
		if line.Len() > 0 {
			line.WriteString(" ")
		}
		line.WriteString(word)
	}
	if line.Len() > 0 {
		lines = append(lines, line.String())
	}
	return lines
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

// trimFloat formats f without useless decimals.
func trimFloat(f float64) string {
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", f), "0"), ".")
}

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
