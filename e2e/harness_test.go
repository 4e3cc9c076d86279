package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"

	"github.com/tailguard/tailguard/dashboards"
)

var testScale = TimeScale{Factor: 120, Floor: 4 * time.Second}

func TestTimeScale(t *testing.T) {
	for _, tc := range []struct {
		in, want time.Duration
	}{
		{0, 0},
		{time.Second, 4 * time.Second}, // floor
		{5 * time.Minute, 4 * time.Second},
		{30 * time.Minute, 15 * time.Second},
		{time.Hour, 30 * time.Second},
		{6 * time.Hour, 3 * time.Minute},
		{72 * time.Hour, 36 * time.Minute},
		{10*time.Minute + 10*time.Second, 5 * time.Second}, // 5.08s rounds to 5s
	} {
		if got := testScale.Scale(tc.in); got != tc.want {
			t.Errorf("Scale(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
	if _, err := ScaleRules([]byte("groups: []"), TimeScale{Factor: 0.5, Floor: time.Second}); err == nil {
		t.Error("factor below 1 accepted")
	}
}

func TestScaleRules(t *testing.T) {
	src := []byte(`groups:
  - name: g
    interval: 1m
    rules:
      - record: slo:sli_error:ratio_rate1h
        expr: sum(rate(x_total{job="shop"}[1h])) / sum(rate(y_total[1h] offset 30m))
        labels: {slo: a}
      - alert: A
        expr: max_over_time(slo:sli_error:ratio_rate1h[6h:5m]) > 0.1
        for: 5m
        labels: {severity: critical}
        annotations: {summary: "{{ $value | humanizePercentage }}"}
`)
	out, err := ScaleRules(src, testScale)
	if err != nil {
		t.Fatal(err)
	}
	var got rulefmt.RuleGroups
	if err := yaml.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	g := got.Groups[0]
	if time.Duration(g.Interval) != 4*time.Second {
		t.Errorf("interval = %s", g.Interval)
	}
	wantExprs := []string{
		`sum(rate(x_total{job="shop"}[30s])) / sum(rate(y_total[30s] offset 15s))`,
		`max_over_time(slo:sli_error:ratio_rate1h[3m:4s]) > 0.1`,
	}
	for i, want := range wantExprs {
		if g.Rules[i].Expr != want {
			t.Errorf("rule %d expr = %q, want %q", i, g.Rules[i].Expr, want)
		}
	}
	if g.Rules[0].Record != "slo:sli_error:ratio_rate1h" || g.Rules[0].Labels["slo"] != "a" {
		t.Errorf("recording rule name or labels changed: %+v", g.Rules[0])
	}
	if a := g.Rules[1]; time.Duration(a.For) != 4*time.Second || a.Annotations["summary"] != "{{ $value | humanizePercentage }}" {
		t.Errorf("alert for or annotations wrong: %+v", a)
	}
	for _, bad := range []string{
		"groups: [{name: g, rules: [{record: r, expr: 'rate(x[1h'}]}]",
		"groups: [{name: g, rules: [{record: r, expr: 'x', unknown: 1}]}]",
		"",
	} {
		if _, err := ScaleRules([]byte(bad), testScale); err == nil {
			t.Errorf("ScaleRules(%q) accepted", bad)
		}
	}
}

// The shipped rules scale into rules that still parse, keep every rule and
// no longer mention a window longer than the scaled 3d.
func TestScaleShippedRules(t *testing.T) {
	files, err := filepath.Glob("../alerts/*.rules.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no shipped rules: %v", err)
	}
	p := parser.NewParser(parser.Options{})
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out, err := ScaleRules(src, testScale)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var before, after rulefmt.RuleGroups
		if err := yaml.Unmarshal(src, &before); err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(out, &after); err != nil {
			t.Fatal(err)
		}
		if len(before.Groups) != len(after.Groups) {
			t.Fatalf("%s: %d groups became %d", f, len(before.Groups), len(after.Groups))
		}
		for gi, g := range after.Groups {
			if len(g.Rules) != len(before.Groups[gi].Rules) {
				t.Errorf("%s group %s: rule count changed", f, g.Name)
			}
			for _, r := range g.Rules {
				expr, err := p.ParseExpr(r.Expr)
				if err != nil {
					t.Errorf("%s %s%s: scaled expr does not parse: %v", f, r.Record, r.Alert, err)
					continue
				}
				parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
					if ms, ok := n.(*parser.MatrixSelector); ok && ms.Range > testScale.Scale(72*time.Hour) {
						t.Errorf("%s %s%s: range %s not scaled", f, r.Record, r.Alert, ms.Range)
					}
					return nil
				})
			}
		}
	}
}

func TestAlertmanagerConfig(t *testing.T) {
	src, err := os.ReadFile("../alerts/alertmanager.example.yml")
	if err != nil {
		t.Fatal(err)
	}
	out, err := AlertmanagerConfig(src, "tailguard", "http://127.0.0.1:1234/api/v1/alerts", time.Second, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, want := range []string{"url: http://127.0.0.1:1234/api/v1/alerts", "group_wait: 1s", "group_interval: 1s", "repeat_interval: 1m", "tailguard_service=~\".+\""} {
		if !strings.Contains(s, want) {
			t.Errorf("config lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "localhost:9099") || strings.Contains(s, "group_interval: 5m") {
		t.Errorf("example values left in:\n%s", s)
	}
	if _, err := AlertmanagerConfig(src, "nobody", "http://x", time.Second, time.Minute); err == nil {
		t.Error("unknown receiver accepted")
	}
	if _, err := AlertmanagerConfig([]byte("receivers: []"), "tailguard", "http://x", time.Second, time.Minute); err == nil {
		t.Error("config without route accepted")
	}
}

func TestLoadDashboards(t *testing.T) {
	ds, err := LoadDashboards(dashboards.FS())
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) < 2 {
		t.Fatalf("%d dashboards", len(ds))
	}
	for _, d := range ds {
		if len(d.Queries) == 0 || len(d.Variables) == 0 || len(d.Annotations) == 0 {
			t.Errorf("%s: %d queries, %d variables, %d annotation queries", d.File, len(d.Queries), len(d.Variables), len(d.Annotations))
		}
		for _, v := range d.Variables {
			if v.Type == "query" {
				if _, _, err := ParseLabelValues(v.Query); err != nil {
					t.Errorf("%s variable %s: %v", d.File, v.Name, err)
				}
			}
		}
	}
}

func TestSubstituteAndLabelValues(t *testing.T) {
	got, err := Substitute(`rate(x{job="$job",i=~"${instance:regex}"}[$__rate_interval]) [[job]]`,
		map[string]string{"job": "shop", "instance": ".+", "__rate_interval": "30s"})
	if err != nil || got != `rate(x{job="shop",i=~".+"}[30s]) shop` {
		t.Errorf("Substitute = %q, %v", got, err)
	}
	if _, err := Substitute(`x{a="$nope"}`, nil); err == nil || !strings.Contains(err.Error(), "$nope") {
		t.Errorf("undefined variable: %v", err)
	}
	for _, tc := range []struct{ q, sel, label string }{
		{`label_values(tailguard_build_info, job)`, "tailguard_build_info", "job"},
		{`label_values(up{job="$job"}, instance)`, `up{job="$job"}`, "instance"},
		{`label_values(job)`, "", "job"},
	} {
		sel, label, err := ParseLabelValues(tc.q)
		if err != nil || sel != tc.sel || label != tc.label {
			t.Errorf("ParseLabelValues(%q) = %q, %q, %v", tc.q, sel, label, err)
		}
	}
	if _, _, err := ParseLabelValues("query_result(up)"); err == nil {
		t.Error("query_result accepted")
	}
}

func TestParseMetrics(t *testing.T) {
	fs, err := ParseMetrics(strings.NewReader(`# TYPE a_total counter
a_total{result="ok"} 2
a_total{result="failed"} 3
# TYPE g gauge
g{constant="cap_seconds"} 0.5
`))
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := fs.Sum("a_total", nil); !ok || v != 5 {
		t.Errorf("Sum(a_total) = %v, %v", v, ok)
	}
	if v, ok := fs.Sum("a_total", map[string]string{"result": "failed"}); !ok || v != 3 {
		t.Errorf("Sum(a_total{failed}) = %v, %v", v, ok)
	}
	if _, ok := fs.Sum("a_total", map[string]string{"result": "nope"}); ok {
		t.Error("no sample should match")
	}
	if v, _ := fs.Sum("g", map[string]string{"constant": "cap_seconds"}); v != 0.5 {
		t.Errorf("gauge = %v", v)
	}
	if ls := fs.Labels("g"); len(ls) != 1 || ls[0]["constant"] != "cap_seconds" {
		t.Errorf("Labels = %v", ls)
	}
}
