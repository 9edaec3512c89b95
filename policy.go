package httpretry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"time"

	"github.com/hordekit/httpretry/clock"
)

// The seed's defaults: http_retry_sync(max_attempts=3, min_wait=0.5, max_wait=10)
// with wait_random_exponential(multiplier=0.5).
const (
	DefaultMaxAttempts = 3
	DefaultMinWait     = 500 * time.Millisecond
	DefaultMaxWait     = 10 * time.Second
	DefaultMultiplier  = 500 * time.Millisecond
)

// Policy says how often and how long to retry. Its zero value is the seed's
// policy: at most 3 attempts, waits between 0.5 s and 10 s, jittered so that
// clients do not retry in lockstep.
//
// A Policy is a plain value: copy it, share it between goroutines, change a
// field for one call. Do checks it on every call and reports a bad field as
// an error naming it; Validate does the same check up front.
type Policy struct {
	// MaxAttempts is the most calls Do makes, the first one included
	// (tenacity's stop_after_attempt). 0 means 3; 1 means no retries.
	MaxAttempts int

	// MinWait and MaxWait bound each wait between attempts. 0 means 0.5 s and
	// 10 s. How the wait is drawn between them is set by Backoff.
	MinWait time.Duration
	MaxWait time.Duration

	// Backoff picks the wait formula. The zero value, ExponentialJitter, is
	// the default; TenacityExponential reproduces the seed exactly.
	Backoff Backoff

	// Multiplier is tenacity's multiplier for TenacityExponential. 0 means
	// 0.5 s, the seed's value. Other strategies ignore it.
	Multiplier time.Duration

	// MaxRetryAfter is the longest Retry-After hint the loop honours. A
	// failed attempt asking for a longer wait ends the loop at once, with the
	// hint in the returned *RetryError. 0 means MaxWait.
	MaxRetryAfter time.Duration

	// MaxElapsed limits the whole call, waits included: a wait that would end
	// past it is not taken. 0 means no limit beyond the context's deadline.
	MaxElapsed time.Duration

	// AttemptTimeout bounds each attempt with its own context deadline; an
	// attempt that runs out is a transient failure and is retried. The
	// attempt's context is cancelled when fn returns, so fn must finish with
	// anything tied to it (read a response body) before returning. 0 means
	// no per-attempt limit.
	AttemptTimeout time.Duration

	// RetryIf marks more errors as retryable, beyond IsTransient and
	// retryable *StatusError values: the seed's extra_exceptions.
	RetryIf func(err error) bool

	// OnRetry, when set, is called before each wait, after the log record.
	OnRetry func(RetryInfo)

	// Logger receives a Warn record "HTTP retry" before each wait, with the
	// attributes attempt, wait and error. nil means slog.Default().
	Logger *slog.Logger

	// Clock is the time seam; nil means the system clock.
	Clock clock.Clock

	// Rand returns a float in [0, 1) for jitter. It must be safe for
	// concurrent use if the Policy is shared. nil means math/rand/v2.
	Rand func() float64
}

// RetryInfo describes a retry about to happen, for Policy.OnRetry.
type RetryInfo struct {
	Attempt int           // the attempt that just failed, from 1
	Wait    time.Duration // the wait before the next attempt
	Err     error         // the failed attempt's error
}

// Validate reports the first invalid field, by name, or nil.
func (p Policy) Validate() error {
	switch {
	case p.MaxAttempts < 0:
		return fmt.Errorf("httpretry: Policy.MaxAttempts must not be negative (got %d)", p.MaxAttempts)
	case p.MinWait < 0:
		return fmt.Errorf("httpretry: Policy.MinWait must not be negative (got %v)", p.MinWait)
	case p.MaxWait < 0:
		return fmt.Errorf("httpretry: Policy.MaxWait must not be negative (got %v)", p.MaxWait)
	case p.Multiplier < 0:
		return fmt.Errorf("httpretry: Policy.Multiplier must not be negative (got %v)", p.Multiplier)
	case p.MaxRetryAfter < 0:
		return fmt.Errorf("httpretry: Policy.MaxRetryAfter must not be negative (got %v)", p.MaxRetryAfter)
	case p.MaxElapsed < 0:
		return fmt.Errorf("httpretry: Policy.MaxElapsed must not be negative (got %v)", p.MaxElapsed)
	case p.AttemptTimeout < 0:
		return fmt.Errorf("httpretry: Policy.AttemptTimeout must not be negative (got %v)", p.AttemptTimeout)
	case p.Backoff > Immediate:
		return fmt.Errorf("httpretry: Policy.Backoff has unknown value %d", p.Backoff)
	}
	if lo, hi := p.minWait(), p.maxWait(); lo > hi {
		return fmt.Errorf("httpretry: Policy.MinWait (%v) must not exceed Policy.MaxWait (%v)", lo, hi)
	}
	return nil
}

func (p *Policy) attempts() int {
	if p.MaxAttempts == 0 {
		return DefaultMaxAttempts
	}
	return p.MaxAttempts
}

func (p *Policy) minWait() time.Duration {
	if p.MinWait == 0 {
		return DefaultMinWait
	}
	return p.MinWait
}

func (p *Policy) maxWait() time.Duration {
	if p.MaxWait == 0 {
		return DefaultMaxWait
	}
	return p.MaxWait
}

func (p *Policy) maxRetryAfter() time.Duration {
	if p.MaxRetryAfter == 0 {
		return p.maxWait()
	}
	return p.MaxRetryAfter
}

func (p *Policy) random() float64 {
	if p.Rand != nil {
		return p.Rand()
	}
	return rand.Float64()
}

// Do calls fn until it succeeds, fails with an error that is not retryable,
// or the policy gives up, waiting between attempts.
//
// Retryable are errors for which IsTransient is true, *StatusError values
// whose code IsRetryableStatus, and errors RetryIf accepts; Permanent marks an
// error never to retry. A non-retryable error is returned as it is. When the
// policy gives up, the error is a *RetryError that wraps the last attempt's
// own error (errors.As finds it) and tells how many attempts were made and
// why it stopped. When ctx ends during a wait, that error also matches the
// context's error.
//
// Do allocates nothing when the first attempt succeeds.
func (p Policy) Do(ctx context.Context, fn func(context.Context) error) error {
	// The first attempt is made here, outside the generic loop, so that the
	// common case (it succeeds) costs one call and no allocation.
	if p.simple() {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		_, err = retry(ctx, &p, adapt(fn), time.Time{}, struct{}{}, err)
		return err
	}
	_, err := run(ctx, &p, adapt(fn))
	return err
}

// adapt turns Do's function into DoValue's shape; only failing calls pay for
// the closure.
func adapt(fn func(context.Context) error) func(context.Context) (struct{}, error) {
	return func(ctx context.Context) (struct{}, error) { return struct{}{}, fn(ctx) }
}

// DoValue is Do for a function that returns a value. On failure it returns
// the value of the last attempt with the error, so a caller can still look at
// a partial result.
func DoValue[T any](ctx context.Context, p Policy, fn func(context.Context) (T, error)) (T, error) {
	if p.simple() {
		v, err := fn(ctx)
		if err == nil {
			return v, nil
		}
		return retry(ctx, &p, fn, time.Time{}, v, err)
	}
	return run(ctx, &p, fn)
}

// simple reports a valid policy whose first attempt needs no clock and no
// context of its own: the fast path. It repeats Validate's checks as
// branch-free arithmetic because calling Validate costs ~2 ns, 40% of a
// successful Do; TestValidateNamesTheField holds the two in agreement (every
// invalid policy must reach Validate through Do).
func (p *Policy) simple() bool {
	// OR-ing the signed fields is negative iff one of them is.
	neg := int64(p.MaxAttempts) | int64(p.MinWait) | int64(p.MaxWait) | int64(p.Multiplier) |
		int64(p.MaxRetryAfter) | int64(p.MaxElapsed) | int64(p.AttemptTimeout)
	return neg >= 0 && p.MaxElapsed == 0 && p.AttemptTimeout == 0 && p.Backoff <= Immediate &&
		(p.MinWait == 0 || p.MinWait <= p.maxWait()) && (p.MaxWait == 0 || p.MaxWait >= p.minWait())
}

func run[T any](ctx context.Context, p *Policy, fn func(context.Context) (T, error)) (T, error) {
	if err := p.Validate(); err != nil {
		var zero T
		return zero, err
	}
	var start time.Time
	if p.MaxElapsed > 0 {
		start = clock.Or(p.Clock).Now()
	}
	v, err := callAttempt(ctx, p, fn)
	if err == nil {
		return v, nil
	}
	return retry(ctx, p, fn, start, v, err)
}

// retry runs the loop after the first attempt failed with (v, err).
func retry[T any](ctx context.Context, p *Policy, fn func(context.Context) (T, error), start time.Time, v T, err error) (T, error) {
	clk := clock.Or(p.Clock)
	var prev time.Duration
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			if v, err = callAttempt(ctx, p, fn); err == nil {
				return v, nil
			}
		}
		if ctx.Err() != nil {
			// The caller's own context ended: never retry, and never hide it.
			if errors.Is(err, ctx.Err()) {
				return v, err
			}
			return v, &RetryError{Err: err, Attempts: attempt, Reason: StopCanceled, cause: ctx.Err()}
		}
		if perm, ok := errors.AsType[*permanentError](err); ok {
			return v, perm.err
		}
		if !p.retryable(err) {
			return v, err
		}
		wait, stop := p.plan(ctx, clk, attempt, prev, start, err)
		if stop != nil {
			return v, stop
		}
		p.announce(ctx, attempt, wait, err)
		if serr := clock.Sleep(ctx, clk, wait); serr != nil {
			return v, &RetryError{Err: err, Attempts: attempt, Reason: StopCanceled, cause: serr}
		}
		prev = wait
	}
}

func callAttempt[T any](ctx context.Context, p *Policy, fn func(context.Context) (T, error)) (T, error) {
	if p.AttemptTimeout <= 0 {
		return fn(ctx)
	}
	actx, cancel := context.WithTimeout(ctx, p.AttemptTimeout)
	defer cancel()
	return fn(actx)
}

func (p *Policy) retryable(err error) bool {
	if IsTransient(err) {
		return true
	}
	if se, ok := errors.AsType[*StatusError](err); ok && se.Response != nil && IsRetryableStatus(se.Response.StatusCode) {
		return true
	}
	return p.RetryIf != nil && p.RetryIf(err)
}

// plan decides, after failed attempt n, how long to wait before the next one,
// or returns the *RetryError that ends the loop. It is shared by Do and the
// HTTP transport so both honour the same limits.
func (p *Policy) plan(ctx context.Context, clk clock.Clock, n int, prev time.Duration, start time.Time, err error) (time.Duration, *RetryError) {
	if n >= p.attempts() {
		return 0, &RetryError{Err: err, Attempts: n, Reason: StopExhausted}
	}
	wait := p.Wait(n, prev, p.random())
	if ra, ok := retryAfterOf(err, clk); ok {
		if limit := p.maxRetryAfter(); ra > limit {
			return 0, &RetryError{Err: err, Attempts: n, Reason: StopRetryAfter, RetryAfter: ra, limit: limit}
		}
		// Saturate: a hint near the largest Duration must not wrap around.
		wait = max(wait, ra+min(p.spread(ctx, clk, start, ra), math.MaxInt64-ra))
	}
	return wait, p.checkTime(ctx, clk, n, wait, start, err)
}

// spread returns how much later than a Retry-After hint ra this client
// comes back: uniform in [0, S) with S = clamp(ra, MinWait, MaxWait), so the
// clients a server turned away together return spread over a window as long
// as the hint, never before it. The window shrinks to end before the
// context's deadline or MaxElapsed when the hint itself fits.
func (p *Policy) spread(ctx context.Context, clk clock.Clock, start time.Time, ra time.Duration) time.Duration {
	s := min(max(ra, p.minWait()), p.maxWait())
	if room, ok := p.room(ctx, clk, start); ok && room > ra {
		s = min(s, room-ra)
	}
	return time.Duration(p.random() * float64(s))
}

// room returns the time left before the context's deadline or MaxElapsed,
// whichever comes first, and false when neither applies.
func (p *Policy) room(ctx context.Context, clk clock.Clock, start time.Time) (time.Duration, bool) {
	deadline, hasDeadline := ctx.Deadline()
	if p.MaxElapsed <= 0 && !hasDeadline {
		return 0, false
	}
	now := clk.Now()
	room := time.Duration(math.MaxInt64)
	if p.MaxElapsed > 0 {
		room = p.MaxElapsed - now.Sub(start)
	}
	if hasDeadline {
		room = min(room, deadline.Sub(now))
	}
	return room, true
}

// checkTime ends the loop when waiting would pass MaxElapsed or the
// context's deadline: sleeping only to fail is worse than failing now.
func (p *Policy) checkTime(ctx context.Context, clk clock.Clock, n int, wait time.Duration, start time.Time, err error) *RetryError {
	deadline, hasDeadline := ctx.Deadline()
	if p.MaxElapsed <= 0 && !hasDeadline {
		return nil
	}
	now := clk.Now()
	// Subtract rather than add: a huge Retry-After must not wrap around.
	if p.MaxElapsed > 0 && wait >= p.MaxElapsed-now.Sub(start) {
		return &RetryError{Err: err, Attempts: n, Reason: StopMaxElapsed, limit: p.MaxElapsed}
	}
	if hasDeadline && deadline.Sub(now) <= wait {
		return &RetryError{Err: err, Attempts: n, Reason: StopDeadline, limit: wait}
	}
	return nil
}

// announce writes the seed's "HTTP retry" warning and calls OnRetry.
func (p *Policy) announce(ctx context.Context, attempt int, wait time.Duration, err error, extra ...slog.Attr) {
	logger := p.Logger
	if logger == nil {
		logger = slog.Default()
	}
	if logger.Enabled(ctx, slog.LevelWarn) {
		attrs := append([]slog.Attr{
			slog.Int("attempt", attempt),
			slog.Duration("wait", wait),
			slog.String("error", redactedError(err)),
		}, extra...)
		logger.LogAttrs(ctx, slog.LevelWarn, "HTTP retry", attrs...)
	}
	if p.OnRetry != nil {
		p.OnRetry(RetryInfo{Attempt: attempt, Wait: wait, Err: err})
	}
}

// retryAfterError is any error that carries a server's wait hint.
type retryAfterError interface {
	error
	RetryAfter() (time.Duration, bool)
}

// retryAfterOf finds a server's wait hint anywhere in err's chain.
// A *StatusError's date is read against the loop's clock, so fake clocks in
// tests see the same time the loop does.
func retryAfterOf(err error, clk clock.Clock) (time.Duration, bool) {
	if se, ok := errors.AsType[*StatusError](err); ok && se.Response != nil {
		if se.Response.Header.Get("Retry-After") == "" {
			return 0, false // most failures: spare the clock read
		}
		return responseRetryAfter(se.Response, clk.Now())
	}
	if h, ok := errors.AsType[retryAfterError](err); ok {
		return h.RetryAfter()
	}
	return 0, false
}

// Permanent wraps err so that Do stops at once and returns err itself.
// Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }
