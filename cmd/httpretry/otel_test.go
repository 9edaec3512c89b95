package main

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"

	"github.com/hordekit/httpretry/internal/faultserver"
	"github.com/hordekit/httpretry/internal/otlptest"
)

// getRunWithEnv runs the binary as getRunBinary does, with the OTEL_*
// variables of the test run removed and env added.
func getRunWithEnv(t *testing.T, env []string, args ...string) getResult {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), getBinary(t), append([]string{"get"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 10 * time.Second
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OTEL_") && !strings.HasPrefix(kv, "TRACEPARENT=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	cmd.Env = append(cmd.Env, env...)
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("running the binary: %v", err)
	}
	if bytes.Contains(stderr.Bytes(), []byte("WARNING: DATA RACE")) {
		t.Fatalf("the binary raced:\n%s", stderr.Bytes())
	}
	return getResult{stdout: stdout.Bytes(), stderr: stderr.Bytes(), code: code}
}

// With OTEL_EXPORTER_OTLP_ENDPOINT set, `get` through 2 x 503 exports the
// call's span (a child of TRACEPARENT's), one span per attempt beneath it,
// the waits as events, and the metrics; no secret of the command line is
// in any of it.
func TestGetExportsTheCallOverOTLP(t *testing.T) {
	const secret = "PLANTEDcliT0ken99"
	const parentTrace, parentSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	recv := otlptest.Start(t)
	body := getBody(50_000)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(
		faultserver.Status(503), faultserver.Status(503), faultserver.OK().WithBody(body))})

	r := getRunWithEnv(t, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.URL,
		"TRACEPARENT=00-" + parentTrace + "-" + parentSpan + "-01"},
		append(getFast, "-v", "-H", "Authorization: Bearer "+secret, srv.URL+"/models?api_key="+secret)...)
	if r.code != getExitOK || !bytes.Equal(r.stdout, body) {
		t.Fatalf("exit %d, %d bytes on stdout; stderr:\n%s", r.code, len(r.stdout), r.stderr)
	}

	spans := recv.Spans()
	if len(spans) != 4 {
		t.Fatalf("%d spans arrived, want 4 (the call and three attempts)", len(spans))
	}
	var call otlptest.Span
	var attempts []otlptest.Span
	for _, s := range spans {
		if s.GetName() == "httpretry get" {
			call = s
		} else {
			attempts = append(attempts, s)
		}
	}
	if call.Span == nil || len(attempts) != 3 {
		t.Fatalf("spans %v", spans)
	}
	if hexID(call.TraceId) != parentTrace || hexID(call.ParentSpanId) != parentSpan {
		t.Errorf("the call's span is in trace %s under %s, want TRACEPARENT's %s under %s",
			hexID(call.TraceId), hexID(call.ParentSpanId), parentTrace, parentSpan)
	}
	if got, _ := otlptest.Attr(call.Resource, "service.name"); got != "httpretry" {
		t.Errorf("service.name %q", got)
	}
	for key, want := range map[string]string{"process.exit.code": "0", "http.response.status_code": "200", "httpretry.attempts": "3"} {
		if got, _ := otlptest.Attr(call.Attributes, key); got != want {
			t.Errorf("call span: %s = %q, want %q", key, got, want)
		}
	}
	retries := 0
	for _, e := range call.Events {
		if e.GetName() == "httpretry.retry" {
			retries++
		}
	}
	if retries != 2 {
		t.Errorf("%d retry events on the call's span, want 2", retries)
	}
	// Attempts end in order: their start times order them.
	for i, a := range attempts {
		if string(a.ParentSpanId) != string(call.SpanId) {
			t.Errorf("attempt %d is not a child of the call's span", i+1)
		}
		status, _ := otlptest.Attr(a.Attributes, "http.response.status_code")
		resend, hasResend := otlptest.Attr(a.Attributes, "http.request.resend_count")
		wantStatus := []string{"503", "503", "200"}[i]
		if status != wantStatus || hasResend != (i > 0) || i > 0 && resend != []string{"", "1", "2"}[i] {
			t.Errorf("attempt %d: status %s resend %q; want %s and resend count %d", i+1, status, resend, wantStatus, i)
		}
		if tp := srv.Log()[i].Header.Get("Traceparent"); !strings.Contains(tp, hexID(a.SpanId)) {
			t.Errorf("request %d carried %q, not its attempt's span", i+1, tp)
		}
	}
	m, ok := recv.Last("httpretry.attempts")
	if n, _ := otlptest.Sum(m, nil); !ok || n != 3 {
		t.Errorf("httpretry.attempts = %v, want 3", n)
	}
	m, ok = recv.Last("httpretry.retries")
	if n, _ := otlptest.Sum(m, nil); !ok || n != 2 {
		t.Errorf("httpretry.retries = %v, want 2", n)
	}
	if !strings.Contains(string(r.stderr), "trace_id="+parentTrace) {
		t.Errorf("-v did not log the trace ID:\n%s", r.stderr)
	}
	for _, s := range spans {
		if text := prototext.Format(s.Span); strings.Contains(text, secret) {
			t.Errorf("the secret is in span %s:\n%s", s.GetName(), text)
		}
	}
}

// Without OTEL_* variables nothing is exported and nothing is propagated:
// no tracer is even installed.
func TestGetWithoutOtelEnvIsUntraced(t *testing.T) {
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(faultserver.Status(503), faultserver.OK())})
	r := getRunWithEnv(t, nil, append(getFast, srv.URL)...)
	if r.code != getExitOK || len(r.stderr) != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	for i, e := range srv.Log() {
		if tp := e.Header.Get("Traceparent"); tp != "" {
			t.Errorf("request %d carried traceparent %q", i+1, tp)
		}
	}
}

// A collector that is down neither changes the exit code nor holds the
// command beyond the flush limit; it is reported on stderr.
func TestGetWithCollectorDown(t *testing.T) {
	srv := faultserver.Start(t, faultserver.Config{})
	r := getRunWithEnv(t, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + faultserver.ClosedPort(t)}, srv.URL)
	if r.code != getExitOK || !strings.Contains(string(r.stderr), "httpretry: telemetry") {
		t.Fatalf("exit %d, stderr %q; want 0 and a telemetry warning", r.code, r.stderr)
	}
}

// A setting the command cannot honour is a warning, and the call goes on.
func TestGetWarnsOfUnsupportedProtocol(t *testing.T) {
	recv := otlptest.Start(t)
	srv := faultserver.Start(t, faultserver.Config{})
	r := getRunWithEnv(t, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.URL, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"}, srv.URL)
	if r.code != getExitOK || !strings.Contains(string(r.stderr), "OTEL_EXPORTER_OTLP_PROTOCOL=grpc") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if n := recv.Posts("/v1/traces") + recv.Posts("/v1/metrics"); n != 0 {
		t.Errorf("%d exports with an unsupported protocol", n)
	}
}

func hexID(b []byte) string { return hex.EncodeToString(b) }
