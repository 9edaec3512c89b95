package horde_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hordekit/httpretry/horde"
	"github.com/hordekit/httpretry/internal/faultserver"
	"github.com/hordekit/httpretry/internal/leaktest"
)

// The heartbeat bodies, byte for byte as the seed's FastAPI app wrote them.
const (
	heartbeatClosed    = `{"status":"ok","ai_horde":{"degraded":false,"consecutive_failures":0,"seconds_until_retry":null}}`
	heartbeatOpen      = `{"status":"ok","ai_horde":{"degraded":true,"consecutive_failures":5,"seconds_until_retry":120.0}}`
	heartbeatOpenLater = `{"status":"ok","ai_horde":{"degraded":true,"consecutive_failures":5,"seconds_until_retry":93.4}}`
	heartbeatHalfOpen  = `{"status":"ok","ai_horde":{"degraded":true,"consecutive_failures":5,"seconds_until_retry":0.0}}`
)

func heartbeat(t *testing.T, h http.Handler) string {
	t.Helper()
	resp := get(h, "/api/heartbeat")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("heartbeat: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return body(t, resp)
}

// The breaker opens after 5 failed calls, the heartbeat shows it, and a
// probe after the cooldown closes it again.
func TestBreakerOpensAndRecoversOnTheHeartbeat(t *testing.T) {
	leaktest.Check(t)
	srv := startFake(t)
	srv.outage(faultserver.Status(503))
	c, clk, _ := newClient(t, srv.base())
	h := horde.NewHandler(c)

	if got := heartbeat(t, h); got != heartbeatClosed {
		t.Errorf("healthy heartbeat:\n got %s\nwant %s", got, heartbeatClosed)
	}
	var waits []time.Duration
	for i := 1; i <= 5; i++ {
		start := clk.Now()
		resp := get(h, "/api/v2/workers?type=image")
		if resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("call %d: %d, want 502", i, resp.StatusCode)
		}
		waits = append(waits, clk.Now().Sub(start))
	}
	if n := srv.Requests(); n != 15 {
		t.Errorf("%d upstream requests for 5 calls, want 3 attempts each", n)
	}
	// Real jitter: tenacity's formula with these settings would wait
	// exactly 1 s and 1 s every time.
	for _, w := range waits {
		if w < 2*time.Second || w >= 6*time.Second {
			t.Errorf("a call waited %v between its attempts, want 1-2 s then 1-4 s", w)
		}
	}
	if waits[0] == waits[1] && waits[1] == waits[2] {
		t.Errorf("every call waited %v: retries in lockstep", waits[0])
	}

	if got := heartbeat(t, h); got != heartbeatOpen {
		t.Errorf("open heartbeat:\n got %s\nwant %s", got, heartbeatOpen)
	}
	resp := get(h, "/api/v2/workers?type=image")
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("Retry-After") != "120" {
		t.Errorf("refused call: %d, Retry-After %q; want 502, 120", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if n := srv.Requests(); n != 15 {
		t.Errorf("the open breaker let %d requests through", n-15)
	}

	clk.Advance(26600 * time.Millisecond)
	if got := heartbeat(t, h); got != heartbeatOpenLater {
		t.Errorf("heartbeat 26.6 s later:\n got %s\nwant %s", got, heartbeatOpenLater)
	}
	clk.Advance(93400 * time.Millisecond)
	if got := heartbeat(t, h); got != heartbeatHalfOpen {
		t.Errorf("heartbeat after the cooldown:\n got %s\nwant %s", got, heartbeatHalfOpen)
	}

	srv.healthy()
	resp = get(h, "/api/v2/workers?type=image")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Horde-Stale") != "" {
		t.Fatalf("probe: %d, stale %q", resp.StatusCode, resp.Header.Get("X-Horde-Stale"))
	}
	if got := heartbeat(t, h); got != heartbeatClosed {
		t.Errorf("heartbeat after the probe:\n got %s\nwant %s", got, heartbeatClosed)
	}
	if n := srv.Requests(); n != 16 {
		t.Errorf("%d upstream requests, want 15 + one probe", n)
	}
}

// Every data endpoint answers with the API's JSON as received.
func TestHandlerServesTheAPIsJSON(t *testing.T) {
	leaktest.Check(t)
	srv := startFake(t)
	c, _, _ := newClient(t, srv.base())
	h := horde.NewHandler(c)
	for target, fixture := range map[string]string{
		"/api/v2/status/models":                       "status_models_image.json",
		"/api/v2/status/models?type=text&min_count=2": "status_models_text.json",
		"/api/v2/stats/img/models":                    "stats_img_models.json",
		"/api/v2/stats/text/models?model_state=all":   "stats_text_models.json",
		"/api/v2/workers?type=image":                  "workers_image.json",
		"/api/v2/workers?type=text&unknown=ignored":   "workers_text.json",
	} {
		resp := get(h, target)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" ||
			resp.Header.Get("Age") != "0" || resp.Header.Get("X-Horde-Stale") != "" {
			t.Errorf("%s: %d %v", target, resp.StatusCode, resp.Header)
		}
		if got := body(t, resp); got != string(srv.fx[fixture]) {
			t.Errorf("%s: body differs from %s", target, fixture)
		}
	}
	queries := map[string]bool{}
	for _, e := range srv.Log() {
		queries[e.Path+"?"+e.RawQuery] = true
	}
	for _, want := range []string{
		"/api/v2/status/models?min_count=2&model_state=known&type=text",
		"/api/v2/stats/text/models?model_state=all",
		"/api/v2/workers?type=text",
	} {
		if !queries[want] {
			t.Errorf("no upstream request %s in %v", want, queries)
		}
	}
}

func TestHandlerMarksStaleCopy(t *testing.T) {
	leaktest.Check(t)
	srv := startFake(t)
	c, clk, _ := newClient(t, srv.base())
	h := horde.NewHandler(c)
	if resp := get(h, "/api/v2/stats/img/models"); resp.StatusCode != http.StatusOK {
		t.Fatal(resp.Status)
	}
	clk.Advance(expired)
	srv.outage(faultserver.ResetBeforeHeaders())

	resp := get(h, "/api/v2/stats/img/models")
	age, _ := strconv.Atoi(resp.Header.Get("Age"))
	if low := int(expired/time.Second) + 2; resp.StatusCode != http.StatusOK || resp.Header.Get("X-Horde-Stale") != "true" ||
		resp.Header.Get("X-Horde-Revalidating") != "" || age < low || age >= low+4 {
		t.Errorf("stale copy: %d, X-Horde-Stale %q, X-Horde-Revalidating %q, Age %q (%v + 2-6 s of retries)", resp.StatusCode,
			resp.Header.Get("X-Horde-Stale"), resp.Header.Get("X-Horde-Revalidating"), resp.Header.Get("Age"), expired)
	}
	if got := body(t, resp); got != string(srv.fx["stats_img_models.json"]) {
		t.Errorf("stale body = %s", got)
	}
}

func TestHandlerErrors(t *testing.T) {
	leaktest.Check(t)
	srv := startFake(t)
	srv.outage(faultserver.Status(500))
	c, _, _ := newClient(t, srv.base())
	h := horde.NewHandler(c)

	for target, code := range map[string]int{
		"/api/v2/status/models?type=video":       http.StatusBadRequest,
		"/api/v2/status/models?min_count=many":   http.StatusBadRequest,
		"/api/v2/status/models?min_count=-1":     http.StatusBadRequest,
		"/api/v2/stats/img/models?model_state=x": http.StatusBadRequest,
		"/api/v2/workers?type=interrogation":     http.StatusBadRequest,
		"/api/v2/workers?type=text":              http.StatusBadGateway,
	} {
		resp := get(h, target)
		var e struct{ Error string }
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Error == "" ||
			resp.StatusCode != code || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %q (%v), want %d with a JSON error", target, resp.StatusCode, e.Error, err, code)
		}
	}
	if n := srv.Requests(); n != 3 {
		t.Errorf("%d upstream requests, want 3 (only the valid query)", n)
	}

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/heartbeat", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /api/heartbeat: %d", rec.Code)
	}
}

// Input the handler cannot take at its word is refused with a short JSON
// error, before any request upstream.
func TestHandlerRefusesBadInput(t *testing.T) {
	leaktest.Check(t)
	srv := startFake(t)
	c, _, _ := newClient(t, srv.base())
	h := horde.NewHandler(c)
	long := strings.Repeat("v", 100<<10)
	for _, tt := range []struct {
		method, target string
		code           int
		says           string // part of the error message
	}{
		{"GET", "/api/v2/status/models?type=%zz", 400, "percent-encoding"},
		{"GET", "/api/v2/status/models?type=text;x=1", 400, "semicolon"},
		{"GET", "/api/v2/workers?type=%zz", 400, "percent-encoding"},
		{"GET", "/api/v2/stats/img/models?model_state=%", 400, "percent-encoding"},
		{"GET", "/api/v2/status/models?type=video", 400, `type "video"`},
		{"GET", "/api/v2/status/models?type=" + long, 400, "(102400 bytes)"},
		{"GET", "/api/v2/status/models?model_state=famous", 400, "model_state"},
		{"GET", "/api/v2/stats/text/models?model_state=Known", 400, "model_state"},
		{"GET", "/api/v2/workers?type=interrogation", 400, "type"},
		{"GET", "/api/v2/status/models?type=image&type=text", 400, "type is given 2 times"},
		{"GET", "/api/v2/status/models?type=", 400, "type is empty"},
		{"GET", "/api/v2/status/models?min_count=-1", 400, "min_count"},
		{"GET", "/api/v2/status/models?min_count=+2", 400, "min_count"},
		{"GET", "/api/v2/status/models?min_count=2.0", 400, "min_count"},
		{"GET", "/api/v2/status/models?min_count=99999999999999999999", 400, "too large"},
		{"GET", "/api/v2/status/models?min_count=" + long, 400, "(102400 bytes)"},
		{"GET", "/api/v2/model", 404, "/api/v2/workers"},
		{"GET", "/api/v2/workers/", 404, "no endpoint"},
		{"GET", "/" + long, 404, "(102401 bytes)"},
		{"POST", "/api/v2/workers", 405, "use GET"},
		{"DELETE", "/api/heartbeat", 405, "use GET"},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.target, nil))
		resp := rec.Result()
		raw := body(t, resp)
		var e struct{ Error string }
		if err := json.Unmarshal([]byte(raw), &e); err != nil || resp.StatusCode != tt.code ||
			resp.Header.Get("Content-Type") != "application/json" || !strings.Contains(e.Error, tt.says) {
			t.Errorf("%s %.80s: %d %q, want %d with a JSON error saying %q", tt.method, tt.target, resp.StatusCode, e.Error, tt.code, tt.says)
		}
		if tt.says == "semicolon" && !strings.Contains(raw, "use &") {
			t.Errorf("the body escapes &: %s", raw)
		}
		if len(raw) > 400 {
			t.Errorf("%s %.80s: a %d-byte error body", tt.method, tt.target, len(raw))
		}
		if tt.code == 405 && resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s %s: Allow %q", tt.method, tt.target, resp.Header.Get("Allow"))
		}
	}
	if n := srv.Requests(); n != 0 {
		t.Errorf("%d upstream requests for bad input, want 0", n)
	}
	// HEAD is GET without the body, and unknown parameters are ignored as
	// the API ignores them.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodHead, "/api/v2/workers?type=text&apikey=x", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("HEAD: %d", rec.Code)
	}
}

func TestHandlerMarksRevalidatingCopy(t *testing.T) {
	leaktest.Check(t)
	srv := startFake(t)
	c, clk, _ := newClient(t, srv.base())
	h := horde.NewHandler(c)
	if resp := get(h, "/api/v2/workers?type=image"); resp.StatusCode != http.StatusOK {
		t.Fatal(resp.Status)
	}
	clk.Advance(90 * time.Second)
	resp := get(h, "/api/v2/workers?type=image")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Horde-Stale") != "true" ||
		resp.Header.Get("X-Horde-Revalidating") != "true" || resp.Header.Get("Age") != "90" {
		t.Errorf("in the window: %d %v", resp.StatusCode, resp.Header)
	}
	horde.WaitFetches(c)
	resp = get(h, "/api/v2/workers?type=image")
	if resp.Header.Get("X-Horde-Stale") != "" || resp.Header.Get("Age") != "0" {
		t.Errorf("after the refresh: %v", resp.Header)
	}
}
