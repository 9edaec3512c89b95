// Command replica is one replica of a fleet breaker in its own process, for
// the multi-process tests of redisbreaker. The test builds it, starts it
// against its Redis, and talks to it over stdin and stdout, one line at a
// time.
//
// Output:
//
//	ready                  the breaker is connected and subscribed
//	state <from> <to>      a transition of this replica's breaker
//	failed <n>             n failures recorded
//	probe ok | probe refused <error>
//	status <state>
//
// Input:
//
//	fail <n>               record n failures (RecordFailure)
//	probe                  Acquire and report a success
//	status                 print the state
//	quit                   close and exit
//
// Usage: replica -addr 127.0.0.1:6379 -name api [-threshold 5] [-cooldown 300ms]
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
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
	flag.Parse()
	if err := run(*addr, *name, *threshold, *cooldown); err != nil {
		fmt.Fprintln(os.Stderr, "replica:", err)
		os.Exit(1)
	}
}

// out serialises lines from the hook and the command loop.
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

func run(addr, name string, threshold int, cooldown time.Duration) error {
	out.w = bufio.NewWriter(os.Stdout)
	client := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	defer client.Close()
	b, err := redisbreaker.New(client, redisbreaker.Config{
		Config: breaker.Config{
			Name:             name,
			FailureThreshold: threshold,
			Cooldown:         cooldown,
			OnStateChange: func(_ string, from, to breaker.State) {
				say("state %v %v", from, to)
			},
		},
		ReplicaID: "replica-" + strconv.Itoa(os.Getpid()),
	})
	if err != nil {
		return err
	}
	defer b.Close()

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
			say("status %v", b.State())
		case "quit":
			return nil
		default:
			return fmt.Errorf("unknown command %q", cmd)
		}
	}
	return in.Err()
}
