package demo

import (
	"log/slog"
	"net/http"

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

// strategy is one way for the clients to call the upstream.
type strategy struct {
	name    string
	slug    string // the strategy label of its metrics
	summary string // how it is set up, one line for the reports
	// breaker says whether the strategy has a circuit breaker, whose
	// transitions the reports then show.
	breaker bool
	// build returns the client of one run and the breakers to report on
	// /heartbeat and in the metrics.
	build func(h hooks) (*http.Client, breaker.Heartbeat)
}

// hooks is what a run gives a strategy to build its client with.
type hooks struct {
	// base sends every attempt: the run's own connection pool.
	base http.RoundTripper
	// settings scale the breaker and bound every attempt.
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

// strategies returns the four strategies in the order they run: from the
// worst-behaved upstream citizen to the best, so the table reads as a story.
func strategies() []strategy {
	return []strategy{
		{
			name: NoRetries, slug: "no_retries",
			summary: "a plain http.Client: one attempt per call",
			build: func(h hooks) (*http.Client, breaker.Heartbeat) {
				return &http.Client{Transport: h.base, Timeout: h.settings.AttemptTimeout}, breaker.Heartbeat{}
			},
		},
		{
			name: Naive, slug: "naive",
			summary: "3 attempts with no wait between them, no breaker, no budget",
			build: func(h hooks) (*http.Client, breaker.Heartbeat) {
				return &http.Client{Transport: &httpretry.Transport{
					Base: h.base,
					Policy: httpretry.Policy{MaxAttempts: 3, Backoff: httpretry.Immediate,
						AttemptTimeout: h.settings.AttemptTimeout, Logger: quiet},
					NoBreaker: true,
					NoBudget:  true,
					Observer:  h.observer,
				}}, breaker.Heartbeat{}
			},
		},
		{
			name: Seed, slug: "seed", breaker: true,
			summary: "the Python seed ported exactly: tenacity waits (0.5 s multiplier, 0.5-10 s), " +
				"one shared breaker with the seed's flaws, no budget, Retry-After ignored",
			build: func(h hooks) (*http.Client, breaker.Heartbeat) {
				sb := newSeedBreaker("seed", 5, h.settings.Cooldown, nil, h.onStateChange)
				return &http.Client{Transport: &httpretry.Transport{
					Base: stripRetryAfter{h.base},
					Policy: httpretry.Policy{Backoff: httpretry.TenacityExponential,
						AttemptTimeout: h.settings.AttemptTimeout, Logger: quiet},
					RetryStatuses: seedRetryStatuses(),
					Breaker:       sb,
					NoBudget:      true,
					Observer:      h.observer,
				}}, breaker.Heartbeat{Breakers: []breaker.CircuitBreaker{sb}}
			},
		},
		{
			name: Defaults, slug: "defaults", breaker: true,
			summary: "&httpretry.Transport{} with only the breaker cooldown scaled",
			build: func(h hooks) (*http.Client, breaker.Heartbeat) {
				t := &httpretry.Transport{
					Base:   h.base,
					Policy: httpretry.Policy{AttemptTimeout: h.settings.AttemptTimeout, Logger: quiet},
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
// transport above it retries as blindly as the seed did.
type stripRetryAfter struct{ base http.RoundTripper }

// RoundTrip implements http.RoundTripper.
func (s stripRetryAfter) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := s.base.RoundTrip(req)
	if resp != nil {
		resp.Header.Del("Retry-After")
	}
	return resp, err
}
