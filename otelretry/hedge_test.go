package otelretry_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/internal/leaktest"
	"github.com/hordekit/httpretry/otelretry"
)

// heldUpstream holds each request until the test answers it, or its
// context ends.
type heldUpstream struct{ arrived chan *held }

type held struct {
	req    *http.Request
	answer chan int
}

func (u heldUpstream) RoundTrip(req *http.Request) (*http.Response, error) {
	h := &held{req: req, answer: make(chan int, 1)}
	u.arrived <- h
	select {
	case code := <-h.answer:
		return &http.Response{StatusCode: code, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
	case <-req.Context().Done():
		return nil, req.Context().Err()
	}
}

// ends signals each span that ends.
type ends chan sdktrace.ReadOnlySpan

func (e ends) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (e ends) OnEnd(s sdktrace.ReadOnlySpan)                   { e <- s }
func (e ends) Shutdown(context.Context) error                  { return nil }
func (e ends) ForceFlush(context.Context) error                { return nil }

// A hedged round: the first attempt's headers are late, a hedge goes out
// and wins. Both are attempt spans under the caller's, the hedge marked,
// the loser ended as cancelled; the hedge and its win are events on the
// caller's span, and counted.
func TestHedgedRound(t *testing.T) {
	leaktest.Check(t)
	w := newWorld(t)
	w.clk.SetAuto(false)
	ended := make(ends, 8)
	w.tp.RegisterSpanProcessor(ended)
	up := heldUpstream{arrived: make(chan *held, 4)}
	c := w.transport(t, &httpretry.Transport{Base: up, StallTimeout: -1,
		Hedge: &httpretry.HedgeConfig{Delay: 10 * time.Millisecond}})

	ctx, call := w.caller("call")
	done := make(chan error, 1)
	go func() {
		_, _, err := get(t, c, ctx, "http://upstream.test/slow")
		done <- err
	}()
	first := <-up.arrived
	w.clk.BlockUntil(1) // the hedge timer
	w.clk.Advance(10 * time.Millisecond)
	hedge := <-up.arrived
	hedge.answer <- 200
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	call.End()
	var spans []sdktrace.ReadOnlySpan
	for len(spans) < 3 { // both attempts (the loser's ends once it is reaped) and the call
		select {
		case s := <-ended:
			spans = append(spans, s)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d spans ended; the loser's never did", len(spans))
		}
	}
	if first.req.Header.Get("Traceparent") == hedge.req.Header.Get("Traceparent") {
		t.Error("the hedge went out with the first attempt's traceparent")
	}

	byAttempt := map[bool]sdktrace.ReadOnlySpan{}
	for _, s := range w.attemptSpans() {
		_, isHedge := attr(s.Attributes(), otelretry.HedgeKey)
		byAttempt[isHedge] = s
		if s.Parent().SpanID() != call.SpanContext().SpanID() {
			t.Errorf("attempt span %v is not the caller's child", s.Attributes())
		}
	}
	loser, winner := byAttempt[false], byAttempt[true]
	if loser == nil || winner == nil {
		t.Fatalf("attempt spans %v", w.attemptSpans())
	}
	if v, _ := attr(loser.Attributes(), semconv.ErrorTypeKey); v.AsString() != "canceled" || loser.Status().Code != codes.Error {
		t.Errorf("the loser ended with error.type %q, status %v; want canceled", v.Emit(), loser.Status())
	}
	for key, want := range map[string]string{
		"httpretry.hedge": "true", "http.response.status_code": "200", "http.request.resend_count": "1",
	} {
		if v, _ := attr(winner.Attributes(), attribute.Key(key)); v.Emit() != want {
			t.Errorf("the hedge's span: %s = %q, want %q", key, v.Emit(), want)
		}
	}
	caller := w.ended("call")
	hedges, wins := events(caller, otelretry.EventHedge), events(caller, otelretry.EventHedgeWon)
	if len(hedges) != 1 || len(wins) != 1 {
		t.Fatalf("caller events %v; want one hedge and one win", caller.Events())
	}
	if v, _ := attr(hedges[0].Attributes, otelretry.HedgeDelayKey); v.AsFloat64() != 0.01 {
		t.Errorf("hedge delay %v, want 0.01", v.Emit())
	}
	got := collect(t, w.reader)
	for _, series := range []string{"httpretry.hedges{server.address=upstream.test,server.port=80}",
		"httpretry.hedge_wins{server.address=upstream.test,server.port=80}"} {
		if got[series] != 1 {
			t.Errorf("%s = %v, want 1 (all: %v)", series, got[series], strings.Join(keys(got), " "))
		}
	}
}

func keys(m map[string]float64) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
