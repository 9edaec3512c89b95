package redisbreaker_test

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/breaker/redisbreaker"
	"github.com/hordekit/httpretry/internal/leaktest"
	"github.com/hordekit/httpretry/internal/redistest"
)

// proc is a replica in another process: the program in internal/replica.
type proc struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // its stdout, closed when it exits
}

// buildReplica compiles internal/replica into a temporary directory.
func buildReplica(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found; cannot build the replica program")
	}
	bin := filepath.Join(t.TempDir(), "replica")
	out, err := exec.Command(goTool, "build", "-o", bin, "./internal/replica").CombinedOutput()
	if err != nil {
		t.Fatalf("building internal/replica: %v\n%s", err, out)
	}
	return bin
}

func startProc(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, stdin: stdin, lines: make(chan string, 256)}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		stdin.Close() // EOF ends its command loop if "quit" was not sent
		<-readDone
		if err := cmd.Wait(); err != nil {
			t.Errorf("replica process: %v\n%s", err, stderr.String())
		}
	})
	return p
}

func (p *proc) send(format string, args ...any) {
	p.t.Helper()
	if _, err := fmt.Fprintf(p.stdin, format+"\n", args...); err != nil {
		p.t.Fatalf("writing to the replica: %v", err)
	}
}

// expect waits for a line starting with prefix (and containing contains, if
// given), skipping others, and returns when it arrived.
func (p *proc) expect(prefix string, timeout time.Duration, contains ...string) time.Time {
	p.t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				p.t.Fatalf("replica exited while waiting for %q", prefix)
			}
			if strings.HasPrefix(line, prefix) && (len(contains) == 0 || strings.Contains(line, contains[0])) {
				return time.Now()
			}
		case <-timer.C:
			p.t.Fatalf("replica did not print %q within %v", prefix, timeout)
		}
	}
}

// Replicas in separate processes share the breaker: a trip in this process is
// seen by the other within a second, the fleet recovers through one probe,
// and a trip in the other process is seen here within a second.
func TestSeparateProcesses(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	bin := buildReplica(t)
	const cooldown = 300 * time.Millisecond
	other := startProc(t, bin, "-addr", s.Addr, "-name", "multi", "-threshold", "5", "-cooldown", cooldown.String())
	other.expect("ready", 10*time.Second)

	here := fleet(t, s.Addr, 1, redisbreaker.Config{
		Config: breaker.Config{Name: "multi", FailureThreshold: 5, Cooldown: cooldown},
	})[0]

	// This process trips; the other sees it.
	start := time.Now()
	fail(here, 5)
	d := other.expect("state closed open", propagationBound).Sub(start)
	t.Logf("other process saw this process's trip after %v", d)
	if d >= propagationBound {
		t.Fatalf("propagation to the other process took %v", d)
	}

	// The fleet probes once (here) and closes everywhere.
	// The local view turns half-open from this process's clock; the fleet's
	// open-until, set in Redis by another process's push, can be a few
	// milliseconds later (seen under load), so the probe is asked for until
	// the fleet grants it.
	var p breaker.Permit
	eventually(t, 3*cooldown, "the fleet's probe", func() bool {
		var err error
		p, err = here.Acquire()
		return err == nil && p.Probe()
	})
	other.send("probe")
	other.expect("probe refused", 5*time.Second)
	p.Done(true)
	other.expect("state ", propagationBound, " closed ") // from open or half-open

	// The other process trips; this one sees it. The time includes the
	// other process reading its command.
	here.drain()
	start = time.Now()
	other.send("fail 5")
	d = waitState(t, here, breaker.Open, propagationBound).Sub(start)
	t.Logf("this process saw the other process's trip %v after asking it to fail", d)
	other.expect("state closed open", 5*time.Second)
	other.send("quit")
}
