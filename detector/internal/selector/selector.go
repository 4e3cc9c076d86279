// Package selector validates and composes PromQL label matchers for the
// queries the detector builds.
package selector

import (
	"fmt"
	"strings"

	"github.com/prometheus/prometheus/promql/parser"
)

// Parse validates sel, a PromQL selector of label matchers with or without
// braces ({job="shop"} or job="shop"; empty means no matchers), and returns
// the matchers as written, without braces, so rendered queries show the
// user's own text. A metric name is not allowed: the detector adds it.
func Parse(sel string) (string, error) {
	s := strings.TrimSpace(sel)
	if s == "" || s == "{}" {
		return "", nil
	}
	if !strings.HasPrefix(s, "{") {
		s = "{" + s + "}"
	}
	if !strings.HasSuffix(s, "}") {
		return "", fmt.Errorf("selector %q: missing closing brace", sel)
	}
	ms, err := parser.NewParser(parser.Options{}).ParseMetricSelector(s)
	if err != nil {
		return "", fmt.Errorf("selector %q: %w", sel, err)
	}
	for _, m := range ms {
		if m.Name == "__name__" {
			return "", fmt.Errorf("selector %q: must not match the metric name", sel)
		}
	}
	return strings.TrimSuffix(strings.TrimSpace(s[1:len(s)-1]), ","), nil
}

// With renders {inner,extra...}, skipping empty parts; "" when all are empty.
func With(inner string, extra ...string) string {
	parts := make([]string, 0, 1+len(extra))
	for _, p := range append([]string{inner}, extra...) {
		if p = strings.TrimSpace(p); p != "" {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// CheckExpr parses a PromQL expression and reports syntax errors.
func CheckExpr(q string) error {
	if _, err := parser.NewParser(parser.Options{}).ParseExpr(q); err != nil {
		return err
	}
	return nil
}
