package httpretry

import (
	"errors"
	"fmt"
	"time"
)

// StopReason says why a retry loop gave up.
type StopReason uint8

// The reasons a loop stops while the last attempt still failed.
const (
	// StopExhausted: every attempt the policy allows was made.
	StopExhausted StopReason = iota
	// StopRetryAfter: the server asked for a longer wait than MaxRetryAfter.
	StopRetryAfter
	// StopDeadline: the next wait would end past the context's deadline.
	StopDeadline
	// StopMaxElapsed: the next wait would end past Policy.MaxElapsed.
	StopMaxElapsed
	// StopCanceled: the caller's context ended.
	StopCanceled
	// StopBudget: the retry budget refused the retry.
	StopBudget
	// StopBreakerOpen: the circuit breaker refused the retry.
	StopBreakerOpen
	// StopBodyNotReplayable: the request body could not be sent again.
	StopBodyNotReplayable
	// StopNotIdempotent: the request is not idempotent and may have reached
	// the server, so sending it again could repeat its effect.
	StopNotIdempotent
)

var stopText = [...]string{
	StopExhausted:         "attempts exhausted",
	StopRetryAfter:        "Retry-After too long",
	StopDeadline:          "context deadline too close",
	StopMaxElapsed:        "MaxElapsed reached",
	StopCanceled:          "context ended",
	StopBudget:            "retry budget exhausted",
	StopBreakerOpen:       "circuit breaker open",
	StopBodyNotReplayable: "request body cannot be replayed",
	StopNotIdempotent:     "request is not idempotent",
}

func (r StopReason) String() string {
	if int(r) < len(stopText) {
		return stopText[r]
	}
	return fmt.Sprintf("StopReason(%d)", r)
}

// RetryError is returned when a retry loop gives up while the last attempt
// failed. It wraps that attempt's own error: errors.As(err, &statusErr)
// finds a *StatusError with its response still readable, and errors.Is
// matches the context's error when the caller cancelled during a wait.
type RetryError struct {
	// Err is the last attempt's own error.
	Err error
	// Attempts is how many attempts were made.
	Attempts int
	// Reason is why the loop stopped.
	Reason StopReason
	// RetryAfter is the server's wait hint when Reason is StopRetryAfter.
	RetryAfter time.Duration

	cause error         // a second error to match: the context's, a refusal
	limit time.Duration // the limit that was hit, for the message
}

// Error reads like the last attempt's error, followed by why the loop gave
// up. URLs in it are redacted.
func (e *RetryError) Error() string {
	msg := redactedError(e.Err)
	switch e.Reason {
	case StopRetryAfter:
		return fmt.Sprintf("%s (gave up after %d attempt(s): server asked to retry in %v, more than the %v allowed)",
			msg, e.Attempts, e.RetryAfter, e.limit)
	case StopDeadline:
		return fmt.Sprintf("%s (gave up after %d attempt(s): the next wait of %v would pass the context deadline)",
			msg, e.Attempts, e.limit)
	case StopMaxElapsed:
		return fmt.Sprintf("%s (gave up after %d attempt(s): MaxElapsed %v reached)", msg, e.Attempts, e.limit)
	case StopCanceled, StopBudget, StopBreakerOpen:
		// The cause says it best: "context canceled", the budget's or the
		// breaker's own message.
		return fmt.Sprintf("%s (gave up after %d attempt(s): %v)", msg, e.Attempts, e.cause)
	case StopBodyNotReplayable:
		if e.cause != nil {
			return fmt.Sprintf("%s (gave up after %d attempt(s): %v: %v)", msg, e.Attempts, e.Reason, e.cause)
		}
	}
	return fmt.Sprintf("%s (gave up after %d attempt(s): %v)", msg, e.Attempts, e.Reason)
}

// Unwrap returns the last attempt's error and, where there is one, the
// reason's own error (the context's, or a refusal such as ErrBudgetExhausted).
func (e *RetryError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.Err}
	}
	return []error{e.Err, e.cause}
}

// Attempts returns how many attempts a retry loop made before returning err,
// or 0 when err does not carry the count (nil, or an error Do returned as it
// was after a single attempt).
func Attempts(err error) int {
	if re, ok := errors.AsType[*RetryError](err); ok {
		return re.Attempts
	}
	return 0
}
