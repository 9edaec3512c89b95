package bench

import (
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/sony/gobreaker/v2"

	"github.com/hordekit/httpretry/breaker"
)

// The breaker configurations every benchmark and TestAllBreakersTrip use:
// the seed's breaker (open after 5 consecutive failures, probe again after
// 120 s, one probe at a time) as each library expresses it.

const (
	tripAfter = 5
	cooldown  = 120 * time.Second
)

// httpretry: the zero Config is the seed's breaker. The logger only keeps the
// config test's transition records off stderr; the closed path never logs.
func httpretryBreaker() *breaker.Breaker {
	return breaker.MustNew(breaker.Config{Name: "bench", Logger: discard})
}

// gobreaker: its default ReadyToTrip opens after more than 5 consecutive
// failures (6), so it is set to 5 here to match. ReadyToTrip only runs on a
// failure, so it costs nothing on the closed path. Interval 0: the counts are
// never cleared while closed; MaxRequests 0: one half-open probe.
func gobreakerBreaker() *gobreaker.CircuitBreaker[struct{}] {
	return gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:    "bench",
		Timeout: cooldown,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= tripAfter
		},
	})
}

// failsafe-go: its default opens after a single failure; WithFailureThreshold
// makes it count-based on 5 consecutive failures.
func failsafeBreaker() circuitbreaker.CircuitBreaker[any] {
	return circuitbreaker.NewBuilder[any]().
		WithFailureThreshold(tripAfter).
		WithDelay(cooldown).
		Build()
}

var gobreakerOK = func() (struct{}, error) { return struct{}{}, nil }

// BenchmarkBreakerClosed measures one successful call through a closed
// breaker: the cost the breaker adds to every healthy request. Breakers and
// executors are built once, outside the loop.
func BenchmarkBreakerClosed(b *testing.B) {
	b.Run("httpretry-AllowRecord", func(b *testing.B) {
		cb := httpretryBreaker()
		b.ReportAllocs()
		for b.Loop() {
			if !cb.Allow() {
				b.Fatal("refused")
			}
			cb.RecordSuccess()
		}
	})

	b.Run("httpretry-AcquireDone", func(b *testing.B) {
		cb := httpretryBreaker()
		b.ReportAllocs()
		for b.Loop() {
			p, err := cb.Acquire()
			if err != nil {
				b.Fatal(err)
			}
			p.Done(true)
		}
	})

	b.Run("httpretry-Execute", func(b *testing.B) {
		cb := httpretryBreaker()
		fn := func() error { return nil }
		b.ReportAllocs()
		for b.Loop() {
			if err := cb.Execute(fn); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("gobreaker-Execute", func(b *testing.B) {
		cb := gobreakerBreaker()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := cb.Execute(gobreakerOK); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("failsafe-go-permit", func(b *testing.B) {
		cb := failsafeBreaker()
		b.ReportAllocs()
		for b.Loop() {
			if !cb.TryAcquirePermit() {
				b.Fatal("refused")
			}
			cb.RecordSuccess()
		}
	})

	b.Run("failsafe-go-Run", func(b *testing.B) {
		ex := failsafe.With(failsafeBreaker())
		fn := func() error { return nil }
		b.ReportAllocs()
		for b.Loop() {
			if err := ex.Run(fn); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkBreakerClosedParallel is BenchmarkBreakerClosed with every
// goroutine of b.RunParallel (GOMAXPROCS of them) sharing one breaker, as the
// requests of a server share the breaker of an upstream. ns/op is wall time
// divided by the calls of all goroutines together.
func BenchmarkBreakerClosedParallel(b *testing.B) {
	b.Run("httpretry-AllowRecord", func(b *testing.B) {
		cb := httpretryBreaker()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if !cb.Allow() {
					b.Error("refused")
					return
				}
				cb.RecordSuccess()
			}
		})
	})

	b.Run("httpretry-AcquireDone", func(b *testing.B) {
		cb := httpretryBreaker()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				p, err := cb.Acquire()
				if err != nil {
					b.Error(err)
					return
				}
				p.Done(true)
			}
		})
	})

	b.Run("httpretry-Execute", func(b *testing.B) {
		cb := httpretryBreaker()
		fn := func() error { return nil }
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := cb.Execute(fn); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})

	b.Run("gobreaker-Execute", func(b *testing.B) {
		cb := gobreakerBreaker()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := cb.Execute(gobreakerOK); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})

	b.Run("failsafe-go-permit", func(b *testing.B) {
		cb := failsafeBreaker()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if !cb.TryAcquirePermit() {
					b.Error("refused")
					return
				}
				cb.RecordSuccess()
			}
		})
	})

	b.Run("failsafe-go-Run", func(b *testing.B) {
		ex := failsafe.With(failsafeBreaker())
		fn := func() error { return nil }
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := ex.Run(fn); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
