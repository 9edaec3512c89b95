package redisbreaker

import (
	"fmt"
	"testing"

	"github.com/hordekit/httpretry/breaker"
)

// Every cell of the package documentation's reconciliation table, as a pure
// decision: the local view (open or closed, and the time of the evidence
// behind it) against each kind of shared state, with the shared state's last
// transition older and newer than that evidence. TestReconcileTable runs the
// same cells against a real Redis.
func TestReconcileDecision(t *testing.T) {
	const now, local = 100_000, 50_000
	known := evidence{at: local, gen: 7}
	older, newer := int64(40_000), int64(60_000)
	missing := snapshot{}
	closed := func(at int64) snapshot { return snapshot{exists: true, state: breaker.Closed, gen: 9, at: at} }
	cooling := func(at int64) snapshot {
		return snapshot{exists: true, state: breaker.Open, gen: 9, at: at, until: now + 30_000}
	}
	over := func(at int64) snapshot {
		return snapshot{exists: true, state: breaker.Open, gen: 9, at: at, until: now - 1}
	}
	for _, tc := range []struct {
		open bool
		s    snapshot
		want verdict
	}{
		{false, missing, keepLocal},
		{false, closed(newer), adoptFleet},
		{false, closed(older), keepLocal},
		{false, cooling(newer), adoptFleet},
		{false, cooling(older), pushClosed},
		{false, over(newer), keepLocal},
		{false, over(older), pushClosed},
		{true, missing, pushOpen},
		{true, closed(newer), adoptFleet},
		{true, closed(older), pushOpen},
		{true, cooling(newer), adoptFleet},
		{true, cooling(older), extendOpen},
		{true, over(newer), adoptFleet},
		{true, over(older), pushOpen},
	} {
		name := fmt.Sprintf("open=%v/%s", tc.open, describe(tc.s, now, local))
		t.Run(name, func(t *testing.T) {
			if got := reconcile(tc.open, known, tc.s, now); got != tc.want {
				t.Errorf("reconcile = %v, want %v", got, tc.want)
			}
		})
	}

	// The same transition as the local view's changes nothing, whatever it
	// says; within one millisecond the generation orders transitions.
	for _, open := range []bool{false, true} {
		same := cooling(local)
		same.gen = known.gen
		if got := reconcile(open, known, same, now); got != keepLocal {
			t.Errorf("open=%v, the transition already known: %v, want keepLocal", open, got)
		}
		later := closed(local)
		later.gen = known.gen + 1
		if got := reconcile(open, known, later, now); got != adoptFleet {
			t.Errorf("open=%v, a later generation in the same millisecond: %v, want adoptFleet", open, got)
		}
	}
}

func describe(s snapshot, now, local int64) string {
	if !s.exists {
		return "missing"
	}
	age := "older"
	if s.at > local {
		age = "newer"
	}
	switch {
	case s.state == breaker.Closed:
		return "closed-" + age
	case s.until > now:
		return "open-cooling-" + age
	}
	return "open-over-" + age
}

func TestParseMessage(t *testing.T) {
	s, err := parseMessage("12 open 1700000000000 5 1699999999000")
	if err != nil || !s.exists || s.state != breaker.Open || s.gen != 12 || s.until != 1700000000000 ||
		s.failures != 5 || s.at != 1699999999000 {
		t.Errorf("transition: %+v, %v", s, err)
	}
	s, err = parseMessage("13 free")
	if err != nil || !s.free || s.gen != 13 || s.exists {
		t.Errorf("free: %+v, %v", s, err)
	}
	for _, bad := range []string{"", "12 open 1 2", "x open 1 2 3", "12 ajar 1 2 3", "12 open 1 2 3 4", "x free"} {
		if _, err := parseMessage(bad); err == nil {
			t.Errorf("parseMessage(%q) accepted a malformed message", bad)
		}
	}
}
