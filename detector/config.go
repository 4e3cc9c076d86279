package detector

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/tailguard/tailguard/detector/changes"
	"github.com/tailguard/tailguard/detector/internal/selector"
	"github.com/tailguard/tailguard/detector/stats"
)

// SignalKind names what a signal measures.
type SignalKind string

// Signal kinds.
const (
	// KindLatency counts requests slower than a boundary near the baseline
	// quantile (binomial), from a classic or native histogram.
	KindLatency SignalKind = "latency"
	// KindRetryRatio counts retries per logical call (Poisson), from the
	// backoff_* metrics.
	KindRetryRatio SignalKind = "retry_ratio"
	// KindErrorRatio counts failed requests per request (binomial).
	KindErrorRatio SignalKind = "error_ratio"
)

// Histogram types for latency signals.
const (
	HistogramClassic = "classic"
	HistogramNative  = "native"
)

// Defaults. The metric names are the ones the services export (see the
// backoff package and the scenario services).
const (
	DefaultLatencyMetric      = "http_request_duration_seconds"
	DefaultAttemptMetric      = "backoff_attempt_duration_seconds"
	DefaultRequestsMetric     = "http_requests_total"
	DefaultCallsMetric        = "backoff_calls_total"
	DefaultRetriesMetric      = "backoff_retries_total"
	DefaultErrorSelector      = `code=~"5.."`
	DefaultQuantile           = 0.99
	DefaultMinEffect          = 1.5
	DefaultObjectiveWindow    = model.Duration(10 * time.Minute)
	DefaultConfidence         = 0.95
	DefaultFalseAlarmsPerHour = 0.01
	DefaultMaxGapRatio        = 0.25
	DefaultMargin             = 0.05
	DefaultMinScore           = 0.3
	DefaultQueryConcurrency   = 4
)

// Config configures the detector. Load it with LoadConfig or ParseConfig,
// which apply defaults and validate; a Config built in code must go
// through (*Config).Validate (New does).
type Config struct {
	// Service names the service whose signals these are.
	Service string `yaml:"service"`
	// Baseline is the window before the analysed period used as reference.
	// Default 1h; a multiple of Step.
	Baseline model.Duration `yaml:"baseline"`
	// Step is the resolution of the sequential test: counts are taken per
	// step and the CUSUM updated once per step. Default 1m.
	Step model.Duration `yaml:"step"`
	// QueryTimeout bounds every query. Default 30s.
	QueryTimeout model.Duration `yaml:"query_timeout"`
	// QueryConcurrency bounds the queries one analysis has in flight at a
	// time (a signal's totals and events are fetched side by side, and the
	// signals too). Default 4; 1 runs them one after another.
	QueryConcurrency int `yaml:"query_concurrency"`
	// ChangeLookback is how far back a change named by Request.Change is
	// searched for. Default 24h.
	ChangeLookback model.Duration `yaml:"change_lookback"`

	Detection   DetectionConfig   `yaml:"detection"`
	Attribution AttributionConfig `yaml:"attribution"`
	Signals     []SignalConfig    `yaml:"signals"`
	Changes     ChangesConfig     `yaml:"changes"`
	Topology    TopologyConfig    `yaml:"topology"`
}

// DetectionConfig sets the statistics of the sequential test.
type DetectionConfig struct {
	// FalseAlarmsPerHour is the target rate of false Regressed verdicts
	// over all slices watched. Default 0.01 (one per 100 hours).
	FalseAlarmsPerHour float64 `yaml:"false_alarms_per_hour"`
	// MinEffect is the smallest ratio (current/baseline rate) worth
	// reporting, and the alternative the CUSUM is tuned to. Default 1.5.
	MinEffect float64 `yaml:"min_effect"`
	// Confidence is the level of effect intervals. Default 0.95.
	Confidence float64 `yaml:"confidence"`
	// MinRequests is the fewest requests (calls) a baseline or a current
	// window needs. Default: the smallest sample with a distribution-free
	// interval for the latency quantile at Confidence (368 for p99 at 95%).
	MinRequests int `yaml:"min_requests"`
	// MaxGapRatio is the largest fraction of steps without data before a
	// slice is inconclusive. Default 0.25.
	MaxGapRatio float64 `yaml:"max_gap_ratio"`
	// StaleAfter: a slice whose last samples are older than this is
	// inconclusive. Default 5m.
	StaleAfter model.Duration `yaml:"stale_after"`
}

// AttributionConfig sets how candidate changes are ranked.
type AttributionConfig struct {
	// TimingTolerance is how far an onset may precede a change and still
	// be blamed on it (onsets are known to within a step). Default 2 steps.
	TimingTolerance model.Duration `yaml:"timing_tolerance"`
	// TimingDecay is the e-folding time of the timing score for onsets after
	// a change. Default 15m.
	TimingDecay model.Duration `yaml:"timing_decay"`
	// Margin: when the best two causes score closer than this, the cause is
	// ambiguous. Default 0.05.
	Margin float64 `yaml:"margin"`
	// MinScore: a best cause scoring below this leaves the finding
	// unattributed. Default 0.3.
	MinScore float64 `yaml:"min_score"`
	// Weights of the four criteria. Default timing 0.4, localisation 0.3,
	// cohort 0.15, topology 0.15.
	Weights Weights `yaml:"weights"`
}

// Weights weigh the attribution criteria.
type Weights struct {
	Timing       float64 `yaml:"timing"`
	Localisation float64 `yaml:"localisation"`
	Cohort       float64 `yaml:"cohort"`
	Topology     float64 `yaml:"topology"`
}

// SignalConfig declares one signal.
type SignalConfig struct {
	// Name identifies the signal in findings.
	Name string     `yaml:"name"`
	Kind SignalKind `yaml:"kind"`
	// Histogram is "classic" (default) or "native", for latency.
	Histogram string `yaml:"histogram"`
	// Metric is the histogram (latency), the requests counter (error
	// ratio) or the logical calls counter (retry ratio). Defaults:
	// http_request_duration_seconds, http_requests_total, backoff_calls_total.
	Metric string `yaml:"metric"`
	// RetriesMetric is the retries counter (retry ratio). Default
	// backoff_retries_total.
	RetriesMetric string `yaml:"retries_metric"`
	// Selector narrows the series: {job="shop",endpoint="/checkout"}.
	Selector string `yaml:"selector"`
	// ErrorSelector selects failed requests (error ratio), added to
	// Selector. Default code=~"5..".
	ErrorSelector string `yaml:"error_selector"`
	// By lists the slice labels. Empty: one slice, the whole signal.
	By []string `yaml:"by"`
	// Quantile is the latency quantile watched. Default 0.99.
	Quantile float64 `yaml:"quantile"`
	// Boundary fixes the latency boundary in seconds. Zero: the classic
	// bucket bound whose baseline exceedance fraction is closest to
	// 1−Quantile (on a log scale), or the baseline quantile itself for
	// native histograms. One boundary serves all slices of a signal, so a
	// signal should group slices with similar latency (one endpoint).
	Boundary float64 `yaml:"boundary"`
	// Attempts marks a latency signal on the upstream's attempts
	// (backoff_attempt_duration_seconds): the callee's own latency, which
	// no backoff change can move. Attribution uses its regressions as
	// evidence against backoff flags and for "none of the known changes".
	Attempts bool `yaml:"attempts"`
	// MinEffect overrides Detection.MinEffect for this signal.
	MinEffect float64 `yaml:"min_effect"`
	// Objective is the rate of bad events the service's SLO allows on
	// this signal: the share of requests slower than Boundary (0.01 for a
	// p99 objective at that threshold), retries per call (retry ratio),
	// the error ratio. A slice whose rate since the onset stays within it
	// is not a regression, however significant its shift: users do not
	// feel it, and acting on it only spends the error budget of the next
	// real incident. Zero: no floor (every significant shift counts).
	Objective float64 `yaml:"objective"`
	// ObjectiveWindow is the trailing window whose rate is compared with
	// Objective (grown until it holds the minimum trials): about the SLO's
	// window. Default 10m.
	ObjectiveWindow model.Duration `yaml:"objective_window"`
	// Queries overrides the query templates.
	Queries QueryTemplates `yaml:"queries"`
}

// QueryTemplates are text/template PromQL templates. Each receives
// TemplateData. Empty fields take the defaults for the signal's kind.
type QueryTemplates struct {
	// Total counts trials (requests, calls) per slice over .Range.
	Total string `yaml:"total"`
	// Events counts bad events (slow requests, retries, errors) per slice
	// over .Range. For retry and error ratios, a slice the events query
	// does not return at a step where the total has a value counts 0
	// events there (an absent counter never counted), so no "or 0 * total"
	// fallback is needed.
	Events string `yaml:"events"`
	// Buckets returns the classic buckets of the whole signal over the
	// baseline, by le, to choose the latency boundary.
	Buckets string `yaml:"buckets"`
	// Boundary returns the baseline quantile of a native histogram, to use
	// as the latency boundary.
	Boundary string `yaml:"boundary"`
	// Quantile returns the quantile per slice over .Range (evidence).
	Quantile string `yaml:"quantile"`
}

// TemplateData is what query templates see.
type TemplateData struct {
	Metric        string
	RetriesMetric string
	// Selector is {matchers} or empty.
	Selector string
	// BoundarySelector adds le="<boundary>" to Selector (classic latency).
	BoundarySelector string
	// ErrorSelector adds the error matcher to Selector (error ratio).
	ErrorSelector string
	// By is the comma-separated slice labels; ByLe prepends "le".
	By   string
	ByLe string
	// Range is the range of range selectors: the step for counts, the
	// window for baselines and quantiles.
	Range string
	// Quantile is the watched quantile, Boundary the latency boundary.
	Quantile string
	Boundary string
}

// ChangesConfig says where changes come from.
type ChangesConfig struct {
	// BuildInfo lists the build info metrics to watch for version changes.
	BuildInfo []changes.BuildInfo `yaml:"build_info"`
	// FlagJournal is the flag store's journal (<flagfile>.journal.jsonl).
	FlagJournal string `yaml:"flag_journal"`
	// Flags maps flag keys to the slices their changes touch.
	Flags map[string]changes.FlagScope `yaml:"flags"`
	// Manifests lists declared upgrade manifests (YAML or JSON).
	Manifests []string `yaml:"manifests"`
	// MergeWindow: events for the same component and version this close
	// are one change. Default 15m.
	MergeWindow model.Duration `yaml:"merge_window"`
}

// TopologyConfig describes who calls whom, for blaming callers over callees.
type TopologyConfig struct {
	// Callees maps components on the far side of a call to the upstream
	// label value the service's retry metrics use for them, e.g.
	// {payments-api: payments}. Every other component, and every flag, is
	// on the calling side.
	Callees map[string]string `yaml:"callees"`
}

// LoadConfig reads a YAML configuration file.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read detector config: %w", err)
	}
	cfg, err := ParseConfig(bytes.NewReader(b))
	if err != nil {
		return Config{}, fmt.Errorf("detector config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes YAML strictly (unknown fields are errors), applies
// defaults and validates.
func ParseConfig(r io.Reader) (Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("decode: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Validate applies defaults to zero fields and checks every field, naming
// the offending one.
func (c *Config) Validate() error {
	def := func(d *model.Duration, v time.Duration) {
		if *d == 0 {
			*d = model.Duration(v)
		}
	}
	def(&c.Baseline, time.Hour)
	def(&c.Step, time.Minute)
	def(&c.QueryTimeout, 30*time.Second)
	if c.QueryConcurrency == 0 {
		c.QueryConcurrency = DefaultQueryConcurrency
	}
	def(&c.ChangeLookback, 24*time.Hour)
	def(&c.Detection.StaleAfter, 5*time.Minute)
	def(&c.Attribution.TimingTolerance, 2*time.Duration(c.Step))
	def(&c.Attribution.TimingDecay, 15*time.Minute)
	def(&c.Changes.MergeWindow, 15*time.Minute)
	deff := func(f *float64, v float64) {
		if *f == 0 {
			*f = v
		}
	}
	d := &c.Detection
	deff(&d.FalseAlarmsPerHour, DefaultFalseAlarmsPerHour)
	deff(&d.MinEffect, DefaultMinEffect)
	deff(&d.Confidence, DefaultConfidence)
	deff(&d.MaxGapRatio, DefaultMaxGapRatio)
	a := &c.Attribution
	deff(&a.Margin, DefaultMargin)
	deff(&a.MinScore, DefaultMinScore)
	if a.Weights == (Weights{}) {
		a.Weights = Weights{Timing: 0.4, Localisation: 0.3, Cohort: 0.15, Topology: 0.15}
	}

	if c.Service == "" {
		return errors.New("field service is empty")
	}
	for name, v := range map[string]model.Duration{
		"baseline": c.Baseline, "step": c.Step, "query_timeout": c.QueryTimeout,
		"change_lookback": c.ChangeLookback, "detection.stale_after": c.Detection.StaleAfter,
		"attribution.timing_tolerance": c.Attribution.TimingTolerance,
		"attribution.timing_decay":     c.Attribution.TimingDecay, "changes.merge_window": c.Changes.MergeWindow,
	} {
		if v < 0 {
			return fmt.Errorf("field %s must not be negative", name)
		}
	}
	if c.Baseline%c.Step != 0 || c.Baseline < 5*c.Step {
		return fmt.Errorf("field baseline (%s) must be a multiple of step (%s) and at least 5 steps", c.Baseline, c.Step)
	}
	if c.QueryConcurrency < 1 || c.QueryConcurrency > 64 {
		return fmt.Errorf("field query_concurrency (%d) must be in [1, 64]", c.QueryConcurrency)
	}
	if c.Step < model.Duration(time.Second) {
		return fmt.Errorf("field step (%s) must be at least 1s", c.Step)
	}
	if !(d.FalseAlarmsPerHour > 0 && d.FalseAlarmsPerHour < 1e6) {
		return fmt.Errorf("field detection.false_alarms_per_hour (%v) must be positive", d.FalseAlarmsPerHour)
	}
	if !(d.MinEffect > 1 && d.MinEffect < 1e6) {
		return fmt.Errorf("field detection.min_effect (%v) must be above 1", d.MinEffect)
	}
	if !(d.Confidence > 0.5 && d.Confidence < 1) {
		return fmt.Errorf("field detection.confidence (%v) must be in (0.5, 1)", d.Confidence)
	}
	if d.MinRequests < 0 {
		return fmt.Errorf("field detection.min_requests (%d) must not be negative", d.MinRequests)
	}
	if !(d.MaxGapRatio > 0 && d.MaxGapRatio <= 1) {
		return fmt.Errorf("field detection.max_gap_ratio (%v) must be in (0, 1]", d.MaxGapRatio)
	}
	if !(a.Margin >= 0 && a.Margin < 1) {
		return fmt.Errorf("field attribution.margin (%v) must be in [0, 1)", a.Margin)
	}
	if !(a.MinScore >= 0 && a.MinScore < 1) {
		return fmt.Errorf("field attribution.min_score (%v) must be in [0, 1)", a.MinScore)
	}
	w := a.Weights
	if w.Timing < 0 || w.Localisation < 0 || w.Cohort < 0 || w.Topology < 0 || w.Timing+w.Localisation+w.Cohort+w.Topology <= 0 {
		return errors.New("field attribution.weights must be non-negative with a positive sum")
	}
	if a.TimingDecay == 0 {
		return errors.New("field attribution.timing_decay must be positive")
	}
	if len(c.Signals) == 0 {
		return errors.New("field signals is empty")
	}
	names := map[string]bool{}
	for i := range c.Signals {
		s := &c.Signals[i]
		if err := s.validate(c); err != nil {
			return fmt.Errorf("signals[%d]: %w", i, err)
		}
		if names[s.Name] {
			return fmt.Errorf("signals[%d].name %q is used twice", i, s.Name)
		}
		names[s.Name] = true
	}
	for k, fs := range c.Changes.Flags {
		if k == "" {
			return errors.New("field changes.flags has an empty flag key")
		}
		if fs.KeyLabel != "" && !model.LegacyValidation.IsValidLabelName(fs.KeyLabel) {
			return fmt.Errorf("field changes.flags[%s].key_label %q is not a label name", k, fs.KeyLabel)
		}
		if fs.Label != "" && !model.LegacyValidation.IsValidLabelName(fs.Label) {
			return fmt.Errorf("field changes.flags[%s].label %q is not a label name", k, fs.Label)
		}
	}
	for i, p := range c.Changes.Manifests {
		if p == "" {
			return fmt.Errorf("field changes.manifests[%d] is empty", i)
		}
	}
	for comp, up := range c.Topology.Callees {
		if comp == "" || up == "" {
			return fmt.Errorf("field topology.callees has an empty entry (%q: %q)", comp, up)
		}
	}
	return nil
}

// minRequests returns the configured minimum or the quantile default.
func (c *Config) minRequests(q float64) int {
	if c.Detection.MinRequests > 0 {
		return c.Detection.MinRequests
	}
	n, err := stats.MinSamplesForQuantileCI(q, c.Detection.Confidence)
	if err != nil {
		return 368
	}
	return n
}

func (s *SignalConfig) validate(c *Config) error {
	if s.Name == "" {
		return errors.New("field name is empty")
	}
	switch s.Kind {
	case KindLatency:
		if s.Histogram == "" {
			s.Histogram = HistogramClassic
		}
		if s.Histogram != HistogramClassic && s.Histogram != HistogramNative {
			return fmt.Errorf("field histogram %q must be %q or %q", s.Histogram, HistogramClassic, HistogramNative)
		}
		if s.Metric == "" {
			s.Metric = DefaultLatencyMetric
			if s.Attempts {
				s.Metric = DefaultAttemptMetric
			}
		}
		if s.Quantile == 0 {
			s.Quantile = DefaultQuantile
		}
		if !(s.Quantile > 0.5 && s.Quantile < 1) {
			return fmt.Errorf("field quantile (%v) must be in (0.5, 1)", s.Quantile)
		}
		if s.Boundary < 0 || math.IsInf(s.Boundary, 0) || math.IsNaN(s.Boundary) {
			return fmt.Errorf("field boundary (%v) must be a positive number of seconds", s.Boundary)
		}
	case KindRetryRatio:
		if s.Metric == "" {
			s.Metric = DefaultCallsMetric
		}
		if s.RetriesMetric == "" {
			s.RetriesMetric = DefaultRetriesMetric
		}
	case KindErrorRatio:
		if s.Metric == "" {
			s.Metric = DefaultRequestsMetric
		}
		if s.ErrorSelector == "" {
			s.ErrorSelector = DefaultErrorSelector
		}
	default:
		return fmt.Errorf("field kind %q must be %q, %q or %q", s.Kind, KindLatency, KindRetryRatio, KindErrorRatio)
	}
	if s.Kind != KindLatency && s.Attempts {
		return fmt.Errorf("field attempts applies to kind %q only", KindLatency)
	}
	if s.Kind != KindLatency && (s.Histogram != "" || s.Boundary != 0) {
		return fmt.Errorf("fields histogram and boundary apply to kind %q only", KindLatency)
	}
	if s.Quantile == 0 {
		s.Quantile = DefaultQuantile
	}
	if s.MinEffect != 0 && !(s.MinEffect > 1) {
		return fmt.Errorf("field min_effect (%v) must be above 1", s.MinEffect)
	}
	if s.ObjectiveWindow == 0 {
		s.ObjectiveWindow = DefaultObjectiveWindow
	}
	switch {
	case s.ObjectiveWindow < 0:
		return fmt.Errorf("field objective_window (%s) must be positive", s.ObjectiveWindow)
	case !(s.Objective >= 0 && s.Objective < 1e6):
		return fmt.Errorf("field objective (%v) must be a rate of at least 0", s.Objective)
	case s.Kind != KindRetryRatio && s.Objective >= 1:
		return fmt.Errorf("field objective (%v) must be a share below 1 for kind %q", s.Objective, s.Kind)
	case s.Kind == KindLatency && s.Objective > 0 && s.Boundary == 0:
		return fmt.Errorf("field objective needs a fixed boundary (the SLO threshold) for kind %q", KindLatency)
	case s.Attempts && s.Objective > 0:
		return fmt.Errorf("field objective does not apply to attempts signals (they are evidence, not an SLO)")
	}
	for _, m := range []string{s.Metric, s.RetriesMetric} {
		if m != "" && !model.LegacyValidation.IsValidMetricName(m) {
			return fmt.Errorf("metric %q is not a valid metric name", m)
		}
	}
	if _, err := selector.Parse(s.Selector); err != nil {
		return fmt.Errorf("field selector: %w", err)
	}
	if s.ErrorSelector != "" {
		if _, err := selector.Parse(s.ErrorSelector); err != nil {
			return fmt.Errorf("field error_selector: %w", err)
		}
	}
	seen := map[string]bool{}
	for _, l := range s.By {
		if !model.LegacyValidation.IsValidLabelName(l) || l == "le" || l == model.MetricNameLabel {
			return fmt.Errorf("field by: %q is not a usable label name", l)
		}
		if seen[l] {
			return fmt.Errorf("field by: %q is listed twice", l)
		}
		seen[l] = true
	}
	// Render every template with sample values and parse the PromQL, so a
	// broken template fails at load, not at the first analysis.
	tpls, err := s.templates()
	if err != nil {
		return err
	}
	data, err := s.templateData(c.Step.String(), "0.25")
	if err != nil {
		return err
	}
	for _, name := range slices.Sorted(mapsKeys(tpls)) {
		q, err := render(tpls[name], data)
		if err != nil {
			return fmt.Errorf("query template %s: %w", name, err)
		}
		if err := selector.CheckExpr(q); err != nil {
			return fmt.Errorf("query template %s renders invalid PromQL %q: %w", name, q, err)
		}
	}
	return nil
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// Default query templates per kind.
const (
	tplClassicBuckets  = `sum by (le) (increase({{.Metric}}_bucket{{.Selector}}[{{.Range}}]))`
	tplClassicTotal    = `sum by ({{.By}}) (increase({{.Metric}}_count{{.Selector}}[{{.Range}}]))`
	tplClassicEvents   = `sum by ({{.By}}) (increase({{.Metric}}_count{{.Selector}}[{{.Range}}])) - sum by ({{.By}}) (increase({{.Metric}}_bucket{{.BoundarySelector}}[{{.Range}}]))`
	tplClassicQuantile = `histogram_quantile({{.Quantile}}, sum by ({{.ByLe}}) (increase({{.Metric}}_bucket{{.Selector}}[{{.Range}}])))`

	tplNativeBoundary = `histogram_quantile({{.Quantile}}, sum(increase({{.Metric}}{{.Selector}}[{{.Range}}])))`
	tplNativeTotal    = `histogram_count(sum by ({{.By}}) (increase({{.Metric}}{{.Selector}}[{{.Range}}])))`
	tplNativeEvents   = `histogram_fraction({{.Boundary}}, +Inf, sum by ({{.By}}) (increase({{.Metric}}{{.Selector}}[{{.Range}}]))) * histogram_count(sum by ({{.By}}) (increase({{.Metric}}{{.Selector}}[{{.Range}}])))`
	tplNativeQuantile = `histogram_quantile({{.Quantile}}, sum by ({{.By}}) (increase({{.Metric}}{{.Selector}}[{{.Range}}])))`

	tplRetryTotal = `sum by ({{.By}}) (increase({{.Metric}}{{.Selector}}[{{.Range}}]))`
	// A slice whose events counter is absent at a step where its total is
	// present counted no events then (buildStreams fills in the 0): the
	// server is not asked to evaluate the totals a second time for it.
	tplRetryEvents = `sum by ({{.By}}) (increase({{.RetriesMetric}}{{.Selector}}[{{.Range}}]))`

	tplErrorTotal  = `sum by ({{.By}}) (increase({{.Metric}}{{.Selector}}[{{.Range}}]))`
	tplErrorEvents = `sum by ({{.By}}) (increase({{.Metric}}{{.ErrorSelector}}[{{.Range}}]))`
)

// Template names.
const (
	qTotal    = "total"
	qEvents   = "events"
	qBuckets  = "buckets"
	qBoundary = "boundary"
	qQuantile = "quantile"
)

// templates parses the signal's templates, defaults filled in.
func (s *SignalConfig) templates() (map[string]*template.Template, error) {
	src := map[string][2]string{} // name → {override, default}
	switch {
	case s.Kind == KindLatency && s.Histogram == HistogramNative:
		src[qTotal] = [2]string{s.Queries.Total, tplNativeTotal}
		src[qEvents] = [2]string{s.Queries.Events, tplNativeEvents}
		src[qBoundary] = [2]string{s.Queries.Boundary, tplNativeBoundary}
		src[qQuantile] = [2]string{s.Queries.Quantile, tplNativeQuantile}
	case s.Kind == KindLatency:
		src[qTotal] = [2]string{s.Queries.Total, tplClassicTotal}
		src[qEvents] = [2]string{s.Queries.Events, tplClassicEvents}
		src[qBuckets] = [2]string{s.Queries.Buckets, tplClassicBuckets}
		src[qQuantile] = [2]string{s.Queries.Quantile, tplClassicQuantile}
	case s.Kind == KindRetryRatio:
		src[qTotal] = [2]string{s.Queries.Total, tplRetryTotal}
		src[qEvents] = [2]string{s.Queries.Events, tplRetryEvents}
	default:
		src[qTotal] = [2]string{s.Queries.Total, tplErrorTotal}
		src[qEvents] = [2]string{s.Queries.Events, tplErrorEvents}
	}
	set := [...]struct {
		name string
		v    string
	}{{qBuckets, s.Queries.Buckets}, {qBoundary, s.Queries.Boundary}, {qQuantile, s.Queries.Quantile}}
	for _, o := range set {
		if _, ok := src[o.name]; !ok && o.v != "" {
			return nil, fmt.Errorf("field queries.%s does not apply to this signal", o.name)
		}
	}
	out := map[string]*template.Template{}
	for name, v := range src {
		text := v[0]
		if text == "" {
			text = v[1]
		}
		t, err := template.New(name).Option("missingkey=error").Parse(text)
		if err != nil {
			return nil, fmt.Errorf("field queries.%s: %w", name, err)
		}
		out[name] = t
	}
	return out, nil
}

// templateData fills the template fields for a range and a boundary (for
// classic histograms, the le label value exactly as stored).
func (s *SignalConfig) templateData(rng, boundary string) (TemplateData, error) {
	inner, err := selector.Parse(s.Selector)
	if err != nil {
		return TemplateData{}, err
	}
	d := TemplateData{
		Metric:        s.Metric,
		RetriesMetric: s.RetriesMetric,
		Selector:      selector.With(inner),
		By:            strings.Join(s.By, ", "),
		ByLe:          strings.Join(append([]string{"le"}, s.By...), ", "),
		Range:         rng,
		Quantile:      formatFloat(s.Quantile),
		Boundary:      boundary,
	}
	d.BoundarySelector = selector.With(inner, fmt.Sprintf("le=%q", d.Boundary))
	if s.ErrorSelector != "" {
		errInner, err := selector.Parse(s.ErrorSelector)
		if err != nil {
			return TemplateData{}, err
		}
		d.ErrorSelector = selector.With(inner, errInner)
	}
	return d, nil
}

func render(t *template.Template, d TemplateData) (string, error) {
	var b strings.Builder
	if err := t.Execute(&b, d); err != nil {
		return "", err
	}
	return b.String(), nil
}

// formatFloat renders a number the way Prometheus renders le labels.
func formatFloat(f float64) string {
	return strconv.FormatFloat(f, 'f', -1, 64)
}
