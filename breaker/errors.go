package breaker

import (
	"errors"
	"strconv"
	"time"
)

// ErrOpen is what every refusal matches with errors.Is, whatever breaker
// refused and for how long.
var ErrOpen = errors.New("circuit breaker is open")

// OpenError is the error returned when a breaker refuses a call. It matches
// ErrOpen with errors.Is; errors.As gives the details.
type OpenError struct {
	// Name is the refusing breaker's name (for a Set, the upstream's key).
	Name string
	// State is Open, or HalfOpen when every probe slot is taken.
	State State
	// RetryIn is how long until the breaker admits a probe; 0 when half-open,
	// since a probe's outcome may close it at any moment.
	RetryIn time.Duration
}

// Error reads like `circuit breaker "api.example.com" is open; next probe in 1m33s`.
func (e *OpenError) Error() string {
	s := "circuit breaker"
	if e.Name != "" {
		s += " " + strconv.Quote(e.Name)
	}
	if e.State == HalfOpen {
		return s + " is half-open; waiting for a probe to report"
	}
	return s + " is open; next probe in " + roundRetry(e.RetryIn).String()
}

// Unwrap returns ErrOpen so that errors.Is(err, ErrOpen) holds.
func (e *OpenError) Unwrap() error { return ErrOpen }

// roundRetry drops the precision a reader does not need: "1m33s" rather than
// "1m33.412345678s".
func roundRetry(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(time.Second)
	}
	return d.Round(time.Millisecond)
}
