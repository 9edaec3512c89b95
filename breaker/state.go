package breaker

import (
	"fmt"
	"math"
	"time"
)

// State is where a breaker is in its cycle.
type State uint8

const (
	// Closed lets every call through and counts failures.
	Closed State = iota
	// Open refuses every call until its cooldown ends.
	Open
	// HalfOpen admits a few probe calls whose outcome decides between
	// Closed and Open.
	HalfOpen
)

// String returns "closed", "open" or "half-open".
func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half-open"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// MarshalText gives the String form, so a State reads as "open" in JSON and
// in slog attributes rather than as a number.
func (s State) MarshalText() ([]byte, error) {
	if s > HalfOpen {
		return nil, fmt.Errorf("breaker: invalid State %d", uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText parses the String form, so a breaker state shared through an
// external store (a fleet breaker's Redis record) can be read back.
func (s *State) UnmarshalText(text []byte) error {
	for _, c := range []State{Closed, Open, HalfOpen} {
		if string(text) == c.String() {
			*s = c
			return nil
		}
	}
	return fmt.Errorf("breaker: unknown state %q", text)
}

// Outcome is what a call admitted by a Permit tells the breaker.
type Outcome uint8

const (
	// Neutral says nothing about the upstream's health (the caller gave up,
	// the request was never sent). It is the zero Outcome so that a forgotten
	// value frees a probe slot rather than deciding the breaker's fate.
	Neutral Outcome = iota
	// Success counts toward closing the breaker.
	Success
	// Failure counts toward opening the breaker.
	Failure
)

// String returns "neutral", "success" or "failure".
func (o Outcome) String() string {
	switch o {
	case Neutral:
		return "neutral"
	case Success:
		return "success"
	case Failure:
		return "failure"
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// Status is a snapshot of a breaker for a health endpoint. It marshals to the
// seed's /heartbeat shape plus the state:
//
//	{"state":"open","degraded":true,"consecutive_failures":5,"seconds_until_retry":93.4}
type Status struct {
	// Name is the breaker's name; the heartbeat uses it as the JSON key, so
	// it is left out of the object itself.
	Name string `json:"-"`
	// State is derived from the clock: HalfOpen once the cooldown is over.
	State State `json:"state"`
	// Degraded is true while the breaker is open or half-open.
	Degraded bool `json:"degraded"`
	// ConsecutiveFailures is Breaker.ConsecutiveFailures.
	ConsecutiveFailures int `json:"consecutive_failures"`
	// SecondsUntilRetry is nil when closed, the remaining cooldown rounded to
	// 0.1 s when open, and 0 when half-open. The seed reported null once the
	// cooldown ended, which reads like a healthy breaker; 0 says "probing now".
	SecondsUntilRetry *float64 `json:"seconds_until_retry"`
}

// newStatus builds a Status from a derived state and remaining cooldown.
func newStatus(name string, s State, failures int, remaining time.Duration) Status {
	st := Status{Name: name, State: s, Degraded: s != Closed, ConsecutiveFailures: failures}
	if s != Closed {
		secs := math.Round(remaining.Seconds()*10) / 10
		st.SecondsUntilRetry = &secs
	}
	return st
}
