package redisbreaker

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/clock"
	"github.com/hordekit/httpretry/internal/leaktest"
	"github.com/hordekit/httpretry/internal/redistest"
)

// go-redis retries a command whose reply was lost, so a script may run twice.
// A probe's success must count once: with HalfOpenProbes 2, one probe
// reported twice must not close the fleet. A lease call retried after its
// token was given back takes nothing.
func TestScriptsTolerateRetries(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: s.Addr, ContextTimeoutEnabled: true})
	defer client.Close()
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	b, err := New(client, Config{
		Config:          breaker.Config{Name: "api", Clock: clk, Cooldown: time.Minute, HalfOpenProbes: 2},
		RefreshInterval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	st, err := b.run(ctx, tripScript, b.nowMs()+60_000, 5, b.nowMs())
	if err != nil || st.state != breaker.Open {
		t.Fatalf("trip: %+v, %v", st, err)
	}
	clk.Advance(time.Minute)

	acquire := func(token string) snapshot {
		t.Helper()
		s, err := b.runKeys(ctx, acquireScript, b.leaseKeys(token), token, 60_000, 0, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	first := acquire("r:1")
	if first.code != codeGranted {
		t.Fatalf("first acquire: code %d, want granted", first.code)
	}
	for range 2 { // the same success, run twice
		s, err := b.run(ctx, probeScript, first.gen, "r:1", first.a, "success", 2)
		if err != nil {
			t.Fatal(err)
		}
		if s.state != breaker.Open {
			t.Fatalf("one probe's success, reported twice, closed the fleet that needs 2: %+v", s)
		}
	}
	second := acquire("r:2")
	if second.code != codeGranted || second.a == first.a {
		t.Fatalf("second acquire: %+v; want the other slot", second)
	}
	if s, _ := b.run(ctx, probeScript, second.gen, "r:2", second.a, "success", 2); s.state != breaker.Closed {
		t.Fatalf("two probes succeeded and the fleet is %v, want closed", s.state)
	}

	// A token given back before its lease call ran: the call takes nothing.
	if _, err := b.run(ctx, tripScript, b.nowMs(), 5, b.nowMs()+1); err != nil { // reopen: half-open at once
		t.Fatal(err)
	}
	b.releaseToken("r:3")
	if s := acquire("r:3"); s.code != codeReleased {
		t.Fatalf("acquire after release: code %d, want %d (released)", s.code, codeReleased)
	}
	if n, _ := client.Exists(ctx, b.keys[1], b.keys[2]).Result(); n != 0 {
		t.Fatalf("%d leases taken by a call whose token was given back", n)
	}
	if s := acquire("r:4"); s.code != codeGranted {
		t.Fatalf("another call's acquire: code %d, want granted", s.code)
	}
}

// Pushing an open state whose cooldown is over onto a fleet whose cooldown is
// over too changes nothing: a new generation would void the lease of the
// probe in flight and let a second probe into the same half-open window. A
// push whose cooldown is still running reopens the fleet (fresh failures).
func TestTripScriptKeepsHalfOpenRound(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: s.Addr, ContextTimeoutEnabled: true})
	defer client.Close()
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	b, err := New(client, Config{
		Config:          breaker.Config{Name: "api", Clock: clk, Cooldown: time.Minute},
		RefreshInterval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	t0 := b.nowMs()
	if _, err := b.run(ctx, tripScript, t0+60_000, 5, t0); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute) // the fleet is half-open
	lease, err := b.runKeys(ctx, acquireScript, b.leaseKeys("r:1"), "r:1", 60_000, 0, 0, 0)
	if err != nil || lease.code != codeGranted {
		t.Fatalf("acquire: %+v, %v", lease, err)
	}

	// Newer evidence, but an open-until already past: nothing changes.
	now := b.nowMs()
	st, err := b.run(ctx, tripScript, now-1, 5, t0+1)
	if err != nil {
		t.Fatal(err)
	}
	if st.gen != lease.gen {
		t.Fatalf("generation %d -> %d: the push voided the probe's lease", lease.gen, st.gen)
	}
	// Newer evidence with a cooldown running: the fleet reopens.
	st, err = b.run(ctx, tripScript, now+60_000, 5, now)
	if err != nil {
		t.Fatal(err)
	}
	if st.gen == lease.gen || st.until != now+60_000 || st.at != now {
		t.Fatalf("after a push of fresh failures: %+v; want reopened until %d", st, now+60_000)
	}
}
