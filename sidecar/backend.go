package sidecar

import (
	"context"
	"errors"
	"sync"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/detector"
)

// backendHealth tracks whether the metrics backend answers, from the
// outcome of every query the sidecar sends. While it does not, the loop is
// blind: cycles fail, nothing is decided, and the status page, the
// findings API and tailguard_prometheus_up say so.
type backendHealth struct {
	now   func() time.Time
	gauge prometheus.Gauge

	mu      sync.Mutex
	known   bool
	up      bool
	everUp  bool
	since   time.Time // start of the current state
	lastErr string
}

// backendStatus is what the API and the status page show of it.
type backendStatus struct {
	Up    bool      `json:"up"`
	Since time.Time `json:"since,omitzero"`
	Error string    `json:"error,omitempty"`
}

func newBackendHealth(now func() time.Time) *backendHealth {
	return &backendHealth{now: now, gauge: prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tailguard_prometheus_up",
		Help: "1 if the last query to Prometheus was answered, 0 if it could not be sent or answered (the loop is blind and takes no action).",
	})}
}

// newKubeHealth tracks the Kubernetes API server the same way, from every
// call of the flag store in the cluster (kubernetes configured).
func newKubeHealth(now func() time.Time) *backendHealth {
	return &backendHealth{now: now, gauge: prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tailguard_kubernetes_up",
		Help: "1 if the last call to the Kubernetes API server was answered, 0 if not (no flag is read or written; readiness fails). Only with kubernetes configured.",
	})}
}

// observe records the outcome of one query. A query the server answered
// with an error of the query itself (bad data, execution) shows the
// server up; one cancelled by its caller says nothing.
func (h *backendHealth) observe(ctx context.Context, err error) {
	if err != nil && ctx.Err() != nil {
		return
	}
	up := err == nil
	var apiErr *v1.Error
	if errors.As(err, &apiErr) && (apiErr.Type == v1.ErrBadData || apiErr.Type == v1.ErrExec) {
		up = true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.known || h.up != up {
		h.known, h.up, h.since = true, up, h.now()
	}
	h.everUp = h.everUp || up
	h.lastErr = ""
	if !up {
		h.lastErr = err.Error()
	}
	if up {
		h.gauge.Set(1)
	} else {
		h.gauge.Set(0)
	}
}

// answeredOnce reports whether the backend has ever answered.
func (h *backendHealth) answeredOnce() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.everUp
}

// status returns the current state; before the first query the backend
// counts as not (yet) up.
func (h *backendHealth) status() backendStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.known {
		return backendStatus{Error: "no query answered yet"}
	}
	return backendStatus{Up: h.up, Since: h.since, Error: h.lastErr}
}

// watchedQuerier reports every query's outcome to a backendHealth.
type watchedQuerier struct {
	q detector.Querier
	h *backendHealth
}

func (w watchedQuerier) Query(ctx context.Context, q string, ts time.Time) (model.Value, v1.Warnings, error) {
	v, warn, err := w.q.Query(ctx, q, ts)
	w.h.observe(ctx, err)
	return v, warn, err
}

func (w watchedQuerier) QueryRange(ctx context.Context, q string, r v1.Range) (model.Value, v1.Warnings, error) {
	v, warn, err := w.q.QueryRange(ctx, q, r)
	w.h.observe(ctx, err)
	return v, warn, err
}
