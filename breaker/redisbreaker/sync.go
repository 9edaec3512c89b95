package redisbreaker

import (
	"context"
	"errors"
	"log/slog"
	"net"
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
}

type opKind uint8

const (
	opFailure opKind = iota // count a closed-state failure
	opReset                 // a success after failures
	opTrip                  // share this replica's own trip
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

// pushTrip queues a trip of this replica's for the fleet, once.
func (b *Breaker) pushTrip() {
	if b.tripPending.CompareAndSwap(false, true) && !b.send(op{kind: opTrip}) {
		b.tripPending.Store(false)
	}
}

func (b *Breaker) writeLoop() {
	defer b.wg.Done()
	for {
		select {
		case <-b.done:
			return
		case o := <-b.ops:
			b.write(o)
		}
	}
}

// write runs one queued write. While Redis is unreachable writes are dropped
// rather than each waiting out OpTimeout: the local breaker has counted the
// failures, and the resync after the outage reconciles the state.
func (b *Breaker) write(o op) {
	if o.kind == opTrip {
		defer b.tripPending.Store(false)
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
		s, err = b.run(ctx, tripScript, untilMs, failures)
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
// so any lease holding it is deleted, in whichever slot.
//
// It is best effort and bounded by OpTimeout. Unlike the writer's writes, it
// is tried even while Redis is marked down, because the call that marked it
// down is usually this very lease call, which was only slow. A lease left
// behind would keep the whole fleet from probing for a cooldown. A failure is
// not reported and the lease expires on its own; so does a lease that Redis
// grants after this has run (the lease call was still queued in Redis). It
// runs on bounded's goroutine, which Close waits for, never on a request's
// path.
func (b *Breaker) releaseToken(token string) {
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.OpTimeout)
	defer cancel()
	_ = releaseScript.Run(ctx, b.client, b.keys, token).Err()
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

// refresh reads the state and mirrors it. The first success after an outage
// resynchronises and tells the subscriber to reconnect.
func (b *Breaker) refresh() {
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.OpTimeout)
	s, err := b.readState(ctx)
	cancel()
	if err != nil {
		b.markDown(err)
		return
	}
	if !b.closed() && b.down.CompareAndSwap(true, false) {
		s.resync = true
		b.logger().LogAttrs(context.Background(), slog.LevelInfo,
			"circuit breaker: Redis reachable again, resynchronising", slog.String("breaker", b.cfg.Name))
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
	b.apply(s)
}

// subscribeLoop receives the fleet's transitions. When the connection drops
// it marks Redis unreachable and waits for the refresher to see Redis back
// before reconnecting, so an outage does not become a reconnect loop.
func (b *Breaker) subscribeLoop() {
	defer b.wg.Done()
	// The channel is recorded even if this fails; Receive then reconnects
	// and subscribes, or reports the error.
	b.ps.Subscribe(b.ctx, b.channel)
	for {
		msg, err := b.ps.Receive(b.ctx)
		if b.closed() {
			return
		}
		if err != nil {
			b.subscribed.Store(false)
			b.markDown(err)
			select {
			case <-b.done:
				return
			case <-b.wake:
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				// Transitions published while we were not subscribed were
				// missed: read the state once now.
				b.refresh()
				b.subscribed.Store(true)
			}
		case *redis.Message:
			if s, err := parseMessage(m.Payload); err == nil {
				b.apply(s)
			}
		}
	}
}

// apply queues a snapshot for the applier without blocking.
func (b *Breaker) apply(s snapshot) {
	select {
	case b.applyCh <- s:
	default:
	}
}

// applyLoop mirrors snapshots into the local breaker one at a time, so they
// are applied in order and the local breaker's hooks never run under a lock
// of ours: a hook may call back into the breaker.
func (b *Breaker) applyLoop() {
	defer b.wg.Done()
	for {
		select {
		case <-b.done:
			return
		case s := <-b.applyCh:
			b.adopt(s)
		}
	}
}

// adopt mirrors the shared state into the local view. Snapshots older than
// the newest adopted are ignored, except the first after an outage, which is
// adopted whatever its generation. Either way, when the fleet is closed (or
// its state is gone) while this replica is open, the replica pushes its open
// state, unless that state is only a mirror of an open period the fleet has
// since left: a replica cut off while the fleet recovered must not reopen it.
func (b *Breaker) adopt(s snapshot) {
	local := b.local.State()
	remoteClosed := !s.exists || s.state == breaker.Closed
	if remoteClosed && local != breaker.Closed {
		if b.tripPending.Load() {
			return // our trip is on its way; its result will come back
		}
		if !s.exists || s.gen == b.knownGen || b.ownTrip.Load() {
			b.pushTrip()
			return
		}
	}
	if !s.exists {
		return
	}
	newer := s.resync || s.gen > b.knownGen
	// The shared count decides whether a success must reset it. A closed
	// snapshot from our own write is older than the successes recorded since
	// it was queued, so it is not taken: the estimate already counts our own
	// failures and resets. When open, the count is only reported.
	if (newer || s.gen == b.knownGen) && (!remoteClosed || !s.own) {
		b.remoteFailures.Store(s.failures)
	}
	if !newer {
		return
	}
	b.knownGen = s.gen
	b.busyUntil.Store(0)
	b.ownTrip.Store(false) // the fleet's state supersedes ours
	if remoteClosed {
		b.remoteOpen.Store(false)
		if local != breaker.Closed {
			b.local.Reset()
		}
		return
	}
	b.remoteOpen.Store(true)
	b.local.Trip(time.UnixMilli(s.until))
}
