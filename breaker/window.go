package breaker

import "sync/atomic"

// numBuckets is how many slices the ratio window is cut into: the window
// slides a tenth of its length at a time.
const numBuckets = 10

// window counts outcomes over the last numBuckets bucket widths, for the
// failure-ratio trip. It is written on every closed-path outcome, so it is
// lock-free: each bucket knows which interval it counts (epoch), and the first
// writer of a new interval recycles the bucket. A count that lands in the
// instant a bucket is recycled can be lost, which a ratio over many calls
// does not notice.
type window struct {
	width       int64 // nanoseconds per bucket
	ratio       float64
	minRequests int64
	buckets     [numBuckets]bucket
}

type bucket struct {
	epoch     atomic.Int64 // interval index this bucket counts
	successes atomic.Int64
	failures  atomic.Int64
}

func newWindow(length int64, ratio float64, minRequests int) *window {
	w := &window{width: max(length/numBuckets, 1), ratio: ratio, minRequests: int64(minRequests)}
	w.reset()
	return w
}

// add counts one outcome at now (nanoseconds since the breaker's epoch).
func (w *window) add(now int64, failed bool) {
	idx := now / w.width
	bk := &w.buckets[idx%numBuckets]
	for {
		e := bk.epoch.Load()
		if e == idx {
			break
		}
		if e > idx {
			// A newer interval owns the bucket: this outcome is at least a
			// whole window old (its goroutine was descheduled), so drop it.
			return
		}
		if bk.epoch.CompareAndSwap(e, idx) {
			bk.successes.Store(0)
			bk.failures.Store(0)
			break
		}
	}
	if failed {
		bk.failures.Add(1)
	} else {
		bk.successes.Add(1)
	}
}

// exceeded reports whether the window holds at least minRequests outcomes and
// the failures make up at least the ratio. "At least" so that a ratio of 1
// means "every call failed" rather than never.
func (w *window) exceeded(now int64) bool {
	idx := now / w.width
	var ok, failed int64
	for i := range w.buckets {
		bk := &w.buckets[i]
		if e := bk.epoch.Load(); e > idx-numBuckets && e <= idx {
			ok += bk.successes.Load()
			failed += bk.failures.Load()
		}
	}
	total := ok + failed
	return total >= w.minRequests && float64(failed) >= w.ratio*float64(total)
}

// reset forgets every outcome, so that a breaker that just closed does not
// trip again on failures from before it opened. Marking the buckets with an
// epoch no interval has is enough: exceeded skips them and add recycles them.
func (w *window) reset() {
	for i := range w.buckets {
		w.buckets[i].epoch.Store(-numBuckets - 1)
	}
}
