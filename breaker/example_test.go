package breaker_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/clock"
)

// The seed's use: check the breaker before calling the AI Horde, then record
// how the call went. (A fake clock keeps the output fixed; leave Clock nil in
// production.)
func Example() {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	horde := breaker.MustNew(breaker.Config{Name: "aihorde.net", Clock: clk})

	callHorde := func() error { return errors.New("connect: connection refused") }
	for range 6 {
		if !horde.Allow() {
			wait, _ := horde.UntilRetry()
			fmt.Println("skipped: AI Horde degraded; next probe in", wait)
			continue
		}
		if err := callHorde(); err != nil {
			horde.RecordFailure()
			fmt.Println("failed:", err)
			continue
		}
		horde.RecordSuccess()
	}
	fmt.Println("degraded:", horde.Degraded(), "consecutive failures:", horde.ConsecutiveFailures())

	clk.Advance(2 * time.Minute)
	fmt.Println("after the cooldown:", horde.State())
	if horde.Allow() { // the one probe
		horde.RecordSuccess()
	}
	fmt.Println("after a good probe:", horde.State())
	// Output:
	// failed: connect: connection refused
	// failed: connect: connection refused
	// failed: connect: connection refused
	// failed: connect: connection refused
	// failed: connect: connection refused
	// skipped: AI Horde degraded; next probe in 2m0s
	// degraded: true consecutive failures: 5
	// after the cooldown: half-open
	// after a good probe: closed
}

// Serving the breakers' state on /heartbeat, as the seed's service does.
func ExampleHeartbeat() {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	horde := breaker.MustNew(breaker.Config{Name: "horde_api", Clock: clk})
	for range 5 {
		horde.RecordFailure()
	}
	clk.Advance(26600 * time.Millisecond)

	mux := http.NewServeMux()
	mux.Handle("GET /heartbeat", breaker.Heartbeat{Breakers: []breaker.CircuitBreaker{horde}})

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/heartbeat", nil))
	fmt.Print(rec.Code, " ", rec.Body)
	// Output:
	// 200 {"status":"ok","horde_api":{"state":"open","degraded":true,"consecutive_failures":5,"seconds_until_retry":93.4}}
}

// Permits tie each outcome to the state it was admitted in, so a slow call
// that started before a trip cannot extend the cooldown.
func ExampleBreaker_Acquire() {
	b := breaker.MustNew(breaker.Config{Name: "api.example.com", FailureThreshold: 1})
	get := func() error {
		p, err := b.Acquire()
		if err != nil {
			return err // an *breaker.OpenError
		}
		defer p.Release() // neutral if we return before Done
		err = errors.New("HTTP 503")
		p.Done(err == nil)
		return err
	}
	fmt.Println(get())
	err := get()
	fmt.Println(errors.Is(err, breaker.ErrOpen), err)
	// Output:
	// HTTP 503
	// true circuit breaker "api.example.com" is open; next probe in 2m0s
}

func ExampleBreaker_Execute() {
	b := breaker.MustNew(breaker.Config{Name: "api.example.com"})
	err := b.Execute(func() error {
		return nil // the call
	})
	fmt.Println(err, b.State())
	// Output: <nil> closed
}

// One breaker per upstream host, so one host's outage does not refuse calls
// to the others (the seed had one global breaker).
func ExampleSet() {
	hosts, err := breaker.NewSet(breaker.SetConfig{Config: breaker.Config{FailureThreshold: 2}})
	if err != nil {
		panic(err)
	}
	for range 2 {
		hosts.Get("down.example").RecordFailure()
	}
	hosts.Get("up.example").RecordSuccess()
	for _, st := range hosts.Statuses() {
		fmt.Println(st.Name, st.State)
	}
	// Output:
	// down.example open
	// up.example closed
}
