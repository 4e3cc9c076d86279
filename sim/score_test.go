package sim

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/common/model"
)

// scoreScenario is a regression at 1h with a brown-out at 2h for 10m.
func scoreScenario(regression bool) *Scenario {
	sc := &Scenario{Start: DefaultStart, Duration: model.Duration(3 * time.Hour), EvaluationInterval: model.Duration(time.Minute)}
	sc.Truth.SLO = SLOSpec{Endpoint: "/checkout", Quantile: 0.99, Threshold: model.Duration(400 * time.Millisecond), Window: model.Duration(5 * time.Minute)}
	if regression {
		sc.Truth.Regression, sc.Truth.Onset, sc.Truth.Causes = true, model.Duration(time.Hour), []string{"flag:backoff-strategy"}
	}
	sc.Events = []Event{{At: model.Duration(2 * time.Hour), Brownout: &BrownoutEvent{Duration: model.Duration(10 * time.Minute)}}}
	return sc
}

func at(d time.Duration) time.Time { return DefaultStart.Add(d) }

func TestDetection(t *testing.T) {
	tests := []struct {
		name       string
		regression bool
		starts     []time.Duration
		detected   string
		delay      time.Duration
		falseAl    int
	}{
		{"nothing", true, nil, "n", 0, 0},
		{"detected", true, []time.Duration{time.Hour + 4*time.Minute, time.Hour + 30*time.Minute}, "y", 4 * time.Minute, 0},
		{"just before onset counts", true, []time.Duration{time.Hour - time.Minute}, "y", 0, 0},
		{"early alarm is false", true, []time.Duration{30 * time.Minute, time.Hour + 2*time.Minute}, "y", 2 * time.Minute, 1},
		{"brown-out alarms ignored", false, []time.Duration{2*time.Hour + 3*time.Minute, 2*time.Hour + 20*time.Minute}, "-", 0, 0},
		{"no regression", false, []time.Duration{10 * time.Minute, 2*time.Hour + 40*time.Minute}, "-", 0, 2},
	}
	for _, tt := range tests {
		var starts []time.Time
		for _, s := range tt.starts {
			starts = append(starts, at(s))
		}
		det, delay, fa := detection(scoreScenario(tt.regression), starts)
		if det != tt.detected || fa != tt.falseAl || (delay == nil) != (det != "y") || (delay != nil && *delay != tt.delay) {
			t.Errorf("%s: detection = %s, %v, %d; want %s, %s, %d", tt.name, det, delay, fa, tt.detected, tt.delay, tt.falseAl)
		}
	}
}

func series(from time.Duration, vals ...float64) []Point {
	out := make([]Point, len(vals))
	for i, v := range vals {
		out[i] = Point{T: at(from + time.Duration(i)*time.Minute), V: v}
	}
	return out
}

func TestSLOMinutesAndRestore(t *testing.T) {
	sc := scoreScenario(true)
	excl := exclusions(sc)
	// 58m..: two fine minutes, 5 over, then fine for 20 minutes.
	vals := []float64{0.3, 0.3, 0.5, 0.6, 0.5, math.NaN(), 0.45}
	for range 20 {
		vals = append(vals, 0.3)
	}
	pts := series(58*time.Minute, vals...)
	if got := sloMinutes(pts, 0.4, excl); got != 4 {
		t.Errorf("sloMinutes = %d, want 4", got)
	}
	if got := restored(sc, pts, 0.4, excl); got != "5m" {
		t.Errorf("restored = %q, want 5m (onset 1h, fine from 1h05m)", got)
	}
	if got := restored(sc, series(58*time.Minute, 0.3, 0.3, 0.5, 0.5), 0.4, excl); got != "never" {
		t.Errorf("restored = %q, want never", got)
	}
	if got := restored(sc, series(58*time.Minute, 0.3, 0.3, 0.3), 0.4, excl); got != "-" {
		t.Errorf("restored without breach = %q, want -", got)
	}
	if got := restored(scoreScenario(false), pts, 0.4, excl); got != "-" {
		t.Errorf("restored without regression = %q, want -", got)
	}
	// Minutes in a brown-out (and one SLO window after it) do not count.
	if got := sloMinutes(series(2*time.Hour, 2, 2, 2), 0.4, excl); got != 0 {
		t.Errorf("brown-out minutes counted: %d", got)
	}
}

func TestBenefitAndEpisodes(t *testing.T) {
	if got := benefit(0.8, 0.5, 0.85); math.Abs(got-0.3/0.35) > 1e-12 {
		t.Errorf("benefit = %v", got)
	}
	if got := benefit(0.8, 0.5, 0.52); !math.IsNaN(got) {
		t.Errorf("benefit without a benefit to keep = %v, want NaN", got)
	}
	if got := meanSuccess([]BrownoutResult{{Success: 0.5}, {Success: math.NaN()}, {Success: 0.7}}); math.Abs(got-0.6) > 1e-12 {
		t.Errorf("meanSuccess = %v", got)
	}
	ds := []Detection{{At: at(time.Hour)}, {At: at(time.Hour + time.Minute)}, {At: at(time.Hour + 5*time.Minute)}}
	if got := detectionEpisodes(ds, time.Minute); len(got) != 2 || !got[1].Equal(at(time.Hour+5*time.Minute)) {
		t.Errorf("detectionEpisodes = %v", got)
	}
	for d, want := range map[time.Duration]string{30 * time.Second: "30s", 5 * time.Minute: "5m", time.Hour: "1h", 90 * time.Minute: "1h30m", 0: "0s", 61 * time.Second: "1m1s"} {
		if got := fmtDuration(d); got != want {
			t.Errorf("fmtDuration(%s) = %q, want %q", d, got, want)
		}
	}
}
