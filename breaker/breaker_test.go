package breaker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/clock"
	"github.com/hordekit/httpretry/internal/leaktest"
)

func TestZeroConfigIsTheSeed(t *testing.T) {
	b, clk, _ := newBreaker(t, breaker.Config{})
	fail(b, 4)
	wantState(t, b, breaker.Closed)
	if got := b.ConsecutiveFailures(); got != 4 {
		t.Fatalf("ConsecutiveFailures = %d, want 4", got)
	}
	b.RecordFailure()
	wantState(t, b, breaker.Open)
	wantUntilRetry(t, b, 120*time.Second)
	clk.Advance(120 * time.Second)
	wantState(t, b, breaker.HalfOpen)
	if !b.Allow() {
		t.Fatal("no probe admitted after the cooldown")
	}
	if b.Allow() {
		t.Fatal("a second caller was admitted with HalfOpenProbes 1")
	}
}

func TestClosedStaysClosedBelowThreshold(t *testing.T) {
	b, _, _ := newBreaker(t, breaker.Config{FailureThreshold: 3})
	for range 10 {
		fail(b, 2)
		b.RecordSuccess()
	}
	wantState(t, b, breaker.Closed)
	if b.ConsecutiveFailures() != 0 || b.Degraded() {
		t.Fatalf("failures %d, degraded %v after a success", b.ConsecutiveFailures(), b.Degraded())
	}
	if d, ok := b.UntilRetry(); ok || d != 0 {
		t.Fatalf("UntilRetry closed = %v, %v; want 0, false", d, ok)
	}
}

func TestOpenRefuses(t *testing.T) {
	b, clk, _ := newBreaker(t, breaker.Config{Name: "api.example.com"})
	fail(b, 5)
	clk.Advance(26600 * time.Millisecond)
	if b.Allow() {
		t.Fatal("Allow while open = true")
	}
	p, err := b.Acquire()
	var oe *breaker.OpenError
	if !errors.As(err, &oe) || !errors.Is(err, breaker.ErrOpen) {
		t.Fatalf("Acquire while open: %v, want an *OpenError matching ErrOpen", err)
	}
	if oe.Name != "api.example.com" || oe.State != breaker.Open || oe.RetryIn != 93400*time.Millisecond {
		t.Fatalf("OpenError = %+v", *oe)
	}
	if want := `circuit breaker "api.example.com" is open; next probe in 1m33s`; err.Error() != want {
		t.Fatalf("Error() = %q, want %q", err, want)
	}
	p.Done(false) // the zero permit ignores reports
	wantUntilRetry(t, b, 93400*time.Millisecond)
	if !b.Degraded() {
		t.Fatal("Degraded while open = false")
	}
}

func TestOpenErrorMessages(t *testing.T) {
	for _, tc := range []struct {
		err  breaker.OpenError
		want string
	}{
		{breaker.OpenError{State: breaker.Open, RetryIn: 1500 * time.Millisecond}, "circuit breaker is open; next probe in 2s"},
		{breaker.OpenError{Name: "h", State: breaker.Open, RetryIn: 250400 * time.Microsecond}, `circuit breaker "h" is open; next probe in 250ms`},
		{breaker.OpenError{Name: "h", State: breaker.HalfOpen}, `circuit breaker "h" is half-open; waiting for a probe to report`},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}

func TestHalfOpenIsDerivedFromTime(t *testing.T) {
	var hooks hookLog
	b, clk, _ := newBreaker(t, breaker.Config{Name: "x", Cooldown: time.Minute, OnStateChange: hooks.record})
	fail(b, 5)
	clk.Advance(time.Minute - time.Nanosecond)
	wantState(t, b, breaker.Open)
	clk.Advance(time.Nanosecond)
	// Nobody has called Allow, yet the breaker reports half-open.
	wantState(t, b, breaker.HalfOpen)
	wantUntilRetry(t, b, 0)
	if !b.Degraded() {
		t.Fatal("Degraded half-open = false")
	}
	if got := hooks.get(); !slices.Equal(got, []string{"x:closed>open"}) {
		t.Fatalf("hooks before Allow = %v", got)
	}
	b.Allow()
	if got := hooks.get(); !slices.Equal(got, []string{"x:closed>open", "x:open>half-open"}) {
		t.Fatalf("hooks after Allow = %v", got)
	}
}

// Seed bug 1: after the cooldown the seed let every caller through.
func TestSeedBug1OnlyProbesPassAfterCooldown(t *testing.T) {
	for _, probes := range []int{1, 3} {
		t.Run(fmt.Sprint(probes), func(t *testing.T) {
			b, clk, _ := newBreaker(t, breaker.Config{HalfOpenProbes: probes})
			fail(b, 5)
			clk.Advance(2 * time.Minute)
			admitted := 0
			for range 100 {
				if b.Allow() {
					admitted++
				}
			}
			if admitted != probes {
				t.Fatalf("%d callers admitted, want %d", admitted, probes)
			}
		})
	}
}

func TestProbeSuccessCloses(t *testing.T) {
	var hooks hookLog
	b, clk, _ := newBreaker(t, breaker.Config{Name: "x", OnStateChange: hooks.record})
	fail(b, 5)
	clk.Advance(2 * time.Minute)
	if !b.Allow() {
		t.Fatal("probe refused")
	}
	b.RecordSuccess()
	wantState(t, b, breaker.Closed)
	if b.ConsecutiveFailures() != 0 {
		t.Fatalf("failures after close = %d", b.ConsecutiveFailures())
	}
	want := []string{"x:closed>open", "x:open>half-open", "x:half-open>closed"}
	if got := hooks.get(); !slices.Equal(got, want) {
		t.Fatalf("hooks = %v, want %v", got, want)
	}
}

func TestProbeFailureReopensWithNewCooldown(t *testing.T) {
	b, clk, _ := newBreaker(t, breaker.Config{Cooldown: 10 * time.Second})
	fail(b, 5)
	clk.Advance(15 * time.Second)
	if !b.Allow() {
		t.Fatal("probe refused")
	}
	clk.Advance(3 * time.Second)
	b.RecordFailure()
	wantState(t, b, breaker.Open)
	wantUntilRetry(t, b, 10*time.Second)
	if b.ConsecutiveFailures() != 6 {
		t.Fatalf("failures after a failed probe = %d, want 6", b.ConsecutiveFailures())
	}
}

// With HalfOpenProbes > 1 the breaker closes only when that many probes have
// succeeded; one failure reopens it.
func TestAllProbesMustSucceed(t *testing.T) {
	b, clk, _ := newBreaker(t, breaker.Config{HalfOpenProbes: 3})
	fail(b, 5)
	clk.Advance(2 * time.Minute)
	var ps [3]breaker.Permit
	for i := range ps {
		p, err := b.Acquire()
		if err != nil || !p.Probe() {
			t.Fatalf("probe %d: %v, probe=%v", i, err, p.Probe())
		}
		ps[i] = p
	}
	ps[0].Done(true)
	ps[1].Done(true)
	wantState(t, b, breaker.HalfOpen)
	ps[2].Done(false)
	wantState(t, b, breaker.Open)

	clk.Advance(2 * time.Minute)
	for range 3 {
		p, err := b.Acquire()
		if err != nil {
			t.Fatal(err)
		}
		wantState(t, b, breaker.HalfOpen)
		p.Done(true)
	}
	wantState(t, b, breaker.Closed)
}

// Seed bug 7: failures of calls started before the trip kept pushing the
// cooldown out.
func TestSeedBug7LateFailuresAreIgnored(t *testing.T) {
	b, clk, _ := newBreaker(t, breaker.Config{Cooldown: time.Minute})
	var late [11]breaker.Permit
	for i := range late {
		p, err := b.Acquire()
		if err != nil {
			t.Fatal(err)
		}
		late[i] = p
	}
	for i := range 5 {
		late[i].Done(false)
	}
	wantState(t, b, breaker.Open)

	clk.Advance(10 * time.Second)
	for i := 5; i < 10; i++ {
		late[i].Done(false)
	}
	wantUntilRetry(t, b, 50*time.Second)
	if b.ConsecutiveFailures() != 5 {
		t.Fatalf("failures = %d, want 5", b.ConsecutiveFailures())
	}

	// The plain API has no generation, but a failure while open is ignored.
	fail(b, 3)
	wantUntilRetry(t, b, 50*time.Second)
	if b.ConsecutiveFailures() != 5 {
		t.Fatalf("failures after plain late failures = %d, want 5", b.ConsecutiveFailures())
	}

	// Once half-open, a late plain failure with no probe out is ignored too.
	clk.Advance(50 * time.Second)
	b.RecordFailure()
	wantState(t, b, breaker.HalfOpen)
	probe, err := b.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	// A late permit's failure is not taken for the probe's.
	late[10].Done(false)
	wantState(t, b, breaker.HalfOpen)
	probe.Done(true)
	wantState(t, b, breaker.Closed)
}

func TestLateSuccessWhileOpenIsIgnored(t *testing.T) {
	b, _, _ := newBreaker(t, breaker.Config{})
	early, _ := b.Acquire()
	fail(b, 5)
	early.Done(true)
	b.RecordSuccess()
	wantState(t, b, breaker.Open)
}

// The 1000-goroutine race: everyone calls Allow the moment the cooldown ends,
// and exactly HalfOpenProbes get through.
func TestHalfOpenRace(t *testing.T) {
	for _, probes := range []int{1, 3} {
		t.Run(fmt.Sprint(probes), func(t *testing.T) {
			leaktest.Check(t)
			b, clk, _ := newBreaker(t, breaker.Config{HalfOpenProbes: probes, Cooldown: time.Second})
			fail(b, 5)
			start := make(chan struct{})
			results := make(chan bool)
			var ready sync.WaitGroup
			for range 1000 {
				ready.Add(1)
				go func() {
					ready.Done()
					<-start
					results <- b.Allow()
				}()
			}
			ready.Wait()
			clk.Advance(time.Second)
			close(start)
			admitted := 0
			for range 1000 {
				if <-results {
					admitted++
				}
			}
			if admitted != probes {
				t.Fatalf("%d of 1000 admitted, want %d", admitted, probes)
			}
		})
	}
}

func TestStalledProbeDoesNotWedge(t *testing.T) {
	b, clk, logs := newBreaker(t, breaker.Config{Name: "x", Cooldown: 30 * time.Second})
	fail(b, 5)
	clk.Advance(30 * time.Second)
	stalled, err := b.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(30*time.Second - time.Nanosecond)
	if b.Allow() {
		t.Fatal("second probe admitted while the first may still report")
	}
	clk.Advance(time.Nanosecond)
	probe, err := b.Acquire()
	if err != nil {
		t.Fatalf("no new probe a cooldown after the stalled one: %v", err)
	}
	// The stalled probe's late failure belongs to an abandoned round.
	stalled.Done(false)
	wantState(t, b, breaker.HalfOpen)
	probe.Done(true)
	wantState(t, b, breaker.Closed)
	if !slices.Contains(logs.lines(), `level=WARN msg="circuit breaker probe abandoned" breaker=x unreported=1 after=30s`) {
		t.Fatalf("no abandon warning in logs:\n%s", strings.Join(logs.lines(), "\n"))
	}
}

func TestReleaseFreesProbeSlot(t *testing.T) {
	b, clk, _ := newBreaker(t, breaker.Config{Name: "x"})
	fail(b, 5)
	clk.Advance(2 * time.Minute)
	p, err := b.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Acquire()
	var oe *breaker.OpenError
	if !errors.As(err, &oe) || oe.State != breaker.HalfOpen || oe.RetryIn != 0 {
		t.Fatalf("second Acquire: %v, want a half-open *OpenError", err)
	}
	p.Release()
	wantState(t, b, breaker.HalfOpen)
	p2, err := b.Acquire()
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	p.Done(false) // already released: ignored
	wantState(t, b, breaker.HalfOpen)
	p2.Done(true)
	wantState(t, b, breaker.Closed)
}

func TestPermitReportsOnce(t *testing.T) {
	b, clk, _ := newBreaker(t, breaker.Config{HalfOpenProbes: 2})
	p, _ := b.Acquire()
	p.Done(false)
	p.Done(false)
	p.Release()
	if b.ConsecutiveFailures() != 1 {
		t.Fatalf("failures after reporting one permit thrice = %d", b.ConsecutiveFailures())
	}

	fail(b, 4)
	clk.Advance(2 * time.Minute)
	p1, _ := b.Acquire()
	p1.Done(true)
	p1.Release() // must not free the slot p1's success holds
	if _, err := b.Acquire(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Acquire(); err == nil {
		t.Fatal("a third probe was admitted: Release after Done freed a slot")
	}
}

func TestNewPermitReportsToItsRecorder(t *testing.T) {
	var r fakeRecorder
	p := breaker.NewPermit(&r, 7, true)
	if !p.Probe() {
		t.Fatal("Probe() = false")
	}
	p.Done(false)
	p.Done(true)
	var zero breaker.Permit
	zero.Done(true)
	if want := []string{"7 true failure"}; !slices.Equal(r.calls, want) {
		t.Fatalf("calls = %v, want %v", r.calls, want)
	}
}

type fakeRecorder struct{ calls []string }

func (r *fakeRecorder) RecordPermit(gen uint64, probe bool, o breaker.Outcome) {
	r.calls = append(r.calls, fmt.Sprint(gen, probe, o))
}

func TestCooldownGrowsAndIsCapped(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  breaker.Config
		want []time.Duration
	}{
		{"default cap", breaker.Config{Cooldown: 10 * time.Second, CooldownFactor: 2},
			[]time.Duration{10, 20, 40, 80, 100, 100}},
		{"explicit cap", breaker.Config{Cooldown: 10 * time.Second, CooldownFactor: 3, MaxCooldown: 60 * time.Second},
			[]time.Duration{10, 30, 60, 60}},
		{"off", breaker.Config{Cooldown: 10 * time.Second},
			[]time.Duration{10, 10, 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, clk, _ := newBreaker(t, tc.cfg)
			fail(b, 5)
			for i, secs := range tc.want {
				wantUntilRetry(t, b, secs*time.Second)
				clk.Advance(secs * time.Second)
				if !b.Allow() {
					t.Fatalf("trip %d: probe refused", i)
				}
				b.RecordFailure()
			}
			// A close resets the growth.
			clk.Advance(time.Hour)
			b.Allow()
			b.RecordSuccess()
			wantState(t, b, breaker.Closed)
			fail(b, 5)
			wantUntilRetry(t, b, 10*time.Second)
		})
	}
}

func TestRatioTrip(t *testing.T) {
	b, _, logs := newBreaker(t, breaker.Config{
		Name: "x", FailureThreshold: 1000, FailureRatio: 0.5, MinRequests: 10,
	})
	for range 5 {
		b.RecordSuccess()
	}
	fail(b, 4)
	wantState(t, b, breaker.Closed) // 4 of 9: too few calls, and under the ratio
	b.RecordFailure()
	wantState(t, b, breaker.Open) // 5 of 10
	if want := `level=ERROR msg="circuit breaker open" breaker=x consecutive_failures=5 cooldown=2m0s`; !slices.Contains(logs.lines(), want) {
		t.Fatalf("logs = %q, want %q", logs.lines(), want)
	}
}

func TestRatioNeedsMinRequests(t *testing.T) {
	b, _, _ := newBreaker(t, breaker.Config{FailureThreshold: 1000, FailureRatio: 0.1})
	fail(b, 19)
	wantState(t, b, breaker.Closed) // 19 of 19 failed, but MinRequests is 20
	b.RecordFailure()
	wantState(t, b, breaker.Open)
}

func TestRatioWindowSlides(t *testing.T) {
	b, clk, _ := newBreaker(t, breaker.Config{
		FailureThreshold: 1000, FailureRatio: 1, MinRequests: 20, RatioWindow: 10 * time.Second,
	})
	fail(b, 10)
	clk.Advance(11 * time.Second) // those ten have left the window
	fail(b, 10)
	wantState(t, b, breaker.Closed)
	clk.Advance(5 * time.Second) // these ten are still in it
	fail(b, 9)
	wantState(t, b, breaker.Closed)
	b.RecordFailure()
	wantState(t, b, breaker.Open)

	// A close forgets the window: one failure after it does not re-trip.
	clk.Advance(2 * time.Minute)
	b.Allow()
	b.RecordSuccess()
	wantState(t, b, breaker.Closed)
	b.RecordFailure()
	wantState(t, b, breaker.Closed)
}

func TestRatioIgnoresStalePermits(t *testing.T) {
	b, _, _ := newBreaker(t, breaker.Config{FailureThreshold: 1000, FailureRatio: 0.5, MinRequests: 2})
	p, _ := b.Acquire()
	b.Reset()
	p.Done(false)
	b.RecordSuccess()
	b.RecordFailure()
	wantState(t, b, breaker.Open) // 1 of 2; the stale failure did not count
	if b.ConsecutiveFailures() != 1 {
		t.Fatalf("failures = %d, want 1", b.ConsecutiveFailures())
	}
}

func TestTripAndReset(t *testing.T) {
	var hooks hookLog
	b, clk, logs := newBreaker(t, breaker.Config{Name: "x", OnStateChange: hooks.record})
	inFlight, _ := b.Acquire()
	b.RecordFailure()
	b.Trip(clk.Now().Add(45 * time.Second))
	wantState(t, b, breaker.Open)
	wantUntilRetry(t, b, 45*time.Second)
	if b.ConsecutiveFailures() != 1 {
		t.Fatalf("Trip changed the failure count to %d", b.ConsecutiveFailures())
	}
	b.Trip(clk.Now().Add(time.Hour)) // already open: extends, no new hook
	wantUntilRetry(t, b, time.Hour)

	b.Reset()
	wantState(t, b, breaker.Closed)
	if b.ConsecutiveFailures() != 0 {
		t.Fatalf("failures after Reset = %d", b.ConsecutiveFailures())
	}
	inFlight.Done(false) // admitted before Trip: ignored
	if b.ConsecutiveFailures() != 0 {
		t.Fatal("a permit from before Trip counted after Reset")
	}
	b.Reset() // already closed: no hook

	if want := []string{"x:closed>open", "x:open>closed"}; !slices.Equal(hooks.get(), want) {
		t.Fatalf("hooks = %v, want %v", hooks.get(), want)
	}
	want := []string{
		`level=ERROR msg="circuit breaker open" breaker=x consecutive_failures=1 cooldown=45s`,
		`level=INFO msg="circuit breaker closed" breaker=x`,
	}
	if !slices.Equal(logs.lines(), want) {
		t.Fatalf("logs:\n%s\nwant:\n%s", strings.Join(logs.lines(), "\n"), strings.Join(want, "\n"))
	}
}

func TestTransitionLogs(t *testing.T) {
	b, clk, logs := newBreaker(t, breaker.Config{Name: "api", Cooldown: 30 * time.Second})
	fail(b, 5)
	clk.Advance(30 * time.Second)
	b.Allow()
	b.RecordSuccess()
	want := []string{
		`level=ERROR msg="circuit breaker open" breaker=api consecutive_failures=5 cooldown=30s`,
		`level=INFO msg="circuit breaker half-open" breaker=api consecutive_failures=5`,
		`level=INFO msg="circuit breaker closed" breaker=api`,
	}
	if got := logs.lines(); !slices.Equal(got, want) {
		t.Fatalf("logs:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestLogsGoToDefaultLogger(t *testing.T) {
	logs := newLogBuffer()
	old := slog.Default()
	slog.SetDefault(logs.logger)
	t.Cleanup(func() { slog.SetDefault(old) })
	b := breaker.MustNew(breaker.Config{Name: "d", FailureThreshold: 1})
	b.RecordFailure()
	if got := logs.lines(); len(got) != 1 || !strings.HasPrefix(got[0], `level=ERROR msg="circuit breaker open" breaker=d`) {
		t.Fatalf("default logger got %q", got)
	}
}

func TestExecute(t *testing.T) {
	b, clk, _ := newBreaker(t, breaker.Config{FailureThreshold: 2})
	boom := errors.New("boom")
	if err := b.Execute(func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := b.Execute(func() error { return boom }); err != boom {
		t.Fatalf("Execute = %v, want fn's error unchanged", err)
	}
	canceled := fmt.Errorf("get: %w", context.Canceled)
	if err := b.Execute(func() error { return canceled }); err != canceled {
		t.Fatalf("Execute = %v", err)
	}
	if b.ConsecutiveFailures() != 1 {
		t.Fatalf("failures = %d: cancellation must be neutral", b.ConsecutiveFailures())
	}
	b.Execute(func() error { return context.DeadlineExceeded })
	wantState(t, b, breaker.Open)

	ran := false
	err := b.Execute(func() error { ran = true; return nil })
	if ran || !errors.Is(err, breaker.ErrOpen) {
		t.Fatalf("Execute while open: ran=%v err=%v", ran, err)
	}

	// A panicking probe frees its slot and the panic goes on.
	clk.Advance(2 * time.Minute)
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("panic swallowed")
			}
		}()
		b.Execute(func() error { panic("bug") })
	}()
	wantState(t, b, breaker.HalfOpen)
	if err := b.Execute(func() error { return nil }); err != nil {
		t.Fatalf("probe after a panicking probe: %v", err)
	}
	wantState(t, b, breaker.Closed)
}

func TestClosedPathAllocatesNothing(t *testing.T) {
	b := breaker.MustNew(breaker.Config{})
	set, err := breaker.NewSet(breaker.SetConfig{})
	if err != nil {
		t.Fatal(err)
	}
	set.Get("h")
	for name, fn := range map[string]func(){
		"Allow+RecordSuccess": func() {
			if b.Allow() {
				b.RecordSuccess()
			}
		},
		"Acquire+Done": func() {
			p, _ := b.Acquire()
			p.Done(true)
		},
		"Acquire+defer Release+Done": func() {
			p, _ := b.Acquire()
			defer p.Release()
			p.Done(true)
		},
		"Set.Get hit": func() { set.Get("h") },
	} {
		if n := testing.AllocsPerRun(100, fn); n != 0 {
			t.Errorf("%s: %v allocs, want 0", name, n)
		}
	}
}

// countingClock counts Now calls, to show the closed path never reads it.
type countingClock struct {
	*clock.Fake
	reads int
}

func (c *countingClock) Now() time.Time {
	c.reads++
	return c.Fake.Now()
}

func TestClosedPathReadsNoClock(t *testing.T) {
	clk := &countingClock{Fake: clock.NewFake(epoch)}
	b := breaker.MustNew(breaker.Config{Clock: clk})
	before := clk.reads
	for range 10 {
		if b.Allow() {
			b.RecordSuccess()
		}
		p, _ := b.Acquire()
		p.Done(true)
		b.State()
		b.Status()
	}
	b.RecordFailure()
	b.RecordSuccess()
	if clk.reads != before {
		t.Fatalf("closed path read the clock %d times", clk.reads-before)
	}
}

func TestConcurrentUseKeepsConsistentState(t *testing.T) {
	leaktest.Check(t)
	var hooks hookLog
	b, clk, _ := newBreaker(t, breaker.Config{
		Name: "x", FailureThreshold: 3, HalfOpenProbes: 2, Cooldown: time.Second,
		FailureRatio: 0.5, OnStateChange: hooks.record,
	})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				switch (g + i) % 5 {
				case 0:
					b.RecordFailure()
				case 1:
					if b.Allow() {
						b.RecordSuccess()
					}
				case 2:
					if p, err := b.Acquire(); err == nil {
						p.Done(i%3 == 0)
					}
				case 3:
					b.Status()
				case 4:
					if g == 0 {
						clk.Advance(100 * time.Millisecond)
					}
				}
			}
		}()
	}
	wg.Wait()
	b.Reset()
	// Every transition starts where the previous one ended.
	events := hooks.get()
	prev := "closed"
	for _, ev := range events {
		from, to, _ := strings.Cut(strings.TrimPrefix(ev, "x:"), ">")
		if from != prev {
			t.Fatalf("hook %q does not follow %q in %v", ev, prev, events)
		}
		prev = to
	}
	if prev != "closed" {
		t.Fatalf("last hook ended in %s, want closed", prev)
	}
}
