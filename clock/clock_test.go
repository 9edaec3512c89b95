package clock

import (
	"context"
	"errors"
	"testing"
	"time"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestFakeAdvanceFiresDueTimersInOrder(t *testing.T) {
	f := NewFake(epoch)
	late := f.NewTimer(2 * time.Second)
	early := f.NewTimer(time.Second)
	if f.Pending() != 2 {
		t.Fatalf("Pending = %d, want 2", f.Pending())
	}
	f.Advance(time.Second)
	select {
	case at := <-early.C():
		if !at.Equal(epoch.Add(time.Second)) {
			t.Fatalf("early fired at %v", at)
		}
	default:
		t.Fatal("early timer did not fire")
	}
	select {
	case <-late.C():
		t.Fatal("late timer fired early")
	default:
	}
	if !late.Stop() {
		t.Fatal("Stop on a pending timer = false")
	}
	if late.Stop() {
		t.Fatal("second Stop = true")
	}
	if f.Pending() != 0 {
		t.Fatalf("Pending after stop = %d", f.Pending())
	}
}

func TestFakeAutoAdvances(t *testing.T) {
	f := NewFake(epoch)
	f.SetAuto(true)
	if err := Sleep(context.Background(), f, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := f.Now().Sub(epoch); got != 3*time.Second {
		t.Fatalf("clock moved %v, want 3s", got)
	}
}

func TestSleepReturnsOnCancel(t *testing.T) {
	f := NewFake(epoch)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- Sleep(ctx, f, time.Hour) }()
	f.BlockUntil(1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep = %v, want context.Canceled", err)
	}
	if f.Pending() != 0 {
		t.Fatal("cancelled sleep left its timer pending")
	}
}

func TestRealSleep(t *testing.T) {
	if err := Sleep(context.Background(), Or(nil), time.Millisecond); err != nil {
		t.Fatal(err)
	}
}

func TestSleepReportsACancelThatRacesTheTimer(t *testing.T) {
	f := NewFake(epoch)
	f.SetAuto(true) // the timer fires at once, as the context is already done
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 100 {
		if err := Sleep(ctx, f, time.Second); !errors.Is(err, context.Canceled) {
			t.Fatalf("Sleep = %v, want context.Canceled", err)
		}
	}
}

func TestFakeAfterFuncFiresWhenTheTimeComes(t *testing.T) {
	f := NewFake(epoch)
	fired := make(chan time.Time, 1)
	AfterFunc(f, time.Second, func() { fired <- f.Now() })
	stopped := AfterFunc(f, time.Second, func() { t.Error("a stopped AfterFunc ran") })
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop on a pending AfterFunc timer must report true once")
	}
	f.Advance(999 * time.Millisecond)
	select {
	case <-fired:
		t.Fatal("AfterFunc ran before its time")
	default:
	}
	f.Advance(time.Millisecond)
	if at := <-fired; !at.Equal(epoch.Add(time.Second)) {
		t.Fatalf("AfterFunc ran at %v", at)
	}
}

// Auto mode makes waits instant; a timeout made with AfterFunc must not
// fire because of it, only when a wait moves the time past it.
func TestFakeAutoDoesNotFireTimeouts(t *testing.T) {
	f := NewFake(epoch)
	f.SetAuto(true)
	fired := make(chan struct{})
	timeout := AfterFunc(f, 5*time.Second, func() { close(fired) })
	if got := f.Now(); !got.Equal(epoch) {
		t.Fatalf("AfterFunc moved the time to %v", got)
	}
	if err := Sleep(context.Background(), f, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-fired:
		t.Fatal("the timeout fired after 2s of 5s")
	default:
	}
	if err := Sleep(context.Background(), f, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	<-fired // the second wait reached it
	if timeout.Stop() {
		t.Fatal("Stop after firing = true")
	}
}

// A clock without AfterFunc of its own still gets one, through a goroutine.
func TestAfterFuncOnAPlainClock(t *testing.T) {
	f := NewFake(epoch)
	plain := struct{ Clock }{f}
	fired := make(chan struct{})
	AfterFunc(plain, time.Second, func() { close(fired) })
	f.BlockUntil(1)
	f.Advance(time.Second)
	<-fired
	stopped := AfterFunc(plain, time.Second, func() { t.Error("a stopped AfterFunc ran") })
	f.BlockUntil(1)
	if !stopped.Stop() {
		t.Fatal("Stop = false on a pending timer")
	}
	f.Advance(time.Hour)
}
