// Package horde reads model status, model statistics and worker lists from
// the public AI Horde API (https://aihorde.net/api/) and keeps answering when
// that API is slow or down.
//
// The model is stale-if-error. A Client keeps the last good copy of every
// response, as the raw JSON and the time it was fetched, in a Store. A copy
// younger than FreshFor (60 s) is served without asking the API. An older one
// is refreshed; if the refresh fails for any reason (the circuit breaker is
// open, the network fails, the API answers 5xx or 429 after the retries, or
// its 200 body does not decode) the old copy is served anyway, marked stale
// with its age. Only when there is no copy at all does a call fail, with an
// error matching ErrDegraded that a service maps to 502 Bad Gateway.
//
// Every request goes through an httpretry.Transport with the integration's
// settings (3 attempts, jittered waits of 1-15 s, 30 s per attempt) and one
// circuit breaker for the whole process, APIBreaker, as in the Python
// original. A 200 whose body does not decode is treated like a 5xx: retried,
// and counted as a breaker failure. Concurrent callers asking for the same
// response share one fetch.
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

// DefaultUserAgent identifies the client to the API's operators.
const DefaultUserAgent = "hordekit-httpretry-horde/1 (+https://github.com/hordekit/httpretry)"

// ClientAgent is sent as the Client-Agent header, the "name:version:contact"
// form by which the AI Horde identifies integrations in its own statistics.
const ClientAgent = "hordekit-httpretry:1:https://github.com/hordekit/httpretry"

// The integration's retry settings, from the original: 3 attempts with waits
// of 1-15 s and 30 s per attempt. The waits use the default ExponentialJitter
// rather than tenacity's formula, whose first two waits are always exactly
// 1 s with these numbers, so every replica would retry in lockstep.
// maxElapsed stops the waits 30 s after the first failure: with fast failures
// all three attempts still happen (the waits add up to under 6 s), while with
// attempts that time out a call ends after two of them, about a minute, where
// the original could take 92 s.
const (
	maxAttempts    = 3
	minWait        = time.Second
	maxWait        = 15 * time.Second
	attemptTimeout = 30 * time.Second
	maxElapsed     = 30 * time.Second
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
	// body could not be used: it did not decode into the endpoint's type, was
	// null, or was too large.
	ErrMalformed = errors.New("malformed response body from AI Horde")

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
	// 0 means DefaultFreshFor.
	FreshFor time.Duration

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

	once    sync.Once
	initErr error
	base    *url.URL
	clk     clock.Clock
	cb      breaker.CircuitBreaker
	store   Store
	rt      *httpretry.Transport
	http    *http.Client
	flights flights
}

// init resolves the defaults once, at the first call.
func (c *Client) init() error {
	c.once.Do(func() {
		c.base, c.initErr = parseBaseURL(c.rawBaseURL())
		c.clk = clock.Or(c.Clock)
		c.cb = c.Breaker
		if c.cb == nil {
			c.cb = APIBreaker
		}
		c.store = c.Store
		if c.store == nil {
			c.store = &MemoryStore{}
		}
		c.rt = &httpretry.Transport{
			Base:     checkedTransport{base: c.Transport},
			Breaker:  c.cb,
			Observer: c.Observer,
			Policy: httpretry.Policy{
				MaxAttempts:    maxAttempts,
				MinWait:        minWait,
				MaxWait:        maxWait,
				AttemptTimeout: attemptTimeout,
				MaxElapsed:     maxElapsed,
				RetryIf:        retryMalformed,
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
// environment and the default, or the error that makes every call fail. A
// service calls it at startup to fail fast on a bad setting.
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
