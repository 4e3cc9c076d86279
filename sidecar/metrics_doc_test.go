package sidecar

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/tailguard/tailguard/docs"
)

// TestMetricsAreDocumented checks every tailguard_* family the sidecar
// serves, its own and its runtime's, against docs/metrics.md: documented
// with the same type and labels.
func TestMetricsAreDocumented(t *testing.T) {
	d, _, _ := newTestDaemon(t)
	if _, err := d.Evaluate(context.Background(), "shop", "manual"); err != nil {
		t.Fatal(err)
	}
	d.metrics.annotations.WithLabelValues("ok")
	d.metrics.triggers.WithLabelValues("evaluated")
	d.metrics.flagVariant.WithLabelValues("backoff-strategy", "decorrelated")
	cat, err := docs.Load()
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := d.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var served []string
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "tailguard_") {
			continue
		}
		served = append(served, name)
		m, ok := cat.Lookup(name)
		if !ok {
			t.Errorf("%s is served but not documented in docs/metrics.md", name)
			continue
		}
		if want := strings.ToLower(mf.GetType().String()); m.Type != want {
			t.Errorf("%s: documented as %s, served as %s", name, m.Type, want)
		}
		if len(mf.GetMetric()) == 0 {
			continue
		}
		var labels []string
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			labels = append(labels, lp.GetName())
		}
		slices.Sort(labels)
		doc := slices.Clone(m.Labels)
		slices.Sort(doc)
		if !slices.Equal(labels, doc) {
			t.Errorf("%s: documented labels %v, served %v", name, doc, labels)
		}
	}
	for _, want := range []string{
		"tailguard_config_last_reload_successful", "tailguard_config_last_reload_success_timestamp_seconds",
		"tailguard_ready", "tailguard_flag_variant_info", "tailguard_annotations_total", "tailguard_alert_triggers_total",
		"tailguard_cycles_total", "tailguard_loop_duration_seconds", "tailguard_slo_sli", "tailguard_action_budget_remaining",
	} {
		if !slices.Contains(served, want) {
			t.Errorf("%s is not served (served: %v)", want, served)
		}
	}
}
