package httpretry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hordekit/httpretry/clock"
	"github.com/hordekit/httpretry/internal/leaktest"
	"github.com/hordekit/httpretry/internal/testenv"
)

var epoch = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// quiet discards the retry log so test output stays readable.
var quiet = slog.New(slog.DiscardHandler)

// recorder collects the waits a loop announced.
type recorder struct{ waits []time.Duration }

func (r *recorder) onRetry(i RetryInfo) { r.waits = append(r.waits, i.Wait) }

// autoPolicy returns p wired to a fake clock that advances itself on every
// wait, a seeded random source, and a recorder of waits.
func autoPolicy(p Policy, seed uint64) (Policy, *clock.Fake, *recorder) {
	f := clock.NewFake(epoch)
	f.SetAuto(true)
	rec := &recorder{}
	p.Clock = f
	p.Rand = rand.New(rand.NewPCG(seed, seed)).Float64
	p.OnRetry = rec.onRetry
	p.Logger = quiet
	return p, f, rec
}

func statusErr(code int, header http.Header) *StatusError {
	if header == nil {
		header = http.Header{}
	}
	u, _ := url.Parse("https://user:pw@api.example.com/v2/status?apikey=s3cret&type=image")
	return &StatusError{Response: &http.Response{
		StatusCode: code,
		Header:     header,
		Body:       io.NopCloser(strings.NewReader("upstream says no")),
		Request:    &http.Request{Method: "GET", URL: u},
	}}
}

func TestZeroPolicyIsTheSeedDefaults(t *testing.T) {
	var p Policy
	if p.attempts() != 3 || p.minWait() != 500*time.Millisecond || p.maxWait() != 10*time.Second {
		t.Fatalf("defaults = %d, %v, %v", p.attempts(), p.minWait(), p.maxWait())
	}
	if p.maxRetryAfter() != 10*time.Second {
		t.Fatalf("MaxRetryAfter default = %v, want MaxWait", p.maxRetryAfter())
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	cases := []struct {
		p    Policy
		want string
	}{
		{Policy{MaxAttempts: -1}, "Policy.MaxAttempts"},
		{Policy{MinWait: -time.Second}, "Policy.MinWait"},
		{Policy{MaxWait: -time.Second}, "Policy.MaxWait"},
		{Policy{Multiplier: -1}, "Policy.Multiplier"},
		{Policy{MaxRetryAfter: -1}, "Policy.MaxRetryAfter"},
		{Policy{MaxElapsed: -1}, "Policy.MaxElapsed"},
		{Policy{AttemptTimeout: -1}, "Policy.AttemptTimeout"},
		{Policy{Backoff: 99}, "Policy.Backoff"},
		{Policy{MinWait: 20 * time.Second}, "Policy.MinWait (20s) must not exceed Policy.MaxWait (10s)"},
	}
	for _, c := range cases {
		err := c.p.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v, want mention of %q", c.p, err, c.want)
		}
		calls := 0
		derr := c.p.Do(context.Background(), func(context.Context) error { calls++; return nil })
		if derr == nil || derr.Error() != err.Error() || calls != 0 {
			t.Errorf("Do with invalid policy = %v after %d calls, want the validation error and no call", derr, calls)
		}
	}
}

// TestTenacitySemantics checks stop_after_attempt(k) and
// wait_random_exponential(multiplier, min, max) as the seed uses them.
func TestTenacitySemantics(t *testing.T) {
	cases := []struct {
		attempts        int
		min, max, mult  time.Duration
		wantCalls, wait int
	}{
		{attempts: 0, wantCalls: 3, wait: 2}, // the seed's defaults
		{attempts: 1, wantCalls: 1, wait: 0},
		{attempts: 5, min: time.Second, max: 15 * time.Second, wantCalls: 5, wait: 4},
		{attempts: 11, min: 100 * time.Millisecond, max: 2 * time.Second, mult: 250 * time.Millisecond, wantCalls: 11, wait: 10},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("attempts=%d", c.attempts), func(t *testing.T) {
			p, _, rec := autoPolicy(Policy{MaxAttempts: c.attempts, MinWait: c.min, MaxWait: c.max,
				Multiplier: c.mult, Backoff: TenacityExponential}, 7)
			calls := 0
			last := statusErr(503, nil)
			err := p.Do(context.Background(), func(context.Context) error { calls++; return last })
			if calls != c.wantCalls || len(rec.waits) != c.wait {
				t.Fatalf("calls=%d sleeps=%d, want %d and %d", calls, len(rec.waits), c.wantCalls, c.wait)
			}
			var se *StatusError
			if !errors.As(err, &se) || se != last {
				t.Fatalf("error %v does not wrap the last attempt's own error", err)
			}
			if Attempts(err) != c.wantCalls {
				t.Fatalf("Attempts = %d, want %d", Attempts(err), c.wantCalls)
			}
			for i, w := range rec.waits {
				lo, hi := tenacityBounds(p, i+1)
				if w < lo || w > hi {
					t.Errorf("wait after attempt %d = %v, want in [%v, %v]", i+1, w, lo, hi)
				}
			}
		})
	}
}

// tenacityBounds is the formula from tenacity's source, written out apart
// from the implementation.
func tenacityBounds(p Policy, n int) (time.Duration, time.Duration) {
	lo, hi, mult := p.minWait(), p.maxWait(), p.Multiplier
	if mult == 0 {
		mult = 500 * time.Millisecond
	}
	high := hi
	if n-1 < 40 {
		if e := mult * time.Duration(1<<(n-1)); e < hi {
			high = e
		}
	}
	return lo, max(lo, high)
}

func TestWaitBoundsEveryStrategy(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for b := ExponentialJitter; b <= Immediate; b++ {
		p := Policy{Backoff: b, MinWait: 200 * time.Millisecond, MaxWait: 5 * time.Second}
		prev := time.Duration(0)
		for n := 1; n <= 10; n++ {
			w := p.Wait(n, prev, r.Float64())
			lo, hi := p.minWait(), p.maxWait()
			switch b {
			case FullJitter:
				lo = 0
				hi = min(hi, p.minWait()*time.Duration(1<<n))
			case ExponentialJitter:
				hi = min(hi, p.minWait()*time.Duration(1<<n))
			case DecorrelatedJitter:
				hi = min(hi, max(lo, 3*max(prev, lo)))
			case Constant:
				hi = lo
			case Immediate:
				lo, hi = 0, 0
			}
			if w < lo || w > hi {
				t.Errorf("%v: wait after attempt %d = %v, want in [%v, %v]", b, n, w, lo, hi)
			}
			prev = w
		}
		// Overflow safety far past any sane attempt count.
		for _, n := range []int{64, 200, 1 << 20} {
			for _, u := range []float64{0, 0.5, 0.999999} {
				if w := p.Wait(n, 4*time.Second, u); w < 0 || w > p.maxWait() {
					t.Errorf("%v: Wait(%d, u=%v) = %v, outside [0, MaxWait]", b, n, u, w)
				}
			}
		}
	}
}

// TestTenacityLockstep shows the seed's flaw and that the default avoids it:
// with the seed's numbers the first tenacity wait is always 0.5 s.
func TestTenacityLockstepAndDefaultSpread(t *testing.T) {
	seed := Policy{Backoff: TenacityExponential}
	if a, b := seed.Wait(1, 0, 0), seed.Wait(1, 0, 0.999); a != b || a != 500*time.Millisecond {
		t.Fatalf("tenacity first wait = %v and %v, want both exactly 0.5s (the seed's lockstep)", a, b)
	}
	var def Policy
	lo, hi := def.Wait(1, 0, 0), def.Wait(1, 0, 0.999)
	if lo != 500*time.Millisecond || hi < 990*time.Millisecond {
		t.Fatalf("default first wait spans [%v, %v], want [0.5s, 1s)", lo, hi)
	}
}

func TestNonRetryableReturnedAsIs(t *testing.T) {
	p, _, rec := autoPolicy(Policy{}, 1)
	own := errors.New("bad request")
	for _, e := range []error{own, statusErr(404, nil), statusErr(400, nil)} {
		calls := 0
		err := p.Do(context.Background(), func(context.Context) error { calls++; return e })
		if err != e || calls != 1 || len(rec.waits) != 0 {
			t.Fatalf("Do = %v after %d calls, want the error itself after 1", err, calls)
		}
	}
}

func TestPermanentStopsAtOnce(t *testing.T) {
	p, _, _ := autoPolicy(Policy{}, 1)
	inner := statusErr(503, nil)
	calls := 0
	err := p.Do(context.Background(), func(context.Context) error { calls++; return Permanent(inner) })
	if err != inner || calls != 1 {
		t.Fatalf("Do = %v after %d calls, want the inner error after 1", err, calls)
	}
	if Permanent(nil) != nil {
		t.Fatal("Permanent(nil) != nil")
	}
}

func TestRetryIfAddsErrors(t *testing.T) {
	errQuota := errors.New("quota")
	p, _, _ := autoPolicy(Policy{RetryIf: func(err error) bool { return errors.Is(err, errQuota) }}, 1)
	calls := 0
	err := p.Do(context.Background(), func(context.Context) error {
		calls++
		if calls < 3 {
			return fmt.Errorf("wrapped: %w", errQuota)
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Do = %v after %d calls, want success on the 3rd", err, calls)
	}
}

func TestDoValue(t *testing.T) {
	p, _, _ := autoPolicy(Policy{}, 1)
	calls := 0
	v, err := DoValue(context.Background(), p, func(context.Context) (string, error) {
		calls++
		if calls == 1 {
			return "", syscall.ECONNRESET
		}
		return "ok", nil
	})
	if v != "ok" || err != nil || calls != 2 {
		t.Fatalf("DoValue = %q, %v after %d calls", v, err, calls)
	}
}

func TestExhaustedKeepsBodyReadable(t *testing.T) {
	p, _, _ := autoPolicy(Policy{}, 1)
	err := p.Do(context.Background(), func(context.Context) error { return statusErr(503, nil) })
	se, ok := errors.AsType[*StatusError](err)
	if !ok {
		t.Fatalf("no *StatusError in %v", err)
	}
	body, _ := io.ReadAll(se.Response.Body)
	if string(body) != "upstream says no" {
		t.Fatalf("body = %q", body)
	}
	msg := err.Error()
	if strings.Contains(msg, "s3cret") || strings.Contains(msg, "pw@") {
		t.Fatalf("error leaks a secret: %s", msg)
	}
	want := "HTTP 503 from https://api.example.com/v2/status?apikey=REDACTED&type=image (gave up after 3 attempt(s): attempts exhausted)"
	if msg != want {
		t.Fatalf("message\n got %s\nwant %s", msg, want)
	}
}

func TestRetryAfterSetsAFloorOnTheWait(t *testing.T) {
	for _, c := range []struct {
		u    float64
		want time.Duration
	}{
		// The spread after a hint of 7s is uniform in [0, 7s): the same
		// draw u scales it, so the floor and the ceiling are both exact.
		{0, 7 * time.Second},
		{0.5, 10500 * time.Millisecond},
		{0.999999, 13999993 * time.Microsecond},
	} {
		p, _, rec := autoPolicy(Policy{}, 1)
		p.Rand = func() float64 { return c.u }
		calls := 0
		err := p.Do(context.Background(), func(context.Context) error {
			calls++
			if calls == 1 {
				return statusErr(429, http.Header{"Retry-After": {"7"}})
			}
			return nil
		})
		if err != nil || len(rec.waits) != 1 || rec.waits[0] != c.want {
			t.Fatalf("u=%v: Do = %v, waits %v; want one wait of %v", c.u, err, rec.waits, c.want)
		}
	}
}

// The herd a Retry-After sends away must not come back together: 50 clients
// told "Retry-After: 1" at the same moment return no earlier than 1 s, and
// no 50 ms window holds more than a quarter of them.
func TestRetryAfterSpreadsTheHerd(t *testing.T) {
	const clients = 50
	var waits []time.Duration
	for i := range clients {
		p, _, rec := autoPolicy(Policy{}, uint64(i+1))
		calls := 0
		err := p.Do(context.Background(), func(context.Context) error {
			calls++
			if calls == 1 {
				return statusErr(429, http.Header{"Retry-After": {"1"}})
			}
			return nil
		})
		if err != nil || len(rec.waits) != 1 {
			t.Fatalf("client %d: Do = %v, waits %v", i, err, rec.waits)
		}
		waits = append(waits, rec.waits[0])
	}
	slices.Sort(waits)
	if waits[0] < time.Second {
		t.Fatalf("a client came back after %v, before the hint of 1s", waits[0])
	}
	most := 0
	for i := range waits {
		j := i
		for j < len(waits) && waits[j]-waits[i] < 50*time.Millisecond {
			j++
		}
		most = max(most, j-i)
	}
	if most > clients/4 {
		t.Fatalf("%d of %d retries fall in one 50ms window (want at most %d): %v", most, clients, clients/4, waits)
	}
	t.Logf("50 clients after Retry-After: 1 came back between %v and %v, at most %d in any 50ms", waits[0], waits[len(waits)-1], most)
}

// The spread never pushes a wait the hint allows past MaxElapsed (or the
// context's deadline, which shares the code).
func TestRetryAfterSpreadFitsTheDeadline(t *testing.T) {
	p, _, rec := autoPolicy(Policy{MaxElapsed: 1200 * time.Millisecond}, 1)
	p.Rand = func() float64 { return 0.999999 }
	calls := 0
	err := p.Do(context.Background(), func(context.Context) error {
		calls++
		if calls == 1 {
			return statusErr(503, http.Header{"Retry-After": {"1"}})
		}
		return nil
	})
	if err != nil || len(rec.waits) != 1 || rec.waits[0] < time.Second || rec.waits[0] >= 1200*time.Millisecond {
		t.Fatalf("Do = %v, waits %v; want one wait in [1s, 1.2s)", err, rec.waits)
	}
}

func TestRetryAfterDateUsesTheLoopClock(t *testing.T) {
	p, f, rec := autoPolicy(Policy{}, 1)
	p.Rand = func() float64 { return 0 } // no spread: the wait is the hint
	calls := 0
	err := p.Do(context.Background(), func(context.Context) error {
		calls++
		if calls == 1 {
			at := f.Now().Add(3 * time.Second).Format(http.TimeFormat)
			return statusErr(503, http.Header{"Retry-After": {at}})
		}
		return nil
	})
	if err != nil || len(rec.waits) != 1 || rec.waits[0] != 3*time.Second {
		t.Fatalf("Do = %v, waits %v; want one wait of 3s", err, rec.waits)
	}
}

func TestRetryAfterTooLongReturnsAtOnce(t *testing.T) {
	p, f, rec := autoPolicy(Policy{}, 1)
	calls := 0
	err := p.Do(context.Background(), func(context.Context) error {
		calls++
		return statusErr(503, http.Header{"Retry-After": {"3600"}})
	})
	re, ok := errors.AsType[*RetryError](err)
	if !ok || re.Reason != StopRetryAfter || re.RetryAfter != time.Hour {
		t.Fatalf("Do = %v, want a StopRetryAfter *RetryError with the 1h hint", err)
	}
	if calls != 1 || len(rec.waits) != 0 || !f.Now().Equal(epoch) {
		t.Fatalf("calls=%d waits=%v slept=%v: want one call and no wait", calls, rec.waits, f.Now().Sub(epoch))
	}
	if _, ok := errors.AsType[*StatusError](err); !ok {
		t.Fatal("the response is not reachable through the error")
	}
}

func TestNeverSleepsPastTheDeadline(t *testing.T) {
	p, f, rec := autoPolicy(Policy{MinWait: 2 * time.Second, MaxWait: 2 * time.Second}, 1)
	// The context's deadline is real time; the fake clock starts at real now
	// so both agree on how far away it is.
	f.Set(time.Now())
	ctx, cancel := context.WithDeadline(context.Background(), f.Now().Add(3*time.Second))
	defer cancel()
	calls := 0
	err := p.Do(ctx, func(context.Context) error { calls++; return syscall.ECONNREFUSED })
	re, ok := errors.AsType[*RetryError](err)
	if !ok || re.Reason != StopDeadline {
		t.Fatalf("Do = %v, want StopDeadline", err)
	}
	// Attempt 1, wait 2 s, attempt 2, then a second 2 s wait would cross.
	if calls != 2 || len(rec.waits) != 1 {
		t.Fatalf("calls=%d waits=%v, want 2 calls and 1 wait", calls, rec.waits)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatal("last error not reachable")
	}
}

func TestMaxElapsed(t *testing.T) {
	p, _, rec := autoPolicy(Policy{MaxAttempts: 100, MinWait: time.Second, MaxWait: time.Second, MaxElapsed: 3500 * time.Millisecond}, 1)
	calls := 0
	err := p.Do(context.Background(), func(context.Context) error { calls++; return io.ErrUnexpectedEOF })
	re, ok := errors.AsType[*RetryError](err)
	if !ok || re.Reason != StopMaxElapsed || calls != 4 || len(rec.waits) != 3 {
		t.Fatalf("Do = %v after %d calls and %d waits, want StopMaxElapsed after 4 and 3", err, calls, len(rec.waits))
	}
}

func TestCancelDuringWait(t *testing.T) {
	leaktest.Check(t)
	f := clock.NewFake(epoch)
	p := Policy{Clock: f, Logger: quiet}
	ctx, cancel := context.WithCancel(context.Background())
	last := statusErr(503, nil)
	done := make(chan error)
	go func() { done <- p.Do(ctx, func(context.Context) error { return last }) }()
	f.BlockUntil(1) // the loop is waiting before attempt 2
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Do = %v, want context.Canceled", err)
	}
	if se, ok := errors.AsType[*StatusError](err); !ok || se != last {
		t.Fatalf("Do = %v, want the last attempt's error too", err)
	}
	if Attempts(err) != 1 {
		t.Fatalf("Attempts = %d, want 1", Attempts(err))
	}
}

func TestCallerContextEndedIsNotRetried(t *testing.T) {
	p, _, rec := autoPolicy(Policy{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := p.Do(ctx, func(ctx context.Context) error {
		calls++
		cancel()
		return fmt.Errorf("request: %w", ctx.Err())
	})
	if !errors.Is(err, context.Canceled) || calls != 1 || len(rec.waits) != 0 {
		t.Fatalf("Do = %v after %d calls, want the cancellation after 1", err, calls)
	}
}

func TestAttemptTimeoutIsRetried(t *testing.T) {
	p, _, _ := autoPolicy(Policy{AttemptTimeout: time.Millisecond}, 1)
	calls := 0
	err := p.Do(context.Background(), func(ctx context.Context) error {
		calls++
		if calls == 1 {
			<-ctx.Done() // a real 1 ms deadline: the attempt stalls past it
			return ctx.Err()
		}
		return nil
	})
	if err != nil || calls != 2 {
		t.Fatalf("Do = %v after %d calls, want success on the 2nd", err, calls)
	}
}

func TestLogsEachRetryLikeTheSeed(t *testing.T) {
	var buf bytes.Buffer
	p, _, _ := autoPolicy(Policy{MinWait: time.Second, MaxWait: time.Second}, 1)
	p.Logger = slog.New(slog.NewJSONHandler(&buf, nil))
	_ = p.Do(context.Background(), func(context.Context) error { return statusErr(502, nil) })
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d log lines, want 2 (one per wait):\n%s", len(lines), buf.String())
	}
	for i, line := range lines {
		for _, want := range []string{`"level":"WARN"`, `"msg":"HTTP retry"`, fmt.Sprintf(`"attempt":%d`, i+1), `"wait":1000000000`, `"error":"HTTP 502 from https://api.example.com/v2/status?apikey=REDACTED&type=image"`} {
			if !strings.Contains(line, want) {
				t.Errorf("log line %d lacks %s: %s", i+1, want, line)
			}
		}
	}
}

func TestRedactsURLErrorsInLogs(t *testing.T) {
	var buf bytes.Buffer
	p, _, _ := autoPolicy(Policy{MaxAttempts: 2}, 1)
	p.Logger = slog.New(slog.NewTextHandler(&buf, nil))
	secret := "https://bob:hunter2@api.example.com/x?token=abc123"
	err := p.Do(context.Background(), func(context.Context) error {
		return &url.Error{Op: "Get", URL: secret, Err: syscall.ECONNREFUSED}
	})
	for _, leak := range []string{"hunter2", "abc123"} {
		if strings.Contains(buf.String(), leak) || strings.Contains(err.Error(), leak) {
			t.Fatalf("secret %q leaked:\nlog: %s\nerr: %v", leak, buf.String(), err)
		}
	}
	if !strings.Contains(buf.String(), "token=REDACTED") {
		t.Fatalf("log lacks the redacted URL: %s", buf.String())
	}
}

func TestDoSuccessAllocatesNothing(t *testing.T) {
	if testenv.RaceEnabled {
		t.Skip("the race detector allocates; measured in the non-race run")
	}
	var p Policy
	ctx := context.Background()
	fn := func(context.Context) error { return nil }
	if n := testing.AllocsPerRun(1000, func() { _ = p.Do(ctx, fn) }); n != 0 {
		t.Fatalf("Policy.Do allocates %v times per successful call, want 0", n)
	}
}

func TestMaxElapsedHoldsAgainstAHugeRetryAfter(t *testing.T) {
	p, f, rec := autoPolicy(Policy{MaxElapsed: time.Second, MaxRetryAfter: math.MaxInt64}, 1)
	err := p.Do(context.Background(), func(context.Context) error {
		return statusErr(503, http.Header{"Retry-After": {"99999999999999999999"}})
	})
	if re, ok := errors.AsType[*RetryError](err); !ok || re.Reason != StopMaxElapsed {
		t.Fatalf("Do = %v, want StopMaxElapsed", err)
	}
	if len(rec.waits) != 0 || !f.Now().Equal(epoch) {
		t.Fatalf("waited %v, want no wait at all", rec.waits)
	}
}

func TestWaitNeverWrapsNegative(t *testing.T) {
	for b := ExponentialJitter; b <= Constant; b++ {
		p := Policy{Backoff: b, MinWait: math.MaxInt64, MaxWait: math.MaxInt64}
		for _, u := range []float64{0, 0.5, 0.9999} {
			if w := p.Wait(3, math.MaxInt64, u); w < 0 {
				t.Errorf("%v: Wait = %v, negative", b, w)
			}
		}
	}
}

func TestRedactsQuotedURLsInErrors(t *testing.T) {
	// url.Error prints its URL with %q, escaping the quotes in the query.
	raw := `http://127.0.0.1:1/x?filter={"a":1}&api_key=SECRET`
	err := &url.Error{Op: "Get", URL: raw, Err: syscall.ECONNREFUSED}
	re := &RetryError{Err: err, Attempts: 3}
	for _, msg := range []string{redactedError(err), re.Error()} {
		if strings.Contains(msg, "SECRET") || !strings.Contains(msg, "api_key=REDACTED") {
			t.Fatalf("message not redacted: %s", msg)
		}
	}
}
