// Command hordeproxy serves the AI Horde data that the model reference
// service reads (model status, model statistics and workers) and keeps
// answering, from the last good copy, while the AI Horde API is slow or down.
//
//	hordeproxy [--listen 127.0.0.1:8080] [--horde-url URL] [--redis ADDR]
//
// Endpoints:
//
//	GET /api/heartbeat                  {"status":"ok","ai_horde":{"degraded":…,"consecutive_failures":…,"seconds_until_retry":…}}
//	GET /api/v2/status/models           ?type=image|text &model_state=known|custom|all &min_count=N
//	GET /api/v2/stats/img/models        ?model_state=
//	GET /api/v2/stats/text/models       ?model_state=
//	GET /api/v2/workers                 ?type=image|text
//	GET /metrics                        Prometheus metrics of the retries and the breaker
//
// A copy served because the API could not be read carries X-Horde-Stale:
// true and its Age; with no copy at all the answer is 502 with a JSON error.
// See horde.NewHandler. The API's URL comes from --horde-url, else
// $AI_HORDE_URL, else $HORDE_URL, else https://aihorde.net/api/. With
// --redis the cache lives in Redis, shared by replicas and kept across
// restarts; without it, in memory.
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
	"os"
	"os/signal"
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

func main() {
	// APIBreaker logs its transitions to the default logger.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

// run is main without the process: tests call it. It serves until ctx ends.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("hordeproxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "address to serve on")
	hordeURL := fs.String("horde-url", "",
		"AI Horde API base URL (default $AI_HORDE_URL, else $HORDE_URL, else "+horde.DefaultBaseURL+")")
	redisAddr := fs.String("redis", "", "Redis host:port for a cache shared by replicas and kept across restarts (default: in memory)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "hordeproxy: unexpected arguments %q\n", fs.Args())
		return exitUsage
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
	cfg := horde.APIBreakerConfig()
	cfg.OnStateChange, cfg.Logger = tel.onStateChange(m.OnStateChange), logger
	cb, err := breaker.New(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "hordeproxy:", err)
		return exitFailure
	}
	client := &horde.Client{BaseURL: *hordeURL, Logger: logger, Observer: tel.observer(m.Observe), Breaker: cb,
		Transport: tel.base()}
	m.WatchBreaker(cb)
	tel.watch(cb)
	defer client.CloseIdleConnections()
	if *redisAddr != "" {
		// rediscache.New makes no Redis call: the proxy starts, and serves
		// from the API, while Redis is down.
		rdb := redis.NewClient(&redis.Options{Addr: *redisAddr, ContextTimeoutEnabled: true})
		defer rdb.Close()
		client.Store = rediscache.New(rdb, rediscache.Options{})
		logger.Info("hordeproxy cache in Redis", "addr", *redisAddr, "prefix", rediscache.DefaultPrefix)
	}
	base, err := client.ResolvedBaseURL()
	if err != nil {
		fmt.Fprintln(stderr, "hordeproxy:", err)
		return exitUsage
	}

	mux := http.NewServeMux()
	mux.Handle("/", horde.NewHandler(client))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(stderr, "hordeproxy:", err)
		return exitFailure
	}
	srv := &http.Server{
		Handler:           tel.handler(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	logger.Info("hordeproxy listening", "addr", ln.Addr().String(), "horde_url", base.String())

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
