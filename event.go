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
)

var eventNames = [...]string{"attempt", "retry", "give_up", "refused"}

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
}

func (t *Transport) observe(e Event) {
	if t.Observer != nil {
		t.Observer(e)
	}
}
