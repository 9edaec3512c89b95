package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/breaker"
)

// Exit codes of `httpretry get`. Scripts branch on them, so they are part of
// the command's interface: never renumber one. exitUsage (2) is shared with
// the dispatcher and declared in main.go. Every code is chosen by getExitCode
// alone, so the table in getUsage and the code cannot drift apart unnoticed.
const (
	// getExitOK: a response arrived and its final status is below 400.
	getExitOK = 0
	// getExitLocal: a local file could not be read (-d @FILE) or the body
	// could not be written (-o FILE, stdout). Not the upstream's fault, so it
	// must not look like a network failure.
	getExitLocal = 1
	// getExitHTTPError: the final status, after retries, is 400 or above.
	// The body has still been written, as curl does without -f.
	getExitHTTPError = 3
	// getExitNetwork: no response, after retries: refused, reset, DNS, TLS.
	getExitNetwork = 4
	// getExitRefused: the client itself declined to (re)try: the circuit
	// breaker is open, the retry budget is spent, or the host is rate
	// limited past the deadline. Distinct from 4 because the upstream may be
	// fine and waiting is the remedy.
	getExitRefused = 5
	// getExitTimeout: the --timeout deadline hit (or, after a network error,
	// the next wait would have passed it), or the last attempt got no
	// response headers within --attempt-timeout. After an HTTP error status
	// the response itself is the result, so that case exits 3.
	getExitTimeout = 6
	// getExitBody: the response began (its status and headers arrived) but
	// its body could not be completed, even with resumes; -o FILE keeps the
	// bytes that arrived, for --continue.
	getExitBody = 7
	// getExitContinue: --continue would not append to the partial file: the
	// server's copy changed, or the bytes could not be checked. The file is
	// untouched.
	getExitContinue = 8
	// getExitInterrupted: Ctrl-C; 128+SIGINT, the shell convention.
	getExitInterrupted = 130
)

// getUsage is printed by -h (to stdout) and after a usage error (to
// stderr). It is the only documentation a user of the binary sees, so it
// lists the exit codes too.
const getUsage = `usage: httpretry get [flags] URL

Send one HTTP request, retrying transient failures (network errors and the
statuses 408, 429, 500, 502, 503, 504) with jittered exponential backoff,
a circuit breaker and a retry budget. The response body goes to stdout (or
-o FILE) byte for byte; logs, errors and the progress bar go to stderr only.
Flags may come before or after the URL; a URL without a scheme gets http://.

flags:
  -X, --request METHOD     request method (default GET, or POST with -d)
  -H, --header 'Name: v'   add a request header; repeatable
  -d, --data DATA          request body, sent as is (like curl --data-binary);
                           @FILE reads a file, @- reads stdin; repeated -d are
                           joined with '&'; Content-Type defaults to
                           application/x-www-form-urlencoded
  -o, --output FILE        write the body to FILE instead of stdout (- is stdout)
  -C -, --continue         resume a partial -o FILE where it stops, checked
                           against the server's copy so that nothing wrong
                           is ever appended
  -i, --include            write the status line and headers before the body
  -L, --location           follow redirects (each hop is retried on its own)
      --attempts N         attempts in all, the first included (default 3)
      --min-wait D         shortest wait between attempts (default 500ms;
                           0 retries at once)
      --max-wait D         longest wait between attempts, and the longest
                           Retry-After honoured (default 10s)
      --timeout D          limit for the whole call, waits and body included
                           (default none)
      --attempt-timeout D  limit for each attempt's response headers (default
                           none); a body that keeps flowing is never cut
      --stall-timeout D    fail a body that sends nothing for D, then resume
                           it (default 60s; 0: never)
      --max-resumes N      range requests that may continue a cut body
                           (default 20; 0: none)
      --hedge DELAY|auto   when the response headers are late by DELAY
                           (auto: the host's p95, learnt as it goes), send
                           a second attempt and take the first answer
                           (GET and other idempotent requests only)
      --cacert FILE        trust the PEM CA certificates in FILE for https
  -k, --insecure           do not verify the server's certificate (warned)
      --retry-non-idempotent
                           retry POST, PATCH... even when the server may have
                           acted on them (by default only when the request
                           provably never arrived, or has an Idempotency-Key)
  -v, --verbose            log each retry and a summary line on stderr
      --log-json           the same log as JSON lines

A GET body cut after its headers (a reset, a close, a stall) is continued
with a range request when the server allows it (Accept-Ranges and a strong
ETag or Last-Modified), and only then: never a body made of two versions.

Durations are Go durations: 250ms, 2s, 1m30s. Secrets are redacted from the
log and from error messages: userinfo, key/token/secret query values, and the
Authorization, Proxy-Authorization, Cookie and other credential headers.

With OTEL_EXPORTER_OTLP_ENDPOINT set (or OTEL_TRACES_EXPORTER or
OTEL_METRICS_EXPORTER=otlp), the call and each of its attempts are exported
as OpenTelemetry spans, with the retry metrics, over OTLP/HTTP; TRACEPARENT
makes the call part of a parent's trace. Without them nothing is exported.

exit codes:
  0    success: final status below 400
  1    local error: cannot read the -d file or write the output
  2    usage error
  3    HTTP error: final status 400 or above after retries (body still written)
  4    connection failure after retries (refused, reset, DNS, TLS)
  5    refused: circuit breaker open, or retry budget exhausted
  6    timeout: --timeout reached, or the last attempt got no headers
       within --attempt-timeout
  7    the body could not be completed after its resumes (-o FILE keeps
       what arrived; --continue resumes it later)
  8    --continue refused: the server's copy changed or the partial file's
       bytes do not match it (the file is untouched)
  130  interrupted
`

// getDefaults are the flag defaults: the seed's policy (3 attempts, waits of
// 0.5 s to 10 s), spelled out so that -h shows real numbers.
const (
	getDefaultAttempts = httpretry.DefaultMaxAttempts
	getDefaultMinWait  = httpretry.DefaultMinWait
	getDefaultMaxWait  = httpretry.DefaultMaxWait
)

// getOptions is a parsed `get` command line.
type getOptions struct {
	url                *url.URL
	method             string // empty: GET, or POST when data is set
	headers            []getHeader
	data               []string // raw -d values, @FILE and @- unresolved
	output             string   // empty or "-": stdout
	cont               bool     // -C - / --continue
	stallTimeout       time.Duration
	maxResumes         int
	cacert             string
	insecure           bool
	hedge              *httpretry.HedgeConfig
	include            bool
	location           bool
	attempts           int
	minWait, maxWait   time.Duration
	timeout            time.Duration
	attemptTimeout     time.Duration
	retryNonIdempotent bool
	verbose            bool
	logJSON            bool
}

// requestMethod is -X, or curl's default: POST with -d, else GET.
func (o *getOptions) requestMethod() string {
	switch {
	case o.method != "":
		return o.method
	case o.data != nil:
		return http.MethodPost
	}
	return http.MethodGet
}

// getHeader is one -H value, split.
type getHeader struct{ name, value string }

// getUsageError is a command line that cannot be run: exit 2, with usage.
type getUsageError struct{ msg string }

// Error returns the message, printed after "httpretry: ".
func (e *getUsageError) Error() string { return e.msg }

// getLocalError marks a failure on this machine (a file to read or write),
// so getExitCode does not mistake a full disk for a dead upstream.
type getLocalError struct{ err error }

// Error returns the underlying error's message.
func (e *getLocalError) Error() string { return e.err.Error() }

// Unwrap returns the underlying error, so errors.Is(err, fs.ErrNotExist)
// and the like still work.
func (e *getLocalError) Unwrap() error { return e.err }

// getUsagef returns a *getUsageError.
func getUsagef(format string, args ...any) error {
	return &getUsageError{msg: fmt.Sprintf(format, args...)}
}

// getStrings is a repeatable flag. Its Set never fails, on purpose: the flag
// package quotes a rejected value in its error message, and a header value
// may be a credential. Values are validated after parsing, without echoing.
type getStrings []string

// String implements flag.Value; the flag package calls it for defaults only.
func (s *getStrings) String() string { return strings.Join(*s, ", ") }

// Set appends one occurrence of the flag.
func (s *getStrings) Set(v string) error { *s = append(*s, v); return nil }

// parseGetArgs parses the command line. It returns flag.ErrHelp for -h, a
// *getUsageError for anything else wrong. No message it returns quotes a
// header value or an unredacted URL.
func parseGetArgs(args []string) (*getOptions, error) {
	o := &getOptions{}
	var headers, data getStrings
	fs := flag.NewFlagSet("httpretry get", flag.ContinueOnError)
	// The flag package's own usage lists flags without the exit codes, and
	// writes where we do not want it; getUsage replaces it.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	for _, name := range []string{"X", "request"} {
		fs.StringVar(&o.method, name, "", "")
	}
	for _, name := range []string{"H", "header"} {
		fs.Var(&headers, name, "")
	}
	for _, name := range []string{"d", "data"} {
		fs.Var(&data, name, "")
	}
	for _, name := range []string{"o", "output"} {
		fs.StringVar(&o.output, name, "", "")
	}
	var offset string
	fs.StringVar(&offset, "C", "", "")
	fs.BoolVar(&o.cont, "continue", false, "")
	fs.DurationVar(&o.stallTimeout, "stall-timeout", httpretry.DefaultStallTimeout, "")
	fs.IntVar(&o.maxResumes, "max-resumes", httpretry.DefaultMaxResumes, "")
	fs.StringVar(&o.cacert, "cacert", "", "")
	var hedge string
	fs.StringVar(&hedge, "hedge", "", "")
	for _, name := range []string{"k", "insecure"} {
		fs.BoolVar(&o.insecure, name, false, "")
	}
	for _, name := range []string{"i", "include"} {
		fs.BoolVar(&o.include, name, false, "")
	}
	for _, name := range []string{"L", "location"} {
		fs.BoolVar(&o.location, name, false, "")
	}
	for _, name := range []string{"v", "verbose"} {
		fs.BoolVar(&o.verbose, name, false, "")
	}
	fs.IntVar(&o.attempts, "attempts", getDefaultAttempts, "")
	fs.DurationVar(&o.minWait, "min-wait", getDefaultMinWait, "")
	fs.DurationVar(&o.maxWait, "max-wait", getDefaultMaxWait, "")
	fs.DurationVar(&o.timeout, "timeout", 0, "")
	fs.DurationVar(&o.attemptTimeout, "attempt-timeout", 0, "")
	fs.BoolVar(&o.retryNonIdempotent, "retry-non-idempotent", false, "")
	fs.BoolVar(&o.logJSON, "log-json", false, "")

	positional, err := getParseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, &getUsageError{msg: err.Error()}
	}
	switch len(positional) {
	case 0:
		return nil, getUsagef("no URL given")
	case 1:
	default:
		// The extra words are not echoed: they are often a header value
		// that lost its quotes, such as a bearer token.
		return nil, getUsagef("one URL expected, got %d arguments (quote header values that contain spaces)", len(positional))
	}
	if o.url, err = getParseURL(positional[0]); err != nil {
		return nil, err
	}
	for i, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		switch {
		case !ok:
			return nil, getUsagef("-H #%d has no ':' (want -H 'Name: value')", i+1)
		case !getValidHeaderName(name):
			return nil, getUsagef("-H #%d: invalid header name %q", i+1, name)
		case strings.ContainsAny(value, "\r\n\x00"):
			// Quoting the value could print a credential.
			return nil, getUsagef("-H #%d (%s): the value holds a line break or NUL", i+1, name)
		}
		o.headers = append(o.headers, getHeader{name: name, value: value})
	}
	o.data = data
	switch hedge {
	case "":
	case "auto":
		o.hedge = &httpretry.HedgeConfig{}
	default:
		d, err := time.ParseDuration(hedge)
		if err != nil || d <= 0 {
			return nil, getUsagef("--hedge takes a positive duration or auto (got %q)", hedge)
		}
		o.hedge = &httpretry.HedgeConfig{Delay: d}
	}
	switch offset {
	case "":
	case "-":
		o.cont = true
	default:
		return nil, getUsagef("-C takes '-' only: the offset is the size of the -o file")
	}
	switch {
	case o.cont && (o.output == "" || o.output == "-"):
		return nil, getUsagef("--continue needs -o FILE: it resumes that file")
	case o.cont && (o.data != nil || o.method != "" && o.method != http.MethodGet):
		return nil, getUsagef("--continue resumes GET downloads only")
	case o.cont && o.include:
		return nil, getUsagef("--continue and -i cannot be combined: the head would land in the middle of the file")
	case o.maxResumes < 0:
		return nil, getUsagef("--max-resumes must not be negative (got %d)", o.maxResumes)
	case o.stallTimeout < 0:
		return nil, getUsagef("durations must not be negative")
	case o.attempts < 1:
		return nil, getUsagef("--attempts must be at least 1 (got %d)", o.attempts)
	case o.minWait < 0, o.maxWait < 0, o.timeout < 0, o.attemptTimeout < 0:
		return nil, getUsagef("durations must not be negative")
	case o.minWait > o.maxWait:
		return nil, getUsagef("--min-wait (%v) must not exceed --max-wait (%v)", o.minWait, o.maxWait)
	}
	if o.logJSON {
		o.verbose = true // --log-json is -v in another format
	}
	return o, nil
}

// getParseInterleaved parses flags that may come before and after
// positional arguments, as curl users write them (`get URL -o file`). The
// flag package stops at the first non-flag, so parsing resumes after each
// positional. A "--" ends the flags for good.
func getParseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			return nil, err
		}
		left := fs.Args()
		if len(left) == 0 {
			return positional, nil
		}
		if getEndedByDashes(fs, rest, left) {
			return append(positional, left...), nil
		}
		positional = append(positional, left[0])
		rest = left[1:]
	}
}

// getEndedByDashes reports whether fs.Parse(args) stopped at a "--"
// terminator rather than at the positional left[0]. The flag package
// consumes the "--" without saying so; the only other way the argument
// before left can be "--" is as the value of a flag (-d --), which is told
// apart by looking one further back.
func getEndedByDashes(fs *flag.FlagSet, args, left []string) bool {
	consumed := len(args) - len(left)
	if consumed == 0 || args[consumed-1] != "--" {
		return false
	}
	return consumed < 2 || !getTakesValue(fs, args[consumed-2])
}

// getTakesValue reports whether arg is a flag that takes the next argument
// as its value: a non-boolean flag written without "=value".
func getTakesValue(fs *flag.FlagSet, arg string) bool {
	if !strings.HasPrefix(arg, "-") || strings.Contains(arg, "=") {
		return false
	}
	name := strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-")
	f := fs.Lookup(name)
	if f == nil {
		return false
	}
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return !ok || !b.IsBoolFlag()
}

// getParseURL accepts what curl accepts for the common cases: a full http or
// https URL, or host[:port][/path] meaning http. Errors never quote the URL
// unredacted: it may carry a token.
func getParseURL(raw string) (*url.URL, error) {
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, getUsagef("invalid URL %q", httpretry.RedactURLString(raw))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, getUsagef("unsupported URL scheme %q (want http or https)", u.Scheme)
	}
	if u.Host == "" {
		return nil, getUsagef("URL %q has no host", httpretry.RedactURL(u))
	}
	return u, nil
}

// getValidHeaderName reports whether name is an RFC 9110 token. net/http
// would reject a bad one only when sending, as an error indistinguishable
// from a network failure (exit 4); this makes it a usage error (exit 2).
func getValidHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

// getEnv is what runGet takes from the process, made injectable so an
// in-process test can pretend stderr is a terminal and see the progress bar.
type getEnv struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// terminal reports whether w is an interactive terminal.
	terminal func(w io.Writer) bool
	// now is the progress bar's clock.
	now func() time.Time
	// progressAfter is how long a download must run before the bar shows,
	// so that quick ones print nothing; progressEvery limits redraws.
	progressAfter, progressEvery time.Duration
}

// runGet is the `get` subcommand, called by the dispatcher in main.go.
func runGet(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return getMain(ctx, args, getEnv{
		stdin: stdin, stdout: stdout, stderr: stderr,
		terminal:      getIsTerminal,
		now:           time.Now,
		progressAfter: time.Second,
		progressEvery: 200 * time.Millisecond,
	})
}

// getIsTerminal reports whether w is a character device. That is the
// standard library's only terminal test without x/term; it also holds for
// /dev/null, where a progress bar does no harm.
func getIsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// getMain runs the command with its environment injected.
func getMain(ctx context.Context, args []string, env getEnv) int {
	opts, err := parseGetArgs(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(env.stdout, getUsage)
		return getExitOK
	}
	if err != nil {
		fmt.Fprintf(env.stderr, "httpretry: %v\n\n%s", err, getUsage)
		return exitUsage
	}
	// Every byte for stderr goes through the scrubber from here on: a second
	// line of defence behind structural redaction, for error texts we do not
	// control.
	stderr := newGetScrubber(env.stderr, getSecrets(opts.url, opts.headers))
	tel := startGetTelemetry(ctx, stderr) // nil unless OTEL_* asks for export
	defer tel.shutdown()
	g := &getRun{opts: opts, env: env, stderr: stderr, tel: tel}
	return g.run(ctx)
}

// getRun is one execution of `get`: the options plus what is learnt while
// the request runs, for the summary line and the exit code.
type getRun struct {
	opts   *getOptions
	env    getEnv
	stderr io.Writer
	logger *slog.Logger
	tel    *getTelemetry // nil when telemetry is off

	ctx      context.Context                      // the call's, --timeout included
	attempts atomic.Int64                         // every attempt, redirect hops included
	stopped  atomic.Pointer[httpretry.StopReason] // why the last retry loop gave up, if it did
}

// run sends the request, writes the response and returns the exit code.
func (g *getRun) run(ctx context.Context) int {
	opts := g.opts
	g.logger = g.newLogger()

	body, err := g.requestBody()
	if err != nil {
		return g.fail(0, 0, 0, err)
	}
	if opts.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.timeout)
		defer cancel()
	}
	ctx = g.tel.startCall(ctx, opts.requestMethod(), opts.url, g.logger)
	g.ctx = ctx
	req, err := g.newRequest(ctx, body)
	if err != nil {
		return g.fail(0, 0, 0, err)
	}
	tr, err := g.newTransport()
	if err != nil {
		return g.fail(0, 0, 0, err)
	}
	g.tel.instrument(tr)
	if err := tr.Validate(); err != nil {
		// parseGetArgs checks the same limits, so this is a backstop.
		return g.fail(0, 0, 0, &getUsageError{msg: strings.TrimPrefix(err.Error(), "httpretry: ")})
	}
	// Idle connections would outlive a call made in-process (tests); the
	// process exits right after otherwise, so this only matters there.
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	if !opts.location {
		// curl's default: show the redirect, do not follow it.
		client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	var cont *getContinue
	if opts.cont {
		if cont, err = prepareContinue(opts.output, req); err != nil {
			return g.fail(0, 0, 0, err)
		}
	}

	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return g.fail(0, time.Since(start), 0, err)
	}
	defer resp.Body.Close()
	var n int64
	if cont != nil {
		n, err = g.continueResponse(cont, resp)
	} else {
		n, err = g.writeResponse(resp)
	}
	elapsed := time.Since(start)
	if err != nil {
		return g.fail(resp.StatusCode, elapsed, n, err)
	}
	code := getExitCode(resp.StatusCode, nil)
	g.summary(resp.StatusCode, elapsed, n, code, nil)
	if code == getExitHTTPError {
		// Stdout got the body, as curl does; the note goes to stderr so a
		// script that only checks $? still leaves a trace for a human.
		fmt.Fprintf(g.stderr, "httpretry: HTTP %s from %s after %d attempt(s)\n",
			resp.Status, httpretry.RedactURL(resp.Request.URL), g.attempts.Load())
	}
	return code
}

// fail reports err on stderr (and in the summary) and returns its exit code.
func (g *getRun) fail(status int, elapsed time.Duration, n int64, err error) int {
	code := getExitCode(status, err)
	msg := getRedactError(err)
	g.summary(status, elapsed, n, code, err)
	if code == exitUsage {
		fmt.Fprintf(g.stderr, "httpretry: %s\n\n%s", msg, getUsage)
	} else {
		fmt.Fprintf(g.stderr, "httpretry: %s\n", msg)
	}
	return code
}

// newLogger returns the -v / --log-json logger on stderr, or one that drops
// everything: a nil Policy.Logger would mean slog.Default, which writes to
// stderr even without -v.
func (g *getRun) newLogger() *slog.Logger {
	var h slog.Handler = slog.DiscardHandler
	hopts := &slog.HandlerOptions{Level: slog.LevelInfo}
	switch {
	case g.opts.logJSON:
		h = slog.NewJSONHandler(g.stderr, hopts)
	case g.opts.verbose:
		h = slog.NewTextHandler(g.stderr, hopts)
	}
	return slog.New(h)
}

// newTransport configures the retrying transport from the flags. Breaker
// and budget keep their defaults: for one call they never refuse a first
// attempt, and the budget's floor (100 retries) only stops a runaway
// --attempts.
func (g *getRun) newTransport() (*httpretry.Transport, error) {
	o := g.opts
	p := httpretry.Policy{
		MaxAttempts:    o.attempts,
		MinWait:        o.minWait,
		MaxWait:        o.maxWait,
		AttemptTimeout: o.attemptTimeout,
		Logger:         g.logger,
	}
	if o.minWait == 0 {
		// In Policy a zero MinWait means the 0.5 s default, but the user
		// asked for none; with the default formula (min·2^n) a zero floor is
		// a zero wait anyway, so Immediate is what --min-wait 0 means.
		p.Backoff = httpretry.Immediate
	}
	base, err := g.newBase()
	if err != nil {
		return nil, err
	}
	t := &httpretry.Transport{
		Base:               base,
		Policy:             p,
		StallTimeout:       o.stallTimeout,
		MaxResumes:         o.maxResumes,
		Hedge:              o.hedge,
		RetryNonIdempotent: o.retryNonIdempotent,
		Observer:           g.observe,
	}
	// The flags say 0 for "never"; the Transport's zero means its default.
	if o.stallTimeout == 0 {
		t.StallTimeout = -1
	}
	if o.maxResumes == 0 {
		t.MaxResumes = -1
	}
	return t, nil
}

// newBase returns the transport beneath the retries: nil (net/http's
// default) unless --cacert or --insecure change how TLS verifies.
func (g *getRun) newBase() (http.RoundTripper, error) {
	o := g.opts
	if o.cacert == "" && !o.insecure {
		return nil, nil
	}
	cfg := &tls.Config{}
	if o.cacert != "" {
		pem, err := os.ReadFile(o.cacert)
		if err != nil {
			return nil, &getLocalError{fmt.Errorf("reading --cacert: %w", err)}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, getUsagef("--cacert %s holds no PEM certificate", o.cacert)
		}
		cfg.RootCAs = pool
	}
	if o.insecure {
		fmt.Fprintln(g.stderr, "httpretry: WARNING: --insecure: the server's certificate is not verified; anyone on the path can read and change this exchange")
		cfg.InsecureSkipVerify = true
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	return tr, nil
}

// observe counts attempts and remembers why a loop gave up, for the
// summary line; the transport's own log has no per-call totals.
func (g *getRun) observe(e httpretry.Event) {
	switch e.Kind {
	case httpretry.EventAttempt:
		g.attempts.Add(1)
	case httpretry.EventGiveUp, httpretry.EventRefused:
		r := e.Reason
		g.stopped.Store(&r)
	}
}

// requestBody resolves the -d values into one body, or nil without -d.
// Bodies are held in memory so that every retry sends the same bytes (the
// transport replays them through GetBody), even from stdin.
func (g *getRun) requestBody() ([]byte, error) {
	if g.opts.data == nil {
		return nil, nil
	}
	var buf bytes.Buffer
	for i, d := range g.opts.data {
		if i > 0 {
			buf.WriteByte('&') // curl joins repeated -d this way
		}
		name, ok := strings.CutPrefix(d, "@")
		if !ok {
			buf.WriteString(d)
			continue
		}
		var err error
		if name == "-" {
			_, err = buf.ReadFrom(g.env.stdin)
		} else {
			var b []byte
			b, err = os.ReadFile(name)
			buf.Write(b)
		}
		if err != nil {
			return nil, &getLocalError{fmt.Errorf("reading -d %s: %w", d, err)}
		}
	}
	if buf.Len() == 0 {
		return []byte{}, nil // -d '' still sends a (empty) body, as curl does
	}
	return buf.Bytes(), nil
}

// newRequest builds the request from the options.
func (g *getRun) newRequest(ctx context.Context, body []byte) (*http.Request, error) {
	o := g.opts
	method := o.requestMethod()
	var rd io.Reader
	if body != nil {
		// A *bytes.Reader gives the request GetBody and ContentLength, so
		// the transport replays it without buffering a copy.
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, o.url.String(), rd)
	if err != nil {
		// The URL parsed already, so this is the method.
		return nil, getUsagef("invalid request: -X %q", method)
	}
	req.Header.Set("User-Agent", "httpretry")
	if o.data != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded") // curl's -d default
	}
	set := map[string]bool{}
	for _, h := range o.headers {
		key := http.CanonicalHeaderKey(h.name)
		if key == "Host" {
			req.Host = h.value // net/http sends req.Host, not Header["Host"]
			continue
		}
		if !set[key] {
			req.Header.Del(key) // a -H replaces our default of the same name
			set[key] = true
		}
		req.Header.Add(key, h.value)
	}
	return req, nil
}

// writeResponse writes the optional -i head and the body to stdout or the
// -o file, with a progress bar on a terminal. It returns the body bytes
// written. Read errors come back as *getBodyError (or the call's context
// error, when --timeout or Ctrl-C ended it); write errors as
// *getLocalError. An -o download that a range request could continue gets
// a sidecar file recording its version until it completes, for --continue.
func (g *getRun) writeResponse(resp *http.Response) (int64, error) {
	path := g.opts.output
	if path == "" || path == "-" {
		return g.copyBody(resp, g.env.stdout, "stdout")
	}
	// Created only now, so a call that got no response leaves no empty
	// file behind; an error status still writes its body, like curl.
	f, err := os.Create(path)
	if err != nil {
		return 0, &getLocalError{err}
	}
	side := g.writeSidecar(path, resp, 0)
	n, err := g.copyBody(resp, f, path)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = &getLocalError{fmt.Errorf("writing %s: %w", path, cerr)}
	}
	g.settle(path, side, n, err)
	return n, err
}

// copyBody writes the head (with -i) and the body to out.
func (g *getRun) copyBody(resp *http.Response, out io.Writer, name string) (int64, error) {
	if g.opts.include {
		var head bytes.Buffer
		fmt.Fprintf(&head, "%s %s\r\n", resp.Proto, resp.Status)
		_ = resp.Header.Write(&head)
		head.WriteString("\r\n")
		if _, err := out.Write(head.Bytes()); err != nil {
			return 0, &getLocalError{fmt.Errorf("writing %s: %w", name, err)}
		}
	}
	dst := &getTagWriter{w: out, name: name}
	var src io.Reader = resp.Body
	var bar *getProgress
	// A bar on the terminal that also shows the body would be overwritten
	// by it, so it is drawn only when the body goes elsewhere, as curl does.
	if g.env.terminal(g.env.stderr) && !g.env.terminal(out) {
		bar = newGetProgress(g.stderr, resp.ContentLength, g.env.now, g.env.progressAfter, g.env.progressEvery)
		src = io.TeeReader(src, bar)
	}
	n, err := io.Copy(dst, src)
	if bar != nil {
		bar.finish()
	}
	if err != nil && !errors.As(err, new(*getLocalError)) {
		if cerr := g.ctx.Err(); cerr != nil {
			// --timeout or Ctrl-C ended the read, whatever it reported.
			err = fmt.Errorf("reading the response body: %w (%w)", cerr, err)
		} else {
			err = &getBodyError{err}
		}
	}
	return n, err
}

// getBodyError is a body that failed after its headers arrived: exit 7.
type getBodyError struct{ err error }

// Error says the body failed, and why.
func (e *getBodyError) Error() string { return "reading the response body: " + e.err.Error() }

// Unwrap returns the read error (a *httpretry.BodyError when the Transport
// tried or refused to resume it).
func (e *getBodyError) Unwrap() error { return e.err }

// getTagWriter marks its write errors as local, so a full disk or a closed
// stdout is not reported as a network failure.
type getTagWriter struct {
	w    io.Writer
	name string
}

// Write writes p to the destination, tagging a failure as local.
func (t *getTagWriter) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	if err != nil {
		err = &getLocalError{fmt.Errorf("writing %s: %w", t.name, err)}
	}
	return n, err
}

// summary writes the -v line that ends every run: what was asked, what came
// back, how many attempts and how long, and why retries stopped if they did.
func (g *getRun) summary(status int, elapsed time.Duration, n int64, code int, err error) {
	g.tel.endCall(status, n, code, err)
	if !g.opts.verbose {
		return
	}
	attrs := []slog.Attr{
		slog.String("method", g.opts.requestMethod()),
		slog.String("url", httpretry.RedactURL(g.opts.url)),
		slog.Int("status", status),
		slog.Int64("attempts", g.attempts.Load()),
		slog.Duration("elapsed", getRound(elapsed)),
		slog.Int64("bytes", n),
		slog.Int("exit", code),
	}
	if r := g.stopped.Load(); r != nil {
		attrs = append(attrs, slog.String("stopped", r.String()))
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", getRedactError(err)))
	}
	// Background, not the call's context: that may be the expired deadline
	// this line reports.
	g.logger.LogAttrs(context.Background(), slog.LevelInfo, "HTTP result", attrs...)
}

// getRound keeps the precision a reader of an elapsed time needs.
func getRound(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d
}

// getExitCode maps the outcome of a call to the exit code: the status of
// the final response when there was one and nothing failed after it, else
// the error. It is the only place codes are chosen.
func getExitCode(status int, err error) int {
	if err == nil {
		if status >= 400 {
			return getExitHTTPError
		}
		return getExitOK
	}
	var usage *getUsageError
	var local *getLocalError
	var body *getBodyError
	var cont *getContinueError
	var re *httpretry.RetryError
	var ne net.Error
	switch {
	case errors.As(err, &usage):
		return exitUsage
	case errors.As(err, &local):
		return getExitLocal
	case errors.As(err, &cont):
		return getExitContinue
	case errors.As(err, &body):
		return getExitBody
	case errors.Is(err, breaker.ErrOpen), errors.Is(err, httpretry.ErrBudgetExhausted), errors.Is(err, httpretry.ErrThrottled):
		return getExitRefused
	case errors.Is(err, context.Canceled):
		return getExitInterrupted
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout(),
		// Retries stopped because the next wait would pass --timeout: the
		// time limit, not the network, ended the call.
		errors.As(err, &re) && re.Reason == httpretry.StopDeadline:
		return getExitTimeout
	}
	return getExitNetwork
}
