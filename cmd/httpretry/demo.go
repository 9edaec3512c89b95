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

Starts a flaky upstream on loopback (healthy, then a hard outage of 503s and
connection resets, then rate limiting with Retry-After, then recovery) and
drives it with concurrent clients using four strategies in turn: no retries,
naive retries, the Python seed's policy, and httpretry's defaults. Prints what
each did to the upstream and what its callers got. Ctrl-C stops early and
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
	fs.DurationVar(&cfg.Duration, "duration", demo.DefaultDuration, "how long each strategy runs (at least 1s)")
	fs.IntVar(&cfg.Clients, "clients", demo.DefaultClients, fmt.Sprintf("concurrent clients (1 to %d)", demo.MaxClients))
	fs.Uint64Var(&cfg.Seed, "seed", demo.DefaultSeed, "decides the outage's fault mix: the same seed, the same scenario")
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
	if err := cfg.Validate(); err != nil {
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

	fmt.Fprintf(stderr, "httpretry demo: 4 strategies, %v each, %d clients; Ctrl-C stops and prints what was measured\n",
		cfg.Duration, cfg.Clients)
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
