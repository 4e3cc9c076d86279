package docs

import (
	"errors"
	"strings"
	"testing"
)

func TestLoadEmbeddedCatalogue(t *testing.T) {
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	// The cross-package contract: these names must stay documented.
	for _, name := range []string{
		"tailguard_loop_duration_seconds",
		"tailguard_queries_total",
		"tailguard_query_errors_total",
		"tailguard_findings_total",
		"tailguard_actions_total",
		"tailguard_tuned_constant",
		"tailguard_flag_variant_info",
		"tailguard_last_successful_evaluation_timestamp_seconds",
		"tailguard_build_info",
		"tailguard_config_last_reload_successful",
		"tailguard_action_budget_remaining",
		"backoff_calls_total",
		"backoff_attempts_total",
		"backoff_retries_total",
		"backoff_budget_denied_total",
		"backoff_delay_seconds",
		"backoff_attempt_duration_seconds",
		"backoff_policy_errors_total",
		"backoff_policy_constant",
		"backoff_policy_info",
		"http_request_duration_seconds",
		"http_requests_total",
		"dten_gateway_build_info",
	} {
		if _, ok := c.Lookup(name); !ok {
			t.Errorf("%s is not documented", name)
		}
	}
	want := map[string][]string{
		"tailguard_findings_total":          {"verdict"},
		"tailguard_actions_total":           {"rung", "result"},
		"tailguard_tuned_constant":          {"service", "constant"},
		"tailguard_flag_variant_info":       {"flag", "variant"},
		"tailguard_action_budget_remaining": {"service"},
		"backoff_calls_total":               {"strategy", "upstream", "result"},
		"http_requests_total":               {"job", "endpoint", "code"},
	}
	for name, labels := range want {
		m, _ := c.Lookup(name)
		if strings.Join(m.Labels, ",") != strings.Join(labels, ",") {
			t.Errorf("%s: labels %v, want %v", name, m.Labels, labels)
		}
	}
}

func TestLookup(t *testing.T) {
	c, err := Parse(strings.NewReader(`
| name | type | labels | meaning |
|---|---|---|---|
| ` + "`req_seconds`" + ` | histogram | ` + "`job`, `le`" + ` | latency |
| ` + "`rpc_seconds`" + ` | summary | — | latency |
| ` + "`hits_total`" + ` | counter | — | hits |
| ` + "`<component>_build_info`" + ` | gauge | ` + "`version`" + ` | build |
| ` + "`go_*`" + ` | various | — | runtime |
| ` + "`go_goroutines`" + ` | gauge | — | goroutines |
`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		wantRow string // "" for not found
	}{
		{"req_seconds", "req_seconds"},
		{"req_seconds_bucket", "req_seconds"},
		{"req_seconds_count", "req_seconds"},
		{"req_seconds_sum", "req_seconds"},
		{"req_seconds_total", ""},
		{"rpc_seconds_count", "rpc_seconds"},
		{"rpc_seconds_bucket", ""},
		{"hits_total", "hits_total"},
		{"hits_total_count", ""},
		{"hits", ""},
		{"dten_gateway_build_info", "<component>_build_info"},
		{"_build_info", ""},
		{"build_info", ""},
		{"dten_gateway_build_info_extra", ""},
		{"go_goroutines", "go_goroutines"},
		{"go_gc_duration_seconds", "go_*"},
		{"go_", "go_*"},
		{"golang_x", ""},
	}
	for _, tt := range tests {
		m, ok := c.Lookup(tt.name)
		if got := map[bool]string{true: m.Name}[ok]; got != tt.wantRow {
			t.Errorf("Lookup(%q) = %q, want %q", tt.name, got, tt.wantRow)
		}
	}
}

func TestExample(t *testing.T) {
	c, err := Parse(strings.NewReader("| name | type | labels | meaning |\n|---|---|---|---|\n| `<component>_build_info` | gauge | — | x |\n| `go_*` | various | — | x |\n| `up` | gauge | — | x |\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range c.Metrics() {
		if !m.Matches(m.Example()) {
			t.Errorf("%s: example %q does not match", m.Name, m.Example())
		}
	}
}

func TestParseErrors(t *testing.T) {
	const head = "| name | type | labels | meaning |\n|---|---|---|---|\n"
	tests := []struct {
		name, doc, wantErr string
	}{
		{"no table", "# title\n\n| a | b |\n|---|---|\n| x | y |\n", "no metric table"},
		{"no delimiter", "| name | type | labels | meaning |\n| `x` | gauge | — | y |\n", "delimiter"},
		{"unquoted name", head + "| up | gauge | — | y |\n", "name:"},
		{"bad name", head + "| `1up` | gauge | — | y |\n", "name:"},
		{"two names", head + "| `a` `b` | gauge | — | y |\n", "name:"},
		{"bad type", head + "| `up` | meter | — | y |\n", `type: unknown metric type "meter"`},
		{"various without family", head + "| `up` | various | — | y |\n", "type:"},
		{"bad label", head + "| `up` | gauge | job | y |\n", "labels:"},
		{"bad label name", head + "| `up` | gauge | `1job` | y |\n", "labels:"},
		{"label twice", head + "| `up` | gauge | `job`, `job` | y |\n", "labels:"},
		{"no meaning", head + "| `up` | gauge | — |  |\n", "meaning:"},
		{"cell count", head + "| `up` | gauge | — |\n", "cells"},
		{"duplicate", head + "| `up` | gauge | — | y |\n| `up` | gauge | — | z |\n", "already documented on line 3"},
		{"bad placeholder", head + "| `<Component>_info` | gauge | — | y |\n", "name:"},
		{"star inside", head + "| `go_*_x` | various | — | y |\n", "name:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Parse() error = %v, want containing %q", err, tt.wantErr)
			}
		})
	}
	if _, err := Parse(strings.NewReader("text")); !errors.Is(err, ErrNoMetrics) {
		t.Errorf("Parse(no table) = %v, want ErrNoMetrics", err)
	}
}

func TestParseEscapedPipe(t *testing.T) {
	c, err := Parse(strings.NewReader("| name | type | labels | meaning |\n|:--|--|--|--:|\n| `up` | gauge | — | 0 \\| 1 |\n\nafter the table\n| `x` | gauge | — | not a row |\n"))
	if err != nil {
		t.Fatal(err)
	}
	ms := c.Metrics()
	if len(ms) != 1 || ms[0].Meaning != "0 | 1" || ms[0].Line != 3 {
		t.Fatalf("Metrics() = %+v", ms)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("| name | type | labels | meaning |\n|---|---|---|---|\n| `up` | gauge | `job` | y |\n")
	f.Add("| name | type | labels | meaning |\n|---|---|---|---|\n| `<c>_info` | gauge | — | y |\n| `go_*` | various | — | y |\n")
	f.Add("| name | type | labels | meaning |\n| x |")
	f.Fuzz(func(t *testing.T, doc string) {
		c, err := Parse(strings.NewReader(doc))
		if err != nil {
			return
		}
		for _, m := range c.Metrics() {
			if !m.Matches(m.Example()) {
				t.Fatalf("%q does not match its own example %q", m.Name, m.Example())
			}
			if _, ok := c.Lookup(m.Example()); !ok {
				t.Fatalf("Lookup(%q) found nothing", m.Example())
			}
			if len(m.Meaning) == 0 {
				t.Fatalf("%q has no meaning", m.Name)
			}
		}
	})
}

func TestCheckExpr(t *testing.T) {
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		expr    string
		wantErr string // "" for none
	}{
		{`histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))`, ""},
		{`histogram_quantile(0.99, sum(rate(http_request_duration_seconds[5m])))`, ""},
		{`rate(backoff_retries_total[5m]) / rate(backoff_calls_total[5m])`, ""},
		{`time() - tailguard_last_successful_evaluation_timestamp_seconds`, ""},
		{`{__name__="tailguard_build_info"}`, ""},
		{`{__name__=~".+_build_info", job="shop"}`, ""},
		{`dten_gateway_build_info offset 1h`, ""},
		{`slo:sli_error:ratio_rate5m > on (service, slo) group_left () (1 - slo:objective:ratio)`, ""},
		{`vector(1)`, ""},
		{`rate(tailguard_bogus_total[5m])`, `undocumented metric "tailguard_bogus_total"`},
		{`backoff_calls_total_bucket`, `undocumented metric "backoff_calls_total_bucket"`},
		{`{__name__=~"nothing_.*"}`, "no documented metric matches"},
		{`{job="shop"}`, "names no metric"},
		{`{__name__!="up", job="shop"}`, "names no metric"},
		{`sum(rate(http_requests_total[5m])`, "parse:"},
		{`up + tailguard_a + tailguard_b`, `"tailguard_b"`},
	}
	for _, tt := range tests {
		err := c.CheckExpr(tt.expr)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("CheckExpr(%s) = %v", tt.expr, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("CheckExpr(%s) = %v, want containing %q", tt.expr, err, tt.wantErr)
		case tt.wantErr != "" && !strings.HasPrefix(tt.wantErr, "parse") && !errors.Is(err, ErrUndocumented):
			t.Errorf("CheckExpr(%s) = %v, want ErrUndocumented", tt.expr, err)
		}
	}
}
