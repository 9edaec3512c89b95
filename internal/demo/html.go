package demo

import (
	"fmt"
	"html"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hordekit/httpretry/breaker"
)

// The chart's geometry, in SVG user units. One chart per strategy, all with
// the same axes, stacked so that the eye compares them down the page.
const (
	chartWidth  = 960
	chartHeight = 262
	plotLeft    = 64  // room for the left y labels
	plotRight   = 900 // room for the right y labels
	plotTop     = 26  // room for the phase labels
	plotBottom  = 186
	bandTop     = 194 // the breaker state band
	bandBottom  = 208
	axisLabelY  = 226
	// minSegment is the narrowest a breaker state is drawn: a half-open
	// probe lasts a millisecond, and must still be seen.
	minSegment = 3.0
)

// Colours of the phases (background bands), the breaker states and the
// in-flight line.
var (
	phaseFill = [numPhases]string{"#e8f5e9", "#fff9c4", "#ffe0b2", "#ffcdd2", "#e1bee7", "#e3f2fd"}
	stateFill = map[breaker.State]string{breaker.Closed: "#43a047", breaker.HalfOpen: "#fbc02d", breaker.Open: "#e53935"}
)

const (
	// noBreakerFill is the band of a strategy without a breaker.
	noBreakerFill = "#bdbdbd"
	// inFlightStroke draws the callers in flight.
	inFlightStroke = "#d84315"
)

// css is the page's only style: no fonts, images or anything else fetched.
const css = `body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#212121}
h1{font-size:1.4em}h2{font-size:1.15em;margin:1.8em 0 .3em}h3{font-size:1em;margin:1.4em 0 .2em}
p.summary{margin:.2em 0;color:#555}p.verdict{margin:.4em 0 1em;max-width:60em}
table{border-collapse:collapse;margin:.6em 0}
th,td{padding:.2em .7em;border-bottom:1px solid #e0e0e0;text-align:right}
th:first-child,td:first-child{text-align:left}
td.best{font-weight:700}
.legend span{display:inline-block;margin-right:1.2em}
.legend i{display:inline-block;width:1em;height:1em;vertical-align:middle;margin-right:.3em}
li.missed{color:#b71c1c}
svg text{font-size:11px;fill:#424242}
svg text.phase{font-size:12px;font-weight:600}
pre{background:#fafafa;padding:.6em;white-space:pre-wrap}`

// WriteHTML writes the report as one self-contained page: the scenario,
// each phase's scorecard with its verdict, the recovery, the targets, and
// per strategy an SVG chart of upstream requests per second and callers in
// flight over time against the phases, with the breaker's state as a band
// under it. Every chart has the same scales, so the strategy that hammers
// the upstream, or piles up callers, stands out.
func (r *Report) WriteHTML(w io.Writer) error {
	var b strings.Builder
	sc, st := r.Scenario, r.Settings
	b.WriteString("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n")
	b.WriteString("<title>httpretry demo</title>\n<style>\n" + css + "\n</style>\n</head>\n<body>\n")
	fmt.Fprintf(&b, "<h1>httpretry demo: %s calls/s (%s) to each strategy at once, %s, seed %d</h1>\n",
		trimFloat(st.Rate), st.Arrivals, seconds(sc.Duration), sc.Seed)
	b.WriteString("<pre>")
	for _, line := range sc.Describe() {
		b.WriteString(html.EscapeString(line) + "\n")
	}
	fmt.Fprintf(&b, "every call has a %s deadline; breaker cooldown %s (the seed's 120s scaled to the run)</pre>\n",
		seconds(st.Deadline), seconds(st.Cooldown))
	for _, res := range r.Results {
		fmt.Fprintf(&b, "<p class=\"summary\"><b>%s</b>: %s</p>\n", html.EscapeString(res.Strategy), html.EscapeString(res.Summary))
	}
	if r.Interrupted {
		b.WriteString("<p><b>Interrupted</b>: these are the numbers measured until then.</p>\n")
	}
	if warning := r.LagWarning(); warning != "" {
		fmt.Fprintf(&b, "<p><b>%s</b></p>\n", html.EscapeString(warning))
	}

	stats := r.stats()
	for _, sp := range sc.Spans() {
		fmt.Fprintf(&b, "<h2 id=\"%s\">%s <small>(%s - %s)</small></h2>\n", sp.Phase, sp.Phase, seconds(sp.Start), seconds(sp.End))
		writeHTMLTable(&b, r.phaseTable(sp.Phase, stats))
		fmt.Fprintf(&b, "<p class=\"verdict\">%s</p>\n", html.EscapeString(r.Verdict(sp.Phase)))
	}
	fmt.Fprintf(&b, "<h2 id=\"recovery-times\">recovery times <small>(the outage ends at %s, the rate limit at %s)</small></h2>\n",
		seconds(sc.Span(Outage).End), seconds(sc.Span(Recovery).Start))
	writeHTMLTable(&b, r.recoveryTable())
	fmt.Fprintf(&b, "<p class=\"verdict\">%s</p>\n", html.EscapeString(r.RecoveryVerdict()))
	if targets := r.Targets(); len(targets) > 0 {
		b.WriteString("<h2 id=\"targets\">targets for httpretry defaults</h2>\n<ul>\n")
		for _, t := range targets {
			class, verdict := "", "met"
			if !t.Met {
				class, verdict = " class=\"missed\"", "missed"
			}
			fmt.Fprintf(&b, "<li%s><b>%s</b>: %s: %s</li>\n", class, verdict, html.EscapeString(t.Name), html.EscapeString(t.Detail))
		}
		b.WriteString("</ul>\n")
	}

	b.WriteString("<h2 id=\"over-time\">over time</h2>\n<p class=\"legend\">")
	for p := range numPhases {
		fmt.Fprintf(&b, "<span><i style=\"background:%s\"></i>%s</span>", phaseFill[p], p)
	}
	fmt.Fprintf(&b, "<br/><span><i style=\"background:#263238\"></i>upstream requests/s (left axis)</span>"+
		"<span><i style=\"background:%s\"></i>callers in flight (right axis)</span><br/>breaker: ", inFlightStroke)
	for _, s := range []breaker.State{breaker.Closed, breaker.HalfOpen, breaker.Open} {
		fmt.Fprintf(&b, "<span><i style=\"background:%s\"></i>%s</span>", stateFill[s], s)
	}
	fmt.Fprintf(&b, "<span><i style=\"background:%s\"></i>no breaker</span></p>\n", noBreakerFill)
	lines := make([]timeline, len(r.Results))
	var ax axes
	for i := range r.Results {
		lines[i] = r.Results[i].timeline(bucket)
		ax.fit(lines[i])
	}
	ax.round()
	for i := range r.Results {
		res := &r.Results[i]
		fmt.Fprintf(&b, "<h3>%s</h3>\n", html.EscapeString(res.Strategy))
		r.writeChart(&b, res, lines[i], ax)
	}
	b.WriteString("</body>\n</html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// writeHTMLTable writes a table whose first line is the header.
func writeHTMLTable(b *strings.Builder, table [][]string) {
	b.WriteString("<table>\n")
	for i, line := range table {
		tag := "td"
		if i == 0 {
			tag = "th"
		}
		b.WriteString("<tr>")
		for _, cell := range line {
			fmt.Fprintf(b, "<%s>%s</%s>", tag, html.EscapeString(cell), tag)
		}
		b.WriteString("</tr>\n")
	}
	b.WriteString("</table>\n")
}

// timeline is a strategy's run in buckets of time: the upstream requests
// that arrived in each, and the callers in flight at its end.
type timeline struct {
	width    time.Duration
	requests []int
	inFlight []int
	end      time.Duration // when the last call ended
}

// timeline buckets the result's requests and calls.
func (r *Result) timeline(width time.Duration) timeline {
	tl := timeline{width: width}
	for _, c := range r.calls {
		if !c.cut {
			tl.end = max(tl.end, c.end)
		}
	}
	for _, q := range r.requests {
		tl.end = max(tl.end, q.at)
	}
	n := int(tl.end/width) + 1
	tl.requests = make([]int, n)
	for _, q := range r.requests {
		tl.requests[min(int(q.at/width), n-1)]++
	}
	// In flight at each bucket's end: calls started before it that had not
	// ended by then.
	var starts, ends []time.Duration
	for _, c := range r.calls {
		if !c.cut {
			starts, ends = append(starts, c.start), append(ends, c.end)
		}
	}
	slices.Sort(starts)
	slices.Sort(ends)
	tl.inFlight = make([]int, n)
	si, ei := 0, 0
	for i := range n {
		at := time.Duration(i+1) * width
		for si < len(starts) && starts[si] < at {
			si++
		}
		for ei < len(ends) && ends[ei] <= at {
			ei++
		}
		tl.inFlight[i] = si - ei
	}
	return tl
}

// axes are the scales every chart shares.
type axes struct {
	xMax          time.Duration
	rateMax, nMax float64 // requests/s and callers
}

// fit widens the axes to hold tl.
func (a *axes) fit(tl timeline) {
	a.xMax = max(a.xMax, tl.end)
	for i, n := range tl.requests {
		a.rateMax = max(a.rateMax, float64(n)/tl.width.Seconds())
		a.nMax = max(a.nMax, float64(tl.inFlight[i]))
	}
}

// round makes the axes end on round numbers.
func (a *axes) round() {
	a.xMax = time.Duration(math.Ceil(a.xMax.Seconds())) * time.Second
	a.rateMax, a.nMax = niceCeil(a.rateMax), niceCeil(a.nMax)
}

// writeChart writes one strategy's SVG chart.
func (r *Report) writeChart(b *strings.Builder, res *Result, tl timeline, ax axes) {
	x := func(t time.Duration) float64 {
		return plotLeft + (plotRight-plotLeft)*float64(t)/float64(ax.xMax)
	}
	yRate := func(v float64) float64 { return plotBottom - (plotBottom-plotTop)*v/ax.rateMax }
	yN := func(v float64) float64 { return plotBottom - (plotBottom-plotTop)*v/ax.nMax }
	fmt.Fprintf(b, "<svg width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"%s\">\n",
		chartWidth, chartHeight, chartWidth, chartHeight, html.EscapeString(res.Strategy+": upstream requests and callers in flight over time"))

	// The phases as background bands; recovery stretches to the end.
	spans := r.Scenario.Spans()
	spans[len(spans)-1].End = max(spans[len(spans)-1].End, ax.xMax)
	for _, sp := range spans {
		fmt.Fprintf(b, "<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\"/>\n",
			x(sp.Start), plotTop, x(sp.End)-x(sp.Start), plotBottom-plotTop, phaseFill[sp.Phase])
		fmt.Fprintf(b, "<text class=\"phase\" x=\"%.1f\" y=\"%d\">%s</text>\n", x(sp.Start)+4, plotTop-8, sp.Phase)
	}

	// The grid, with requests/s on the left and callers on the right.
	for i := 0; i <= 4; i++ {
		rate, n := ax.rateMax*float64(i)/4, ax.nMax*float64(i)/4
		fmt.Fprintf(b, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#9e9e9e\" stroke-width=\"0.5\"/>\n",
			plotLeft, plotRight, yRate(rate), yRate(rate))
		fmt.Fprintf(b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s/s</text>\n", plotLeft-6, yRate(rate)+4,
			strconv.FormatFloat(rate, 'f', -1, 64))
		fmt.Fprintf(b, "<text x=\"%d\" y=\"%.1f\" fill=\"%s\">%s</text>\n", plotRight+6, yN(n)+4, inFlightStroke,
			strconv.FormatFloat(n, 'f', -1, 64))
	}

	// Upstream requests per second, as a step area.
	var path strings.Builder
	fmt.Fprintf(&path, "M%.1f,%.1f", x(0), yRate(0))
	for i, n := range tl.requests {
		from, to := time.Duration(i)*tl.width, time.Duration(i+1)*tl.width
		rate := float64(n) / tl.width.Seconds()
		fmt.Fprintf(&path, " L%.1f,%.1f L%.1f,%.1f", x(from), yRate(rate), x(to), yRate(rate))
	}
	fmt.Fprintf(&path, " L%.1f,%.1f Z", x(time.Duration(len(tl.requests))*tl.width), yRate(0))
	fmt.Fprintf(b, "<path d=\"%s\" fill=\"#263238\" fill-opacity=\"0.7\" stroke=\"#263238\" stroke-width=\"1\"/>\n", path.String())

	// Callers in flight, as a line.
	var line strings.Builder
	fmt.Fprintf(&line, "M%.1f,%.1f", x(0), yN(0))
	for i, n := range tl.inFlight {
		fmt.Fprintf(&line, " L%.1f,%.1f", x(time.Duration(i+1)*tl.width), yN(float64(n)))
	}
	fmt.Fprintf(b, "<path d=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\"/>\n", line.String(), inFlightStroke)

	// The breaker's state, from its transitions.
	fmt.Fprintf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">breaker</text>\n", plotLeft-6, bandBottom-3)
	if !res.HasBreaker {
		fmt.Fprintf(b, "<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\"/>\n",
			x(0), bandTop, x(tl.end)-x(0), bandBottom-bandTop, noBreakerFill)
	} else {
		// Half-open last, on top: a probe's millisecond would otherwise
		// vanish under the open stretch drawn after it.
		segs := segments(res.Transitions, tl.end)
		for _, top := range []bool{false, true} {
			for _, seg := range segs {
				if (seg.state == breaker.HalfOpen) != top {
					continue
				}
				width := max(minSegment, x(seg.to)-x(seg.from))
				fmt.Fprintf(b, "<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\"><title>%s %s-%s</title></rect>\n",
					x(seg.from), bandTop, width, bandBottom-bandTop, stateFill[seg.state],
					seg.state, seconds(seg.from.Round(time.Millisecond)), seconds(seg.to.Round(time.Millisecond)))
			}
		}
	}

	// The time axis.
	step := niceCeil(ax.xMax.Seconds() / 10)
	for s := 0.0; s <= ax.xMax.Seconds()+1e-9; s += step {
		t := time.Duration(s * float64(time.Second))
		fmt.Fprintf(b, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", x(t), axisLabelY, seconds(t))
	}
	fmt.Fprintf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">time since the start</text>\n", plotRight, axisLabelY+18)
	b.WriteString("</svg>\n")
}

// segment is a stretch of time in one breaker state.
type segment struct {
	from, to time.Duration
	state    breaker.State
}

// segments turns a breaker's transitions into the stretches between them,
// starting closed at 0 and ending at end.
func segments(ts []Transition, end time.Duration) []segment {
	var out []segment
	state, from := breaker.Closed, time.Duration(0)
	for _, t := range ts {
		out = append(out, segment{from: from, to: max(from, t.At), state: state})
		state, from = t.To, max(from, t.At)
	}
	return append(out, segment{from: from, to: max(from, end), state: state})
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten, so the axes
// have round labels; 1 when v is 0.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}
