package detector

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/tailguard/tailguard/detector/stats"
)

// cusumBank is the number of CUSUMs run per slice, tuned to R, R², R⁴ for
// the minimum effect R.
const cusumBank = 3

// detectParams are the analysis-wide settings of the test.
type detectParams struct {
	h, arl0     float64
	confidence  float64
	minRequests float64
	maxGap      float64
	staleSteps  int
}

// baselineCounts are summed baseline counts and their per-step values (for
// the dispersion estimate).
type baselineCounts struct {
	n, x   float64
	ns, xs []float64
	pooled []map[string]string
}

// own returns the baseline of one slice, its per-step values read in place
// (the dispersion estimates skip missing steps, as they skip empty ones).
func own(s *stream, g grid) baselineCounts {
	b := baselineCounts{ns: s.n[:g.baseSteps], xs: s.x[:g.baseSteps]}
	for i := range g.baseSteps {
		if n := s.n[i]; !math.IsNaN(n) {
			b.n += n
			b.x += s.x[i]
		}
	}
	return b
}

// add adds a slice's baseline to a pooled one, copying its per-step values.
func (b *baselineCounts) add(s *stream, g grid) {
	for i := range g.baseSteps {
		n, x := s.n[i], s.x[i]
		if math.IsNaN(n) {
			continue
		}
		b.n += n
		b.x += x
		if len(b.ns) < g.baseSteps {
			b.ns = append(b.ns, make([]float64, g.baseSteps-len(b.ns))...)
			b.xs = append(b.xs, make([]float64, g.baseSteps-len(b.xs))...)
		}
		b.ns[i] += n
		b.xs[i] += x
	}
}

// evaluate runs the test on one slice and fills in the finding's verdict,
// counts, effect and detection. sd holds the whole signal, for pooling a
// baseline when the slice is new.
func evaluate(f *Finding, s *stream, sd *signalData, g grid, p detectParams) {
	sig := sd.sig
	if sig.poisson {
		f.Detection = &Detection{Test: "Poisson CUSUM"}
	} else {
		f.Detection = &Detection{Test: "binomial CUSUM"}
	}
	f.Detection.Threshold, f.Detection.ARL0 = p.h, p.arl0

	// Binomial counts cannot exceed their trials.
	if !sig.poisson {
		for i := range s.n {
			if s.x[i] > s.n[i] {
				s.x[i] = s.n[i]
			}
		}
	}

	// Data quality of the monitored window.
	missing, lastData := 0, -1
	for i := g.baseSteps; i < g.steps(); i++ {
		if math.IsNaN(s.n[i]) {
			missing++
		} else {
			lastData = i
		}
	}
	if lastData < 0 {
		f.inconclusive("no samples since %s (series absent or stale)", fmtTime(g.from))
		return
	}
	if stale := g.steps() - 1 - lastData; stale >= p.staleSteps {
		f.inconclusive("no samples since %s (series stale or scrapes missing for %s)", fmtTime(g.end(lastData)), time.Duration(stale)*g.step)
		return
	}
	if ratio := float64(missing) / float64(g.monSteps); ratio > p.maxGap {
		why := ""
		if s.nan > 0 {
			why = fmt.Sprintf("; %d values were NaN or infinite", s.nan)
		}
		f.inconclusive("%d of %d monitored steps have no data (max %.0f%%)%s", missing, g.monSteps, 100*p.maxGap, why)
		return
	}

	// Baseline: the slice's own, or pooled from comparable slices when the
	// slice did not exist before.
	base := own(s, g)
	if base.n == 0 {
		base = pooledBaseline(s, sd, g)
		if base.n == 0 {
			f.inconclusive("no baseline: the slice is new and no comparable slice existed before %s", fmtTime(g.from))
			return
		}
		f.Counts.BaselinePooledFrom = base.pooled
		f.Notes = append(f.Notes, fmt.Sprintf("slice absent before %s: baseline pooled from %d comparable slice(s)", fmtTime(g.from), len(base.pooled)))
	}
	f.Counts.BaselineTrials, f.Counts.BaselineEvents = base.n, base.x
	if base.n < p.minRequests {
		f.inconclusive("too few %s in the baseline: %.0f (need %.0f)", trialNoun(sig), base.n, p.minRequests)
		return
	}

	// Rates under control and the alternatives of the CUSUM bank.
	minEffect := sig.minEffect
	var p0, phi float64
	if sig.poisson {
		p0 = base.x / base.n
		if base.x == 0 {
			p0 = 0.5 / base.n
		}
		phi = stats.PoissonDispersion(base.xs, base.ns, p0)
	} else {
		p0 = base.x / base.n
		if base.x == 0 || base.x == base.n {
			p0 = (base.x + 0.5) / (base.n + 1)
		}
		phi = stats.Dispersion(base.xs, base.ns, p0)
	}
	// One slice's estimate is noisy (60 baseline steps give it a standard
	// error near 20%); the signal-wide estimate is steady. Take the larger.
	phi = math.Max(phi, sd.phi)
	alt := func(r float64) float64 {
		if sig.poisson {
			return p0 * r
		}
		return math.Min(p0*r, (1+p0)/2)
	}
	p1 := alt(minEffect)
	f.Detection.P0, f.Detection.P1, f.Detection.Dispersion = p0, p1, phi

	// A bank of CUSUMs tuned to R, R², R⁴: the first is best for shifts
	// near the minimum effect, the others catch large shifts in a step or
	// two. The threshold already pays for the bank (Bonferroni).
	var res stats.CUSUMResult
	var curN, info float64
	llr := make([]float64, g.monSteps)
	for k := range cusumBank {
		r := math.Pow(minEffect, float64(int(1)<<k))
		pk := alt(r)
		for j := range llr {
			i := g.baseSteps + j
			n, x := s.n[i], s.x[i]
			if math.IsNaN(n) {
				llr[j] = math.NaN()
				continue
			}
			if k == 0 {
				curN += n
				if sig.poisson {
					info += n * stats.PoissonKL(p1, p0) / phi
				} else {
					info += n * stats.BinomialKL(p1, p0) / phi
				}
			}
			if sig.poisson {
				llr[j] = stats.PoissonLLR(x, n, p0, pk) / phi
			} else {
				llr[j] = stats.BinomialLLR(x, n, p0, pk) / phi
			}
		}
		rk := stats.CUSUM(llr, p.h)
		if k == 0 {
			res = rk
			f.Detection.Steps = rk.Steps
		}
		if rk.Alarm && (!res.Alarm || rk.AlarmIndex < res.AlarmIndex) {
			res = rk
		}
		if !res.Alarm && rk.Max > res.Max {
			res.Max = rk.Max
		}
	}
	f.Detection.Statistic, f.Detection.Alarm = res.Max, res.Alarm
	f.Detection.Information = info

	// Current window: from the onset after an alarm, else everything.
	from := g.baseSteps
	if res.Alarm {
		from = g.baseSteps + res.OnsetIndex
		alarmAt := g.end(g.baseSteps + res.AlarmIndex)
		if c, ok := laterShift(s, g, from, p, sig, minEffect, phi); ok {
			// The CUSUM found the first shift; a second, larger one
			// started later: that is the regime in force.
			f.Notes = append(f.Notes, fmt.Sprintf("a first shift from %s; a second, larger one from %s", fmtTime(g.begin(from)), fmtTime(g.begin(c))))
			from = c
			alarmAt = g.end(max(c, g.baseSteps+res.AlarmIndex))
		}
		onset := g.begin(from)
		f.Detection.AlarmAt, f.Detection.Onset = &alarmAt, &onset
		f.onset = onset
	}
	var x1, n1 float64
	for i := from; i < g.steps(); i++ {
		if !math.IsNaN(s.n[i]) {
			n1 += s.n[i]
			x1 += s.x[i]
		}
	}
	f.Counts.CurrentTrials, f.Counts.CurrentEvents = n1, x1
	f.Counts.CurrentWindow = Window{Start: g.begin(from), End: g.last()}

	if curN < p.minRequests {
		f.inconclusive("too few %s since %s: %.0f (need %.0f)", trialNoun(sig), fmtTime(g.from), curN, p.minRequests)
		return
	}
	var effect stats.Ratio
	var err error
	if sig.poisson {
		effect, err = stats.RateRatio(x1, n1, base.x, base.n, p.confidence)
	} else {
		effect, err = stats.RiskRatio(x1, n1, base.x, base.n, p.confidence)
	}
	if err != nil {
		f.inconclusive("effect not computable: %v", err)
		return
	}
	effect = effect.Widen(math.Sqrt(phi))
	f.Effect = &effect

	rx, rn, rfrom := recent(s, g, from, sig, p.minRequests)
	within := withinObjective(sig, rx, rn)
	switch {
	case res.Alarm && effect.Estimate >= minEffect && effect.Lower > 1 && within:
		f.Verdict = Healthy
		f.Reason = fmt.Sprintf("%s rose %.2f× (%.0f%% CI %.2f–%.2f) from %s but is within the objective: %s ≤ %s since %s",
			rateNoun(sig), effect.Estimate, 100*effect.Confidence, effect.Lower, effect.Upper,
			fmtTime(*f.Detection.Onset), fmtRate(rx/rn), fmtRate(sig.cfg.Objective), fmtTime(g.begin(rfrom)))
	case res.Alarm && effect.Estimate >= minEffect && effect.Lower > 1:
		f.Verdict = Regressed
		f.Reason = fmt.Sprintf("%s rose %.2f× (%.0f%% CI %.2f–%.2f) from %s; CUSUM %.1f ≥ %.1f at %s",
			rateNoun(sig), effect.Estimate, 100*effect.Confidence, effect.Lower, effect.Upper,
			fmtTime(*f.Detection.Onset), res.Max, p.h, fmtTime(*f.Detection.AlarmAt))
	case res.Alarm:
		f.Verdict = Healthy
		f.Reason = fmt.Sprintf("CUSUM alarmed at %s but the effect %.2f× (%.0f%% CI %.2f–%.2f) is below the minimum %.2f× or not significant",
			fmtTime(*f.Detection.AlarmAt), effect.Estimate, 100*effect.Confidence, effect.Lower, effect.Upper, minEffect)
	case effect.Estimate < minEffect:
		f.Verdict = Healthy
		f.Reason = fmt.Sprintf("no shift: CUSUM peaked at %.1f < %.1f; %s %.2f× baseline (%.0f%% CI %.2f–%.2f)",
			res.Max, p.h, rateNoun(sig), effect.Estimate, 100*effect.Confidence, effect.Lower, effect.Upper)
	default:
		f.inconclusive("%s %.2f× baseline (%.0f%% CI %.2f–%.2f) but not confirmed: CUSUM %.1f < %.1f",
			rateNoun(sig), effect.Estimate, 100*effect.Confidence, effect.Lower, effect.Upper, res.Max, p.h)
	}
}

// laterShift looks for a second, larger shift after the CUSUM's onset
// from: the split point of the monitored data since from that maximises
// the two-segment likelihood, accepted when the later segment's rate is
// at least minEffect times the earlier one's with confidence (widened by
// φ) and the split's log-likelihood ratio (divided by φ) passes the
// detection threshold h itself, so scanning every step costs no more
// false alarms than the CUSUM does. It returns the first step of the
// later segment. Without it, a small healthy shift (within its objective)
// followed an hour later by a brown-out or a second, harmful change is
// judged on their average, from the first.
func laterShift(s *stream, g grid, from int, p detectParams, sig *compiledSignal, minEffect, phi float64) (int, bool) {
	end := g.steps()
	cx := make([]float64, end-from+1)
	cn := make([]float64, end-from+1)
	for i := from; i < end; i++ {
		cx[i-from+1], cn[i-from+1] = cx[i-from], cn[i-from]
		if !math.IsNaN(s.n[i]) {
			cx[i-from+1] += s.x[i]
			cn[i-from+1] += s.n[i]
		}
	}
	xt, nt := cx[len(cx)-1], cn[len(cn)-1]
	if nt <= 0 {
		return 0, false
	}
	ll := func(x, n float64) float64 {
		if n <= 0 {
			return 0
		}
		r := x / n
		if sig.poisson {
			if x == 0 {
				return -n * r
			}
			return x*math.Log(r) - n*r
		}
		out := 0.0
		if x > 0 {
			out += x * math.Log(r)
		}
		if n-x > 0 {
			out += (n - x) * math.Log(1-r)
		}
		return out
	}
	whole := ll(xt, nt)
	best, bestLLR := 0, 0.0
	for c := from + 1; c < end; c++ {
		x0, n0 := cx[c-from], cn[c-from]
		x1, n1 := xt-x0, nt-n0
		if n0 < p.minRequests || n1 < p.minRequests || x1*n0 <= x0*n1 {
			continue // too little data on a side, or not an increase
		}
		if llr := (ll(x0, n0) + ll(x1, n1) - whole) / phi; llr > bestLLR {
			best, bestLLR = c, llr
		}
	}
	if best == 0 || bestLLR < p.h {
		return 0, false
	}
	x0, n0 := cx[best-from], cn[best-from]
	var r stats.Ratio
	var err error
	if sig.poisson {
		r, err = stats.RateRatio(xt-x0, nt-n0, x0, n0, p.confidence)
	} else {
		r, err = stats.RiskRatio(xt-x0, nt-n0, x0, n0, p.confidence)
	}
	if err != nil {
		return 0, false
	}
	r = r.Widen(math.Sqrt(phi))
	return best, r.Estimate >= minEffect && r.Lower > 1
}

// recent sums the counts of the signal's objective window, the trailing
// steps of the current window (from the onset at from): the objective
// is about now, not the average since the onset, which a mitigation or a
// slow build-up leaves behind. The window grows back towards the onset
// until it holds minRequests trials. It returns the counts and the first
// step summed.
func recent(s *stream, g grid, from int, sig *compiledSignal, minRequests float64) (x, n float64, first int) {
	w := max(1, int(time.Duration(sig.cfg.ObjectiveWindow)/g.step))
	first = g.steps()
	for i := g.steps() - 1; i >= from; i-- {
		if g.steps()-i > w && n >= minRequests {
			break
		}
		first = i
		if !math.IsNaN(s.n[i]) {
			n += s.n[i]
			x += s.x[i]
		}
	}
	return x, n, first
}

// withinObjective reports whether a slice's recent rate, x events in n
// trials, is within the signal's objective. The point
// estimate decides: the CUSUM and the effect interval have already made
// the shift significant, and with the trials a confirmed shift carries,
// an estimate above the objective is above it. Without an objective no
// rate is within.
func withinObjective(sig *compiledSignal, x, n float64) bool {
	return sig.cfg.Objective > 0 && n > 0 && x/n <= sig.cfg.Objective
}

// fmtRate formats a rate of bad events: a percentage.
func fmtRate(v float64) string { return fmt.Sprintf("%.2f%%", 100*v) }

// signalDispersion pools Pearson's χ² over the baselines of every slice
// with enough traffic: counting artefacts such as increase()'s
// extrapolation inflate the variance of all slices alike.
func signalDispersion(sd *signalData, g grid, minRequests float64) float64 {
	var chi2 float64
	var df int
	for _, s := range sd.streams {
		b := own(s, g)
		if b.n < minRequests || b.x <= 0 {
			continue
		}
		var c float64
		var d int
		if sd.sig.poisson {
			c, d = stats.PoissonPearsonChi2(b.xs, b.ns, b.x/b.n)
		} else if b.x < b.n {
			c, d = stats.PearsonChi2(b.xs, b.ns, b.x/b.n)
		}
		chi2 += c
		df += d
	}
	return stats.DispersionOf(chi2, df)
}

// pooledBaseline sums the baselines of slices that agree with s on every
// label whose value s shares with some baseline slice: a slice for a new
// variant or version borrows the baseline of the traffic it replaced.
func pooledBaseline(s *stream, sd *signalData, g grid) baselineCounts {
	var out baselineCounts
	seen := map[string]map[string]bool{} // label → values with baseline data
	var withBase []*stream
	for _, o := range sd.streams {
		has := false
		for i := range g.baseSteps {
			if !math.IsNaN(o.n[i]) && o.n[i] > 0 {
				has = true
				break
			}
		}
		if !has {
			continue
		}
		withBase = append(withBase, o)
		for k, v := range o.labels {
			if seen[k] == nil {
				seen[k] = map[string]bool{}
			}
			seen[k][v] = true
		}
	}
	fixed := map[string]string{}
	novel := 0
	for k, v := range s.labels {
		if seen[k][v] {
			fixed[k] = v
		} else {
			novel++
		}
	}
	if novel == 0 {
		// Every value existed, only not together: no honest stand-in.
		return out
	}
	for _, o := range withBase {
		match := true
		for k, v := range fixed {
			if o.labels[k] != v {
				match = false
				break
			}
		}
		if match {
			out.add(o, g)
			out.pooled = append(out.pooled, cloneLabels(o.labels))
		}
	}
	return out
}

func (f *Finding) inconclusive(format string, args ...any) {
	f.Verdict = Inconclusive
	f.Reason = fmt.Sprintf(format, args...)
}

func trialNoun(sig *compiledSignal) string {
	if sig.cfg.Kind == KindRetryRatio {
		return "calls"
	}
	return "requests"
}

func rateNoun(sig *compiledSignal) string {
	switch sig.cfg.Kind {
	case KindLatency:
		return "slow-request fraction"
	case KindRetryRatio:
		return "retries per call"
	default:
		return "error ratio"
	}
}

// statistic describes what a signal counts.
func statistic(sd *signalData) string {
	c := sd.sig.cfg
	switch c.Kind {
	case KindLatency:
		b := sd.boundary
		if b == "" {
			b = "?"
		}
		return fmt.Sprintf("fraction of %s requests slower than %ss (near baseline p%s)", c.Histogram, b, quantileName(c.Quantile))
	case KindRetryRatio:
		return fmt.Sprintf("retries per call: %s / %s", c.RetriesMetric, c.Metric)
	default:
		return fmt.Sprintf("errors per request: %s{%s} / %s", c.Metric, strings.Trim(c.ErrorSelector, "{}"), c.Metric)
	}
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }
