package redisbreaker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
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

const (
	opTimeout = 100 * time.Millisecond
	// latencyBound is the most any call may take while Redis is down or hung.
	latencyBound = opTimeout + 50*time.Millisecond
	warnMsg      = "Redis unreachable"
)

// maxLatency times calls and keeps the slowest, and what it was.
type maxLatency struct {
	mu    sync.Mutex
	max   time.Duration
	what  string
	calls int
}

func (m *maxLatency) time(what string, f func()) {
	start := time.Now()
	f()
	d := time.Since(start)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	if d > m.max {
		m.max, m.what = d, what
	}
}

func (m *maxLatency) get() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.max
}

func (m *maxLatency) String() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return fmt.Sprintf("slowest of %d calls: %s, %v (bound %v)", m.calls, m.what, m.max, latencyBound)
}

// Redis killed mid-run, then restarted: requests keep being answered from
// local state within OpTimeout, a replica still trips (and probes) on its own,
// one warning is logged per WarnInterval, and the fleet converges again.
func TestRedisOutageAndRestart(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	// Long enough that A's reopened state is still cooling down when Redis
	// is back and A pushes it: an open state whose cooldown is over would
	// not trip B and C, which are closed (see the reconciliation table).
	const cooldown = time.Second
	rs := fleet(t, s.Addr, 3, redisbreaker.Config{
		Config:          breaker.Config{Name: "api", Cooldown: cooldown},
		OpTimeout:       opTimeout,
		RefreshInterval: 100 * time.Millisecond,
		WarnInterval:    time.Minute,
	})
	a, b, c := rs[0], rs[1], rs[2]

	s.Stop()
	var lat maxLatency

	// Healthy replicas keep serving from local state.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, r := range []*replica{b, c} {
		wg.Go(func() {
			pace := time.NewTicker(time.Millisecond)
			defer pace.Stop()
			for {
				select {
				case <-stop:
					return
				default:
				}
				lat.time(r.id+" Acquire+Done", func() {
					p, err := r.Acquire()
					if err != nil {
						t.Errorf("%s: Acquire() during the outage: %v", r.id, err)
						return
					}
					p.Done(true)
				})
				lat.time(r.id+" Allow+RecordSuccess", func() {
					if r.Allow() {
						r.RecordSuccess()
					}
				})
				lat.time(r.id+" Status", func() { r.Status() })
				// Paced, not spinning: a loop that saturates the CPUs would
				// measure the scheduler, not the breaker.
				<-pace.C
			}
		})
	}

	// A trips on its own, refuses, then probes locally after the cooldown.
	lat.time("A 5 x RecordFailure", func() { fail(a, 5) })
	if got := a.State(); got != breaker.Open {
		t.Fatalf("State() = %v after 5 failures with Redis down, want open", got)
	}
	lat.time("A Acquire (open)", func() {
		if _, err := a.Acquire(); !errors.Is(err, breaker.ErrOpen) {
			t.Errorf("Acquire() = %v while open, want ErrOpen", err)
		}
	})
	eventually(t, 3*cooldown, "half-open", func() bool { return a.State() == breaker.HalfOpen })
	var probe breaker.Permit
	lat.time("A Acquire (half-open)", func() {
		var err error
		probe, err = a.Acquire()
		if err != nil || !probe.Probe() {
			t.Errorf("Acquire() in half-open with Redis down = probe %v, %v; want a local probe", probe.Probe(), err)
		}
	})
	if a.Allow() {
		t.Error("a second local probe was admitted")
	}
	probe.Done(false)
	close(stop)
	wg.Wait()

	t.Logf("Redis down: %v", &lat)
	if lat.get() > latencyBound {
		t.Errorf("Redis down: %v", &lat)
	}
	for _, r := range rs {
		if r.Connected() {
			t.Errorf("%s: Connected() = true with Redis down", r.id)
		}
		if n := r.logs.count(warnMsg); n != 1 {
			t.Errorf("%s: %d %q warnings in one WarnInterval, want 1:\n%s", r.id, n, warnMsg, r.logs)
		}
	}
	if b.State() != breaker.Closed || c.State() != breaker.Closed {
		t.Fatalf("B, C = %v, %v; they cannot know of A's trip without Redis", b.State(), c.State())
	}

	// Redis returns empty. A is open and the fleet has no state: A pushes
	// its reopened state, and B and C adopt it.
	b.drain()
	c.drain()
	s.Restart()
	restarted := time.Now()
	for _, r := range []*replica{b, c} {
		at := waitState(t, r, breaker.Open, 2*time.Second)
		t.Logf("%s adopted A's outage trip %v after the restart", r.id, at.Sub(restarted))
	}
	for _, r := range rs {
		waitConnected(t, r)
	}

	// The fleet probes once and closes.
	eventually(t, 3*cooldown, "half-open", func() bool { return b.State() == breaker.HalfOpen })
	p, err := b.Acquire()
	if err != nil || !p.Probe() {
		t.Fatalf("Acquire() after the restart = probe %v, %v; want the fleet's probe", p.Probe(), err)
	}
	if _, err := c.Acquire(); err == nil {
		t.Fatal("a second probe was admitted after the restart")
	}
	p.Done(true)
	for _, r := range rs {
		waitState(t, r, breaker.Closed, propagationBound)
	}

	// A trip after the restart is seen by the others within a second.
	a.drain()
	b.drain()
	start := time.Now()
	fail(c, 5)
	for _, r := range []*replica{a, b} {
		d := waitState(t, r, breaker.Open, propagationBound).Sub(start)
		t.Logf("%s saw the post-restart trip after %v", r.id, d)
		if d >= propagationBound {
			t.Errorf("%s: propagation took %v after the restart", r.id, d)
		}
	}
	if n := a.logs.count("Redis reachable again"); n != 1 {
		t.Errorf("%d recovery logs, want 1", n)
	}
}

// A Redis that hangs (accepts, never answers) must not hold a request longer
// than OpTimeout, even with a client that ignores context deadlines
// (ContextTimeoutEnabled off, the go-redis default).
func TestHungRedisNeverBlocksRequests(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	const cooldown = 200 * time.Millisecond
	cfg := redisbreaker.Config{
		Config:    breaker.Config{Name: "api", Cooldown: cooldown},
		OpTimeout: opTimeout,
	}
	client := redis.NewClient(&redis.Options{Addr: s.Addr}) // no ContextTimeoutEnabled
	t.Cleanup(func() { client.Close() })
	a, err := redisbreaker.New(client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	eventually(t, 5*time.Second, "connected", a.Connected)
	other := fleet(t, s.Addr, 1, cfg)[0]
	fail(a, 5)
	waitState(t, other, breaker.Open, propagationBound)

	fresh := fleet(t, s.Addr, 1, redisbreaker.Config{Config: breaker.Config{Name: "fresh"}, OpTimeout: opTimeout})[0]

	s.Pause()
	defer s.Resume() // before the Close calls, so hung calls finish
	var lat maxLatency

	// Half-open needs the lease: the call to Redis hangs, and is abandoned.
	eventually(t, 3*cooldown, "half-open", func() bool { return a.State() == breaker.HalfOpen })
	var p breaker.Permit
	lat.time("Acquire (half-open)", func() { p, err = a.Acquire() })
	if err != nil || !p.Probe() {
		t.Fatalf("Acquire() with Redis hung = probe %v, %v; want a local probe", p.Probe(), err)
	}
	if a.Connected() {
		t.Error("Connected() = true after a call timed out")
	}
	p.Done(true)
	if got := a.State(); got != breaker.Closed {
		t.Errorf("State() = %v after the local probe succeeded, want closed", got)
	}

	// A replica starting now is not held up either.
	lateClient := redis.NewClient(&redis.Options{Addr: s.Addr})
	t.Cleanup(func() { lateClient.Close() })
	var late *redisbreaker.Breaker
	lat.time("New", func() {
		if late, err = redisbreaker.New(lateClient, cfg); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { late.Close() }) // after the deferred Resume
	if !late.Allow() {
		t.Error("a replica started with Redis hung refuses calls")
	}

	// Failures are written in the background: recording them never waits.
	for range 10 {
		lat.time("RecordFailure", func() { fresh.RecordFailure() })
	}
	if got := fresh.State(); got != breaker.Open {
		t.Errorf("State() = %v after 10 failures with Redis hung, want open (local trip)", got)
	}
	t.Logf("Redis hung: %v", &lat)
	if lat.get() > latencyBound {
		t.Errorf("Redis hung: %v", &lat)
	}
}

// The warning while Redis is down is rate-limited by WarnInterval on the
// breaker's clock; a replica that starts during an outage works locally and
// shares its trip once Redis is back.
func TestStartDuringOutageWarnsOncePerInterval(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	s.Stop()
	clk := clock.NewFake(epoch)
	cfg := fakeConfig("api", clk)
	cfg.RefreshInterval = time.Second
	cfg.WarnInterval = 10 * time.Second
	cfg.OpTimeout = opTimeout

	start := time.Now()
	r := newReplica(t, s.Addr, cfg)
	if d := time.Since(start); d > latencyBound {
		t.Errorf("New took %v with Redis down, want <= %v", d, latencyBound)
	}
	fail(r, 5)
	if got := r.State(); got != breaker.Open {
		t.Fatalf("State() = %v, want open (a local trip)", got)
	}
	eventually(t, 5*time.Second, "first warning", func() bool { return r.logs.count(warnMsg) >= 1 })

	tick := func() {
		clk.BlockUntil(1) // the refresher is waiting for its next tick
		clk.Advance(time.Second)
	}
	for range 9 {
		tick()
	}
	clk.BlockUntil(1) // the ninth refresh is done
	if n := r.logs.count(warnMsg); n != 1 {
		t.Fatalf("%d warnings in 9 s with WarnInterval 10 s, want 1:\n%s", n, r.logs)
	}
	tick()
	clk.BlockUntil(1)
	if n := r.logs.count(warnMsg); n != 2 {
		t.Fatalf("%d warnings after 10 s, want 2:\n%s", n, r.logs)
	}

	s.Restart()
	tick()
	waitConnected(t, r)
	admin := newClient(t, s.Addr)
	eventually(t, 5*time.Second, "local trip pushed", func() bool {
		st, _ := admin.HGet(context.Background(), stateKey("api"), "state").Result()
		return st == "open"
	})
	if n := r.logs.count(warnMsg); n != 2 {
		t.Errorf("%d warnings, want still 2", n)
	}
}

// partition is a dialer for one replica's client whose connections the test
// can cut, as a network partition between that replica and Redis would,
// while the rest of the fleet keeps its Redis.
type partition struct {
	mu    sync.Mutex
	cut   bool
	conns []net.Conn
}

func (p *partition) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return nil, errors.New("partitioned")
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err == nil {
		p.conns = append(p.conns, c)
	}
	return c, err
}

func (p *partition) set(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

// A replica cut off while the fleet recovered adopts the recovery when it
// reconnects: its open state was only a mirror, so it must not reopen the
// fleet.
func TestPartitionedReplicaAdoptsRecovery(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	clk := clock.NewFake(epoch)
	cfg := fakeConfig("api", clk)
	cfg.RefreshInterval = time.Second

	var part partition
	client := redis.NewClient(&redis.Options{Addr: s.Addr, ContextTimeoutEnabled: true, Dialer: part.dial})
	t.Cleanup(func() { client.Close() })
	cut := &replica{events: make(chan transition, 64), logs: newLogBuffer(), id: "cut"}
	c := cfg
	c.Logger = cut.logs.logger
	c.OnStateChange = func(_ string, _, to breaker.State) { cut.events <- transition{to, time.Now()} }
	b, err := redisbreaker.New(client, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	cut.Breaker = b
	waitConnected(t, cut)
	peer := fleet(t, s.Addr, 1, cfg)[0]

	fail(peer, 5)
	waitState(t, cut, breaker.Open, propagationBound)
	part.set(true)
	eventually(t, 5*time.Second, "partition noticed", func() bool { return !cut.Connected() })

	// The fleet recovers without the cut-off replica.
	clk.Advance(time.Minute)
	p, err := peer.Acquire()
	if err != nil || !p.Probe() {
		t.Fatalf("peer's Acquire() = probe %v, %v; want the fleet's probe", p.Probe(), err)
	}
	p.Done(true)
	waitState(t, peer, breaker.Closed, propagationBound)
	if cut.State() == breaker.Closed {
		t.Fatal("the cut-off replica learned of the recovery through a partition")
	}

	part.set(false)
	peer.drain()
	clk.BlockUntil(2) // both refreshers are waiting
	clk.Advance(time.Second)
	waitState(t, cut, breaker.Closed, 5*time.Second)
	waitConnected(t, cut)
	admin := newClient(t, s.Addr)
	if st, _ := admin.HGet(context.Background(), stateKey("api"), "state").Result(); st != "closed" {
		t.Errorf("shared state = %q after the reconnect, want closed", st)
	}
	if peer.State() != breaker.Closed {
		t.Errorf("peer = %v; the reconnecting replica reopened the fleet", peer.State())
	}
}

// blackhole is a go-redis dial hook that can freeze the connections that
// carry a subscription: writes still succeed, nothing more is read, as when
// the server behind them hangs or the network drops their packets. It counts
// SUBSCRIBE commands sent.
type blackhole struct {
	mu         sync.Mutex
	subs       []*holeConn
	subscribes atomic.Int32
}

func (h *blackhole) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &holeConn{Conn: c, h: h, closed: make(chan struct{})}, nil
	}
}

func (h *blackhole) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h *blackhole) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// freeze freezes every connection that has carried a SUBSCRIBE so far.
func (h *blackhole) freeze() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.subs {
		c.frozen.Store(true)
	}
}

type holeConn struct {
	net.Conn
	h        *blackhole
	frozen   atomic.Bool
	closed   chan struct{}
	once     sync.Once
	mu       sync.Mutex
	deadline time.Time
}

func (c *holeConn) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("\r\nsubscribe\r\n")) {
		c.h.subscribes.Add(1)
		c.h.mu.Lock()
		c.h.subs = append(c.h.subs, c)
		c.h.mu.Unlock()
	}
	return c.Conn.Write(p)
}

func (c *holeConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *holeConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

func (c *holeConn) Read(p []byte) (int, error) {
	if !c.frozen.Load() {
		return c.Conn.Read(p)
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
	case <-c.closed:
		return 0, net.ErrClosed
	case <-expired:
		return 0, &net.OpError{Op: "read", Net: "tcp", Addr: c.RemoteAddr(), Err: os.ErrDeadlineExceeded}
	}
}

func (c *holeConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// A subscription whose connection dies without closing (a hung server, a
// cluster master replaced while it hung, a black-holed network) is noticed
// by a PING that goes unanswered, and replaced: the replica subscribes again
// on a new connection and hears the fleet's transitions through it. Before,
// it kept waiting on the dead connection and learned of trips only from the
// refresh.
func TestDeadSubscriptionIsReplaced(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	var hole blackhole
	cfg := redisbreaker.Config{
		Config:          breaker.Config{Name: "api", Cooldown: time.Minute},
		OpTimeout:       opTimeout,
		RefreshInterval: 200 * time.Millisecond,
	}
	r := newReplica(t, s.Addr, cfg, &hole)
	waitConnected(t, r)
	peer := fleet(t, s.Addr, 1, cfg)[0]
	if n := hole.subscribes.Load(); n != 1 {
		t.Fatalf("%d SUBSCRIBE sent, want 1", n)
	}

	hole.freeze()
	eventually(t, 5*time.Second, "a new subscription", func() bool { return hole.subscribes.Load() >= 2 })
	waitConnected(t, r)

	// The new subscription carries the fleet's transitions.
	hole.mu.Lock()
	live := hole.subs[len(hole.subs)-1]
	hole.mu.Unlock()
	if live.frozen.Load() {
		t.Fatal("the new subscription is on a frozen connection")
	}
	fail(peer, 5)
	waitState(t, r, breaker.Open, propagationBound)
}
