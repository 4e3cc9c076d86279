package controller

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/controller/policy"
)

// Verdict is the detector's verdict on one SLO's signal.
type Verdict string

// The verdicts.
const (
	VerdictRegressed    Verdict = "regressed"
	VerdictHealthy      Verdict = "healthy"
	VerdictInconclusive Verdict = "inconclusive"
)

// CauseKind says what a regression was attributed to.
type CauseKind string

// The cause kinds. The controller acts only on flag and component causes
// that its policy controls; ambiguous and unknown causes are left to people.
const (
	CauseFlag      CauseKind = "flag"
	CauseComponent CauseKind = "component"
	CauseAmbiguous CauseKind = "ambiguous"
	CauseUnknown   CauseKind = "unknown"
)

// Cause is the change a regression was attributed to.
type Cause struct {
	Kind CauseKind `json:"kind"`
	// FlagKey and Variant name a flag change, for example backoff-strategy
	// switched to decorrelated.
	FlagKey string `json:"flagKey,omitempty"`
	Variant string `json:"variant,omitempty"`
	// Component and Version name a component change, for example
	// dten-gateway 3.0.
	Component string `json:"component,omitempty"`
	Version   string `json:"version,omitempty"`
	// IncidentID groups the findings sharing this cause. When empty the
	// controller derives one from the service, the cause and the onset.
	IncidentID string `json:"incidentId,omitempty"`
	// Confidence is the attribution's confidence in [0, 1].
	Confidence float64 `json:"confidence"`
	// Evidence is a short human-readable summary of the evidence.
	Evidence string `json:"evidence,omitempty"`
}

// key identifies the cause independently of the incident id.
func (c Cause) key() string {
	switch c.Kind {
	case CauseFlag:
		return "flag:" + c.FlagKey + "=" + c.Variant
	case CauseComponent:
		return "component:" + c.Component + "@" + c.Version
	}
	return string(c.Kind)
}

// String describes the cause, for example "flag backoff-strategy=decorrelated".
func (c Cause) String() string {
	switch c.Kind {
	case CauseFlag:
		return fmt.Sprintf("flag %s=%s", c.FlagKey, c.Variant)
	case CauseComponent:
		return fmt.Sprintf("component %s %s", c.Component, c.Version)
	}
	return string(c.Kind)
}

// Assessment is the state of one SLO in one cycle, as the detector and the
// SLI queries see it.
type Assessment struct {
	// SLO names the policy's SLO.
	SLO string `json:"slo"`
	// Value is the current SLI over the SLO window: seconds for latency, a
	// fraction for ratios.
	Value float64 `json:"value"`
	// Objective is the objective the detector evaluated against, in SLI
	// units. Informational: the policy's objective is authoritative.
	Objective float64 `json:"objective,omitempty"`
	// Forecast is the SLI projected to the end of the next window from its
	// trend, used to act on an SLO about to breach. Only read when
	// HasForecast is set.
	Forecast    float64 `json:"forecast,omitempty"`
	HasForecast bool    `json:"hasForecast,omitempty"`
	// BurnRate is the error-budget burn rate, informational.
	BurnRate float64 `json:"burnRate,omitempty"`
	// Verdict is the detector's verdict; Inconclusive blocks every action.
	Verdict Verdict `json:"verdict"`
	// Reason explains the verdict, for example "412 requests, need 370".
	Reason string `json:"reason,omitempty"`
	// Cause is the attributed cause of a regression.
	Cause Cause `json:"cause"`
	// Onset is the detector's estimate of when the regression began.
	Onset time.Time `json:"onset,omitempty"`
	// Finding identifies the detector's finding, for the record.
	Finding string `json:"finding,omitempty"`
}

// RetryStats are the retry statistics of calls to the policy's upstream
// over the SLO window, as read from the backoff_* metrics.
type RetryStats struct {
	Upstream string `json:"upstream"`
	// Calls is the number (or rate) of logical calls, Retries the number
	// (or rate, in the same unit) of attempts after the first, Exhausted
	// the number of calls that ran out of attempts.
	Calls     float64 `json:"calls"`
	Retries   float64 `json:"retries"`
	Exhausted float64 `json:"exhausted,omitempty"`
	// AttemptLatency is the mean latency of one attempt; zero selects the
	// policy's backoff.attemptLatency.
	AttemptLatency time.Duration `json:"attemptLatency,omitempty"`
}

// RetryRatio returns retries per call, or NaN without calls.
func (r RetryStats) RetryRatio() float64 {
	if !(r.Calls > 0) || r.Retries < 0 || math.IsInf(r.Retries, 0) {
		return math.NaN()
	}
	return r.Retries / r.Calls
}

// VariantWeight is one entry of a fractional rollout.
type VariantWeight struct {
	Variant string `json:"variant"`
	Weight  int    `json:"weight"`
}

// FlagState is the current state of the strategy and constants flags.
type FlagState struct {
	// DefaultVariant is the strategy flag's default variant.
	DefaultVariant string `json:"defaultVariant"`
	// Rollout is the fractional rollout of the strategy flag; empty when
	// the default variant serves all traffic.
	Rollout []VariantWeight `json:"rollout,omitempty"`
	// Constants holds the constants flag keyed by strategy name; the key ""
	// holds a flat object that applies to any strategy.
	Constants map[string]Constants `json:"constants,omitempty"`
	// Revision is the revision of the flag file the state was read at, 0
	// when unknown. Changes decided on it are written with compare-and-swap
	// against it.
	Revision int64 `json:"revision,omitempty"`
}

// Share returns the fraction of traffic on variant, in [0, 1].
func (f FlagState) Share(variant string) float64 {
	if len(f.Rollout) == 0 {
		if f.DefaultVariant == variant {
			return 1
		}
		return 0
	}
	var total, w int
	for _, vw := range f.Rollout {
		if vw.Weight > 0 {
			total += vw.Weight
			if vw.Variant == variant {
				w += vw.Weight
			}
		}
	}
	if total == 0 {
		return 0
	}
	return float64(w) / float64(total)
}

// Percent returns the share of variant in whole percent.
func (f FlagState) Percent(variant string) int {
	return int(math.Round(100 * f.Share(variant)))
}

// ConstantsFor returns the constants that apply to strategy: its own entry,
// else the flat object.
func (f FlagState) ConstantsFor(strategy string) (Constants, bool) {
	if c, ok := f.Constants[strategy]; ok {
		return c, true
	}
	c, ok := f.Constants[""]
	return c, ok
}

// Clone returns a deep copy of f.
func (f FlagState) Clone() FlagState {
	g := f
	g.Rollout = slices.Clone(f.Rollout)
	if f.Constants != nil {
		g.Constants = make(map[string]Constants, len(f.Constants))
		for k, v := range f.Constants {
			g.Constants[k] = v
		}
	}
	return g
}

// Constants are the backoff constants of one strategy, as carried by the
// backoff-constants flag and decoded by the services' backoff/flagbind
// binding (keys base, cap, multiplier, jitter, maxAttempts, maxElapsed,
// retryBudget). Zero fields are omitted from the flag. The controller's
// model reads them as the backoff package's defaults: multiplier 2 (3 for
// decorrelated, 1.6 for grpc), jitter 0.2 for grpc, maxAttempts unbounded;
// a service fills them in from its compiled-in configuration instead.
type Constants struct {
	Base        time.Duration
	Cap         time.Duration
	Multiplier  float64
	Jitter      float64
	MaxAttempts int
	MaxElapsed  time.Duration
	// RetryBudget is the ratio of retries to calls a service's retry
	// budget allows, in (0, 1]; 0 leaves the service's configured budget.
	RetryBudget float64
}

type constantsJSON struct {
	Base        string  `json:"base,omitempty"`
	Cap         string  `json:"cap,omitempty"`
	Multiplier  float64 `json:"multiplier,omitempty"`
	Jitter      float64 `json:"jitter,omitempty"`
	MaxAttempts int     `json:"maxAttempts,omitempty"`
	MaxElapsed  string  `json:"maxElapsed,omitempty"`
	RetryBudget float64 `json:"retryBudget,omitempty"`
}

func fmtDur(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return model.Duration(d).String()
}

// MarshalJSON encodes c in the backoff-constants flag format, durations as
// Prometheus duration strings: {"base":"100ms","cap":"2s",...}.
func (c Constants) MarshalJSON() ([]byte, error) {
	return json.Marshal(constantsJSON{
		Base: fmtDur(c.Base), Cap: fmtDur(c.Cap), Multiplier: c.Multiplier, Jitter: c.Jitter,
		MaxAttempts: c.MaxAttempts, MaxElapsed: fmtDur(c.MaxElapsed), RetryBudget: c.RetryBudget,
	})
}

// UnmarshalJSON decodes the backoff-constants flag format. Unknown fields
// are ignored; durations must be Prometheus durations.
func (c *Constants) UnmarshalJSON(b []byte) error {
	var j constantsJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	var out Constants
	for _, f := range []struct {
		name string
		s    string
		d    *time.Duration
	}{{"base", j.Base, &out.Base}, {"cap", j.Cap, &out.Cap}, {"maxElapsed", j.MaxElapsed, &out.MaxElapsed}} {
		if f.s == "" {
			continue
		}
		d, err := model.ParseDuration(f.s)
		if err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
		*f.d = time.Duration(d)
	}
	out.Multiplier, out.Jitter, out.MaxAttempts, out.RetryBudget = j.Multiplier, j.Jitter, j.MaxAttempts, j.RetryBudget
	*c = out
	return nil
}

// String formats c compactly, for example
// "base=100ms cap=2s maxAttempts=6".
func (c Constants) String() string {
	s := fmt.Sprintf("base=%s cap=%s", c.Base, c.Cap)
	if c.Multiplier != 0 {
		s += fmt.Sprintf(" multiplier=%g", c.Multiplier)
	}
	if c.Jitter != 0 {
		s += fmt.Sprintf(" jitter=%g", c.Jitter)
	}
	s += fmt.Sprintf(" maxAttempts=%d", c.MaxAttempts)
	if c.MaxElapsed != 0 {
		s += " maxElapsed=" + c.MaxElapsed.String()
	}
	if c.RetryBudget != 0 {
		s += fmt.Sprintf(" retryBudget=%g", c.RetryBudget)
	}
	return s
}

// Observation is everything the controller sees about one service in one
// cycle: an Assessment per SLO of the policy, the upstream's retry
// statistics and the current flag state.
type Observation struct {
	Service     string       `json:"service"`
	Assessments []Assessment `json:"assessments"`
	Retries     RetryStats   `json:"retries"`
	Flags       FlagState    `json:"flags"`
	// Journal holds the service's controller actions as the flag journal
	// records them (JournalReader); Decide adopts those its state lacks.
	Journal []JournaledAction `json:"journal,omitempty"`
}

func (o Observation) assessment(slo string) (Assessment, bool) {
	for _, a := range o.Assessments {
		if a.SLO == slo {
			return a, true
		}
	}
	return Assessment{}, false
}

// strategyKnown reports whether name is a known strategy.
func strategyKnown(name string) bool { return slices.Contains(policy.Strategies, name) }
