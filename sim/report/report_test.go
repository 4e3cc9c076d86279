package report

import (
	"bytes"
	"flag"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/sim"

	goldenfile "github.com/tailguard/tailguard/internal/golden"
)

var update = flag.Bool("update", false, "rewrite golden files")

var start = time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)

func fixture() sim.ScenarioResult {
	sc := &sim.Scenario{Name: "story", Description: "A <test> scenario.", Start: start, Duration: model.Duration(2 * time.Hour)}
	sc.Upstream.Name = "payments"
	sc.Truth = sim.Truth{Regression: true, Onset: model.Duration(time.Hour), Causes: []string{"flag:backoff-strategy"}, Benefit: true,
		SLO: sim.SLOSpec{Endpoint: "/checkout", Quantile: 0.99, Threshold: model.Duration(400 * time.Millisecond), Window: model.Duration(5 * time.Minute)}}
	pts := func(f func(i int) float64) []sim.Point {
		var out []sim.Point
		for i := range 120 {
			out = append(out, sim.Point{T: start.Add(time.Duration(i) * time.Minute), V: f(i)})
		}
		return out
	}
	run := func(mode sim.Mode, high float64) *sim.Result {
		return &sim.Result{
			Scenario: "story", Mode: mode, Seed: 7, Start: start, End: start.Add(2 * time.Hour),
			Timeline: []sim.Entry{
				{At: start, Kind: "state", Text: "start"},
				{At: start.Add(time.Hour), Kind: "change", Label: "→ decorrelated", Text: "flag change by operator:deploy"},
				{At: start.Add(time.Hour + 3*time.Minute), Kind: "detection", Label: "detected", Text: "checkout_latency regressed"},
				{At: start.Add(time.Hour + 10*time.Minute), Kind: "action", Label: "tune", Text: "flag write r3 by controller (tune)"},
			},
			Series: sim.Series{
				Step: time.Minute,
				Latency: pts(func(i int) float64 {
					if i >= 60 && i < 70 {
						return high
					}
					if i == 5 {
						return math.NaN()
					}
					return 0.27
				}),
				RetryRatio:   pts(func(int) float64 { return 0.03 }),
				OtherLatency: pts(func(int) float64 { return 0.2 }),
				NewShare:     pts(func(i int) float64 { return float64(min(i/60, 1)) }),
			},
			Brownouts: []sim.BrownoutResult{{From: start.Add(90 * time.Minute), To: start.Add(100 * time.Minute), Success: 0.8}},
		}
	}
	d := 3 * time.Minute
	return sim.ScenarioResult{
		Scenario: sc, Name: "story",
		Runs: map[sim.Mode]*sim.Result{sim.ModeTailguard: run(sim.ModeTailguard, 0.5), sim.ModeUnguarded: run(sim.ModeUnguarded, 0.6)},
		Rows: []sim.Row{
			{Scenario: "story", Guard: "tailguard", Detected: "y", Delay: &d, Attribution: "y", Actions: 1, SLOMinutes: 10, Restored: "12m", Benefit: 0.93},
			{Scenario: "story", Guard: "static threshold", Detected: "n", Attribution: "n/a", SLOMinutes: 60, Restored: "never", Benefit: math.NaN(),
				Notes: []string{"a note"}},
		},
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	goldenfile.Check(t, filepath.Join("testdata", name), got, *update)
}

func TestTextGolden(t *testing.T) {
	r := fixture()
	var b bytes.Buffer
	if err := Timeline(&b, r.Scenario, Primary(r)); err != nil {
		t.Fatal(err)
	}
	if err := Summary(&b, r); err != nil {
		t.Fatal(err)
	}
	golden(t, "summary.golden", b.Bytes())
}

func TestHTML(t *testing.T) {
	var b bytes.Buffer
	if err := HTML(&b, fixture(), "wall 1s"); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"<!DOCTYPE html>", "A &lt;test&gt; scenario.", "<svg", `class="marker action"`, "tune", "→ decorrelated",
		"SLO 400ms", "flag write r3 by controller (tune)", "<td>tailguard</td><td>y</td><td>3m</td>", "93%", "wall 1s",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(out, "<test>") {
		t.Error("description not escaped")
	}
	empty := fixture()
	empty.Runs = nil
	if err := HTML(&b, empty, ""); err == nil {
		t.Error("a report without runs rendered")
	}
}

func TestRel(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "T+0m", 90 * time.Second: "T+1m30s", -15 * time.Minute: "T-15m", 62 * time.Minute: "T+1h02m",
	} {
		if got := rel(d); got != want {
			t.Errorf("rel(%s) = %q, want %q", d, got, want)
		}
	}
}
