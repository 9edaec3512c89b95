package bench

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go/failsafehttp"

	"github.com/hordekit/httpretry"
)

// TestRetryingTransports checks that each retrying client really retries
// HTTP responses, and measures what its retries cost the server: against a
// server answering 503, 503, 503, then 200, every client configured for 4
// attempts with millisecond waits must end with the 200 after 4 requests. The
// test logs how many TCP connections the server accepted (a retried response
// whose body is drained and closed lets the next attempt reuse the
// connection; one left open forces a new one) and how many of the responses
// the base transport returned were never closed. Only httpretry's single
// connection is asserted; the others are recorded in README.md.
func TestRetryingTransports(t *testing.T) {
	const tries = 4
	const minWait, maxWait = time.Millisecond, 2 * time.Millisecond
	clients := []struct {
		name string
		new  func(base http.RoundTripper) *http.Client
	}{
		{"httpretry", func(base http.RoundTripper) *http.Client {
			return &http.Client{Transport: &httpretry.Transport{Base: base, Policy: httpretry.Policy{
				MaxAttempts: tries, MinWait: minWait, MaxWait: maxWait, Logger: discard,
			}}}
		}},
		{"go-retryablehttp", func(base http.RoundTripper) *http.Client {
			c := retryablehttpClient(base)
			c.RetryMax = tries - 1
			c.RetryWaitMin, c.RetryWaitMax = minWait, maxWait
			return c.StandardClient()
		}},
		{"failsafe-go", func(base http.RoundTripper) *http.Client {
			rp := failsafehttp.NewRetryPolicyBuilder().
				WithMaxAttempts(tries).
				WithBackoff(minWait, maxWait).
				Build()
			return &http.Client{Transport: failsafehttp.NewRoundTripper(base, rp)}
		}},
	}
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			var requests, conns atomic.Int32
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				if requests.Add(1) < tries {
					w.WriteHeader(http.StatusServiceUnavailable)
					_, _ = w.Write([]byte("unavailable\n"))
					return
				}
				_, _ = w.Write(okBody)
			}))
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
			}
			srv.Start()
			t.Cleanup(srv.Close)
			bodies := &bodyTracker{base: newBase(t)}
			client := c.new(bodies)
			client.Timeout = 10 * time.Second

			resp, err := client.Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || string(body) != string(okBody) {
				t.Fatalf("got %d %q (err %v), want 200 %q", resp.StatusCode, body, err, okBody)
			}
			if got := requests.Load(); got != tries {
				t.Errorf("the server saw %d requests, want %d", got, tries)
			}
			returned, open := bodies.counts()
			t.Logf("%d requests, %d TCP connections, %d of %d response bodies never closed",
				requests.Load(), conns.Load(), open, returned)
			if c.name == "httpretry" {
				if got := conns.Load(); got != 1 {
					t.Errorf("httpretry: %d TCP connections for 3 retries, want 1 (reused)", got)
				}
				if open != 0 {
					t.Errorf("httpretry: %d response bodies left open", open)
				}
			}
		})
	}
}

// bodyTracker is a RoundTripper over base that counts the responses it
// returns and which of their bodies are closed.
type bodyTracker struct {
	base http.RoundTripper

	mu       sync.Mutex
	returned int
	closed   int
}

func (bt *bodyTracker) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := bt.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	bt.mu.Lock()
	bt.returned++
	bt.mu.Unlock()
	resp.Body = &trackedBody{ReadCloser: resp.Body, bt: bt}
	return resp, nil
}

func (bt *bodyTracker) counts() (returned, open int) {
	bt.mu.Lock()
	defer bt.mu.Unlock()
	return bt.returned, bt.returned - bt.closed
}

type trackedBody struct {
	io.ReadCloser
	bt   *bodyTracker
	once sync.Once
}

func (b *trackedBody) Close() error {
	b.once.Do(func() {
		b.bt.mu.Lock()
		b.bt.closed++
		b.bt.mu.Unlock()
	})
	return b.ReadCloser.Close()
}
