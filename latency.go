package httpretry

import (
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// latencies is a small streaming estimator of a host's recent latencies: a
// log-linear histogram (8 buckets per power of two of microseconds, so each
// bucket spans about 9%) of the last two windows of latencySamples samples.
// Recording is an atomic increment; every latencyRefresh samples the
// recorder that crosses the mark recomputes the percentiles under a
// try-lock, so readers get them from one atomic load.
type latencies struct {
	buckets [2][latencyBuckets]atomic.Uint32
	cur     atomic.Uint32 // which of buckets is being filled
	n       atomic.Int64  // samples recorded in all

	mu      sync.Mutex
	windows int64        // windows started, under mu
	quant   atomic.Int64 // the percentile asked for, in ns; 0 until latencyMinSamples
	median  atomic.Int64 // in ns
	percent float64
}

const (
	latencyBuckets    = 27 * 8 // 1 µs to about 2^27 µs (134 s)
	latencySamples    = 1024   // samples per window, a multiple of latencyRefresh
	latencyRefresh    = 32     // samples between two computations
	latencyMinSamples = 20     // samples before an estimate is given
)

// bucketOf maps a latency to its bucket: the power of two of its
// microseconds and the next three bits.
func bucketOf(d time.Duration) int {
	us := uint64(max(d/time.Microsecond, 1))
	exp := bits.Len64(us) - 1 // us in [2^exp, 2^(exp+1))
	var sub uint64
	if exp >= 3 {
		sub = (us >> (exp - 3)) & 7
	} else {
		sub = (us << (3 - exp)) & 7
	}
	return min(exp*8+int(sub), latencyBuckets-1)
}

// bucketTop is the upper bound of bucket i.
func bucketTop(i int) time.Duration {
	exp, sub := i/8, i%8
	us := math.Ldexp(1+float64(sub+1)/8, exp)
	return time.Duration(us * float64(time.Microsecond))
}

// record adds one latency.
func (l *latencies) record(d time.Duration) {
	cur := l.cur.Load()
	l.buckets[cur][bucketOf(d)].Add(1)
	n := l.n.Add(1)
	if n%latencyRefresh != 0 || !l.mu.TryLock() {
		return
	}
	defer l.mu.Unlock()
	if w := n / latencySamples; w > l.windows {
		// Start a new window; the oldest is forgotten.
		l.windows = w
		next := 1 - cur
		for i := range l.buckets[next] {
			l.buckets[next][i].Store(0)
		}
		l.cur.Store(next)
	}
	if n >= latencyMinSamples {
		l.quant.Store(int64(l.percentileLocked(l.percent)))
		l.median.Store(int64(l.percentileLocked(0.5)))
	}
}

// percentileLocked returns the smallest bucket top below which a share q of
// the two windows' samples fall.
func (l *latencies) percentileLocked(q float64) time.Duration {
	var total uint64
	for w := range l.buckets {
		for i := range l.buckets[w] {
			total += uint64(l.buckets[w][i].Load())
		}
	}
	want := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i := range latencyBuckets {
		seen += uint64(l.buckets[0][i].Load()) + uint64(l.buckets[1][i].Load())
		if seen >= want && seen > 0 {
			return bucketTop(i)
		}
	}
	return bucketTop(latencyBuckets - 1)
}

// estimate returns the percentile and the median, and false until there are
// enough samples.
func (l *latencies) estimate() (quant, median time.Duration, ok bool) {
	q := l.quant.Load()
	return time.Duration(q), time.Duration(l.median.Load()), q > 0
}
