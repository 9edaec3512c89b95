package horde

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"time"

	"github.com/hordekit/httpretry"
)

// Store keeps the last good copy of each API response: its raw JSON and the
// time it was fetched, so that a copy read back after a restart, or by
// another replica, is decoded and aged like one fetched a moment ago.
//
// The Client reads the copy on every call and writes it after every
// successful fetch; it never deletes one, because an old copy is exactly what
// is served during an outage. An implementation backed by a shared server
// (Redis) should expire copies on its own, after far longer than the
// Client's FreshFor (hours or days, not seconds), and bound its own calls
// with short timeouts, because the Client may pass a context without a
// deadline.
//
// Implementations must be safe for concurrent use.
type Store interface {
	// Get returns the copy stored under key and when it was fetched. ok is
	// false, with a nil error, when there is none. An error means the store
	// could not be read; the Client then fetches as if there were no copy
	// and reports the error only if the fetch fails too. The caller does not
	// modify the returned slice.
	Get(ctx context.Context, key string) (value []byte, storedAt time.Time, ok bool, err error)

	// Set stores value as the copy under key, replacing any older one,
	// with storedAt as its fetch time. The Client does not modify value
	// afterwards. An error is logged and otherwise ignored: the fetched
	// value is still served.
	//
	// Keys are short printable ASCII strings, an API path and its sorted
	// query ("v2/workers?type=text"); a shared store may prefix them.
	Set(ctx context.Context, key string, value []byte, storedAt time.Time) error
}

// DefaultMaxEntries bounds a MemoryStore whose MaxEntries is 0. The Client's
// keys are a handful of endpoints, multiplied only by the min_count values
// callers ask for, so this is far more than it normally holds.
const DefaultMaxEntries = 1024

// MemoryStore is a Store in the process's memory: the copies die with it.
// Its zero value is ready to use.
type MemoryStore struct {
	// MaxEntries bounds how many copies it keeps, so that callers asking for
	// ever new queries cannot grow it without end; when a new key would pass
	// it, the copy fetched longest ago goes. 0 means DefaultMaxEntries.
	MaxEntries int

	mu sync.Mutex
	m  map[string]memoryEntry
}

type memoryEntry struct {
	value []byte
	at    time.Time
}

var _ Store = (*MemoryStore)(nil)

// Get returns the copy under key. It never fails.
func (s *MemoryStore) Get(_ context.Context, key string) ([]byte, time.Time, bool, error) {
	s.mu.Lock()
	e, ok := s.m[key]
	s.mu.Unlock()
	return e.value, e.at, ok, nil
}

// Set stores value under key. It never fails.
func (s *MemoryStore) Set(_ context.Context, key string, value []byte, storedAt time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[string]memoryEntry)
	}
	if _, ok := s.m[key]; !ok && len(s.m) >= s.maxEntries() {
		s.evictOldestLocked()
	}
	s.m[key] = memoryEntry{value: value, at: storedAt}
	return nil
}

func (s *MemoryStore) maxEntries() int {
	if s.MaxEntries > 0 {
		return s.MaxEntries
	}
	return DefaultMaxEntries
}

// evictOldestLocked drops the copy fetched longest ago. A linear scan: it
// runs only when the store is full, which the Client's few keys rarely make
// it.
func (s *MemoryStore) evictOldestLocked() {
	var (
		oldest string
		at     time.Time
		found  bool
	)
	for k, e := range s.m {
		if !found || e.at.Before(at) {
			oldest, at, found = k, e.at, true
		}
	}
	delete(s.m, oldest)
}

// copyOf is a copy of a response as the Store holds it.
type copyOf struct {
	raw []byte
	at  time.Time
}

// served is what lookup hands back: a copy, its age, and whether and why it
// is stale.
type served struct {
	copyOf
	age          time.Duration
	stale        bool
	revalidating bool  // stale, served at once while a refresh runs
	err          error // why it is stale, when the API could not be read
}

// lookup returns the copy of ep to serve: the stored one while it is fresh;
// within the stale-while-revalidate window after that, the stored one at
// once while a background fetch refreshes it; else a new one from the API,
// or the stored one marked stale when that fails. With no copy at all it
// returns an error matching ErrDegraded.
func (c *Client) lookup(ctx context.Context, ep endpoint) (served, error) {
	if err := c.init(); err != nil {
		return served{}, err
	}
	key := ep.key()
	have, ok, storeErr := c.load(ctx, ep, key)
	if ok {
		age := c.clk.Now().Sub(have.at)
		if age < c.freshFor() {
			return c.serve(have, false, nil), nil
		}
		if age < c.freshFor()+c.staleWhileRevalidate() {
			if _, err := c.startRefresh(ctx, ep, key); err != nil {
				return c.serve(have, true, err), nil
			}
			s := c.serve(have, true, nil)
			s.revalidating = true
			return s, nil
		}
	}
	f, err := c.startRefresh(ctx, ep, key)
	if err == nil {
		select {
		case <-f.done:
			if f.err == nil {
				return c.serve(f.copy, false, nil), nil
			}
			err = f.err
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if ok {
		return c.serve(have, true, err), nil
	}
	if storeErr != nil {
		err = errors.Join(err, storeErr)
	}
	return served{}, c.degraded(ep, err)
}

// startRefresh joins the fetch of key in progress or starts one, or returns
// ErrClosed after Close. The fetch runs apart from the caller's context
// (keeping its values), so that a caller giving up neither cancels it for
// the others sharing it nor stops it refreshing the copy for the next
// caller. It is bounded by the retry policy's own limits instead, and by
// Close.
func (c *Client) startRefresh(ctx context.Context, ep endpoint, key string) (*flight, error) {
	f := c.flights.start(ctx, key, func(ctx context.Context) (copyOf, error) {
		return c.refresh(ctx, ep, key)
	})
	if f == nil {
		return nil, ErrClosed
	}
	return f, nil
}

// load reads key's copy; a store that fails counts as having none, and so
// does a copy that no longer passes ep's check (a shared store can hold
// anything), which must be neither served nor taken as fresh.
func (c *Client) load(ctx context.Context, ep endpoint, key string) (copyOf, bool, error) {
	raw, at, ok, err := c.store.Get(ctx, key)
	if err != nil {
		c.logger().LogAttrs(ctx, slog.LevelWarn, "AI Horde cache read failed",
			slog.String("key", key), slog.String("error", err.Error()))
		return copyOf{}, false, fmt.Errorf("horde: reading the cache: %w", err)
	}
	if ok && !c.checked.known(key, at, raw) {
		if err := ep.check(raw); err != nil {
			c.logger().LogAttrs(ctx, slog.LevelWarn, "AI Horde cache copy ignored: it fails validation",
				slog.String("key", key), slog.String("error", err.Error()))
			return copyOf{}, false, nil
		}
		c.checked.remember(key, at, raw)
	}
	return copyOf{raw: raw, at: at}, ok, nil
}

func (c *Client) serve(cp copyOf, stale bool, err error) served {
	// A copy stamped by a replica whose clock runs ahead is not "from the
	// future"; it is new.
	return served{copyOf: cp, age: max(c.clk.Now().Sub(cp.at), 0), stale: stale, err: err}
}

// refresh fetches ep and stores the result. It runs once per flight.
func (c *Client) refresh(ctx context.Context, ep endpoint, key string) (copyOf, error) {
	// A caller can miss a flight that has just stored a fresh copy (it read
	// the store before that flight ended and asks after): reading again
	// costs one store read per refresh and saves an upstream request.
	if cp, ok, _ := c.load(ctx, ep, key); ok && c.clk.Now().Sub(cp.at) < c.freshFor() {
		return cp, nil
	}
	raw, err := c.fetch(ctx, ep)
	if err != nil {
		c.logger().LogAttrs(ctx, slog.LevelWarn, "AI Horde fetch failed",
			slog.String("key", key), slog.String("error", httpretry.RedactError(err)))
		return copyOf{}, err
	}
	cp := copyOf{raw: raw, at: c.clk.Now()}
	c.checked.remember(key, cp.at, raw)
	if err := c.store.Set(ctx, key, raw, cp.at); err != nil {
		c.logger().LogAttrs(ctx, slog.LevelWarn, "AI Horde cache write failed",
			slog.String("key", key), slog.String("error", err.Error()))
	}
	return cp, nil
}

// checkedCopies remembers, per key, a digest of the last copy that passed
// its check, so that a copy read back from the Store is not decoded again on
// every call: the worker list is megabytes of JSON. A copy counts as known
// when its fetch time, length and hash all match. It is bounded like
// MemoryStore and forgets everything when full.
type checkedCopies struct {
	mu   sync.Mutex
	seed maphash.Seed
	m    map[string]checkedCopy
}

type checkedCopy struct {
	at   time.Time
	size int
	sum  uint64
}

func (k *checkedCopies) digest(at time.Time, raw []byte) checkedCopy {
	return checkedCopy{at: at, size: len(raw), sum: maphash.Bytes(k.seed, raw)}
}

func (k *checkedCopies) known(key string, at time.Time, raw []byte) bool {
	k.mu.Lock()
	prev, ok := k.m[key]
	seed := k.seed
	k.mu.Unlock()
	if !ok || !prev.at.Equal(at) || prev.size != len(raw) {
		return false
	}
	return prev.sum == maphash.Bytes(seed, raw)
}

func (k *checkedCopies) remember(key string, at time.Time, raw []byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil || len(k.m) >= DefaultMaxEntries {
		k.m = make(map[string]checkedCopy)
		k.seed = maphash.MakeSeed()
	}
	k.m[key] = k.digest(at, raw)
}

// flights lets concurrent callers for one key share one fetch: the first
// starts it, the others wait for its result. It is a small stand-in for
// golang.org/x/sync/singleflight with two differences: the fetch runs on its
// own goroutine, so that every waiter, the first included, can leave when
// its own context ends while the fetch goes on (or none waits at all, for a
// background refresh); and close cancels and waits for every fetch.
type flights struct {
	mu     sync.Mutex
	m      map[string]*flight
	closed bool
	ctx    context.Context // cancelled by close
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// flight is one fetch in progress. copy and err are written before done is
// closed and only read after.
type flight struct {
	done chan struct{}
	copy copyOf
	err  error
}

func (g *flights) init() {
	g.ctx, g.cancel = context.WithCancel(context.Background())
}

// start returns the flight for key, starting fn in a new one if none is in
// progress, or nil after close. fn gets ctx's values, and is cancelled by
// close rather than by ctx.
func (g *flights) start(ctx context.Context, key string, fn func(context.Context) (copyOf, error)) *flight {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	if f, ok := g.m[key]; ok {
		return f
	}
	if g.m == nil {
		g.m = make(map[string]*flight)
	}
	f := &flight{done: make(chan struct{})}
	g.m[key] = f
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(g.ctx, cancel)
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		f.copy, f.err = fn(fctx)
		stop()
		cancel()
		g.mu.Lock()
		delete(g.m, key)
		g.mu.Unlock()
		close(f.done)
	}()
	return f
}

// close stops new flights, cancels those running and waits for them.
func (g *flights) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.cancel()
	g.wg.Wait()
}

// wait waits for the flights running now; tests use it.
func (g *flights) wait() { g.wg.Wait() }
