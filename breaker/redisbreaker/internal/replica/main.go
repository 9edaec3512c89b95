// Command replica is one replica of a fleet breaker in its own process, for
// the multi-process tests of redisbreaker. The test builds it, starts it
// against its Redis, and talks to it over stdin and stdout, one line at a
// time. Times are Unix nanoseconds, so the test can line them up with its
// own.
//
// Output:
//
//	ready                  the breaker is connected and subscribed
//	state <from> <to> <t>  a transition of this replica's breaker, at t
//	failed <n>             n failures recorded
//	probe ok | probe refused <error>
//	status <state> <connected>
//	call <start> <end> <breaker> <outcome> <probe>
//	                       one call of the load: its start and end, the
//	                       nanoseconds spent in the breaker (Acquire and
//	                       reporting the outcome), ok, fail or refused, and
//	                       1 for a half-open probe
//	stopped                the load has stopped and its calls have ended
//	closed <d> <goroutines>
//	                       Close took d nanoseconds; goroutines still running
//	                       beyond those before New, once the client is closed
//
// Input:
//
//	fail <n>               record n failures (RecordFailure)
//	probe                  Acquire and report a success
//	status                 print the state
//	load <url> <rate>      call url rate times a second through the breaker,
//	                       each call in its own goroutine; a 2xx is a success
//	stop                   stop the load
//	quit                   close and exit
//
// Usage: replica -addr 127.0.0.1:6379 -name api [-threshold 5] [-cooldown 300ms]
// [-refresh 500ms] [-optimeout 100ms]
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/breaker/redisbreaker"
)

func main() {
	addr := flag.String("addr", "", "Redis address")
	name := flag.String("name", "", "breaker name")
	threshold := flag.Int("threshold", 5, "failure threshold")
	cooldown := flag.Duration("cooldown", 300*time.Millisecond, "cooldown")
	refresh := flag.Duration("refresh", 0, "refresh interval (0: the default)")
	opTimeout := flag.Duration("optimeout", 0, "Redis call timeout (0: the default)")
	flag.Parse()
	cfg := redisbreaker.Config{
		Config: breaker.Config{
			Name:             *name,
			FailureThreshold: *threshold,
			Cooldown:         *cooldown,
			OnStateChange: func(_ string, from, to breaker.State) {
				say("state %v %v %d", from, to, time.Now().UnixNano())
			},
			Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
		},
		RefreshInterval: *refresh,
		OpTimeout:       *opTimeout,
		ReplicaID:       "replica-" + strconv.Itoa(os.Getpid()),
	}
	if err := run(*addr, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "replica:", err)
		os.Exit(1)
	}
}

// out serialises lines from the hook, the load and the command loop.
var out struct {
	sync.Mutex
	w *bufio.Writer
}

func say(format string, args ...any) {
	out.Lock()
	defer out.Unlock()
	fmt.Fprintf(out.w, format+"\n", args...)
	out.w.Flush()
}

func run(addr string, cfg redisbreaker.Config) error {
	out.w = bufio.NewWriter(os.Stdout)
	before := runtime.NumGoroutine()
	client := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	b, err := redisbreaker.New(client, cfg)
	if err != nil {
		return err
	}
	httpc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 100}}
	var ld *load
	defer func() {
		if ld != nil {
			ld.stop()
		}
		start := time.Now()
		b.Close()
		took := time.Since(start)
		client.Close()
		httpc.CloseIdleConnections()
		say("closed %d %d", took.Nanoseconds(), goroutinesLeft(before))
	}()

	deadline := time.Now().Add(10 * time.Second)
	for !b.Connected() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not connected to %s after 10s", addr)
		}
		time.Sleep(5 * time.Millisecond)
	}
	say("ready")

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		cmd, arg, _ := strings.Cut(strings.TrimSpace(in.Text()), " ")
		switch cmd {
		case "fail":
			n, err := strconv.Atoi(arg)
			if err != nil {
				return fmt.Errorf("fail %q: %v", arg, err)
			}
			for range n {
				b.RecordFailure()
			}
			say("failed %d", n)
		case "probe":
			p, err := b.Acquire()
			if err != nil {
				say("probe refused %v", err)
				continue
			}
			p.Done(true)
			say("probe ok")
		case "status":
			say("status %v %v", b.State(), b.Connected())
		case "load":
			url, rate, _ := strings.Cut(arg, " ")
			perSec, err := strconv.Atoi(rate)
			if err != nil || perSec <= 0 || ld != nil {
				return fmt.Errorf("load %q: bad rate, or a load already running", arg)
			}
			ld = startLoad(b, httpc, url, time.Second/time.Duration(perSec))
		case "stop":
			if ld != nil {
				ld.stop()
				ld = nil
			}
			say("stopped")
		case "quit":
			return nil
		default:
			return fmt.Errorf("unknown command %q", cmd)
		}
	}
	return in.Err()
}

// load calls the upstream at a fixed pace, each call on its own goroutine so
// that a slow call does not slow the pace.
type load struct {
	quit  chan struct{}
	pacer sync.WaitGroup
	calls sync.WaitGroup
}

func startLoad(b *redisbreaker.Breaker, httpc *http.Client, url string, every time.Duration) *load {
	l := &load{quit: make(chan struct{})}
	l.pacer.Go(func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-l.quit:
				return
			case <-tick.C:
			}
			l.calls.Go(func() { call(b, httpc, url) })
		}
	})
	return l
}

func (l *load) stop() {
	close(l.quit)
	l.pacer.Wait()
	l.calls.Wait()
}

// call makes one call through the breaker and reports it.
func call(b *redisbreaker.Breaker, httpc *http.Client, url string) {
	start := time.Now()
	p, err := b.Acquire()
	inBreaker := time.Since(start)
	if err != nil {
		say("call %d %d %d refused 0", start.UnixNano(), time.Now().UnixNano(), inBreaker.Nanoseconds())
		return
	}
	probe := 0
	if p.Probe() {
		probe = 1
	}
	ok := get(httpc, url, probe == 1)
	reported := time.Now()
	p.Done(ok)
	end := time.Now()
	inBreaker += end.Sub(reported)
	outcome := "fail"
	if ok {
		outcome = "ok"
	}
	say("call %d %d %d %s %d", start.UnixNano(), end.UnixNano(), inBreaker.Nanoseconds(), outcome, probe)
}

// get calls the upstream; a probe says so in a header, for the test's
// upstream to count.
func get(httpc *http.Client, url string, probe bool) bool {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	req.Header.Set("X-Replica", strconv.Itoa(os.Getpid()))
	if probe {
		req.Header.Set("X-Probe", "1")
	}
	resp, err := httpc.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode < 300
}

// goroutinesLeft waits up to 5 s for the goroutines started since the count
// before New to end (a closed connection's reader ends asynchronously), and
// returns how many are still running, printing their stacks to stderr.
func goroutinesLeft(before int) int {
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	left := max(runtime.NumGoroutine()-before, 0)
	if left > 0 {
		buf := make([]byte, 1<<20)
		fmt.Fprintf(os.Stderr, "replica: %d goroutines left after Close:\n%s\n", left, buf[:runtime.Stack(buf, true)])
	}
	return left
}
