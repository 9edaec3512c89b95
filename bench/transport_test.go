package bench

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/failsafe-go/failsafe-go/failsafehttp"
	"github.com/hashicorp/go-retryablehttp"

	"github.com/hordekit/httpretry"
)

// The HTTP clients every transport benchmark and TestRetryingTransports use.
// Each gets its own base *http.Transport, so that connection pools are never
// shared between libraries.

// okBody is the whole response of the benchmark server.
var okBody = []byte("ok\n")

// newOKServer is a loopback server answering every request 200 "ok\n",
// written with w.Write alone (no header set by the handler).
func newOKServer(tb testing.TB) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(okBody)
	}))
	tb.Cleanup(srv.Close)
	return srv
}

// newBase is the base transport under every client: a plain *http.Transport,
// as the bare client uses it.
func newBase(tb testing.TB) *http.Transport {
	base := &http.Transport{}
	tb.Cleanup(base.CloseIdleConnections)
	return base
}

// httpretry: the zero Transport over base (3 attempts, jittered waits of
// 0.5-10 s, a breaker per host, the default retry budget).
func httpretryClient(base http.RoundTripper) *http.Client {
	return &http.Client{Transport: &httpretry.Transport{Base: base}}
}

// go-retryablehttp: NewClient with its default waits (1-30 s) and RetryMax 2
// (3 attempts, like the others), quiet, over base. StandardClient wraps it in
// an *http.Client whose RoundTripper calls the retrying client's Do, which
// sends each attempt through its own inner *http.Client (HTTPClient).
func retryablehttpClient(base http.RoundTripper) *retryablehttp.Client {
	c := retryablehttp.NewClient()
	c.HTTPClient.Transport = base
	c.Logger = nil
	c.RetryMax = attempts - 1
	return c
}

// failsafe-go: failsafehttp's round tripper with its HTTP retry policy (which
// retries transport errors and 5xx/429 responses, honouring Retry-After),
// set to 3 attempts with the seed's backoff, over base.
func failsafeHTTPClient(base http.RoundTripper) *http.Client {
	rp := failsafehttp.NewRetryPolicyBuilder().
		WithMaxAttempts(attempts).
		WithBackoff(baseWait, maxWait).
		WithJitterFactor(0.5).
		Build()
	return &http.Client{Transport: failsafehttp.NewRoundTripper(base, rp)}
}

// BenchmarkLoopbackGET measures a GET of a 3-byte body from a loopback
// server, reading and closing the body, through each client. The server
// answers 200 every time, so no client retries: this is the cost each one
// adds to a healthy request, on top of net/http's own (the "bare" row).
func BenchmarkLoopbackGET(b *testing.B) {
	srv := newOKServer(b)
	clients := []struct {
		name string
		new  func(base *http.Transport) *http.Client
	}{
		{"bare", func(base *http.Transport) *http.Client { return &http.Client{Transport: base} }},
		{"httpretry", func(base *http.Transport) *http.Client { return httpretryClient(base) }},
		{"go-retryablehttp", func(base *http.Transport) *http.Client { return retryablehttpClient(base).StandardClient() }},
		{"failsafe-go", func(base *http.Transport) *http.Client { return failsafeHTTPClient(base) }},
	}
	for _, c := range clients {
		b.Run(c.name, func(b *testing.B) {
			client := c.new(newBase(b))
			b.ReportAllocs()
			for b.Loop() {
				get(b, client.Get, srv.URL)
			}
		})
	}

	// go-retryablehttp's own API, without the *http.Client shim: one layer
	// less (retryablehttp.Request built by Get, then Do).
	b.Run("go-retryablehttp-Do", func(b *testing.B) {
		client := retryablehttpClient(newBase(b))
		b.ReportAllocs()
		for b.Loop() {
			get(b, client.Get, srv.URL)
		}
	})
}

// get makes one GET and reads and closes the body, checking it.
func get(b *testing.B, do func(string) (*http.Response, error), url string) {
	resp, err := do(url)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || n != int64(len(okBody)) {
		b.Fatalf("status %d, %d bytes, err %v", resp.StatusCode, n, err)
	}
}

// stubBase answers every request 200 with an empty body, in memory: no
// network, so what remains is each client's own cost per request.
type stubBase struct{}

func (stubBase) RoundTrip(req *http.Request) (*http.Response, error) {
	return &http.Response{
		Status: "200 OK", StatusCode: http.StatusOK,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}, Body: http.NoBody, ContentLength: 0, Request: req,
	}, nil
}

// BenchmarkRoundTripOverhead is BenchmarkLoopbackGET over an in-memory base
// that answers 200 at once, with one request built outside the loop: the
// time and allocations each client adds per request, without the loopback
// round trip whose noise on a shared machine is far larger than the
// difference. The "bare" row is http.Client itself over the same base.
func BenchmarkRoundTripOverhead(b *testing.B) {
	clients := []struct {
		name string
		new  func(base http.RoundTripper) *http.Client
	}{
		{"bare", func(base http.RoundTripper) *http.Client { return &http.Client{Transport: base} }},
		{"httpretry", httpretryClient},
		{"go-retryablehttp", func(base http.RoundTripper) *http.Client { return retryablehttpClient(base).StandardClient() }},
		{"failsafe-go", failsafeHTTPClient},
	}
	for _, c := range clients {
		b.Run(c.name, func(b *testing.B) {
			client := c.new(stubBase{})
			req, err := http.NewRequest(http.MethodGet, "http://upstream.test/v2/status", nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}
