package redistest_test

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hordekit/httpretry/internal/leaktest"
	"github.com/hordekit/httpretry/internal/redistest"
)

func TestStartStopRestart(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	if err := s.Ping(); err != nil {
		t.Fatalf("Ping after Start: %v", err)
	}
	if !strings.HasPrefix(s.Addr, "127.0.0.1:") {
		t.Errorf("Addr = %q, want a loopback address", s.Addr)
	}
	addr := s.Addr

	s.Stop()
	if err := s.Ping(); err == nil {
		t.Fatal("Ping succeeded after Stop")
	}
	s.Restart()
	if err := s.Ping(); err != nil {
		t.Fatalf("Ping after Restart: %v", err)
	}
	if s.Addr != addr {
		t.Errorf("Restart moved the server from %s to %s", addr, s.Addr)
	}
}

func TestPauseResume(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	s.Pause()
	if err := s.Ping(); err == nil {
		t.Fatal("a paused server answered PING")
	}
	s.Resume()
	if err := s.Ping(); err != nil {
		t.Fatalf("Ping after Resume: %v", err)
	}
}

// A paused server must still be stopped by the cleanup.
func TestCleanupStopsPausedServer(t *testing.T) {
	leaktest.Check(t)
	var addr string
	t.Run("paused", func(t *testing.T) {
		s := redistest.Start(t)
		addr = s.Addr
		s.Pause()
	})
	if addr == "" {
		t.Skip("subtest skipped")
	}
	if err := (&redistest.Server{Addr: addr}).Ping(); err == nil {
		t.Fatal("server still answers after its test ended")
	}
}

// fakeTB records how Start gave up. Skip and Fatal end the goroutine like the
// real ones do.
type fakeTB struct {
	testing.TB
	mu      sync.Mutex
	skipped string
	fatal   string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skip(args ...any) {
	f.mu.Lock()
	f.skipped = fmt.Sprint(args...)
	f.mu.Unlock()
	runtime.Goexit()
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.fatal = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func TestMissingServer(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	for _, tc := range []struct {
		ci       string
		wantSkip bool
	}{{"", true}, {"true", false}} {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			f := &fakeTB{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				redistest.Start(f)
			}()
			<-done
			got := f.fatal
			if tc.wantSkip {
				got = f.skipped
			}
			if !strings.Contains(got, "redis-server not installed: apt-get install redis-server") {
				t.Errorf("skip=%q fatal=%q; want the install hint as a %s",
					f.skipped, f.fatal, map[bool]string{true: "skip", false: "failure"}[tc.wantSkip])
			}
		})
	}
}

// A cluster of 3 masters with a replica each forms, serves a key on the
// master of its slot, and survives that master's crash: a replica takes over
// with the data it had replicated.
func TestClusterFailover(t *testing.T) {
	leaktest.Check(t)
	start := time.Now()
	c := redistest.StartCluster(t, 3, 1)
	t.Logf("cluster of %d nodes ready in %v", len(c.Nodes), time.Since(start))
	if len(c.Nodes) != 6 || len(c.Addrs()) != 6 {
		t.Fatalf("%d nodes, want 6", len(c.Nodes))
	}
	const key = "{api}:state"
	m := c.MasterFor(key)
	if _, err := m.Do("SET", key, "open"); err != nil {
		t.Fatalf("SET on the slot's master: %v", err)
	}
	// Every Do is a new connection, so WAIT would have nothing to wait for:
	// wait until the replica has acknowledged the master's offset instead.
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := m.Do("INFO", "replication")
		if err != nil {
			t.Fatal(err)
		}
		var offset, acked string
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "master_repl_offset:"); ok {
				offset = v
			}
			if strings.HasPrefix(line, "slave0:") {
				_, acked, _ = strings.Cut(line, ",offset=")
				acked, _, _ = strings.Cut(acked, ",")
			}
		}
		if offset != "" && offset != "0" && acked == offset {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica did not acknowledge the write:\n%s", info)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, n := range c.Nodes {
		if n == m {
			continue
		}
		if _, err := n.Do("SET", key, "x"); err == nil || !strings.Contains(err.Error(), "MOVED") {
			t.Errorf("SET on %s: %v, want MOVED to the slot's master", n.Addr, err)
		}
	}

	old, promoted, took := c.KillMaster(key)
	t.Logf("replica %s took over from %s %v after the kill", promoted.Addr, old.Addr, took)
	if old != m || promoted == m {
		t.Fatalf("KillMaster killed %s and promoted %s; the slot's master was %s", old.Addr, promoted.Addr, m.Addr)
	}
	if c.MasterFor(key) != promoted {
		t.Fatal("MasterFor does not name the promoted replica")
	}
	if v, err := promoted.Do("GET", key); err != nil || v != "open" {
		nodes, _ := promoted.Do("CLUSTER", "NODES")
		repl, _ := promoted.Do("INFO", "replication")
		t.Fatalf("GET on the new master = %q, %v; want the replicated value\n%s\n%s", v, err, nodes, repl)
	}
	if err := old.Ping(); err == nil {
		t.Fatal("the killed master still answers")
	}

	// The killed master comes back as the new master's replica; then the
	// new master hangs, and it takes over again, with the data it synced.
	c.Rejoin(old)
	if role, err := old.Do("ROLE"); err != nil || !strings.HasPrefix(role, "slave") {
		t.Fatalf("ROLE of the rejoined node = %q, %v; want a replica", role, err)
	}
	hung, again, took := c.HangMaster(key)
	t.Logf("%s took over again from the hung %s %v after it froze", again.Addr, hung.Addr, took)
	if hung != promoted || again != old {
		t.Fatalf("HangMaster froze %s and promoted %s; want %s frozen and %s promoted", hung.Addr, again.Addr, promoted.Addr, old.Addr)
	}
	if v, err := again.Do("GET", key); err != nil || v != "open" {
		t.Fatalf("GET after the second failover = %q, %v", v, err)
	}
	c.Rejoin(hung)
}

// A sleeping server answers nothing until it wakes up (Ping gives up after
// a second).
func TestSleep(t *testing.T) {
	leaktest.Check(t)
	s := redistest.Start(t)
	awake := s.Sleep(1500 * time.Millisecond)
	// Let the command reach the server before the PING; this orders the two,
	// it measures nothing.
	time.Sleep(50 * time.Millisecond)
	if err := s.Ping(); err == nil {
		t.Fatal("a sleeping server answered PING")
	}
	if err := <-awake; err != nil {
		t.Fatalf("DEBUG SLEEP: %v", err)
	}
	if err := s.Ping(); err != nil {
		t.Fatalf("Ping after the sleep: %v", err)
	}
}
