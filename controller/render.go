package controller

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// The renderers below produce the output of the ops CLI's plan, approve,
// explain and incidents commands: human-readable text by default, JSON
// for scripts.

// RenderJSON writes v as indented JSON.
func RenderJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("render json: %w", err)
	}
	return nil
}

func ts(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// errWriter remembers the first write error.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}

// RenderExplanation writes an incident's record as text.
func RenderExplanation(w io.Writer, e Explanation) error {
	ew := &errWriter{w: w}
	if inc := e.Incident; inc != nil {
		ew.printf("incident %s\n", inc.ID)
		ew.printf("  service:   %s (mode %s)\n", inc.Service, e.Mode)
		ew.printf("  cause:     %s (confidence %.2f)\n", inc.Cause, inc.Cause.Confidence)
		if inc.Cause.Evidence != "" {
			ew.printf("  evidence:  %s\n", inc.Cause.Evidence)
		}
		ew.printf("  opened:    %s\n", ts(inc.OpenedAt))
		ew.printf("  phase:     %s (rung %s)\n", inc.Phase, inc.Rung)
		if !inc.ResolvedAt.IsZero() {
			ew.printf("  resolved:  %s\n", ts(inc.ResolvedAt))
		}
		ew.printf("  rollout:   %d%% at start, restore ceiling %d%%\n", inc.StartPercent, inc.Ceiling)
		ew.printf("  trigger:\n")
		renderReadings(ew, "    ", inc.Trigger)
		if len(inc.Actions) == 0 {
			ew.printf("  actions:   none\n")
		} else {
			ew.printf("  actions:\n")
		}
		for _, a := range inc.Actions {
			renderAction(ew, a)
		}
		if len(inc.Notes) > 0 {
			ew.printf("  notes:\n")
			for _, n := range inc.Notes {
				ew.printf("    %s  %s\n", ts(n.At), n.Text)
			}
		}
	} else {
		ew.printf("incident not recorded in state (service %s, mode %s)\n", e.Service, e.Mode)
	}
	if len(e.Plans) > 0 {
		ew.printf("  plans:\n")
		for _, p := range e.Plans {
			ew.printf("    %s  %s  %s  %s\n", ts(p.CreatedAt), p.Status, p.ID, p.Decision.Reason)
		}
	}
	if len(e.Observed) > 0 {
		ew.printf("  observed (mode %s, not applied):\n", e.Mode)
		for _, d := range e.Observed {
			ew.printf("    %s  %s  %s\n", ts(d.At), d.Rung, d.Reason)
		}
	}
	return ew.err
}

func renderReadings(ew *errWriter, indent string, rs []SLOReading) {
	for _, r := range rs {
		state := "marginal" // within objective, above the recovery threshold
		switch {
		case r.Breaching:
			state = "BREACHING"
		case r.Recovered:
			state = "ok"
		}
		fc := ""
		if r.Forecast != nil {
			fc = " forecast " + formatSLI(r.Signal, *r.Forecast)
		}
		ew.printf("%s%-20s %s%s (objective %s) %s, verdict %s\n", indent, r.SLO,
			formatSLI(r.Signal, r.Value), fc, formatSLI(r.Signal, r.Objective), state, r.Verdict)
	}
}

func renderAction(ew *errWriter, a Action) {
	who := a.Actor
	if a.Approver != "" {
		who += ", approved by " + a.Approver
	}
	ew.printf("    #%d %s at %s: %s (%s)\n", a.Seq, a.Rung, ts(a.At), a.Status, who)
	ew.printf("       key:      %s\n", a.IdempotencyKey)
	ew.printf("       reason:   %s\n", a.Reason)
	if a.Mutation != nil {
		ew.printf("       change:   %s\n", a.Mutation)
	}
	if a.Undo != nil {
		ew.printf("       undo:     %s\n", a.Undo)
	}
	if m := a.Model; m != nil {
		ew.printf("       model:    %s\n", m.Why)
		ew.printf("       inputs:   retry ratio %.2f%%, p=%.4f, attempt latency %s, %s at %.0f%%\n",
			100*m.RetryRatio, m.FailureProbability, m.AttemptLatency, m.Strategy, 100*m.Share)
		ew.printf("       constants: %s → %s\n", m.Current, m.Chosen)
	}
	for _, p := range a.Expected {
		obs := "pending"
		if p.Verified != nil {
			obs = formatSLI(p.Signal, *p.Verified)
		}
		ew.printf("       effect:   %-20s before %s, expected %s, observed %s (target %s)\n", p.SLO,
			formatSLI(p.Signal, p.Observed), formatSLI(p.Signal, p.Expected), obs, formatSLI(p.Signal, p.Target))
	}
	if v := a.Verification; v != nil {
		ew.printf("       verified: %s at %s (progress %.0f%%)", v.Outcome, ts(v.At), 100*v.Progress)
		if v.Note != "" {
			ew.printf(": %s", v.Note)
		}
		ew.printf("\n")
	}
}

// RenderPlans writes plans as a table.
func RenderPlans(w io.Writer, plans []Plan) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	ew := &errWriter{w: tw}
	ew.printf("PLAN\tSTATUS\tSERVICE\tRUNG\tCREATED\tCHANGE\tREASON\n")
	for _, p := range plans {
		change := "-"
		if p.Decision.Change != nil {
			change = p.Decision.Change.Mutation.String()
		}
		ew.printf("%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.ID, p.Status, p.Service, p.Decision.Rung, ts(p.CreatedAt), change, oneLine(p.Decision.Reason))
	}
	if ew.err != nil {
		return ew.err
	}
	return tw.Flush()
}

// RenderIncidents writes incident summaries as a table.
func RenderIncidents(w io.Writer, list []IncidentSummary) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	ew := &errWriter{w: tw}
	ew.printf("INCIDENT\tSERVICE\tPHASE\tRUNG\tACTIONS\tOPENED\tRESOLVED\tCAUSE\n")
	for _, s := range list {
		ew.printf("%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", s.ID, s.Service, s.Phase, s.Rung, s.Actions, ts(s.OpenedAt), ts(s.ResolvedAt), s.Cause)
	}
	if ew.err != nil {
		return ew.err
	}
	return tw.Flush()
}

// RenderDecision writes one decision as a line of text, plus its change.
func RenderDecision(w io.Writer, d Decision) error {
	ew := &errWriter{w: w}
	ew.printf("%s %s %s", ts(d.At), d.Service, d.Kind)
	if d.Rung != "" {
		ew.printf(" %s", d.Rung)
	}
	if d.IncidentID != "" {
		ew.printf(" incident=%s", d.IncidentID)
	}
	ew.printf(": %s\n", d.Reason)
	if d.Change != nil {
		ew.printf("  change: %s (key %s)\n", d.Change.Mutation, d.Change.IdempotencyKey)
	}
	return ew.err
}

func oneLine(s string) string {
	r := []rune(strings.ReplaceAll(s, "\n", " "))
	if len(r) > 120 {
		return string(r[:117]) + "..."
	}
	return string(r)
}
