package httpretry

import (
	"net/http"
	"time"

	"github.com/hordekit/httpretry/breaker"
)

// EventKind says what an Event reports.
type EventKind uint8

const (
	// EventAttempt: an attempt ended, with a response or an error.
	EventAttempt EventKind = iota
	// EventRetry: another attempt follows after Wait.
	EventRetry
	// EventGiveUp: a retryable failure was not retried; Reason says why.
	EventGiveUp
	// EventRefused: the breaker refused the call before any attempt.
	EventRefused
	// EventBodyFailed: the body of a response already returned failed while
	// being read (Err: a reset, a cut, a stall; Offset: the bytes read). A
	// resume (EventRetry with Resume set) or a give-up follows.
	EventBodyFailed
	// EventHedge: a hedge was sent, Wait after the attempt it backs up,
	// whose headers had not come.
	EventHedge
	// EventHedgeWon: a hedge's response won its round.
	EventHedgeWon
)

var eventNames = [...]string{"attempt", "retry", "give_up", "refused", "body_failed", "hedge", "hedge_won"}

func (k EventKind) String() string {
	if int(k) < len(eventNames) {
		return eventNames[k]
	}
	return "unknown"
}

// Event is what a Transport tells its Observer. Fields that do not apply to
// the Kind are zero.
type Event struct {
	Kind EventKind
	// Request is the caller's request, to read and never to modify; its
	// Context carries the caller's span, its URL the whole address.
	Request    *http.Request
	Method     string
	Host       string
	Attempt    int             // from 1
	StatusCode int             // 0 when the attempt ended in an error
	Err        error           // the attempt's error, or the refusal
	Outcome    breaker.Outcome // EventAttempt: what the attempt told the breaker
	Wait       time.Duration   // EventRetry
	Reason     StopReason      // EventGiveUp, EventRefused
	// Resume marks events about a response body after its headers: the
	// failure (EventBodyFailed), the wait before a range request that
	// continues it (EventRetry), that request (EventAttempt), or giving up
	// on the body (EventGiveUp).
	Resume bool
	// Offset is how many body bytes the caller had read, for Resume events.
	Offset int64
	// Hedge marks an attempt that was a hedge, and the hedge events.
	Hedge bool
}

// observe tells the Observer of e, with the call's request, method and host.
func (c *call) observe(e Event) {
	if c.t.Observer != nil {
		e.Request, e.Method, e.Host = c.req, c.req.Method, c.host
		c.t.Observer(e)
	}
}

// Tracer follows the attempts of a Transport's calls, for tracing: one span
// per attempt, a child of the caller's. The Transport calls StartAttempt
// just before it sends each attempt, resumes included, and the function it
// returns exactly once, when the attempt is over: when the decision to retry
// is made, or, for the attempt whose response the caller gets, when its body
// ends (EOF, Close, or a failure no resume mended). Both run on the
// goroutine of the request or of the body's reader, and must be fast.
type Tracer interface {
	// StartAttempt returns the request to send: req itself, or a copy with
	// a new context (the attempt's span) or headers (trace propagation).
	// It must not modify req, which may be the caller's own request.
	StartAttempt(req *http.Request, a AttemptInfo) (*http.Request, func(AttemptResult))
}

// AttemptInfo describes an attempt about to be sent.
type AttemptInfo struct {
	// Attempt counts the call's attempts, this one included, from 1.
	Attempt int
	// Resume is set for a range request continuing a body cut after its
	// headers; Offset is then how many bytes the caller had read.
	Resume bool
	Offset int64
	// Hedge is set for a hedge: an attempt sent while an earlier one of the
	// same round is still waiting for its headers.
	Hedge bool
}

// AttemptResult is how an attempt ended.
type AttemptResult struct {
	StatusCode int             // 0 when no response came
	Err        error           // the attempt's error, or the body's
	Outcome    breaker.Outcome // what it told the breaker
}

// startAttempt lets the Tracer start the attempt's trace.
func (c *call) startAttempt(r *http.Request, a AttemptInfo) *http.Request {
	if c.t.Tracer == nil {
		return r
	}
	r, c.trace = c.t.Tracer.StartAttempt(r, a)
	return r
}

// endTrace ends the current attempt's trace, once.
func (c *call) endTrace(status int, err error, o breaker.Outcome) {
	if c.trace != nil {
		end := c.trace
		c.trace = nil
		end(AttemptResult{StatusCode: status, Err: err, Outcome: o})
	}
}
