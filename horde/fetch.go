package horde

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/hordekit/httpretry"
)

// checkKey is the context key under which fetch hands an endpoint's body
// check to the transport's Check (checkResponse), and gets the checked body
// back.
type checkKey struct{}

// checked is one fetch's body check and, once an attempt passes it, the
// body.
type checked struct {
	check func([]byte) error
	body  []byte
}

// fetch GETs ep through the retrying transport and returns a body that
// passed ep's check.
func (c *Client) fetch(ctx context.Context, ep endpoint) ([]byte, error) {
	u := c.base.JoinPath(ep.path)
	u.RawQuery = ep.query.Encode()
	ck := &checked{check: ep.check}
	ctx = context.WithValue(ctx, checkKey{}, ck)
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
		if errors.Is(err, httpretry.ErrCheckBodyTooLarge) {
			// One error for every unusable 200 body: the transport's limit
			// is MaxBodySize.
			err = &BodyError{Item: -1, Problem: fmt.Sprintf("the body exceeds %d bytes", c.maxBodySize()), Err: err}
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
	// The transport read the body and checkResponse kept it: no copy.
	return ck.body, nil
}

// checkResponse is the transport's Check: a 200 body of a fetch must pass
// its endpoint's check (validate.go). A body that fails is a failed attempt
// to the transport, retried like a 5xx and counted by the breaker, so that an
// API answering every call with a maintenance page opens the breaker as one
// answering 503 would.
func checkResponse(resp *http.Response, body []byte) error {
	ck, ok := resp.Request.Context().Value(checkKey{}).(*checked)
	if !ok || resp.StatusCode != http.StatusOK {
		return nil
	}
	if err := ck.check(body); err != nil {
		return err
	}
	ck.body = body
	return nil
}

// meteredTransport sits beneath the retrying transport and makes each 200
// body of a fetch count against the Client's BodyMemory while the transport
// reads it for checkResponse. A Content-Length over MaxBodySize is refused
// without reading, as the check would refuse the body.
type meteredTransport struct {
	base  http.RoundTripper // nil means http.DefaultTransport
	limit int64
	mem   *BodyMemory
}

// RoundTrip sends req and meters the body of a 200.
func (t meteredTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.baseTransport().RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusOK || req.Context().Value(checkKey{}) == nil {
		return resp, err
	}
	if resp.ContentLength > t.limit {
		resp.Body.Close()
		resp.Body = http.NoBody
		return nil, &httpretry.CheckError{Response: resp, Err: tooLarge(t.limit)}
	}
	// The transport stops reading one byte past its MaxCheckBody, the same
	// limit, and says so itself; this one only meters.
	resp.Body = &meteredBody{rc: resp.Body, mem: t.mem, limit: t.limit + 1}
	return resp, nil
}

func (t meteredTransport) baseTransport() http.RoundTripper {
	if t.base == nil {
		return http.DefaultTransport
	}
	return t.base
}

// CloseIdleConnections reaches the base transport's idle connections.
func (t meteredTransport) CloseIdleConnections() {
	if ci, ok := t.baseTransport().(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// retryMemory makes the retry loop retry a read that found the body memory
// full, which frees as other fetches end. (A body that fails its check is
// retried by the transport itself.)
func retryMemory(err error) bool { return errors.Is(err, ErrBodyMemory) }
