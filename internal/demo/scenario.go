// Package demo is the `httpretry demo` command's engine: a scripted flaky
// upstream (a fault server whose behaviour follows a scenario over time),
// four client strategies driven against it one after another by many
// concurrent clients, the measurements, and their text and HTML reports.
// cmd/httpretry only parses flags and prints.
//
// Everything the reports show is measured: upstream requests are counted by
// the fault server as they arrive, calls by the clients as they end, breaker
// transitions by the breakers' own hooks.
package demo

import (
	"fmt"
	"net/http"
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
	// Outage answers every request with a 503 or a connection reset, the
	// mix decided per request by a seeded hash of its index.
	Outage
	// RateLimited admits RateLimit requests per slot and answers the rest
	// 429 with a Retry-After, in seconds or as an HTTP-date.
	RateLimited
	// Recovery answers 200 to everything, and lasts past the end of the run
	// so that calls still in flight see a healthy upstream.
	Recovery

	numPhases
)

var phaseNames = [numPhases]string{"healthy", "outage", "rate-limited", "recovery"}

// String returns the phase's name as the reports print it.
func (p Phase) String() string {
	if p < numPhases {
		return phaseNames[p]
	}
	return fmt.Sprintf("Phase(%d)", uint8(p))
}

// phaseShares is how the run is split between the phases. The outage is
// the longest so that every breaker goes through at least one full cooldown
// in it (the cooldown is an eighth of the run).
var phaseShares = [numPhases]float64{0.20, 0.35, 0.20, 0.25}

// The scenario's fixed parameters.
const (
	// outageResetShare is the fraction of outage requests answered with a
	// connection reset; the rest get a 503.
	outageResetShare = 0.35
	// rateSlot is the rate limiter's window: a fixed window this short keeps
	// the limit smooth over a second without a token-bucket's state.
	rateSlot = 100 * time.Millisecond
	// perClientLimit is the upstream's capacity while rate-limited, in
	// requests per second per client: about half of what the clients offer,
	// so that even a client that never retries sees 429s.
	perClientLimit = 5
	// retryAfterSeconds and retryAfterDate are the Retry-After hints of the
	// two forms, both short enough to fit in the phase.
	retryAfterSeconds = 1 * time.Second
	retryAfterDate    = 2 * time.Second
)

// Span is when one phase runs, as offsets from the start of a run.
type Span struct {
	Phase      Phase
	Start, End time.Duration
}

// Len returns how long the span lasts.
func (s Span) Len() time.Duration { return s.End - s.Start }

// overlap returns how much of s falls within [0, end).
func (s Span) overlap(end time.Duration) time.Duration {
	return max(0, min(s.End, end)-s.Start)
}

// Scenario is the upstream's script for one run. Its zero value is not
// usable; every field must be set. The same Scenario always serves the same
// phases at the same offsets, and the same fault to the same request index
// in the outage: only the clients' behaviour differs between strategies.
type Scenario struct {
	// Duration is how long clients start calls; the phases split it.
	Duration time.Duration
	// Seed decides the outage's fault for each request index.
	Seed uint64
	// Clients sizes the rate limit (perClientLimit per client).
	Clients int
}

// Spans returns the phases with their offsets, in order. The last one ends
// at Duration, though Recovery goes on after it.
func (s Scenario) Spans() []Span {
	spans := make([]Span, numPhases)
	var at float64
	for p := range numPhases {
		start := time.Duration(at * float64(s.Duration))
		at += phaseShares[p]
		end := time.Duration(at * float64(s.Duration))
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

// RateLimit returns how many requests one rateSlot admits while rate-limited.
func (s Scenario) RateLimit() int {
	return max(1, s.Clients*perClientLimit*int(rateSlot)/int(time.Second))
}

// OutageFault returns the fault for the request with index n (counted from
// 0 over the whole run) during the outage: a 503 or a connection reset,
// chosen by a hash of the seed and n so that the mix is the same for every
// strategy and every run with this seed.
func (s Scenario) OutageFault(n int) faultserver.Fault {
	if unit(s.Seed, uint64(n)) < outageResetShare {
		return faultserver.ResetBeforeHeaders()
	}
	return faultserver.Status(http.StatusServiceUnavailable)
}

// ThrottleFault returns the 429 for request n when the rate limit refuses
// it. Its Retry-After alternates between the two forms by the same hash, so
// that clients have to understand both.
func (s Scenario) ThrottleFault(n int) faultserver.Fault {
	f := faultserver.Status(http.StatusTooManyRequests)
	if unit(^s.Seed, uint64(n)) < 0.5 {
		return f.WithRetryAfter(retryAfterSeconds)
	}
	return f.WithRetryAfterDate(retryAfterDate)
}

// Describe returns the scenario in one line per phase, for the reports.
func (s Scenario) Describe() []string {
	lines := make([]string, 0, numPhases)
	for _, sp := range s.Spans() {
		var what string
		switch sp.Phase {
		case Healthy:
			what = "every request answered 200"
		case Outage:
			what = fmt.Sprintf("%.0f%% 503, %.0f%% connection reset before the headers (seeded)",
				100*(1-outageResetShare), 100*outageResetShare)
		case RateLimited:
			what = fmt.Sprintf("%d req/s admitted, the rest 429 with Retry-After: %d (seconds) or an HTTP-date %s ahead",
				s.RateLimit()*int(time.Second/rateSlot), int(retryAfterSeconds.Seconds()), seconds(retryAfterDate))
		case Recovery:
			what = "every request answered 200"
		}
		lines = append(lines, fmt.Sprintf("%-12s %5s - %-6s (%2.0f%%)  %s", sp.Phase, seconds(sp.Start), seconds(sp.End),
			100*phaseShares[sp.Phase], what))
	}
	return lines
}

// seconds formats an offset as "8.25s", trimmed of useless zeros.
func seconds(d time.Duration) string {
	s := strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", d.Seconds()), "0"), ".")
	return s + "s"
}

// behavior returns the fault server's Behavior for a run that started at
// start: it looks up the phase from the clock, applies the rate limit, and
// tells arrive of every request with its offset and phase, which is how the
// run counts upstream requests.
func (s Scenario) behavior(start time.Time, arrive func(t time.Duration, p Phase)) faultserver.Behavior {
	lim := &limiter{limit: s.RateLimit()}
	return func(n int, _ *http.Request) faultserver.Fault {
		t := time.Since(start)
		p := s.PhaseAt(t)
		arrive(t, p)
		switch p {
		case Outage:
			return s.OutageFault(n)
		case RateLimited:
			if !lim.admit(int64(t / rateSlot)) {
				return s.ThrottleFault(n)
			}
		}
		return faultserver.OK()
	}
}

// limiter is a fixed-window rate limit: limit requests per slot.
type limiter struct {
	mu    sync.Mutex
	limit int
	slot  int64
	used  int
}

// admit reports whether a request arriving in slot fits in the limit.
func (l *limiter) admit(slot int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if slot != l.slot {
		l.slot, l.used = slot, 0
	}
	l.used++
	return l.used <= l.limit
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
