package demo

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// progressHook is a progress writer that runs fn on every line, so that a
// test can act at a known point of a run without sleeping.
type progressHook struct {
	mu sync.Mutex
	fn func(line string)
}

// Write implements io.Writer.
func (h *progressHook) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fn(string(p))
	return len(p), nil
}

// get fetches url with a client of its own, closed afterwards so that no
// connection outlives the test.
func get(url string) (int, string, error) {
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// mustGet is get for the test's own goroutine.
func mustGet(t *testing.T, url string) string {
	t.Helper()
	code, body, err := get(url)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET %s: %d, %v", url, code, err)
	}
	return body
}

// TestRunMonitorAndInterrupt runs the demo for real with the shortest
// duration and a Monitor. When the seed policy's progress line first shows,
// it reads /heartbeat (the seed breaker must be on it) and interrupts the
// run; the report must then hold the two finished strategies and the
// partial third, and /metrics what they did.
func TestRunMonitorAndInterrupt(t *testing.T) {
	mon := NewMonitor()
	srv := httptest.NewServer(mon.Handler())
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var heartbeat string
	hook := &progressHook{fn: func(line string) {
		// This runs on the run's progress goroutine: t.Error only.
		if heartbeat == "" && strings.Contains(line, "[3/4]") && !strings.Contains(line, "done in") {
			code, body, err := get(srv.URL + "/heartbeat")
			if err != nil || code != http.StatusOK {
				t.Errorf("/heartbeat: %d, %v", code, err)
			}
			heartbeat = body
			cancel()
		}
	}}
	r, err := Run(ctx, Config{Duration: MinDuration, Clients: 4, Seed: 1, Progress: hook, Live: true, Monitor: mon})
	if err != nil {
		t.Fatal(err)
	}

	var hb map[string]json.RawMessage
	if err := json.Unmarshal([]byte(heartbeat), &hb); err != nil || hb["seed"] == nil {
		t.Errorf("/heartbeat during the seed policy = %q (%v), want the seed breaker in it", heartbeat, err)
	}
	if !r.Interrupted || len(r.Results) != 3 {
		t.Fatalf("Interrupted = %v with %d results, want true with 3", r.Interrupted, len(r.Results))
	}
	for i, res := range r.Results[:2] {
		if !res.Complete || res.Calls == 0 || res.Upstream == 0 {
			t.Errorf("result %d (%s): complete %v, %d calls, %d upstream requests", i, res.Strategy, res.Complete, res.Calls, res.Upstream)
		}
	}
	if r.Results[2].Complete || r.Results[2].Strategy != Seed {
		t.Errorf("third result = %s complete %v, want the seed policy, interrupted", r.Results[2].Strategy, r.Results[2].Complete)
	}

	metrics := mustGet(t, srv.URL+"/metrics")
	for _, want := range []string{`httpretry_attempts_total{host=`, `strategy="naive"`, `strategy="seed"`,
		`httpretry_breaker_state{breaker="seed",strategy="seed"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if body := mustGet(t, srv.URL+"/heartbeat"); strings.TrimSpace(body) != `{"status":"ok"}` {
		t.Errorf("/heartbeat after the run = %s, want no breakers", body)
	}

	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"seed policy (interrupted)", "no conclusion", "Interrupted:"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

func TestRunAlreadyCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r, err := Run(ctx, Config{Duration: MinDuration, Clients: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Interrupted || len(r.Results) != 0 {
		t.Errorf("Interrupted = %v with %d results, want true with none", r.Interrupted, len(r.Results))
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{Duration: 500 * time.Millisecond, Clients: 1},
		{Duration: time.Second, Clients: 0},
		{Duration: time.Second, Clients: MaxClients + 1},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", c)
		}
	}
	if _, err := Run(context.Background(), Config{Duration: time.Millisecond, Clients: 1}); err == nil {
		t.Error("Run with a 1ms duration: no error")
	}
	if err := (Config{Duration: DefaultDuration, Clients: DefaultClients}).Validate(); err != nil {
		t.Errorf("the defaults do not validate: %v", err)
	}
}

// TestSettingsScale checks the scaled cooldown and the bucket width.
func TestSettingsScale(t *testing.T) {
	for _, tc := range []struct {
		d              time.Duration
		cooldown, span time.Duration
	}{
		{15 * time.Second, 938 * time.Millisecond, 250 * time.Millisecond},
		{2 * time.Second, 125 * time.Millisecond, 50 * time.Millisecond},
		{6 * time.Second, 375 * time.Millisecond, 100 * time.Millisecond},
	} {
		s := Config{Duration: tc.d}.settings()
		if s.Cooldown != tc.cooldown || s.Bucket != tc.span {
			t.Errorf("settings(%v) = cooldown %v, bucket %v; want %v, %v", tc.d, s.Cooldown, s.Bucket, tc.cooldown, tc.span)
		}
	}
}
