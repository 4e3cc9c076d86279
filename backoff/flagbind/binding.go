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
//     {"base":"100ms","cap":"2s","multiplier":2,"jitter":0.2,"maxAttempts":6,"maxElapsed":"10s"}
//     (durations are Prometheus duration strings, every field optional), or
//     a flat object of the same fields that applies to any strategy.
//
// Constants the flag omits come from the binding's default configuration.
// The result is clamped to the declared [Bounds] and validated; if a flag is
// missing or invalid, the last good policy stays in force, the problem is
// logged and counted in backoff_policy_errors_total{reason}. Flags are read
// again on PROVIDER_READY and PROVIDER_CONFIGURATION_CHANGED events.
package flagbind

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
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

// Config configures a [Binding].
type Config struct {
	// Client evaluates the flags. Required.
	Client *openfeature.Client
	// Targets receive every new policy. At least one is required.
	Targets []Target
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
	// the clamped policy was applied.
	ReasonClamped = "clamped"
)

// Error is returned by [Binding.Reload] when the flags are not usable; the
// last good policy stays in force.
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
	defaults      backoff.Config
	bounds        Bounds
	strategyFlag  string
	constantsFlag string
	evalCtx       openfeature.EvaluationContext
	logger        *slog.Logger
	metrics       *metrics

	mu      sync.Mutex
	current *backoff.Policy
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
	return b, nil
}

// Policy returns the policy in force: the last good one read from the
// flags, or the default.
func (b *Binding) Policy() *backoff.Policy {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.current
}

// Reload reads the flags now and, if they yield a valid policy different
// from the current one, hands it to the targets. On error the current policy
// stays in force; the error is logged, counted and returned as an *[Error].
func (b *Binding) Reload(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, clamped, err := b.evaluate(ctx)
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

// evaluate reads both flags and builds the policy they describe, returning
// the names of the constants it clamped.
func (b *Binding) evaluate(ctx context.Context) (*backoff.Policy, []string, error) {
	sd, err := b.client.StringValueDetails(ctx, b.strategyFlag, b.defaults.Strategy.String(), b.evalCtx)
	if err != nil {
		return nil, nil, b.evalError(b.strategyFlag, sd.ErrorCode, err)
	}
	strategy, err := backoff.ParseStrategy(sd.Value)
	if err != nil {
		return nil, nil, &Error{Flag: b.strategyFlag, Reason: ReasonInvalid, Err: err}
	}
	if !b.bounds.allows(strategy) {
		return nil, nil, &Error{Flag: b.strategyFlag, Reason: ReasonInvalid,
			Err: fmt.Errorf("strategy %s is not allowed by the bounds", strategy)}
	}
	cd, err := b.client.ObjectValueDetails(ctx, b.constantsFlag, nil, b.evalCtx)
	if err != nil {
		return nil, nil, b.evalError(b.constantsFlag, cd.ErrorCode, err)
	}
	invalid := func(err error) error {
		return &Error{Flag: b.constantsFlag, Reason: ReasonInvalid, Err: err}
	}
	cfg := b.defaults
	cfg.Strategy = strategy
	if cfg, err = applyConstants(cfg, cd.Value); err != nil {
		return nil, nil, invalid(err)
	}
	// Clamp what was set, normalize (filling in strategy defaults), then
	// clamp the defaults too.
	cfg, clamped := b.bounds.clamp(cfg)
	p, err := backoff.New(cfg)
	if err != nil {
		return nil, nil, invalid(err)
	}
	if b.bounds.check(p.Config()) != "" {
		cfg, more := b.bounds.clamp(p.Config())
		clamped = append(clamped, more...)
		if p, err = backoff.New(cfg); err != nil {
			return nil, nil, invalid(err)
		}
	}
	return p, clamped, nil
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
