package httpretry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/clock"
	"github.com/hordekit/httpretry/internal/faultserver"
	"github.com/hordekit/httpretry/internal/leaktest"
)

// fixture is a Transport over a fresh keep-alive base, on a fake clock that
// advances itself through every wait, with the waits recorded.
type fixture struct {
	t     *Transport
	c     *http.Client
	clk   *clock.Fake
	waits *recorder
	base  *http.Transport
}

func newFixture(tb testing.TB, tr *Transport) *fixture {
	tb.Helper()
	f := clock.NewFake(time.Now())
	f.SetAuto(true)
	rec := &recorder{}
	base := &http.Transport{MaxIdleConnsPerHost: 16}
	tb.Cleanup(base.CloseIdleConnections)
	tr.Base = base
	tr.Policy.Clock = f
	tr.Policy.OnRetry = rec.onRetry
	if tr.Policy.Logger == nil {
		tr.Policy.Logger = quiet
	}
	tr.Policy.Rand = func() float64 { return 0.5 }
	fx := &fixture{t: tr, clk: f, waits: rec, base: base}
	fx.c = &http.Client{Transport: fx.t}
	return fx
}

func (fx *fixture) get(tb testing.TB, url string) (*http.Response, string, error) {
	tb.Helper()
	resp, err := fx.c.Get(url)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}

func TestThree503ThenOKUseOneConnection(t *testing.T) {
	leaktest.Check(t)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(
		faultserver.Status(503), faultserver.Status(503), faultserver.Status(503), faultserver.OK())})
	fx := newFixture(t, &Transport{Policy: Policy{MaxAttempts: 4}})
	resp, body, err := fx.get(t, srv.URL)
	if err != nil || resp.StatusCode != 200 || body != "ok\n" {
		t.Fatalf("GET = %v, %q, %v; want 200 ok", resp, body, err)
	}
	if srv.Requests() != 4 || srv.Conns() != 1 {
		t.Fatalf("server saw %d requests on %d connections, want 4 on 1", srv.Requests(), srv.Conns())
	}
}

func TestExhaustionReturnsTheLastResponse(t *testing.T) {
	leaktest.Check(t)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(
		faultserver.Status(503).WithBody([]byte("down for maintenance")))})
	fx := newFixture(t, &Transport{NoBreaker: true})
	resp, body, err := fx.get(t, srv.URL)
	if err != nil || resp.StatusCode != 503 || body != "down for maintenance" {
		t.Fatalf("GET = %v, %q, %v; want the last 503 with its body", resp, body, err)
	}
	if srv.Requests() != 3 || len(fx.waits.waits) != 2 || srv.Conns() != 1 {
		t.Fatalf("requests=%d waits=%d conns=%d, want 3, 2, 1", srv.Requests(), len(fx.waits.waits), srv.Conns())
	}
}

func TestRetryAfterDateIsHonoured(t *testing.T) {
	leaktest.Check(t)
	serverNow := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	srv := faultserver.Start(t, faultserver.Config{
		Now: func() time.Time { return serverNow },
		Behavior: faultserver.Script(
			faultserver.Status(503).WithRetryAfterDate(2*time.Second).WithHeader("Date", serverNow.Format(http.TimeFormat)),
			faultserver.OK()),
	})
	fx := newFixture(t, &Transport{})
	fx.t.Policy.Rand = func() float64 { return 0 } // no spread after the hint
	resp, _, err := fx.get(t, srv.URL)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET = %v, %v", resp, err)
	}
	if len(fx.waits.waits) != 1 || fx.waits.waits[0] != 2*time.Second {
		t.Fatalf("waits = %v, want one of 2s (the server's date hint)", fx.waits.waits)
	}
}

func TestTransportRetryAfterTooLong(t *testing.T) {
	leaktest.Check(t)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(
		faultserver.Status(429).WithRetryAfter(time.Hour))})
	fx := newFixture(t, &Transport{})
	start := fx.clk.Now()
	resp, _, err := fx.get(t, srv.URL)
	if err != nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "3600" {
		t.Fatalf("GET = %v, %v; want the 429 with its hint", resp, err)
	}
	if srv.Requests() != 1 || fx.clk.Now() != start {
		t.Fatalf("requests=%d slept=%v, want 1 request and no sleep", srv.Requests(), fx.clk.Now().Sub(start))
	}
}

func TestPOSTNotReplayedAfterTheServerGotIt(t *testing.T) {
	leaktest.Check(t)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(
		faultserver.ResetBeforeHeaders(), faultserver.OK())})
	fx := newFixture(t, &Transport{})
	resp, err := fx.c.Post(srv.URL, "text/plain", strings.NewReader("charge the card"))
	if err == nil {
		resp.Body.Close()
		t.Fatal("POST succeeded; it must not have been replayed")
	}
	re, ok := errors.AsType[*RetryError](err)
	if !ok || re.Reason != StopNotIdempotent {
		t.Fatalf("POST error = %v, want a StopNotIdempotent *RetryError", err)
	}
	if srv.Requests() != 1 {
		t.Fatalf("server saw %d requests, want 1", srv.Requests())
	}
	if !strings.Contains(err.Error(), "request is not idempotent") {
		t.Fatalf("error does not say why: %v", err)
	}
}

func TestPOSTRetriedAfterConnectionRefused(t *testing.T) {
	leaktest.Check(t)
	addr := faultserver.ClosedPort(t)
	var srv *http.Server
	var wg sync.WaitGroup
	fx := newFixture(t, &Transport{})
	fx.t.Policy.OnRetry = func(RetryInfo) {
		// The first attempt was refused; now the server comes up.
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("relisten on %s: %v", addr, err)
			return
		}
		srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "got %s", b)
		})}
		wg.Add(1)
		go func() { defer wg.Done(); srv.Serve(l) }()
	}
	resp, err := fx.c.Post("http://"+addr+"/", "text/plain", strings.NewReader("charge the card"))
	if err != nil {
		t.Fatalf("POST after a refused connection: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "got charge the card" {
		t.Fatalf("body = %q", body)
	}
	fx.base.CloseIdleConnections()
	srv.Close()
	wg.Wait()
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestBodiesReplayedByteForByte(t *testing.T) {
	leaktest.Check(t)
	payload := bytes.Repeat([]byte("horde-model-reference "), 5000) // 110 kB
	for _, c := range []struct {
		name string
		req  func(url string) *http.Request
	}{
		{"GetBody", func(url string) *http.Request {
			r, _ := http.NewRequest("PUT", url, bytes.NewReader(payload)) // sets GetBody
			return r
		}},
		{"buffered", func(url string) *http.Request {
			r, _ := http.NewRequest("POST", url, io.MultiReader(bytes.NewReader(payload))) // no GetBody
			r.Header.Set("Idempotency-Key", "order-42")
			return r
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(
				faultserver.Status(503), faultserver.ResetBeforeHeaders(), faultserver.OK())})
			fx := newFixture(t, &Transport{})
			resp, err := fx.c.Do(c.req(srv.URL))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			log := srv.Log()
			if len(log) != 3 {
				t.Fatalf("server saw %d requests, want 3", len(log))
			}
			for i, e := range log {
				if e.BodySHA256 != sha(payload) || e.BodyLen != int64(len(payload)) {
					t.Errorf("attempt %d sent %d bytes with hash %s, want the original %d bytes", i+1, e.BodyLen, e.BodySHA256, len(payload))
				}
			}
		})
	}
}

// patternReader yields n bytes without holding them, and has no GetBody, so
// the transport cannot replay it for free.
type patternReader struct{ left int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	n := min(int64(len(b)), p.left)
	for i := range b[:n] {
		b[i] = byte(i)
	}
	p.left -= n
	return int(n), nil
}

func TestLargeBodyStreamedOnceNotBuffered(t *testing.T) {
	leaktest.Check(t)
	const size = 50 << 20
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(faultserver.ResetBeforeHeaders())})
	fx := newFixture(t, &Transport{})
	for _, announced := range []int64{size, -1} {
		req, _ := http.NewRequest("PUT", srv.URL, &patternReader{left: size})
		req.ContentLength = announced
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		resp, err := fx.c.Do(req)
		runtime.ReadMemStats(&after)
		if err == nil {
			resp.Body.Close()
			t.Fatal("PUT succeeded against a server that resets")
		}
		re, ok := errors.AsType[*RetryError](err)
		if !ok || re.Reason != StopBodyNotReplayable || !strings.Contains(err.Error(), "MaxReplayBody") {
			t.Fatalf("Content-Length %d: error = %v, want StopBodyNotReplayable naming MaxReplayBody", announced, err)
		}
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 8<<20 {
			t.Fatalf("Content-Length %d: allocated %d MiB sending a 50 MiB body: it was buffered", announced, grew>>20)
		}
	}
	log := srv.Log()
	if len(log) != 2 || log[0].BodyLen != size || log[1].BodyLen != size {
		t.Fatalf("server log %v, want two whole 50 MiB bodies, one per call", log)
	}
}

type trackedBody struct {
	io.Reader
	closed bool
}

func (b *trackedBody) Close() error { b.closed = true; return nil }

func TestCallersRequestIsUntouchedAndClosed(t *testing.T) {
	leaktest.Check(t)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(
		faultserver.Status(502), faultserver.Status(504), faultserver.OK())})
	fx := newFixture(t, &Transport{Policy: Policy{AttemptTimeout: time.Minute}})
	body := &trackedBody{Reader: strings.NewReader("payload")}
	req, _ := http.NewRequest("PUT", srv.URL+"/x?y=1", body)
	req.Header.Set("X-Trace", "abc")
	ctx := req.Context()
	wantHeader := req.Header.Clone()
	wantURL := req.URL.String()
	resp, err := fx.t.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Fatalf("body of the returned response: %v (the attempt timeout must last until Close)", err)
	}
	resp.Body.Close()
	if !body.closed {
		t.Fatal("request body not closed")
	}
	if req.Body != io.ReadCloser(body) || req.URL.String() != wantURL || req.Context() != ctx || req.Method != "PUT" {
		t.Fatal("request fields changed")
	}
	if fmt.Sprint(req.Header) != fmt.Sprint(wantHeader) {
		t.Fatalf("header changed: %v, want %v", req.Header, wantHeader)
	}
}

func TestNeverBothResponseAndError(t *testing.T) {
	leaktest.Check(t)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(faultserver.ResetAfterHeaders())})
	fx := newFixture(t, &Transport{})
	resp, err := fx.t.RoundTrip(mustGet(t, srv.URL))
	if (resp == nil) == (err == nil) {
		t.Fatalf("RoundTrip = %v, %v: want exactly one", resp, err)
	}
	if resp != nil {
		// Reset after the headers: the response arrived; reading fails.
		_, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if rerr == nil {
			t.Fatal("reading a reset body succeeded")
		}
	}
}

func mustGet(t *testing.T, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestBreakerPerHost(t *testing.T) {
	leaktest.Check(t)
	down := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(faultserver.Status(500))})
	up := faultserver.Start(t, faultserver.Config{})
	fx := newFixture(t, &Transport{Policy: Policy{MaxAttempts: 1}})
	for range 5 {
		resp, _, err := fx.get(t, down.URL)
		if err != nil || resp.StatusCode != 500 {
			t.Fatalf("GET = %v, %v", resp, err)
		}
	}
	_, _, err := fx.get(t, down.URL)
	var oe *breaker.OpenError
	if !errors.Is(err, breaker.ErrOpen) || !errors.As(err, &oe) || oe.RetryIn <= 0 {
		t.Fatalf("6th call = %v, want an *OpenError with the time to the next probe", err)
	}
	if down.Requests() != 5 {
		t.Fatalf("down host saw %d requests, want 5 (the 6th refused locally)", down.Requests())
	}
	if resp, _, err := fx.get(t, up.URL); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the healthy host is refused too: %v, %v", resp, err)
	}
	statuses := fx.t.Breakers().Statuses()
	if len(statuses) != 2 {
		t.Fatalf("breakers: %v, want one per host", statuses)
	}
}

func TestBreakerCounting(t *testing.T) {
	leaktest.Check(t)
	for _, c := range []struct {
		name  string
		fault faultserver.Fault
		want  int // consecutive failures after 3 calls
	}{
		{"404 proves the server alive", faultserver.Status(404), 0},
		{"429 is neutral", faultserver.Status(429), 0},
		{"503 is a failure", faultserver.Status(503), 3},
		{"reset is a failure", faultserver.ResetBeforeHeaders(), 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(c.fault)})
			b := breaker.MustNew(breaker.Config{Name: "shared"})
			fx := newFixture(t, &Transport{Breaker: b, NoBudget: true})
			for range 3 {
				if resp, err := fx.c.Get(srv.URL); err == nil {
					resp.Body.Close()
				}
			}
			if got := b.ConsecutiveFailures(); got != c.want {
				t.Fatalf("consecutive failures = %d, want %d", got, c.want)
			}
			if c.want > 0 && srv.Requests() != 9 {
				t.Fatalf("server saw %d requests, want 9 (3 calls x 3 attempts, one outcome per call)", srv.Requests())
			}
		})
	}
}

func TestBreakerPerAttempt(t *testing.T) {
	leaktest.Check(t)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(faultserver.Status(503))})
	b := breaker.MustNew(breaker.Config{Name: "x"})
	fx := newFixture(t, &Transport{Breaker: b, BreakerPerAttempt: true, NoBudget: true})
	resp, _, err := fx.get(t, srv.URL)
	if err != nil || resp.StatusCode != 503 {
		t.Fatalf("GET = %v, %v", resp, err)
	}
	if got := b.ConsecutiveFailures(); got != 3 {
		t.Fatalf("failures after one call of 3 attempts = %d, want 3", got)
	}
}

func TestBudgetRefusalReportsItsSentinel(t *testing.T) {
	leaktest.Check(t)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(faultserver.ResetBeforeHeaders())})
	fx := newFixture(t, &Transport{NoBreaker: true, Budget: BudgetConfig{NoFloor: true}})
	_, _, err := fx.get(t, srv.URL)
	if !errors.Is(err, ErrBudgetExhausted) || Attempts(err) != 1 {
		t.Fatalf("GET = %v, want ErrBudgetExhausted after 1 attempt (20%% of one call is no whole retry)", err)
	}
	if !errors.Is(err, io.EOF) && !IsTransient(err) {
		t.Fatalf("the last attempt's error is not reachable: %v", err)
	}
}

func TestRetryLogsHaveNoSecrets(t *testing.T) {
	leaktest.Check(t)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(faultserver.Status(503), faultserver.OK())})
	var buf bytes.Buffer
	fx := newFixture(t, &Transport{Policy: Policy{Logger: slog.New(slog.NewTextHandler(&buf, nil))}})
	u := strings.Replace(srv.URL, "http://", "http://alice:hunter2@", 1) + "/v2/workers?apikey=0123456789&type=image"
	req := mustGet(t, u)
	req.Header.Set("Authorization", "Bearer sk-live-abc")
	req.Header.Set("Cookie", "session=xyz")
	resp, err := fx.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	line := buf.String()
	for _, leak := range []string{"hunter2", "0123456789", "sk-live-abc", "xyz", "alice"} {
		if strings.Contains(line, leak) {
			t.Errorf("log leaks %q: %s", leak, line)
		}
	}
	for _, want := range []string{`msg="HTTP retry"`, "attempt=1", "method=GET", "apikey=REDACTED&type=image", "status=503", "wait="} {
		if !strings.Contains(line, want) {
			t.Errorf("log lacks %s: %s", want, line)
		}
	}
}

func TestCallerDeadlineIsNeverOvershot(t *testing.T) {
	leaktest.Check(t)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(faultserver.Status(503))})
	fx := newFixture(t, &Transport{Policy: Policy{MinWait: 5 * time.Second, MaxWait: 5 * time.Second}})
	ctx, cancel := context.WithDeadline(context.Background(), fx.clk.Now().Add(3*time.Second))
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
	resp, err := fx.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || srv.Requests() != 1 || len(fx.waits.waits) != 0 {
		t.Fatalf("status %d after %d requests and waits %v; want the 503 at once", resp.StatusCode, srv.Requests(), fx.waits.waits)
	}
}

func TestZeroTransportWorks(t *testing.T) {
	leaktest.Check(t)
	srv := faultserver.Start(t, faultserver.Config{})
	c := NewClient()
	defer c.CloseIdleConnections()
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok\n" {
		t.Fatalf("body = %q", body)
	}
}

func TestInvalidTransportNamesTheField(t *testing.T) {
	for _, c := range []struct {
		tr   *Transport
		want string
	}{
		{&Transport{Policy: Policy{MinWait: -1}}, "Transport.Policy.MinWait"},
		{&Transport{Budget: BudgetConfig{Ratio: -1}}, "Transport.Budget.Ratio"},
		{&Transport{RetryStatuses: []int{999}}, "Transport.RetryStatuses"},
		{&Transport{BreakerConfig: breaker.Config{Cooldown: -1}}, "Cooldown"},
	} {
		body := &trackedBody{Reader: strings.NewReader("x")}
		req, _ := http.NewRequest("PUT", "http://127.0.0.1:1/", body)
		_, err := c.tr.RoundTrip(req)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("RoundTrip = %v, want an error naming %s", err, c.want)
		}
		if !body.closed {
			t.Errorf("%s: request body not closed on a config error", c.want)
		}
	}
}

func TestHalfOpenProbeIsNotRetried(t *testing.T) {
	leaktest.Check(t)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(faultserver.Status(503))})
	fx := newFixture(t, &Transport{NoBudget: true, BreakerConfig: breaker.Config{FailureThreshold: 1, Cooldown: time.Minute}})
	if resp, _, err := fx.get(t, srv.URL); err != nil || resp.StatusCode != 503 {
		t.Fatalf("first call = %v, %v", resp, err)
	}
	if srv.Requests() != 3 {
		t.Fatalf("first call made %d requests, want 3", srv.Requests())
	}
	fx.clk.Advance(time.Minute)
	resp, _, err := fx.get(t, srv.URL)
	if err != nil || resp.StatusCode != 503 {
		t.Fatalf("probe = %v, %v; want the probe's 503", resp, err)
	}
	if srv.Requests() != 4 {
		t.Fatalf("the probe made %d requests, want 1: its failure must reach the breaker at once", srv.Requests()-3)
	}
	if _, _, err := fx.get(t, srv.URL); !errors.Is(err, breaker.ErrOpen) {
		t.Fatalf("after a failed probe = %v, want the breaker open again", err)
	}
}

func TestEveryStatusCodeCanBeRetried(t *testing.T) {
	var codes []int
	for c := 100; c <= 599; c++ {
		codes = append(codes, c)
	}
	tr := &Transport{RetryStatuses: codes}
	if err := tr.init(); err != nil {
		t.Fatal(err)
	}
	for _, c := range codes {
		if !tr.retryStatus(c) {
			t.Fatalf("status %d not retried", c)
		}
	}
}

func TestInFlightCallStopsRetryingOnceTheBreakerOpens(t *testing.T) {
	leaktest.Check(t)
	for _, c := range []struct {
		name      string
		tripAfter bool // trip during the wait (OnRetry) rather than before deciding
		waits     int
	}{
		{"opened before the decision", false, 0},
		{"opened during the wait", true, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := breaker.MustNew(breaker.Config{Name: "shared", FailureThreshold: 1, Logger: quiet})
			srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(
				faultserver.Status(503).WithBody([]byte("down")))})
			fx := newFixture(t, &Transport{Breaker: b, NoBudget: true})
			// Another caller trips the breaker while this call is failing.
			if c.tripAfter {
				onRetry := fx.t.Policy.OnRetry
				fx.t.Policy.OnRetry = func(i RetryInfo) { onRetry(i); b.RecordFailure() }
			} else {
				fx.t.Observer = func(e Event) {
					if e.Kind == EventAttempt {
						b.RecordFailure()
					}
				}
			}
			resp, body, err := fx.get(t, srv.URL)
			if err != nil || resp.StatusCode != 503 || body != "down" {
				t.Fatalf("GET = %v, %q, %v; want the 503 back with its body", resp, body, err)
			}
			if srv.Requests() != 1 || len(fx.waits.waits) != c.waits {
				t.Fatalf("server saw %d requests after %d waits, want 1 and %d: no retry into an open breaker",
					srv.Requests(), len(fx.waits.waits), c.waits)
			}
		})
	}
}

func TestHostTableEvictsHalfEvenWhenStampsTie(t *testing.T) {
	var h hostTable[int]
	n := 0
	h.init(4, func() int { n++; return n })
	for _, host := range []string{"a", "b", "c", "d"} {
		h.get(host)
	}
	for _, host := range []string{"a", "b", "c", "d"} {
		h.get(host) // all four now share the newest stamp
	}
	h.get("e")
	if got := h.len(); got != 3 {
		t.Fatalf("after evicting from a full table of 4: %d entries, want 3 (half kept, plus the new one)", got)
	}
}

func TestCancelDuringWaitKeepsTheResponseReadable(t *testing.T) {
	leaktest.Check(t)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(
		faultserver.Status(503).WithBody([]byte("busy")))})
	var events []Event
	fx := newFixture(t, &Transport{Observer: func(e Event) { events = append(events, e) }})
	ctx, cancel := context.WithCancel(context.Background())
	fx.t.Policy.OnRetry = func(RetryInfo) { cancel() }
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
	_, err := fx.t.RoundTrip(req)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("RoundTrip = %v, want context.Canceled", err)
	}
	se, ok := errors.AsType[*StatusError](err)
	if !ok {
		t.Fatalf("no *StatusError in %v", err)
	}
	body, _ := io.ReadAll(se.Response.Body)
	if string(body) != "busy" {
		t.Fatalf("the last response's body = %q, want it readable", body)
	}
	if last := events[len(events)-1]; last.Kind != EventGiveUp || last.Reason != StopCanceled {
		t.Fatalf("last event = %+v, want a give-up for cancellation", last)
	}
}

// A protocol switch hands over a writable connection; the attempt timeout's
// wrapper must keep it writable.
func TestUpgradeBodyStaysWritable(t *testing.T) {
	leaktest.Check(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		buf.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		buf.Flush()
		line := make([]byte, 2)
		if _, err := io.ReadFull(buf, line); err == nil {
			conn.Write(line)
		}
	}))
	defer srv.Close()
	fx := newFixture(t, &Transport{Policy: Policy{AttemptTimeout: time.Minute}})
	req := mustGet(t, srv.URL)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "echo")
	resp, err := fx.t.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("RoundTrip = %v, %v; want 101", resp, err)
	}
	defer resp.Body.Close()
	rw, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		t.Fatalf("101 body %T is not writable", resp.Body)
	}
	if _, err := rw.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2)
	if _, err := io.ReadFull(rw, got); err != nil || string(got) != "hi" {
		t.Fatalf("echo = %q, %v", got, err)
	}
}

// traceRecorder is a Tracer that records each attempt's start and end.
type traceRecorder struct {
	mu    sync.Mutex
	spans []string
}

func (r *traceRecorder) StartAttempt(req *http.Request, a AttemptInfo) (*http.Request, func(AttemptResult)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := len(r.spans)
	r.spans = append(r.spans, fmt.Sprintf("attempt %d resume=%v offset=%d: open", a.Attempt, a.Resume, a.Offset))
	// A copy with its own header, as a tracer propagating context makes.
	out := req.Clone(req.Context())
	out.Header.Set("Traceparent", fmt.Sprintf("00-span-%d", a.Attempt))
	return out, func(res AttemptResult) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.spans[i] = fmt.Sprintf("attempt %d resume=%v offset=%d: %d %v", a.Attempt, a.Resume, a.Offset, res.StatusCode, res.Outcome)
	}
}

// Each attempt is one trace span, started before it is sent and ended when
// it is over: a retried attempt at the decision, the returned one when its
// body ends; resumes are attempts too.
func TestTracerSeesEveryAttempt(t *testing.T) {
	leaktest.Check(t)
	doc := &faultserver.Resource{Body: document(30_000, 11), ETag: `"t"`}
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(
		faultserver.Status(503), faultserver.Status(503),
		faultserver.ServeResource(doc).WithBodyFault(cutAfter(10_000, true)),
		faultserver.ServeResource(doc))})
	rec := &traceRecorder{}
	fx := newFixture(t, &Transport{Tracer: rec, Policy: Policy{MaxAttempts: 3}})
	resp, err := fx.c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if got := rec.spans[2]; !strings.HasSuffix(got, "open") {
		t.Fatalf("the returned attempt's span ended before its body: %q", got)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(body, doc.Body) {
		t.Fatalf("read %d bytes, %v", len(body), err)
	}
	want := []string{
		"attempt 1 resume=false offset=0: 503 failure",
		"attempt 2 resume=false offset=0: 503 failure",
		"attempt 3 resume=false offset=0: 200 failure", // its body was cut
		"attempt 4 resume=true offset=10000: 206 success",
	}
	if fmt.Sprint(rec.spans) != fmt.Sprint(want) {
		t.Fatalf("spans\n got %q\nwant %q", rec.spans, want)
	}
	for i, e := range srv.Log() {
		if got := e.Header.Get("Traceparent"); got != fmt.Sprintf("00-span-%d", i+1) {
			t.Errorf("request %d carried Traceparent %q", i+1, got)
		}
	}
}
