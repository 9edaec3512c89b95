package rediscache_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/clock"
	"github.com/hordekit/httpretry/horde"
)

// fixtureDir holds the AI Horde fixtures: horde's testdata, in the module.
var fixtureDir = filepath.Join("..", "testdata", "aihorde")

// statusFixture is what the fake API serves for the image model status, the
// endpoint these tests read.
const statusFixture = "status_models_image.json"

// statusPath is that endpoint's path on the fake API.
const statusPath = "/api/v2/status/models"

// epoch is where the fake clocks start.
var epoch = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

var discard = slog.New(slog.DiscardHandler)

// loadFixture reads a fixture, failing (never skipping) when it is missing.
func loadFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtureDir, name))
	if err != nil {
		t.Fatalf("AI Horde fixture missing: %v", err)
	}
	return b
}

// fakeAPI is an AI Horde API on loopback serving the image model status from
// the fixture, until it is told to go down.
type fakeAPI struct {
	*httptest.Server
	body     []byte
	down     atomic.Bool
	requests atomic.Int64
}

func startAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{body: loadFixture(t, statusFixture)}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	f.requests.Add(1)
	switch {
	case f.down.Load():
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
	case r.URL.Path == statusPath && r.URL.Query().Get("type") == "image":
		w.Header().Set("Content-Type", "application/json")
		w.Write(f.body)
	default:
		http.NotFound(w, r)
	}
}

// base is the API root to give a Client.
func (f *fakeAPI) base() string { return f.URL + "/api/" }

// newHordeClient returns a Client of the API at base over store, with a
// breaker and transport of its own (so horde.APIBreaker is untouched), on a
// fake clock reading start whose timers fire at once, so retry waits take no
// time and show up as the clock moving.
func newHordeClient(t *testing.T, base string, store horde.Store, start time.Time) (*horde.Client, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(start)
	clk.SetAuto(true)
	cb := breaker.MustNew(breaker.Config{Name: "ai_horde", FailureThreshold: 5, Cooldown: 120 * time.Second,
		Clock: clk, Logger: discard})
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &horde.Client{BaseURL: base, Transport: tr, Breaker: cb, Store: store, Clock: clk, Logger: discard}, clk
}

// newRedis returns a go-redis client for addr, closed when the test ends.
// ContextTimeoutEnabled is on, as the package documentation recommends,
// except where a test shows the bound holds without it.
func newRedis(t *testing.T, addr string, contextTimeouts bool) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: contextTimeouts})
	t.Cleanup(func() { c.Close() })
	return c
}

// timedStore is a horde.Store that records how long each call took and what
// it returned, to show how a Redis outage reaches the Client.
type timedStore struct {
	horde.Store

	mu    sync.Mutex
	calls []storeCall
}

type storeCall struct {
	op  string
	d   time.Duration
	err error
}

func (c storeCall) String() string { return fmt.Sprintf("%s %v: %v", c.op, c.d, c.err) }

func (s *timedStore) Get(ctx context.Context, key string) ([]byte, time.Time, bool, error) {
	start := time.Now()
	v, at, ok, err := s.Store.Get(ctx, key)
	s.record("Get", time.Since(start), err)
	return v, at, ok, err
}

func (s *timedStore) Set(ctx context.Context, key string, value []byte, at time.Time) error {
	start := time.Now()
	err := s.Store.Set(ctx, key, value, at)
	s.record("Set", time.Since(start), err)
	return err
}

func (s *timedStore) record(op string, d time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, storeCall{op, d, err})
}

// take returns the calls recorded since the last take.
func (s *timedStore) take() []storeCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls
	s.calls = nil
	return c
}
