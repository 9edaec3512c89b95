// Package horde reads model status, model statistics and worker lists from
// the public AI Horde API (https://aihorde.net/api/) and keeps answering when
// that API is slow or down.
//
// The model is stale-if-error with stale-while-revalidate. A Client keeps the
// last good copy of every response, as the raw JSON and the time it was
// fetched, in a Store. A copy younger than FreshFor (60 s) is served without
// asking the API. Within StaleWhileRevalidate (5 min) after that, the copy is
// served at once, marked stale, while one background fetch refreshes it.
// Older than that, the caller waits for the refresh; if the refresh fails for
// any reason (the circuit breaker is open, the network fails, the API answers
// 5xx or 429 after the retries, or its 200 body fails validation) the old copy
// is served anyway, marked stale with its age. Only when there is no copy at
// all does a call fail, with an error matching ErrDegraded that a service maps
// to 502 Bad Gateway.
//
// Every 200 body is validated like the Python consumer's pydantic models do
// (see BodyError): a body that fails is retried, counted as a breaker failure
// like a 5xx, and never replaces a good copy.
//
// Every request goes through an httpretry.Transport with the integration's
// settings (3 attempts, jittered waits of 1-15 s, 30 s per attempt) and one
// circuit breaker for the whole process, APIBreaker, as in the Python
// original. Concurrent callers asking for the same response share one fetch.
// Bodies are bounded one by one (MaxBodySize) and, being read, all together
// (BodyMemory).
//
// The Store interface lets the copies live outside the process (Redis, shared
// by replicas and surviving restarts); MemoryStore is the default.
//
// NewHandler serves the same data over HTTP, with the seed's /api/heartbeat;
// cmd/hordeproxy runs it.
package horde

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/clock"
)

// DefaultBaseURL is the public AI Horde API.
const DefaultBaseURL = "https://aihorde.net/api/"

// DefaultFreshFor is how long a fetched copy is served without asking the
// API again: the original's 60 s cache.
const DefaultFreshFor = 60 * time.Second

// DefaultStaleWhileRevalidate is how long after a copy expires it is still
// served at once while a background fetch refreshes it. Under steady traffic
// the refresh starts as soon as the copy expires, so callers see copies at
// most FreshFor plus one fetch old; the window matters when the API is slow
// (a 429 storm can hold a fetch for 30 s) or traffic is sparse.
const DefaultStaleWhileRevalidate = 5 * time.Minute

// DefaultMaxAttempts and DefaultAttemptTimeout are the integration's retry
// settings when the Client's fields are 0: the original's 3 attempts and its
// horde_api_timeout of 30 s.
const (
	DefaultMaxAttempts    = 3
	DefaultAttemptTimeout = 30 * time.Second
)

// DefaultUserAgent identifies the client to the API's operators.
const DefaultUserAgent = "hordekit-httpretry-horde/1 (+https://github.com/hordekit/httpretry)"

// ClientAgent is sent as the Client-Agent header, the "name:version:contact"
// form by which the AI Horde identifies integrations in its own statistics.
const ClientAgent = "hordekit-httpretry:1:https://github.com/hordekit/httpretry"

// The integration's waits, from the original: 1-15 s. They use the default
// ExponentialJitter rather than tenacity's formula, whose first two waits
// are always exactly 1 s with these numbers, so every replica would retry in
// lockstep. maxElapsed stops the waits 30 s after the first failure: with
// fast failures all three attempts still happen (the waits add up to under
// 6 s), while with attempts that time out a call ends after two of them,
// about a minute, where the original could take 92 s.
const (
	minWait    = time.Second
	maxWait    = 15 * time.Second
	maxElapsed = 30 * time.Second
)

// APIBreaker is the circuit breaker for the AI Horde API shared by the whole
// process, the original's horde_api_circuit_breaker: it opens after 5 failed
// calls and admits a probe after 120 s. Every Client uses it unless its
// Breaker field says otherwise, so that all the process's callers learn
// together that the API is down.
var APIBreaker = breaker.MustNew(APIBreakerConfig())

// APIBreakerConfig returns APIBreaker's settings, for a process that wants
// its own instance with hooks attached (metrics on OnStateChange, a logger).
func APIBreakerConfig() breaker.Config {
	return breaker.Config{Name: "ai_horde", FailureThreshold: 5, Cooldown: 120 * time.Second}
}

var (
	// ErrDegraded is matched (errors.Is) by the error of a call that could
	// not reach the API and had no cached copy to fall back on. The error
	// also wraps the cause: breaker.ErrOpen, a network error, an
	// *httpretry.StatusError, ErrMalformed, or the caller's context error.
	ErrDegraded = errors.New("AI Horde is unavailable and there is no cached copy")

	// ErrMalformed is matched by the error of a fetch whose 200 response
	// body could not be used: it was not JSON of the endpoint's shape, failed
	// validation, or was larger than MaxBodySize. Such errors are
	// *BodyError values, which say where the body went wrong.
	ErrMalformed = errors.New("malformed response body from AI Horde")

	// ErrClosed is matched by the error of a call that needed a fetch after
	// Close: it is served the stored copy, if any, with this as its Err.
	ErrClosed = errors.New("horde: Client closed")

	// ErrInvalidQuery is matched by the error of a call whose query is
	// invalid (an unknown model type or state, a negative count). Such a call
	// makes no request.
	ErrInvalidQuery = errors.New("invalid AI Horde query")
)

// Client reads the AI Horde API with retries, the circuit breaker and the
// stale-if-error cache. Its zero value works: it talks to the URL in
// $AI_HORDE_URL, else $HORDE_URL, else DefaultBaseURL, through
// http.DefaultTransport, with APIBreaker and an in-memory cache.
//
// A Client is safe for concurrent use. Set its fields before the first call
// and do not copy it after.
type Client struct {
	// BaseURL is the API root, such as "https://aihorde.net/api/". Empty
	// means the AI_HORDE_URL environment variable, then HORDE_URL, then
	// DefaultBaseURL, read at the first call.
	BaseURL string

	// Transport sends each attempt, beneath the retries; nil means
	// http.DefaultTransport. Tests put a loopback transport here.
	Transport http.RoundTripper

	// Breaker guards every request; nil means APIBreaker. A call that
	// ends on 200 responses whose body cannot be used (see ErrMalformed)
	// counts as a failure, like one that ends on 5xx responses.
	Breaker breaker.CircuitBreaker

	// Store holds the last good copy of each response; nil means a
	// MemoryStore of this Client's own.
	Store Store

	// FreshFor is how long a copy is served without asking the API again.
	// 0 means DefaultFreshFor; negative is invalid.
	FreshFor time.Duration

	// StaleWhileRevalidate is how long after FreshFor a copy is still served
	// at once, marked stale, while one background fetch refreshes it; past
	// it, callers wait for the refresh. 0 means
	// DefaultStaleWhileRevalidate; negative turns it off.
	StaleWhileRevalidate time.Duration

	// MaxAttempts is how many times a fetch is tried. 0 means
	// DefaultMaxAttempts; negative is invalid.
	MaxAttempts int

	// AttemptTimeout bounds each attempt's wait for the response headers,
	// and how long its body may make no progress (the transport's
	// StallTimeout), as the original's httpx timeout does. 0 means
	// DefaultAttemptTimeout; negative is invalid.
	AttemptTimeout time.Duration

	// MaxBodySize bounds one response body, in bytes; a larger one fails the
	// attempt like a body that does not decode. 0 means DefaultMaxBodySize;
	// negative is invalid, and so is more than BodyMemory allows.
	MaxBodySize int64

	// BodyMemory bounds the bodies being read by every fetch sharing it;
	// nil means ProcessBodyMemory, shared by all such Clients.
	BodyMemory *BodyMemory

	// Clock times the cache and the waits between retries; nil means the
	// system clock.
	Clock clock.Clock

	// UserAgent is the User-Agent header; empty means DefaultUserAgent.
	UserAgent string

	// Logger receives the retry warnings and a warning for each failed
	// fetch; nil means slog.Default().
	Logger *slog.Logger

	// Observer, when set, is told of every attempt, retry and refusal of
	// the transport (httpretry.Transport.Observer): the hook for metrics,
	// such as metrics.Collector.Observe. It must be fast.
	Observer func(httpretry.Event)

	// Tracer, when set, follows every attempt of the transport
	// (httpretry.Transport.Tracer): the hook for one trace span per
	// attempt, such as otelretry's.
	Tracer httpretry.Tracer

	once    sync.Once
	initErr error
	base    *url.URL
	clk     clock.Clock
	cb      breaker.CircuitBreaker
	store   Store
	rt      *httpretry.Transport
	http    *http.Client
	flights flights
	checked checkedCopies
}

// Validate reports the first invalid field, by name, or nil. A Client with
// an invalid field fails every call with this error (ResolvedBaseURL returns
// it too), so a service can refuse to start on a bad setting.
func (c *Client) Validate() error {
	switch {
	case c.FreshFor < 0:
		return fmt.Errorf("horde: Client.FreshFor must not be negative (got %v)", c.FreshFor)
	case c.MaxAttempts < 0:
		return fmt.Errorf("horde: Client.MaxAttempts must not be negative (got %d)", c.MaxAttempts)
	case c.AttemptTimeout < 0:
		return fmt.Errorf("horde: Client.AttemptTimeout must not be negative (got %v)", c.AttemptTimeout)
	case c.MaxBodySize < 0:
		return fmt.Errorf("horde: Client.MaxBodySize must not be negative (got %d)", c.MaxBodySize)
	}
	if limit, mem := c.maxBodySize(), c.bodyMemory(); limit > mem.Max() {
		return fmt.Errorf("horde: Client.MaxBodySize (%d bytes) must not exceed the Client's BodyMemory (%d bytes): "+
			"no body that large could be read", limit, mem.Max())
	}
	_, err := parseBaseURL(c.rawBaseURL())
	return err
}

// init resolves the defaults once, at the first call.
func (c *Client) init() error {
	c.once.Do(func() {
		c.initErr = c.Validate()
		c.base, _ = parseBaseURL(c.rawBaseURL())
		c.clk = clock.Or(c.Clock)
		c.cb = c.Breaker
		if c.cb == nil {
			c.cb = APIBreaker
		}
		c.store = c.Store
		if c.store == nil {
			c.store = &MemoryStore{}
		}
		c.flights.init()
		c.rt = &httpretry.Transport{
			Base:         meteredTransport{base: c.Transport, limit: c.maxBodySize(), mem: c.bodyMemory()},
			Check:        checkResponse,
			MaxCheckBody: c.maxBodySize(),
			// The original's httpx timeout bounds the connection, the wait
			// for the response and each read of the body alike.
			StallTimeout: c.attemptTimeout(),
			Breaker:      c.cb,
			Observer:     c.Observer,
			Tracer:       c.Tracer,
			Policy: httpretry.Policy{
				MaxAttempts:    c.maxAttempts(),
				MinWait:        minWait,
				MaxWait:        maxWait,
				AttemptTimeout: c.attemptTimeout(),
				MaxElapsed:     maxElapsed,
				RetryIf:        retryMemory,
				Logger:         c.Logger,
				Clock:          c.Clock,
			},
		}
		c.http = &http.Client{Transport: c.rt}
	})
	return c.initErr
}

// rawBaseURL applies the precedence of BaseURL: the field, then the
// environment, then the default.
func (c *Client) rawBaseURL() string {
	for _, s := range []string{c.BaseURL, os.Getenv("AI_HORDE_URL"), os.Getenv("HORDE_URL")} {
		if s != "" {
			return s
		}
	}
	return DefaultBaseURL
}

// parseBaseURL accepts an absolute http or https URL and gives its path a
// trailing slash, so "https://aihorde.net/api" works as well.
func parseBaseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("horde: base URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("horde: base URL %q: want an absolute http or https URL", s)
	}
	if u.Path == "" || u.Path[len(u.Path)-1] != '/' {
		u.Path += "/"
	}
	return u, nil
}

// ResolvedBaseURL returns the API root the Client uses, after applying the
// environment and the default, or the error that makes every call fail (see
// Validate). A service calls it at startup to fail fast on a bad setting.
func (c *Client) ResolvedBaseURL() (*url.URL, error) {
	if err := c.init(); err != nil {
		return nil, err
	}
	u := *c.base
	return &u, nil
}

// CloseIdleConnections closes the idle connections of the Client's
// transport.
func (c *Client) CloseIdleConnections() {
	if c.init() == nil {
		c.rt.CloseIdleConnections()
	}
}

// Close cancels the fetches still running in the background (refreshes
// started by stale-while-revalidate, fetches whose callers left), waits for
// them to end, and closes idle connections. Call it before closing what the
// Store uses (a Redis client). Calls after Close still serve the Store's
// copies but fetch nothing: a call that would is served the stored copy
// with Err matching ErrClosed, or fails with ErrDegraded and ErrClosed.
// Close always returns nil.
func (c *Client) Close() error {
	_ = c.init()
	c.flights.close()
	if c.rt != nil {
		c.rt.CloseIdleConnections()
	}
	return nil
}

// breaker returns the breaker in use, for the heartbeat. init sets it up
// even when the base URL is bad, so the heartbeat still has one to report.
func (c *Client) breaker() breaker.CircuitBreaker {
	_ = c.init()
	return c.cb
}

func (c *Client) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

func (c *Client) freshFor() time.Duration {
	if c.FreshFor > 0 {
		return c.FreshFor
	}
	return DefaultFreshFor
}

// staleWhileRevalidate is the window after freshFor, 0 when it is off.
func (c *Client) staleWhileRevalidate() time.Duration {
	switch {
	case c.StaleWhileRevalidate > 0:
		return c.StaleWhileRevalidate
	case c.StaleWhileRevalidate < 0:
		return 0
	}
	return DefaultStaleWhileRevalidate
}

func (c *Client) maxAttempts() int {
	if c.MaxAttempts > 0 {
		return c.MaxAttempts
	}
	return DefaultMaxAttempts
}

func (c *Client) attemptTimeout() time.Duration {
	if c.AttemptTimeout > 0 {
		return c.AttemptTimeout
	}
	return DefaultAttemptTimeout
}

func (c *Client) maxBodySize() int64 {
	if c.MaxBodySize > 0 {
		return c.MaxBodySize
	}
	return DefaultMaxBodySize
}

func (c *Client) bodyMemory() *BodyMemory {
	if c.BodyMemory != nil {
		return c.BodyMemory
	}
	return ProcessBodyMemory
}
