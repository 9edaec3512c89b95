package httpretry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/clock"
)

// Hedging defaults.
const (
	DefaultHedgePercentile = 0.95
	DefaultHedgeMinDelay   = time.Millisecond
	DefaultHedgeMaxDelay   = time.Second
	DefaultHedgeBudget     = 0.1
	// hedgeBurst is how many hedges a host may save up beyond its budget's
	// share, so that a quiet host can still hedge its occasional slow call.
	hedgeBurst = 10
	// hedgeMedians caps the adaptive delay at this many medians (see
	// HedgeConfig).
	hedgeMedians = 3
)

// HedgeConfig turns on hedged requests (Transport.Hedge): when an attempt's
// response headers have not come after a delay, another attempt of the same
// request is sent, and the first acceptable response wins ("The Tail at
// Scale", Dean and Barroso, 2013). Its zero value hedges once, after an
// adaptive delay, within a budget of 10% of calls.
//
// Only requests that may be sent twice are hedged (GET, HEAD, OPTIONS,
// TRACE, PUT, DELETE, or any with an Idempotency-Key), with a body that can
// be replayed; never a half-open breaker's probe, and never while the host's
// breaker is not closed. An attempt that fails while another is in flight
// does not end the call; once every attempt of the round has failed, the
// call retries as usual. The losers are cancelled and their bodies closed.
//
// Hedges have their own per-host budget, apart from the retry budget: every
// hedgeable call earns Budget of a hedge, a hedge spends one, and a host
// saves up at most 10. So a host that slows down as a whole gets at most
// about Budget more requests, not twice as many.
type HedgeConfig struct {
	// Delay fixes the time to wait for headers before hedging. 0 means
	// adaptive: the host's Percentile of recent times to headers, at most 3
	// of its medians (in a bimodal host whose slow mode holds about
	// 1-Percentile of calls, the percentile itself can land in the slow mode,
	// too late to help), kept within [MinDelay, MaxDelay]. Until a host has
	// 20 samples the delay is MaxDelay.
	Delay time.Duration
	// Percentile is the adaptive delay's percentile, in (0, 1). 0 means 0.95.
	Percentile float64
	// MinDelay and MaxDelay bound the adaptive delay. 0 means 1 ms and 1 s.
	MinDelay, MaxDelay time.Duration
	// MaxHedges is how many hedges one attempt may get. 0 means 1.
	MaxHedges int
	// Budget is the share of calls that may be hedged, per host. 0 means 0.1.
	Budget float64
}

// Validate reports the first invalid field, by name, or nil.
func (h HedgeConfig) Validate() error {
	switch {
	case h.Delay < 0:
		return fmt.Errorf("httpretry: HedgeConfig.Delay must not be negative (got %v)", h.Delay)
	case math.IsNaN(h.Percentile) || h.Percentile < 0 || h.Percentile >= 1:
		return fmt.Errorf("httpretry: HedgeConfig.Percentile must be in (0, 1) (got %v)", h.Percentile)
	case h.MinDelay < 0 || h.MaxDelay < 0:
		return fmt.Errorf("httpretry: HedgeConfig.MinDelay and MaxDelay must not be negative (got %v, %v)", h.MinDelay, h.MaxDelay)
	case h.normalized().MinDelay > h.normalized().MaxDelay:
		return fmt.Errorf("httpretry: HedgeConfig.MinDelay (%v) must not exceed HedgeConfig.MaxDelay (%v)", h.normalized().MinDelay, h.normalized().MaxDelay)
	case h.MaxHedges < 0 || h.MaxHedges > 10:
		return fmt.Errorf("httpretry: HedgeConfig.MaxHedges must be in [0, 10] (got %d)", h.MaxHedges)
	case math.IsNaN(h.Budget) || h.Budget < 0 || h.Budget > 1:
		return fmt.Errorf("httpretry: HedgeConfig.Budget must be in [0, 1] (got %v)", h.Budget)
	}
	return nil
}

func (h HedgeConfig) normalized() HedgeConfig {
	if h.Percentile == 0 {
		h.Percentile = DefaultHedgePercentile
	}
	if h.MinDelay == 0 {
		h.MinDelay = DefaultHedgeMinDelay
	}
	if h.MaxDelay == 0 {
		h.MaxDelay = DefaultHedgeMaxDelay
	}
	if h.MaxHedges == 0 {
		h.MaxHedges = 1
	}
	if h.Budget == 0 {
		h.Budget = DefaultHedgeBudget
	}
	return h
}

// hedger is a host's hedging state: its latency estimate and hedge budget.
type hedger struct {
	tokens atomic.Int64 // hedges saved up, in thousandths
	lat    latencies
}

func newHedger(cfg *HedgeConfig) *hedger {
	h := &hedger{}
	h.tokens.Store(hedgeBurst * 1000)
	h.lat.percent = cfg.Percentile
	return h
}

// earn adds one call's share of a hedge, up to the burst.
func (h *hedger) earn(share int64) {
	if v := h.tokens.Add(share); v > hedgeBurst*1000 {
		h.tokens.CompareAndSwap(v, hedgeBurst*1000)
	}
}

// spend takes one hedge from the budget, if there is one.
func (h *hedger) spend() bool {
	for {
		v := h.tokens.Load()
		if v < 1000 {
			return false
		}
		if h.tokens.CompareAndSwap(v, v-1000) {
			return true
		}
	}
}

// delay is how long an attempt waits for headers before it is hedged.
func (h *hedger) delay(cfg *HedgeConfig) time.Duration {
	if cfg.Delay > 0 {
		return cfg.Delay
	}
	q, median, ok := h.lat.estimate()
	if !ok {
		return cfg.MaxDelay
	}
	return min(max(min(q, hedgeMedians*median), cfg.MinDelay), cfg.MaxDelay)
}

// hedgeable reports whether this call's attempts may be hedged.
func (c *call) hedgeable(hs *hostState) bool {
	return hs != nil && hs.hedge != nil && idempotent(c.req) && (c.getBody != nil || c.noReplay == "") &&
		!c.permit.Probe()
}

// mayHedge reports whether a hedge may go now: the breaker closed, the
// budget not spent.
func (c *call) mayHedge(h *hedger) bool {
	if s, ok := c.cb.(interface{ State() breaker.State }); ok && s.State() != breaker.Closed {
		return false
	}
	return h.spend()
}

// exchange is one attempt of a hedged round.
type exchange struct {
	n      int
	hedge  bool
	start  time.Time
	cancel context.CancelFunc
	timer  clock.Timer
	trace  func(AttemptResult)
}

// roundResult is an attempt's result, or, with i < 0, the hedge timer.
type roundResult struct {
	i    int
	resp *http.Response
	err  error
}

// maxRound bounds a round's attempts: the first and up to 10 hedges.
const maxRound = 11

// hedged runs one round of attempts: the first, then hedges while no
// headers come. It returns the first acceptable response (not an error, not
// a status to retry), or, once no attempt is left in flight, the last
// failure, for the retry loop to judge. The winner's context and trace
// become the call's; the losers are cancelled, and their responses closed
// by a goroutine that waits for them.
//
// The attempts run on goroutines of their own and report on one channel,
// which the hedge timer also signals; they hold nothing of the call or the
// round, so both stay on this goroutine's stack.
func (c *call) hedged(ctx context.Context, h *hedger) (*http.Response, error) {
	t, cfg := c.t, c.t.hedge
	clk := c.clock()
	h.earn(int64(cfg.Budget * 1000))
	results := make(chan roundResult, cfg.MaxHedges+2)
	var flight [maxRound]exchange
	n := 0 // attempts launched
	launch := func(hedge bool) bool {
		body := c.body
		if n > 0 && c.getBody != nil {
			b, err := c.getBody()
			if err != nil {
				return false
			}
			body = b
		}
		c.attempt++
		x := &flight[n]
		*x = exchange{n: c.attempt, hedge: hedge}
		actx, cancel := context.WithCancel(ctx)
		x.cancel = cancel
		if d := t.Policy.AttemptTimeout; d > 0 {
			x.timer = clock.AfterFunc(clk, d, cancel)
		}
		r := c.req.WithContext(actx)
		r.Body = body
		if c.getBody != nil {
			r.GetBody = c.getBody
		}
		if t.Tracer != nil {
			r, x.trace = t.Tracer.StartAttempt(r, AttemptInfo{Attempt: x.n, Hedge: hedge})
		}
		x.start = clk.Now()
		go attempt(t, r, x.timer, n, results)
		n++
		return true
	}
	delay := h.delay(cfg)
	timer := clock.AfterFunc(clk, delay, func() { results <- roundResult{i: -1} })
	// The timer runs before the first attempt goes out, so a test that sees
	// the attempt arrive knows the timer is set.
	launch(false)
	hedges, inflight := 0, 1
	for {
		r := <-results
		if r.i < 0 {
			timer = nil
			if hedges < cfg.MaxHedges && c.mayHedge(h) && launch(true) {
				hedges++
				inflight++
				c.observe(Event{Kind: EventHedge, Attempt: c.attempt, Wait: delay, Hedge: true})
				c.logHedge(ctx, delay)
				if hedges < cfg.MaxHedges {
					timer = clock.AfterFunc(clk, delay, func() { results <- roundResult{i: -1} })
				}
			}
			continue
		}
		inflight--
		x := &flight[r.i]
		if r.err == nil {
			h.lat.record(clk.Now().Sub(x.start))
		}
		outcome := outcomeOf(ctx, r.resp, r.err)
		c.observe(Event{Kind: EventAttempt, Attempt: x.n, StatusCode: statusOf(r.resp), Err: r.err,
			Outcome: outcome, Hedge: x.hedge})
		won := r.err == nil && !t.retryStatus(r.resp.StatusCode)
		if !won && inflight > 0 && ctx.Err() == nil {
			// A failure while another attempt is in flight does not end
			// the round.
			settle(x, r, outcome)
			continue
		}
		if timer != nil && !timer.Stop() {
			inflight++ // its signal is on the way: the reaper takes it too
		}
		for i := range n {
			if i != r.i {
				flight[i].cancel()
			}
		}
		if inflight > 0 {
			go reap(results, inflight, flight, n)
		}
		if won && x.hedge {
			c.observe(Event{Kind: EventHedgeWon, Attempt: x.n, StatusCode: r.resp.StatusCode, Hedge: true})
		}
		c.cancel, c.timer, c.trace = x.cancel, nil, x.trace
		return r.resp, r.err
	}
}

// attempt sends one attempt of a hedged round and reports on results.
func attempt(t *Transport, r *http.Request, timer clock.Timer, i int, results chan<- roundResult) {
	resp, err := t.send(r, timer)
	results <- roundResult{i: i, resp: resp, err: err}
}

// settle ends an attempt of a round that lost or failed while another went
// on: its response is closed, its context and trace ended.
func settle(x *exchange, r roundResult, o breaker.Outcome) {
	if r.resp != nil {
		_, _ = io.CopyN(io.Discard, r.resp.Body, drainLimit)
		r.resp.Body.Close()
	}
	if x.timer != nil {
		x.timer.Stop()
	}
	x.cancel()
	if x.trace != nil {
		x.trace(AttemptResult{StatusCode: statusOf(r.resp), Err: r.err, Outcome: o})
	}
}

// reap waits for the n outstanding results of a finished round (cancelled
// losers, a late timer signal) and settles the losers. It gets the round's
// exchanges by value: the round's own are gone with its stack.
func reap(results <-chan roundResult, n int, flight [maxRound]exchange, launched int) {
	for range n {
		r := <-results
		if r.i < 0 || r.i >= launched {
			continue
		}
		if r.resp != nil {
			r.resp.Body.Close() // cancelled: no drain, the connection goes
			r.resp = nil
		}
		settle(&flight[r.i], r, breaker.Neutral)
	}
}

// logHedge writes a Debug record "HTTP hedge" for a hedge just sent.
func (c *call) logHedge(ctx context.Context, after time.Duration) {
	logger := c.t.Policy.Logger
	if logger == nil {
		logger = slog.Default()
	}
	if logger.Enabled(ctx, slog.LevelDebug) {
		logger.LogAttrs(ctx, slog.LevelDebug, "HTTP hedge", slog.String("method", c.req.Method),
			slog.String("url", RedactURL(c.req.URL)), slog.Int("attempt", c.attempt), slog.Duration("after", after))
	}
}
