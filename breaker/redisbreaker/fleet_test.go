package redisbreaker_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/breaker/redisbreaker"
	"github.com/hordekit/httpretry/clock"
	"github.com/hordekit/httpretry/internal/leaktest"
	"github.com/hordekit/httpretry/internal/redistest"
)

func TestNewValidates(t *testing.T) {
	leaktest.Check(t)
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer client.Close()
	for _, tc := range []struct {
		name string
		cfg  redisbreaker.Config
		want string
	}{
		{"no name", redisbreaker.Config{}, "Config.Name must be set"},
		{"negative OpTimeout", redisbreaker.Config{Config: breaker.Config{Name: "a"}, OpTimeout: -1}, "Config.OpTimeout"},
		{"negative RefreshInterval", redisbreaker.Config{Config: breaker.Config{Name: "a"}, RefreshInterval: -1}, "Config.RefreshInterval"},
		{"negative WarnInterval", redisbreaker.Config{Config: breaker.Config{Name: "a"}, WarnInterval: -1}, "Config.WarnInterval"},
		{"bad breaker field", redisbreaker.Config{Config: breaker.Config{Name: "a", FailureThreshold: -1}}, "Config.FailureThreshold"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := redisbreaker.New(client, tc.cfg)
			if err == nil {
				b.Close()
				t.Fatal("New accepted the config")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %q", err, tc.want)
			}
		})
	}
	if _, err := redisbreaker.New(nil, redisbreaker.Config{Config: breaker.Config{Name: "a"}}); err == nil {
		t.Error("New accepted a nil client")
	}
}

// One replica's trip is seen by every other within a second.
func TestTripPropagatesWithinOneSecond(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	rs := fleet(t, s.Addr, 5, redisbreaker.Config{Config: breaker.Config{Name: "api", Cooldown: time.Minute}})

	start := time.Now()
	fail(rs[0], 5)
	var worst time.Duration
	for _, r := range rs {
		at := waitState(t, r, breaker.Open, propagationBound)
		worst = max(worst, at.Sub(start))
	}
	t.Logf("trip seen by all 5 replicas %v after the tripping failure", worst)
	if worst >= propagationBound {
		t.Fatalf("propagation took %v, want < %v", worst, propagationBound)
	}
	for _, r := range rs {
		d, ok := r.UntilRetry()
		if !ok || d <= 0 || d > time.Minute {
			t.Errorf("%s: UntilRetry() = %v, %v; want the shared cooldown", r.id, d, ok)
		}
		if _, err := r.Acquire(); !errors.Is(err, breaker.ErrOpen) {
			t.Errorf("%s: Acquire() error = %v, want ErrOpen", r.id, err)
		}
	}
}

// Ten replicas seeing one failure each is an outage: the fleet counts them
// together (the seed needed five failures per process).
func TestFleetCountsFailuresTogether(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	rs := fleet(t, s.Addr, 5, redisbreaker.Config{Config: breaker.Config{Name: "api", Cooldown: time.Minute}})
	for _, r := range rs {
		r.RecordFailure()
	}
	for _, r := range rs {
		waitState(t, r, breaker.Open, propagationBound)
		if got := r.ConsecutiveFailures(); got != 5 {
			t.Errorf("%s: ConsecutiveFailures() = %d, want the fleet's 5", r.id, got)
		}
	}
}

func TestSuccessResetsSharedCount(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	rs := fleet(t, s.Addr, 2, redisbreaker.Config{Config: breaker.Config{Name: "api", Cooldown: time.Minute}})
	admin := newClient(t, s.Addr)
	shared := func() int {
		n, _ := admin.HGet(context.Background(), stateKey("api"), "failures").Int()
		return n
	}

	fail(rs[0], 4)
	eventually(t, 5*time.Second, "4 failures in Redis", func() bool { return shared() == 4 })
	rs[0].RecordSuccess()
	eventually(t, 5*time.Second, "count reset in Redis", func() bool { return shared() == 0 })
	fail(rs[1], 4)
	eventually(t, 5*time.Second, "4 more failures in Redis", func() bool { return shared() == 4 })
	for _, r := range rs {
		if got := r.State(); got != breaker.Closed {
			t.Errorf("%s: State() = %v after 8 failures with a success between; want closed", r.id, got)
		}
	}
}

// In half-open the fleet sends HalfOpenProbes probes, not that many per
// replica: 5 replicas x 20 goroutines race for them.
func TestHalfOpenAdmitsProbesFleetWide(t *testing.T) {
	for _, probes := range []int{1, 2} {
		t.Run("probes="+strconv.Itoa(probes), func(t *testing.T) {
			leaktest.Check(t)
			s := redistest.Start(t)
			clk := clock.NewFake(epoch)
			cfg := fakeConfig("api", clk)
			cfg.HalfOpenProbes = probes
			rs := fleet(t, s.Addr, 5, cfg)
			fail(rs[0], 5)
			for _, r := range rs {
				waitState(t, r, breaker.Open, propagationBound)
			}
			clk.Advance(time.Minute)

			var (
				wg      sync.WaitGroup
				start   = make(chan struct{})
				mu      sync.Mutex
				permits []breaker.Permit
				refused atomic.Int64
			)
			for _, r := range rs {
				for range 20 {
					wg.Go(func() {
						<-start
						p, err := r.Acquire()
						if err != nil {
							if !errors.Is(err, breaker.ErrOpen) {
								t.Errorf("Acquire() error = %v, want ErrOpen", err)
							}
							refused.Add(1)
							return
						}
						mu.Lock()
						permits = append(permits, p)
						mu.Unlock()
					})
				}
			}
			close(start)
			wg.Wait()
			if len(permits) != probes || refused.Load() != int64(100-probes) {
				t.Fatalf("admitted %d, refused %d of 100; want exactly %d admitted fleet-wide",
					len(permits), refused.Load(), probes)
			}
			for i := range permits {
				if !permits[i].Probe() {
					t.Errorf("permit %d is not a probe", i)
				}
				permits[i].Done(true)
			}
			for _, r := range rs {
				waitState(t, r, breaker.Closed, propagationBound)
			}
		})
	}
}

func TestProbeFailureReopensFleet(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	clk := clock.NewFake(epoch)
	rs := fleet(t, s.Addr, 3, fakeConfig("api", clk))
	fail(rs[0], 5)
	for _, r := range rs {
		waitState(t, r, breaker.Open, propagationBound)
	}
	clk.Advance(time.Minute)
	p, err := rs[2].Acquire()
	if err != nil || !p.Probe() {
		t.Fatalf("Acquire() = probe %v, %v; want a probe", p.Probe(), err)
	}
	p.Done(false)
	for _, r := range rs {
		eventually(t, propagationBound, r.id+" reopened", func() bool {
			d, ok := r.UntilRetry()
			return ok && d == time.Minute
		})
	}
}

// A probe holder that never reports, and then goes away, does not wedge the
// fleet: once its lease expires another replica probes.
func TestVanishedProbeHolderDoesNotWedgeFleet(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	clk := clock.NewFake(epoch)
	rs := fleet(t, s.Addr, 4, fakeConfig("api", clk))
	fail(rs[0], 5)
	for _, r := range rs {
		waitState(t, r, breaker.Open, propagationBound)
	}
	clk.Advance(time.Minute)

	if p, err := rs[0].Acquire(); err != nil || !p.Probe() {
		t.Fatalf("Acquire() = probe %v, %v; want a probe", p.Probe(), err)
	} // and never reported
	rs[0].Close()

	admitted := func() int {
		var probes []breaker.Permit
		for _, r := range rs[1:] {
			if p, err := r.Acquire(); err == nil {
				if !p.Probe() {
					t.Fatalf("%s admitted a non-probe in half-open", r.id)
				}
				probes = append(probes, p)
			}
		}
		for i := range probes {
			probes[i].Done(true)
		}
		return len(probes)
	}
	if n := admitted(); n != 0 {
		t.Fatalf("%d probes admitted while the lease is held", n)
	}
	clk.Advance(time.Minute - time.Millisecond)
	if n := admitted(); n != 0 {
		t.Fatalf("%d probes admitted a millisecond before the lease expires", n)
	}
	clk.Advance(time.Millisecond)
	if n := admitted(); n != 1 {
		t.Fatalf("%d probes admitted after the lease expired, want 1", n)
	}
	for _, r := range rs[1:] {
		waitState(t, r, breaker.Closed, propagationBound)
	}
}

// The lease also expires in real time (Redis PX and the value's expiry agree
// on a real clock): with a 300 ms cooldown another replica probes about 300 ms
// after the first took the lease and vanished.
func TestProbeLeaseExpiresInRealTime(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	const cooldown = 300 * time.Millisecond
	rs := fleet(t, s.Addr, 2, redisbreaker.Config{Config: breaker.Config{Name: "api", Cooldown: cooldown}})
	fail(rs[0], 5)
	waitState(t, rs[1], breaker.Open, propagationBound)
	eventually(t, 2*cooldown, "half-open", func() bool { return rs[0].State() == breaker.HalfOpen })

	if p, err := rs[0].Acquire(); err != nil || !p.Probe() {
		t.Fatalf("Acquire() = probe %v, %v; want a probe", p.Probe(), err)
	}
	taken := time.Now()
	var p breaker.Permit
	eventually(t, 3*cooldown, "another replica's probe", func() bool {
		var err error
		p, err = rs[1].Acquire()
		return err == nil
	})
	waited := time.Since(taken)
	t.Logf("second probe admitted %v after the first lease was taken (lease TTL %v)", waited, cooldown)
	if waited < cooldown-20*time.Millisecond {
		t.Fatalf("second probe after %v, before the %v lease could expire", waited, cooldown)
	}
	p.Done(true)
	waitState(t, rs[1], breaker.Closed, propagationBound)
}

// The seed's API probes too: Allow admits the fleet's one probe, and
// RecordSuccess reports it.
func TestSeedAPIProbe(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	clk := clock.NewFake(epoch)
	rs := fleet(t, s.Addr, 3, fakeConfig("api", clk))
	fail(rs[0], 5)
	for _, r := range rs {
		waitState(t, r, breaker.Open, propagationBound)
	}
	if rs[1].Allow() {
		t.Fatal("Allow() = true while open")
	}
	clk.Advance(time.Minute)
	if !rs[1].Allow() {
		t.Fatal("Allow() = false for the first caller after the cooldown")
	}
	if rs[1].Allow() || rs[2].Allow() || rs[0].Allow() {
		t.Fatal("a second probe was admitted")
	}
	rs[1].RecordSuccess()
	for _, r := range rs {
		waitState(t, r, breaker.Closed, propagationBound)
	}
	if !rs[2].Allow() {
		t.Fatal("Allow() = false after the fleet closed")
	}
}

// The refresh catches a transition whose message was missed.
func TestRefreshCatchesMissedTransition(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	clk := clock.NewFake(epoch)
	cfg := fakeConfig("api", clk)
	cfg.RefreshInterval = time.Second
	r := fleet(t, s.Addr, 1, cfg)[0]

	until := epoch.Add(time.Minute).UnixMilli()
	admin := newClient(t, s.Addr)
	err := admin.HSet(context.Background(), stateKey("api"),
		"state", "open", "gen", 1, "until", until, "failures", 5).Err()
	if err != nil {
		t.Fatal(err)
	}
	clk.BlockUntil(1) // the refresher is waiting
	clk.Advance(time.Second)
	waitState(t, r, breaker.Open, propagationBound)
	if d, _ := r.UntilRetry(); d != time.Minute-time.Second {
		t.Errorf("UntilRetry() = %v, want %v", d, time.Minute-time.Second)
	}
}

// A replica started while the fleet is open starts open.
func TestNewAdoptsOpenFleet(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	cfg := redisbreaker.Config{Config: breaker.Config{Name: "api", Cooldown: time.Minute}}
	first := fleet(t, s.Addr, 1, cfg)[0]
	fail(first, 5)
	waitState(t, first, breaker.Open, propagationBound)
	admin := newClient(t, s.Addr)
	eventually(t, 5*time.Second, "trip written", func() bool {
		st, _ := admin.HGet(context.Background(), stateKey("api"), "state").Result()
		return st == "open"
	})
	late := newReplica(t, s.Addr, cfg)
	if got := late.State(); got != breaker.Open {
		t.Fatalf("new replica's State() = %v, want open", got)
	}
}

// Keys are namespaced by Prefix, tagged for Redis Cluster, and expire.
func TestKeyLayout(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	clk := clock.NewFake(epoch)
	cfg := fakeConfig("svc", clk)
	cfg.Prefix = "test:"
	r := fleet(t, s.Addr, 1, cfg)[0]
	admin := newClient(t, s.Addr)
	ctx := context.Background()
	sub := admin.Subscribe(ctx, "test:{svc}:events")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription confirmation
		t.Fatal(err)
	}

	fail(r, 5)
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("published on %s: %q", msg.Channel, msg.Payload)
	state, err := admin.HGetAll(ctx, "test:{svc}:state").Result()
	if err != nil || state["state"] != "open" || state["failures"] != "5" {
		t.Fatalf("state hash = %v, %v; want open with 5 failures", state, err)
	}
	if want := strconv.FormatInt(epoch.Add(time.Minute).UnixMilli(), 10); state["until"] != want {
		t.Errorf("until = %s, want %s (the fake clock's time plus the cooldown)", state["until"], want)
	}
	ttl, err := admin.PTTL(ctx, "test:{svc}:state").Result()
	if err != nil || ttl <= 0 || ttl > 4*time.Minute {
		t.Errorf("state PTTL = %v, %v; want at most 4 cooldowns", ttl, err)
	}

	clk.Advance(time.Minute)
	p, err := r.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	lease, err := admin.Get(ctx, "test:{svc}:probe:0").Result()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lease: %q", lease)
	if ttl, _ := admin.PTTL(ctx, "test:{svc}:probe:0").Result(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("lease PTTL = %v, want at most the cooldown", ttl)
	}
	p.Done(true)
	if _, err := sub.ReceiveMessage(ctx); err != nil {
		t.Fatal(err)
	}
	keys, _ := admin.Keys(ctx, "*").Result()
	for _, k := range keys {
		if !strings.Contains(k, "test:{svc}:") {
			t.Errorf("key %q outside the prefix", k)
		}
	}
}
