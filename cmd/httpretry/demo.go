package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/hordekit/httpretry/internal/demo"
)

const demoUsage = `usage: httpretry demo [flags]

Runs four strategies at once (no retries, naive retries, the Python seed's
policy as the AI Horde integration deploys it, and httpretry's defaults),
each against its own upstream on loopback going through the same phases:
healthy, flaky (random 503s and resets), overloaded (503 above its
capacity), rate-limited (429 with Retry-After), outage, recovery. Calls
arrive at a set rate whatever happens to earlier ones, each with its own
deadline. Prints a scorecard per phase: what each strategy's callers got and
what it cost the upstream, and who won and why. Ctrl-C stops early and
prints what was measured.

Exit codes: 0 done, 1 the demo could not run or its page not be written,
2 bad flags, 130 interrupted.

flags:
`

// exitInterrupted is the shell's code for a command ended by Ctrl-C.
const exitInterrupted = 130

// runDemo is the demo subcommand: flags in, the report out on stdout,
// progress on stderr.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), demoUsage)
		fs.PrintDefaults()
	}
	cfg := demo.Config{Progress: stderr, Live: isTerminal(stderr)}
	fs.DurationVar(&cfg.Duration, "duration", demo.DefaultDuration,
		fmt.Sprintf("how long calls arrive; the phases split it (at least %v)", demo.MinDuration))
	fs.Float64Var(&cfg.Rate, "rate", demo.DefaultRate, fmt.Sprintf("calls per second to each strategy (1 to %d)", demo.MaxRate))
	arrivals := fs.String("arrivals", "poisson", "how calls are spread: poisson (independent callers) or fixed (evenly)")
	fs.DurationVar(&cfg.Deadline, "deadline", demo.DefaultDeadline, "each call's deadline, retries and waits included")
	fs.Uint64Var(&cfg.Seed, "seed", demo.DefaultSeed, "decides the arrivals and the faults: the same seed, the same scenario")
	htmlPath := fs.String("html", "", "also write the report as a self-contained HTML page with a chart per strategy to `FILE`")
	listen := fs.String("listen", "", "serve /metrics (Prometheus) and /heartbeat (the running strategy's breakers) on `ADDR` while it runs")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "httpretry demo: unexpected argument %q\n\n", fs.Arg(0))
		fs.Usage()
		return exitUsage
	}
	var err error
	if cfg.Arrivals, err = demo.ParseArrivals(*arrivals); err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		fmt.Fprintf(stderr, "httpretry demo: %v\n\n", err)
		fs.Usage()
		return exitUsage
	}

	// The page's file is created first so that a bad path fails now, not
	// after the whole run.
	var page *os.File
	if *htmlPath != "" {
		f, err := os.Create(*htmlPath)
		if err != nil {
			fmt.Fprintf(stderr, "httpretry demo: %v\n", err)
			return 1
		}
		defer f.Close()
		page = f
	}
	if *listen != "" {
		stop, err := serveMonitor(*listen, &cfg, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "httpretry demo: --listen: %v\n", err)
			return 1
		}
		defer stop()
	}

	fmt.Fprintf(stderr, "httpretry demo: 4 strategies at once, %v, %v calls/s each; Ctrl-C stops and prints what was measured\n",
		cfg.Duration, cfg.Rate)
	report, runErr := demo.Run(ctx, cfg)
	code := 0
	if report != nil && (len(report.Results) > 0 || runErr == nil) {
		if err := report.WriteText(stdout); err != nil {
			fmt.Fprintf(stderr, "httpretry demo: %v\n", err)
			code = 1
		}
		if page != nil {
			if err := writePage(page, report); err != nil {
				fmt.Fprintf(stderr, "httpretry demo: %v\n", err)
				code = 1
			}
		}
	}
	switch {
	case runErr != nil:
		fmt.Fprintf(stderr, "httpretry demo: %v\n", runErr)
		return 1
	case report.Interrupted:
		return exitInterrupted
	}
	return code
}

// writePage writes the HTML report and closes its file, so that an error
// on close (a full disk) is reported too.
func writePage(f *os.File, r *demo.Report) error {
	if err := r.WriteHTML(f); err != nil {
		return err
	}
	return f.Close()
}

// serveMonitor serves the demo's /metrics and /heartbeat on addr and sets
// cfg.Monitor; stop shuts the server down.
func serveMonitor(addr string, cfg *demo.Config, stderr io.Writer) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	cfg.Monitor = demo.NewMonitor()
	srv := &http.Server{Handler: cfg.Monitor.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln) // returns when stop closes it
	fmt.Fprintf(stderr, "httpretry demo: serving /metrics and /heartbeat on %s\n", ln.Addr())
	return func() { srv.Close() }, nil
}

// isTerminal reports whether w is a terminal, where the progress line can be
// redrawn in place; elsewhere (CI logs, files) it is written once per
// strategy.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
