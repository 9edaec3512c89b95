package faultserver

import (
	"net/http"
	"slices"
	"time"
)

// Kind names the way a request is answered (or not). Each kind maps to one
// failure mode a real upstream or network produces, so a client's handling of
// it can be tested against real sockets rather than a mocked RoundTripper.
type Kind uint8

// The fault kinds. The zero Kind is the healthy response so that a zero Fault
// is harmless.
const (
	// KindOK answers 200 with the server's default body (or Fault.Body).
	KindOK Kind = iota
	// KindStatus answers Fault.Status with Fault.Header, Fault.Body and an
	// optional Retry-After.
	KindStatus
	// KindResetBeforeHeaders reads the whole request, then resets the TCP
	// connection (SO_LINGER 0) without writing a byte: the client sees
	// ECONNRESET while waiting for the response, after the server may have
	// acted on the request.
	KindResetBeforeHeaders
	// KindResetAfterHeaders writes the status line, headers (Content-Length
	// len(Body)) and the first Partial bytes of Body, then resets: the client
	// gets a response and then an ECONNRESET while reading its body.
	KindResetAfterHeaders
	// KindCloseNoResponse reads the whole request, then closes the connection
	// cleanly (FIN) without writing a byte: the client sees io.EOF.
	KindCloseNoResponse
	// KindStallBeforeHeaders writes nothing until the request's context ends,
	// the server closes, or MaxStall (if set) elapses; in the last case the
	// response is then written as for KindStatus, which makes it a slow
	// response rather than a hung one.
	KindStallBeforeHeaders
	// KindStallMidBody writes the headers (Content-Length len(Body)) and the
	// first Partial bytes of Body, flushes, then blocks like
	// KindStallBeforeHeaders; if MaxStall elapses the rest of Body is sent.
	KindStallMidBody
	// KindTruncatedBody writes the headers (Content-Length len(Body)) and the
	// first Partial bytes of Body, then closes the connection cleanly: the
	// client's body read ends in io.ErrUnexpectedEOF.
	KindTruncatedBody
	// KindResource serves Fault.Resource as a static file server would
	// (validators, Range, If-Range, optional gzip), with Fault.Body faults
	// applied to the bytes it sends (see BodyFault).
	KindResource

	numKinds
)

var kindNames = [numKinds]string{
	"ok", "status", "reset-before-headers", "reset-after-headers",
	"close-no-response", "stall-before-headers", "stall-mid-body", "truncated-body",
	"resource",
}

// String returns a short lower-case name for test messages and demo output.
func (k Kind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return "unknown"
}

// RetryAfterForm selects how Fault.RetryAfter is written, because clients
// must handle both forms RFC 9110 allows and many only handle one.
type RetryAfterForm uint8

// The Retry-After forms.
const (
	// RetryAfterNone writes no Retry-After header.
	RetryAfterNone RetryAfterForm = iota
	// RetryAfterSeconds writes RetryAfter as whole delay-seconds (truncated).
	RetryAfterSeconds
	// RetryAfterDate writes the server clock's now plus RetryAfter as an
	// IMF-fixdate (http.TimeFormat). The format has one-second resolution, so
	// a client computing the delay back may see up to a second less.
	RetryAfterDate
)

// Fault describes what the server does with one request. It is a value: the
// With methods return modified copies and never touch the receiver's Header
// map. The server treats Header and Body as read-only, so a Fault may be
// reused for any number of requests.
//
// Body defaults, when nil: the server's DefaultBody for a full response with
// status 200, no body for any other status, and a 1000-byte filler (see
// Filler) for the partial-body kinds (ResetAfterHeaders, StallMidBody,
// TruncatedBody).
type Fault struct {
	// Kind selects the behaviour.
	Kind Kind
	// Status is the status code of any response written; 0 means 200.
	Status int
	// Header holds extra response headers. To send an invalid Retry-After
	// (to test a client's parser), set it here instead of using RetryAfter.
	Header http.Header
	// Body is the response body; for partial kinds it is the full body the
	// Content-Length announces, of which only Partial bytes are sent.
	Body []byte
	// Partial is how many body bytes the partial kinds send before failing;
	// 0 means 10. It is clamped to len(Body)-1 so something is always missing.
	Partial int
	// RetryAfter is the delay advertised in Retry-After, in the form
	// RetryAfterForm selects.
	RetryAfter time.Duration
	// RetryAfterForm selects the Retry-After form; the zero value sends none.
	RetryAfterForm RetryAfterForm
	// MaxStall bounds the stall kinds; 0 stalls until the request's context
	// ends or the server closes.
	MaxStall time.Duration
	// Resource is what KindResource serves.
	Resource *Resource
	// BodyFault is what KindResource does to the body bytes it sends.
	BodyFault BodyFault
}

// OK returns the healthy fault: 200 with the server's default body.
func OK() Fault { return Fault{Kind: KindOK} }

// Status returns a fault answering with the given status code and no body.
func Status(code int) Fault { return Fault{Kind: KindStatus, Status: code} }

// ResetBeforeHeaders returns a KindResetBeforeHeaders fault.
func ResetBeforeHeaders() Fault { return Fault{Kind: KindResetBeforeHeaders} }

// ResetAfterHeaders returns a KindResetAfterHeaders fault (200, 1000-byte
// Content-Length, 10 bytes sent).
func ResetAfterHeaders() Fault { return Fault{Kind: KindResetAfterHeaders} }

// CloseNoResponse returns a KindCloseNoResponse fault.
func CloseNoResponse() Fault { return Fault{Kind: KindCloseNoResponse} }

// StallBeforeHeaders returns a KindStallBeforeHeaders fault with no bound.
func StallBeforeHeaders() Fault { return Fault{Kind: KindStallBeforeHeaders} }

// StallMidBody returns a KindStallMidBody fault with no bound (200,
// 1000-byte Content-Length, 10 bytes sent).
func StallMidBody() Fault { return Fault{Kind: KindStallMidBody} }

// TruncatedBody returns a KindTruncatedBody fault (200, 1000-byte
// Content-Length, 10 bytes sent).
func TruncatedBody() Fault { return Fault{Kind: KindTruncatedBody} }

// WithBody returns f with Body b (the full body for partial kinds).
func (f Fault) WithBody(b []byte) Fault { f.Body = b; return f }

// WithStatus returns f with status code code, e.g. to make a stall end in a
// 503 or a truncated body belong to a 206.
func (f Fault) WithStatus(code int) Fault { f.Status = code; return f }

// WithHeader returns f with value added to header key. The header map is
// copied so that faults derived from a shared base never alias each other.
func (f Fault) WithHeader(key, value string) Fault {
	h := f.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Add(key, value)
	f.Header = h
	return f
}

// WithRetryAfter returns f advertising Retry-After as delay-seconds.
func (f Fault) WithRetryAfter(d time.Duration) Fault {
	f.RetryAfter, f.RetryAfterForm = d, RetryAfterSeconds
	return f
}

// WithRetryAfterDate returns f advertising Retry-After as an HTTP-date d
// after the server clock's now.
func (f Fault) WithRetryAfterDate(d time.Duration) Fault {
	f.RetryAfter, f.RetryAfterForm = d, RetryAfterDate
	return f
}

// WithPartial returns f sending n body bytes before a partial kind fails.
func (f Fault) WithPartial(n int) Fault { f.Partial = n; return f }

// WithMaxStall returns f whose stall ends after d (then the response is
// completed, see KindStallBeforeHeaders and KindStallMidBody).
func (f Fault) WithMaxStall(d time.Duration) Fault { f.MaxStall = d; return f }

// Behavior chooses the fault for a request. n counts requests from 0 since
// the behaviour was installed (by Config or SetBehavior), in arrival order;
// r's body has already been read (and hashed) by the server. It is called
// concurrently for concurrent requests, so it must be safe for that. Because
// it runs just before the fault is served, a test can also use it to learn,
// without polling, that a request has arrived.
type Behavior func(n int, r *http.Request) Fault

// Script returns a Behavior giving request i faults[i]. After the script
// ends its last fault repeats, so end it with OK() to return to health
// (Script(Status(503), Status(503), OK())). An empty script always answers
// OK. The slice is copied.
func Script(faults ...Fault) Behavior {
	fs := slices.Clone(faults)
	return func(n int, _ *http.Request) Fault {
		switch {
		case len(fs) == 0:
			return OK()
		case n >= len(fs):
			return fs[len(fs)-1]
		default:
			return fs[n]
		}
	}
}

// Always returns a Behavior giving every request f.
func Always(f Fault) Behavior {
	return func(int, *http.Request) Fault { return f }
}

// Filler returns a copy of the default body of the partial kinds: 1000 bytes
// repeating "0123456789", so a test can check which prefix it received.
func Filler() []byte { return slices.Clone(filler) }

var filler = func() []byte {
	b := make([]byte, 1000)
	for i := range b {
		b[i] = '0' + byte(i%10)
	}
	return b
}()
