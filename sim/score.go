package sim

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tailguard/tailguard/sim/baseline"
)

// Guard names in the bench table.
const GuardTailguard = "tailguard"

// Row is one line of the bench table: one guard on one scenario.
type Row struct {
	Scenario string `json:"scenario"`
	Guard    string `json:"guard"`
	// Detected is "y", "n", or "-" when there is nothing to detect.
	Detected string `json:"detected"`
	// Delay is the detection delay after the onset, when detected.
	Delay *time.Duration `json:"delay_ns,omitempty"`
	// Attribution is "y", "n", "n/a" (the guard does not attribute) or
	// "-" (nothing detected).
	Attribution string `json:"attribution"`
	// FalseAlarms counts alarm episodes that the ground truth does not
	// explain (before the onset, or in a scenario without regression);
	// episodes during an upstream brown-out are not counted.
	FalseAlarms int `json:"false_alarms"`
	// Actions counts the guard's flag writes.
	Actions int `json:"actions"`
	// SLOMinutes counts the minutes the SLO quantile over the SLO window
	// was above the threshold, outside brown-outs.
	SLOMinutes int `json:"slo_minutes"`
	// Restored is the time from the onset until the SLO held again for
	// RestoreHold: a duration, "never", or "-" (no regression, or no
	// breach).
	Restored string `json:"restored"`
	// Benefit is the share of the new strategy's brown-out benefit kept:
	// (S − S_legacy)/(S_new − S_legacy) for the checkout success ratio S in
	// the brown-outs; NaN when the scenario has none to keep.
	Benefit float64 `json:"benefit"`
	// Notes explain the row: missed no-action windows, unscored alerts.
	Notes []string `json:"notes,omitempty"`
}

// RestoreHold is how long the SLO must hold to count as restored.
const RestoreHold = 15 * time.Minute

// ScenarioResult is the outcome of all runs of one scenario.
type ScenarioResult struct {
	Scenario *Scenario        `json:"-"`
	Name     string           `json:"scenario"`
	Runs     map[Mode]*Result `json:"runs"`
	Rows     []Row            `json:"rows"`
}

// BenchOptions configure RunScenarios.
type BenchOptions struct {
	Seed uint64
	// NewCycler builds tailguard's cycler; nil leaves tailguard out.
	NewCycler func(Env) (Cycler, error)
	// Until shortens every run (tests).
	Until time.Duration
	// Parallel is the number of runs at once; default GOMAXPROCS.
	Parallel int
	Options  Options
	// Modes chooses the runs of a scenario; nil: Modes.
	Modes func(sc *Scenario, withTailguard bool) []Mode
}

// Modes returns the runs a scenario needs: tailguard (when a cycler is
// given), unguarded (the detect-only baselines and the untuned new
// strategy), revert-on-alert, and the legacy counterfactual when the
// scenario has a benefit to measure.
func Modes(sc *Scenario, withTailguard bool) []Mode {
	var ms []Mode
	if withTailguard {
		ms = append(ms, ModeTailguard)
	}
	ms = append(ms, ModeUnguarded, ModeRevert)
	if sc.Truth.Benefit {
		ms = append(ms, ModeLegacy)
	}
	return ms
}

// RunScenarios runs every scenario in every mode it needs, in parallel,
// and scores the guards.
func RunScenarios(ctx context.Context, scs []*Scenario, opts BenchOptions) ([]ScenarioResult, error) {
	type job struct {
		i  int
		sc *Scenario
		m  Mode
	}
	var jobs []job
	out := make([]ScenarioResult, len(scs))
	for i, sc := range scs {
		out[i] = ScenarioResult{Scenario: sc, Name: sc.Name, Runs: map[Mode]*Result{}}
		modes := Modes
		if opts.Modes != nil {
			modes = opts.Modes
		}
		for _, m := range modes(sc, opts.NewCycler != nil) {
			jobs = append(jobs, job{i, sc, m})
		}
	}
	par := opts.Parallel
	if par <= 0 {
		par = runtime.GOMAXPROCS(0)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
		next     = make(chan job)
	)
	for range par {
		wg.Go(func() {
			for j := range next {
				o := opts.Options
				o.Mode, o.Seed, o.NewCycler, o.Until = j.m, opts.Seed, opts.NewCycler, opts.Until
				res, err := Run(ctx, j.sc, o)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
					cancel()
				}
				if err == nil {
					out[j.i].Runs[j.m] = res
				}
				mu.Unlock()
			}
		})
	}
	for _, j := range jobs {
		if ctx.Err() != nil {
			break
		}
		next <- j
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	for i := range out {
		out[i].Rows = Score(out[i].Scenario, out[i].Runs)
	}
	return out, nil
}

// Score computes the bench rows of a scenario from its runs; rows whose
// run is missing are left out.
func Score(sc *Scenario, runs map[Mode]*Result) []Row {
	var rows []Row
	legacy := runs[ModeLegacy]
	newRun := runs[ModeUnguarded]
	if t := runs[ModeTailguard]; t != nil {
		r := outcome(sc, GuardTailguard, t, legacy, newRun)
		starts := detectionEpisodes(t.Detections, time.Duration(sc.EvaluationInterval))
		r.Detected, r.Delay, r.FalseAlarms = detection(sc, starts)
		r.Attribution = tailguardAttribution(sc, t.Detections, r.Delay)
		rows = append(rows, r)
	}
	if u := newRun; u != nil {
		static := outcome(sc, BaselineStatic, u, legacy, newRun)
		static.Detected, static.Delay, static.FalseAlarms = detection(sc, episodeStarts(u.Alerts[BaselineStatic], ""))
		rows = append(rows, static)

		burn := outcome(sc, BaselineBurnRate, u, legacy, newRun)
		burn.Detected, burn.Delay, burn.FalseAlarms = detection(sc, episodeStarts(u.Alerts[BaselineBurnRate], "TailLatencyBudgetBurn"))
		if n := len(u.Alerts[BaselineBurnRate]) - len(episodeStarts(u.Alerts[BaselineBurnRate], "TailLatencyBudgetBurn")); n > 0 {
			burn.Notes = append(burn.Notes, fmt.Sprintf("%d episodes of other burn-rate alerts (retry ratio) not scored: the SLO under test is latency", n))
		}
		rows = append(rows, burn)

		canary := outcome(sc, BaselineCanary, u, legacy, newRun)
		var fails []time.Time
		for _, v := range u.Verdicts {
			if v.Failed {
				fails = append(fails, v.At)
			}
		}
		canary.Detected, canary.Delay, canary.FalseAlarms = detection(sc, fails)
		if len(u.Verdicts) == 0 {
			canary.Notes = append(canary.Notes, "no change to judge")
		}
		rows = append(rows, canary)
	}
	if rv := runs[ModeRevert]; rv != nil {
		r := outcome(sc, BaselineRevert, rv, legacy, newRun)
		r.Detected, r.Delay, r.FalseAlarms = detection(sc, episodeStarts(rv.Alerts[BaselineStatic], ""))
		r.Attribution = "-"
		if rv.Revert != nil && r.Detected == "y" {
			r.Attribution = yn(slices.Contains(sc.Truth.Causes, rv.Revert.Blamed))
		} else if rv.Revert != nil && !sc.Truth.Regression {
			r.Attribution = "n"
		}
		if rv.Revert != nil && rv.Revert.Note != "" {
			r.Notes = append(r.Notes, rv.Revert.Note)
		}
		rows = append(rows, r)
	}
	return rows
}

// outcome fills the parts of a row that come from the run's data.
func outcome(sc *Scenario, guard string, run, legacy, newRun *Result) Row {
	r := Row{Scenario: sc.Name, Guard: guard, Attribution: "n/a", Actions: len(run.Writes), Benefit: math.NaN()}
	thr := time.Duration(sc.Truth.SLO.Threshold).Seconds()
	excl := exclusions(sc)
	r.SLOMinutes = sloMinutes(run.Series.Latency, thr, excl)
	r.Restored = restored(sc, run.Series.Latency, thr, excl)
	if sc.Truth.Benefit && legacy != nil && newRun != nil {
		r.Benefit = benefit(meanSuccess(run.Brownouts), meanSuccess(legacy.Brownouts), meanSuccess(newRun.Brownouts))
	}
	for _, w := range run.Writes {
		for _, na := range sc.Truth.NoAction {
			if !w.At.Before(sc.At(na.From)) && w.At.Before(sc.At(na.To)) {
				r.Notes = append(r.Notes, fmt.Sprintf("flag write at %s inside a no-action window (%s)", w.At.UTC().Format("15:04"), na.Reason))
			}
		}
	}
	return r
}

func yn(b bool) string {
	if b {
		return "y"
	}
	return "n"
}

// exclusions are the windows in which the SLO endpoint suffers from the
// upstream, not from a change: brown-outs, extended by the SLO window.
func exclusions(sc *Scenario) [][2]time.Time {
	var out [][2]time.Time
	for _, w := range brownoutWindows(sc) {
		out = append(out, [2]time.Time{w[0], w[1].Add(time.Duration(sc.Truth.SLO.Window))})
	}
	return out
}

func excluded(t time.Time, excl [][2]time.Time) bool {
	for _, w := range excl {
		if !t.Before(w[0]) && t.Before(w[1]) {
			return true
		}
	}
	return false
}

// sloMinutes counts the points above thr outside the exclusions.
func sloMinutes(pts []Point, thr float64, excl [][2]time.Time) int {
	n := 0
	for _, p := range pts {
		if p.V > thr && !excluded(p.T, excl) {
			n++
		}
	}
	return n
}

// restored returns the time from the onset until the SLO held for
// RestoreHold after its first breach at or after the onset.
func restored(sc *Scenario, pts []Point, thr float64, excl [][2]time.Time) string {
	if !sc.Truth.Regression {
		return "-"
	}
	onset := sc.At(sc.Truth.Onset)
	breach := -1
	for i, p := range pts {
		if !p.T.Before(onset) && p.V > thr && !excluded(p.T, excl) {
			breach = i
			break
		}
	}
	if breach < 0 {
		return "-"
	}
	for i := breach + 1; i < len(pts); i++ {
		if pts[i].V > thr || math.IsNaN(pts[i].V) || excluded(pts[i].T, excl) {
			continue
		}
		ok := true
		for j := i; j < len(pts) && pts[j].T.Sub(pts[i].T) < RestoreHold; j++ {
			if pts[j].V > thr && !excluded(pts[j].T, excl) {
				ok = false
				break
			}
		}
		if ok {
			return fmtDuration(pts[i].T.Sub(onset))
		}
	}
	return "never"
}

func meanSuccess(bs []BrownoutResult) float64 {
	var sum float64
	n := 0
	for _, b := range bs {
		if !math.IsNaN(b.Success) {
			sum += b.Success
			n++
		}
	}
	if n == 0 {
		return math.NaN()
	}
	return sum / float64(n)
}

// benefit returns (s − legacy)/(untuned − legacy), or NaN when the new
// strategy has no benefit of at least 5 points to keep.
func benefit(s, legacy, untuned float64) float64 {
	if math.IsNaN(s) || math.IsNaN(legacy) || math.IsNaN(untuned) || untuned-legacy < 0.05 {
		return math.NaN()
	}
	return (s - legacy) / (untuned - legacy)
}

// detectionEpisodes returns the starts of runs of cycles with a regressed
// finding.
func detectionEpisodes(ds []Detection, every time.Duration) []time.Time {
	var starts []time.Time
	var last time.Time
	for _, d := range ds {
		if last.IsZero() || d.At.Sub(last) > every {
			starts = append(starts, d.At)
		}
		last = d.At
	}
	return slices.Compact(starts)
}

func episodeStarts(eps []baseline.Episode, labelPrefix string) []time.Time {
	var out []time.Time
	for _, e := range baseline.MergeEpisodes(filterEpisodes(eps, labelPrefix)) {
		out = append(out, e.Start)
	}
	return out
}

func filterEpisodes(eps []baseline.Episode, prefix string) []baseline.Episode {
	var out []baseline.Episode
	for _, e := range eps {
		if strings.HasPrefix(e.Label, prefix) {
			out = append(out, e)
		}
	}
	return out
}

// detection scores alarm starts against the ground truth: the first start
// at or after the onset (less two evaluation intervals) is the detection;
// earlier starts, and all starts without a regression, are false alarms,
// except those in brown-outs.
func detection(sc *Scenario, starts []time.Time) (detected string, delay *time.Duration, falseAlarms int) {
	excl := exclusions(sc)
	for i := range excl {
		excl[i][1] = excl[i][1].Add(10 * time.Minute)
	}
	onset := sc.At(sc.Truth.Onset)
	tol := 2 * time.Duration(sc.EvaluationInterval)
	detected = "-"
	if sc.Truth.Regression {
		detected = "n"
	}
	for _, s := range starts {
		if excluded(s, excl) {
			continue
		}
		if sc.Truth.Regression && !s.Before(onset.Add(-tol)) {
			if delay == nil {
				d := max(s.Sub(onset), 0)
				delay, detected = &d, "y"
			}
			continue
		}
		falseAlarms++
	}
	return detected, delay, falseAlarms
}

// tailguardAttribution checks the first attributed regressed finding after
// the detection against the acceptable causes.
func tailguardAttribution(sc *Scenario, ds []Detection, delay *time.Duration) string {
	if delay == nil {
		return "-"
	}
	from := sc.At(sc.Truth.Onset).Add(*delay)
	for _, d := range ds {
		if d.At.Before(from) || d.Finding.Cause == "" {
			continue
		}
		if d.Finding.Cause == "ambiguous" {
			return yn(ambiguityAcceptable(sc, d.Finding.CauseDetail))
		}
		return yn(slices.Contains(sc.Truth.Causes, d.Finding.Cause))
	}
	return "n"
}

// ambiguityAcceptable reports whether every change an ambiguous
// attribution names (change IDs such as flag/backoff-strategy@…,
// version/dten-gateway@…, separated by ", ") is an acceptable cause:
// changes shipped together that no evidence can tell apart, all of them
// to blame.
func ambiguityAcceptable(sc *Scenario, candidates string) bool {
	ids := strings.Split(candidates, ", ")
	for _, id := range ids {
		kind, rest, ok := strings.Cut(id, "/")
		name, _, _ := strings.Cut(rest, "@")
		if !ok || name == "" {
			return false
		}
		cause := "component:" + name
		if kind == "flag" {
			cause = "flag:" + name
		}
		if !slices.Contains(sc.Truth.Causes, cause) {
			return false
		}
	}
	return len(ids) > 0
}

func fmtDuration(d time.Duration) string {
	d = d.Round(time.Second)
	if d == 0 {
		return "0s"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
