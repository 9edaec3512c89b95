package horde

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/hordekit/httpretry"
)

// checkKey is the context key under which fetch hands an endpoint's body
// check to checkedTransport.
type checkKey struct{}

// fetch GETs ep through the retrying transport and returns a body that
// passed ep's check.
func (c *Client) fetch(ctx context.Context, ep endpoint) ([]byte, error) {
	u := c.base.JoinPath(ep.path)
	u.RawQuery = ep.query.Encode()
	ctx = context.WithValue(ctx, checkKey{}, ep.check)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	ua := c.UserAgent
	if ua == "" {
		ua = DefaultUserAgent
	}
	req.Header.Set("User-Agent", ua)
	req.Header.Set("Client-Agent", ClientAgent)
	req.Header.Set("Accept", "application/json")

	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, ErrMalformed) {
			c.recordFailure()
		}
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// Read a little so the connection can be reused; an error page is
		// small, and a large one is not worth the wait.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, &httpretry.StatusError{Response: resp}
	}
	return io.ReadAll(resp.Body) // in memory already: checkedTransport read it
}

// recordFailure reports a call that ended on unusable 200 responses as a
// breaker failure, the original's record_failure (APIBreaker.RecordFailure).
//
// The transport judges an attempt by its status, and a 200 is a success to
// it, which would reset the breaker's count of consecutive failures: an API
// answering every call with an HTML maintenance page would never open the
// breaker. So checkedTransport turns such a 200 into an error beneath the
// transport; the transport retries it like a 5xx but counts it as neutral,
// having no way to judge an error it does not know, and the failure is
// recorded here once per call, as the transport records a 5xx.
//
// It goes through a permit rather than RecordFailure so that it works with
// any breaker.CircuitBreaker, and so that it is dropped, like any late
// outcome, when the breaker has opened in the meantime and refuses one.
func (c *Client) recordFailure() {
	if p, err := c.cb.Acquire(); err == nil {
		p.Done(false)
	}
}

// checkedTransport sits beneath the retrying transport. For a request that
// carries a body check in its context it reads each 200 body, within the
// Client's MaxBodySize and BodyMemory, and returns an error matching
// ErrMalformed, instead of the response, when the body fails the check, so
// that the retry loop and the breaker see the attempt as failed. A body cut
// short by the network comes back as the read error, which the transport
// retries and counts as a failure itself.
type checkedTransport struct {
	base  http.RoundTripper // nil means http.DefaultTransport
	limit int64
	mem   *BodyMemory
}

// RoundTrip sends req and checks the body of a 200.
func (t checkedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(req)
	check, ok := req.Context().Value(checkKey{}).(func([]byte) error)
	if err != nil || !ok || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	if err := limitBody(resp, t.limit, t.mem); err != nil {
		return nil, err
	}
	// The reservation is held until the check is done: the body and what
	// decoding it takes are live until then.
	defer resp.Body.Close()
	raw, err := readBody(resp.Body, resp.ContentLength)
	if err != nil {
		if errors.Is(err, ErrMalformed) || errors.Is(err, ErrBodyMemory) {
			return nil, err
		}
		return nil, fmt.Errorf("horde: reading the response body: %w", err)
	}
	if err := check(raw); err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(raw))
	resp.ContentLength = int64(len(raw))
	return resp, nil
}

// CloseIdleConnections reaches the base transport's idle connections.
func (t checkedTransport) CloseIdleConnections() {
	base := t.base
	if base == nil {
		base = http.DefaultTransport
	}
	if ci, ok := base.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// retryBody makes the retry loop treat an unusable 200 like a 5xx, since a
// proxy's error page or a body cut short is often gone on the next attempt,
// and retry a read that found the body memory full, which frees as other
// fetches end.
func retryBody(err error) bool { return errors.Is(err, ErrMalformed) || errors.Is(err, ErrBodyMemory) }
