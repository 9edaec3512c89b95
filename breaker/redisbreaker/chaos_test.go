package redisbreaker_test

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hordekit/httpretry/internal/faultserver"
	"github.com/hordekit/httpretry/internal/leaktest"
	"github.com/hordekit/httpretry/internal/redistest"
)

var chaosSeed = flag.Uint64("chaos.seed", 12, "seed of TestChaos's schedule of upstream flips and Redis faults")

// The chaos test's setting.
const (
	chaosReplicas  = 5
	chaosRate      = 50 // calls per second, per replica
	chaosRun       = 30 * time.Second
	chaosCalm      = 3 * time.Second // at the end: upstream healthy, Redis up
	chaosCooldown  = 300 * time.Millisecond
	chaosRefresh   = 150 * time.Millisecond
	chaosOpTimeout = 100 * time.Millisecond

	// chaosLatencyBound is the most the breaker may hold a call.
	chaosLatencyBound = chaosOpTimeout + 50*time.Millisecond
	// chaosHealthyBound is how long after the upstream recovers a refusal is
	// still allowed: the cooldown of a trip just before, and a refresh.
	chaosHealthyBound = chaosCooldown + chaosRefresh
	// chaosSettle is how long after a Redis fault the replicas may still
	// act alone: they notice Redis is back at their next refresh, which may
	// wait on a call timing out.
	chaosSettle = chaosRefresh + chaosOpTimeout + 50*time.Millisecond
)

// span is a fault or an upstream phase, in Unix nanoseconds.
type span struct {
	kind     string
	from, to int64
}

// chaosCall is one call a replica made.
type chaosCall struct {
	replica             int
	start, end, breaker int64
	outcome             string
	probe               bool
}

// chaosTransition is one transition a replica saw.
type chaosTransition struct {
	replica int
	from    string
	to      string
	at      int64
}

// chaosReplica collects one replica process's output.
type chaosReplica struct {
	*proc
	id  int
	ctl chan string // lines other than calls and transitions

	mu    sync.Mutex
	calls []chaosCall
	trans []chaosTransition
}

func (r *chaosReplica) collect(t *testing.T) {
	for line := range r.lines {
		f := strings.Fields(line)
		switch {
		case len(f) == 6 && f[0] == "call":
			c := chaosCall{replica: r.id, outcome: f[4], probe: f[5] == "1"}
			c.start, _ = strconv.ParseInt(f[1], 10, 64)
			c.end, _ = strconv.ParseInt(f[2], 10, 64)
			c.breaker, _ = strconv.ParseInt(f[3], 10, 64)
			r.mu.Lock()
			r.calls = append(r.calls, c)
			r.mu.Unlock()
		case len(f) == 4 && f[0] == "state":
			at, _ := strconv.ParseInt(f[3], 10, 64)
			r.mu.Lock()
			r.trans = append(r.trans, chaosTransition{replica: r.id, from: f[1], to: f[2], at: at})
			r.mu.Unlock()
		default:
			select {
			case r.ctl <- line:
			default:
				t.Errorf("replica %d: control line dropped: %q", r.id, line)
			}
		}
	}
	close(r.ctl)
}

// await waits for a control line starting with prefix.
func (r *chaosReplica) await(t *testing.T, prefix string, timeout time.Duration) string {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case line, ok := <-r.ctl:
			if !ok {
				t.Fatalf("replica %d exited while waiting for %q", r.id, prefix)
			}
			if strings.HasPrefix(line, prefix) {
				return line
			}
		case <-timer.C:
			t.Fatalf("replica %d did not print %q within %v", r.id, prefix, timeout)
		}
	}
}

// TestChaos runs 5 replica processes at 50 calls a second each for 30 s
// against an upstream that flips between healthy and failing, while Redis
// is killed (and restarted after a while), stopped (SIGSTOP), slowed (DEBUG
// SLEEP) and restarted empty at seeded random moments (-chaos.seed). At the
// end it checks that no call waited in the breaker longer than OpTimeout +
// 50 ms, that no call was refused once the upstream had been healthy for
// longer than cooldown + refresh interval, that while Redis was reachable
// the fleet sent at most one probe per half-open window, that the fleet
// converged (all closed, Redis closed) once things calmed down, and that
// every replica's Close was prompt and left no goroutine; and it prints the
// figures.
func TestChaos(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	var healthy atomic.Bool
	healthy.Store(true)
	var failingReqs atomic.Int64
	upstream := faultserver.Start(t, faultserver.Config{Behavior: func(_ int, _ *http.Request) faultserver.Fault {
		if healthy.Load() {
			return faultserver.OK()
		}
		failingReqs.Add(1)
		return faultserver.Status(http.StatusServiceUnavailable)
	}})
	bin := buildReplica(t)

	rs := make([]*chaosReplica, chaosReplicas)
	for i := range rs {
		p := startProc(t, bin, "-addr", s.Addr, "-name", "chaos", "-cooldown", chaosCooldown.String(),
			"-refresh", chaosRefresh.String(), "-optimeout", chaosOpTimeout.String())
		rs[i] = &chaosReplica{proc: p, id: i, ctl: make(chan string, 64)}
		go rs[i].collect(t)
	}
	for _, r := range rs {
		r.await(t, "ready", 10*time.Second)
	}

	// The schedule, from the seed.
	rnd := rand.New(rand.NewPCG(*chaosSeed, 0))
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rnd.Int64N(int64(hi-lo))) }
	type flip struct {
		at      time.Duration
		healthy bool
	}
	var flips []flip
	for at, h := between(time.Second, 3*time.Second), false; at < chaosRun-chaosCalm; h = !h {
		flips = append(flips, flip{at, h})
		if h {
			at += between(1500*time.Millisecond, 4*time.Second)
		} else {
			at += between(time.Second, 3*time.Second)
		}
	}
	flips = append(flips, flip{chaosRun - chaosCalm, true})
	type fault struct {
		at   time.Duration
		kind string
		d    time.Duration
	}
	var faults []fault
	kinds := []string{"kill", "stop", "sleep", "restart-empty"}
	for at := between(500*time.Millisecond, 2*time.Second); ; {
		f := fault{at: at, kind: kinds[rnd.IntN(len(kinds))], d: between(200*time.Millisecond, 1500*time.Millisecond)}
		if f.kind == "restart-empty" {
			f.d = 0
		}
		if f.at+f.d >= chaosRun-chaosCalm {
			break
		}
		faults = append(faults, f)
		at += f.d + between(500*time.Millisecond, 2500*time.Millisecond)
	}
	t.Logf("seed %d: %d upstream flips, %d Redis faults", *chaosSeed, len(flips), len(faults))

	// Run it.
	for _, r := range rs {
		r.send("load %s %d", upstream.URL, chaosRate)
	}
	t0 := time.Now()
	at := func(d time.Duration) { <-time.After(time.Until(t0.Add(d))) } // schedules the chaos; measures nothing
	var phases []span
	phasesDone := make(chan struct{})
	go func() {
		defer close(phasesDone)
		cur := span{kind: "healthy", from: t0.UnixNano()}
		for _, f := range flips {
			at(f.at)
			healthy.Store(f.healthy)
			now := time.Now().UnixNano()
			cur.to = now
			phases = append(phases, cur)
			cur = span{kind: map[bool]string{true: "healthy", false: "failing"}[f.healthy], from: now}
		}
		at(chaosRun)
		cur.to = time.Now().UnixNano()
		phases = append(phases, cur)
	}()
	var spans []span
	for _, f := range faults {
		at(f.at)
		sp := span{kind: f.kind, from: time.Now().UnixNano()}
		switch f.kind {
		case "kill":
			s.Stop()
			at(f.at + f.d)
			s.Restart()
		case "stop":
			s.Pause()
			at(f.at + f.d)
			s.Resume()
		case "sleep":
			if err := <-s.Sleep(f.d); err != nil {
				t.Fatalf("DEBUG SLEEP: %v", err)
			}
		case "restart-empty":
			s.Restart()
		}
		sp.to = time.Now().UnixNano()
		spans = append(spans, sp)
	}
	<-phasesDone
	for _, r := range rs {
		r.send("stop")
	}
	for _, r := range rs {
		r.await(t, "stopped", 10*time.Second)
	}

	// Calm: the fleet converges, closed, with Redis.
	admin := redis.NewClient(&redis.Options{Addr: s.Addr, ContextTimeoutEnabled: true})
	defer admin.Close()
	eventually(t, 5*time.Second, "the fleet converged after the chaos", func() bool {
		for _, r := range rs {
			r.send("status")
			if line := r.await(t, "status", 5*time.Second); line != "status closed true" {
				return false
			}
		}
		st, err := admin.HGet(context.Background(), stateKey("chaos"), "state").Result()
		return err == redis.Nil || err == nil && st == "closed"
	})
	for _, r := range rs {
		r.send("quit")
	}
	var closeTimes []time.Duration
	for _, r := range rs {
		f := strings.Fields(r.await(t, "closed", 10*time.Second))
		d, _ := strconv.ParseInt(f[1], 10, 64)
		left, _ := strconv.Atoi(f[2])
		closeTimes = append(closeTimes, time.Duration(d))
		if left != 0 {
			t.Errorf("replica %d: %d goroutines left after Close", r.id, left)
		}
		if time.Duration(d) > chaosLatencyBound {
			t.Errorf("replica %d: Close took %v, want <= %v", r.id, time.Duration(d), chaosLatencyBound)
		}
	}
	for _, r := range rs {
		for range r.ctl { // until the process has exited
		}
	}

	var calls []chaosCall
	var trans []chaosTransition
	for _, r := range rs {
		calls = append(calls, r.calls...)
		trans = append(trans, r.trans...)
	}
	checkChaos(t, chaosRunLog{calls: calls, trans: trans, faults: spans, phases: phases,
		failingReqs: failingReqs.Load(), closeTimes: closeTimes})
}

// chaosRunLog is everything a chaos run recorded.
type chaosRunLog struct {
	calls       []chaosCall
	trans       []chaosTransition
	faults      []span
	phases      []span
	failingReqs int64
	closeTimes  []time.Duration
}

// faultAt is the fault going on at t, counting the OpTimeout after it ends
// (a call may still be waiting on the fault then), or "none".
func (l chaosRunLog) faultAt(t int64) string {
	for _, f := range l.faults {
		if f.from <= t && t <= f.to+int64(chaosOpTimeout) {
			return f.kind
		}
	}
	return "none"
}

// reachable reports that Redis was up and answering through [from, to].
func (l chaosRunLog) reachable(from, to int64) bool {
	for _, f := range l.faults {
		if f.from <= to && from <= f.to {
			return false
		}
	}
	return true
}

// healthyFor is how long the upstream had been healthy at t, or -1.
func (l chaosRunLog) healthyFor(t int64) time.Duration {
	for _, p := range l.phases {
		if p.from <= t && t < p.to {
			if p.kind != "healthy" {
				return -1
			}
			return time.Duration(t - p.from)
		}
	}
	return -1
}

func checkChaos(t *testing.T, l chaosRunLog) {
	ms := func(ns int64) string { return time.Duration(ns).Round(10 * time.Microsecond).String() }
	var faultTotal time.Duration
	for _, f := range l.faults {
		faultTotal += time.Duration(f.to - f.from)
	}
	var failing time.Duration
	for _, p := range l.phases {
		if p.kind == "failing" {
			failing += time.Duration(p.to - p.from)
		}
	}

	// Calls, and the breaker's latency per fault kind.
	outcomes := map[string]int{}
	type worst struct {
		n   int
		max int64
	}
	byKind := map[string]*worst{}
	for _, c := range l.calls {
		outcomes[c.outcome]++
		k := l.faultAt(c.start)
		if byKind[k] == nil {
			byKind[k] = &worst{}
		}
		byKind[k].n++
		byKind[k].max = max(byKind[k].max, c.breaker)
		if time.Duration(c.breaker) > chaosLatencyBound {
			t.Errorf("replica %d: a call started at +%v (fault: %s) spent %v in the breaker, want <= %v",
				c.replica, time.Duration(c.start-l.phases[0].from), k, time.Duration(c.breaker), chaosLatencyBound)
		}
	}
	if len(l.calls) == 0 {
		t.Fatal("no calls: the chaos test did not run")
	}
	t.Logf("figure: %d calls (%d ok, %d failed, %d refused) by %d replicas; upstream failing %v of %v; Redis faulty %v in %d faults",
		len(l.calls), outcomes["ok"], outcomes["fail"], outcomes["refused"], chaosReplicas,
		failing.Round(time.Millisecond), chaosRun, faultTotal.Round(time.Millisecond), len(l.faults))
	t.Logf("figure: upstream load while failing: %.1f requests/s (of %d calls/s offered)",
		float64(l.failingReqs)/failing.Seconds(), chaosReplicas*chaosRate)
	for _, k := range []string{"none", "kill", "stop", "sleep", "restart-empty"} {
		if w := byKind[k]; w != nil {
			t.Logf("figure: worst time in the breaker, Redis fault %-13s %9s over %5d calls (bound %v)", k+":", ms(w.max), w.n, chaosLatencyBound)
		}
	}

	// Refusals once the upstream had recovered.
	var refusedHealthy int
	var longest time.Duration
	for _, c := range l.calls {
		if c.outcome != "refused" {
			continue
		}
		h := l.healthyFor(c.start)
		if h < 0 {
			continue
		}
		refusedHealthy++
		longest = max(longest, h)
		if h > chaosHealthyBound {
			t.Errorf("replica %d: a call at +%v refused with the upstream healthy for %v (fault: %s), want none after %v",
				c.replica, time.Duration(c.start-l.phases[0].from), h, l.faultAt(c.start), chaosHealthyBound)
		}
	}
	t.Logf("figure: refusals with the upstream healthy: %d, the latest %v into a healthy phase (bound %v)",
		refusedHealthy, longest.Round(time.Millisecond), chaosHealthyBound)

	// Probes per half-open window, while Redis was reachable. Probes of one
	// window come within a lease round trip of each other; probes of
	// successive windows are at least a cooldown apart (a failed probe
	// reopens for a cooldown, a successful one closes, and an abandoned
	// lease expires after a cooldown).
	var probes []chaosCall
	var allProbes int
	for _, c := range l.calls {
		if !c.probe {
			continue
		}
		allProbes++
		if l.reachable(c.start-int64(chaosSettle), c.end) {
			probes = append(probes, c)
		}
	}
	slices.SortFunc(probes, func(a, b chaosCall) int { return int(a.start - b.start) })
	windows, most := 0, 0
	for i := 0; i < len(probes); {
		j := i + 1
		for j < len(probes) && time.Duration(probes[j].start-probes[j-1].start) < chaosCooldown-50*time.Millisecond {
			j++
		}
		windows++
		most = max(most, j-i)
		if j-i > 1 {
			var who []string
			for _, p := range probes[i:j] {
				who = append(who, fmt.Sprintf("replica %d at +%v", p.replica, time.Duration(p.start-l.phases[0].from)))
			}
			t.Errorf("%d probes in one half-open window with Redis reachable: %s", j-i, strings.Join(who, ", "))
		}
		i = j
	}
	t.Logf("figure: probes: %d in all; %d with Redis reachable, in %d half-open windows, at most %d per window (bound 1)",
		allProbes, len(probes), windows, most)

	// Trip propagation: a trip seen by all five replicas, Redis reachable.
	var opens []chaosTransition
	for _, tr := range l.trans {
		if tr.from == "closed" && tr.to == "open" {
			opens = append(opens, tr)
		}
	}
	slices.SortFunc(opens, func(a, b chaosTransition) int { return int(a.at - b.at) })
	var spreads []time.Duration
	for i := 0; i < len(opens); {
		j := i + 1
		for j < len(opens) && opens[j].at-opens[i].at < int64(200*time.Millisecond) {
			j++
		}
		seen := map[int]bool{}
		for _, tr := range opens[i:j] {
			seen[tr.replica] = true
		}
		if len(seen) == chaosReplicas && l.reachable(opens[i].at-int64(chaosSettle), opens[j-1].at) {
			spreads = append(spreads, time.Duration(opens[j-1].at-opens[i].at))
		}
		i = j
	}
	if len(spreads) > 0 {
		slices.Sort(spreads)
		t.Logf("figure: trip seen by all %d processes: %d trips with Redis reachable, median %v, max %v after the first",
			chaosReplicas, len(spreads), spreads[len(spreads)/2].Round(10*time.Microsecond),
			spreads[len(spreads)-1].Round(10*time.Microsecond))
	} else {
		t.Logf("figure: no trip seen by all %d processes with Redis reachable", chaosReplicas)
	}

	slices.Sort(l.closeTimes)
	t.Logf("figure: Close took %v to %v", l.closeTimes[0].Round(10*time.Microsecond),
		l.closeTimes[len(l.closeTimes)-1].Round(10*time.Microsecond))
}
