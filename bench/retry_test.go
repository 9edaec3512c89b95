package bench

import (
	"context"
	"testing"

	retryv4 "github.com/avast/retry-go/v4"
	"github.com/cenkalti/backoff/v5"
	"github.com/failsafe-go/failsafe-go"

	"github.com/hordekit/httpretry"
)

// BenchmarkRetrySuccess measures one call whose first attempt succeeds,
// through each library's retry loop configured like the seed (3 attempts,
// jittered exponential backoff from 0.5 s). Configurations that may be shared
// are built once, outside the loop, as a program would keep them in a
// variable; the per-call cost is what remains.
func BenchmarkRetrySuccess(b *testing.B) {
	ctx := context.Background()

	b.Run("httpretry", func(b *testing.B) {
		p := httpretryJittered()
		fn := func(context.Context) error { return nil }
		b.ReportAllocs()
		for b.Loop() {
			if err := p.Do(ctx, fn); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("httpretry-DoValue", func(b *testing.B) {
		p := httpretryJittered()
		fn := func(context.Context) (int, error) { return 1, nil }
		b.ReportAllocs()
		for b.Loop() {
			if _, err := httpretry.DoValue(ctx, p, fn); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("backoff-v5", func(b *testing.B) {
		op := func() (int, error) { return 1, nil }
		b.ReportAllocs()
		for b.Loop() {
			// A fresh ExponentialBackOff per call: it is not safe to share.
			if _, err := backoff.Retry(ctx, op, backoffJittered()...); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("retry-go-v4", func(b *testing.B) {
		opts := retryV4Jittered(ctx)
		fn := func() error { return nil }
		b.ReportAllocs()
		for b.Loop() {
			if err := retryv4.Do(fn, opts...); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("retry-go-v5", func(b *testing.B) {
		r := retryV5Jittered(ctx)
		fn := func() error { return nil }
		b.ReportAllocs()
		for b.Loop() {
			if err := r.Do(fn); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("failsafe-go", func(b *testing.B) {
		ex := failsafeJittered(ctx)
		fn := func() error { return nil }
		b.ReportAllocs()
		for b.Loop() {
			if err := ex.Run(fn); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRetrySuccessPerCallContext is BenchmarkRetrySuccess for code that
// passes each request's own context, as an HTTP handler does. httpretry and
// backoff take the context as an argument, so their numbers are the ones
// above; the libraries below take it as configuration, which then has to be
// built on every call.
func BenchmarkRetrySuccessPerCallContext(b *testing.B) {
	ctx := context.Background()

	b.Run("retry-go-v4", func(b *testing.B) {
		fn := func() error { return nil }
		b.ReportAllocs()
		for b.Loop() {
			if err := retryv4.Do(fn, retryV4Jittered(ctx)...); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("retry-go-v5", func(b *testing.B) {
		fn := func() error { return nil }
		b.ReportAllocs()
		for b.Loop() {
			if err := retryV5Jittered(ctx).Do(fn); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("failsafe-go", func(b *testing.B) {
		ex := failsafe.With(failsafeJitteredPolicy())
		fn := func() error { return nil }
		b.ReportAllocs()
		for b.Loop() {
			if err := ex.WithContext(ctx).Run(fn); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRetryTwoFailures measures a call that fails twice with a
// retryable error (a connection reset) and succeeds on the third attempt,
// with every library's wait set to zero: the cost of the retry loop itself,
// not of sleeping. httpretry skips the timer for a zero wait; the other
// libraries arm a runtime timer for it, which is part of what is measured.
func BenchmarkRetryTwoFailures(b *testing.B) {
	ctx := context.Background()

	b.Run("httpretry", func(b *testing.B) {
		p := httpretryImmediate()
		var n int
		fn := func(context.Context) error {
			if n++; n < attempts {
				return errFlaky
			}
			return nil
		}
		b.ReportAllocs()
		for b.Loop() {
			n = 0
			if err := p.Do(ctx, fn); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("httpretry-DoValue", func(b *testing.B) {
		p := httpretryImmediate()
		var n int
		fn := func(context.Context) (int, error) {
			if n++; n < attempts {
				return 0, errFlaky
			}
			return 1, nil
		}
		b.ReportAllocs()
		for b.Loop() {
			n = 0
			if _, err := httpretry.DoValue(ctx, p, fn); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("backoff-v5", func(b *testing.B) {
		var n int
		op := func() (int, error) {
			if n++; n < attempts {
				return 0, errFlaky
			}
			return 1, nil
		}
		b.ReportAllocs()
		for b.Loop() {
			n = 0
			if _, err := backoff.Retry(ctx, op, backoffImmediate()...); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("retry-go-v4", func(b *testing.B) {
		opts := retryV4Immediate(ctx)
		var n int
		fn := func() error {
			if n++; n < attempts {
				return errFlaky
			}
			return nil
		}
		b.ReportAllocs()
		for b.Loop() {
			n = 0
			if err := retryv4.Do(fn, opts...); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("retry-go-v5", func(b *testing.B) {
		r := retryV5Immediate(ctx)
		var n int
		fn := func() error {
			if n++; n < attempts {
				return errFlaky
			}
			return nil
		}
		b.ReportAllocs()
		for b.Loop() {
			n = 0
			if err := r.Do(fn); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("failsafe-go", func(b *testing.B) {
		ex := failsafeImmediate(ctx)
		var n int
		fn := func() error {
			if n++; n < attempts {
				return errFlaky
			}
			return nil
		}
		b.ReportAllocs()
		for b.Loop() {
			n = 0
			if err := ex.Run(fn); err != nil {
				b.Fatal(err)
			}
		}
	})
}
