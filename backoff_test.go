package httpretry

import (
	"container/heap"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// awsExpo is expo(n) from AWS's published backoff simulator
// (aws-samples/aws-arch-backoff-simulator): min(cap, 2^n * base), where n
// is 1 at the first retry.
func awsExpo(base, limit time.Duration, n int) float64 {
	return math.Min(float64(limit), math.Pow(2, float64(n))*float64(base))
}

// TestFullJitterIsAWSFullJitter checks FullJitter against the simulator's
// ExpoBackoffFullJitter, uniform(0, expo(n)), for the same draw u.
func TestFullJitterIsAWSFullJitter(t *testing.T) {
	for _, c := range []struct{ base, limit time.Duration }{
		{5 * time.Millisecond, 2 * time.Second}, // the simulator's numbers
		{DefaultMinWait, DefaultMaxWait},
	} {
		p := Policy{Backoff: FullJitter, MinWait: c.base, MaxWait: c.limit}
		for n := 1; n <= 12; n++ {
			for _, u := range []float64{0, 0.25, 0.5, 0.999} {
				want := time.Duration(u * awsExpo(c.base, c.limit, n))
				if got := p.Wait(n, 0, u); got != want && !(want == c.limit && got == p.maxWait()) {
					t.Errorf("base %v cap %v: Wait(%d, u=%v) = %v, want %v", c.base, c.limit, n, u, got, want)
				}
			}
		}
	}
	// The first window is twice the base: [0, 1 s) with a 0.5 s MinWait.
	if got := (Policy{Backoff: FullJitter}).Wait(1, 0, 0.999); got < 990*time.Millisecond || got >= time.Second {
		t.Errorf("first FullJitter wait at u=0.999 = %v, want just under 1s", got)
	}
}

// BenchmarkContention ports AWS's backoff simulator: clients race to
// update one row with optimistic concurrency (read the version, write it
// back; the write fails if another client wrote first), over a network of
// 10 ms +- 2 ms, backing off (base 5 ms, cap 2 s) after each failed write.
// It reports the writes the server received per run, the figure the AWS
// post plots as "calls": fewer is better.
func BenchmarkContention(b *testing.B) {
	const clients = 100
	for _, c := range []struct {
		name    string
		backoff Backoff
	}{
		{"ExponentialJitter", ExponentialJitter},
		{"FullJitter", FullJitter},
		{"DecorrelatedJitter", DecorrelatedJitter},
		{"TenacityExponential", TenacityExponential},
	} {
		b.Run(c.name, func(b *testing.B) {
			p := Policy{Backoff: c.backoff, MinWait: 5 * time.Millisecond, MaxWait: 2 * time.Second,
				Multiplier: 5 * time.Millisecond}
			rng := rand.New(rand.NewPCG(1, 2))
			var calls int
			for b.Loop() {
				calls += simulateOCC(p, clients, rng)
			}
			b.ReportMetric(float64(calls)/float64(b.N), "calls/run")
		})
	}
}

// occEvent is a message in flight in the simulation.
type occEvent struct {
	at     float64 // milliseconds
	client int
	kind   uint8 // occRead or occWrite arriving at the server, or occReply to the client
	value  int   // the version read, or the write's outcome (1 success)
	write  bool  // for occReply: whether it answers a write
}

const (
	occRead = iota
	occWrite
	occReply
)

type occQueue []occEvent

func (q occQueue) Len() int           { return len(q) }
func (q occQueue) Less(i, j int) bool { return q[i].at < q[j].at }
func (q occQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *occQueue) Push(x any)        { *q = append(*q, x.(occEvent)) }
func (q *occQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

// simulateOCC runs one contention round to completion and returns the
// writes the server received.
func simulateOCC(p Policy, clients int, rng *rand.Rand) int {
	delay := func() float64 { return math.Abs(10 + 2*rng.NormFloat64()) }
	attempts := make([]int, clients)
	prev := make([]time.Duration, clients)
	q := &occQueue{}
	for i := range clients {
		heap.Push(q, occEvent{at: delay(), client: i, kind: occRead})
	}
	version, writes := 0, 0
	for q.Len() > 0 {
		e := heap.Pop(q).(occEvent)
		switch e.kind {
		case occRead:
			heap.Push(q, occEvent{at: e.at + delay(), client: e.client, kind: occReply, value: version})
		case occWrite:
			writes++
			ok := 0
			if e.value == version {
				version++
				ok = 1
			}
			heap.Push(q, occEvent{at: e.at + delay(), client: e.client, kind: occReply, value: ok, write: true})
		case occReply:
			switch {
			case !e.write:
				heap.Push(q, occEvent{at: e.at + delay(), client: e.client, kind: occWrite, value: e.value})
			case e.value == 0:
				attempts[e.client]++
				w := p.Wait(attempts[e.client], prev[e.client], rng.Float64())
				prev[e.client] = w
				ms := float64(w) / float64(time.Millisecond)
				heap.Push(q, occEvent{at: e.at + delay() + ms, client: e.client, kind: occRead})
			}
		}
	}
	return writes
}
