package redisbreaker_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/breaker/redisbreaker"
	"github.com/hordekit/httpretry/internal/leaktest"
	"github.com/hordekit/httpretry/internal/redistest"
)

// clusterReplica is a fleet member on its own cluster client. Every other one
// goes through redis.NewUniversalClient, which returns a cluster client for
// several addresses, to show that either works.
func clusterReplica(t *testing.T, c *redistest.Cluster, i int, cfg redisbreaker.Config) *replica {
	t.Helper()
	var client redis.UniversalClient
	if i%2 == 0 {
		client = redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), ContextTimeoutEnabled: true,
			// go-redis's own background reloads of the slot map use these.
			DialTimeout: time.Second, ReadTimeout: time.Second})
	} else {
		client = redis.NewUniversalClient(&redis.UniversalOptions{Addrs: c.Addrs(), ContextTimeoutEnabled: true,
			DialTimeout: time.Second, ReadTimeout: time.Second})
	}
	if _, ok := client.(*redis.ClusterClient); !ok {
		t.Fatalf("client %T is not a cluster client", client)
	}
	t.Cleanup(func() { client.Close() })
	r := &replica{events: make(chan transition, 1024), logs: newLogBuffer(), id: fmt.Sprintf("r%d", i)}
	cfg.Logger = r.logs.logger
	cfg.ReplicaID = r.id
	cfg.OnStateChange = func(_ string, _, to breaker.State) {
		select {
		case r.events <- transition{to, time.Now()}:
		default:
		}
	}
	b, err := redisbreaker.New(client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	r.Breaker = b
	return r
}

// raceForProbes has 10 goroutines per replica ask for a permit at once in
// half-open, and reports the probes admitted (then reported as successes).
func raceForProbes(t *testing.T, rs []*replica) int {
	t.Helper()
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		mu      sync.Mutex
		permits []breaker.Permit
	)
	for _, r := range rs {
		for range 10 {
			wg.Go(func() {
				<-start
				p, err := r.Acquire()
				if err != nil {
					if !errors.Is(err, breaker.ErrOpen) {
						t.Errorf("Acquire() error = %v, want ErrOpen", err)
					}
					return
				}
				if !p.Probe() {
					t.Errorf("%s admitted a non-probe in half-open", r.id)
				}
				mu.Lock()
				permits = append(permits, p)
				mu.Unlock()
			})
		}
	}
	close(start)
	wg.Wait()
	for i := range permits {
		permits[i].Done(true)
	}
	return len(permits)
}

// The fleet breaker on a real Redis Cluster (3 masters, 3 replicas): a trip
// reaches every replica through pub/sub, the fleet sends one probe per
// half-open window, and it survives the crash of the master that owns its
// slot. During the failover no call waits longer than OpTimeout (+50 ms);
// the replicas probe on their own and close; once a replica has taken over,
// they push their close to it and are connected again within a few refresh
// intervals; then a trip reaches everyone again and the fleet again sends
// one probe per half-open window.
func TestClusterFleetSurvivesFailover(t *testing.T) {
	leaktest.Check(t)
	start := time.Now()
	c := redistest.StartCluster(t, 3, 1)
	t.Logf("cluster of %d nodes ready in %v", len(c.Nodes), time.Since(start))
	const (
		cooldown = time.Second
		refresh  = 100 * time.Millisecond
		// convergenceBound is "a few refresh intervals", generous for a
		// loaded machine; the figure is printed.
		convergenceBound = 30 * refresh
	)
	cfg := redisbreaker.Config{
		Config:          breaker.Config{Name: "api", Cooldown: cooldown},
		OpTimeout:       opTimeout,
		RefreshInterval: refresh,
	}
	rs := make([]*replica, 3)
	for i := range rs {
		rs[i] = clusterReplica(t, c, i, cfg)
	}
	for _, r := range rs {
		waitConnected(t, r)
	}
	master := c.MasterFor(stateKey("api"))
	t.Logf("slot of %s served by %s", stateKey("api"), master.Addr)

	trip := func(phase string) {
		t.Helper()
		for _, r := range rs {
			r.drain()
		}
		start := time.Now()
		fail(rs[0], 5)
		var worst time.Duration
		for _, r := range rs {
			worst = max(worst, waitState(t, r, breaker.Open, propagationBound).Sub(start))
		}
		t.Logf("%s: trip seen by all %d replicas %v after the tripping failure", phase, len(rs), worst)
	}
	halfOpen := func() {
		t.Helper()
		for _, r := range rs {
			eventually(t, 5*cooldown, r.id+" half-open", func() bool { return r.State() == breaker.HalfOpen })
		}
	}

	// Before the failover.
	trip("before the failover")
	halfOpen()
	if n := raceForProbes(t, rs); n != 1 {
		t.Fatalf("before the failover: %d probes admitted in one half-open window, want 1", n)
	}
	for _, r := range rs {
		waitState(t, r, breaker.Closed, propagationBound)
	}

	// A failover, under load: each replica makes a call every 2 ms to a
	// healthy upstream and times the breaker's part of it.
	failover := func(how string, fail func(key string) (old, promoted *redistest.Server, took time.Duration)) (old, promoted *redistest.Server) {
		t.Helper()
		trip("before the " + how)
		var (
			lat   maxLatency
			stop  = make(chan struct{})
			wg    sync.WaitGroup
			calls atomic.Int64
		)
		for _, r := range rs {
			wg.Go(func() {
				pace := time.NewTicker(2 * time.Millisecond)
				defer pace.Stop()
				for {
					select {
					case <-stop:
						return
					case <-pace.C:
					}
					calls.Add(1)
					lat.time(r.id+" Acquire+Done", func() {
						if p, err := r.Acquire(); err == nil {
							p.Done(true)
						}
					})
				}
			})
		}
		old, promoted, took := fail(stateKey("api"))
		tookOver := time.Now()
		t.Logf("%s: master %s failed; replica %s took over %v later", how, old.Addr, promoted.Addr, took)
		for _, r := range rs {
			waitState(t, r, breaker.Closed, 5*cooldown) // each probed on its own
		}
		admin := redis.NewClient(&redis.Options{Addr: promoted.Addr, ContextTimeoutEnabled: true})
		defer admin.Close()
		eventually(t, convergenceBound, "the replicas connected to the new master, and their close pushed to it", func() bool {
			for _, r := range rs {
				if !r.Connected() {
					return false
				}
			}
			st, err := admin.HGet(context.Background(), stateKey("api"), "state").Result()
			return err == nil && st == "closed"
		})
		converged := time.Since(tookOver)
		close(stop)
		wg.Wait()
		t.Logf("%s: fleet converged on the new master %v after the takeover (RefreshInterval %v)", how, converged, refresh)
		t.Logf("%s: during the failover: %v", how, &lat)
		if lat.get() > latencyBound {
			t.Errorf("%s: during the failover: %v", how, &lat)
		}
		if calls.Load() == 0 {
			t.Fatalf("%s: no calls during the failover", how)
		}
		for _, r := range rs {
			if r.State() != breaker.Closed {
				t.Errorf("%s: %s is %v after the failover, want closed (the upstream is healthy)", how, r.id, r.State())
			}
		}

		// After the failover: the fleet works as before, on the new master.
		trip("after the " + how)
		halfOpen()
		if n := raceForProbes(t, rs); n != 1 {
			t.Fatalf("after the %s: %d probes admitted in one half-open window, want 1", how, n)
		}
		for _, r := range rs {
			waitState(t, r, breaker.Closed, propagationBound)
		}
		return old, promoted
	}

	// The master crashes; it comes back as a replica of the new one; then
	// the new master hangs (frozen, connections open, nothing answered),
	// and the old one takes over again.
	old, _ := failover("crash", c.KillMaster)
	c.Rejoin(old)
	hung, promoted := failover("hang", c.HangMaster)
	c.Rejoin(hung)

	// Close is prompt with the slot's master hung.
	promoted.Pause()
	defer promoted.Resume()
	for _, r := range rs {
		start := time.Now()
		r.Close()
		if d := time.Since(start); d > latencyBound {
			t.Errorf("%s: Close took %v with the slot's master hung, want <= %v", r.id, d, latencyBound)
		}
	}
}
