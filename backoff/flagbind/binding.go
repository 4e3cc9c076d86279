// Package flagbind binds the policy of backoff retriers to OpenFeature flags,
// so that the strategy and its constants can be changed at runtime without
// a restart.
//
// Two flags are read through an OpenFeature client with a fixed evaluation
// context (targeting key = instance id):
//
//   - backoff-strategy, a string flag: exponential, full-jitter,
//     equal-jitter, decorrelated or grpc;
//   - backoff-constants, an object flag keyed by strategy name, each entry
//     {"base":"100ms","cap":"2s","multiplier":2,"jitter":0.2,"maxAttempts":6,"maxElapsed":"10s","retryBudget":0.1}
//     (durations are Prometheus duration strings, every field optional), or
//     a flat object of the same fields that applies to any strategy.
//
// The constants are base, cap, multiplier, jitter, maxAttempts and
// maxElapsed, the fields of [backoff.Config], and retryBudget, the ratio of
// retries to calls a [backoff.RatioBudget] allows, in (0, 1]. Constants the
// flag omits come from the binding's default configuration; an omitted
// retryBudget leaves each bound budget at the ratio it was configured with.
// The result is clamped to the declared [Bounds] and validated; if a flag is
// missing or invalid, the last good policy and budget stay in force, the
// problem is logged and counted in backoff_policy_errors_total{reason}.
// Flags are read again on PROVIDER_READY and PROVIDER_CONFIGURATION_CHANGED
// events.
package flagbind

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tailguard/tailguard/backoff"
)

// Default flag keys.
const (
	DefaultStrategyFlag  = "backoff-strategy"
	DefaultConstantsFlag = "backoff-constants"
)

// Target receives policies; *backoff.Retrier implements it.
type Target interface {
	SetPolicy(*backoff.Policy)
}

// BudgetTarget receives the retryBudget ratio; *backoff.RatioBudget
// implements it.
type BudgetTarget interface {
	// Ratio returns the ratio in force.
	Ratio() float64
	// SetRatio replaces the ratio.
	SetRatio(float64) error
}

// Config configures a [Binding].
type Config struct {
	// Client evaluates the flags. Required.
	Client *openfeature.Client
	// Targets receive every new policy. At least one is required.
	Targets []Target
	// Budgets receive the retryBudget constant, typically the
	// *backoff.RatioBudget of the targets' retriers. The ratio a budget has
	// when New is called is its configured ratio: it is restored whenever
	// the flag omits retryBudget. Optional; without budgets a retryBudget
	// in the flag is decoded and bounded but has no effect (and is logged).
	Budgets []BudgetTarget
	// Default is the policy in force until the flags are read, and the
	// source of every constant the flags omit. Required; it must lie
	// within Bounds.
	Default backoff.Config
	// Bounds limit what the flags may set.
	Bounds Bounds
	// StrategyFlag is the key of the string flag naming the strategy.
	// Default "backoff-strategy".
	StrategyFlag string
	// ConstantsFlag is the key of the object flag holding the constants.
	// Default "backoff-constants".
	ConstantsFlag string
	// InstanceID is the targeting key of the evaluation context, so that
	// fractional rollouts place this instance consistently.
	InstanceID string
	// Attributes are added to the evaluation context (for example
	// service, version, region).
	Attributes map[string]any
	// Logger receives policy changes and rejected flag values. Default:
	// discard.
	Logger *slog.Logger
	// Registerer receives the binding's metrics. Nil leaves them
	// unregistered.
	Registerer prometheus.Registerer
}

// Reasons counted in backoff_policy_errors_total.
const (
	// ReasonMissing: a flag does not exist.
	ReasonMissing = "missing"
	// ReasonInvalid: a flag has the wrong type, an unknown strategy or
	// constant, or a value the policy rejects.
	ReasonInvalid = "invalid"
	// ReasonEvaluation: the provider failed otherwise (not ready, fatal,
	// general error).
	ReasonEvaluation = "evaluation"
	// ReasonClamped: a constant lay outside its bounds and was clamped;
	// the clamped policy and budget were applied.
	ReasonClamped = "clamped"
)

// Error is returned by [Binding.Reload] when the flags are not usable; the
// last good policy and budget stay in force.
type Error struct {
	// Flag is the key of the offending flag.
	Flag string
	// Reason is ReasonMissing, ReasonInvalid or ReasonEvaluation.
	Reason string
	Err    error
}

func (e *Error) Error() string {
	return fmt.Sprintf("flag %q (%s): %v", e.Flag, e.Reason, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Binding keeps its targets' policy in line with the flags. It is safe for
// concurrent use.
type Binding struct {
	client        *openfeature.Client
	targets       []Target
	budgets       []BudgetTarget
	configured    []float64 // ratio of each budget when the flag omits retryBudget
	defaults      backoff.Config
	bounds        Bounds
	strategyFlag  string
	constantsFlag string
	evalCtx       openfeature.EvaluationContext
	logger        *slog.Logger
	metrics       *metrics

	mu      sync.Mutex
	current *backoff.Policy
	ratio   float64 // retryBudget in force, 0 if the flag omits it
}

// New validates cfg and returns a binding. The targets keep their policy
// until the first successful [Binding.Reload].
func New(cfg Config) (*Binding, error) {
	if cfg.Client == nil {
		return nil, errors.New("flagbind: client is nil")
	}
	if len(cfg.Targets) == 0 {
		return nil, errors.New("flagbind: targets: at least one is required")
	}
	for i, t := range cfg.Targets {
		if t == nil {
			return nil, fmt.Errorf("flagbind: targets[%d] is nil", i)
		}
	}
	if err := cfg.Bounds.validate(); err != nil {
		return nil, fmt.Errorf("flagbind: %w", err)
	}
	configured := make([]float64, len(cfg.Budgets))
	for i, bt := range cfg.Budgets {
		if bt == nil {
			return nil, fmt.Errorf("flagbind: budgets[%d] is nil", i)
		}
		configured[i] = bt.Ratio()
		if !cfg.Bounds.RetryBudget.contains(configured[i]) {
			return nil, fmt.Errorf("flagbind: budgets[%d]: ratio %v is outside the retryBudget bounds", i, configured[i])
		}
	}
	def, err := backoff.New(cfg.Default)
	if err != nil {
		return nil, fmt.Errorf("flagbind: default: %w", err)
	}
	if !cfg.Bounds.allows(def.Strategy()) {
		return nil, fmt.Errorf("flagbind: default: strategy %s is not allowed by the bounds", def.Strategy())
	}
	if field := cfg.Bounds.check(def.Config()); field != "" {
		return nil, fmt.Errorf("flagbind: default: %s is outside the bounds", field)
	}
	if cfg.StrategyFlag == "" {
		cfg.StrategyFlag = DefaultStrategyFlag
	}
	if cfg.ConstantsFlag == "" {
		cfg.ConstantsFlag = DefaultConstantsFlag
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	b := &Binding{
		client:        cfg.Client,
		targets:       cfg.Targets,
		budgets:       slices.Clone(cfg.Budgets),
		configured:    configured,
		defaults:      cfg.Default,
		bounds:        cfg.Bounds,
		strategyFlag:  cfg.StrategyFlag,
		constantsFlag: cfg.ConstantsFlag,
		evalCtx:       openfeature.NewEvaluationContext(cfg.InstanceID, maps.Clone(cfg.Attributes)),
		logger:        cfg.Logger,
		metrics:       m,
		current:       def,
	}
	m.setPolicy(def)
	b.setBudgetMetric()
	return b, nil
}

// setBudgetMetric exports the ratio in force of the first budget, if any.
func (b *Binding) setBudgetMetric() {
	if len(b.budgets) > 0 {
		b.metrics.constant.WithLabelValues("retry_budget").Set(b.budgets[0].Ratio())
	}
}

// Policy returns the policy in force: the last good one read from the
// flags, or the default.
func (b *Binding) Policy() *backoff.Policy {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.current
}

// RetryBudget returns the retryBudget ratio the flag sets, or 0 when it
// omits it and the budgets keep their configured ratios.
func (b *Binding) RetryBudget() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ratio
}

// Reload reads the flags now and, if they yield a valid policy different
// from the current one, hands it to the targets; a changed retryBudget goes
// to the budgets. On error the current policy and budget stay in force; the
// error is logged, counted and returned as an *[Error].
func (b *Binding) Reload(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ratio, clamped, err := b.evaluate(ctx)
	if err == nil && ratio != b.ratio {
		err = b.setRatio(ratio)
	}
	if err != nil {
		var fe *Error
		if !errors.As(err, &fe) {
			fe = &Error{Flag: b.strategyFlag, Reason: ReasonInvalid, Err: err}
			err = fe
		}
		b.metrics.errors.WithLabelValues(fe.Reason).Inc()
		b.logger.Warn("backoff flags rejected, keeping the last good policy",
			"flag", fe.Flag, "reason", fe.Reason, "err", fe.Err, "policy", b.current.String())
		return err
	}
	if len(clamped) > 0 {
		b.metrics.errors.WithLabelValues(ReasonClamped).Inc()
		b.logger.Warn("backoff constants clamped to their bounds",
			"flag", b.constantsFlag, "constants", strings.Join(clamped, ","), "policy", p.String())
	}
	if p.Config() == b.current.Config() {
		return nil
	}
	b.logger.Info("backoff policy changed", "from", b.current.String(), "to", p.String())
	b.current = p
	b.metrics.setPolicy(p)
	for _, t := range b.targets {
		t.SetPolicy(p)
	}
	return nil
}

// setRatio hands the retryBudget ratio to the budgets (0: their configured
// ratios). If a budget refuses it, those already changed are set back and
// the error is returned.
func (b *Binding) setRatio(ratio float64) error {
	want := func(r float64, i int) float64 {
		if r == 0 {
			return b.configured[i]
		}
		return r
	}
	for i, bt := range b.budgets {
		if err := bt.SetRatio(want(ratio, i)); err != nil {
			for j := range i {
				_ = b.budgets[j].SetRatio(want(b.ratio, j))
			}
			return &Error{Flag: b.constantsFlag, Reason: ReasonInvalid, Err: fmt.Errorf("%s: budgets[%d]: %w", keyRetryBudget, i, err)}
		}
	}
	switch {
	case len(b.budgets) == 0 && ratio != 0:
		b.logger.Warn("retryBudget set by the constants flag, but no retry budget is bound: ignored",
			"flag", b.constantsFlag, "retryBudget", ratio)
	case len(b.budgets) > 0:
		b.logger.Info("backoff retry budget changed", "from", b.ratio, "to", ratio, "configured", ratio == 0)
	}
	b.ratio = ratio
	b.setBudgetMetric()
	return nil
}

// evaluate reads both flags and builds the policy they describe and the
// retryBudget they set (0 if none), returning the names of the constants it
// clamped.
func (b *Binding) evaluate(ctx context.Context) (*backoff.Policy, float64, []string, error) {
	sd, err := b.client.StringValueDetails(ctx, b.strategyFlag, b.defaults.Strategy.String(), b.evalCtx)
	if err != nil {
		return nil, 0, nil, b.evalError(b.strategyFlag, sd.ErrorCode, err)
	}
	strategy, err := backoff.ParseStrategy(sd.Value)
	if err != nil {
		return nil, 0, nil, &Error{Flag: b.strategyFlag, Reason: ReasonInvalid, Err: err}
	}
	if !b.bounds.allows(strategy) {
		return nil, 0, nil, &Error{Flag: b.strategyFlag, Reason: ReasonInvalid,
			Err: fmt.Errorf("strategy %s is not allowed by the bounds", strategy)}
	}
	cd, err := b.client.ObjectValueDetails(ctx, b.constantsFlag, nil, b.evalCtx)
	if err != nil {
		return nil, 0, nil, b.evalError(b.constantsFlag, cd.ErrorCode, err)
	}
	invalid := func(err error) error {
		return &Error{Flag: b.constantsFlag, Reason: ReasonInvalid, Err: err}
	}
	cfg := b.defaults
	cfg.Strategy = strategy
	k, err := applyConstants(cfg, cd.Value)
	if err != nil {
		return nil, 0, nil, invalid(err)
	}
	// Clamp what was set, normalize (filling in strategy defaults), then
	// clamp the defaults too.
	cfg, clamped := b.bounds.clamp(k.Config)
	p, err := backoff.New(cfg)
	if err != nil {
		return nil, 0, nil, invalid(err)
	}
	if b.bounds.check(p.Config()) != "" {
		cfg, more := b.bounds.clamp(p.Config())
		clamped = append(clamped, more...)
		if p, err = backoff.New(cfg); err != nil {
			return nil, 0, nil, invalid(err)
		}
	}
	ratio, moved := b.bounds.clampRetryBudget(k.RetryBudget)
	if moved {
		clamped = append(clamped, keyRetryBudget)
	}
	return p, ratio, clamped, nil
}

func (b *Binding) evalError(flag string, code openfeature.ErrorCode, err error) error {
	reason := ReasonEvaluation
	switch code {
	case openfeature.FlagNotFoundCode:
		reason = ReasonMissing
	case openfeature.TypeMismatchCode, openfeature.ParseErrorCode:
		reason = ReasonInvalid
	}
	return &Error{Flag: flag, Reason: reason, Err: err}
}

// Run reads the flags whenever the provider reports PROVIDER_READY or
// PROVIDER_CONFIGURATION_CHANGED, and once at start if the provider is
// already ready. It returns nil when ctx is done. Events that arrive while a
// read is running coalesce into one more read.
func (b *Binding) Run(ctx context.Context) error {
	pending := make(chan struct{}, 1)
	notify := func(openfeature.EventDetails) {
		select {
		case pending <- struct{}{}:
		default:
		}
	}
	handler := openfeature.EventCallback(&notify)
	events := []openfeature.EventType{openfeature.ProviderReady, openfeature.ProviderConfigChange}
	for _, e := range events {
		b.client.AddHandler(e, handler)
	}
	defer func() {
		for _, e := range events {
			b.client.RemoveHandler(e, handler)
		}
	}()
	if s := b.client.State(); s == openfeature.ReadyState || s == openfeature.StaleState {
		notify(openfeature.EventDetails{})
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-pending:
			_ = b.Reload(ctx) // logged and counted by Reload
		}
	}
}
