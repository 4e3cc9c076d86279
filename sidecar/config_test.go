package sidecar

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadConfigExample(t *testing.T) {
	cfg, err := LoadConfig("testdata/tailguard.yml")
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(cfg.EvaluationInterval) != time.Minute {
		t.Errorf("evaluation_interval = %s", cfg.EvaluationInterval)
	}
	if !filepath.IsAbs(cfg.FlagFile) && !strings.HasPrefix(cfg.FlagFile, "testdata") {
		t.Errorf("flag file not resolved against the config dir: %s", cfg.FlagFile)
	}
	s := cfg.Services[0]
	if s.DetectorConfig.Service != "shop" || len(s.DetectorConfig.Signals) != 4 {
		t.Errorf("detector config = %+v", s.DetectorConfig)
	}
	if want := cfg.FlagFile + ".journal.jsonl"; s.DetectorConfig.Changes.FlagJournal != want {
		t.Errorf("flag journal = %q, want the flag file's %q", s.DetectorConfig.Changes.FlagJournal, want)
	}
	if cfg.Webhook.QueueSize != 16 || cfg.Policy == nil {
		t.Errorf("webhook/policy not loaded: %+v", cfg.Webhook)
	}
}

// TestConfigErrors checks that each bad configuration is refused with an
// error naming the field.
func TestConfigErrors(t *testing.T) {
	base, err := os.ReadFile("testdata/tailguard.yml")
	if err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, old, new, want string
	}{
		{"unknown key", "evaluation_interval: 1m", "evaluation_interval: 1m\nevaluation_intervall: 2m", "field evaluation_intervall not found"},
		{"interval", "evaluation_interval: 1m", "evaluation_interval: 10ms", "evaluation_interval"},
		{"url", "url: http://127.0.0.1:9090", "url: ''", "prometheus.url"},
		{"flag file", "flag_file: flags.json", "flag_file: ''", "flag_file"},
		{"policy file", "policy_file: policy.yml", "policy_file: nope.yml", "policy_file"},
		{"service not in policy", "  - name: shop", "  - name: cart", `services[0].name: service "cart" is not in the policy`},
		{"detector unknown key", "      baseline: 1h", "      baseline: 1h\n      baselines: 2h", "line 15: field baselines not found in type detector.Config"},
		{"detector service", "      baseline: 1h", "      baseline: 1h\n      service: cart", `services[0].detector: service: "cart" differs`},
		{"detector invalid", "      step: 1m", "      step: 7m", "services[0].detector"},
		{"sli", "      job: shop", "      job: shop\n      histogram: sparse", "services[0].sli.histogram"},
		{"queue", "queue_size: 16", "queue_size: -1", "webhook.queue_size"},
		{"kubernetes and flag file", "flag_file: flags.json", "flag_file: flags.json\nkubernetes: {feature_flag: shop-flags}", "flag_file: not used with kubernetes"},
		{"kubernetes without feature flag", "flag_file: flags.json", "kubernetes: {namespace: shop}", "kubernetes.feature_flag: required"},
		{"kubernetes timings", "flag_file: flags.json", "kubernetes: {feature_flag: shop-flags, identity: a, lease_duration: 5s, renew_deadline: 10s}", "renew_deadline (10s) < lease_duration (5s)"},
		{"kubernetes journal entries", "flag_file: flags.json", "kubernetes: {feature_flag: shop-flags, identity: a, max_journal_entries: -1}", "kubernetes.max_journal_entries"},
		{"neither", "flag_file: flags.json", "", "flag_file: required (or kubernetes"},
		{"http client", "  timeout: 10s", "  timeout: 10s\n  http_client_config:\n    bearer_token: a\n    bearer_token_file: b", "bearer_token & bearer_token_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := strings.Replace(string(base), tc.old, tc.new, 1)
			if b == string(base) {
				t.Fatalf("test case does not change the file: %q not found", tc.old)
			}
			_, err := ParseConfig([]byte(b), abs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseConfig = %v, want error containing %q", err, tc.want)
			}
		})
	}
}
