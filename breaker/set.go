package breaker

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hordekit/httpretry/clock"
)

// SetConfig configures a Set.
type SetConfig struct {
	// Config is the template for every breaker; each is named by its key.
	Config Config
	// MaxBreakers bounds the set, so that a caller reaching many hosts cannot
	// grow it without end. Default 1024.
	MaxBreakers int
	// IdleTimeout is how long a breaker may go unused before it is the first
	// to go when the set is full. Default 10 minutes.
	IdleTimeout time.Duration
	// NewValue, when set, makes a value kept with each key's breaker and
	// evicted with it, returned by Lookup: for a caller keeping more per-key
	// state than the breaker (a transport's retry budget and latency
	// estimate) in one bounded table, found in one lookup.
	NewValue func(key string) any
}

const (
	defaultMaxBreakers = 1024
	defaultIdleTimeout = 10 * time.Minute
)

// Set is a bounded collection of breakers, one per key (typically the
// upstream's host), each made on first use from one Config. It is safe for
// concurrent use and starts no goroutines.
//
// When a new key would exceed MaxBreakers, the set first drops breakers idle
// for longer than IdleTimeout, then the least recently used closed one, then a
// half-open one; an open breaker goes only when every breaker is open, since
// dropping it would forget that its upstream is down. A dropped breaker keeps
// working for whoever still holds it, but the set forgets it.
//
// Recency is tracked like the CLOCK page-replacement algorithm, because a hit
// must not read the clock (a clock read costs more than the rest of Get): a
// hit only sets a used flag, and the sweep that runs when an insert finds the
// set full turns the flags into times. A breaker's idle time is therefore
// measured from the last sweep that saw it used: it can be understated, which
// keeps a breaker longer, but never overstated, so a breaker in use is never
// dropped as idle.
type Set struct {
	cfg      Config
	max      int
	idle     time.Duration
	clock    clock.Clock
	newValue func(string) any

	// m maps keys to *setEntry. A sync.Map, because Get on a known key is on
	// every request's path: its Load takes no lock and writes nothing.
	m  sync.Map
	mu sync.Mutex // serialises inserts and evictions
	n  int        // entries in m, guarded by mu
}

type setEntry struct {
	b *Breaker
	v any // SetConfig.NewValue's
	// used is set by Get and cleared by the sweep. Get writes it only when it
	// is clear, so hits on a busy key do not fight over its cache line.
	used atomic.Bool
	// seen is when the entry was made or a sweep last found it used; guarded
	// by Set.mu.
	seen time.Time
}

// NewSet returns an empty set, or an error naming the field that is out of
// range.
func NewSet(cfg SetConfig) (*Set, error) {
	bc, err := cfg.Config.normalize()
	if err != nil {
		return nil, err
	}
	switch {
	case cfg.MaxBreakers < 0:
		return nil, fmt.Errorf("breaker: SetConfig.MaxBreakers must not be negative (got %d)", cfg.MaxBreakers)
	case cfg.IdleTimeout < 0:
		return nil, fmt.Errorf("breaker: SetConfig.IdleTimeout must not be negative (got %v)", cfg.IdleTimeout)
	}
	return &Set{
		cfg:      bc,
		max:      or(cfg.MaxBreakers, defaultMaxBreakers),
		idle:     or(cfg.IdleTimeout, defaultIdleTimeout),
		clock:    clock.Or(bc.Clock),
		newValue: cfg.NewValue,
	}, nil
}

// Get returns the breaker for key, making it if the set has none.
func (s *Set) Get(key string) *Breaker { return s.entry(key).b }

// Lookup returns the breaker for key and the value SetConfig.NewValue made
// with it (nil without NewValue), making both if the set has none.
func (s *Set) Lookup(key string) (*Breaker, any) {
	e := s.entry(key)
	return e.b, e.v
}

func (s *Set) entry(key string) *setEntry {
	if v, ok := s.m.Load(key); ok {
		e := v.(*setEntry)
		if !e.used.Load() {
			e.used.Store(true)
		}
		return e
	}
	return s.insert(key)
}

func (s *Set) insert(key string) *setEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.m.Load(key); ok {
		return v.(*setEntry)
	}
	now := s.clock.Now()
	if s.n >= s.max {
		s.evictLocked(now)
	}
	cfg := s.cfg
	cfg.Name = key
	e := &setEntry{b: newBreaker(cfg), seen: now}
	if s.newValue != nil {
		e.v = s.newValue(key)
	}
	s.m.Store(key, e)
	s.n++
	return e
}

// evictLocked sweeps the set to make room for one breaker: every idle
// breaker that is not open goes, and if that frees nothing, the one that
// matters least.
func (s *Set) evictLocked(now time.Time) {
	var (
		victim      any
		victimClass int
		victimSeen  time.Time
	)
	s.m.Range(func(k, v any) bool {
		e := v.(*setEntry)
		if e.used.Swap(false) {
			e.seen = now
		}
		st := e.b.stateAt(now)
		if st != Open && now.Sub(e.seen) > s.idle {
			s.m.Delete(k)
			s.n--
			return true
		}
		class := evictionClass(st)
		if victim == nil || class < victimClass || (class == victimClass && e.seen.Before(victimSeen)) {
			victim, victimClass, victimSeen = k, class, e.seen
		}
		return true
	})
	if s.n >= s.max && victim != nil {
		s.m.Delete(victim)
		s.n--
	}
}

// evictionClass orders states by how little is lost when their breaker goes:
// a closed one knows little, an open one knows its upstream is down.
func evictionClass(st State) int {
	switch st {
	case Closed:
		return 0
	case HalfOpen:
		return 1
	}
	return 2
}

// Len returns the number of breakers in the set.
func (s *Set) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// Range calls yield for each breaker until it returns false, in no particular
// order. Its signature makes it an iterator: for b := range set.Range { ... }.
func (s *Set) Range(yield func(*Breaker) bool) {
	s.m.Range(func(_, v any) bool { return yield(v.(*setEntry).b) })
}

// Statuses returns the status of every breaker, sorted by name.
func (s *Set) Statuses() []Status {
	var out []Status
	for b := range s.Range {
		out = append(out, b.Status())
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Name, b.Name) })
	return out
}
