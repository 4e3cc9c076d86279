package loop

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the loop's own metrics, shared by the loops of all services.
type Metrics struct {
	duration  prometheus.Histogram
	findings  *prometheus.CounterVec
	cycles    *prometheus.CounterVec
	lastOK    prometheus.Gauge
	sli       *prometheus.GaugeVec
	objective *prometheus.GaugeVec
	lastCost  *prometheus.GaugeVec
}

// NewMetrics registers the loop's metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tailguard_loop_duration_seconds",
			Help:    "Wall time of one control-loop cycle: query, detect, attribute, decide, act.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10),
		}),
		findings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailguard_findings_total",
			Help: "Findings produced by the detector, by verdict.",
		}, []string{"verdict"}),
		cycles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailguard_cycles_total",
			Help: "Control-loop cycles, by service and result (ok, error).",
		}, []string{"service", "result"}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tailguard_last_successful_evaluation_timestamp_seconds",
			Help: "Unix time of the last control-loop cycle that completed without error.",
		}),
		sli: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tailguard_slo_sli",
			Help: "The SLI of each SLO as last read: seconds for latency, a fraction for ratios; NaN when unusable.",
		}, []string{"service", "slo"}),
		objective: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tailguard_slo_objective",
			Help: "The objective of each SLO in SLI units.",
		}, []string{"service", "slo"}),
		lastCost: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tailguard_last_cycle_query_cost",
			Help: "What the last cycle's queries cost the metrics backend, by service and measure: queries, errors, series and samples returned, seconds of query time.",
		}, []string{"service", "measure"}),
	}
	for _, v := range []string{"regressed", "healthy", "inconclusive"} {
		m.findings.WithLabelValues(v)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.duration, m.findings, m.cycles, m.lastOK, m.sli, m.objective, m.lastCost} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register loop metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *Metrics) observe(res Result, err error) {
	if m == nil {
		return
	}
	m.duration.Observe(res.Duration.Seconds())
	c := res.Cost.Total
	for measure, v := range map[string]float64{
		"queries": float64(c.Queries), "errors": float64(c.Errors), "series": float64(c.Series),
		"samples": float64(c.Samples), "seconds": c.Seconds,
	} {
		m.lastCost.WithLabelValues(res.Service, measure).Set(v)
	}
	if err != nil {
		m.cycles.WithLabelValues(res.Service, "error").Inc()
		return
	}
	m.cycles.WithLabelValues(res.Service, "ok").Inc()
	m.lastOK.SetToCurrentTime()
	if res.Report != nil {
		for _, f := range res.Report.Findings {
			m.findings.WithLabelValues(string(f.Verdict)).Inc()
		}
	}
	for _, a := range res.Observation.Assessments {
		m.sli.WithLabelValues(res.Service, a.SLO).Set(a.Value)
		m.objective.WithLabelValues(res.Service, a.SLO).Set(a.Objective)
	}
}
