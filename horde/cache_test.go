package horde_test

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/hordekit/httpretry"
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
	clk.Advance(expired)

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
	clk.Advance(expired)
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

// Within StaleWhileRevalidate after expiry, callers get the copy at once,
// marked stale and revalidating, while one background fetch refreshes it;
// the next caller after that fetch gets the new copy.
func TestStaleWhileRevalidateServesAtOnce(t *testing.T) {
	leaktest.Check(t)
	srv := startFake(t)
	c, clk, _ := newClient(t, srv.base())
	ctx := context.Background()
	good, err := c.ModelStatus(ctx, horde.StatusQuery{})
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(horde.DefaultFreshFor + 10*time.Second)
	arrived, gate := make(chan struct{}, 4), make(chan struct{})
	srv.gated(arrived, gate)

	// The refresh is held at the gate: a caller that waited for it would
	// never return.
	for i := range 3 {
		res, err := c.ModelStatus(ctx, horde.StatusQuery{})
		if err != nil || !res.Stale || !res.Revalidating || res.Err != nil || res.Age != 70*time.Second ||
			!res.FetchedAt.Equal(epoch) || !reflect.DeepEqual(res.Value, good.Value) {
			t.Fatalf("caller %d in the window: stale=%v revalidating=%v Err=%v age=%v fetched=%v, %v",
				i, res.Stale, res.Revalidating, res.Err, res.Age, res.FetchedAt, err)
		}
	}
	<-arrived
	close(gate)
	horde.WaitFetches(c)
	if n := srv.Requests(); n != 2 {
		t.Errorf("%d upstream requests, want 2: one background refresh for three callers", n)
	}
	res, err := c.ModelStatus(ctx, horde.StatusQuery{})
	if err != nil || res.Stale || res.Revalidating || res.Age != 0 || !res.FetchedAt.Equal(epoch.Add(70*time.Second)) {
		t.Errorf("after the refresh: stale=%v revalidating=%v age=%v fetched=%v, %v",
			res.Stale, res.Revalidating, res.Age, res.FetchedAt, err)
	}
}

// Past the window, the caller waits for the refresh, as without one.
func TestStaleWhileRevalidateWindowEnds(t *testing.T) {
	leaktest.Check(t)
	srv := startFake(t)
	c, clk, _ := newClient(t, srv.base())
	c.StaleWhileRevalidate = 30 * time.Second
	ctx := context.Background()
	if _, err := c.Workers(ctx, horde.Image); err != nil {
		t.Fatal(err)
	}
	clk.Advance(horde.DefaultFreshFor + 30*time.Second) // the window is [60 s, 90 s)
	arrived, gate := make(chan struct{}, 2), make(chan struct{})
	srv.gated(arrived, gate)

	done := make(chan horde.Result[[]horde.Worker], 1)
	go func() {
		res, _ := c.Workers(ctx, horde.Image)
		done <- res
	}()
	<-arrived
	select {
	case res := <-done:
		t.Fatalf("returned before the refresh ended: stale=%v revalidating=%v", res.Stale, res.Revalidating)
	default:
	}
	close(gate)
	if res := <-done; res.Stale || res.Revalidating || res.Age != 0 {
		t.Errorf("past the window: stale=%v revalidating=%v age=%v; want the refreshed copy", res.Stale, res.Revalidating, res.Age)
	}
}

// A background refresh that fails leaves the copy in place; callers in the
// window keep getting it at once (each after a failed refresh starts
// another), and past the window they wait and get it with the failure.
func TestFailedRevalidationKeepsTheCopy(t *testing.T) {
	leaktest.Check(t)
	srv := startFake(t)
	c, clk, cb := newClient(t, srv.base())
	ctx := context.Background()
	good, err := c.ModelStats(ctx, horde.StatsQuery{Type: horde.Text})
	if err != nil {
		t.Fatal(err)
	}
	srv.outage(faultserver.Status(503))
	clk.Advance(horde.DefaultFreshFor)
	for round := 1; round <= 2; round++ {
		res, err := c.ModelStats(ctx, horde.StatsQuery{Type: horde.Text})
		if err != nil || !res.Stale || !res.Revalidating || res.Err != nil || !reflect.DeepEqual(res.Value, good.Value) {
			t.Fatalf("round %d: stale=%v revalidating=%v Err=%v, %v", round, res.Stale, res.Revalidating, res.Err, err)
		}
		horde.WaitFetches(c)
		if n := srv.Requests(); n != int64(1+3*round) {
			t.Errorf("round %d: %d upstream requests, want 1 + 3 per refresh", round, n)
		}
	}
	if n := cb.ConsecutiveFailures(); n != 2 {
		t.Errorf("breaker failures %d, want 2", n)
	}

	clk.Advance(horde.DefaultStaleWhileRevalidate)
	res, err := c.ModelStats(ctx, horde.StatsQuery{Type: horde.Text})
	se, ok := errors.AsType[*httpretry.StatusError](res.Err)
	if err != nil || !res.Stale || res.Revalidating || !ok || se.Response.StatusCode != 503 || !res.FetchedAt.Equal(epoch) {
		t.Errorf("past the window: stale=%v revalidating=%v Err=%v fetched=%v, %v", res.Stale, res.Revalidating, res.Err, res.FetchedAt, err)
	}
}

// Close cancels a background refresh and waits for it; afterwards calls
// serve what the Store holds and fetch nothing.
func TestCloseStopsBackgroundFetches(t *testing.T) {
	leaktest.Check(t)
	srv := startFake(t)
	c, clk, _ := newClient(t, srv.base())
	ctx := context.Background()
	if _, err := c.Workers(ctx, horde.Text); err != nil {
		t.Fatal(err)
	}
	clk.Advance(horde.DefaultFreshFor)
	arrived, gate := make(chan struct{}, 2), make(chan struct{})
	defer close(gate) // lets the fake server's handler end
	srv.gated(arrived, gate)
	if res, err := c.Workers(ctx, horde.Text); err != nil || !res.Revalidating {
		t.Fatalf("in the window: revalidating=%v, %v", res.Revalidating, err)
	}
	<-arrived
	if err := c.Close(); err != nil { // returns only once the refresh has ended
		t.Fatal(err)
	}

	res, err := c.Workers(ctx, horde.Text)
	if err != nil || !res.Stale || res.Revalidating || !errors.Is(res.Err, horde.ErrClosed) {
		t.Errorf("after Close, with a copy: stale=%v revalidating=%v Err=%v, %v", res.Stale, res.Revalidating, res.Err, err)
	}
	if _, err := c.Workers(ctx, horde.Image); !errors.Is(err, horde.ErrDegraded) || !errors.Is(err, horde.ErrClosed) {
		t.Errorf("after Close, without a copy: %v", err)
	}
	if n := srv.Requests(); n != 2 {
		t.Errorf("%d upstream requests, want 2", n)
	}
}
