package httpretry

import (
	"context"
	"net/http"
	"time"

	"github.com/hordekit/httpretry/clock"
)

// hostState is what a Transport keeps per host besides its breaker: the
// retry budget and the rate-limit throttle. One lookup finds both.
type hostState struct {
	budget   *Budget // nil when the budget is off
	throttle *throttle
}

// newHostState returns the state of a host first seen: a budget from cfg
// unless noBudget, a throttle unless noThrottle.
func newHostState(cfg BudgetConfig, noBudget, noThrottle bool) *hostState {
	hs := &hostState{}
	if !noBudget {
		hs.budget, _ = NewBudget(cfg) // validated by Transport.init
	}
	if !noThrottle {
		hs.throttle = &throttle{}
	}
	return hs
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
func (c *call) awaitTurn(ctx context.Context, start time.Time) error {
	th := c.throttle()
	if th == nil || !th.active.Load() {
		c.turn = turn{}
		return nil
	}
	p := &c.t.Policy
	clk := clock.Or(p.Clock)
	for {
		now := clk.Now()
		limit := p.maxRetryAfter()
		reason := StopRetryAfter
		if deadline, ok := ctx.Deadline(); ok && deadline.Sub(now) <= limit {
			limit, reason = deadline.Sub(now)-1, StopDeadline
		}
		if p.MaxElapsed > 0 {
			if left := p.MaxElapsed - now.Sub(start); left <= limit {
				limit, reason = left-1, StopMaxElapsed
			}
		}
		tr, ok := th.take(now, limit, p.random(), p.minWait())
		if !ok {
			return &ThrottleError{Host: c.host, Wait: tr.at.Sub(now), Reason: reason}
		}
		c.turn = tr
		if err := clock.Sleep(ctx, clk, tr.at.Sub(now)); err != nil {
			return err
		}
		// A signal that came in while this call slept paused the host
		// again: its turn is gone, it takes a new one.
		if !th.pausedAt(clk.Now()) {
			return nil
		}
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
		if c.budget != nil && ctx.Err() == nil && IsTransient(err) {
			c.budget.Failed(retry, false)
		}
		return
	}
	code := resp.StatusCode
	if code < 500 && code != http.StatusTooManyRequests && !c.t.retryStatus(code) {
		if c.budget != nil {
			c.budget.Succeeded(retry)
		}
		if th := c.throttle(); th != nil {
			th.ok(c.turn)
		}
		return
	}
	if c.budget != nil {
		c.budget.Failed(retry, code == http.StatusTooManyRequests)
	}
	th := c.throttle()
	if th == nil {
		return
	}
	now := clock.Or(c.t.Policy.Clock).Now()
	if hint, ok := throttleSignal(resp, now, c.t.Policy.minWait()); ok {
		var rate float64
		if c.budget != nil {
			rate = c.budget.recentRate()
		}
		th.signal(now, hint, c.turn, rate)
	}
}

// refuseFirst ends a call whose first attempt was not sent: the throttle
// refused it, or its caller gave up waiting for its turn.
func (c *call) refuseFirst(err error) error {
	c.permit.Release()
	if c.body != nil {
		c.body.Close() // the request body, or the copy that replaced it
	}
	if te, ok := err.(*ThrottleError); ok {
		c.t.observe(Event{Kind: EventGiveUp, Method: c.req.Method, Host: c.host, Err: te, Reason: te.Reason})
	}
	return err
}

// turnStop is the *RetryError of a retry that was not sent for want of a
// turn: after failure, the last attempt's error.
func (c *call) turnStop(failure error, attempt int, err error) *RetryError {
	te, ok := err.(*ThrottleError)
	if !ok {
		return &RetryError{Err: failure, Attempts: attempt, Reason: StopCanceled, cause: err}
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
