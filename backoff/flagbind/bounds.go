package flagbind

import (
	"fmt"
	"slices"
	"time"

	"github.com/tailguard/tailguard/backoff"
)

// Range bounds a constant to [Min, Max]. A zero Max means no upper bound.
type Range[T int | float64 | time.Duration] struct {
	Min, Max T
}

func (r Range[T]) validate(field string) error {
	if r.Min < 0 {
		return fmt.Errorf("bounds: %s: min %v is negative", field, r.Min)
	}
	if r.Max != 0 && r.Max < r.Min {
		return fmt.Errorf("bounds: %s: max %v is below min %v", field, r.Max, r.Min)
	}
	return nil
}

// contains reports whether v lies in r.
func (r Range[T]) contains(v T) bool { return v >= r.Min && (r.Max == 0 || v <= r.Max) }

// containsUnbounded is contains for constants where 0 means "no limit".
func (r Range[T]) containsUnbounded(v T) bool {
	if v == 0 {
		return r.Max == 0
	}
	return r.contains(v)
}

// clamp returns v moved into r.
func (r Range[T]) clamp(v T) T {
	if v < r.Min {
		return r.Min
	}
	if r.Max != 0 && v > r.Max {
		return r.Max
	}
	return v
}

// clampUnbounded is clamp for constants where 0 means "no limit"
// (maxAttempts, maxElapsed): 0 is above every finite Max.
func (r Range[T]) clampUnbounded(v T) T {
	if v == 0 {
		return r.Max
	}
	return r.clamp(v)
}

// Bounds declare what the flags may set. Values outside a range are clamped
// to it (and counted as reason "clamped"); a strategy outside Strategies is
// rejected. The zero Bounds allow everything [backoff.New] accepts.
type Bounds struct {
	// Strategies allowed; empty allows all.
	Strategies  []backoff.Strategy
	Base        Range[time.Duration]
	Cap         Range[time.Duration]
	Multiplier  Range[float64]
	Jitter      Range[float64]
	MaxAttempts Range[int]
	MaxElapsed  Range[time.Duration]
	// RetryBudget bounds the retryBudget ratio; Max may not exceed 1.
	RetryBudget Range[float64]
}

func (b Bounds) validate() error {
	for _, s := range b.Strategies {
		if !s.Valid() {
			return fmt.Errorf("bounds: strategies: invalid strategy %d", uint8(s))
		}
	}
	errs := []error{
		b.Base.validate("base"),
		b.Cap.validate("cap"),
		b.Multiplier.validate("multiplier"),
		b.Jitter.validate("jitter"),
		b.MaxAttempts.validate("maxAttempts"),
		b.MaxElapsed.validate("maxElapsed"),
		b.RetryBudget.validate("retryBudget"),
	}
	if b.RetryBudget.Max > 1 {
		errs = append(errs, fmt.Errorf("bounds: retryBudget: max %v exceeds 1", b.RetryBudget.Max))
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (b Bounds) allows(s backoff.Strategy) bool {
	return len(b.Strategies) == 0 || slices.Contains(b.Strategies, s)
}

// check returns the name of the first constant of c outside the bounds, or
// "". c must be normalized (defaults filled in).
func (b Bounds) check(c backoff.Config) string {
	switch {
	case !b.Base.contains(c.Base):
		return "base"
	case !b.Cap.contains(c.Cap):
		return "cap"
	case !b.Multiplier.contains(c.Multiplier):
		return "multiplier"
	case c.Strategy == backoff.GRPC && !b.Jitter.contains(c.Jitter):
		return "jitter"
	case !b.MaxAttempts.containsUnbounded(c.MaxAttempts):
		return "maxAttempts"
	case !b.MaxElapsed.containsUnbounded(c.MaxElapsed):
		return "maxElapsed"
	}
	return ""
}

// clamp moves the constants of c into the bounds and returns the names of
// those it changed. Zero multiplier and jitter (strategy defaults) are left
// alone; clamp again after normalizing.
func (b Bounds) clamp(c backoff.Config) (backoff.Config, []string) {
	var changed []string
	set := func(name string, moved bool) {
		if moved {
			changed = append(changed, name)
		}
	}
	var v time.Duration
	v, c.Base = c.Base, b.Base.clamp(c.Base)
	set("base", v != c.Base)
	v, c.Cap = c.Cap, b.Cap.clamp(c.Cap)
	set("cap", v != c.Cap)
	if c.Multiplier != 0 {
		f := c.Multiplier
		c.Multiplier = b.Multiplier.clamp(f)
		set("multiplier", f != c.Multiplier)
	}
	if c.Jitter != 0 && c.Strategy == backoff.GRPC {
		f := c.Jitter
		c.Jitter = b.Jitter.clamp(f)
		set("jitter", f != c.Jitter)
	}
	n := c.MaxAttempts
	c.MaxAttempts = b.MaxAttempts.clampUnbounded(n)
	set("maxAttempts", n != c.MaxAttempts)
	v, c.MaxElapsed = c.MaxElapsed, b.MaxElapsed.clampUnbounded(c.MaxElapsed)
	set("maxElapsed", v != c.MaxElapsed)
	return c, changed
}

// clampRetryBudget moves a ratio the flag set into the bounds and reports
// whether it moved. 0 (not set) is left alone.
func (b Bounds) clampRetryBudget(r float64) (float64, bool) {
	if r == 0 {
		return 0, false
	}
	c := b.RetryBudget.clamp(r)
	return c, c != r
}
