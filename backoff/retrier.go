package backoff

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// RetrierConfig configures a [Retrier]. Only Policy is required.
type RetrierConfig struct {
	// Policy is the initial policy; see [Retrier.SetPolicy].
	Policy *Policy
	// Upstream names what is called, for the upstream label of the
	// metrics (for example "payments").
	Upstream string
	// Metrics records calls, attempts, retries, denials and delays. Nil
	// disables metrics.
	Metrics *Metrics
	// Budget limits retries across calls. Nil means no budget.
	Budget Budget
	// Tracer enables a span event per retry. Events go to the span in the
	// context passed to Do; if that span is not recording, the retrier
	// starts a "backoff.retry" span at the first retry, which then also
	// parents the remaining attempts. Nil disables tracing.
	Tracer trace.Tracer
	// Clock tells time and sleeps. Default [SystemClock].
	Clock Clock
	// Rand supplies the random input of [Policy.Delay]. It must be safe
	// for concurrent use. Default: the runtime's per-thread generator
	// (math/rand/v2's top-level functions), which takes no lock.
	Rand rand.Source
}

// Retrier runs operations under a [Policy], a [Budget] and a context. It is
// safe for concurrent use; the policy can be replaced while calls are in
// flight.
type Retrier struct {
	policy   atomic.Pointer[Policy]
	upstream string
	metrics  *Metrics
	ins      [numStrategies]atomic.Pointer[instruments]
	budget   Budget
	tracer   trace.Tracer
	clock    Clock
	rand     rand.Source
}

// runtimeRand is the default random source, backed by the runtime's
// lock-free per-thread ChaCha8 generator.
type runtimeRand struct{}

func (runtimeRand) Uint64() uint64 { return rand.Uint64() }

// NewRetrier returns a retrier configured by cfg.
func NewRetrier(cfg RetrierConfig) (*Retrier, error) {
	if cfg.Policy == nil {
		return nil, &ConfigError{Field: "policy", Err: errNilPolicy}
	}
	r := &Retrier{
		upstream: cfg.Upstream,
		metrics:  cfg.Metrics,
		budget:   cfg.Budget,
		tracer:   cfg.Tracer,
		clock:    cfg.Clock,
		rand:     cfg.Rand,
	}
	if r.clock == nil {
		r.clock = SystemClock{}
	}
	if r.rand == nil {
		r.rand = runtimeRand{}
	}
	r.policy.Store(cfg.Policy)
	if r.metrics != nil {
		// Resolve the initial strategy's series now, so they are exported
		// (at zero) before the first call.
		r.instruments(cfg.Policy.strategy)
	}
	return r, nil
}

// Policy returns the current policy.
func (r *Retrier) Policy() *Policy { return r.policy.Load() }

// SetPolicy replaces the policy atomically. Calls already in flight finish
// under the policy they started with; later calls use p. A nil p is
// ignored.
func (r *Retrier) SetPolicy(p *Policy) {
	if p != nil {
		r.policy.Store(p)
	}
}

// instruments returns the child metrics of strategy s, or nil without
// metrics. They are created on first use and cached.
func (r *Retrier) instruments(s Strategy) *instruments {
	if r.metrics == nil {
		return nil
	}
	slot := &r.ins[s]
	if ins := slot.Load(); ins != nil {
		return ins
	}
	ins := r.metrics.instruments(s, r.upstream)
	if !slot.CompareAndSwap(nil, ins) {
		return slot.Load()
	}
	return ins
}

// Do calls op until it succeeds and returns nil, or returns an *[Error]
// saying why it stopped. The context is checked before each attempt and
// while sleeping. An error wrapped with [Permanent] stops at once; one
// wrapped with [RetryAfter] raises the next delay to its minimum, capped by
// the policy's Cap.
//
// A call whose first attempt succeeds does not allocate.
func (r *Retrier) Do(ctx context.Context, op func(context.Context) error) error {
	p := r.policy.Load()
	ins := r.instruments(p.strategy)
	if r.budget != nil {
		r.budget.Begin()
	}
	var start time.Time
	if p.cfg.MaxElapsed > 0 {
		start = r.clock.Now()
	}
	var (
		prev     time.Duration // previous delay, for decorrelated jitter
		retryErr error         // error that led to the latest retry
		span     trace.Span    // span started by the retrier, if any
	)
	for attempt := 1; ; attempt++ {
		if ctx.Err() != nil {
			return r.stop(ctx, ins, span, ReasonContext, attempt-1, retryErr)
		}
		if ins != nil {
			ins.attempts.Inc()
			if attempt > 1 {
				ins.retries.Inc()
			}
		}
		var began time.Time
		if ins != nil {
			began = r.clock.Now()
		}
		err := op(ctx)
		if ins != nil {
			ins.attempt.Observe(r.clock.Now().Sub(began).Seconds())
		}
		if err == nil {
			if r.budget != nil {
				r.budget.Succeeded(retryErr)
			}
			if ins != nil {
				ins.calls[0].Inc()
			}
			if span != nil {
				span.End()
			}
			return nil
		}
		if pe := asPermanent(err); pe != nil {
			return r.stop(ctx, ins, span, ReasonPermanent, attempt, pe.Err)
		}
		if p.cfg.MaxAttempts > 0 && attempt >= p.cfg.MaxAttempts {
			return r.stop(ctx, ins, span, ReasonExhausted, attempt, err)
		}
		if ctx.Err() != nil {
			return r.stop(ctx, ins, span, ReasonContext, attempt, err)
		}
		delay := p.Delay(attempt, prev, r.rand.Uint64())
		prev = delay
		if ra, ok := retryAfter(err); ok && ra > delay {
			delay = min(ra, p.cfg.Cap)
		}
		if p.cfg.MaxElapsed > 0 && r.clock.Now().Sub(start)+delay > p.cfg.MaxElapsed {
			return r.stop(ctx, ins, span, ReasonMaxElapsed, attempt, err)
		}
		if r.budget != nil && !r.budget.Retry(err) {
			if ins != nil {
				ins.denied.Inc()
			}
			return r.stop(ctx, ins, span, ReasonBudgetDenied, attempt, err)
		}
		if ins != nil {
			ins.delay.Observe(delay.Seconds())
		}
		if r.tracer != nil {
			if span == nil && !trace.SpanFromContext(ctx).IsRecording() {
				ctx, span = r.tracer.Start(ctx, "backoff.retry", trace.WithAttributes(
					attribute.String("backoff.strategy", p.name),
					attribute.String("backoff.upstream", r.upstream),
				))
			}
			trace.SpanFromContext(ctx).AddEvent("backoff.retry", trace.WithAttributes(
				attribute.Int("backoff.attempt", attempt),
				attribute.Float64("backoff.delay_seconds", delay.Seconds()),
				attribute.String("backoff.reason", err.Error()),
			))
		}
		if r.clock.Sleep(ctx, delay) != nil {
			return r.stop(ctx, ins, span, ReasonContext, attempt, err)
		}
		retryErr = err
	}
}

// stop records the end of an unsuccessful call and builds its error.
func (r *Retrier) stop(ctx context.Context, ins *instruments, span trace.Span, reason Reason, attempts int, last error) error {
	e := &Error{Reason: reason, Attempts: attempts, Err: last}
	if reason == ReasonContext {
		e.Cause = context.Cause(ctx)
	}
	if ins != nil {
		ins.calls[reason].Inc()
	}
	if span != nil {
		span.SetAttributes(attribute.String("backoff.result", reason.String()))
		span.End()
	}
	return e
}

// Retry is [Retrier.Do] for operations that return a value. On failure it
// returns the value of the last attempt along with the *[Error].
func Retry[T any](ctx context.Context, r *Retrier, op func(context.Context) (T, error)) (T, error) {
	var v T
	err := r.Do(ctx, func(ctx context.Context) error {
		var err error
		v, err = op(ctx)
		return err
	})
	return v, err
}

// Stopped reports the reason of an error returned by [Retrier.Do], and
// false if err is not (or does not wrap) an *[Error].
func Stopped(err error) (Reason, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason, true
	}
	return 0, false
}
