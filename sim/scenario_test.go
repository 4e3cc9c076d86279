package sim

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tailguard/tailguard/sim/scenarios"

	goldenfile "github.com/tailguard/tailguard/internal/golden"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestEmbeddedScenariosLoad(t *testing.T) {
	names, err := ListScenarios(scenarios.FS())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"benign-upgrade", "diurnal-noise", "invalid-flag-file", "low-traffic", "other-component", "prometheus-gaps", "story"}
	if fmt.Sprint(names) != fmt.Sprint(want) {
		t.Fatalf("scenarios = %v, want %v", names, want)
	}
	for _, n := range names {
		sc, err := LoadScenario(scenarios.FS(), n)
		if err != nil {
			t.Errorf("%s: %v", n, err)
			continue
		}
		if sc.Name != n {
			t.Errorf("%s.yml is named %q", n, sc.Name)
		}
		if sc.Policy == nil || sc.Detector.Service != "shop" || len(sc.PolicyYAML) == 0 {
			t.Errorf("%s: tailguard configuration not loaded", n)
		}
		if sc.Truth.Regression && len(sc.Truth.Causes) == 0 {
			t.Errorf("%s: a regression without causes", n)
		}
	}
}

func TestScenarioDefaults(t *testing.T) {
	sc, err := LoadScenarioFile("testdata/tiny.yml")
	if err != nil {
		t.Fatal(err)
	}
	if !sc.Start.Equal(DefaultStart) || sc.Flags.StrategyKey != DefaultStrategyFlag || sc.Upstream.ErrorLatency.Median == 0 ||
		sc.Events[1].Flags.Actor != DefaultActor || sc.Truth.SLO.Window == 0 {
		t.Errorf("defaults not applied: %+v", sc)
	}
	if got := sc.End(); !got.Equal(DefaultStart.Add(80 * time.Minute)) {
		t.Errorf("End() = %s", got)
	}
}

// invalidCases edit the tiny scenario into invalid ones.
var invalidCases = []struct {
	name     string
	old, new string
}{
	{"unknown field", "seed: 3", "seed: 3\nsede: 4"},
	{"bad name", "name: tiny", "name: Tiny Scenario"},
	{"no duration", "duration: 1h20m", "duration: 0s"},
	{"bad duration", "duration: 1h20m", "duration: ninety minutes"},
	{"evaluation below scrape", "evaluation_interval: 1m", "evaluation_interval: 5s"},
	{"too many pods", "pods: 4", "pods: 100"},
	{"endpoint name", "- name: /search", "- name: search"},
	{"no upstream caller", "      calls_upstream: true\n", ""},
	{"probability", "failure_probability: 0.015", "failure_probability: 1.5"},
	{"unknown strategy", "variants: [decorrelated, exponential]", "variants: [decorrelated, exponential, linear]"},
	{"default variant", "  strategy: exponential\n  variants", "  strategy: grpc\n  variants"},
	{"bad constants", "exponential: {base: 50ms, cap: 500ms, max_attempts: 3}\n\nevents", "exponential: {base: 5s, cap: 500ms, max_attempts: 3}\n\nevents"},
	{"event outside", "  - at: 58m", "  - at: 2h"},
	{"two kinds", "  - at: 58m\n", "  - at: 58m\n    scrape_gap: {duration: 1m}\n"},
	{"unknown component", "component: dten-gateway, version", "component: pay-sdk, version"},
	{"flag reason", "      reason: enable the decorrelated strategy\n", ""},
	{"flag actor", "      reason: enable", "      actor: alice\n      reason: enable"},
	{"flag variant", "      strategy: decorrelated", "      strategy: full-jitter"},
	{"onset outside", "onset: 40m", "onset: 3h"},
	{"cause syntax", "causes: [flag:backoff-strategy, component:dten-gateway]", "causes: [backoff-strategy]"},
	{"slo endpoint", "slo: {endpoint: /checkout", "slo: {endpoint: /pay"},
	{"benefit without brownout", "  - at: 58m\n    brownout: {duration: 5m, down: 1500ms, up: 1s, failure_probability: 0.97}\n", ""},
	{"policy file missing", "policy_file: ../scenarios/tailguard/policy.yml", "policy_file: nope.yml"},
	{"no detector", "  detector_file: ../scenarios/tailguard/detector.yml\n", ""},
	{"two documents", "name: tiny", "name: tiny\n---\nname: other"},
}

func TestScenarioErrorsGolden(t *testing.T) {
	base, err := os.ReadFile("testdata/tiny.yml")
	if err != nil {
		t.Fatal(err)
	}
	read := func(p string) ([]byte, error) { return os.ReadFile(filepath.Join("testdata", p)) }
	var got bytes.Buffer
	for _, c := range invalidCases {
		if !bytes.Contains(base, []byte(c.old)) {
			t.Fatalf("%s: %q not in tiny.yml", c.name, c.old)
		}
		_, err := ParseScenario(bytes.Replace(base, []byte(c.old), []byte(c.new), 1), read)
		if err == nil {
			t.Errorf("%s: accepted", c.name)
			continue
		}
		fmt.Fprintf(&got, "%s: %v\n", c.name, strings.ReplaceAll(err.Error(), "\n", " "))
	}
	goldenfile.Check(t, filepath.Join("testdata", "scenario_errors.golden"), got.Bytes(), *update)
}

func FuzzParseScenario(f *testing.F) {
	base, err := os.ReadFile("testdata/tiny.yml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(base)
	f.Add([]byte("name: x\nduration: 1h\n"))
	f.Add([]byte("events: [{at: 1m, flags: {}}]"))
	read := func(string) ([]byte, error) { return nil, os.ErrNotExist }
	f.Fuzz(func(t *testing.T, b []byte) {
		sc, err := ParseScenario(b, read)
		if err == nil && sc == nil {
			t.Fatal("nil scenario without error")
		}
	})
}
