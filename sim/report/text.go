// Package report renders simulator results: a readable timeline of a run,
// the bench table, and a self-contained HTML report with inline SVG charts.
package report

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tailguard/tailguard/sim"
)

// Timeline writes the run's timeline, one entry per line, with the time
// relative to the scenario's onset (or start).
func Timeline(w io.Writer, sc *sim.Scenario, res *sim.Result) error {
	ref := sc.Start
	refName := "start"
	if sc.Truth.Regression {
		ref, refName = sc.At(sc.Truth.Onset), "onset"
	}
	ew := &errWriter{w: w}
	ew.printf("Timeline of %q (%s run, seed %d); T is the %s at %s UTC\n\n", sc.Name, res.Mode, res.Seed, refName, ref.Format("15:04"))
	for _, e := range res.Timeline {
		ew.printf("%s  %-9s  %-12s %s\n", e.At.UTC().Format("15:04:05"), rel(e.At.Sub(ref)), e.Kind, e.Text)
	}
	return ew.err
}

// rel formats an offset as T+1h02m or T-15m.
func rel(d time.Duration) string {
	sign := "+"
	if d < 0 {
		sign, d = "-", -d
	}
	d = d.Round(time.Second)
	h, m, s := int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60
	switch {
	case h > 0:
		return fmt.Sprintf("T%s%dh%02dm", sign, h, m)
	case s != 0:
		return fmt.Sprintf("T%s%dm%02ds", sign, m, s)
	default:
		return fmt.Sprintf("T%s%dm", sign, m)
	}
}

// Summary writes what the runs of one scenario came to: SLO minutes, the
// brown-out success of every run and the bench rows.
func Summary(w io.Writer, r sim.ScenarioResult) error {
	ew := &errWriter{w: w}
	sc := r.Scenario
	ew.printf("\nOutcome of %q (SLO: p%g of %s ≤ %s over %s)\n", sc.Name, 100*sc.Truth.SLO.Quantile, sc.Truth.SLO.Endpoint, sc.Truth.SLO.Threshold, sc.Truth.SLO.Window)
	for _, m := range []sim.Mode{sim.ModeTailguard, sim.ModeUnguarded, sim.ModeRevert, sim.ModeLegacy} {
		res := r.Runs[m]
		if res == nil {
			continue
		}
		ew.printf("  %-16s %s\n", string(m)+":", runLine(sc, res))
	}
	if ew.err != nil {
		return ew.err
	}
	ew.printf("\n")
	if ew.err != nil {
		return ew.err
	}
	return Table(w, []sim.ScenarioResult{r})
}

func runLine(sc *sim.Scenario, res *sim.Result) string {
	thr := time.Duration(sc.Truth.SLO.Threshold).Seconds()
	var parts []string
	parts = append(parts, fmt.Sprintf("%s p99 at the end", seconds(last(res.Series.Latency))))
	over := 0
	for _, p := range res.Series.Latency {
		if p.V > thr {
			over++
		}
	}
	parts = append(parts, fmt.Sprintf("%d minutes over the SLO (brown-outs included)", over))
	parts = append(parts, fmt.Sprintf("retry ratio %s", percent(last(res.Series.RetryRatio))))
	for _, b := range res.Brownouts {
		parts = append(parts, fmt.Sprintf("%s of checkouts succeeded in the brown-out at %s", percent(b.Success), b.From.UTC().Format("15:04")))
	}
	parts = append(parts, fmt.Sprintf("%d flag writes", len(res.Writes)))
	return strings.Join(parts, "; ")
}

// last returns the last finite value of a series, NaN if none.
func last(pts []sim.Point) float64 {
	for i := len(pts) - 1; i >= 0; i-- {
		if !math.IsNaN(pts[i].V) {
			return pts[i].V
		}
	}
	return math.NaN()
}

func seconds(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return time.Duration(v * float64(time.Second)).Round(time.Millisecond).String()
}

func percent(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.1f%%", 100*v)
}

// Table writes the bench table: one line per scenario and guard.
func Table(w io.Writer, results []sim.ScenarioResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	ew := &errWriter{w: tw}
	ew.printf("SCENARIO\tGUARD\tDETECTED\tDELAY\tATTRIBUTION\tFALSE ALARMS\tACTIONS\tSLO MIN\tRESTORED\tBENEFIT KEPT\n")
	var notes []string
	for _, r := range results {
		for _, row := range r.Rows {
			delay := "-"
			if row.Delay != nil {
				delay = fmtDuration(*row.Delay)
			}
			ew.printf("%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", row.Scenario, row.Guard, row.Detected, delay, row.Attribution,
				row.FalseAlarms, row.Actions, row.SLOMinutes, row.Restored, benefitText(row.Benefit))
			for _, n := range row.Notes {
				notes = append(notes, fmt.Sprintf("%s / %s: %s", row.Scenario, row.Guard, n))
			}
		}
	}
	if ew.err != nil {
		return ew.err
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	ew = &errWriter{w: w}
	for _, n := range notes {
		ew.printf("  note: %s\n", n)
	}
	return ew.err
}

func benefitText(b float64) string {
	if math.IsNaN(b) {
		return "n/a"
	}
	return fmt.Sprintf("%.0f%%", 100*b)
}

func fmtDuration(d time.Duration) string {
	d = d.Round(time.Second)
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// errWriter keeps the first write error.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}
