// Package redisbreaker is a circuit breaker shared by a fleet of processes
// through Redis: when one replica's breaker opens, every replica naming the
// same breaker in the same Redis refuses calls within a second, and in
// half-open the whole fleet sends HalfOpenProbes probes, not that many per
// replica.
//
// # Model
//
// Each replica keeps a local breaker.Breaker as its view of the shared state
// and as its fallback. The healthy path never touches the network: Allow,
// Acquire and a success on a closed breaker answer from local memory with a
// few atomic loads, no lock, no clock read and no allocation. Failures are
// counted twice: by the local breaker (so that the replica still protects
// itself alone), and in Redis by a writer goroutine fed through a buffered
// channel, so a request never waits on Redis. The fleet opens when the shared
// count of consecutive failures reaches FailureThreshold (five replicas
// seeing one failure each trip it together), or as soon as any one replica's
// own breaker opens (its own count, or its failure ratio), which it then
// shares. A success after failures resets the shared count, also in the
// background.
//
// Transitions are Lua scripts (EVALSHA), so concurrent replicas never
// interleave a read and a write, and each one publishes the new state on the
// breaker's channel. Replicas mirror it into their local breaker (Trip with
// the shared open-until, or Reset), so hooks, logs and Status behave as for a
// local breaker. A periodic read of the state (RefreshInterval) catches
// anything pub/sub missed. A subscription quiet for RefreshInterval gets a
// PING; one that goes unanswered for OpTimeout is on a dead connection (a
// hung server keeps it open) and is replaced.
//
// Once the cooldown is over, a replica that wants to probe first takes a local
// probe slot, then a lease in Redis (one key per probe slot, expiring after
// Cooldown, so a holder that dies cannot wedge the fleet). This is the only
// Redis call made on a request's path, only in half-open, and it is bounded by
// OpTimeout. A replica that finds every lease held remembers until when and
// refuses locally meanwhile, until a "free" message says a lease was given
// back early (its caller released the permit) or the next refresh. The
// probe's success closes the fleet; its failure reopens it.
//
// # When Redis fails
//
// Redis being down is not the upstream being down. Every Redis call has
// OpTimeout. When one fails, the breaker marks Redis unreachable, logs a
// warning (at most one per WarnInterval) and behaves as a local breaker: it
// keeps counting and tripping on its own, and in half-open admits its own
// local probe. No request fails, or waits longer than OpTimeout, because of
// Redis, whether Redis is down, hung (stopped, or busy in a slow command) or
// slow. The refresher keeps trying; when Redis answers again the breaker
// resubscribes and reconciles.
//
// A lease call that times out is given back by its token, and the release
// leaves a tombstone for that token, so the call cannot take a lease later
// if Redis runs it after the release (it was queued behind a busy Redis).
//
// # Reconciliation by evidence
//
// Every transition in Redis records at: when the evidence behind it (the
// failures that tripped it, the probe that closed or reopened it) was seen,
// on the clock of the replica that saw it. Each replica remembers the same of
// its local view: the at of the shared transition it mirrors, or the time of
// its own evidence when that is newer (its failures tripped it, or its probe
// closed or reopened it, typically while Redis was out of reach). Whenever
// the replica reads the shared state (a message, a refresh, the reply to a
// write, or the first read after an outage or a restart) it merges the two:
// the newer evidence wins, not Redis. A snapshot that is the very transition
// the local view already reflects changes nothing.
//
//	local view  shared state            shared state is newer     local view is newer
//	closed      missing                 stay closed               stay closed
//	closed      closed                  adopt its count           stay closed
//	closed      open, cooling down      open until its until      push closed
//	closed      open, cooldown over     stay closed               push closed
//	open        missing                 push open                 push open
//	open        closed                  close                     push open
//	open        open, cooling down      open until its until      stay open, until the later of the two
//	open        open, cooldown over     half-open                 push open
//
// "Open" includes half-open. "Push" writes the local view to Redis, with the
// time of its evidence, through a script that applies it only if the shared
// state's last transition is older still (so pushes never undo newer
// evidence, and two replicas pushing at once settle on the newer); pushing
// open over an open state whose cooldown is over takes effect only if the
// pushed cooldown is not over too. So: a
// replica that closed on a successful probe while Redis was frozen pushes the
// close when Redis answers, instead of going back to open from Redis's stale
// snapshot; a replica that opened on fresh failures pushes the open state; a
// replica cut off while the fleet recovered adopts the recovery; a Redis that
// restarted empty, or a failover that lost the last writes, is refilled with
// what the replicas saw. An open state whose cooldown is over never trips a
// closed replica: the fleet is only waiting for a probe, and that replica
// either saw the upstream work more recently or has no evidence either way.
// Generations order transitions within one millisecond.
//
// # Close
//
// Every Redis call the breaker makes, including go-redis's own connection
// attempts for the subscription, is bounded by OpTimeout, so Close returns
// within about OpTimeout whatever Redis is doing (up, down, hung since before
// New or since after it) and leaves no goroutine behind.
//
// OpTimeout is enforced in two ways: every call gets a context with that
// deadline, and the request-path call (the probe lease) is also abandoned
// after OpTimeout of real time even if the client ignores the context. go-redis
// ignores context deadlines for socket reads unless the client is created
// with ContextTimeoutEnabled: true, so set it (New logs a warning when a
// client says it is off): the background calls then respect OpTimeout too,
// and Close is prompt even if Redis hangs.
//
// # Redis Cluster
//
// A breaker's keys share a hash tag ({name}), so they live in one slot and
// its scripts run on that slot's master. Pass a *redis.ClusterClient (or a
// UniversalClient with several addresses). Transitions are published with
// PUBLISH, which a cluster forwards to every node, so the subscription works
// whichever node go-redis subscribes on (the slot's master). When the master
// of the breaker's slot fails (crashes, or hangs), Redis calls fail or time
// out until a replica takes over: meanwhile the breaker works locally, as in
// any outage, and its subscription moves to the new master. go-redis
// keeps sending to a dead master until its next periodic reload of the slot
// map (ClusterOptions.ClusterStateReloadInterval, 60 s by default), so the
// breaker asks the client for a reload whenever a call fails; the fleet is
// back within a few RefreshIntervals of the takeover. Transitions that had
// not reached the replica before the failover are restored by
// reconciliation.
//
// # Configuration
//
// Config embeds breaker.Config (Name is required: it names the shared state;
// FailureThreshold 5, Cooldown 120 s and HalfOpenProbes 1 by default, as the
// seed) and adds Prefix ("httpretry:breaker:"), OpTimeout (100 ms),
// RefreshInterval (500 ms), WarnInterval (30 s) and ReplicaID. Every replica
// of a breaker should use the same settings. Connected reports whether the
// breaker is currently sharing its state.
//
// # Keys
//
// For breaker "api" with the default prefix: the hash
// httpretry:breaker:{api}:state (state, gen, until, failures, at, retrips,
// probe_ok), one lease per probe slot httpretry:breaker:{api}:probe:0..N-1,
// tombstones of given-back lease tokens httpretry:breaker:{api}:released:*,
// and the channel httpretry:breaker:{api}:events. The hash expires 4
// cooldowns (at least 10 s) after its last write, a lease and a tombstone
// after one cooldown.
//
// # Running Redis
//
// Any Redis 5 or later (tested with 7.0, standalone and as a cluster of
// three masters with a replica each): an existing server, or locally
// "apt-get install redis-server" (or "docker run -p 6379:6379 redis").
// Scripts use TIME before writing, which needs effects replication (the
// default since Redis 5). Persistence is not needed: a Redis that restarts
// empty is refilled by the replicas. The replicas' clocks should agree to
// well within a cooldown, since open-until and at are wall-clock times of
// the replicas that saw them.
package redisbreaker

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/clock"
)

// opQueue is how many Redis writes may wait for the writer. A failure that
// does not fit is counted only locally; the local breaker counts it anyway.
const opQueue = 1024

// errClosed is what a Redis call gets after Close.
var errClosed = errors.New("redisbreaker: closed")

// applyQueue is how many snapshots may wait to be mirrored. One that does not
// fit is dropped: the next refresh brings the state again.
const applyQueue = 64

// Breaker is a circuit breaker whose state is shared through Redis. It
// implements breaker.CircuitBreaker, so it plugs into httpretry.Transport
// (Transport.Breaker) and breaker.Heartbeat like a local breaker, and it has
// the seed's API (Allow, RecordSuccess, RecordFailure, State, Degraded,
// UntilRetry, ConsecutiveFailures). It is safe for concurrent use. Make one
// with New and Close it when done.
type Breaker struct {
	local  *breaker.Breaker
	client redis.UniversalClient
	cfg    Config
	clock  clock.Clock
	hook   func(name string, from, to breaker.State) // the user's OnStateChange
	ratio  bool                                      // the local breaker keeps a failure-ratio window

	base    string   // the prefix and hash-tagged name every key starts with
	keys    []string // the state hash, then one lease key per probe slot
	channel string
	seq     atomic.Uint64 // lease tokens

	// gen is bumped on every local transition. Closed-path permits carry
	// it, so an outcome from before a transition is ignored.
	gen atomic.Uint64

	// remoteFailures is what this replica knows of the shared failure
	// count: an estimate (a failure being written counts already) that
	// decides whether a success must reset it.
	remoteFailures atomic.Int64
	// busyUntil (Unix ms on the clock) is when the probe leases another
	// replica holds expire; until then, or until a "free" message or the
	// next refresh, half-open callers are refused without asking Redis.
	busyUntil    atomic.Int64
	tripPending  atomic.Bool // a push of this replica's open state is queued
	closePending atomic.Bool // a push of this replica's close is queued
	down         atomic.Bool // Redis is unreachable: act as a local breaker
	subscribed   atomic.Bool

	ops     chan op
	applyCh chan snapshot
	wake    chan struct{} // tells the subscriber that Redis is back
	done    chan struct{}
	ctx     context.Context // cancelled by Close
	cancel  context.CancelFunc
	psMu    sync.Mutex    // guards ps, which the subscriber replaces when its connection dies
	ps      *redis.PubSub // the subscription; see subscribeLoop
	wg      sync.WaitGroup
	once    sync.Once
	lifeMu  sync.RWMutex // see bounded and Close

	// known is the evidence behind the local view: the shared transition it
	// mirrors, or this replica's own failures or probe when newer.
	viewMu sync.Mutex
	known  evidence

	mu       sync.Mutex
	plain    []plainProbe  // probes admitted by Allow, awaiting RecordSuccess/RecordFailure
	plainN   atomic.Int32  // len(plain), read without the lock
	plainSeq atomic.Uint64 // orders Allow's local admissions

	warnMu   sync.Mutex
	warned   bool
	lastWarn time.Time
}

var (
	_ breaker.CircuitBreaker = (*Breaker)(nil)
	_ breaker.PermitRecorder = (*Breaker)(nil)
)

// New returns a fleet breaker on client (a *redis.Client, a cluster or a
// failover client), or an error for a missing Name or a Config field out of
// range. It reads the shared state once, waiting at most OpTimeout, so that a
// replica joining a fleet whose breaker is open starts open; if Redis is
// unreachable it starts as a local breaker and keeps trying. It starts four
// goroutines (a subscriber, a refresher, a writer, and one that mirrors the
// shared state into the local view); Close stops them.
func New(client redis.UniversalClient, cfg Config) (*Breaker, error) {
	if client == nil {
		return nil, errors.New("redisbreaker: nil Redis client")
	}
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	b := &Breaker{
		client:  client,
		cfg:     cfg,
		clock:   clock.Or(cfg.Clock),
		hook:    cfg.OnStateChange,
		ratio:   cfg.FailureRatio > 0,
		ops:     make(chan op, opQueue),
		applyCh: make(chan snapshot, applyQueue),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	lc := cfg.Config
	lc.OnStateChange = b.onLocalChange
	if b.local, err = breaker.New(lc); err != nil {
		return nil, err
	}
	b.base = cfg.Prefix + "{" + cfg.Name + "}:"
	b.channel = b.base + "events"
	b.keys = []string{b.base + "state"}
	for i := range cfg.HalfOpenProbes {
		b.keys = append(b.keys, b.base+"probe:"+strconv.Itoa(i))
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	if !contextTimeouts(client) {
		b.logger().LogAttrs(context.Background(), slog.LevelWarn,
			"circuit breaker: the Redis client ignores context deadlines (ContextTimeoutEnabled is false): "+
				"OpTimeout bounds requests, but background calls and Close may wait for the client's own timeouts",
			slog.String("breaker", cfg.Name))
	}

	// The first read is applied here, before any goroutine runs, so that New
	// returns a breaker that already knows the fleet is open.
	s, err := b.bounded(func(ctx context.Context) (snapshot, error) { return b.readState(ctx) }, nil)
	if err != nil {
		b.markDown(err)
	} else {
		b.adopt(s)
	}
	// No channel yet, so this does not connect: the subscriber does, off
	// New's path.
	b.ps = client.Subscribe(b.ctx)

	b.wg.Add(4)
	go b.subscribeLoop()
	go b.refreshLoop()
	go b.writeLoop()
	go b.applyLoop()
	return b, nil
}

// Close stops the background goroutines and waits for them. Writes still
// queued are dropped. Every Redis call the breaker makes is bounded by
// OpTimeout, so with a client created with ContextTimeoutEnabled Close
// returns within about OpTimeout whatever state Redis is in (up, down, or
// hung since before New), leaving no goroutine behind. The breaker goes on
// answering as a local breaker afterwards, without Redis. It does not close
// the client. Do not call it from OnStateChange.
func (b *Breaker) Close() error {
	b.lifeMu.Lock()
	b.once.Do(func() {
		close(b.done)
		b.cancel()
		b.subscribed.Store(false)
	})
	b.lifeMu.Unlock()
	// Outside lifeMu: it waits for a connection attempt of the subscriber's
	// to end (within OpTimeout), and a lease call must not wait on that.
	// The subscriber replaces ps only while the breaker is open, under psMu.
	b.psMu.Lock()
	ps := b.ps
	b.psMu.Unlock()
	ps.Close()
	b.wg.Wait()
	return nil
}

// contextTimeouts reports whether client lets context deadlines bound its
// socket reads and writes, for the clients whose options say.
func contextTimeouts(client redis.UniversalClient) bool {
	switch c := client.(type) {
	case interface{ Options() *redis.Options }:
		return c.Options().ContextTimeoutEnabled
	case interface{ Options() *redis.ClusterOptions }:
		return c.Options().ContextTimeoutEnabled
	}
	return true // unknown: do not warn
}

// Name returns Config.Name.
func (b *Breaker) Name() string { return b.cfg.Name }

// Connected reports whether the breaker is sharing its state: its last Redis
// call succeeded and it is subscribed to the fleet's events. While it is
// false the breaker acts as a local breaker.
func (b *Breaker) Connected() bool {
	return !b.down.Load() && b.subscribed.Load() && !b.closed()
}

// Allow reports whether a call may go ahead, as breaker.Breaker.Allow does: a
// caller admitted while half-open is the fleet's probe and must report with
// RecordSuccess or RecordFailure.
func (b *Breaker) Allow() bool {
	if b.local.State() == breaker.Closed {
		return true
	}
	return b.allowSlow()
}

func (b *Breaker) allowSlow() bool {
	lp, err := b.local.Acquire()
	if err != nil {
		return false // open, or every local probe slot taken
	}
	// Numbered as soon as the local breaker admits it, before the lease call,
	// so that the number orders local admissions, not Redis replies.
	seq := b.plainSeq.Add(1)
	p, err := b.lease(lp)
	if err != nil {
		return false
	}
	if p.Probe() {
		b.keepPlain(plainProbe{permit: p, round: lp, seq: seq})
	}
	return true
}

// plainProbe is a probe admitted by Allow, awaiting RecordSuccess or
// RecordFailure.
type plainProbe struct {
	permit breaker.Permit
	// round is a copy of the local breaker's permit, used only for comparison
	// and never to report. Permits of one breaker are equal exactly when
	// their generation is, so two probes compare equal when the local
	// breaker admitted them in the same half-open round.
	round breaker.Permit
	seq   uint64
}

// keepPlain stores a probe admitted by Allow. The list holds the probes of one
// local round only. The local breaker abandons a round whose probes go
// unreported for a Cooldown: it moves HalfOpen to HalfOpen under a new
// generation and calls no OnStateChange, so onLocalChange does not clear the
// list. The outcomes reported after that belong to the new round's probes.
// Left at the head of the list, the abandoned probes would take those
// outcomes, and the local breaker ignores them as being from an old
// generation. So a probe of a new round drops the older round's probes. A
// probe whose own round was abandoned while its lease call was out (it was
// admitted before the probes already listed) is dropped instead. Dropped
// probes are released, which frees any fleet lease they hold.
func (b *Breaker) keepPlain(e plainProbe) {
	var stale []plainProbe
	b.mu.Lock()
	if len(b.plain) > 0 && b.plain[0].round != e.round {
		if b.plain[0].seq > e.seq {
			b.mu.Unlock()
			e.permit.Release()
			return
		}
		stale, b.plain = b.plain, nil
	}
	b.plain = append(b.plain, e)
	b.plainN.Store(int32(len(b.plain)))
	b.mu.Unlock()
	// Outside the lock: recording may run the local breaker's hooks, and
	// onLocalChange takes b.mu.
	for i := range stale {
		stale[i].permit.Release()
	}
}

// Acquire asks to make one call. It returns a Permit to report the outcome
// on, or an *breaker.OpenError when the fleet's breaker refuses. On a closed
// breaker it makes no Redis call; in half-open it takes a probe lease in
// Redis, waiting at most OpTimeout.
func (b *Breaker) Acquire() (breaker.Permit, error) {
	gen := b.gen.Load()
	if b.local.State() == breaker.Closed {
		return breaker.NewPermit(b, gen, false), nil
	}
	return b.acquireSlow()
}

// acquireSlow admits a caller when the local view is not closed.
func (b *Breaker) acquireSlow() (breaker.Permit, error) {
	lp, err := b.local.Acquire()
	if err != nil {
		return breaker.Permit{}, err // open, or every local probe slot taken
	}
	return b.lease(lp)
}

// lease completes an admission that the local breaker granted as lp. For a
// probe, that means taking the fleet's lease.
func (b *Breaker) lease(lp breaker.Permit) (breaker.Permit, error) {
	if !lp.Probe() {
		lp.Release()
		return breaker.NewPermit(b, b.gen.Load(), false), nil
	}
	if b.down.Load() || b.closed() {
		return b.localProbe(lp), nil
	}
	now := b.nowMs()
	if now < b.busyUntil.Load() {
		lp.Release()
		return breaker.Permit{}, b.halfOpenError()
	}

	token := b.cfg.ReplicaID + ":" + strconv.FormatUint(b.seq.Add(1), 10)
	untilMs, failures := b.localOpenUntil()
	at := b.knownEvidence().at
	s, err := b.bounded(func(ctx context.Context) (snapshot, error) {
		return b.runKeys(ctx, acquireScript, b.leaseKeys(token), token, ms(b.cfg.leaseTTL()), untilMs, failures, at)
	}, func(s snapshot, err error, used bool) {
		// Give back a lease nobody will use: one granted after we stopped
		// waiting, or one Redis may have granted to a call that failed (with
		// ContextTimeoutEnabled a slow grant is a timeout error, not a late
		// success). Either way this request went ahead as a local probe. This
		// is done directly, not through the writer: the failure has just
		// marked Redis down, and the writer drops writes while it is.
		if (err != nil && mayHaveRun(err)) || (err == nil && !used && s.code == codeGranted) {
			b.releaseToken(token)
		}
	})
	if err != nil {
		b.markDown(err)
		return b.localProbe(lp), nil
	}
	b.apply(s)
	switch s.code {
	case codeGranted:
		return breaker.NewPermit(&probe{b: b, local: lp, token: token, gen: s.gen, slot: int(s.a)}, 0, true), nil
	case codeBusy:
		lp.Release()
		b.busyUntil.Store(s.b)
		return breaker.Permit{}, b.halfOpenError()
	case codeClosed:
		// Another replica's probe closed the fleet; the mirror will close
		// the local view.
		lp.Release()
		return breaker.NewPermit(b, b.gen.Load(), false), nil
	case codeReleased:
		// Only a call whose token was given back gets this, and that call's
		// result is never used: the caller went ahead as a local probe.
		lp.Release()
		return breaker.Permit{}, b.halfOpenError()
	default: // codeOpen: another replica's probe failed and reopened it
		lp.Release()
		return breaker.Permit{}, &breaker.OpenError{Name: b.cfg.Name, State: breaker.Open,
			RetryIn: time.Duration(s.until-now) * time.Millisecond}
	}
}

func (b *Breaker) halfOpenError() error {
	return &breaker.OpenError{Name: b.cfg.Name, State: breaker.HalfOpen}
}

// localProbe is a probe decided by the local breaker alone, while Redis is
// unreachable.
func (b *Breaker) localProbe(lp breaker.Permit) breaker.Permit {
	return breaker.NewPermit(&probe{b: b, local: lp}, 0, true)
}

// localOpenUntil is the local view's open-until (Unix ms) and failure count
// (its own, or the fleet's as last seen if higher), for pushing it to the
// fleet.
func (b *Breaker) localOpenUntil() (untilMs, failures int64) {
	d, _ := b.local.UntilRetry()
	return b.nowMs() + ms(d), int64(b.ConsecutiveFailures())
}

// RecordSuccess reports a successful call, as breaker.Breaker.RecordSuccess
// does. With no failures recorded anywhere it makes no Redis call.
func (b *Breaker) RecordSuccess() {
	if b.plainN.Load() == 0 && b.quiet() {
		return
	}
	b.successSlow()
}

// successSlow is kept out of RecordSuccess so that RecordSuccess inlines.
func (b *Breaker) successSlow() {
	if b.plainN.Load() != 0 || b.local.State() != breaker.Closed {
		b.recordPlain(breaker.Success)
		return
	}
	b.closedSuccess()
}

// RecordFailure reports a failed call, as breaker.Breaker.RecordFailure does.
// The shared count is updated in the background.
func (b *Breaker) RecordFailure() {
	if b.local.State() == breaker.Closed {
		b.closedFailure()
		return
	}
	b.recordPlain(breaker.Failure)
}

// RecordPermit implements breaker.PermitRecorder for permits issued on a
// closed breaker; probes report through their own recorder.
func (b *Breaker) RecordPermit(gen uint64, _ bool, o breaker.Outcome) {
	if gen != b.gen.Load() {
		return // from before a transition
	}
	switch o {
	case breaker.Success:
		if !b.quiet() {
			b.closedSuccess()
		}
	case breaker.Failure:
		b.closedFailure()
	}
}

// quiet reports that a success has nothing to do: no failure to reset here
// or in the fleet, no ratio window to feed. It is three loads and no clock
// read, which is the healthy path's whole cost. When the local view is open
// with no failures of its own (a trip mirrored from the fleet) a success is
// quiet too, which is right: it comes from a call admitted before the trip.
func (b *Breaker) quiet() bool {
	return b.local.ConsecutiveFailures() == 0 && b.remoteFailures.Load() == 0 && !b.ratio
}

func (b *Breaker) closedSuccess() {
	b.local.RecordSuccess()
	// Load before Swap: a success only writes the word when there is a count
	// to reset, so cores do not fight over it.
	if b.remoteFailures.Load() != 0 && b.remoteFailures.Swap(0) != 0 {
		b.send(op{kind: opReset})
	}
}

func (b *Breaker) closedFailure() {
	b.local.RecordFailure()
	b.remoteFailures.Add(1)
	b.send(op{kind: opFailure})
	if b.local.State() != breaker.Closed {
		// This replica tripped on its own evidence: tell the fleet. The
		// script leaves a fleet that is open already alone.
		now := b.nowMs()
		b.noteOwn(now)
		b.pushTrip(now)
	}
}

// recordPlain reports the outcome of the oldest probe admitted by Allow. With
// none awaiting, the outcome is from a call admitted before the trip and is
// ignored, as the local breaker ignores it.
func (b *Breaker) recordPlain(o breaker.Outcome) {
	b.mu.Lock()
	if len(b.plain) == 0 {
		b.mu.Unlock()
		return
	}
	p := b.plain[0].permit
	b.plain = b.plain[1:]
	b.plainN.Store(int32(len(b.plain)))
	b.mu.Unlock()
	p.Record(o)
}

// probe records the outcome of a half-open probe: on the local breaker, and
// on the fleet's lease when it holds one.
type probe struct {
	b     *Breaker
	local breaker.Permit
	token string // "" for a local-only probe (Redis was unreachable)
	gen   int64
	slot  int
}

func (p *probe) RecordPermit(_ uint64, _ bool, o breaker.Outcome) {
	p.local.Record(o)
	// A probe that closed or reopened the local view is evidence of this
	// replica's own, newer than the shared state it probed.
	if st := p.b.local.State(); o == breaker.Failure && st != breaker.Closed || o == breaker.Success && st == breaker.Closed {
		p.b.noteOwn(p.b.nowMs())
	}
	if p.token == "" {
		return
	}
	if o == breaker.Neutral {
		p.b.busyUntil.Store(0) // our slot is free again
	}
	p.b.send(op{kind: opProbe, outcome: o, gen: p.gen, token: p.token, slot: p.slot})
}

// onLocalChange is the local breaker's OnStateChange.
func (b *Breaker) onLocalChange(name string, from, to breaker.State) {
	b.gen.Add(1)
	if to == breaker.Closed {
		b.remoteFailures.Store(0) // a close, here or in the fleet, clears the count
	}
	if to != breaker.HalfOpen {
		b.mu.Lock()
		b.plain = nil // probes of a round that is over
		b.plainN.Store(0)
		b.mu.Unlock()
	}
	if b.hook != nil {
		b.hook(name, from, to)
	}
}

// State reports the state, HalfOpen as soon as the cooldown is over.
func (b *Breaker) State() breaker.State { return b.local.State() }

// Degraded reports whether the breaker is open or half-open.
func (b *Breaker) Degraded() bool { return b.local.Degraded() }

// UntilRetry reports how long until the fleet admits a probe: the rest of the
// cooldown when open, 0 when half-open. ok is false when closed.
func (b *Breaker) UntilRetry() (time.Duration, bool) { return b.local.UntilRetry() }

// ConsecutiveFailures returns the larger of this replica's count and the
// fleet's as last seen.
func (b *Breaker) ConsecutiveFailures() int {
	return max(b.local.ConsecutiveFailures(), int(b.remoteFailures.Load()))
}

// Status reports the breaker for a health endpoint.
func (b *Breaker) Status() breaker.Status {
	st := b.local.Status()
	st.ConsecutiveFailures = max(st.ConsecutiveFailures, int(b.remoteFailures.Load()))
	return st
}

func (b *Breaker) nowMs() int64 { return b.clock.Now().UnixMilli() }

// bounded runs fn with an OpTimeout context and returns within OpTimeout of
// real time even if the client does not honour the context. fn then finishes
// in the background. If settle is set, it gets fn's result on fn's goroutine
// once fn has returned, whether or not bounded waited for it: used reports
// that bounded returned that result to its caller. It runs off the caller's
// path (the result has already been handed over) and Close waits for it.
func (b *Breaker) bounded(fn func(context.Context) (snapshot, error), settle func(s snapshot, err error, used bool)) (snapshot, error) {
	type result struct {
		s   snapshot
		err error
	}
	// lifeMu orders this Add before Close's Wait: a probe lease may be asked
	// for while the breaker is being closed.
	b.lifeMu.RLock()
	if b.closed() {
		b.lifeMu.RUnlock()
		return snapshot{}, errClosed
	}
	b.wg.Add(1)
	b.lifeMu.RUnlock()
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.OpTimeout)
	ch := make(chan result, 1)
	var claimed atomic.Bool // whoever sets it first decides who gets the result
	go func() {
		defer b.wg.Done()
		defer cancel()
		s, err := fn(ctx)
		used := claimed.CompareAndSwap(false, true)
		if used {
			ch <- result{s, err}
		}
		if settle != nil {
			settle(s, err, used)
		}
	}()
	timer := time.NewTimer(b.cfg.OpTimeout)
	defer timer.Stop()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-timer.C:
		if claimed.CompareAndSwap(false, true) {
			return snapshot{}, context.DeadlineExceeded
		}
		r := <-ch
		return r.s, r.err
	}
}

// markDown records that Redis is unreachable and warns, at most once per
// WarnInterval.
func (b *Breaker) markDown(err error) {
	if b.closed() {
		return
	}
	b.down.Store(true)
	now := b.clock.Now()
	b.warnMu.Lock()
	warn := !b.warned || now.Sub(b.lastWarn) >= b.cfg.WarnInterval
	if warn {
		b.warned, b.lastWarn = true, now
	}
	b.warnMu.Unlock()
	if warn {
		b.logger().LogAttrs(context.Background(), slog.LevelWarn,
			"circuit breaker: Redis unreachable, using local state",
			slog.String("breaker", b.cfg.Name), slog.String("error", err.Error()))
	}
}

func (b *Breaker) logger() *slog.Logger {
	if b.cfg.Logger != nil {
		return b.cfg.Logger
	}
	return slog.Default()
}

func (b *Breaker) closed() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}
