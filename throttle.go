package httpretry

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// ErrThrottled is matched (errors.Is) by the error of a call, or of a retry,
// that a Transport did not send because its host is rate limited and the
// wait for its turn was longer than the call could afford.
var ErrThrottled = errors.New("httpretry: host is rate limited")

// ThrottleError says that a request was not sent because its host is rate
// limited: the host answered 429, or 503 with Retry-After, and the
// request's turn is further away than its deadline, Policy.MaxElapsed or
// Policy.MaxRetryAfter allow. It matches ErrThrottled, and its RetryAfter
// method makes an outer Policy.Do honour the wait.
type ThrottleError struct {
	// Host is the rate-limited host.
	Host string
	// Wait is how long the request would have had to wait for its turn.
	Wait time.Duration
	// Reason says which limit the wait passed: StopRetryAfter, StopDeadline
	// or StopMaxElapsed.
	Reason StopReason
}

// Error says which host is limited and for how long.
func (e *ThrottleError) Error() string {
	return fmt.Sprintf("httpretry: %s is rate limited: next turn in %v (%v)", e.Host, e.Wait.Round(time.Millisecond), e.Reason)
}

// Is makes the error match ErrThrottled.
func (e *ThrottleError) Is(target error) bool { return target == ErrThrottled }

// RetryAfter returns Wait, so that a retry loop around the Transport waits
// for the host rather than calling it again at once.
func (e *ThrottleError) RetryAfter() (time.Duration, bool) { return e.Wait, true }

// The throttle's limits.
const (
	// maxPause caps a host's pause and the gap between its turns: a
	// Retry-After of a year from a broken server costs one request a
	// minute, not a year of silence.
	maxPause = time.Minute
	// minGap ends the throttle: at more than a thousand requests a second
	// the pacing no longer holds anyone back.
	minGap = time.Millisecond
)

// throttle is a host's rate-limit state: a pause from the server's hints,
// and a pace learned from its answers the way TCP finds a path's rate (a
// slow start that doubles the rate on each success until the first loss,
// then additive increase and multiplicative decrease), with Retry-After as
// the explicit signal, like the AWS SDKs' adaptive retry mode.
//
// The rules:
//
//  1. A 429, or a 503 with Retry-After, is a throttle signal. It pauses the
//     host until the hint has passed (the latest end of every hint; no hint
//     means Policy.MinWait; at most maxPause).
//  2. The first signal starts pacing at half the rate the host was being
//     called at (its budget counts the calls), or, with no budget, at one
//     request per hint in a slow start. A signal for a request sent at the
//     current pace doubles the gap between requests and ends the slow
//     start; older requests' signals only extend the pause.
//  3. While paced, every attempt, first or retry, takes the next turn: not
//     during the pause, and one gap after the previous turn. The first turn
//     after a pause is jittered by up to the smaller of the gap and
//     Policy.MinWait, so that processes do not all return together. A
//     caller whose turn is further than its deadline, MaxElapsed or
//     MaxRetryAfter allow fails at once with a ThrottleError.
//  4. A success for a request sent at the current pace halves the gap
//     during the slow start, and shortens it by a sixteenth after it;
//     below minGap the pacing ends.
//
// Unthrottled, a request reads one atomic flag. All the rest is under a
// mutex, on the throttled path only.
type throttle struct {
	active atomic.Bool

	mu    sync.Mutex
	until time.Time     // paused before this
	last  time.Time     // the latest turn given
	gap   time.Duration // between turns
	epoch uint64        // counts changes of pace, from 1 once active
	slow  bool          // in the slow start
	// resumed is set when a pause has ended since the last turn was given,
	// so the next turn is jittered.
	resumed bool
}

// turn is what a call learns when it takes a turn: when to send, and the
// pace it was sent at, to report with the outcome.
type turn struct {
	at    time.Time
	epoch uint64 // 0: sent unthrottled
}

// take returns the next turn at or after now, jittered by u times at most
// spread after a pause. When that turn is further than limit from now it
// is not taken: ok is false and the turn says when it would have been.
func (t *throttle) take(now time.Time, limit time.Duration, u float64, spread time.Duration) (tr turn, ok bool) {
	if !t.active.Load() {
		return turn{at: now}, true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	at := now
	if next := t.last.Add(t.gap); next.After(at) {
		at = next
	}
	if t.until.After(at) {
		at = t.until
		t.resumed = true
	}
	if t.resumed {
		at = at.Add(time.Duration(u * float64(min(t.gap, spread))))
	}
	tr = turn{at: at, epoch: t.epoch}
	if at.Sub(now) > limit {
		return tr, false
	}
	t.resumed = false
	t.last = at
	return tr, true
}

// pausedAt reports whether the host is paused at now: a caller woken for
// its turn checks it, in case a signal arrived while it slept.
func (t *throttle) pausedAt(now time.Time) bool {
	if !t.active.Load() {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.until.After(now)
}

// signal records a throttle signal at now with the server's hint, for a
// request sent at tr's pace; rate is the host's recent calls per second, 0
// when unknown.
func (t *throttle) signal(now time.Time, hint time.Duration, tr turn, rate float64) {
	hint = min(max(hint, minGap), maxPause)
	t.mu.Lock()
	defer t.mu.Unlock()
	if end := now.Add(hint); end.After(t.until) {
		t.until = end
	}
	switch {
	case !t.active.Load():
		t.gap, t.slow, t.last = hint, true, time.Time{}
		if rate > 0 {
			t.gap = min(max(time.Duration(2*float64(time.Second)/rate), minGap), hint)
			t.slow = false
		}
		t.epoch++
		t.active.Store(true)
	case tr.epoch == t.epoch:
		t.gap = min(2*t.gap, maxPause)
		t.slow = false
		t.epoch++
	}
}

// ok records a success for a request sent at tr's pace.
func (t *throttle) ok(tr turn) {
	if tr.epoch == 0 || !t.active.Load() {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if tr.epoch != t.epoch {
		return
	}
	if t.slow {
		t.gap /= 2
		t.epoch++
	} else {
		t.gap -= t.gap / 16
	}
	if t.gap < minGap {
		t.active.Store(false)
		t.epoch = 0
	}
}

// throttleSignal reports whether resp is a throttle signal (rule 1), and
// the hint it carries.
func throttleSignal(resp *http.Response, now time.Time, minWait time.Duration) (time.Duration, bool) {
	switch resp.StatusCode {
	case http.StatusTooManyRequests:
		if hint, ok := responseRetryAfter(resp, now); ok {
			return hint, true
		}
		return minWait, true
	case http.StatusServiceUnavailable:
		return responseRetryAfter(resp, now)
	}
	return 0, false
}
