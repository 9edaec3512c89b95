package httpretry

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hordekit/httpretry/clock"
)

// ErrBudgetExhausted is matched (errors.Is) by the error a Transport returns
// when the retry budget refused a retry after a failed attempt.
var ErrBudgetExhausted = errors.New("httpretry: retry budget exhausted")

// Budget defaults: Finagle's RetryBudget numbers.
const (
	DefaultBudgetRatio     = 0.2
	DefaultBudgetPerSecond = 10
	DefaultBudgetWindow    = 10 * time.Second
)

// FailingStreak is how many failed attempts in a row, with no success
// between them, make a Budget treat its upstream as failing: from then on,
// until an attempt succeeds, only the floor pays for retries.
const FailingStreak = 16

// BudgetConfig sets a retry budget. Its zero value is the default budget.
// See Budget for the rules.
type BudgetConfig struct {
	// Ratio is how much of a retry each call's first attempt earns. 0 means
	// 0.2: retries that fail add at most 20% to the load.
	Ratio float64
	// PerSecond is the floor: retries always allowed per second, whatever
	// the traffic and the outcomes. 0 means 10; NoFloor turns the floor off.
	PerSecond float64
	// NoFloor sets the floor to zero, so only earned retries are allowed.
	NoFloor bool
	// Window is how long earned and spent retries are remembered. 0 means
	// 10 s.
	Window time.Duration
	// Clock is the time seam; nil means the system clock.
	Clock clock.Clock
}

// Validate reports the first invalid field, by name, or nil.
func (c BudgetConfig) Validate() error {
	switch {
	case math.IsNaN(c.Ratio) || c.Ratio < 0 || c.Ratio > 1000:
		return fmt.Errorf("httpretry: BudgetConfig.Ratio must be in [0, 1000] (got %v)", c.Ratio)
	case math.IsNaN(c.PerSecond) || math.IsInf(c.PerSecond, 0) || c.PerSecond < 0:
		return fmt.Errorf("httpretry: BudgetConfig.PerSecond must not be negative (got %v)", c.PerSecond)
	case c.Window < 0:
		return fmt.Errorf("httpretry: BudgetConfig.Window must not be negative (got %v)", c.Window)
	case c.Window > 0 && c.Window < budgetBuckets*time.Millisecond:
		return fmt.Errorf("httpretry: BudgetConfig.Window must be at least %v (got %v)", budgetBuckets*time.Millisecond, c.Window)
	}
	return nil
}

// budgetBuckets is how finely the window is divided: the budget forgets in
// steps of Window/budgetBuckets, and the floor is counted per step.
const budgetBuckets = 10

// Budget is an adaptive retry budget: it lets retries through while they
// succeed and clamps them when they fail. It is safe for concurrent use.
// The Transport keeps one per host; use one directly to bound the retries of
// a loop of your own.
//
// The rules, after Finagle's RetryBudget with outcomes added:
//
//  1. Each call's first attempt earns Ratio of a retry (Deposit).
//  2. Each retry spends one before it is sent (Withdraw): an earned one
//     while a whole one is left, else one of the floor's PerSecond retries
//     per second. The floor is not saved up: at most PerSecond*Window/10
//     (at least one) in each tenth of the Window.
//  3. A retry that succeeds gets its earned retry back (Succeeded): a flaky
//     upstream, whose retries mostly work, keeps them all, while retries
//     that fail cost what they always did.
//  4. A 429 is a failure, never refunded; when it answers a first attempt it
//     also costs one earned retry, like a failed retry (Failed).
//  5. After FailingStreak failed attempts in a row, the upstream is failing
//     (dead, or overloaded to the point that nothing gets through): earned
//     retries are frozen and only the floor pays, until an attempt succeeds.
//  6. Everything older than Window is forgotten.
//
// What that gives with the defaults (20%, 10/s, 10 s): against a dead
// upstream a client sends at most 10 retries a second, whatever its call
// rate (1.02 requests per call at 500 calls/s), while a lone caller at 1
// call/s keeps every retry; against an upstream failing 30% of requests at
// random, where a call needs 0.39 retries on average and 70% of them work,
// retries cost 0.12 of the 0.2 earned per call and none is refused; at
// capacity, retries grow only until the ones that fail use up what calls
// earn. First attempts are never refused.
//
// Deposit and Succeeded run on every request, so they take no lock: Deposit
// adds to the current bucket's atomic counter and locks only to recycle a
// bucket, once per Window/10; Succeeded of a first attempt is one atomic
// load. Withdraw, on the retry path, locks and sums the live buckets.
type Budget struct {
	clk      clock.Clock
	ratio    float64
	floor    float64 // retries per bucket the floor pays for
	width    time.Duration
	epoch    time.Time
	failures atomic.Int64 // failed attempts since the last success

	mu      sync.Mutex // serialises recycling and withdrawal decisions
	buckets [budgetBuckets]budgetBucket
}

type budgetBucket struct {
	slot atomic.Int64 // which width-long slot of time this bucket holds; -1 none
	// deposits counts first attempts; spent counts earned retries spent,
	// less refunds, plus 429s to first attempts; floor counts retries the
	// floor paid for.
	deposits, spent, floor atomic.Int64
}

// NewBudget returns a budget, or an error naming an invalid field.
func NewBudget(c BudgetConfig) (*Budget, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	ratio, perSecond, window := c.Ratio, c.PerSecond, c.Window
	if ratio == 0 {
		ratio = DefaultBudgetRatio
	}
	if perSecond == 0 {
		perSecond = DefaultBudgetPerSecond
	}
	if c.NoFloor {
		perSecond = 0
	}
	if window == 0 {
		window = DefaultBudgetWindow
	}
	clk := clock.Or(c.Clock)
	width := window / budgetBuckets
	floor := perSecond * width.Seconds()
	if perSecond > 0 {
		// A floor finer than one retry per bucket is rounded up to one, so
		// that a short Window never turns the floor off.
		floor = max(floor, 1)
	}
	b := &Budget{clk: clk, ratio: ratio, floor: floor, width: width, epoch: clk.Now()}
	for i := range b.buckets {
		b.buckets[i].slot.Store(-1)
	}
	return b, nil
}

// Deposit records a call's first attempt (rule 1).
func (b *Budget) Deposit() { b.current().deposits.Add(1) }

// Withdraw takes one retry for an attempt about to be sent again and
// reports whether there was one (rules 2 and 5).
func (b *Budget) Withdraw() bool {
	slot := b.slot(b.clk.Now())
	b.mu.Lock()
	defer b.mu.Unlock()
	bk := &b.buckets[slot%budgetBuckets]
	b.recycleLocked(bk, slot)
	if !b.Failing() && b.earnedLocked(slot) >= 1 {
		bk.spent.Add(1)
		return true
	}
	if float64(bk.floor.Load()) < b.floor {
		bk.floor.Add(1)
		return true
	}
	return false
}

// Succeeded records an attempt the upstream answered with something other
// than a failure. When it was a retry, its retry is given back (rule 3). It
// ends a failing streak (rule 5).
func (b *Budget) Succeeded(retry bool) {
	// Load before storing: a healthy host writes nothing shared here.
	if b.failures.Load() != 0 {
		b.failures.Store(0)
	}
	if retry {
		b.current().spent.Add(-1)
	}
}

// Failed records a failed attempt: a transient error or a response worth
// retrying. throttled marks a 429, which costs a retry when it answers a
// first attempt (rule 4). Failed attempts in a row make the upstream
// failing (rule 5).
func (b *Budget) Failed(retry, throttled bool) {
	b.failures.Add(1)
	if throttled && !retry {
		b.current().spent.Add(1)
	}
}

// Failing reports whether the last FailingStreak attempts or more all
// failed, so that only the floor pays for retries (rule 5).
func (b *Budget) Failing() bool { return b.failures.Load() >= FailingStreak }

// Balance returns the retries available now, rounded down: the earned ones
// (none while Failing) and what is left of the floor in this tenth of the
// Window.
func (b *Budget) Balance() int {
	slot := b.slot(b.clk.Now())
	b.mu.Lock()
	defer b.mu.Unlock()
	bk := &b.buckets[slot%budgetBuckets]
	b.recycleLocked(bk, slot)
	var earned float64
	if !b.Failing() {
		earned = max(b.earnedLocked(slot), 0)
	}
	return int(earned) + int(max(b.floor-float64(bk.floor.Load()), 0))
}

// current returns the bucket of now, recycled for it if it held an older
// slot. It locks only to recycle.
func (b *Budget) current() *budgetBucket {
	slot := b.slot(b.clk.Now())
	bk := &b.buckets[slot%budgetBuckets]
	if bk.slot.Load() != slot {
		b.mu.Lock()
		b.recycleLocked(bk, slot)
		b.mu.Unlock()
	}
	return bk
}

func (b *Budget) slot(now time.Time) int64 { return int64(now.Sub(b.epoch) / b.width) }

// recycleLocked makes bk hold slot, forgetting what it held before, unless it
// already holds slot or a later one.
func (b *Budget) recycleLocked(bk *budgetBucket, slot int64) {
	if bk.slot.Load() >= slot {
		return
	}
	// Zero before publishing the slot, so a writer that sees the new slot
	// adds to an empty bucket.
	bk.deposits.Store(0)
	bk.spent.Store(0)
	bk.floor.Store(0)
	bk.slot.Store(slot)
}

// earnedLocked returns the earned retries left in the window that ends at
// slot: Ratio per first attempt, less what was spent.
func (b *Budget) earnedLocked(slot int64) float64 {
	var deposits, spent int64
	for i := range b.buckets {
		bk := &b.buckets[i]
		if s := bk.slot.Load(); s > slot-budgetBuckets && s <= slot {
			deposits += bk.deposits.Load()
			spent += bk.spent.Load()
		}
	}
	return b.ratio*float64(deposits) - float64(spent)
}
