package httpretry

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/hordekit/httpretry/clock"
)

func newBudget(t *testing.T, c BudgetConfig) (*Budget, *clock.Fake) {
	t.Helper()
	f := clock.NewFake(epoch)
	c.Clock = f
	b, err := NewBudget(c)
	if err != nil {
		t.Fatal(err)
	}
	return b, f
}

// retriesAllowed simulates calls per second against a dead upstream for d,
// each wanting two retries, and returns upstream requests per call.
func amplification(b *Budget, f *clock.Fake, perSecond int, d time.Duration) float64 {
	step := time.Second / time.Duration(perSecond)
	calls, requests := 0, 0
	for elapsed := time.Duration(0); elapsed < d; elapsed += step {
		b.Deposit()
		calls++
		requests++
		for range 2 {
			if b.Withdraw() {
				requests++
			}
		}
		f.Advance(step)
	}
	return float64(requests) / float64(calls)
}

func TestBudgetBoundsAmplification(t *testing.T) {
	for _, c := range []struct {
		rate int
		max  float64
	}{{500, 1.25}, {1000, 1.22}, {100, 1.32}} {
		b, f := newBudget(t, BudgetConfig{})
		// Run long enough that the initial reserve is a small share.
		if got := amplification(b, f, c.rate, 5*time.Minute); got > c.max {
			t.Errorf("%d calls/s: %.3f requests per call, want <= %v", c.rate, got, c.max)
		}
	}
}

func TestBudgetFloorKeepsALoneCallersRetries(t *testing.T) {
	b, f := newBudget(t, BudgetConfig{})
	if got := amplification(b, f, 1, 5*time.Minute); got != 3 {
		t.Fatalf("1 call/s: %.3f requests per call, want all 3", got)
	}
}

func TestBudgetForgetsOldTraffic(t *testing.T) {
	b, f := newBudget(t, BudgetConfig{NoFloor: true, Ratio: 0.5})
	for range 10 {
		b.Deposit()
	}
	for range 3 {
		if !b.Withdraw() {
			t.Fatal("withdraw refused with balance left")
		}
	}
	if got := b.Balance(); got != 2 {
		t.Fatalf("balance after 10 deposits at 50%% and 3 withdrawals = %d, want 2", got)
	}
	f.Advance(11 * time.Second)
	if got := b.Balance(); got != 0 {
		t.Fatalf("balance after the window = %d, want 0 (deposits forgotten)", got)
	}
	for range 4 {
		b.Deposit()
	}
	if got := b.Balance(); got != 2 {
		t.Fatalf("balance = %d, want 2 (old deposits and withdrawals forgotten)", got)
	}
	for range 2 {
		b.Withdraw()
	}
	if b.Withdraw() {
		t.Fatal("withdraw allowed with an empty budget")
	}
}

func TestBudgetConfigValidation(t *testing.T) {
	for _, c := range []struct {
		cfg  BudgetConfig
		want string
	}{
		{BudgetConfig{Ratio: -0.1}, "BudgetConfig.Ratio"},
		{BudgetConfig{Ratio: math.NaN()}, "BudgetConfig.Ratio"},
		{BudgetConfig{PerSecond: math.NaN()}, "BudgetConfig.PerSecond"},
		{BudgetConfig{PerSecond: math.Inf(1)}, "BudgetConfig.PerSecond"},
		{BudgetConfig{PerSecond: -1}, "BudgetConfig.PerSecond"},
		{BudgetConfig{Window: -time.Second}, "BudgetConfig.Window"},
		{BudgetConfig{Window: time.Millisecond}, "BudgetConfig.Window"},
	} {
		if _, err := NewBudget(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewBudget(%+v) = %v, want an error naming %s", c.cfg, err, c.want)
		}
	}
}
