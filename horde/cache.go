package horde

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
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

// served is what lookup hands back: a copy, its age, and why it is stale.
type served struct {
	copyOf
	age      time.Duration
	staleErr error // nil when fresh
}

// lookup returns the copy of ep to serve: the stored one while it is fresh,
// else a new one from the API, else the stored one marked stale. With no
// copy at all it returns an error matching ErrDegraded.
func (c *Client) lookup(ctx context.Context, ep endpoint) (served, error) {
	if err := c.init(); err != nil {
		return served{}, err
	}
	key := ep.key()
	have, ok, storeErr := c.load(ctx, ep, key)
	if ok && c.fresh(have) {
		return c.serve(have, nil), nil
	}
	// The fetch runs apart from the caller's context (keeping its values),
	// so that a caller giving up neither cancels it for the others sharing
	// it nor stops it refreshing the copy for the next caller. It is bounded
	// by the retry policy's own limits instead.
	f := c.flights.start(key, func() (copyOf, error) {
		return c.refresh(context.WithoutCancel(ctx), ep, key)
	})
	var err error
	select {
	case <-f.done:
		if f.err == nil {
			return c.serve(f.copy, nil), nil
		}
		err = f.err
	case <-ctx.Done():
		err = ctx.Err()
	}
	if ok {
		return c.serve(have, err), nil
	}
	if storeErr != nil {
		err = errors.Join(err, storeErr)
	}
	return served{}, c.degraded(ep, err)
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
	if ok {
		if err := ep.check(raw); err != nil {
			c.logger().LogAttrs(ctx, slog.LevelWarn, "AI Horde cache copy ignored: it does not decode",
				slog.String("key", key), slog.String("error", err.Error()))
			return copyOf{}, false, nil
		}
	}
	return copyOf{raw: raw, at: at}, ok, nil
}

func (c *Client) fresh(cp copyOf) bool { return c.clk.Now().Sub(cp.at) < c.freshFor() }

func (c *Client) serve(cp copyOf, staleErr error) served {
	// A copy stamped by a replica whose clock runs ahead is not "from the
	// future"; it is new.
	return served{copyOf: cp, age: max(c.clk.Now().Sub(cp.at), 0), staleErr: staleErr}
}

// refresh fetches ep and stores the result. It runs once per flight.
func (c *Client) refresh(ctx context.Context, ep endpoint, key string) (copyOf, error) {
	// A caller can miss a flight that has just stored a fresh copy (it read
	// the store before that flight ended and asks after): reading again
	// costs one store read per refresh and saves an upstream request.
	if cp, ok, _ := c.load(ctx, ep, key); ok && c.fresh(cp) {
		return cp, nil
	}
	raw, err := c.fetch(ctx, ep)
	if err != nil {
		c.logger().LogAttrs(ctx, slog.LevelWarn, "AI Horde fetch failed",
			slog.String("key", key), slog.String("error", err.Error()))
		return copyOf{}, err
	}
	cp := copyOf{raw: raw, at: c.clk.Now()}
	if err := c.store.Set(ctx, key, raw, cp.at); err != nil {
		c.logger().LogAttrs(ctx, slog.LevelWarn, "AI Horde cache write failed",
			slog.String("key", key), slog.String("error", err.Error()))
	}
	return cp, nil
}

// flights lets concurrent callers for one key share one fetch: the first
// starts it, the others wait for its result. It is a small stand-in for
// golang.org/x/sync/singleflight with one difference: the fetch runs on its
// own goroutine, so that every waiter, the first included, can leave when
// its own context ends while the fetch goes on.
type flights struct {
	mu sync.Mutex
	m  map[string]*flight
}

// flight is one fetch in progress. copy and err are written before done is
// closed and only read after.
type flight struct {
	done chan struct{}
	copy copyOf
	err  error
}

// start returns the flight for key, starting fn in a new one if none is in
// progress.
func (g *flights) start(key string, fn func() (copyOf, error)) *flight {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, ok := g.m[key]; ok {
		return f
	}
	if g.m == nil {
		g.m = make(map[string]*flight)
	}
	f := &flight{done: make(chan struct{})}
	g.m[key] = f
	go func() {
		f.copy, f.err = fn()
		g.mu.Lock()
		delete(g.m, key)
		g.mu.Unlock()
		close(f.done)
	}()
	return f
}
