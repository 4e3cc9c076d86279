package backoff

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// MaxDelay is the largest Base or Cap a [Config] may have.
const MaxDelay = 24 * time.Hour

// Default multipliers, used when [Config.Multiplier] is zero.
const (
	// DefaultMultiplier applies to exponential, full-jitter and equal-jitter.
	DefaultMultiplier = 2.0
	// DefaultDecorrelatedMultiplier is the growth bound of decorrelated
	// jitter: the next delay is drawn from [Base, 3·prev].
	DefaultDecorrelatedMultiplier = 3.0
	// DefaultGRPCMultiplier is gRPC's connection backoff multiplier.
	DefaultGRPCMultiplier = 1.6
	// DefaultGRPCJitter is gRPC's connection backoff jitter (±20%), used
	// when [Config.Jitter] is zero for the grpc strategy.
	DefaultGRPCJitter = 0.2
)

// Config describes a [Policy]. Field names in errors follow the keys of the
// backoff-constants flag: strategy, base, cap, multiplier, jitter,
// maxAttempts and maxElapsed. The flag's remaining key, retryBudget, is the
// ratio of a [RatioBudget], not part of the policy.
type Config struct {
	// Strategy is required.
	Strategy Strategy
	// Base is the first retry's delay before jitter (the lower bound for
	// decorrelated). 0 ≤ Base ≤ Cap. A zero Base with a zero Cap retries
	// without waiting.
	Base time.Duration
	// Cap is a hard ceiling on every delay, Retry-After included.
	// Base ≤ Cap ≤ MaxDelay.
	Cap time.Duration
	// Multiplier is the growth factor per retry, in [1, 100]. Zero selects
	// the strategy's default: 2, 3 for decorrelated, 1.6 for grpc.
	Multiplier float64
	// Jitter is the relative spread of the grpc strategy, in [0, 1]: the
	// delay is drawn from exp(n)·[1−Jitter, 1+Jitter]. Zero selects 0.2
	// (use exponential for no jitter). Other strategies ignore it.
	Jitter float64
	// MaxAttempts bounds the number of attempts, the first one included.
	// Zero means no bound.
	MaxAttempts int
	// MaxElapsed stops retrying when the time since the first attempt plus
	// the next delay would exceed it. Zero means no bound.
	MaxElapsed time.Duration
}

// DefaultConfig returns a conservative configuration: full jitter from
// 100ms up to 10s, at most 5 attempts within 30s.
func DefaultConfig() Config {
	return Config{
		Strategy:    FullJitter,
		Base:        100 * time.Millisecond,
		Cap:         10 * time.Second,
		MaxAttempts: 5,
		MaxElapsed:  30 * time.Second,
	}
}

// ConfigError reports an invalid [Config] field.
type ConfigError struct {
	// Field is the flag-style field name, for example "cap".
	Field string
	// Err describes the problem.
	Err error
}

func (e *ConfigError) Error() string {
	return "invalid backoff config: " + e.Field + ": " + e.Err.Error()
}

func (e *ConfigError) Unwrap() error { return e.Err }

func fieldErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
}

// Validate checks c and returns a *[ConfigError] naming the first invalid
// field, or nil.
func (c Config) Validate() error {
	_, err := c.normalize()
	return err
}

// normalize validates c and fills in defaults.
func (c Config) normalize() (Config, error) {
	if !c.Strategy.Valid() {
		if c.Strategy == 0 {
			return c, fieldErr("strategy", "must be set")
		}
		return c, fieldErr("strategy", "unknown strategy %d", uint8(c.Strategy))
	}
	if c.Base < 0 {
		return c, fieldErr("base", "%v is negative", c.Base)
	}
	if c.Base > MaxDelay {
		return c, fieldErr("base", "%v exceeds %v", c.Base, MaxDelay)
	}
	if c.Cap < c.Base {
		return c, fieldErr("cap", "%v is below base %v", c.Cap, c.Base)
	}
	if c.Cap > MaxDelay {
		return c, fieldErr("cap", "%v exceeds %v", c.Cap, MaxDelay)
	}
	switch {
	case math.IsNaN(c.Multiplier):
		return c, fieldErr("multiplier", "is NaN")
	case c.Multiplier == 0:
		c.Multiplier = defaultMultiplier(c.Strategy)
	case c.Multiplier < 1 || c.Multiplier > 100:
		return c, fieldErr("multiplier", "%v is outside [1, 100]", c.Multiplier)
	}
	switch {
	case math.IsNaN(c.Jitter):
		return c, fieldErr("jitter", "is NaN")
	case c.Jitter < 0 || c.Jitter > 1:
		return c, fieldErr("jitter", "%v is outside [0, 1]", c.Jitter)
	case c.Strategy != GRPC:
		c.Jitter = 0
	case c.Jitter == 0:
		c.Jitter = DefaultGRPCJitter
	}
	if c.MaxAttempts < 0 {
		return c, fieldErr("maxAttempts", "%d is negative", c.MaxAttempts)
	}
	if c.MaxElapsed < 0 {
		return c, fieldErr("maxElapsed", "%v is negative", c.MaxElapsed)
	}
	return c, nil
}

func defaultMultiplier(s Strategy) float64 {
	switch s {
	case Decorrelated:
		return DefaultDecorrelatedMultiplier
	case GRPC:
		return DefaultGRPCMultiplier
	default:
		return DefaultMultiplier
	}
}

// tableSize bounds the precomputed exp(n) table. Beyond it, delays are
// computed with math.Pow, which only matters for multipliers so close to 1
// that the cap is not reached within tableSize retries.
const tableSize = 64

// Policy is an immutable, validated backoff policy. The zero Policy is not
// usable; build one with [New]. A *Policy is safe for concurrent use.
type Policy struct {
	cfg      Config
	strategy Strategy
	name     string
	base     float64
	cap      float64
	mult     float64
	jitter   float64
	// exp[i] = min(Cap, Base·Multiplier^i) in whole nanoseconds, for
	// i < n. If saturated, exp[n-1] holds the value of every later retry
	// as well.
	exp       [tableSize]float64
	n         int
	saturated bool
	last      float64 // exp[n-1]
}

// New validates cfg and returns the policy it describes. An invalid field
// yields a *[ConfigError].
func New(cfg Config) (*Policy, error) {
	c, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	p := &Policy{
		cfg:      c,
		strategy: c.Strategy,
		name:     c.Strategy.String(),
		base:     float64(c.Base),
		cap:      float64(c.Cap),
		mult:     c.Multiplier,
		jitter:   c.Jitter,
	}
	v := p.base
	for i := range tableSize {
		if v >= p.cap {
			p.exp[i], p.n, p.saturated = p.cap, i+1, true
			break
		}
		p.exp[i], p.n = math.Trunc(v), i+1
		next := v * p.mult
		if next == v { // Multiplier 1 or Base 0: constant from here on.
			p.saturated = true
			break
		}
		v = next
	}
	p.last = p.exp[p.n-1]
	return p, nil
}

// MustNew is like [New] but panics on an invalid configuration. It is meant
// for tests and package-level constants.
func MustNew(cfg Config) *Policy {
	p, err := New(cfg)
	if err != nil {
		panic(err)
	}
	return p
}

// Config returns the policy's configuration with defaults filled in.
func (p *Policy) Config() Config { return p.cfg }

// Strategy returns the policy's strategy.
func (p *Policy) Strategy() Strategy { return p.strategy }

// String describes the policy, for example
// "full-jitter(base=100ms cap=10s multiplier=2 maxAttempts=5 maxElapsed=30s)".
func (p *Policy) String() string {
	c := p.cfg
	s := fmt.Sprintf("%s(base=%v cap=%v multiplier=%g", p.name, c.Base, c.Cap, c.Multiplier)
	if p.strategy == GRPC {
		s += fmt.Sprintf(" jitter=%g", c.Jitter)
	}
	return s + fmt.Sprintf(" maxAttempts=%d maxElapsed=%v)", c.MaxAttempts, c.MaxElapsed)
}

// Float64 maps a random 64-bit value to a float64 uniformly distributed in
// [0, 1), the way [Policy.Delay] interprets its random input.
func Float64(r uint64) float64 {
	// The signed conversion is a single instruction; r>>11 fits in 53 bits.
	return float64(int64(r>>11)) * 0x1p-53
}

// Delay returns the delay before retry number retry (1 for the first retry,
// that is the second attempt). prev is the delay returned for the previous
// retry (0 before the first), used by the decorrelated strategy; rnd is a
// uniformly random 64-bit value, for example from math/rand/v2's Uint64, and
// is ignored by the exponential strategy.
//
// Delay is a pure function: it neither allocates nor locks, and its result
// lies in [0, Cap] for every input. A retry below 1 is treated as 1.
func (p *Policy) Delay(retry int, prev time.Duration, rnd uint64) time.Duration {
	u := Float64(rnd)
	if p.strategy == Decorrelated {
		// prev is clamped to [Base, Cap], so the upper bound
		// Multiplier·prev is never below Base.
		pv := float64(prev)
		if pv < p.base {
			pv = p.base
		}
		if pv > p.cap {
			pv = p.cap
		}
		// d = Base + u·(Multiplier·pv − Base), arranged so that only one
		// multiplication and one addition depend on prev.
		d := u*p.mult*pv + p.base*(1-u)
		if d >= p.cap {
			return p.cfg.Cap
		}
		if d < p.base { // rounding
			return p.cfg.Base
		}
		return time.Duration(d)
	}
	// e = min(Cap, Base·Multiplier^(retry-1)), from the table if possible.
	var e float64
	if i := uint(retry - 1); i < uint(p.n) {
		e = p.exp[i%tableSize] // i < n ≤ tableSize: the modulo only drops the bounds check
	} else if p.saturated && retry > 0 {
		e = p.last
	} else {
		e = p.expoSlow(retry)
	}
	switch p.strategy {
	case Exponential:
		return time.Duration(e)
	case FullJitter:
		return time.Duration(u * e)
	case EqualJitter:
		h := e * 0.5
		return time.Duration(h + u*h)
	case GRPC:
		d := e * (1 + p.jitter*(2*u-1))
		if d >= p.cap {
			return p.cfg.Cap
		}
		if d < 0 {
			return 0
		}
		return time.Duration(d)
	}
	return 0
}

// expoSlow returns min(Cap, Base·Multiplier^(retry-1)) for a retry outside
// the table.
func (p *Policy) expoSlow(retry int) float64 {
	if retry < 1 || p.n == 0 {
		return p.exp[0]
	}
	if p.saturated {
		return p.exp[p.n-1]
	}
	v := p.base * math.Pow(p.mult, float64(retry-1))
	if v >= p.cap || math.IsInf(v, 0) {
		return p.cap
	}
	return math.Trunc(v)
}

// errNilPolicy is returned where a policy is required but nil was given.
var errNilPolicy = errors.New("policy is nil")
