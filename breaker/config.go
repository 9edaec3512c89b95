package breaker

import (
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/hordekit/httpretry/clock"
)

// Config configures a Breaker. The zero value is the seed's breaker: open
// after 5 consecutive failures, probe again after 120 s, one probe at a time.
type Config struct {
	// Name identifies the breaker in logs, errors and the heartbeat. A Set
	// names each breaker by its key.
	Name string

	// FailureThreshold is how many consecutive failures open the breaker.
	// Default 5.
	FailureThreshold int

	// Cooldown is how long the breaker stays open before it admits a probe.
	// It is also how long a half-open breaker waits for its probes to report
	// before it gives up on them and admits new ones. Default 120 s.
	Cooldown time.Duration

	// HalfOpenProbes is how many callers a half-open breaker admits at once.
	// It closes once that many probes have succeeded with none failing; any
	// probe failure reopens it. Default 1.
	HalfOpenProbes int

	// FailureRatio, when above 0, also opens the breaker when at least this
	// fraction of the calls in the last RatioWindow failed, provided there
	// were at least MinRequests of them. It must be in (0, 1]; 0 turns the
	// ratio trip off. With it on, every closed-path outcome is counted in a
	// shared window, which costs a clock read and an atomic add per call.
	FailureRatio float64

	// RatioWindow is the span the failure ratio is measured over, sliding in
	// tenths. Default 10 s.
	RatioWindow time.Duration

	// MinRequests is how many calls the window must hold before the ratio can
	// open the breaker, so that one failure in two calls does not. Default 20.
	MinRequests int

	// CooldownFactor, when above 1, multiplies the cooldown on each re-trip
	// (a failed probe) until the breaker closes, like Envoy's ejection time:
	// an upstream that stays down is probed less and less often. 0 or 1 keeps
	// the cooldown constant.
	CooldownFactor float64

	// MaxCooldown caps the grown cooldown. Default 10 x Cooldown. It is
	// ignored when CooldownFactor is off.
	MaxCooldown time.Duration

	// Clock is the time source; nil means the real clock.
	Clock clock.Clock

	// Logger receives a record on every transition: Error "circuit breaker
	// open", Info "circuit breaker half-open" and "circuit breaker closed",
	// Warn "circuit breaker probe abandoned". Nil means slog.Default() at the
	// time of the record.
	Logger *slog.Logger

	// OnStateChange, if set, is called on every transition, in the order
	// the transitions happened, with no lock held: it may call back into the
	// breaker. See Breaker for which goroutine runs it.
	OnStateChange func(name string, from, to State)
}

const (
	defaultFailureThreshold = 5
	defaultCooldown         = 120 * time.Second
	defaultHalfOpenProbes   = 1
	defaultRatioWindow      = 10 * time.Second
	defaultMinRequests      = 20
	defaultMaxCooldownTimes = 10
)

// normalize checks c and fills in the defaults.
func (c Config) normalize() (Config, error) {
	switch {
	case c.FailureThreshold < 0:
		return c, configError("FailureThreshold", "must not be negative", c.FailureThreshold)
	case c.FailureThreshold > maxFailures:
		return c, configError("FailureThreshold", fmt.Sprintf("must be at most %d", maxFailures), c.FailureThreshold)
	case c.Cooldown < 0:
		return c, configError("Cooldown", "must not be negative", c.Cooldown)
	case c.HalfOpenProbes < 0:
		return c, configError("HalfOpenProbes", "must not be negative", c.HalfOpenProbes)
	case math.IsNaN(c.FailureRatio) || c.FailureRatio < 0 || c.FailureRatio > 1:
		return c, configError("FailureRatio", "must be in (0, 1], or 0 to turn it off", c.FailureRatio)
	case c.RatioWindow < 0:
		return c, configError("RatioWindow", "must not be negative", c.RatioWindow)
	case c.MinRequests < 0:
		return c, configError("MinRequests", "must not be negative", c.MinRequests)
	case math.IsNaN(c.CooldownFactor) || math.IsInf(c.CooldownFactor, 0) ||
		c.CooldownFactor < 0 || (c.CooldownFactor > 0 && c.CooldownFactor < 1):
		return c, configError("CooldownFactor", "must be 0 or 1 (constant), or above 1", c.CooldownFactor)
	case c.MaxCooldown < 0:
		return c, configError("MaxCooldown", "must not be negative", c.MaxCooldown)
	}
	c.FailureThreshold = or(c.FailureThreshold, defaultFailureThreshold)
	c.Cooldown = or(c.Cooldown, defaultCooldown)
	c.HalfOpenProbes = or(c.HalfOpenProbes, defaultHalfOpenProbes)
	c.RatioWindow = or(c.RatioWindow, defaultRatioWindow)
	c.MinRequests = or(c.MinRequests, defaultMinRequests)
	if c.CooldownFactor > 1 {
		if c.MaxCooldown != 0 && c.MaxCooldown < c.Cooldown {
			return c, configError("MaxCooldown", "must not be less than Cooldown "+c.Cooldown.String(), c.MaxCooldown)
		}
		c.MaxCooldown = or(c.MaxCooldown, defaultMaxCooldownTimes*min(c.Cooldown, math.MaxInt64/defaultMaxCooldownTimes))
	}
	return c, nil
}

// configError names the field so that a bad value read from a config file
// is found without reading this package.
func configError(field, rule string, got any) error {
	return fmt.Errorf("breaker: Config.%s %s (got %v)", field, rule, got)
}

// or returns v, or def when v is the zero value.
func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
