package demo

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hordekit/httpretry/breaker"
)

// TestHTMLSelfContained checks that the page is well-formed (it parses as
// XML), holds one SVG per strategy, and refers to nothing outside itself.
func TestHTMLSelfContained(t *testing.T) {
	r := fakeReport()
	r.Results[3].Summary = "&httpretry.Transport{} <defaults>" // must be escaped
	var b strings.Builder
	if err := r.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	page := b.String()

	dec := xml.NewDecoder(strings.NewReader(page))
	svgs := 0
	var stack []string
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the page does not parse: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			stack = append(stack, tok.Name.Local)
			if tok.Name.Local == "svg" {
				svgs++
			}
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		}
	}
	if len(stack) != 0 {
		t.Errorf("unclosed elements: %v", stack)
	}
	if svgs != len(r.Results) {
		t.Errorf("%d <svg> elements, want one per strategy (%d)", svgs, len(r.Results))
	}
	if n := strings.Count(page, "<svg"); n != len(r.Results) {
		t.Errorf("%d occurrences of <svg, want %d", n, len(r.Results))
	}
	for _, banned := range []string{"<script", "http://", "https://", "<link", "<img", "@import", "url("} {
		if strings.Contains(strings.ToLower(page), banned) {
			t.Errorf("the page contains %q: it must be self-contained", banned)
		}
	}
	for _, want := range []string{NoRetries, Naive, Seed, Defaults, "&amp;httpretry.Transport{} &lt;defaults&gt;", "outage",
		"rate-limited", "half-open", "<h2 id=\"flaky\">flaky <small>", "targets for httpretry defaults", "callers in flight"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
}

// TestHTMLSameScale checks that every chart has the same axes, taken from
// the highest bucket of any strategy, so that they compare at a glance.
func TestHTMLSameScale(t *testing.T) {
	r := fakeReport()
	var b strings.Builder
	if err := r.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	var highest float64
	for i := range r.Results {
		tl := r.Results[i].timeline(bucket)
		for _, n := range tl.requests {
			highest = max(highest, float64(n)/bucket.Seconds())
		}
	}
	charts := strings.Split(b.String(), "<svg")[1:]
	if len(charts) != len(r.Results) {
		t.Fatalf("%d charts, want %d", len(charts), len(r.Results))
	}
	left := regexp.MustCompile(`>([\d.]+)/s</text>`)
	right := regexp.MustCompile(`fill="` + inFlightStroke + `">([\d.]+)</text>`)
	var tops []string
	for _, c := range charts {
		l, r := left.FindAllStringSubmatch(c, -1), right.FindAllStringSubmatch(c, -1)
		if len(l) != 5 || len(r) != 5 {
			t.Fatalf("a chart has %d left and %d right axis labels, want 5 each", len(l), len(r))
		}
		tops = append(tops, l[4][1]+" "+r[4][1])
	}
	for _, top := range tops[1:] {
		if top != tops[0] {
			t.Errorf("axis tops %q, want the same for every chart", tops)
		}
	}
	if top, _ := strconv.ParseFloat(strings.Fields(tops[0])[0], 64); top < highest || top > 2*highest {
		t.Errorf("requests axis tops at %v/s, for a highest bucket of %v/s", top, highest)
	}
}

// TestTimeline checks the buckets the charts draw.
func TestTimeline(t *testing.T) {
	var r Result
	sec := time.Second
	r.addCall(0, sec, true, 0, ms(100))
	r.addCall(ms(200), ms(300), false, ms(200))
	r.addCall(ms(600), 2*sec, true, ms(600))
	tl := r.timeline(500 * time.Millisecond)
	if tl.end != 2*sec || len(tl.requests) != 5 {
		t.Fatalf("timeline ends at %v with %d buckets, want 2s and 5", tl.end, len(tl.requests))
	}
	if want := []int{3, 1, 0, 0, 0}; fmt.Sprint(tl.requests) != fmt.Sprint(want) {
		t.Errorf("requests per bucket %v, want %v", tl.requests, want)
	}
	// In flight at each bucket's end: 0.5s: the first (the second ended);
	// 1s: the third (the first ends at 1s); 1.5s, 2s: the third, then none.
	if want := []int{1, 1, 1, 0, 0}; fmt.Sprint(tl.inFlight) != fmt.Sprint(want) {
		t.Errorf("in flight per bucket %v, want %v", tl.inFlight, want)
	}
}

func TestSegments(t *testing.T) {
	ts := []Transition{
		{At: 4 * time.Second, From: breaker.Closed, To: breaker.Open},
		{At: 5 * time.Second, From: breaker.Open, To: breaker.HalfOpen},
		{At: 5 * time.Second, From: breaker.HalfOpen, To: breaker.Open}, // a probe failing at once
		{At: 6 * time.Second, From: breaker.Open, To: breaker.HalfOpen},
		{At: 7 * time.Second, From: breaker.HalfOpen, To: breaker.Closed},
	}
	got := segments(ts, 10*time.Second)
	want := []segment{
		{0, 4 * time.Second, breaker.Closed},
		{4 * time.Second, 5 * time.Second, breaker.Open},
		{5 * time.Second, 5 * time.Second, breaker.HalfOpen},
		{5 * time.Second, 6 * time.Second, breaker.Open},
		{6 * time.Second, 7 * time.Second, breaker.HalfOpen},
		{7 * time.Second, 10 * time.Second, breaker.Closed},
	}
	if len(got) != len(want) {
		t.Fatalf("segments = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("segment %d = %v, want %v", i, got[i], want[i])
		}
	}
	if got := segments(nil, time.Second); len(got) != 1 || got[0] != (segment{0, time.Second, breaker.Closed}) {
		t.Errorf("segments without transitions = %v", got)
	}
}

func TestNiceCeil(t *testing.T) {
	for in, want := range map[float64]float64{0: 1, 0.3: 0.5, 1: 1, 1.2: 2, 3: 5, 7: 10, 1200: 2000, 1264: 2000, 450: 500} {
		if got := niceCeil(in); got != want {
			t.Errorf("niceCeil(%v) = %v, want %v", in, got, want)
		}
	}
}
