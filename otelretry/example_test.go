package otelretry_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/otelretry"
)

// An upstream that answers 503 twice, then 200: the call's span holds three
// attempt spans and, between them, the waits.
func Example() {
	srv := flakyServer(2)
	defer srv.Close()
	// An application installs its SDK and exporter; a recorder stands in.
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))

	tel, err := otelretry.New(otelretry.Config{TracerProvider: tp}) // nil providers: the global ones
	if err != nil {
		panic(err)
	}
	t := &httpretry.Transport{Policy: httpretry.Policy{MinWait: time.Millisecond, MaxWait: 2 * time.Millisecond}}
	tel.Instrument(t)
	client := &http.Client{Transport: t}

	ctx, span := tp.Tracer("app").Start(context.Background(), "fetch models")
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v2/status/models", nil)
	if resp, err := client.Do(req); err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close() // the last attempt's span ends with its body
	}
	span.End()

	printTree(rec.Ended())
	// Output:
	// fetch models  httpretry.attempts=3
	//   GET  http.response.status_code=503 error.type=503
	//   event httpretry.retry  httpretry.attempt=1 http.response.status_code=503
	//   GET  http.response.status_code=503 error.type=503 http.request.resend_count=1
	//   event httpretry.retry  httpretry.attempt=2 http.response.status_code=503
	//   GET  http.response.status_code=200 http.request.resend_count=2
}

// With otelhttp.NewTransport in front, its span is the logical call and
// otelretry's are the attempts beneath it, each once.
func Example_otelhttp() {
	srv := flakyServer(1)
	defer srv.Close()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tel, err := otelretry.New(otelretry.Config{TracerProvider: tp})
	if err != nil {
		panic(err)
	}
	t := &httpretry.Transport{Policy: httpretry.Policy{MinWait: time.Millisecond, MaxWait: 2 * time.Millisecond}}
	tel.Instrument(t)
	client := &http.Client{Transport: otelhttp.NewTransport(t, otelhttp.WithTracerProvider(tp))}

	if resp, err := client.Get(srv.URL); err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	printTree(rec.Ended())
	// Output:
	// HTTP GET  httpretry.attempts=2 http.response.status_code=200
	//   GET  http.response.status_code=503 error.type=503
	//   event httpretry.retry  httpretry.attempt=1 http.response.status_code=503
	//   GET  http.response.status_code=200 http.request.resend_count=1
}

// flakyServer answers 503 to its first n requests, then 200.
func flakyServer(n int32) *httptest.Server {
	var calls atomic.Int32
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= n {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "[]")
	}))
}

// printTree prints the root span, its events and its children in time
// order, with the attributes that tell the story.
func printTree(spans []sdktrace.ReadOnlySpan) {
	shown := []attribute.Key{"httpretry.attempts", "httpretry.attempt", "http.response.status_code", "error.type", "http.request.resend_count"}
	line := func(name string, attrs []attribute.KeyValue) string {
		var b strings.Builder
		b.WriteString(name + " ")
		for _, k := range shown {
			for _, kv := range attrs {
				if kv.Key == k {
					fmt.Fprintf(&b, " %s=%s", kv.Key, kv.Value.Emit())
				}
			}
		}
		return b.String()
	}
	var root sdktrace.ReadOnlySpan
	for _, s := range spans {
		if !s.Parent().IsValid() {
			root = s
		}
	}
	type item struct {
		at   time.Time
		text string
	}
	var items []item
	for _, e := range root.Events() {
		items = append(items, item{e.Time, line("event "+e.Name, e.Attributes)})
	}
	for _, s := range spans {
		if s.Parent().SpanID() == root.SpanContext().SpanID() {
			items = append(items, item{s.StartTime(), line(s.Name(), s.Attributes())})
		}
	}
	slices.SortStableFunc(items, func(a, b item) int { return a.at.Compare(b.at) })
	fmt.Println(line(root.Name(), root.Attributes()))
	for _, it := range items {
		fmt.Println("  " + it.text)
	}
}
