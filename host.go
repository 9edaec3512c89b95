package httpretry

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/clock"
)

// hostState is what the Transport keeps per host besides its breaker: the
// retry budget, the rate-limit throttle and the hedging state. With per-host breakers it lives in the
// breaker.Set, beside the host's breaker, so one lookup finds both and both
// are evicted together; otherwise in a hostTable of its own.
type hostState struct {
	budget   *Budget   // nil when NoBudget
	throttle *throttle // nil when NoThrottle
	hedge    *hedger   // nil unless Hedge is set
}

// needsHostState reports whether any per-host state besides the breaker is
// kept.
func (t *Transport) needsHostState() bool { return !t.NoBudget || !t.NoThrottle || t.hedge != nil }

func (t *Transport) newHostState() *hostState {
	hs := &hostState{}
	if !t.NoBudget {
		hs.budget, _ = NewBudget(t.budgetCfg) // validated in init
	}
	if !t.NoThrottle {
		hs.throttle = &throttle{}
	}
	if t.hedge != nil {
		hs.hedge = newHedger(t.hedge)
	}
	return hs
}

// lookup returns the host's breaker (nil when off) and state (nil when none
// is kept), in one lookup of one table.
func (t *Transport) lookup(host string) (breaker.CircuitBreaker, *hostState) {
	switch {
	case t.breakers != nil:
		b, v := t.breakers.Lookup(host)
		hs, _ := v.(*hostState)
		return b, hs
	case !t.needsHostState():
		return t.sharedBreaker(), nil
	}
	return t.sharedBreaker(), t.hosts.get(host)
}

// sharedBreaker is the one breaker for every host, or nil when off.
func (t *Transport) sharedBreaker() breaker.CircuitBreaker {
	if t.NoBreaker || t.Breaker == nil {
		return nil
	}
	return t.Breaker
}

// recentRate returns the first attempts per second over the last two
// tenths of the window, or over the budget's life when shorter, but at
// least a second, so that a burst at start-up does not read as a flood.
func (b *Budget) recentRate() float64 {
	now := b.clk.Now()
	slot := b.slot(now)
	var n int64
	for i := range b.buckets {
		if s := b.buckets[i].slot.Load(); s == slot || s == slot-1 {
			n += b.buckets[i].deposits.Load()
		}
	}
	span := min(2*b.width, now.Sub(b.epoch.Add(time.Duration(max(slot-1, 0))*b.width)))
	return float64(n) / max(span, time.Second).Seconds()
}

// awaitTurn waits for the host's next turn before attempt (throttle rule
// 3). It returns nil when the attempt may go, or the ThrottleError that
// says why it may not; a cancelled wait returns the context's error.
func (c *call) awaitTurn(ctx context.Context) error {
	th := c.throttle()
	if th == nil || !th.active.Load() {
		c.turn = turn{}
		return nil
	}
	p := &c.t.Policy
	clk := c.clock()
	waited := false
	for {
		now := clk.Now()
		limit := p.maxRetryAfter()
		reason := StopRetryAfter
		if deadline, ok := ctx.Deadline(); ok && deadline.Sub(now) <= limit {
			limit, reason = deadline.Sub(now)-1, StopDeadline
		}
		if p.MaxElapsed > 0 {
			if left := p.MaxElapsed - now.Sub(c.start); left <= limit {
				limit, reason = left-1, StopMaxElapsed
			}
		}
		tr, wake, ok := th.take(now, limit, p.random(), p.minWait())
		if !ok {
			return &ThrottleError{Host: c.host, Wait: tr.at.Sub(now), Reason: reason}
		}
		c.turn = tr
		if !tr.at.After(now) {
			break
		}
		waited = true
		woken, err := sleepUnless(ctx, clk, tr.at.Sub(now), wake)
		if err != nil {
			return err
		}
		// Woken early, the pace has quickened or the breaker has opened:
		// take a new turn, if the breaker still admits this call. A signal
		// that came in while this call slept paused the host again: its
		// turn is gone, it takes a new one too.
		if woken {
			if err := c.stillAdmitted(); err != nil {
				return err
			}
			continue
		}
		if !th.pausedAt(clk.Now()) {
			break
		}
	}
	if waited {
		// The breaker may have left the closed state during the wait:
		// going now would only add to the load it is there to shed.
		return c.stillAdmitted()
	}
	return nil
}

// stillAdmitted returns the breaker's refusal when the call was admitted
// while the breaker was closed and it no longer is: opened, or half-open
// with its probes taken by others.
func (c *call) stillAdmitted() error {
	if c.cb == nil || c.t.BreakerPerAttempt || c.permit.Probe() {
		return nil
	}
	s, ok := c.cb.(interface {
		State() breaker.State
		UntilRetry() (time.Duration, bool)
	})
	if !ok {
		return nil
	}
	st := s.State()
	if st == breaker.Closed {
		return nil
	}
	wait, _ := s.UntilRetry()
	return &breaker.OpenError{Name: c.cb.Name(), State: st, RetryIn: wait}
}

// wakeOnOpen returns a breaker hook that wakes the callers waiting for a
// turn to a host whose breaker has just opened, so that they give up at
// once rather than at their turn, and then calls next. The per-host
// breakers are named after their host, whose state sits beside them.
func (t *Transport) wakeOnOpen(next func(name string, from, to breaker.State)) func(name string, from, to breaker.State) {
	return func(name string, from, to breaker.State) {
		if to == breaker.Open {
			if _, hs := t.lookup(name); hs != nil && hs.throttle != nil {
				hs.throttle.wakeAll()
			}
		}
		if next != nil {
			next(name, from, to)
		}
	}
}

// sleepUnless waits d on clk, or until wake is closed (woken is then true),
// or until ctx ends (its error is then returned).
func sleepUnless(ctx context.Context, clk clock.Clock, d time.Duration, wake <-chan struct{}) (woken bool, err error) {
	if d <= 0 {
		return false, ctx.Err()
	}
	t := clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return false, ctx.Err()
	case <-wake:
		return true, ctx.Err()
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// throttle returns the host's throttle, nil when it is off.
func (c *call) throttle() *throttle {
	if c.hs == nil {
		return nil
	}
	return c.hs.throttle
}

// report tells the host's budget and throttle how an attempt ended.
func (c *call) report(ctx context.Context, attempt int, resp *http.Response, err error) {
	if c.hs == nil {
		return
	}
	retry := attempt > 1
	if err != nil {
		// An attempt its caller abandoned says nothing of the host.
		if ctx.Err() != nil || !IsTransient(err) {
			return
		}
		if c.budget != nil {
			c.budget.Failed(retry, false)
		}
		if th := c.throttle(); th != nil && th.active.Load() {
			th.ok(c.turn, c.clock().Now()) // no complaint about the rate
		}
		return
	}
	code := resp.StatusCode
	th := c.throttle()
	if code < 500 && code != http.StatusTooManyRequests && !c.t.retryStatus(code) {
		if c.budget != nil {
			c.budget.Succeeded(retry)
		}
		if th != nil && th.active.Load() {
			th.ok(c.turn, c.clock().Now())
		}
		return
	}
	if c.budget != nil {
		c.budget.Failed(retry, code == http.StatusTooManyRequests)
	}
	if th == nil || !th.active.Load() && code != http.StatusTooManyRequests && code != http.StatusServiceUnavailable {
		return
	}
	now := c.clock().Now()
	if hint, ok := throttleSignal(resp, now, c.t.Policy.minWait()); ok {
		var rate float64
		if c.budget != nil {
			rate = c.budget.recentRate()
		}
		th.signal(now, hint, c.turn, rate)
		return
	}
	th.ok(c.turn, now) // an answer, if not a good one, and no complaint about the rate
}

// budgetOutcome is what a call that stops with stop tells the breaker,
// given the last attempt's outcome o. A call whose retry the budget
// refused while the upstream is not failing (attempts still succeed, the
// retries that fail have just used up what calls earn: an upstream at
// capacity) is neutral: its one failed attempt is not the evidence of a
// call that ran out of retries, and counting it would let the budget's
// clamping trip the breaker, which would then refuse every call to an
// upstream that is serving most of them. While the upstream is failing
// (Budget.Failing) it counts as the failure it is.
func (c *call) budgetOutcome(stop *RetryError, o breaker.Outcome) breaker.Outcome {
	if stop.Reason == StopBudget && c.budget != nil && !c.budget.Failing() {
		return breaker.Neutral
	}
	return o
}

// refuseFirst ends a call whose first attempt was not sent: the throttle
// refused it, or its caller gave up waiting for its turn.
func (c *call) refuseFirst(err error) error {
	c.permit.Release()
	if c.body != nil {
		c.body.Close() // the request body, or the copy that replaced it
	}
	switch te, ok := err.(*ThrottleError); {
	case ok:
		c.observe(Event{Kind: EventGiveUp, Err: te, Reason: te.Reason})
	case errors.Is(err, breaker.ErrOpen):
		c.observe(Event{Kind: EventRefused, Err: err, Reason: StopBreakerOpen})
	}
	return err
}

// turnStop is the *RetryError of a retry that was not sent for want of a
// turn: after failure, the last attempt's error.
func (c *call) turnStop(failure error, attempt int, err error) *RetryError {
	te, ok := err.(*ThrottleError)
	if !ok {
		reason := StopCanceled
		if errors.Is(err, breaker.ErrOpen) {
			reason = StopBreakerOpen
		}
		return &RetryError{Err: failure, Attempts: attempt, Reason: reason, cause: err}
	}
	stop := &RetryError{Err: failure, Attempts: attempt, Reason: te.Reason, cause: te, limit: te.Wait}
	switch te.Reason {
	case StopRetryAfter:
		stop.RetryAfter, stop.limit = te.Wait, c.t.Policy.maxRetryAfter()
	case StopMaxElapsed:
		stop.limit = c.t.Policy.MaxElapsed
	}
	return stop
}
