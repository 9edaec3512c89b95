package horde_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/clock"
	"github.com/hordekit/httpretry/horde"
	"github.com/hordekit/httpretry/internal/faultserver"
)

// fixtureDir holds the AI Horde fixtures, in the module (see its README).
var fixtureDir = filepath.Join("testdata", "aihorde")

var fixtureFiles = []string{
	"status_models_image.json", "status_models_text.json",
	"stats_img_models.json", "stats_text_models.json",
	"workers_image.json", "workers_text.json",
}

// loadFixtures reads every fixture, by file name.
func loadFixtures(t *testing.T) map[string][]byte {
	t.Helper()
	fx := make(map[string][]byte, len(fixtureFiles))
	for _, name := range fixtureFiles {
		b, err := os.ReadFile(filepath.Join(fixtureDir, name))
		if err != nil {
			t.Fatalf("AI Horde fixture missing: %v", err)
		}
		fx[name] = b
	}
	return fx
}

// fakeHorde is an AI Horde API on loopback that serves the fixtures at the
// API's paths under /api/. Its behaviour can be swapped for an outage.
type fakeHorde struct {
	*faultserver.Server
	fx map[string][]byte
}

func startFake(t *testing.T) *fakeHorde {
	t.Helper()
	f := &fakeHorde{fx: loadFixtures(t)}
	f.Server = faultserver.Start(t, faultserver.Config{})
	f.healthy()
	return f
}

// base is the API root to give a Client.
func (f *fakeHorde) base() string { return f.URL + "/api/" }

// healthy makes the fake answer every request from the fixtures.
func (f *fakeHorde) healthy() { f.SetBehavior(f.fixture) }

// outage makes the fake answer every request with fault.
func (f *fakeHorde) outage(fault faultserver.Fault) { f.SetBehavior(faultserver.Always(fault)) }

// fixture picks the fixture for r, as the API would answer it.
func (f *fakeHorde) fixture(_ int, r *http.Request) faultserver.Fault {
	typ := r.URL.Query().Get("type")
	var body []byte
	switch r.URL.Path {
	case "/api/v2/status/models":
		body = f.fx["status_models_"+typ+".json"]
	case "/api/v2/stats/img/models":
		body = f.fx["stats_img_models.json"]
	case "/api/v2/stats/text/models":
		body = f.fx["stats_text_models.json"]
	case "/api/v2/workers":
		if typ == "" {
			body = f.allWorkers()
		} else {
			body = f.fx["workers_"+typ+".json"]
		}
	}
	if body == nil {
		return faultserver.Status(http.StatusNotFound)
	}
	return faultserver.OK().WithBody(body).WithHeader("Content-Type", "application/json")
}

// allWorkers is /v2/workers without a type: both lists in one array.
func (f *fakeHorde) allWorkers() []byte {
	var img, txt []json.RawMessage
	if json.Unmarshal(f.fx["workers_image.json"], &img) != nil || json.Unmarshal(f.fx["workers_text.json"], &txt) != nil {
		return nil
	}
	b, _ := json.Marshal(append(img, txt...))
	return b
}

// gated makes each request announce itself on arrived and wait for gate
// before it is answered from the fixtures.
func (f *fakeHorde) gated(arrived chan<- struct{}, gate <-chan struct{}) {
	f.SetBehavior(func(n int, r *http.Request) faultserver.Fault {
		arrived <- struct{}{}
		<-gate
		return f.fixture(n, r)
	})
}

var discard = slog.New(slog.DiscardHandler)

// epoch is where the fake clocks start.
var epoch = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// expired is how far to move the clock for a copy to be past both FreshFor
// and the stale-while-revalidate window, so that callers wait for the
// refresh.
const expired = horde.DefaultFreshFor + horde.DefaultStaleWhileRevalidate + time.Second

// newClient returns a Client for base with its own breaker (the seed's
// settings) and transport, both on one fake clock whose timers fire at once,
// so retry waits take no time and show up as the clock moving.
func newClient(t *testing.T, base string) (*horde.Client, *clock.Fake, *breaker.Breaker) {
	t.Helper()
	clk := clock.NewFake(epoch)
	clk.SetAuto(true)
	cb := breaker.MustNew(breaker.Config{Name: "ai_horde", FailureThreshold: 5, Cooldown: 120 * time.Second,
		Clock: clk, Logger: discard})
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &horde.Client{BaseURL: base, Transport: tr, Breaker: cb, Clock: clk, Logger: discard}, clk, cb
}

// get sends GET target to h and returns the recorded response.
func get(h http.Handler, target string) *http.Response {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	return rec.Result()
}

// body reads a recorded response's body.
func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
