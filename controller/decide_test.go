package controller

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/tailguard/tailguard/controller/policy"
)

// TestDecideFirstCycle table-tests the first decision on a fresh state.
func TestDecideFirstCycle(t *testing.T) {
	for _, tc := range []struct {
		name   string
		edit   func(*policy.Service)
		obs    Observation
		kind   DecisionKind
		rung   Rung
		key    string
		reason string // substring
	}{
		{name: "healthy", obs: observe(0.25, upgraded()), kind: DecisionNone, reason: "all SLOs within objective"},
		{name: "inconclusive never acts", kind: DecisionNone, reason: "inconclusive, not acting",
			obs: observe(0.6, upgraded(), withCheckout(func(a *Assessment) { a.Verdict, a.Reason = VerdictInconclusive, "212 requests, need 370" }))},
		{name: "inconclusive elsewhere over its objective never acts", kind: DecisionNone, reason: "slo checkout-errors: inconclusive",
			obs: observe(0.6, upgraded(), func(o *Observation) {
				o.Assessments[2].Verdict, o.Assessments[2].Value = VerdictInconclusive, 0.02
			})},
		{name: "inconclusive elsewhere without its SLI never acts", kind: DecisionNone, reason: "slo checkout-errors: inconclusive",
			obs: observe(0.6, upgraded(), func(o *Observation) {
				o.Assessments[2].Verdict, o.Assessments[2].Value = VerdictInconclusive, math.NaN()
			})},
		// The detector has not decided on the error ratio, but it holds.
		{name: "inconclusive elsewhere within its objective", kind: DecisionAct, rung: RungTune, key: "inc-1/tune/1",
			obs: observe(0.6, upgraded(), func(o *Observation) { o.Assessments[2].Verdict = VerdictInconclusive })},
		{name: "missing assessment", kind: DecisionNone, reason: "slo search-latency: no assessment",
			obs: observe(0.6, upgraded(), func(o *Observation) { o.Assessments = o.Assessments[:3] })},
		{name: "NaN value", kind: DecisionNone, reason: "value NaN",
			obs: observe(0.6, upgraded(), withCheckout(func(a *Assessment) { a.Value = math.NaN() }))},
		{name: "breach without regression", kind: DecisionNone, reason: "without a regression verdict",
			obs: observe(0.6, upgraded(), withCheckout(func(a *Assessment) { a.Verdict = VerdictHealthy }))},
		{name: "unknown cause", kind: DecisionEscalate, rung: RungEscalate, reason: "no known change explains it",
			obs: observe(0.6, upgraded(), withCheckout(func(a *Assessment) { a.Cause = Cause{Kind: CauseUnknown} }))},
		{name: "ambiguous cause", kind: DecisionNone, reason: "ambiguous",
			obs: observe(0.6, upgraded(), withCheckout(func(a *Assessment) { a.Cause = Cause{Kind: CauseAmbiguous, Confidence: 0.5} }))},
		{name: "other flag", kind: DecisionEscalate, rung: RungEscalate, reason: `flag "search-ranking" is not controlled`,
			obs: observe(0.6, upgraded(), withCheckout(func(a *Assessment) { a.Cause = Cause{Kind: CauseFlag, FlagKey: "search-ranking", Confidence: 1} }))},
		{name: "old variant blamed", kind: DecisionEscalate, rung: RungEscalate, reason: "not the new variant",
			obs: observe(0.6, upgraded(), withCheckout(func(a *Assessment) { a.Cause.Variant = "exponential" }))},
		{name: "rollout of the new variant tunes", kind: DecisionAct, rung: RungTune, key: "inc-1/tune/1",
			obs: observe(0.51, upgraded(), withCheckout(func(a *Assessment) { a.Cause.Variant = "exponential+decorrelated (targeted)" }))},
		{name: "low confidence", kind: DecisionNone, reason: "confidence 0.50 < 0.70",
			obs: observe(0.6, upgraded(), withCheckout(func(a *Assessment) { a.Cause.Confidence = 0.5 }))},
		{name: "unlisted component", kind: DecisionEscalate, rung: RungEscalate, reason: `component "billing" is not listed`,
			obs: observe(0.6, upgraded(), withCheckout(func(a *Assessment) { a.Cause = Cause{Kind: CauseComponent, Component: "billing", Confidence: 1} }))},
		{name: "new strategy serves nothing", kind: DecisionNone, reason: "serves no traffic",
			obs: observe(0.6, rolledOut(0))},
		{name: "breach tunes", obs: observe(0.51, upgraded()), kind: DecisionAct, rung: RungTune, key: "inc-1/tune/1", reason: "tune decorrelated: base 100ms→50ms"},
		{name: "listed component tunes", kind: DecisionAct, rung: RungTune, key: "inc-7/tune/1",
			obs: observe(0.51, upgraded(), withCheckout(func(a *Assessment) {
				a.Cause = Cause{Kind: CauseComponent, Component: "dten-gateway", Version: "3.0", IncidentID: "inc-7", Confidence: 0.8}
			}))},
		{name: "about to breach tunes", kind: DecisionAct, rung: RungTune, key: "inc-1/tune/1",
			obs: observe(0.38, upgraded(), withCheckout(func(a *Assessment) { a.Forecast, a.HasForecast = 0.47, true }))},
		{name: "forecast alone within objective", kind: DecisionNone, reason: "all SLOs within objective",
			obs: observe(0.38, upgraded(), withCheckout(func(a *Assessment) { a.Forecast, a.HasForecast = 0.39, true }))},
		{name: "enter margin", edit: func(s *policy.Service) { s.Hysteresis.Enter = 0.05 }, kind: DecisionNone, reason: "all SLOs within objective",
			obs: observe(0.415, upgraded())},
		{name: "constants at bounds shrinks", kind: DecisionAct, rung: RungShrink, key: "inc-1/shrink/1", reason: "skipped tune",
			obs: observe(0.51, upgraded(), func(o *Observation) {
				o.Flags.Constants["decorrelated"] = Constants{Base: ms(20), Cap: ms(500), MaxAttempts: 3}
			})},
		{name: "nothing tunable shrinks", edit: func(s *policy.Service) { s.Backoff = policy.Backoff{} }, kind: DecisionAct, rung: RungShrink, key: "inc-1/shrink/1",
			obs: observe(0.51, upgraded())},
		{name: "no retry statistics shrinks", kind: DecisionAct, rung: RungShrink, key: "inc-1/shrink/1", reason: "no retry statistics",
			obs: observe(0.51, rolledOut(50), func(o *Observation) { o.Retries = RetryStats{} })},
		{name: "rollout between steps", edit: func(s *policy.Service) { s.Backoff = policy.Backoff{} }, kind: DecisionAct, rung: RungShrink, key: "inc-1/shrink/1",
			obs: observe(0.51, rolledOut(30))},
		{name: "lowest step flips", edit: func(s *policy.Service) { s.Backoff = policy.Backoff{}; s.Flags.Strategy.Rollout = []int{100, 50} },
			kind: DecisionAct, rung: RungFlip, key: "inc-1/flip/1", obs: observe(0.51, rolledOut(50))},
		{name: "rungs skipped up to flip", edit: func(s *policy.Service) { s.Backoff = policy.Backoff{}; s.Flags.Strategy.Rollout = []int{100} },
			kind: DecisionAct, rung: RungFlip, key: "inc-1/flip/1", reason: "skipped tune: no constant is tunable; shrink: decorrelated at 100%, no lower allowed percentage",
			obs: observe(0.51, rolledOut(100))},
		{name: "other service", kind: DecisionNone, reason: `observation is for service "cart"`,
			obs: observe(0.6, upgraded(), func(o *Observation) { o.Service = "cart" })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := shop(t, tc.edit)
			d, st := Decide(svc, State{}, tc.obs, t0)
			if d.Kind != tc.kind || d.Rung != tc.rung {
				t.Fatalf("decision %s %s, want %s %s: %s", d.Kind, d.Rung, tc.kind, tc.rung, d.Reason)
			}
			if !strings.Contains(d.Reason, tc.reason) {
				t.Errorf("reason %q does not contain %q", d.Reason, tc.reason)
			}
			switch d.Kind {
			case DecisionNone:
				if d.Change != nil || d.Action != nil {
					t.Error("a none decision carries a change")
				}
				if st.Active != nil && tc.kind == DecisionNone && st.Active.Actions != nil {
					t.Error("actions recorded")
				}
			case DecisionAct:
				if d.Change == nil || StepOf(d.Change.IdempotencyKey) != tc.key || d.Action.IdempotencyKey != d.Change.IdempotencyKey {
					t.Fatalf("change %+v, want key %s", d.Change, tc.key)
				}
				if st.Active == nil || len(st.Active.Actions) != 0 {
					t.Errorf("Decide must open the incident but not record the action: %+v", st.Active)
				}
			}
		})
	}
}

// TestTuneRespectsBounds checks every tuning decision against the policy's
// hard bounds and maximum steps, from several starting points.
func TestTuneRespectsBounds(t *testing.T) {
	svc := shop(t, nil)
	b := svc.Backoff
	for _, start := range []Constants{
		newConstants,
		{Base: ms(200), Cap: 5 * time.Second, MaxAttempts: 10},
		{Base: ms(60), Cap: 2 * time.Second, MaxAttempts: 6},
		{Base: ms(150), Cap: ms(700), MaxAttempts: 4},
	} {
		for _, p99 := range []float64{0.41, 0.5, 0.9} {
			f := upgraded()
			f.Constants["decorrelated"] = start
			d, _ := Decide(svc, State{}, observe(p99, f), t0)
			if d.Rung != RungTune {
				t.Logf("start %v p99 %v: %s %s", start, p99, d.Rung, d.Reason)
				continue
			}
			got := *d.Change.Mutation.Constants
			check := func(name string, cur, v, lo, hi, step float64) {
				if v < lo-1e-9 || v > hi+1e-9 {
					t.Errorf("start %v p99 %v: %s %v outside [%v, %v]", start, p99, name, v, lo, hi)
				}
				if math.Abs(v-cur) > step+1e-9 {
					t.Errorf("start %v p99 %v: %s %v → %v exceeds step %v", start, p99, name, cur, v, step)
				}
			}
			check("base", start.Base.Seconds(), got.Base.Seconds(), secs(time.Duration(b.Base.Min)), secs(time.Duration(b.Base.Max)), secs(time.Duration(b.Base.MaxStep)))
			check("cap", start.Cap.Seconds(), got.Cap.Seconds(), secs(time.Duration(b.Cap.Min)), secs(time.Duration(b.Cap.Max)), secs(time.Duration(b.Cap.MaxStep)))
			check("maxAttempts", float64(start.MaxAttempts), float64(got.MaxAttempts), float64(b.MaxAttempts.Min), float64(b.MaxAttempts.Max), float64(b.MaxAttempts.MaxStep))
			if got.Cap < got.Base {
				t.Errorf("cap %v below base %v", got.Cap, got.Base)
			}
			m := d.Action.Model
			if m == nil || m.Why == "" {
				t.Fatal("tuning without a model report")
			}
			if float64(m.RetrySpan) < float64(b.Resilience.MinRetrySpan) && m.RetrySpan < m.RetrySpanBefore {
				t.Errorf("retry span %v below %v and shrinking", m.RetrySpan, b.Resilience.MinRetrySpan)
			}
			if m.ResilienceFailure > b.Resilience.MaxFailureRatio && got.MaxAttempts < start.MaxAttempts {
				t.Errorf("brown-out exhaustion %v above %v", m.ResilienceFailure, b.Resilience.MaxFailureRatio)
			}
		}
	}
}

// TestTuneChoice pins the model's choice in the scenario: lower base by a
// full step (the quantile call makes one retry, whose delay is drawn from
// [base, 3·base]) and add two attempts to keep the retry span at 3s.
func TestTuneChoice(t *testing.T) {
	svc := shop(t, nil)
	d, _ := Decide(svc, State{}, observe(0.51, upgraded()), t0)
	if d.Rung != RungTune {
		t.Fatalf("got %s: %s", d.Rung, d.Reason)
	}
	got := *d.Change.Mutation.Constants
	want := Constants{Base: ms(50), Cap: 2 * time.Second, MaxAttempts: 8}
	if got != want {
		t.Errorf("chose %v, want %v\n%s", got, want, d.Action.Model.Why)
	}
	m := d.Action.Model
	if m.GoalMet {
		t.Error("one step can not reach 360ms from 510ms; GoalMet should be false")
	}
	var lat Prediction
	for _, p := range d.Action.Expected {
		if p.SLO == "checkout-latency" {
			lat = p
		}
	}
	if lat.RetriesBefore != 1 || !(lat.Expected < 0.41 && lat.Expected > 0.37) {
		t.Errorf("latency prediction %+v", lat)
	}
	if d.Change.Undo.Constants == nil || *d.Change.Undo.Constants != newConstants {
		t.Errorf("undo %+v", d.Change.Undo)
	}
	// From there, one more step reaches the target: the smallest such
	// change is chosen.
	f := upgraded()
	f.Constants["decorrelated"] = want
	d2, _ := Decide(svc, State{}, observe(0.41, f), t0)
	if d2.Rung != RungTune || !d2.Action.Model.GoalMet {
		t.Fatalf("second step: %s %s", d2.Rung, d2.Reason)
	}
	if k := *d2.Change.Mutation.Constants; k.Base >= want.Base || k.Base < ms(20) {
		t.Errorf("second step base %v", k.Base)
	}
}

func TestDecideDoesNotModifyState(t *testing.T) {
	svc := shop(t, nil)
	d, st := Decide(svc, State{}, observe(0.51, upgraded()), t0)
	st2, err := Commit(st, d, StatusApplied, "a", "", t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Active.Actions) != 0 || len(st2.Active.Actions) != 1 {
		t.Fatalf("commit aliased the state: %d %d", len(st.Active.Actions), len(st2.Active.Actions))
	}
	snapshot := st2.Clone()
	_, st3 := Decide(svc, st2, observe(0.42, upgraded()), t0.Add(20*time.Minute))
	if a := st3.Active.Actions[0]; a.Verification == nil || a.Expected[0].Verified == nil {
		t.Fatal("verification not recorded")
	}
	if a := st2.Active.Actions[0]; a.Verification != nil || a.Expected[0].Verified != nil {
		t.Error("Decide modified its argument")
	}
	if st2.Active.Phase != snapshot.Active.Phase || len(st2.Active.Notes) != len(snapshot.Active.Notes) {
		t.Error("Decide modified its argument")
	}
	if _, err := Commit(st2, d, StatusApplied, "a", "", t0); err == nil {
		t.Error("committing the same action twice should fail")
	}
}

// FuzzDecide feeds arbitrary numbers (NaN, ±Inf, negative, huge) through
// a few cycles: Decide must not panic, and every change must stay within
// the policy's bounds.
func FuzzDecide(f *testing.F) {
	f.Add(0.51, 0.03, 15000.0, 0.0, uint8(1), int64(40), 100)
	f.Add(math.NaN(), math.Inf(1), -1.0, math.NaN(), uint8(0), int64(-5), 30)
	f.Add(5.0, 1.9, 1.0, 9.0, uint8(2), int64(0), 0)
	svc := shop(f, nil)
	f.Fuzz(func(t *testing.T, p99, retryRatio, calls, forecast float64, verdict uint8, latencyMs int64, pct int) {
		flags := rolledOut(min(max(pct, 0), 100))
		opts := []func(*Observation){
			withCheckout(func(a *Assessment) {
				a.Verdict = []Verdict{VerdictHealthy, VerdictRegressed, VerdictInconclusive, "bogus"}[verdict%4]
				a.Forecast, a.HasForecast = forecast, forecast != 0
			}),
			func(o *Observation) {
				o.Retries = RetryStats{Calls: calls, Retries: retryRatio * calls, AttemptLatency: time.Duration(latencyMs) * time.Millisecond}
			},
		}
		var st State
		now := t0
		for range 3 {
			d, next := Decide(svc, st, observe(p99, flags, opts...), now)
			if d.Change != nil && d.Change.Mutation.Constants != nil {
				k := *d.Change.Mutation.Constants
				if k.Base < time.Duration(svc.Backoff.Base.Min) || k.Cap > time.Duration(svc.Backoff.Cap.Max) || k.MaxAttempts > svc.Backoff.MaxAttempts.Max {
					t.Fatalf("constants out of bounds: %v", k)
				}
			}
			if d.Kind != DecisionNone {
				var err error
				if next, err = Commit(next, d, StatusApplied, "fuzz", "", now); err != nil {
					t.Fatal(err)
				}
			}
			st = next
			now = now.Add(11 * time.Minute)
		}
	})
}

// TestTuneRetryRatio: a retry-ratio breach is tuned with the retry budget
// when the policy bounds it and the flag sets one.
func TestTuneRetryRatio(t *testing.T) {
	svc := shop(t, func(s *policy.Service) {
		s.Backoff.RetryBudget = &policy.FloatBound{Min: 0.02, Max: 0.2, MaxStep: 0.05}
	})
	f := upgraded()
	k := newConstants
	k.RetryBudget = 0.1
	f.Constants["decorrelated"] = k
	obs := observe(0.3, f, func(o *Observation) {
		o.Assessments[1] = Assessment{SLO: "payments-retries", Value: 0.08, Verdict: VerdictRegressed, Cause: upgradeCause}
		o.Retries.Retries = 0.08 * o.Retries.Calls
	})
	d, _ := Decide(svc, State{}, obs, t0)
	if d.Rung != RungTune {
		t.Fatalf("got %s: %s", d.Rung, d.Reason)
	}
	got := *d.Change.Mutation.Constants
	if got.RetryBudget != 0.05 || got.Base != k.Base {
		t.Errorf("chose %v, want retryBudget 0.05 and base unchanged\n%s", got, d.Action.Model.Why)
	}
	// Without a budget in the flag the model finds no lever: attempts
	// barely change the retry ratio at p≈7%.
	d, _ = Decide(svc, State{}, observe(0.3, upgraded(), func(o *Observation) {
		o.Assessments[1] = Assessment{SLO: "payments-retries", Value: 0.08, Verdict: VerdictRegressed, Cause: upgradeCause}
		o.Retries.Retries = 0.08 * o.Retries.Calls
	}), t0)
	if d.Rung != RungShrink || !strings.Contains(d.Reason, "skipped tune: model predicts no useful gain") {
		t.Errorf("got %s: %s", d.Rung, d.Reason)
	}
}

// TestTuneNeverReverses: once a tune of an incident moved a constant one
// way, a later tune of the same incident never moves it back: that trades
// one SLO against another and oscillates (seen in the story scenario,
// base 25ms ↔ 50ms between the latency and the retry-ratio SLOs).
func TestTuneNeverReverses(t *testing.T) {
	svc := shop(t, nil)
	d, st := Decide(svc, State{}, observe(0.51, upgraded()), t0)
	if d.Rung != RungTune {
		t.Fatalf("first decision: %s %s", d.Rung, d.Reason)
	}
	st, err := Commit(st, d, StatusApplied, "test", "", t0)
	if err != nil {
		t.Fatal(err)
	}
	// Record the incident's first tune as having raised base 50ms → 100ms
	// (say, for the retry-ratio SLO); the flag holds 100ms.
	a := &st.Active.Actions[0]
	a.Model.Current = Constants{Base: ms(50), Cap: 2 * time.Second, MaxAttempts: 6}
	a.Model.Chosen = newConstants
	// Latency improved but still breaches: the model's lever is a lower
	// base, the one move now refused.
	now := t0.Add(time.Duration(svc.EvaluationWindow) + time.Minute)
	d, _ = Decide(svc, st, observe(0.45, upgraded()), now)
	if d.Kind == DecisionAct && d.Rung == RungTune {
		if k := *d.Change.Mutation.Constants; k.Base < newConstants.Base {
			t.Fatalf("tune lowered base %v → %v after the incident raised it", newConstants.Base, k.Base)
		}
	}
	t.Logf("decided: %s %s", d.Rung, d.Reason)

	// Without that history the same observation lowers base: the check
	// above is not vacuous.
	st.Active.Actions[0].Model.Current, st.Active.Actions[0].Model.Chosen = newConstants, newConstants
	d, _ = Decide(svc, st, observe(0.45, upgraded()), now)
	if d.Rung != RungTune || d.Change.Mutation.Constants.Base >= newConstants.Base {
		t.Fatalf("control: want a tune lowering base, got %s %s", d.Rung, d.Reason)
	}
}

func TestPredictedGain(t *testing.T) {
	svc := shop(t, nil) // exit hysteresis 0.1, minImprovement 0.2
	lat := reading{slo: policy.SLO{Name: "lat"}, objective: 0.4, worst: 0.56, breaching: true}
	ret := reading{slo: policy.SLO{Name: "ret"}, objective: 0.05, worst: 0.06, breaching: true}
	calm := reading{slo: policy.SLO{Name: "calm"}, objective: 0.3}
	p := func(slo string, observed, expected float64) Prediction {
		return Prediction{SLO: slo, Observed: observed, Expected: expected}
	}
	for _, tc := range []struct {
		name     string
		readings []reading
		preds    []Prediction
		want     float64
	}{
		// gap 0.56 − 0.36 = 0.2: 0.5 → 0.4 closes half of it.
		{"one breaching SLO", []reading{lat, calm}, []Prediction{p("lat", 0.5, 0.4), p("calm", 0.2, 0.25)}, 0.5},
		{"no predicted change", []reading{lat}, []Prediction{p("lat", 0.384, 0.384)}, 0},
		// The tune leaves the retry ratio alone and helps latency.
		{"the best of two", []reading{lat, ret}, []Prediction{p("lat", 0.5, 0.4), p("ret", 0.05, 0.05)}, 0.5},
		// gap of ret: 0.06 − 0.045 = 0.015; 0.05 → 0.055 is −1/3.
		{"worse on another breaching SLO", []reading{lat, ret}, []Prediction{p("lat", 0.5, 0.4), p("ret", 0.05, 0.055)}, -1.0 / 3},
		{"missing prediction", []reading{lat, ret}, []Prediction{p("lat", 0.5, 0.4)}, math.NaN()},
		{"nothing breaching", []reading{calm}, []Prediction{p("calm", 0.2, 0.1)}, math.NaN()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &cycle{svc: svc, readings: tc.readings}
			got := c.predictedGain(tc.preds)
			if math.IsNaN(tc.want) != math.IsNaN(got) || (!math.IsNaN(got) && math.Abs(got-tc.want) > 1e-9) {
				t.Errorf("predictedGain = %v, want %v", got, tc.want)
			}
		})
	}
}
