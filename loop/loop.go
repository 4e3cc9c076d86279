package loop

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/tailguard/tailguard/controller"
	"github.com/tailguard/tailguard/controller/policy"
	"github.com/tailguard/tailguard/detector"
	"github.com/tailguard/tailguard/detector/changes"
	"github.com/tailguard/tailguard/flags"
	"github.com/tailguard/tailguard/querycost"
)

// DefaultLookback is how long after a change the loop keeps analysing from
// it.
const DefaultLookback = 6 * time.Hour

// Analyzer runs the detector.
type Analyzer interface {
	Analyze(ctx context.Context, req detector.Request) (*detector.Report, error)
}

// FlagReader reads the state of the strategy and constants flags.
type FlagReader interface {
	Read(ctx context.Context) (controller.FlagState, error)
}

// Stepper decides on an observation and acts according to the service's
// mode; *controller.Controller implements it.
type Stepper interface {
	Step(ctx context.Context, obs controller.Observation, now time.Time) (controller.Decision, error)
}

// Config configures a Loop.
type Config struct {
	// Service is the service's policy. Required.
	Service *policy.Service
	// DetectorConfig is the validated detector configuration (for the
	// signals' scopes); Detector runs it. Required.
	DetectorConfig detector.Config
	Detector       Analyzer
	// Changes lists the candidate changes; the loop analyses from the
	// earliest of the lookback window. Use OwnChangesFiltered to leave out
	// the controller's own writes. Required.
	Changes detector.ChangeSource
	// Querier reads the SLIs and retry statistics. Required.
	Querier detector.Querier
	// Flags reads the flag state; Controller decides and writes. Required.
	Flags      FlagReader
	Controller Stepper
	// SLI names the metrics of the SLI queries.
	SLI SLIConfig
	// Lookback: changes older than this are no longer analysed. Default
	// DefaultLookback.
	Lookback time.Duration
	// Tracer traces cycles; nil traces nothing.
	Tracer trace.Tracer
	// Metrics records cycles; nil records nothing.
	Metrics *Metrics
	// Logger logs cycles; nil logs nothing.
	Logger *slog.Logger
}

// Result is what one cycle saw and did.
type Result struct {
	Service     string                 `json:"service"`
	At          time.Time              `json:"at"`
	Trigger     string                 `json:"trigger"`
	Readings    []Reading              `json:"readings"`
	Changes     []changes.Event        `json:"changes"`
	Report      *detector.Report       `json:"report,omitempty"`
	Observation controller.Observation `json:"observation"`
	Decision    controller.Decision    `json:"decision"`
	Duration    time.Duration          `json:"duration"`
	// Cost is what the cycle's queries cost the metrics backend (metered
	// queriers only; see package querycost).
	Cost  querycost.Summary `json:"query_cost"`
	Error string            `json:"error,omitempty"`
}

// Loop runs cycles for one service. Cycle is safe for concurrent use; cycles
// of one Loop are serialised.
type Loop struct {
	cfg    Config
	scopes map[string]signalScope
	sli    []sliQuery
	tracer trace.Tracer
	log    *slog.Logger

	run  sync.Mutex // serialises cycles
	mu   sync.Mutex
	last *Result
}

type sliQuery struct {
	slo    policy.SLO
	expr   string
	window time.Duration
}

// New validates cfg and returns a Loop.
func New(cfg Config) (*Loop, error) {
	switch {
	case cfg.Service == nil:
		return nil, errors.New("loop: service policy is required")
	case cfg.Detector == nil:
		return nil, errors.New("loop: detector is required")
	case cfg.Changes == nil:
		return nil, errors.New("loop: change source is required")
	case cfg.Querier == nil:
		return nil, errors.New("loop: querier is required")
	case cfg.Flags == nil:
		return nil, errors.New("loop: flag reader is required")
	case cfg.Controller == nil:
		return nil, errors.New("loop: controller is required")
	case cfg.Lookback < 0:
		return nil, fmt.Errorf("loop: lookback %s is negative", cfg.Lookback)
	}
	if err := cfg.SLI.Validate(); err != nil {
		return nil, fmt.Errorf("loop: %w", err)
	}
	if cfg.Lookback == 0 {
		cfg.Lookback = DefaultLookback
	}
	sc, err := scopes(cfg.DetectorConfig)
	if err != nil {
		return nil, fmt.Errorf("loop: %w", err)
	}
	l := &Loop{cfg: cfg, scopes: sc, tracer: cfg.Tracer, log: cfg.Logger}
	if l.tracer == nil {
		l.tracer = noop.NewTracerProvider().Tracer("")
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	l.log = l.log.With("service", cfg.Service.Name)
	for _, slo := range cfg.Service.SLOs {
		q, err := SLIQuery(cfg.SLI, cfg.Service.Name, slo)
		if err != nil {
			return nil, fmt.Errorf("loop: %w", err)
		}
		l.sli = append(l.sli, sliQuery{slo: slo, expr: q, window: time.Duration(slo.Objective.Window)})
	}
	return l, nil
}

// Service returns the service's name.
func (l *Loop) Service() string { return l.cfg.Service.Name }

// Last returns the result of the latest cycle.
func (l *Loop) Last() (Result, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		return Result{}, false
	}
	return *l.last, true
}

// Cycle runs one cycle at now. trigger says why ("interval", "alert
// <name>", "manual"). On error the result says how far the cycle got, and
// no decision was taken.
func (l *Loop) Cycle(ctx context.Context, now time.Time, trigger string) (Result, error) {
	l.run.Lock()
	defer l.run.Unlock()
	start := time.Now()
	res := Result{Service: l.cfg.Service.Name, At: now, Trigger: trigger}
	ctx, span := l.tracer.Start(ctx, "tailguard.cycle", trace.WithAttributes(
		attribute.String("service", res.Service), attribute.String("trigger", trigger)))
	ctx, tally := querycost.WithTally(ctx)
	err := l.cycle(ctx, now, &res)
	res.Duration = time.Since(start)
	res.Cost = tally.Summary()
	if err != nil {
		res.Error = err.Error()
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		l.log.Warn("cycle ended early", "trigger", trigger, "err", err)
	} else {
		l.log.Debug("cycle done", "trigger", trigger, "decision", res.Decision.Kind, "reason", res.Decision.Reason)
	}
	span.End()
	l.cfg.Metrics.observe(res, err)
	l.mu.Lock()
	l.last = &res
	l.mu.Unlock()
	return res, err
}

func (l *Loop) cycle(ctx context.Context, now time.Time, res *Result) error {
	svc := l.cfg.Service

	// query: SLIs, retry statistics, flag state, changes.
	qctx, span := l.tracer.Start(ctx, "query")
	res.Readings = l.readSLIs(qctx, now)
	retries, err := l.readRetries(querycost.WithSignal(qctx, "retries"), now)
	if err == nil {
		res.Observation.Flags, err = l.cfg.Flags.Read(qctx)
		if err != nil {
			err = fmt.Errorf("read flags: %w", err)
		}
	}
	if err == nil {
		res.Changes, err = l.cfg.Changes.Changes(querycost.WithSignal(qctx, "changes"), now.Add(-l.cfg.Lookback), now)
		if err != nil {
			err = fmt.Errorf("list changes: %w", err)
		}
	}
	endSpan(span, err)
	if err != nil {
		return err
	}

	// detect: analyse from the earliest change of the lookback window.
	if len(res.Changes) > 0 {
		from := res.Changes[0].Time
		for _, e := range res.Changes[1:] {
			if e.Time.Before(from) {
				from = e.Time
			}
		}
		dctx, span := l.tracer.Start(ctx, "detect", trace.WithAttributes(attribute.Int("changes", len(res.Changes))))
		if now.Sub(from) >= time.Duration(l.cfg.DetectorConfig.Step) {
			res.Report, err = l.cfg.Detector.Analyze(dctx, detector.Request{From: from, To: now})
			if err != nil {
				err = fmt.Errorf("analyze: %w", err)
			}
		}
		endSpan(span, err)
		if err != nil {
			return err
		}
	}

	// attribute: findings and their causes onto the SLOs.
	_, span = l.tracer.Start(ctx, "attribute")
	res.Observation.Service = svc.Name
	res.Observation.Retries = retries
	res.Observation.Assessments = Assess(svc, res.Readings, res.Report, l.scopes)
	span.End()

	// decide and act.
	actx, span := l.tracer.Start(ctx, "decide")
	res.Decision, err = l.cfg.Controller.Step(actx, res.Observation, now)
	span.SetAttributes(attribute.String("decision", string(res.Decision.Kind)), attribute.String("rung", string(res.Decision.Rung)))
	endSpan(span, err)
	if err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	return nil
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// readSLIs reads each SLO's SLI now and one window earlier. Data problems
// land in Reading.Err; a failed query too: the SLO is then inconclusive.
func (l *Loop) readSLIs(ctx context.Context, now time.Time) []Reading {
	out := make([]Reading, 0, len(l.sli))
	for _, q := range l.sli {
		ctx := querycost.WithSignal(ctx, "slo:"+q.slo.Name)
		r := Reading{SLO: q.slo.Name, Query: q.expr, Previous: math.NaN()}
		r.Value, r.Err = l.instant(ctx, q.expr, now)
		if r.Err == nil {
			prev, err := l.instant(ctx, q.expr, now.Add(-q.window))
			if err == nil {
				r.Previous = prev
			}
		}
		out = append(out, r)
	}
	return out
}

func (l *Loop) instant(ctx context.Context, q string, at time.Time) (float64, error) {
	v, warns, err := l.cfg.Querier.Query(ctx, q, at)
	if err != nil {
		return math.NaN(), err
	}
	if len(warns) > 0 {
		return math.NaN(), fmt.Errorf("%w: %v", errWarnings, v1.Warnings(warns))
	}
	return scalarOf(v)
}

// readRetries reads the upstream's call and retry rates over the first
// SLO window (5m when there is no SLO). Missing or unusable data (no
// series, NaN, warnings) is not an error: the statistics then say zero
// calls and the model falls back to its policy.
func (l *Loop) readRetries(ctx context.Context, now time.Time) (controller.RetryStats, error) {
	svc := l.cfg.Service
	st := controller.RetryStats{Upstream: svc.Upstream}
	if svc.Upstream == "" {
		return st, nil
	}
	w := 5 * time.Minute
	if len(l.sli) > 0 {
		w = l.sli[0].window
	}
	cq, rq, eq := RetryQueries(l.cfg.SLI, svc.Name, svc.Upstream, w)
	for _, x := range []struct {
		q   string
		dst *float64
	}{{cq, &st.Calls}, {rq, &st.Retries}, {eq, &st.Exhausted}} {
		v, err := l.instant(ctx, x.q, now)
		switch {
		case err == nil:
			*x.dst = v
		case errors.Is(err, errNoData), errors.Is(err, errNaN), errors.Is(err, errWarnings):
			*x.dst = 0
		default:
			return st, fmt.Errorf("retry statistics: %w", err)
		}
	}
	return st, nil
}

// OwnChangesFiltered drops the changes the controller itself made (journal
// entries by flags.ActorController) from src: they are the loop's
// responses, verified by the controller, not candidate causes.
func OwnChangesFiltered(src detector.ChangeSource) detector.ChangeSource {
	return ownFilter{src}
}

type ownFilter struct{ src detector.ChangeSource }

func (f ownFilter) Changes(ctx context.Context, from, to time.Time) ([]changes.Event, error) {
	evs, err := f.src.Changes(ctx, from, to)
	if err != nil {
		return nil, err
	}
	out := evs[:0:0]
	for _, e := range evs {
		if e.Kind == changes.KindFlag && e.Actor == flags.ActorController {
			continue
		}
		out = append(out, e)
	}
	return out, nil
}
