package flagbind

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tailguard/tailguard/backoff"
)

// metrics of a binding:
//
//	backoff_policy_errors_total{reason}  flag values rejected (last good policy kept) or clamped
//	backoff_policy_constant{constant}    constants of the policy in force, and retry_budget if budgets are bound
//	backoff_policy_info{strategy}        1 for the strategy in force
type metrics struct {
	errors   *prometheus.CounterVec
	constant *prometheus.GaugeVec
	info     *prometheus.GaugeVec
	mu       sync.Mutex // orders Reset+Set of info
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backoff_policy_errors_total",
			Help: "Backoff flag evaluations whose result was rejected (missing, invalid, evaluation; the last good policy was kept) or clamped to bounds.",
		}, []string{"reason"}),
		constant: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "backoff_policy_constant",
			Help: "Constants of the backoff policy in force (base_seconds, cap_seconds, multiplier, jitter, max_attempts, max_elapsed_seconds; 0 means unbounded for the max_ constants) and retry_budget, the ratio of the first bound retry budget.",
		}, []string{"constant"}),
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "backoff_policy_info",
			Help: "Strategy of the backoff policy in force (value 1).",
		}, []string{"strategy"}),
	}
	for _, r := range []string{ReasonMissing, ReasonInvalid, ReasonEvaluation, ReasonClamped} {
		m.errors.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.errors, m.constant, m.info} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register backoff policy metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) setPolicy(p *backoff.Policy) {
	c := p.Config()
	m.constant.WithLabelValues("base_seconds").Set(c.Base.Seconds())
	m.constant.WithLabelValues("cap_seconds").Set(c.Cap.Seconds())
	m.constant.WithLabelValues("multiplier").Set(c.Multiplier)
	m.constant.WithLabelValues("jitter").Set(c.Jitter)
	m.constant.WithLabelValues("max_attempts").Set(float64(c.MaxAttempts))
	m.constant.WithLabelValues("max_elapsed_seconds").Set(c.MaxElapsed.Seconds())
	m.mu.Lock()
	m.info.Reset()
	m.info.WithLabelValues(c.Strategy.String()).Set(1)
	m.mu.Unlock()
}
