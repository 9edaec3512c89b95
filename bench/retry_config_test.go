package bench

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	retryv4 "github.com/avast/retry-go/v4"
	"github.com/cenkalti/backoff/v5"

	"github.com/hordekit/httpretry"
)

// A benchmark of a misconfigured peer would be worthless: these tests run
// each library with the very configurations the benchmarks use and check that
// it really makes 3 attempts, and that its waits are the ones claimed (real
// jittered waits from 0.5 s, or none at all).

// runner calls fn through one library's retry loop, as the benchmarks do.
type runner func(ctx context.Context, fn func() error) error

type libConfig struct {
	name string
	run  runner
	// Bounds on the two waits' total, from each library's formula.
	minTotal, maxTotal time.Duration
}

func jitteredLibs() []libConfig {
	return []libConfig{
		{"httpretry", func(ctx context.Context, fn func() error) error {
			return httpretryJittered().Do(ctx, func(context.Context) error { return fn() })
		}, 1000 * time.Millisecond, 3000 * time.Millisecond}, // [0.5,1) + [0.5,2)
		{"httpretry-DoValue", func(ctx context.Context, fn func() error) error {
			_, err := httpretry.DoValue(ctx, httpretryJittered(), func(context.Context) (int, error) { return 1, fn() })
			return err
		}, 1000 * time.Millisecond, 3000 * time.Millisecond},
		{"backoff-v5", func(ctx context.Context, fn func() error) error {
			_, err := backoff.Retry(ctx, func() (int, error) { return 1, fn() }, backoffJittered()...)
			return err
		}, 750 * time.Millisecond, 2250 * time.Millisecond}, // 0.5±50% + 1±50%
		{"retry-go-v4", func(ctx context.Context, fn func() error) error {
			return retryv4.Do(fn, retryV4Jittered(ctx)...)
		}, 1500 * time.Millisecond, 2500 * time.Millisecond}, // 0.5+[0,0.5) + 1+[0,0.5)
		{"retry-go-v5", func(ctx context.Context, fn func() error) error {
			return retryV5Jittered(ctx).Do(fn)
		}, 1500 * time.Millisecond, 2500 * time.Millisecond},
		{"failsafe-go", func(ctx context.Context, fn func() error) error {
			return failsafeJittered(ctx).Run(fn)
		}, 750 * time.Millisecond, 2250 * time.Millisecond}, // 0.5±50% + 1±50%
	}
}

func immediateLibs() []libConfig {
	return []libConfig{
		{name: "httpretry", run: func(ctx context.Context, fn func() error) error {
			return httpretryImmediate().Do(ctx, func(context.Context) error { return fn() })
		}},
		{name: "httpretry-DoValue", run: func(ctx context.Context, fn func() error) error {
			_, err := httpretry.DoValue(ctx, httpretryImmediate(), func(context.Context) (int, error) { return 1, fn() })
			return err
		}},
		{name: "backoff-v5", run: func(ctx context.Context, fn func() error) error {
			_, err := backoff.Retry(ctx, func() (int, error) { return 1, fn() }, backoffImmediate()...)
			return err
		}},
		{name: "retry-go-v4", run: func(ctx context.Context, fn func() error) error {
			return retryv4.Do(fn, retryV4Immediate(ctx)...)
		}},
		{name: "retry-go-v5", run: func(ctx context.Context, fn func() error) error {
			return retryV5Immediate(ctx).Do(fn)
		}},
		{name: "failsafe-go", run: func(ctx context.Context, fn func() error) error {
			return failsafeImmediate(ctx).Run(fn)
		}},
	}
}

// counting returns a function that fails its first failures calls with
// errFlaky, then succeeds, and a pointer to its call count.
func counting(failures int) (func() error, *atomic.Int32) {
	var calls atomic.Int32
	return func() error {
		if int(calls.Add(1)) <= failures {
			return errFlaky
		}
		return nil
	}, &calls
}

func TestErrFlakyIsRetryable(t *testing.T) {
	if !httpretry.IsTransient(errFlaky) {
		t.Fatalf("httpretry.IsTransient(%v) = false; the benchmarks need a retryable error", errFlaky)
	}
}

func TestAllLibrariesRetry(t *testing.T) {
	ctx := context.Background()

	t.Run("immediate", func(t *testing.T) {
		for _, lib := range immediateLibs() {
			t.Run(lib.name, func(t *testing.T) {
				// Always failing: exactly 3 attempts, the last error returned.
				fn, calls := counting(1 << 30)
				start := time.Now()
				err := lib.run(ctx, fn)
				elapsed := time.Since(start)
				if got := calls.Load(); got != attempts {
					t.Errorf("always failing: %d attempts, want %d", got, attempts)
				}
				if !errors.Is(err, errFlaky) {
					t.Errorf("always failing: err = %v, want one matching errFlaky", err)
				}
				if elapsed > 250*time.Millisecond {
					t.Errorf("always failing with zero waits took %v", elapsed)
				}

				// Two failures, then success: what BenchmarkRetryTwoFailures runs.
				fn, calls = counting(2)
				if err := lib.run(ctx, fn); err != nil {
					t.Errorf("two failures then success: err = %v, want nil", err)
				}
				if got := calls.Load(); got != attempts {
					t.Errorf("two failures then success: %d attempts, want %d", got, attempts)
				}
			})
		}
	})

	t.Run("jittered", func(t *testing.T) {
		for _, lib := range jitteredLibs() {
			t.Run(lib.name, func(t *testing.T) {
				// First attempt succeeds: what BenchmarkRetrySuccess runs.
				fn, calls := counting(0)
				if err := lib.run(ctx, fn); err != nil || calls.Load() != 1 {
					t.Errorf("success: err = %v after %d attempts, want nil after 1", err, calls.Load())
				}

				if testing.Short() {
					t.Skip("the waits take up to 3 s")
				}
				t.Parallel()
				// Always failing: 3 attempts with two real, jittered waits.
				fn, calls = counting(1 << 30)
				start := time.Now()
				err := lib.run(ctx, fn)
				elapsed := time.Since(start)
				if got := calls.Load(); got != attempts {
					t.Errorf("always failing: %d attempts, want %d", got, attempts)
				}
				if !errors.Is(err, errFlaky) {
					t.Errorf("always failing: err = %v, want one matching errFlaky", err)
				}
				// The upper bound has slack for a busy machine.
				if elapsed < lib.minTotal || elapsed > lib.maxTotal+time.Second {
					t.Errorf("always failing: waited %v in all, want [%v, %v]", elapsed, lib.minTotal, lib.maxTotal)
				}
				t.Logf("%d attempts, %v waiting", calls.Load(), elapsed.Round(time.Millisecond))
			})
		}
	})
}
