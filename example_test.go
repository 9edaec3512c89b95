package httpretry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"time"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/clock"
)

// The seed's usage: call, turn a retryable status into a *StatusError, and let
// the policy retry. The zero Policy is the seed's: 3 attempts, 0.5-10 s waits.
func ExamplePolicy_Do() {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "ready")
	}))
	defer srv.Close()

	policy := httpretry.Policy{MinWait: time.Millisecond, MaxWait: 5 * time.Millisecond}
	err := policy.Do(context.Background(), func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		if httpretry.IsRetryableStatus(resp.StatusCode) {
			return &httpretry.StatusError{Response: resp}
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Println(string(body))
		return nil
	})
	fmt.Println(err, calls.Load())
	// Output:
	// ready
	// <nil> 3
}

// When the retries run out, the last attempt's own error comes back, wrapped
// with the number of attempts.
func ExampleDoValue() {
	policy := httpretry.Policy{MaxAttempts: 2, Backoff: httpretry.Immediate}
	_, err := httpretry.DoValue(context.Background(), policy, func(context.Context) (string, error) {
		return "", &httpretry.StatusError{Response: &http.Response{StatusCode: 503}}
	})
	var se *httpretry.StatusError
	fmt.Println(errors.As(err, &se), se.Response.StatusCode, httpretry.Attempts(err))
	// Output: true 503 2
}

// Porting the seed exactly: tenacity's wait_random_exponential(0.5, 0.5, 10).
// Its first wait is always 0.5 s, which puts every client in lockstep.
func ExamplePolicy_Wait() {
	seed := httpretry.Policy{Backoff: httpretry.TenacityExponential}
	ours := httpretry.Policy{}
	for n := 1; n <= 3; n++ {
		fmt.Printf("after attempt %d: seed [%v, %v], default [%v, %v]\n", n,
			seed.Wait(n, 0, 0), seed.Wait(n, 0, 1), ours.Wait(n, 0, 0), ours.Wait(n, 0, 1))
	}
	// Output:
	// after attempt 1: seed [500ms, 500ms], default [500ms, 1s]
	// after attempt 2: seed [500ms, 1s], default [500ms, 2s]
	// after attempt 3: seed [500ms, 2s], default [500ms, 4s]
}

// The transport retries inside an http.Client: here a 503 with a Retry-After
// of one second, then success. The fake clock lets the example run at once;
// leave Policy.Clock nil in production.
func ExampleTransport() {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "model list")
	}))
	defer srv.Close()

	clk := clock.NewFake(time.Now())
	clk.SetAuto(true)
	client := &http.Client{Transport: &httpretry.Transport{
		Policy: httpretry.Policy{Clock: clk, Logger: slog.New(slog.DiscardHandler)},
	}}
	start := clk.Now()
	resp, err := client.Get(srv.URL + "/v2/status/models")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	// Never before the hint; a random spread after it keeps the clients the
	// server turned away together from coming back together.
	waited := clk.Now().Sub(start)
	fmt.Println(resp.StatusCode, string(body), "after waiting at least 1s:", waited >= time.Second && waited < 2*time.Second)
	// Output: 200 model list after waiting at least 1s: true
}

// A JSON API behind a proxy that sometimes answers 200 with an HTML error
// page: with Check, that page is a failed attempt, retried, and counted by
// the breaker, instead of a success handed to the decoder.
func ExampleTransport_check() {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, "<html>upstream timed out</html>")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `[{"name":"stable_diffusion","count":4}]`)
	}))
	defer srv.Close()

	clk := clock.NewFake(time.Now())
	clk.SetAuto(true)
	client := &http.Client{Transport: &httpretry.Transport{
		Check:  httpretry.CheckJSON,
		Policy: httpretry.Policy{Clock: clk, Logger: slog.New(slog.DiscardHandler)},
	}}
	resp, err := client.Get(srv.URL + "/v2/status/models")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body), "after", calls.Load(), "requests")
	// Output: 200 [{"name":"stable_diffusion","count":4}] after 2 requests
}
