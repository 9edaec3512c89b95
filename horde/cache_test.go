package horde_test

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/hordekit/httpretry/horde"
	"github.com/hordekit/httpretry/internal/faultserver"
	"github.com/hordekit/httpretry/internal/leaktest"
)

// signalStore is a MemoryStore that announces every Get on gets, so a test
// can tell, without sleeping, that callers have checked the cache.
type signalStore struct {
	horde.MemoryStore
	gets chan struct{}
}

func (s *signalStore) Get(ctx context.Context, key string) ([]byte, time.Time, bool, error) {
	s.gets <- struct{}{}
	return s.MemoryStore.Get(ctx, key)
}

func TestConcurrentCallersShareOneFetch(t *testing.T) {
	leaktest.Check(t)
	srv := startFake(t)
	c, clk, _ := newClient(t, srv.base())
	const callers = 100
	store := &signalStore{gets: make(chan struct{}, 4*callers)}
	c.Store = store
	ctx := context.Background()

	if _, err := c.ModelStatus(ctx, horde.StatusQuery{}); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the caller's read and the fetch's second look
		<-store.gets
	}
	clk.Advance(61 * time.Second)

	// Room for every caller, so that a second upstream request shows up in
	// the count rather than as a hang.
	arrived := make(chan struct{}, callers)
	gate := make(chan struct{})
	srv.gated(arrived, gate)
	results := make([]horde.Result[[]horde.ModelStatus], callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() { results[i], errs[i] = c.ModelStatus(ctx, horde.StatusQuery{}) })
	}
	<-arrived
	// Every caller has found the copy expired, and the fetch has taken its
	// second look, while the one request waits at the gate.
	for range callers + 1 {
		<-store.gets
	}
	close(gate)
	wg.Wait()

	if n := srv.Requests(); n != 2 {
		t.Errorf("%d upstream requests for %d concurrent callers, want 1 (+1 before)", n-1, callers)
	}
	for i := range callers {
		if errs[i] != nil || results[i].Stale || results[i].Age != 0 || len(results[i].Value) != 6 {
			t.Fatalf("caller %d: %+v, %v", i, results[i], errs[i])
		}
	}
}

// A caller whose context ends while the fetch it waits on is slow gets the
// stale copy at once; the fetch goes on and refreshes the cache.
func TestCallerLeavingDoesNotStopTheFetch(t *testing.T) {
	leaktest.Check(t)
	srv := startFake(t)
	c, clk, _ := newClient(t, srv.base())
	good, err := c.Workers(context.Background(), horde.Image)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(61 * time.Second)
	arrived, gate := make(chan struct{}, 2), make(chan struct{})
	srv.gated(arrived, gate)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var res horde.Result[[]horde.Worker]
	go func() {
		defer close(done)
		res, err = c.Workers(ctx, horde.Image)
	}()
	<-arrived
	cancel()
	<-done
	if err != nil || !res.Stale || !errors.Is(res.Err, context.Canceled) || !reflect.DeepEqual(res.Value, good.Value) {
		t.Fatalf("caller that left: stale=%v Err=%v err=%v", res.Stale, res.Err, err)
	}

	close(gate)
	res, err = c.Workers(context.Background(), horde.Image)
	if err != nil || res.Stale || res.Age != 0 {
		t.Errorf("after the fetch: stale=%v age=%v err=%v", res.Stale, res.Age, err)
	}
	if n := srv.Requests(); n != 2 {
		t.Errorf("%d upstream requests, want 2", n)
	}
}

func TestCallerLeavingWithoutCopyIsDegraded(t *testing.T) {
	leaktest.Check(t)
	srv := startFake(t)
	c, _, _ := newClient(t, srv.base())
	arrived, gate := make(chan struct{}, 2), make(chan struct{})
	srv.gated(arrived, gate)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := c.Workers(ctx, horde.Text)
		done <- err
	}()
	<-arrived
	cancel()
	if err := <-done; !errors.Is(err, horde.ErrDegraded) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want ErrDegraded wrapping context.Canceled", err)
	}
	close(gate)
	if res, err := c.Workers(context.Background(), horde.Text); err != nil || res.Stale {
		t.Errorf("after the fetch: %+v, %v", res, err)
	}
}

// The stored value is the raw JSON and its fetch time, so a new process
// sharing the store serves the copy an old one fetched.
func TestCopyOutlivesTheClient(t *testing.T) {
	leaktest.Check(t)
	srv := startFake(t)
	store := &horde.MemoryStore{}
	before, clk, _ := newClient(t, srv.base())
	before.Store = store
	good, err := before.ModelStats(context.Background(), horde.StatsQuery{Type: horde.Image})
	if err != nil {
		t.Fatal(err)
	}

	srv.outage(faultserver.Status(503))
	after, _, _ := newClient(t, srv.base())
	after.Store = store
	after.Clock = clk
	clk.Advance(10 * time.Minute)
	res, err := after.ModelStats(context.Background(), horde.StatsQuery{Type: horde.Image})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Stale || res.Age < 10*time.Minute || !res.FetchedAt.Equal(good.FetchedAt) || !reflect.DeepEqual(res.Value, good.Value) {
		t.Errorf("copy after restart: stale=%v age=%v fetched=%v", res.Stale, res.Age, res.FetchedAt)
	}
}

var errStoreDown = errors.New("store down")

// brokenStore fails every read and write, like a Redis that is gone.
type brokenStore struct{}

func (brokenStore) Get(context.Context, string) ([]byte, time.Time, bool, error) {
	return nil, time.Time{}, false, errStoreDown
}

func (brokenStore) Set(context.Context, string, []byte, time.Time) error { return errStoreDown }

func TestBrokenStoreFallsBackToTheAPI(t *testing.T) {
	leaktest.Check(t)
	srv := startFake(t)
	c, _, _ := newClient(t, srv.base())
	c.Store = brokenStore{}
	res, err := c.Workers(context.Background(), horde.Text)
	if err != nil || res.Stale || len(res.Value) != 4 {
		t.Fatalf("healthy API, broken store: %d workers, stale=%v, %v", len(res.Value), res.Stale, err)
	}

	srv.outage(faultserver.Status(502))
	_, err = c.Workers(context.Background(), horde.Text)
	if !errors.Is(err, horde.ErrDegraded) || !errors.Is(err, errStoreDown) {
		t.Errorf("err = %v, want ErrDegraded naming the store failure too", err)
	}
}

func TestMemoryStoreKeepsTheNewestCopies(t *testing.T) {
	s := &horde.MemoryStore{MaxEntries: 2}
	ctx := context.Background()
	set := func(key string, at time.Duration) {
		if err := s.Set(ctx, key, []byte(key), epoch.Add(at)); err != nil {
			t.Fatal(err)
		}
	}
	set("b", 2*time.Second)
	set("a", time.Second)
	set("a", 3*time.Second) // replacing a key evicts nothing
	set("c", 4*time.Second) // b is now the oldest
	for key, want := range map[string]bool{"a": true, "b": false, "c": true} {
		v, at, ok, err := s.Get(ctx, key)
		if err != nil || ok != want || ok && string(v) != key {
			t.Errorf("Get(%q) = %q, %v, %v, %v", key, v, at, ok, err)
		}
	}
	if _, at, _, _ := s.Get(ctx, "a"); !at.Equal(epoch.Add(3 * time.Second)) {
		t.Errorf("a stored at %v", at)
	}
}

func TestFreshForAndUserAgentFields(t *testing.T) {
	leaktest.Check(t)
	srv := startFake(t)
	c, clk, _ := newClient(t, srv.base())
	c.FreshFor = 5 * time.Minute
	c.UserAgent = "model-reference/2"
	for range 2 {
		if _, err := c.Workers(context.Background(), horde.Image); err != nil {
			t.Fatal(err)
		}
		clk.Advance(4 * time.Minute)
	}
	if n := srv.Requests(); n != 1 {
		t.Errorf("%d upstream requests within FreshFor, want 1", n)
	}
	if ua := srv.Log()[0].Header.Get("User-Agent"); ua != "model-reference/2" {
		t.Errorf("User-Agent %q", ua)
	}
}

// A shared store can hold a copy that does not decode (written by another
// version, or by hand): it must be neither served nor taken as fresh.
func TestCopyThatDoesNotDecodeIsIgnored(t *testing.T) {
	leaktest.Check(t)
	srv := startFake(t)
	c, clk, _ := newClient(t, srv.base())
	store := &horde.MemoryStore{}
	c.Store = store
	if err := store.Set(context.Background(), "v2/workers?type=text", []byte("null"), clk.Now()); err != nil {
		t.Fatal(err)
	}
	res, err := c.Workers(context.Background(), horde.Text)
	if err != nil || res.Stale || len(res.Value) != 4 {
		t.Fatalf("with a bad copy stored: %d workers, stale=%v, %v; want a fresh fetch", len(res.Value), res.Stale, err)
	}
	if srv.Requests() != 1 {
		t.Fatalf("upstream saw %d requests, want 1: the bad copy must not count as fresh", srv.Requests())
	}
}
