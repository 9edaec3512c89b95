package httpretry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/clock"
	"github.com/hordekit/httpretry/internal/faultserver"
	"github.com/hordekit/httpretry/internal/leaktest"
)

// heldUpstream is an in-memory upstream whose requests wait until the test
// answers them: arrivals come in order on arrived, and each is answered by
// a value on its own answer channel (a status), or ends when its context
// is cancelled, which is counted.
type heldUpstream struct {
	arrived   chan *heldRequest
	cancelled atomic.Int32
	closed    atomic.Int32 // response bodies closed
}

type heldRequest struct {
	req    *http.Request
	answer chan int
}

func newHeldUpstream() *heldUpstream { return &heldUpstream{arrived: make(chan *heldRequest, 64)} }

func (u *heldUpstream) RoundTrip(req *http.Request) (*http.Response, error) {
	h := &heldRequest{req: req, answer: make(chan int, 1)}
	u.arrived <- h
	select {
	case code := <-h.answer:
		body := "from " + req.Header.Get("X-Seq")
		return &http.Response{StatusCode: code, Header: http.Header{}, Request: req, ContentLength: int64(len(body)),
			Body: &countedClose{Reader: strings.NewReader(body), n: &u.closed}}, nil
	case <-req.Context().Done():
		u.cancelled.Add(1)
		return nil, req.Context().Err()
	}
}

type countedClose struct {
	io.Reader
	n    *atomic.Int32
	once sync.Once
}

func (c *countedClose) Close() error {
	c.once.Do(func() { c.n.Add(1) })
	return nil
}

// hedgeFixture is a Transport hedging after a fixed 10 ms over a held
// upstream, on a fake clock that only the test moves.
func hedgeFixture(t *testing.T, tr *Transport) (*heldUpstream, *clock.Fake, *[]Event, *sync.Mutex) {
	up := newHeldUpstream()
	clk := clock.NewFake(epoch)
	var mu sync.Mutex
	events := &[]Event{}
	tr.Base = up
	tr.Policy.Clock = clk
	tr.Policy.Logger = quiet
	tr.StallTimeout = -1 // no watchdog timer among the ones the test counts
	if tr.Hedge == nil {
		tr.Hedge = &HedgeConfig{Delay: 10 * time.Millisecond}
	}
	tr.Observer = func(e Event) {
		mu.Lock()
		*events = append(*events, e)
		mu.Unlock()
	}
	return up, clk, events, &mu
}

type result struct {
	body string
	err  error
}

func goGet(tr *Transport, method string) <-chan result {
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(method, "http://upstream.test/slow", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{string(b), err}
	}()
	return done
}

// The first attempt's headers are late: after the delay a hedge goes out,
// its response wins with its body intact, and the first attempt is
// cancelled.
func TestHedgeWinsAndTheLoserIsCancelled(t *testing.T) {
	leaktest.Check(t)
	tr := &Transport{}
	up, clk, events, mu := hedgeFixture(t, tr)
	done := goGet(tr, "GET")
	first := <-up.arrived
	if clk.Pending() != 1 {
		t.Fatalf("%d timers pending, want the hedge timer", clk.Pending())
	}
	clk.Advance(10 * time.Millisecond)
	hedge := <-up.arrived
	hedge.answer <- 200
	r := <-done
	if r.err != nil || r.body != "from " {
		t.Fatalf("call = %q, %v", r.body, r.err)
	}
	<-first.req.Context().Done() // the loser's context is cancelled
	mu.Lock()
	defer mu.Unlock()
	var sent, won int
	for _, e := range *events {
		switch e.Kind {
		case EventHedge:
			sent++
			if e.Wait != 10*time.Millisecond {
				t.Errorf("hedge after %v, want 10ms", e.Wait)
			}
		case EventHedgeWon:
			won++
		}
	}
	if sent != 1 || won != 1 {
		t.Fatalf("hedges sent %d, won %d; want 1, 1", sent, won)
	}
}

// A POST without an idempotency key is never hedged, however late.
func TestPOSTIsNeverHedged(t *testing.T) {
	leaktest.Check(t)
	tr := &Transport{}
	up, clk, _, _ := hedgeFixture(t, tr)
	done := goGet(tr, "POST")
	first := <-up.arrived
	if clk.Pending() != 0 {
		t.Fatal("a hedge timer runs for a POST")
	}
	clk.Advance(time.Hour)
	first.answer <- 200
	if r := <-done; r.err != nil {
		t.Fatal(r.err)
	}
	if n := len(up.arrived); n != 0 {
		t.Fatalf("%d more requests: the POST was hedged", n)
	}
}

// A half-open breaker's probe is not hedged: one probe means one request.
func TestNoHedgeForAProbe(t *testing.T) {
	leaktest.Check(t)
	tr := &Transport{BreakerConfig: breaker.Config{FailureThreshold: 1, Cooldown: time.Minute}, Policy: Policy{MaxAttempts: 1}}
	up, clk, _, _ := hedgeFixture(t, tr)
	done := goGet(tr, "GET")
	(<-up.arrived).answer <- 500 // trips the breaker: no retry into an open breaker
	if r := <-done; r.err != nil {
		t.Fatal(r.err)
	}
	clk.Advance(time.Minute) // half-open: the next call is the probe
	done = goGet(tr, "GET")
	probe := <-up.arrived
	if clk.Pending() != 0 {
		t.Fatal("a hedge timer runs for the probe")
	}
	clk.Advance(time.Hour)
	probe.answer <- 200
	if r := <-done; r.err != nil {
		t.Fatal(r.err)
	}
	if n := len(up.arrived); n != 0 {
		t.Fatalf("%d more requests: the probe was hedged", n)
	}
}

// When every request is slow, the budget caps the hedges: 10 saved up,
// then one per ten calls.
func TestHedgeBudgetCapsHedgesWhenAllAreSlow(t *testing.T) {
	leaktest.Check(t)
	tr := &Transport{NoBreaker: true}
	up, clk, _, _ := hedgeFixture(t, tr)
	const calls = 200
	tokens, hedges := int64(hedgeBurst*1000), 0
	for range calls {
		tokens = min(tokens+100, hedgeBurst*1000) // the call earns a tenth
		done := goGet(tr, "GET")
		first := <-up.arrived
		if tokens >= 1000 {
			// The budget allows a hedge: wait for it, and let it win.
			tokens -= 1000
			hedges++
			clk.BlockUntil(1)
			clk.Advance(10 * time.Millisecond)
			(<-up.arrived).answer <- 200
		} else {
			first.answer <- 200
		}
		if r := <-done; r.err != nil {
			t.Fatal(r.err)
		}
	}
	if len(up.arrived) != 0 {
		t.Fatal("more hedges than the budget allows")
	}
	if limit := hedgeBurst + calls/10; hedges > limit || hedges < calls/10 {
		t.Fatalf("%d hedges over %d slow calls, want between %d and %d", hedges, calls, calls/10, limit)
	}
	t.Logf("%d slow calls: %d hedges (%.1f%%)", calls, hedges, 100*float64(hedges)/calls)
}

// A round whose attempts all fail retries as usual, and a failure while
// the other attempt is in flight does not end the round.
func TestHedgedRoundFailuresRetry(t *testing.T) {
	leaktest.Check(t)
	tr := &Transport{NoBreaker: true}
	up, clk, events, mu := hedgeFixture(t, tr)
	clk.SetAuto(true) // the retry's wait is instant; hedge timers still wait for the test
	done := goGet(tr, "GET")
	first := <-up.arrived
	clk.BlockUntil(1)
	clk.Advance(10 * time.Millisecond)
	hedge := <-up.arrived
	hedge.answer <- 503 // the hedge fails while the first is in flight
	first.answer <- 503 // now the round has failed
	next := <-up.arrived
	next.answer <- 200
	if r := <-done; r.err != nil {
		t.Fatal(r.err)
	}
	mu.Lock()
	defer mu.Unlock()
	var retries int
	for _, e := range *events {
		if e.Kind == EventRetry {
			retries++
		}
	}
	if retries != 1 {
		t.Fatalf("%d retries, want 1 after the round of two 503s", retries)
	}
}

// The caller's context ends the round at once, whatever is in flight.
func TestHedgedRoundEndsWithTheCaller(t *testing.T) {
	leaktest.Check(t)
	tr := &Transport{NoBreaker: true}
	up, clk, _, _ := hedgeFixture(t, tr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://upstream.test/", nil)
		_, err := tr.RoundTrip(req)
		done <- err
	}()
	<-up.arrived
	clk.BlockUntil(1)
	clk.Advance(10 * time.Millisecond)
	<-up.arrived
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("RoundTrip = %v, want context.Canceled", err)
	}
}

func TestLatencyEstimate(t *testing.T) {
	for _, d := range []time.Duration{time.Microsecond, 900 * time.Microsecond, time.Millisecond, 1500 * time.Microsecond, time.Second, time.Hour} {
		i := bucketOf(d)
		if top := bucketTop(i); top < d && i < latencyBuckets-1 || i > 0 && bucketTop(i-1) > d {
			t.Errorf("%v lands in bucket %d, (%v, %v]", d, i, bucketTop(i-1), top)
		}
	}
	h := &hedger{}
	l := &h.lat
	l.percent = 0.95
	if _, _, ok := l.estimate(); ok {
		t.Fatal("an estimate from no samples")
	}
	// 95% at about 1 ms, 5% at 100 ms: the p95 sits on the edge of the
	// slow mode, the median at 1 ms; the delay is held at 3 medians.
	for i := range 4096 {
		d := time.Millisecond + time.Duration(i%7)*20*time.Microsecond
		if i%20 == 0 {
			d = 100 * time.Millisecond
		}
		l.record(d)
	}
	q, median, ok := l.estimate()
	if !ok || median < time.Millisecond || median > 1200*time.Microsecond {
		t.Fatalf("median %v (ok %v), want about 1 ms", median, ok)
	}
	cfg := HedgeConfig{}.normalized()
	if d := h.delay(&cfg); d > 3*median || d < time.Millisecond {
		t.Fatalf("delay %v with p95 %v and median %v: want at most 3 medians", d, q, median)
	}
}

func TestHedgeConfigValidate(t *testing.T) {
	for _, c := range []struct {
		cfg   HedgeConfig
		field string
	}{
		{HedgeConfig{Delay: -1}, "Delay"},
		{HedgeConfig{Percentile: 1}, "Percentile"},
		{HedgeConfig{MinDelay: time.Second, MaxDelay: time.Millisecond}, "MinDelay"},
		{HedgeConfig{MaxHedges: 11}, "MaxHedges"},
		{HedgeConfig{Budget: 2}, "Budget"},
	} {
		tr := &Transport{Hedge: &c.cfg}
		if err := tr.Validate(); err == nil || !strings.Contains(err.Error(), "Transport.Hedge."+c.field) {
			t.Errorf("Validate(%+v) = %v, want an error naming Transport.Hedge.%s", c.cfg, err, c.field)
		}
	}
	if err := (&Transport{Hedge: &HedgeConfig{}}).Validate(); err != nil {
		t.Fatal(err)
	}
}

// Over real sockets: the first attempt stalls before its headers, the hedge
// wins, the loser's request ends on the server, and the next call reuses
// the winner's connection.
func TestHedgeOverLoopback(t *testing.T) {
	leaktest.Check(t)
	arrived := make(chan int, 4)
	srv := faultserver.Start(t, faultserver.Config{Behavior: func(n int, _ *http.Request) faultserver.Fault {
		arrived <- n
		if n == 0 {
			return faultserver.StallBeforeHeaders()
		}
		return faultserver.OK()
	}})
	clk := clock.NewFake(epoch)
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	tr := &Transport{Base: base, Hedge: &HedgeConfig{Delay: 50 * time.Millisecond},
		Policy: Policy{Clock: clk, Logger: quiet}, StallTimeout: -1}
	client := &http.Client{Transport: tr}
	done := make(chan result, 1)
	go func() {
		resp, err := client.Get(srv.URL)
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{string(b), err}
	}()
	<-arrived
	clk.Advance(50 * time.Millisecond)
	if r := <-done; r.err != nil || r.body != "ok\n" {
		t.Fatalf("hedged GET = %q, %v", r.body, r.err)
	}
	if srv.Requests() != 2 || srv.Served(faultserver.KindStallBeforeHeaders) != 1 {
		t.Fatalf("%d requests, want the stalled one and the hedge", srv.Requests())
	}
	conns := srv.Conns()
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if srv.Conns() != conns {
		t.Fatalf("the next call opened a connection: %d, then %d", conns, srv.Conns())
	}
}

// No hedge while the host's breaker is not closed, and a refused hedge
// spends nothing from the budget.
func TestNoHedgeUnlessTheBreakerIsClosed(t *testing.T) {
	clk := clock.NewFake(epoch)
	b := breaker.MustNew(breaker.Config{Name: "h", Clock: clk, Logger: quiet})
	tr := &Transport{Breaker: b, Hedge: &HedgeConfig{}}
	if err := tr.init(); err != nil {
		t.Fatal(err)
	}
	h := newHedger(tr.hedge)
	c := &call{t: tr, cb: b}
	b.Trip(clk.Now().Add(time.Minute))
	if c.mayHedge(h) {
		t.Fatal("a hedge while the breaker is open")
	}
	clk.Advance(time.Minute) // half-open
	if c.mayHedge(h) {
		t.Fatal("a hedge while the breaker is half-open")
	}
	if h.tokens.Load() != hedgeBurst*1000 {
		t.Fatalf("refused hedges spent %d thousandths", hedgeBurst*1000-h.tokens.Load())
	}
	b.Reset()
	if !c.mayHedge(h) || h.tokens.Load() != (hedgeBurst-1)*1000 {
		t.Fatal("no hedge with the breaker closed and the budget full")
	}
}
