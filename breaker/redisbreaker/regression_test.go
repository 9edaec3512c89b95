package redisbreaker_test

import (
	"context"
	"log/slog"
	"net"
	"strconv"
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

// seedAPI is the plain Allow / RecordSuccess API that both breakers have.
type seedAPI interface {
	Allow() bool
	RecordSuccess()
	RecordFailure()
	State() breaker.State
}

// With Redis down, Allow's probes behave as a local breaker's. A probe round
// nobody reports on is abandoned after a cooldown (HalfOpen to HalfOpen with
// no OnStateChange). After that, RecordSuccess belongs to the new round's
// probe, not the abandoned one, so the breaker closes. Before the fix every
// later outcome went to the abandoned probe and the breaker stayed half-open
// for as long as Redis was down.
func TestAbandonedPlainProbeRoundWhileRedisDown(t *testing.T) {
	for _, probes := range []int{1, 2} {
		t.Run("probes="+strconv.Itoa(probes), func(t *testing.T) {
			leaktest.Check(t)
			s := redistest.Start(t)
			s.Stop()
			clk := clock.NewFake(epoch)
			cfg := fakeConfig("api", clk)
			cfg.HalfOpenProbes = probes
			cfg.OpTimeout = opTimeout
			r := newReplica(t, s.Addr, cfg)
			if r.Connected() {
				t.Fatal("Connected() = true with Redis stopped")
			}
			// The reference: a local breaker with the same settings.
			lc := cfg.Config
			lc.Logger = slog.New(slog.DiscardHandler)
			local := breaker.MustNew(lc)
			both := []struct {
				name string
				b    seedAPI
			}{{"local breaker", local}, {"fleet breaker, Redis down", r}}

			for _, c := range both {
				fail(c.b, 5)
				if got := c.b.State(); got != breaker.Open {
					t.Fatalf("%s: State() = %v after 5 failures, want open", c.name, got)
				}
			}
			clk.Advance(cfg.Cooldown)
			for _, c := range both {
				for i := range probes {
					if !c.b.Allow() {
						t.Fatalf("%s: Allow() = false for probe %d of the first round", c.name, i)
					}
				} // and never reported
			}
			r.drain()
			clk.Advance(cfg.Cooldown) // the next admission abandons the first round
			for _, c := range both {
				for i := range probes {
					if !c.b.Allow() {
						t.Fatalf("%s: Allow() = false for probe %d of the round after the abandoned one", c.name, i)
					}
					c.b.RecordSuccess()
				}
				if got := c.b.State(); got != breaker.Closed {
					t.Errorf("%s: State() = %v after %d successful probes of a new round, want closed",
						c.name, got, probes)
				}
			}
			if r.State() == breaker.Closed {
				waitState(t, r, breaker.Closed, time.Second) // and the hook said so
			}
			if r.Connected() {
				t.Error("Connected() = true: the test meant Redis to stay down")
			}
		})
	}
}

// lateReply is a go-redis hook. Once armed, it holds back the reply to the
// next script call that succeeds until the test lets it through. Redis has
// already run the script, but the client learns the result late, as it would
// over a slow link or from a client that ignores context deadlines.
type lateReply struct {
	armed atomic.Bool
	gate  chan struct{}
	once  sync.Once
}

func newLateReply() *lateReply { return &lateReply{gate: make(chan struct{})} }

// deliver lets the held reply through. It is safe to call more than once.
func (h *lateReply) deliver() { h.once.Do(func() { close(h.gate) }) }

func (h *lateReply) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return next(ctx, network, addr)
	}
}

func (h *lateReply) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if n := cmd.Name(); (n == "evalsha" || n == "eval") && err == nil && h.armed.CompareAndSwap(true, false) {
			<-h.gate
		}
		return err
	}
}

func (h *lateReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// If a probe lease is granted but the reply arrives after OpTimeout, the
// replica gives the lease back as soon as the reply arrives, even though the
// timeout has marked Redis down. Before the fix the release went through the
// writer, which drops every write while Redis is marked down. Nobody then
// used the lease, and the whole fleet refused probes until it expired a full
// cooldown later.
func TestLateLeaseReplyReleasesLease(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	clk := clock.NewFake(epoch) // lease expiry by script is on this clock; Redis PX is the 1 min cooldown
	cfg := fakeConfig("api", clk)
	cfg.OpTimeout = opTimeout

	late := newLateReply()
	ca, cb := cfg, cfg
	ca.ReplicaID, cb.ReplicaID = "a", "b"
	a := newReplica(t, s.Addr, ca, late)
	t.Cleanup(late.deliver) // runs before a's Close, which waits for the held call
	b := newReplica(t, s.Addr, cb)
	waitConnected(t, a)
	waitConnected(t, b)

	// B trips the fleet, so A has no script call of its own in flight
	// when the hook is armed: its next one is the lease.
	fail(b, 5)
	waitState(t, a, breaker.Open, propagationBound)
	clk.Advance(cfg.Cooldown)

	late.armed.Store(true)
	start := time.Now()
	if !a.Allow() {
		t.Fatal("A: Allow() = false after the lease call timed out, want a local probe")
	}
	if d := time.Since(start); d > latencyBound {
		t.Errorf("A: Allow() took %v, want <= %v", d, latencyBound)
	}
	if a.Connected() {
		t.Error("A: Connected() = true after the lease call timed out")
	}
	admin := newClient(t, s.Addr)
	ctx := context.Background()
	lease := redisbreaker.DefaultPrefix + "{api}:probe:0"
	if n, err := admin.Exists(ctx, lease).Result(); err != nil || n != 1 {
		t.Fatalf("EXISTS %s = %d, %v; the lease should have been granted in Redis", lease, n, err)
	}

	late.deliver() // the grant reaches A, late
	delivered := time.Now()
	eventually(t, time.Second, "the abandoned lease released", func() bool {
		n, err := admin.Exists(ctx, lease).Result()
		return err == nil && n == 0
	})
	t.Logf("lease released %v after the late reply", time.Since(delivered))

	// The fleet can probe again at once, not a cooldown later.
	if !b.Allow() {
		t.Fatal("B: Allow() = false after the abandoned lease was released, want the fleet's probe")
	}
	b.RecordSuccess()
	waitState(t, b, breaker.Closed, propagationBound)
	eventually(t, propagationBound, "the fleet closed", func() bool {
		st, err := admin.HGet(ctx, stateKey("api"), "state").Result()
		return err == nil && st == "closed"
	})
}
