package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"
)

// TimeScale compresses time for a run against a real Prometheus: a duration
// d of a rule becomes d / Factor, rounded to whole seconds and at least
// Floor.
type TimeScale struct {
	Factor float64
	Floor  time.Duration
}

// Scale returns d in compressed time. Zero stays zero.
func (s TimeScale) Scale(d time.Duration) time.Duration {
	if d == 0 {
		return 0
	}
	scaled := time.Duration(math.Round(float64(d)/s.Factor/float64(time.Second))) * time.Second
	return max(scaled, s.Floor)
}

func (s TimeScale) validate() error {
	if !(s.Factor >= 1) || math.IsInf(s.Factor, 0) {
		return fmt.Errorf("time scale: factor %v must be ≥ 1", s.Factor)
	}
	if s.Floor < time.Second {
		return fmt.Errorf("time scale: floor %s must be at least 1s", s.Floor)
	}
	return nil
}

// ScaleRules rewrites a Prometheus rule file for compressed time: in every
// expression the ranges of range selectors and subqueries, subquery steps
// and offsets, and every rule's "for" and "keep_firing_for", are scaled by
// s. Names, labels and annotations are kept, so recording rules such as
// slo:sli_error:ratio_rate1h keep the names the alerts read (their window
// is then 1h/Factor). Comments are dropped. Duration expressions (Prometheus
// 3's arithmetic on durations) are refused.
func ScaleRules(src []byte, s TimeScale) ([]byte, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	var rgs rulefmt.RuleGroups
	dec := yaml.NewDecoder(bytes.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&rgs); err != nil {
		return nil, fmt.Errorf("decode rules: %w", err)
	}
	if len(rgs.Groups) == 0 {
		return nil, errors.New("decode rules: no groups")
	}
	p := parser.NewParser(parser.Options{})
	for gi := range rgs.Groups {
		g := &rgs.Groups[gi]
		if g.Interval != 0 {
			g.Interval = model.Duration(s.Scale(time.Duration(g.Interval)))
		}
		for ri := range g.Rules {
			r := &g.Rules[ri]
			name := r.Record + r.Alert
			expr, err := p.ParseExpr(r.Expr)
			if err != nil {
				return nil, fmt.Errorf("group %s rule %s: parse expr: %w", g.Name, name, err)
			}
			if err := scaleExpr(expr, s); err != nil {
				return nil, fmt.Errorf("group %s rule %s: %w", g.Name, name, err)
			}
			r.Expr = expr.String()
			r.For = model.Duration(s.Scale(time.Duration(r.For)))
			r.KeepFiringFor = model.Duration(s.Scale(time.Duration(r.KeepFiringFor)))
		}
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&rgs); err != nil {
		return nil, fmt.Errorf("encode rules: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode rules: %w", err)
	}
	return out.Bytes(), nil
}

func scaleExpr(expr parser.Expr, s TimeScale) error {
	var err error
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.MatrixSelector:
			if n.RangeExpr != nil {
				err = fmt.Errorf("duration expression %s is not supported", n.RangeExpr)
				return err
			}
			n.Range = s.Scale(n.Range)
		case *parser.SubqueryExpr:
			if n.RangeExpr != nil || n.StepExpr != nil || n.OriginalOffsetExpr != nil {
				err = fmt.Errorf("duration expressions in subquery %s are not supported", n)
				return err
			}
			n.Range = s.Scale(n.Range)
			n.Step = s.Scale(n.Step)
			n.OriginalOffset = scaleSigned(n.OriginalOffset, s)
		case *parser.VectorSelector:
			if n.OriginalOffsetExpr != nil {
				err = fmt.Errorf("duration expression %s is not supported", n.OriginalOffsetExpr)
				return err
			}
			n.OriginalOffset = scaleSigned(n.OriginalOffset, s)
		}
		return nil
	})
	return err
}

func scaleSigned(d time.Duration, s TimeScale) time.Duration {
	if d < 0 {
		return -s.Scale(-d)
	}
	return s.Scale(d)
}

// AlertmanagerConfig turns the example Alertmanager configuration into one
// for a test run: the webhook of the receiver named receiver points to
// webhookURL, and every route groups and repeats in compressed time
// (group_wait and group_interval groupInterval, repeat_interval
// repeatInterval). The rest, the routes and matchers in particular, is
// kept.
func AlertmanagerConfig(src []byte, receiver, webhookURL string, groupInterval, repeatInterval time.Duration) ([]byte, error) {
	var cfg map[string]any
	if err := yaml.Unmarshal(src, &cfg); err != nil {
		return nil, fmt.Errorf("decode alertmanager config: %w", err)
	}
	route, ok := cfg["route"].(map[string]any)
	if !ok {
		return nil, errors.New("alertmanager config: no route")
	}
	var timings func(r map[string]any) error
	timings = func(r map[string]any) error {
		for _, k := range []string{"group_wait", "group_interval"} {
			r[k] = model.Duration(groupInterval).String()
		}
		r["repeat_interval"] = model.Duration(repeatInterval).String()
		sub, _ := r["routes"].([]any)
		for i, s := range sub {
			sr, ok := s.(map[string]any)
			if !ok {
				return fmt.Errorf("alertmanager config: routes[%d] is not a route", i)
			}
			if err := timings(sr); err != nil {
				return err
			}
		}
		return nil
	}
	if err := timings(route); err != nil {
		return nil, err
	}
	receivers, _ := cfg["receivers"].([]any)
	found := false
	for _, r := range receivers {
		rm, ok := r.(map[string]any)
		if !ok || rm["name"] != receiver {
			continue
		}
		hooks, _ := rm["webhook_configs"].([]any)
		if len(hooks) == 0 {
			return nil, fmt.Errorf("alertmanager config: receiver %q has no webhook_configs", receiver)
		}
		for i, h := range hooks {
			hm, ok := h.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("alertmanager config: receiver %q webhook_configs[%d] is not an object", receiver, i)
			}
			hm["url"] = webhookURL
		}
		found = true
	}
	if !found {
		return nil, fmt.Errorf("alertmanager config: no receiver %q", receiver)
	}
	return yaml.Marshal(cfg)
}
