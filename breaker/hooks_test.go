package breaker_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/internal/leaktest"
)

// A hook that calls back into the breaker, and even causes transitions from
// inside, neither deadlocks nor reorders: its transitions are delivered after
// it returns, in order.
func TestHookMayCallTheBreaker(t *testing.T) {
	var (
		b        *breaker.Breaker
		got      []string
		observed []breaker.State
	)
	hook := func(name string, from, to breaker.State) {
		got = append(got, from.String()+">"+to.String())
		observed = append(observed, b.State())
		switch {
		case from == breaker.Closed && to == breaker.Open:
			if b.Allow() {
				t.Error("Allow inside the open hook = true")
			}
			b.Status()
		case to == breaker.HalfOpen:
			b.RecordFailure() // the probe fails: reopen, from inside the hook
			observed = append(observed, b.State())
		case from == breaker.HalfOpen && to == breaker.Open:
			b.Reset()
		}
	}
	b, clk, _ := newBreaker(t, breaker.Config{FailureThreshold: 1, Cooldown: time.Second, OnStateChange: hook})
	b.RecordFailure()
	clk.Advance(time.Second)
	if !b.Allow() {
		t.Fatal("probe refused")
	}
	want := []string{"closed>open", "open>half-open", "half-open>open", "open>closed"}
	if !slices.Equal(got, want) {
		t.Fatalf("hooks = %v, want %v", got, want)
	}
	// Each hook sees the state at the time it runs, not at the time of its
	// event: the half-open hook's own RecordFailure reopened the breaker.
	wantObserved := []breaker.State{breaker.Open, breaker.HalfOpen, breaker.Open, breaker.Open, breaker.Closed}
	if !slices.Equal(observed, wantObserved) {
		t.Fatalf("states seen by hooks = %v, want %v", observed, wantObserved)
	}
	wantState(t, b, breaker.Closed)
}

// Hooks run with no lock held: a hook blocked on another goroutine that uses
// the breaker does not stop that goroutine.
func TestHookRunsOutsideTheLock(t *testing.T) {
	leaktest.Check(t)
	var b *breaker.Breaker
	hook := func(_ string, _, to breaker.State) {
		if to != breaker.Open {
			return
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			b.RecordSuccess()
			b.Trip(time.Time{})
			b.Allow()
		}()
		<-done
	}
	b, _, _ = newBreaker(t, breaker.Config{FailureThreshold: 1, OnStateChange: hook})
	b.RecordFailure()
	wantState(t, b, breaker.HalfOpen) // Trip to the past: cooldown already over
}

// While one goroutine delivers, others' events queue behind it rather than
// running concurrently or out of order.
func TestHooksAreSerialised(t *testing.T) {
	leaktest.Check(t)
	var (
		mu      sync.Mutex
		running int
		events  hookLog
	)
	hook := func(name string, from, to breaker.State) {
		mu.Lock()
		running++
		if running > 1 {
			t.Error("two hooks ran at once")
		}
		mu.Unlock()
		events.record(name, from, to)
		mu.Lock()
		running--
		mu.Unlock()
	}
	b, clk, _ := newBreaker(t, breaker.Config{Name: "x", OnStateChange: hook})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 500 {
				if i%2 == 0 {
					b.Trip(clk.Now().Add(time.Minute))
				} else {
					b.Reset()
				}
			}
		}()
	}
	wg.Wait()
	b.Reset()
	got := events.get()
	for i, ev := range got {
		want := "x:closed>open"
		if i%2 == 1 {
			want = "x:open>closed"
		}
		if ev != want {
			t.Fatalf("event %d = %q, want %q (events must alternate)", i, ev, want)
		}
	}
	if len(got)%2 != 0 {
		t.Fatalf("%d events: the last must be a close", len(got))
	}
}

func TestPanickingHookDoesNotStopDelivery(t *testing.T) {
	var hooks hookLog
	calls := 0
	hook := func(name string, from, to breaker.State) {
		calls++
		if calls == 1 {
			panic("hook bug")
		}
		hooks.record(name, from, to)
	}
	b, _, _ := newBreaker(t, breaker.Config{Name: "x", FailureThreshold: 1, OnStateChange: hook})
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the hook's panic was swallowed")
			}
		}()
		b.RecordFailure()
	}()
	b.Reset()
	if want := []string{"x:open>closed"}; !slices.Equal(hooks.get(), want) {
		t.Fatalf("hooks after a panic = %v, want %v", hooks.get(), want)
	}
}
