package httpretry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// ErrCheckBodyTooLarge is matched (errors.Is) by the error of a checked
// attempt whose response body exceeds Transport.MaxCheckBody.
var ErrCheckBodyTooLarge = errors.New("httpretry: response body exceeds MaxCheckBody")

// CheckError reports a response that Transport.Check rejected, or whose body
// was too large to check. The Transport retries it like a 5xx and counts it
// as a breaker failure, unless the check wrapped its error with Permanent.
type CheckError struct {
	// Response is the rejected response. Its body reads the bytes that were
	// checked; it is empty when the body was too large.
	Response *http.Response
	// Err is the check's own error, or one matching ErrCheckBodyTooLarge.
	Err error

	permanent bool
}

// Error reads "HTTP 200 from <url> rejected: <the check's error>", with the
// URL redacted.
func (e *CheckError) Error() string {
	return (&StatusError{Response: e.Response}).Error() + " rejected: " + redactedError(e.Err)
}

// Unwrap returns the check's error.
func (e *CheckError) Unwrap() error { return e.Err }

// CheckJSON is a Transport.Check for JSON APIs: it rejects a 2xx response
// whose body is not valid JSON, such as a proxy's HTML error page or a
// document cut short, and accepts every other response (a 404's HTML page is
// its status's business). 204 and empty bodies of HEAD requests pass.
func CheckJSON(resp *http.Response, body []byte) error {
	if resp.StatusCode < 200 || resp.StatusCode > 299 || resp.StatusCode == http.StatusNoContent ||
		len(body) == 0 && resp.Request != nil && resp.Request.Method == http.MethodHead {
		return nil
	}
	if json.Valid(body) {
		return nil
	}
	ct := resp.Header.Get("Content-Type")
	if ct == "" {
		ct = "no Content-Type"
	}
	return fmt.Errorf("the body is not valid JSON (%s, %d bytes, starting %s)", ct, len(body), prefix(body, 32))
}

// prefix quotes the first n bytes of b, for an error message.
func prefix(b []byte, n int) string {
	if len(b) <= n {
		return strconv.Quote(string(b))
	}
	return strconv.Quote(string(b[:n])) + "..."
}

// check reads a response's whole body, bounded, and passes it to the
// Transport's Check. A body that fails while being read is a transient
// failure of the attempt, retried as one; the response is never returned
// half-read.
func (t *Transport) check(resp *http.Response) (*http.Response, error) {
	limit := t.maxCheckBody()
	if resp.ContentLength > limit {
		// Announced too large: refused unread.
		resp.Body.Close()
		resp.Body = http.NoBody
		return nil, &CheckError{Response: resp, Err: fmt.Errorf("%w (%d bytes; Content-Length %d)", ErrCheckBodyTooLarge, limit, resp.ContentLength)}
	}
	buf, err := t.readAll(resp.Body, limit, resp.ContentLength)
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("httpretry: reading the body to check it: %w", err)
	}
	if int64(len(buf)) > limit {
		resp.Body = http.NoBody
		return nil, &CheckError{Response: resp, Err: fmt.Errorf("%w (%d bytes)", ErrCheckBodyTooLarge, limit)}
	}
	resp.ContentLength = int64(len(buf))
	resp.Body = io.NopCloser(bytes.NewReader(buf))
	if cerr := t.Check(resp, buf); cerr != nil {
		ce := &CheckError{Response: resp, Err: cerr}
		if perm, ok := errors.AsType[*permanentError](cerr); ok {
			ce.Err, ce.permanent = perm.err, true
		}
		resp.Body = io.NopCloser(bytes.NewReader(buf)) // readable again, whatever Check read
		return nil, ce
	}
	resp.Body = io.NopCloser(bytes.NewReader(buf))
	return resp, nil
}
