package controller

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the controller's tailguard_* metrics.
type metrics struct {
	actions *prometheus.CounterVec
	tuned   *prometheus.GaugeVec
	budget  *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailguard_actions_total",
			Help: "Controller actions by rung (tune, shrink, flip, escalate, restore, revert) and result (applied, duplicate, failed, proposed, observed, notified).",
		}, []string{"rung", "result"}),
		tuned: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tailguard_tuned_constant",
			Help: "Backoff constants last written by the controller (base_seconds, cap_seconds, multiplier, jitter, max_attempts, retry_budget).",
		}, []string{"service", "constant"}),
		budget: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tailguard_action_budget_remaining",
			Help: "Flag writes the action budget still allows in the current rolling hour.",
		}, []string{"service"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.actions, m.tuned, m.budget} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) setTuned(service string, k Constants) {
	for name, v := range map[string]float64{
		"base_seconds": k.Base.Seconds(), "cap_seconds": k.Cap.Seconds(), "multiplier": k.Multiplier,
		"jitter": k.Jitter, "max_attempts": float64(k.MaxAttempts), "retry_budget": k.RetryBudget,
	} {
		m.tuned.WithLabelValues(service, name).Set(v)
	}
}
