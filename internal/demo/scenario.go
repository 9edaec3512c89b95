// Package demo is the `httpretry demo` command's engine: a scripted
// upstream whose behaviour follows a scenario of phases over time, four
// client strategies driven against it at the same time by open-loop traffic
// (calls arrive at a set rate whether or not earlier ones are done), the
// measurements, and their text and HTML scorecards. cmd/httpretry only
// parses flags and prints.
//
// Everything the reports show is measured: upstream requests are counted by
// each strategy's own upstream as they arrive, calls by the callers as they
// end, breaker transitions by the breakers' own hooks.
package demo

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hordekit/httpretry/internal/faultserver"
)

// Phase is one stretch of the scenario.
type Phase uint8

// The phases, in the order they happen.
const (
	// Healthy answers 200 to everything.
	Healthy Phase = iota
	// Flaky fails FlakyShare of requests at random, half with a 503 and
	// half with a connection reset, with capacity to spare: retries work.
	Flaky
	// Overloaded serves at most Capacity requests a second and answers 503
	// to the rest; calls offer one and a half times that. Retries cannot
	// raise what gets served, only what is sent.
	Overloaded
	// Outage answers every request with a 503 or a connection reset.
	Outage
	// RateLimited serves Quota requests per window of RateWindow and
	// answers the rest 429 with a Retry-After until the window ends, as
	// whole seconds or as an HTTP-date: the upstream is back, but sheds
	// load.
	RateLimited
	// Recovery answers 200 to everything, and lasts past the end of the
	// run so that calls still in flight see a healthy upstream.
	Recovery

	numPhases
)

var phaseNames = [numPhases]string{"healthy", "flaky", "overloaded", "outage", "rate-limited", "recovery"}

// String returns the phase's name as the reports print it.
func (p Phase) String() string {
	if p < numPhases {
		return phaseNames[p]
	}
	return fmt.Sprintf("Phase(%d)", uint8(p))
}

// phaseWeights is how the run is split between the phases, in 54ths: 6 s
// healthy, 9 s each of flaky and overloaded, 11 s of outage, 9 s of
// rate limit, 10 s of recovery. The outage lasts five and a half breaker
// cooldowns (Duration/27 each): a breaker that probes once per cooldown
// learns that the upstream is back half a cooldown after it is, the
// average case, rather than at once or a whole cooldown late.
var phaseWeights = [numPhases]int64{6, 9, 9, 11, 9, 10}

const totalWeight = 54

// The scenario's fixed parameters.
const (
	// FlakyShare is the fraction of requests the flaky phase fails.
	FlakyShare = 0.30
	// flakyResetShare is the fraction of those failures that are resets.
	flakyResetShare = 0.5
	// outageResetShare is the fraction of outage requests answered with a
	// connection reset; the rest get a 503.
	outageResetShare = 0.35
	// overload is how many times its capacity the calls offer the
	// overloaded upstream.
	overload = 1.5
	// RateWindow is the rate limit's window: windows start on whole wall
	// clock seconds, so that an HTTP-date names a window's end exactly.
	RateWindow = 2 * time.Second
	// quotaShare is the share of the offered calls a window admits.
	quotaShare = 0.5
)

// Span is when one phase runs, as offsets from the start of a run.
type Span struct {
	Phase      Phase
	Start, End time.Duration
}

// Len returns how long the span lasts.
func (s Span) Len() time.Duration { return s.End - s.Start }

// Scenario is the upstream's script for one run. The same Scenario serves
// the same phases at the same offsets and the same fault to the same
// request index; only the strategies' behaviour differs.
type Scenario struct {
	// Duration is how long calls arrive; the phases split it.
	Duration time.Duration
	// Rate is the calls per second that arrive; it sizes the overloaded
	// phase's capacity and the rate limit's quota.
	Rate float64
	// Seed decides the faults of the flaky phase and the outage.
	Seed uint64
}

// Spans returns the phases with their offsets, in order. The last one ends
// at Duration, though Recovery goes on after it.
func (s Scenario) Spans() []Span {
	spans := make([]Span, numPhases)
	var at int64
	for p := range numPhases {
		start := time.Duration(int64(s.Duration) / totalWeight * at)
		at += phaseWeights[p]
		end := time.Duration(int64(s.Duration) / totalWeight * at)
		if p == numPhases-1 {
			end = s.Duration
		}
		spans[p] = Span{Phase: p, Start: start, End: end}
	}
	return spans
}

// Span returns the span of phase p.
func (s Scenario) Span(p Phase) Span { return s.Spans()[p] }

// PhaseAt returns the phase at offset t from the start of the run: Healthy
// before it, Recovery from the end of the last span on.
func (s Scenario) PhaseAt(t time.Duration) Phase {
	for _, sp := range s.Spans() {
		if t < sp.End {
			return sp.Phase
		}
	}
	return Recovery
}

// Capacity returns the overloaded upstream's requests per second.
func (s Scenario) Capacity() float64 { return s.Rate / overload }

// Quota returns how many requests a rate-limit window admits.
func (s Scenario) Quota() int {
	return max(1, int(math.Round(s.Rate*quotaShare*RateWindow.Seconds())))
}

// FlakyFault returns the fault for request n (counted from 0 over the
// whole run) in the flaky phase: OK, a 503 or a reset, by a hash of the
// seed and n so that the mix is the same for every strategy and run.
func (s Scenario) FlakyFault(n int) faultserver.Fault {
	switch u := unit(s.Seed, uint64(n)); {
	case u >= FlakyShare:
		return faultserver.OK()
	case u < FlakyShare*flakyResetShare:
		return faultserver.ResetBeforeHeaders()
	}
	return faultserver.Status(http.StatusServiceUnavailable)
}

// OutageFault returns the fault for request n during the outage: a 503 or
// a connection reset, by a hash of the seed and n.
func (s Scenario) OutageFault(n int) faultserver.Fault {
	if unit(s.Seed^0x5bd1e995, uint64(n)) < outageResetShare {
		return faultserver.ResetBeforeHeaders()
	}
	return faultserver.Status(http.StatusServiceUnavailable)
}

// ThrottleFault returns the 429 for request n refused at now by the rate
// limit whose window ends at end. Its Retry-After says when the window
// ends, in whole seconds rounded up or as an HTTP-date, alternating by a
// hash so that clients have to understand both. It also returns the time
// before which the client was asked not to come back.
func (s Scenario) ThrottleFault(n int, now, end time.Time) (faultserver.Fault, time.Time) {
	f := faultserver.Status(http.StatusTooManyRequests)
	if unit(^s.Seed, uint64(n)) < 0.5 {
		secs := int(math.Ceil(end.Sub(now).Seconds()))
		return f.WithHeader("Retry-After", strconv.Itoa(max(secs, 1))), now.Add(time.Duration(max(secs, 1)) * time.Second)
	}
	return f.WithHeader("Retry-After", end.UTC().Format(http.TimeFormat)), end
}

// Describe returns the scenario in one line per phase, for the reports.
func (s Scenario) Describe() []string {
	lines := make([]string, 0, numPhases)
	for _, sp := range s.Spans() {
		var what string
		switch sp.Phase {
		case Healthy, Recovery:
			what = "every request answered 200"
		case Flaky:
			what = fmt.Sprintf("%.0f%% of requests fail at random (half 503, half connection reset), capacity to spare",
				100*FlakyShare)
		case Overloaded:
			what = fmt.Sprintf("serves %.0f requests/s and answers 503 above that; calls offer %.1fx", s.Capacity(), overload)
		case RateLimited:
			what = fmt.Sprintf("%d requests per %s window, the rest 429 with Retry-After until the window ends (seconds or HTTP-date)",
				s.Quota(), seconds(RateWindow))
		case Outage:
			what = fmt.Sprintf("%.0f%% 503, %.0f%% connection reset", 100*(1-outageResetShare), 100*outageResetShare)
		}
		lines = append(lines, fmt.Sprintf("%-12s %6s - %-6s %s", sp.Phase, seconds(sp.Start), seconds(sp.End), what))
	}
	return lines
}

// seconds formats an offset as "8.25s", trimmed of useless zeros.
func seconds(d time.Duration) string {
	s := strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", d.Seconds()), "0"), ".")
	return s + "s"
}

// upstream is one strategy's upstream: the scenario's faults, with its own
// capacity and rate-limit state, and a record of every request.
type upstream struct {
	sc    Scenario
	start time.Time // the run's start
	now   func() time.Time
	log   *requestLog

	capMu  sync.Mutex
	tokens float64
	filled time.Time

	rateMu sync.Mutex
	window int64 // the current rate-limit window's index
	served int
}

// newUpstream returns the upstream of a run that started at start.
func newUpstream(sc Scenario, start time.Time, log *requestLog) *upstream {
	return &upstream{sc: sc, start: start, now: time.Now, log: log}
}

// behavior returns the fault server's Behavior: it finds the phase from
// the clock and the call from the X-Demo-Call header, decides the fault,
// and records the request.
func (u *upstream) behavior() faultserver.Behavior {
	return func(n int, r *http.Request) faultserver.Fault {
		now := u.now()
		t := now.Sub(u.start)
		p := u.sc.PhaseAt(t)
		call := -1
		if v, err := strconv.Atoi(r.Header.Get(callHeader)); err == nil {
			call = v
		}
		f, notBefore := u.fault(n, p, now)
		u.log.add(request{at: t, call: call, phase: p, status: f.Status, kind: f.Kind}, now, notBefore)
		return f
	}
}

// fault decides request n's fault in phase p at now, and for a 429 when
// the client was asked to come back.
func (u *upstream) fault(n int, p Phase, now time.Time) (faultserver.Fault, time.Time) {
	switch p {
	case Flaky:
		return u.sc.FlakyFault(n), time.Time{}
	case Overloaded:
		if !u.admit(now) {
			return faultserver.Status(http.StatusServiceUnavailable), time.Time{}
		}
	case RateLimited:
		if end, ok := u.withinQuota(now); !ok {
			return u.sc.ThrottleFault(n, now, end)
		}
	case Outage:
		return u.sc.OutageFault(n), time.Time{}
	}
	return faultserver.OK(), time.Time{}
}

// admit is the overloaded upstream's capacity: a token bucket filled at
// Capacity a second, holding a tenth of a second's worth.
func (u *upstream) admit(now time.Time) bool {
	u.capMu.Lock()
	defer u.capMu.Unlock()
	rate := u.sc.Capacity()
	burst := max(1, rate/10)
	if u.filled.IsZero() {
		u.tokens = burst
	} else {
		u.tokens = min(burst, u.tokens+rate*now.Sub(u.filled).Seconds())
	}
	u.filled = now
	if u.tokens < 1 {
		return false
	}
	u.tokens--
	return true
}

// withinQuota counts a request against the rate limit's current window,
// and returns the window's end.
func (u *upstream) withinQuota(now time.Time) (time.Time, bool) {
	w := now.UnixNano() / int64(RateWindow)
	end := time.Unix(0, (w+1)*int64(RateWindow))
	u.rateMu.Lock()
	defer u.rateMu.Unlock()
	if w != u.window {
		u.window, u.served = w, 0
	}
	u.served++
	return end, u.served <= u.sc.Quota()
}

// unit maps (seed, n) to a float in [0, 1) with SplitMix64, a hash good
// enough that consecutive indexes look independent.
func unit(seed, n uint64) float64 {
	z := seed + (n+1)*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	z ^= z >> 31
	return float64(z>>11) / (1 << 53)
}
