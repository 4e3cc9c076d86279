package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testDir holds a very small scenario; its tailguard configuration is the
// embedded scenarios' (relative paths resolve from its directory).
const testDir = "testdata"

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(append([]string{"--sync-timeout", "10s"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestList(t *testing.T) {
	code, out, errOut := runCLI(t, "list")
	if code != 0 || !strings.Contains(out, "story") || !strings.Contains(out, "diurnal-noise      8h       no regression") {
		t.Errorf("list: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = runCLI(t, "--scenario-dir", testDir, "list")
	if code != 0 || !strings.Contains(out, "mini") || strings.Contains(out, "story") {
		t.Errorf("list --scenario-dir: exit %d, %q", code, out)
	}
}

func TestRunAndReport(t *testing.T) {
	report := filepath.Join(t.TempDir(), "mini.html")
	code, out, errOut := runCLI(t, "--scenario-dir", testDir, "run", "mini", "--report", report)
	if code != 0 {
		t.Fatalf("run: exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		`Timeline of "mini" (tailguard run, seed 5)`, "mini      tailguard", "T+10m", "flag change by operator:deploy: backoff-constants.exponential = base 40ms",
		"SCENARIO  GUARD", "mini      revert-on-alert", "CPU", "peak RSS",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("run output lacks %q:\n%s", want, out)
		}
	}
	b, err := os.ReadFile(report)
	if err != nil || !bytes.Contains(b, []byte("<svg")) {
		t.Errorf("report: %v, %d bytes", err, len(b))
	}
}

func TestBenchJSON(t *testing.T) {
	code, out, errOut := runCLI(t, "--scenario-dir", testDir, "-o", "json", "--seed", "9", "bench", "--scenario", "mini")
	if code != 0 {
		t.Fatalf("bench: exit %d: %s", code, errOut)
	}
	var v struct {
		Results []struct {
			Scenario string `json:"scenario"`
			Rows     []struct {
				Guard   string   `json:"guard"`
				Benefit *float64 `json:"benefit"`
			} `json:"rows"`
			Runs map[string]struct {
				Seed uint64 `json:"seed"`
			} `json:"runs"`
		} `json:"results"`
		Usage struct {
			CPU    int64 `json:"cpu_ns"`
			MaxRSS int64 `json:"max_rss_kib"`
		} `json:"usage"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("bench -o json: %v\n%s", err, out)
	}
	if len(v.Results) != 1 || v.Results[0].Scenario != "mini" || len(v.Results[0].Rows) != 5 || v.Results[0].Rows[0].Guard != "tailguard" || v.Usage.CPU <= 0 || v.Usage.MaxRSS <= 0 {
		t.Errorf("bench JSON = %+v", v)
	}
	for mode, r := range v.Results[0].Runs {
		if r.Seed != 9 {
			t.Errorf("run %s used seed %d, want 9", mode, r.Seed)
		}
	}
}

func TestDemoWithoutReport(t *testing.T) {
	code, out, errOut := runCLI(t, "--scenario-dir", testDir, "demo", "--scenario", "mini", "--report", "")
	if code != 0 || !strings.Contains(out, `Outcome of "mini"`) || strings.Contains(out, "HTML report") {
		t.Errorf("demo: exit %d, stderr %q, stdout:\n%s", code, errOut, out)
	}
}

func TestErrors(t *testing.T) {
	if code, _, errOut := runCLI(t, "--bogus"); code != 2 || !strings.Contains(errOut, "bogus") {
		t.Errorf("unknown flag: exit %d, %q", code, errOut)
	}
	if code, _, errOut := runCLI(t, "run", "no-such-scenario"); code != 1 || !strings.Contains(errOut, "no-such-scenario") {
		t.Errorf("unknown scenario: exit %d, %q", code, errOut)
	}
	if code, _, _ := runCLI(t, "-o", "yaml", "list"); code != 2 {
		t.Errorf("bad output format: exit %d", code)
	}
}
