package otelretry_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/internal/faultserver"
	"github.com/hordekit/httpretry/internal/leaktest"
	"github.com/hordekit/httpretry/otelretry"
)

// 2 x 503 then 200: three client spans under the caller's, resend counts
// absent, 1, 2, the right statuses; each request carried its own span; the
// waits are events on the caller's span.
func TestThreeAttemptsAreThreeSpansUnderTheCaller(t *testing.T) {
	leaktest.Check(t)
	w := newWorld(t)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(
		faultserver.Status(503), faultserver.Status(503), faultserver.OK())})
	c := w.transport(t, &httpretry.Transport{})
	ctx, call := w.caller("fetch models")

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v2/status?type=image", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(w.attemptSpans()); n != 2 {
		t.Errorf("%d attempt spans ended before the body was read, want 2: the third lasts until its body ends", n)
	}
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	call.End()

	spans := w.attemptSpans()
	if len(spans) != 3 {
		t.Fatalf("%d attempt spans, want 3", len(spans))
	}
	_, port, _ := net.SplitHostPort(srv.Addr)
	wantPort, _ := strconv.Atoi(port)
	for i, s := range spans {
		n := i + 1
		if s.Parent().SpanID() != call.SpanContext().SpanID() || s.SpanContext().TraceID() != call.SpanContext().TraceID() {
			t.Errorf("attempt %d is not a child of the caller's span", n)
		}
		if s.SpanKind() != trace.SpanKindClient || s.Name() != "GET" {
			t.Errorf("attempt %d: kind %v name %q, want client GET", n, s.SpanKind(), s.Name())
		}
		attrs := s.Attributes()
		wantStatus := []int64{503, 503, 200}[i]
		if v, _ := attr(attrs, semconv.HTTPResponseStatusCodeKey); v.AsInt64() != wantStatus {
			t.Errorf("attempt %d: status %v, want %d", n, v.Emit(), wantStatus)
		}
		resend, ok := attr(attrs, semconv.HTTPRequestResendCountKey)
		switch {
		case n == 1 && ok:
			t.Errorf("attempt 1 has http.request.resend_count %v; the first attempt has none", resend.Emit())
		case n > 1 && resend.AsInt64() != int64(n-1):
			t.Errorf("attempt %d: resend count %v, want %d", n, resend.Emit(), n-1)
		}
		for key, want := range map[string]string{
			"http.request.method": "GET",
			"server.address":      "127.0.0.1",
			"server.port":         strconv.Itoa(wantPort),
			"url.full":            srv.URL + "/v2/status?type=image",
		} {
			if v, _ := attr(attrs, attribute.Key(key)); v.Emit() != want {
				t.Errorf("attempt %d: %s = %q, want %q", n, key, v.Emit(), want)
			}
		}
		errType, hasErrType := attr(attrs, semconv.ErrorTypeKey)
		if n < 3 {
			if errType.AsString() != "503" || s.Status().Code != codes.Error {
				t.Errorf("attempt %d: error.type %q, status %v; want 503 and Error", n, errType.Emit(), s.Status())
			}
			if v, _ := attr(attrs, otelretry.OutcomeKey); v.AsString() != "failure" {
				t.Errorf("attempt %d: outcome %q, want failure", n, v.Emit())
			}
		} else if hasErrType || s.Status().Code != codes.Unset {
			t.Errorf("attempt 3: error.type %q, status %v; want none and Unset", errType.Emit(), s.Status())
		}
	}
	for i, e := range srv.Log() {
		want := spans[i].SpanContext().SpanID().String()
		if tp := e.Header.Get("Traceparent"); !strings.Contains(tp, want) {
			t.Errorf("request %d carried traceparent %q, want attempt %d's span %s", i+1, tp, i+1, want)
		}
	}

	caller := w.ended("fetch models")
	if v, _ := attr(caller.Attributes(), otelretry.AttemptsKey); v.AsInt64() != 3 {
		t.Errorf("caller's httpretry.attempts = %v, want 3", v.Emit())
	}
	var waits []time.Duration
	for _, e := range w.observed() {
		if e.Kind == httpretry.EventRetry {
			waits = append(waits, e.Wait)
		}
	}
	retries := events(caller, otelretry.EventRetry)
	if len(retries) != 2 || len(waits) != 2 {
		t.Fatalf("%d retry events on the caller's span, %d observed; want 2", len(retries), len(waits))
	}
	for i, e := range retries {
		if v, _ := attr(e.Attributes, otelretry.WaitKey); v.AsFloat64() != waits[i].Seconds() || waits[i] <= 0 {
			t.Errorf("retry %d: httpretry.wait %v, observed wait %v", i+1, v.Emit(), waits[i])
		}
		if v, _ := attr(e.Attributes, otelretry.AttemptKey); v.AsInt64() != int64(i+1) {
			t.Errorf("retry %d follows attempt %v", i+1, v.Emit())
		}
		if v, _ := attr(e.Attributes, semconv.HTTPResponseStatusCodeKey); v.AsInt64() != 503 {
			t.Errorf("retry %d: status %v, want 503", i+1, v.Emit())
		}
	}
	if g := events(caller, otelretry.EventGiveUp); len(g) != 0 {
		t.Errorf("a call that succeeded has %d give-up events", len(g))
	}
}

// A refused call makes no attempt and so no attempt span; the caller's span
// says why, and when the next probe is due.
func TestBreakerRefusalIsAnEventWithoutAttemptSpan(t *testing.T) {
	leaktest.Check(t)
	w := newWorld(t)
	srv := faultserver.Start(t, faultserver.Config{})
	b := breaker.MustNew(breaker.Config{Name: "upstream", Clock: w.clk, Logger: quiet})
	b.Trip(w.clk.Now().Add(90 * time.Second))
	c := w.transport(t, &httpretry.Transport{Breaker: b})
	w.tel.WatchBreaker(b)
	ctx, call := w.caller("call")

	_, _, err := get(t, c, ctx, srv.URL)
	call.End()
	if !errors.Is(err, breaker.ErrOpen) {
		t.Fatalf("err = %v, want a breaker refusal", err)
	}
	if n := len(w.attemptSpans()); n != 0 || srv.Requests() != 0 {
		t.Fatalf("%d attempt spans and %d requests for a refused call, want none", n, srv.Requests())
	}
	caller := w.ended("call")
	refused := events(caller, otelretry.EventRefused)
	if len(refused) != 1 {
		t.Fatalf("%d refusal events, want 1 (events: %v)", len(refused), caller.Events())
	}
	for key, want := range map[string]string{
		"httpretry.stop_reason":      "breaker_open",
		"httpretry.breaker.name":     "upstream",
		"httpretry.breaker.state":    "open",
		"httpretry.breaker.retry_in": "90",
	} {
		if v, _ := attr(refused[0].Attributes, attribute.Key(key)); v.Emit() != want {
			t.Errorf("refusal event: %s = %q, want %q", key, v.Emit(), want)
		}
	}
	if v, _ := attr(caller.Attributes(), otelretry.StopReasonKey); v.AsString() != "breaker_open" {
		t.Errorf("caller's httpretry.stop_reason = %q, want breaker_open", v.Emit())
	}
	got := collect(t, w.reader)
	host, port, _ := net.SplitHostPort(srv.Addr)
	for series, want := range map[string]float64{
		"httpretry.refusals{httpretry.breaker.state=open,server.address=" + host + ",server.port=" + port + "}": 1,
		"httpretry.breaker.state{httpretry.breaker.name=upstream}":                                              otelretry.StateOpen,
	} {
		if got[series] != want {
			t.Errorf("%s = %v, want %v (all: %v)", series, got[series], want, got)
		}
	}
}

// A body cut after its headers ends that attempt's span with the cut, and
// the range request that continues it is an attempt span of its own.
func TestResumedBodyIsAnAttempt(t *testing.T) {
	leaktest.Check(t)
	w := newWorld(t)
	doc := &faultserver.Resource{Body: document(30_000), ETag: `"v1"`}
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(
		faultserver.ServeResource(doc).WithBodyFault(faultserver.BodyFault{CutAfter: 10_000, Reset: true}),
		faultserver.ServeResource(doc))})
	c := w.transport(t, &httpretry.Transport{})
	ctx, call := w.caller("download")
	_, body, err := get(t, c, ctx, srv.URL+"/file")
	call.End()
	if err != nil || !bytes.Equal(body, doc.Body) {
		t.Fatalf("read %d bytes, %v", len(body), err)
	}
	spans := w.attemptSpans()
	if len(spans) != 2 {
		t.Fatalf("%d attempt spans, want 2", len(spans))
	}
	first, resume := spans[0], spans[1]
	if first.Status().Code != codes.Error || !hasAttr(first, semconv.ErrorTypeKey) {
		t.Errorf("the cut attempt: status %v, attributes %v; want an error with its type", first.Status(), first.Attributes())
	}
	for key, want := range map[string]string{
		"http.response.status_code": "206",
		"http.request.resend_count": "1",
		"httpretry.resume":          "true",
		"httpretry.resume.offset":   "10000",
		"httpretry.outcome":         "success",
		"http.request.method":       "GET",
		"url.full":                  srv.URL + "/file",
	} {
		if v, _ := attr(resume.Attributes(), attribute.Key(key)); v.Emit() != want {
			t.Errorf("resume span: %s = %q, want %q", key, v.Emit(), want)
		}
	}
	caller := w.ended("download")
	failed, retried := events(caller, otelretry.EventBodyFailed), events(caller, otelretry.EventRetry)
	if len(failed) != 1 || len(retried) != 1 {
		t.Fatalf("caller events %v; want one body_failed and one retry", caller.Events())
	}
	if v, _ := attr(retried[0].Attributes, otelretry.OffsetKey); v.AsInt64() != 10_000 {
		t.Errorf("retry event offset %v, want 10000", v.Emit())
	}
}

// Without a span in the request's context, each attempt starts a trace of
// its own: the documented reason to put one there.
func TestAttemptsWithoutCallerSpanAreRoots(t *testing.T) {
	leaktest.Check(t)
	w := newWorld(t)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(faultserver.Status(503), faultserver.OK())})
	c := w.transport(t, &httpretry.Transport{})
	if _, _, err := get(t, c, t.Context(), srv.URL); err != nil {
		t.Fatal(err)
	}
	spans := w.attemptSpans()
	if len(spans) != 2 || spans[0].Parent().IsValid() || spans[1].Parent().IsValid() ||
		spans[0].SpanContext().TraceID() == spans[1].SpanContext().TraceID() {
		t.Fatalf("want two root spans in two traces, got %d", len(spans))
	}
}

// A Tracer the Transport had is kept: it sees each attempt's request, with
// otelretry's span in its context, and its end is called once per attempt.
func TestInstrumentKeepsTheTransportsTracer(t *testing.T) {
	leaktest.Check(t)
	w := newWorld(t)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(faultserver.Status(503), faultserver.OK())})
	own := &countingTracer{}
	c := w.transport(t, &httpretry.Transport{Tracer: own})
	ctx, call := w.caller("call")
	if _, _, err := get(t, c, ctx, srv.URL); err != nil {
		t.Fatal(err)
	}
	call.End()
	spans := w.attemptSpans()
	if len(spans) != 2 || len(own.spans) != 2 || own.ended != 2 {
		t.Fatalf("%d otelretry spans; the Transport's own tracer saw %d starts and %d ends; want 2 each",
			len(spans), len(own.spans), own.ended)
	}
	for i, sc := range own.spans {
		if sc.SpanID() != spans[i].SpanContext().SpanID() {
			t.Errorf("attempt %d: the own tracer saw span %v, want otelretry's %v", i+1, sc.SpanID(), spans[i].SpanContext().SpanID())
		}
	}
}

type countingTracer struct {
	spans []trace.SpanContext
	ended int
}

func (c *countingTracer) StartAttempt(req *http.Request, _ httpretry.AttemptInfo) (*http.Request, func(httpretry.AttemptResult)) {
	c.spans = append(c.spans, trace.SpanContextFromContext(req.Context()))
	return req, func(httpretry.AttemptResult) { c.ended++ }
}

func TestNewRejectsNegativeMaxHosts(t *testing.T) {
	_, err := otelretry.New(otelretry.Config{MaxHosts: -1})
	if err == nil || !strings.Contains(err.Error(), "Config.MaxHosts") {
		t.Fatalf("New = %v, want an error naming Config.MaxHosts", err)
	}
}

func hasAttr(s sdktrace.ReadOnlySpan, key attribute.Key) bool {
	_, ok := attr(s.Attributes(), key)
	return ok
}

func document(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}
