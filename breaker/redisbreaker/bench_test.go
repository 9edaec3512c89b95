package redisbreaker_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/breaker/redisbreaker"
	"github.com/hordekit/httpretry/internal/leaktest"
	"github.com/hordekit/httpretry/internal/redistest"
	"github.com/hordekit/httpretry/internal/testenv"
)

func TestMain(m *testing.M) {
	// go-redis logs every failed dial; the outage tests cause them on purpose.
	redis.SetLogger(quietLogger{})
	leaktest.CheckMain(m)
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// The healthy path (closed, no failures) must cost no Redis command at all:
// every call below is counted by a hook on the client.
func TestClosedPathSendsNoCommands(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	var cmds commandCounter
	r := newReplica(t, s.Addr, redisbreaker.Config{
		Config:          breaker.Config{Name: "api"},
		RefreshInterval: time.Hour, // no background reads during the count
	}, &cmds)
	waitConnected(t, r)

	before := cmds.n.Load()
	for range 10000 {
		if r.Allow() {
			r.RecordSuccess()
		}
		p, err := r.Acquire()
		if err != nil {
			t.Fatal(err)
		}
		p.Done(true)
		_ = r.State()
		_ = r.Status()
		_, _ = r.UntilRetry()
		_ = r.ConsecutiveFailures()
	}
	if n := cmds.n.Load() - before; n != 0 {
		t.Fatalf("%d Redis commands on the closed path, want 0", n)
	}
	if !testenv.RaceEnabled {
		allocs := testing.AllocsPerRun(1000, func() {
			if r.Allow() {
				r.RecordSuccess()
			}
			p, _ := r.Acquire()
			p.Done(true)
		})
		if allocs != 0 {
			t.Errorf("closed path allocates %v per call, want 0", allocs)
		}
	}

	// A failure is written (in the background), and the success after it
	// resets the shared count once; then the path is quiet again.
	admin := newClient(t, s.Addr)
	r.RecordFailure()
	r.RecordSuccess()
	eventually(t, 5*time.Second, "failure and reset written", func() bool {
		n, err := admin.HGet(context.Background(), stateKey("api"), "failures").Result()
		return err == nil && n == "0" // the hash exists, so the failure was written; 0, so the reset too
	})
	if n := cmds.n.Load() - before; n == 0 {
		t.Fatal("no command counted for a failure and a reset")
	}
	settled := cmds.n.Load()
	for range 1000 {
		if r.Allow() {
			r.RecordSuccess()
		}
	}
	if n := cmds.n.Load() - settled; n != 0 {
		t.Fatalf("%d commands after the count was reset, want 0", n)
	}
}

// BenchmarkClosedPath compares Allow+RecordSuccess on a closed breaker, local
// and fleet-wide, and reports the Redis commands per call (0).
func BenchmarkClosedPath(b *testing.B) {
	b.Run("local", func(b *testing.B) {
		cb := breaker.MustNew(breaker.Config{Name: "bench"})
		b.ReportAllocs()
		for b.Loop() {
			if cb.Allow() {
				cb.RecordSuccess()
			}
		}
	})
	b.Run("redis", func(b *testing.B) {
		s := redistest.Start(b)
		var cmds commandCounter
		client := redis.NewClient(&redis.Options{Addr: s.Addr, ContextTimeoutEnabled: true})
		client.AddHook(&cmds)
		defer client.Close()
		cb, err := redisbreaker.New(client, redisbreaker.Config{
			Config:          breaker.Config{Name: "bench"},
			RefreshInterval: time.Hour,
		})
		if err != nil {
			b.Fatal(err)
		}
		defer cb.Close()
		for !cb.Connected() {
			time.Sleep(time.Millisecond) // setup only, outside the timed loop
		}
		before := cmds.n.Load()
		b.ReportAllocs()
		for b.Loop() {
			if cb.Allow() {
				cb.RecordSuccess()
			}
		}
		b.ReportMetric(float64(cmds.n.Load()-before)/float64(b.N), "cmds/op")
	})
}

func BenchmarkClosedPathParallel(b *testing.B) {
	b.Run("local", func(b *testing.B) {
		cb := breaker.MustNew(breaker.Config{Name: "bench"})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if cb.Allow() {
					cb.RecordSuccess()
				}
			}
		})
	})
	b.Run("redis", func(b *testing.B) {
		s := redistest.Start(b)
		client := redis.NewClient(&redis.Options{Addr: s.Addr, ContextTimeoutEnabled: true})
		defer client.Close()
		cb, err := redisbreaker.New(client, redisbreaker.Config{
			Config:          breaker.Config{Name: "bench"},
			RefreshInterval: time.Hour,
		})
		if err != nil {
			b.Fatal(err)
		}
		defer cb.Close()
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if cb.Allow() {
					cb.RecordSuccess()
				}
			}
		})
	})
}
