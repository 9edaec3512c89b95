package httpretry

import (
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
)

var eventNames = [...]string{"attempt", "retry", "give_up", "refused", "body_failed"}

func (k EventKind) String() string {
	if int(k) < len(eventNames) {
		return eventNames[k]
	}
	return "unknown"
}

// Event is what a Transport tells its Observer. Fields that do not apply to
// the Kind are zero.
type Event struct {
	Kind       EventKind
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
}

func (t *Transport) observe(e Event) {
	if t.Observer != nil {
		t.Observer(e)
	}
}
