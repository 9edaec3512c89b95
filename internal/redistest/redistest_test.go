package redistest_test

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

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
