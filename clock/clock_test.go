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
