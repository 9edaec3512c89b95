package httpretry

import (
	"slices"
	"sync"
	"sync/atomic"
)

// hostTable holds one value per host, created on first use and bounded: past
// max entries, the least recently used half is forgotten. A lookup of a known
// host is a sync.Map load and writes nothing shared unless the entry's
// recency stamp is stale, so concurrent requests to one host do not contend.
type hostTable[V any] struct {
	m     sync.Map // string -> *hostEntry[V]
	mu    sync.Mutex
	n     int // entries in m, under mu
	max   int
	tick  atomic.Int64 // advances on every insert: a coarse clock for recency
	newFn func() V
}

type hostEntry[V any] struct {
	v    V
	used atomic.Int64
}

func (h *hostTable[V]) init(max int, newFn func() V) {
	h.max = max
	h.newFn = newFn
}

func (h *hostTable[V]) get(host string) V {
	v, ok := h.m.Load(host)
	if !ok {
		return h.insert(host)
	}
	e := v.(*hostEntry[V])
	if now := h.tick.Load(); e.used.Load() != now {
		e.used.Store(now)
	}
	return e.v
}

func (h *hostTable[V]) insert(host string) V {
	h.mu.Lock()
	defer h.mu.Unlock()
	if v, ok := h.m.Load(host); ok {
		return v.(*hostEntry[V]).v
	}
	if h.n >= h.max {
		h.evictLocked()
	}
	e := &hostEntry[V]{v: h.newFn()}
	e.used.Store(h.tick.Add(1))
	h.m.Store(host, e)
	h.n++
	return e.v
}

// evictLocked forgets half of the table, the entries used longest ago, so
// that a stream of new hosts pays for eviction once per max/2 inserts. Many
// entries can share a stamp (every host used since the last insert has the
// newest one), so ties at the cut are broken arbitrarily, never by
// forgetting them all.
func (h *hostTable[V]) evictLocked() {
	stamps := make([]int64, 0, h.n)
	h.m.Range(func(_, v any) bool {
		stamps = append(stamps, v.(*hostEntry[V]).used.Load())
		return true
	})
	slices.Sort(stamps)
	drop := len(stamps) / 2
	if drop == 0 {
		return
	}
	cut := stamps[drop-1]
	// First everything older than the cut, then ties at the cut.
	for _, tie := range []bool{false, true} {
		h.m.Range(func(k, v any) bool {
			if drop == 0 {
				return false
			}
			if used := v.(*hostEntry[V]).used.Load(); used < cut || tie && used == cut {
				h.m.Delete(k)
				h.n--
				drop--
			}
			return true
		})
	}
}

func (h *hostTable[V]) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}
