// Package policy defines the controller's policy file: per service, the SLOs
// it guards, the backoff constants it may tune with their hard bounds and
// maximum step per action, the flags it may touch, and the pacing of its
// actions (cooldown, evaluation window, action budget, hysteresis, mode and
// restore).
//
// The file is YAML, decoded strictly: unknown keys are rejected. Durations
// are Prometheus durations ("250ms", "5m", "1h"). Every bound is validated
// at load; an invalid file yields an error listing each problem with the
// path of the field at fault, for example
//
//	services[0].backoff.cap.max: must be ≥ min (500ms), got 200ms
//
// See controller/testdata/policy.example.yml for a documented example.
package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"
)

// Mode says what the controller does with a decision.
type Mode string

// The modes.
const (
	// ModeObserve logs decisions and writes nothing.
	ModeObserve Mode = "observe"
	// ModePropose stores each decision as a plan that is applied only once
	// approved.
	ModePropose Mode = "propose"
	// ModeAuto applies decisions.
	ModeAuto Mode = "auto"
)

// Signal is the kind of SLI an SLO constrains.
type Signal string

// The signals.
const (
	// SignalLatency is a latency quantile, for example p99 of /checkout.
	SignalLatency Signal = "latency"
	// SignalRetryRatio is retries per logical call to an upstream.
	SignalRetryRatio Signal = "retry_ratio"
	// SignalErrorRatio is the fraction of failed requests.
	SignalErrorRatio Signal = "error_ratio"
)

// Strategy names, the string variants of the backoff-strategy flag.
const (
	StrategyExponential  = "exponential"
	StrategyFullJitter   = "full-jitter"
	StrategyEqualJitter  = "equal-jitter"
	StrategyDecorrelated = "decorrelated"
	StrategyGRPC         = "grpc"
)

// Strategies lists the valid strategy names.
var Strategies = []string{StrategyExponential, StrategyFullJitter, StrategyEqualJitter, StrategyDecorrelated, StrategyGRPC}

// MaxAttemptsLimit is the largest maxAttempts bound a policy may declare.
const MaxAttemptsLimit = 20

// Defaults applied by Load to fields left out.
const (
	DefaultMode              = ModeObserve
	DefaultCooldown          = model.Duration(5 * time.Minute)
	DefaultEvaluationWindow  = model.Duration(10 * time.Minute)
	DefaultMaxActionsPerHour = 4
	DefaultExitMargin        = 0.1
	DefaultMinImprovement    = 0.2
	DefaultMinConfidence     = 0.7
	DefaultQuantile          = 0.99
)

// Policy is the whole policy file.
type Policy struct {
	// Services lists the guarded services; names are unique.
	Services []Service `yaml:"services"`
}

// Service is the policy of one service.
type Service struct {
	// Name identifies the service, for example "shop".
	Name string `yaml:"name"`
	// Mode is observe (default), propose or auto.
	Mode Mode `yaml:"mode"`
	// Upstream is the dependency whose calls are retried under the backoff
	// flags, for example "payments". Its retry statistics feed the model.
	Upstream string `yaml:"upstream"`
	// Components lists components (build_info names) whose changes the
	// strategy flag can mitigate, for example dten-gateway: a regression
	// attributed to one of them is acted on like one attributed to a flag.
	Components []string `yaml:"components,omitempty"`
	// SLOs are the objectives guarded.
	SLOs []SLO `yaml:"slos"`
	// Backoff bounds the constants the controller may change.
	Backoff Backoff `yaml:"backoff"`
	// Flags names the flags the controller may touch.
	Flags Flags `yaml:"flags"`
	// Cooldown is the minimum time between two actions on the service.
	Cooldown model.Duration `yaml:"cooldown"`
	// EvaluationWindow is how long after an action its effect is verified.
	// It must be at least every SLO window, so that the verification reads
	// data gathered after the action.
	EvaluationWindow model.Duration `yaml:"evaluationWindow"`
	// MaxActionsPerHour bounds flag writes in any rolling hour.
	MaxActionsPerHour int `yaml:"maxActionsPerHour"`
	// Hysteresis sets the margins between acting and standing down.
	Hysteresis Hysteresis `yaml:"hysteresis"`
	// Verification says what counts as an improvement.
	Verification Verification `yaml:"verification"`
	// Attribution sets how sure the attribution must be.
	Attribution Attribution `yaml:"attribution"`
	// Restore configures re-enabling the new strategy after an incident.
	Restore Restore `yaml:"restore"`
}

// SLO is one service level objective.
type SLO struct {
	// Name is unique within the service, for example "checkout-latency".
	Name string `yaml:"name"`
	// Signal is latency, retry_ratio or error_ratio.
	Signal Signal `yaml:"signal"`
	// Selector selects the slice, for example {endpoint: /checkout} or
	// {upstream: payments}.
	Selector map[string]string `yaml:"selector,omitempty"`
	// Objective is the bound on the SLI.
	Objective Objective `yaml:"objective"`
	// CallsUpstream says whether the SLI includes the calls to the
	// service's upstream, so that the retry model applies to it. Default
	// true; set it to false for endpoints that never call the upstream
	// (their SLI is predicted unchanged by tuning).
	CallsUpstream *bool `yaml:"callsUpstream,omitempty"`
}

// DependsOnUpstream reports whether the SLI includes calls to the
// service's upstream.
func (s SLO) DependsOnUpstream() bool { return s.CallsUpstream == nil || *s.CallsUpstream }

// Objective bounds an SLI over a window.
type Objective struct {
	// Quantile is the latency quantile, in (0, 1); default 0.99. Latency
	// SLOs only.
	Quantile float64 `yaml:"quantile,omitempty"`
	// Threshold is the latency bound. Latency SLOs only.
	Threshold model.Duration `yaml:"threshold,omitempty"`
	// Ratio is the bound of a ratio SLI, in (0, 1). Ratio SLOs only.
	Ratio float64 `yaml:"ratio,omitempty"`
	// Window is the SLI's evaluation window, for example 5m.
	Window model.Duration `yaml:"window"`
}

// Value returns the objective in SLI units: seconds for latency, a fraction
// for ratios.
func (s SLO) Value() float64 {
	if s.Signal == SignalLatency {
		return time.Duration(s.Objective.Threshold).Seconds()
	}
	return s.Objective.Ratio
}

// Backoff holds the tunable constants. A nil bound means the controller
// never changes that constant.
type Backoff struct {
	Base        *DurationBound `yaml:"base,omitempty"`
	Cap         *DurationBound `yaml:"cap,omitempty"`
	Multiplier  *FloatBound    `yaml:"multiplier,omitempty"`
	Jitter      *FloatBound    `yaml:"jitter,omitempty"`
	MaxAttempts *IntBound      `yaml:"maxAttempts,omitempty"`
	// RetryBudget bounds the retry budget ratio (retries per call) written
	// to the constants flag as "retryBudget". It is tuned only when the
	// flag already sets one.
	RetryBudget *FloatBound `yaml:"retryBudget,omitempty"`
	// AttemptLatency is the per-attempt upstream latency the model assumes
	// when the observation does not carry one. Default 0.
	AttemptLatency model.Duration `yaml:"attemptLatency,omitempty"`
	// Resilience states what the new strategy is there for, so tuning
	// keeps it.
	Resilience *Resilience `yaml:"resilience,omitempty"`
}

// Tunable reports whether any constant may be changed.
func (b Backoff) Tunable() bool {
	return b.Base != nil || b.Cap != nil || b.Multiplier != nil || b.Jitter != nil || b.MaxAttempts != nil || b.RetryBudget != nil
}

// DurationBound bounds a duration constant.
type DurationBound struct {
	Min     model.Duration `yaml:"min"`
	Max     model.Duration `yaml:"max"`
	MaxStep model.Duration `yaml:"maxStep"`
}

// FloatBound bounds a numeric constant.
type FloatBound struct {
	Min     float64 `yaml:"min"`
	Max     float64 `yaml:"max"`
	MaxStep float64 `yaml:"maxStep"`
}

// IntBound bounds an integer constant.
type IntBound struct {
	Min     int `yaml:"min"`
	Max     int `yaml:"max"`
	MaxStep int `yaml:"maxStep"`
}

// Resilience is the protection tuning must keep: at the brown-out failure
// probability, the share of calls that exhaust their attempts stays below
// MaxFailureRatio, and the retries keep spreading over at least
// MinRetrySpan, so that they outlast an upstream's short outages.
type Resilience struct {
	// FailureProbability is the per-attempt failure probability of a
	// brown-out, in (0, 1).
	FailureProbability float64 `yaml:"failureProbability"`
	// MaxFailureRatio bounds FailureProbability^maxAttempts, in (0, 1).
	MaxFailureRatio float64 `yaml:"maxFailureRatio"`
	// MinRetrySpan is the minimum expected sum of all retry delays of a
	// call that uses every attempt. Zero disables the check.
	MinRetrySpan model.Duration `yaml:"minRetrySpan,omitempty"`
}

// Flags names the flags the controller may write.
type Flags struct {
	Strategy  StrategyFlag  `yaml:"strategy"`
	Constants ConstantsFlag `yaml:"constants"`
}

// StrategyFlag is the string flag selecting the backoff strategy.
type StrategyFlag struct {
	// Key is the flag key, for example backoff-strategy.
	Key string `yaml:"key"`
	// NewVariant is the strategy being rolled out, for example decorrelated.
	NewVariant string `yaml:"newVariant"`
	// OldVariant is the strategy to fall back to, for example exponential.
	OldVariant string `yaml:"oldVariant"`
	// Rollout lists the allowed percentages of traffic on NewVariant, in
	// strictly decreasing order, for example [100, 50, 25, 10, 0].
	Rollout []int `yaml:"rollout"`
}

// ConstantsFlag is the object flag holding the constants per strategy.
type ConstantsFlag struct {
	// Key is the flag key, for example backoff-constants.
	Key string `yaml:"key"`
}

// Hysteresis holds the margins, as fractions of the objective, that keep
// the controller from flip-flopping: it acts when an SLI exceeds
// objective·(1+Enter) and considers an SLO recovered (and may restore)
// only once the SLI is at most objective·(1−Exit).
type Hysteresis struct {
	Enter float64 `yaml:"enter"`
	Exit  float64 `yaml:"exit"`
}

// Verification says when an action counts as an improvement.
type Verification struct {
	// MinImprovement is the fraction of the gap between the SLI and its
	// recovery threshold an action must close to count as an improvement,
	// in (0, 1]. Default 0.2.
	MinImprovement float64 `yaml:"minImprovement"`
}

// Attribution sets how sure the attribution must be to act.
type Attribution struct {
	// MinConfidence is the lowest cause confidence acted on, in [0, 1].
	// Default 0.7.
	MinConfidence float64 `yaml:"minConfidence"`
}

// Restore configures the "gate, then re-enable" path.
type Restore struct {
	// Enabled turns restoring on.
	Enabled bool `yaml:"enabled"`
	// HoldTime is how long every SLO must stay recovered before the
	// rollout of the new strategy is raised again, one allowed percentage
	// per step, each step verified.
	HoldTime model.Duration `yaml:"holdTime,omitempty"`
}

// Service returns the policy of the named service.
func (p *Policy) Service(name string) (*Service, bool) {
	for i := range p.Services {
		if p.Services[i].Name == name {
			return &p.Services[i], true
		}
	}
	return nil, false
}

// SLO returns the named SLO.
func (s *Service) SLO(name string) (SLO, bool) {
	for _, o := range s.SLOs {
		if o.Name == name {
			return o, true
		}
	}
	return SLO{}, false
}

// LoadFile reads and validates a policy file.
func LoadFile(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	p, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", path, err)
	}
	return p, nil
}

// Load reads and validates a policy from r.
func Load(r io.Reader) (*Policy, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	return Parse(b)
}

// Parse decodes a policy strictly, fills in defaults and validates it.
func Parse(b []byte) (*Policy, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var p Policy
	if err := dec.Decode(&p); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("decode policy: empty document")
		}
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			// Errors of custom unmarshalers (durations) carry no
			// position: find the field.
			if where := locateDurationError(b); where != "" {
				return nil, fmt.Errorf("decode policy: %s: %w", where, err)
			}
		}
		return nil, fmt.Errorf("decode policy: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("decode policy: more than one YAML document")
	}
	p.applyDefaults()
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

func (p *Policy) applyDefaults() {
	for i := range p.Services {
		s := &p.Services[i]
		if s.Mode == "" {
			s.Mode = DefaultMode
		}
		if s.Cooldown == 0 {
			s.Cooldown = DefaultCooldown
		}
		if s.EvaluationWindow == 0 {
			s.EvaluationWindow = DefaultEvaluationWindow
		}
		if s.MaxActionsPerHour == 0 {
			s.MaxActionsPerHour = DefaultMaxActionsPerHour
		}
		if s.Hysteresis == (Hysteresis{}) {
			s.Hysteresis.Exit = DefaultExitMargin
		}
		if s.Verification.MinImprovement == 0 {
			s.Verification.MinImprovement = DefaultMinImprovement
		}
		if s.Attribution.MinConfidence == 0 {
			s.Attribution.MinConfidence = DefaultMinConfidence
		}
		for j := range s.SLOs {
			if s.SLOs[j].Signal == SignalLatency && s.SLOs[j].Objective.Quantile == 0 {
				s.SLOs[j].Objective.Quantile = DefaultQuantile
			}
		}
	}
}

// durationFields are the paths of duration fields, indices left out.
var durationFields = []string{
	"services.cooldown", "services.evaluationWindow", "services.slos.objective.threshold",
	"services.slos.objective.window", "services.backoff.base.min", "services.backoff.base.max",
	"services.backoff.base.maxStep", "services.backoff.cap.min", "services.backoff.cap.max",
	"services.backoff.cap.maxStep", "services.backoff.attemptLatency",
	"services.backoff.resilience.minRetrySpan", "services.restore.holdTime",
}

// locateDurationError returns "line N: path" of the first duration field
// of the document that does not parse, or "".
func locateDurationError(b []byte) string {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return ""
	}
	var walk func(n *yaml.Node, path, generic string) string
	walk = func(n *yaml.Node, path, generic string) string {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				if w := walk(c, path, generic); w != "" {
					return w
				}
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				if w := walk(c, fmt.Sprintf("%s[%d]", path, i), generic); w != "" {
					return w
				}
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i].Value, n.Content[i+1]
				p, g := k, k
				if path != "" {
					p, g = path+"."+k, generic+"."+k
				}
				if v.Kind == yaml.ScalarNode && slices.Contains(durationFields, g) {
					if _, err := model.ParseDuration(v.Value); err != nil {
						return fmt.Sprintf("line %d: %s", v.Line, p)
					}
				}
				if w := walk(v, p, g); w != "" {
					return w
				}
			}
		}
		return ""
	}
	return walk(&root, "", "")
}
