package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/tailguard/tailguard/flags"
	"github.com/tailguard/tailguard/sidecar"
)

var testAddrs = Addrs{Prometheus: "127.0.0.1:1", Alertmanager: "127.0.0.1:2", Shop: "127.0.0.1:3", Tailguard: "127.0.0.1:4", Grafana: "127.0.0.1:5"}

// The sidecar configuration and policy of the run load as the sidecar
// loads them, and the flag file is valid: a broken one fails here, in the
// unit tests, rather than minutes into the end-to-end run.
func TestRunConfiguration(t *testing.T) {
	for _, native := range []bool{false, true} {
		t.Run(map[bool]string{false: "classic", true: "native histograms"}[native], func(t *testing.T) {
			testRunConfiguration(t, TemplateData{Addrs: testAddrs, NativeHistograms: native})
		})
	}
}

func testRunConfiguration(t *testing.T, data TemplateData) {
	dir := t.TempDir()
	b, err := Render("testdata/tailguard.yml.tmpl", data)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "url: http://127.0.0.1:1") {
		t.Errorf("Prometheus address not substituted:\n%s", b)
	}
	copyFile(t, "testdata/policy.yml", filepath.Join(dir, "policy.yml"))
	if err := os.Mkdir(filepath.Join(dir, "flags"), 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, "testdata/flags.json", filepath.Join(dir, "flags", "flags.json"))
	cfg, err := sidecar.ParseConfig(b, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Services) != 1 || cfg.Services[0].Name != "shop" {
		t.Errorf("services = %+v", cfg.Services)
	}
	if native := strings.Contains(string(b), "histogram: native"); native != data.NativeHistograms {
		t.Errorf("native histogram signals %v, want %v", native, data.NativeHistograms)
	}
	v, err := flags.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	fb, _ := os.ReadFile(filepath.Join(dir, "flags", "flags.json"))
	if _, err := v.Parse(fb); err != nil {
		t.Errorf("flag file: %v", err)
	}

	pb, err := Render("testdata/prometheus.yml.tmpl", data)
	if err != nil {
		t.Fatal(err)
	}
	var prom map[string]any
	if err := yaml.Unmarshal(pb, &prom); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"'127.0.0.1:2'", "'127.0.0.1:3'", "'127.0.0.1:4'", "scrape_interval: 1s"} {
		if !strings.Contains(string(pb), want) {
			t.Errorf("prometheus.yml lacks %s:\n%s", want, pb)
		}
	}
	if native := strings.Contains(string(pb), "scrape_native_histograms: true"); native != data.NativeHistograms {
		t.Errorf("prometheus.yml scrapes native histograms: %v, want %v", native, data.NativeHistograms)
	}
	if _, err := Render("testdata/prometheus.yml.tmpl", struct{}{}); err == nil {
		t.Error("missing template data accepted")
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
