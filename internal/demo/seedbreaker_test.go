package demo

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/clock"
)

const (
	testThreshold = 5
	testCooldown  = 10 * time.Second
)

// newTestSeedBreaker returns a seed breaker on a fake clock that records
// its transitions as "from>to" strings.
func newTestSeedBreaker() (*seedBreaker, *clock.Fake, *[]string) {
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	var changes []string
	b := newSeedBreaker("seed", testThreshold, testCooldown, clk, func(name string, from, to breaker.State) {
		changes = append(changes, fmt.Sprintf("%s>%s", from, to))
	})
	return b, clk, &changes
}

// acquire asks for a permit and fails the test on a refusal.
func acquire(t *testing.T, b *seedBreaker) breaker.Permit {
	t.Helper()
	p, err := b.Acquire()
	if err != nil {
		t.Fatalf("Acquire refused: %v", err)
	}
	return p
}

// trip opens b with threshold failed calls.
func trip(t *testing.T, b *seedBreaker) {
	t.Helper()
	for range testThreshold {
		p := acquire(t, b)
		p.Done(false)
	}
	if _, err := b.Acquire(); !errors.Is(err, breaker.ErrOpen) {
		t.Fatalf("after %d failures Acquire = %v, want ErrOpen", testThreshold, err)
	}
}

// TestSeedBreakerAdmitsEveryoneAfterCooldown reproduces flaw 1: after the
// cooldown every caller gets through, not one probe.
func TestSeedBreakerAdmitsEveryoneAfterCooldown(t *testing.T) {
	b, clk, changes := newTestSeedBreaker()
	trip(t, b)
	_, err := b.Acquire()
	var oe *breaker.OpenError
	if !errors.As(err, &oe) || oe.State != breaker.Open || oe.RetryIn != testCooldown || oe.Name != "seed" {
		t.Fatalf("refusal = %#v, want open, next probe in %v", err, testCooldown)
	}

	clk.Advance(testCooldown)
	var permits []breaker.Permit
	for range 50 {
		p := acquire(t, b)
		if p.Probe() {
			t.Fatal("seed permits are never probes: the seed had none")
		}
		permits = append(permits, p)
	}
	if st := b.Status(); st.State != breaker.HalfOpen || !st.Degraded {
		t.Errorf("after the cooldown Status = %+v, want half-open and degraded", st)
	}
	permits[0].Done(true) // one success closes it for everyone
	if st := b.Status(); st.State != breaker.Closed || st.Degraded || st.ConsecutiveFailures != 0 {
		t.Errorf("after a success Status = %+v, want closed", st)
	}
	want := []string{"closed>open", "open>half-open", "half-open>closed"}
	if fmt.Sprint(*changes) != fmt.Sprint(want) {
		t.Errorf("transitions = %v, want %v", *changes, want)
	}
}

// TestSeedBreakerLateFailureExtendsCooldown reproduces flaw 7: a failure
// from a call admitted before the breaker opened sets last_failure_time
// and pushes the cooldown out.
func TestSeedBreakerLateFailureExtendsCooldown(t *testing.T) {
	b, clk, _ := newTestSeedBreaker()
	late := acquire(t, b) // admitted while closed, still running
	trip(t, b)

	clk.Advance(6 * time.Second)
	late.Done(false)
	if st := b.Status(); st.ConsecutiveFailures != testThreshold+1 {
		t.Errorf("late failure not counted: %d consecutive failures, want %d", st.ConsecutiveFailures, testThreshold+1)
	}
	clk.Advance(4 * time.Second) // the original cooldown is over
	_, err := b.Acquire()
	var oe *breaker.OpenError
	if !errors.As(err, &oe) || oe.RetryIn != 6*time.Second {
		t.Fatalf("at the original cooldown's end Acquire = %v, want refused for 6s more", err)
	}
	clk.Advance(6 * time.Second)
	acquire(t, b)
}

// TestSeedBreakerFailureAfterCooldownReopens checks that the herd let
// through after the cooldown reopens the breaker with its first failure,
// for a full new cooldown.
func TestSeedBreakerFailureAfterCooldownReopens(t *testing.T) {
	b, clk, changes := newTestSeedBreaker()
	trip(t, b)
	clk.Advance(testCooldown)
	p := acquire(t, b)
	p.Done(false)
	if _, err := b.Acquire(); !errors.Is(err, breaker.ErrOpen) {
		t.Errorf("after a failure in half-open Acquire = %v, want ErrOpen", err)
	}
	want := []string{"closed>open", "open>half-open", "half-open>open"}
	if fmt.Sprint(*changes) != fmt.Sprint(want) {
		t.Errorf("transitions = %v, want %v", *changes, want)
	}
}

// TestSeedBreakerNeutralIsFailure reproduces flaw 4: the seed recorded a
// failure for a 429 like for a 503. The transport reports a 429 as
// neutral; the seed breaker counts it.
func TestSeedBreakerNeutralIsFailure(t *testing.T) {
	b, _, _ := newTestSeedBreaker()
	for range testThreshold {
		p := acquire(t, b)
		p.Record(breaker.Neutral)
	}
	if _, err := b.Acquire(); !errors.Is(err, breaker.ErrOpen) {
		t.Errorf("after %d neutral outcomes Acquire = %v, want ErrOpen", testThreshold, err)
	}
}

// TestSeedBreakerHeartbeatNullAfterCooldown reproduces flaw 2: once the
// cooldown is over the heartbeat says degraded with seconds_until_retry
// null, which reads like a healthy breaker.
func TestSeedBreakerHeartbeatNullAfterCooldown(t *testing.T) {
	b, clk, _ := newTestSeedBreaker()
	trip(t, b)
	clk.Advance(2500 * time.Millisecond)
	st := b.Status()
	if st.SecondsUntilRetry == nil || *st.SecondsUntilRetry != 7.5 {
		t.Errorf("open: seconds_until_retry = %v, want 7.5", st.SecondsUntilRetry)
	}
	clk.Advance(testCooldown)
	got, err := json.Marshal(b.Status())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"state":"half-open","degraded":true,"consecutive_failures":5,"seconds_until_retry":null}`
	if string(got) != want {
		t.Errorf("after the cooldown status = %s, want %s", got, want)
	}
	if b.Name() != "seed" {
		t.Errorf("Name() = %q", b.Name())
	}
}

// TestSeedBreakerSuccessResetsCount checks record_success: a success while
// closed clears the consecutive failures.
func TestSeedBreakerSuccessResetsCount(t *testing.T) {
	b, _, changes := newTestSeedBreaker()
	for range testThreshold - 1 {
		p := acquire(t, b)
		p.Done(false)
	}
	p := acquire(t, b)
	p.Done(true)
	for range testThreshold - 1 {
		p := acquire(t, b)
		p.Done(false)
	}
	if st := b.Status(); st.State != breaker.Closed || st.ConsecutiveFailures != testThreshold-1 {
		t.Errorf("Status = %+v, want closed with %d failures", st, testThreshold-1)
	}
	if len(*changes) != 0 {
		t.Errorf("transitions = %v, want none", *changes)
	}
}
