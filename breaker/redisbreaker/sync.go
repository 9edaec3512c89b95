package redisbreaker

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hordekit/httpretry/breaker"
)

// op is a write for the writer goroutine.
type op struct {
	kind    opKind
	outcome breaker.Outcome // opProbe
	gen     int64           // opProbe: the lease's generation
	token   string          // opProbe
	slot    int             // opProbe
	at      int64           // opTrip, opClose: when the evidence was seen
	barrier chan struct{}   // closed by the writer instead of writing (tests)
}

type opKind uint8

const (
	opFailure opKind = iota // count a closed-state failure
	opReset                 // a success after failures
	opTrip                  // share this replica's open state
	opClose                 // share this replica's close
	opProbe                 // a probe's outcome
)

// send queues a write without ever blocking: a request must not wait on
// Redis. It reports whether the write was queued.
func (b *Breaker) send(o op) bool {
	select {
	case b.ops <- o:
		return true
	default:
		return false
	}
}

// pushTrip queues this replica's open state for the fleet, with the time of
// the evidence behind it; one push at a time.
func (b *Breaker) pushTrip(at int64) {
	if b.tripPending.CompareAndSwap(false, true) && !b.send(op{kind: opTrip, at: at}) {
		b.tripPending.Store(false)
	}
}

// pushClose queues this replica's close for the fleet, with the time its
// probe succeeded; one push at a time.
func (b *Breaker) pushClose(at int64) {
	if b.closePending.CompareAndSwap(false, true) && !b.send(op{kind: opClose, at: at}) {
		b.closePending.Store(false)
	}
}

func (b *Breaker) writeLoop() {
	defer b.wg.Done()
	for {
		select {
		case <-b.done:
			return
		case o := <-b.ops:
			if o.barrier != nil {
				close(o.barrier)
				continue
			}
			b.write(o)
		}
	}
}

// write runs one queued write. While Redis is unreachable writes are dropped
// rather than each waiting out OpTimeout: the local breaker has counted the
// failures, and reconciliation after the outage pushes what the fleet missed.
func (b *Breaker) write(o op) {
	switch o.kind {
	case opTrip:
		defer b.tripPending.Store(false)
	case opClose:
		defer b.closePending.Store(false)
	}
	if b.down.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.OpTimeout)
	defer cancel()
	var (
		s   snapshot
		err error
	)
	switch o.kind {
	case opFailure:
		s, err = b.run(ctx, failureScript, b.cfg.FailureThreshold)
	case opReset:
		s, err = b.run(ctx, resetScript)
	case opTrip:
		if b.local.State() == breaker.Closed {
			return // closed again meanwhile: nothing to share
		}
		untilMs, failures := b.localOpenUntil()
		s, err = b.run(ctx, tripScript, untilMs, failures, o.at)
	case opClose:
		if b.local.State() != breaker.Closed {
			return // open again meanwhile
		}
		s, err = b.run(ctx, closeScript, o.at)
	case opProbe:
		s, err = b.run(ctx, probeScript, o.gen, o.token, o.slot, o.outcome.String(), b.cfg.HalfOpenProbes)
	}
	if err != nil {
		b.markDown(err)
		return
	}
	s.own = true
	b.apply(s)
}

// releaseToken gives back any probe lease that a lease call under token got
// from Redis but this replica will not use: the call failed in a way that
// leaves open whether the script ran (a timeout, a broken connection, an
// unreadable reply), or its reply granting a lease came after lease stopped
// waiting. The token is unique to the call, and a lease call that does not
// answer in time is never used (the request goes ahead as a local probe),
// so any lease holding it is deleted, in whichever slot, and a tombstone
// keeps the call from taking one if it is still queued in Redis.
//
// It is best effort and bounded by OpTimeout. Unlike the writer's writes, it
// is tried even while Redis is marked down, because the call that marked it
// down is usually this very lease call, which was only slow. A lease left
// behind would keep the whole fleet from probing for a cooldown. A failure is
// not reported and the lease expires on its own. It runs on bounded's
// goroutine, which Close waits for, never on a request's path.
func (b *Breaker) releaseToken(token string) {
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.OpTimeout)
	defer cancel()
	_ = releaseScript.Run(ctx, b.client, b.leaseKeys(token), token, ms(b.cfg.leaseTTL()), b.channel).Err()
}

// leaseKeys are the keys of a lease call under token: the breaker's, then
// the token's tombstone.
func (b *Breaker) leaseKeys(token string) []string {
	keys := make([]string, len(b.keys), len(b.keys)+1)
	copy(keys, b.keys)
	return append(keys, b.base+"released:"+token)
}

// mayHaveRun reports whether a script call that returned err may have run in
// Redis anyway. It did not when the command was never sent (no connection)
// or when Redis answered with an error: a script is atomic, and the acquire
// script writes the lease last.
func mayHaveRun(err error) bool {
	var (
		rerr  redis.Error
		opErr *net.OpError
	)
	switch {
	case errors.Is(err, redis.ErrPoolTimeout), errors.Is(err, redis.ErrClosed):
		return false // no connection to send it on
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return false
	case errors.As(err, &rerr):
		return false
	}
	return true
}

// refreshLoop reads the shared state every RefreshInterval: the safety net
// under pub/sub, and the probe that notices Redis is back.
func (b *Breaker) refreshLoop() {
	defer b.wg.Done()
	for {
		t := b.clock.NewTimer(b.cfg.RefreshInterval)
		select {
		case <-b.done:
			t.Stop()
			return
		case <-t.C():
		}
		b.refresh()
	}
}

// refresh reads the state and reconciles with it. The first success after an
// outage tells the subscriber to reconnect. It forgets which leases were
// busy: a "free" message may have been missed, and the next half-open call
// asks Redis again.
func (b *Breaker) refresh() {
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.OpTimeout)
	s, err := b.readState(ctx)
	cancel()
	if err != nil {
		b.markDown(err)
		if c, ok := b.client.(interface{ ReloadState(context.Context) }); ok {
			// A cluster client keeps sending to a master that died until
			// its next periodic reload of the slot map (60 s by default),
			// even once a replica has taken over: ask for a reload, at most
			// once a refresh. The client runs it in the background.
			c.ReloadState(b.ctx)
		}
		return
	}
	b.busyUntil.Store(0)
	if !b.closed() && b.down.CompareAndSwap(true, false) {
		b.logger().LogAttrs(context.Background(), slog.LevelInfo,
			"circuit breaker: Redis reachable again, reconciling", slog.String("breaker", b.cfg.Name))
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
	b.apply(s)
}

// subscribeLoop receives the fleet's transitions. Every call it makes is
// bounded by OpTimeout, connecting included: go-redis connects (and
// reconnects) inside Subscribe and Receive while holding the lock that
// PubSub.Close takes, so an unbounded call there would hold Close for as long
// as a hung Redis does. Receiving is therefore a loop of OpTimeout waits; a
// wait that ends with no message costs no network traffic.
//
// When the connection drops it marks Redis unreachable and waits for the
// refresher to see Redis back before reconnecting, so an outage does not
// become a reconnect loop. A connection can also die without dropping: a
// frozen server, or a cluster master that a replica replaced while it hung,
// keeps it open and says nothing. So after RefreshInterval (real time) with
// no message it sends a PING on it, and if no answer comes within OpTimeout
// it drops that subscription and subscribes anew, which in a cluster goes to
// the slot's current master.
func (b *Breaker) subscribeLoop() {
	defer b.wg.Done()
	ps := b.ps
	subscribe := func() {
		// The channel is recorded even if this fails; Receive then connects
		// and subscribes, or reports the error.
		ctx, cancel := context.WithTimeout(b.ctx, b.cfg.OpTimeout)
		ps.Subscribe(ctx, b.channel)
		cancel()
	}
	subscribe()
	var heard, pinged time.Time // the last message; the PING awaiting its answer
	heard = time.Now()
	for {
		ctx, cancel := context.WithTimeout(b.ctx, b.cfg.OpTimeout)
		msg, err := ps.ReceiveTimeout(ctx, b.cfg.OpTimeout)
		cancel()
		if b.closed() {
			return
		}
		now := time.Now()
		if err != nil && b.subscribed.Load() && isTimeout(err) {
			// A quiet channel, or a dead connection.
			switch {
			case !pinged.IsZero() && now.Sub(pinged) >= b.cfg.OpTimeout:
				b.subscribed.Store(false)
				if ps = b.replacePubSub(); ps == nil {
					return
				}
				subscribe()
				heard, pinged = now, time.Time{}
			case pinged.IsZero() && now.Sub(heard) >= b.cfg.RefreshInterval:
				ctx, cancel := context.WithTimeout(b.ctx, b.cfg.OpTimeout)
				ps.Ping(ctx)
				cancel()
				pinged = now
			}
			continue
		}
		if err != nil {
			b.subscribed.Store(false)
			b.markDown(err)
			select {
			case <-b.done:
				return
			case <-b.wake:
			}
			heard, pinged = time.Now(), time.Time{}
			continue
		}
		heard, pinged = now, time.Time{}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				// Transitions published while we were not subscribed were
				// missed: read the state once now.
				b.refresh()
				b.subscribed.Store(true)
			}
		case *redis.Message:
			s, err := parseMessage(m.Payload)
			switch {
			case err != nil:
			case s.free:
				b.busyUntil.Store(0) // a lease is free: the next half-open call may take it
			default:
				b.apply(s)
			}
		}
	}
}

// replacePubSub closes the subscription, whose connection is dead, and
// makes a new one, not yet connected. It returns nil once the breaker is
// closed: Close closes whichever subscription it finds, so none is made
// after that.
func (b *Breaker) replacePubSub() *redis.PubSub {
	b.psMu.Lock()
	defer b.psMu.Unlock()
	if b.closed() {
		return nil
	}
	b.ps.Close()
	b.ps = b.client.Subscribe(b.ctx)
	return b.ps
}

// isTimeout reports a read that waited its whole time and saw nothing.
func isTimeout(err error) bool {
	var nerr net.Error
	return errors.As(err, &nerr) && nerr.Timeout() || errors.Is(err, context.DeadlineExceeded)
}

// apply queues a snapshot for the applier without blocking.
func (b *Breaker) apply(s snapshot) {
	select {
	case b.applyCh <- s:
	default:
	}
}

// applyLoop reconciles snapshots with the local view one at a time, so they
// are applied in order and the local breaker's hooks never run under a lock
// of ours: a hook may call back into the breaker.
func (b *Breaker) applyLoop() {
	defer b.wg.Done()
	for {
		select {
		case <-b.done:
			return
		case s := <-b.applyCh:
			if s.barrier != nil {
				close(s.barrier)
				continue
			}
			b.adopt(s)
		}
	}
}

// evidence places what a state is based on in time: when the failures or
// the probe behind its last transition were seen (Unix ms on Config.Clock),
// then the shared generation, which orders transitions within one
// millisecond.
type evidence struct{ at, gen int64 }

// order compares the evidence behind a snapshot with e: +1 when the snapshot
// is newer, -1 when older, 0 when it is the same transition.
func order(s snapshot, e evidence) int {
	if s.at != e.at {
		return cmp.Compare(s.at, e.at)
	}
	return cmp.Compare(s.gen, e.gen)
}

// verdict is what reconcile decides.
type verdict uint8

const (
	keepLocal  verdict = iota // change nothing
	adoptFleet                // mirror the shared state
	extendOpen                // stay open on the replica's own evidence, until the shared open-until if later
	pushOpen                  // write the replica's open state to the fleet
	pushClosed                // write the replica's close to the fleet
)

// String names the verdict, for debug logs.
func (v verdict) String() string {
	switch v {
	case keepLocal:
		return "keep"
	case adoptFleet:
		return "adopt"
	case extendOpen:
		return "extend"
	case pushOpen:
		return "push-open"
	case pushClosed:
		return "push-closed"
	}
	return "verdict(" + strconv.Itoa(int(v)) + ")"
}

// reconcile merges a snapshot of the shared state with the local view by
// evidence, as the package documentation's table says: the newer of the two
// wins, except that an open state whose cooldown is over never trips a
// closed replica. open is the local view (open or half-open), known the
// evidence behind it, now the time on Config.Clock (Unix ms).
func reconcile(open bool, known evidence, s snapshot, now int64) verdict {
	if !s.exists {
		if open {
			return pushOpen // Redis lost the state (restart, expiry): restore it
		}
		return keepLocal
	}
	o := order(s, known)
	if o == 0 {
		return keepLocal
	}
	newer := o > 0
	switch {
	case s.state == breaker.Closed:
		switch {
		case newer:
			return adoptFleet
		case open:
			return pushOpen
		}
		return keepLocal
	case now < s.until: // open, cooling down
		switch {
		case newer:
			return adoptFleet
		case open:
			return extendOpen
		}
		return pushClosed
	default: // open, cooldown over: the fleet is half-open
		switch {
		case !open && newer:
			return keepLocal
		case !open:
			return pushClosed
		case newer:
			return adoptFleet
		}
		return pushOpen
	}
}

// adopt reconciles the local view with one snapshot (see reconcile) and
// carries out the verdict.
func (b *Breaker) adopt(s snapshot) {
	local := b.local.State()
	open := local != breaker.Closed
	known := b.knownEvidence()
	now := b.nowMs()
	// The shared count decides whether a success must reset it. A closed
	// snapshot from our own write is older than the successes recorded since
	// it was queued, so it is not taken: the estimate already counts our own
	// failures and resets. When open, the count is only reported.
	if s.exists && order(s, known) >= 0 && (s.state != breaker.Closed || !s.own) {
		b.remoteFailures.Store(s.failures)
	}
	v := reconcile(open, known, s, now)
	if v != keepLocal && b.logger().Enabled(context.Background(), slog.LevelDebug) {
		b.logger().LogAttrs(context.Background(), slog.LevelDebug, "circuit breaker: reconciled with Redis",
			slog.String("breaker", b.cfg.Name), slog.String("verdict", v.String()),
			slog.Bool("local_open", open), slog.Int64("local_at", known.at),
			slog.Bool("shared", s.exists), slog.String("shared_state", s.state.String()),
			slog.Int64("shared_at", s.at), slog.Int64("shared_until", s.until), slog.Int64("shared_gen", s.gen))
	}
	switch v {
	case pushOpen:
		b.pushTrip(known.at)
	case pushClosed:
		b.pushClose(known.at)
	case extendOpen:
		if d, _ := b.local.UntilRetry(); s.until > now+ms(d) {
			b.local.Trip(time.UnixMilli(s.until))
		}
	case adoptFleet:
		if !b.setKnown(s) {
			return // this replica saw newer evidence meanwhile
		}
		b.busyUntil.Store(0)
		switch {
		case s.state == breaker.Closed:
			if open {
				b.local.Reset()
			}
		case open && s.at == known.at:
			// The same trip, under a new generation (the state was
			// recreated): the local view is right already, and tripping
			// it again would void its probes.
		default:
			b.local.Trip(time.UnixMilli(s.until))
		}
	}
}

// knownEvidence is the evidence behind the local view.
func (b *Breaker) knownEvidence() evidence {
	b.viewMu.Lock()
	defer b.viewMu.Unlock()
	return b.known
}

// setKnown records that the local view mirrors s, unless the replica has
// since seen evidence of its own that is newer. It reports whether it did.
func (b *Breaker) setKnown(s snapshot) bool {
	b.viewMu.Lock()
	defer b.viewMu.Unlock()
	if order(s, b.known) <= 0 {
		return false
	}
	b.known = evidence{at: s.at, gen: s.gen}
	return true
}

// noteOwn records that the local view changed on this replica's own evidence
// (its failures tripped it, its probe closed or reopened it) seen at now. The
// generation is kept: the evidence is newer than the state it last adopted.
func (b *Breaker) noteOwn(now int64) {
	b.viewMu.Lock()
	defer b.viewMu.Unlock()
	b.known.at = max(b.known.at, now)
}
