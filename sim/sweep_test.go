package sim

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/common/model"
)

func TestNoActionWrites(t *testing.T) {
	start := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	sc := &Scenario{Start: start, Truth: Truth{NoAction: []WindowSpec{{From: model.Duration(time.Hour), To: model.Duration(3 * time.Hour)}}}}
	m := func(min int) time.Time { return start.Add(time.Duration(min) * time.Minute) }
	for _, tc := range []struct {
		name          string
		writes        []Write
		bad, probeCnt int
	}{
		{"none", nil, 0, 0},
		{"outside the window", []Write{{At: m(30), Action: "tune", Incident: "a"}, {At: m(200), Action: "shrink", Incident: "a"}}, 0, 0},
		{"one write inside", []Write{{At: m(70), Action: "tune", Incident: "a"}}, 1, 0},
		{"probe undone in time", []Write{{At: m(70), Action: "tune", Incident: "a"}, {At: m(85), Action: "undo", Incident: "a"}}, 0, 1},
		{"probe rolled back in time", []Write{{At: m(70), Action: "tune", Incident: "a"}, {At: m(90), Action: "rollback", Incident: "a"}}, 0, 1},
		{"undone too late", []Write{{At: m(70), Action: "tune", Incident: "a"}, {At: m(91), Action: "undo", Incident: "a"}}, 2, 0},
		{"undo of another incident", []Write{{At: m(70), Action: "tune", Incident: "a"}, {At: m(80), Action: "undo", Incident: "b"}}, 2, 0},
		{"second probe of the incident", []Write{
			{At: m(70), Action: "tune", Incident: "a"}, {At: m(80), Action: "undo", Incident: "a"},
			{At: m(100), Action: "shrink", Incident: "a"}, {At: m(110), Action: "undo", Incident: "a"}}, 2, 1},
		{"operator write without incident", []Write{{At: m(70), Action: "set"}}, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad, probes := noActionWrites(sc, tc.writes)
			if bad != tc.bad || probes != tc.probeCnt {
				t.Errorf("noActionWrites = %d bad, %d probes; want %d, %d", bad, probes, tc.bad, tc.probeCnt)
			}
		})
	}
}

func TestScoreClass(t *testing.T) {
	start := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	d := func(v time.Duration) *time.Duration { return &v }
	regression := &Scenario{Name: "r", Start: start, Duration: model.Duration(3 * time.Hour),
		Truth: Truth{Regression: true, Onset: model.Duration(time.Hour), Causes: []string{"flag:backoff-strategy"},
			SLO: SLOSpec{Threshold: model.Duration(400 * time.Millisecond)}}}
	null := &Scenario{Name: "n", Start: start, Duration: model.Duration(10 * time.Hour),
		Truth: Truth{NoAction: []WindowSpec{{From: 0, To: model.Duration(10 * time.Hour)}}}}
	results := []ScenarioResult{
		{Scenario: regression, Name: "r", Runs: map[Mode]*Result{ModeTailguard: {
			Writes:        []Write{{At: start.Add(70 * time.Minute), Action: "shrink", Incident: "i"}},
			Series:        Series{Latency: []Point{{T: start.Add(65 * time.Minute), V: 0.5}, {T: start.Add(66 * time.Minute), V: 0.45}, {T: start.Add(80 * time.Minute), V: 0.5}}},
			Verifications: []Verification{{Calibration: []Calibration{{Predicted: 0.5, Verified: 0.3, Objective: 0.4}}}},
		}}, Rows: []Row{
			{Guard: GuardTailguard, Detected: "y", Delay: d(2 * time.Minute), Attribution: "y", SLOMinutes: 5, Benefit: math.NaN()},
			{Guard: BaselineRevert, Detected: "y", SLOMinutes: 8, Benefit: math.NaN()},
		}},
		{Scenario: null, Name: "n", Runs: map[Mode]*Result{ModeTailguard: {
			Writes: []Write{{At: start.Add(5 * time.Hour), Action: "tune", Incident: "j"}},
		}}, Rows: []Row{{Guard: GuardTailguard, Detected: "-", FalseAlarms: 1, Benefit: math.NaN()}}},
	}
	row := ScoreClass(SweepClass{Name: "mixed", Number: 99}, results)
	if row.Draws != 2 || row.Regressions != 1 || row.Detected != 1 || row.Top1 != 1 {
		t.Errorf("draws/regressions/detected/top1 = %d/%d/%d/%d, want 2/1/1/1", row.Draws, row.Regressions, row.Detected, row.Top1)
	}
	if row.MedianDelay == nil || *row.MedianDelay != 2*time.Minute {
		t.Errorf("median delay %v, want 2m", row.MedianDelay)
	}
	if row.FalseAlarms != 1 || row.NullHours != 11 {
		t.Errorf("false alarms %d over %v h, want 1 over 11", row.FalseAlarms, row.NullHours)
	}
	if want := 30 * 24 / 11.0; math.Abs(row.FalsePer30Days-want) > 1e-9 {
		t.Errorf("false alarms per 30 days %v, want %v", row.FalsePer30Days, want)
	}
	if row.Writes != 2 || row.NoActionWrites != 1 {
		t.Errorf("writes %d, no-action writes %d; want 2, 1", row.Writes, row.NoActionWrites)
	}
	if row.SLOMinutes != 5 || row.RevertSLOMinutes != 8 || row.RevertDraws != 1 {
		t.Errorf("SLO minutes %d vs revert %d over %d draws; want 5 vs 8 over 1", row.SLOMinutes, row.RevertSLOMinutes, row.RevertDraws)
	}
	if row.MaxSLOMinutesToAct != 2 {
		t.Errorf("SLO minutes before the first write %d, want 2", row.MaxSLOMinutesToAct)
	}
	if !math.IsNaN(row.Benefit) {
		t.Errorf("benefit %v without any benefit measured, want NaN", row.Benefit)
	}
	if row.CalibrationN != 1 || math.Abs(row.Calibration-0.5) > 1e-9 {
		t.Errorf("calibration %v from %d, want 0.5 from 1", row.Calibration, row.CalibrationN)
	}
	if len(row.Failures) != 2 {
		t.Errorf("failures %q, want the false alarm and the no-action write", row.Failures)
	}
}

func TestAmbiguityAcceptable(t *testing.T) {
	sc := &Scenario{Truth: Truth{Causes: []string{"flag:backoff-strategy", "flag:backoff-constants", "component:dten-gateway"}}}
	for _, tc := range []struct {
		candidates string
		want       bool
	}{
		{"flag/backoff-constants@2026-03-02T09:10:41Z, flag/backoff-strategy@2026-03-02T09:10:41Z, version/dten-gateway@2026-03-02T09:11:41Z", true},
		{"flag/backoff-strategy@2026-03-02T09:10:41Z, version/pay-sdk@2026-03-02T09:11:41Z", false},
		{"declared/dten-gateway@2026-03-02T09:10:00Z", true},
		{"", false},
		{"nonsense", false},
	} {
		if got := ambiguityAcceptable(sc, tc.candidates); got != tc.want {
			t.Errorf("ambiguityAcceptable(%q) = %v, want %v", tc.candidates, got, tc.want)
		}
	}
}
