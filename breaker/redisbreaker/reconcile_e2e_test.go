package redisbreaker_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/breaker/redisbreaker"
	"github.com/hordekit/httpretry/clock"
	"github.com/hordekit/httpretry/internal/leaktest"
	"github.com/hordekit/httpretry/internal/redistest"
)

// shared is the state hash as a test writes or reads it.
type shared struct {
	exists         bool
	state          string
	gen, until, at int64
	failures       int64
}

func readShared(t testing.TB, admin *redis.Client, name string) shared {
	t.Helper()
	h, err := admin.HGetAll(context.Background(), stateKey(name)).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(h) == 0 {
		return shared{}
	}
	n := func(f string) int64 { v, _ := strconv.ParseInt(h[f], 10, 64); return v }
	return shared{exists: true, state: h["state"], gen: n("gen"), until: n("until"), at: n("at"), failures: n("failures")}
}

func writeShared(t testing.TB, admin *redis.Client, name string, s shared) {
	t.Helper()
	ctx := context.Background()
	if err := admin.Del(ctx, stateKey(name)).Err(); err != nil {
		t.Fatal(err)
	}
	if !s.exists {
		return
	}
	err := admin.HSet(ctx, stateKey(name), "state", s.state, "gen", s.gen, "until", s.until,
		"failures", s.failures, "at", s.at, "retrips", 1, "probe_ok", 0).Err()
	if err != nil {
		t.Fatal(err)
	}
}

func (s shared) String() string {
	if !s.exists {
		return "missing"
	}
	if s.until == 0 {
		return fmt.Sprintf("%s gen=%d at=%+ds failures=%d", s.state, s.gen, (s.at-epoch.UnixMilli())/1000, s.failures)
	}
	return fmt.Sprintf("%s gen=%d until=%+ds at=%+ds failures=%d", s.state, s.gen,
		(s.until-epoch.UnixMilli())/1000, (s.at-epoch.UnixMilli())/1000, s.failures)
}

// cutReplica is a replica whose connection to Redis the test can cut.
func cutReplica(t *testing.T, addr string, cfg redisbreaker.Config) (*replica, *partition) {
	t.Helper()
	part := &partition{}
	client := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, Dialer: part.dial})
	t.Cleanup(func() { client.Close() })
	r := &replica{events: make(chan transition, 64), logs: newLogBuffer(), id: "cut"}
	cfg.Logger = r.logs.logger
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
	waitConnected(t, r)
	return r, part
}

// Every cell of the reconciliation table in the package documentation,
// against a real Redis. A replica is cut off from Redis and reaches its
// local view there (closed by its own probe, open on its own failures, or
// open as the mirror of the fleet's trip); the test writes the shared state
// of the cell; the replica reconnects, and the test checks both the local
// view and what Redis holds once the replica has settled. Times are on a
// fake clock, so "older" and "newer" are exact.
func TestReconcileTable(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	admin := newClient(t, s.Addr)
	const cooldown = time.Minute
	sec := func(d time.Duration) int64 { return epoch.Add(d).UnixMilli() }

	type want struct {
		state      breaker.State
		untilRetry time.Duration // when open
		redis      string        // "unchanged", or the state Redis must hold
		redisAt    int64
		redisUntil int64
	}
	type row struct {
		name  string
		local func(t *testing.T, r *replica, part *partition, clk *clock.Fake, peer func() *replica) int64
	}
	cutOff := func(t *testing.T, r *replica, part *partition) {
		// Writes in flight would be retried by go-redis through the cut and
		// land after the test has written the cell's state.
		redisbreaker.Settle(r.Breaker)
		part.set(true)
		eventually(t, 5*time.Second, "partition noticed", func() bool { return !r.Connected() })
	}
	rows := []row{
		{"closed by its own probe", func(t *testing.T, r *replica, part *partition, clk *clock.Fake, _ func() *replica) int64 {
			fail(r, 5)
			waitState(t, r, breaker.Open, propagationBound)
			cutOff(t, r, part)
			clk.Advance(cooldown)
			if !r.Allow() {
				t.Fatal("no local probe while cut off")
			}
			r.RecordSuccess()
			waitState(t, r, breaker.Closed, propagationBound)
			return sec(cooldown)
		}},
		{"open on its own failures", func(t *testing.T, r *replica, part *partition, _ *clock.Fake, _ func() *replica) int64 {
			cutOff(t, r, part)
			fail(r, 5)
			waitState(t, r, breaker.Open, propagationBound)
			return sec(0)
		}},
		{"open as the fleet's mirror", func(t *testing.T, r *replica, part *partition, _ *clock.Fake, peer func() *replica) int64 {
			p := peer()
			fail(p, 5)
			waitState(t, r, breaker.Open, propagationBound)
			p.Close() // it would react to the state the test writes
			cutOff(t, r, part)
			return sec(0)
		}},
	}

	for i, rw := range rows {
		open := i > 0
		for _, col := range []string{"missing", "closed", "open-cooling", "open-over"} {
			for _, age := range []string{"older", "newer"} {
				if col == "missing" && age == "newer" {
					continue // a missing state has no age
				}
				t.Run(fmt.Sprintf("%s/%s/%s", rw.name, col, age), func(t *testing.T) {
					name := fmt.Sprintf("cell%d-%s-%s", i, col, age)
					clk := clock.NewFake(epoch)
					cfg := fakeConfig(name, clk)
					cfg.RefreshInterval = time.Second
					cfg.OpTimeout = opTimeout
					r, part := cutReplica(t, s.Addr, cfg)
					peer := func() *replica { return fleet(t, s.Addr, 1, cfg)[0] }
					local := rw.local(t, r, part, clk, peer)

					clk.Advance(10 * time.Second)
					now := clk.Now().UnixMilli()
					at := local - 5000
					if age == "newer" {
						at = local + 5000
					}
					var written shared
					switch col {
					case "closed":
						written = shared{exists: true, state: "closed", gen: 1000, at: at}
					case "open-cooling":
						until := now + 90_000 // later than the replica's own open-until
						if age == "newer" {
							until = now + 30_000 // earlier: adopting it is visible
						}
						written = shared{exists: true, state: "open", gen: 1000, at: at, until: until, failures: 5}
					case "open-over":
						written = shared{exists: true, state: "open", gen: 1000, at: at, until: now - 1000, failures: 5}
					}
					writeShared(t, admin, name, written)

					// What the table says, one refresh interval later.
					now += time.Second.Milliseconds()
					w := want{redis: "unchanged"}
					localUntil := local + cooldown.Milliseconds() // an open view's own open-until
					pushOpen := want{state: breaker.Open, untilRetry: time.Duration(localUntil-now) * time.Millisecond,
						redis: "open", redisAt: local, redisUntil: localUntil}
					pushClosed := want{state: breaker.Closed, redis: "closed", redisAt: local}
					switch {
					case !open && col == "missing", !open && col == "closed", !open && col == "open-over" && age == "newer":
						w.state = breaker.Closed
					case !open: // open-cooling newer adopts; older, and open-over older, push the close
						if col == "open-cooling" && age == "newer" {
							w = want{state: breaker.Open, untilRetry: 29 * time.Second, redis: "unchanged"}
						} else {
							w = pushClosed
						}
					case col == "missing":
						w = pushOpen
					case age == "older" && col == "open-cooling": // keep its own, extended to the later until
						w = want{state: breaker.Open, untilRetry: 89 * time.Second, redis: "unchanged"}
					case age == "older":
						w = pushOpen
					case col == "closed":
						w.state = breaker.Closed
					case col == "open-cooling":
						w = want{state: breaker.Open, untilRetry: 29 * time.Second, redis: "unchanged"}
					default: // open-over, newer: the fleet is half-open
						w.state = breaker.HalfOpen
					}

					part.set(false)
					clk.BlockUntil(1) // the refresher is waiting
					clk.Advance(time.Second)
					waitConnected(t, r)
					redisbreaker.Settle(r.Breaker)

					got := readShared(t, admin, name)
					t.Logf("local evidence at %+ds; Redis %v -> %v; local view %v", (local-epoch.UnixMilli())/1000, written, got, r.State())
					if st := r.State(); st != w.state {
						t.Errorf("local view %v, want %v", st, w.state)
					}
					if w.state == breaker.Open {
						if d, _ := r.UntilRetry(); d != w.untilRetry {
							t.Errorf("UntilRetry() = %v, want %v", d, w.untilRetry)
						}
					}
					switch w.redis {
					case "unchanged":
						if got != written {
							t.Errorf("Redis holds %v, want it unchanged (%v)", got, written)
						}
					case "closed":
						if got.state != "closed" || got.at != w.redisAt {
							t.Errorf("Redis holds %v, want closed with the replica's evidence at %+ds", got, (w.redisAt-epoch.UnixMilli())/1000)
						}
					case "open":
						if got.state != "open" || got.at != w.redisAt || got.until != w.redisUntil {
							t.Errorf("Redis holds %v, want open at %+ds until %+ds", got,
								(w.redisAt-epoch.UnixMilli())/1000, (w.redisUntil-epoch.UnixMilli())/1000)
						}
					}
				})
			}
		}
	}
}

// The reproduction: two replicas, cooldown 300 ms, refresh 100 ms, a
// healthy upstream and one 100 ms call every 2 ms. The fleet is tripped, then
// Redis is frozen (SIGSTOP); the replicas probe on their own and close. When
// Redis comes back with its stale "open" state, whose cooldown is long over,
// no replica may go back to open: the replicas' probes are newer evidence,
// and they push the close to the fleet. Before reconciliation by evidence,
// every replica re-tripped from the stale snapshot and refused calls until
// its probe completed (88 of 872 calls in the run).
func TestRedisComingBackDoesNotRetripRecoveredFleet(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	const cooldown = 300 * time.Millisecond
	rs := fleet(t, s.Addr, 2, redisbreaker.Config{
		Config:          breaker.Config{Name: "api", Cooldown: cooldown},
		OpTimeout:       opTimeout,
		RefreshInterval: 100 * time.Millisecond,
	})
	fail(rs[0], 5)
	for _, r := range rs {
		waitState(t, r, breaker.Open, propagationBound)
	}
	admin := newClient(t, s.Addr)
	eventually(t, 5*time.Second, "trip written", func() bool { return readShared(t, admin, "api").state == "open" })

	s.Pause()
	resumed := false
	defer func() {
		if !resumed {
			s.Resume()
		}
	}()

	// The load: a call every 2 ms, alternating replicas, each taking 100 ms
	// of a healthy upstream.
	type tally struct{ calls, refused int }
	var (
		mu            sync.Mutex
		before, after tally // calls started before and after Redis came back
		afterRedis    bool
		wg            sync.WaitGroup
		stop          = make(chan struct{})
		loadDone      = make(chan struct{})
	)
	go func() {
		defer close(loadDone)
		pace := time.NewTicker(2 * time.Millisecond)
		defer pace.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-pace.C:
			}
			r := rs[i%2]
			p, err := r.Acquire()
			mu.Lock()
			tl := &before
			if afterRedis {
				tl = &after
			}
			tl.calls++
			if err != nil {
				tl.refused++
			}
			mu.Unlock()
			if err == nil {
				wg.Add(1)
				time.AfterFunc(100*time.Millisecond, func() { defer wg.Done(); p.Done(true) })
			}
		}
	}()

	// Each replica probes on its own (the lease call times out) and closes.
	for _, r := range rs {
		waitState(t, r, breaker.Closed, 5*time.Second)
	}
	mu.Lock()
	afterRedis = true
	mu.Unlock()
	for _, r := range rs {
		r.drain()
	}
	s.Resume()
	resumed = true

	// Redis answers again; the replicas reconcile and push their close.
	for _, r := range rs {
		waitConnected(t, r)
	}
	eventually(t, 5*time.Second, "the close pushed to Redis", func() bool { return readShared(t, admin, "api").state == "closed" })
	// Ten more refresh intervals of load with Redis back.
	window := time.After(time.Second)
	for watching := true; watching; {
		select {
		case tr := <-rs[0].events:
			t.Errorf("%s went %v after Redis came back", rs[0].id, tr.to)
		case tr := <-rs[1].events:
			t.Errorf("%s went %v after Redis came back", rs[1].id, tr.to)
		case <-window:
			watching = false
		}
	}
	close(stop)
	<-loadDone
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	t.Logf("while Redis was frozen: %d of %d calls refused (the fleet was open, then each replica probed)", before.refused, before.calls)
	t.Logf("after Redis came back: %d of %d calls refused", after.refused, after.calls)
	if after.calls == 0 {
		t.Fatal("no calls after Redis came back: the test did not run")
	}
	if after.refused != 0 {
		t.Errorf("%d of %d calls refused because Redis came back, want 0", after.refused, after.calls)
	}
	got := readShared(t, admin, "api")
	t.Logf("shared state after the reconnect: %s, at %s", got.state, time.UnixMilli(got.at).UTC().Format(time.StampMilli))
}
