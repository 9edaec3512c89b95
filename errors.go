package httpretry

import (
	"context"
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
	// StopNotResumable: a response body failed after its headers and the
	// response does not allow a resume (see BodyError).
	StopNotResumable
	// StopMaxResumes: a response body was cut more often than
	// Transport.MaxResumes allows.
	StopMaxResumes
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
	StopNotResumable:      "body cannot be resumed",
	StopMaxResumes:        "too many resumes",
}

// stopLabels are the reasons as labels for metrics and trace attributes:
// snake_case words, easier to match in queries than the prose of String.
var stopLabels = [...]string{
	StopExhausted:         "exhausted",
	StopRetryAfter:        "retry_after_too_long",
	StopDeadline:          "deadline",
	StopMaxElapsed:        "max_elapsed",
	StopCanceled:          "canceled",
	StopBudget:            "budget",
	StopBreakerOpen:       "breaker_open",
	StopBodyNotReplayable: "body_not_replayable",
	StopNotIdempotent:     "not_idempotent",
	StopNotResumable:      "not_resumable",
	StopMaxResumes:        "max_resumes",
}

// Label returns the reason as a snake_case word for a metric label or a
// trace attribute: "exhausted", "retry_after_too_long", "budget"...
func (r StopReason) Label() string {
	if int(r) < len(stopLabels) {
		return stopLabels[r]
	}
	return fmt.Sprintf("stop_reason_%d", r)
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

// TimeoutError reports one of the Transport's own timers ending an attempt:
// no response headers within Policy.AttemptTimeout, or a response body that
// made no progress for Transport.StallTimeout. It is transient: a net.Error
// whose Timeout is true, and it matches context.DeadlineExceeded, as a
// per-attempt deadline always has.
type TimeoutError struct {
	// Stall is true for a stalled body, false for headers that did not come.
	Stall bool
	// Limit is the timeout that ran out.
	Limit time.Duration
	// Err is what net/http returned once the attempt was stopped, if anything.
	Err error
}

// Error says which limit ran out.
func (e *TimeoutError) Error() string {
	if e.Stall {
		return fmt.Sprintf("httpretry: response body stalled: no data for %v (StallTimeout)", e.Limit)
	}
	return fmt.Sprintf("httpretry: no response headers within %v (AttemptTimeout)", e.Limit)
}

// Timeout reports true: it is a net.Error timeout.
func (e *TimeoutError) Timeout() bool { return true }

// Temporary reports true, for net.Error.
func (e *TimeoutError) Temporary() bool { return true }

// Is matches context.DeadlineExceeded.
func (e *TimeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// Unwrap returns what net/http returned, if anything.
func (e *TimeoutError) Unwrap() error { return e.Err }

// BodyError is the error a response body's Read returns when the body
// failed after the headers arrived (a reset, a cut, a stall) and the
// Transport could not complete it: the response does not allow a resume, or
// the resumes ran out. The bytes read before it are correct and in order;
// nothing after them was ever spliced in.
type BodyError struct {
	// Received is how many body bytes the caller had read when it failed.
	Received int64
	// Resumes is how many range requests continued the body before it.
	Resumes int
	// Reason is StopNotResumable, StopMaxResumes, or why the last resume
	// was not tried (the reasons of RetryError).
	Reason StopReason
	// Why says, for StopNotResumable, what stands in the way.
	Why string
	// Err is the failure that cut the body.
	Err error

	stop *RetryError // why the resumes stopped, when a limit stopped them
}

// Error reads "httpretry: body cut after N bytes; cannot resume: why: cause",
// or says which limit stopped the resumes.
func (e *BodyError) Error() string {
	switch {
	case e.Reason == StopNotResumable:
		return fmt.Sprintf("httpretry: body cut after %d bytes; cannot resume: %s: %s", e.Received, e.Why, redactedError(e.Err))
	case e.stop != nil:
		return fmt.Sprintf("httpretry: body cut after %d bytes (%d resume(s)): %v", e.Received, e.Resumes, e.stop)
	}
	return fmt.Sprintf("httpretry: body cut after %d bytes (%d resume(s)); gave up: %v: %s", e.Received, e.Resumes, e.Reason, redactedError(e.Err))
}

// Unwrap returns the failure and, when a limit stopped the resumes, the
// *RetryError that says which (it matches ErrBudgetExhausted, a breaker
// refusal or the context's error as a retry loop's error does).
func (e *BodyError) Unwrap() []error {
	if e.stop == nil {
		return []error{e.Err}
	}
	return []error{e.Err, e.stop}
}
