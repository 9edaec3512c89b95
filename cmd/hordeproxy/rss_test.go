//go:build !race

// The race detector multiplies a process's memory, so peak RSS is measured
// only without it; scripts/test.sh runs these tests in a build without it.

package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"testing"
)

// childEnv makes the test binary run the proxy instead of the tests: the
// memory bound is measured on a process of its own.
const childEnv = "HORDEPROXY_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		args := os.Args[slices.Index(os.Args, "--")+1:]
		code := run(ctx, args, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// oversizedKeys are eight different endpoints, so that no two requests
// share a fetch.
var oversizedKeys = []string{
	"/api/v2/status/models?type=image",
	"/api/v2/status/models?type=text",
	"/api/v2/status/models?type=image&model_state=all",
	"/api/v2/status/models?type=text&model_state=all",
	"/api/v2/stats/img/models",
	"/api/v2/stats/text/models",
	"/api/v2/workers?type=image",
	"/api/v2/workers?type=text",
}

// bodySize is the oversized body the API sends: the 50 MB.
const bodySize = 50 << 20

// peakRSS runs the proxy as a child process with args against an API that
// answers every request with a 50 MB body, sent chunked so that nothing
// but reading tells its size, asks for the eight keys at once, stops the
// proxy, and returns its peak resident set size in bytes.
func peakRSS(t testing.TB, args ...string) int64 {
	t.Helper()
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = ' ' // JSON whitespace: the body never ends in time to decode
	}
	chunk[0] = '['
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		for sent := 0; sent < bodySize; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return // the proxy gave up on the body
			}
		}
	}))
	defer api.Close()

	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^$", "--", "--listen", "127.0.0.1:0",
		"--horde-url", api.URL + "/api/"}, args...)...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var addr string
	lines := bufio.NewScanner(stderr)
	for lines.Scan() {
		if m := addrRE.FindStringSubmatch(lines.Text()); m != nil {
			addr = m[1]
			break
		}
	}
	if addr == "" {
		t.Fatalf("the proxy did not start: %v", cmd.Wait())
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var wg sync.WaitGroup
	codes := make([]int, len(oversizedKeys))
	for i, key := range oversizedKeys {
		wg.Go(func() {
			resp, err := client.Get("http://" + addr + key)
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes[i] = resp.StatusCode
		})
	}
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusBadGateway {
			t.Errorf("%s: %d, want 502 (a body over --max-body, no copy)", oversizedKeys[i], c)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the proxy: %v", err)
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		t.Fatal("no rusage for the proxy")
	}
	return ru.Maxrss << 10 // kilobytes on Linux
}

// The case: eight different keys fetched at once, each answered with
// a 50 MB body, took the proxy to 540 MB. With the default BodyMemory
// (24 MiB for all bodies being read) and MaxBodySize (16 MiB each), peak
// RSS stays under 150 MB.
func TestPeakRSSWithOversizedBodies(t *testing.T) {
	const bound = 150_000_000
	rss := peakRSS(t)
	t.Logf("peak RSS with 8 concurrent 50 MB bodies and the defaults: %.1f MB", float64(rss)/1e6)
	if rss >= bound {
		t.Errorf("peak RSS %.1f MB, want under %.0f MB", float64(rss)/1e6, float64(bound)/1e6)
	}
}

// BenchmarkPeakRSS reports the proxy's peak RSS in the case above for
// several --body-memory bounds; 1GiB is in effect no bound at all.
func BenchmarkPeakRSS(b *testing.B) {
	for _, mem := range []string{"24MiB", "64MiB", "1GiB"} {
		b.Run("body-memory="+mem, func(b *testing.B) {
			var peak int64
			for b.Loop() {
				peak = max(peak, peakRSS(b, "--body-memory", mem))
			}
			b.ReportMetric(float64(peak)/1e6, "peak-RSS-MB")
			b.ReportMetric(0, "ns/op")
		})
	}
}
