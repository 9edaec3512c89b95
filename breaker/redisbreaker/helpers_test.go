package redisbreaker_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/breaker/redisbreaker"
	"github.com/hordekit/httpretry/clock"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// propagationBound is the product's promise: a trip anywhere is seen
// everywhere within a second.
const propagationBound = time.Second

// newClient returns a client for addr, closed when the test ends. Tests use
// ContextTimeoutEnabled, as the package documentation recommends, except
// where they show that the bound holds without it.
func newClient(t testing.TB, addr string, hooks ...redis.Hook) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	for _, h := range hooks {
		c.AddHook(h)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// replica is one fleet member: its breaker and the transitions it saw.
type replica struct {
	*redisbreaker.Breaker
	id     string
	events chan transition
	logs   *logBuffer
}

// transition is what the hook saw, and when.
type transition struct {
	to breaker.State
	at time.Time
}

// newReplica makes a breaker on its own client, closed when the test ends.
func newReplica(t testing.TB, addr string, cfg redisbreaker.Config, hooks ...redis.Hook) *replica {
	t.Helper()
	r := &replica{events: make(chan transition, 1024), logs: newLogBuffer()}
	if cfg.Logger == nil {
		cfg.Logger = r.logs.logger
	}
	user := cfg.OnStateChange
	cfg.OnStateChange = func(name string, from, to breaker.State) {
		select {
		case r.events <- transition{to, time.Now()}:
		default:
		}
		if user != nil {
			user(name, from, to)
		}
	}
	b, err := redisbreaker.New(newClient(t, addr, hooks...), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	r.Breaker, r.id = b, cfg.ReplicaID
	return r
}

// fleet makes n replicas of one breaker and waits until each is subscribed,
// so that none can miss the first transition.
func fleet(t testing.TB, addr string, n int, cfg redisbreaker.Config) []*replica {
	t.Helper()
	rs := make([]*replica, n)
	for i := range rs {
		c := cfg
		c.ReplicaID = "r" + string(rune('0'+i))
		rs[i] = newReplica(t, addr, c)
	}
	for _, r := range rs {
		waitConnected(t, r)
	}
	return rs
}

func waitConnected(t testing.TB, r *replica) {
	t.Helper()
	eventually(t, 5*time.Second, "replica connected", r.Connected)
}

// waitState waits for r's hook to report a transition to want and returns
// when the hook ran. The timeout is the bound being asserted (or a generous
// ceiling where none is).
func waitState(t testing.TB, r *replica, want breaker.State, timeout time.Duration) time.Time {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case tr := <-r.events:
			if tr.to == want {
				return tr.at
			}
		case <-timer.C:
			t.Fatalf("%s: no transition to %v within %v (state %v)", r.id, want, timeout, r.State())
		}
	}
}

// drain forgets the transitions seen so far, before a phase that waits for
// new ones.
func (r *replica) drain() {
	for {
		select {
		case <-r.events:
		default:
			return
		}
	}
}

// eventually polls cond until it holds or timeout passes. It is for
// conditions no hook announces (a connection coming back); the timeout is a
// bound, not a sleep.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		<-tick.C
	}
}

// fail records n failures through the seed's API.
func fail(b interface{ RecordFailure() }, n int) {
	for range n {
		b.RecordFailure()
	}
}

// fakeConfig is a breaker on a shared fake clock, so its cooldown and leases
// move only when the test advances the clock. The cooldown is long so that
// Redis's own (real-time) expiry of the lease never fires during a test.
func fakeConfig(name string, clk *clock.Fake) redisbreaker.Config {
	return redisbreaker.Config{
		Config:          breaker.Config{Name: name, Clock: clk, Cooldown: time.Minute},
		RefreshInterval: time.Hour, // pub/sub only, unless a test advances the clock
	}
}

// commandCounter is a go-redis hook that counts the commands a client sends,
// to prove the healthy path sends none.
type commandCounter struct{ n atomic.Int64 }

func (c *commandCounter) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return next(ctx, network, addr)
	}
}

func (c *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}

func (c *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// logBuffer collects slog records as text lines.
type logBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	logger *slog.Logger
}

func newLogBuffer() *logBuffer {
	l := &logBuffer{}
	l.logger = slog.New(slog.NewTextHandler(lockedWriter{l}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return l
}

type lockedWriter struct{ l *logBuffer }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	return w.l.buf.Write(p)
}

// count returns how many records contain s.
func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// stateKey is the documented layout, for tests that look inside Redis.
func stateKey(name string) string { return redisbreaker.DefaultPrefix + "{" + name + "}:state" }
