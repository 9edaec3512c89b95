package redisbreaker_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
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

// slowReply is a go-redis dial hook that holds back, at the socket, the reply
// to the next script call once armed, as a slow link or a Redis stalled after
// running the script would. Unlike lateReply it works below the client: the
// wrapped connection honours the read deadline go-redis sets. With
// ContextTimeoutEnabled that deadline is the context's, so at OpTimeout the
// client gets a timeout error, not a late success, although Redis has run
// the script.
type slowReply struct {
	armed    atomic.Bool
	held     chan struct{} // receives once a reply is held
	resume   chan struct{} // closed by the test: the hold may time out now
	gate     chan struct{} // closed to deliver the held reply at once
	once     sync.Once
	timedOut atomic.Bool // the held reply timed out: the client got an error
}

func newSlowReply() *slowReply {
	return &slowReply{held: make(chan struct{}), resume: make(chan struct{}), gate: make(chan struct{})}
}

// deliver lets a held reply through. It is safe to call more than once.
func (h *slowReply) deliver() { h.once.Do(func() { close(h.gate) }) }

func (h *slowReply) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &slowConn{Conn: c, h: h}, nil
	}
}

func (h *slowReply) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h *slowReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// slowConn is one connection of a client with a slowReply hook.
type slowConn struct {
	net.Conn
	h *slowReply

	mu       sync.Mutex
	deadline time.Time // the read deadline go-redis set
	script   bool      // a script call was written; its reply comes next
}

func (c *slowConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *slowConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

func (c *slowConn) Write(p []byte) (int, error) {
	if c.h.armed.Load() && (bytes.Contains(p, []byte("\r\nevalsha\r\n")) || bytes.Contains(p, []byte("\r\neval\r\n"))) {
		c.mu.Lock()
		c.script = true
		c.mu.Unlock()
	}
	return c.Conn.Write(p)
}

func (c *slowConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	script := c.script
	c.script = false
	c.mu.Unlock()
	if !script {
		return c.Conn.Read(p)
	}
	n, err := c.Conn.Read(p) // the reply: Redis has run the script
	// An error reply (NOSCRIPT, before go-redis falls back to EVAL) goes
	// through; the hold is for the script's result.
	if err != nil || n == 0 || p[0] == '-' || !c.h.armed.CompareAndSwap(true, false) {
		return n, err
	}
	c.h.held <- struct{}{}
	select {
	case <-c.h.resume:
	case <-c.h.gate:
	}
	c.mu.Lock()
	deadline := c.deadline
	c.mu.Unlock()
	var expired <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-c.h.gate:
		return n, nil
	case <-expired: // what the socket's deadline would do to a reply this late
		c.h.timedOut.Store(true)
		return 0, &net.OpError{Op: "read", Net: c.LocalAddr().Network(), Source: c.LocalAddr(),
			Addr: c.RemoteAddr(), Err: os.ErrDeadlineExceeded}
	}
}

// With ContextTimeoutEnabled (as the package documentation recommends), a
// probe lease whose grant is too slow to arrive within OpTimeout makes the
// lease call fail with a timeout, although Redis did grant it. The replica
// must still give the lease back, by its token. Before the fix only a late
// success released the lease, so with this setting the lease was left behind
// and the whole fleet refused probes for a cooldown.
func TestTimedOutLeaseCallReleasesLease(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	clk := clock.NewFake(epoch) // lease expiry by script is on this clock; Redis PX is the 1 min cooldown
	cfg := fakeConfig("api", clk)
	cfg.OpTimeout = opTimeout

	slow := newSlowReply()
	ca, cb := cfg, cfg
	ca.ReplicaID, cb.ReplicaID = "a", "b"
	a := newReplica(t, s.Addr, ca, slow) // newClient sets ContextTimeoutEnabled
	t.Cleanup(slow.deliver)              // runs before a's Close
	b := newReplica(t, s.Addr, cb)
	waitConnected(t, a)
	waitConnected(t, b)

	// B trips the fleet, so A has no script call of its own in flight
	// when the hook is armed: its next one is the lease.
	fail(b, 5)
	waitState(t, a, breaker.Open, propagationBound)
	clk.Advance(cfg.Cooldown)

	type allowed struct {
		ok bool
		d  time.Duration
	}
	res := make(chan allowed, 1)
	slow.armed.Store(true)
	go func() {
		start := time.Now()
		ok := a.Allow()
		res <- allowed{ok, time.Since(start)}
	}()

	<-slow.held // Redis has run A's lease call; its reply is held
	admin := newClient(t, s.Addr)
	ctx := context.Background()
	lease := redisbreaker.DefaultPrefix + "{api}:probe:0"
	v, err := admin.Get(ctx, lease).Result()
	if err != nil {
		t.Fatalf("GET %s: %v; the lease should have been granted in Redis", lease, err)
	}
	t.Logf("lease granted in Redis: %q", v)
	close(slow.resume) // the reply now times out, unless Allow's wait is long over already

	r := <-res
	timedOut := time.Now()
	if !r.ok {
		t.Fatal("A: Allow() = false after the lease call timed out, want a local probe")
	}
	if r.d > latencyBound {
		t.Errorf("A: Allow() took %v, want <= %v", r.d, latencyBound)
	}
	if a.Connected() {
		t.Error("A: Connected() = true after the lease call timed out")
	}

	// The reply is never delivered: the client gives up at OpTimeout, about
	// when Allow returns, and the release is one more call bounded by
	// OpTimeout.
	eventually(t, opTimeout+latencyBound, "the lease released after the call timed out", func() bool {
		n, err := admin.Exists(ctx, lease).Result()
		return err == nil && n == 0
	})
	t.Logf("lease released %v after Allow returned", time.Since(timedOut))
	if !slow.timedOut.Load() {
		t.Fatal("the held reply did not time out: the test meant the client to get a timeout error")
	}

	// The fleet can probe again at once, not a cooldown later.
	if !b.Allow() {
		t.Fatal("B: Allow() = false after the timed-out lease was released, want the fleet's probe")
	}
	b.RecordSuccess()
	waitState(t, b, breaker.Closed, propagationBound)
	eventually(t, propagationBound, "the fleet closed", func() bool {
		st, err := admin.HGet(ctx, stateKey("api"), "state").Result()
		return err == nil && st == "closed"
	})
}
