// Package querycost meters what tailguard's queries cost the metrics
// backend: how many queries, how many series and samples came back, and how
// long they took, by service and by signal.
//
// A Meter wraps the querier of one service. Callers name the signal a query
// serves with WithSignal; a cycle that wants its own total opens a Tally
// with WithTally, and every metered query made under that context adds to
// it. The counters are exported for dashboards and capacity planning; the
// tally is what the status page shows of the last cycle.
package querycost

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
)

// Querier runs PromQL (detector.Querier has the same methods).
type Querier interface {
	Query(ctx context.Context, q string, ts time.Time) (model.Value, v1.Warnings, error)
	QueryRange(ctx context.Context, q string, r v1.Range) (model.Value, v1.Warnings, error)
}

// Unnamed is the signal of a query made without WithSignal.
const Unnamed = "other"

type signalKey struct{}
type tallyKey struct{}

// WithSignal names the signal (a detector signal, "slo:<name>", "changes",
// ...) the queries made under ctx serve.
func WithSignal(ctx context.Context, signal string) context.Context {
	return context.WithValue(ctx, signalKey{}, signal)
}

// SignalOf returns the signal named by WithSignal, or Unnamed.
func SignalOf(ctx context.Context) string {
	if s, ok := ctx.Value(signalKey{}).(string); ok && s != "" {
		return s
	}
	return Unnamed
}

// Cost is what some queries cost.
type Cost struct {
	Queries int `json:"queries"`
	// Errors counts the queries that failed.
	Errors int `json:"errors,omitempty"`
	// Series and Samples are what the results held: a range vector's
	// points, an instant vector's samples, a scalar as one.
	Series  int `json:"series"`
	Samples int `json:"samples"`
	// Seconds is the summed wall time of the queries (they may overlap).
	Seconds float64 `json:"seconds"`
}

func (c *Cost) add(o Cost) {
	c.Queries += o.Queries
	c.Errors += o.Errors
	c.Series += o.Series
	c.Samples += o.Samples
	c.Seconds += o.Seconds
}

// Summary is a tally's content: the total and the cost per signal.
type Summary struct {
	Total    Cost            `json:"total"`
	BySignal map[string]Cost `json:"by_signal"`
}

// Signals returns the signal names in order.
func (s Summary) Signals() []string { return slices.Sorted(maps.Keys(s.BySignal)) }

// Tally accumulates the cost of the metered queries made under its
// context. It is safe for concurrent use.
type Tally struct {
	mu sync.Mutex
	s  Summary
}

// WithTally returns a context whose metered queries add to the returned
// tally (and to every tally of the contexts it derives from).
func WithTally(ctx context.Context) (context.Context, *Tally) {
	t := &Tally{s: Summary{BySignal: map[string]Cost{}}}
	parents, _ := ctx.Value(tallyKey{}).([]*Tally)
	return context.WithValue(ctx, tallyKey{}, append(slices.Clip(parents), t)), t
}

// Summary returns a copy of what the tally holds.
func (t *Tally) Summary() Summary {
	t.mu.Lock()
	defer t.mu.Unlock()
	return Summary{Total: t.s.Total, BySignal: maps.Clone(t.s.BySignal)}
}

func (t *Tally) add(signal string, c Cost) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.s.Total.add(c)
	s := t.s.BySignal[signal]
	s.add(c)
	t.s.BySignal[signal] = s
}

// Meter exports query costs as metrics.
type Meter struct {
	queries  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	series   *prometheus.CounterVec
	samples  *prometheus.CounterVec
}

// NewMeter registers the query-cost metrics with reg (nil registers
// nothing).
func NewMeter(reg prometheus.Registerer) (*Meter, error) {
	m := &Meter{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailguard_signal_queries_total",
			Help: "Queries sent to the metrics backend, by service, signal, type (instant, range) and result (ok, error).",
		}, []string{"service", "signal", "type", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tailguard_signal_query_duration_seconds",
			Help:    "Wall time of one query to the metrics backend, by service and signal.",
			Buckets: prometheus.ExponentialBuckets(0.001, 3, 10),
		}, []string{"service", "signal"}),
		series: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailguard_signal_query_series_total",
			Help: "Series returned by the metrics backend, by service and signal.",
		}, []string{"service", "signal"}),
		samples: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailguard_signal_query_samples_total",
			Help: "Samples (points) returned by the metrics backend, by service and signal.",
		}, []string{"service", "signal"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.queries, m.duration, m.series, m.samples} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register query cost metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Wrap returns q metered for service.
func (m *Meter) Wrap(service string, q Querier) Querier {
	return &metered{m: m, service: service, q: q, now: time.Now}
}

type metered struct {
	m       *Meter
	service string
	q       Querier
	now     func() time.Time
}

func (w *metered) Query(ctx context.Context, q string, ts time.Time) (model.Value, v1.Warnings, error) {
	start := w.now()
	v, warn, err := w.q.Query(ctx, q, ts)
	w.record(ctx, "instant", start, v, err)
	return v, warn, err
}

func (w *metered) QueryRange(ctx context.Context, q string, r v1.Range) (model.Value, v1.Warnings, error) {
	start := w.now()
	v, warn, err := w.q.QueryRange(ctx, q, r)
	w.record(ctx, "range", start, v, err)
	return v, warn, err
}

func (w *metered) record(ctx context.Context, typ string, start time.Time, v model.Value, err error) {
	signal := SignalOf(ctx)
	c := Cost{Queries: 1, Seconds: w.now().Sub(start).Seconds()}
	result := "ok"
	if err != nil {
		c.Errors, result = 1, "error"
	} else {
		c.Series, c.Samples = Size(v)
	}
	if w.m != nil {
		w.m.queries.WithLabelValues(w.service, signal, typ, result).Inc()
		w.m.duration.WithLabelValues(w.service, signal).Observe(c.Seconds)
		w.m.series.WithLabelValues(w.service, signal).Add(float64(c.Series))
		w.m.samples.WithLabelValues(w.service, signal).Add(float64(c.Samples))
	}
	tallies, _ := ctx.Value(tallyKey{}).([]*Tally)
	for _, t := range tallies {
		t.add(signal, c)
	}
}

// Size returns the series and samples a query result holds.
func Size(v model.Value) (series, samples int) {
	switch v := v.(type) {
	case model.Matrix:
		for _, s := range v {
			samples += len(s.Values) + len(s.Histograms)
		}
		return len(v), samples
	case model.Vector:
		return len(v), len(v)
	case *model.Scalar, *model.String:
		return 0, 1
	}
	return 0, 0
}
