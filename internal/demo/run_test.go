package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/internal/faultserver"
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

// TestRunMonitorAndInterrupt runs the demo for real, briefly, with a
// Monitor. When the progress says the outage has begun, it reads
// /heartbeat (both strategies with a breaker must be on it) and interrupts
// the run; the report must then hold all four strategies, incomplete, with
// what they did until then, and /metrics what they did.
func TestRunMonitorAndInterrupt(t *testing.T) {
	mon := NewMonitor()
	srv := httptest.NewServer(mon.Handler())
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var heartbeat string
	hook := &progressHook{fn: func(line string) {
		// This runs on the run's progress goroutine: t.Error only.
		if heartbeat == "" && strings.Contains(line, " outage") {
			code, body, err := get(srv.URL + "/heartbeat")
			if err != nil || code != http.StatusOK {
				t.Errorf("/heartbeat: %d, %v", code, err)
			}
			heartbeat = body
			cancel()
		}
	}}
	r, err := Run(ctx, Config{Duration: MinDuration, Rate: 40, Arrivals: Fixed, Deadline: time.Second, Seed: 1,
		Progress: hook, Monitor: mon})
	if err != nil {
		t.Fatal(err)
	}

	var hb map[string]json.RawMessage
	if err := json.Unmarshal([]byte(heartbeat), &hb); err != nil || hb["seed"] == nil || len(hb) < 3 {
		t.Errorf("/heartbeat during the run = %q (%v), want the seed breaker and the defaults' host breaker", heartbeat, err)
	}
	if !r.Interrupted || len(r.Results) != 4 {
		t.Fatalf("Interrupted = %v with %d results, want true with 4", r.Interrupted, len(r.Results))
	}
	for _, res := range r.Results {
		st := res.Stats(r.Scenario)
		// A healthy phase a third of a second long: most calls succeed, but
		// one that starts late in it may meet the flaky phase.
		if res.Complete || st[Healthy].Calls == 0 || st[Healthy].Successes == 0 || res.Upstream() == 0 {
			t.Errorf("%s: complete %v, healthy %+v, %d upstream requests", res.Strategy, res.Complete, st[Healthy], res.Upstream())
		}
		if st[Recovery].Calls != 0 {
			t.Errorf("%s made %d calls in the recovery, after the interruption", res.Strategy, st[Recovery].Calls)
		}
	}

	_, metrics, err := get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`httpretry_attempts_total{host=`, `strategy="naive"`, `strategy="seed"`, `strategy="defaults"`,
		`httpretry_breaker_state{breaker="seed",strategy="seed"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if _, body, _ := get(srv.URL + "/heartbeat"); strings.TrimSpace(body) != `{"status":"ok"}` {
		t.Errorf("/heartbeat after the run = %s, want no breakers", body)
	}
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "Interrupted:") || !strings.Contains(b.String(), "(interrupted)") {
		t.Errorf("report of an interrupted run:\n%s", b.String())
	}
}

func TestRunAlreadyCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r, err := Run(ctx, Config{Duration: MinDuration, Rate: 1, Deadline: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Interrupted || len(r.Results) != 0 {
		t.Errorf("Interrupted = %v with %d results, want true with none", r.Interrupted, len(r.Results))
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Duration: DefaultDuration, Rate: DefaultRate, Deadline: DefaultDeadline}
	if err := ok.Validate(); err != nil {
		t.Errorf("the defaults do not validate: %v", err)
	}
	for _, c := range []Config{
		{Duration: time.Second, Rate: 10, Deadline: time.Second},
		{Duration: time.Minute, Rate: 0, Deadline: time.Second},
		{Duration: time.Minute, Rate: MaxRate + 1, Deadline: time.Second},
		{Duration: time.Minute, Rate: 10},
		{Duration: time.Minute, Rate: 10, Deadline: time.Second, Arrivals: 7},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", c)
		}
	}
	if _, err := Run(context.Background(), Config{Duration: time.Millisecond, Rate: 1, Deadline: time.Second}); err == nil {
		t.Error("Run with a 1ms duration: no error")
	}
	if a, err := ParseArrivals("fixed"); err != nil || a != Fixed || a.String() != "fixed" {
		t.Errorf("ParseArrivals(fixed) = %v, %v", a, err)
	}
	if _, err := ParseArrivals("bursty"); err == nil {
		t.Error("ParseArrivals(bursty): no error")
	}
}

// TestSchedule checks the arrivals: as many as the rate says, the same for
// a seed, fixed ones evenly spaced, Poisson ones spread like Poisson.
func TestSchedule(t *testing.T) {
	cfg := Config{Duration: time.Minute, Rate: 100, Seed: 5}
	a, b := schedule(cfg), schedule(cfg)
	if len(a) < 5700 || len(a) > 6300 || fmt.Sprint(a[:10]) != fmt.Sprint(b[:10]) {
		t.Fatalf("Poisson: %d arrivals in a minute at 100/s, or not the same twice", len(a))
	}
	// Poisson intervals: about as many shorter than the mean as
	// exp(-1) predicts longer.
	longer := 0
	for i := 1; i < len(a); i++ {
		if a[i]-a[i-1] > 10*time.Millisecond {
			longer++
		}
	}
	if share := float64(longer) / float64(len(a)-1); share < 0.33 || share > 0.41 {
		t.Errorf("%.3f of Poisson intervals exceed the mean, want about exp(-1) = 0.37", share)
	}
	cfg.Arrivals = Fixed
	f := schedule(cfg)
	if len(f) != 6000 || f[1]-f[0] != 10*time.Millisecond || f[5999] != 59990*time.Millisecond {
		t.Errorf("fixed: %d arrivals, %v apart, last at %v", len(f), f[1]-f[0], f[len(f)-1])
	}
	if s := (Config{Duration: 54 * time.Second}).settings(); s.Cooldown != 2*time.Second {
		t.Errorf("cooldown for 54s = %v, want 2s (120s scaled by 54s/27)", s.Cooldown)
	}
}

// rtFunc is a RoundTripper from a function.
type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestSeedErrors checks the seed's view of a connection reset: httpx's
// ReadError, which it does not retry, so not transient; a server closing
// without a response stays retryable, as it is for the seed.
func TestSeedErrors(t *testing.T) {
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(
		faultserver.ResetBeforeHeaders(), faultserver.CloseNoResponse())})
	pool := newPool(false)
	defer pool.CloseIdleConnections()
	rt := seedErrors{pool}
	req, _ := http.NewRequest("GET", srv.URL, nil)
	_, err := rt.RoundTrip(req)
	if !errors.As(err, new(readError)) || httpretry.IsTransient(err) {
		t.Errorf("a reset = %v (transient %v), want readError, not transient", err, httpretry.IsTransient(err))
	}
	_, err = rt.RoundTrip(req)
	if err == nil || errors.As(err, new(readError)) || !httpretry.IsTransient(err) {
		t.Errorf("a close without a response = %v, want it as it is, transient", err)
	}
	other := errors.New("boom")
	if _, err := (seedErrors{rtFunc(func(*http.Request) (*http.Response, error) {
		return nil, fmt.Errorf("read: %w", syscall.ECONNRESET)
	})}).RoundTrip(req); !errors.As(err, new(readError)) {
		t.Errorf("a wrapped ECONNRESET = %v, want readError", err)
	}
	if _, err := (seedErrors{rtFunc(func(*http.Request) (*http.Response, error) { return nil, other })}).RoundTrip(req); err != other {
		t.Errorf("another error = %v, want it unchanged", err)
	}
}
