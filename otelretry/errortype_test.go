package otelretry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/breaker"
)

func TestErrorType(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{&breaker.OpenError{Name: "x", State: breaker.Open}, "breaker_open"},
		{fmt.Errorf("gave up: %w", httpretry.ErrBudgetExhausted), "budget_exhausted"},
		{context.Canceled, "canceled"},
		{&httpretry.TimeoutError{Limit: time.Second}, "timeout"},
		{fmt.Errorf("read: %w", context.DeadlineExceeded), "timeout"},
		{&httpretry.BodyError{Err: io.ErrUnexpectedEOF}, "*httpretry.BodyError"},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), "syscall.Errno"},
		{errors.New("something"), "_OTHER"},
	} {
		if got := errorType(c.err).Value.AsString(); got != c.want {
			t.Errorf("errorType(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}
