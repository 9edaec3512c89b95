package redisbreaker

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/hordekit/httpretry/breaker"
)

// Config configures a fleet breaker. Every process that should share a
// breaker gives it the same Name, Prefix and Redis; the breaker settings
// (threshold, cooldown, probes) should match across the fleet, since each
// replica passes its own to the scripts that change the shared state.
type Config struct {
	// Config is the breaker itself: Name (required here: it names the
	// shared state), FailureThreshold, Cooldown, HalfOpenProbes, the optional
	// failure ratio and cooldown growth, Clock, Logger and OnStateChange,
	// with breaker.Config's defaults. OnStateChange fires on this replica's
	// transitions, including those it mirrors from the fleet.
	breaker.Config

	// Prefix starts every Redis key and channel name. Default
	// "httpretry:breaker:".
	Prefix string

	// OpTimeout bounds every Redis call, in real time (it bounds network I/O,
	// so it does not follow Config.Clock). A request waits on Redis only to
	// take the half-open probe lease, and never longer than this. Default
	// 100 ms.
	OpTimeout time.Duration

	// RefreshInterval is how often the shared state is read back, as a
	// safety net under pub/sub (a missed message, a dropped subscription)
	// and to notice that Redis is back after an outage. Measured on
	// Config.Clock. It is also how long, in real time, the subscription may
	// stay quiet before it is checked with a PING (a hung server keeps a
	// dead connection open). Default 500 ms.
	RefreshInterval time.Duration

	// WarnInterval is the least time between two "Redis unreachable"
	// warnings, so an outage logs a reminder, not a flood. Measured on
	// Config.Clock. Default 30 s.
	WarnInterval time.Duration

	// ReplicaID identifies this process in probe leases, for debugging.
	// Default "<hostname>-<pid>-<random>".
	ReplicaID string
}

// DefaultPrefix is the key prefix when Config.Prefix is empty.
const DefaultPrefix = "httpretry:breaker:"

const (
	defaultOpTimeout       = 100 * time.Millisecond
	defaultRefreshInterval = 500 * time.Millisecond
	defaultWarnInterval    = 30 * time.Second

	// breaker.Config's defaults, which the scripts need as numbers; the
	// local breaker applies the same ones.
	defaultFailureThreshold = 5
	defaultCooldown         = 120 * time.Second
	defaultHalfOpenProbes   = 1
	defaultMaxCooldownTimes = 10

	// The shared state expires when no replica has written it for
	// keyTTLTimes the longest cooldown, at least minKeyTTL and at most
	// maxKeyTTL.
	keyTTLTimes = 4
	minKeyTTL   = 10 * time.Second
	maxKeyTTL   = 30 * 24 * time.Hour
)

// normalize checks the Redis settings and fills in every default, including
// breaker.Config's (the local breaker validates the rest).
func (c Config) normalize() (Config, error) {
	switch {
	case c.Name == "":
		return c, errors.New("redisbreaker: Config.Name must be set: it names the state shared through Redis")
	case c.OpTimeout < 0:
		return c, configError("OpTimeout", c.OpTimeout)
	case c.RefreshInterval < 0:
		return c, configError("RefreshInterval", c.RefreshInterval)
	case c.WarnInterval < 0:
		return c, configError("WarnInterval", c.WarnInterval)
	}
	c.Prefix = or(c.Prefix, DefaultPrefix)
	c.OpTimeout = or(c.OpTimeout, defaultOpTimeout)
	c.RefreshInterval = or(c.RefreshInterval, defaultRefreshInterval)
	c.WarnInterval = or(c.WarnInterval, defaultWarnInterval)
	if c.ReplicaID == "" {
		c.ReplicaID = replicaID()
	}
	c.FailureThreshold = or(c.FailureThreshold, defaultFailureThreshold)
	c.Cooldown = or(c.Cooldown, defaultCooldown)
	c.HalfOpenProbes = or(c.HalfOpenProbes, defaultHalfOpenProbes)
	if c.CooldownFactor > 1 && c.MaxCooldown == 0 {
		c.MaxCooldown = defaultMaxCooldownTimes * min(c.Cooldown, math.MaxInt64/defaultMaxCooldownTimes)
	}
	return c, nil
}

// longestCooldown is the longest an open period can last.
func (c Config) longestCooldown() time.Duration {
	if c.CooldownFactor > 1 {
		return max(c.Cooldown, c.MaxCooldown)
	}
	return c.Cooldown
}

// keyTTL is how long the shared state outlives its last write.
func (c Config) keyTTL() time.Duration {
	longest := min(c.longestCooldown(), maxKeyTTL)
	return min(max(keyTTLTimes*longest, minKeyTTL), maxKeyTTL)
}

// leaseTTL is how long a probe may go unreported before another replica may
// probe: the cooldown, as the local breaker abandons a probe round.
func (c Config) leaseTTL() time.Duration { return min(c.Cooldown, maxKeyTTL) }

func configError(field string, got any) error {
	return fmt.Errorf("redisbreaker: Config.%s must not be negative (got %v)", field, got)
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func replicaID() string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	var b [4]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}
