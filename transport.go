package httpretry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/clock"
)

// DefaultRetryStatuses are the status codes a Transport retries when
// Transport.RetryStatuses is nil: the ones a later attempt can change.
var DefaultRetryStatuses = []int{
	http.StatusRequestTimeout,      // 408
	http.StatusTooManyRequests,     // 429
	http.StatusInternalServerError, // 500
	http.StatusBadGateway,          // 502
	http.StatusServiceUnavailable,  // 503
	http.StatusGatewayTimeout,      // 504
}

const (
	// DefaultMaxReplayBody is how much of a request body without GetBody a
	// Transport buffers so that it can send it again: 1 MiB.
	DefaultMaxReplayBody = 1 << 20
	// DefaultMaxHosts bounds the per-host breakers and budgets.
	DefaultMaxHosts = 1024
	// DefaultStallTimeout is how long a response body may make no progress
	// while it is being read before the attempt counts as failed: 60 s.
	DefaultStallTimeout = 60 * time.Second
	// DefaultMaxResumes bounds the range requests that continue one cut
	// response body: 20, wget's default number of tries.
	DefaultMaxResumes = 20
	// DefaultMaxCheckBody bounds the body a checked attempt reads: 16 MiB.
	DefaultMaxCheckBody = 16 << 20
	// drainLimit is how much of a discarded response is read so its
	// connection can be reused; past it, closing the connection is cheaper.
	drainLimit = 64 << 10
)

// Transport is an http.RoundTripper that retries, with a circuit breaker and
// a retry budget per host. Its zero value works: &Transport{} retries over
// http.DefaultTransport with the default Policy (3 attempts, jittered waits
// of 0.5-10 s), a breaker per host with the seed's settings (open after 5
// failed calls, probe after 120 s) and the default BudgetConfig (retries at
// most 20% of calls plus 10 per second).
//
// It keeps the RoundTripper contract: it never modifies the caller's
// request, always closes the request body, and returns a response or an
// error, never both. When the retries run out on a response, that last
// response is returned unchanged with its body unread, as net/http would
// return it; when they run out on an error, the error is a *RetryError
// wrapping the last one.
//
// What is retried. Transient network errors (IsTransient) and the status
// codes in RetryStatuses. A request is sent again only if it is idempotent
// (GET, HEAD, OPTIONS, TRACE, PUT, DELETE, or any request with an
// Idempotency-Key or X-Idempotency-Key header), or if the failure proves it
// never reached the server (the connection was refused or could not be
// dialled), or if RetryNonIdempotent is set. Its body must be replayable: via
// req.GetBody, or buffered when no larger than MaxReplayBody; a larger body
// is streamed once and a failure is not retried, with the reason in the error.
//
// What the breaker counts. Transient network errors and 5xx responses are
// failures; other responses, 4xx included, prove the server alive and are
// successes; 429 and a cancelled caller are neutral, and so is a call whose
// retry the budget refused while the upstream is not failing (the budget,
// not the breaker, is shedding that load; see Budget). By default a logical
// call (all its attempts) is one outcome, as in the seed; BreakerPerAttempt
// counts each attempt instead. A call the breaker refuses fails at once with
// an error matching breaker.ErrOpen that says when the next probe is due.
//
// Rate limits. A 429, or a 503 with Retry-After, throttles its whole host,
// not just the call that got it: until the hint has passed no attempt to
// that host is sent, first attempts included, and then attempts go out
// paced, at half the rate the host was called at, then at the rate it
// shows it delivers, probing a little above it. A call waits for its turn
// when the turn comes within its deadline, MaxElapsed and MaxRetryAfter,
// and otherwise fails at once with a *ThrottleError (matching ErrThrottled)
// that carries the wait. NoThrottle turns this off.
//
// Timeouts. Policy.AttemptTimeout bounds the wait for an attempt's response
// headers; StallTimeout bounds how long a body may make no progress while
// the caller reads it; the request's context and Policy.MaxElapsed bound the
// whole call. A body that keeps flowing is never cut by a timer of the
// Transport's, however long it takes.
//
// Bodies. A GET body that fails after its headers (a reset, a cut, a stall)
// is continued by a range request when the response allows it: a 200 with
// Accept-Ranges: bytes and a strong validator (a strong ETag, or a
// Last-Modified at least a second older than its Date), not transparently
// decompressed by net/http. The range request carries If-Range, and only a
// 206 whose Content-Range starts where the caller stopped and whose length
// matches is spliced in; anything else ends the read with a *BodyError that
// says why, never with mixed bytes. Resumes go through the retry machinery
// (waits, budget, breaker, Observer, log); a resume after which bytes
// arrived does not use up an attempt, and MaxResumes caps them all. The
// breaker hears about a returned 2xx-4xx response when its body ends: a
// success at EOF or Close, a failure if the body could not be completed.
// With Check set, each attempt reads its whole body before RoundTrip
// returns, and a body the check rejects is a failed attempt.
//
// A Transport must not be copied after first use. Change its fields only
// before that.
type Transport struct {
	// Base sends each attempt. nil means http.DefaultTransport.
	Base http.RoundTripper

	// Policy sets attempts, waits, Retry-After limits, the per-attempt
	// timeout (Policy.AttemptTimeout, which here bounds the wait for the
	// response headers), logging and the clock. Its RetryIf adds retryable
	// errors; its OnRetry is called before each wait.
	Policy Policy

	// StallTimeout fails a response body that makes no progress for this
	// long while the caller is blocked reading it (detected within an eighth
	// of it more): the read is then resumed or fails, as for a cut. Time the
	// caller spends not reading never counts. 0 means DefaultStallTimeout
	// (60 s); negative turns it off. Responses of type text/event-stream,
	// where silence is normal, are exempt.
	StallTimeout time.Duration

	// MaxResumes bounds the range requests that may continue one response
	// body. 0 means DefaultMaxResumes (20); negative turns resuming off.
	MaxResumes int

	// Check, when set, makes every attempt whose status is not retried read
	// the whole response body (at most MaxCheckBody bytes) before RoundTrip
	// returns, and judge the response by it. A non-nil error makes the
	// attempt a failure: retried when the request may be retried, counted
	// by the breaker, and returned as a *CheckError (inside a *RetryError
	// when the attempts ran out). Wrap the error with Permanent for a
	// response that no retry can mend: it is returned at once and the
	// breaker does not count it. The returned response's body is the bytes
	// read, and Check may keep the slice. CheckJSON is a ready-made check.
	Check func(resp *http.Response, body []byte) error
	// MaxCheckBody bounds the body a checked attempt reads; a longer body
	// fails the check with ErrCheckBodyTooLarge. 0 means
	// DefaultMaxCheckBody (16 MiB).
	MaxCheckBody int64

	// RetryStatuses lists the status codes to retry. nil means
	// DefaultRetryStatuses; an empty non-nil slice retries no status.
	RetryStatuses []int

	// MaxReplayBody is the largest request body without GetBody that is
	// buffered for replay. 0 means DefaultMaxReplayBody; negative means never
	// buffer, so only requests with GetBody (or no body) are retried.
	MaxReplayBody int64

	// RetryNonIdempotent retries POST, PATCH and other non-idempotent
	// requests even when they may have reached the server. Only set it when
	// the server deduplicates them.
	RetryNonIdempotent bool

	// Breaker, when set, is the one breaker for every host, like the seed's
	// process-wide breaker (horde.APIBreaker). When nil, each host gets its
	// own breaker from BreakerConfig, named after the host.
	Breaker breaker.CircuitBreaker
	// BreakerConfig configures the per-host breakers. Its zero value is the
	// seed's breaker. A nil Clock defaults to Policy.Clock.
	BreakerConfig breaker.Config
	// NoBreaker turns the circuit breaker off.
	NoBreaker bool
	// BreakerPerAttempt makes every attempt, not every logical call, one
	// outcome for the breaker.
	BreakerPerAttempt bool

	// Budget configures the per-host retry budget. A nil Clock defaults to
	// Policy.Clock.
	Budget BudgetConfig
	// NoBudget turns the retry budget off.
	NoBudget bool

	// NoThrottle turns off the host-wide handling of rate limits (see
	// "Rate limits" above): each call then honours Retry-After on its own.
	NoThrottle bool

	// MaxHosts bounds how many hosts keep a breaker and a budget; the least
	// recently used are forgotten past it. 0 means DefaultMaxHosts.
	MaxHosts int

	// Observer, when set, is told of every attempt, retry and refusal: the
	// hook for metrics. It runs on the request's goroutine and must be fast.
	Observer func(Event)

	// Tracer, when set, is told when each attempt starts and ends: the hook
	// for tracing, one span per attempt. nil costs nothing.
	Tracer Tracer

	// Hedge, when set, sends a second attempt of a request that may be sent
	// twice when its response headers are late (see HedgeConfig); nil, the
	// default, never hedges. &HedgeConfig{} hedges once after an adaptive
	// delay, within 10% of calls per host.
	Hedge *HedgeConfig

	once      sync.Once
	initErr   error
	retryOn   [10]uint64 // bitset of the status codes to retry, 0-639
	breakers  *breaker.Set
	hosts     hostTable[*hostState] // when there is no per-host breaker to keep the state beside
	budgetCfg BudgetConfig
	hedge     *HedgeConfig // normalized
	watch     watchdog
}

// NewClient returns an *http.Client whose transport is a zero Transport:
// the default policy, per-host breakers and the default retry budget.
func NewClient() *http.Client { return &http.Client{Transport: &Transport{}} }

// Validate reports the first invalid setting, by field name, or nil. A
// Transport with an invalid setting fails every request with this error.
func (t *Transport) Validate() error {
	if err := t.Policy.Validate(); err != nil {
		return nested("Transport.", err)
	}
	if !t.NoBudget {
		if err := t.Budget.Validate(); err != nil {
			return nested("Transport.Budget.", err, "BudgetConfig.")
		}
	}
	for _, code := range t.RetryStatuses {
		if code < 100 || code > 599 {
			return fmt.Errorf("httpretry: Transport.RetryStatuses holds %d, not an HTTP status code", code)
		}
	}
	if t.MaxHosts < 0 {
		return fmt.Errorf("httpretry: Transport.MaxHosts must not be negative (got %d)", t.MaxHosts)
	}
	if t.MaxCheckBody < 0 {
		return fmt.Errorf("httpretry: Transport.MaxCheckBody must not be negative (got %d)", t.MaxCheckBody)
	}
	if t.Hedge != nil {
		if err := t.Hedge.Validate(); err != nil {
			return nested("Transport.Hedge.", err, "HedgeConfig.")
		}
	}
	return nil
}

// nested renames the field in a sub-config's error so that it reads as the
// caller wrote it: "Policy.MinWait" becomes "Transport.Policy.MinWait".
func nested(path string, err error, drop ...string) error {
	msg := strings.TrimPrefix(err.Error(), "httpretry: ")
	for _, d := range drop {
		msg = strings.TrimPrefix(msg, d)
	}
	return errors.New("httpretry: " + path + msg)
}

func (t *Transport) init() error {
	t.once.Do(func() {
		if t.initErr = t.Validate(); t.initErr != nil {
			return
		}
		codes := t.RetryStatuses
		if codes == nil {
			codes = DefaultRetryStatuses
		}
		for _, c := range codes {
			t.retryOn[c/64] |= 1 << (c % 64)
		}
		maxHosts := t.MaxHosts
		if maxHosts == 0 {
			maxHosts = DefaultMaxHosts
		}
		if t.Hedge != nil {
			h := t.Hedge.normalized()
			t.hedge = &h
		}
		if !t.NoBudget {
			t.budgetCfg = t.Budget
			if t.budgetCfg.Clock == nil {
				t.budgetCfg.Clock = t.Policy.Clock
			}
		}
		if !t.NoBreaker && t.Breaker == nil {
			cfg := t.BreakerConfig
			if cfg.Clock == nil {
				cfg.Clock = t.Policy.Clock
			}
			if cfg.Logger == nil {
				cfg.Logger = t.Policy.Logger
			}
			if !t.NoThrottle {
				cfg.OnStateChange = t.wakeOnOpen(cfg.OnStateChange)
			}
			sc := breaker.SetConfig{Config: cfg, MaxBreakers: maxHosts}
			if t.needsHostState() {
				sc.NewValue = func(string) any { return t.newHostState() }
			}
			t.breakers, t.initErr = breaker.NewSet(sc)
			if t.initErr != nil {
				t.initErr = fmt.Errorf("httpretry: Transport.BreakerConfig: %w", t.initErr)
				return
			}
		} else if t.needsHostState() {
			t.hosts.init(maxHosts, t.newHostState)
		}
		stall := t.StallTimeout
		if stall == 0 {
			stall = DefaultStallTimeout
		}
		t.watch.init(clock.Or(t.Policy.Clock), stall)
	})
	return t.initErr
}

func (t *Transport) maxResumes() int {
	if t.MaxResumes == 0 {
		return DefaultMaxResumes
	}
	return t.MaxResumes
}

func (t *Transport) maxCheckBody() int64 {
	if t.MaxCheckBody == 0 {
		return DefaultMaxCheckBody
	}
	return t.MaxCheckBody
}

// Breakers returns the per-host breakers, for a heartbeat or metrics; nil
// when the breaker is off or one shared Breaker is set.
func (t *Transport) Breakers() *breaker.Set {
	if t.init() != nil {
		return nil
	}
	return t.breakers
}

// CloseIdleConnections closes the idle connections of the base transport, so
// http.Client.CloseIdleConnections reaches it.
func (t *Transport) CloseIdleConnections() {
	if ci, ok := t.base().(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return http.DefaultTransport
}

func (t *Transport) retryStatus(code int) bool {
	return code >= 0 && code < 64*len(t.retryOn) && t.retryOn[code/64]&(1<<(code%64)) != 0
}

// RoundTrip sends req, retrying as the Transport's settings allow.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.init(); err != nil {
		closeBody(req)
		return nil, err
	}
	if req.URL == nil {
		closeBody(req)
		return nil, errors.New("httpretry: request has no URL")
	}
	c := call{t: t, req: req, host: req.URL.Host}
	return c.run()
}

// call is one logical request and its attempts. It lives on the stack of
// RoundTrip, so the common path (first attempt succeeds) allocates nothing;
// a returned body that needs it (see respBody) takes a copy along.
type call struct {
	t      *Transport
	req    *http.Request
	host   string
	cb     breaker.CircuitBreaker
	permit breaker.Permit
	hs     *hostState // nil when no per-host state is kept
	budget *Budget
	turn   turn // the throttle's pace the current attempt was sent at

	body     io.ReadCloser                 // the body of the next attempt
	getBody  func() (io.ReadCloser, error) // nil: the body cannot be replayed
	noReplay string                        // why, when there is a body

	trace   func(AttemptResult) // ends the current attempt's trace, if a Tracer started one
	clk     clock.Clock         // set once a wait or a timer needs it
	start   time.Time           // when the call began, for MaxElapsed
	prev    time.Duration       // the last wait
	attempt int                 // attempts made, resumes included
	cancel  context.CancelFunc  // ends the current attempt's context, if it has one
	timer   clock.Timer         // the current attempt's header timeout, until headers came
}

func (c *call) run() (*http.Response, error) {
	t, req := c.t, c.req
	ctx := req.Context()
	var hs *hostState
	if c.cb, hs = t.lookup(c.host); c.cb != nil {
		p, err := c.cb.Acquire()
		if err != nil {
			closeBody(req)
			c.observe(Event{Kind: EventRefused, Err: err, Reason: StopBreakerOpen})
			return nil, err
		}
		c.permit = p
	}
	c.hs = hs
	if hs != nil {
		c.budget = hs.budget
	}
	if err := c.prepareBody(); err != nil {
		c.permit.Release()
		return nil, err
	}
	p := &t.Policy
	if p.MaxElapsed > 0 {
		c.start = c.clock().Now()
	}
	if err := c.awaitTurn(ctx); err != nil {
		return nil, c.refuseFirst(err)
	}
	if c.budget != nil {
		c.budget.Deposit()
	}
	for round := 1; ; round++ {
		var resp *http.Response
		var err error
		hedged := c.hedgeable(hs)
		if hedged {
			resp, err = c.hedged(ctx, hs.hedge) // it reports each attempt itself
		} else {
			c.attempt++
			resp, err = t.send(c.startAttempt(c.attemptRequest(ctx, c.attempt), AttemptInfo{Attempt: c.attempt}), c.timer)
			c.timer = nil
		}
		attempt := c.attempt
		outcome := outcomeOf(ctx, resp, err)
		if !hedged {
			c.observe(Event{Kind: EventAttempt, Attempt: attempt, StatusCode: statusOf(resp), Err: err, Outcome: outcome})
		}
		c.report(ctx, round, resp, err)
		if !c.retryable(ctx, resp, err) {
			return c.finish(resp, err, outcome)
		}
		failure := err
		if resp != nil {
			failure = &StatusError{Response: resp}
		}
		wait, stop := c.decide(ctx, round, attempt, failure, outcome)
		if stop != nil {
			return c.end(resp, true, err, c.budgetOutcome(stop, outcome), stop)
		}
		c.endTrace(statusOf(resp), err, outcome)
		whole := true
		if resp != nil {
			whole = t.detach(resp)
		}
		c.endAttempt()
		p.announce(ctx, attempt, wait, failure,
			slog.String("method", req.Method), slog.String("url", RedactURL(req.URL)), slog.Int("status", statusOf(resp)))
		c.observe(Event{Kind: EventRetry, Attempt: attempt, StatusCode: statusOf(resp), Err: err, Wait: wait})
		if serr := clock.Sleep(ctx, c.clk, wait); serr != nil {
			c.permit.Release()
			return nil, c.giveUp(resp, err, &RetryError{Err: failure, Attempts: attempt, Reason: StopCanceled, cause: serr}, false, 0)
		}
		if open := c.openedMeanwhile(); open != nil {
			// The breaker opened during the wait: the next attempt would
			// only add to the load it is there to shed.
			return c.end(resp, whole, err, outcome,
				&RetryError{Err: failure, Attempts: attempt, Reason: StopBreakerOpen, cause: open})
		}
		if terr := c.awaitTurn(ctx); terr != nil {
			stop := c.turnStop(failure, attempt, terr)
			if stop.Reason == StopCanceled {
				c.permit.Release()
				return nil, c.giveUp(resp, err, stop, false, 0)
			}
			return c.end(resp, whole, err, outcome, stop)
		}
		c.prev = wait
		if stop := c.nextBody(attempt); stop != nil {
			c.permit.Release()
			return nil, c.giveUp(resp, nil, stop, false, 0)
		}
	}
}

func (c *call) clock() clock.Clock {
	if c.clk == nil {
		c.clk = clock.Or(c.t.Policy.Clock)
	}
	return c.clk
}

// send makes one attempt: the request under its header timeout (timer,
// which cancels the attempt's context when it fires), then, for a checked
// Transport, the body and its check. It touches nothing of the call, so a
// hedged round runs it on goroutines of its own.
func (t *Transport) send(r *http.Request, timer clock.Timer) (*http.Response, error) {
	resp, err := t.base().RoundTrip(r)
	if timer != nil && !timer.Stop() {
		// The header timeout fired, and cancelled the attempt: whatever
		// came back is cut or about to be.
		if resp != nil {
			resp.Body.Close()
			resp = nil
		}
		err = &TimeoutError{Limit: t.Policy.AttemptTimeout}
	}
	if err == nil && t.Check != nil && resp.StatusCode != http.StatusSwitchingProtocols && !t.retryStatus(resp.StatusCode) {
		return t.check(resp)
	}
	return resp, err
}

// end finishes a call that gives up on a retryable failure: it returns the
// last response when there is a whole one to return, as net/http would,
// else the error.
func (c *call) end(resp *http.Response, whole bool, err error, outcome breaker.Outcome, stop *RetryError) (*http.Response, error) {
	c.giveUp(resp, err, stop, false, 0)
	if resp != nil && whole {
		return c.finish(resp, nil, outcome)
	}
	c.finish(nil, err, outcome)
	return nil, stop
}

// giveUp tells the Observer that the loop ends, and returns its error.
func (c *call) giveUp(resp *http.Response, err error, stop *RetryError, resume bool, offset int64) *RetryError {
	c.observe(Event{Kind: EventGiveUp, Attempt: stop.Attempts, StatusCode: statusOf(resp), Err: err,
		Reason: stop.Reason, Resume: resume, Offset: offset})
	return stop
}

// openedMeanwhile returns the breaker's refusal when, with one outcome per
// logical call, another call opened it since this one was admitted.
func (c *call) openedMeanwhile() error {
	if c.cb == nil || c.t.BreakerPerAttempt {
		return nil
	}
	return openError(c.cb)
}

// retryable reports whether the attempt's result calls for another one,
// before any limit is considered.
func (c *call) retryable(ctx context.Context, resp *http.Response, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if err != nil {
		if ce, ok := errors.AsType[*CheckError](err); ok {
			return !ce.permanent
		}
		return IsTransient(err) || c.t.Policy.RetryIf != nil && c.t.Policy.RetryIf(err)
	}
	return c.t.retryStatus(resp.StatusCode)
}

// decide applies every limit to a retryable failure: idempotency, body
// replay, the policy's attempts and waits, the breaker, the budget. It
// returns the wait before the next attempt, or why there is none. n is the
// attempt number the policy counts (for a resumed body, the failures since
// it last made progress); attempt is the number of attempts made in all.
func (c *call) decide(ctx context.Context, n, attempt int, failure error, outcome breaker.Outcome) (time.Duration, *RetryError) {
	t := c.t
	if !t.RetryNonIdempotent && !idempotent(c.req) && !neverSent(failure) {
		return 0, &RetryError{Err: failure, Attempts: attempt, Reason: StopNotIdempotent}
	}
	if c.getBody == nil && c.noReplay != "" {
		return 0, &RetryError{Err: failure, Attempts: attempt, Reason: StopBodyNotReplayable,
			cause: errors.New(c.noReplay)}
	}
	wait, stop := t.Policy.plan(ctx, c.clock(), n, c.prev, c.start, failure)
	if stop != nil {
		stop.Attempts = attempt
		return 0, stop
	}
	// Another call may have opened the breaker while this one was failing:
	// retrying into an open breaker is the storm it exists to stop. This
	// call's own outcome still reaches it, and is ignored there if it
	// belongs to the state before the trip. The check is made again after
	// the wait.
	if open := c.openedMeanwhile(); open != nil {
		return 0, &RetryError{Err: failure, Attempts: attempt, Reason: StopBreakerOpen, cause: open}
	}
	if c.budget != nil && !c.budget.Withdraw() {
		return 0, &RetryError{Err: failure, Attempts: attempt, Reason: StopBudget, cause: ErrBudgetExhausted}
	}
	if c.cb != nil && (t.BreakerPerAttempt || c.permit.Probe()) {
		// Per attempt, each attempt reports and asks again. A half-open
		// probe is not retried: its failure must reach the breaker now.
		// Once reported, the old permit ignores finish's Record.
		c.permit.Record(outcome)
		p, berr := c.cb.Acquire()
		if berr != nil {
			return 0, &RetryError{Err: failure, Attempts: attempt, Reason: StopBreakerOpen, cause: berr}
		}
		c.permit = p
	}
	return wait, nil
}

// finish returns the call's result. A 2xx-4xx response with a body to read
// gets a respBody, which reports the call's outcome to the breaker when the
// body ends and ends the attempt's context then; anything else reports now.
func (c *call) finish(resp *http.Response, err error, outcome breaker.Outcome) (*http.Response, error) {
	if resp != nil && outcome == breaker.Success && hasBody(resp) && resp.StatusCode != http.StatusSwitchingProtocols &&
		c.t.Check == nil { // a checked body is in memory already
		resp.Body = newRespBody(c, resp)
		return resp, nil
	}
	c.permit.Record(outcome)
	c.endTrace(statusOf(resp), err, outcome)
	if c.cancel != nil {
		if rw, ok := bodyWriter(resp); ok {
			// A protocol switch (101) hands over a writable connection,
			// which must stay writable; the attempt's context lasts until
			// it is closed.
			resp.Body = cancelOnCloseRW{&cancelOnClose{ReadCloser: rw, cancel: c.cancel}, rw}
		} else if hasBody(resp) {
			resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: c.cancel}
		} else {
			c.cancel()
		}
		c.cancel = nil
	}
	return resp, err
}

func hasBody(resp *http.Response) bool {
	return resp != nil && resp.Body != nil && resp.Body != http.NoBody
}

func (c *call) endAttempt() {
	if c.cancel != nil {
		c.cancel()
		c.cancel = nil
	}
}

// attemptContext returns the context of the next attempt: ctx itself, or,
// with a per-attempt timeout, a child that the timeout cancels unless the
// response headers come first (send stops the timer then).
func (c *call) attemptContext(ctx context.Context) context.Context {
	timeout := c.t.Policy.AttemptTimeout
	if timeout <= 0 {
		return ctx
	}
	ctx, c.cancel = context.WithCancel(ctx)
	c.timer = clock.AfterFunc(c.clock(), timeout, c.cancel)
	return ctx
}

// attemptRequest returns the request for one attempt: the caller's own
// request when nothing needs to change (the first attempt, no per-attempt
// timeout, body untouched), else a shallow copy with its own body and
// context. A replayable body comes with a GetBody, so that net/http can
// resend it by itself after a GOAWAY or a dead reused connection. The
// caller's request is never modified.
func (c *call) attemptRequest(ctx context.Context, attempt int) *http.Request {
	req := c.req
	if attempt == 1 && c.t.Policy.AttemptTimeout <= 0 && c.body == req.Body {
		return req
	}
	r := req.WithContext(c.attemptContext(ctx))
	r.Body = c.body
	if c.getBody != nil {
		r.GetBody = c.getBody
	}
	return r
}

// prepareBody makes the request body replayable when it can be: through
// GetBody, or by buffering up to MaxReplayBody. A larger body is streamed
// once, and the reason it cannot be replayed is kept for the error.
func (c *call) prepareBody() error {
	req := c.req
	c.body = req.Body
	if req.Body == nil || req.Body == http.NoBody {
		return nil // nothing to replay; nextBody reuses the empty body
	}
	if req.GetBody != nil {
		c.getBody = req.GetBody
		return nil
	}
	limit := c.t.MaxReplayBody
	if limit == 0 {
		limit = DefaultMaxReplayBody
	}
	if limit < 0 {
		c.noReplay = "request body has no GetBody and MaxReplayBody is negative"
		return nil
	}
	if req.ContentLength > limit {
		c.noReplay = fmt.Sprintf("request body of %d bytes has no GetBody and exceeds MaxReplayBody (%d bytes)", req.ContentLength, limit)
		return nil
	}
	buf, err := io.ReadAll(io.LimitReader(req.Body, limit+1))
	if err != nil {
		req.Body.Close()
		return fmt.Errorf("httpretry: reading the request body: %w", err)
	}
	if int64(len(buf)) > limit {
		// Longer than announced: send what was read, then the rest, once.
		c.body = &prefixedBody{Reader: io.MultiReader(bytes.NewReader(buf), req.Body), closer: req.Body}
		c.noReplay = fmt.Sprintf("request body has no GetBody and exceeds MaxReplayBody (%d bytes)", limit)
		return nil
	}
	req.Body.Close()
	c.getBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	c.body, _ = c.getBody()
	return nil
}

func (c *call) nextBody(attempt int) *RetryError {
	if c.getBody == nil {
		c.body = c.req.Body // nil or http.NoBody
		return nil
	}
	body, err := c.getBody()
	if err != nil {
		return &RetryError{Err: err, Attempts: attempt, Reason: StopBodyNotReplayable,
			cause: fmt.Errorf("GetBody failed: %w", err)}
	}
	c.body = body
	return nil
}

type prefixedBody struct {
	io.Reader
	closer io.Closer
}

func (b *prefixedBody) Close() error { return b.closer.Close() }

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// cancelOnCloseRW is cancelOnClose for a body that must stay writable.
type cancelOnCloseRW struct {
	*cancelOnClose
	io.Writer
}

func bodyWriter(resp *http.Response) (io.ReadWriteCloser, bool) {
	if resp == nil || resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, false
	}
	rw, ok := resp.Body.(io.ReadWriteCloser)
	return rw, ok
}

// idempotent reports whether sending req twice has the effect of sending it
// once (RFC 9110 section 9.2.2), or the caller vouched for it with a key.
func idempotent(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != ""
}

// neverSent reports errors that prove the request never reached the server:
// the connection was refused or could not be dialled, an HTTP/2 server
// refused the stream or announced with GOAWAY that it would not process it,
// or net/http wanted to resend a request it had not delivered but could not
// rewind its body. A response, or a body a check rejected, proves the
// opposite.
func neverSent(err error) bool {
	if err == nil {
		return false
	}
	if _, ok := errors.AsType[*StatusError](err); ok {
		return false
	}
	if _, ok := errors.AsType[*CheckError](err); ok {
		return false
	}
	if op, ok := errors.AsType[*net.OpError](err); ok && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || containsAny(err.Error(), neverSentMessages)
}

// neverSentMessages are net/http's texts for requests it knows the server
// did not process; the errors themselves are unexported.
var neverSentMessages = []string{
	"REFUSED_STREAM",
	// http2: a stream above the GOAWAY's last stream ID, or a connection
	// no longer usable for new streams.
	"Transport received Server's graceful shutdown GOAWAY",
	"http2: client conn not usable",
	// http2 wraps the two above in this when the body cannot be rewound.
	"after Request.Body was written; define Request.GetBody",
	// HTTP/1: a reused connection died before the request was written.
	"cannot rewind body after connection loss",
}

// openError returns an *breaker.OpenError when cb can tell, without
// admitting anyone, that it is open now; nil otherwise.
func openError(cb breaker.CircuitBreaker) error {
	s, ok := cb.(interface {
		State() breaker.State
		UntilRetry() (time.Duration, bool)
	})
	if !ok || s.State() != breaker.Open {
		return nil
	}
	wait, _ := s.UntilRetry()
	return &breaker.OpenError{Name: cb.Name(), State: breaker.Open, RetryIn: wait}
}

// outcomeOf is what one attempt tells the breaker about the upstream.
func outcomeOf(ctx context.Context, resp *http.Response, err error) breaker.Outcome {
	switch {
	case ctx.Err() != nil:
		return breaker.Neutral
	case err != nil:
		if ce, ok := errors.AsType[*CheckError](err); ok && !ce.permanent || IsTransient(err) {
			return breaker.Failure
		}
		return breaker.Neutral
	case resp.StatusCode >= 500:
		return breaker.Failure
	case resp.StatusCode == http.StatusTooManyRequests:
		return breaker.Neutral
	}
	return breaker.Success
}

func statusOf(resp *http.Response) int {
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}

// detach reads a failed response into memory, up to drainLimit, and closes
// it, so that its connection goes back to the pool during the wait while
// the response can still be returned if the loop ends after the wait. It
// reports whether the whole body fit; past the limit, or when the body
// fails or stalls, the rest is cut off (closing that one connection, never
// the pool) and the body reads as an error.
func (t *Transport) detach(resp *http.Response) bool {
	if !hasBody(resp) {
		return true
	}
	buf, err := t.readAll(resp.Body, drainLimit, resp.ContentLength)
	resp.Body.Close()
	if err != nil || len(buf) > drainLimit {
		resp.Body = io.NopCloser(errReader{errDiscarded})
		return false
	}
	resp.Body = io.NopCloser(bytes.NewReader(buf))
	return true
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

var errDiscarded = errors.New("httpretry: the body of this failed attempt was larger than 64 KiB and was discarded before retrying")

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}
