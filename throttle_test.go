package httpretry

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hordekit/httpretry/clock"
	"github.com/hordekit/httpretry/internal/faultserver"
	"github.com/hordekit/httpretry/internal/leaktest"
)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// TestThrottleRules walks the throttle through its rules with explicit
// times.
func TestThrottleRules(t *testing.T) {
	var th throttle
	now := epoch
	const spread = 500 * time.Millisecond
	if tr, _, ok := th.take(now, time.Hour, 0.5, spread); !ok || !tr.at.Equal(now) || tr.epoch != 0 {
		t.Fatalf("unthrottled take = %+v, %v; want now, unpaced", tr, ok)
	}

	// Rules 1 and 2: the first signal pauses for the hint and, with no
	// call rate known, paces at one request per hint in a slow start.
	th.signal(now, 2*time.Second, turn{}, 0)
	if th.gap != 2*time.Second || !th.until.Equal(now.Add(2*time.Second)) || !th.slow {
		t.Fatalf("after the first signal gap=%v until=+%v slow=%v, want 2s, +2s, true", th.gap, th.until.Sub(now), th.slow)
	}
	// Rule 3: turns start after the pause, the first jittered by u times
	// the smaller of gap and spread, then one gap apart.
	first, _, _ := th.take(now, time.Hour, 0.5, spread)
	if got := first.at.Sub(now); got != 2*time.Second+250*time.Millisecond {
		t.Errorf("first turn at +%v, want +2.25s", got)
	}
	// A turn further than the limit is not taken and leaves no trace.
	if tr, _, ok := th.take(now, 3*time.Second, 0, spread); ok || tr.at.Sub(first.at) != 2*time.Second {
		t.Errorf("take with a 3s limit = +%v, %v; want refused, saying a gap after the first", tr.at.Sub(now), ok)
	}
	second, wake, _ := th.take(now, time.Hour, 0.9, spread)
	if got := second.at.Sub(first.at); got != 2*time.Second {
		t.Errorf("second turn %v after the first, want one gap (2s; the refused take took nothing)", got)
	}

	// Rule 4, slow start: an answer at the current pace doubles the rate,
	// once per pace. Having doubled, the queue starts again: the callers
	// waiting are woken to take turns at the new pace.
	th.ok(first, first.at)
	th.ok(second, first.at) // sent at the same, now old, pace
	if th.gap != time.Second {
		t.Fatalf("after two answers at one pace gap = %v, want 1s (halved once)", th.gap)
	}
	select {
	case <-wake:
	default:
		t.Fatal("the waiting callers were not woken when the rate doubled")
	}
	third, _, _ := th.take(now, time.Hour, 0, spread)
	fourth, _, _ := th.take(now, time.Hour, 0, spread)
	if got := third.at.Sub(now); got != 2*time.Second {
		t.Errorf("after the wake the first turn is at +%v, want the pause's end (+2s)", got)
	}
	if got := fourth.at.Sub(third.at); got != time.Second {
		t.Errorf("the next one %v later, want the new gap (1s)", got)
	}

	// Rule 2: a signal for a request sent at the current pace sets the rate
	// to what the host delivered: the two answers above, in the last
	// second, make 2/s; and it ends the slow start. An older request's
	// signal only extends the pause.
	now = fourth.at
	th.signal(now, time.Second, fourth, 0)
	want := 500 * time.Millisecond
	if th.gap != want || th.slow || !th.until.Equal(now.Add(time.Second)) {
		t.Fatalf("after a signal at the current pace gap=%v slow=%v until=+%v, want %v, false, +1s", th.gap, th.slow, th.until.Sub(now), want)
	}
	th.signal(now, 3*time.Second, second, 0)
	if th.gap != want || !th.until.Equal(now.Add(3*time.Second)) {
		t.Fatalf("after an old request's signal gap=%v until=+%v, want %v (unchanged), +3s", th.gap, th.until.Sub(now), want)
	}
	if !th.pausedAt(now.Add(2*time.Second)) || th.pausedAt(now.Add(3*time.Second)) {
		t.Error("pausedAt disagrees with the 3s pause")
	}

	// Rule 4 after the slow start: the rate grows a tenth per second of
	// answers at the current pace.
	cur, _, _ := th.take(now, time.Hour, 0, spread)
	th.ok(cur, now.Add(500*time.Millisecond))
	if got := time.Duration(float64(want) / (1 + growth*0.5)); th.gap != got {
		t.Fatalf("half a second after the signal an answer made the gap %v, want %v", th.gap, got)
	}

	// Rule 5: 10 s without a signal, and a pause that is over, end it.
	later := now.Add(quietEnd)
	if tr, _, ok := th.take(later, time.Hour, 0.5, spread); !ok || !tr.at.Equal(later) || th.active.Load() {
		t.Errorf("10s after the last signal take = +%v, active %v; want now, and the pacing over", tr.at.Sub(later), th.active.Load())
	}
	// ... and so does a rate of 1000/s once the queue has gone.
	th.signal(now, time.Millisecond, turn{}, 500) // 250/s
	at := now
	for i := 0; th.gap > minGap; i++ {
		if i > 100 {
			t.Fatal("the rate never reaches 1000/s on answers")
		}
		at = at.Add(time.Second)
		th.ok(turn{epoch: th.epoch}, at)
	}
	queued, _, _ := th.take(at, time.Hour, 0, spread)
	if !th.active.Load() || !queued.at.After(at) {
		t.Fatalf("at 1000/s with a turn just taken: active %v, next turn at +%v; want still paced", th.active.Load(), queued.at.Sub(at))
	}
	if tr, _, ok := th.take(queued.at, time.Hour, 0, spread); !ok || !tr.at.Equal(queued.at) || th.active.Load() {
		t.Errorf("once the queue has gone take = +%v, active %v; want now, and the pacing over", tr.at.Sub(queued.at), th.active.Load())
	}
}

func TestThrottleCapsThePause(t *testing.T) {
	var th throttle
	th.signal(epoch, 365*24*time.Hour, turn{}, 0)
	if got := th.until.Sub(epoch); got != maxPause || th.gap != maxPause {
		t.Fatalf("a year's hint paused the host %v with a gap of %v, want %v for both", got, th.gap, maxPause)
	}
}

// TestThrottleStartsAtHalfTheCallRate: with a known call rate the pacing
// starts at half of it, past the slow start.
func TestThrottleStartsAtHalfTheCallRate(t *testing.T) {
	var th throttle
	th.signal(epoch, time.Second, turn{}, 100)
	if th.gap != 20*time.Millisecond || th.slow {
		t.Fatalf("at 100 calls/s gap = %v slow = %v, want 20ms (50/s), false", th.gap, th.slow)
	}
	var slow throttle
	slow.signal(epoch, time.Second, turn{}, 0.1)
	if slow.gap != time.Second {
		t.Fatalf("at 0.1 calls/s gap = %v, want the hint (1s) at most", slow.gap)
	}
}

func TestThrottleSignals(t *testing.T) {
	resp := func(code int, retryAfter string) *http.Response {
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		return &http.Response{StatusCode: code, Header: h}
	}
	for _, c := range []struct {
		resp *http.Response
		hint time.Duration
		ok   bool
	}{
		{resp(429, "2"), 2 * time.Second, true},
		{resp(429, ""), DefaultMinWait, true},
		{resp(429, "soon"), DefaultMinWait, true}, // a malformed hint is ignored
		{resp(503, "3"), 3 * time.Second, true},
		{resp(503, ""), 0, false}, // an outage, not a limit
		{resp(500, "3"), 0, false},
		{resp(200, "3"), 0, false},
	} {
		hint, ok := throttleSignal(c.resp, epoch, DefaultMinWait)
		if hint != c.hint || ok != c.ok {
			t.Errorf("%d Retry-After %q: %v, %v; want %v, %v", c.resp.StatusCode, c.resp.Header.Get("Retry-After"), hint, ok, c.hint, c.ok)
		}
	}
}

// arrivals records the fake time at which each request reached a fault
// server.
type arrivals struct {
	mu sync.Mutex
	at []time.Time
}

func (a *arrivals) behavior(clk clock.Clock, faults ...faultserver.Fault) faultserver.Behavior {
	script := faultserver.Script(faults...)
	return func(n int, r *http.Request) faultserver.Fault {
		a.mu.Lock()
		a.at = append(a.at, clk.Now())
		a.mu.Unlock()
		return script(n, r)
	}
}

// TestTransportThrottlesTheHost: after one call's 429 with Retry-After: 2,
// another call to the same host does not send its first attempt before the
// 2 s have passed, and a call whose deadline is shorter fails at once with
// the wait, sending nothing.
func TestTransportThrottlesTheHost(t *testing.T) {
	leaktest.Check(t)
	var arr arrivals
	fx := newFixture(t, &Transport{Policy: Policy{MaxAttempts: 1}})
	srv := faultserver.Start(t, faultserver.Config{Behavior: arr.behavior(fx.clk,
		faultserver.Status(429).WithRetryAfter(2*time.Second), faultserver.OK())})
	start := fx.clk.Now()
	resp, _, err := fx.get(t, srv.URL)
	if err != nil || resp.StatusCode != 429 {
		t.Fatalf("first GET = %v, %v; want the 429", resp, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
	_, err = fx.c.Do(req)
	te, ok := errors.AsType[*ThrottleError](err)
	if !errors.Is(err, ErrThrottled) || !ok || te.Reason != StopDeadline || te.Wait < 2*time.Second || te.Wait > 3*time.Second {
		t.Fatalf("GET with a 1s deadline = %v, want ErrThrottled for the deadline with a wait of 2-3s", err)
	}
	if d, ok := te.RetryAfter(); !ok || d != te.Wait {
		t.Errorf("RetryAfter() = %v, %v", d, ok)
	}
	if srv.Requests() != 1 {
		t.Fatalf("the throttled call sent a request: %d in all", srv.Requests())
	}

	resp, body, err := fx.get(t, srv.URL)
	if err != nil || resp.StatusCode != 200 || body != "ok\n" {
		t.Fatalf("GET = %v, %q, %v", resp, body, err)
	}
	if got := arr.at[1].Sub(start); got < 2*time.Second {
		t.Fatalf("the next call's first attempt went out %v after the 429, want at least its Retry-After (2s)", got)
	}
}

func TestTransportThrottleRespectsMaxRetryAfter(t *testing.T) {
	leaktest.Check(t)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(
		faultserver.Status(503).WithRetryAfter(30*time.Second), faultserver.OK())})
	fx := newFixture(t, &Transport{NoBreaker: true})
	resp, _, err := fx.get(t, srv.URL) // 30s is past MaxRetryAfter (10s): returned at once
	if err != nil || resp.StatusCode != 503 {
		t.Fatalf("GET = %v, %v; want the 503", resp, err)
	}
	_, _, err = fx.get(t, srv.URL)
	te, ok := errors.AsType[*ThrottleError](err)
	if !ok || te.Reason != StopRetryAfter || te.Wait < 29*time.Second {
		t.Fatalf("next GET = %v, want a ThrottleError past MaxRetryAfter", err)
	}
	if srv.Requests() != 1 {
		t.Fatalf("%d requests, want 1", srv.Requests())
	}

	// NoThrottle: the next call goes straight out.
	fx2 := newFixture(t, &Transport{NoBreaker: true, NoThrottle: true})
	srv2 := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(
		faultserver.Status(503).WithRetryAfter(30*time.Second), faultserver.OK())})
	fx2.get(t, srv2.URL)
	if resp, _, err := fx2.get(t, srv2.URL); err != nil || resp.StatusCode != 200 {
		t.Fatalf("with NoThrottle GET = %v, %v; want 200", resp, err)
	}
}

// TestTransportThrottleStopsARetry: a retry whose turn is past the call's
// deadline is not sent; the call returns the last response.
func TestTransportThrottleStopsARetry(t *testing.T) {
	leaktest.Check(t)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(
		faultserver.Status(429).WithRetryAfter(time.Second))})
	fx := newFixture(t, &Transport{Policy: Policy{MaxAttempts: 5}, NoBudget: true})
	resp, _, err := fx.get(t, srv.URL)
	if err != nil || resp.StatusCode != 429 {
		t.Fatalf("GET = %v, %v", resp, err)
	}
	// Each 429 halves the pace at most once per request sent at it, and
	// every retry waits for its turn: 5 attempts, never two in the same
	// second.
	if srv.Requests() != 5 {
		t.Fatalf("%d requests, want 5", srv.Requests())
	}
	for i, w := range fx.waits.waits {
		if w < time.Second {
			t.Errorf("wait %d = %v, shorter than the Retry-After", i, w)
		}
	}
}

// limitReq is nginx's limit_req with burst 0 in memory: a request is served
// when at least 1/rate has passed since the last one served, and answered
// 429 with a fixed Retry-After otherwise, like `limit_req_status 429;
// add_header Retry-After 2 always;`.
type limitReq struct {
	clk        clock.Clock
	every      time.Duration
	retryAfter string

	mu              sync.Mutex
	last            time.Time
	served, limited int
}

func (l *limitReq) RoundTrip(req *http.Request) (*http.Response, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clk.Now()
	resp := &http.Response{Header: http.Header{}, Body: http.NoBody, Request: req}
	if l.last.IsZero() || now.Sub(l.last) >= l.every {
		l.last = now
		l.served++
		resp.StatusCode = http.StatusOK
		return resp, nil
	}
	l.limited++
	resp.StatusCode = http.StatusTooManyRequests
	resp.Header.Set("Retry-After", l.retryAfter)
	return resp, nil
}

// TestRateLimitScenario reproduces, on a fake clock, the nginx run the
// rate-limit issue measured: limit_req at 2 requests/s answering 429 with
// Retry-After: 2, and 20 callers making 5 calls each through
// &Transport{}. The Python original sent 152 requests for 16 successes
// there; the throttle must do no worse on either count.
func TestRateLimitScenario(t *testing.T) {
	f := clock.NewFake(epoch)
	up := &limitReq{clk: f, every: 500 * time.Millisecond, retryAfter: "2"}
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(7, 8))
	// Seeded draws; the goroutines' order still varies from run to run,
	// so the assertions keep a margin.
	tr := &Transport{Base: up, Policy: Policy{Clock: f, Logger: quiet, Rand: func() float64 {
		mu.Lock()
		defer mu.Unlock()
		return rng.Float64()
	}}}
	const callers, calls = 20, 5
	var live atomic.Int64
	live.Store(callers)
	var ok, failed, throttled atomic.Int64
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			defer live.Add(-1)
			for range calls {
				req, _ := http.NewRequest("GET", "http://horde.test/api/v2/status/models", nil)
				resp, err := tr.RoundTrip(req)
				switch {
				case errors.Is(err, ErrThrottled):
					throttled.Add(1)
				case err == nil && resp.StatusCode == 200:
					ok.Add(1)
				default:
					failed.Add(1)
				}
				if err == nil {
					resp.Body.Close()
				}
			}
		})
	}
	// Drive the fake clock: once every caller still running is asleep on a
	// timer, move a millisecond on.
	for live.Load() > 0 {
		for int64(f.Pending()) < live.Load() {
			runtime.Gosched()
		}
		f.Advance(time.Millisecond)
	}
	wg.Wait()
	requests := up.served + up.limited
	t.Logf("%d requests (%d served, %d 429s) in %v; calls: %d ok, %d failed after retries, %d failed fast (throttled)",
		requests, up.served, up.limited, f.Now().Sub(epoch), ok.Load(), failed.Load(), throttled.Load())
	if requests > 152 || ok.Load() < 16 {
		t.Errorf("%d requests for %d successes; the original sent 152 for 16", requests, ok.Load())
	}
	if got := ok.Load() + failed.Load() + throttled.Load(); got != callers*calls {
		t.Errorf("%d calls ended, want %d", got, callers*calls)
	}
}
