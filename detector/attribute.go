package detector

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/tailguard/tailguard/detector/changes"
	"github.com/tailguard/tailguard/detector/stats"
)

// maxCauses bounds the causes listed per finding.
const maxCauses = 5

// attributor ranks candidate changes for regressed findings. It is pure:
// everything it needs was fetched before.
type attributor struct {
	cfg        *Config
	g          grid
	signals    []*signalData
	findings   []*Finding
	candidates []changes.Event
	minReq     float64
	// Precomputed per candidate.
	loc    []locStats
	cohort []map[*compiledSignal]cohortStats
	// rose lists the upstreams whose retries regressed ("*" when the retry
	// signal is not sliced by upstream).
	rose []string
	// slower lists the upstreams whose attempts got slower (attempt
	// latency signals; "*" when not sliced by upstream).
	slower []string
}

type locStats struct {
	observable       bool
	in, inRegressed  int
	out, outRegresed int
}

type cohortStats struct {
	ok        bool
	did       stats.Ratio
	in, out   stats.Ratio
	inN, outN float64
	z         float64
	reason    string
}

func newAttributor(cfg *Config, g grid, sds []*signalData, findings []*Finding, candidates []changes.Event, minReq float64) *attributor {
	a := &attributor{cfg: cfg, g: g, signals: sds, findings: findings, candidates: candidates, minReq: minReq}
	roseSet := map[string]bool{}
	for _, f := range findings {
		if f.Verdict == Regressed && f.Kind == KindRetryRatio {
			up, ok := f.Slice["upstream"]
			if !ok {
				up = "*"
			}
			roseSet[up] = true
		}
	}
	a.rose = slices.Sorted(mapsKeysBool(roseSet))
	slowSet := map[string]bool{}
	for _, f := range findings {
		if f.Verdict == Regressed && f.sig != nil && f.sig.cfg.Attempts {
			up, ok := f.Slice["upstream"]
			if !ok {
				up = "*"
			}
			slowSet[up] = true
		}
	}
	a.slower = slices.Sorted(mapsKeysBool(slowSet))
	a.loc = make([]locStats, len(candidates))
	a.cohort = make([]map[*compiledSignal]cohortStats, len(candidates))
	for ci, e := range candidates {
		a.cohort[ci] = map[*compiledSignal]cohortStats{}
		for _, sd := range sds {
			keys := observableKeys(e.Scope, sd.sig.cfg.By)
			if len(keys) == 0 {
				continue
			}
			a.loc[ci].observable = true
			a.cohort[ci][sd.sig] = a.cohortFor(e, keys, sd)
		}
		for _, f := range findings {
			if f.Verdict == Inconclusive || f.sig == nil {
				continue
			}
			keys := observableKeys(e.Scope, f.sig.cfg.By)
			if len(keys) == 0 {
				continue
			}
			if inScope(f.Slice, e.Scope, keys) {
				a.loc[ci].in++
				if f.Verdict == Regressed {
					a.loc[ci].inRegressed++
				}
			} else {
				a.loc[ci].out++
				if f.Verdict == Regressed {
					a.loc[ci].outRegresed++
				}
			}
		}
	}
	return a
}

func mapsKeysBool(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// observableKeys returns the scope labels that slice a signal.
func observableKeys(scope map[string]string, by []string) []string {
	var out []string
	for k := range scope {
		if slices.Contains(by, k) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func inScope(slice, scope map[string]string, keys []string) bool {
	for _, k := range keys {
		if slice[k] != scope[k] {
			return false
		}
	}
	return true
}

// cohortFor compares the cohort a change touches with the rest over the
// same minutes since the change (difference in differences, each cohort
// against its own baseline; a cohort with no baseline of its own, such as a
// new flag variant, borrows the control's, which reduces the estimate to the
// concurrent ratio new/old).
func (a *attributor) cohortFor(e changes.Event, keys []string, sd *signalData) cohortStats {
	g := a.g
	var inPre, outPre, inPost, outPost [2]float64 // {events, trials}
	for _, s := range sd.streams {
		pre, post := &outPre, &outPost
		if inScope(s.labels, e.Scope, keys) {
			pre, post = &inPre, &inPost
		}
		for i := range g.steps() {
			n, x := s.n[i], s.x[i]
			if math.IsNaN(n) {
				continue
			}
			switch {
			case i < g.baseSteps && g.end(i).Before(e.Time.Add(time.Nanosecond)):
				pre[0] += x
				pre[1] += n
			case i >= g.baseSteps && !g.begin(i).Before(e.Time):
				post[0] += x
				post[1] += n
			}
		}
	}
	cs := cohortStats{inN: inPost[1], outN: outPost[1]}
	if inPost[1] < a.minReq || outPost[1] < a.minReq {
		cs.reason = fmt.Sprintf("no concurrent control: %.0f requests in the cohort and %.0f outside since the change", inPost[1], outPost[1])
		return cs
	}
	if outPre[1] < a.minReq {
		cs.reason = "no baseline for the control cohort"
		return cs
	}
	if inPre[1] < a.minReq {
		inPre = outPre
	}
	ratio := stats.RiskRatio
	if sd.sig.poisson {
		ratio = stats.RateRatio
	}
	conf := a.cfg.Detection.Confidence
	rin, err1 := ratio(inPost[0], inPost[1], inPre[0], inPre[1], conf)
	rout, err2 := ratio(outPost[0], outPost[1], outPre[0], outPre[1], conf)
	if err1 != nil || err2 != nil {
		cs.reason = "cohort ratios not computable"
		return cs
	}
	did, err := stats.DiffInDiff(rin, rout)
	if err != nil || !(did.LogSE > 0) {
		cs.reason = "difference in differences not computable"
		return cs
	}
	cs.ok, cs.in, cs.out, cs.did = true, rin, rout, did
	cs.z = math.Log(did.Estimate) / did.LogSE
	return cs
}

// attribute ranks the candidates for every regressed finding against the
// hypothesis that none of them caused it.
func (a *attributor) attribute() {
	for _, f := range a.findings {
		if f.Verdict != Regressed {
			f.Attribution = Attribution{Status: AttributionNone}
			continue
		}
		var all, causes []Cause
		for ci, e := range a.candidates {
			c := a.score(f, ci, e)
			all = append(all, c)
			if c.Score > 0 {
				causes = append(causes, c)
			}
		}
		sort.SliceStable(causes, func(i, j int) bool {
			if causes[i].Score != causes[j].Score {
				return causes[i].Score > causes[j].Score
			}
			return causes[i].Change.Time.After(causes[j].Change.Time)
		})
		if len(causes) > maxCauses {
			causes = causes[:maxCauses]
		}
		f.Causes = causes
		none := a.unexplained(f, all)
		f.Unexplained = &none
		m := a.cfg.Attribution.Margin
		switch {
		case len(causes) == 0 || causes[0].Score < a.cfg.Attribution.MinScore:
			f.Attribution = Attribution{Status: AttributionNone}
			if len(a.candidates) > 0 {
				f.Attribution.Status = AttributionUnexplained
			}
		case none.Score > causes[0].Score-m:
			// Doing nothing is the safe side of a close call.
			f.Attribution = Attribution{Status: AttributionUnexplained}
		case len(causes) > 1 && causes[0].Score-causes[1].Score < m:
			var ids []string
			for _, c := range causes {
				if causes[0].Score-c.Score < m {
					ids = append(ids, c.Change.ID)
				}
			}
			sort.Strings(ids)
			f.Attribution = Attribution{Status: AttributionAmbiguous, Candidates: ids}
		default:
			f.Attribution = Attribution{Status: AttributionAttributed, Cause: causes[0].Change.ID}
		}
	}
}

// unexplained scores the hypothesis that none of the known changes caused
// f, from the evidence the causes were scored on:
//
//   - timing: a change explains a shift that starts at it; the hypothesis
//     scores 1 − the best timing score of any change;
//   - mechanism: the upstream's own attempts got slower, and no version
//     change or declared upgrade near the onset (timing ≥ 0.5) could have
//     slowed them (backoff flags cannot): the upstream or its load did.
//
// The score is the stronger of the two.
func (a *attributor) unexplained(f *Finding, all []Cause) Hypothesis {
	var h Hypothesis
	best, bestTiming := Cause{}, 0.0
	slowing := false // a change near the onset that can slow attempts
	for _, c := range all {
		if c.Timing > bestTiming {
			best, bestTiming = c, c.Timing
		}
		if c.Timing >= 0.5 && (c.Change.Kind == changes.KindVersion || c.Change.Kind == changes.KindDeclared) {
			slowing = true
		}
	}
	h.Score = 1 - bestTiming
	if bestTiming == 0 {
		h.Evidence = append(h.Evidence, fmt.Sprintf("timing 1.00: no known change precedes the onset %s", fmtTime(f.onset)))
	} else {
		h.Evidence = append(h.Evidence, fmt.Sprintf("timing %.2f: %s at %s is close enough to the onset %s (its timing %.2f)",
			h.Score, best.Change.ID, fmtTime(best.Change.Time), fmtTime(f.onset), bestTiming))
	}
	if len(a.slower) > 0 {
		if !slowing {
			h.Score = 1
			h.Evidence = append(h.Evidence, fmt.Sprintf("mechanism 1.00: attempts to %v got slower and no version change or upgrade near the onset could slow them", a.slower))
		} else {
			h.Evidence = append(h.Evidence, fmt.Sprintf("mechanism 0: attempts to %v got slower, and a version change near the onset can explain it", a.slower))
		}
	}
	return h
}

func (a *attributor) score(f *Finding, ci int, e changes.Event) Cause {
	c := Cause{Change: e}
	w := a.cfg.Attribution.Weights

	// (a) Timing.
	tol := time.Duration(a.cfg.Attribution.TimingTolerance)
	decay := time.Duration(a.cfg.Attribution.TimingDecay)
	d := f.onset.Sub(e.Time)
	switch {
	case d < -tol:
		c.Evidence = append(c.Evidence, fmt.Sprintf("timing 0: the change at %s came %s after the onset %s", fmtTime(e.Time), roundDur(-d), fmtTime(f.onset)))
		return c
	case d <= 0:
		c.Timing = 1
		c.Evidence = append(c.Evidence, fmt.Sprintf("timing 1.00: onset %s within %s of the change at %s (one-step resolution)", fmtTime(f.onset), roundDur(-d), fmtTime(e.Time)))
	default:
		c.Timing = math.Exp(-float64(d) / float64(decay))
		c.Evidence = append(c.Evidence, fmt.Sprintf("timing %.2f: onset %s is %s after the change at %s (decay %s)", c.Timing, fmtTime(f.onset), roundDur(d), fmtTime(e.Time), decay))
	}

	// (b) Localisation.
	ls := a.loc[ci]
	ownKeys := observableKeys(e.Scope, f.sig.cfg.By)
	switch {
	case len(e.Scope) == 0:
		c.Localisation = 0.5
		c.Evidence = append(c.Evidence, "localisation 0.50: the change has no scope (whole service)")
	case !ls.observable:
		c.Localisation = 0.5
		c.Evidence = append(c.Evidence, fmt.Sprintf("localisation 0.50: scope %s is not a slice label of any signal", changes.FormatLabels(e.Scope)))
	case len(ownKeys) > 0 && !inScope(f.Slice, e.Scope, ownKeys):
		c.Localisation = 0
		c.Evidence = append(c.Evidence, fmt.Sprintf("localisation 0.00: this slice is outside the scope %s", changes.FormatLabels(e.Scope)))
	default:
		fin := frac(ls.inRegressed, ls.in)
		if ls.out == 0 {
			c.Localisation = 0.5 + 0.25*fin
			c.Evidence = append(c.Evidence, fmt.Sprintf("localisation %.2f: %d/%d slices in scope %s regressed; no slice outside the scope to compare", c.Localisation, ls.inRegressed, ls.in, changes.FormatLabels(e.Scope)))
		} else {
			fout := frac(ls.outRegresed, ls.out)
			c.Localisation = 0.5 + 0.5*(fin-fout)
			c.Evidence = append(c.Evidence, fmt.Sprintf("localisation %.2f: %d/%d slices in scope %s regressed vs %d/%d outside", c.Localisation, ls.inRegressed, ls.in, changes.FormatLabels(e.Scope), ls.outRegresed, ls.out))
		}
	}

	// (c) Concurrent cohorts.
	c.Cohort = 0.5
	if cs, ok := a.cohort[ci][f.sig]; ok {
		if cs.ok {
			c.Cohort = stats.NormalCDF(cs.z)
			c.Evidence = append(c.Evidence, fmt.Sprintf(
				"cohort %.2f: since the change, %s in scope %s changed %.2f× and outside %.2f× over the same minutes: difference in differences %.2f× (%.0f%% CI %.2f–%.2f, z=%.1f)",
				c.Cohort, rateNoun(f.sig), changes.FormatLabels(e.Scope), cs.in.Estimate, cs.out.Estimate,
				cs.did.Estimate, 100*cs.did.Confidence, cs.did.Lower, cs.did.Upper, cs.z))
		} else {
			c.Evidence = append(c.Evidence, "cohort 0.50: "+cs.reason)
		}
	} else {
		c.Evidence = append(c.Evidence, "cohort 0.50: the change does not split this signal's slices")
	}

	// (d) Topology: blame the caller whose retries rose, not the callee.
	c.Topology = 0.5
	if up, callee := a.cfg.Topology.Callees[e.Component]; callee && (e.Kind == changes.KindVersion || e.Kind == changes.KindDeclared) {
		if slices.Contains(a.rose, up) || slices.Contains(a.rose, "*") {
			c.Topology = 0.2
			c.Evidence = append(c.Evidence, fmt.Sprintf("topology 0.20: %s serves upstream %q, whose caller's retries rose: the caller's behaviour is the likelier cause", e.Component, up))
		} else {
			c.Evidence = append(c.Evidence, fmt.Sprintf("topology 0.50: %s serves upstream %q; retries to it did not rise", e.Component, up))
		}
	} else if len(a.rose) > 0 {
		c.Topology = 0.8
		c.Evidence = append(c.Evidence, fmt.Sprintf("topology 0.80: the change is on the calling side, whose retries to %v rose", a.rose))
	} else {
		c.Evidence = append(c.Evidence, "topology 0.50: no retry counter rose")
	}

	// (e) Mechanism: a flag change (the backoff flags) cannot make the
	// upstream's attempts slower, except by loading it with retries.
	c.Mechanism = 1
	if len(a.slower) > 0 && e.Kind == changes.KindFlag {
		if len(a.rose) > 0 {
			c.Mechanism = 0.6
			c.Evidence = append(c.Evidence, fmt.Sprintf("mechanism 0.60: attempts to %v got slower; a flag change slows them only by loading the upstream with retries, which rose", a.slower))
		} else {
			c.Mechanism = 0.2
			c.Evidence = append(c.Evidence, fmt.Sprintf("mechanism 0.20: attempts to %v got slower while retries did not rise: a flag change can not do that", a.slower))
		}
	}

	sum := w.Timing + w.Localisation + w.Cohort + w.Topology
	c.Score = c.Mechanism * (w.Timing*c.Timing + w.Localisation*c.Localisation + w.Cohort*c.Cohort + w.Topology*c.Topology) / sum
	return c
}

func frac(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func roundDur(d time.Duration) time.Duration { return d.Round(time.Second) }
