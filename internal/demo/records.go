package demo

import (
	"slices"
	"sync"
	"time"

	"github.com/hordekit/httpretry/internal/faultserver"
)

// callRecord is one call as its caller saw it.
type callRecord struct {
	start, end time.Duration // offsets from the run's start
	ok         bool
	// throttled is set when the transport refused to send the call (or
	// its retry) because the host was rate limited and its turn was past
	// the deadline.
	throttled bool
	// cut is set when the demo was interrupted before the call ended: it
	// is not a measurement.
	cut bool
}

// latency is how long the call took, failures included.
func (c callRecord) latency() time.Duration { return c.end - c.start }

// request is one request as the upstream saw it.
type request struct {
	at     time.Duration // offset of its arrival from the run's start
	call   int           // the index of the call it belongs to; -1 unknown
	phase  Phase         // the phase it arrived in
	status int           // the status served; 0 for a reset or 200
	kind   faultserver.Kind
	// early is set when it arrived before the Retry-After its call was
	// last given had passed.
	early bool
}

// requestLog records an upstream's requests, and when each call was last
// told to come back.
type requestLog struct {
	mu        sync.Mutex
	reqs      []request
	notBefore map[int]time.Time
}

// add records r, which arrived at now; notBefore, when not zero, is when
// the call was told (by a 429's Retry-After) to come back.
func (l *requestLog) add(r request, now, notBefore time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r.call >= 0 {
		if nb, ok := l.notBefore[r.call]; ok && now.Before(nb) {
			r.early = true
		}
		if !notBefore.IsZero() {
			if l.notBefore == nil {
				l.notBefore = map[int]time.Time{}
			}
			l.notBefore[r.call] = notBefore
		}
	}
	l.reqs = append(l.reqs, r)
}

// list returns the requests in the order they were recorded.
func (l *requestLog) list() []request {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.reqs)
}

// since counts the requests that arrived after offset t, for the live
// progress line.
func (l *requestLog) since(t time.Duration) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for i := len(l.reqs) - 1; i >= 0 && l.reqs[i].at > t; i-- {
		n++
	}
	return n
}
