// Command httpretry is a curl-like client that retries (get) and a
// side-by-side demonstration of retry strategies against a flaky upstream
// (demo).
//
//	httpretry get [flags] URL
//	httpretry demo [flags]
//
// Run a subcommand with -h for its flags. Exit codes are listed in the
// README and in the get subcommand's usage text.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
)

const usage = `usage: httpretry <command> [flags]

commands:
  get    send one HTTP request with retries, circuit breaker and budget (curl-like)
  demo   run a flaky-upstream scenario against four retry strategies and compare them

Run 'httpretry <command> -h' for a command's flags.
`

// exitUsage is the exit code for a command line that cannot be run.
const exitUsage = 2

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is main without the process: tests call it directly.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "get":
		return runGet(ctx, args[1:], stdin, stdout, stderr)
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "httpretry: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}
