package demo

import (
	"fmt"
	"html"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/hordekit/httpretry/breaker"
)

// The chart's geometry, in SVG user units. One chart per strategy, all with
// the same axes, stacked so that the eye compares them down the page.
const (
	chartWidth  = 960
	chartHeight = 250
	plotLeft    = 64  // room for the y labels
	plotRight   = 944 // chartWidth minus a margin
	plotTop     = 26  // room for the phase labels
	plotBottom  = 186
	bandTop     = 194 // the breaker state band
	bandBottom  = 208
	axisLabelY  = 226
	// minSegment is the narrowest a breaker state is drawn: a half-open
	// probe lasts a millisecond, and must still be seen.
	minSegment = 3.0
)

// Colours of the phases (background bands) and the breaker states.
var (
	phaseFill = [numPhases]string{"#e8f5e9", "#ffcdd2", "#ffe0b2", "#e3f2fd"}
	stateFill = map[breaker.State]string{breaker.Closed: "#43a047", breaker.HalfOpen: "#fbc02d", breaker.Open: "#e53935"}
)

// noBreakerFill is the band of a strategy without a breaker.
const noBreakerFill = "#bdbdbd"

// css is the page's only style: no fonts, images or anything else fetched.
const css = `body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#212121}
h1{font-size:1.4em}h2{font-size:1.1em;margin:1.6em 0 .2em}
p.summary{margin:.2em 0;color:#555}
table{border-collapse:collapse;margin:1em 0}
th,td{padding:.25em .8em;border-bottom:1px solid #e0e0e0;text-align:right}
th:first-child,td:first-child{text-align:left}
.legend span{display:inline-block;margin-right:1.2em}
.legend i{display:inline-block;width:1em;height:1em;vertical-align:middle;margin-right:.3em}
svg text{font-size:11px;fill:#424242}
svg text.phase{font-size:12px;font-weight:600}
pre{background:#fafafa;padding:.6em}`

// WriteHTML writes the report as one self-contained page: the scenario,
// the table, the conclusion, and per strategy an SVG chart of upstream
// requests per second over time against the scenario's phases, with the
// breaker's state as a band under it. Every chart has the same y scale, so
// the strategy that hammers the upstream during the outage stands out.
func (r *Report) WriteHTML(w io.Writer) error {
	var b strings.Builder
	b.WriteString("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n")
	b.WriteString("<title>httpretry demo</title>\n<style>\n" + css + "\n</style>\n</head>\n<body>\n")
	fmt.Fprintf(&b, "<h1>httpretry demo: %d clients, %s per strategy, seed %d</h1>\n",
		r.Scenario.Clients, seconds(r.Scenario.Duration), r.Scenario.Seed)
	b.WriteString("<pre>")
	for _, line := range r.Scenario.Describe() {
		b.WriteString(html.EscapeString(line) + "\n")
	}
	fmt.Fprintf(&b, "breaker cooldown %s (the seed's 120s scaled to the run), attempt timeout %s, call deadline %s</pre>\n",
		seconds(r.Settings.Cooldown), seconds(r.Settings.AttemptTimeout), seconds(r.Settings.CallDeadline))

	r.writeHTMLTable(&b)
	for _, line := range r.Conclusion() {
		fmt.Fprintf(&b, "<p>%s</p>\n", html.EscapeString(line))
	}
	if r.Interrupted {
		b.WriteString("<p>Interrupted: these are the numbers measured until then.</p>\n")
	}

	b.WriteString("<p class=\"legend\">")
	for p := range numPhases {
		fmt.Fprintf(&b, "<span><i style=\"background:%s\"></i>%s</span>", phaseFill[p], p)
	}
	b.WriteString("<br/>breaker: ")
	for _, s := range []breaker.State{breaker.Closed, breaker.HalfOpen, breaker.Open} {
		fmt.Fprintf(&b, "<span><i style=\"background:%s\"></i>%s</span>", stateFill[s], s)
	}
	fmt.Fprintf(&b, "<span><i style=\"background:%s\"></i>no breaker</span></p>\n", noBreakerFill)

	xMax, yMax := r.axes()
	for i := range r.Results {
		res := &r.Results[i]
		fmt.Fprintf(&b, "<h2>%s</h2>\n<p class=\"summary\">%s</p>\n", html.EscapeString(res.Strategy), html.EscapeString(res.Summary))
		r.writeChart(&b, res, xMax, yMax)
	}
	b.WriteString("</body>\n</html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// writeHTMLTable writes the text report's table as an HTML table.
func (r *Report) writeHTMLTable(b *strings.Builder) {
	b.WriteString("<table>\n<tr><th>" + TableHeader + "</th>")
	for _, res := range r.Results {
		b.WriteString("<th>" + html.EscapeString(res.Strategy) + "</th>")
	}
	b.WriteString("</tr>\n")
	for _, rw := range rows {
		b.WriteString("<tr><td>" + html.EscapeString(rw.label) + "</td>")
		for i := range r.Results {
			b.WriteString("<td>" + html.EscapeString(rw.cell(&r.Results[i])) + "</td>")
		}
		b.WriteString("</tr>\n")
	}
	b.WriteString("</table>\n")
}

// axes returns the scales every chart shares: the longest run, and a round
// number of requests per second above the highest bucket of any strategy.
func (r *Report) axes() (xMax time.Duration, yMax float64) {
	xMax = r.Scenario.Duration
	peak := 0.0
	for _, res := range r.Results {
		xMax = max(xMax, res.Ran)
		for _, n := range res.Buckets {
			peak = max(peak, float64(n)/res.Bucket.Seconds())
		}
	}
	return xMax, niceCeil(peak)
}

// writeChart writes one strategy's SVG.
func (r *Report) writeChart(b *strings.Builder, res *Result, xMax time.Duration, yMax float64) {
	x := func(t time.Duration) float64 {
		return plotLeft + float64(t)/float64(xMax)*(plotRight-plotLeft)
	}
	y := func(rate float64) float64 {
		return plotBottom - rate/yMax*(plotBottom-plotTop)
	}
	fmt.Fprintf(b, "<svg width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\">\n",
		chartWidth, chartHeight, chartWidth, chartHeight)
	fmt.Fprintf(b, "<title>%s: upstream requests per second</title>\n", html.EscapeString(res.Strategy))

	// The phases, the last one stretched over the tail of calls in flight.
	spans := r.Scenario.Spans()
	spans[len(spans)-1].End = xMax
	for _, sp := range spans {
		fmt.Fprintf(b, "<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\"/>\n",
			x(sp.Start), plotTop, x(sp.End)-x(sp.Start), plotBottom-plotTop, phaseFill[sp.Phase])
		fmt.Fprintf(b, "<text class=\"phase\" x=\"%.1f\" y=\"%d\">%s</text>\n", x(sp.Start)+4, plotTop-8, sp.Phase)
	}

	// The y grid and its labels.
	for i := 0; i <= 4; i++ {
		rate := yMax * float64(i) / 4
		fmt.Fprintf(b, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#9e9e9e\" stroke-width=\"0.5\"/>\n",
			plotLeft, plotRight, y(rate), y(rate))
		fmt.Fprintf(b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s/s</text>\n", plotLeft-6, y(rate)+4,
			strconv.FormatFloat(rate, 'f', -1, 64))
	}

	// Upstream requests per second, as a step area.
	var path strings.Builder
	fmt.Fprintf(&path, "M%.1f,%.1f", x(0), y(0))
	for i, n := range res.Buckets {
		from, to := time.Duration(i)*res.Bucket, min(time.Duration(i+1)*res.Bucket, res.Ran)
		if to <= from {
			break
		}
		rate := float64(n) / res.Bucket.Seconds()
		fmt.Fprintf(&path, " L%.1f,%.1f L%.1f,%.1f", x(from), y(rate), x(to), y(rate))
	}
	fmt.Fprintf(&path, " L%.1f,%.1f Z", x(min(res.Ran, time.Duration(len(res.Buckets))*res.Bucket)), y(0))
	fmt.Fprintf(b, "<path d=\"%s\" fill=\"#263238\" fill-opacity=\"0.75\" stroke=\"#263238\" stroke-width=\"1\"/>\n", path.String())

	// The breaker's state, from its transitions.
	fmt.Fprintf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">breaker</text>\n", plotLeft-6, bandBottom-3)
	if !res.HasBreaker {
		fmt.Fprintf(b, "<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\"/>\n",
			x(0), bandTop, x(res.Ran)-x(0), bandBottom-bandTop, noBreakerFill)
	} else {
		// Half-open last, on top: a probe's millisecond would otherwise
		// vanish under the open stretch drawn after it.
		segs := segments(res.Transitions, res.Ran)
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
	step := niceCeil(xMax.Seconds() / 10)
	for s := 0.0; s <= xMax.Seconds()+1e-9; s += step {
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

// niceCeil rounds v up to 1, 2 or 5 times a power of ten, so the y axis
// has round labels; 1 when v is 0.
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
