package breaker_test

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/hordekit/httpretry/breaker"
)

func TestConfigErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		cfg  breaker.Config
		want string
	}{
		{breaker.Config{FailureThreshold: -1}, "breaker: Config.FailureThreshold must not be negative (got -1)"},
		{breaker.Config{FailureThreshold: 1 << 24}, "breaker: Config.FailureThreshold must be at most 16777215 (got 16777216)"},
		{breaker.Config{Cooldown: -time.Second}, "breaker: Config.Cooldown must not be negative (got -1s)"},
		{breaker.Config{HalfOpenProbes: -2}, "breaker: Config.HalfOpenProbes must not be negative (got -2)"},
		{breaker.Config{FailureRatio: 1.5}, "breaker: Config.FailureRatio must be in (0, 1], or 0 to turn it off (got 1.5)"},
		{breaker.Config{FailureRatio: -0.1}, "breaker: Config.FailureRatio must be in (0, 1], or 0 to turn it off (got -0.1)"},
		{breaker.Config{FailureRatio: math.NaN()}, "breaker: Config.FailureRatio must be in (0, 1], or 0 to turn it off (got NaN)"},
		{breaker.Config{RatioWindow: -time.Millisecond}, "breaker: Config.RatioWindow must not be negative (got -1ms)"},
		{breaker.Config{MinRequests: -5}, "breaker: Config.MinRequests must not be negative (got -5)"},
		{breaker.Config{CooldownFactor: 0.5}, "breaker: Config.CooldownFactor must be 0 or 1 (constant), or above 1 (got 0.5)"},
		{breaker.Config{CooldownFactor: math.Inf(1)}, "breaker: Config.CooldownFactor must be 0 or 1 (constant), or above 1 (got +Inf)"},
		{breaker.Config{MaxCooldown: -time.Minute}, "breaker: Config.MaxCooldown must not be negative (got -1m0s)"},
		{breaker.Config{CooldownFactor: 2, MaxCooldown: time.Minute}, "breaker: Config.MaxCooldown must not be less than Cooldown 2m0s (got 1m0s)"},
	} {
		b, err := breaker.New(tc.cfg)
		if b != nil || err == nil || err.Error() != tc.want {
			t.Errorf("New(%+v) = %v, %v; want error %q", tc.cfg, b, err, tc.want)
		}
	}
}

func TestMustNewPanicsOnBadConfig(t *testing.T) {
	defer func() {
		if r := recover(); r == nil {
			t.Fatal("MustNew did not panic")
		}
	}()
	breaker.MustNew(breaker.Config{Cooldown: -1})
}

func TestFactorOneIsConstantCooldown(t *testing.T) {
	b, clk, _ := newBreaker(t, breaker.Config{Cooldown: time.Second, CooldownFactor: 1, MaxCooldown: time.Millisecond})
	for range 3 {
		fail(b, 5)
		wantUntilRetry(t, b, time.Second)
		clk.Advance(time.Second)
		b.Allow()
	}
}

func TestHugeCooldownDoesNotWrap(t *testing.T) {
	b, clk, _ := newBreaker(t, breaker.Config{Cooldown: math.MaxInt64})
	clk.Advance(time.Hour)
	fail(b, 5)
	wantState(t, b, breaker.Open)
	clk.Advance(1000 * time.Hour)
	wantState(t, b, breaker.Open)
}

func TestStateText(t *testing.T) {
	for _, s := range []breaker.State{breaker.Closed, breaker.Open, breaker.HalfOpen} {
		text, err := s.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back breaker.State
		if err := back.UnmarshalText(text); err != nil || back != s {
			t.Fatalf("round trip of %v: %v, %v", s, back, err)
		}
	}
	if got, _ := json.Marshal(map[string]breaker.State{"s": breaker.HalfOpen}); string(got) != `{"s":"half-open"}` {
		t.Fatalf("JSON = %s", got)
	}
	if breaker.State(7).String() != "State(7)" {
		t.Fatalf("String of an invalid state = %q", breaker.State(7).String())
	}
	if _, err := breaker.State(7).MarshalText(); err == nil {
		t.Fatal("MarshalText of an invalid state succeeded")
	}
	var s breaker.State
	if err := s.UnmarshalText([]byte("ajar")); err == nil {
		t.Fatal("UnmarshalText accepted an unknown state")
	}
}

func TestOutcomeString(t *testing.T) {
	for o, want := range map[breaker.Outcome]string{
		breaker.Neutral: "neutral", breaker.Success: "success", breaker.Failure: "failure", 9: "Outcome(9)",
	} {
		if o.String() != want {
			t.Errorf("%d.String() = %q, want %q", o, o.String(), want)
		}
	}
}
