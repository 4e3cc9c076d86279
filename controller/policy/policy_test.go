package policy

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	goldenfile "github.com/tailguard/tailguard/internal/golden"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func TestLoadExample(t *testing.T) {
	p, err := LoadFile("../testdata/policy.example.yml")
	if err != nil {
		t.Fatalf("example policy: %v", err)
	}
	s, ok := p.Service("shop")
	if !ok {
		t.Fatal("service shop missing")
	}
	if s.Mode != ModeAuto || s.Upstream != "payments" {
		t.Errorf("mode %q upstream %q", s.Mode, s.Upstream)
	}
	lat, ok := s.SLO("checkout-latency")
	if !ok || lat.Value() != 0.4 || lat.Objective.Quantile != 0.99 || !lat.DependsOnUpstream() {
		t.Errorf("checkout-latency = %+v", lat)
	}
	if search, _ := s.SLO("search-latency"); search.DependsOnUpstream() {
		t.Error("search-latency should not depend on the upstream")
	}
	if got := time.Duration(s.Backoff.Base.MaxStep); got != 50*time.Millisecond {
		t.Errorf("base.maxStep = %v", got)
	}
	if s.Backoff.Resilience == nil || time.Duration(s.Backoff.Resilience.MinRetrySpan) != 3*time.Second {
		t.Errorf("resilience = %+v", s.Backoff.Resilience)
	}
	if !s.Restore.Enabled || time.Duration(s.Restore.HoldTime) != 30*time.Minute {
		t.Errorf("restore = %+v", s.Restore)
	}
	if got := s.Flags.Strategy.Rollout; len(got) != 5 || got[0] != 100 || got[4] != 0 {
		t.Errorf("rollout = %v", got)
	}
}

func TestDefaults(t *testing.T) {
	p, err := Parse([]byte(`
services:
  - name: shop
    upstream: payments
    slos:
      - name: p99
        signal: latency
        objective: {threshold: 400ms, window: 5m}
    flags:
      strategy: {key: backoff-strategy, newVariant: decorrelated, oldVariant: exponential, rollout: [100, 0]}
`))
	if err != nil {
		t.Fatal(err)
	}
	s := p.Services[0]
	want := Service{Mode: ModeObserve, Cooldown: DefaultCooldown, EvaluationWindow: DefaultEvaluationWindow,
		MaxActionsPerHour: DefaultMaxActionsPerHour, Hysteresis: Hysteresis{Exit: DefaultExitMargin}}
	if s.Mode != want.Mode || s.Cooldown != want.Cooldown || s.EvaluationWindow != want.EvaluationWindow ||
		s.MaxActionsPerHour != want.MaxActionsPerHour || s.Hysteresis != want.Hysteresis {
		t.Errorf("defaults: got %+v", s)
	}
	if s.SLOs[0].Objective.Quantile != DefaultQuantile || s.Verification.MinImprovement != DefaultMinImprovement ||
		s.Attribution.MinConfidence != DefaultMinConfidence || s.Restore.Enabled {
		t.Errorf("defaults: got %+v", s)
	}
	if s.Backoff.Tunable() {
		t.Error("no bound given, nothing should be tunable")
	}
}

// TestInvalidGolden checks the errors of every file in testdata/invalid
// against its .golden file (go test -update rewrites them).
func TestInvalidGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/invalid/*.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no test files: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := LoadFile(f)
			if err == nil {
				t.Fatal("invalid policy accepted")
			}
			got := err.Error() + "\n"
			goldenfile.Check(t, strings.TrimSuffix(f, ".yml")+".golden", []byte(got), *update)
		})
	}
}

func TestValidationErrorFields(t *testing.T) {
	_, err := LoadFile("testdata/invalid/bounds.yml")
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("got %T %v, want *ValidationError", err, err)
	}
	var paths []string
	for _, fe := range ve.Errors {
		paths = append(paths, fe.Path)
	}
	for _, want := range []string{"services[0].backoff.base.min", "services[0].backoff.cap.max", "services[0].backoff.maxAttempts.max"} {
		found := false
		for _, p := range paths {
			found = found || p == want
		}
		if !found {
			t.Errorf("no error for %s in %v", want, paths)
		}
	}
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Error("errors.As(*FieldError) should find the first field error")
	}
}

func TestValidateAfterEdit(t *testing.T) {
	p, err := LoadFile("../testdata/policy.example.yml")
	if err != nil {
		t.Fatal(err)
	}
	p.Services[0].Backoff.Cap.Max = model.Duration(10 * time.Millisecond)
	err = p.Validate()
	if err == nil || !strings.Contains(err.Error(), "services[0].backoff.cap.max: must be ≥ min (500ms), got 10ms") {
		t.Errorf("got %v", err)
	}
}

func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/invalid/*.yml")
	seeds = append(seeds, "../testdata/policy.example.yml")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		// A policy that parsed must validate again, unchanged.
		if err := p.Validate(); err != nil {
			t.Fatalf("parsed policy does not validate: %v", err)
		}
	})
}
