package httpretry

import (
	"slices"
	"sync"
	"sync/atomic"
)

// hostTable holds one value per host, created on first use and bounded: past
// max entries, the least recently used half is forgotten. A lookup of a known
// host takes a read lock and writes nothing shared unless the entry's
// recency stamp is stale, so concurrent requests to one host do not contend.
type hostTable[V any] struct {
	mu    sync.RWMutex
	m     map[string]*hostEntry[V]
	max   int
	tick  atomic.Int64 // advances on every insert: a coarse clock for recency
	newFn func() V
}

type hostEntry[V any] struct {
	v    V
	used atomic.Int64
}

func (h *hostTable[V]) init(max int, newFn func() V) {
	h.m = make(map[string]*hostEntry[V])
	h.max = max
	h.newFn = newFn
}

func (h *hostTable[V]) get(host string) V {
	h.mu.RLock()
	e := h.m[host]
	h.mu.RUnlock()
	if e == nil {
		return h.insert(host)
	}
	if now := h.tick.Load(); e.used.Load() != now {
		e.used.Store(now)
	}
	return e.v
}

func (h *hostTable[V]) insert(host string) V {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e := h.m[host]; e != nil {
		return e.v
	}
	if len(h.m) >= h.max {
		h.evictLocked()
	}
	e := &hostEntry[V]{v: h.newFn()}
	e.used.Store(h.tick.Add(1))
	h.m[host] = e
	return e.v
}

// evictLocked forgets half of the table, the entries used longest ago, so
// that a stream of new hosts pays for eviction once per max/2 inserts. Many
// entries can share a stamp (every host used since the last insert has the
// newest one), so ties at the cut are broken arbitrarily, never by
// forgetting them all.
func (h *hostTable[V]) evictLocked() {
	stamps := make([]int64, 0, len(h.m))
	for _, e := range h.m {
		stamps = append(stamps, e.used.Load())
	}
	slices.Sort(stamps)
	drop := len(stamps) / 2
	cut := stamps[drop-1]
	for k, e := range h.m {
		if drop == 0 {
			break
		}
		if e.used.Load() < cut {
			delete(h.m, k)
			drop--
		}
	}
	for k, e := range h.m {
		if drop == 0 {
			break
		}
		if e.used.Load() == cut {
			delete(h.m, k)
			drop--
		}
	}
}

func (h *hostTable[V]) len() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.m)
}
