package sim

import (
	"context"
	"fmt"
	"math"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// Point is one value of a series.
type Point struct {
	T time.Time `json:"t"`
	V float64   `json:"v"`
}

// Series are the run's key signals at one-minute resolution, computed by
// PromQL on the embedded engine from the scraped data. Missing values
// (scrape gaps, no traffic) are NaN.
type Series struct {
	// Step is the resolution.
	Step time.Duration `json:"step"`
	// Latency is the SLO quantile of the SLO endpoint over the SLO window,
	// from the native histogram.
	Latency []Point `json:"latency"`
	// OtherLatency is the same quantile of the other endpoints together
	// (those not calling the upstream), which should be unaffected.
	OtherLatency []Point `json:"other_latency"`
	// RetryRatio is retries per logical call to the upstream.
	RetryRatio []Point `json:"retry_ratio"`
	// ErrorRatio is the share of 5xx responses of the SLO endpoint.
	ErrorRatio []Point `json:"error_ratio"`
	// NewShare is the share of pods on the policy's new variant.
	NewShare []Point `json:"new_share"`
}

// Expressions behind Series, for a scenario.
func seriesQueries(sc *Scenario) map[string]string {
	s := sc.Truth.SLO
	job, up := sc.Service.Job, sc.Upstream.Name
	w := model.Duration(time.Duration(s.Window)).String()
	newVariant := "decorrelated"
	if svc, ok := sc.Policy.Service(job); ok {
		newVariant = svc.Flags.Strategy.NewVariant
	}
	return map[string]string{
		"latency":       fmt.Sprintf(`histogram_quantile(%g, sum(rate(http_request_duration_seconds{job=%q,endpoint=%q}[%s])))`, s.Quantile, job, s.Endpoint, w),
		"other_latency": fmt.Sprintf(`histogram_quantile(%g, sum(rate(http_request_duration_seconds{job=%q,endpoint!=%q}[%s])))`, s.Quantile, job, s.Endpoint, w),
		"retry_ratio":   fmt.Sprintf(`sum(rate(backoff_retries_total{job=%q,upstream=%q}[%s])) / sum(rate(backoff_calls_total{job=%q,upstream=%q}[%s]))`, job, up, w, job, up, w),
		"error_ratio":   fmt.Sprintf(`sum(rate(http_requests_total{job=%q,endpoint=%q,code=~"5.."}[%s]) or 0 * rate(http_requests_total{job=%q,endpoint=%q}[%s])) / sum(rate(http_requests_total{job=%q,endpoint=%q}[%s]))`, job, s.Endpoint, w, job, s.Endpoint, w, job, s.Endpoint, w),
		"new_share":     fmt.Sprintf(`(sum(backoff_policy_info{job=%q,strategy=%q}) or vector(0)) / sum(backoff_policy_info{job=%q})`, job, newVariant, job),
	}
}

// measureSeries queries the series at one-minute steps from the first full
// SLO window to end.
func measureSeries(ctx context.Context, q Querier, sc *Scenario, end time.Time) (Series, error) {
	step := time.Minute
	from := sc.Start.Add(time.Duration(sc.Truth.SLO.Window))
	out := Series{Step: step}
	qs := seriesQueries(sc)
	for name, dst := range map[string]*[]Point{
		"latency": &out.Latency, "other_latency": &out.OtherLatency, "retry_ratio": &out.RetryRatio,
		"error_ratio": &out.ErrorRatio, "new_share": &out.NewShare,
	} {
		pts, err := rangeSeries(ctx, q, qs[name], from, end, step)
		if err != nil {
			return out, fmt.Errorf("measure %s: %w", name, err)
		}
		*dst = pts
	}
	return out, nil
}

// rangeSeries evaluates a query returning at most one series over [from,
// to] and returns one point per step, NaN where it had no value.
func rangeSeries(ctx context.Context, q Querier, expr string, from, to time.Time, step time.Duration) ([]Point, error) {
	var pts []Point
	for t := from; !t.After(to); t = t.Add(step) {
		pts = append(pts, Point{T: t, V: math.NaN()})
	}
	if len(pts) == 0 {
		return pts, nil
	}
	v, _, err := q.QueryRange(ctx, expr, v1.Range{Start: from, End: to, Step: step})
	if err != nil {
		return nil, err
	}
	m, ok := v.(model.Matrix)
	if !ok {
		return nil, fmt.Errorf("range query returned %s, not a matrix", v.Type())
	}
	if len(m) > 1 {
		return nil, fmt.Errorf("range query returned %d series, want at most 1", len(m))
	}
	for _, ss := range m {
		for _, p := range ss.Values {
			i := int((p.Timestamp.Time().Sub(from) + step/2) / step)
			if i >= 0 && i < len(pts) {
				pts[i].V = float64(p.Value)
			}
		}
	}
	return pts, nil
}

// brownoutWindows returns the scenario's brown-outs.
func brownoutWindows(sc *Scenario) [][2]time.Time {
	var out [][2]time.Time
	for _, e := range sc.Events {
		if e.Brownout != nil {
			from := sc.At(e.At)
			out = append(out, [2]time.Time{from, from.Add(time.Duration(e.Brownout.Duration))})
		}
	}
	return out
}

// measureBrownouts returns the checkout success ratio in every brown-out
// that ended by end.
func measureBrownouts(ctx context.Context, q Querier, sc *Scenario, end time.Time) ([]BrownoutResult, error) {
	job, ep := sc.Service.Job, sc.Truth.SLO.Endpoint
	var out []BrownoutResult
	for _, w := range brownoutWindows(sc) {
		if w[1].After(end) {
			continue
		}
		rng := model.Duration(w[1].Sub(w[0])).String()
		expr := fmt.Sprintf(`sum(increase(http_requests_total{job=%q,endpoint=%q,code=~"2.."}[%s])) / sum(increase(http_requests_total{job=%q,endpoint=%q}[%s]))`,
			job, ep, rng, job, ep, rng)
		v, _, err := q.Query(ctx, expr, w[1])
		if err != nil {
			return nil, fmt.Errorf("measure brown-out: %w", err)
		}
		res := BrownoutResult{From: w[0], To: w[1], Success: math.NaN()}
		if vec, ok := v.(model.Vector); ok && len(vec) == 1 {
			res.Success = float64(vec[0].Value)
		}
		out = append(out, res)
	}
	return out, nil
}
