package redisbreaker_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/clock"
	"github.com/hordekit/httpretry/internal/leaktest"
	"github.com/hordekit/httpretry/internal/redistest"
)

// A lease given back early (the probe's caller released its permit) admits
// the next probe fleet-wide at once: the release publishes "free", and a
// replica that was told "busy" stops refusing locally. Before, it refused
// until the lease's expiry, a whole cooldown later (here the fake clock never
// gets there).
func TestReleasedLeaseAdmitsNextProbeAtOnce(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	clk := clock.NewFake(epoch)
	rs := fleet(t, s.Addr, 3, fakeConfig("api", clk))
	fail(rs[0], 5)
	for _, r := range rs {
		waitState(t, r, breaker.Open, propagationBound)
	}
	clk.Advance(time.Minute)

	p, err := rs[0].Acquire()
	if err != nil || !p.Probe() {
		t.Fatalf("Acquire() = probe %v, %v; want the fleet's probe", p.Probe(), err)
	}
	for _, r := range rs[1:] {
		if _, err := r.Acquire(); !errors.Is(err, breaker.ErrOpen) {
			t.Fatalf("%s: Acquire() = %v while the lease is held, want ErrOpen", r.id, err)
		}
	}
	p.Release() // the caller gave up before sending: says nothing about the upstream

	var next breaker.Permit
	eventually(t, propagationBound, "the next probe admitted after the release", func() bool {
		var err error
		next, err = rs[2].Acquire()
		return err == nil
	})
	if !next.Probe() {
		t.Fatal("the permit after the release is not a probe")
	}
	if _, err := rs[1].Acquire(); err == nil {
		t.Fatal("a second probe was admitted while the new lease is held")
	}
	next.Done(true)
	for _, r := range rs {
		waitState(t, r, breaker.Closed, propagationBound)
	}
}

// heldAcquire is a go-redis dial hook that, once armed, keeps the next
// script call from reaching Redis: it pretends to send it and holds the
// bytes. The client then times out waiting for a reply and closes the
// connection; the hook sends the held bytes on it only when the test says,
// as a network that delivers a request late would. Redis runs a request it
// reads before the connection's end.
type heldAcquire struct {
	armed atomic.Bool
	held  chan struct{} // closed when a call is held
	gate  chan struct{} // closed by the test: deliver it now
	reply chan string   // Redis's reply to the late call, or an error
	once  sync.Once
}

func newHeldAcquire() *heldAcquire {
	return &heldAcquire{held: make(chan struct{}), gate: make(chan struct{}), reply: make(chan string, 1)}
}

func (h *heldAcquire) deliver() { h.once.Do(func() { close(h.gate) }) }

func (h *heldAcquire) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &heldConn{Conn: c, h: h}, nil
	}
}

func (h *heldAcquire) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h *heldAcquire) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

type heldConn struct {
	net.Conn
	h    *heldAcquire
	mu   sync.Mutex
	held []byte
}

func (c *heldConn) Write(p []byte) (int, error) {
	if (bytes.Contains(p, []byte("\r\nevalsha\r\n")) || bytes.Contains(p, []byte("\r\neval\r\n"))) &&
		c.h.armed.CompareAndSwap(true, false) {
		c.mu.Lock()
		c.held = append([]byte(nil), p...)
		c.mu.Unlock()
		close(c.h.held)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *heldConn) Close() error {
	c.mu.Lock()
	held := c.held
	c.mu.Unlock()
	if held == nil {
		return c.Conn.Close()
	}
	go func() {
		defer c.Conn.Close()
		<-c.h.gate
		c.Conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Conn.Write(held); err != nil {
			c.h.reply <- "write: " + err.Error()
			return
		}
		c.h.reply <- readArray(bufio.NewReader(c.Conn))
	}()
	return nil
}

// readArray reads a RESP array of integers and bulk strings, the shape of a
// script's reply, as its elements joined by spaces.
func readArray(rd *bufio.Reader) string {
	line, err := rd.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "*") {
		return fmt.Sprintf("not an array: %q %v", line, err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
	elems := make([]string, 0, n)
	for range n {
		line, err := rd.ReadString('\n')
		if err != nil {
			return fmt.Sprintf("after %q: %v", elems, err)
		}
		if line[0] == '$' {
			if line, err = rd.ReadString('\n'); err != nil {
				return fmt.Sprintf("after %q: %v", elems, err)
			}
		} else {
			line = line[1:]
		}
		elems = append(elems, strings.TrimSpace(line))
	}
	return strings.Join(elems, " ")
}

// A lease call that times out is given back by its token. If the release
// reaches Redis before the lease call itself (delayed on its way, or queued
// behind a busy Redis on another connection), the lease call must not take a
// lease afterwards: the release leaves a tombstone that the acquire script
// honours. Before, the late acquire took the lease, nobody used it, and the
// whole fleet refused probes until it expired a cooldown later.
func TestReleaseBeforeQueuedAcquireStrandsNoLease(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	clk := clock.NewFake(epoch) // lease expiry by script is on this clock; Redis PX is the 1 min cooldown
	cfg := fakeConfig("api", clk)
	cfg.OpTimeout = opTimeout

	hook := newHeldAcquire()
	ca, cb := cfg, cfg
	ca.ReplicaID, cb.ReplicaID = "a", "b"
	a := newReplica(t, s.Addr, ca, hook)
	t.Cleanup(hook.deliver) // runs before a's Close
	b := newReplica(t, s.Addr, cb)
	waitConnected(t, a)
	waitConnected(t, b)

	// B trips the fleet and makes the first probe (it fails), so that Redis
	// knows the acquire script: the late call must run, not get NOSCRIPT.
	fail(b, 5)
	waitState(t, a, breaker.Open, propagationBound)
	clk.Advance(cfg.Cooldown)
	p, err := b.Acquire()
	if err != nil || !p.Probe() {
		t.Fatalf("B: Acquire() = probe %v, %v; want the fleet's probe", p.Probe(), err)
	}
	p.Done(false)
	eventually(t, propagationBound, "A saw the reopen", func() bool {
		d, ok := a.UntilRetry()
		return ok && d == cfg.Cooldown
	})
	clk.Advance(cfg.Cooldown)

	hook.armed.Store(true)
	start := time.Now()
	local, err := a.Acquire() // its lease call never reaches Redis in time
	if d := time.Since(start); d > latencyBound {
		t.Errorf("A: Acquire() took %v, want <= %v", d, latencyBound)
	}
	if err != nil || !local.Probe() {
		t.Fatalf("A: Acquire() = probe %v, %v; want a local probe after the lease call timed out", local.Probe(), err)
	}
	<-hook.held
	admin := newClient(t, s.Addr)
	ctx := context.Background()
	eventually(t, 5*time.Second, "the release (a tombstone) in Redis", func() bool {
		keys, err := admin.Keys(ctx, "*{api}:released:*").Result()
		return err == nil && len(keys) == 1
	})

	hook.deliver() // the lease call reaches Redis now, after its release
	reply := <-hook.reply
	t.Logf("Redis's reply to the late lease call: %q", reply)
	if f := strings.Fields(reply); len(f) != 9 || f[6] != "6" {
		t.Errorf("reply %q; want a script reply with code 6: the token was given back", reply)
	}
	if n, err := admin.Exists(ctx, "httpretry:breaker:{api}:probe:0").Result(); err != nil || n != 0 {
		t.Fatalf("EXISTS lease = %d, %v: the late lease call took a lease nobody will use", n, err)
	}

	// The fleet probes again at once, not a cooldown later.
	next, err := b.Acquire()
	if err != nil || !next.Probe() {
		t.Fatalf("B: Acquire() = probe %v, %v; want the fleet's probe", next.Probe(), err)
	}
	next.Done(true)
	local.Done(true)
	waitState(t, b, breaker.Closed, propagationBound)
}
