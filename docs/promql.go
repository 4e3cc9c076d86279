package docs

import (
	"errors"
	"fmt"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// ErrUndocumented is wrapped by CheckExpr's error for every selector that
// names a metric the catalogue does not document.
var ErrUndocumented = errors.New("undocumented metric")

// CheckExpr parses a PromQL expression and checks that every metric it
// selects is documented. A selector with a regular-expression name matcher
// ({__name__=~".+_build_info"}) passes when at least one documented name (or,
// for a pattern row, its Example) matches it; a selector without a positive
// name matcher fails. The error joins a parse error, or one error per
// offending selector, each wrapping ErrUndocumented.
func (c *Catalogue) CheckExpr(expr string) error {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	var errs []error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		if err := c.checkSelector(vs); err != nil {
			errs = append(errs, err)
		}
		return nil
	})
	return errors.Join(errs...)
}

func (c *Catalogue) checkSelector(vs *parser.VectorSelector) error {
	if vs.Name != "" {
		if _, ok := c.Lookup(vs.Name); !ok {
			return fmt.Errorf("%w %q", ErrUndocumented, vs.Name)
		}
		return nil
	}
	for _, m := range vs.LabelMatchers {
		if m.Name != model.MetricNameLabel {
			continue
		}
		switch m.Type {
		case labels.MatchEqual:
			if _, ok := c.Lookup(m.Value); !ok {
				return fmt.Errorf("%w %q", ErrUndocumented, m.Value)
			}
			return nil
		case labels.MatchRegexp:
			for _, d := range c.metrics {
				if m.Matches(d.Name) || m.Matches(d.Example()) {
					return nil
				}
			}
			return fmt.Errorf("%w: no documented metric matches %s", ErrUndocumented, m)
		}
	}
	return fmt.Errorf("%w: selector %s names no metric", ErrUndocumented, vs)
}
