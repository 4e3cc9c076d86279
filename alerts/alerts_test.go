package alerts

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"

	"github.com/tailguard/tailguard/docs"
)

type ruleFile struct {
	Groups []ruleGroup `yaml:"groups"`
}

type ruleGroup struct {
	Name     string `yaml:"name"`
	Interval string `yaml:"interval"`
	Limit    int    `yaml:"limit"`
	Rules    []rule `yaml:"rules"`
}

type rule struct {
	Record      string            `yaml:"record"`
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// decodeStrict decodes one YAML document, rejecting unknown fields.
func decodeStrict(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	return dec.Decode(v)
}

func loadRuleFiles(t *testing.T) map[string]ruleFile {
	t.Helper()
	names, err := fs.Glob(FS(), "*.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatal("no rule files embedded")
	}
	files := map[string]ruleFile{}
	for _, name := range names {
		data, err := fs.ReadFile(FS(), name)
		if err != nil {
			t.Fatal(err)
		}
		var rf ruleFile
		if err := decodeStrict(data, &rf); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		files[name] = rf
	}
	return files
}

func TestRulesUseDocumentedMetrics(t *testing.T) {
	cat, err := docs.Load()
	if err != nil {
		t.Fatal(err)
	}
	for name, rf := range loadRuleFiles(t) {
		for _, g := range rf.Groups {
			for _, err := range checkGroup(g, cat) {
				t.Errorf("%s: %v", name, err)
			}
		}
	}
}

var (
	recordNameRE = regexp.MustCompile(`^[a-zA-Z_]+:[a-zA-Z0-9_]+:[a-zA-Z0-9_]+$`)
	alertNameRE  = regexp.MustCompile(`^[A-Z][A-Za-z0-9]+$`)
	severities   = []string{"critical", "warning"}
	sloWindows   = []string{"5m", "30m", "1h", "2h", "6h", "1d", "3d"}
	sliKinds     = []string{"tail_latency", "retry_ratio"}
)

// checkGroup checks one rule group: expressions parse and name documented
// metrics, recorded series are documented and follow level:metric:operations,
// alerts carry a severity, a summary and a description, and alerts on SLIs
// carry the labels tailguard's webhook maps to a service and SLO.
func checkGroup(g ruleGroup, cat *docs.Catalogue) []error {
	var errs []error
	fail := func(i int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("group %q rule %d: %s", g.Name, i, fmt.Sprintf(format, args...)))
	}
	if g.Name == "" {
		errs = append(errs, errors.New("group without name"))
	}
	for i, r := range g.Rules {
		if err := cat.CheckExpr(r.Expr); err != nil {
			fail(i, "expr: %v", err)
		}
		switch {
		case r.Record != "" && r.Alert != "":
			fail(i, "both record and alert")
		case r.Record != "":
			if !recordNameRE.MatchString(r.Record) {
				fail(i, "record: %q is not level:metric:operations", r.Record)
			}
			if _, ok := cat.Lookup(r.Record); !ok {
				fail(i, "record: %q is not in docs/metrics.md", r.Record)
			}
		case r.Alert != "":
			if !alertNameRE.MatchString(r.Alert) {
				fail(i, "alert: %q is not CamelCase", r.Alert)
			}
			if !slices.Contains(severities, r.Labels["severity"]) {
				fail(i, "labels.severity: %q, want one of %v", r.Labels["severity"], severities)
			}
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					fail(i, "annotations.%s: empty", a)
				}
			}
			if strings.Contains(r.Expr, "slo:sli_error:") {
				for l, want := range map[string]string{
					"tailguard_service": "{{ $labels.service }}",
					"tailguard_slo":     "{{ $labels.slo }}",
				} {
					if r.Labels[l] != want {
						fail(i, "labels.%s: %q, want %q", l, r.Labels[l], want)
					}
				}
			}
		default:
			fail(i, "neither record nor alert")
		}
	}
	if slices.ContainsFunc(g.Rules, func(r rule) bool { return strings.HasPrefix(r.Record, "slo:") }) {
		errs = append(errs, checkSLOGroup(g)...)
	}
	return errs
}

// checkSLOGroup checks a group that defines one SLO: it records the SLI for
// every window the burn-rate alerts read, and the objective; all rules carry
// the same service, slo and sli labels; each SLI rule's range matches its
// name; and apart from the range, the SLI expressions are identical, so a
// copied group cannot be half adapted.
func checkSLOGroup(g ruleGroup) []error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("SLO group %q: %s", g.Name, fmt.Sprintf(format, args...)))
	}
	var (
		want      map[string]string
		windows   []string
		canonical string
		objective bool
	)
	for _, r := range g.Rules {
		ls := map[string]string{"service": r.Labels["service"], "slo": r.Labels["slo"], "sli": r.Labels["sli"]}
		if ls["service"] == "" || ls["slo"] == "" || !slices.Contains(sliKinds, ls["sli"]) {
			fail("%s: labels service, slo, sli (one of %v) required, got %v", r.Record, sliKinds, ls)
			continue
		}
		if want == nil {
			want = ls
		} else if fmt.Sprint(ls) != fmt.Sprint(want) {
			fail("%s: labels %v differ from %v", r.Record, ls, want)
		}
		if r.Record == "slo:objective:ratio" {
			objective = true
			m := regexp.MustCompile(`^vector\(([0-9.]+)\)$`).FindStringSubmatch(strings.TrimSpace(r.Expr))
			if m == nil {
				fail("slo:objective:ratio: expr %q, want vector(<objective>)", r.Expr)
				continue
			}
			if v, err := strconv.ParseFloat(m[1], 64); err != nil || v <= 0 || v >= 1 {
				fail("slo:objective:ratio: objective %s not in (0, 1)", m[1])
			}
			continue
		}
		w, ok := strings.CutPrefix(r.Record, "slo:sli_error:ratio_rate")
		if !ok {
			fail("%s: unexpected record in an SLO group", r.Record)
			continue
		}
		windows = append(windows, w)
		expr, err := parser.NewParser(parser.Options{}).ParseExpr(r.Expr)
		if err != nil {
			continue // reported by checkGroup
		}
		var ranges []string
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			if ms, ok := n.(*parser.MatrixSelector); ok {
				ranges = append(ranges, formatRange(ms))
				ms.Range = 0
			}
			return nil
		})
		for _, got := range ranges {
			if got != w {
				fail("%s: range [%s], want [%s]", r.Record, got, w)
			}
		}
		if len(ranges) == 0 {
			fail("%s: no range selector", r.Record)
		}
		if canonical == "" {
			canonical = expr.String()
		} else if expr.String() != canonical {
			fail("%s: expression differs from the other windows' beyond the range:\n%s\nvs\n%s", r.Record, expr, canonical)
		}
	}
	if !slices.Equal(windows, sloWindows) {
		fail("records windows %v, want %v in that order", windows, sloWindows)
	}
	if !objective {
		fail("does not record slo:objective:ratio")
	}
	return errs
}

func formatRange(ms *parser.MatrixSelector) string {
	s := parser.MatrixSelector{VectorSelector: &parser.VectorSelector{Name: "x"}, Range: ms.Range}
	out := s.String() // x[5m]
	return strings.TrimSuffix(strings.TrimPrefix(out, "x["), "]")
}

func TestCheckGroupRejects(t *testing.T) {
	cat, err := docs.Load()
	if err != nil {
		t.Fatal(err)
	}
	// A well-formed SLO group: each case below breaks one thing.
	good := func() ruleGroup {
		var rs []rule
		for _, w := range sloWindows {
			rs = append(rs, rule{
				Record: "slo:sli_error:ratio_rate" + w,
				Expr:   `sum(rate(backoff_retries_total{job="shop"}[` + w + `])) / sum(rate(backoff_calls_total{job="shop"}[` + w + `]))`,
				Labels: map[string]string{"service": "shop", "slo": "retries", "sli": "retry_ratio"},
			})
		}
		rs = append(rs, rule{
			Record: "slo:objective:ratio", Expr: "vector(0.98)",
			Labels: map[string]string{"service": "shop", "slo": "retries", "sli": "retry_ratio"},
		})
		return ruleGroup{Name: "slo-shop-retries", Rules: rs}
	}
	if errs := checkGroup(good(), cat); len(errs) > 0 {
		t.Fatalf("good group: %v", errs)
	}
	alert := rule{
		Alert: "RetryRatioBudgetBurn",
		Expr:  `slo:sli_error:ratio_rate5m > 0.1`,
		Labels: map[string]string{
			"severity": "critical", "tailguard_service": "{{ $labels.service }}", "tailguard_slo": "{{ $labels.slo }}",
		},
		Annotations: map[string]string{"summary": "s", "description": "d"},
	}
	if errs := checkGroup(ruleGroup{Name: "a", Rules: []rule{alert}}, cat); len(errs) > 0 {
		t.Fatalf("good alert: %v", errs)
	}
	tests := []struct {
		name    string
		mutate  func(g *ruleGroup)
		wantErr string
	}{
		{"undocumented metric", func(g *ruleGroup) {
			g.Rules[0].Expr = strings.ReplaceAll(g.Rules[0].Expr, "backoff_retries_total", "backoff_retry_total")
		}, `undocumented metric "backoff_retry_total"`},
		{"parse error", func(g *ruleGroup) { g.Rules[1].Expr = "sum(rate(backoff_calls_total[30m])" }, "parse:"},
		{"window mismatch", func(g *ruleGroup) {
			g.Rules[2].Expr = strings.ReplaceAll(g.Rules[2].Expr, "[1h]", "[30m]")
		}, "range [30m], want [1h]"},
		{"half adapted copy", func(g *ruleGroup) {
			g.Rules[3].Expr = strings.Replace(g.Rules[3].Expr, `job="shop"`, `job="cart"`, 1)
		}, "differs from the other windows"},
		{"missing window", func(g *ruleGroup) { g.Rules = slices.Delete(g.Rules, 6, 7) }, "want [5m 30m 1h 2h 6h 1d 3d]"},
		{"missing objective", func(g *ruleGroup) { g.Rules = g.Rules[:7] }, "does not record slo:objective:ratio"},
		{"objective out of range", func(g *ruleGroup) { g.Rules[7].Expr = "vector(98)" }, "not in (0, 1)"},
		{"label drift", func(g *ruleGroup) {
			g.Rules[4].Labels = map[string]string{"service": "shop", "slo": "retry", "sli": "retry_ratio"}
		}, "differ from"},
		{"bad sli", func(g *ruleGroup) { g.Rules[0].Labels["sli"] = "latency" }, "labels service, slo, sli"},
		{"bad record name", func(g *ruleGroup) { g.Rules[0].Record = "slo_sli_error" }, "level:metric:operations"},
		{"alert without severity", func(g *ruleGroup) {
			a := alert
			a.Labels = map[string]string{"tailguard_service": "{{ $labels.service }}", "tailguard_slo": "{{ $labels.slo }}"}
			g.Rules = []rule{a}
		}, "labels.severity"},
		{"SLO alert without webhook labels", func(g *ruleGroup) {
			a := alert
			a.Labels = map[string]string{"severity": "warning"}
			g.Rules = []rule{a}
		}, "labels.tailguard_service"},
		{"alert without description", func(g *ruleGroup) {
			a := alert
			a.Annotations = map[string]string{"summary": "s"}
			g.Rules = []rule{a}
		}, "annotations.description"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := good()
			tt.mutate(&g)
			err := errors.Join(checkGroup(g, cat)...)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("checkGroup() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// promtool test files, as far as this package reads them.
type testFile struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name          string `yaml:"name"`
		AlertRuleTest []struct {
			EvalTime  string `yaml:"eval_time"`
			Alertname string `yaml:"alertname"`
			ExpAlerts []struct {
				ExpLabels map[string]string `yaml:"exp_labels"`
			} `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

// TestEveryAlertIsTested requires, for every alerting rule, a promtool case
// where it fires with its severity and one where it stays silent, and every
// rule file to be loaded by some test file.
func TestEveryAlertIsTested(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("tests", "*.yml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no promtool test files in tests/ (%v)", err)
	}
	var (
		loaded = map[string]bool{}
		fires  = map[string]bool{} // alertname/severity
		silent = map[string]bool{} // alertname
	)
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var tf testFile
		dec := yaml.NewDecoder(bytes.NewReader(data))
		if err := dec.Decode(&tf); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		for _, rf := range tf.RuleFiles {
			loaded[filepath.Base(rf)] = true
			if _, err := os.Stat(filepath.Join("tests", rf)); err != nil {
				t.Errorf("%s: rule_files: %v", p, err)
			}
		}
		for _, tc := range tf.Tests {
			for _, at := range tc.AlertRuleTest {
				if len(at.ExpAlerts) == 0 {
					silent[at.Alertname] = true
				}
				for _, a := range at.ExpAlerts {
					fires[at.Alertname+"/"+a.ExpLabels["severity"]] = true
				}
			}
		}
	}
	for name, rf := range loadRuleFiles(t) {
		if !loaded[name] {
			t.Errorf("%s is not in the rule_files of any test in tests/", name)
		}
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				if r.Alert == "" {
					continue
				}
				if !fires[r.Alert+"/"+r.Labels["severity"]] {
					t.Errorf("%s (severity %s): no test case where it fires", r.Alert, r.Labels["severity"])
				}
				if !silent[r.Alert] {
					t.Errorf("%s: no test case where it stays silent", r.Alert)
				}
			}
		}
	}
}

type alertmanagerConfig struct {
	Route     amRoute `yaml:"route"`
	Receivers []struct {
		Name           string `yaml:"name"`
		WebhookConfigs []struct {
			URL          string `yaml:"url"`
			SendResolved bool   `yaml:"send_resolved"`
			MaxAlerts    int    `yaml:"max_alerts"`
		} `yaml:"webhook_configs"`
	} `yaml:"receivers"`
}

type amRoute struct {
	Receiver string    `yaml:"receiver"`
	Matchers []string  `yaml:"matchers"`
	Continue bool      `yaml:"continue"`
	Routes   []amRoute `yaml:"routes"`
}

// TestAlertmanagerExample checks that the example routes alerts with a
// tailguard_service label to the sidecar's webhook without swallowing them,
// and runs amtool check-config when amtool is installed.
func TestAlertmanagerExample(t *testing.T) {
	data, err := fs.ReadFile(FS(), "alertmanager.example.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg alertmanagerConfig
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	var webhookReceiver string
	for _, r := range cfg.Receivers {
		for _, w := range r.WebhookConfigs {
			if strings.HasSuffix(w.URL, ":9099/api/v1/alerts") {
				webhookReceiver = r.Name
				if !w.SendResolved {
					t.Errorf("receiver %s: send_resolved must be true", r.Name)
				}
				if w.MaxAlerts <= 0 {
					t.Errorf("receiver %s: max_alerts must be set", r.Name)
				}
			}
		}
	}
	if webhookReceiver == "" {
		t.Fatal("no receiver posts to the sidecar's /api/v1/alerts on port 9099")
	}
	var found bool
	for _, r := range cfg.Route.Routes {
		if r.Receiver != webhookReceiver {
			continue
		}
		found = true
		if !slices.Contains(r.Matchers, `tailguard_service=~".+"`) {
			t.Errorf("route to %s: matchers %v, want tailguard_service=~\".+\"", r.Receiver, r.Matchers)
		}
		if !r.Continue {
			t.Errorf("route to %s: continue must be true so people are notified too", r.Receiver)
		}
	}
	if !found {
		t.Errorf("no top-level route to receiver %s", webhookReceiver)
	}

	amtool, err := exec.LookPath("amtool")
	if err != nil {
		t.Log("amtool not installed; skipping amtool check-config (hack/ensure-prometheus amtool installs it)")
		return
	}
	out, err := exec.Command(amtool, "check-config", "alertmanager.example.yml").CombinedOutput()
	if err != nil {
		t.Errorf("amtool check-config: %v\n%s", err, out)
	}
}
