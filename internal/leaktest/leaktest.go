// Package leaktest checks that a test leaves no goroutines behind.
//
// It compares the goroutines running after a test with those running before
// it. Goroutines end asynchronously (a closed connection's reader, a stopped
// server's handlers), so the check polls for a bounded time before failing;
// that bound is a ceiling for cleanup, never a timing assertion.
package leaktest

import (
	"os"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"
)

// Check records the goroutines running now and registers a cleanup that fails
// t if new ones are still running once the test and its other cleanups end.
// Call it first in a test so its cleanup runs last.
func Check(t testing.TB) {
	t.Helper()
	before := snapshot()
	t.Cleanup(func() {
		var leaked []string
		deadline := time.Now().Add(5 * time.Second)
		for {
			leaked = leaked[:0]
			for id, stack := range snapshot() {
				if _, ok := before[id]; !ok && !ignored(stack) {
					leaked = append(leaked, stack)
				}
			}
			if len(leaked) == 0 || time.Now().After(deadline) {
				break
			}
			runtime.Gosched()
			time.Sleep(10 * time.Millisecond)
		}
		if len(leaked) > 0 {
			sort.Strings(leaked)
			t.Errorf("leaktest: %d goroutine(s) leaked:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
	})
}

// CheckMain runs a package's tests and then fails the run if goroutines other
// than the runtime's are left. Use it from TestMain:
//
//	func TestMain(m *testing.M) { leaktest.CheckMain(m) }
func CheckMain(m interface{ Run() int }) {
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(5 * time.Second)
		var left []string
		for {
			left = left[:0]
			for _, stack := range snapshot() {
				if !ignored(stack) {
					left = append(left, stack)
				}
			}
			if len(left) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if len(left) > 0 {
			println("leaktest: goroutines left after all tests:\n\n" + strings.Join(left, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

func snapshot() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		header, _, _ := strings.Cut(g, "\n")
		// "goroutine 17 [running]:" -> "goroutine 17"
		id, _, _ := strings.Cut(header, " [")
		out[id] = g
	}
	return out
}

// ignored reports goroutines that belong to the runtime or the test binary:
// other tests' goroutines, the alarm, the signal loop.
func ignored(stack string) bool {
	for _, s := range []string{
		"created by testing.(*T).Run",
		"created by testing.(*F).Fuzz",
		"created by testing.runFuzzing",
		"testing.(*M).startAlarm",
		"testing.runTests",
		"testing.RunTests",
		"os/signal.signal_recv",
		"runtime.ensureSigM",
		"created by runtime.",
		"leaktest.CheckMain",
	} {
		if strings.Contains(stack, s) {
			return true
		}
	}
	return false
}
