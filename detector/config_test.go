package detector

import (
	"strings"
	"testing"
	"time"
)

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig(strings.NewReader("service: shop\nsignals:\n  - {name: lat, kind: latency}\n  - {name: r, kind: retry_ratio}\n  - {name: e, kind: error_ratio}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(cfg.Baseline) != time.Hour || time.Duration(cfg.Step) != time.Minute || time.Duration(cfg.QueryTimeout) != 30*time.Second {
		t.Errorf("durations = %v %v %v", cfg.Baseline, cfg.Step, cfg.QueryTimeout)
	}
	d := cfg.Detection
	if d.FalseAlarmsPerHour != 0.01 || d.MinEffect != 1.5 || d.Confidence != 0.95 || d.MaxGapRatio != 0.25 || time.Duration(d.StaleAfter) != 5*time.Minute {
		t.Errorf("detection = %+v", d)
	}
	if cfg.minRequests(0.99) != 368 {
		t.Errorf("min requests = %d, want 368", cfg.minRequests(0.99))
	}
	s := cfg.Signals
	if s[0].Metric != DefaultLatencyMetric || s[0].Histogram != HistogramClassic || s[0].Quantile != 0.99 {
		t.Errorf("latency defaults = %+v", s[0])
	}
	if s[1].Metric != DefaultCallsMetric || s[1].RetriesMetric != DefaultRetriesMetric {
		t.Errorf("retry defaults = %+v", s[1])
	}
	if s[2].Metric != DefaultRequestsMetric || s[2].ErrorSelector != DefaultErrorSelector {
		t.Errorf("error defaults = %+v", s[2])
	}
	if w := cfg.Attribution.Weights; w.Timing != 0.4 || w.Localisation != 0.3 {
		t.Errorf("weights = %+v", w)
	}
}

func TestParseConfigErrors(t *testing.T) {
	sig := "\nsignals:\n  - {name: lat, kind: latency}\n"
	for _, tc := range []struct{ in, want string }{
		{"signals:\n  - {name: lat, kind: latency}\n", "field service is empty"},
		{"service: s\n", "field signals is empty"},
		{"service: s\nbogus: 1" + sig, "field bogus not found"},
		{"service: s\nbaseline: 90s" + sig, "multiple of step"},
		{"service: s\nstep: 500ms\nbaseline: 5s" + sig, "at least 1s"},
		{"service: s\nbaseline: -1h" + sig, "not a valid duration"},
		{"service: s\ndetection: {min_effect: 0.9}" + sig, "detection.min_effect"},
		{"service: s\ndetection: {confidence: 1.2}" + sig, "detection.confidence"},
		{"service: s\ndetection: {false_alarms_per_hour: -1}" + sig, "false_alarms_per_hour"},
		{"service: s\ndetection: {max_gap_ratio: 2}" + sig, "max_gap_ratio"},
		{"service: s\ndetection: {min_requests: -3}" + sig, "min_requests"},
		{"service: s\nattribution: {margin: 1}" + sig, "attribution.margin"},
		{"service: s\nattribution: {weights: {timing: -1}}" + sig, "weights"},
		{"service: s\nsignals:\n  - {kind: latency}\n", "signals[0]: field name is empty"},
		{"service: s\nsignals:\n  - {name: a, kind: p99}\n", "field kind"},
		{"service: s\nsignals:\n  - {name: a, kind: latency}\n  - {name: a, kind: error_ratio}\n", "used twice"},
		{"service: s\nsignals:\n  - {name: a, kind: latency, histogram: sparse}\n", "field histogram"},
		{"service: s\nsignals:\n  - {name: a, kind: latency, quantile: 0.3}\n", "field quantile"},
		{"service: s\nsignals:\n  - {name: a, kind: latency, boundary: -1}\n", "field boundary"},
		{"service: s\nsignals:\n  - {name: a, kind: retry_ratio, boundary: 1}\n", "apply to kind"},
		{"service: s\nsignals:\n  - {name: a, kind: latency, metric: 'a-b'}\n", "not a valid metric name"},
		{"service: s\nsignals:\n  - {name: a, kind: latency, selector: '{job=}'}\n", "field selector"},
		{"service: s\nsignals:\n  - {name: a, kind: latency, selector: '{__name__=\"x\"}'}\n", "metric name"},
		{"service: s\nsignals:\n  - {name: a, kind: latency, by: [le]}\n", "field by"},
		{"service: s\nsignals:\n  - {name: a, kind: latency, by: [a, a]}\n", "listed twice"},
		{"service: s\nsignals:\n  - {name: a, kind: error_ratio, error_selector: 'code=~'}\n", "field error_selector"},
		{"service: s\nsignals:\n  - {name: a, kind: latency, min_effect: 1}\n", "field min_effect"},
		{"service: s\nsignals:\n  - {name: a, kind: latency, objective: 0.01}\n", "field objective needs a fixed boundary"},
		{"service: s\nsignals:\n  - {name: a, kind: error_ratio, objective: 1.5}\n", "field objective (1.5) must be a share below 1"},
		{"service: s\nsignals:\n  - {name: a, kind: retry_ratio, objective: -0.1}\n", "field objective (-0.1)"},
		{"service: s\nsignals:\n  - {name: a, kind: latency, attempts: true, boundary: 0.5, objective: 0.01}\n", "field objective does not apply to attempts"},
		{"service: s\nsignals:\n  - {name: a, kind: latency, queries: {total: 'sum({{.Nope}})'}}\n", "query template total"},
		{"service: s\nsignals:\n  - {name: a, kind: latency, queries: {total: 'sum(({{.Metric}})'}}\n", "invalid PromQL"},
		{"service: s\nsignals:\n  - {name: a, kind: latency, queries: {total: '{{'}}\n", "queries.total"},
		{"service: s\nsignals:\n  - {name: a, kind: retry_ratio, queries: {buckets: 'x'}}\n", "queries.buckets does not apply"},
		{"service: s\nchanges: {flags: {f: {label: '1x'}}}" + sig, "changes.flags[f].label"},
		{"service: s\nchanges: {manifests: ['']}" + sig, "changes.manifests[0]"},
		{"service: s\ntopology: {callees: {a: ''}}" + sig, "topology.callees"},
	} {
		_, err := ParseConfig(strings.NewReader(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseConfig(%q)\n  err = %v\n  want %q", tc.in, err, tc.want)
		}
	}
}

func TestTemplateOverride(t *testing.T) {
	cfg, err := ParseConfig(strings.NewReader(`service: s
signals:
  - name: r
    kind: retry_ratio
    selector: 'upstream="payments",'
    by: [upstream]
    queries:
      total: 'sum by ({{.By}}) (increase(my_calls_total{{.Selector}}[{{.Range}}]))'
`))
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(cfg, nopQuerier{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := d.signals[0].cfg.templateData("1m", "")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := render(d.signals[0].tpls[qTotal], data)
	if want := `sum by (upstream) (increase(my_calls_total{upstream="payments"}[1m]))`; got != want {
		t.Errorf("total = %s, want %s", got, want)
	}
	got, _ = render(d.signals[0].tpls[qEvents], data)
	if want := `sum by (upstream) (increase(backoff_retries_total{upstream="payments"}[1m]))`; got != want {
		t.Errorf("events = %s, want %s", got, want)
	}
	if _, err := LoadConfig("testdata/none.yaml"); err == nil {
		t.Error("missing file accepted")
	}
	if _, err := New(cfg, nil, nil); err == nil {
		t.Error("nil querier accepted")
	}
}

func TestRoundUp3(t *testing.T) {
	for _, tc := range []struct{ in, want float64 }{
		{0.2281, 0.229}, {0.3, 0.3}, {1234.5, 1240}, {0.000123456, 0.000124}, {2, 2},
	} {
		if got := roundUp3(tc.in); got != tc.want {
			t.Errorf("roundUp3(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add(shopConfig)
	f.Add("service: s\nsignals:\n  - {name: lat, kind: latency, queries: {total: '{{.Metric}}'}}\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, in string) {
		cfg, err := ParseConfig(strings.NewReader(in))
		if err != nil {
			return
		}
		if _, err := New(cfg, nopQuerier{}, nil); err != nil {
			t.Fatalf("valid config rejected by New: %v", err)
		}
	})
}
