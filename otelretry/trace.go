package otelretry

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/breaker"
)

// Attribute keys of this package's own, beside the semantic conventions'.
const (
	// AttemptsKey: on the caller's span, how many attempts the call made so
	// far (resumes included).
	AttemptsKey = attribute.Key("httpretry.attempts")
	// AttemptKey: on a span event, the attempt it follows.
	AttemptKey = attribute.Key("httpretry.attempt")
	// WaitKey: on a retry event, the wait before the next attempt, in
	// seconds, Retry-After floors included.
	WaitKey = attribute.Key("httpretry.wait")
	// ResumeKey: true on an attempt span or event about a range request
	// continuing a body cut after its headers.
	ResumeKey = attribute.Key("httpretry.resume")
	// OffsetKey: with ResumeKey, how many body bytes the caller had read.
	OffsetKey = attribute.Key("httpretry.resume.offset")
	// HedgeKey: true on the span of a hedge (an attempt sent while an
	// earlier one of the same round still waited for its headers) and on
	// the hedge events.
	HedgeKey = attribute.Key("httpretry.hedge")
	// HedgeDelayKey: on a hedge event, seconds the attempt it backs up had
	// waited for its headers.
	HedgeDelayKey = attribute.Key("httpretry.hedge.delay")
	// OutcomeKey: on an attempt span and the attempts metric, what the
	// attempt told the breaker: success, failure or neutral.
	OutcomeKey = attribute.Key("httpretry.outcome")
	// StopReasonKey: on a give-up or refusal event, on the caller's span
	// and on the give-ups metric, why the call stopped retrying (see
	// StopReason).
	StopReasonKey = attribute.Key("httpretry.stop_reason")
	// BreakerNameKey, BreakerStateKey: the breaker that refused a call, or
	// whose state a metric reports; the state is closed, open or half-open.
	BreakerNameKey  = attribute.Key("httpretry.breaker.name")
	BreakerStateKey = attribute.Key("httpretry.breaker.state")
	// RetryInKey: on a refusal event, seconds until the breaker admits a
	// probe (0 when half-open).
	RetryInKey = attribute.Key("httpretry.breaker.retry_in")
	// BreakerFromKey, BreakerToKey: the states of a transition.
	BreakerFromKey = attribute.Key("httpretry.breaker.from")
	BreakerToKey   = attribute.Key("httpretry.breaker.to")
)

// Names of the events on the caller's span.
const (
	EventRetry      = "httpretry.retry"
	EventGiveUp     = "httpretry.give_up"
	EventRefused    = "httpretry.refused"
	EventBodyFailed = "httpretry.body_failed"
	EventHedge      = "httpretry.hedge"
	EventHedgeWon   = "httpretry.hedge_won"
)

// StartAttempt starts the span of one attempt, a child of the span in req's
// context, and returns a copy of req carrying it in its context and its
// propagation headers. It implements httpretry.Tracer.
func (t *Telemetry) StartAttempt(req *http.Request, a httpretry.AttemptInfo) (*http.Request, func(httpretry.AttemptResult)) {
	if t.tracer == nil {
		return req, endNothing
	}
	attrs := t.requestAttrs(req, a)
	ctx, span := t.tracer.Start(req.Context(), spanName(req.Method),
		trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	if !span.SpanContext().IsValid() && baggage.FromContext(ctx).Len() == 0 {
		// Nothing recorded and nothing to propagate: the request as it was.
		return req, endNothing
	}
	r := req.WithContext(ctx)
	r.Header = req.Header.Clone() // never the caller's map
	if r.Header == nil {
		r.Header = http.Header{}
	}
	t.prop.Inject(ctx, propagation.HeaderCarrier(r.Header))
	if !span.IsRecording() {
		return r, endNothing
	}
	return r, func(res httpretry.AttemptResult) { endAttempt(span, req, res) }
}

func endNothing(httpretry.AttemptResult) {}

// spanName is the HTTP client span name of the semantic conventions when no
// URL template is known: the method, or HTTP for a method they do not name.
func spanName(method string) string {
	if method == "" {
		return http.MethodGet
	}
	if _, ok := knownMethods[method]; ok {
		return method
	}
	return "HTTP"
}

var knownMethods = map[string]attribute.KeyValue{
	http.MethodConnect: semconv.HTTPRequestMethodConnect,
	http.MethodDelete:  semconv.HTTPRequestMethodDelete,
	http.MethodGet:     semconv.HTTPRequestMethodGet,
	http.MethodHead:    semconv.HTTPRequestMethodHead,
	http.MethodOptions: semconv.HTTPRequestMethodOptions,
	http.MethodPatch:   semconv.HTTPRequestMethodPatch,
	http.MethodPost:    semconv.HTTPRequestMethodPost,
	http.MethodPut:     semconv.HTTPRequestMethodPut,
	http.MethodTrace:   semconv.HTTPRequestMethodTrace,
}

// requestAttrs are the attempt's attributes known before it is sent, given
// at the span's start so that a sampler can use them. The slice is made to
// measure: it is most of what an unsampled attempt allocates.
func (t *Telemetry) requestAttrs(req *http.Request, a httpretry.AttemptInfo) []attribute.KeyValue {
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	kv, known := knownMethods[method]
	server := t.server(req.URL)
	n := 2 + len(server)
	if !known {
		n++
	}
	if a.Attempt > 1 {
		n++
	}
	if a.Resume {
		n += 2
	}
	if a.Hedge {
		n++
	}
	attrs := make([]attribute.KeyValue, 0, n)
	if known {
		attrs = append(attrs, kv)
	} else {
		attrs = append(attrs, semconv.HTTPRequestMethodOther, semconv.HTTPRequestMethodOriginal(method))
	}
	attrs = append(attrs, semconv.URLFull(httpretry.RedactURL(req.URL)))
	attrs = append(attrs, server...)
	if a.Attempt > 1 {
		attrs = append(attrs, semconv.HTTPRequestResendCount(a.Attempt-1))
	}
	if a.Resume {
		attrs = append(attrs, ResumeKey.Bool(true), OffsetKey.Int64(a.Offset))
	}
	if a.Hedge {
		attrs = append(attrs, HedgeKey.Bool(true))
	}
	return attrs
}

// server returns server.address and server.port for u: those the metrics
// keep for its host, or, for a host past MaxHosts, made now.
func (t *Telemetry) server(u *url.URL) []attribute.KeyValue {
	h := t.hosts.get(u.Host, func(key string) *hostSets { return newHostSets(key, u.Scheme) })
	if !h.other {
		return h.attrs
	}
	host, port := hostPort(u.Host, u.Scheme)
	if port == 0 {
		return []attribute.KeyValue{semconv.ServerAddress(host)}
	}
	return []attribute.KeyValue{semconv.ServerAddress(host), semconv.ServerPort(port)}
}

// hostPort splits a URL's host into server.address and server.port, the
// port defaulting to the scheme's; 0 when neither says.
func hostPort(hostport, scheme string) (string, int) {
	host, p := hostport, ""
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 && !strings.Contains(hostport[i:], "]") {
		host, p = hostport[:i], hostport[i+1:]
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if port, err := strconv.Atoi(p); p != "" && err == nil && port > 0 && port < 1<<16 {
		return host, port
	}
	switch scheme {
	case "http":
		return host, 80
	case "https":
		return host, 443
	}
	return host, 0
}

// endAttempt records how the attempt ended and ends its span. A client
// span is an error from status 400 up, or when the attempt failed.
func endAttempt(span trace.Span, req *http.Request, res httpretry.AttemptResult) {
	attrs := make([]attribute.KeyValue, 0, 3)
	if res.StatusCode > 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCode(res.StatusCode))
	}
	attrs = append(attrs, OutcomeKey.String(res.Outcome.String()))
	switch {
	case res.Err != nil:
		// A body that failed after a good status: the failure is the body's.
		attrs = append(attrs, errorType(res.Err))
		span.SetStatus(codes.Error, redactMessage(httpretry.RedactError(res.Err), req))
	case res.StatusCode >= 400:
		attrs = append(attrs, semconv.ErrorTypeKey.String(strconv.Itoa(res.StatusCode)))
		span.SetStatus(codes.Error, "")
	}
	span.SetAttributes(attrs...)
	span.End()
}

// errorType is error.type for err: the semantic conventions' rule (an
// ErrorType method in its chain, else the error's type), with a word of its
// own for the refusals, a cancelled caller and timeouts, and _OTHER for an
// error whose type says nothing (errors.New).
func errorType(err error) attribute.KeyValue {
	var ne net.Error
	switch {
	case errors.Is(err, breaker.ErrOpen):
		return semconv.ErrorTypeKey.String("breaker_open")
	case errors.Is(err, httpretry.ErrBudgetExhausted):
		return semconv.ErrorTypeKey.String("budget_exhausted")
	case errors.Is(err, context.Canceled):
		return semconv.ErrorTypeKey.String("canceled")
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return semconv.ErrorTypeKey.String("timeout")
	}
	kv := semconv.ErrorType(err)
	if kv.Value.AsString() == "*errors.errorString" {
		return semconv.ErrorTypeOther
	}
	return kv
}

// Observe records one transport event: in the metrics, and, when the
// request's context holds a recording span (the caller's), as an event or
// attribute on that span. Its signature fits httpretry.Transport.Observer.
func (t *Telemetry) Observe(e httpretry.Event) {
	t.count(e)
	if e.Request == nil {
		return
	}
	span := trace.SpanFromContext(e.Request.Context())
	if !span.IsRecording() {
		return
	}
	switch e.Kind {
	case httpretry.EventAttempt:
		span.SetAttributes(AttemptsKey.Int(e.Attempt))
	case httpretry.EventRetry:
		span.AddEvent(EventRetry, trace.WithAttributes(append(eventAttrs(e),
			WaitKey.Float64(e.Wait.Seconds()))...))
	case httpretry.EventBodyFailed:
		span.AddEvent(EventBodyFailed, trace.WithAttributes(eventAttrs(e)...))
	case httpretry.EventGiveUp:
		reason := StopReason(e.Reason)
		span.SetAttributes(StopReasonKey.String(reason))
		span.AddEvent(EventGiveUp, trace.WithAttributes(append(eventAttrs(e), StopReasonKey.String(reason))...))
	case httpretry.EventRefused:
		reason := StopReason(e.Reason)
		span.SetAttributes(StopReasonKey.String(reason))
		attrs := []attribute.KeyValue{StopReasonKey.String(reason)}
		if oe, ok := errors.AsType[*breaker.OpenError](e.Err); ok {
			attrs = append(attrs, BreakerNameKey.String(oe.Name), BreakerStateKey.String(oe.State.String()),
				RetryInKey.Float64(oe.RetryIn.Seconds()))
		}
		span.AddEvent(EventRefused, trace.WithAttributes(attrs...))
	case httpretry.EventHedge:
		span.AddEvent(EventHedge, trace.WithAttributes(append(eventAttrs(e),
			HedgeDelayKey.Float64(e.Wait.Seconds()))...))
	case httpretry.EventHedgeWon:
		span.AddEvent(EventHedgeWon, trace.WithAttributes(eventAttrs(e)...))
	}
}

// eventAttrs are the attributes every event about an attempt carries: its
// number, its status or error type, and where a resumed body stood.
func eventAttrs(e httpretry.Event) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 6)
	attrs = append(attrs, AttemptKey.Int(e.Attempt))
	if e.StatusCode > 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCode(e.StatusCode))
	}
	if e.Err != nil {
		attrs = append(attrs, errorType(e.Err))
	}
	if e.Resume {
		attrs = append(attrs, ResumeKey.Bool(true), OffsetKey.Int64(e.Offset))
	}
	if e.Hedge {
		attrs = append(attrs, HedgeKey.Bool(true))
	}
	return attrs
}
