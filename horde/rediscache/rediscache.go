// Package rediscache is a horde.Store in Redis: the AI Horde client's last
// good copies outlive the process and are shared by every replica that uses
// the same Redis and Prefix. A replica that restarts, or one that has never
// fetched, serves the fleet's copy at once: fresh if it is younger than the
// Client's FreshFor, else as the stale copy while the API is down.
//
// # Layout
//
// Each copy is one Redis hash, Prefix + the Client's key (with the default
// prefix, "httpretry:horde:v2/workers?type=text"), with two fields:
//
//	value      the raw JSON body, byte for byte
//	stored_at  when it was fetched, RFC 3339 with nanoseconds
//	           ("2026-01-01T12:00:00.123456789Z")
//
// Set writes both fields and the key's expiry in one MULTI/EXEC transaction
// (HSET, PEXPIRE), and Get reads both with one HMGET, so a reader never sees
// the body of one fetch with the time of another. A hash rather than an
// encoded blob keeps a copy readable with redis-cli (HGET key stored_at).
//
// storedAt comes back with nanosecond precision and its UTC offset, without
// the monotonic clock reading a time.Now value carries (that reading means
// nothing in another process). Times outside years 0-9999 cannot be stored.
//
// # Expiry
//
// A copy's key expires TTL (24 h) after its last write. That is deliberately
// far longer than the Client's 60 s FreshFor: freshness is judged by the
// Client from stored_at, while the TTL only bounds how long a copy no one
// refreshes lingers, so the stale copy survives a long API outage and any
// number of restarts, and is still cleaned up if the service goes away.
//
// # When Redis fails
//
// A Redis that is down or slow must not hold up the requests the cache
// exists to speed up. Every call gets a context with OpTimeout (200 ms) and
// returns within OpTimeout of real time even if the go-redis client ignores
// context deadlines (its default, ContextTimeoutEnabled false): the command
// then finishes in the background and its result is dropped. Create the
// client with ContextTimeoutEnabled: true so those abandoned commands end at
// the deadline too rather than at go-redis's own ReadTimeout.
//
// A call that fails because Redis could not be reached (a timeout, a refused
// or reset connection, a closed client) marks Redis down for DownFor (1 s):
// meanwhile every call fails at once with an error matching ErrUnavailable,
// without touching the network. This matters because the Client makes up to
// three Store calls per refresh (a read, a second read before fetching, a
// write), and go-redis spends a whole OpTimeout retrying a refused dial:
// without the window a Redis outage would add three OpTimeouts to every
// request; with it a request normally waits one OpTimeout at most, and once
// Redis is marked down none waits at all until the window ends. The first
// calls after it try Redis again. An error reply from Redis (WRONGTYPE, say) proves it is
// reachable and does not mark it down; neither does the caller's own
// cancellation.
//
// The Client treats a failed Get as having no copy and fetches from the API,
// and logs a failed Set and serves the fetched value anyway, so a Redis
// outage costs the cache, never an answer.
//
// # Sharing
//
// Replicas sharing a copy compare its stored_at with their own clocks, so
// their clocks should agree to well within FreshFor. The Client already
// treats a copy stamped in its future as new.
//
// Each copy is a single key, so the Store works on Redis Cluster as well
// (any redis.UniversalClient); that is not tested here.
package rediscache

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hordekit/httpretry/clock"
	"github.com/hordekit/httpretry/horde"
)

// Defaults for the zero Options.
const (
	// DefaultPrefix starts every key, so the copies can share a Redis with
	// other data (redisbreaker uses "httpretry:breaker:").
	DefaultPrefix = "httpretry:horde:"

	// DefaultTTL is how long a copy's key lives after its last write: a day,
	// so that a stale copy outlives a long outage (see Expiry in the package
	// documentation).
	DefaultTTL = 24 * time.Hour

	// DefaultOpTimeout bounds each Redis call. A healthy Redis on the same
	// network answers in about a millisecond; this only matters when it is
	// down or stuck.
	DefaultOpTimeout = 200 * time.Millisecond

	// DefaultDownFor is how long the Store fails fast after finding Redis
	// unreachable: long enough that one outage costs one OpTimeout per second
	// rather than per call, short enough that the cache is back within about
	// a second of Redis.
	DefaultDownFor = time.Second
)

// The hash fields of a copy.
const (
	fieldValue    = "value"
	fieldStoredAt = "stored_at"
)

// ErrUnavailable is matched (errors.Is) by the error of a call made while
// Redis is marked down (see Options.DownFor); the error also says why it was
// marked down.
var ErrUnavailable = errors.New("Redis is marked unreachable")

// Options configures a Store. The zero value gives the defaults.
type Options struct {
	// Prefix starts every key. Empty means DefaultPrefix. Stores that
	// should share copies (the replicas of one service) use the same one.
	Prefix string

	// TTL is the expiry each Set gives the copy's key. 0 or less means
	// DefaultTTL. Keep it far longer than the Client's FreshFor: a copy
	// whose key has expired cannot be served stale.
	TTL time.Duration

	// OpTimeout bounds each Get and Set, in real time. 0 or less means
	// DefaultOpTimeout.
	OpTimeout time.Duration

	// DownFor is how long every call fails at once, with ErrUnavailable,
	// after one found Redis unreachable. 0 means DefaultDownFor; less than 0
	// turns the window off, so every call tries Redis (and may wait
	// OpTimeout).
	DownFor time.Duration

	// Clock measures DownFor; nil means the system clock. OpTimeout is always
	// real time, since it bounds network I/O.
	Clock clock.Clock
}

// Store is a horde.Store in Redis. It is safe for concurrent use. It does
// not own the Redis client: close that when done.
type Store struct {
	client    redis.UniversalClient
	prefix    string
	ttl       time.Duration
	opTimeout time.Duration
	downFor   time.Duration
	clk       clock.Clock

	// down is set while Redis is marked unreachable, nil otherwise.
	down atomic.Pointer[outage]
}

// outage is why and until when Redis is marked down.
type outage struct {
	until time.Time // on Store.clk
	cause error
}

var _ horde.Store = (*Store)(nil)

// New returns a Store on client (a *redis.Client, a cluster or a failover
// client) with opts' settings. It makes no Redis call, so it works, and the
// Client keeps answering from the API, while Redis is down. It panics if
// client is nil.
func New(client redis.UniversalClient, opts Options) *Store {
	if client == nil {
		panic("rediscache: nil Redis client")
	}
	s := &Store{
		client:    client,
		prefix:    opts.Prefix,
		ttl:       opts.TTL,
		opTimeout: opts.OpTimeout,
		downFor:   opts.DownFor,
		clk:       clock.Or(opts.Clock),
	}
	if s.prefix == "" {
		s.prefix = DefaultPrefix
	}
	if s.ttl <= 0 {
		s.ttl = DefaultTTL
	}
	if s.opTimeout <= 0 {
		s.opTimeout = DefaultOpTimeout
	}
	if s.downFor == 0 {
		s.downFor = DefaultDownFor
	}
	return s
}

// Get returns the copy under key and when it was fetched: ok false and a nil
// error if there is none (or its key has expired). An error means Redis
// could not be read, or the entry there is not one this package wrote.
func (s *Store) Get(ctx context.Context, key string) ([]byte, time.Time, bool, error) {
	vals, err := bounded(ctx, s, func(ctx context.Context) ([]any, error) {
		return s.client.HMGet(ctx, s.prefix+key, fieldValue, fieldStoredAt).Result()
	})
	if err != nil {
		return nil, time.Time{}, false, fmt.Errorf("rediscache: get %q: %w", key, err)
	}
	value, at, ok, err := decode(vals)
	if err != nil {
		return nil, time.Time{}, false, fmt.Errorf("rediscache: get %q: %w", key, err)
	}
	return value, at, ok, nil
}

// decode turns HMGET's reply into a copy. Both fields missing is no copy;
// one missing means someone else wrote the key, and is an error rather than
// a miss so that the Client logs it.
func decode(vals []any) ([]byte, time.Time, bool, error) {
	if len(vals) != 2 {
		return nil, time.Time{}, false, fmt.Errorf("HMGET answered %d values, want 2", len(vals))
	}
	if vals[0] == nil && vals[1] == nil {
		return nil, time.Time{}, false, nil
	}
	value, vok := vals[0].(string)
	stamp, sok := vals[1].(string)
	if !vok || !sok {
		return nil, time.Time{}, false, fmt.Errorf("incomplete entry: want string fields %q and %q, have %T and %T",
			fieldValue, fieldStoredAt, vals[0], vals[1])
	}
	var at time.Time
	if err := at.UnmarshalText([]byte(stamp)); err != nil {
		return nil, time.Time{}, false, fmt.Errorf("field %q: %w", fieldStoredAt, err)
	}
	return []byte(value), at, true, nil
}

// Set stores value under key with storedAt as its fetch time, replacing any
// older copy, and restarts the key's TTL.
func (s *Store) Set(ctx context.Context, key string, value []byte, storedAt time.Time) error {
	stamp, err := storedAt.MarshalText()
	if err != nil {
		return fmt.Errorf("rediscache: set %q: stored_at: %w", key, err)
	}
	k := s.prefix + key
	_, err = bounded(ctx, s, func(ctx context.Context) (struct{}, error) {
		// MULTI/EXEC: a key with the new fields but no expiry, or the body of
		// one fetch beside the time of another, is never visible.
		_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, k, fieldValue, value, fieldStoredAt, stamp)
			p.PExpire(ctx, k, s.ttl)
			return nil
		})
		return struct{}{}, err
	})
	if err != nil {
		return fmt.Errorf("rediscache: set %q: %w", key, err)
	}
	return nil
}

// bounded runs fn with an OpTimeout context and returns within OpTimeout of
// real time whether or not the client honours the context: fn runs on its
// own goroutine, which is left to finish in the background if it is late.
// It also keeps the down window: failing at once while Redis is marked down,
// marking it down on a failure to reach it, and up on any answer.
func bounded[T any](parent context.Context, s *Store, fn func(context.Context) (T, error)) (T, error) {
	var zero T
	if o := s.down.Load(); o != nil && s.clk.Now().Before(o.until) {
		return zero, fmt.Errorf("%w for %v after: %w", ErrUnavailable, s.downFor, o.cause)
	}
	ctx, cancel := context.WithTimeout(parent, s.opTimeout)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1) // buffered: a late fn must not block forever
	go func() {
		v, err := fn(ctx)
		ch <- result{v, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		// An answer that raced the deadline is still an answer.
		select {
		case r = <-ch:
		default:
			r.err = fmt.Errorf("no answer within %v: %w", s.opTimeout, ctx.Err())
		}
	}
	switch {
	case r.err == nil:
		if s.down.Load() != nil {
			s.down.Store(nil)
		}
	case unreachable(parent, r.err) && s.downFor > 0:
		s.down.Store(&outage{until: s.clk.Now().Add(s.downFor), cause: r.err})
	}
	return r.v, r.err
}

// unreachable reports whether err says Redis could not be reached, rather
// than that it answered with an error or that the caller gave up.
func unreachable(parent context.Context, err error) bool {
	if parent.Err() != nil {
		return false
	}
	var reply redis.Error
	return !errors.As(err, &reply)
}
