package redisbreaker_test

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/breaker/redisbreaker"
	"github.com/hordekit/httpretry/internal/faultserver"
	"github.com/hordekit/httpretry/internal/leaktest"
	"github.com/hordekit/httpretry/internal/redistest"
)

// The fleet breaker plugs into the transport and the heartbeat like a local
// one: calls through one replica's transport trip it, and another replica's
// transport refuses without reaching the upstream.
func TestTransportAndHeartbeat(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	upstream := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(faultserver.Status(http.StatusServiceUnavailable))})
	rs := fleet(t, s.Addr, 2, redisbreaker.Config{Config: breaker.Config{Name: "upstream", Cooldown: time.Minute}})

	client := func(cb breaker.CircuitBreaker) *http.Client {
		base := &http.Transport{}
		t.Cleanup(base.CloseIdleConnections)
		return &http.Client{Transport: &httpretry.Transport{
			Base:     base,
			Breaker:  cb,
			NoBudget: true,
			Policy:   httpretry.Policy{MaxAttempts: 1, Logger: slog.New(slog.DiscardHandler)},
		}}
	}
	a, b := client(rs[0]), client(rs[1])

	for range 5 {
		resp, err := a.Get(upstream.URL)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	waitState(t, rs[1], breaker.Open, propagationBound)
	sent := upstream.Requests()
	_, err := b.Get(upstream.URL)
	if !errors.Is(err, breaker.ErrOpen) {
		t.Fatalf("replica B's call: %v, want ErrOpen", err)
	}
	if upstream.Requests() != sent {
		t.Error("replica B reached the upstream while the fleet's breaker is open")
	}

	rec := httptest.NewRecorder()
	breaker.Heartbeat{Breakers: []breaker.CircuitBreaker{rs[1]}, Strict: true}.
		ServeHTTP(rec, httptest.NewRequest("GET", "/heartbeat", nil))
	var body map[string]json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	var st breaker.Status
	if err := json.Unmarshal(body["upstream"], &st); err != nil {
		t.Fatal(err)
	}
	t.Logf("replica B's heartbeat: %d %s", rec.Code, rec.Body.String())
	if rec.Code != http.StatusServiceUnavailable || !st.Degraded || st.ConsecutiveFailures != 5 || st.SecondsUntilRetry == nil {
		t.Errorf("heartbeat = %d %s; want 503, degraded, 5 failures, a retry time", rec.Code, rec.Body.String())
	}
}
