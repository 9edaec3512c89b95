package httpretry

import (
	"io"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hordekit/httpretry/clock"
	"github.com/hordekit/httpretry/internal/faultserver"
)

// instantClock lets every wait end at once without moving time, so a
// benchmark's call rate alone decides how much time passes.
type instantClock struct{ *clock.Fake }

func (c instantClock) NewTimer(time.Duration) clock.Timer { return c.Fake.NewTimer(0) }

// failingUpstream answers a share of requests 503 in memory, at random
// from a fixed seed (every request when share is 1), and counts them.
type failingUpstream struct {
	share    float64
	rng      *rand.Rand
	requests atomic.Int64
}

func (u *failingUpstream) RoundTrip(req *http.Request) (*http.Response, error) {
	u.requests.Add(1)
	if req.Body != nil {
		req.Body.Close()
	}
	code := http.StatusOK
	if u.share >= 1 || u.rng.Float64() < u.share {
		code = http.StatusServiceUnavailable
	}
	return &http.Response{StatusCode: code, Body: http.NoBody, Header: http.Header{}, Request: req}, nil
}

// BenchmarkAmplification reports upstream requests per logical call, and
// the share of calls that succeeded, at a simulated call rate: against an
// upstream that fails every request (the retry storm a client causes
// during an outage; naive 3 attempts would be 3.0), and against one that
// fails 30% of requests at random (where retries work, and a budget that
// refuses them costs successes; 1.39 requests per call and 97.3% success
// is every retry taken).
func BenchmarkAmplification(b *testing.B) {
	for _, c := range []struct {
		name      string
		perSecond int
		noBreaker bool
		failing   float64
	}{
		{"defaults/500rps", 500, false, 1},
		{"defaults/100rps", 100, false, 1},
		{"no-breaker/500rps", 500, true, 1},
		{"no-breaker/1000rps", 1000, true, 1},
		{"no-breaker/1rps", 1, true, 1},
		{"flaky30/defaults/100rps", 100, false, 0.3},
		{"flaky30/defaults/500rps", 500, false, 0.3},
	} {
		b.Run(c.name, func(b *testing.B) {
			f := clock.NewFake(epoch)
			up := &failingUpstream{share: c.failing, rng: rand.New(rand.NewPCG(1, 2))}
			tr := &Transport{Base: up, NoBreaker: c.noBreaker,
				Policy: Policy{Clock: instantClock{f}, Logger: quiet}}
			step := time.Second / time.Duration(c.perSecond)
			req, _ := http.NewRequest("GET", "http://upstream.test/v2/status", nil)
			// Warm up past the budget's initial reserve: a minute of traffic.
			warm := 60 * c.perSecond
			for range warm {
				roundTrip(tr, req)
				f.Advance(step)
			}
			up.requests.Store(0)
			ok := 0
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if roundTrip(tr, req) {
					ok++
				}
				f.Advance(step)
			}
			b.ReportMetric(float64(up.requests.Load())/float64(b.N), "upstream-req/call")
			b.ReportMetric(float64(ok)/float64(b.N), "success/call")
		})
	}
}

// roundTrip sends req and reports whether it got a 200.
func roundTrip(tr *Transport, req *http.Request) bool {
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// BenchmarkLoopbackGET compares a plain GET through a bare http.Transport
// with the same GET through Transport over it, against the fault server.
func BenchmarkLoopbackGET(b *testing.B) {
	srv, err := faultserver.New(faultserver.Config{LogLimit: faultserver.LogDisabled})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	for _, c := range []struct {
		name string
		rt   func(base http.RoundTripper) http.RoundTripper
	}{
		{"bare", func(base http.RoundTripper) http.RoundTripper { return base }},
		{"httpretry", func(base http.RoundTripper) http.RoundTripper { return &Transport{Base: base} }},
	} {
		b.Run(c.name, func(b *testing.B) {
			base := &http.Transport{}
			defer base.CloseIdleConnections()
			client := &http.Client{Transport: c.rt(base)}
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.Get(srv.URL)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}

// okUpstream answers 200 in memory, so a benchmark over it measures the
// transport's own work per request: breaker, budget, bookkeeping.
type okUpstream struct{}

func (okUpstream) RoundTrip(req *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Body: http.NoBody, Request: req}, nil
}

// BenchmarkTransportOverhead compares the in-memory upstream alone with the
// same upstream behind Transport, serially and from every core at once.
func BenchmarkTransportOverhead(b *testing.B) {
	for _, c := range []struct {
		name string
		rt   http.RoundTripper
	}{
		{"bare", okUpstream{}},
		{"httpretry", &Transport{Base: okUpstream{}}},
		{"httpretry-no-budget", &Transport{Base: okUpstream{}, NoBudget: true}},
		// Hedging on, against an upstream that always answers at once: the
		// cost of a hedged round that never hedges.
		{"httpretry-hedge", &Transport{Base: okUpstream{}, Hedge: &HedgeConfig{}}},
	} {
		req, _ := http.NewRequest("GET", "http://upstream.test/", nil)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.rt.RoundTrip(req)
			}
		})
		b.Run(c.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					c.rt.RoundTrip(req)
				}
			})
		})
	}
}
