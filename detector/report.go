package detector

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tailguard/tailguard/detector/changes"
)

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	return nil
}

// maxListed bounds the healthy and inconclusive slices listed in text.
const maxListed = 20

// WriteText writes a report for people: the window, the changes, each
// incident with its regressions and evidence, then the inconclusive and
// healthy slices in short.
func (r *Report) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	p := ew.printf
	p("tailguard analysis of %s\n", r.Service)
	p("  baseline   %s … %s\n", fmtTime(r.Baseline.Start), fmtTime(r.Baseline.End))
	p("  monitored  %s … %s (step %s)\n", fmtTime(r.Monitored.Start), fmtTime(r.Monitored.End), r.Step)
	p("  test       CUSUM on counts, h=%.2f for %.3g false alarms/hour over %d slices\n", r.Threshold, r.FalseAlarmsPerHour, r.Streams)
	p("  verdicts   %d regressed, %d inconclusive, %d healthy\n\n", r.Summary.Regressed, r.Summary.Inconclusive, r.Summary.Healthy)

	if len(r.Changes) == 0 {
		p("Changes: none found in the window\n\n")
	} else {
		p("Changes:\n")
		tw := tabwriter.NewWriter(ew, 2, 4, 2, ' ', 0)
		for _, e := range r.Changes {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s→%s\t%s\n", e.Time.UTC().Format(time.RFC3339), e.Kind, e.Component, orDash(e.From), orDash(e.To), scopeText(e.Scope))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		p("\n")
	}

	byID := map[string]*Finding{}
	for i := range r.Findings {
		byID[r.Findings[i].ID] = &r.Findings[i]
	}
	if len(r.Incidents) == 0 {
		p("No regression.\n\n")
	}
	for _, inc := range r.Incidents {
		switch inc.Status {
		case AttributionAttributed:
			p("INCIDENT %s: %d regression(s) caused by %s\n", inc.ID, len(inc.Findings), inc.Cause)
		case AttributionAmbiguous:
			p("INCIDENT %s: %d regression(s), cause ambiguous between %s\n", inc.ID, len(inc.Findings), strings.Join(inc.Candidates, ", "))
		default:
			p("INCIDENT %s: %d regression(s), no change explains them\n", inc.ID, len(inc.Findings))
		}
		for _, id := range inc.Findings {
			f := byID[id]
			if f == nil {
				continue
			}
			writeFinding(ew, f)
		}
		p("\n")
	}

	var inconclusive, healthy []*Finding
	for i := range r.Findings {
		switch r.Findings[i].Verdict {
		case Inconclusive:
			inconclusive = append(inconclusive, &r.Findings[i])
		case Healthy:
			healthy = append(healthy, &r.Findings[i])
		}
	}
	if len(inconclusive) > 0 {
		p("Inconclusive (no action is taken on these):\n")
		for i, f := range inconclusive {
			if i == maxListed {
				p("  … and %d more\n", len(inconclusive)-maxListed)
				break
			}
			p("  %s %s: %s\n", f.Signal, sliceText(f.Slice), f.Reason)
		}
		p("\n")
	}
	if len(healthy) > 0 {
		p("Healthy:\n")
		for i, f := range healthy {
			if i == maxListed {
				p("  … and %d more\n", len(healthy)-maxListed)
				break
			}
			p("  %s %s: %s\n", f.Signal, sliceText(f.Slice), f.Reason)
		}
	}
	return ew.err
}

func writeFinding(ew *errWriter, f *Finding) {
	p := ew.printf
	p("  ▸ %s %s: %s\n", f.Signal, sliceText(f.Slice), f.Statistic)
	if f.Effect != nil {
		p("      effect    %.2f× (%.0f%% CI %.2f–%.2f): %.0f/%.0f now vs %.0f/%.0f in the baseline\n",
			f.Effect.Estimate, 100*f.Effect.Confidence, f.Effect.Lower, f.Effect.Upper,
			f.Counts.CurrentEvents, f.Counts.CurrentTrials, f.Counts.BaselineEvents, f.Counts.BaselineTrials)
	}
	if q := f.Quantile; q != nil && (q.Baseline != nil || q.Current != nil) {
		p("      p%s       %s → %s (histogram_quantile)\n", quantileName(q.Quantile), seconds(q.Baseline), seconds(q.Current))
	}
	if d := f.Detection; d != nil && d.Onset != nil && d.AlarmAt != nil {
		p("      onset     %s, alarm %s (CUSUM %.1f ≥ %.1f, φ=%.2f)\n", fmtTime(*d.Onset), fmtTime(*d.AlarmAt), d.Statistic, d.Threshold, d.Dispersion)
	}
	switch f.Attribution.Status {
	case AttributionAmbiguous:
		p("      cause     ambiguous: %s\n", strings.Join(f.Attribution.Candidates, ", "))
	case AttributionNone:
		p("      cause     none found\n")
	case AttributionUnexplained:
		p("      cause     none of the known changes explains this\n")
	}
	if h := f.Unexplained; h != nil {
		p("      none %.2f  none of the known changes\n", h.Score)
		for _, e := range h.Evidence {
			p("              %s\n", e)
		}
	}
	for i, c := range f.Causes {
		if i == 3 {
			break
		}
		p("      #%d %.2f  %s\n", i+1, c.Score, c.Change)
		for _, e := range c.Evidence {
			p("              %s\n", e)
		}
	}
	for _, q := range f.Queries {
		p("      query     %s\n", q)
	}
}

func seconds(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.3gs", *v)
}

func sliceText(s map[string]string) string {
	if len(s) == 0 {
		return "(all)"
	}
	return changes.FormatLabels(s)
}

func scopeText(s map[string]string) string {
	if len(s) == 0 {
		return "whole service"
	}
	return changes.FormatLabels(s)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// errWriter remembers the first write error.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(b []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(b)
	e.err = err
	return n, err
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}
