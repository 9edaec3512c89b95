// Package clock is the one time seam of httpretry: every package that waits
// or reads the time takes a Clock, so tests drive timing with a Fake instead of
// sleeping.
//
// Production code uses Real (or leaves a Clock field nil, which means Real).
// A Fake's time moves only when the test says so: Advance fires every timer
// that falls due, and BlockUntil lets a test wait, without sleeping, until the
// code under test has started a given number of timers.
package clock

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Clock tells the time and makes timers.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
}

// FuncClock is a Clock that can also call a function after a duration, as
// time.AfterFunc does. Real and Fake implement it; AfterFunc falls back to a
// goroutine for clocks that do not.
type FuncClock interface {
	Clock
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is the part of *time.Timer the library needs.
type Timer interface {
	// C returns the channel the timer's time is sent on when it fires.
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it did so.
	Stop() bool
}

// Real is the system clock.
var Real Clock = realClock{}

// Or returns c, or Real when c is nil. Config structs hold a nil Clock by
// default and call Or where they need one.
func Or(c Clock) Clock {
	if c == nil {
		return Real
	}
	return c
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

func (realClock) AfterFunc(d time.Duration, f func()) Timer { return realTimer{time.AfterFunc(d, f)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time { return r.t.C }
func (r realTimer) Stop() bool          { return r.t.Stop() }

// Sleep waits for d on c, or until ctx is done. It returns nil after a full
// wait and ctx.Err() when the context ended before or during it, even if the
// timer fired at the same moment, so a caller never starts more work on a
// context that is already done. A wait of zero or less returns at once
// without touching the clock.
func Sleep(ctx context.Context, c Clock, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := c.NewTimer(d)
	select {
	case <-t.C():
		return ctx.Err()
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	}
}

// AfterFunc calls f in its own goroutine once d has passed on c, unless the
// returned Timer is stopped first; its C channel is never sent on. It is the
// seam for timeouts and watchdogs, which bound a wait rather than make one:
// on a Fake in auto mode such a timer does not move the time by itself (a
// timeout would otherwise fire at once); it fires when the time reaches it.
func AfterFunc(c Clock, d time.Duration, f func()) Timer {
	if fc, ok := c.(FuncClock); ok {
		return fc.AfterFunc(d, f)
	}
	t := &goTimer{stop: make(chan struct{})}
	timer := c.NewTimer(d)
	go func() {
		select {
		case <-timer.C():
			if t.fired.CompareAndSwap(false, true) {
				f()
			}
		case <-t.stop:
			timer.Stop()
		}
	}()
	return t
}

// goTimer is AfterFunc's timer on a clock without AfterFunc of its own.
type goTimer struct {
	stop  chan struct{}
	fired atomic.Bool
}

func (t *goTimer) C() <-chan time.Time { return nil }

func (t *goTimer) Stop() bool {
	if !t.fired.CompareAndSwap(false, true) {
		return false
	}
	close(t.stop)
	return true
}

// Fake is a Clock for tests. Its time moves only through Advance and Set.
// The zero value is not usable; call NewFake.
type Fake struct {
	mu     sync.Mutex
	cond   *sync.Cond
	now    time.Time
	timers []*fakeTimer
	auto   bool
}

// NewFake returns a fake clock reading start.
func NewFake(start time.Time) *Fake {
	f := &Fake{now: start}
	f.cond = sync.NewCond(&f.mu)
	return f
}

// SetAuto makes every new timer advance the clock by its duration and fire at
// once. Sequential code that waits (a retry loop) then runs to the end without
// help from the test, and the clock shows how long it waited in total.
// Timers made by AfterFunc are exempt: they fire only when the time reaches
// them, moved by a NewTimer in auto mode, Advance or Set.
func (f *Fake) SetAuto(on bool) {
	f.mu.Lock()
	f.auto = on
	f.mu.Unlock()
}

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// NewTimer returns a timer that fires when the fake time reaches now+d.
func (f *Fake) NewTimer(d time.Duration) Timer {
	f.mu.Lock()
	t := &fakeTimer{f: f, when: f.now.Add(d), c: make(chan time.Time, 1)}
	var due []func()
	if f.auto && d > 0 {
		due = f.setLocked(t.when) // fires AfterFunc timers due by then too
	}
	if !t.when.After(f.now) {
		t.c <- f.now
		t.fired = true
	} else {
		f.timers = append(f.timers, t)
	}
	f.cond.Broadcast()
	f.mu.Unlock()
	run(due)
	return t
}

// AfterFunc returns a timer that calls fn in its own goroutine when the fake
// time reaches now+d. Auto mode does not advance the time for it.
func (f *Fake) AfterFunc(d time.Duration, fn func()) Timer {
	f.mu.Lock()
	t := &fakeTimer{f: f, when: f.now.Add(d), fn: fn}
	if !t.when.After(f.now) {
		t.fired = true
		f.mu.Unlock()
		go fn()
		return t
	}
	f.timers = append(f.timers, t)
	f.cond.Broadcast()
	f.mu.Unlock()
	return t
}

// Advance moves the time forward by d and fires every timer that falls due,
// in the order of their deadlines.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	due := f.setLocked(f.now.Add(d))
	f.mu.Unlock()
	run(due)
}

// Set moves the time to t (never backwards) and fires the timers due by then.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	var due []func()
	if t.After(f.now) {
		due = f.setLocked(t)
	}
	f.mu.Unlock()
	run(due)
}

// setLocked moves the time to t and fires the channel timers due by then; it
// returns the functions of the AfterFunc timers due, for the caller to start
// once it has unlocked.
func (f *Fake) setLocked(t time.Time) []func() {
	f.now = t
	sort.SliceStable(f.timers, func(i, j int) bool { return f.timers[i].when.Before(f.timers[j].when) })
	kept := f.timers[:0]
	var due []func()
	for _, tm := range f.timers {
		if tm.when.After(t) {
			kept = append(kept, tm)
			continue
		}
		tm.fired = true
		if tm.fn != nil {
			due = append(due, tm.fn)
			continue
		}
		tm.c <- tm.when
	}
	clear(f.timers[len(kept):])
	f.timers = kept
	f.cond.Broadcast()
	return due
}

func run(fns []func()) {
	for _, fn := range fns {
		go fn()
	}
}

// Pending returns the number of timers that have not fired or been stopped.
func (f *Fake) Pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

// BlockUntil waits until at least n timers are pending. It blocks on a
// condition variable, not a sleep, so a test can hand control to the code
// under test and resume exactly when that code starts waiting.
func (f *Fake) BlockUntil(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.timers) < n {
		f.cond.Wait()
	}
}

type fakeTimer struct {
	f     *Fake
	when  time.Time
	c     chan time.Time // nil for an AfterFunc timer
	fn    func()         // set for an AfterFunc timer
	fired bool
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	if t.fired {
		return false
	}
	for i, tm := range t.f.timers {
		if tm == t {
			t.f.timers = append(t.f.timers[:i], t.f.timers[i+1:]...)
			t.f.cond.Broadcast()
			return true
		}
	}
	return false
}
