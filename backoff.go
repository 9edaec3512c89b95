package httpretry

import (
	"math"
	"time"
)

// Backoff selects how a Policy draws the wait after a failed attempt. In the
// formulas n is the number of the attempt that failed, from 1, u is uniform
// in [0, 1), min and max are Policy.MinWait and Policy.MaxWait.
type Backoff uint8

const (
	// ExponentialJitter, the default, draws uniformly between MinWait and a
	// ceiling that doubles each time:
	//
	//	wait = min + u * (min(max, min * 2^n) - min)
	//
	// With the defaults the first wait is in [0.5 s, 1 s), the second in
	// [0.5 s, 2 s), the third in [0.5 s, 4 s), and so on up to 10 s. The
	// floor keeps a server some room; the spread, present from the first
	// retry, keeps clients out of lockstep.
	ExponentialJitter Backoff = iota

	// TenacityExponential is tenacity's wait_random_exponential, to port the
	// seed exactly:
	//
	//	high = clamp(Multiplier * 2^(n-1), min, max); wait = min + u * (high - min)
	//
	// With the seed's numbers (0.5 s, 0.5 s, 10 s) the first wait is always
	// 0.5 s: every client retries in lockstep, which is why it is not the
	// default.
	TenacityExponential

	// FullJitter is "full jitter" as AWS defines it in its architecture
	// blog's backoff simulator: MinWait is the base, not a floor, and the
	// window doubles from twice the base at the first retry:
	//
	//	wait = u * min(max, min * 2^n)
	//
	// With a 0.5 s MinWait the first wait is in [0, 1 s), the second in
	// [0, 2 s): the same ceilings as ExponentialJitter, without its floor.
	FullJitter

	// DecorrelatedJitter is AWS's "decorrelated jitter": each wait depends on
	// the previous one (prev; MinWait before the first).
	//
	//	wait = min(max, min + u * (3*prev - min))
	DecorrelatedJitter

	// Constant always waits MinWait.
	Constant

	// Immediate retries without waiting. Useful in tests, and to show what
	// naive retries do to an upstream.
	Immediate
)

var backoffNames = [...]string{"ExponentialJitter", "TenacityExponential", "FullJitter", "DecorrelatedJitter", "Constant", "Immediate"}

func (b Backoff) String() string {
	if int(b) < len(backoffNames) {
		return backoffNames[b]
	}
	return "Backoff(?)"
}

// Wait returns the wait after failed attempt n (from 1), given the previous
// wait (0 before the first) and u, a number in [0, 1). It is the pure formula
// behind Do, exported so a caller can print or test a schedule. It never
// overflows: at any n the wait stays within [0, MaxWait].
func (p Policy) Wait(n int, prev time.Duration, u float64) time.Duration {
	lo, hi := float64(p.minWait()), float64(p.maxWait())
	var w float64
	switch p.Backoff {
	case TenacityExponential:
		mult := float64(p.Multiplier)
		if p.Multiplier == 0 {
			mult = float64(DefaultMultiplier)
		}
		high := max(lo, min(mult*pow2(n-1), hi))
		w = lo + u*(high-lo)
	case FullJitter:
		w = u * min(hi, lo*pow2(n))
	case DecorrelatedJitter:
		if prev <= 0 {
			prev = p.minWait()
		}
		w = min(hi, lo+u*(max(lo, 3*float64(prev))-lo))
	case Constant:
		w = lo
	case Immediate:
		return 0
	default:
		w = lo + u*(min(hi, lo*pow2(n))-lo)
	}
	if w >= hi {
		// float64(MaxWait) may round above math.MaxInt64, where the
		// conversion would wrap negative.
		return p.maxWait()
	}
	return time.Duration(max(w, 0))
}

// pow2 is 2^k for k >= 0, saturating to +Inf instead of overflowing.
func pow2(k int) float64 {
	if k < 0 {
		k = 0
	}
	return math.Ldexp(1, min(k, 1100))
}
