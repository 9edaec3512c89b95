package httpretry_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/clock"
)

// A retry budget around a loop of your own: tell it of every first attempt,
// ask it before each retry, and report each attempt's outcome, so that it
// lets retries through while they work and clamps them when they fail.
func ExampleBudget() {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	budget, _ := httpretry.NewBudget(httpretry.BudgetConfig{Clock: clk})

	// call makes up to 3 attempts; ok decides each attempt's fate.
	call := func(ok func(attempt int) bool) (attempts int) {
		budget.Deposit()
		for attempt := 1; ; attempt++ {
			if ok(attempt) {
				budget.Succeeded(attempt > 1)
				return attempt
			}
			budget.Failed(attempt > 1, false)
			if attempt == 3 || !budget.Withdraw() {
				return attempt
			}
		}
	}

	// A flaky upstream: the first attempt fails, the retry works. Retries
	// that work are given back, so none is ever refused.
	flaky := 0
	for range 1000 {
		flaky += call(func(attempt int) bool { return attempt == 2 })
		clk.Advance(10 * time.Millisecond)
	}
	// A dead one: after 16 failures in a row only the floor of 10 retries
	// a second pays.
	dead := 0
	for range 1000 {
		dead += call(func(int) bool { return false })
		clk.Advance(10 * time.Millisecond)
	}
	fmt.Printf("flaky: %.2f attempts per call\n", float64(flaky)/1000)
	fmt.Printf("dead:  %.2f attempts per call, failing: %v\n", float64(dead)/1000, budget.Failing())
	// Output:
	// flaky: 2.00 attempts per call
	// dead:  1.11 attempts per call, failing: true
}

// After a 429 with Retry-After, the Transport holds every call to that host
// until the hint has passed; a call that cannot wait that long fails at once
// with a *httpretry.ThrottleError, sending nothing.
func ExampleThrottleError() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer srv.Close()
	client := &http.Client{Transport: &httpretry.Transport{}}

	resp, err := client.Get(srv.URL) // 30 s is past MaxRetryAfter: returned as is
	if err == nil {
		resp.Body.Close()
		fmt.Println(resp.Status)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
	_, err = client.Do(req)
	if te, ok := errors.AsType[*httpretry.ThrottleError](err); ok {
		fmt.Println(errors.Is(err, httpretry.ErrThrottled), te.Wait.Round(time.Second), te.Reason)
	}
	// Output:
	// 429 Too Many Requests
	// true 30s context deadline too close
}
