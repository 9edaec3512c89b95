package demo

import (
	"math"
	"sync"
	"time"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/clock"
)

// seedBreaker is the seed's HordeAPICircuitBreaker, flaws included, behind
// the breaker.CircuitBreaker interface so that an httpretry.Transport can
// use it. The breaker package fixes these flaws; the demo needs them
// reproduced to show what they cost:
//
//   - once the cooldown has elapsed since the last failure, every caller is
//     let through, not one probe (should_allow_request);
//   - every failure sets last_failure_time, even while open, so failures of
//     calls started before the breaker opened push the cooldown out
//     (record_failure);
//   - whatever is not a success is a failure: the seed recorded a failure for
//     any exception, 429s included, so the neutral outcome the transport
//     reports for a 429 or an abandoned call counts as one here. (The
//     transport reports a non-retryable 4xx as a success, which the seed also
//     counted as a failure; the demo's upstream serves none.)
//   - the heartbeat shows seconds_until_retry null once the cooldown is over,
//     which reads like a healthy breaker.
//
// The seed had no states beyond is_open; the State reported here derives
// them the way a reader of its logs would: Closed when not open, HalfOpen
// once the cooldown has elapsed (everyone is let through), Open otherwise.
type seedBreaker struct {
	name      string
	threshold int
	cooldown  time.Duration
	clock     clock.Clock
	// onChange is told of every change of the derived state. It is called
	// with the lock held, so that changes arrive in order; it must not call
	// back into the breaker.
	onChange func(name string, from, to breaker.State)

	mu          sync.Mutex
	failures    int
	lastFailure time.Time
	open        bool
	reported    breaker.State // the derived state onChange last heard of
}

var (
	_ breaker.CircuitBreaker = (*seedBreaker)(nil)
	_ breaker.PermitRecorder = (*seedBreaker)(nil)
)

// newSeedBreaker returns a closed seed breaker. A nil clk means the system
// clock; onChange may be nil.
func newSeedBreaker(name string, threshold int, cooldown time.Duration, clk clock.Clock,
	onChange func(name string, from, to breaker.State)) *seedBreaker {
	return &seedBreaker{name: name, threshold: threshold, cooldown: cooldown, clock: clock.Or(clk), onChange: onChange}
}

// Name implements breaker.CircuitBreaker.
func (b *seedBreaker) Name() string { return b.name }

// Acquire is should_allow_request: a closed breaker, or an open one whose
// cooldown has elapsed since the last failure, admits the caller. The
// permit is never a probe, since the seed had no probes: the transport then
// retries as usual and reports once per call, as the seed's callers did.
func (b *seedBreaker) Acquire() (breaker.Permit, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now()
	if b.open {
		if since := now.Sub(b.lastFailure); since < b.cooldown {
			return breaker.Permit{}, &breaker.OpenError{Name: b.name, State: breaker.Open, RetryIn: b.cooldown - since}
		}
	}
	b.report(now)
	return breaker.NewPermit(b, 0, false), nil
}

// RecordPermit implements breaker.PermitRecorder with record_success for a
// success and record_failure for anything else. The generation is ignored,
// as the seed had none: that is what lets late failures in.
func (b *seedBreaker) RecordPermit(_ uint64, _ bool, o breaker.Outcome) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now()
	if o == breaker.Success {
		b.failures = 0
		b.open = false
	} else {
		b.failures++
		b.lastFailure = now
		if !b.open && b.failures >= b.threshold {
			b.open = true
		}
	}
	b.report(now)
}

// Status implements breaker.CircuitBreaker with get_status_dict's values,
// including its null seconds_until_retry once the cooldown is over.
func (b *seedBreaker) Status() breaker.Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now()
	st := breaker.Status{Name: b.name, State: b.stateAt(now), Degraded: b.open, ConsecutiveFailures: b.failures}
	if b.open {
		if remaining := b.cooldown - now.Sub(b.lastFailure); remaining > 0 {
			secs := math.Round(remaining.Seconds()*10) / 10
			st.SecondsUntilRetry = &secs
		}
	}
	return st
}

// stateAt derives the state at now. The caller holds the lock.
func (b *seedBreaker) stateAt(now time.Time) breaker.State {
	switch {
	case !b.open:
		return breaker.Closed
	case now.Sub(b.lastFailure) >= b.cooldown:
		return breaker.HalfOpen
	}
	return breaker.Open
}

// report tells onChange when the derived state has changed since it last
// heard. A change that happened through the clock alone (the cooldown
// ending) is reported at the next call, as the seed logged it.
func (b *seedBreaker) report(now time.Time) {
	s := b.stateAt(now)
	if s == b.reported {
		return
	}
	from := b.reported
	b.reported = s
	if b.onChange != nil {
		b.onChange(b.name, from, s)
	}
}
