package demo

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// phaseStats returns each strategy's stats for phase p by name, and
// whether all four strategies are there with calls in the phase.
func (r *Report) phaseStats(p Phase) (map[string]PhaseStats, bool) {
	m := map[string]PhaseStats{}
	for i := range r.Results {
		m[r.Results[i].Strategy] = r.Results[i].Stats(r.Scenario)[p]
	}
	for _, name := range []string{NoRetries, Naive, Seed, Defaults} {
		if s, ok := m[name]; !ok || s.Calls == 0 {
			return m, false
		}
	}
	return m, true
}

// pct formats a fraction as a percentage for prose.
func pct(f float64) string { return number(100*f, "%.1f%%") }

// best returns the names among names whose value is within tie of the
// highest (or lowest, when low is set), in the order given.
func best(m map[string]PhaseStats, names []string, value func(PhaseStats) float64, tie float64, low bool) []string {
	top := math.Inf(-1)
	if low {
		top = math.Inf(1)
	}
	for _, n := range names {
		v := value(m[n])
		if low {
			top = math.Min(top, v)
		} else {
			top = math.Max(top, v)
		}
	}
	var out []string
	for _, n := range names {
		if math.Abs(value(m[n])-top) <= tie {
			out = append(out, n)
		}
	}
	return out
}

// and joins names for prose: "a", "a and b", "a, b and c".
func and(names []string) string {
	switch len(names) {
	case 0:
		return "nobody"
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// wins says who won: "x wins" or "x and y tie".
func wins(names []string) string {
	if len(names) == 1 {
		return names[0] + " wins"
	}
	return and(names) + " tie"
}

var allStrategies = []string{NoRetries, Naive, Seed, Defaults}

// Verdict says in words who won phase p and why, from the numbers.
func (r *Report) Verdict(p Phase) string {
	m, ok := r.phaseStats(p)
	if !ok {
		return "Not every strategy made calls in this phase: no verdict."
	}
	d, n, s, z := m[Defaults], m[Naive], m[Seed], m[NoRetries]
	success := func(x PhaseStats) float64 { return x.Success() }
	switch p {
	case Healthy:
		lo := math.Min(math.Min(d.Success(), n.Success()), math.Min(s.Success(), z.Success()))
		return fmt.Sprintf("Nothing fails, so nothing separates them: every strategy succeeds at least %s, "+
			"with %.2f to %.2f upstream requests per call. A tie.", pct(lo),
			math.Min(math.Min(d.PerCall(), n.PerCall()), math.Min(s.PerCall(), z.PerCall())),
			math.Max(math.Max(d.PerCall(), n.PerCall()), math.Max(s.PerCall(), z.PerCall())))
	case Flaky:
		return fmt.Sprintf("%s: retries work here, since a retry fails no more often than a first attempt. "+
			"%s succeeds %s with %.2f requests per call, %s %s with %.2f; the adaptive budget refused %d retries, "+
			"because a retry that succeeds costs it nothing. A call that waits before its retry near the end of the "+
			"phase meets the overloaded upstream instead. The %s succeeds %s: it does not retry a connection "+
			"reset (httpx raises ReadError, which it does not list as transient). %s: %s.",
			wins(best(m, allStrategies, success, 0.005, false)),
			Defaults, pct(d.Success()), d.PerCall(), Naive, pct(n.Success()), n.PerCall(), d.BudgetRefusals,
			Seed, pct(s.Success()), NoRetries, pct(z.Success()))
	case Overloaded:
		cheap := best(m, allStrategies, func(x PhaseStats) float64 { return x.Goodput() }, 0.02*r.Scenario.Capacity(), false)
		winner := best(m, cheap, func(x PhaseStats) float64 { return x.PerCall() }, 0.02, true)
		return fmt.Sprintf("The upstream serves %.0f requests/s whatever it is sent, so no strategy can get more than that "+
			"through: goodput %.1f (%s), %.1f (%s), %.1f (%s), %.1f (%s) successful calls/s. Retries only decide which "+
			"caller gets a slot, and cost the upstream %.2f, %.2f, %.2f and %.2f requests per call. "+
			"%s: the most goodput for the fewest requests. %s's budget refused %d retries, the ones that kept failing. "+
			"The breakers opened %d (%s) and %d (%s) times: at %.1fx capacity a third of the calls must fail, "+
			"and five failed calls in a row trip a breaker, which then refuses calls (%d and %d) for a cooldown.",
			r.Scenario.Capacity(), z.Goodput(), NoRetries, n.Goodput(), Naive, s.Goodput(), Seed, d.Goodput(), Defaults,
			z.PerCall(), n.PerCall(), s.PerCall(), d.PerCall(), wins(winner), Defaults, d.BudgetRefusals,
			d.Opened, Defaults, s.Opened, Seed, overload, d.BreakerRefusals, s.BreakerRefusals)
	case RateLimited:
		return fmt.Sprintf("%s. %s waits out each Retry-After and then paces the whole host: %s success, %.2f requests per "+
			"call, %d requests before their Retry-After, %d calls failed fast because their turn came after their deadline. "+
			"The %s ignores Retry-After and retries after 1 s: %s success, %.2f requests per call, %d requests too early; "+
			"it counts 429 as a failure and its breaker opened %d times. %s: %s, %.2f requests per call, %d too early. "+
			"%s: %s.",
			wins(best(m, allStrategies, success, 0.005, false)), Defaults, pct(d.Success()), d.PerCall(), d.Early, d.Throttled,
			Seed, pct(s.Success()), s.PerCall(), s.Early, s.Opened, Naive, pct(n.Success()), n.PerCall(), n.Early,
			NoRetries, pct(z.Success()))
	case Outage:
		spare := best(m, allStrategies, func(x PhaseStats) float64 { return x.Load() }, 0.5, true)
		return fmt.Sprintf("Nothing can succeed; the question is what each strategy costs the upstream and its own callers. "+
			"%s sent %.1f requests/s and had at most %d callers in flight (p99 %s): its breaker opens after five failed "+
			"calls and then lets one probe through per cooldown, and its budget pays only its floor of retries once "+
			"attempts keep failing. The %s sent %.1f requests/s with up to %d callers in flight (p99 %s): its breaker lets "+
			"every caller through whenever the cooldown since its last failure has run out, and each sits in 1 s waits "+
			"until its retries fail, unless its first failure is a reset, which it does not retry. %s sent %.0f "+
			"requests/s, %s %.0f. %s spares the upstream most. Failing fast frees callers at once; the price is paid "+
			"at the recovery.",
			Defaults, d.Load(), d.PeakInFlight, latency(d.P99, d.Calls), Seed, s.Load(), s.PeakInFlight, latency(s.P99, s.Calls),
			Naive, n.Load(), NoRetries, z.Load(), and(spare))
	case Recovery:
		return fmt.Sprintf("The upstream is healthy again: %s. Success %s (%s), %s (%s), %s (%s), %s (%s); "+
			"how fast each got there is below.",
			wins(best(m, allStrategies, success, 0.005, false)), pct(z.Success()), NoRetries, pct(n.Success()), Naive,
			pct(s.Success()), Seed, pct(d.Success()), Defaults)
	}
	return ""
}

// RecoveryVerdict says who got callers through first once the upstream
// recovered, and why.
func (r *Report) RecoveryVerdict() string {
	recs := map[string]RecoveryTimes{}
	for i := range r.Results {
		recs[r.Results[i].Strategy] = r.Results[i].Recovery(r.Scenario)
	}
	d, dok := recs[Defaults]
	s, sok := recs[Seed]
	if !dok || !sok || !d.AfterOutageOK || !s.AfterOutageOK || !d.FirstOK || !s.FirstOK {
		return "Not every strategy got a call through after the outage: no verdict."
	}
	first := func(a, b time.Duration) string {
		switch {
		case a < b:
			return Defaults + " first"
		case a > b:
			return "the " + Seed + " first"
		}
		return "both together"
	}
	return fmt.Sprintf("%s and %s have no breaker: their callers get through as soon as the upstream answers. "+
		"When the outage ended, %s's first success came %s later, when its breaker's next half-open probe got through "+
		"(one per cooldown); the %s's came %s later, from a caller still retrying every second or from the herd it lets "+
		"through once the cooldown since its last failure has run out: %s. When the rate limit lifted, %s's first "+
		"success came after %s and calls succeeded 99%% of the time from %s on (its pacing has to notice the limit is "+
		"gone); the %s's after %s, 99%% from %s. A caller that waits out the end of an outage succeeds later; one that "+
		"fails fast is free at once.",
		NoRetries, Naive, Defaults, since(d.AfterOutage, true), Seed, since(s.AfterOutage, true),
		first(d.AfterOutage, s.AfterOutage), Defaults, since(d.First, true), since(d.Full, d.FullOK),
		Seed, since(s.First, true), since(s.Full, s.FullOK))
}

// Target is one of the demo's targets for httpretry defaults, checked
// against the run.
type Target struct {
	Name   string
	Met    bool
	Detail string
}

// Targets checks httpretry defaults against the seed policy and naive
// retries, phase by phase. It returns nothing when a strategy is missing.
func (r *Report) Targets() []Target {
	get := func(p Phase) (d, n, s PhaseStats, ok bool) {
		m, ok := r.phaseStats(p)
		return m[Defaults], m[Naive], m[Seed], ok
	}
	var out []Target
	if d, n, s, ok := get(Flaky); ok {
		out = append(out, Target{"flaky: success at least naive's minus 1 point, and the seed's",
			d.Success() >= n.Success()-0.01 && d.Success() >= s.Success(),
			fmt.Sprintf("%s against %s (naive) and %s (seed)", pct(d.Success()), pct(n.Success()), pct(s.Success()))})
	}
	if d, n, s, ok := get(Overloaded); ok {
		out = append(out, Target{"overloaded: goodput at least the seed's and naive's",
			d.Goodput() >= s.Goodput() && d.Goodput() >= n.Goodput(),
			fmt.Sprintf("%.1f against %.1f (seed) and %.1f (naive) successful calls/s", d.Goodput(), s.Goodput(), n.Goodput())})
		out = append(out, Target{"overloaded: upstream load no higher than the seed's",
			d.Load() <= s.Load(), fmt.Sprintf("%.0f against %.0f req/s", d.Load(), s.Load())})
	}
	if d, _, s, ok := get(Outage); ok {
		out = append(out, Target{"outage: upstream load at most half the seed's",
			d.Load() <= s.Load()/2, fmt.Sprintf("%.1f against %.1f req/s", d.Load(), s.Load())})
		out = append(out, Target{"outage: peak callers in flight at most a quarter of the seed's",
			4*d.PeakInFlight <= s.PeakInFlight, fmt.Sprintf("%d against %d", d.PeakInFlight, s.PeakInFlight)})
	}
	if d, _, s, ok := get(RateLimited); ok {
		out = append(out, Target{"rate-limited: success at least the seed's",
			d.Success() >= s.Success(), fmt.Sprintf("%s against %s", pct(d.Success()), pct(s.Success()))})
		out = append(out, Target{"rate-limited: upstream requests no more than the seed's",
			d.Requests <= s.Requests, fmt.Sprintf("%d against %d (%.2f against %.2f per call)",
				d.Requests, s.Requests, d.PerCall(), s.PerCall())})
		out = append(out, Target{"rate-limited: no request before its Retry-After",
			d.Early == 0, fmt.Sprintf("%d early (seed: %d)", d.Early, s.Early)})
	}
	recs := map[string]RecoveryTimes{}
	for i := range r.Results {
		recs[r.Results[i].Strategy] = r.Results[i].Recovery(r.Scenario)
	}
	d, dok := recs[Defaults]
	s, sok := recs[Seed]
	if dok && sok && d.AfterOutageOK && s.AfterOutageOK {
		out = append(out, Target{"recovery: first success after the outage no later than the seed's",
			d.AfterOutage <= s.AfterOutage, fmt.Sprintf("%s against %s", since(d.AfterOutage, true), since(s.AfterOutage, true))})
	}
	if dok && sok && d.FirstOK && s.FirstOK {
		out = append(out, Target{"recovery: first success after the rate limit no later than the seed's",
			d.First <= s.First, fmt.Sprintf("%s against %s", since(d.First, true), since(s.First, true))})
	}
	return out
}
