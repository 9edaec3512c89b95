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
//	                                 retrips (for cooldown growth), probe_ok
//	httpretry:breaker:{api}:probe:0  probe lease, one key per HalfOpenProbes:
//	                                 "<expiry ms> <gen> <replica>:<seq>"
//	httpretry:breaker:{api}:events   pub/sub channel: "<gen> <state> <until> <failures>"
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
// grows by one on every transition, so it keeps growing across a Redis
// restart that lost the hash. Replicas use it to ignore stale snapshots.

// prelude is shared by every script. KEYS[1] is the state hash, KEYS[2..] the
// probe leases. ARGV[1] now (ms), ARGV[2] key TTL (ms), ARGV[3] the channel,
// ARGV[4] cooldown (ms), ARGV[5] cooldown factor, ARGV[6] max cooldown (ms);
// each script's own arguments follow.
const prelude = `
local S = KEYS[1]
local now = tonumber(ARGV[1])

local function num(field)
	return tonumber(redis.call('HGET', S, field) or '0') or 0
end

local function int(n)
	return string.format('%d', n)
end

-- reply is the state after the script, then the script's result.
local function reply(code, a, b)
	local h = redis.call('HMGET', S, 'state', 'gen', 'until', 'failures')
	if not h[1] then
		return {0, 'closed', 0, 0, 0, code, a or 0, b or 0}
	end
	return {1, h[1], tonumber(h[2]), tonumber(h[3]), tonumber(h[4]), code, a or 0, b or 0}
end

local function create()
	if redis.call('EXISTS', S) == 0 then
		local t = redis.call('TIME')
		redis.call('HSET', S, 'state', 'closed', 'gen', int(t[1] * 1000 + math.floor(t[2] / 1000)),
			'until', '0', 'failures', '0', 'retrips', '0', 'probe_ok', '0')
	end
end

local function touch()
	redis.call('PEXPIRE', S, ARGV[2])
end

-- move makes a transition: a new generation, so the probe leases and probe
-- successes of the old one are void; then it tells the fleet.
local function move(state, untilMs, failures)
	redis.call('HSET', S, 'state', state, 'until', int(untilMs), 'failures', int(failures), 'probe_ok', '0')
	local gen = redis.call('HINCRBY', S, 'gen', 1)
	for i = 2, #KEYS do
		redis.call('DEL', KEYS[i])
	end
	touch()
	redis.call('PUBLISH', ARGV[3], int(gen) .. ' ' .. state .. ' ' .. int(untilMs) .. ' ' .. int(failures))
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

local function open(untilMs, failures)
	redis.call('HINCRBY', S, 'retrips', 1)
	move('open', untilMs, failures)
end
`

// Result codes, the sixth element of every reply.
const (
	codeNone    = 0
	codeClosed  = 1 // acquire: the fleet is closed
	codeOpen    = 2 // acquire: the fleet is open, its cooldown not over
	codeGranted = 3 // acquire: a lease is ours (a = slot, b = expiry)
	codeBusy    = 4 // acquire: every lease is held (b = earliest expiry)
	codeStale   = 5 // probe outcome: the fleet has moved on
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
	open(now + cooldown(), n)
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

// tripScript shares a trip decided by one replica alone (its own count, its
// failure ratio, or while Redis was away): it opens a closed or missing
// breaker until ARGV[7] with ARGV[8] failures, and leaves an open one alone.
var tripScript = redis.NewScript(prelude + `
create()
if redis.call('HGET', S, 'state') ~= 'open' then
	open(tonumber(ARGV[7]), math.max(num('failures'), tonumber(ARGV[8])))
end
return reply(0)
`)

// acquireScript asks for a probe lease once the cooldown is over. ARGV[7] the
// holder's token, ARGV[8] lease TTL (ms), ARGV[9] and ARGV[10] the replica's
// own open-until and failures, used when the state has vanished (Redis
// restarted or the key expired) while the replica was half-open: it is
// recreated as open, so that the fleet still sends one probe.
var acquireScript = redis.NewScript(prelude + `
if redis.call('EXISTS', S) == 0 then
	create()
	open(tonumber(ARGV[9]), tonumber(ARGV[10]))
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
for i = 2, #KEYS do
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
// this generation have succeeded; failure reopens it; neutral frees the slot.
var probeScript = redis.NewScript(prelude + `
if redis.call('HGET', S, 'state') ~= 'open' or num('gen') ~= tonumber(ARGV[7]) then
	return reply(5)
end
local o = ARGV[10]
if o == 'neutral' then
	local lease = KEYS[2 + tonumber(ARGV[9])]
	local v = redis.call('GET', lease)
	if v and string.match(v, '^%d+ %d+ (.*)$') == ARGV[8] then
		redis.call('DEL', lease)
	end
elseif o == 'success' then
	if redis.call('HINCRBY', S, 'probe_ok', 1) >= tonumber(ARGV[11]) then
		redis.call('HSET', S, 'retrips', '0')
		move('closed', 0, 0)
	end
else
	open(now + cooldown(), num('failures') + 1)
end
return reply(0)
`)

// releaseScript deletes the probe leases held under one token, whatever their
// slot and generation: the leases of a replica's lease call whose result it
// never used (see releaseToken). It needs neither the clock nor the state, so
// it has no prelude. KEYS as for the other scripts (the state hash is not
// touched), ARGV[1] the token. It returns how many leases it deleted.
var releaseScript = redis.NewScript(`
local n = 0
for i = 2, #KEYS do
	local v = redis.call('GET', KEYS[i])
	if v and string.match(v, '^%d+ %d+ (.*)$') == ARGV[1] then
		redis.call('DEL', KEYS[i])
		n = n + 1
	end
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

	// A script's result.
	code int64
	a, b int64

	// resync marks the first snapshot after an outage: it is adopted even
	// if its generation is not newer.
	resync bool
	// own marks the result of this replica's own background write.
	own bool
}

// parseReply reads a script's reply (see reply in the prelude).
func parseReply(v any) (snapshot, error) {
	arr, ok := v.([]any)
	if !ok || len(arr) != 8 {
		return snapshot{}, fmt.Errorf("redisbreaker: unexpected script reply %#v", v)
	}
	var nums [7]int64
	for i, idx := range []int{0, 2, 3, 4, 5, 6, 7} {
		n, ok := arr[idx].(int64)
		if !ok {
			return snapshot{}, fmt.Errorf("redisbreaker: unexpected script reply %#v", v)
		}
		nums[i] = n
	}
	s := snapshot{exists: nums[0] == 1, gen: nums[1], until: nums[2], failures: nums[3],
		code: nums[4], a: nums[5], b: nums[6]}
	str, _ := arr[1].(string)
	if err := s.state.UnmarshalText([]byte(str)); err != nil {
		return snapshot{}, fmt.Errorf("redisbreaker: %w", err)
	}
	return s, nil
}

// parseMessage reads a pub/sub message: "<gen> <state> <until> <failures>".
func parseMessage(payload string) (snapshot, error) {
	f := strings.Fields(payload)
	if len(f) != 4 {
		return snapshot{}, fmt.Errorf("redisbreaker: unexpected message %q", payload)
	}
	s := snapshot{exists: true}
	if err := s.state.UnmarshalText([]byte(f[1])); err != nil {
		return snapshot{}, fmt.Errorf("redisbreaker: %w", err)
	}
	var err [3]error
	s.gen, err[0] = strconv.ParseInt(f[0], 10, 64)
	s.until, err[1] = strconv.ParseInt(f[2], 10, 64)
	s.failures, err[2] = strconv.ParseInt(f[3], 10, 64)
	for _, e := range err {
		if e != nil {
			return snapshot{}, fmt.Errorf("redisbreaker: message %q: %w", payload, e)
		}
	}
	return s, nil
}

// readState reads the state hash without a script: the refresh.
func (b *Breaker) readState(ctx context.Context) (snapshot, error) {
	vals, err := b.client.HMGet(ctx, b.keys[0], "state", "gen", "until", "failures").Result()
	if err != nil {
		return snapshot{}, err
	}
	if len(vals) != 4 || vals[0] == nil {
		return snapshot{}, nil // no shared state: closed, nothing recorded
	}
	s := snapshot{exists: true}
	str, _ := vals[0].(string)
	if err := s.state.UnmarshalText([]byte(str)); err != nil {
		return snapshot{}, fmt.Errorf("redisbreaker: %w", err)
	}
	for i, dst := range []*int64{&s.gen, &s.until, &s.failures} {
		str, _ := vals[i+1].(string)
		n, err := strconv.ParseInt(str, 10, 64)
		if err != nil {
			return snapshot{}, fmt.Errorf("redisbreaker: field %d of %s: %w", i+1, b.keys[0], err)
		}
		*dst = n
	}
	return s, nil
}

// run executes a script with the common arguments followed by extra. Run
// sends EVALSHA and falls back to EVAL when the server has not seen the
// script (a fresh or restarted Redis).
func (b *Breaker) run(ctx context.Context, s *redis.Script, extra ...any) (snapshot, error) {
	args := make([]any, 0, 6+len(extra))
	args = append(args, b.nowMs(), ms(b.cfg.keyTTL()), b.channel,
		ms(b.cfg.Cooldown), b.cfg.CooldownFactor, ms(b.cfg.MaxCooldown))
	args = append(args, extra...)
	v, err := s.Run(ctx, b.client, b.keys, args...).Result()
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
