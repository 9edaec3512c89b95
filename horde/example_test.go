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

	down.Store(true)
	clk.Advance(2 * time.Minute)
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
	// stable_diffusion: 9 jobs, stale: true, fetched 2m0s ago, because of HTTP 503
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
