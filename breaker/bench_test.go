package breaker_test

import (
	"testing"

	"github.com/hordekit/httpretry/breaker"
)

// The closed path is on every request: these measure that it stays a few
// nanoseconds, allocation-free, and flat as goroutines are added (it writes no
// shared memory, so cores do not fight over a cache line).

func BenchmarkClosedAllowRecord(b *testing.B) {
	cb := breaker.MustNew(breaker.Config{Name: "bench"})
	b.ReportAllocs()
	for b.Loop() {
		if cb.Allow() {
			cb.RecordSuccess()
		}
	}
}

func BenchmarkClosedAllowRecordParallel(b *testing.B) {
	cb := breaker.MustNew(breaker.Config{Name: "bench"})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if cb.Allow() {
				cb.RecordSuccess()
			}
		}
	})
}

func BenchmarkClosedAcquireDone(b *testing.B) {
	cb := breaker.MustNew(breaker.Config{Name: "bench"})
	b.ReportAllocs()
	for b.Loop() {
		p, err := cb.Acquire()
		if err != nil {
			b.Fatal(err)
		}
		p.Done(true)
	}
}

func BenchmarkClosedAcquireDoneParallel(b *testing.B) {
	cb := breaker.MustNew(breaker.Config{Name: "bench"})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p, err := cb.Acquire()
			if err != nil {
				b.Fatal(err)
			}
			p.Done(true)
		}
	})
}

func BenchmarkSetGetHit(b *testing.B) {
	set, err := breaker.NewSet(breaker.SetConfig{})
	if err != nil {
		b.Fatal(err)
	}
	set.Get("api.example.com")
	b.ReportAllocs()
	for b.Loop() {
		set.Get("api.example.com")
	}
}

func BenchmarkSetGetHitParallel(b *testing.B) {
	set, err := breaker.NewSet(breaker.SetConfig{})
	if err != nil {
		b.Fatal(err)
	}
	set.Get("api.example.com")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			set.Get("api.example.com")
		}
	})
}
