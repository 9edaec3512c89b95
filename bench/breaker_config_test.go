package bench

import (
	"errors"
	"testing"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/sony/gobreaker/v2"

	"github.com/hordekit/httpretry/breaker"
)

// errBoom is the failure the breaker tests report.
var errBoom = errors.New("boom")

// errRefused stands for a refusal on the APIs that report one with a bool.
var errRefused = errors.New("refused")

// breakerAPI is one way of calling one library's breaker, as a benchmark does.
// newCall builds a breaker with the benchmarks' configuration and returns a
// function making one protected call that fails or succeeds (ran says whether
// the call was admitted and run; err is the refusal, if any), the error a
// refusal must match, and a function reporting whether the breaker is open.
type breakerAPI struct {
	name    string
	newCall func() (call func(fail bool) (ran bool, err error), refusal error, isOpen func() bool)
}

func breakerAPIs() []breakerAPI {
	return []breakerAPI{
		{"httpretry-AllowRecord", func() (func(bool) (bool, error), error, func() bool) {
			cb := httpretryBreaker()
			return func(fail bool) (bool, error) {
				if !cb.Allow() {
					return false, errRefused
				}
				if fail {
					cb.RecordFailure()
				} else {
					cb.RecordSuccess()
				}
				return true, nil
			}, errRefused, func() bool { return cb.State() == breaker.Open }
		}},
		{"httpretry-AcquireDone", func() (func(bool) (bool, error), error, func() bool) {
			cb := httpretryBreaker()
			return func(fail bool) (bool, error) {
				p, err := cb.Acquire()
				if err != nil {
					return false, err
				}
				p.Done(!fail)
				return true, nil
			}, breaker.ErrOpen, func() bool { return cb.State() == breaker.Open }
		}},
		{"httpretry-Execute", func() (func(bool) (bool, error), error, func() bool) {
			cb := httpretryBreaker()
			return func(fail bool) (bool, error) {
				ran := false
				err := cb.Execute(func() error {
					ran = true
					if fail {
						return errBoom
					}
					return nil
				})
				if ran {
					err = nil
				}
				return ran, err
			}, breaker.ErrOpen, func() bool { return cb.State() == breaker.Open }
		}},
		{"gobreaker-Execute", func() (func(bool) (bool, error), error, func() bool) {
			cb := gobreakerBreaker()
			return func(fail bool) (bool, error) {
				ran := false
				_, err := cb.Execute(func() (struct{}, error) {
					ran = true
					if fail {
						return struct{}{}, errBoom
					}
					return struct{}{}, nil
				})
				if ran {
					err = nil
				}
				return ran, err
			}, gobreaker.ErrOpenState, func() bool { return cb.State() == gobreaker.StateOpen }
		}},
		{"failsafe-go-permit", func() (func(bool) (bool, error), error, func() bool) {
			cb := failsafeBreaker()
			return func(fail bool) (bool, error) {
				if !cb.TryAcquirePermit() {
					return false, errRefused
				}
				if fail {
					cb.RecordFailure()
				} else {
					cb.RecordSuccess()
				}
				return true, nil
			}, errRefused, cb.IsOpen
		}},
		{"failsafe-go-Run", func() (func(bool) (bool, error), error, func() bool) {
			cb := failsafeBreaker()
			ex := failsafe.With(cb)
			return func(fail bool) (bool, error) {
				ran := false
				err := ex.Run(func() error {
					ran = true
					if fail {
						return errBoom
					}
					return nil
				})
				if ran {
					err = nil
				}
				return ran, err
			}, circuitbreaker.ErrOpen, cb.IsOpen
		}},
	}
}

// TestAllBreakersTrip checks that every breaker, called exactly as its
// benchmark calls it, is the seed's breaker: failures that are not
// consecutive do not open it, the 5th consecutive failure does, and the next
// call is refused without running.
func TestAllBreakersTrip(t *testing.T) {
	for _, api := range breakerAPIs() {
		t.Run(api.name, func(t *testing.T) {
			call, refusal, isOpen := api.newCall()
			// 4 failures, a success, 4 failures: never 5 in a row.
			for i, fail := range []bool{true, true, true, true, false, true, true, true, true} {
				if ran, err := call(fail); !ran || err != nil {
					t.Fatalf("call %d while closed: ran=%v err=%v, want it admitted", i+1, ran, err)
				}
			}
			if isOpen() {
				t.Fatal("open after 4 consecutive failures (with a success before them)")
			}
			// The 5th consecutive failure is admitted and opens the breaker.
			if ran, err := call(true); !ran || err != nil {
				t.Fatalf("5th consecutive failure: ran=%v err=%v, want it admitted", ran, err)
			}
			if !isOpen() {
				t.Fatal("not open after 5 consecutive failures")
			}
			// The next call is refused without running.
			ran, err := call(false)
			if ran {
				t.Fatal("the call after the trip ran")
			}
			if !errors.Is(err, refusal) {
				t.Fatalf("the call after the trip: err = %v, want one matching %v", err, refusal)
			}
			// And the breaker stays open: the cooldown (120 s) has not passed.
			if ran, _ := call(false); ran || !isOpen() {
				t.Fatal("the breaker let a second call through during its cooldown")
			}
		})
	}
}
