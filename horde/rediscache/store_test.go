package rediscache_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hordekit/httpretry/clock"
	"github.com/hordekit/httpretry/horde/rediscache"
	"github.com/hordekit/httpretry/internal/leaktest"
	"github.com/hordekit/httpretry/internal/redistest"
)

const (
	// opTimeout is the tests' OpTimeout: short, so outages are quick to
	// test, and long enough that a loopback Redis under -race never hits it.
	opTimeout = 150 * time.Millisecond
	// latencyBound is the most a Store call may take while Redis is down or
	// hung: OpTimeout plus room for a loaded machine.
	latencyBound = opTimeout + 500*time.Millisecond
)

func TestRoundTrip(t *testing.T) {
	leaktest.Check(t)
	srv := redistest.Start(t)
	rdb := newRedis(t, srv.Addr, true)
	s := rediscache.New(rdb, rediscache.Options{})
	ctx := context.Background()

	if v, at, ok, err := s.Get(ctx, "v2/workers?type=text"); ok || err != nil || v != nil || !at.IsZero() {
		t.Fatalf("Get(missing) = %q, %v, %v, %v; want nothing, no error", v, at, ok, err)
	}

	// Nanoseconds, a zone that is not UTC, and a monotonic reading that
	// cannot survive the trip; and a body that is not valid UTF-8, to show
	// it is stored byte for byte.
	zone := time.FixedZone("UTC+5:30", 5*3600+30*60)
	at := time.Now().In(zone)
	at = time.Date(at.Year(), at.Month(), at.Day(), at.Hour(), at.Minute(), at.Second(), 123456789, zone)
	value := append(loadFixture(t, statusFixture), 0xff, 0x00, 0xfe)
	const key = "v2/status/models?model_state=known&type=image"
	if err := s.Set(ctx, key, value, at); err != nil {
		t.Fatal(err)
	}
	got, gotAt, ok, err := s.Get(ctx, key)
	if err != nil || !ok {
		t.Fatalf("Get = ok %v, %v", ok, err)
	}
	if !bytes.Equal(got, value) {
		t.Errorf("value = %q, want %q", got, value)
	}
	if !gotAt.Equal(at) || gotAt.Nanosecond() != 123456789 {
		t.Errorf("storedAt = %v, want %v", gotAt, at)
	}
	if _, off := gotAt.Zone(); off != 5*3600+30*60 {
		t.Errorf("storedAt offset = %d s, want 19800", off)
	}

	// The layout the package documents, under the default prefix.
	fields, err := rdb.HGetAll(ctx, rediscache.DefaultPrefix+key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(fields) != 2 || fields["value"] != string(value) || fields["stored_at"] != at.Format(time.RFC3339Nano) {
		t.Errorf("hash = %q, want value and stored_at %q", fields, at.Format(time.RFC3339Nano))
	}

	// A newer copy replaces the old one.
	later := at.Add(time.Minute)
	if err := s.Set(ctx, key, []byte(`[]`), later); err != nil {
		t.Fatal(err)
	}
	if got, gotAt, ok, err := s.Get(ctx, key); err != nil || !ok || string(got) != `[]` || !gotAt.Equal(later) {
		t.Errorf("after a second Set: %q, %v, %v, %v", got, gotAt, ok, err)
	}

	// An empty body is a copy, not a miss.
	if err := s.Set(ctx, "empty", nil, at); err != nil {
		t.Fatal(err)
	}
	if got, _, ok, err := s.Get(ctx, "empty"); err != nil || !ok || len(got) != 0 {
		t.Errorf("empty copy: %q, %v, %v", got, ok, err)
	}
}

// Stores with different prefixes do not see each other's copies; stores
// with the same one (replicas) do.
func TestPrefix(t *testing.T) {
	leaktest.Check(t)
	srv := redistest.Start(t)
	ctx := context.Background()
	a := rediscache.New(newRedis(t, srv.Addr, true), rediscache.Options{Prefix: "svc-a:"})
	b := rediscache.New(newRedis(t, srv.Addr, true), rediscache.Options{Prefix: "svc-b:"})
	a2 := rediscache.New(newRedis(t, srv.Addr, true), rediscache.Options{Prefix: "svc-a:"})
	if err := a.Set(ctx, "k", []byte("x"), epoch); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, err := b.Get(ctx, "k"); ok || err != nil {
		t.Errorf("another prefix sees the copy: ok %v, %v", ok, err)
	}
	if v, _, ok, err := a2.Get(ctx, "k"); !ok || err != nil || string(v) != "x" {
		t.Errorf("the same prefix: %q, %v, %v", v, ok, err)
	}
}

// Every Set gives the key its TTL, the default a day, so the copy outlives
// the 60 s freshness window by far.
func TestTTL(t *testing.T) {
	leaktest.Check(t)
	srv := redistest.Start(t)
	rdb := newRedis(t, srv.Addr, true)
	ctx := context.Background()

	for _, tc := range []struct {
		name string
		ttl  time.Duration
		want time.Duration
	}{
		{"default", 0, rediscache.DefaultTTL},
		{"custom", 90 * time.Minute, 90 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := rediscache.New(rdb, rediscache.Options{TTL: tc.ttl})
			key := "ttl-" + tc.name
			if err := s.Set(ctx, key, []byte("x"), epoch); err != nil {
				t.Fatal(err)
			}
			full := rediscache.DefaultPrefix + key
			checkTTL := func(when string) {
				t.Helper()
				got, err := rdb.PTTL(ctx, full).Result()
				if err != nil {
					t.Fatal(err)
				}
				// Not more than asked for, and not less by more than a
				// generous allowance for a slow machine.
				if got > tc.want || got < tc.want-time.Minute {
					t.Errorf("%s: PTTL = %v, want %v", when, got, tc.want)
				}
			}
			checkTTL("after Set")

			// A later Set restarts the expiry, even of a key that lost it.
			if err := rdb.Persist(ctx, full).Err(); err != nil {
				t.Fatal(err)
			}
			if err := s.Set(ctx, key, []byte("y"), epoch.Add(time.Second)); err != nil {
				t.Fatal(err)
			}
			checkTTL("after a second Set")
		})
	}
}

// Readers racing writers always see the body and the time of the same
// write: Set is one transaction and Get one command.
func TestValueAndTimeAreWrittenTogether(t *testing.T) {
	leaktest.Check(t)
	srv := redistest.Start(t)
	s := rediscache.New(newRedis(t, srv.Addr, true), rediscache.Options{OpTimeout: 5 * time.Second})
	ctx := context.Background()
	const writers, readers, rounds = 4, 4, 200
	body := func(at time.Time) string { return fmt.Sprintf(`{"fetched":%d}`, at.UnixNano()) }

	var wg sync.WaitGroup
	errs := make(chan error, writers+readers)
	for w := range writers {
		wg.Go(func() {
			for i := range rounds {
				at := epoch.Add(time.Duration(w*rounds+i) * time.Nanosecond)
				if err := s.Set(ctx, "k", []byte(body(at)), at); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for range readers {
		wg.Go(func() {
			for range rounds {
				v, at, ok, err := s.Get(ctx, "k")
				if err != nil {
					errs <- err
					return
				}
				if ok && string(v) != body(at) {
					errs <- fmt.Errorf("torn copy: value %s with stored_at %v", v, at.UnixNano())
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// Entries this package did not write are errors, not misses, so the Client
// logs them; and since Redis answered, they do not mark it down.
func TestForeignEntries(t *testing.T) {
	leaktest.Check(t)
	srv := redistest.Start(t)
	rdb := newRedis(t, srv.Addr, true)
	s := rediscache.New(rdb, rediscache.Options{})
	ctx := context.Background()
	p := rediscache.DefaultPrefix

	rdb.HSet(ctx, p+"no-time", "value", "[]")
	rdb.HSet(ctx, p+"no-value", "stored_at", epoch.Format(time.RFC3339Nano))
	rdb.HSet(ctx, p+"bad-time", "value", "[]", "stored_at", "yesterday")
	rdb.Set(ctx, p+"string", "[]", 0)
	for _, key := range []string{"no-time", "no-value", "bad-time", "string"} {
		if v, _, ok, err := s.Get(ctx, key); err == nil || ok || v != nil {
			t.Errorf("Get(%s) = %q, ok %v, %v; want an error", key, v, ok, err)
		} else {
			t.Logf("Get(%s): %v", key, err)
		}
	}
	if err := s.Set(ctx, "string", []byte("[]"), epoch); err == nil {
		t.Error("Set over a string key succeeded, want WRONGTYPE")
	}
	if err := s.Set(ctx, "ok", []byte("[]"), epoch); err != nil {
		t.Errorf("Set after error replies: %v (Redis must not be marked down)", err)
	}
}

func TestSetRejectsTimesOutsideRFC3339(t *testing.T) {
	leaktest.Check(t)
	srv := redistest.Start(t)
	s := rediscache.New(newRedis(t, srv.Addr, true), rediscache.Options{})
	if err := s.Set(context.Background(), "k", []byte("[]"), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)); err == nil {
		t.Error("Set with year 10000 succeeded")
	}
}

// A caller that gives up does not make the Store think Redis is down.
func TestCallerCancellationIsNotAnOutage(t *testing.T) {
	leaktest.Check(t)
	srv := redistest.Start(t)
	s := rediscache.New(newRedis(t, srv.Addr, true), rediscache.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, _, err := s.Get(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("Get with a cancelled context: %v, want context.Canceled", err)
	}
	if _, _, _, err := s.Get(context.Background(), "k"); err != nil {
		t.Errorf("next Get: %v, want none", err)
	}
}

// Redis killed: the first call fails within OpTimeout, the calls after it at
// once with ErrUnavailable for DownFor, and once DownFor has passed the Store
// uses the restarted Redis again.
func TestStoppedRedisFailsFastAndRecovers(t *testing.T) {
	leaktest.Check(t)
	srv := redistest.Start(t)
	clk := clock.NewFake(epoch)
	s := rediscache.New(newRedis(t, srv.Addr, true), rediscache.Options{OpTimeout: opTimeout, Clock: clk})
	ctx := context.Background()
	if err := s.Set(ctx, "k", []byte("[]"), epoch); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	start := time.Now()
	_, _, ok, err := s.Get(ctx, "k")
	if d := time.Since(start); d > latencyBound {
		t.Errorf("first Get with Redis stopped took %v, want at most %v", d, latencyBound)
	}
	if err == nil || ok || errors.Is(err, rediscache.ErrUnavailable) {
		t.Fatalf("first Get with Redis stopped: ok %v, %v; want the connection's error", ok, err)
	}
	t.Logf("first Get: %v", err)
	for _, call := range []func() error{
		func() error { _, _, _, err := s.Get(ctx, "k"); return err },
		func() error { return s.Set(ctx, "k", []byte("[]"), epoch) },
	} {
		if err := call(); !errors.Is(err, rediscache.ErrUnavailable) {
			t.Errorf("call inside DownFor: %v, want ErrUnavailable", err)
		}
	}

	srv.Restart() // empty: persistence is off
	if _, _, _, err := s.Get(ctx, "k"); !errors.Is(err, rediscache.ErrUnavailable) {
		t.Errorf("Get inside DownFor after the restart: %v, want ErrUnavailable", err)
	}
	clk.Advance(rediscache.DefaultDownFor)
	if _, _, ok, err := s.Get(ctx, "k"); ok || err != nil {
		t.Errorf("Get after DownFor: ok %v, %v; want a miss on the empty Redis", ok, err)
	}
	if err := s.Set(ctx, "k", []byte("[]"), epoch); err != nil {
		t.Errorf("Set after DownFor: %v", err)
	}
}

// A Redis that accepts commands and never answers holds no call longer than
// OpTimeout, even through a client that ignores context deadlines (the
// go-redis default). With DownFor off, every call tries, and every one is
// bounded.
func TestHungRedisIsBounded(t *testing.T) {
	leaktest.Check(t)
	srv := redistest.Start(t)
	s := rediscache.New(newRedis(t, srv.Addr, false), rediscache.Options{OpTimeout: opTimeout, DownFor: -1})
	ctx := context.Background()
	if err := s.Set(ctx, "k", []byte("[]"), epoch); err != nil { // connect first
		t.Fatal(err)
	}

	srv.Pause()
	defer srv.Resume() // before the client closes, so the abandoned commands end
	for i := range 3 {
		start := time.Now()
		_, _, _, err := s.Get(ctx, "k")
		if d := time.Since(start); d > latencyBound {
			t.Errorf("Get %d with Redis hung took %v, want at most %v", i, d, latencyBound)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Get %d with Redis hung: %v, want a deadline error", i, err)
		}
		start = time.Now()
		err = s.Set(ctx, "k", []byte("[]"), epoch)
		if d := time.Since(start); d > latencyBound {
			t.Errorf("Set %d with Redis hung took %v, want at most %v", i, d, latencyBound)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Set %d with Redis hung: %v, want a deadline error", i, err)
		}
	}
}

func TestNewPanicsOnNilClient(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("New(nil) did not panic")
		}
	}()
	rediscache.New(nil, rediscache.Options{})
}
