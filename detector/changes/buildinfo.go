package changes

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/detector/internal/selector"
)

// RangeQuerier runs PromQL range queries. The Prometheus HTTP API client
// (detector/promapi) and the embedded engine (promembed) implement it.
type RangeQuerier interface {
	QueryRange(ctx context.Context, q string, r v1.Range) (model.Value, v1.Warnings, error)
}

// BuildInfo says where to see a component's version.
type BuildInfo struct {
	// Component names the component, e.g. "dten-gateway".
	Component string `yaml:"component"`
	// Metric is its build info metric, e.g. "dten_gateway_build_info".
	Metric string `yaml:"metric"`
	// Selector narrows the series, e.g. {job="shop"}.
	Selector string `yaml:"selector"`
	// VersionLabel is the label holding the version; default "version".
	VersionLabel string `yaml:"version_label"`
	// Scope holds the slice labels a version change touches.
	Scope map[string]string `yaml:"scope"`
}

type buildInfoQuery struct {
	spec  BuildInfo
	query string
}

// BuildInfoSource reports version changes seen in build info metrics.
type BuildInfoSource struct {
	q       RangeQuerier
	step    time.Duration
	queries []buildInfoQuery
}

// NewBuildInfoSource watches specs at the given resolution: a version is
// seen at most one step after it appears.
func NewBuildInfoSource(q RangeQuerier, step time.Duration, specs ...BuildInfo) (*BuildInfoSource, error) {
	if q == nil {
		return nil, errors.New("build info source: querier is nil")
	}
	if step <= 0 {
		return nil, fmt.Errorf("build info source: step %v must be positive", step)
	}
	s := &BuildInfoSource{q: q, step: step}
	for i, spec := range specs {
		if spec.Component == "" {
			return nil, fmt.Errorf("build_info[%d].component is empty", i)
		}
		if !model.LegacyValidation.IsValidMetricName(spec.Metric) {
			return nil, fmt.Errorf("build_info[%d].metric %q is not a valid metric name", i, spec.Metric)
		}
		if spec.VersionLabel == "" {
			spec.VersionLabel = "version"
		}
		if !model.LegacyValidation.IsValidLabelName(spec.VersionLabel) {
			return nil, fmt.Errorf("build_info[%d].version_label %q is not a valid label name", i, spec.VersionLabel)
		}
		inner, err := selector.Parse(spec.Selector)
		if err != nil {
			return nil, fmt.Errorf("build_info[%d].selector: %w", i, err)
		}
		spec.Scope = maps.Clone(spec.Scope)
		s.queries = append(s.queries, buildInfoQuery{
			spec:  spec,
			query: fmt.Sprintf("count by (%s) (%s%s)", spec.VersionLabel, spec.Metric, selector.With(inner)),
		})
	}
	return s, nil
}

// Queries returns the PromQL the source runs, for evidence and tests.
func (s *BuildInfoSource) Queries() []string {
	out := make([]string, len(s.queries))
	for i, q := range s.queries {
		out[i] = q.query
	}
	return out
}

// Changes returns the version changes in [from, to]: each time a version
// label value appears that was not present at the previous step with data,
// from the most common previous version to the new one. Versions present
// at the start of the range are the starting point, not changes. Query
// warnings are errors: a change hidden by a partial result must not go
// unseen.
func (s *BuildInfoSource) Changes(ctx context.Context, from, to time.Time) ([]Event, error) {
	if to.Before(from) {
		return nil, fmt.Errorf("build info: range end %v before start %v", to, from)
	}
	var out []Event
	r := v1.Range{Start: from.Add(-s.step), End: to, Step: s.step}
	for _, bq := range s.queries {
		val, warns, err := s.q.QueryRange(ctx, bq.query, r)
		if err != nil {
			return nil, fmt.Errorf("query %q: %w", bq.query, err)
		}
		if len(warns) > 0 {
			return nil, fmt.Errorf("query %q: warnings: %s", bq.query, strings.Join(warns, "; "))
		}
		m, ok := val.(model.Matrix)
		if !ok {
			return nil, fmt.Errorf("query %q: got %s, want a range vector", bq.query, val.Type())
		}
		out = append(out, versionChanges(bq, m, from)...)
	}
	return out, nil
}

func versionChanges(bq buildInfoQuery, m model.Matrix, from time.Time) []Event {
	// counts[t][version] = number of series.
	counts := map[model.Time]map[string]float64{}
	for _, ss := range m {
		v := string(ss.Metric[model.LabelName(bq.spec.VersionLabel)])
		for _, p := range ss.Values {
			if counts[p.Timestamp] == nil {
				counts[p.Timestamp] = map[string]float64{}
			}
			counts[p.Timestamp][v] += float64(p.Value)
		}
	}
	times := slices.Sorted(maps.Keys(counts))
	var out []Event
	var prev map[string]float64
	for _, t := range times {
		cur := counts[t]
		if prev != nil {
			var fresh []string
			for v := range cur {
				if _, ok := prev[v]; !ok {
					fresh = append(fresh, v)
				}
			}
			sort.Strings(fresh)
			at := t.Time().UTC()
			for _, v := range fresh {
				if at.Before(from) {
					continue
				}
				out = append(out, Event{
					ID:        NewID(KindVersion, bq.spec.Component, at),
					Time:      at,
					Kind:      KindVersion,
					Component: bq.spec.Component,
					From:      dominant(prev),
					To:        v,
					Scope:     maps.Clone(bq.spec.Scope),
					Sources:   []string{"prometheus:" + bq.spec.Metric},
				})
			}
		}
		prev = cur
	}
	return out
}

// dominant returns the version with the most series (ties: the greatest
// string, usually the newest).
func dominant(c map[string]float64) string {
	best, n := "", -1.0
	for _, v := range slices.Sorted(maps.Keys(c)) {
		if c[v] >= n {
			best, n = v, c[v]
		}
	}
	return best
}
