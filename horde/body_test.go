package horde_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/horde"
	"github.com/hordekit/httpretry/internal/leaktest"
)

// statusList is a valid model status body of at least size bytes.
func statusList(size int) []byte {
	var b strings.Builder
	b.WriteString("[")
	for i := 0; b.Len() < size; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(with(goodStatus, "name", strconv.Quote("model-"+strconv.Itoa(i))))
	}
	b.WriteString("]")
	return []byte(b.String())
}

// bodyAPI serves body at every path, chunked (no Content-Length) unless
// withLength, in 16 KiB writes. Before writing past hold bytes it waits for
// gate to close, if gate is set.
type bodyAPI struct {
	*httptest.Server
	body       atomic.Pointer[[]byte]
	withLength bool
	hold       int
	gate       chan struct{}
	requests   atomic.Int64
}

func startBodyAPI(t *testing.T, body []byte, withLength bool) *bodyAPI {
	t.Helper()
	a := &bodyAPI{withLength: withLength}
	a.body.Store(&body)
	a.Server = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.Close)
	return a
}

func (a *bodyAPI) serve(w http.ResponseWriter, r *http.Request) {
	a.requests.Add(1)
	body := *a.body.Load()
	if a.withLength {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	for off := 0; off < len(body); off += 16 << 10 {
		if a.gate != nil && off >= a.hold {
			_ = rc.Flush()
			select {
			case <-a.gate:
			case <-r.Context().Done():
				return
			}
		}
		if _, err := w.Write(body[off:min(off+16<<10, len(body))]); err != nil {
			return
		}
	}
}

// A body over MaxBodySize fails the fetch like one that does not decode,
// whether its Content-Length says so up front or it comes chunked; one just
// under the limit is served.
func TestBodyOverMaxBodySizeFails(t *testing.T) {
	for _, withLength := range []bool{true, false} {
		t.Run("Content-Length "+strconv.FormatBool(withLength), func(t *testing.T) {
			leaktest.Check(t)
			const limit = 64 << 10
			api := startBodyAPI(t, statusList(limit-200), withLength)
			mem := horde.NewBodyMemory(1 << 20)
			c, _, cb := newClient(t, api.URL+"/api/")
			c.MaxBodySize, c.BodyMemory = limit, mem
			ctx := context.Background()

			if res, err := c.ModelStatus(ctx, horde.StatusQuery{}); err != nil || len(res.Value) == 0 {
				t.Fatalf("a body of %d bytes under a limit of %d: %v", len(*api.body.Load()), limit, err)
			}

			big := statusList(limit + 1)
			api.body.Store(&big)
			_, err := c.ModelStats(ctx, horde.StatsQuery{}) // a new key: no copy to fall back on
			be, ok := errors.AsType[*horde.BodyError](err)
			if !errors.Is(err, horde.ErrDegraded) || !ok || !strings.Contains(be.Problem, "exceeds 65536 bytes") {
				t.Fatalf("err = %v, want ErrDegraded with a BodyError saying the body exceeds the limit", err)
			}
			if n := api.requests.Load(); n != 4 {
				t.Errorf("%d requests, want 1 + 3 attempts", n)
			}
			if n := cb.ConsecutiveFailures(); n != 1 {
				t.Errorf("breaker failures %d, want 1", n)
			}
			if n := mem.InUse(); n != 0 {
				t.Errorf("%d bytes still reserved", n)
			}
		})
	}
}

// Fetches share their BodyMemory. While one holds most of it, another
// cannot read its body and fails at once (it never waits for room, so two
// fetches holding part of a body cannot wait on each other); that is retried
// and is no breaker failure. The first fetch finishes, and everything is
// released.
func TestBodyMemoryIsSharedAndNeverWaitedOn(t *testing.T) {
	leaktest.Check(t)
	const size = 160 << 10
	api := startBodyAPI(t, statusList(size), false)
	api.hold, api.gate = 144<<10, make(chan struct{})
	mem := horde.NewBodyMemory(256 << 10)
	c, _, cb := newClient(t, api.URL+"/api/")
	c.BodyMemory = mem
	c.MaxBodySize = 200 << 10

	done := make(chan error, 1)
	go func() {
		_, err := c.ModelStatus(context.Background(), horde.StatusQuery{Type: horde.Text})
		done <- err
	}()
	// A ceiling for the loopback transfer, not a timing assertion.
	for deadline := time.Now().Add(10 * time.Second); mem.InUse() < 144<<10; {
		if time.Now().After(deadline) {
			t.Fatalf("the first fetch reserved %d bytes, want at least %d", mem.InUse(), 144<<10)
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}

	_, err := c.ModelStatus(context.Background(), horde.StatusQuery{Type: horde.Image})
	if !errors.Is(err, horde.ErrDegraded) || !errors.Is(err, horde.ErrBodyMemory) || httpretry.Attempts(err) != 3 {
		t.Errorf("second fetch: %v (%d attempts); want ErrBodyMemory after 3 attempts", err, httpretry.Attempts(err))
	}
	if n := cb.ConsecutiveFailures(); n != 0 {
		t.Errorf("breaker failures %d, want 0: a full BodyMemory is not the API's fault", n)
	}

	close(api.gate)
	if err := <-done; err != nil {
		t.Errorf("first fetch: %v", err)
	}
	if n := mem.InUse(); n != 0 {
		t.Errorf("%d bytes still reserved", n)
	}
}

func TestClientValidate(t *testing.T) {
	for _, tt := range []struct {
		c     *horde.Client
		field string
	}{
		{&horde.Client{FreshFor: -time.Second}, "Client.FreshFor"},
		{&horde.Client{MaxAttempts: -1}, "Client.MaxAttempts"},
		{&horde.Client{AttemptTimeout: -time.Second}, "Client.AttemptTimeout"},
		{&horde.Client{MaxBodySize: -1}, "Client.MaxBodySize"},
		{&horde.Client{MaxBodySize: 2 << 20, BodyMemory: horde.NewBodyMemory(1 << 20)}, "Client.MaxBodySize"},
		{&horde.Client{BodyMemory: horde.NewBodyMemory(1 << 20)}, "BodyMemory"}, // the default MaxBodySize is larger
		{&horde.Client{BaseURL: "ftp://aihorde.net/api/"}, "base URL"},
	} {
		err := tt.c.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("%+v: Validate() = %v, want an error naming %s", tt.c, err, tt.field)
			continue
		}
		if _, callErr := tt.c.Workers(context.Background(), horde.Text); callErr == nil || callErr.Error() != err.Error() {
			t.Errorf("call error %v, want the Validate error", callErr)
		}
		if resp := get(horde.NewHandler(tt.c), "/api/v2/workers"); resp.StatusCode != http.StatusInternalServerError {
			t.Errorf("handler answered %d, want 500", resp.StatusCode)
		}
	}
	ok := &horde.Client{FreshFor: time.Hour, StaleWhileRevalidate: -1, MaxAttempts: 5, AttemptTimeout: time.Second,
		MaxBodySize: 1 << 20, BodyMemory: horde.NewBodyMemory(1 << 20)}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid client: %v", err)
	}
}
