package rediscache_test

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/clock"
	"github.com/hordekit/httpretry/horde"
	"github.com/hordekit/httpretry/horde/rediscache"
	"github.com/hordekit/httpretry/internal/leaktest"
	"github.com/hordekit/httpretry/internal/redistest"
)

// statusKey is the Redis key of the image model status with the default
// prefix: the Client's key for the endpoint, as the package documents.
const statusKey = rediscache.DefaultPrefix + "v2/status/models?model_state=known&type=image"

// The requirement: the Redis cache survives a client restart. Client
// A fetches and is thrown away with its Redis connection; a new Client, on a
// new connection to the same Redis, serves A's copy: as fresh while it is
// young, and as the stale copy, with its true age, once the API is down.
func TestCacheSurvivesClientRestart(t *testing.T) {
	for _, outage := range []struct {
		name string
		down func(*fakeAPI)
		// check judges Result.Err, why the copy is stale.
		check func(*testing.T, error)
	}{
		{"api answers 503", func(f *fakeAPI) { f.down.Store(true) }, func(t *testing.T, err error) {
			var se *httpretry.StatusError
			if !errors.As(err, &se) || se.Response.StatusCode != http.StatusServiceUnavailable {
				t.Errorf("Err = %v, want the API's 503", err)
			}
		}},
		{"api gone", func(f *fakeAPI) { f.Close() }, func(t *testing.T, err error) {
			if err == nil {
				t.Error("Err = nil, want the connection's error")
			}
		}},
	} {
		t.Run(outage.name, func(t *testing.T) {
			leaktest.Check(t)
			srv := redistest.Start(t)
			api := startAPI(t)
			ctx := context.Background()

			// Client A fetches at epoch and stores the copy in Redis.
			rdbA := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true})
			a, _ := newHordeClient(t, api.base(), rediscache.New(rdbA, rediscache.Options{}), epoch)
			got, err := a.ModelStatus(ctx, horde.StatusQuery{})
			if err != nil || got.Stale || got.Age != 0 || !got.FetchedAt.Equal(epoch) || len(got.Value) == 0 {
				t.Fatalf("A: %+v, %v; want a fresh copy fetched at %v", got, err, epoch)
			}
			if n := api.requests.Load(); n != 1 {
				t.Fatalf("A made %d API requests, want 1", n)
			}
			if n, err := rdbA.Exists(ctx, statusKey).Result(); n != 1 || err != nil {
				t.Fatalf("key %q after A's fetch: exists %d, %v", statusKey, n, err)
			}
			// A goes away: its connections, its Redis client, its memory.
			a.CloseIdleConnections()
			if err := rdbA.Close(); err != nil {
				t.Fatal(err)
			}
			a, rdbA = nil, nil

			// A replica started 30 s later serves the copy as fresh, from
			// Redis alone.
			fresh, _ := newHordeClient(t, api.base(), rediscache.New(newRedis(t, srv.Addr, true), rediscache.Options{}),
				epoch.Add(30*time.Second))
			res, err := fresh.ModelStatus(ctx, horde.StatusQuery{})
			if err != nil || res.Stale || res.Age != 30*time.Second || !res.FetchedAt.Equal(epoch) ||
				!reflect.DeepEqual(res.Value, got.Value) {
				t.Errorf("new client within FreshFor: stale %v, age %v, fetched %v, %v; want A's copy, 30s old",
					res.Stale, res.Age, res.FetchedAt, err)
			}
			if n := api.requests.Load(); n != 1 {
				t.Errorf("%d API requests after the fresh read, want still 1", n)
			}

			// The API goes down, and client B starts 10 minutes after A's
			// fetch: it tries the API, fails, and serves the copy stale.
			outage.down(api)
			before := api.requests.Load()
			b, clkB := newHordeClient(t, api.base(), rediscache.New(newRedis(t, srv.Addr, true), rediscache.Options{}),
				epoch.Add(10*time.Minute))
			res, err = b.ModelStatus(ctx, horde.StatusQuery{})
			if err != nil {
				t.Fatalf("B: %v; want the stale copy from Redis", err)
			}
			if !res.Stale || !res.FetchedAt.Equal(epoch) || !reflect.DeepEqual(res.Value, got.Value) {
				t.Errorf("B: stale %v, fetched %v, %d models; want A's copy (fetched %v, %d models), stale",
					res.Stale, res.FetchedAt, len(res.Value), epoch, len(got.Value))
			}
			// The age is B's time less A's fetch time. B's clock has also
			// moved by the retry waits, which a fake clock skips but counts.
			if want := clkB.Now().Sub(epoch); res.Age != want || res.Age < 10*time.Minute {
				t.Errorf("B: age %v, want %v (at least 10m)", res.Age, want)
			}
			outage.check(t, res.Err)
			if outage.name == "api answers 503" && api.requests.Load() == before {
				t.Error("B served the stale copy without trying the API")
			}
		})
	}
}

// Redis killed while the API is up: every call is still answered from the
// API, none waits more than one OpTimeout on Redis (the later Store calls of
// the same request fail at once), and the cache works again once Redis is
// back.
func TestStoppedRedisDoesNotHoldRequests(t *testing.T) {
	leaktest.Check(t)
	srv := redistest.Start(t)
	api := startAPI(t)
	storeClk := clock.NewFake(epoch) // measures DownFor
	store := &timedStore{Store: rediscache.New(newRedis(t, srv.Addr, true),
		rediscache.Options{OpTimeout: opTimeout, Clock: storeClk})}
	c, clk := newHordeClient(t, api.base(), store, epoch)
	ctx := context.Background()
	if _, err := c.ModelStatus(ctx, horde.StatusQuery{}); err != nil { // a copy in Redis, a pooled connection
		t.Fatal(err)
	}
	store.take()

	srv.Stop()
	clk.Advance(time.Minute) // the copy would be stale anyway
	requests := api.requests.Load()
	start := time.Now()
	res, err := c.ModelStatus(ctx, horde.StatusQuery{})
	d := time.Since(start)
	if err != nil || res.Stale || res.Age != 0 || len(res.Value) == 0 {
		t.Fatalf("with Redis stopped: %+v, %v; want a fresh copy from the API", res, err)
	}
	if api.requests.Load() != requests+1 {
		t.Errorf("%d API requests, want 1", api.requests.Load()-requests)
	}
	if d > latencyBound {
		t.Errorf("the call took %v with Redis stopped, want at most %v", d, latencyBound)
	}
	calls := store.take()
	if len(calls) != 3 || calls[0].err == nil || calls[0].d > latencyBound {
		t.Fatalf("store calls %v; want a Get that failed within %v, then two more", calls, latencyBound)
	}
	for _, call := range calls[1:] {
		if !errors.Is(call.err, rediscache.ErrUnavailable) {
			t.Errorf("%s after the first failure: %v, want ErrUnavailable", call.op, call.err)
		}
	}
	t.Logf("with Redis stopped: call %v; store calls %v", d, calls)

	// Within DownFor, no Store call goes near Redis.
	clk.Advance(time.Minute)
	if _, err := c.ModelStatus(ctx, horde.StatusQuery{}); err != nil {
		t.Fatal(err)
	}
	for _, call := range store.take() {
		if !errors.Is(call.err, rediscache.ErrUnavailable) {
			t.Errorf("%s inside DownFor: %v, want ErrUnavailable", call.op, call.err)
		}
	}

	// Redis is back, empty; after DownFor the Store fills it again, and the
	// next call within FreshFor is served from it.
	srv.Restart()
	storeClk.Advance(rediscache.DefaultDownFor)
	clk.Advance(time.Minute)
	if _, err := c.ModelStatus(ctx, horde.StatusQuery{}); err != nil {
		t.Fatal(err)
	}
	for _, call := range store.take() {
		if call.err != nil {
			t.Errorf("%s after Redis came back: %v", call.op, call.err)
		}
	}
	requests = api.requests.Load()
	other, _ := newHordeClient(t, api.base(), rediscache.New(newRedis(t, srv.Addr, true), rediscache.Options{}), clk.Now())
	if res, err := other.ModelStatus(ctx, horde.StatusQuery{}); err != nil || res.Stale || api.requests.Load() != requests {
		t.Errorf("a new client after recovery: stale %v, %v, %d API requests; want Redis's fresh copy",
			res.Stale, err, api.requests.Load()-requests)
	}
}

// Redis hung (it accepts and never answers), reached through a client that
// ignores context deadlines: a call whose copy is stale waits one OpTimeout
// for Redis, then is answered from the API.
func TestHungRedisDoesNotHoldRequests(t *testing.T) {
	leaktest.Check(t)
	srv := redistest.Start(t)
	api := startAPI(t)
	store := &timedStore{Store: rediscache.New(newRedis(t, srv.Addr, false),
		rediscache.Options{OpTimeout: opTimeout, Clock: clock.NewFake(epoch)})}
	c, clk := newHordeClient(t, api.base(), store, epoch)
	ctx := context.Background()
	if _, err := c.ModelStatus(ctx, horde.StatusQuery{}); err != nil {
		t.Fatal(err)
	}
	store.take()

	srv.Pause()
	defer srv.Resume() // before the client closes, so the abandoned commands end
	clk.Advance(time.Minute)
	start := time.Now()
	res, err := c.ModelStatus(ctx, horde.StatusQuery{})
	d := time.Since(start)
	if err != nil || res.Stale || len(res.Value) == 0 {
		t.Fatalf("with Redis hung: %+v, %v; want a fresh copy from the API", res, err)
	}
	if d > latencyBound {
		t.Errorf("the call took %v with Redis hung, want at most %v", d, latencyBound)
	}
	calls := store.take()
	if len(calls) == 0 || !errors.Is(calls[0].err, context.DeadlineExceeded) {
		t.Errorf("store calls %v; want a Get that timed out first", calls)
	}
	t.Logf("with Redis hung: call %v; store calls %v", d, calls)
}
