package redisbreaker_test

import (
	"sync"
	"testing"
	"time"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/clock"
	"github.com/hordekit/httpretry/internal/leaktest"
	"github.com/hordekit/httpretry/internal/redistest"
)

// Close returns within OpTimeout (plus a little) whatever Redis is doing,
// with writes and a probe lease call in flight, and leaves no goroutine
// behind (leaktest). With Redis hung since before New, Close used to wait
// about 4.7 s: the subscriber held go-redis's PubSub lock while it waited,
// with no deadline, for the handshake of a connection Redis would never
// answer, and PubSub.Close needs that lock.
func TestClosePromptInEveryRedisState(t *testing.T) {
	stop := func(s *redistest.Server) { s.Stop() }
	pause := func(s *redistest.Server) { s.Pause() }
	for _, tc := range []struct {
		name          string
		before, after func(*redistest.Server)
		// wait is how long to let the breaker run before Close: a hung
		// Redis keeps the subscriber in a connection attempt for OpTimeout
		// at a time, and Close may come at any point of one.
		wait time.Duration
	}{
		{"up", nil, nil, 0},
		{"down since before New", stop, nil, 0},
		{"killed after New", nil, stop, 0},
		{"hung since before New", pause, nil, 0},
		{"hung since before New, Close mid-connect", pause, nil, opTimeout / 2},
		{"hung since before New, Close a while later", pause, nil, 3 * opTimeout / 2},
		{"hung after New", nil, pause, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaktest.Check(t)
			s := redistest.Start(t)
			clk := clock.NewFake(epoch)
			cfg := fakeConfig("api", clk)
			cfg.OpTimeout = opTimeout
			if tc.before != nil {
				tc.before(s)
			}
			start := time.Now()
			r := newReplica(t, s.Addr, cfg)
			if d := time.Since(start); d > latencyBound {
				t.Errorf("New took %v, want <= %v", d, latencyBound)
			}
			if tc.before == nil {
				waitConnected(t, r)
			}
			if tc.after != nil {
				tc.after(s)
			}

			// Work in flight: the failures and the trip being written, the
			// refresher's read, a half-open caller waiting for its lease.
			fail(r, 5)
			clk.Advance(cfg.Cooldown)
			var wg sync.WaitGroup
			wg.Go(func() {
				p, err := r.Acquire()
				if err != nil || !p.Probe() {
					t.Errorf("Acquire() in half-open = probe %v, %v; want a probe, from the fleet or local", p.Probe(), err)
				}
				p.Done(true)
			})
			if tc.wait > 0 {
				<-time.After(tc.wait) // letting it run, not measuring
			}

			start = time.Now()
			r.Close()
			d := time.Since(start)
			wg.Wait()
			t.Logf("Redis %s: Close took %v", tc.name, d)
			if d > latencyBound {
				t.Errorf("Close took %v, want <= OpTimeout + 50 ms = %v", d, latencyBound)
			}
			if st := r.State(); st != breaker.Closed {
				t.Errorf("State() = %v after the probe succeeded, want closed", st)
			}
		})
	}
}
