package demo

import (
	"encoding/xml"
	"errors"
	"io"
	"regexp"
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
	for _, want := range []string{NoRetries, Naive, Seed, Defaults, "&amp;httpretry.Transport{} &lt;defaults&gt;", "outage", "rate-limited", "half-open"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
}

// TestHTMLSameScale checks that every chart has the same y axis, taken from
// the highest bucket of any strategy, so that they compare at a glance.
func TestHTMLSameScale(t *testing.T) {
	r := fakeReport()
	var b strings.Builder
	if err := r.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	// The naive strategy's buckets hold 4200/14 = 300 requests per 250 ms:
	// 1200 req/s, which rounds up to 2000.
	// The top grid label is the last one, just before the data's path.
	tops := regexp.MustCompile(`>([\d.]+)/s</text>\n<path`).FindAllStringSubmatch(b.String(), -1)
	if len(tops) != len(r.Results) {
		t.Fatalf("found %d y-axis tops, want %d", len(tops), len(r.Results))
	}
	for _, m := range tops {
		if top := m[1]; top != "2000" {
			t.Errorf("a chart's y axis tops at %s/s, want 2000/s for all", top)
		}
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
