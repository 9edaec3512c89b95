package httpretry

import "github.com/hordekit/httpretry/breaker"

// hostState is what the Transport keeps per host besides its breaker: the
// retry budget and the hedging state. With per-host breakers it lives in the
// breaker.Set, beside the host's breaker, so one lookup finds both and both
// are evicted together; otherwise in a hostTable of its own.
type hostState struct {
	budget *Budget // nil when NoBudget
	hedge  *hedger // nil unless Hedge is set
}

// needsHostState reports whether any per-host state besides the breaker is
// kept.
func (t *Transport) needsHostState() bool { return !t.NoBudget || t.hedge != nil }

func (t *Transport) newHostState() *hostState {
	hs := &hostState{}
	if !t.NoBudget {
		hs.budget, _ = NewBudget(t.budgetCfg) // validated in init
	}
	if t.hedge != nil {
		hs.hedge = newHedger(t.hedge)
	}
	return hs
}

// lookup returns the host's breaker (nil when off) and state (nil when none
// is kept), in one lookup of one table.
func (t *Transport) lookup(host string) (breaker.CircuitBreaker, *hostState) {
	switch {
	case t.breakers != nil:
		b, v := t.breakers.Lookup(host)
		hs, _ := v.(*hostState)
		return b, hs
	case !t.needsHostState():
		return t.sharedBreaker(), nil
	}
	return t.sharedBreaker(), t.hosts.get(host)
}

// sharedBreaker is the one breaker for every host, or nil when off.
func (t *Transport) sharedBreaker() breaker.CircuitBreaker {
	if t.NoBreaker || t.Breaker == nil {
		return nil
	}
	return t.Breaker
}
