// Package baseline implements the guards tailguard is compared with, all
// evaluated by the same embedded PromQL engine over the same scraped data:
//
//   - a static threshold alert, "p99 above the SLO for 5m";
//   - the SRE workbook's multi-window, multi-burn-rate alerts, from the
//     rule files tailguard ships (package alerts), recording rules
//     included;
//   - a fixed-window canary judge in the style of Kayenta: per-minute
//     values after a change against those before it, with a one-sided
//     Mann–Whitney U test;
//   - revert-on-alert in the style of Flagger and Argo Rollouts, which the
//     simulator runs online because it acts: on the first static-threshold
//     alert it flips the strategy flag back.
//
// The detect-only guards do not attribute: they report when they would
// have paged.
package baseline

import (
	"context"
	"fmt"
	"math"
	"sort"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// Querier runs PromQL; *promembed.DB implements it.
type Querier interface {
	Query(ctx context.Context, q string, ts time.Time) (model.Value, v1.Warnings, error)
	QueryRange(ctx context.Context, q string, r v1.Range) (model.Value, v1.Warnings, error)
}

// Episode is a period in which an alert fired. End is zero if it still
// fired at the end of the evaluation.
type Episode struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end,omitzero"`
	// Label says which alert or rule fired, e.g. "TailLatencyBudgetBurn (critical)".
	Label string `json:"label"`
}

// Rule is an alerting rule: it is active at a time when Expr returns any
// series, and fires once it has been active continuously for For.
type Rule struct {
	Name string
	Expr string
	For  time.Duration
}

// Evaluate evaluates the rule at every step in [from, to] as a rule
// manager would, and returns its firing episodes.
func (r Rule) Evaluate(ctx context.Context, q Querier, from, to time.Time, step time.Duration) ([]Episode, error) {
	times, active, err := activeSteps(ctx, q, r.Expr, from, to, step, nil)
	if err != nil {
		return nil, fmt.Errorf("rule %s: %w", r.Name, err)
	}
	eps := Episodes(times, active, r.For)
	for i := range eps {
		eps[i].Label = r.Name
	}
	return eps, nil
}

// Active reports whether the rule's expression returns anything at t.
func (r Rule) Active(ctx context.Context, q Querier, t time.Time) (bool, error) {
	v, _, err := q.Query(ctx, r.Expr, t)
	if err != nil {
		return false, fmt.Errorf("rule %s: %w", r.Name, err)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return false, fmt.Errorf("rule %s: result is %s, not a vector", r.Name, v.Type())
	}
	for _, s := range vec {
		if !math.IsNaN(float64(s.Value)) || s.Histogram != nil {
			return true, nil
		}
	}
	return false, nil
}

// activeSteps evaluates expr over [from, to] and says at which steps it
// returned a series that keep accepts (nil keeps all).
func activeSteps(ctx context.Context, q Querier, expr string, from, to time.Time, step time.Duration, keep func(model.Metric) bool) ([]time.Time, []bool, error) {
	var times []time.Time
	for t := from; !t.After(to); t = t.Add(step) {
		times = append(times, t)
	}
	active := make([]bool, len(times))
	if len(times) == 0 {
		return times, active, nil
	}
	v, _, err := q.QueryRange(ctx, expr, v1.Range{Start: from, End: to, Step: step})
	if err != nil {
		return nil, nil, err
	}
	m, ok := v.(model.Matrix)
	if !ok {
		return nil, nil, fmt.Errorf("range query returned %s, not a matrix", v.Type())
	}
	for _, ss := range m {
		if keep != nil && !keep(ss.Metric) {
			continue
		}
		for _, p := range ss.Values {
			if math.IsNaN(float64(p.Value)) {
				continue
			}
			if i := stepIndex(from, step, p.Timestamp.Time()); i >= 0 && i < len(active) {
				active[i] = true
			}
		}
		for _, p := range ss.Histograms {
			if i := stepIndex(from, step, p.Timestamp.Time()); i >= 0 && i < len(active) {
				active[i] = true
			}
		}
	}
	return times, active, nil
}

func stepIndex(from time.Time, step time.Duration, t time.Time) int {
	d := t.Sub(from)
	if d < 0 {
		return -1
	}
	return int((d + step/2) / step)
}

// Episodes turns per-step activity into firing episodes with Prometheus'
// "for" semantics: an alert active since the step at activeAt fires at the
// first step t with t − activeAt ≥ forDur, and stops at the first inactive
// step. It is a pure function.
func Episodes(times []time.Time, active []bool, forDur time.Duration) []Episode {
	var out []Episode
	var activeAt time.Time
	firing := false
	for i, t := range times {
		if !active[i] {
			if firing {
				out[len(out)-1].End = t
			}
			activeAt, firing = time.Time{}, false
			continue
		}
		if activeAt.IsZero() {
			activeAt = t
		}
		if !firing && t.Sub(activeAt) >= forDur {
			firing = true
			out = append(out, Episode{Start: t})
		}
	}
	return out
}

// MergeEpisodes merges overlapping or touching episodes (of different
// rules), keeping the label of the earliest.
func MergeEpisodes(eps []Episode) []Episode {
	if len(eps) == 0 {
		return nil
	}
	s := append([]Episode(nil), eps...)
	sort.SliceStable(s, func(i, j int) bool { return s[i].Start.Before(s[j].Start) })
	out := []Episode{s[0]}
	for _, e := range s[1:] {
		last := &out[len(out)-1]
		if last.End.IsZero() || !e.Start.After(last.End) {
			if last.End.IsZero() || e.End.IsZero() {
				last.End = time.Time{}
			} else if e.End.After(last.End) {
				last.End = e.End
			}
			continue
		}
		out = append(out, e)
	}
	return out
}

// SLO names the latency objective the baselines guard and where its
// metrics are.
type SLO struct {
	Job      string
	Endpoint string
	Upstream string
	// Quantile and Threshold: the Quantile of the endpoint's latency over
	// Window stays at or below Threshold.
	Quantile  float64
	Threshold time.Duration
	Window    time.Duration
	// Native reads the quantile from the native histogram (services
	// without classic buckets).
	Native bool
}

func (s SLO) selector() string {
	return fmt.Sprintf(`{job=%q,endpoint=%q}`, s.Job, s.Endpoint)
}

// StaticThreshold is the alert most teams write first: the quantile from
// the classic histogram, over the SLO window, above the threshold for 5
// minutes.
func StaticThreshold(s SLO) Rule {
	if s.Native {
		return Rule{
			Name: "StaticLatencyThreshold",
			Expr: fmt.Sprintf(`histogram_quantile(%g, sum(rate(http_request_duration_seconds%s[%s]))) > %g`,
				s.Quantile, s.selector(), model.Duration(s.Window), s.Threshold.Seconds()),
			For: 5 * time.Minute,
		}
	}
	return Rule{
		Name: "StaticLatencyThreshold",
		Expr: fmt.Sprintf(`histogram_quantile(%g, sum by (le) (rate(http_request_duration_seconds_bucket%s[%s]))) > %g`,
			s.Quantile, s.selector(), model.Duration(s.Window), s.Threshold.Seconds()),
		For: 5 * time.Minute,
	}
}
