package main

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/tailguard/tailguard/controller"
	"github.com/tailguard/tailguard/controller/policy"
	"github.com/tailguard/tailguard/detector"
	"github.com/tailguard/tailguard/detector/changes"
	"github.com/tailguard/tailguard/flags"
	"github.com/tailguard/tailguard/loop"
	"github.com/tailguard/tailguard/sim"
)

// loopCycler adapts loop.Loop to sim.Cycler.
type loopCycler struct {
	loop     *loop.Loop
	ctrl     *controller.Controller
	reported map[string]bool // "incident/seq" of verifications already reported
}

// newLoopCycler builds tailguard's control cycle for a simulated world: the
// sidecar's loop (package loop) with the detector, the controller and a
// flag store on the world's flag file, as the sidecar builds them, on the
// embedded Prometheus and the virtual clock.
func newLoopCycler(env sim.Env) (sim.Cycler, error) {
	svc, err := serviceOf(env)
	if err != nil {
		return nil, err
	}
	store, err := flags.NewStore(flags.StoreConfig{Path: env.FlagFile, Now: env.Clock.Now})
	if err != nil {
		return nil, fmt.Errorf("flag store: %w", err)
	}
	writer, err := controller.NewFlagsWriter(store, svc)
	if err != nil {
		return nil, err
	}
	ctrl, err := controller.New(controller.Config{Policy: env.Policy, Writer: writer, Registerer: env.Registerer, Logger: env.Logger, Actor: "tailguard-sim"})
	if err != nil {
		return nil, err
	}
	src, err := detector.NewChangeSource(env.Detector, env.Querier)
	if err != nil {
		return nil, err
	}
	own := loop.OwnChangesFiltered(src)
	det, err := detector.New(env.Detector, env.Querier, own)
	if err != nil {
		return nil, err
	}
	m, err := loop.NewMetrics(env.Registerer)
	if err != nil {
		return nil, err
	}
	sli := loop.SLIConfig{Job: env.Scenario.Service.Job}
	if env.Scenario.Service.NativeOnly {
		// The service exposes no classic buckets: SLIs from the native
		// histogram, as sli.histogram: native configures the sidecar.
		sli.Histogram = "native"
	}
	l, err := loop.New(loop.Config{
		Service: svc, DetectorConfig: det.Config(), Detector: det, Changes: own, Querier: env.Querier,
		Flags: writer, Controller: ctrl, SLI: sli, Metrics: m, Logger: env.Logger,
	})
	if err != nil {
		return nil, err
	}
	return &loopCycler{loop: l, ctrl: ctrl, reported: map[string]bool{}}, nil
}

func serviceOf(env sim.Env) (*policy.Service, error) {
	if svc, ok := env.Policy.Service(env.Detector.Service); ok {
		return svc, nil
	}
	if len(env.Policy.Services) == 1 {
		return &env.Policy.Services[0], nil
	}
	return nil, fmt.Errorf("policy has no service %q", env.Detector.Service)
}

// Cycle runs one loop cycle at now and reports it in the simulator's terms.
func (c *loopCycler) Cycle(ctx context.Context, now time.Time) (sim.CycleReport, error) {
	res, err := c.loop.Cycle(ctx, now, "interval")
	var rep sim.CycleReport
	if res.Report != nil {
		rep.Findings = findings(res.Report)
	}
	if d := res.Decision; d.Kind != controller.DecisionNone && d.Kind != "" {
		rep.Actions = append(rep.Actions, c.action(d, err))
	}
	rep.Verifications = c.verifications()
	if err != nil && res.Decision.Kind == "" {
		return rep, err
	}
	return rep, nil
}

func findings(r *detector.Report) []sim.Finding {
	events := map[string]changes.Event{}
	for _, e := range r.Changes {
		events[e.ID] = e
	}
	var out []sim.Finding
	for _, f := range r.Findings {
		if f.Verdict == detector.Healthy {
			continue
		}
		sf := sim.Finding{Signal: f.Signal, Slice: maps.Clone(f.Slice), Verdict: string(f.Verdict), Reason: f.Reason}
		if f.Effect != nil {
			sf.Effect, sf.EffectLow, sf.EffectHigh, sf.Confidence = f.Effect.Estimate, f.Effect.Lower, f.Effect.Upper, f.Effect.Confidence
		}
		if f.Detection != nil && f.Detection.Onset != nil {
			sf.Onset = *f.Detection.Onset
		}
		switch f.Attribution.Status {
		case detector.AttributionAttributed:
			if e, ok := events[f.Attribution.Cause]; ok {
				kind := "component:"
				if e.Kind == changes.KindFlag {
					kind = "flag:"
				}
				sf.Cause = kind + e.Component
				sf.CauseDetail = strings.TrimSpace(e.Component + " → " + e.To)
			}
			for _, c := range f.Causes {
				if c.Change.ID == f.Attribution.Cause {
					sf.CauseScore, sf.Evidence = c.Score, c.Evidence
				}
			}
		case detector.AttributionAmbiguous:
			sf.Cause = "ambiguous"
			sf.CauseDetail = strings.Join(f.Attribution.Candidates, ", ")
		case detector.AttributionUnexplained:
			sf.Cause, sf.CauseDetail = "none", "none of the known changes"
			if h := f.Unexplained; h != nil {
				sf.CauseScore, sf.Evidence = h.Score, h.Evidence
			}
		}
		out = append(out, sf)
	}
	return out
}

func (c *loopCycler) action(d controller.Decision, err error) sim.Action {
	a := sim.Action{Incident: d.IncidentID, Rung: string(d.Rung), Reason: d.Reason, Status: "observed"}
	if d.Change != nil {
		a.Change = d.Change.Mutation.String()
	}
	if d.Action != nil {
		var exp []string
		for _, p := range d.Action.Expected {
			exp = append(exp, fmt.Sprintf("%s %s → %s", p.SLO, fmtValue(p.Signal, p.Observed), fmtValue(p.Signal, p.Expected)))
		}
		a.Expected = strings.Join(exp, ", ")
	}
	switch {
	case err != nil:
		a.Status = "failed"
	case d.Kind == controller.DecisionEscalate:
		a.Status = "notified"
	default:
		// The record tells whether this replica wrote it or found it done.
		if e, xerr := c.ctrl.Explain(d.IncidentID); xerr == nil && e.Incident != nil && len(e.Incident.Actions) > 0 {
			a.Status = string(e.Incident.Actions[len(e.Incident.Actions)-1].Status)
		}
		if len(c.ctrl.Plans()) > 0 && a.Status == "observed" {
			a.Status = "proposed"
		}
	}
	return a
}

// verifications reports the verifications recorded since the last cycle.
func (c *loopCycler) verifications() []sim.Verification {
	var out []sim.Verification
	for _, sum := range c.ctrl.Incidents() {
		e, err := c.ctrl.Explain(sum.ID)
		if err != nil || e.Incident == nil {
			continue
		}
		for _, a := range e.Incident.Actions {
			if a.Verification == nil {
				continue
			}
			key := fmt.Sprintf("%s/%d", sum.ID, a.Seq)
			if c.reported[key] {
				continue
			}
			c.reported[key] = true
			v := a.Verification
			detail := fmt.Sprintf("progress %.0f%%", 100*v.Progress)
			for _, r := range v.Readings {
				detail += fmt.Sprintf(", %s %s", r.SLO, fmtValue(r.Signal, r.Value))
			}
			if v.Note != "" {
				detail += " (" + v.Note + ")"
			}
			sv := sim.Verification{Incident: sum.ID, Rung: string(a.Rung), Outcome: string(v.Outcome), Detail: detail}
			for _, p := range a.Expected {
				if p.Verified != nil {
					sv.Calibration = append(sv.Calibration, sim.Calibration{SLO: p.SLO, Predicted: p.Expected, Verified: *p.Verified, Objective: p.Objective})
				}
			}
			out = append(out, sv)
		}
	}
	return out
}

func fmtValue(sig policy.Signal, v float64) string {
	if sig == policy.SignalLatency {
		return time.Duration(v * float64(time.Second)).Round(time.Millisecond).String()
	}
	return fmt.Sprintf("%.2f%%", 100*v)
}
