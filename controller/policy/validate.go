package policy

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
)

// FieldError is one problem of a policy, with the path of the field at
// fault, for example services[0].backoff.cap.max.
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// ValidationError lists every problem found in a policy, in file order.
type ValidationError struct {
	Errors []*FieldError
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("invalid policy:")
	for _, fe := range e.Errors {
		b.WriteString("\n  ")
		b.WriteString(fe.Error())
	}
	return b.String()
}

// Unwrap returns the individual field errors.
func (e *ValidationError) Unwrap() []error {
	errs := make([]error, len(e.Errors))
	for i, fe := range e.Errors {
		errs[i] = fe
	}
	return errs
}

type checker struct {
	errs []*FieldError
}

func (c *checker) add(path, format string, args ...any) {
	c.errs = append(c.errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// Validate checks every bound of p. It returns a *ValidationError or nil.
// Load calls it after filling in defaults; call it again after changing a
// Policy in code.
func (p *Policy) Validate() error {
	var c checker
	if len(p.Services) == 0 {
		c.add("services", "must list at least one service")
	}
	seen := map[string]int{}
	for i := range p.Services {
		s := &p.Services[i]
		path := fmt.Sprintf("services[%d]", i)
		if j, dup := seen[s.Name]; dup && s.Name != "" {
			c.add(path+".name", "duplicate service %q (also services[%d])", s.Name, j)
		}
		seen[s.Name] = i
		s.validate(&c, path)
	}
	if len(c.errs) > 0 {
		return &ValidationError{Errors: c.errs}
	}
	return nil
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

func (s *Service) validate(c *checker, path string) {
	switch {
	case s.Name == "":
		c.add(path+".name", "must be set")
	case !validName(s.Name):
		c.add(path+".name", "%q may contain only letters, digits, '-', '_' and '.'", s.Name)
	}
	switch s.Mode {
	case ModeObserve, ModePropose, ModeAuto:
	default:
		c.add(path+".mode", "must be observe, propose or auto, got %q", s.Mode)
	}
	if s.Upstream == "" {
		c.add(path+".upstream", "must be set")
	}
	for i, comp := range s.Components {
		if comp == "" {
			c.add(fmt.Sprintf("%s.components[%d]", path, i), "must not be empty")
		}
	}
	if len(s.SLOs) == 0 {
		c.add(path+".slos", "must list at least one SLO")
	}
	names := map[string]int{}
	var maxWindow model.Duration
	for i, o := range s.SLOs {
		p := fmt.Sprintf("%s.slos[%d]", path, i)
		if j, dup := names[o.Name]; dup && o.Name != "" {
			c.add(p+".name", "duplicate SLO %q (also slos[%d])", o.Name, j)
		}
		names[o.Name] = i
		o.validate(c, p)
		maxWindow = max(maxWindow, o.Objective.Window)
	}
	s.Backoff.validate(c, path+".backoff")
	s.Flags.validate(c, path+".flags", s.Backoff.Tunable())

	positive(c, path+".cooldown", s.Cooldown)
	positive(c, path+".evaluationWindow", s.EvaluationWindow)
	if s.EvaluationWindow > 0 && s.EvaluationWindow < maxWindow {
		c.add(path+".evaluationWindow", "must be ≥ the longest SLO window (%v), got %v", maxWindow, s.EvaluationWindow)
	}
	if s.MaxActionsPerHour < 1 || s.MaxActionsPerHour > 60 {
		c.add(path+".maxActionsPerHour", "must be in [1, 60], got %d", s.MaxActionsPerHour)
	}
	fraction(c, path+".hysteresis.enter", s.Hysteresis.Enter)
	fraction(c, path+".hysteresis.exit", s.Hysteresis.Exit)
	if v := s.Verification.MinImprovement; !(v > 0 && v <= 1) {
		c.add(path+".verification.minImprovement", "must be in (0, 1], got %v", v)
	}
	if v := s.Attribution.MinConfidence; !(v >= 0 && v <= 1) {
		c.add(path+".attribution.minConfidence", "must be in [0, 1], got %v", v)
	}
	if s.Restore.Enabled {
		switch {
		case s.Restore.HoldTime <= 0:
			c.add(path+".restore.holdTime", "must be > 0 when restore is enabled")
		case s.Restore.HoldTime < s.EvaluationWindow:
			c.add(path+".restore.holdTime", "must be ≥ evaluationWindow (%v), got %v", s.EvaluationWindow, s.Restore.HoldTime)
		}
	} else if s.Restore.HoldTime < 0 {
		c.add(path+".restore.holdTime", "must not be negative")
	}
}

func (o SLO) validate(c *checker, path string) {
	if !validName(o.Name) {
		c.add(path+".name", "must be set and contain only letters, digits, '-', '_' and '.', got %q", o.Name)
	}
	for k, v := range o.Selector {
		if k == "" || v == "" {
			c.add(path+".selector", "labels and values must not be empty, got %q=%q", k, v)
		}
	}
	obj := o.Objective
	positive(c, path+".objective.window", obj.Window)
	switch o.Signal {
	case SignalLatency:
		if !(obj.Quantile > 0 && obj.Quantile < 1) {
			c.add(path+".objective.quantile", "must be in (0, 1), got %v", obj.Quantile)
		}
		positive(c, path+".objective.threshold", obj.Threshold)
		if obj.Ratio != 0 {
			c.add(path+".objective.ratio", "not allowed for a latency SLO (use threshold)")
		}
	case SignalRetryRatio, SignalErrorRatio:
		if !(obj.Ratio > 0 && obj.Ratio < 1) {
			c.add(path+".objective.ratio", "must be in (0, 1), got %v", obj.Ratio)
		}
		if obj.Threshold != 0 || obj.Quantile != 0 {
			c.add(path+".objective", "threshold and quantile are not allowed for %s SLOs (use ratio)", o.Signal)
		}
	default:
		c.add(path+".signal", "must be latency, retry_ratio or error_ratio, got %q", o.Signal)
	}
}

func (b Backoff) validate(c *checker, path string) {
	if d := b.Base; d != nil {
		durationBound(c, path+".base", *d)
	}
	if d := b.Cap; d != nil {
		durationBound(c, path+".cap", *d)
		if b.Base != nil && d.Max < b.Base.Min {
			c.add(path+".cap.max", "must be ≥ base.min (%v), got %v", b.Base.Min, d.Max)
		}
	}
	if f := b.Multiplier; f != nil {
		floatBound(c, path+".multiplier", *f, 1, 100)
	}
	if f := b.Jitter; f != nil {
		floatBound(c, path+".jitter", *f, 0, 1)
	}
	if n := b.MaxAttempts; n != nil {
		p := path + ".maxAttempts"
		switch {
		case n.Min < 1:
			c.add(p+".min", "must be ≥ 1, got %d", n.Min)
		case n.Max < n.Min:
			c.add(p+".max", "must be ≥ min (%d), got %d", n.Min, n.Max)
		case n.Max > MaxAttemptsLimit:
			c.add(p+".max", "must be ≤ %d, got %d", MaxAttemptsLimit, n.Max)
		}
		if n.MaxStep < 1 {
			c.add(p+".maxStep", "must be ≥ 1, got %d", n.MaxStep)
		}
	}
	if f := b.RetryBudget; f != nil {
		floatBound(c, path+".retryBudget", *f, 0, 1)
		if f.Min <= 0 {
			c.add(path+".retryBudget.min", "must be > 0, got %v", f.Min)
		}
	}
	if b.AttemptLatency < 0 {
		c.add(path+".attemptLatency", "must not be negative")
	}
	if r := b.Resilience; r != nil {
		p := path + ".resilience"
		okP := r.FailureProbability > 0 && r.FailureProbability < 1
		okR := r.MaxFailureRatio > 0 && r.MaxFailureRatio < 1
		if !okP {
			c.add(p+".failureProbability", "must be in (0, 1), got %v", r.FailureProbability)
		}
		if !okR {
			c.add(p+".maxFailureRatio", "must be in (0, 1), got %v", r.MaxFailureRatio)
		}
		if r.MinRetrySpan < 0 {
			c.add(p+".minRetrySpan", "must not be negative")
		}
		if okP && okR && b.MaxAttempts != nil && b.MaxAttempts.Max >= 1 {
			if got := math.Pow(r.FailureProbability, float64(b.MaxAttempts.Max)); got > r.MaxFailureRatio {
				c.add(p+".maxFailureRatio", "unattainable within maxAttempts.max (%d): %v^%d = %.3g > %v",
					b.MaxAttempts.Max, r.FailureProbability, b.MaxAttempts.Max, got, r.MaxFailureRatio)
			}
		}
	}
}

func durationBound(c *checker, path string, d DurationBound) {
	switch {
	case d.Min <= 0:
		c.add(path+".min", "must be > 0, got %v", d.Min)
	case d.Max < d.Min:
		c.add(path+".max", "must be ≥ min (%v), got %v", d.Min, d.Max)
	}
	positive(c, path+".maxStep", d.MaxStep)
}

func floatBound(c *checker, path string, f FloatBound, lo, hi float64) {
	switch {
	case !finite(f.Min) || f.Min < lo || f.Min > hi:
		c.add(path+".min", "must be in [%v, %v], got %v", lo, hi, f.Min)
	case !finite(f.Max) || f.Max < f.Min || f.Max > hi:
		c.add(path+".max", "must be in [min (%v), %v], got %v", f.Min, hi, f.Max)
	}
	if !finite(f.MaxStep) || f.MaxStep <= 0 {
		c.add(path+".maxStep", "must be > 0, got %v", f.MaxStep)
	}
}

func (f Flags) validate(c *checker, path string, tunable bool) {
	sf := f.Strategy
	p := path + ".strategy"
	if sf.Key == "" {
		c.add(p+".key", "must be set")
	}
	if !slices.Contains(Strategies, sf.NewVariant) {
		c.add(p+".newVariant", "must be one of %s, got %q", strings.Join(Strategies, ", "), sf.NewVariant)
	}
	if !slices.Contains(Strategies, sf.OldVariant) {
		c.add(p+".oldVariant", "must be one of %s, got %q", strings.Join(Strategies, ", "), sf.OldVariant)
	} else if sf.OldVariant == sf.NewVariant {
		c.add(p+".oldVariant", "must differ from newVariant (%q)", sf.NewVariant)
	}
	if len(sf.Rollout) == 0 {
		c.add(p+".rollout", "must list at least one percentage")
	}
	for i, v := range sf.Rollout {
		switch {
		case v < 0 || v > 100:
			c.add(fmt.Sprintf("%s.rollout[%d]", p, i), "must be in [0, 100], got %d", v)
		case i > 0 && v >= sf.Rollout[i-1]:
			c.add(fmt.Sprintf("%s.rollout[%d]", p, i), "must be below rollout[%d] (%d): percentages are listed in decreasing order, got %d", i-1, sf.Rollout[i-1], v)
		}
	}
	if f.Constants.Key == "" {
		if tunable {
			c.add(path+".constants.key", "must be set when backoff constants are tunable")
		}
	} else if f.Constants.Key == sf.Key {
		c.add(path+".constants.key", "must differ from strategy.key (%q)", sf.Key)
	}
}

func positive(c *checker, path string, d model.Duration) {
	if d <= 0 {
		c.add(path, "must be > 0, got %v", d)
	}
}

func fraction(c *checker, path string, v float64) {
	if !finite(v) || v < 0 || v >= 1 {
		c.add(path, "must be in [0, 1), got %v", v)
	}
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
