// Command hordeproxy serves the AI Horde data that the model reference
// service reads (model status, model statistics and workers) and keeps
// answering, from the last good copy, while the AI Horde API is slow or down.
//
//	hordeproxy [--listen 127.0.0.1:8080] [--horde-url URL] [--redis URL|host:port] [flags]
//
// Endpoints:
//
//	GET /api/heartbeat                  {"status":"ok","ai_horde":{"degraded":…,"consecutive_failures":…,"seconds_until_retry":…}}
//	GET /api/v2/status/models           ?type=image|text &model_state=known|custom|all &min_count=N
//	GET /api/v2/stats/img/models        ?model_state=
//	GET /api/v2/stats/text/models       ?model_state=
//	GET /api/v2/workers                 ?type=image|text
//	GET /metrics                        Prometheus metrics of the retries, the breaker and body memory
//
// A copy older than --fresh-for carries X-Horde-Stale: true and its Age;
// within --stale-while-revalidate after that it is served at once, with
// X-Horde-Revalidating: true, while one background fetch refreshes it. With
// no copy at all the answer is 502 with a JSON error; bad input gets a JSON
// 400, 404 or 405. See horde.NewHandler.
//
// Every flag can also be set by an environment variable (the flag wins);
// --help lists them. With --redis (or REDIS_URL) the cache lives in Redis,
// shared by replicas and kept across restarts; without it, in memory.
//
// With OTEL_EXPORTER_OTLP_ENDPOINT set (or OTEL_TRACES_EXPORTER or
// OTEL_METRICS_EXPORTER=otlp), each request to a data endpoint is exported
// as an OpenTelemetry server span holding the AI Horde API's attempts and
// the retry events, with httpretry's metrics, over OTLP/HTTP. Without them
// nothing is exported.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/horde"
	"github.com/hordekit/httpretry/horde/rediscache"
	"github.com/hordekit/httpretry/metrics"
)

// Exit codes.
const (
	exitFailure = 1 // the server could not start or stopped with an error
	exitUsage   = 2 // bad flags or settings
)

// shutdownGrace is how long requests in flight get to finish on a signal.
const shutdownGrace = 10 * time.Second

// redisPing bounds the startup check of Redis, which only warns.
const redisPing = 2 * time.Second

func main() {
	// APIBreaker logs its transitions to the default logger.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

// config is the proxy's settings after flags, environment and defaults.
type config struct {
	listen               string
	hordeURL             string
	redis                *redis.Options // nil: the cache is in memory
	redisShown           string         // the address with any password masked
	freshFor             time.Duration
	staleWhileRevalidate time.Duration // 0: off
	attempts             int
	attemptTimeout       time.Duration
	maxBody              int64
	bodyMemory           int64
}

// option is one setting: a flag, the environment variable that sets it
// when the flag is absent, its default, and how to read it into config.
type option struct {
	flag, env, def, arg, help string
	set                       func(*config, string) error
}

func options() []option {
	return []option{
		{"listen", "HORDEPROXY_LISTEN", "127.0.0.1:8080", "ADDR", "address to serve on",
			func(c *config, s string) error { c.listen = s; return nil }},
		// The Client reads AI_HORDE_URL and HORDE_URL itself.
		{"horde-url", "", "", "URL", "AI Horde API base URL",
			func(c *config, s string) error { c.hordeURL = s; return nil }},
		{"redis", "REDIS_URL", "", "URL", "Redis for a cache shared by replicas and kept across restarts: " +
			"redis://[user:password@]host:port/db, rediss://… (TLS), unix:///path/to.sock, or host:port (default: in memory)",
			setRedis},
		{"fresh-for", "HORDEPROXY_FRESH_FOR", "60s", "DURATION", "how long a fetched copy is served without asking the API",
			func(c *config, s string) (err error) { c.freshFor, err = parseDuration(s, false); return err }},
		{"stale-while-revalidate", "HORDEPROXY_STALE_WHILE_REVALIDATE", "5m", "DURATION",
			"how long after --fresh-for a copy is still served at once while it is refreshed in the background; 0 turns it off",
			func(c *config, s string) (err error) {
				c.staleWhileRevalidate, err = parseDuration(s, true)
				return err
			}},
		{"attempts", "HORDEPROXY_ATTEMPTS", "3", "N", "attempts per fetch, the first included",
			setAttempts},
		{"attempt-timeout", "HORDEPROXY_ATTEMPT_TIMEOUT", "30s", "DURATION", "bound on each attempt, the response body included",
			func(c *config, s string) (err error) { c.attemptTimeout, err = parseDuration(s, false); return err }},
		{"max-body", "HORDEPROXY_MAX_BODY", "16MiB", "SIZE", "largest response body accepted from the API",
			func(c *config, s string) (err error) { c.maxBody, err = parseSize(s); return err }},
		{"body-memory", "HORDEPROXY_BODY_MEMORY", "24MiB", "SIZE", "memory for response bodies being read, all fetches together",
			func(c *config, s string) (err error) { c.bodyMemory, err = parseSize(s); return err }},
	}
}

// run is main without the process: tests call it. It serves until ctx ends.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	cfg, code, ok := parseConfig(args, stderr)
	if !ok {
		return code
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	tel := startTelemetry(ctx, logger) // nil unless OTEL_* asks for export
	defer tel.shutdown()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := metrics.New(reg)
	if err != nil {
		fmt.Fprintln(stderr, "hordeproxy:", err)
		return exitFailure
	}
	// The proxy's breaker has APIBreaker's settings plus the hooks that feed
	// the metrics (transitions) and the log; the collector reads its state
	// at each scrape.
	bcfg := horde.APIBreakerConfig()
	bcfg.OnStateChange, bcfg.Logger = tel.onStateChange(m.OnStateChange), logger
	cb, err := breaker.New(bcfg)
	if err != nil {
		fmt.Fprintln(stderr, "hordeproxy:", err)
		return exitFailure
	}
	mem := horde.NewBodyMemory(cfg.bodyMemory)
	registerBodyMemory(reg, mem)
	client := &horde.Client{
		BaseURL:              cfg.hordeURL,
		Logger:               logger,
		Observer:             tel.observer(m.Observe),
		Breaker:              cb,
		FreshFor:             cfg.freshFor,
		StaleWhileRevalidate: cfg.staleWhileRevalidate,
		MaxAttempts:          cfg.attempts,
		AttemptTimeout:       cfg.attemptTimeout,
		MaxBodySize:          cfg.maxBody,
		BodyMemory:           mem,
		Tracer:               tel.tracer(),
	}
	if cfg.staleWhileRevalidate == 0 {
		client.StaleWhileRevalidate = -1 // the flag's 0 is the Client's "off"
	}
	m.WatchBreaker(cb)
	tel.watch(cb)
	var rdb *redis.Client
	if cfg.redis != nil {
		// rediscache.New makes no Redis call: the proxy starts, and serves
		// from the API, while Redis is down.
		rdb = redis.NewClient(cfg.redis)
		client.Store = rediscache.New(rdb, rediscache.Options{})
		pingRedis(ctx, rdb, cfg.redisShown, logger)
	}
	// Close the client first: its background fetches may still write to
	// Redis.
	defer func() {
		client.Close()
		if rdb != nil {
			rdb.Close()
		}
	}()
	base, err := client.ResolvedBaseURL()
	if err != nil {
		fmt.Fprintln(stderr, "hordeproxy:", err)
		return exitUsage
	}

	mux := http.NewServeMux()
	mux.Handle("/", horde.NewHandler(client))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		fmt.Fprintln(stderr, "hordeproxy:", err)
		return exitFailure
	}
	srv := &http.Server{
		Handler:           tel.handler(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	cache := "memory"
	if cfg.redis != nil {
		cache = cfg.redisShown
	}
	logger.Info("hordeproxy listening", "addr", ln.Addr().String(), "horde_url", base.String(), "cache", cache,
		"fresh_for", cfg.freshFor, "stale_while_revalidate", cfg.staleWhileRevalidate,
		"attempts", cfg.attempts, "attempt_timeout", cfg.attemptTimeout,
		"max_body", cfg.maxBody, "body_memory", cfg.bodyMemory)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		logger.Error("hordeproxy stopped", "error", err)
		return exitFailure
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		logger.Error("hordeproxy shutdown", "error", err)
		return exitFailure
	}
	<-served // http.ErrServerClosed once Shutdown has begun
	logger.Info("hordeproxy stopped")
	return 0
}

// parseConfig reads the flags, then the environment for each flag not
// given, then the defaults. ok is false when run should exit with code
// (0 after --help). Values are read after parsing, not by the flag package,
// whose errors repeat the whole value: a Redis password, or 100 KB of it.
func parseConfig(args []string, stderr io.Writer) (cfg config, code int, ok bool) {
	fs := flag.NewFlagSet("hordeproxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	opts := options()
	raw := make([]*string, len(opts))
	for i, o := range opts {
		raw[i] = fs.String(o.flag, "", o.help)
	}
	fs.Usage = func() { usage(stderr, opts) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, 0, false
		}
		return cfg, exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "hordeproxy: unexpected arguments %q (see --help)\n", fs.Args())
		return cfg, exitUsage, false
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for i, o := range opts {
		value, from := o.def, ""
		switch {
		case given[o.flag]:
			value, from = *raw[i], "--"+o.flag
		case o.env != "" && os.Getenv(o.env) != "":
			value, from = os.Getenv(o.env), o.env+" (in place of --"+o.flag+")"
		}
		if err := o.set(&cfg, value); err != nil {
			if from == "" {
				panic("hordeproxy: the default of --" + o.flag + ": " + err.Error())
			}
			fmt.Fprintf(stderr, "hordeproxy: invalid %s: %v\n", from, err)
			return cfg, exitUsage, false
		}
	}
	if cfg.maxBody > cfg.bodyMemory {
		fmt.Fprintf(stderr, "hordeproxy: --max-body (%d bytes) must not exceed --body-memory (%d bytes)\n",
			cfg.maxBody, cfg.bodyMemory)
		return cfg, exitUsage, false
	}
	return cfg, 0, true
}

func usage(w io.Writer, opts []option) {
	fmt.Fprint(w, `Usage: hordeproxy [flags]

Serves the AI Horde data the model reference service reads, and keeps
answering from the last good copy while the AI Horde API is slow or down.

Endpoints:
  GET /api/heartbeat              the AI Horde circuit breaker, in the original's shape
  GET /api/v2/status/models       ?type=image|text &model_state=known|custom|all &min_count=N
  GET /api/v2/stats/img/models    ?model_state=known|custom|all
  GET /api/v2/stats/text/models   ?model_state=known|custom|all
  GET /api/v2/workers             ?type=image|text
  GET /metrics                    Prometheus metrics

Data answers carry Age; a copy older than --fresh-for also X-Horde-Stale: true,
and X-Horde-Revalidating: true while it is refreshed in the background. With
no copy at all the answer is 502; bad input gets 400, 404 or 405. Errors are
JSON: {"error": "..."}.

Flags (each environment variable applies when its flag is not given):
`)
	for _, o := range opts {
		fmt.Fprintf(w, "  --%s %s\n", o.flag, o.arg)
		fmt.Fprintf(w, "        %s\n", o.help)
		var extra []string
		if o.env != "" {
			extra = append(extra, "env "+o.env)
		}
		def := o.def
		if o.flag == "horde-url" {
			extra = append(extra, "env AI_HORDE_URL, then HORDE_URL")
			def = horde.DefaultBaseURL
		}
		if def != "" {
			extra = append(extra, "default "+def)
		}
		if len(extra) > 0 {
			fmt.Fprintf(w, "        (%s)\n", strings.Join(extra, "; "))
		}
	}
	fmt.Fprint(w, `
DURATION is Go's form (90s, 5m) or whole seconds (90). SIZE is bytes, or a
number with KiB, MiB or GiB.
`)
}

// setRedis reads --redis: a redis://, rediss:// or unix:// URL, as
// go-redis (and the Python original's settings) understand it, or
// host:port. Errors never repeat the value, which may hold a password.
func setRedis(c *config, s string) error {
	opts, err := redisOptions(s)
	if err != nil {
		return err
	}
	c.redis, c.redisShown = opts, redactRedis(s)
	if opts != nil {
		// OpTimeout (rediscache) then ends the commands it abandons too.
		c.redis.ContextTimeoutEnabled = true
	}
	return nil
}

func redisOptions(s string) (*redis.Options, error) {
	if s == "" {
		return nil, nil
	}
	scheme, _, isURL := strings.Cut(s, "://")
	if !isURL {
		host, port, err := net.SplitHostPort(s)
		if err != nil || strings.ContainsAny(host, "/@") {
			return nil, errors.New("want host:port or a redis://, rediss:// or unix:// URL")
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, errors.New("the port of host:port must be a number from 1 to 65535")
		}
		return &redis.Options{Addr: s}, nil
	}
	switch scheme {
	case "redis", "rediss", "unix":
	default:
		return nil, fmt.Errorf("URL scheme %s: want redis, rediss or unix", quote(scheme))
	}
	if _, err := url.Parse(s); err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the whole URL, password included
		}
		return nil, fmt.Errorf("not a valid URL: %v", err)
	}
	opts, err := redis.ParseURL(s)
	if err != nil {
		return nil, err
	}
	return opts, nil
}

// redactRedis is s for logs: a URL's password masked.
func redactRedis(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

func setAttempts(c *config, s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return fmt.Errorf("%s: want a whole number of 1 or more", quote(s))
	}
	c.attempts = n
	return nil
}

// parseDuration reads Go's duration form or whole seconds, the form of the
// Python original's settings. Zero is allowed only where it means off.
func parseDuration(s string, zeroOK bool) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if n, nerr := strconv.ParseInt(s, 10, 64); nerr == nil && n >= 0 && n < 1<<33 {
		d, err = time.Duration(n)*time.Second, nil
	}
	switch {
	case err != nil:
		return 0, fmt.Errorf("%s: want a duration such as 90s or 5m, or whole seconds", quote(s))
	case d < 0, d == 0 && !zeroOK:
		return 0, fmt.Errorf("%s: want a duration above 0", quote(s))
	}
	return d, nil
}

// parseSize reads bytes, or a number with KiB, MiB or GiB.
func parseSize(s string) (int64, error) {
	num, mult := s, int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = n, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%s: want a size above 0 in bytes, or with KiB, MiB or GiB", quote(s))
	}
	return n * mult, nil
}

// quote repeats at most a short prefix of a bad value.
func quote(s string) string {
	const max = 40
	if len(s) > max {
		return strconv.Quote(s[:max]) + "…"
	}
	return strconv.Quote(s)
}

// pingRedis warns at startup when Redis does not answer. The proxy starts
// anyway: it serves from the API meanwhile.
func pingRedis(ctx context.Context, rdb *redis.Client, shown string, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, redisPing)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		logger.Warn("hordeproxy: Redis does not answer; serving from the API until it does", "redis", shown, "error", err.Error())
	}
}

// registerBodyMemory exports the BodyMemory's use and bound.
func registerBodyMemory(reg prometheus.Registerer, mem *horde.BodyMemory) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "hordeproxy_body_memory_in_use_bytes",
			Help: "Bytes of AI Horde response bodies being read and checked now.",
		}, func() float64 { return float64(mem.InUse()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "hordeproxy_body_memory_limit_bytes",
			Help: "The bound on bytes of AI Horde response bodies being read (--body-memory).",
		}, func() float64 { return float64(mem.Max()) }),
	)
}
