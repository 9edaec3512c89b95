package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/hordekit/httpretry/internal/leaktest"
	"github.com/hordekit/httpretry/internal/otlptest"
)

// With OTEL_EXPORTER_OTLP_ENDPOINT set, a request whose API call needed a
// retry is a server span holding one client span per attempt and the wait
// as an event; the heartbeat makes no span; httpretry's metrics and the
// breaker's state arrive with them.
func TestExportsTracesAndMetrics(t *testing.T) {
	leaktest.Check(t)
	recv := otlptest.Start(t)
	for _, v := range []string{"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_SERVICE_NAME", "OTEL_PROPAGATORS"} {
		t.Setenv(v, "")
	}
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", recv.URL)
	workers := fixture(t, "workers_text.json")
	var calls atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(workers)
	}))
	defer api.Close()
	p := start(t, "--horde-url", api.URL+"/api/")
	addr := p.addr

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	for _, path := range []string{"/api/v2/workers?type=text", "/api/heartbeat"} {
		resp, err := client.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}

	spans := recv.Spans()
	var server otlptest.Span
	var attempts []otlptest.Span
	for _, s := range spans {
		switch s.GetName() {
		case "GET /api/v2/workers":
			server = s
		case "GET": // otelretry's attempt spans, through horde.Client.Tracer
			attempts = append(attempts, s)
		default:
			t.Errorf("unexpected span %q", s.GetName())
		}
	}
	if server.Span == nil || len(attempts) != 2 {
		t.Fatalf("spans %v; want the request's server span and two attempts", spans)
	}
	if got, _ := otlptest.Attr(server.Resource, "service.name"); got != "hordeproxy" {
		t.Errorf("service.name %q", got)
	}
	for i, a := range attempts {
		if string(a.TraceId) != string(server.TraceId) || string(a.ParentSpanId) != string(server.SpanId) {
			t.Errorf("attempt %d is not a child of the server span", i+1)
		}
	}
	if _, ok := otlptest.Attr(attempts[0].Attributes, "http.request.resend_count"); ok {
		t.Error("the first attempt has a resend count")
	}
	if got, _ := otlptest.Attr(attempts[1].Attributes, "http.request.resend_count"); got != "1" {
		t.Errorf("the second attempt's resend count = %q, want 1", got)
	}
	retries := 0
	for _, e := range server.Events {
		if e.GetName() == "httpretry.retry" {
			retries++
		}
	}
	if retries != 1 {
		t.Errorf("%d retry events on the server span, want 1", retries)
	}
	m, ok := recv.Last("httpretry.attempts")
	if n, _ := otlptest.Sum(m, nil); !ok || n != 2 {
		t.Errorf("httpretry.attempts = %v (%v), want 2", n, ok)
	}
	m, ok = recv.Last("httpretry.breaker.state")
	if n, _ := otlptest.Sum(m, map[string]string{"httpretry.breaker.name": "ai_horde"}); !ok || n != 0 {
		t.Errorf("httpretry.breaker.state{ai_horde} = %v (%v), want 0 (closed)", n, ok)
	}
}
