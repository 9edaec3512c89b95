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

// BudgetConfig sets a retry budget. Its zero value is the default budget.
//
// The model is Finagle's: every first attempt deposits Ratio of a token,
// every retry withdraws a whole one, and a floor of PerSecond tokens per
// second is always available; deposits and withdrawals older than Window are
// forgotten. A retry is allowed while
//
//	PerSecond*Window + Ratio*(first attempts in Window) - (retries in Window) >= 1
//
// With the defaults (20%, 10/s, 10 s), retries add at most 20% to a busy
// client's load plus 10 per second: at 500 calls/s against a dead upstream a
// client sends at most 1.22 requests per call instead of 3, while a lone
// caller at 1 call/s keeps all its retries. First attempts are never refused.
type BudgetConfig struct {
	// Ratio is the share of first attempts that may be retried. 0 means 0.2.
	Ratio float64
	// PerSecond is the floor: retries always allowed per second, whatever
	// the traffic. 0 means 10; NoFloor turns the floor off.
	PerSecond float64
	// NoFloor sets the floor to zero, so only Ratio applies.
	NoFloor bool
	// Window is how far back the budget remembers. 0 means 10 s.
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
// steps of Window/budgetBuckets.
const budgetBuckets = 10

// Budget is a retry budget. It is safe for concurrent use. The Transport
// keeps one per host; use one directly to bound retries of your own loop.
//
// Deposit runs on every request, so it takes no lock: it adds to the current
// bucket's atomic counter and locks only to recycle a bucket, once per
// Window/10. Withdraw, on the retry path, locks and sums the live buckets.
type Budget struct {
	clk     clock.Clock
	ratio   float64
	reserve float64 // PerSecond * Window: the floor, in tokens
	width   time.Duration
	epoch   time.Time

	mu      sync.Mutex // serialises recycling and withdrawal decisions
	buckets [budgetBuckets]budgetBucket
}

type budgetBucket struct {
	slot                  atomic.Int64 // which width-long slot of time this bucket holds; -1 none
	deposits, withdrawals atomic.Int64
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
	b := &Budget{
		clk:     clk,
		ratio:   ratio,
		reserve: perSecond * window.Seconds(),
		width:   window / budgetBuckets,
		epoch:   clk.Now(),
	}
	for i := range b.buckets {
		b.buckets[i].slot.Store(-1)
	}
	return b, nil
}

// Deposit records a first attempt.
func (b *Budget) Deposit() {
	slot := b.slot(b.clk.Now())
	bk := &b.buckets[slot%budgetBuckets]
	if bk.slot.Load() != slot {
		b.mu.Lock()
		b.recycleLocked(bk, slot)
		b.mu.Unlock()
	}
	bk.deposits.Add(1)
}

// Withdraw takes a token for one retry and reports whether there was one.
func (b *Budget) Withdraw() bool {
	slot := b.slot(b.clk.Now())
	b.mu.Lock()
	defer b.mu.Unlock()
	bk := &b.buckets[slot%budgetBuckets]
	b.recycleLocked(bk, slot)
	if b.balanceLocked(slot) < 1 {
		return false
	}
	bk.withdrawals.Add(1)
	return true
}

// Balance returns the retries available now, rounded down.
func (b *Budget) Balance() int {
	slot := b.slot(b.clk.Now())
	b.mu.Lock()
	defer b.mu.Unlock()
	return int(max(b.balanceLocked(slot), 0))
}

func (b *Budget) slot(now time.Time) int64 { return int64(now.Sub(b.epoch) / b.width) }

// recycleLocked makes bk hold slot, forgetting what it held before, unless it
// already holds slot or a later one.
func (b *Budget) recycleLocked(bk *budgetBucket, slot int64) {
	if bk.slot.Load() >= slot {
		return
	}
	// Zero before publishing the slot, so a depositor that sees the new
	// slot adds to an empty bucket.
	bk.deposits.Store(0)
	bk.withdrawals.Store(0)
	bk.slot.Store(slot)
}

// balanceLocked sums the buckets still inside the window that ends at slot.
func (b *Budget) balanceLocked(slot int64) float64 {
	var deposits, withdrawals int64
	for i := range b.buckets {
		bk := &b.buckets[i]
		if s := bk.slot.Load(); s > slot-budgetBuckets && s <= slot {
			deposits += bk.deposits.Load()
			withdrawals += bk.withdrawals.Load()
		}
	}
	return b.reserve + b.ratio*float64(deposits) - float64(withdrawals)
}
