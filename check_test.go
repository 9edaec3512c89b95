package httpretry

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hordekit/httpretry/internal/faultserver"
	"github.com/hordekit/httpretry/internal/leaktest"
)

var (
	htmlPage = faultserver.OK().WithBody([]byte("<html><body>502 Bad Gateway (from the proxy)</body></html>")).
			WithHeader("Content-Type", "text/html")
	jsonDoc = faultserver.OK().WithBody([]byte(`[{"name":"stable_diffusion","count":4}]`)).
		WithHeader("Content-Type", "application/json")
)

// A JSON API answering 200 with a proxy's HTML page fails the check: the
// attempt is retried, and a call that never gets JSON is a breaker failure
// that returns the check's error with the page still readable.
func TestCheckRejectsHTMLAndCountsAFailure(t *testing.T) {
	leaktest.Check(t)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(htmlPage, jsonDoc)})
	fx := newFixture(t, &Transport{Check: CheckJSON})
	resp, body, err := fx.get(t, srv.URL)
	if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(body, `[{"name"`) {
		t.Fatalf("GET = %v, %q, %v; want the JSON after one retry", resp, body, err)
	}
	if srv.Requests() != 2 {
		t.Fatalf("%d requests, want 2", srv.Requests())
	}

	srv.SetBehavior(faultserver.Always(htmlPage))
	resp, err = fx.c.Get(srv.URL)
	if err == nil {
		resp.Body.Close()
		t.Fatal("GET succeeded with HTML for JSON")
	}
	ce, ok := errors.AsType[*CheckError](err)
	if !ok || Attempts(err) != 3 || !strings.Contains(err.Error(), "not valid JSON (text/html") {
		t.Fatalf("error = %v, want a *CheckError after 3 attempts saying the body is not JSON", err)
	}
	page, _ := io.ReadAll(ce.Response.Body)
	if !strings.Contains(string(page), "502 Bad Gateway") {
		t.Fatalf("the rejected response's body = %q, want the page", page)
	}
	if b := fx.t.Breakers().Get(hostOf(srv.URL)); b.ConsecutiveFailures() != 1 {
		t.Fatalf("breaker counted %d failures, want 1 for the call that got only HTML", b.ConsecutiveFailures())
	}
}

// The check sees responses the Transport would return, never the statuses it
// retries; a body cut while being checked is a plain retry.
func TestCheckSeesFinalResponsesAndRetriesCutBodies(t *testing.T) {
	leaktest.Check(t)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(
		faultserver.Status(503), faultserver.TruncatedBody(), jsonDoc)})
	var checked atomic.Int32
	fx := newFixture(t, &Transport{Policy: Policy{MaxAttempts: 3}, Check: func(resp *http.Response, body []byte) error {
		checked.Add(1)
		return CheckJSON(resp, body)
	}})
	resp, body, err := fx.get(t, srv.URL)
	if err != nil || !strings.HasPrefix(body, "[") {
		t.Fatalf("GET = %v, %q, %v", resp, body, err)
	}
	if checked.Load() != 1 || srv.Requests() != 3 {
		t.Fatalf("Check ran %d times over %d requests, want once (the 503 is retried by status, the cut body by its read error)",
			checked.Load(), srv.Requests())
	}
}

// A body over MaxCheckBody is never read whole: it fails with
// ErrCheckBodyTooLarge. A Permanent check error is returned at once, and
// the breaker does not count it.
func TestCheckBoundAndPermanent(t *testing.T) {
	leaktest.Check(t)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(
		faultserver.OK().WithBody([]byte(strings.Repeat("x", 10<<10))))})
	fx := newFixture(t, &Transport{Check: CheckJSON, MaxCheckBody: 1 << 10})
	resp, err := fx.c.Get(srv.URL)
	if err == nil {
		resp.Body.Close()
	}
	if !errors.Is(err, ErrCheckBodyTooLarge) || !strings.Contains(err.Error(), "1024 bytes") {
		t.Fatalf("error = %v, want ErrCheckBodyTooLarge naming the bound", err)
	}

	srv.SetBehavior(faultserver.Always(jsonDoc))
	wrongSchema := errors.New("schema v2, want v1")
	fx2 := newFixture(t, &Transport{Check: func(*http.Response, []byte) error { return Permanent(wrongSchema) }})
	before := srv.Requests()
	resp, err = fx2.c.Get(srv.URL)
	if err == nil {
		resp.Body.Close()
	}
	ce, ok := errors.AsType[*CheckError](err)
	if !ok || !errors.Is(err, wrongSchema) || Attempts(err) != 0 || srv.Requests()-before != 1 {
		t.Fatalf("error = %v after %d requests, want the check's own error after 1", err, srv.Requests()-before)
	}
	if ce.Response.StatusCode != 200 {
		t.Fatalf("CheckError.Response = %v", ce.Response)
	}
	if b := fx2.t.Breakers().Get(hostOf(srv.URL)); b.ConsecutiveFailures() != 0 {
		t.Fatalf("breaker counted a permanent check error as %d failures", b.ConsecutiveFailures())
	}
}

func TestCheckJSON(t *testing.T) {
	for _, c := range []struct {
		code   int
		method string
		body   string
		ok     bool
	}{
		{200, "GET", `{"a":1}`, true},
		{200, "GET", `{"a":`, false},
		{200, "GET", `<html>`, false},
		{200, "GET", ``, false},
		{204, "GET", ``, true},
		{200, "HEAD", ``, true},
		{404, "GET", `<html>not found</html>`, true},
	} {
		resp := &http.Response{StatusCode: c.code, Header: http.Header{}, Request: &http.Request{Method: c.method}}
		if err := CheckJSON(resp, []byte(c.body)); (err == nil) != c.ok {
			t.Errorf("CheckJSON(%d %s %q) = %v, want ok=%v", c.code, c.method, c.body, err, c.ok)
		}
	}
}
