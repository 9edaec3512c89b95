package redisbreaker

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hordekit/httpretry/breaker"
)

// The shared state of breaker "api" with the default prefix:
//
//	httpretry:breaker:{api}:state    hash: state ("closed"/"open"), gen,
//	                                 until (open-until, Unix ms), failures,
//	                                 at (when the evidence behind the last
//	                                 transition was seen, Unix ms), retrips
//	                                 (for cooldown growth), probe_ok
//	httpretry:breaker:{api}:probe:0  probe lease, one key per HalfOpenProbes:
//	                                 "<expiry ms> <gen> <replica>:<seq>", with
//	                                 " reported" once its probe succeeded
//	httpretry:breaker:{api}:released:<replica>:<seq>
//	                                 a lease token given back before its
//	                                 acquire call ran (see releaseScript)
//	httpretry:breaker:{api}:events   pub/sub channel:
//	                                 "<gen> <state> <until> <failures> <at>"
//	                                 on a transition, "<gen> free" when a
//	                                 lease is given back early
//
// The braces are a Redis Cluster hash tag: every key of a breaker lands in
// one slot, so a script may touch them all.
//
// Half-open is not stored: it is "open with until in the past", derived from
// the clock like the local breaker does. Times are Unix milliseconds from the
// replicas' Config.Clock, passed to every script as ARGV[1]; a lease's expiry
// is checked against that too, so a fake clock drives the whole protocol in
// tests. Redis's own expiry (PX, PEXPIRE) is real time and only collects
// abandoned keys.
//
// gen starts at Redis's TIME in milliseconds when the hash is created and
// grows by one on every transition; it names a half-open round, so a lease or
// a probe outcome of an older round is void. at orders transitions across
// outages, restarts and failovers, when gen alone cannot (see reconcile).

// prelude is shared by every script. KEYS[1] is the state hash, KEYS[2..] the
// probe leases (a script with one more key lowers LN). ARGV[1] now (ms),
// ARGV[2] key TTL (ms), ARGV[3] the channel, ARGV[4] cooldown (ms), ARGV[5]
// cooldown factor, ARGV[6] max cooldown (ms); each script's own arguments
// follow.
const prelude = `
local S = KEYS[1]
local LN = #KEYS
local now = tonumber(ARGV[1])

local function num(field)
	return tonumber(redis.call('HGET', S, field) or '0') or 0
end

local function int(n)
	return string.format('%d', n)
end

-- reply is the state after the script, then the script's result.
local function reply(code, a, b)
	local h = redis.call('HMGET', S, 'state', 'gen', 'until', 'failures', 'at')
	if not h[1] then
		return {0, 'closed', 0, 0, 0, 0, code, a or 0, b or 0}
	end
	return {1, h[1], tonumber(h[2]), tonumber(h[3]), tonumber(h[4]), tonumber(h[5] or '0'), code, a or 0, b or 0}
end

local function create()
	if redis.call('EXISTS', S) == 0 then
		local t = redis.call('TIME')
		redis.call('HSET', S, 'state', 'closed', 'gen', int(t[1] * 1000 + math.floor(t[2] / 1000)),
			'until', '0', 'failures', '0', 'at', '0', 'retrips', '0', 'probe_ok', '0')
	end
end

local function touch()
	redis.call('PEXPIRE', S, ARGV[2])
end

-- move makes a transition: a new generation, so the probe leases and probe
-- successes of the old one are void; then it tells the fleet.
local function move(state, untilMs, failures, at)
	redis.call('HSET', S, 'state', state, 'until', int(untilMs), 'failures', int(failures),
		'at', int(at), 'probe_ok', '0')
	local gen = redis.call('HINCRBY', S, 'gen', 1)
	for i = 2, LN do
		redis.call('DEL', KEYS[i])
	end
	touch()
	redis.call('PUBLISH', ARGV[3], int(gen) .. ' ' .. state .. ' ' .. int(untilMs) .. ' ' .. int(failures) .. ' ' .. int(at))
end

-- cooldown is the next open period: grown by the factor for each trip since
-- the last close, capped.
local function cooldown()
	local c = tonumber(ARGV[4])
	local f = tonumber(ARGV[5])
	if f > 1 then
		c = math.min(c * f ^ num('retrips'), tonumber(ARGV[6]))
	end
	return math.floor(c)
end

local function open(untilMs, failures, at)
	redis.call('HINCRBY', S, 'retrips', 1)
	move('open', untilMs, failures, at)
end

local function close(at)
	redis.call('HSET', S, 'retrips', '0')
	move('closed', 0, 0, at)
end

-- free tells the fleet that a lease was given back before it expired.
local function free()
	redis.call('PUBLISH', ARGV[3], int(num('gen')) .. ' free')
end
`

// Result codes, the seventh element of every reply.
const (
	codeNone     = 0
	codeClosed   = 1 // acquire: the fleet is closed
	codeOpen     = 2 // acquire: the fleet is open, its cooldown not over
	codeGranted  = 3 // acquire: a lease is ours (a = slot, b = expiry)
	codeBusy     = 4 // acquire: every lease is held (b = earliest expiry)
	codeStale    = 5 // probe outcome: the fleet has moved on
	codeReleased = 6 // acquire: its token was given back before it ran
)

// failureScript counts a closed-state failure and opens the breaker at the
// threshold. ARGV[7] threshold.
var failureScript = redis.NewScript(prelude + `
create()
if redis.call('HGET', S, 'state') == 'open' then
	return reply(0)
end
local n = redis.call('HINCRBY', S, 'failures', 1)
if n >= tonumber(ARGV[7]) then
	open(now + cooldown(), n, now)
else
	touch()
end
return reply(0)
`)

// resetScript is a success after failures: it clears a closed breaker's
// count.
var resetScript = redis.NewScript(prelude + `
if redis.call('HGET', S, 'state') == 'closed' and num('failures') > 0 then
	redis.call('HSET', S, 'failures', '0')
	touch()
end
return reply(0)
`)

// tripScript shares an open state that one replica holds on evidence newer
// than the shared state's: its own failures, or the fleet's trip it
// remembers across a Redis restart. ARGV[7] open-until, ARGV[8] failures,
// ARGV[9] when the evidence was seen. It creates a missing state open, and
// opens a closed one if its last transition is older than that evidence. An
// open state is reopened only if its cooldown is over and the pushed one is
// not: reopening it with a cooldown over as well would change nothing but
// the generation, voiding the leases of probes in flight. An open state
// still cooling down is left alone: it already refuses calls.
var tripScript = redis.NewScript(prelude + `
local at, untilMs = tonumber(ARGV[9]), tonumber(ARGV[7])
if redis.call('EXISTS', S) == 0 then
	create()
	open(untilMs, tonumber(ARGV[8]), at)
elseif num('at') < at and (redis.call('HGET', S, 'state') ~= 'open' or num('until') <= now and now < untilMs) then
	open(untilMs, math.max(num('failures'), tonumber(ARGV[8])), at)
end
return reply(0)
`)

// closeScript shares a close that one replica saw after the shared state's
// last transition: its probe succeeded while Redis was out of reach. ARGV[7]
// when the probe succeeded. A missing state is closed already.
var closeScript = redis.NewScript(prelude + `
local at = tonumber(ARGV[7])
if redis.call('HGET', S, 'state') == 'open' and num('at') < at then
	close(at)
end
return reply(0)
`)

// acquireScript asks for a probe lease once the cooldown is over. The last
// key is the tombstone of this call's token (see releaseScript). ARGV[7] the
// holder's token, ARGV[8] lease TTL (ms), ARGV[9..11] the replica's own
// open-until, failures and evidence time, used when the state has vanished
// (Redis restarted or the key expired) while the replica was half-open: it
// is recreated as open, so that the fleet still sends one probe.
var acquireScript = redis.NewScript(prelude + `
LN = #KEYS - 1
if redis.call('EXISTS', KEYS[#KEYS]) == 1 then
	return reply(6)
end
if redis.call('EXISTS', S) == 0 then
	create()
	open(tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11]))
end
if redis.call('HGET', S, 'state') ~= 'open' then
	return reply(1)
end
if now < num('until') then
	return reply(2)
end
local gen = num('gen')
local ttl = tonumber(ARGV[8])
local busy = 0
for i = 2, LN do
	local exp, g = 0, 0
	local v = redis.call('GET', KEYS[i])
	if v then
		local e, gg = string.match(v, '^(%d+) (%d+) ')
		exp, g = tonumber(e) or 0, tonumber(gg) or 0
	end
	if g ~= gen or exp <= now then
		redis.call('SET', KEYS[i], int(now + ttl) .. ' ' .. int(gen) .. ' ' .. ARGV[7], 'PX', ttl)
		touch()
		return reply(3, i - 2, now + ttl)
	end
	if busy == 0 or exp < busy then
		busy = exp
	end
end
return reply(4, 0, busy)
`)

// probeScript reports a probe's outcome. ARGV[7] the lease's gen, ARGV[8] its
// token, ARGV[9] its slot, ARGV[10] "success", "failure" or "neutral",
// ARGV[11] HalfOpenProbes. Success closes the fleet once that many probes of
// this generation have succeeded; failure reopens it; neutral frees the slot
// and says so, so that the fleet may probe again at once. A success marks its
// lease reported, so that the same call run twice (go-redis retries a call
// whose reply was lost) counts once.
var probeScript = redis.NewScript(prelude + `
if redis.call('HGET', S, 'state') ~= 'open' or num('gen') ~= tonumber(ARGV[7]) then
	return reply(5)
end
local o = ARGV[10]
local lease = KEYS[2 + tonumber(ARGV[9])]
local v = redis.call('GET', lease)
local holder = v and string.match(v, '^%d+ %d+ (.*)$')
if o == 'neutral' then
	if holder == ARGV[8] then
		redis.call('DEL', lease)
		free()
	end
elseif o == 'success' then
	if holder == ARGV[8] .. ' reported' then
		return reply(0)
	end
	if holder == ARGV[8] then
		local ttl = redis.call('PTTL', lease)
		redis.call('SET', lease, v .. ' reported', 'PX', math.max(ttl, 1))
	end
	if redis.call('HINCRBY', S, 'probe_ok', 1) >= tonumber(ARGV[11]) then
		close(now)
	end
else
	open(now + cooldown(), num('failures') + 1, now)
end
return reply(0)
`)

// releaseScript gives back the probe leases held under one token, whatever
// their slot and generation: those of a replica's lease call whose result it
// never used (see releaseToken). It also leaves a tombstone for the token
// (the last key), which the acquire script checks: the lease call may still
// be queued in Redis behind this release (it went out on another connection),
// and without the tombstone it would then take a lease nobody will use. The
// tombstone lives one lease TTL, as long as such a lease could. It needs
// neither the clock nor the state's fields, so it has no prelude. ARGV[1] the
// token, ARGV[2] the lease TTL (ms), ARGV[3] the channel. It returns how many
// leases it deleted.
var releaseScript = redis.NewScript(`
local n = 0
for i = 2, #KEYS - 1 do
	local v = redis.call('GET', KEYS[i])
	if v and string.match(v, '^%d+ %d+ (.*)$') == ARGV[1] then
		redis.call('DEL', KEYS[i])
		n = n + 1
	end
end
redis.call('SET', KEYS[#KEYS], '1', 'PX', ARGV[2])
if n > 0 then
	local gen = redis.call('HGET', KEYS[1], 'gen') or '0'
	redis.call('PUBLISH', ARGV[3], gen .. ' free')
end
return n
`)

// snapshot is the shared state as one reply or message saw it.
type snapshot struct {
	exists   bool
	state    breaker.State // Closed or Open
	gen      int64
	until    int64 // open-until, Unix ms on Config.Clock
	failures int64
	at       int64 // when the evidence behind the last transition was seen, Unix ms

	// A script's result.
	code int64
	a, b int64

	// own marks the result of this replica's own background write.
	own bool
	// free marks a "lease given back" message; only gen is set.
	free bool
	// barrier is closed by the applier instead of applying (tests).
	barrier chan struct{}
}

// parseReply reads a script's reply (see reply in the prelude).
func parseReply(v any) (snapshot, error) {
	arr, ok := v.([]any)
	if !ok || len(arr) != 9 {
		return snapshot{}, fmt.Errorf("redisbreaker: unexpected script reply %#v", v)
	}
	var nums [8]int64
	for i, idx := range []int{0, 2, 3, 4, 5, 6, 7, 8} {
		n, ok := arr[idx].(int64)
		if !ok {
			return snapshot{}, fmt.Errorf("redisbreaker: unexpected script reply %#v", v)
		}
		nums[i] = n
	}
	s := snapshot{exists: nums[0] == 1, gen: nums[1], until: nums[2], failures: nums[3], at: nums[4],
		code: nums[5], a: nums[6], b: nums[7]}
	str, _ := arr[1].(string)
	if err := s.state.UnmarshalText([]byte(str)); err != nil {
		return snapshot{}, fmt.Errorf("redisbreaker: %w", err)
	}
	return s, nil
}

// parseMessage reads a pub/sub message: "<gen> <state> <until> <failures>
// <at>" for a transition, "<gen> free" for a lease given back.
func parseMessage(payload string) (snapshot, error) {
	f := strings.Fields(payload)
	if len(f) == 2 && f[1] == "free" {
		gen, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return snapshot{}, fmt.Errorf("redisbreaker: message %q: %w", payload, err)
		}
		return snapshot{free: true, gen: gen}, nil
	}
	if len(f) != 5 {
		return snapshot{}, fmt.Errorf("redisbreaker: unexpected message %q", payload)
	}
	s := snapshot{exists: true}
	if err := s.state.UnmarshalText([]byte(f[1])); err != nil {
		return snapshot{}, fmt.Errorf("redisbreaker: %w", err)
	}
	for i, dst := range []*int64{&s.gen, nil, &s.until, &s.failures, &s.at} {
		if dst == nil {
			continue
		}
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return snapshot{}, fmt.Errorf("redisbreaker: message %q: %w", payload, err)
		}
		*dst = n
	}
	return s, nil
}

// readState reads the state hash without a script: the refresh.
func (b *Breaker) readState(ctx context.Context) (snapshot, error) {
	vals, err := b.client.HMGet(ctx, b.keys[0], "state", "gen", "until", "failures", "at").Result()
	if err != nil {
		return snapshot{}, err
	}
	if len(vals) != 5 || vals[0] == nil {
		return snapshot{}, nil // no shared state: closed, nothing recorded
	}
	s := snapshot{exists: true}
	str, _ := vals[0].(string)
	if err := s.state.UnmarshalText([]byte(str)); err != nil {
		return snapshot{}, fmt.Errorf("redisbreaker: %w", err)
	}
	for i, dst := range []*int64{&s.gen, &s.until, &s.failures, &s.at} {
		str, ok := vals[i+1].(string)
		if !ok && i == 3 {
			continue // written before "at" existed: no evidence time
		}
		n, err := strconv.ParseInt(str, 10, 64)
		if err != nil {
			return snapshot{}, fmt.Errorf("redisbreaker: field %d of %s: %w", i+1, b.keys[0], err)
		}
		*dst = n
	}
	return s, nil
}

// run executes a script on the breaker's keys with the common arguments
// followed by extra. Run sends EVALSHA and falls back to EVAL when the server
// has not seen the script (a fresh or restarted Redis).
func (b *Breaker) run(ctx context.Context, s *redis.Script, extra ...any) (snapshot, error) {
	return b.runKeys(ctx, s, b.keys, extra...)
}

// runKeys is run with the keys given: the breaker's, plus a tombstone for
// the acquire script.
func (b *Breaker) runKeys(ctx context.Context, s *redis.Script, keys []string, extra ...any) (snapshot, error) {
	args := make([]any, 0, 6+len(extra))
	args = append(args, b.nowMs(), ms(b.cfg.keyTTL()), b.channel,
		ms(b.cfg.Cooldown), b.cfg.CooldownFactor, ms(b.cfg.MaxCooldown))
	args = append(args, extra...)
	v, err := s.Run(ctx, b.client, keys, args...).Result()
	if err != nil {
		return snapshot{}, err
	}
	return parseReply(v)
}

// ms is d in whole milliseconds, at least 1 when d is positive, for Redis.
func ms(d time.Duration) int64 {
	if d > 0 && d < time.Millisecond {
		return 1
	}
	return d.Milliseconds()
}
