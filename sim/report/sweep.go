package report

import (
	"fmt"
	"io"
	"math"
	"text/tabwriter"

	"github.com/tailguard/tailguard/sim"
)

// SweepTable writes the per-class sweep table and, below it, the draws
// that missed.
func SweepTable(w io.Writer, rows []sim.ClassRow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tclass\tdraws\tdetected\tdelay\ttop-1\tfalse alarms\tFA/30d\twrites\tno-action\tprobes\tSLO-min\trevert\tto act\tbenefit\tcalib")
	for _, r := range rows {
		det, top1, delay := "-", "-", "-"
		if r.Regressions > 0 {
			det = fmt.Sprintf("%d/%d", r.Detected, r.Regressions)
			top1 = fmt.Sprintf("%d/%d", r.Top1, r.Detected)
		}
		if r.MedianDelay != nil {
			delay = r.MedianDelay.String()
		}
		slo, rev := "-", "-"
		if r.RevertDraws > 0 {
			slo, rev = fmt.Sprint(r.SLOMinutes), fmt.Sprint(r.RevertSLOMinutes)
		}
		toAct := "-"
		if r.Writes > 0 {
			toAct = fmt.Sprint(r.MaxSLOMinutesToAct)
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%d in %.0fh\t%.1f\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n",
			r.Number, r.Class, r.Draws, det, delay, top1, r.FalseAlarms, r.NullHours, r.FalsePer30Days,
			r.Writes, r.NoActionWrites, r.Probes, slo, rev, toAct, pct(r.Benefit), calib(r))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\ndetected: regressions detected; top-1: first attribution an acceptable cause; no-action: writes where no write is right")
	fmt.Fprintln(w, "(single probing writes undone within two verification windows are counted as probes); SLO-min/revert: SLO minutes of")
	fmt.Fprintln(w, "tailguard and revert-on-alert where a flag is among the causes; to act: most SLO minutes before the first write;")
	fmt.Fprintln(w, "calib: mean |verified - predicted| / objective of the actions' predictions (n).")
	for _, r := range rows {
		for _, f := range r.Failures {
			fmt.Fprintf(w, "  miss %s\n", f)
		}
	}
	return nil
}

func pct(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*v)
}

func calib(r sim.ClassRow) string {
	if r.CalibrationN == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f (%d)", r.Calibration, r.CalibrationN)
}
