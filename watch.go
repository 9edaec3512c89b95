package httpretry

import (
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hordekit/httpretry/clock"
)

// watchdog finds response bodies that make no progress while their reader
// waits on them, and closes them so that the blocked Read returns. Bodies
// register once, when the Transport hands them out; their reads only bump
// an atomic counter. One timer per Transport scans the registered bodies
// every eighth of the stall timeout, and stops once none are left, so an
// idle Transport holds no timer and a busy one allocates once per scan, not
// per request.
type watchdog struct {
	clk   clock.Clock
	stall time.Duration // <= 0: off
	tick  time.Duration
	scanF func() // w.scan, made once: a method value allocates

	mu    sync.Mutex
	head  *watched
	armed bool // a scan is scheduled or running
}

// watched is one body under the watchdog.
type watched struct {
	// seq counts read entries and exits: odd while a Read is in progress.
	seq atomic.Uint64
	// stalled holds the seq of the read the watchdog stopped, 0 for none.
	stalled atomic.Uint64

	mu sync.Mutex    // guards rc against the watchdog and Close; the reader swaps it under mu
	rc io.ReadCloser // the body being read

	limit time.Duration // the stall timeout, for the error

	// The watchdog's own, under watchdog.mu.
	prev, next *watched
	listed     bool
	seenSeq    uint64
	seenAt     time.Time
}

func (w *watchdog) init(clk clock.Clock, stall time.Duration) {
	w.clk, w.stall = clk, stall
	w.tick = max(stall/8, time.Millisecond)
	w.scanF = w.scan
}

func (w *watchdog) on() bool { return w.stall > 0 }

// add puts x under watch.
func (w *watchdog) add(x *watched) {
	x.limit = w.stall
	w.mu.Lock()
	x.next, x.prev, x.listed = w.head, nil, true
	if w.head != nil {
		w.head.prev = x
	}
	w.head = x
	if !w.armed {
		w.armed = true
		clock.AfterFunc(w.clk, w.tick, w.scanF)
	}
	w.mu.Unlock()
}

// remove takes x off the watch; the timer stops at its next scan if no
// body is left.
func (w *watchdog) remove(x *watched) {
	w.mu.Lock()
	if x.listed {
		if x.prev != nil {
			x.prev.next = x.next
		} else {
			w.head = x.next
		}
		if x.next != nil {
			x.next.prev = x.prev
		}
		x.prev, x.next, x.listed = nil, nil, false
	}
	w.mu.Unlock()
}

// scan stops every body whose current read has been waiting for the stall
// timeout: it has to see the same read twice, the stall timeout apart, so a
// jump of the clock alone never stalls a read that just began.
func (w *watchdog) scan() {
	now := w.clk.Now()
	var stalled []io.Closer
	w.mu.Lock()
	for x := w.head; x != nil; x = x.next {
		s := x.seq.Load()
		switch {
		case s%2 == 0 || x.stalled.Load() == s:
			// Not reading, or already stopped.
		case s != x.seenSeq:
			x.seenSeq, x.seenAt = s, now
		case now.Sub(x.seenAt) >= w.stall:
			x.stalled.Store(s)
			x.mu.Lock()
			stalled = append(stalled, x.rc)
			x.mu.Unlock()
		}
	}
	w.armed = w.head != nil
	if w.armed {
		clock.AfterFunc(w.clk, w.tick, w.scanF)
	}
	w.mu.Unlock()
	for _, c := range stalled {
		c.Close() // the blocked Read returns, and sees it was stalled
	}
}

// Read reads from the current body, telling the watchdog it is waiting; an
// error after the watchdog stopped this read becomes a *TimeoutError.
func (x *watched) Read(p []byte) (int, error) {
	s := x.seq.Add(1)
	n, err := x.rc.Read(p)
	x.seq.Add(1)
	if err != nil && x.stalled.Load() == s {
		err = &TimeoutError{Stall: true, Limit: x.limit}
	}
	return n, err
}

// swap makes rc the body being read, unless closed says the reader is gone,
// in which case rc is closed and swap reports false.
func (x *watched) swap(rc io.ReadCloser, closed *atomic.Bool) bool {
	x.mu.Lock()
	if closed.Load() {
		x.mu.Unlock()
		rc.Close()
		return false
	}
	x.rc = rc
	x.mu.Unlock()
	return true
}

// current returns the body being read, for Close.
func (x *watched) current() io.ReadCloser {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.rc
}

// readAll reads rc to its end or to limit+1 bytes, under the watchdog. With
// the length known (size >= 0) it reads into one buffer of that size, so a
// body is held once, not grown and copied.
func (t *Transport) readAll(rc io.ReadCloser, limit, size int64) ([]byte, error) {
	w := &watched{rc: rc}
	if t.watch.on() {
		t.watch.add(w)
		defer t.watch.remove(w)
	}
	r := io.LimitReader(w, limit+1)
	if size < 0 || size > limit {
		return io.ReadAll(r)
	}
	buf := make([]byte, size+1) // one more, to see a body longer than announced
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err == io.EOF {
			break
		}
		if err != nil {
			return buf[:n], err
		}
	}
	return buf[:n], nil
}
