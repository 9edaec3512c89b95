package httpretry

import (
	"math"
	"net/http"
	"strconv"
	"time"
)

// StatusError reports a response whose status code calls for a retry: the
// seed's RetryableHTTPStatusError. It holds the response so a caller can read
// it after the retries ran out; its message is "HTTP 503 from <url>" with the
// URL redacted.
type StatusError struct {
	Response *http.Response
}

// Error returns "HTTP <code> from <redacted url>".
func (e *StatusError) Error() string {
	if e.Response == nil {
		return "HTTP response missing"
	}
	code := strconv.Itoa(e.Response.StatusCode)
	if e.Response.Request == nil || e.Response.Request.URL == nil {
		return "HTTP " + code
	}
	return "HTTP " + code + " from " + RedactURL(e.Response.Request.URL)
}

// RetryAfter returns the wait the response's Retry-After header asks for, in
// either form RFC 9110 allows: delay-seconds, or an HTTP-date (IMF-fixdate,
// RFC 850 or asctime). A date is measured against the response's own Date
// header when it has one, which cancels out clock skew between client and
// server, and against the local clock otherwise. A missing, malformed,
// negative or past value reports false.
func (e *StatusError) RetryAfter() (time.Duration, bool) {
	if e.Response == nil {
		return 0, false
	}
	return responseRetryAfter(e.Response, time.Now())
}

func responseRetryAfter(resp *http.Response, now time.Time) (time.Duration, bool) {
	v := resp.Header.Get("Retry-After")
	if v == "" {
		return 0, false
	}
	if date, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		now = date
	}
	return ParseRetryAfter(v, now)
}

// maxRetryAfter caps absurd delay-seconds so the arithmetic cannot overflow;
// any policy refuses a wait this long anyway.
const maxRetryAfter = time.Duration(math.MaxInt64)

// ParseRetryAfter parses a Retry-After value relative to now. It accepts
// delay-seconds (1*DIGIT; a number too large to represent saturates) and the
// three HTTP-date formats. It reports false for anything else, for a date not
// after now, and for an empty value.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if isDigits(v) {
		secs, err := strconv.ParseUint(v, 10, 64)
		if err != nil || secs > uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	if d := t.Sub(now); d > 0 {
		return d, true
	}
	return 0, false
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return len(s) > 0
}
