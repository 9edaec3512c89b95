package bench

import (
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cristalhq/hedgedhttp"
	"github.com/failsafe-go/failsafe-go/failsafehttp"
	"github.com/failsafe-go/failsafe-go/hedgepolicy"

	"github.com/hordekit/httpretry"
)

// latencyServer answers every request after a latency drawn independently
// per request (hedges included), and counts requests.
type latencyServer struct {
	*httptest.Server
	requests atomic.Int64
}

func newLatencyServer(tb testing.TB, draw func() time.Duration) *latencyServer {
	s := &latencyServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		t := time.NewTimer(draw())
		defer t.Stop()
		select {
		case <-t.C:
			_, _ = w.Write(okBody)
		case <-r.Context().Done(): // a cancelled hedge or loser
		}
	}))
	tb.Cleanup(s.Close)
	return s
}

// heavyTail: 95% of requests in about 1 ms, 5% in about 100 ms.
func heavyTail() time.Duration {
	if rand.Float64() < 0.05 {
		return 100*time.Millisecond + time.Duration(rand.Int64N(int64(5*time.Millisecond)))
	}
	return time.Millisecond + time.Duration(rand.Int64N(int64(200*time.Microsecond)))
}

// uniformSlow: every request about 100 ms.
func uniformSlow() time.Duration {
	return 100*time.Millisecond + time.Duration(rand.Int64N(int64(5*time.Millisecond)))
}

// hedgeClients are the hedging configurations compared, each over its own
// base transport. Fixed delays are 10 ms, well above the fast mode and far
// below the slow one.
func hedgeClients() []struct {
	name string
	new  func(base http.RoundTripper) http.RoundTripper
} {
	const fixed = 10 * time.Millisecond
	return []struct {
		name string
		new  func(base http.RoundTripper) http.RoundTripper
	}{
		{"none", func(base http.RoundTripper) http.RoundTripper { return base }},
		{"httpretry-auto", func(base http.RoundTripper) http.RoundTripper {
			return &httpretry.Transport{Base: base, Hedge: &httpretry.HedgeConfig{}, Policy: httpretry.Policy{Logger: discard}}
		}},
		{"httpretry-10ms", func(base http.RoundTripper) http.RoundTripper {
			return &httpretry.Transport{Base: base, Hedge: &httpretry.HedgeConfig{Delay: fixed}, Policy: httpretry.Policy{Logger: discard}}
		}},
		{"hedgedhttp-10ms", func(base http.RoundTripper) http.RoundTripper {
			rt, err := hedgedhttp.NewRoundTripper(fixed, 2, base)
			if err != nil {
				panic(err)
			}
			return rt
		}},
		{"failsafe-go-10ms", func(base http.RoundTripper) http.RoundTripper {
			return failsafehttp.NewRoundTripper(base, hedgepolicy.NewWithDelay[*http.Response](fixed))
		}},
		{"failsafe-go-p95", func(base http.RoundTripper) http.RoundTripper {
			// The quantile, a memory of 1000 executions, and 20 before it
			// starts: the same as httpretry's adaptive defaults.
			return failsafehttp.NewRoundTripper(base, hedgepolicy.NewWithDelayQuantile[*http.Response](0.95, 1000, 20))
		}},
	}
}

// BenchmarkHedging drives each client with 16 concurrent callers against
// one latency distribution and reports the callers' p50, p99 and p99.9
// latency and the upstream requests per call. Run it with a fixed number of
// calls, the same for every client:
//
//	go test -run '^$' -bench Hedging -benchtime 4000x -count 1 .
func BenchmarkHedging(b *testing.B) {
	for _, sc := range []struct {
		name string
		draw func() time.Duration
	}{
		{"heavy-tail", heavyTail},
		{"uniform-100ms", uniformSlow},
	} {
		for _, c := range hedgeClients() {
			b.Run(sc.name+"/"+c.name, func(b *testing.B) {
				srv := newLatencyServer(b, sc.draw)
				base := &http.Transport{MaxIdleConnsPerHost: 64}
				b.Cleanup(base.CloseIdleConnections)
				client := &http.Client{Transport: c.new(base)}
				var mu sync.Mutex
				lat := make([]time.Duration, 0, b.N)
				b.SetParallelism(8)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					local := make([]time.Duration, 0, 256)
					for pb.Next() {
						start := time.Now()
						resp, err := client.Get(srv.URL)
						if err != nil {
							b.Error(err)
							return
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						local = append(local, time.Since(start))
					}
					mu.Lock()
					lat = append(lat, local...)
					mu.Unlock()
				})
				b.StopTimer()
				slices.Sort(lat)
				pct := func(q float64) float64 {
					return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))]) / float64(time.Millisecond)
				}
				b.ReportMetric(pct(0.5), "p50-ms")
				b.ReportMetric(pct(0.99), "p99-ms")
				b.ReportMetric(pct(0.999), "p99.9-ms")
				b.ReportMetric(float64(srv.requests.Load())/float64(len(lat)), "req/call")
			})
		}
	}
}
