package sim

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/tailguard/tailguard/backoff"
	"github.com/tailguard/tailguard/controller/policy"
	"github.com/tailguard/tailguard/detector"
)

// Scenario is one simulated situation with its ground truth and the
// tailguard configuration to run against it. Load it with [LoadScenario]
// or [ParseScenario]; both apply defaults and validate.
type Scenario struct {
	// Name identifies the scenario, e.g. "story".
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// Seed seeds every random stream; --seed overrides it.
	Seed uint64 `yaml:"seed"`
	// Start is the virtual start time. Default 2026-03-02T08:00:00Z.
	Start time.Time `yaml:"start"`
	// Duration is the simulated time.
	Duration model.Duration `yaml:"duration"`
	// ScrapeInterval is the virtual scrape interval. Default 15s.
	ScrapeInterval model.Duration `yaml:"scrape_interval"`
	// EvaluationInterval is how often the cycler (and revert-on-alert)
	// runs. Default 1m.
	EvaluationInterval model.Duration `yaml:"evaluation_interval"`

	Service   ServiceSpec   `yaml:"service"`
	Upstream  UpstreamSpec  `yaml:"upstream"`
	Flags     FlagsSpec     `yaml:"flags"`
	Events    []Event       `yaml:"events"`
	Truth     Truth         `yaml:"truth"`
	Tailguard TailguardSpec `yaml:"tailguard"`

	// PolicyYAML and DetectorYAML are the tailguard configuration, read
	// from the files or inline documents of Tailguard.
	PolicyYAML   []byte `yaml:"-"`
	DetectorYAML []byte `yaml:"-"`
	// Policy and Detector are the parsed configuration.
	Policy   *policy.Policy  `yaml:"-"`
	Detector detector.Config `yaml:"-"`
}

// ServiceSpec describes the simulated service.
type ServiceSpec struct {
	// Job is the job label of the scrape targets. Default "shop".
	Job string `yaml:"job"`
	// Pods is the number of pods. Default 8.
	Pods int `yaml:"pods"`
	// VersionComponent is the component whose version labels the request
	// metrics. Default: the first component.
	VersionComponent string          `yaml:"version_component"`
	Components       []ComponentSpec `yaml:"components"`
	Endpoints        []EndpointSpec  `yaml:"endpoints"`
	Traffic          TrafficSpec     `yaml:"traffic"`
	// NativeOnly exposes the request histogram as a native histogram only
	// (no classic buckets).
	NativeOnly bool       `yaml:"native_only,omitempty"`
	Warmup     WarmupSpec `yaml:"warmup"`
	// DefaultPolicy is the backoff policy compiled into the service, used
	// until the flags are read and whenever they are unusable.
	DefaultPolicy ConstantsSpec `yaml:"default_policy"`
}

// ComponentSpec is a versioned component exported as build info.
type ComponentSpec struct {
	Name string `yaml:"name"`
	// Metric is the build info metric, e.g. dten_gateway_build_info.
	Metric  string `yaml:"metric"`
	Version string `yaml:"version"`
}

// EndpointSpec is one endpoint of the service.
type EndpointSpec struct {
	Name string `yaml:"name"`
	// Rate is requests per second over all pods.
	Rate             float64       `yaml:"rate"`
	Latency          LogNormalSpec `yaml:"latency"`
	CallsUpstream    bool          `yaml:"calls_upstream"`
	ErrorProbability float64       `yaml:"error_probability"`
}

// LogNormalSpec is a latency distribution: median·e^(sigma·Z).
type LogNormalSpec struct {
	Median model.Duration `yaml:"median"`
	Sigma  float64        `yaml:"sigma"`
}

// TrafficSpec modulates the request rates.
type TrafficSpec struct {
	// Diurnal multiplies the rates by 1 + amplitude·cos(2π(t − peak)/period).
	Diurnal *DiurnalSpec `yaml:"diurnal"`
}

// DiurnalSpec is a daily traffic cycle.
type DiurnalSpec struct {
	Amplitude float64 `yaml:"amplitude"`
	// Period defaults to 24h.
	Period model.Duration `yaml:"period"`
	// Peak is the offset from the start at which traffic peaks.
	Peak model.Duration `yaml:"peak"`
}

// WarmupSpec makes restarted pods slower for a while.
type WarmupSpec struct {
	Duration model.Duration `yaml:"duration"`
	Factor   float64        `yaml:"factor"`
}

// ConstantsSpec is a backoff strategy with constants. Strategy is only
// used where a whole policy is meant (default_policy).
type ConstantsSpec struct {
	Strategy    string         `yaml:"strategy,omitempty"`
	Base        model.Duration `yaml:"base,omitempty"`
	Cap         model.Duration `yaml:"cap,omitempty"`
	Multiplier  float64        `yaml:"multiplier,omitempty"`
	Jitter      float64        `yaml:"jitter,omitempty"`
	MaxAttempts int            `yaml:"max_attempts,omitempty"`
	MaxElapsed  model.Duration `yaml:"max_elapsed,omitempty"`
}

// UpstreamSpec describes the third-party upstream (see service.UpstreamConfig).
type UpstreamSpec struct {
	// Name is the upstream label. Default "payments".
	Name                     string         `yaml:"name"`
	Latency                  LogNormalSpec  `yaml:"latency"`
	ErrorLatency             LogNormalSpec  `yaml:"error_latency"`
	FailureProbability       float64        `yaml:"failure_probability"`
	RepeatFailureProbability float64        `yaml:"repeat_failure_probability"`
	PersistentFailure        PersistentSpec `yaml:"persistent_failure"`
	Capacity                 float64        `yaml:"capacity"`
	OverloadFailure          float64        `yaml:"overload_failure"`
	OverloadLatency          float64        `yaml:"overload_latency"`
	RateLimit                RateLimitSpec  `yaml:"rate_limit"`
	Timeout                  model.Duration `yaml:"timeout"`
	Noise                    NoiseSpec      `yaml:"noise"`
}

// PersistentSpec: a share of calls meets a failure lasting an
// exponentially distributed time.
type PersistentSpec struct {
	Probability  float64        `yaml:"probability"`
	MeanDuration model.Duration `yaml:"mean_duration"`
}

// RateLimitSpec: attempts beyond Limit per second get 429 with Retry-After.
type RateLimitSpec struct {
	Limit      float64        `yaml:"limit"`
	RetryAfter model.Duration `yaml:"retry_after"`
}

// NoiseSpec is a slow multiplicative latency wander.
type NoiseSpec struct {
	Sigma       float64        `yaml:"sigma"`
	Correlation model.Duration `yaml:"correlation"`
}

// FlagsSpec is the initial flag file: the strategy flag (a string flag
// whose variants are strategy names) and the constants flag (an object
// keyed by strategy name), in the format the controller writes.
type FlagsSpec struct {
	// StrategyKey defaults to backoff-strategy, ConstantsKey to
	// backoff-constants.
	StrategyKey  string `yaml:"strategy_key"`
	ConstantsKey string `yaml:"constants_key"`
	// Strategy is the default variant.
	Strategy string `yaml:"strategy"`
	// Variants lists the strategy variants; default: the strategies named
	// anywhere in the scenario.
	Variants  []string                 `yaml:"variants"`
	Constants map[string]ConstantsSpec `yaml:"constants"`
}

// Event is something that happens at a time. Exactly one kind is set.
type Event struct {
	// At is the offset from the start.
	At model.Duration `yaml:"at"`

	Upgrade         *UpgradeEvent   `yaml:"upgrade,omitempty"`
	Flags           *FlagsEvent     `yaml:"flags,omitempty"`
	Brownout        *BrownoutEvent  `yaml:"brownout,omitempty"`
	UpstreamLatency *FactorEvent    `yaml:"upstream_latency,omitempty"`
	Traffic         *FactorEvent    `yaml:"traffic,omitempty"`
	ScrapeGap       *DurationEvent  `yaml:"scrape_gap,omitempty"`
	CorruptFlagFile *CorruptionSpec `yaml:"corrupt_flag_file,omitempty"`
}

// UpgradeEvent rolls a component version out over the pods.
type UpgradeEvent struct {
	Component string `yaml:"component"`
	Version   string `yaml:"version"`
	// Over spreads the pods' upgrades evenly; zero upgrades all at once.
	Over model.Duration `yaml:"over"`
	// Restart restarts each pod as it is upgraded (fresh counters,
	// warm-up).
	Restart bool `yaml:"restart"`
	// Effect is what the new version does on its own.
	Effect EffectSpec `yaml:"effect"`
}

// EffectSpec: latency factors of a component version (0 means 1).
type EffectSpec struct {
	Latency         float64 `yaml:"latency"`
	UpstreamLatency float64 `yaml:"upstream_latency"`
}

// FlagsEvent is a change of the flag file through the flag store, as a
// deployment pipeline or an operator makes it.
type FlagsEvent struct {
	// Actor is "operator:<name>". Default operator:deploy.
	Actor  string `yaml:"actor"`
	Reason string `yaml:"reason"`
	// Strategy makes a variant the default and removes any rollout.
	Strategy string `yaml:"strategy"`
	// Rollout serves Variant to Percent of the pods, the default variant
	// to the others.
	Rollout *RolloutSpec `yaml:"rollout"`
	// Constants sets the constants of the strategies named.
	Constants map[string]ConstantsSpec `yaml:"constants"`
}

// RolloutSpec is a fractional rollout of a variant.
type RolloutSpec struct {
	Variant string  `yaml:"variant"`
	Percent float64 `yaml:"percent"`
}

// BrownoutEvent makes the upstream flap between down and up periods.
type BrownoutEvent struct {
	Duration           model.Duration `yaml:"duration"`
	Down               model.Duration `yaml:"down"`
	Up                 model.Duration `yaml:"up"`
	FailureProbability float64        `yaml:"failure_probability"`
}

// FactorEvent multiplies something for a while.
type FactorEvent struct {
	Duration model.Duration `yaml:"duration"`
	Factor   float64        `yaml:"factor"`
}

// DurationEvent lasts a while.
type DurationEvent struct {
	Duration model.Duration `yaml:"duration"`
}

// CorruptionSpec makes the flag file invalid (as a bad manual edit does)
// and restores the previous content after Duration (zero: never).
type CorruptionSpec struct {
	Duration model.Duration `yaml:"duration"`
	// Content is written instead of the file. Default: a truncated copy
	// of the current file.
	Content string `yaml:"content"`
}

// Truth is what a perfect guard would see and do.
type Truth struct {
	// Regression says whether a change makes an SLO regress.
	Regression bool `yaml:"regression"`
	// Onset is when the regression starts, as an offset from the start.
	Onset model.Duration `yaml:"onset"`
	// Causes are the acceptable attributions, "flag:<key>",
	// "component:<name>", "upstream:<name>" or "none" (none of the known
	// changes). An ambiguous attribution counts when every change it
	// names is acceptable: changes shipped together, all to blame.
	Causes []string `yaml:"causes"`
	// SLO is the objective measured for SLO-violation minutes.
	SLO SLOSpec `yaml:"slo"`
	// Benefit says the change being guarded has a benefit (in the
	// scenario's brown-outs) that a good guard keeps.
	Benefit bool `yaml:"benefit"`
	// NoAction lists windows in which no flag write is acceptable.
	NoAction []WindowSpec `yaml:"no_action"`
	Notes    string       `yaml:"notes"`
}

// SLOSpec is a latency objective: the Quantile of Endpoint over Window
// stays at or below Threshold.
type SLOSpec struct {
	Endpoint  string         `yaml:"endpoint"`
	Quantile  float64        `yaml:"quantile"`
	Threshold model.Duration `yaml:"threshold"`
	Window    model.Duration `yaml:"window"`
}

// WindowSpec is a time window relative to the start.
type WindowSpec struct {
	From   model.Duration `yaml:"from"`
	To     model.Duration `yaml:"to"`
	Reason string         `yaml:"reason"`
}

// TailguardSpec points at tailguard's configuration: the controller
// policy and the detector configuration, each as a file (relative to the
// scenario file) or inline.
type TailguardSpec struct {
	PolicyFile   string     `yaml:"policy_file"`
	Policy       *yaml.Node `yaml:"policy,omitempty"`
	DetectorFile string     `yaml:"detector_file"`
	Detector     *yaml.Node `yaml:"detector,omitempty"`
}

// DefaultStart is the virtual start time of scenarios that do not set one.
var DefaultStart = time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)

// Defaults of the flag keys, the job and the upstream.
const (
	DefaultStrategyFlag  = "backoff-strategy"
	DefaultConstantsFlag = "backoff-constants"
	DefaultJob           = "shop"
	DefaultUpstream      = "payments"
	DefaultActor         = "operator:deploy"
)

// ListScenarios returns the scenario names (*.yml files) of a directory in
// fsys, sorted.
func ListScenarios(fsys fs.FS) ([]string, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("list scenarios: %w", err)
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".yml") {
			out = append(out, strings.TrimSuffix(e.Name(), ".yml"))
		}
	}
	sort.Strings(out)
	return out, nil
}

// LoadScenario reads <name>.yml from fsys, with the policy and detector
// files it names resolved in fsys relative to it.
func LoadScenario(fsys fs.FS, name string) (*Scenario, error) {
	file := name
	if !strings.HasSuffix(file, ".yml") {
		file += ".yml"
	}
	b, err := fs.ReadFile(fsys, file)
	if err != nil {
		return nil, fmt.Errorf("read scenario: %w", err)
	}
	sc, err := ParseScenario(b, func(p string) ([]byte, error) {
		return fs.ReadFile(fsys, path.Join(path.Dir(file), p))
	})
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", file, err)
	}
	return sc, nil
}

// LoadScenarioFile reads a scenario file from the file system, with the
// policy and detector files it names resolved relative to its directory.
func LoadScenarioFile(file string) (*Scenario, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read scenario: %w", err)
	}
	dir := filepath.Dir(file)
	sc, err := ParseScenario(b, func(p string) ([]byte, error) {
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		return os.ReadFile(p)
	})
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", file, err)
	}
	return sc, nil
}

// ParseScenario decodes a scenario strictly (unknown fields are errors),
// reads the tailguard configuration files through readFile (which may be
// nil when the configuration is inline), applies defaults and validates.
func ParseScenario(b []byte, readFile func(string) ([]byte, error)) (*Scenario, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var sc Scenario
	if err := dec.Decode(&sc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("decode: empty document")
		}
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			// Errors of custom unmarshalers (durations) carry no
			// position: find the field.
			if where := locateDurationError(b); where != "" {
				return nil, fmt.Errorf("decode: %s: %w", where, err)
			}
		}
		return nil, fmt.Errorf("decode: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("decode: more than one YAML document")
	}
	sc.applyDefaults()
	if err := sc.validate(); err != nil {
		return nil, err
	}
	if err := sc.loadTailguard(readFile); err != nil {
		return nil, err
	}
	return &sc, nil
}

func (sc *Scenario) applyDefaults() {
	if sc.Start.IsZero() {
		sc.Start = DefaultStart
	}
	sc.Start = sc.Start.UTC()
	if sc.ScrapeInterval == 0 {
		sc.ScrapeInterval = model.Duration(15 * time.Second)
	}
	if sc.EvaluationInterval == 0 {
		sc.EvaluationInterval = model.Duration(time.Minute)
	}
	s := &sc.Service
	if s.Job == "" {
		s.Job = DefaultJob
	}
	if s.Pods == 0 {
		s.Pods = 8
	}
	if s.VersionComponent == "" && len(s.Components) > 0 {
		s.VersionComponent = s.Components[0].Name
	}
	if d := s.Traffic.Diurnal; d != nil && d.Period == 0 {
		d.Period = model.Duration(24 * time.Hour)
	}
	if sc.Upstream.Name == "" {
		sc.Upstream.Name = DefaultUpstream
	}
	if sc.Upstream.ErrorLatency.Median == 0 {
		sc.Upstream.ErrorLatency = LogNormalSpec{Median: model.Duration(20 * time.Millisecond), Sigma: 0.3}
	}
	f := &sc.Flags
	if f.StrategyKey == "" {
		f.StrategyKey = DefaultStrategyFlag
	}
	if f.ConstantsKey == "" {
		f.ConstantsKey = DefaultConstantsFlag
	}
	if len(f.Variants) == 0 {
		seen := map[string]bool{}
		add := func(v string) {
			if v != "" && !seen[v] {
				seen[v] = true
				f.Variants = append(f.Variants, v)
			}
		}
		add(f.Strategy)
		for _, e := range sc.Events {
			if e.Flags != nil {
				add(e.Flags.Strategy)
				if e.Flags.Rollout != nil {
					add(e.Flags.Rollout.Variant)
				}
			}
		}
		sort.Strings(f.Variants)
	}
	for _, e := range sc.Events {
		if e.Flags != nil && e.Flags.Actor == "" {
			e.Flags.Actor = DefaultActor
		}
	}
	t := &sc.Truth.SLO
	if t.Quantile == 0 {
		t.Quantile = 0.99
	}
	if t.Window == 0 {
		t.Window = model.Duration(5 * time.Minute)
	}
}

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	metricRE = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	causeRE  = regexp.MustCompile(`^((flag|component|upstream):[^\s:]+|none)$`)
)

func prob(field string, p float64) error {
	if !(p >= 0 && p <= 1) {
		return fmt.Errorf("%s: %v is not a probability in [0, 1]", field, p)
	}
	return nil
}

func nonNegative(field string, d model.Duration) error {
	if d < 0 {
		return fmt.Errorf("%s: %s is negative", field, d)
	}
	return nil
}

func (l LogNormalSpec) validate(field string) error {
	if l.Median <= 0 {
		return fmt.Errorf("%s.median: must be positive", field)
	}
	if !(l.Sigma >= 0 && l.Sigma <= 3) {
		return fmt.Errorf("%s.sigma: %v is outside [0, 3]", field, l.Sigma)
	}
	return nil
}

// validate checks every field and names the first bad one.
func (sc *Scenario) validate() error {
	if !nameRE.MatchString(sc.Name) {
		return fmt.Errorf("name: %q must be lower-case letters, digits and dashes", sc.Name)
	}
	dur := time.Duration(sc.Duration)
	switch {
	case dur <= 0:
		return errors.New("duration: must be positive")
	case dur > 48*time.Hour:
		return fmt.Errorf("duration: %s exceeds 48h", sc.Duration)
	case sc.ScrapeInterval < model.Duration(time.Second):
		return fmt.Errorf("scrape_interval: %s is below 1s", sc.ScrapeInterval)
	case sc.EvaluationInterval < sc.ScrapeInterval:
		return fmt.Errorf("evaluation_interval: %s is below the scrape interval %s", sc.EvaluationInterval, sc.ScrapeInterval)
	}
	if err := sc.validateService(); err != nil {
		return err
	}
	if err := sc.validateUpstream(); err != nil {
		return err
	}
	if err := sc.validateFlags(); err != nil {
		return err
	}
	for i := range sc.Events {
		if err := sc.validateEvent(&sc.Events[i]); err != nil {
			return fmt.Errorf("events[%d]: %w", i, err)
		}
	}
	return sc.validateTruth()
}

func (sc *Scenario) validateService() error {
	s := &sc.Service
	if !metricRE.MatchString(s.Job) {
		return fmt.Errorf("service.job: %q is not a valid label value here", s.Job)
	}
	if s.Pods < 1 || s.Pods > 64 {
		return fmt.Errorf("service.pods: %d is outside [1, 64]", s.Pods)
	}
	comps := map[string]bool{}
	for i, c := range s.Components {
		f := fmt.Sprintf("service.components[%d]", i)
		switch {
		case !nameRE.MatchString(c.Name):
			return fmt.Errorf("%s.name: %q must be lower-case letters, digits and dashes", f, c.Name)
		case comps[c.Name]:
			return fmt.Errorf("%s.name: %q is used twice", f, c.Name)
		case !metricRE.MatchString(c.Metric):
			return fmt.Errorf("%s.metric: %q is not a metric name", f, c.Metric)
		case c.Version == "":
			return fmt.Errorf("%s.version: is empty", f)
		}
		comps[c.Name] = true
	}
	if s.VersionComponent != "" && !comps[s.VersionComponent] {
		return fmt.Errorf("service.version_component: %q is not a component", s.VersionComponent)
	}
	if len(s.Endpoints) == 0 {
		return errors.New("service.endpoints: at least one is required")
	}
	eps := map[string]bool{}
	calls := 0
	for i, e := range s.Endpoints {
		f := fmt.Sprintf("service.endpoints[%d]", i)
		switch {
		case !strings.HasPrefix(e.Name, "/"):
			return fmt.Errorf("%s.name: %q must start with /", f, e.Name)
		case eps[e.Name]:
			return fmt.Errorf("%s.name: %q is used twice", f, e.Name)
		case !(e.Rate >= 0 && e.Rate <= 10000):
			return fmt.Errorf("%s.rate: %v is outside [0, 10000] requests per second", f, e.Rate)
		}
		if err := e.Latency.validate(f + ".latency"); err != nil {
			return err
		}
		if err := prob(f+".error_probability", e.ErrorProbability); err != nil {
			return err
		}
		eps[e.Name] = true
		if e.CallsUpstream {
			calls++
		}
	}
	if calls == 0 {
		return errors.New("service.endpoints: no endpoint calls the upstream")
	}
	if d := s.Traffic.Diurnal; d != nil {
		if !(d.Amplitude >= 0 && d.Amplitude < 1) {
			return fmt.Errorf("service.traffic.diurnal.amplitude: %v is outside [0, 1)", d.Amplitude)
		}
		if d.Period <= 0 {
			return errors.New("service.traffic.diurnal.period: must be positive")
		}
	}
	if err := nonNegative("service.warmup.duration", s.Warmup.Duration); err != nil {
		return err
	}
	if s.Warmup.Factor != 0 && !(s.Warmup.Factor >= 1 && s.Warmup.Factor <= 100) {
		return fmt.Errorf("service.warmup.factor: %v is outside [1, 100]", s.Warmup.Factor)
	}
	if _, err := s.DefaultPolicy.Config(""); err != nil {
		return fmt.Errorf("service.default_policy: %w", err)
	}
	return nil
}

func (sc *Scenario) validateUpstream() error {
	u := &sc.Upstream
	if !nameRE.MatchString(u.Name) {
		return fmt.Errorf("upstream.name: %q must be lower-case letters, digits and dashes", u.Name)
	}
	if err := u.Latency.validate("upstream.latency"); err != nil {
		return err
	}
	if err := u.ErrorLatency.validate("upstream.error_latency"); err != nil {
		return err
	}
	for _, p := range []struct {
		f string
		v float64
	}{
		{"upstream.failure_probability", u.FailureProbability},
		{"upstream.repeat_failure_probability", u.RepeatFailureProbability},
		{"upstream.persistent_failure.probability", u.PersistentFailure.Probability},
	} {
		if err := prob(p.f, p.v); err != nil {
			return err
		}
	}
	if u.PersistentFailure.Probability > 0 && u.PersistentFailure.MeanDuration <= 0 {
		return errors.New("upstream.persistent_failure.mean_duration: must be positive when probability is set")
	}
	for _, p := range []struct {
		f string
		v float64
	}{
		{"upstream.capacity", u.Capacity}, {"upstream.overload_failure", u.OverloadFailure},
		{"upstream.overload_latency", u.OverloadLatency}, {"upstream.rate_limit.limit", u.RateLimit.Limit},
		{"upstream.noise.sigma", u.Noise.Sigma},
	} {
		if !(p.v >= 0) || math.IsInf(p.v, 0) {
			return fmt.Errorf("%s: %v must be a non-negative number", p.f, p.v)
		}
	}
	if u.RateLimit.Limit > 0 && u.RateLimit.RetryAfter <= 0 {
		return errors.New("upstream.rate_limit.retry_after: must be positive when limit is set")
	}
	if u.Noise.Sigma > 0 && u.Noise.Correlation <= 0 {
		return errors.New("upstream.noise.correlation: must be positive when sigma is set")
	}
	return nonNegative("upstream.timeout", u.Timeout)
}

func (sc *Scenario) validateFlags() error {
	f := &sc.Flags
	for _, v := range f.Variants {
		if _, err := backoff.ParseStrategy(v); err != nil {
			return fmt.Errorf("flags.variants: %w", err)
		}
	}
	if !slices.Contains(f.Variants, f.Strategy) {
		return fmt.Errorf("flags.strategy: %q is not one of the variants %q", f.Strategy, f.Variants)
	}
	for _, k := range sortedKeys(f.Constants) {
		if _, err := f.Constants[k].Config(k); err != nil {
			return fmt.Errorf("flags.constants.%s: %w", k, err)
		}
	}
	return nil
}

func (sc *Scenario) validateEvent(e *Event) error {
	if e.At < 0 || e.At > sc.Duration {
		return fmt.Errorf("at: %s is outside the scenario's %s", e.At, sc.Duration)
	}
	n := 0
	for _, set := range []bool{e.Upgrade != nil, e.Flags != nil, e.Brownout != nil, e.UpstreamLatency != nil,
		e.Traffic != nil, e.ScrapeGap != nil, e.CorruptFlagFile != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("exactly one of upgrade, flags, brownout, upstream_latency, traffic, scrape_gap and corrupt_flag_file must be set, got %d", n)
	}
	switch {
	case e.Upgrade != nil:
		u := e.Upgrade
		if !slices.ContainsFunc(sc.Service.Components, func(c ComponentSpec) bool { return c.Name == u.Component }) {
			return fmt.Errorf("upgrade.component: %q is not a service component", u.Component)
		}
		if u.Version == "" {
			return errors.New("upgrade.version: is empty")
		}
		if err := nonNegative("upgrade.over", u.Over); err != nil {
			return err
		}
		if u.Effect.Latency < 0 || u.Effect.UpstreamLatency < 0 {
			return errors.New("upgrade.effect: factors must not be negative")
		}
	case e.Flags != nil:
		f := e.Flags
		if err := validActor(f.Actor); err != nil {
			return fmt.Errorf("flags.actor: %w", err)
		}
		if f.Reason == "" {
			return errors.New("flags.reason: every flag change needs a reason")
		}
		if f.Strategy == "" && f.Rollout == nil && len(f.Constants) == 0 {
			return errors.New("flags: sets nothing (strategy, rollout or constants)")
		}
		if f.Strategy != "" && !slices.Contains(sc.Flags.Variants, f.Strategy) {
			return fmt.Errorf("flags.strategy: %q is not one of the variants %q", f.Strategy, sc.Flags.Variants)
		}
		if f.Strategy != "" && f.Rollout != nil {
			return errors.New("flags: strategy and rollout exclude each other")
		}
		if r := f.Rollout; r != nil {
			if !slices.Contains(sc.Flags.Variants, r.Variant) {
				return fmt.Errorf("flags.rollout.variant: %q is not one of the variants %q", r.Variant, sc.Flags.Variants)
			}
			if !(r.Percent >= 0 && r.Percent <= 100) {
				return fmt.Errorf("flags.rollout.percent: %v is outside [0, 100]", r.Percent)
			}
		}
		for _, k := range sortedKeys(f.Constants) {
			if _, err := f.Constants[k].Config(k); err != nil {
				return fmt.Errorf("flags.constants.%s: %w", k, err)
			}
		}
	case e.Brownout != nil:
		b := e.Brownout
		if b.Duration <= 0 || b.Down <= 0 || b.Up <= 0 {
			return errors.New("brownout: duration, down and up must be positive")
		}
		if err := prob("brownout.failure_probability", b.FailureProbability); err != nil {
			return err
		}
	case e.UpstreamLatency != nil, e.Traffic != nil:
		f, name := e.UpstreamLatency, "upstream_latency"
		if f == nil {
			f, name = e.Traffic, "traffic"
		}
		if f.Duration <= 0 || !(f.Factor > 0 && f.Factor <= 100) {
			return fmt.Errorf("%s: needs a positive duration and a factor in (0, 100]", name)
		}
	case e.ScrapeGap != nil:
		if e.ScrapeGap.Duration <= 0 {
			return errors.New("scrape_gap.duration: must be positive")
		}
	case e.CorruptFlagFile != nil:
		if err := nonNegative("corrupt_flag_file.duration", e.CorruptFlagFile.Duration); err != nil {
			return err
		}
	}
	return nil
}

func validActor(a string) error {
	if !strings.HasPrefix(a, "operator:") || len(a) == len("operator:") || strings.ContainsAny(a[len("operator:"):], " \t:") {
		return fmt.Errorf("%q must be operator:<name>", a)
	}
	return nil
}

func (sc *Scenario) validateTruth() error {
	t := &sc.Truth
	if t.Regression {
		if t.Onset <= 0 || t.Onset >= sc.Duration {
			return fmt.Errorf("truth.onset: %s must lie within the scenario", t.Onset)
		}
		if len(t.Causes) == 0 {
			return errors.New("truth.causes: a regression needs at least one acceptable cause")
		}
	} else if t.Onset != 0 || len(t.Causes) > 0 {
		return errors.New("truth: onset and causes apply to regressions only")
	}
	for i, c := range t.Causes {
		if !causeRE.MatchString(c) {
			return fmt.Errorf("truth.causes[%d]: %q must be flag:<key>, component:<name>, upstream:<name> or none (none of the known changes)", i, c)
		}
	}
	s := &t.SLO
	if !slices.ContainsFunc(sc.Service.Endpoints, func(e EndpointSpec) bool { return e.Name == s.Endpoint }) {
		return fmt.Errorf("truth.slo.endpoint: %q is not an endpoint", s.Endpoint)
	}
	if !(s.Quantile > 0.5 && s.Quantile < 1) {
		return fmt.Errorf("truth.slo.quantile: %v is outside (0.5, 1)", s.Quantile)
	}
	if s.Threshold <= 0 || s.Window <= 0 {
		return errors.New("truth.slo: threshold and window must be positive")
	}
	for i, w := range t.NoAction {
		if w.From < 0 || w.To <= w.From || w.To > sc.Duration {
			return fmt.Errorf("truth.no_action[%d]: needs 0 <= from < to <= duration", i)
		}
	}
	if t.Benefit && !slices.ContainsFunc(sc.Events, func(e Event) bool { return e.Brownout != nil }) {
		return errors.New("truth.benefit: needs a brownout event to measure the benefit in")
	}
	return nil
}

// loadTailguard reads and parses the policy and detector configuration.
func (sc *Scenario) loadTailguard(readFile func(string) ([]byte, error)) error {
	var err error
	if sc.PolicyYAML, err = document("tailguard.policy", sc.Tailguard.PolicyFile, sc.Tailguard.Policy, readFile); err != nil {
		return err
	}
	if sc.DetectorYAML, err = document("tailguard.detector", sc.Tailguard.DetectorFile, sc.Tailguard.Detector, readFile); err != nil {
		return err
	}
	if sc.Policy, err = policy.Parse(sc.PolicyYAML); err != nil {
		return fmt.Errorf("tailguard.policy: %w", err)
	}
	if sc.Detector, err = detector.ParseConfig(bytes.NewReader(sc.DetectorYAML)); err != nil {
		return fmt.Errorf("tailguard.detector: %w", err)
	}
	svc, ok := sc.Policy.Service(sc.Service.Job)
	if !ok {
		return fmt.Errorf("tailguard.policy: no service %q", sc.Service.Job)
	}
	switch {
	case svc.Flags.Strategy.Key != sc.Flags.StrategyKey:
		return fmt.Errorf("tailguard.policy: strategy flag %q is not the scenario's %q", svc.Flags.Strategy.Key, sc.Flags.StrategyKey)
	case svc.Flags.Constants.Key != "" && svc.Flags.Constants.Key != sc.Flags.ConstantsKey:
		return fmt.Errorf("tailguard.policy: constants flag %q is not the scenario's %q", svc.Flags.Constants.Key, sc.Flags.ConstantsKey)
	case svc.Upstream != sc.Upstream.Name:
		return fmt.Errorf("tailguard.policy: upstream %q is not the scenario's %q", svc.Upstream, sc.Upstream.Name)
	}
	for _, v := range []string{svc.Flags.Strategy.NewVariant, svc.Flags.Strategy.OldVariant} {
		if !slices.Contains(sc.Flags.Variants, v) {
			return fmt.Errorf("tailguard.policy: variant %q is not one of the scenario's variants %q", v, sc.Flags.Variants)
		}
	}
	if sc.Detector.Service != sc.Service.Job {
		return fmt.Errorf("tailguard.detector: service %q is not %q", sc.Detector.Service, sc.Service.Job)
	}
	return nil
}

func document(field, file string, inline *yaml.Node, readFile func(string) ([]byte, error)) ([]byte, error) {
	switch {
	case file != "" && inline != nil:
		return nil, fmt.Errorf("%s_file and %s exclude each other", field, field)
	case file != "":
		if readFile == nil {
			return nil, fmt.Errorf("%s_file: %q cannot be read here", field, file)
		}
		b, err := readFile(file)
		if err != nil {
			return nil, fmt.Errorf("%s_file: %w", field, err)
		}
		return b, nil
	case inline != nil:
		b, err := yaml.Marshal(inline)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("%s: set %s_file or %s", field, field, field)
}

// durationKeys are the keys whose values are Prometheus durations.
var durationKeys = map[string]bool{
	"duration": true, "scrape_interval": true, "evaluation_interval": true, "median": true, "period": true,
	"peak": true, "base": true, "cap": true, "max_elapsed": true, "mean_duration": true, "retry_after": true,
	"timeout": true, "correlation": true, "at": true, "over": true, "down": true, "up": true, "onset": true,
	"threshold": true, "window": true, "from": true, "to": true,
}

// locateDurationError returns "line N: key" for the first duration field
// of the document that does not parse, or "".
func locateDurationError(b []byte) string {
	var root yaml.Node
	if yaml.Unmarshal(b, &root) != nil {
		return ""
	}
	var walk func(n *yaml.Node) string
	walk = func(n *yaml.Node) string {
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				if v.Kind == yaml.ScalarNode && durationKeys[k.Value] {
					if _, err := model.ParseDuration(v.Value); err != nil {
						return fmt.Sprintf("line %d: %s", v.Line, k.Value)
					}
				}
				if w := walk(v); w != "" {
					return w
				}
			}
			return ""
		}
		for _, c := range n.Content {
			if w := walk(c); w != "" {
				return w
			}
		}
		return ""
	}
	return walk(&root)
}

// Config returns the backoff configuration of c for strategy (c.Strategy
// when strategy is empty), validated.
func (c ConstantsSpec) Config(strategy string) (backoff.Config, error) {
	if strategy == "" {
		strategy = c.Strategy
	}
	s, err := backoff.ParseStrategy(strategy)
	if err != nil {
		return backoff.Config{}, err
	}
	cfg := backoff.Config{
		Strategy: s, Base: time.Duration(c.Base), Cap: time.Duration(c.Cap), Multiplier: c.Multiplier,
		Jitter: c.Jitter, MaxAttempts: c.MaxAttempts, MaxElapsed: time.Duration(c.MaxElapsed),
	}
	if err := cfg.Validate(); err != nil {
		return backoff.Config{}, err
	}
	return cfg, nil
}

// At returns the absolute time of an offset from the start.
func (sc *Scenario) At(d model.Duration) time.Time { return sc.Start.Add(time.Duration(d)) }

// End returns the end of the simulated time.
func (sc *Scenario) End() time.Time { return sc.At(sc.Duration) }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
