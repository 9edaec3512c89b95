package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/internal/faultserver"
	"github.com/hordekit/httpretry/internal/leaktest"
	"github.com/hordekit/httpretry/internal/testenv"
)

// getFast keeps retry waits in the milliseconds: the tests check what is
// retried and what reaches stdout, not the default 0.5-10 s schedule.
var getFast = []string{"--min-wait", "1ms", "--max-wait", "5ms"}

// getBin is the command built once for every test in the package. There is
// deliberately no TestMain: the demo's tests live in this package too, and
// two TestMains would not compile.
var getBin struct {
	once sync.Once
	path string
	err  error
}

// getBinary builds the command (with -race when the tests run with it, so
// the binary is checked too) and returns its path. The tests run the real
// binary because exit codes, the split between stdout and stderr and the
// byte-exact body are properties of the process, not of a function.
func getBinary(t *testing.T) string {
	t.Helper()
	getBin.once.Do(func() {
		dir, err := getBinaryDir()
		if err != nil {
			getBin.err = err
			return
		}
		getBin.path = filepath.Join(dir, "httpretry-get-under-test")
		args := []string{"build", "-o", getBin.path}
		if testenv.RaceEnabled {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
		if err != nil {
			getBin.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if getBin.err != nil {
		t.Fatal(getBin.err)
	}
	return getBin.path
}

// getBinaryDir picks where the binary goes: beside the test binary when
// `go test` built that in its own work directory, which it deletes after the
// run (so no TestMain is needed to clean up); otherwise a fresh temporary
// directory.
func getBinaryDir() (string, error) {
	if exe, err := os.Executable(); err == nil {
		dir := filepath.Dir(exe)
		if strings.HasPrefix(filepath.Base(filepath.Dir(dir)), "go-build") {
			return dir, nil
		}
	}
	return os.MkdirTemp("", "httpretry-get-test-")
}

// getResult is what one run of the binary produced.
type getResult struct {
	stdout, stderr []byte
	code           int
}

// getRunBinary runs `httpretry get args...` with stdin (nil: none).
func getRunBinary(t *testing.T, stdin []byte, args ...string) getResult {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), getBinary(t), append([]string{"get"}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 10 * time.Second
	// A race-enabled binary sleeps a second before a zero exit, to catch
	// races of goroutines still running; ours has none left by then.
	cmd.Env = append(os.Environ(), "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	err := cmd.Run()
	var exit *exec.ExitError
	code := 0
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

// getBody returns a binary body that holds every byte value, CR, LF and NUL
// included, then pseudo-random bytes up to n: anything that altered bytes
// (a text conversion, a stray log line) would show.
func getBody(n int) []byte {
	b := make([]byte, n)
	for i := range 256 {
		b[i] = byte(i)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 256; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// getLines returns the non-empty lines of b that contain substr.
func getLines(b []byte, substr string) []string {
	var out []string
	for line := range strings.Lines(string(b)) {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return out
}

func TestGetRetriesThroughErrorsByteExact(t *testing.T) {
	t.Parallel()
	body := getBody(70_001)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(
		faultserver.Status(503), faultserver.Status(503), faultserver.OK().WithBody(body))})

	r := getRunBinary(t, nil, append(getFast, "-v", srv.URL+"/models")...)
	if r.code != getExitOK {
		t.Fatalf("exit %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	if !bytes.Equal(r.stdout, body) {
		t.Fatalf("stdout is %d bytes and differs from the %d-byte body", len(r.stdout), len(body))
	}
	retries := getLines(r.stderr, `msg="HTTP retry"`)
	if len(retries) != 2 {
		t.Fatalf("want 2 retry lines on stderr, got %d:\n%s", len(retries), r.stderr)
	}
	for i, line := range retries {
		for _, want := range []string{fmt.Sprintf("attempt=%d", i+1), "wait=", "status=503", "method=GET",
			"url=" + srv.URL + "/models", "HTTP 503 from"} {
			if !strings.Contains(line, want) {
				t.Errorf("retry line %d lacks %q: %s", i+1, want, line)
			}
		}
	}
	summary := getLines(r.stderr, `msg="HTTP result"`)
	if len(summary) != 1 {
		t.Fatalf("want 1 summary line, got %d:\n%s", len(summary), r.stderr)
	}
	for _, want := range []string{"status=200", "attempts=3", "elapsed=", "bytes=70001", "exit=0"} {
		if !strings.Contains(summary[0], want) {
			t.Errorf("summary lacks %q: %s", want, summary[0])
		}
	}
	if n := srv.Requests(); n != 3 {
		t.Errorf("server saw %d requests, want 3", n)
	}
}

func TestGetQuietWithoutVerbose(t *testing.T) {
	t.Parallel()
	body := getBody(300_000) // long enough to draw a bar if one were drawn
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(
		faultserver.Status(503), faultserver.OK().WithBody(body))})
	r := getRunBinary(t, nil, append(getFast, srv.URL)...)
	if r.code != getExitOK || !bytes.Equal(r.stdout, body) {
		t.Fatalf("exit %d, stdout %d bytes (want 0, %d bytes); stderr:\n%s", r.code, len(r.stdout), len(body), r.stderr)
	}
	// Not a terminal: no progress bar, and without -v no log either.
	if len(r.stderr) != 0 {
		t.Errorf("stderr should be empty, got:\n%q", r.stderr)
	}
}

func TestGetOutputFileWithFlagsAfterURL(t *testing.T) {
	t.Parallel()
	body := getBody(10_000)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(
		faultserver.ResetBeforeHeaders(), faultserver.OK().WithBody(body))})
	file := filepath.Join(t.TempDir(), "out.bin")

	// curl users put flags anywhere: before, after and between.
	r := getRunBinary(t, nil, "--min-wait", "1ms", srv.URL+"/x", "-o", file, "--max-wait=5ms", "-v")
	if r.code != getExitOK {
		t.Fatalf("exit %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	if len(r.stdout) != 0 {
		t.Errorf("stdout should be empty with -o, got %d bytes", len(r.stdout))
	}
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, body) {
		t.Errorf("file holds %d bytes and differs from the %d-byte body", len(got), len(body))
	}
	if n := len(getLines(r.stderr, "HTTP retry")); n != 1 {
		t.Errorf("want 1 retry line (after the reset), got %d:\n%s", n, r.stderr)
	}
}

func TestGetInclude(t *testing.T) {
	t.Parallel()
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(
		faultserver.Status(404).WithHeader("X-Test", "yes").WithBody([]byte("nope")))})
	r := getRunBinary(t, nil, "-i", srv.URL)
	if r.code != getExitHTTPError {
		t.Fatalf("exit %d, want 3; stderr:\n%s", r.code, r.stderr)
	}
	out := string(r.stdout)
	if !strings.HasPrefix(out, "HTTP/1.1 404 Not Found\r\n") || !strings.Contains(out, "X-Test: yes\r\n") ||
		!strings.HasSuffix(out, "\r\n\r\nnope") {
		t.Errorf("stdout with -i:\n%q", out)
	}
}

func TestGetExitCodes(t *testing.T) {
	t.Parallel()
	type check struct {
		name     string
		behavior faultserver.Behavior
		url      string // overrides the server's URL (closed port)
		args     []string
		code     int
		stdout   string // exact, when set
		stderr   string // substring, when set
		requests int64  // server requests, when > 0
	}
	closed := "http://" + faultserver.ClosedPort(t) + "/"
	checks := []check{
		{name: "ok", behavior: faultserver.Always(faultserver.OK().WithBody([]byte("fine"))),
			code: getExitOK, stdout: "fine", requests: 1},
		{name: "404 is not retried", behavior: faultserver.Always(faultserver.Status(404).WithBody([]byte("nope"))),
			code: getExitHTTPError, stdout: "nope", stderr: "httpretry: HTTP 404 Not Found from", requests: 1},
		{name: "503 persists", behavior: faultserver.Always(faultserver.Status(503).WithBody([]byte("down"))),
			args: []string{"--attempts", "3"}, code: getExitHTTPError, stdout: "down",
			stderr: "stopped=\"attempts exhausted\"", requests: 3},
		{name: "output not writable", behavior: faultserver.Always(faultserver.OK()),
			args: []string{"-o", filepath.Join(t.TempDir(), "no", "such", "dir")}, code: getExitLocal,
			stderr: "no such file or directory", requests: 1},
		{name: "connection refused", url: closed,
			code: getExitNetwork, stdout: "", stderr: "connection refused"},
		// The first attempt earns 0.2 of a retry, not a whole one, so the
		// retry budget's floor pays: 10 retries in each second, not saved
		// up. The 11th retry, some 10 ms in, is refused honestly, through
		// the binary: 11 attempts, then exit 5.
		{name: "retry budget", behavior: faultserver.Always(faultserver.ResetBeforeHeaders()),
			args: []string{"--attempts", "500", "--min-wait", "1ms", "--max-wait", "1ms"},
			code: getExitRefused, stderr: "retry budget exhausted", requests: 11},
		{name: "whole-call timeout", behavior: faultserver.Always(faultserver.StallBeforeHeaders()),
			args: []string{"--timeout", "200ms"}, code: getExitTimeout, stderr: "deadline exceeded", requests: 1},
		{name: "attempt timeouts", behavior: faultserver.Always(faultserver.StallBeforeHeaders()),
			// No server-side count: a stalled request may reach the handler
			// after the client's 50 ms gave up on it. The client's own
			// account says both attempts were made.
			args: []string{"--attempt-timeout", "50ms", "--attempts", "2"}, code: getExitTimeout,
			stderr: "no response headers within 50ms (AttemptTimeout) (gave up after 2 attempt(s)"},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			u := c.url
			var srv *faultserver.Server
			if u == "" {
				srv = faultserver.Start(t, faultserver.Config{Behavior: c.behavior})
				u = srv.URL + "/"
			}
			args := append(append(append([]string{}, getFast...), "-v"), c.args...)
			r := getRunBinary(t, nil, append(args, u)...)
			if r.code != c.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", r.code, c.code, r.stderr)
			}
			if c.stdout != "" || c.code != getExitOK && c.code != getExitHTTPError {
				if string(r.stdout) != c.stdout {
					t.Errorf("stdout %q, want %q", r.stdout, c.stdout)
				}
			}
			if !bytes.Contains(r.stderr, []byte(c.stderr)) {
				t.Errorf("stderr lacks %q:\n%s", c.stderr, r.stderr)
			}
			if want := fmt.Sprintf("exit=%d", c.code); len(getLines(r.stderr, want)) != 1 {
				t.Errorf("summary line with %s missing:\n%s", want, r.stderr)
			}
			if c.code != getExitOK && !bytes.Contains(r.stderr, []byte("httpretry: ")) {
				t.Errorf("no 'httpretry: ' error line:\n%s", r.stderr)
			}
			if srv != nil && c.requests > 0 {
				if n := srv.Requests(); n != c.requests {
					t.Errorf("server saw %d requests, want %d", n, c.requests)
				}
			}
		})
	}
}

// TestGetInterrupted sends the binary SIGINT while its request is in
// flight; the server's Behavior runs on arrival, which is how the test knows
// when, without sleeping.
func TestGetInterrupted(t *testing.T) {
	t.Parallel()
	arrived := make(chan struct{}, 1)
	srv := faultserver.Start(t, faultserver.Config{Behavior: func(int, *http.Request) faultserver.Fault {
		arrived <- struct{}{}
		return faultserver.StallBeforeHeaders()
	}})
	cmd := exec.CommandContext(t.Context(), getBinary(t), "get", "-v", srv.URL)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	<-arrived
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != getExitInterrupted {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, getExitInterrupted, stderr.Bytes())
	}
	if stdout.Len() != 0 || !strings.Contains(stderr.String(), "interrupt signal received") {
		t.Errorf("stdout %q; stderr:\n%s", stdout.Bytes(), stderr.Bytes())
	}
}

// TestGetRedactError checks the error redaction on its own: in the binary
// the stderr scrubber would hide a miss here.
func TestGetRedactError(t *testing.T) {
	raw := "http://u:pw-s3cret@h/p?token=tok-s3cret&page=2"
	inner := &url.Error{Op: "Get", URL: "http://h/next?key=key-s3cret", Err: context.DeadlineExceeded}
	err := &url.Error{Op: "Get", URL: raw, Err: fmt.Errorf("redirect: %w", inner)}
	got := getRedactError(err)
	if strings.Contains(got, "s3cret") || !strings.Contains(got, "http://h/p?token=REDACTED&page=2") ||
		!strings.Contains(got, "http://h/next?key=REDACTED") {
		t.Errorf("getRedactError = %q", got)
	}
	secrets := getSecrets(mustParseURL(t, raw), []getHeader{{"Authorization", "Bearer abcd-s3cret"}, {"Accept", "text/plain"}})
	var b bytes.Buffer
	fmt.Fprint(newGetScrubber(&b, secrets), "pw-s3cret tok-s3cret abcd-s3cret text/plain")
	if got := b.String(); got != "REDACTED REDACTED REDACTED text/plain" {
		t.Errorf("scrubbed: %q", got)
	}
}

// mustParseURL parses a URL the test wrote.
func mustParseURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestGetExitCodeMapping checks getExitCode directly for what a single
// process cannot provoke honestly: a circuit breaker refusal needs five
// failed calls first, and the command makes one. The refusal reaches the
// mapping wrapped by net/http's *url.Error, as built here.
func TestGetExitCodeMapping(t *testing.T) {
	wrap := func(err error) error { return &url.Error{Op: "Get", URL: "http://h/", Err: err} }
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	checks := []struct {
		name   string
		status int
		err    error
		want   int
	}{
		{"200", 200, nil, getExitOK},
		{"304", 304, nil, getExitOK},
		{"404", 404, nil, getExitHTTPError},
		{"503", 503, nil, getExitHTTPError},
		{"breaker open", 0, wrap(&breaker.OpenError{Name: "h", State: breaker.Open, RetryIn: time.Minute}), getExitRefused},
		{"breaker half-open", 0, wrap(&breaker.OpenError{Name: "h", State: breaker.HalfOpen}), getExitRefused},
		{"budget", 0, wrap(fmt.Errorf("reset (gave up: %w)", httpretry.ErrBudgetExhausted)), getExitRefused},
		{"rate limited", 0, wrap(&httpretry.ThrottleError{Host: "h", Wait: time.Minute, Reason: httpretry.StopDeadline}), getExitRefused},
		{"deadline", 0, wrap(context.DeadlineExceeded), getExitTimeout},
		{"net timeout", 0, wrap(&net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}), getExitTimeout},
		{"interrupted", 0, wrap(context.Canceled), getExitInterrupted},
		{"refused", 0, wrap(refused), getExitNetwork},
		{"reset", 0, wrap(syscall.ECONNRESET), getExitNetwork},
		{"body read failed after a 200", 200, &getBodyError{&httpretry.BodyError{Err: io.ErrUnexpectedEOF}}, getExitBody},
		{"body refused by the budget", 200, &getBodyError{fmt.Errorf("cut: %w", httpretry.ErrBudgetExhausted)}, getExitBody},
		{"continue refused", 206, &getContinueError{"changed"}, getExitContinue},
		{"local", 200, &getLocalError{errors.New("disk full")}, getExitLocal},
		{"usage", 0, &getUsageError{"bad"}, exitUsage},
	}
	for _, c := range checks {
		if got := getExitCode(c.status, c.err); got != c.want {
			t.Errorf("%s: getExitCode = %d, want %d", c.name, got, c.want)
		}
	}
}

func TestGetUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{},
		{"--no-such-flag", "http://127.0.0.1:1/"},
		{"--timeout", "soon", "http://127.0.0.1:1/"},
		{"--attempts", "0", "http://127.0.0.1:1/"},
		{"--min-wait", "2s", "--max-wait", "1s", "http://127.0.0.1:1/"},
		{"http://127.0.0.1:1/a", "http://127.0.0.1:1/b"},
		{"-H", "NoColonHere", "http://127.0.0.1:1/"},
		{"ftp://127.0.0.1:1/"},
		{"-X", "BAD METHOD", "http://127.0.0.1:1/"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			t.Parallel()
			r := getRunBinary(t, nil, args...)
			if r.code != exitUsage {
				t.Errorf("exit %d, want 2; stderr:\n%s", r.code, r.stderr)
			}
			if !bytes.HasPrefix(r.stderr, []byte("httpretry: ")) || !bytes.Contains(r.stderr, []byte("usage: httpretry get")) {
				t.Errorf("stderr should be an error then the usage:\n%s", r.stderr)
			}
			if len(r.stdout) != 0 {
				t.Errorf("stdout should be empty, got %q", r.stdout)
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		t.Parallel()
		r := getRunBinary(t, nil, "-h")
		if r.code != 0 || !bytes.Contains(r.stdout, []byte("exit codes:")) || len(r.stderr) != 0 {
			t.Errorf("-h: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})
}

func TestGetRedactsSecrets(t *testing.T) {
	t.Parallel()
	const secret = "s3cret"
	auth := []string{"-H", "Authorization: Bearer " + secret, "-H", "Cookie: sid=" + secret + "; theme=dark",
		"-H", "X-Api-Key: " + secret}
	assertClean := func(t *testing.T, r getResult) {
		t.Helper()
		for name, out := range map[string][]byte{"stdout": r.stdout, "stderr": r.stderr} {
			if bytes.Contains(out, []byte(secret)) {
				t.Errorf("%s contains the secret:\n%s", name, out)
			}
		}
	}

	t.Run("retries", func(t *testing.T) {
		t.Parallel()
		srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(
			faultserver.Status(503), faultserver.Status(503), faultserver.OK())})
		u := srv.URL + "/v1?apikey=" + secret + "&page=2"
		r := getRunBinary(t, nil, append(append(append([]string{}, getFast...), "-v"), append(auth, u)...)...)
		if r.code != getExitOK {
			t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
		}
		assertClean(t, r)
		if n := len(getLines(r.stderr, "apikey=REDACTED&page=2")); n != 3 {
			t.Errorf("want the redacted URL on 2 retry lines and the summary, got %d:\n%s", n, r.stderr)
		}
		// The secrets were sent, only not shown.
		log := srv.Log()
		if len(log) != 3 || log[2].Header.Get("Authorization") != "Bearer "+secret || log[2].RawQuery != "apikey="+secret+"&page=2" {
			t.Errorf("the server did not get the credentials: %+v", log)
		}
	})
	t.Run("connection failure", func(t *testing.T) {
		t.Parallel()
		u := "http://user:" + secret + "@" + faultserver.ClosedPort(t) + "/?token=" + secret
		r := getRunBinary(t, nil, append(append(append([]string{}, getFast...), "-v"), append(auth, u)...)...)
		if r.code != getExitNetwork {
			t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
		}
		assertClean(t, r)
		if !bytes.Contains(r.stderr, []byte("token=REDACTED")) {
			t.Errorf("error message lacks the redacted URL:\n%s", r.stderr)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		// The deadline ends the call inside net/http, whose *url.Error
		// quotes the raw URL: the one message the library does not redact.
		srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(faultserver.StallBeforeHeaders())})
		r := getRunBinary(t, nil, append(auth, "--timeout", "100ms", srv.URL+"/?apikey="+secret)...)
		if r.code != getExitTimeout {
			t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
		}
		assertClean(t, r)
		if !bytes.Contains(r.stderr, []byte("apikey=REDACTED")) {
			t.Errorf("error message lacks the redacted URL:\n%s", r.stderr)
		}
	})
	t.Run("usage error", func(t *testing.T) {
		t.Parallel()
		r := getRunBinary(t, nil, "http://h/?key="+secret, "http://u:"+secret+"@h/", "-H", "Authorization "+secret)
		if r.code != exitUsage {
			t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
		}
		assertClean(t, r)
	})
}

func TestGetPostData(t *testing.T) {
	t.Parallel()
	body := getBody(100_000)
	sum := sha256.Sum256(body)
	file := filepath.Join(t.TempDir(), "payload.bin")
	if err := os.WriteFile(file, body, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		stdin []byte
		data  string
	}{
		{"file", nil, "@" + file},
		{"stdin", body, "@-"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv := faultserver.Start(t, faultserver.Config{})
			r := getRunBinary(t, c.stdin, "-d", c.data, srv.URL+"/upload")
			if r.code != getExitOK {
				t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
			}
			log := srv.Log()
			if len(log) != 1 {
				t.Fatalf("want 1 request, got %d", len(log))
			}
			e := log[0]
			if e.Method != http.MethodPost || e.BodyLen != int64(len(body)) || e.BodySHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("server got %s with %d bytes (sha256 %s), want POST with the file's %d bytes",
					e.Method, e.BodyLen, e.BodySHA256, len(body))
			}
			if ct := e.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
				t.Errorf("Content-Type %q, want curl's default", ct)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		t.Parallel()
		r := getRunBinary(t, nil, "-d", "@"+filepath.Join(t.TempDir(), "nope"), "http://127.0.0.1:1/")
		if r.code != getExitLocal {
			t.Errorf("exit %d, want 1; stderr:\n%s", r.code, r.stderr)
		}
	})
	t.Run("POST is not replayed after it may have arrived", func(t *testing.T) {
		t.Parallel()
		srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(faultserver.Status(503), faultserver.OK())})
		r := getRunBinary(t, nil, append(getFast, "-d", "@"+file, srv.URL)...)
		if r.code != getExitHTTPError || srv.Requests() != 1 {
			t.Errorf("exit %d after %d requests, want 3 after 1; stderr:\n%s", r.code, srv.Requests(), r.stderr)
		}
	})
	t.Run("--retry-non-idempotent replays the same bytes", func(t *testing.T) {
		t.Parallel()
		srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(faultserver.Status(503), faultserver.OK())})
		r := getRunBinary(t, nil, append(getFast, "--retry-non-idempotent", "-X", "PATCH", "-d", "@"+file, srv.URL)...)
		if r.code != getExitOK {
			t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
		}
		log := srv.Log()
		if len(log) != 2 {
			t.Fatalf("want 2 requests, got %d", len(log))
		}
		for _, e := range log {
			if e.Method != http.MethodPatch || e.BodySHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("attempt %d: %s, sha256 %s; want PATCH with the file's bytes", e.N, e.Method, e.BodySHA256)
			}
		}
	})
}

func TestGetLogJSON(t *testing.T) {
	t.Parallel()
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Script(
		faultserver.Status(503), faultserver.OK().WithBody([]byte("done")))})
	r := getRunBinary(t, nil, append(getFast, "--log-json", srv.URL+"/j?token=abcdef")...)
	if r.code != getExitOK || string(r.stdout) != "done" {
		t.Fatalf("exit %d, stdout %q; stderr:\n%s", r.code, r.stdout, r.stderr)
	}
	var records []map[string]any
	for line := range strings.Lines(string(r.stderr)) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("stderr line is not JSON: %q (%v)", line, err)
		}
		records = append(records, rec)
	}
	if len(records) != 2 {
		t.Fatalf("want 2 JSON records (1 retry, 1 result), got %d:\n%s", len(records), r.stderr)
	}
	retry, result := records[0], records[1]
	if retry["msg"] != "HTTP retry" || retry["attempt"] != 1.0 || retry["status"] != 503.0 ||
		retry["url"] != srv.URL+"/j?token=REDACTED" {
		t.Errorf("retry record: %v", retry)
	}
	if result["msg"] != "HTTP result" || result["status"] != 200.0 || result["attempts"] != 2.0 || result["exit"] != 0.0 {
		t.Errorf("result record: %v", result)
	}
}

// TestGetProgressOnTerminalOnly runs the command in-process, the one test
// that does: a test cannot give the binary a terminal, so getEnv pretends
// stderr is one. The bar must go to stderr only and leave the body exact.
func TestGetProgressOnTerminalOnly(t *testing.T) {
	leaktest.Check(t)
	body := getBody(1 << 20)
	srv := faultserver.Start(t, faultserver.Config{Behavior: faultserver.Always(faultserver.OK().WithBody(body))})
	for _, terminal := range []bool{true, false} {
		var stdout, stderr bytes.Buffer
		env := getEnv{
			stdin: bytes.NewReader(nil), stdout: &stdout, stderr: &stderr,
			terminal: func(w io.Writer) bool { return terminal && w == io.Writer(&stderr) },
			now:      time.Now,
			// Draw on every read: the body arrives in well under a second.
			progressAfter: 0, progressEvery: 0,
		}
		code := getMain(t.Context(), []string{srv.URL}, env)
		if code != getExitOK || !bytes.Equal(stdout.Bytes(), body) {
			t.Fatalf("terminal=%v: exit %d, stdout %d bytes (want 0 and the %d-byte body)", terminal, code, stdout.Len(), len(body))
		}
		bar := stderr.String()
		if !terminal {
			if bar != "" {
				t.Errorf("no terminal, yet stderr holds %q", bar)
			}
			continue
		}
		if !strings.HasPrefix(bar, "\r[") || !strings.Contains(bar, "100% 1.0 MiB / 1.0 MiB") || !strings.HasSuffix(bar, "\x1b[K\n") {
			t.Errorf("progress on stderr: %q", bar)
		}
	}
}

// TestGetProgressQuickDownloadsSilent checks the delay that keeps a short
// download from flashing a bar, with a clock the test moves.
func TestGetProgressQuickDownloadsSilent(t *testing.T) {
	now := time.Unix(0, 0)
	var out bytes.Buffer
	p := newGetProgress(&out, 3000, func() time.Time { return now }, time.Second, 200*time.Millisecond)
	_, _ = p.Write(make([]byte, 1000))
	now = now.Add(500 * time.Millisecond)
	_, _ = p.Write(make([]byte, 1000))
	if out.Len() != 0 {
		t.Fatalf("drawn before the delay: %q", out.String())
	}
	now = now.Add(time.Second)
	_, _ = p.Write(make([]byte, 1000))
	p.finish()
	if got := out.String(); !strings.Contains(got, "100% 2.9 KiB / 2.9 KiB  2.0 KiB/s") || !strings.HasSuffix(got, "\n") {
		t.Errorf("bar: %q", got)
	}
}

// TestGetParseInterleaved checks flag parsing around positionals, "--"
// included, without running anything.
func TestGetParseInterleaved(t *testing.T) {
	for _, c := range []struct {
		args []string
		url  string
		data []string
		out  string
	}{
		{[]string{"http://h/", "-o", "f"}, "http://h/", nil, "f"},
		{[]string{"-o", "f", "http://h/", "-d", "x"}, "http://h/", []string{"x"}, "f"},
		{[]string{"--", "http://h/"}, "http://h/", nil, ""},
		{[]string{"-d", "--", "http://h/", "-o", "f"}, "http://h/", []string{"--"}, "f"}, // "--" as a value
		{[]string{"h:8080/p"}, "http://h:8080/p", nil, ""},
	} {
		o, err := parseGetArgs(c.args)
		if err != nil {
			t.Errorf("%q: %v", c.args, err)
			continue
		}
		if o.url.String() != c.url || fmt.Sprint(o.data) != fmt.Sprint(c.data) || o.output != c.out {
			t.Errorf("%q: url %s, data %q, output %q", c.args, o.url, o.data, o.output)
		}
	}
	if _, err := parseGetArgs([]string{"http://h/", "--", "-o"}); err == nil {
		t.Error(`"-o" after "--" should be a second URL, not a flag`)
	}
	if _, err := parseGetArgs([]string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: %v", err)
	}
}
