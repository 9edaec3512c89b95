package demo

import (
	"errors"
	"log/slog"
	"net/http"
	"syscall"
	"time"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/breaker"
)

// The strategies' names, as the reports print them.
const (
	NoRetries = "no retries"
	Naive     = "naive retries"
	Seed      = "seed policy"
	Defaults  = "httpretry defaults"
)

// strategy is one way for the callers to call the upstream.
type strategy struct {
	name    string
	slug    string // the strategy label of its metrics
	summary string // how it is set up, for the reports
	// breaker says whether the strategy has a circuit breaker, whose
	// transitions the reports then show.
	breaker bool
	// keepAlive is false for a strategy that opens a new connection per
	// attempt, as the seed's integration does.
	keepAlive bool
	// build returns the client of one run and the breakers to report on
	// /heartbeat and in the metrics.
	build func(h hooks) (*http.Client, breaker.Heartbeat)
}

// hooks is what a run gives a strategy to build its client with.
type hooks struct {
	// base sends every attempt: the strategy's own connection pool.
	base http.RoundTripper
	// settings scale the breaker.
	settings Settings
	// observer, when not nil, receives the transport's events (metrics).
	observer func(httpretry.Event)
	// onStateChange receives every breaker transition.
	onStateChange func(name string, from, to breaker.State)
}

// quiet discards the transport's and breakers' logs: at hundreds of calls a
// second they would drown the progress line, and the reports say the same
// thing in numbers.
var quiet = slog.New(slog.DiscardHandler)

// The seed as the AI Horde integration deploys it: http_retry_sync with
// min_wait=1.0 and max_wait=15.0 over tenacity's wait_random_exponential
// (multiplier 0.5), so every wait is exactly 1 s.
const (
	seedMinWait = 1 * time.Second
	seedMaxWait = 15 * time.Second
)

// strategies returns the four strategies in the order the reports list
// them: from the worst-behaved upstream citizen to the best.
func strategies() []strategy {
	return []strategy{
		{
			name: NoRetries, slug: "no_retries", keepAlive: true,
			summary: "a plain http.Client: one attempt per call",
			build: func(h hooks) (*http.Client, breaker.Heartbeat) {
				return &http.Client{Transport: h.base}, breaker.Heartbeat{}
			},
		},
		{
			name: Naive, slug: "naive", keepAlive: true,
			summary: "3 attempts with no wait between them, Retry-After ignored, no breaker, no budget",
			build: func(h hooks) (*http.Client, breaker.Heartbeat) {
				return &http.Client{Transport: &httpretry.Transport{
					Base:       stripRetryAfter{h.base},
					Policy:     httpretry.Policy{MaxAttempts: 3, Backoff: httpretry.Immediate, Logger: quiet},
					NoBreaker:  true,
					NoBudget:   true,
					NoThrottle: true,
					Observer:   h.observer,
				}}, breaker.Heartbeat{}
			},
		},
		{
			name: Seed, slug: "seed", breaker: true,
			summary: "the Python original as the AI Horde integration deploys it: 3 attempts, tenacity waits with " +
				"min_wait=1.0 and max_wait=15.0 (1 s, then 1 s), retries on 5xx, 429, timeouts, connect and protocol " +
				"errors but not on connection resets (httpx ReadError), Retry-After ignored, one shared breaker " +
				"with the original's flaws (everyone let through after the cooldown, late failures extend it, " +
				"a late success closes it, 429 counts as a failure), a new connection per attempt",
			build: func(h hooks) (*http.Client, breaker.Heartbeat) {
				sb := newSeedBreaker("seed", 5, h.settings.Cooldown, nil, h.onStateChange)
				return &http.Client{Transport: &httpretry.Transport{
					Base: seedErrors{stripRetryAfter{h.base}},
					Policy: httpretry.Policy{Backoff: httpretry.TenacityExponential,
						MinWait: seedMinWait, MaxWait: seedMaxWait, Logger: quiet},
					RetryStatuses: seedRetryStatuses(),
					Breaker:       sb,
					NoBudget:      true,
					NoThrottle:    true,
					Observer:      h.observer,
				}}, breaker.Heartbeat{Breakers: []breaker.CircuitBreaker{sb}}
			},
		},
		{
			name: Defaults, slug: "defaults", breaker: true, keepAlive: true,
			summary: "&httpretry.Transport{} with only the breaker cooldown scaled",
			build: func(h hooks) (*http.Client, breaker.Heartbeat) {
				t := &httpretry.Transport{
					Base:   h.base,
					Policy: httpretry.Policy{Logger: quiet},
					BreakerConfig: breaker.Config{Cooldown: h.settings.Cooldown, Logger: quiet,
						OnStateChange: h.onStateChange},
					Observer: h.observer,
				}
				return &http.Client{Transport: t}, breaker.Heartbeat{Sets: []*breaker.Set{t.Breakers()}}
			},
		},
	}
}

// seedRetryStatuses is the seed's is_retryable_status_code: 429 and every
// 5xx, where the transport's default list holds only the codes a retry can
// change.
func seedRetryStatuses() []int {
	codes := []int{http.StatusTooManyRequests}
	for c := 500; c <= 599; c++ {
		codes = append(codes, c)
	}
	return codes
}

// stripRetryAfter removes Retry-After from every response, so that the
// transport above it retries as blindly as the seed and naive loops do.
type stripRetryAfter struct{ base http.RoundTripper }

// RoundTrip implements http.RoundTripper.
func (s stripRetryAfter) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := s.base.RoundTrip(req)
	if resp != nil {
		resp.Header.Del("Retry-After")
	}
	return resp, err
}

// seedErrors turns a connection reset into an error the transport does not
// retry, as the seed does not: httpx raises ReadError for it, which is not
// among the seed's TRANSIENT_HTTP_EXCEPTIONS (TimeoutException,
// ConnectError, RemoteProtocolError). A server that closes without a
// response (httpx RemoteProtocolError) stays retryable.
type seedErrors struct{ base http.RoundTripper }

// RoundTrip implements http.RoundTripper.
func (s seedErrors) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := s.base.RoundTrip(req)
	if err != nil && errors.Is(err, syscall.ECONNRESET) {
		return nil, readError{}
	}
	return resp, err
}

// readError is httpx's ReadError: a reset while reading the response. It
// deliberately wraps nothing, so that httpretry.IsTransient is false.
type readError struct{}

func (readError) Error() string {
	return "read error: the peer reset the connection (httpx.ReadError, not retried by the seed)"
}
