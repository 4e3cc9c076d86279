package sim

import (
	"context"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tailguard/tailguard/flags"
)

// SweepClass is one class of situations with its drawn scenarios.
type SweepClass struct {
	Name      string
	Number    int
	Summary   string
	Scenarios []*Scenario
}

// ClassRow is one line of the sweep table: tailguard's judgement over all
// draws of a class.
type ClassRow struct {
	Class   string `json:"class"`
	Number  int    `json:"number"`
	Draws   int    `json:"draws"`
	Summary string `json:"summary"`
	// Regressions counts the draws with a regression; Detected those
	// tailguard detected, with the median delay.
	Regressions int            `json:"regressions"`
	Detected    int            `json:"detected"`
	MedianDelay *time.Duration `json:"median_delay_ns,omitempty"`
	// Top1 counts the detected regressions whose first attributed finding
	// named an acceptable cause ("none" for none of the known changes).
	Top1 int `json:"top1"`
	// FalseAlarms are alarm episodes the truth does not explain, over
	// NullHours of traffic without a regression (before the onset, or the
	// whole run); FalsePer30Days extrapolates.
	FalseAlarms    int     `json:"false_alarms"`
	NullHours      float64 `json:"null_hours"`
	FalsePer30Days float64 `json:"false_alarms_per_30d"`
	// Writes are tailguard's flag writes; NoActionWrites those inside a
	// no-action window, less single probing writes undone within two
	// verification windows (counted in Probes).
	Writes         int `json:"writes"`
	NoActionWrites int `json:"no_action_writes"`
	Probes         int `json:"probes"`
	// SLOMinutes of tailguard and of revert-on-alert, summed over the
	// draws where both ran (regressions with a flag among the causes).
	SLOMinutes       int `json:"slo_minutes"`
	RevertSLOMinutes int `json:"revert_slo_minutes"`
	RevertDraws      int `json:"revert_draws"`
	// MaxSLOMinutesToAct is the largest number of SLO minutes spent before
	// tailguard's first write, over the draws it wrote in.
	MaxSLOMinutesToAct int `json:"max_slo_minutes_to_act"`
	// Benefit is the mean share of the new strategy's brown-out benefit
	// kept, over the draws that have one (NaN: none).
	Benefit float64 `json:"benefit"`
	// Calibration is the mean |verified − predicted| / objective over the
	// verified predictions of tailguard's actions (NaN: none), from
	// CalibrationN predictions.
	Calibration  float64 `json:"calibration_error"`
	CalibrationN int     `json:"calibration_n"`
	// Failures lists the draws that missed, with why.
	Failures []string `json:"failures,omitempty"`
}

// SweepModes are the runs a sweep needs: tailguard always; revert-on-alert
// where a flag is among the causes (to compare SLO minutes); the untuned
// new strategy and the legacy counterfactual where a benefit is measured.
func SweepModes(sc *Scenario, _ bool) []Mode {
	ms := []Mode{ModeTailguard}
	if slices.ContainsFunc(sc.Truth.Causes, func(c string) bool { return strings.HasPrefix(c, "flag:") }) {
		ms = append(ms, ModeRevert)
	}
	if sc.Truth.Benefit {
		ms = append(ms, ModeUnguarded, ModeLegacy)
	}
	return ms
}

// Sweep runs every class's scenarios with tailguard (and the runs
// SweepModes names) and scores each class.
func Sweep(ctx context.Context, classes []SweepClass, opts BenchOptions) ([]ClassRow, []ScenarioResult, error) {
	var all []*Scenario
	for _, c := range classes {
		all = append(all, c.Scenarios...)
	}
	if opts.Modes == nil {
		opts.Modes = SweepModes
	}
	results, err := RunScenarios(ctx, all, opts)
	if err != nil {
		return nil, nil, err
	}
	var rows []ClassRow
	i := 0
	for _, c := range classes {
		rows = append(rows, ScoreClass(c, results[i:i+len(c.Scenarios)]))
		i += len(c.Scenarios)
	}
	return rows, results, nil
}

// ScoreClass aggregates the results of one class's draws.
func ScoreClass(c SweepClass, results []ScenarioResult) ClassRow {
	row := ClassRow{Class: c.Name, Number: c.Number, Summary: c.Summary, Draws: len(results)}
	var delays []time.Duration
	var benefits, calib []float64
	for _, r := range results {
		sc, t := r.Scenario, r.Runs[ModeTailguard]
		if t == nil {
			continue
		}
		var tg, rv *Row
		for i := range r.Rows {
			switch r.Rows[i].Guard {
			case GuardTailguard:
				tg = &r.Rows[i]
			case BaselineRevert:
				rv = &r.Rows[i]
			}
		}
		if tg == nil {
			continue
		}
		fail := func(why string) { row.Failures = append(row.Failures, r.Name+": "+why) }
		null := sc.Duration
		if sc.Truth.Regression {
			null = sc.Truth.Onset
			row.Regressions++
			if tg.Detected == "y" {
				row.Detected++
				delays = append(delays, *tg.Delay)
				if tg.Attribution == "y" {
					row.Top1++
				} else {
					fail("attributed to " + firstCause(sc, t.Detections, *tg.Delay))
				}
			} else {
				fail("not detected")
			}
		}
		row.NullHours += time.Duration(null).Hours()
		row.FalseAlarms += tg.FalseAlarms
		if tg.FalseAlarms > 0 {
			fail(plural(tg.FalseAlarms, "false alarm"))
		}
		row.Writes += len(t.Writes)
		bad, probes := noActionWrites(sc, t.Writes)
		row.NoActionWrites += bad
		row.Probes += probes
		if bad > 0 {
			fail(plural(bad, "write") + " in a no-action window")
		}
		if rv != nil && sc.Truth.Regression {
			row.SLOMinutes += tg.SLOMinutes
			row.RevertSLOMinutes += rv.SLOMinutes
			row.RevertDraws++
		}
		if len(t.Writes) > 0 {
			row.MaxSLOMinutesToAct = max(row.MaxSLOMinutesToAct, sloMinutesBefore(sc, t, t.Writes[0].At))
		}
		if !math.IsNaN(tg.Benefit) {
			benefits = append(benefits, tg.Benefit)
		}
		for _, v := range t.Verifications {
			for _, cal := range v.Calibration {
				if e := cal.Error(); !math.IsNaN(e) {
					calib = append(calib, e)
				}
			}
		}
	}
	if len(delays) > 0 {
		slices.Sort(delays)
		d := delays[len(delays)/2]
		row.MedianDelay = &d
	}
	if row.NullHours > 0 {
		row.FalsePer30Days = float64(row.FalseAlarms) / row.NullHours * 30 * 24
	}
	row.Benefit, row.Calibration, row.CalibrationN = mean(benefits), mean(calib), len(calib)
	return row
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// firstCause names the cause of the first attributed finding after the
// detection, for the failure list.
func firstCause(sc *Scenario, ds []Detection, delay time.Duration) string {
	from := sc.At(sc.Truth.Onset).Add(delay)
	for _, d := range ds {
		if !d.At.Before(from) && d.Finding.Cause != "" {
			return d.Finding.Cause
		}
	}
	return "nothing"
}

// ProbeWindows is how many verification windows a probing write may stay
// before its undo.
const ProbeWindows = 2

// undoActions are the journal actions that take a write back: tailguard's
// undo of its own probing write, or a rollback.
var undoActions = []string{"undo", flags.ActionRollback}

func isUndo(action string) bool { return slices.Contains(undoActions, action) }

// noActionWrites counts the writes inside no-action windows, except one
// probing write per incident that was undone (an undo or rollback write of
// the same incident) within ProbeWindows verification windows: those pairs
// count as probes.
func noActionWrites(sc *Scenario, ws []Write) (bad, probes int) {
	window := 10 * time.Minute
	if sc.Policy != nil {
		if svc, ok := sc.Policy.Service(sc.Service.Job); ok && svc.EvaluationWindow > 0 {
			window = time.Duration(svc.EvaluationWindow)
		}
	}
	inNoAction := func(t time.Time) bool {
		for _, na := range sc.Truth.NoAction {
			if !t.Before(sc.At(na.From)) && t.Before(sc.At(na.To)) {
				return true
			}
		}
		return false
	}
	excused := map[int]bool{}
	probed := map[string]bool{}
	for i, w := range ws {
		if !inNoAction(w.At) || isUndo(w.Action) || w.Incident == "" || probed[w.Incident] {
			continue
		}
		for j := i + 1; j < len(ws); j++ {
			u := ws[j]
			if u.Incident == w.Incident && isUndo(u.Action) && u.At.Sub(w.At) <= ProbeWindows*window {
				excused[i], excused[j], probed[w.Incident] = true, true, true
				probes++
				break
			}
		}
		probed[w.Incident] = true
	}
	for i, w := range ws {
		if inNoAction(w.At) && !excused[i] {
			bad++
		}
	}
	return bad, probes
}

// sloMinutesBefore counts the SLO minutes of a run before t.
func sloMinutesBefore(sc *Scenario, r *Result, t time.Time) int {
	thr := time.Duration(sc.Truth.SLO.Threshold).Seconds()
	excl := exclusions(sc)
	n := 0
	for _, p := range r.Series.Latency {
		if p.T.Before(t) && p.V > thr && !excluded(p.T, excl) {
			n++
		}
	}
	return n
}
