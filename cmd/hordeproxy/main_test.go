package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hordekit/httpretry/internal/leaktest"
)

// fixture reads one of the AI Horde fixtures of package horde.
func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "horde", "testdata", "aihorde", name))
	if err != nil {
		t.Fatalf("AI Horde fixture missing: %v", err)
	}
	return b
}

// fakeAPI serves the text worker list at its API path and counts requests;
// other paths are 404, and every request 503 while down.
type fakeAPI struct {
	*httptest.Server
	workers  []byte
	down     atomic.Bool
	requests atomic.Int64
}

func startAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{workers: fixture(t, "workers_text.json")}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		switch {
		case f.down.Load():
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
		case r.URL.Path == "/api/v2/workers" && r.URL.RawQuery == "type=text":
			w.Header().Set("Content-Type", "application/json")
			w.Write(f.workers)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(f.Close)
	return f
}

// base is the API root to give the proxy.
func (f *fakeAPI) base() string { return f.URL + "/api/" }

var addrRE = regexp.MustCompile(`msg="hordeproxy listening" addr=(\S+)`)

// proxy is a running hordeproxy.
type proxy struct {
	addr    string
	started string // the "listening" log line
	stop    func() int
}

// start runs the command with args and returns it once it listens; stop
// ends it, as a signal would, and returns its exit code.
func start(t *testing.T, args ...string) proxy {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, append([]string{"--listen", "127.0.0.1:0"}, args...), pw)
		pw.Close()
	}()
	t.Cleanup(cancel)

	lines := bufio.NewScanner(pr)
	for lines.Scan() {
		if m := addrRE.FindStringSubmatch(lines.Text()); m != nil {
			// Keep reading the log so the command never blocks on it.
			go func() { _, _ = io.Copy(io.Discard, pr) }()
			return proxy{addr: m[1], started: lines.Text(), stop: func() int { cancel(); return <-code }}
		}
	}
	t.Fatalf("hordeproxy did not start (exit %d)", <-code)
	return proxy{}
}

// fetch GETs path from the proxy and returns the response and its body.
func (p proxy) fetch(t *testing.T, path string) (*http.Response, string) {
	t.Helper()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://" + p.addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestServesHeartbeatDataAndMetrics(t *testing.T) {
	leaktest.Check(t)
	api := startAPI(t)
	p := start(t, "--horde-url", api.base())

	if resp, b := p.fetch(t, "/api/heartbeat"); resp.StatusCode != 200 ||
		b != `{"status":"ok","ai_horde":{"degraded":false,"consecutive_failures":0,"seconds_until_retry":null}}` {
		t.Errorf("heartbeat: %d %s", resp.StatusCode, b)
	}
	if resp, b := p.fetch(t, "/api/v2/workers?type=text"); resp.StatusCode != 200 || b != string(api.workers) || resp.Header.Get("Age") != "0" {
		t.Errorf("workers: %d %v %.200s", resp.StatusCode, resp.Header, b)
	}
	resp, b := p.fetch(t, "/metrics")
	host := strings.TrimPrefix(api.URL, "http://")
	for _, want := range []string{
		`httpretry_attempts_total{host="` + host + `",outcome="success"} 1`,
		`httpretry_breaker_state{breaker="ai_horde"} 0`,
		`hordeproxy_body_memory_in_use_bytes 0`,
		`hordeproxy_body_memory_limit_bytes 2.5165824e+07`,
		`go_goroutines `,
	} {
		if resp.StatusCode != 200 || !strings.Contains(b, want) {
			t.Errorf("/metrics (%d) lacks %s", resp.StatusCode, want)
		}
	}
	// Bad input is refused in JSON, through the whole server.
	if resp, b := p.fetch(t, "/api/v2/workers?type=%zz"); resp.StatusCode != 400 || !strings.HasPrefix(b, `{"error":`) {
		t.Errorf("bad query: %d %s", resp.StatusCode, b)
	}
	if resp, b := p.fetch(t, "/api/v3/workers"); resp.StatusCode != 404 || !strings.HasPrefix(b, `{"error":`) {
		t.Errorf("unknown path: %d %s", resp.StatusCode, b)
	}

	if c := p.stop(); c != 0 {
		t.Errorf("exit %d after the signal, want 0", c)
	}
}

func TestBadUsage(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
		says string // in stderr
		code int
	}{
		{name: "unknown flag", args: []string{"--port", "80"}, says: "-port", code: exitUsage},
		{name: "argument", args: []string{"serve"}, says: "unexpected arguments", code: exitUsage},
		{name: "bad horde url", args: []string{"--horde-url", "ftp://aihorde.net/api/"}, says: "base URL", code: exitUsage},
		{name: "relative url", args: []string{"--horde-url", "aihorde.net/api"}, says: "base URL", code: exitUsage},
		{name: "listen address", args: []string{"--listen", "127.0.0.1:http-alt-nope", "--horde-url", "http://127.0.0.1:1/api/"},
			says: "hordeproxy:", code: exitFailure},

		{name: "redis host alone", args: []string{"--redis", "localhost"}, says: "--redis", code: exitUsage},
		{name: "redis http", args: []string{"--redis", "http://127.0.0.1:6379"}, says: "--redis", code: exitUsage},
		{name: "redis port", args: []string{"--redis", "127.0.0.1:99999"}, says: "--redis", code: exitUsage},
		{name: "redis db", args: []string{"--redis", "redis://127.0.0.1:6379/zero"}, says: "--redis", code: exitUsage},
		{name: "redis unix without path", args: []string{"--redis", "unix://"}, says: "--redis", code: exitUsage},
		{name: "REDIS_URL", env: map[string]string{"REDIS_URL": "redis://:hunter2@[::1"}, says: "REDIS_URL", code: exitUsage},

		{name: "fresh-for 0", args: []string{"--fresh-for", "0"}, says: "--fresh-for", code: exitUsage},
		{name: "fresh-for negative", args: []string{"--fresh-for", "-5s"}, says: "--fresh-for", code: exitUsage},
		{name: "fresh-for words", args: []string{"--fresh-for", "a minute"}, says: "--fresh-for", code: exitUsage},
		{name: "HORDEPROXY_FRESH_FOR", env: map[string]string{"HORDEPROXY_FRESH_FOR": "soon"}, says: "HORDEPROXY_FRESH_FOR", code: exitUsage},
		{name: "stale-while-revalidate negative", args: []string{"--stale-while-revalidate", "-1s"}, says: "--stale-while-revalidate", code: exitUsage},
		{name: "attempts 0", args: []string{"--attempts", "0"}, says: "--attempts", code: exitUsage},
		{name: "HORDEPROXY_ATTEMPTS", env: map[string]string{"HORDEPROXY_ATTEMPTS": "three"}, says: "HORDEPROXY_ATTEMPTS", code: exitUsage},
		{name: "attempt-timeout 0", args: []string{"--attempt-timeout", "0s"}, says: "--attempt-timeout", code: exitUsage},
		{name: "HORDEPROXY_ATTEMPT_TIMEOUT", env: map[string]string{"HORDEPROXY_ATTEMPT_TIMEOUT": "-1"}, says: "HORDEPROXY_ATTEMPT_TIMEOUT", code: exitUsage},
		{name: "max-body 0", args: []string{"--max-body", "0"}, says: "--max-body", code: exitUsage},
		{name: "max-body unit", args: []string{"--max-body", "32MB"}, says: "--max-body", code: exitUsage},
		{name: "body-memory under max-body", args: []string{"--body-memory", "1MiB"}, says: "--body-memory", code: exitUsage},
		{name: "HORDEPROXY_BODY_MEMORY", env: map[string]string{"HORDEPROXY_BODY_MEMORY": "lots"}, says: "HORDEPROXY_BODY_MEMORY", code: exitUsage},
		{name: "long value", args: []string{"--fresh-for", strings.Repeat("9x", 50_000)}, says: "…", code: exitUsage},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var stderr strings.Builder
			c := run(context.Background(), tt.args, &stderr)
			msg := stderr.String()
			if c != tt.code || !strings.Contains(msg, tt.says) {
				t.Errorf("exit %d, want %d with a message naming %q; stderr %.300q", c, tt.code, tt.says, msg)
			}
			if strings.Contains(msg, "hunter2") {
				t.Errorf("stderr repeats the password: %q", msg)
			}
			if tt.name == "long value" && len(msg) > 300 {
				t.Errorf("stderr repeats the whole value: %.300q (%d bytes)", msg, len(msg))
			}
		})
	}
}

func TestHelpListsEndpointsAndVariables(t *testing.T) {
	var out strings.Builder
	if c := run(context.Background(), []string{"--help"}, &out); c != 0 {
		t.Errorf("--help: exit %d", c)
	}
	for _, want := range []string{
		"/api/heartbeat", "/api/v2/status/models", "/api/v2/stats/img/models", "/api/v2/stats/text/models",
		"/api/v2/workers", "/metrics", "X-Horde-Stale", "X-Horde-Revalidating",
		"--listen", "--horde-url", "--redis", "--fresh-for", "--stale-while-revalidate", "--attempts",
		"--attempt-timeout", "--max-body", "--body-memory",
		"HORDEPROXY_LISTEN", "AI_HORDE_URL", "HORDE_URL", "REDIS_URL", "HORDEPROXY_FRESH_FOR",
		"HORDEPROXY_STALE_WHILE_REVALIDATE", "HORDEPROXY_ATTEMPTS", "HORDEPROXY_ATTEMPT_TIMEOUT",
		"HORDEPROXY_MAX_BODY", "HORDEPROXY_BODY_MEMORY", "rediss://", "unix://",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help does not mention %s", want)
		}
	}
}

// Flags, then the environment, then the defaults reach the Client.
func TestSettingsReachTheClient(t *testing.T) {
	leaktest.Check(t)
	api := startAPI(t)
	api.down.Store(true)
	t.Setenv("HORDEPROXY_FRESH_FOR", "90")
	t.Setenv("HORDEPROXY_ATTEMPTS", "7") // the flag wins
	t.Setenv("HORDEPROXY_STALE_WHILE_REVALIDATE", "0")
	t.Setenv("HORDEPROXY_BODY_MEMORY", "1GiB")
	p := start(t, "--horde-url", api.base(), "--attempts", "1", "--attempt-timeout", "2m", "--max-body", "512KiB")
	for _, want := range []string{"cache=memory", "fresh_for=1m30s", "stale_while_revalidate=0s", "attempts=1",
		"attempt_timeout=2m0s", "max_body=524288", "body_memory=1073741824"} {
		if !strings.Contains(p.started, want) {
			t.Errorf("startup log lacks %s: %s", want, p.started)
		}
	}
	// One attempt: a 503 is answered 502 at once, after one request.
	if resp, _ := p.fetch(t, "/api/v2/workers?type=text"); resp.StatusCode != http.StatusBadGateway || api.requests.Load() != 1 {
		t.Errorf("%d after %d upstream requests, want 502 after 1", resp.StatusCode, api.requests.Load())
	}
	if c := p.stop(); c != 0 {
		t.Errorf("exit %d", c)
	}
}
