package httpretry

import (
	"container/heap"
	"math"
	"math/rand/v2"
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

// regime decides whether an attempt arriving at the upstream at now
// succeeds.
type regime func(now time.Time) bool

// budgetRun is what a simulated load did through a budget.
type budgetRun struct {
	calls, successes, requests, refused, failedRetries int
}

func (r budgetRun) perCall() float64 { return float64(r.requests) / float64(r.calls) }
func (r budgetRun) success() float64 { return float64(r.successes) / float64(r.calls) }

// attemptEvent is an attempt due at a time, in a simulated load.
type attemptEvent struct {
	at      time.Time
	attempt int
}

type attemptQueue []attemptEvent

func (q attemptQueue) Len() int           { return len(q) }
func (q attemptQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q attemptQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *attemptQueue) Push(x any)        { *q = append(*q, x.(attemptEvent)) }
func (q *attemptQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

// simulate drives b as a Transport does: calls arrive perSecond times a
// second for d, each making up to 3 attempts with the default waits
// (seeded), asking the budget before each retry and telling it every
// outcome. The fake clock moves from event to event.
func simulate(b *Budget, f *clock.Fake, perSecond int, d time.Duration, ok regime) budgetRun {
	rng := rand.New(rand.NewPCG(3, 4))
	p := Policy{}
	var q attemptQueue
	start := f.Now()
	step := time.Second / time.Duration(perSecond)
	for t := time.Duration(0); t < d; t += step {
		heap.Push(&q, attemptEvent{at: start.Add(t), attempt: 1})
	}
	var run budgetRun
	for q.Len() > 0 {
		e := heap.Pop(&q).(attemptEvent)
		f.Set(e.at)
		retry := e.attempt > 1
		if !retry {
			run.calls++
			b.Deposit()
		}
		run.requests++
		if ok(e.at) {
			run.successes++
			b.Succeeded(retry)
			continue
		}
		b.Failed(retry, false)
		if retry {
			run.failedRetries++
		}
		if e.attempt == 3 {
			continue
		}
		if !b.Withdraw() {
			run.refused++
			continue
		}
		wait := p.Wait(e.attempt, 0, rng.Float64())
		heap.Push(&q, attemptEvent{at: e.at.Add(wait), attempt: e.attempt + 1})
	}
	return run
}

func dead(time.Time) bool { return false }

// flaky fails a share of attempts at random, whatever the load.
func flaky(share float64) regime {
	rng := rand.New(rand.NewPCG(5, 6))
	return func(time.Time) bool { return rng.Float64() >= share }
}

// atCapacity serves at most perSecond attempts in each tenth of a second's
// share, and fails the rest: an upstream answering 503 above its capacity.
func atCapacity(perSecond int) regime {
	var slot int64 = -1
	used := 0
	return func(now time.Time) bool {
		if s := now.UnixNano() / int64(100*time.Millisecond); s != slot {
			slot, used = s, 0
		}
		used++
		return used <= perSecond/10
	}
}

// TestBudgetRegimes drives the default budget through the three regimes it
// must tell apart, on a fake clock, and checks the rules' promises.
func TestBudgetRegimes(t *testing.T) {
	const rate = 100
	d := 2 * time.Minute

	t.Run("flaky", func(t *testing.T) {
		// 30% of attempts fail at random: a call needs 0.39 retries on
		// average, and 70% of them work. Rule 3 refunds those, so the
		// budget refuses none and the calls succeed 1-0.3^3 = 97.3%.
		b, f := newBudget(t, BudgetConfig{})
		run := simulate(b, f, rate, d, flaky(0.3))
		if run.refused > run.calls/1000 {
			t.Errorf("%d of %d calls had a retry refused, want none (a flaky upstream keeps its retries)", run.refused, run.calls)
		}
		if s := run.success(); s < 0.965 {
			t.Errorf("success %.3f, want about 0.973", s)
		}
		if pc := run.perCall(); pc < 1.35 || pc > 1.43 {
			t.Errorf("%.3f requests per call, want about 1.39", pc)
		}
	})

	t.Run("overloaded", func(t *testing.T) {
		// Calls offer 1.5x what the upstream serves. Naive retries would
		// send about 3.1 times its capacity; here the retries that fail
		// may only use what calls earn plus the floor, and retries that
		// work are free: the failed ones stay within 20% of the calls plus
		// 10 a second.
		b, f := newBudget(t, BudgetConfig{})
		run := simulate(b, f, rate, d, atCapacity(rate*2/3))
		bound := DefaultBudgetRatio*float64(run.calls) + DefaultBudgetPerSecond*d.Seconds() + DefaultBudgetRatio*rate*DefaultBudgetWindow.Seconds()
		if float64(run.failedRetries) > bound {
			t.Errorf("%d failed retries, want at most %.0f (20%% of %d calls + the floor)", run.failedRetries, bound, run.calls)
		}
		if pc := run.perCall(); pc > 1.7 {
			t.Errorf("%.3f requests per call at capacity, want at most 1.7 (naive: about 2.1)", pc)
		}
		if run.refused == 0 {
			t.Error("no retry refused at capacity: the budget did not clamp")
		}
	})

	t.Run("dead", func(t *testing.T) {
		// Every attempt fails: after FailingStreak failures only the floor
		// pays, 10 retries a second whatever the call rate.
		for _, perSecond := range []int{100, 500} {
			b, f := newBudget(t, BudgetConfig{})
			run := simulate(b, f, perSecond, d, dead)
			want := 1 + DefaultBudgetPerSecond/float64(perSecond)
			if pc := run.perCall(); pc > want+0.005 {
				t.Errorf("%d calls/s: %.4f requests per call, want at most %.3f (the floor alone)", perSecond, pc, want)
			}
			if !b.Failing() {
				t.Errorf("%d calls/s: not failing after %d failed attempts", perSecond, run.requests)
			}
		}
		// A lone caller keeps every retry: the floor covers it.
		b, f := newBudget(t, BudgetConfig{})
		if run := simulate(b, f, 1, d, dead); run.perCall() != 3 {
			t.Errorf("1 call/s: %.3f requests per call, want all 3", run.perCall())
		}
	})
}

// amplification is the old regime-blind measure: calls that each want two
// retries and never report an outcome, so rule 5 never applies.
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

// TestBudgetBoundsAmplification checks rules 1 and 2 alone: earned retries
// plus the floor.
func TestBudgetBoundsAmplification(t *testing.T) {
	for _, c := range []struct {
		rate int
		max  float64
	}{{500, 1.221}, {1000, 1.211}, {100, 1.301}} {
		b, f := newBudget(t, BudgetConfig{})
		if got := amplification(b, f, c.rate, 5*time.Minute); got > c.max {
			t.Errorf("%d calls/s: %.3f requests per call, want <= %v", c.rate, got, c.max)
		}
	}
}

func TestBudgetRefundsSuccessfulRetries(t *testing.T) {
	b, _ := newBudget(t, BudgetConfig{NoFloor: true, Ratio: 0.5})
	for range 4 {
		b.Deposit()
	}
	if !b.Withdraw() || !b.Withdraw() {
		t.Fatal("withdraw refused with 2 earned")
	}
	if b.Withdraw() {
		t.Fatal("third withdraw allowed with none left")
	}
	b.Succeeded(true)
	if got := b.Balance(); got != 1 {
		t.Fatalf("balance after a successful retry = %d, want 1 (its retry given back)", got)
	}
	b.Succeeded(false)
	if got := b.Balance(); got != 1 {
		t.Fatalf("balance after a successful first attempt = %d, want still 1", got)
	}
}

func TestBudgetCharges429ToFirstAttempts(t *testing.T) {
	b, _ := newBudget(t, BudgetConfig{NoFloor: true, Ratio: 1})
	for range 3 {
		b.Deposit()
	}
	b.Failed(false, true) // a 429 to a first attempt: costs one
	b.Failed(false, false)
	b.Failed(true, true) // a 429 to a retry: already paid for
	if got := b.Balance(); got != 2 {
		t.Fatalf("balance = %d, want 2 (3 earned, one 429 to a first attempt)", got)
	}
}

func TestBudgetFailingStreak(t *testing.T) {
	b, f := newBudget(t, BudgetConfig{PerSecond: 2})
	for range 100 {
		b.Deposit()
	}
	for range FailingStreak - 1 {
		b.Failed(false, false)
	}
	if b.Failing() {
		t.Fatalf("failing after %d failures, want %d", FailingStreak-1, FailingStreak)
	}
	b.Failed(true, false)
	if !b.Failing() {
		t.Fatalf("not failing after %d failures in a row", FailingStreak)
	}
	// Earned retries (20) are frozen; the floor (2 a second) still pays.
	if got := b.Balance(); got != 2 {
		t.Fatalf("balance while failing = %d, want 2 (the floor alone)", got)
	}
	for i := range 3 {
		if got := b.Withdraw(); got != (i < 2) {
			t.Fatalf("withdraw %d while failing = %v", i, got)
		}
	}
	f.Advance(time.Second) // the next tenth of the window: the floor again
	if !b.Withdraw() {
		t.Fatal("floor refused in a new second")
	}
	b.Succeeded(false)
	if b.Failing() {
		t.Fatal("still failing after a success")
	}
	if got := b.Balance(); got < 20 {
		t.Fatalf("balance after a success = %d, want the earned 20 back", got)
	}
}

// TestBudgetFloorIsNotSavedUp: an idle budget does not bank its floor, so
// a burst after a quiet spell gets one tenth of a window's floor at once.
func TestBudgetFloorIsNotSavedUp(t *testing.T) {
	b, f := newBudget(t, BudgetConfig{})
	f.Advance(time.Minute)
	got := 0
	for b.Withdraw() {
		got++
	}
	if got != DefaultBudgetPerSecond {
		t.Fatalf("burst after a quiet minute got %d retries, want %d (one second of floor)", got, DefaultBudgetPerSecond)
	}
	// A short Window rounds the floor up to one retry per tenth.
	b, _ = newBudget(t, BudgetConfig{Window: 100 * time.Millisecond, PerSecond: 1})
	if !b.Withdraw() || b.Withdraw() {
		t.Fatal("a floor of 1/s over a 100ms window: want exactly one retry per 10ms")
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
