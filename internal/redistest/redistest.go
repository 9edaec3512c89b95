// Package redistest starts a real redis-server for tests: on a free loopback
// port, in the test's temporary directory, with persistence off, stopped when
// the test ends. Tests of Redis-backed code run against the real server rather
// than a mock, so they see its real errors, timeouts and restarts.
// StartCluster starts a real Redis Cluster the same way: several
// redis-server processes with cluster mode on, joined by redis-cli, with
// replicas, and Cluster.KillMaster crashes a master so that a replica takes
// over.
//
// When redis-server (or redis-cli, for a cluster) is not installed, Start
// skips the test with a message saying how to install it, except in CI (the
// environment variable CI is non-empty), where a missing server fails the
// test: CI must not pass by skipping what it was meant to check.
package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long a server may take to answer PING. It is a
// ceiling for a slow machine, never a timing assertion.
const startTimeout = 10 * time.Second

// portAttempts is how many free ports Start tries: the port is found by
// listening and closing, so another process may take it before redis-server
// binds it.
const portAttempts = 5

// Server is a running (or stopped) redis-server. Its methods are meant to be
// called from the test's goroutine: they fail the test with t.Fatalf.
type Server struct {
	// Addr is the server's "127.0.0.1:port"; it stays the same across Restart.
	Addr string
	// Dir is the server's working directory, a t.TempDir.
	Dir string

	t    testing.TB
	bin  string
	port int
	args []string // more redis-server arguments (cluster mode)

	mu     sync.Mutex
	proc   *process // nil while stopped
	paused bool
}

// process is one run of redis-server.
type process struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{} // closed when the process has been waited for
	err    error         // Wait's result, set before exited is closed
}

// Start starts a redis-server for t and stops it (SIGTERM, then wait) when
// the test ends. It returns once the server answers PING.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, lookPath(t, "redis-server"), t.TempDir())
}

// lookPath finds a Redis program, or skips (fails in CI) saying how to
// install it.
func lookPath(t testing.TB, name string) string {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		msg := name + " not installed: apt-get install redis-server " +
			"(the Redis-backed tests need a real server on PATH; redis-cli comes with it)"
		if os.Getenv("CI") != "" {
			t.Fatalf("redistest: CI is set and %s", msg)
		}
		t.Skip("redistest: SKIPPING: " + msg)
	}
	return bin
}

// start starts a server in dir with the extra arguments, on a free port.
func start(t testing.TB, bin, dir string, args ...string) *Server {
	t.Helper()
	s := &Server{t: t, bin: bin, Dir: dir, args: args}
	t.Cleanup(s.shutdown)

	var lastErr error
	for range portAttempts {
		port, err := freePort()
		if err != nil {
			t.Fatalf("redistest: finding a free port: %v", err)
		}
		s.port = port
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("redistest: redis-server did not start after %d attempts: %v", portAttempts, lastErr)
	return nil
}

// Stop kills the server at once (SIGKILL), as a crash would, and waits for it
// to exit. Connected clients see their connections reset. With persistence
// off, the data is gone.
func (s *Server) Stop() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked(syscall.SIGKILL)
}

// Restart starts the server again on the same port and directory, stopping
// it first if it is running, and returns once it answers PING. It starts
// empty: persistence is off.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	s.stopLocked(syscall.SIGKILL)
	s.mu.Unlock()
	if err := s.start(); err != nil {
		s.t.Fatalf("redistest: restarting on %s: %v", s.Addr, err)
	}
}

// Pause freezes the server (SIGSTOP): connections stay open and new ones are
// accepted by the kernel, but nothing is answered, like a server stuck in a
// long command or behind a black-holed network. Resume undoes it.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume lets a paused server run again (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

// Sleep makes the server run DEBUG SLEEP for d: it is busy in one slow
// command and answers nothing else meanwhile, though it is running and
// accepts connections. Sleep returns once the command is sent; the channel
// receives the command's error (nil) when the server is awake again.
func (s *Server) Sleep(d time.Duration) <-chan error {
	done := make(chan error, 1)
	conn, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		done <- err
		return done
	}
	conn.SetDeadline(time.Now().Add(d + startTimeout))
	secs := strconv.FormatFloat(d.Seconds(), 'f', 3, 64)
	cmd := fmt.Sprintf("*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$%d\r\n%s\r\n", len(secs), secs)
	if _, err := conn.Write([]byte(cmd)); err != nil {
		conn.Close()
		done <- err
		return done
	}
	go func() {
		defer conn.Close()
		_, err := readReply(bufio.NewReader(conn))
		done <- err
	}()
	return done
}

func (s *Server) signal(sig syscall.Signal) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		s.t.Fatalf("redistest: %v: server on %s is not running", sig, s.Addr)
	}
	if err := s.proc.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("redistest: %v: %v", sig, err)
	}
	s.paused = sig == syscall.SIGSTOP
}

// start runs redis-server on s.port and waits for PING. On failure the
// process is gone and the error carries its output.
func (s *Server) start() error {
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.Dir,
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--logfile", "",
	}
	args = append(args, debugArgs(s.bin)...)
	cmd := exec.Command(s.bin, append(args, s.args...)...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &process{cmd: cmd, out: out, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()

	if err := waitReady(s.Addr, p); err != nil {
		cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%w\nredis-server output:\n%s", err, out.String())
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	return nil
}

// stopLocked signals the process and waits for it; a paused process is
// continued first so that SIGTERM can be handled.
func (s *Server) stopLocked(sig syscall.Signal) {
	p := s.proc
	if p == nil {
		return
	}
	s.proc, s.paused = nil, false
	p.cmd.Process.Signal(sig)
	p.cmd.Process.Signal(syscall.SIGCONT)
	select {
	case <-p.exited:
	case <-time.After(startTimeout):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// debugArgs allows DEBUG (for Sleep) from loopback: Redis 7 refuses it by
// default, and older versions do not know the option.
func debugArgs(bin string) []string {
	versionOnce.Do(func() {
		out, _ := exec.Command(bin, "--version").Output()
		// "Redis server v=7.0.15 sha=..."
		_, v, _ := strings.Cut(string(out), "v=")
		major, _, _ := strings.Cut(v, ".")
		serverMajor, _ = strconv.Atoi(major)
	})
	if serverMajor >= 7 {
		return []string{"--enable-debug-command", "local"}
	}
	return nil
}

var (
	versionOnce sync.Once
	serverMajor int
)

// shutdown is the cleanup: a graceful stop.
func (s *Server) shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked(syscall.SIGTERM)
}

// waitReady polls addr with PING until the server answers, it exits, or
// startTimeout passes.
func waitReady(addr string, p *process) error {
	deadline := time.Now().Add(startTimeout)
	for {
		err := ping(addr)
		if err == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("redis-server exited before answering PING: %v", p.err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s did not answer PING within %v: %v", addr, startTimeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ping sends an inline PING and expects +PONG.
func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// Ping reports whether the server answers PING now.
func (s *Server) Ping() error { return ping(s.Addr) }

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("listener has no TCP address")
	}
	return addr.Port, nil
}

// syncBuffer collects the server's output; the process writes it from its own
// goroutine while a failing test may read it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
