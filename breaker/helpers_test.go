package breaker_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/clock"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// newBreaker returns a breaker on a fake clock with logs kept in a buffer.
func newBreaker(t *testing.T, cfg breaker.Config) (*breaker.Breaker, *clock.Fake, *logBuffer) {
	t.Helper()
	clk := clock.NewFake(epoch)
	logs := newLogBuffer()
	cfg.Clock = clk
	if cfg.Logger == nil {
		cfg.Logger = logs.logger
	}
	b, err := breaker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b, clk, logs
}

// fail records n failures through the seed's API.
func fail(b *breaker.Breaker, n int) {
	for range n {
		b.RecordFailure()
	}
}

func wantState(t *testing.T, b *breaker.Breaker, want breaker.State) {
	t.Helper()
	if got := b.State(); got != want {
		t.Fatalf("State() = %v, want %v", got, want)
	}
}

func wantUntilRetry(t *testing.T, b *breaker.Breaker, want time.Duration) {
	t.Helper()
	if got, ok := b.UntilRetry(); !ok || got != want {
		t.Fatalf("UntilRetry() = %v, %v; want %v, true", got, ok, want)
	}
}

// logBuffer collects slog records as text lines, without their time.
type logBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	logger *slog.Logger
}

func newLogBuffer() *logBuffer {
	l := &logBuffer{}
	l.logger = slog.New(slog.NewTextHandler(lockedWriter{l}, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		},
	}))
	return l
}

type lockedWriter struct{ l *logBuffer }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	return w.l.buf.Write(p)
}

func (l *logBuffer) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := strings.TrimSpace(l.buf.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// hookLog records OnStateChange calls as "name:from>to".
type hookLog struct {
	mu     sync.Mutex
	events []string
}

func (h *hookLog) record(name string, from, to breaker.State) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, fmt.Sprintf("%s:%v>%v", name, from, to))
}

func (h *hookLog) get() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.events...)
}
