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

// The throttle's numbers.
const (
	// maxPause caps a host's pause and the gap between its turns: a
	// Retry-After of a year from a broken server costs one request a
	// minute, not a year of silence.
	maxPause = time.Minute
	// minGap ends the throttle: at more than a thousand requests a second
	// the pacing no longer holds anyone back.
	minGap = time.Millisecond
	// quietEnd ends the throttle when no signal has come for that long:
	// the host has stopped limiting, or the pace is well below its limit.
	quietEnd = 10 * time.Second
	// growth is how much the rate grows per second of answers without a
	// signal, to find out whether the host would take more; fastGrowth
	// once the limit seems gone (about doubling every half second).
	growth     = 0.1
	fastGrowth = 1.4
	// measureSpan is how far back the delivered rate is measured.
	measureSpan = 2 * time.Second
)

// throttle is a host's rate-limit state: a pause from the server's hints,
// and a pace learned from its answers, with Retry-After as the explicit
// signal, as the AWS SDKs' adaptive retry mode learns a rate from
// throttling errors. Like TCP's BBR it paces at the rate the host has
// shown it delivers and probes a little above it, rather than halving on
// every loss: a rate limit that resets each window, and says when, would
// otherwise be left half used.
//
// The rules:
//
//  1. A 429, or a 503 with Retry-After, is a throttle signal. It pauses the
//     host until the hint has passed (the latest end of every hint; no hint
//     means Policy.MinWait; at most maxPause).
//  2. The first signal starts pacing at half the rate the host was being
//     called at (its budget counts the calls), or, with no budget, at one
//     request per hint in a slow start. A signal for a request sent at the
//     current pace sets the rate to what the host delivered over the last
//     two seconds (answers that were not signals), at least one request per
//     hint, and ends the slow start; older requests' signals only extend
//     the pause.
//  3. While paced, every attempt, first or retry, takes the next turn: not
//     during the pause, and one gap after the previous turn. The first turn
//     after a pause is jittered by up to the smaller of the gap and
//     Policy.MinWait, so that processes do not all return together. A
//     caller whose turn is further than its deadline, MaxElapsed or
//     MaxRetryAfter allow fails at once with a ThrottleError.
//  4. Any other answer (a success, an error, a 5xx without a hint) for a
//     request sent at the current pace doubles the rate during the slow
//     start, and after it raises the rate by a tenth per second since the
//     last raise. Callers waiting for a turn are woken to take a new one
//     when the rate has doubled since they took theirs, so that a queue
//     built at a slow pace drains at the new one.
//  5. Once the last hint (at least a second) has passed without another
//     signal, the limit may have gone: the rate grows fourteen times
//     faster (doubling about every half second) until the next signal. The
//     pacing ends once it has reached a thousand requests a second and the
//     callers queued have all gone, or after 10 s without a signal; those
//     still waiting keep their turns.
//
// Unthrottled, a request reads one atomic flag. All the rest is under a
// mutex, on the throttled path only.
type throttle struct {
	active atomic.Bool

	mu     sync.Mutex
	until  time.Time     // paused before this
	last   time.Time     // the latest turn given
	gap    time.Duration // between turns
	epoch  uint64        // counts changes of pace, from 1 once active
	slow   bool          // in the slow start
	raised time.Time     // when the rate last grew
	heard  time.Time     // the latest signal
	hint   time.Duration // the latest signal's hint
	since  time.Time     // when the pacing began
	// delivered counts answers that were not signals, in the second
	// second and the one before it.
	delivered [2]int
	second    int64
	// resumed is set when a pause has ended since the last turn was given,
	// so the next turn is jittered.
	resumed bool
	// wake is closed to wake the callers waiting for their turn; wokeGap
	// is the gap when it was made.
	wake    chan struct{}
	wokeGap time.Duration
}

// turn is what a call learns when it takes a turn: when to send, and the
// pace it was sent at, to report with the outcome.
type turn struct {
	at    time.Time
	epoch uint64 // 0: sent unthrottled
}

// take returns the next turn at or after now, jittered by u times at most
// spread after a pause, and a channel closed if the caller should take a
// new turn before this one comes. When the turn is further than limit from
// now it is not taken: ok is false and the turn says when it would have
// been.
func (t *throttle) take(now time.Time, limit time.Duration, u float64, spread time.Duration) (tr turn, wake <-chan struct{}, ok bool) {
	if !t.active.Load() {
		return turn{at: now}, nil, true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	// At the fastest pace, once the queue has gone, or after a long quiet,
	// the pacing has nothing left to do.
	drained := t.gap <= minGap && !t.last.After(now)
	if (drained || now.Sub(t.heard) >= quietEnd) && !t.until.After(now) {
		t.endLocked()
		return turn{at: now}, nil, true
	}
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
		return tr, nil, false
	}
	t.resumed = false
	t.last = at
	if t.wake == nil {
		t.wake, t.wokeGap = make(chan struct{}), t.gap
	}
	return tr, t.wake, true
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
	t.heard, t.hint = now, hint
	switch {
	case !t.active.Load():
		t.gap, t.slow, t.last = hint, true, time.Time{}
		if rate > 0 {
			t.gap = min(max(time.Duration(2*float64(time.Second)/rate), minGap), hint)
			t.slow = false
		}
		t.epoch++
		t.raised, t.since = now, now
		t.delivered, t.second = [2]int{}, now.Unix()
		t.active.Store(true)
	case tr.epoch == t.epoch:
		t.gap = hint
		if r := t.deliveredRateLocked(now); r > 0 {
			t.gap = min(max(time.Duration(float64(time.Second)/r), minGap), hint)
		}
		t.slow = false
		t.epoch++
		t.raised = now
	}
}

// countLocked counts an answer that was not a signal, at now.
func (t *throttle) countLocked(now time.Time) {
	switch sec := now.Unix(); {
	case sec == t.second+1:
		t.delivered = [2]int{t.delivered[1], 0}
		t.second = sec
	case sec > t.second:
		t.delivered = [2]int{}
		t.second = sec
	}
	t.delivered[1]++
}

// deliveredRateLocked returns the answers per second that were not
// signals, over the last measureSpan, or since the pacing began.
func (t *throttle) deliveredRateLocked(now time.Time) float64 {
	t.countLocked(now)
	t.delivered[1]-- // countLocked rolled the seconds; take back its count
	n := t.delivered[0] + t.delivered[1]
	span := time.Second + now.Sub(time.Unix(t.second, 0))
	span = max(min(span, measureSpan, now.Sub(t.since)), 100*time.Millisecond)
	return float64(n) / span.Seconds()
}

// ok records at now an answer that was not a signal, for a request sent at
// tr's pace.
func (t *throttle) ok(tr turn, now time.Time) {
	if !t.active.Load() {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.countLocked(now)
	if tr.epoch == 0 || tr.epoch != t.epoch {
		return
	}
	g := growth
	if now.Sub(t.heard) >= max(t.hint, time.Second) {
		g = fastGrowth
	}
	if t.slow {
		t.gap /= 2
		t.epoch++
	} else if dt := now.Sub(t.raised); dt > 0 {
		t.gap = time.Duration(float64(t.gap) / (1 + g*min(dt.Seconds(), 1)))
	}
	t.raised = now
	t.gap = max(t.gap, minGap)
	if t.wake != nil && t.gap <= t.wokeGap/2 {
		// Turns taken at the old pace are too far out: start the queue
		// again from now at the new one.
		t.wakeLocked()
	}
}

// wakeAll wakes the callers waiting for a turn, to take new ones.
func (t *throttle) wakeAll() {
	if !t.active.Load() {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.wakeLocked()
}

// endLocked ends the pacing. Callers still waiting keep their turns:
// woken, a queue built while the host was limited would all go out at the
// same instant, into a limit that may still be there.
func (t *throttle) endLocked() {
	t.active.Store(false)
	t.epoch = 0
}

// wakeLocked wakes the callers waiting for a turn, to take new ones from
// now on.
func (t *throttle) wakeLocked() {
	if t.wake != nil {
		close(t.wake)
		t.wake = nil
	}
	t.last = time.Time{}
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
