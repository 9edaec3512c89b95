// Package breaker is a circuit breaker: it notices that an upstream is down
// and refuses calls to it for a while, so that callers fail fast and the
// upstream gets room to recover.
//
// A Breaker is Closed while calls succeed. FailureThreshold consecutive
// failures (or, optionally, a failure ratio over a sliding window) open it:
// every call is refused with an *OpenError for Cooldown. Once the cooldown has
// passed it is HalfOpen: it admits HalfOpenProbes callers and refuses the
// rest; the probes succeeding close it, a probe failing opens it again. The
// state is a function of time: State reports HalfOpen as soon as the cooldown
// has passed, whoever calls first.
//
// There are two ways to use it. The seed's: check Allow, make the call, then
// RecordSuccess or RecordFailure. Or the permit's: Acquire, make the call,
// then report on the Permit. A permit remembers the generation of the state it
// was issued in (every transition starts a new one), so an outcome that
// arrives after the breaker has moved on is ignored: a slow request started
// before the trip cannot extend the cooldown or trip the breaker again.
//
// A Set keeps one breaker per upstream, and Heartbeat serves their Status as
// JSON for a /heartbeat endpoint.
package breaker

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hordekit/httpretry/clock"
)

// The breaker's state, its consecutive failure count and its generation live
// in one atomic word, so that the closed path is one load and a failure one
// compare-and-swap that checks the generation in the same step.
//
//	bits 0-1   State
//	bits 2-25  consecutive failures (saturating)
//	bits 26-63 generation
const (
	stateMask   = 1<<2 - 1
	failShift   = 2
	failBits    = 24
	failMask    = (1<<failBits - 1) << failShift
	maxFailures = 1<<failBits - 1
	genShift    = failShift + failBits
)

func pack(s State, failures int, gen uint64) uint64 {
	return gen<<genShift | uint64(min(failures, maxFailures))<<failShift | uint64(s)
}

func stateOf(w uint64) State  { return State(w & stateMask) }
func failuresOf(w uint64) int { return int(w & failMask >> failShift) }
func genOf(w uint64) uint64   { return w >> genShift }

// Breaker is a circuit breaker for one upstream. It is safe for concurrent
// use. Make one with New.
//
// The closed path (Allow, RecordSuccess, Acquire, Done(true) with no failures
// pending) only loads one atomic word: it takes no lock, reads no clock,
// writes no shared memory and allocates nothing, so it costs a few
// nanoseconds and does not slow down as cores are added. A failure is one
// compare-and-swap. Transitions take a mutex. The exception is FailureRatio:
// with it set, every closed-path outcome also reads the clock and adds to a
// shared window.
//
// OnStateChange and the transition logs run with no lock held, in the order
// of the transitions. A transition queues its event under the mutex; after
// unlocking, the goroutine that finds no delivery under way delivers the
// queue, including events queued meanwhile by others (or by the hook itself).
// So a hook usually runs on the goroutine that caused the transition, but
// may run on another that was delivering at the time, slightly later.
//
// The move from Open to HalfOpen is made (and its hook called) by the first
// Allow or Acquire after the cooldown; readers such as State report it from
// the clock before then.
type Breaker struct {
	// word is the packed state (see pack). Read on every call.
	word atomic.Uint64
	// openUntil is when the current open period ends, in nanoseconds since
	// epoch. Atomic so that refusing a call while open needs no lock.
	openUntil atomic.Int64

	cfg   Config
	clock clock.Clock
	// epoch anchors the nanosecond times above; subtracting from it keeps the
	// monotonic clock reading, so wall-clock jumps do not move deadlines.
	epoch time.Time
	ratio *window // nil when FailureRatio is 0

	mu          sync.Mutex
	retrips     int   // trips since the last close, for cooldown growth
	admitted    int   // probe slots taken in this half-open round
	succeeded   int   // probes of this round that succeeded
	roundEnds   int64 // when an undecided round is abandoned
	events      []event
	dispatching bool
}

// event is a transition waiting to be logged and passed to OnStateChange.
// from == to == HalfOpen means a probe round was abandoned.
type event struct {
	from, to   State
	failures   int
	cooldown   time.Duration
	unreported int
}

var (
	_ CircuitBreaker = (*Breaker)(nil)
	_ PermitRecorder = (*Breaker)(nil)
)

// New returns a closed breaker, or an error naming the Config field that is
// out of range.
func New(cfg Config) (*Breaker, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	return newBreaker(cfg), nil
}

// MustNew is New for configurations fixed in the source: it panics on error.
func MustNew(cfg Config) *Breaker {
	b, err := New(cfg)
	if err != nil {
		panic(err)
	}
	return b
}

// newBreaker builds a breaker from a normalized config.
func newBreaker(cfg Config) *Breaker {
	clk := clock.Or(cfg.Clock)
	b := &Breaker{cfg: cfg, clock: clk, epoch: clk.Now()}
	if cfg.FailureRatio > 0 {
		b.ratio = newWindow(int64(cfg.RatioWindow), cfg.FailureRatio, cfg.MinRequests)
	}
	return b
}

// Name returns Config.Name.
func (b *Breaker) Name() string { return b.cfg.Name }

func (b *Breaker) since(t time.Time) int64 { return int64(t.Sub(b.epoch)) }

func (b *Breaker) now() int64 { return b.since(b.clock.Now()) }

// after is now+d, saturating so that a cooldown of "forever" (a huge
// Duration) does not wrap into the past.
func after(now int64, d time.Duration) int64 {
	if int64(d) > math.MaxInt64-now {
		return math.MaxInt64
	}
	return now + int64(d)
}

// Allow reports whether a call may go ahead: always when closed, never when
// open, and for HalfOpenProbes callers at a time when half-open. A caller
// admitted while half-open is a probe and must report with RecordSuccess or
// RecordFailure.
func (b *Breaker) Allow() bool {
	if stateOf(b.word.Load()) == Closed {
		return true
	}
	return b.admit().ok
}

// Acquire asks to make one call. It returns a Permit to report the outcome
// on, or an *OpenError when the breaker refuses.
func (b *Breaker) Acquire() (Permit, error) {
	if w := b.word.Load(); stateOf(w) == Closed {
		return Permit{r: b, gen: genOf(w)}, nil
	}
	return b.acquireSlow()
}

// acquireSlow is kept out of Acquire so that Acquire inlines.
func (b *Breaker) acquireSlow() (Permit, error) {
	a := b.admit()
	if !a.ok {
		return Permit{}, &OpenError{Name: b.cfg.Name, State: a.state, RetryIn: a.retryIn}
	}
	return Permit{r: b, gen: a.gen, probe: a.probe}, nil
}

// Execute runs fn if the breaker admits it and records the outcome: nil is a
// success, an error wrapping context.Canceled is neutral (the caller gave up,
// which says nothing about the upstream), any other error a failure. It
// returns fn's error unchanged, or an *OpenError without running fn. If fn
// panics the outcome is neutral and the panic goes on.
func (b *Breaker) Execute(fn func() error) error {
	p, err := b.Acquire()
	if err != nil {
		return err
	}
	defer p.Release()
	err = fn()
	switch {
	case err == nil:
		p.Done(true)
	case errors.Is(err, context.Canceled):
		p.Release()
	default:
		p.Done(false)
	}
	return err
}

// admission is the slow path's answer to a caller.
type admission struct {
	ok      bool
	gen     uint64
	probe   bool
	state   State         // when refused
	retryIn time.Duration // when refused
}

// admit decides for a caller when the breaker was not closed at first look.
func (b *Breaker) admit() admission {
	now := b.now()
	if stateOf(b.word.Load()) == Open {
		// Refusing during the cooldown takes no lock, so that an outage
		// does not turn every call into contention on the mutex.
		if until := b.openUntil.Load(); now < until {
			return admission{state: Open, retryIn: time.Duration(until - now)}
		}
	}
	b.mu.Lock()
	a := b.admitLocked(now)
	b.unlockAndDispatch()
	return a
}

func (b *Breaker) admitLocked(now int64) admission {
	b.advanceLocked(now)
	w := b.word.Load()
	switch stateOf(w) {
	case Closed:
		return admission{ok: true, gen: genOf(w)}
	case Open:
		return admission{state: Open, retryIn: time.Duration(b.openUntil.Load() - now)}
	}
	if b.admitted > 0 && now >= b.roundEnds {
		w = b.abandonRoundLocked()
	}
	if b.admitted >= b.cfg.HalfOpenProbes {
		return admission{state: HalfOpen}
	}
	if b.admitted == 0 {
		b.roundEnds = after(now, b.cfg.Cooldown)
	}
	b.admitted++
	return admission{ok: true, gen: genOf(w), probe: true}
}

// RecordSuccess reports a successful call.
//
// When closed it resets the failure count. When half-open it counts as the
// success of a probe admitted by Allow, and closes the breaker once
// HalfOpenProbes probes have succeeded. When open, or half-open with no probe
// awaiting its outcome, it is ignored: no call was admitted then, so it comes
// from one admitted before the trip.
func (b *Breaker) RecordSuccess() {
	// Closed is 0, so this is "closed with no failures": nothing to reset and,
	// with no ratio window to feed, nothing to write. Small enough to inline.
	if b.word.Load()&(stateMask|failMask) == 0 && b.ratio == nil {
		return
	}
	b.record(Success)
}

// RecordFailure reports a failed call.
//
// When closed it counts toward FailureThreshold (and the failure ratio).
// When half-open it counts as the failure of a probe admitted by Allow and
// reopens the breaker. When open it is ignored, so late failures never extend
// the cooldown; likewise when half-open with no probe awaiting its outcome.
// The plain API cannot tell a probe's outcome from a late one that arrives
// while a probe is out; Acquire's permits can.
func (b *Breaker) RecordFailure() { b.record(Failure) }

func (b *Breaker) record(o Outcome) {
	if w := b.word.Load(); stateOf(w) == Closed {
		b.recordClosed(genOf(w), o)
		return
	}
	b.mu.Lock()
	if stateOf(b.word.Load()) == HalfOpen && b.admitted > b.succeeded {
		b.probeOutcomeLocked(o)
	}
	b.unlockAndDispatch()
}

// RecordPermit implements PermitRecorder: it applies o if gen is still the
// breaker's generation, and ignores it otherwise.
func (b *Breaker) RecordPermit(gen uint64, probe bool, o Outcome) {
	if o == Success && !probe && b.ratio == nil && b.word.Load() == pack(Closed, 0, gen) {
		return // the closed path with no failures: nothing to write
	}
	if !probe {
		b.recordClosed(gen, o)
		return
	}
	b.mu.Lock()
	if w := b.word.Load(); genOf(w) == gen && stateOf(w) == HalfOpen {
		b.probeOutcomeLocked(o)
	}
	b.unlockAndDispatch()
}

func (b *Breaker) recordClosed(gen uint64, o Outcome) {
	switch o {
	case Success:
		b.closedSuccess(gen)
	case Failure:
		b.closedFailure(gen)
	}
}

// closedSuccess resets the failure count of generation gen. With no failures
// pending it only loads the word: writing it anyway would make every core
// fight over its cache line.
func (b *Breaker) closedSuccess(gen uint64) {
	base := pack(Closed, 0, gen)
	if b.ratio != nil && b.word.Load()&^failMask == base {
		b.ratio.add(b.now(), false)
	}
	for {
		w := b.word.Load()
		if w == base || w&^failMask != base {
			return
		}
		if b.word.CompareAndSwap(w, base) {
			return
		}
	}
}

// closedFailure counts a failure of generation gen and opens the breaker if
// that crosses a threshold. The compare-and-swap checks the generation, so a
// failure from before the last transition cannot count.
func (b *Breaker) closedFailure(gen uint64) {
	base := pack(Closed, 0, gen)
	var n int
	for {
		w := b.word.Load()
		if w&^failMask != base {
			return
		}
		n = failuresOf(w) + 1
		if b.word.CompareAndSwap(w, pack(Closed, n, gen)) {
			break
		}
	}
	trip := n >= b.cfg.FailureThreshold
	if b.ratio != nil {
		now := b.now()
		b.ratio.add(now, true)
		trip = trip || b.ratio.exceeded(now)
	}
	if !trip {
		return
	}
	b.mu.Lock()
	if b.word.Load()&^failMask == base {
		b.openLocked(b.now(), 0)
	}
	b.unlockAndDispatch()
}

// probeOutcomeLocked applies a half-open probe's outcome.
func (b *Breaker) probeOutcomeLocked(o Outcome) {
	switch o {
	case Neutral:
		if b.admitted > b.succeeded {
			b.admitted--
		}
	case Success:
		b.succeeded++
		if b.succeeded >= b.cfg.HalfOpenProbes {
			b.closeLocked()
		}
	case Failure:
		b.openLocked(b.now(), 1)
	}
}

// Trip forces the breaker open until the given time, as a fleet breaker does
// to mirror a trip decided elsewhere. It starts a new generation, so outcomes
// of calls admitted before it are ignored, and fires the hook and log if the
// breaker was not already open. It does not advance the cooldown growth.
func (b *Breaker) Trip(until time.Time) {
	b.mu.Lock()
	cooldown := until.Sub(b.clock.Now())
	// An until in the past means the cooldown is already over; storing now
	// rather than a far-past time keeps later subtractions from overflowing.
	b.openUntil.Store(max(b.since(until), b.now()))
	old, w := b.moveLocked(Open, 0)
	if stateOf(old) != Open {
		b.enqueueLocked(event{from: stateOf(old), to: Open, failures: failuresOf(w), cooldown: cooldown})
	}
	b.unlockAndDispatch()
}

// Reset forces the breaker closed with no failures, as a fleet breaker does
// to mirror a recovery seen elsewhere. It starts a new generation and resets
// the cooldown growth; it fires the hook and log if the breaker was not closed.
func (b *Breaker) Reset() {
	b.mu.Lock()
	b.closeLocked()
	b.unlockAndDispatch()
}

// advanceLocked makes the Open to HalfOpen move once the cooldown is over.
func (b *Breaker) advanceLocked(now int64) {
	if stateOf(b.word.Load()) != Open || now < b.openUntil.Load() {
		return
	}
	_, w := b.moveLocked(HalfOpen, 0)
	b.enqueueLocked(event{from: Open, to: HalfOpen, failures: failuresOf(w)})
}

// abandonRoundLocked gives up on probes that have not reported a Cooldown
// after the round began (a caller that never called Done, or a hung request)
// so that they cannot wedge the breaker half-open. The new generation makes
// their late outcomes count for nothing.
func (b *Breaker) abandonRoundLocked() uint64 {
	unreported := b.admitted - b.succeeded
	_, w := b.moveLocked(HalfOpen, 0)
	b.enqueueLocked(event{from: HalfOpen, to: HalfOpen, failures: failuresOf(w), unreported: unreported})
	return w
}

func (b *Breaker) openLocked(now int64, extraFailures int) {
	cooldown := b.cooldownLocked()
	b.retrips++
	b.openUntil.Store(after(now, cooldown))
	old, w := b.moveLocked(Open, extraFailures)
	b.enqueueLocked(event{from: stateOf(old), to: Open, failures: failuresOf(w), cooldown: cooldown})
}

func (b *Breaker) closeLocked() {
	b.retrips = 0
	if b.ratio != nil {
		b.ratio.reset()
	}
	if old, _ := b.moveLocked(Closed, 0); stateOf(old) != Closed {
		b.enqueueLocked(event{from: stateOf(old), to: Closed})
	}
}

// cooldownLocked is the cooldown of the next trip: Cooldown grown by
// CooldownFactor for each trip since the last close, capped at MaxCooldown.
func (b *Breaker) cooldownLocked() time.Duration {
	if b.cfg.CooldownFactor <= 1 {
		return b.cfg.Cooldown
	}
	d := float64(b.cfg.Cooldown) * math.Pow(b.cfg.CooldownFactor, float64(b.retrips))
	if d >= float64(b.cfg.MaxCooldown) {
		return b.cfg.MaxCooldown
	}
	return time.Duration(d)
}

// moveLocked puts the breaker in state to under a new generation and starts a
// fresh probe round. The failure count is kept (plus extra), except that
// Closed clears it. It returns the words before and after. The mutex excludes
// other transitions, but closed-path callers may still change the failure
// bits, hence the compare-and-swap.
func (b *Breaker) moveLocked(to State, extra int) (old, w uint64) {
	b.admitted, b.succeeded = 0, 0
	for {
		old = b.word.Load()
		failures := 0
		if to != Closed {
			failures = failuresOf(old) + extra
		}
		w = pack(to, failures, genOf(old)+1)
		if b.word.CompareAndSwap(old, w) {
			return old, w
		}
	}
}

func (b *Breaker) enqueueLocked(ev event) { b.events = append(b.events, ev) }

// unlockAndDispatch releases b.mu and, unless another goroutine is already at
// it, delivers the queued events one at a time with the lock released. Events
// queued meanwhile, even by a hook calling back into the breaker, join the
// queue behind the current one, so order is kept and nothing deadlocks.
func (b *Breaker) unlockAndDispatch() {
	if b.dispatching || len(b.events) == 0 {
		b.mu.Unlock()
		return
	}
	b.dispatching = true
	for len(b.events) > 0 {
		ev := b.events[0]
		b.events = append(b.events[:0], b.events[1:]...)
		b.mu.Unlock()
		b.deliver(ev)
		b.mu.Lock()
	}
	b.dispatching = false
	b.mu.Unlock()
}

// deliver logs ev and passes it to the hook. If the hook panics it hands the
// dispatcher role back before the panic goes on, so later events are still
// delivered.
func (b *Breaker) deliver(ev event) {
	delivered := false
	defer func() {
		if !delivered {
			b.mu.Lock()
			b.dispatching = false
			b.mu.Unlock()
		}
	}()
	b.log(ev)
	if ev.from != ev.to && b.cfg.OnStateChange != nil {
		b.cfg.OnStateChange(b.cfg.Name, ev.from, ev.to)
	}
	delivered = true
}

func (b *Breaker) log(ev event) {
	logger := b.cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	ctx := context.Background()
	name := slog.String("breaker", b.cfg.Name)
	switch {
	case ev.to == Open:
		logger.LogAttrs(ctx, slog.LevelError, "circuit breaker open", name,
			slog.Int("consecutive_failures", ev.failures), slog.Duration("cooldown", ev.cooldown))
	case ev.to == Closed:
		logger.LogAttrs(ctx, slog.LevelInfo, "circuit breaker closed", name)
	case ev.from == HalfOpen:
		logger.LogAttrs(ctx, slog.LevelWarn, "circuit breaker probe abandoned", name,
			slog.Int("unreported", ev.unreported), slog.Duration("after", b.cfg.Cooldown))
	default:
		logger.LogAttrs(ctx, slog.LevelInfo, "circuit breaker half-open", name,
			slog.Int("consecutive_failures", ev.failures))
	}
}

// view derives the state at time now from the stored state and the clock:
// Open whose cooldown is over reads as HalfOpen. It returns the remaining
// cooldown when Open.
func (b *Breaker) view(now int64) (State, int, time.Duration) {
	w := b.word.Load()
	s := stateOf(w)
	if s != Open {
		return s, failuresOf(w), 0
	}
	remaining := time.Duration(b.openUntil.Load() - now)
	if remaining <= 0 {
		return HalfOpen, failuresOf(w), 0
	}
	return Open, failuresOf(w), remaining
}

// viewNow is view at the current time, reading the clock only when the
// breaker is not closed.
func (b *Breaker) viewNow() (State, int, time.Duration) {
	if w := b.word.Load(); stateOf(w) == Closed {
		return Closed, failuresOf(w), 0
	}
	return b.view(b.now())
}

// stateAt is the state at time t, for a Set choosing what to evict.
func (b *Breaker) stateAt(t time.Time) State {
	s, _, _ := b.view(b.since(t))
	return s
}

// State reports the state, HalfOpen as soon as the cooldown is over.
func (b *Breaker) State() State {
	s, _, _ := b.viewNow()
	return s
}

// Degraded reports whether the breaker is open or half-open: the upstream
// is, or was until recently, failing.
func (b *Breaker) Degraded() bool { return b.State() != Closed }

// UntilRetry reports how long until the breaker admits a probe: the rest of
// the cooldown when open, 0 when half-open. ok is false when closed.
func (b *Breaker) UntilRetry() (d time.Duration, ok bool) {
	s, _, remaining := b.viewNow()
	return remaining, s != Closed
}

// ConsecutiveFailures returns the failure count: failures since the last
// success while closed, frozen while open (late failures are ignored), and
// one more for each failed probe.
func (b *Breaker) ConsecutiveFailures() int { return failuresOf(b.word.Load()) }

// Status reports the breaker for a health endpoint.
func (b *Breaker) Status() Status {
	s, failures, remaining := b.viewNow()
	return newStatus(b.cfg.Name, s, failures, remaining)
}
