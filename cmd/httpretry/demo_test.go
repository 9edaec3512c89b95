package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// demoNames are the four strategies as the table prints them.
var demoNames = []string{"no retries", "naive retries", "seed policy", "httpretry defaults"}

// demoCommand returns the built binary (shared with the get tests, built
// once) set up to run `httpretry demo args...`.
func demoCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), getBinary(t), append([]string{"demo"}, args...)...)
	cmd.WaitDelay = 10 * time.Second
	// A race-enabled binary otherwise sleeps a second before exiting.
	cmd.Env = append(os.Environ(), "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	return cmd
}

// demoHeader returns the table's header line from the report.
func demoHeader(stdout string) string {
	for line := range strings.Lines(stdout) {
		if strings.HasPrefix(strings.TrimSpace(line), "strategy ") {
			return line
		}
	}
	return ""
}

// TestDemoRuns runs the whole demo, briefly, through the real binary: the
// report on stdout, progress on stderr, and the HTML page.
func TestDemoRuns(t *testing.T) {
	t.Parallel()
	page := filepath.Join(t.TempDir(), "out.html")
	cmd := demoCommand(t, "--duration", "3s", "--rate", "20", "--arrivals", "fixed", "--html", page)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.Bytes(), stderr.Bytes())
	}
	if bytes.Contains(stderr.Bytes(), []byte("WARNING: DATA RACE")) {
		t.Fatalf("the binary raced:\n%s", stderr.Bytes())
	}

	header := demoHeader(stdout.String())
	for _, name := range demoNames {
		if !strings.Contains(header, name) {
			t.Errorf("table header %q lacks %q", header, name)
		}
	}
	for _, want := range []string{"\nflaky (", "\noverloaded (", "\noutage (", "\nrate-limited (", "\nrecovery (",
		"upstream requests per call", "peak callers in flight", "first success after the outage ends",
		"targets for httpretry defaults:", "Breaker cooldown scaled", "20 calls/s (fixed arrivals)"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout.Bytes())
		}
	}
	// stderr is not a terminal here: a line per phase, and one at the end.
	if strings.Count(stderr.String(), "done in ") != 1 || !strings.Contains(stderr.String(), " rate-limited\n") ||
		strings.Contains(stderr.String(), "\r") {
		t.Errorf("stderr:\n%s", stderr.Bytes())
	}

	html, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(html, []byte("<svg")); n != len(demoNames) {
		t.Errorf("the page holds %d SVGs, want one per strategy (%d)", n, len(demoNames))
	}
	for _, banned := range []string{"<script", "http://", "https://"} {
		if bytes.Contains(html, []byte(banned)) {
			t.Errorf("the page contains %q", banned)
		}
	}
}

// TestDemoInterruptedWithListen starts the demo with --listen, reads
// /metrics and /heartbeat once the flaky phase has begun, then sends
// SIGINT: the demo must exit 130 after printing what it measured. The
// progress lines on stderr tell the test where the run is, without sleeping.
func TestDemoInterruptedWithListen(t *testing.T) {
	t.Parallel()
	cmd := demoCommand(t, "--duration", "20s", "--rate", "20", "--listen", "127.0.0.1:0")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	lines := bufio.NewScanner(errPipe)
	var addr string
	for lines.Scan() {
		line := lines.Text()
		stderr.WriteString(line + "\n")
		if a, ok := strings.CutPrefix(line, "httpretry demo: serving /metrics and /heartbeat on "); ok {
			addr = a
		}
		if strings.HasSuffix(line, " flaky") {
			break
		}
	}
	if addr == "" {
		t.Fatalf("no listen address on stderr:\n%s", stderr.String())
	}
	for path, want := range map[string]string{
		"/metrics":   `httpretry_attempts_total{host="127.0.0.1:`,
		"/heartbeat": `"status":"ok"`,
	} {
		body := demoGet(t, "http://"+addr+path)
		if !strings.Contains(body, want) {
			t.Errorf("%s = %q, want it to contain %q", path, body, want)
		}
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(errPipe)
	stderr.Write(rest)
	_ = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != exitInterrupted {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitInterrupted, stderr.String())
	}
	header := demoHeader(stdout.String())
	if !strings.Contains(header, "httpretry defaults (interrupted)") || !strings.Contains(stdout.String(), "Interrupted:") {
		t.Errorf("stdout after the interrupt:\n%s", stdout.Bytes())
	}
}

// demoGet fetches url with its own client, closed afterwards.
func demoGet(t *testing.T, url string) string {
	t.Helper()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// TestDemoUsageErrors runs the subcommand in process: a bad command line
// exits 2 with the usage on stderr before anything runs.
func TestDemoUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--bogus"},
		{"--rate", "0"},
		{"--rate", "x"},
		{"--duration", "10ms"},
		{"--deadline", "0s"},
		{"--arrivals", "bursty"},
		{"--seed", "-1"},
		{"extra"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), append([]string{"demo"}, args...), nil, &stdout, &stderr); code != exitUsage {
			t.Errorf("demo %v: exit %d, want %d", args, code, exitUsage)
		}
		if !strings.Contains(stderr.String(), "usage: httpretry demo") || stdout.Len() != 0 {
			t.Errorf("demo %v: stdout %q, stderr:\n%s", args, stdout.Bytes(), stderr.Bytes())
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"demo", "-h"}, nil, &stdout, &stderr); code != 0 ||
		!strings.Contains(stderr.String(), "--listen") && !strings.Contains(stderr.String(), "-listen") {
		t.Errorf("demo -h: exit %d, stderr:\n%s", code, stderr.Bytes())
	}
}

// TestDemoSetupErrors checks that an unusable --html path or --listen
// address fails at once with exit 1, before the run.
func TestDemoSetupErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--html", filepath.Join(t.TempDir(), "no", "such", "dir", "out.html")},
		{"--listen", "127.0.0.1:-1"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), append([]string{"demo"}, args...), nil, &stdout, &stderr); code != 1 {
			t.Errorf("demo %v: exit %d, want 1; stderr:\n%s", args, code, stderr.Bytes())
		}
		if stdout.Len() != 0 {
			t.Errorf("demo %v printed %q", args, stdout.Bytes())
		}
	}
}
