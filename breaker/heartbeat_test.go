package breaker_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/clock"
)

// Seed bug 2: after the cooldown the seed reported seconds_until_retry null,
// which reads like a healthy breaker.
func TestSeedBug2StatusJSON(t *testing.T) {
	b, clk, _ := newBreaker(t, breaker.Config{Name: "api"})
	check := func(want string) {
		t.Helper()
		got, err := json.Marshal(b.Status())
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Fatalf("Status JSON = %s, want %s", got, want)
		}
	}
	check(`{"state":"closed","degraded":false,"consecutive_failures":0,"seconds_until_retry":null}`)
	fail(b, 5)
	clk.Advance(26600 * time.Millisecond)
	check(`{"state":"open","degraded":true,"consecutive_failures":5,"seconds_until_retry":93.4}`)
	clk.Advance(93360 * time.Millisecond)
	check(`{"state":"open","degraded":true,"consecutive_failures":5,"seconds_until_retry":0}`) // 40 ms left
	clk.Advance(40 * time.Millisecond)
	check(`{"state":"half-open","degraded":true,"consecutive_failures":5,"seconds_until_retry":0}`)
	if st := b.Status(); st.Name != "api" {
		t.Fatalf("Status().Name = %q", st.Name)
	}
}

func serve(t *testing.T, h http.Handler, method string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, "/heartbeat", nil))
	return rec
}

func TestHeartbeat(t *testing.T) {
	b, clk, _ := newBreaker(t, breaker.Config{Name: "horde_api"})
	lenient := breaker.Heartbeat{Breakers: []breaker.CircuitBreaker{b}}
	strict := breaker.Heartbeat{Breakers: []breaker.CircuitBreaker{b}, Strict: true}
	const closed = `{"status":"ok","horde_api":{"state":"closed","degraded":false,"consecutive_failures":0,"seconds_until_retry":null}}` + "\n"
	for _, tc := range []struct {
		name string
		h    breaker.Heartbeat
		code int
		body string
	}{
		{"lenient closed", lenient, 200, closed},
		{"strict closed", strict, 200, closed},
	} {
		rec := serve(t, tc.h, http.MethodGet)
		if rec.Code != tc.code || rec.Body.String() != tc.body {
			t.Fatalf("%s: %d %s, want %d %s", tc.name, rec.Code, rec.Body, tc.code, tc.body)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s: Content-Type %q", tc.name, ct)
		}
	}

	fail(b, 5)
	clk.Advance(26600 * time.Millisecond)
	open := `"horde_api":{"state":"open","degraded":true,"consecutive_failures":5,"seconds_until_retry":93.4}}` + "\n"
	if rec := serve(t, lenient, http.MethodGet); rec.Code != 200 || rec.Body.String() != `{"status":"ok",`+open {
		t.Fatalf("lenient open: %d %s", rec.Code, rec.Body)
	}
	if rec := serve(t, strict, http.MethodGet); rec.Code != 503 || rec.Body.String() != `{"status":"degraded",`+open {
		t.Fatalf("strict open: %d %s", rec.Code, rec.Body)
	}

	clk.Advance(2 * time.Minute)
	half := `"horde_api":{"state":"half-open","degraded":true,"consecutive_failures":5,"seconds_until_retry":0}}` + "\n"
	if rec := serve(t, lenient, http.MethodGet); rec.Code != 200 || rec.Body.String() != `{"status":"ok",`+half {
		t.Fatalf("lenient half-open: %d %s", rec.Code, rec.Body)
	}
	if rec := serve(t, strict, http.MethodGet); rec.Code != 503 || rec.Body.String() != `{"status":"degraded",`+half {
		t.Fatalf("strict half-open: %d %s", rec.Code, rec.Body)
	}
}

func TestHeartbeatWithSets(t *testing.T) {
	clk := clock.NewFake(epoch)
	set, err := breaker.NewSet(breaker.SetConfig{Config: breaker.Config{Clock: clk}})
	if err != nil {
		t.Fatal(err)
	}
	set.Get("b.example")
	set.Get("a.example")
	dup := breaker.MustNew(breaker.Config{Name: "a.example", Clock: clk})
	reserved := breaker.MustNew(breaker.Config{Name: "status", Clock: clk})
	h := breaker.Heartbeat{Breakers: []breaker.CircuitBreaker{reserved, dup}, Sets: []*breaker.Set{set}}
	const st = `{"state":"closed","degraded":false,"consecutive_failures":0,"seconds_until_retry":null}`
	want := `{"status":"ok","a.example":` + st + `,"b.example":` + st + "}\n"
	if rec := serve(t, h, http.MethodGet); rec.Body.String() != want {
		t.Fatalf("body %s, want %s", rec.Body, want)
	}
}

func TestHeartbeatMethods(t *testing.T) {
	h := &breaker.Heartbeat{}
	if rec := serve(t, h, http.MethodGet); rec.Code != 200 || rec.Body.String() != `{"status":"ok"}`+"\n" {
		t.Fatalf("empty heartbeat: %d %s", rec.Code, rec.Body)
	}
	if rec := serve(t, h, http.MethodHead); rec.Code != 200 || rec.Body.Len() != 0 {
		t.Fatalf("HEAD: %d with %d body bytes", rec.Code, rec.Body.Len())
	}
	rec := serve(t, h, http.MethodPost)
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST: %d Allow=%q", rec.Code, rec.Header().Get("Allow"))
	}
}
