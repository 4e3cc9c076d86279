package loop

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/tailguard/tailguard/controller"
	"github.com/tailguard/tailguard/controller/policy"
	"github.com/tailguard/tailguard/detector"
	"github.com/tailguard/tailguard/detector/changes"
)

var (
	errNoData = errors.New("no data")
	errNaN    = errors.New("NaN")
	// errWarnings marks a result Prometheus flagged with warnings: it may be
	// partial, so it is not used.
	errWarnings = errors.New("query warnings")
)

// Reading is an SLO's SLI read in one cycle.
type Reading struct {
	SLO   string  `json:"slo"`
	Query string  `json:"query"`
	Value float64 `json:"value"`
	// Previous is the SLI one window earlier, for the trend.
	Previous float64 `json:"previous"`
	// Err says why Value is unusable (no data, NaN, warnings); nil when it
	// is a number.
	Err error `json:"-"`
}

// signalScope is what a detector signal covers: its kind and the equality
// matchers of its selector.
type signalScope struct {
	kind  detector.SignalKind
	equal map[string]string
	// evidence marks a signal that speaks about a cause, not about an
	// SLO (the upstream's attempt latency).
	evidence bool
}

// scopes parses the selectors of the detector's signals.
func scopes(cfg detector.Config) (map[string]signalScope, error) {
	out := make(map[string]signalScope, len(cfg.Signals))
	for _, s := range cfg.Signals {
		sc := signalScope{kind: s.Kind, equal: map[string]string{}, evidence: s.Attempts}
		if sel := strings.TrimSpace(s.Selector); sel != "" {
			ms, err := parser.NewParser(parser.Options{}).ParseMetricSelector(sel)
			if err != nil {
				return nil, fmt.Errorf("signal %s: selector: %w", s.Name, err)
			}
			for _, m := range ms {
				if m.Type == labels.MatchEqual {
					sc.equal[m.Name] = m.Value
				}
			}
		}
		out[s.Name] = sc
	}
	return out, nil
}

// covers reports whether a finding of a signal with scope sc and slice
// labels speaks about slo: not an evidence-only signal, same kind, and no label of the SLO's selector
// contradicted by the signal's selector or the slice.
func covers(slo policy.SLO, sc signalScope, slice map[string]string) bool {
	if sc.evidence || string(sc.kind) != string(slo.Signal) {
		return false
	}
	for k, v := range slo.Selector {
		if got, ok := sc.equal[k]; ok && got != v {
			return false
		}
		if got, ok := slice[k]; ok && got != v {
			return false
		}
	}
	return true
}

// CauseOf translates a change into the controller's terms: a flag change
// names the flag and the variant it moved to, anything else a component and
// the version it moved to.
func CauseOf(e changes.Event) controller.Cause {
	if e.Kind == changes.KindFlag {
		return controller.Cause{Kind: controller.CauseFlag, FlagKey: e.Component, Variant: e.To}
	}
	return controller.Cause{Kind: controller.CauseComponent, Component: e.Component, Version: e.To}
}

// Assess maps one cycle's SLI readings and detector report onto the SLOs of
// svc. It is a pure function.
//
// An SLO is
//   - inconclusive when its SLI is unusable, or when every finding covering
//     it is inconclusive;
//   - regressed when a regressed finding covers it; the cause is the
//     finding's attributed change (ambiguous or unknown otherwise), its
//     confidence the cause's attribution score, and the incident id the
//     detector's incident of that finding;
//   - healthy otherwise, including when no change happened in the lookback
//     window (rep is nil): there is nothing to attribute then.
func Assess(svc *policy.Service, readings []Reading, rep *detector.Report, sc map[string]signalScope) []controller.Assessment {
	byFinding := map[string]detector.Incident{}
	events := map[string]changes.Event{}
	if rep != nil {
		for _, inc := range rep.Incidents {
			for _, id := range inc.Findings {
				byFinding[id] = inc
			}
		}
		for _, e := range rep.Changes {
			events[e.ID] = e
		}
	}
	out := make([]controller.Assessment, 0, len(svc.SLOs))
	for _, slo := range svc.SLOs {
		a := controller.Assessment{SLO: slo.Name, Objective: slo.Value(), Value: math.NaN()}
		i := slices.IndexFunc(readings, func(r Reading) bool { return r.SLO == slo.Name })
		if i < 0 {
			a.Verdict, a.Reason = controller.VerdictInconclusive, "SLI not read"
			out = append(out, a)
			continue
		}
		r := readings[i]
		a.Value = r.Value
		if r.Err != nil {
			a.Verdict, a.Reason = controller.VerdictInconclusive, "SLI: "+r.Err.Error()
			out = append(out, a)
			continue
		}
		if !math.IsNaN(r.Previous) && !math.IsInf(r.Previous, 0) {
			// Linear trend over the last window, projected one window ahead.
			a.Forecast, a.HasForecast = r.Value+(r.Value-r.Previous), true
		}
		if rep == nil {
			a.Verdict, a.Reason = controller.VerdictHealthy, "no change in the lookback window"
			a.Cause = controller.Cause{Kind: controller.CauseUnknown}
			out = append(out, a)
			continue
		}
		var regressed, healthy, inconclusive []detector.Finding
		for _, f := range rep.Findings {
			s, ok := sc[f.Signal]
			if !ok || !covers(slo, s, f.Slice) {
				continue
			}
			switch f.Verdict {
			case detector.Regressed:
				regressed = append(regressed, f)
			case detector.Healthy:
				healthy = append(healthy, f)
			default:
				inconclusive = append(inconclusive, f)
			}
		}
		switch {
		case len(regressed) > 0:
			f := strongest(regressed)
			a.Verdict = controller.VerdictRegressed
			a.Finding = f.ID
			a.Reason = f.Reason
			if f.Detection != nil && f.Detection.Onset != nil {
				a.Onset = *f.Detection.Onset
			}
			a.Cause = causeOf(svc, f, events)
			if inc, ok := byFinding[f.ID]; ok {
				a.Cause.IncidentID = inc.ID
			}
		case len(healthy) > 0:
			a.Verdict, a.Reason = controller.VerdictHealthy, fmt.Sprintf("%d slices healthy", len(healthy))
			a.Cause = controller.Cause{Kind: controller.CauseUnknown}
		case len(inconclusive) > 0:
			a.Verdict, a.Reason = controller.VerdictInconclusive, inconclusive[0].Reason
		default:
			a.Verdict, a.Reason = controller.VerdictHealthy, "no detector signal covers this SLO"
			a.Cause = controller.Cause{Kind: controller.CauseUnknown}
		}
		out = append(out, a)
	}
	return out
}

// strongest returns the finding with the largest effect estimate.
func strongest(fs []detector.Finding) detector.Finding {
	best := fs[0]
	for _, f := range fs[1:] {
		if f.Effect != nil && (best.Effect == nil || f.Effect.Estimate > best.Effect.Estimate) {
			best = f
		}
	}
	return best
}

func causeOf(svc *policy.Service, f detector.Finding, events map[string]changes.Event) controller.Cause {
	score := func(id string) (float64, []string) {
		for _, cand := range f.Causes {
			if cand.Change.ID == id {
				return cand.Score, cand.Evidence
			}
		}
		return 0, nil
	}
	switch f.Attribution.Status {
	case detector.AttributionAttributed:
		e, ok := events[f.Attribution.Cause]
		if !ok {
			return controller.Cause{Kind: controller.CauseUnknown, Evidence: "attributed change " + f.Attribution.Cause + " not in the report"}
		}
		c := CauseOf(e)
		sc, ev := score(e.ID)
		c.Confidence, c.Evidence = sc, strings.Join(ev, "; ")
		return c
	case detector.AttributionAmbiguous:
		// Changes the detector cannot tell apart are one cause when the
		// policy governs all of them with the same lever: the strategy
		// flag, its constants flag and the components it mitigates ship
		// together (a vendor upgrade flipping both flags at once).
		var best float64
		variant := ""
		all := len(f.Attribution.Candidates) > 0
		for _, id := range f.Attribution.Candidates {
			e, ok := events[id]
			if !ok || !governed(svc, e) {
				all = false
				break
			}
			if e.Kind == changes.KindFlag && e.Component == svc.Flags.Strategy.Key {
				variant = e.To
			}
			sc, _ := score(id)
			best = max(best, sc)
		}
		if all {
			return controller.Cause{Kind: controller.CauseFlag, FlagKey: svc.Flags.Strategy.Key, Variant: variant, Confidence: best,
				Evidence: "indistinguishable changes all governed by " + svc.Flags.Strategy.Key + ": " + strings.Join(f.Attribution.Candidates, ", ")}
		}
		return controller.Cause{Kind: controller.CauseAmbiguous, Evidence: "indistinguishable: " + strings.Join(f.Attribution.Candidates, ", ")}
	case detector.AttributionUnexplained:
		c := controller.Cause{Kind: controller.CauseUnknown, Evidence: "none of the known changes explains this"}
		if h := f.Unexplained; h != nil {
			c.Confidence = h.Score
			c.Evidence += ": " + strings.Join(h.Evidence, "; ")
		}
		return c
	}
	return controller.Cause{Kind: controller.CauseUnknown}
}

// governed reports whether the policy's levers govern change e: its
// strategy or constants flag, or one of its components.
func governed(svc *policy.Service, e changes.Event) bool {
	if e.Kind == changes.KindFlag {
		return e.Component == svc.Flags.Strategy.Key || e.Component == svc.Flags.Constants.Key
	}
	return slices.Contains(svc.Components, e.Component)
}
