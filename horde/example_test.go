package horde_test

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
	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/clock"
	"github.com/hordekit/httpretry/horde"
)

// The seed's use: read the model status, and keep answering from the last
// good copy when the API goes down.
func ExampleClient_ModelStatus() {
	var down atomic.Bool
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, `[{"name":"stable_diffusion","count":24,"performance":1082640.0,"queued":47185920.0,"jobs":9.0,"eta":1,"type":"image"}]`)
	}))
	defer api.Close()

	// A fake clock whose timers fire at once, so the retry waits pass
	// instantly; and a breaker of the example's own rather than the
	// process-wide horde.APIBreaker.
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	clk.SetAuto(true)
	quiet := slog.New(slog.DiscardHandler)
	client := &horde.Client{
		BaseURL: api.URL + "/api/",
		Breaker: breaker.MustNew(breaker.Config{Name: "ai_horde", Clock: clk, Logger: quiet}),
		Clock:   clk,
		Logger:  quiet,
	}
	defer client.CloseIdleConnections()
	ctx := context.Background()

	res, err := client.ModelStatus(ctx, horde.StatusQuery{Type: horde.Image})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s: %v jobs, stale: %v\n", res.Value[0].Name, res.Value[0].Jobs, res.Stale)

	// Ten minutes later, past FreshFor and the stale-while-revalidate
	// window, the API is down: the call tries it, then serves the old copy.
	down.Store(true)
	clk.Advance(10 * time.Minute)
	res, err = client.ModelStatus(ctx, horde.StatusQuery{Type: horde.Image})
	if err != nil {
		fmt.Println(err)
		return
	}
	var se *httpretry.StatusError
	errors.As(res.Err, &se)
	fmt.Printf("%s: %v jobs, stale: %v, fetched %v ago, because of HTTP %d\n",
		res.Value[0].Name, res.Value[0].Jobs, res.Stale, res.Age.Truncate(time.Minute), se.Response.StatusCode)
	// Output:
	// stable_diffusion: 9 jobs, stale: false
	// stable_diffusion: 9 jobs, stale: true, fetched 10m0s ago, because of HTTP 503
}

// The seed's /api/heartbeat, from the breaker the Client uses.
func ExampleNewHandler() {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cb := breaker.MustNew(breaker.Config{Name: "ai_horde", Clock: clk, Logger: slog.New(slog.DiscardHandler)})
	h := horde.NewHandler(&horde.Client{Breaker: cb})
	show := func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/heartbeat", nil))
		fmt.Println(rec.Body.String())
	}

	show()
	for range 5 {
		cb.RecordFailure()
	}
	clk.Advance(26600 * time.Millisecond)
	show()
	// Output:
	// {"status":"ok","ai_horde":{"degraded":false,"consecutive_failures":0,"seconds_until_retry":null}}
	// {"status":"ok","ai_horde":{"degraded":true,"consecutive_failures":5,"seconds_until_retry":93.4}}
}

// Stale-while-revalidate: a minute and a half after the fetch, past FreshFor
// but within StaleWhileRevalidate, the old copy is served at once while one
// background fetch refreshes it for the callers that follow.
func ExampleClient_staleWhileRevalidate() {
	var fetches atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := fetches.Add(1)
		fmt.Fprintf(w, `[{"name":"stable_diffusion","count":%d,"performance":1.0,"queued":0.0,"jobs":0.0,"eta":0,"type":"image"}]`, n)
	}))
	defer api.Close()

	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	quiet := slog.New(slog.DiscardHandler)
	client := &horde.Client{
		BaseURL:              api.URL + "/api/",
		Breaker:              breaker.MustNew(breaker.Config{Name: "ai_horde", Clock: clk, Logger: quiet}),
		Clock:                clk,
		Logger:               quiet,
		StaleWhileRevalidate: 2 * time.Minute, // serve copies up to 3 minutes old at once
	}
	defer client.Close() // cancels and waits for the background fetch
	ctx := context.Background()

	show := func() {
		res, err := client.ModelStatus(ctx, horde.StatusQuery{})
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("count %d, age %v, stale %v, revalidating %v\n",
			res.Value[0].Count, res.Age, res.Stale, res.Revalidating)
	}
	show()
	clk.Advance(90 * time.Second)
	show() // at once, while the refresh runs; the next caller gets its copy
	// Output:
	// count 1, age 0s, stale false, revalidating false
	// count 1, age 1m30s, stale true, revalidating true
}

// A 200 whose body the consumer's models would refuse is a failed fetch:
// the good copy stays, and BodyError says what was wrong.
func ExampleBodyError() {
	var broken atomic.Bool
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if broken.Load() {
			io.WriteString(w, `[{"name":"stable_diffusion","count":24,"performance":1.0,"queued":0.0,"jobs":0.5,"eta":1,"type":"image"}]`)
			return
		}
		io.WriteString(w, `[{"name":"stable_diffusion","count":24,"performance":1.0,"queued":0.0,"jobs":9.0,"eta":1,"type":"image"}]`)
	}))
	defer api.Close()

	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	clk.SetAuto(true)
	quiet := slog.New(slog.DiscardHandler)
	client := &horde.Client{
		BaseURL: api.URL + "/api/",
		Breaker: breaker.MustNew(breaker.Config{Name: "ai_horde", Clock: clk, Logger: quiet}),
		Clock:   clk,
		Logger:  quiet,
	}
	defer client.Close()
	ctx := context.Background()

	if _, err := client.ModelStatus(ctx, horde.StatusQuery{}); err != nil {
		fmt.Println(err)
		return
	}
	broken.Store(true)
	clk.Advance(10 * time.Minute)
	res, err := client.ModelStatus(ctx, horde.StatusQuery{})
	if err != nil {
		fmt.Println(err)
		return
	}
	var be *horde.BodyError
	if errors.As(res.Err, &be) {
		fmt.Printf("served %v jobs (stale: %v); refused item %d, field %q: %s\n",
			res.Value[0].Jobs, res.Stale, be.Item, be.Field, be.Problem)
	}
	// Output:
	// served 9 jobs (stale: true); refused item 0, field "jobs": "0.5" is not a whole number
}
