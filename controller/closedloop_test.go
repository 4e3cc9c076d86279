package controller

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/controller/internal/simmodel"
	"github.com/tailguard/tailguard/controller/policy"
)

// The closed-loop test runs the demo story in virtual time: the simulated
// shop service (package simmodel) serves /checkout through the flags of a
// MemoryFlags store; every minute a minimal detector turns the last five
// minutes of simulated requests into assessments; the controller decides
// and writes the flags the simulation reads in the next minute.

func toSim(name string, k Constants) simmodel.Strategy {
	return simmodel.Strategy{Name: name, Base: k.Base, Cap: k.Cap, Multiplier: k.Multiplier, Jitter: k.Jitter, MaxAttempts: k.MaxAttempts}
}

func fromSim(s simmodel.Strategy) Constants {
	return Constants{Base: s.Base, Cap: s.Cap, Multiplier: s.Multiplier, Jitter: s.Jitter, MaxAttempts: s.MaxAttempts}
}

// cohorts turns a flag state into the simulation's rollout.
func cohorts(f FlagState) []simmodel.Cohort {
	variants := f.Rollout
	if len(variants) == 0 {
		variants = []VariantWeight{{f.DefaultVariant, 100}}
	}
	var out []simmodel.Cohort
	for _, vw := range variants {
		if vw.Weight <= 0 {
			continue
		}
		k, _ := f.ConstantsFor(vw.Variant)
		out = append(out, simmodel.Cohort{Weight: float64(vw.Weight), Strategy: toSim(vw.Variant, k)})
	}
	return out
}

// window aggregates the last minutes of simulated traffic.
type window struct {
	minutes []simmodel.Stats
}

func (w *window) add(s simmodel.Stats, size int) {
	w.minutes = append(w.minutes, s)
	if len(w.minutes) > size {
		w.minutes = w.minutes[1:]
	}
}

type agg struct {
	p99, retryRatio, errorRatio, rejectedRatio float64
	requests                                   int
	calls, retries, exhausted, attempts        float64
	attemptLatency                             time.Duration
}

func (w *window) agg() agg {
	var a agg
	var attemptSecs, rejected float64
	for _, m := range w.minutes {
		a.requests += m.Requests
		a.calls += float64(m.Calls)
		a.retries += float64(m.Retries)
		a.exhausted += float64(m.Failed)
		a.attempts += float64(m.Attempts)
		attemptSecs += m.AttemptSeconds
		rejected += float64(m.Rejected)
	}
	a.p99 = w.quantile(0.99, a.requests)
	a.retryRatio = a.retries / a.calls
	a.errorRatio = a.exhausted / a.calls
	a.rejectedRatio = rejected / a.attempts
	a.attemptLatency = time.Duration(attemptSecs / a.attempts * float64(time.Second))
	return a
}

// quantile returns the q-quantile (nearest rank) of the window's n
// latencies. Only the top of each minute's sorted latencies can hold it.
func (w *window) quantile(q float64, n int) float64 {
	top := n - (int(math.Ceil(q*float64(n))) - 1)
	var cand []float64
	for _, m := range w.minutes {
		cand = append(cand, m.Latencies[max(len(m.Latencies)-top, 0):]...)
	}
	slices.Sort(cand)
	return cand[len(cand)-top]
}

// detector is a minimal stand-in for package detector: a regression is a
// shift from the pre-upgrade baseline; it is attributed to the upgrade's
// flag unless payments itself is failing (a brown-out).
type detector struct {
	upgrade  time.Time
	baseline agg
}

func (d *detector) assess(now time.Time, a agg) []Assessment {
	cause := Cause{Kind: CauseUnknown}
	if a.rejectedRatio > 0.05 {
		cause.Evidence = fmt.Sprintf("payments rejects %.0f%% of attempts", 100*a.rejectedRatio)
	} else if !now.Before(d.upgrade) {
		cause = Cause{Kind: CauseFlag, FlagKey: "backoff-strategy", Variant: "decorrelated", IncidentID: "inc-dten-gateway-3.0",
			Confidence: 0.9, Evidence: "onset at the dten-gateway 3.0 upgrade; shift confined to strategy=decorrelated, upstream=payments"}
	}
	verdict := func(regressed bool) Verdict {
		if regressed {
			return VerdictRegressed
		}
		return VerdictHealthy
	}
	mk := func(slo string, v float64, regressed bool) Assessment {
		as := Assessment{SLO: slo, Value: v, Verdict: verdict(regressed), Onset: d.upgrade}
		if regressed {
			as.Cause = cause
		}
		switch {
		case a.requests < 370:
			as.Verdict, as.Reason = VerdictInconclusive, fmt.Sprintf("%d requests, need 370", a.requests)
		case now.After(d.upgrade) && now.Sub(d.upgrade) < 5*time.Minute:
			as.Verdict, as.Reason = VerdictInconclusive, "the SLO window straddles the upgrade"
		}
		return as
	}
	return []Assessment{
		mk("checkout-latency", a.p99, a.p99 > 1.25*d.baseline.p99),
		mk("payments-retries", a.retryRatio, a.retryRatio > 2*d.baseline.retryRatio),
		mk("checkout-errors", a.errorRatio, a.errorRatio > max(2*d.baseline.errorRatio, 0.002)),
		{SLO: "search-latency", Value: 0.12, Verdict: VerdictHealthy},
	}
}

// minuteRecord is one line of the timeline.
type minuteRecord struct {
	at       time.Time
	p99      float64 // over the SLO window (5m)
	retries  float64
	errors   float64
	pct      int // share of decorrelated
	k        Constants
	decision Decision
}

type loopResult struct {
	timeline             []minuteRecord
	flags                *MemoryFlags
	ctl                  *Controller
	upgrade, brown       time.Time
	brownOutSuccess      float64
	legacyBrownOut       float64
	untunedBrownOut      float64
	restoredAfter        time.Duration // until the SLO held for good
	firstRestoredAfter   time.Duration // until the SLO first held for 10 minutes
	violationMinutes     int
	brownOutActions      int
	preUpgradeActions    int
	finalP99, finalRetry float64
}

// runLoop runs the scenario: legacy for an hour, the upgrade, the
// controller until the brown-out at minute 240 and the rest of the run.
func runLoop(t *testing.T, pol *policy.Policy, minutes int) loopResult {
	t.Helper()
	start := time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)
	upgrade := start.Add(60 * time.Minute)
	brown := start.Add(240 * time.Minute)
	sim := simmodel.New(simmodel.Demo(42, upgrade, simmodel.DemoBrownOut(brown)))
	legacy := FlagState{DefaultVariant: "exponential", Constants: map[string]Constants{"exponential": fromSim(simmodel.Legacy())}}
	mf := memFlags(legacy)
	ctl := newController(t, pol, mf, "tailguard/shop-0", nil)
	det := &detector{upgrade: upgrade}
	var w window
	res := loopResult{flags: mf, ctl: ctl, upgrade: upgrade, brown: brown}
	ctx := context.Background()
	var brownReq, brownOK int
	for m := range minutes {
		now := start.Add(time.Duration(m) * time.Minute)
		if now.Equal(upgrade) {
			// The upgrade: dten-gateway 2.3 → 3.0 switches the strategy.
			f := mf.State()
			f.DefaultVariant = "decorrelated"
			f.Constants["decorrelated"] = fromSim(simmodel.Decorrelated())
			mf.Set(f)
		}
		flags := mf.State()
		st := sim.Minute(now, cohorts(flags))
		if !now.Before(brown) && now.Before(brown.Add(10*time.Minute)) {
			brownReq += st.Requests
			brownOK += st.Requests - st.Failed
		}
		w.add(st, 5)
		a := w.agg()
		end := now.Add(time.Minute)
		if m == 59 {
			det.baseline = a
		}
		rec := minuteRecord{at: end, p99: a.p99, retries: a.retryRatio, errors: a.errorRatio, pct: flags.Percent("decorrelated")}
		rec.k, _ = flags.ConstantsFor("decorrelated")
		if m >= 59 {
			obs := Observation{
				Service:     "shop",
				Assessments: det.assess(end, a),
				Retries:     RetryStats{Upstream: "payments", Calls: a.calls, Retries: a.retries, Exhausted: a.exhausted, AttemptLatency: a.attemptLatency},
				Flags:       flags,
			}
			d, err := ctl.Step(ctx, obs, end)
			if err != nil {
				t.Fatalf("minute %d: %v", m, err)
			}
			rec.decision = d
			if d.Kind != DecisionNone {
				inBrownOut := !end.Before(brown) && end.Before(brown.Add(15*time.Minute))
				// A brown-out no change explains is handed to people
				// (escalated); only a flag write acts on it.
				if inBrownOut && d.Kind == DecisionAct {
					res.brownOutActions++
				}
				if end.Before(upgrade) {
					res.preUpgradeActions++
				}
			}
		}
		res.timeline = append(res.timeline, rec)
	}
	// Figures between the upgrade and the brown-out.
	restored := time.Time{}
	for _, r := range res.timeline {
		if r.at.Before(upgrade) || !r.at.Before(brown) {
			continue
		}
		if r.p99 > 0.4 {
			res.violationMinutes++
			restored = time.Time{}
		} else if restored.IsZero() {
			restored = r.at
		}
	}
	if !restored.IsZero() {
		res.restoredAfter = restored.Sub(upgrade)
	} else {
		res.restoredAfter = -1
	}
	res.firstRestoredAfter = -1
	run := 0
	for _, r := range res.timeline {
		if r.at.Before(upgrade) || !r.at.Before(brown) {
			continue
		}
		if r.p99 > 0.4 {
			run = 0
			continue
		}
		if run++; run == 10 {
			res.firstRestoredAfter = r.at.Add(-9 * time.Minute).Sub(upgrade)
			break
		}
	}
	last := res.timeline[brown.Sub(start)/time.Minute-1]
	res.finalP99, res.finalRetry = last.p99, last.retries

	// Brown-out success of the run's flags, against the legacy and the
	// untuned decorrelated strategy over the same brown-out (same seed,
	// same arrivals, same outage schedule).
	res.brownOutSuccess = float64(brownOK) / float64(max(brownReq, 1))
	counterfactual := func(s simmodel.Strategy) float64 {
		cf := simmodel.New(simmodel.Demo(42, upgrade, simmodel.DemoBrownOut(brown)))
		var req, failed int
		for m := range 10 {
			st := cf.Minute(brown.Add(time.Duration(m)*time.Minute), []simmodel.Cohort{{Weight: 1, Strategy: s}})
			req, failed = req+st.Requests, failed+st.Failed
		}
		return 1 - float64(failed)/float64(req)
	}
	res.legacyBrownOut = counterfactual(simmodel.Legacy())
	res.untunedBrownOut = counterfactual(simmodel.Decorrelated())
	return res
}

func (r loopResult) report(t *testing.T) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "timeline (5m SLO window; every 5th minute and every decision):\n")
	fmt.Fprintf(&b, "  %-6s %7s %7s %7s %5s  %-40s %s\n", "min", "p99", "retry", "errors", "dec%", "decorrelated constants", "decision")
	for i, rec := range r.timeline {
		m := i + 1
		acted := rec.decision.Kind != "" && rec.decision.Kind != DecisionNone
		if m%5 != 0 && !acted {
			continue
		}
		dec := ""
		if acted {
			dec = fmt.Sprintf("%s %s", rec.decision.Kind, rec.decision.Reason)
		}
		k := "-"
		if rec.k != (Constants{}) {
			k = rec.k.String()
		}
		fmt.Fprintf(&b, "  %-6d %6.0fms %6.2f%% %6.3f%% %4d%%  %-40s %s\n", m, 1000*rec.p99, 100*rec.retries, 100*rec.errors, rec.pct, k, dec)
	}
	fmt.Fprintf(&b, "onset (upgrade) at minute %d, brown-out at minute %d\n", int(r.upgrade.Sub(r.timeline[0].at.Add(-time.Minute)).Minutes()), int(r.brown.Sub(r.timeline[0].at.Add(-time.Minute)).Minutes()))
	fmt.Fprintf(&b, "time from onset to SLO restored: %v (first held 10 minutes after %v)\n", r.restoredAfter, r.firstRestoredAfter)
	fmt.Fprintf(&b, "SLO-violation minutes (5m p99 > 400ms, onset to brown-out): %d\n", r.violationMinutes)
	var actions []string
	for _, ch := range r.flags.Changes() {
		actions = append(actions, ch.IdempotencyKey)
	}
	fmt.Fprintf(&b, "actions taken: %d %v\n", len(actions), actions)
	fmt.Fprintf(&b, "before the brown-out: p99 %.0fms, retries %.2f%%\n", 1000*r.finalP99, 100*r.finalRetry)
	fmt.Fprintf(&b, "brown-out checkout success: this run %.1f%%, legacy %.1f%%, untuned decorrelated %.1f%%\n",
		100*r.brownOutSuccess, 100*r.legacyBrownOut, 100*r.untunedBrownOut)
	t.Log("\n" + b.String())
}

// checkStory asserts the end of the story: SLO restored, retries under
// bound, the new strategy still serving and still riding out brown-outs.
func (r loopResult) checkStory(t *testing.T, minBrownOutGain float64) {
	t.Helper()
	if r.restoredAfter < 0 {
		t.Fatal("SLO never restored")
	}
	if r.finalP99 > 0.4 {
		t.Errorf("p99 before the brown-out %.3fs > 400ms", r.finalP99)
	}
	if r.finalRetry > 0.05 {
		t.Errorf("retry ratio %.4f > 5%%", r.finalRetry)
	}
	if r.preUpgradeActions != 0 || r.brownOutActions != 0 {
		t.Errorf("acted before the upgrade (%d) or on the brown-out (%d)", r.preUpgradeActions, r.brownOutActions)
	}
	if pct := r.flags.State().Percent("decorrelated"); pct == 0 {
		t.Error("decorrelated no longer serves traffic")
	}
	if r.brownOutSuccess < r.legacyBrownOut+minBrownOutGain {
		t.Errorf("brown-out success %.3f not well above legacy's %.3f", r.brownOutSuccess, r.legacyBrownOut)
	}
}

// TestClosedLoop is the demo story: tuning alone restores the SLO and
// decorrelated keeps serving all traffic, with its brown-out benefit.
func TestClosedLoop(t *testing.T) {
	r := runLoop(t, loadPolicy(t, nil), 300)
	r.report(t)
	r.checkStory(t, 0.4)
	if pct := r.flags.State().Percent("decorrelated"); pct != 100 {
		t.Errorf("decorrelated at %d%%, want 100%%: tuning should have been enough", pct)
	}
	if r.brownOutSuccess < 0.85 {
		t.Errorf("brown-out success %.3f < 85%%", r.brownOutSuccess)
	}
	if r.violationMinutes > 40 {
		t.Errorf("%d SLO-violation minutes", r.violationMinutes)
	}
}

// TestClosedLoopTightBounds: with base bounded at 80ms tuning is not
// enough; the controller shrinks the rollout until the SLO holds, and
// after the hold does not restore a step the model expects to breach.
func TestClosedLoopTightBounds(t *testing.T) {
	pol := loadPolicy(t, func(s *policy.Service) {
		s.Backoff.Base.Min = model.Duration(80 * time.Millisecond)
		s.Hysteresis.Exit = 0.03
	})
	r := runLoop(t, pol, 300)
	r.report(t)
	r.checkStory(t, 0.05)
	rungs := map[Rung]int{}
	for _, ch := range r.flags.Changes() {
		rungs[ch.Rung]++
	}
	if rungs[RungShrink] == 0 {
		t.Errorf("expected a shrink, got %v", rungs)
	}
}
