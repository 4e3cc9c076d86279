package controller

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/controller/policy"
)

// modelContext is the retry model calibrated on one observation.
type modelContext struct {
	ok  bool
	why string
	// r is the observed retry ratio, p the failure probability estimated
	// from it, L the per-attempt latency.
	r, p float64
	L    time.Duration
	mix  []mixCohort
	u    uniforms
	cur  *retryModel
	// quantiles caches cur.Quantile.
	quantiles map[float64]float64
}

func newModelContext(svc *policy.Service, obs Observation) *modelContext {
	mc := &modelContext{quantiles: map[float64]float64{}}
	mc.r = obs.Retries.RetryRatio()
	if math.IsNaN(mc.r) {
		mc.why = fmt.Sprintf("no retry statistics for upstream %s (calls %v)", svc.Upstream, obs.Retries.Calls)
		return mc
	}
	mc.L = obs.Retries.AttemptLatency
	if mc.L <= 0 {
		mc.L = time.Duration(svc.Backoff.AttemptLatency)
	}
	variants := obs.Flags.Rollout
	if len(variants) == 0 {
		variants = []VariantWeight{{Variant: obs.Flags.DefaultVariant, Weight: 1}}
	}
	for _, vw := range variants {
		share := obs.Flags.Share(vw.Variant)
		if share == 0 || slices.ContainsFunc(mc.mix, func(c mixCohort) bool { return c.Strategy == vw.Variant }) {
			continue
		}
		if !strategyKnown(vw.Variant) {
			mc.why = fmt.Sprintf("variant %q of %s is not a known strategy", vw.Variant, svc.Flags.Strategy.Key)
			return mc
		}
		k, ok := obs.Flags.ConstantsFor(vw.Variant)
		if !ok {
			mc.why = fmt.Sprintf("constants of %s unknown (%s has no entry)", vw.Variant, svc.Flags.Constants.Key)
			return mc
		}
		mc.mix = append(mc.mix, mixCohort{Weight: share, Strategy: vw.Variant, Constants: k})
	}
	if len(mc.mix) == 0 {
		mc.why = "no strategy serves traffic"
		return mc
	}
	mc.p = estimateMixFailureProbability(mc.r, mc.mix)
	retries := 1
	for _, c := range mc.mix {
		retries = max(retries, effective(c.Strategy, c.Constants).MaxAttempts-1)
	}
	if b := svc.Backoff.MaxAttempts; b != nil {
		retries = max(retries, b.Max-1)
	}
	mc.u = newUniforms(modelPaths, max(retries, policy.MaxAttemptsLimit))
	mc.cur = mc.build(mc.mix)
	mc.ok = true
	return mc
}

func (mc *modelContext) build(mix []mixCohort) *retryModel {
	return newRetryModel(mc.p, mc.L, mix, mc.u)
}

func (mc *modelContext) curQuantile(q float64) float64 {
	v, ok := mc.quantiles[q]
	if !ok {
		v = mc.cur.Quantile(q)
		mc.quantiles[q] = v
	}
	return v
}

// predict anchors the model on the observation: the expected SLI after an
// action is the observed SLI plus the modelled change of the retry
// contribution.
func (mc *modelContext) predict(c *cycle, after *retryModel) []Prediction {
	out := make([]Prediction, 0, len(c.readings))
	for _, r := range c.readings {
		p := Prediction{SLO: r.slo.Name, Signal: r.slo.Signal, Observed: r.a.Value, Objective: r.objective, Target: r.objective}
		if r.breaching {
			p.Target = r.objective * (1 - c.svc.Hysteresis.Exit)
			// A breaching SLO's SLI lags a fresh regression (its window
			// still holds minutes from before): the action is sized for
			// the level it is heading to, the forecast when higher.
			p.Observed = r.worst
		}
		if r.slo.DependsOnUpstream() {
			switch r.slo.Signal {
			case policy.SignalLatency:
				q := r.slo.Objective.Quantile
				p.ModelBefore = mc.curQuantile(q)
				p.ModelAfter = after.Quantile(q)
				p.RetriesBefore = RetriesAtQuantile(mc.p, q, maxAttempts(mc.cur))
				p.RetriesAfter = RetriesAtQuantile(mc.p, q, maxAttempts(after))
			case policy.SignalRetryRatio:
				p.ModelBefore, p.ModelAfter = mc.cur.RetryRatio(), after.RetryRatio()
			case policy.SignalErrorRatio:
				p.ModelBefore, p.ModelAfter = mc.cur.ExhaustRatio(), after.ExhaustRatio()
			}
		}
		p.Expected = max(0, p.Observed+p.ModelAfter-p.ModelBefore)
		if r.slo.Signal != policy.SignalLatency {
			p.Expected = min(p.Expected, 1)
		}
		out = append(out, p)
	}
	return out
}

func maxAttempts(m *retryModel) int {
	n := 1
	for _, c := range m.cohorts {
		n = max(n, c.n)
	}
	return n
}

// dim is one tunable constant.
type dim struct {
	name   string
	get    func(Constants) float64
	set    func(*Constants, float64)
	fmt    func(float64) string
	values []float64
	weight float64
	span   float64 // max − min, for the cost
}

func secs(d time.Duration) float64 { return d.Seconds() }
func fromSecs(v float64) time.Duration {
	return time.Duration(math.Round(v*1000)) * time.Millisecond
}
func fmtSecs(v float64) string { return model.Duration(fromSecs(v)).String() }
func fmtNum(v float64) string  { return fmt.Sprintf("%g", v) }

// grid returns the candidate values of a constant: the current value and
// up to steps·maxStep either way (in steps increments), within [lo, hi],
// rounded by round.
func grid(cur, lo, hi, maxStep float64, steps int, round func(float64) float64) []float64 {
	vals := []float64{cur}
	for i := -steps; i <= steps; i++ {
		if i == 0 {
			continue
		}
		v := round(cur + maxStep*float64(i)/float64(steps))
		v = min(max(v, lo), hi)
		if math.Abs(v-cur) <= maxStep*(1+1e-9) && !slices.Contains(vals, v) {
			vals = append(vals, v)
		}
	}
	slices.Sort(vals)
	return vals
}

func roundTo(unit float64) func(float64) float64 {
	return func(v float64) float64 { return math.Round(v/unit) * unit }
}

// dims returns the tunable constants of strategy with their candidate
// values around the effective current constants.
func dims(b policy.Backoff, strategy string, raw, eff Constants) []dim {
	var ds []dim
	ms := roundTo(0.001)
	if x := b.Base; x != nil {
		ds = append(ds, dim{name: "base", weight: 1,
			get: func(k Constants) float64 { return secs(k.Base) }, set: func(k *Constants, v float64) { k.Base = fromSecs(v) }, fmt: fmtSecs,
			values: grid(secs(eff.Base), secs(time.Duration(x.Min)), secs(time.Duration(x.Max)), secs(time.Duration(x.MaxStep)), 2, ms),
			span:   secs(time.Duration(x.Max - x.Min))})
	}
	if x := b.Cap; x != nil {
		ds = append(ds, dim{name: "cap", weight: 1,
			get: func(k Constants) float64 { return secs(k.Cap) }, set: func(k *Constants, v float64) { k.Cap = fromSecs(v) }, fmt: fmtSecs,
			values: grid(secs(eff.Cap), secs(time.Duration(x.Min)), secs(time.Duration(x.Max)), secs(time.Duration(x.MaxStep)), 2, ms),
			span:   secs(time.Duration(x.Max - x.Min))})
	}
	if x := b.Multiplier; x != nil {
		ds = append(ds, dim{name: "multiplier", weight: 1,
			get: func(k Constants) float64 { return k.Multiplier }, set: func(k *Constants, v float64) { k.Multiplier = v }, fmt: fmtNum,
			values: grid(eff.Multiplier, x.Min, x.Max, x.MaxStep, 1, roundTo(0.01)), span: x.Max - x.Min})
	}
	if x := b.Jitter; x != nil && strategy == policy.StrategyGRPC {
		ds = append(ds, dim{name: "jitter", weight: 1,
			get: func(k Constants) float64 { return k.Jitter }, set: func(k *Constants, v float64) { k.Jitter = v }, fmt: fmtNum,
			values: grid(eff.Jitter, x.Min, x.Max, x.MaxStep, 1, roundTo(0.01)), span: x.Max - x.Min})
	}
	if x := b.MaxAttempts; x != nil {
		ds = append(ds, dim{name: "maxAttempts", weight: 2,
			get: func(k Constants) float64 { return float64(k.MaxAttempts) }, set: func(k *Constants, v float64) { k.MaxAttempts = int(v) }, fmt: fmtNum,
			values: grid(float64(eff.MaxAttempts), float64(x.Min), float64(x.Max), float64(x.MaxStep), x.MaxStep, roundTo(1)),
			span:   float64(x.Max - x.Min)})
	}
	if x := b.RetryBudget; x != nil && raw.RetryBudget > 0 {
		ds = append(ds, dim{name: "retryBudget", weight: 1,
			get: func(k Constants) float64 { return k.RetryBudget }, set: func(k *Constants, v float64) { k.RetryBudget = v }, fmt: fmtNum,
			values: grid(raw.RetryBudget, x.Min, x.Max, x.MaxStep, 1, roundTo(0.001)), span: x.Max - x.Min})
	}
	for i := range ds {
		if ds[i].span <= 0 {
			ds[i].span = 1
		}
	}
	return ds
}

// candidate is one set of constants the tuner evaluated.
type candidate struct {
	k        Constants // effective values of the tuned dims on top of raw
	pred     []Prediction
	score    float64 // max over breaching SLOs of the remaining gap fraction
	gain     float64 // predicted progress, as verification will measure it
	cost     float64
	feasible bool // hard constraints hold
	exhaust  float64
	resil    float64
	span     time.Duration
}

// tuneStep chooses new constants for the new strategy from the model.
func (c *cycle) tuneStep(inc *Incident) (*step, string) {
	svc := c.svc
	if !svc.Backoff.Tunable() {
		return nil, "no constant is tunable"
	}
	mc := c.model()
	if !mc.ok {
		return nil, "model unavailable: " + mc.why
	}
	newV := svc.Flags.Strategy.NewVariant
	share := c.obs.Flags.Share(newV)
	if share == 0 {
		return nil, newV + " serves no traffic"
	}
	raw, _ := c.obs.Flags.ConstantsFor(newV) // present: the model checked
	eff := effective(newV, raw)
	ds := dims(svc.Backoff, newV, raw, eff)

	var breaching []reading
	for _, r := range c.readings {
		if r.breaching {
			breaching = append(breaching, r)
		}
	}
	if len(breaching) == 0 {
		return nil, "no SLO breaching"
	}

	// The other cohorts do not change between candidates.
	var others []cohortModel
	for _, cm := range mc.cur.cohorts {
		if cm.strategy != newV {
			others = append(others, cm)
		}
	}
	// Within one incident, tuning never moves a constant back the way an
	// earlier tune of the incident moved it: that trades one SLO against
	// another and oscillates. When only a reversal would help, the ladder
	// moves on to the rollout.
	dirs := map[string]float64{}
	for _, a := range inc.Actions {
		if a.Rung != RungTune || a.Model == nil {
			continue
		}
		for _, d := range ds {
			if delta := d.get(a.Model.Chosen) - d.get(a.Model.Current); delta != 0 {
				dirs[d.name] = math.Copysign(1, delta)
			}
		}
	}
	res := svc.Backoff.Resilience
	spanCur := retrySpan(newV, eff, mc.u)
	// The delays before the first retries do not depend on maxAttempts:
	// candidates differing only in attempts share one set of sample paths.
	maxN := eff.MaxAttempts
	for _, d := range ds {
		if d.name == "maxAttempts" {
			maxN = int(slices.Max(d.values))
		}
	}
	paths := map[Constants]*cohortModel{}
	cohortFor := func(k Constants) cohortModel {
		key := k
		key.MaxAttempts, key.RetryBudget = 0, 0
		cm, ok := paths[key]
		if !ok {
			full := k
			full.MaxAttempts = max(maxN, k.MaxAttempts)
			m := newCohortModel(share, newV, full, mc.u)
			cm = &m
			paths[key] = cm
		}
		out := cm.withAttempts(k.MaxAttempts)
		out.c.RetryBudget = k.RetryBudget
		return out
	}
	evaluate := func(k Constants) candidate {
		cand := candidate{k: k}
		cm := cohortFor(k)
		cand.span = cm.spanDuration()
		cand.exhaust = ExhaustionProbability(mc.p, k.MaxAttempts)
		cand.feasible = k.Cap >= k.Base
		for _, d := range ds {
			if delta := d.get(k) - d.get(eff); delta != 0 && dirs[d.name] != 0 && math.Copysign(1, delta) != dirs[d.name] {
				cand.feasible = false // a reversal within the incident
			}
		}
		if res != nil {
			cand.resil = ExhaustionProbability(res.FailureProbability, k.MaxAttempts)
			if cand.resil > res.MaxFailureRatio && k.MaxAttempts < eff.MaxAttempts {
				cand.feasible = false
			}
			minSpan := time.Duration(res.MinRetrySpan)
			if cand.span < minSpan && cand.span < spanCur {
				cand.feasible = false
			}
		}
		for _, d := range ds {
			cand.cost += d.weight * math.Abs(d.get(k)-d.get(eff)) / d.span
		}
		cand.score = math.Inf(1)
		if !cand.feasible {
			return cand // the quantile is not needed
		}
		m := &retryModel{p: mc.p, L: mc.L.Seconds(), cohorts: append(slices.Clone(others), cm)}
		cand.pred = mc.predict(c, m)
		cand.score = math.Inf(-1)
		for i, p := range cand.pred {
			r := c.readings[i]
			if r.breaching {
				gap := max(r.worst-p.Target, r.objective*0.01)
				cand.score = max(cand.score, (p.Expected-p.Target)/gap)
			} else if p.Expected > max(r.objective, r.a.Value) {
				cand.feasible = false // would push another SLO into breach
			}
		}
		cand.gain = c.predictedGain(cand.pred)
		return cand
	}

	var cands []candidate
	k := eff
	var walk func(i int)
	walk = func(i int) {
		if i == len(ds) {
			if k != eff {
				cands = append(cands, evaluate(k))
			}
			return
		}
		for _, v := range ds[i].values {
			ds[i].set(&k, v)
			walk(i + 1)
		}
		ds[i].set(&k, ds[i].get(eff))
	}
	if len(ds) > 0 {
		walk(0)
	}
	if len(cands) == 0 {
		return nil, fmt.Sprintf("constants of %s at their bounds", newV)
	}
	// A candidate is worth writing only when the model predicts the
	// progress verification will ask of it: a tune that closes less than
	// verification.minImprovement of the gap spends a write, a cooldown
	// and an evaluation window on nothing.
	minImp := svc.Verification.MinImprovement
	var feasible, useful, goal []candidate
	for _, cd := range cands {
		if !cd.feasible {
			continue
		}
		feasible = append(feasible, cd)
		if cd.gain >= minImp {
			useful = append(useful, cd)
			if cd.score <= 0 {
				goal = append(goal, cd)
			}
		}
	}
	if len(feasible) == 0 {
		return nil, fmt.Sprintf("no candidate among %d within bounds keeps the other SLOs and the resilience constraints", len(cands))
	}
	if len(useful) == 0 {
		top := slices.MaxFunc(feasible, func(a, b candidate) int { return cmp.Compare(a.gain, b.gain) })
		return nil, fmt.Sprintf("model predicts no useful gain within one step (best closes %.0f%% of the gap, need %.0f%%): %s",
			max(0, 100*top.gain), 100*minImp, describeRetryContribution(mc, breaching))
	}
	var best candidate
	if len(goal) > 0 {
		best = slices.MinFunc(goal, func(a, b candidate) int {
			return cmp.Or(cmp.Compare(a.cost, b.cost), cmp.Compare(a.score, b.score))
		})
	} else {
		best = slices.MinFunc(useful, func(a, b candidate) int {
			return cmp.Or(cmp.Compare(a.score, b.score), cmp.Compare(a.cost, b.cost))
		})
	}

	chosen := raw
	var changes []string
	for _, d := range ds {
		if v := d.get(best.k); v != d.get(eff) {
			d.set(&chosen, v)
			changes = append(changes, fmt.Sprintf("%s %s→%s", d.name, d.fmt(d.get(eff)), d.fmt(v)))
		}
	}
	rep := &ModelReport{
		Strategy: newV, Share: share, RetryRatio: mc.r, FailureProbability: mc.p, AttemptLatency: model.Duration(mc.L),
		Current: raw, Chosen: chosen, ExhaustBefore: ExhaustionProbability(mc.p, eff.MaxAttempts), ExhaustAfter: best.exhaust,
		RetrySpanBefore: model.Duration(spanCur.Round(time.Millisecond)), RetrySpan: model.Duration(best.span.Round(time.Millisecond)),
		Candidates: len(cands), Feasible: len(goal), GoalMet: len(goal) > 0,
	}
	if res != nil {
		rep.ResilienceFailure = best.resil
	}
	rep.Why = c.why(mc, rep, best, changes)
	undoK := raw
	undo := Mutation{Kind: MutationSetConstants, FlagKey: svc.Flags.Constants.Key, Strategy: newV, Constants: &undoK}
	if _, own := c.obs.Flags.Constants[newV]; !own {
		undo.Constants = nil // the strategy used the flat entry: remove its own
	}
	ck := chosen
	s := &step{
		rung: RungTune, key: stepKey(inc, RungTune),
		mutation: Mutation{Kind: MutationSetConstants, FlagKey: svc.Flags.Constants.Key, Strategy: newV, Constants: &ck},
		undo:     undo, model: rep, expected: best.pred,
	}
	s.reason = fmt.Sprintf("tune %s: %s%s", newV, strings.Join(changes, ", "), expectSummary(best.pred))
	return s, ""
}

func (cm *cohortModel) spanDuration() time.Duration {
	return time.Duration(cm.span * float64(time.Second))
}

func describeRetryContribution(mc *modelContext, breaching []reading) string {
	var parts []string
	for _, r := range breaching {
		if r.slo.Signal == policy.SignalLatency && r.slo.DependsOnUpstream() {
			q := r.slo.Objective.Quantile
			parts = append(parts, fmt.Sprintf("retries add %s to the p%s of %s (p=%.3f, k=%d)",
				fmtSecs(mc.curQuantile(q)-mc.L.Seconds()), quantileName(q), r.slo.Name, mc.p, RetriesAtQuantile(mc.p, q, maxAttempts(mc.cur))))
		}
	}
	if len(parts) == 0 {
		return fmt.Sprintf("p=%.3f", mc.p)
	}
	return strings.Join(parts, "; ")
}

func quantileName(q float64) string {
	s := fmt.Sprintf("%g", q*100)
	return strings.ReplaceAll(s, ".", "")
}

// why explains a tuning choice in a few sentences.
func (c *cycle) why(mc *modelContext, rep *ModelReport, best candidate, changes []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "observed retry ratio %.2f%% ⇒ per-attempt failure probability p=%.3f (bounded-attempts estimate, %s at %.0f%%)",
		100*mc.r, mc.p, rep.Strategy, 100*rep.Share)
	for i, p := range best.pred {
		r := c.readings[i]
		if !r.breaching {
			continue
		}
		switch r.slo.Signal {
		case policy.SignalLatency:
			fmt.Fprintf(&b, "; p%s of %s: the quantile call makes %d retr%s, retry part %s → %s, expected %s → %s (target %s)",
				quantileName(r.slo.Objective.Quantile), r.slo.Name, p.RetriesBefore, plural(p.RetriesBefore),
				fmtSecs(p.ModelBefore), fmtSecs(p.ModelAfter),
				formatSLI(p.Signal, p.Observed), formatSLI(p.Signal, p.Expected), formatSLI(p.Signal, p.Target))
		default:
			fmt.Fprintf(&b, "; %s: expected %s → %s (target %s)", r.slo.Name,
				formatSLI(p.Signal, p.Observed), formatSLI(p.Signal, p.Expected), formatSLI(p.Signal, p.Target))
		}
	}
	fmt.Fprintf(&b, "; change %s", strings.Join(changes, ", "))
	fmt.Fprintf(&b, "; p^n exhaustion %.2g → %.2g", rep.ExhaustBefore, rep.ExhaustAfter)
	if res := c.svc.Backoff.Resilience; res != nil {
		fmt.Fprintf(&b, "; brown-out (p=%.2g) exhaustion %.2g (max %.2g), retry span %s → %s (min %s)",
			res.FailureProbability, rep.ResilienceFailure, res.MaxFailureRatio,
			time.Duration(rep.RetrySpanBefore), time.Duration(rep.RetrySpan), time.Duration(res.MinRetrySpan))
	}
	if rep.GoalMet {
		fmt.Fprintf(&b, "; smallest change of the %d (of %d candidates) meeting every target", rep.Feasible, rep.Candidates)
	} else {
		fmt.Fprintf(&b, "; no candidate within one step meets the target: best predicted progress (%d candidates)", rep.Candidates)
	}
	return b.String()
}

func plural(n int) string {
	if n == 1 {
		return "y"
	}
	return "ies"
}
