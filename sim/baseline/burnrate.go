package baseline

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/tailguard/tailguard/promembed"
)

// Storage is a Querier that recording rules can write to; *promembed.DB
// implements it.
type Storage interface {
	Querier
	Appender(ctx context.Context) *promembed.Appender
}

// RuleSet is a set of Prometheus rule groups, such as tailguard's SLO
// recording rules and multi-window, multi-burn-rate alerts.
type RuleSet struct {
	Groups []rulefmt.RuleGroup
}

// LoadRules parses rule files from fsys with Prometheus' own parser and
// validation.
func LoadRules(fsys fs.FS, names ...string) (*RuleSet, error) {
	rs := &RuleSet{}
	p := parser.NewParser(parser.Options{})
	for _, name := range names {
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("read rules: %w", err)
		}
		groups, errs := rulefmt.Parse(b, false, model.UTF8Validation, p, slog.New(slog.DiscardHandler))
		if len(errs) > 0 {
			return nil, fmt.Errorf("rules %s: %w", name, errors.Join(errs...))
		}
		rs.Groups = append(rs.Groups, groups.Groups...)
	}
	if len(rs.Groups) == 0 {
		return nil, errors.New("rules: no rule groups")
	}
	return rs, nil
}

// Evaluate runs the rule groups at every step in [from, to], as a rule
// manager with that evaluation interval would: recording rules are
// evaluated in order and their results written to db under their record
// name and labels, so that later rules read them; alerting rules give
// firing episodes. Only alerts whose series match every label of match are
// reported. Each recording rule is evaluated over the whole range before
// the next, which is equivalent for rules that only read data and earlier
// rules.
func (rs *RuleSet) Evaluate(ctx context.Context, db Storage, from, to time.Time, step time.Duration, match map[string]string) ([]Episode, error) {
	var out []Episode
	for _, g := range rs.Groups {
		for _, r := range g.Rules {
			switch {
			case r.Record != "":
				if err := record(ctx, db, r, g.Labels, from, to, step); err != nil {
					return nil, fmt.Errorf("group %s: %w", g.Name, err)
				}
			case r.Alert != "":
				keep := func(m model.Metric) bool {
					for k, v := range match {
						if string(m[model.LabelName(k)]) != v {
							return false
						}
					}
					return true
				}
				times, active, err := activeSteps(ctx, db, r.Expr, from, to, step, keep)
				if err != nil {
					return nil, fmt.Errorf("group %s alert %s: %w", g.Name, r.Alert, err)
				}
				label := r.Alert
				if sev := r.Labels["severity"]; sev != "" {
					label += " (" + sev + ")"
				}
				for _, e := range Episodes(times, active, time.Duration(r.For)) {
					e.Label = label
					out = append(out, e)
				}
			}
		}
	}
	return out, nil
}

// record evaluates a recording rule over the range and appends its result.
func record(ctx context.Context, db Storage, r rulefmt.Rule, groupLabels map[string]string, from, to time.Time, step time.Duration) error {
	v, _, err := db.QueryRange(ctx, r.Expr, v1.Range{Start: from, End: to, Step: step})
	if err != nil {
		return fmt.Errorf("record %s: %w", r.Record, err)
	}
	m, ok := v.(model.Matrix)
	if !ok {
		return fmt.Errorf("record %s: result is %s, not a matrix", r.Record, v.Type())
	}
	app := db.Appender(ctx)
	for _, ss := range m {
		b := labels.NewBuilder(labels.EmptyLabels())
		for k, val := range ss.Metric {
			b.Set(string(k), string(val))
		}
		for k, val := range groupLabels {
			b.Set(k, val)
		}
		for k, val := range r.Labels {
			b.Set(k, val)
		}
		b.Set(model.MetricNameLabel, r.Record)
		ls := b.Labels()
		for _, p := range ss.Values {
			if err := app.Append(ls, p.Timestamp.Time(), float64(p.Value)); err != nil {
				_ = app.Rollback()
				return fmt.Errorf("record %s: %w", r.Record, err)
			}
		}
	}
	return app.Commit()
}
