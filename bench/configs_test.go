package bench

// The retry configurations every benchmark and test uses, one constructor per
// library and setting, so that TestAllLibrariesRetry checks exactly what the
// benchmarks measure.
//
// "Jittered" is the seed's policy as each library can express it: 3 attempts,
// exponential backoff from a 0.5 s base, with jitter, capped at 10 s.
// "Immediate" is 3 attempts with the smallest wait each library allows (0).

import (
	"context"
	"log/slog"
	"net"
	"os"
	"syscall"
	"time"

	retryv4 "github.com/avast/retry-go/v4"
	retryv5 "github.com/avast/retry-go/v5"
	"github.com/cenkalti/backoff/v5"
	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/retrypolicy"

	"github.com/hordekit/httpretry"
)

const (
	attempts = 3
	baseWait = 500 * time.Millisecond
	maxWait  = 10 * time.Second
)

// errFlaky is a connection reset, preallocated so that making it costs
// nothing in any benchmark. httpretry.IsTransient accepts it; the other
// libraries retry any error by default.
var errFlaky error = &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}

var discard = slog.New(slog.DiscardHandler)

// httpretry: the zero Policy is the seed's policy (3 attempts, waits drawn
// from [0.5 s, 1 s), then [0.5 s, 2 s), capped at 10 s).
func httpretryJittered() httpretry.Policy { return httpretry.Policy{} }

func httpretryImmediate() httpretry.Policy {
	return httpretry.Policy{Backoff: httpretry.Immediate, Logger: discard}
}

// backoff/v5: ExponentialBackOff is stateful and not safe for concurrent use,
// so a caller that shares a retry configuration between goroutines needs a
// new one per call (backoff.Retry itself allocates one per call when none is
// given). Waits: 0.5 s ±50%, then 1 s ±50%.
func backoffJittered() []backoff.RetryOption {
	return []backoff.RetryOption{
		backoff.WithBackOff(&backoff.ExponentialBackOff{
			InitialInterval:     baseWait,
			RandomizationFactor: 0.5,
			Multiplier:          2,
			MaxInterval:         maxWait,
		}),
		backoff.WithMaxTries(attempts),
	}
}

// ZeroBackOff is stateless; backoff.Retry still arms a timer for each 0 wait.
func backoffImmediate() []backoff.RetryOption {
	return []backoff.RetryOption{
		backoff.WithBackOff(&backoff.ZeroBackOff{}),
		backoff.WithMaxTries(attempts),
	}
}

// retry-go/v4: options are passed on every call; the slice is built once and
// reused, the cheapest way to call it. Waits: 0.5 s·2^(n-1) plus up to 0.5 s
// of random jitter (the library's default CombineDelay(BackOffDelay,
// RandomDelay)), capped at 10 s.
func retryV4Jittered(ctx context.Context) []retryv4.Option {
	return []retryv4.Option{
		retryv4.Context(ctx),
		retryv4.Attempts(attempts),
		retryv4.Delay(baseWait),
		retryv4.MaxJitter(baseWait),
		retryv4.MaxDelay(maxWait),
		retryv4.DelayType(retryv4.CombineDelay(retryv4.BackOffDelay, retryv4.RandomDelay)),
		retryv4.LastErrorOnly(true),
	}
}

// Delay 0 with FixedDelay; every wait still goes through time.After(0).
func retryV4Immediate(ctx context.Context) []retryv4.Option {
	return []retryv4.Option{
		retryv4.Context(ctx),
		retryv4.Attempts(attempts),
		retryv4.Delay(0),
		retryv4.MaxJitter(0),
		retryv4.DelayType(retryv4.FixedDelay),
		retryv4.LastErrorOnly(true),
	}
}

// retry-go/v5: a Retrier is built once and reused. Same waits as v4.
func retryV5JitteredOptions(ctx context.Context) []retryv5.Option {
	return []retryv5.Option{
		retryv5.Context(ctx),
		retryv5.Attempts(attempts),
		retryv5.Delay(baseWait),
		retryv5.MaxJitter(baseWait),
		retryv5.MaxDelay(maxWait),
		retryv5.DelayType(retryv5.CombineDelay(retryv5.BackOffDelay, retryv5.RandomDelay)),
		retryv5.LastErrorOnly(true),
	}
}

func retryV5Jittered(ctx context.Context) *retryv5.Retrier {
	return retryv5.New(retryV5JitteredOptions(ctx)...)
}

func retryV5Immediate(ctx context.Context) *retryv5.Retrier {
	return retryv5.New(
		retryv5.Context(ctx),
		retryv5.Attempts(attempts),
		retryv5.Delay(0),
		retryv5.MaxJitter(0),
		retryv5.DelayType(retryv5.FixedDelay),
		retryv5.LastErrorOnly(true),
	)
}

// failsafe-go: a RetryPolicy is built once and reused (it is safe to share);
// the executor too. Waits: 0.5 s ±50%, then 1 s ±50%, capped at 10 s.
func failsafeJitteredPolicy() retrypolicy.RetryPolicy[any] {
	return retrypolicy.NewBuilder[any]().
		WithMaxAttempts(attempts).
		WithBackoff(baseWait, maxWait).
		WithJitterFactor(0.5).
		ReturnLastFailure().
		Build()
}

func failsafeJittered(ctx context.Context) failsafe.Executor[any] {
	return failsafe.With(failsafeJitteredPolicy()).WithContext(ctx)
}

// No delay configured means a 0 delay; the loop still arms a timer for it.
func failsafeImmediate(ctx context.Context) failsafe.Executor[any] {
	rp := retrypolicy.NewBuilder[any]().
		WithMaxAttempts(attempts).
		ReturnLastFailure().
		Build()
	return failsafe.With(rp).WithContext(ctx)
}
