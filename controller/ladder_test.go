package controller

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/controller/policy"
)

// driver runs Decide and Commit in virtual time against a flag state,
// applying every decided change as a writer would.
type driver struct {
	t     *testing.T
	svc   *policy.Service
	st    State
	now   time.Time
	flags FlagState
	log   []Decision
}

func newDriver(t *testing.T, edit func(*policy.Service), flags FlagState) *driver {
	return &driver{t: t, svc: shop(t, edit), now: t0, flags: flags}
}

// step decides on an observation with the given /checkout p99 at the
// current time, applies the decision, then advances the clock by adv.
func (dr *driver) step(p99 float64, adv time.Duration, opts ...func(*Observation)) Decision {
	dr.t.Helper()
	d, st := Decide(dr.svc, dr.st, observe(p99, dr.flags, opts...), dr.now)
	if d.Kind != DecisionNone {
		var err error
		st, err = Commit(st, d, StatusApplied, "test", "", dr.now)
		if err != nil {
			dr.t.Fatal(err)
		}
		if d.Change != nil {
			sf := dr.svc.Flags
			if dr.flags, err = d.Change.Mutation.Apply(dr.flags, sf.Strategy.Key, sf.Constants.Key); err != nil {
				dr.t.Fatal(err)
			}
		}
		dr.log = append(dr.log, d)
	}
	dr.st = st
	dr.now = dr.now.Add(adv)
	return d
}

func (dr *driver) actions() []string {
	var out []string
	for _, d := range dr.log {
		out = append(out, StepOf(d.Action.IdempotencyKey))
	}
	return out
}

func expectDecision(t *testing.T, d Decision, kind DecisionKind, rung Rung, reason string) {
	t.Helper()
	if d.Kind != kind || d.Rung != rung || !strings.Contains(d.Reason, reason) {
		t.Fatalf("got %s %s %q, want %s %s containing %q", d.Kind, d.Rung, d.Reason, kind, rung, reason)
	}
}

// TestLadderNoImprovement: when nothing helps, each probing write is
// undone once verification shows it did not help, and the ladder moves
// on: tune, undo, shrink, undo, then escalate (less of the new strategy
// did not help, so flipping it will not either), then nothing more. The
// flags end as they were.
func TestLadderNoImprovement(t *testing.T) {
	dr := newDriver(t, func(s *policy.Service) { s.MaxActionsPerHour = 60 }, upgraded())
	expectDecision(t, dr.step(0.51, time.Minute), DecisionAct, RungTune, "tune decorrelated")
	for range 9 {
		expectDecision(t, dr.step(0.51, time.Minute), DecisionNone, "", "verifying tune")
	}
	// 10 minutes later: no improvement → undo the tune.
	expectDecision(t, dr.step(0.51, time.Minute), DecisionAct, RungUndo, "undo inc-1/tune/1: verified no-improvement")
	if got := dr.flags.Constants["decorrelated"]; got != newConstants {
		t.Errorf("constants after the undo %+v, want %+v", got, newConstants)
	}
	// The undo is not verified; the cooldown holds the next rung.
	expectDecision(t, dr.step(0.51, 4*time.Minute), DecisionNone, RungShrink, "blocked: cooldown")
	expectDecision(t, dr.step(0.51, 10*time.Minute), DecisionAct, RungShrink, "shrink decorrelated rollout 100% → 50%")
	// No improvement → undo the shrink, then escalate (not flip).
	expectDecision(t, dr.step(0.50, 10*time.Minute), DecisionAct, RungUndo, "undo inc-1/shrink/1")
	if p := dr.flags.Percent("decorrelated"); p != 100 {
		t.Errorf("decorrelated at %d%% after the undo, want 100%%", p)
	}
	expectDecision(t, dr.step(0.50, 10*time.Minute), DecisionEscalate, RungEscalate, "automatic mitigation exhausted")
	for range 5 {
		expectDecision(t, dr.step(0.50, 10*time.Minute), DecisionNone, "", "holding (escalated)")
	}
	want := []string{"inc-1/tune/1", "inc-1/undo/1", "inc-1/shrink/1", "inc-1/undo/2", "inc-1/escalate/1"}
	if got := dr.actions(); !slices.Equal(got, want) {
		t.Errorf("actions %v, want %v", got, want)
	}
	outcomes := []Outcome{}
	for _, a := range dr.st.Active.Actions {
		if a.Verification != nil {
			outcomes = append(outcomes, a.Verification.Outcome)
		}
	}
	if !slices.Equal(outcomes, []Outcome{OutcomeNoImprovement, OutcomeNoImprovement}) {
		t.Errorf("outcomes %v", outcomes)
	}
	// People fix it; after the hold the incident resolves.
	for range 5 {
		dr.step(0.25, 10*time.Minute)
	}
	if dr.st.Active != nil || len(dr.st.History) != 1 || dr.st.History[0].Phase != PhaseResolved {
		t.Errorf("incident not resolved: %+v", dr.st.Active)
	}
}

// TestLadderWorseShrink: at 10% a tune promises no gain (it is not
// written); the shrink to 0% makes things worse and is undone, and the
// incident escalates.
func TestLadderWorseShrink(t *testing.T) {
	dr := newDriver(t, func(s *policy.Service) { s.MaxActionsPerHour = 60 }, rolledOut(10))
	expectDecision(t, dr.step(0.51, 10*time.Minute), DecisionAct, RungShrink, "10% → 0% (skipped tune: model predicts no useful gain")
	expectDecision(t, dr.step(0.70, 10*time.Minute), DecisionAct, RungUndo, "undo inc-1/shrink/1: verified worse")
	if p := dr.flags.Percent("decorrelated"); p != 10 {
		t.Errorf("decorrelated at %d%% after the undo, want 10%%", p)
	}
	expectDecision(t, dr.step(0.70, 10*time.Minute), DecisionEscalate, RungEscalate, "")
}

// TestLadderImprovement repeats a rung that helps: tune, tune again, then
// hold once the SLO is met.
func TestLadderImprovement(t *testing.T) {
	dr := newDriver(t, nil, upgraded())
	expectDecision(t, dr.step(0.51, 10*time.Minute), DecisionAct, RungTune, "")
	// 0.51 → 0.42: 60% of the gap to 0.36 closed: improved, still
	// breaching → tune again.
	d := dr.step(0.42, 10*time.Minute)
	expectDecision(t, d, DecisionAct, RungTune, "")
	if StepOf(d.Change.IdempotencyKey) != "inc-1/tune/2" {
		t.Errorf("key %s", d.Change.IdempotencyKey)
	}
	expectDecision(t, dr.step(0.35, time.Minute), DecisionNone, "", "tune verified: SLOs within objective, holding")
	if dr.st.Active.Phase != PhaseHolding {
		t.Fatalf("phase %s", dr.st.Active.Phase)
	}
	// Holding: nothing happens while the SLO holds; the incident resolves
	// after the hold time (30m) without a restore (the rollout never
	// changed).
	for range 40 {
		expectDecision(t, dr.step(0.34, time.Minute), DecisionNone, "", "")
	}
	if dr.st.Active != nil {
		t.Fatalf("incident still active: %s", dr.st.Active.Phase)
	}
	inc := dr.st.History[0]
	if len(inc.Actions) != 2 || inc.Actions[0].Verification.Outcome != OutcomeImproved || inc.Actions[1].Verification.Outcome != OutcomeRecovered {
		t.Errorf("actions %+v", inc.Actions)
	}
	if v := inc.Actions[0].Expected[0].Verified; v == nil || *v != 0.42 {
		t.Errorf("observed effect not recorded: %v", v)
	}
}

// TestCooldown: the cooldown holds the next action even after the
// verification is due.
func TestCooldown(t *testing.T) {
	dr := newDriver(t, func(s *policy.Service) { s.Cooldown = model.Duration(25 * time.Minute) }, upgraded())
	expectDecision(t, dr.step(0.51, 10*time.Minute), DecisionAct, RungTune, "")
	// Verified no improvement: its undo waits for the cooldown too.
	expectDecision(t, dr.step(0.51, 10*time.Minute), DecisionNone, RungUndo, "blocked: cooldown until 2025-03-01T12:25:00Z")
	expectDecision(t, dr.step(0.51, 5*time.Minute), DecisionNone, RungUndo, "blocked: cooldown")
	expectDecision(t, dr.step(0.51, time.Minute), DecisionAct, RungUndo, "undo inc-1/tune/1")
	if got := dr.log[1].At.Sub(dr.log[0].At); got < 25*time.Minute {
		t.Errorf("second action after %v", got)
	}
}

// TestActionBudget: at most maxActionsPerHour writes in any rolling hour.
func TestActionBudget(t *testing.T) {
	dr := newDriver(t, func(s *policy.Service) {
		s.MaxActionsPerHour = 2
		s.Cooldown = model.Duration(time.Minute)
		s.EvaluationWindow = model.Duration(5 * time.Minute)
		s.Restore.HoldTime = model.Duration(10 * time.Minute)
	}, upgraded())
	for range 120 {
		dr.step(0.51, time.Minute)
	}
	var times []time.Time
	for _, d := range dr.log {
		if d.Kind == DecisionAct {
			times = append(times, d.At)
		}
	}
	if len(times) < 3 {
		t.Fatalf("only %d actions: %v", len(times), dr.actions())
	}
	for i := range times {
		n := 0
		for _, u := range times {
			if !u.Before(times[i]) && u.Sub(times[i]) < time.Hour {
				n++
			}
		}
		if n > 2 {
			t.Errorf("%d actions in the hour from %s", n, times[i])
		}
	}
	// Blocked cycles say so.
	found := false
	for _, n := range dr.st.Active.Notes {
		found = found || strings.Contains(n.Text, "action budget exhausted: 2 actions in the last hour (max 2)")
	}
	if !found {
		t.Error("no note about the exhausted budget")
	}
	if got := dr.st.BudgetRemaining(dr.svc, dr.now); got < 0 || got > 2 {
		t.Errorf("budget remaining %d", got)
	}
}

// TestNoFlipFlop feeds alternating borderline assessments and checks that
// the controller never reverses itself: constants only move towards less
// retry latency, the rollout only shrinks, nothing is restored.
func TestNoFlipFlop(t *testing.T) {
	for _, tc := range []struct {
		name     string
		edit     func(*policy.Service)
		hi, lo   float64
		wantNone bool
	}{
		// Inside the enter margin: never acts.
		{name: "within enter margin", edit: func(s *policy.Service) { s.Hysteresis.Enter = 0.05 }, hi: 0.415, lo: 0.39, wantNone: true},
		// Alternating across the objective, never recovered (exit margin
		// 10%): climbs the ladder, one way.
		{name: "across objective", hi: 0.404, lo: 0.396},
		// Alternating across the recovery threshold (0.36): a restore
		// needs 30 minutes of continuous recovery.
		{name: "across recovery threshold", hi: 0.41, lo: 0.35},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dr := newDriver(t, tc.edit, upgraded())
			for i := range 600 {
				p99 := tc.hi
				if i%2 == 1 {
					p99 = tc.lo
				}
				dr.step(p99, time.Minute, withCheckout(func(a *Assessment) {
					if p99 < 0.4 {
						a.Verdict = VerdictHealthy
					}
				}))
			}
			if tc.wantNone {
				if len(dr.log) != 0 {
					t.Fatalf("acted: %v", dr.actions())
				}
				return
			}
			lastPct, lastBase := 101, time.Hour
			for _, d := range dr.log {
				if d.Change == nil {
					continue
				}
				switch d.Rung {
				case RungRestore, RungRevert:
					t.Errorf("restored on borderline data: %s", d.Change.IdempotencyKey)
				case RungTune:
					if b := d.Change.Mutation.Constants.Base; b > lastBase {
						t.Errorf("base went back up: %v → %v", lastBase, b)
					} else {
						lastBase = b
					}
				case RungShrink, RungFlip:
					if p := *d.Action.NewPercent; p > lastPct {
						t.Errorf("rollout went back up: %d → %d", lastPct, p)
					} else {
						lastPct = p
					}
				}
			}
			if len(dr.log) > 10 {
				t.Errorf("%d actions in 10 hours: %v", len(dr.log), dr.actions())
			}
			t.Logf("actions: %v", dr.actions())
		})
	}
}

// TestRestore: gate, then re-enable. After the SLO held for the hold
// time, the rollout is raised step by step, each verified, back to the
// exact pre-incident flag.
func TestRestore(t *testing.T) {
	dr := newDriver(t, func(s *policy.Service) { s.Backoff = policy.Backoff{} }, upgraded())
	expectDecision(t, dr.step(0.51, 10*time.Minute), DecisionAct, RungShrink, "100% → 50%")
	expectDecision(t, dr.step(0.42, 10*time.Minute), DecisionAct, RungShrink, "50% → 25%")
	expectDecision(t, dr.step(0.25, time.Minute), DecisionNone, "", "holding")
	var restores []string
	for range 120 {
		d := dr.step(0.25, time.Minute)
		if d.Kind == DecisionAct {
			restores = append(restores, StepOf(d.Change.IdempotencyKey))
			if d.Rung != RungRestore {
				t.Fatalf("unexpected %s", d.Rung)
			}
		}
	}
	if want := []string{"inc-1/restore/1", "inc-1/restore/2"}; !slices.Equal(restores, want) {
		t.Fatalf("restores %v, want %v", restores, want)
	}
	// The last restore puts back the flag exactly as it was.
	if dr.flags.DefaultVariant != "decorrelated" || len(dr.flags.Rollout) != 0 {
		t.Errorf("flags after restore %+v", dr.flags)
	}
	if dr.st.Active != nil {
		t.Errorf("incident not resolved: %s", dr.st.Active.Phase)
	}
	first := dr.log[2].At.Sub(dr.log[1].At)
	if first < 30*time.Minute {
		t.Errorf("first restore %v after the last shrink, hold is 30m", first)
	}
}

// TestRestoreRegresses: a restore step that breaches is reverted, and the
// rollout stays below it.
func TestRestoreRegresses(t *testing.T) {
	dr := newDriver(t, func(s *policy.Service) { s.Backoff = policy.Backoff{} }, upgraded())
	dr.step(0.51, 10*time.Minute) // shrink to 50
	dr.step(0.30, time.Minute)    // holding
	for i := 0; i < 300; i++ {
		p99 := 0.30
		if dr.flags.Percent("decorrelated") > 50 {
			p99 = 0.48 // the full rollout breaches again
		}
		dr.step(p99, time.Minute)
	}
	want := []string{"inc-1/shrink/1", "inc-1/restore/1", "inc-1/revert/1"}
	if got := dr.actions(); !slices.Equal(got, want) {
		t.Fatalf("actions %v, want %v", got, want)
	}
	if p := dr.flags.Percent("decorrelated"); p != 50 {
		t.Errorf("rollout %d%%, want 50%%", p)
	}
	inc := dr.st.History[len(dr.st.History)-1]
	if inc.Ceiling != 50 || inc.Phase != PhaseResolved {
		t.Errorf("ceiling %d phase %s", inc.Ceiling, inc.Phase)
	}
	if o := inc.Actions[1].Verification.Outcome; o != OutcomeRegressed {
		t.Errorf("restore outcome %s", o)
	}
}

func TestInconclusiveStopsEverything(t *testing.T) {
	dr := newDriver(t, nil, upgraded())
	dr.step(0.51, 10*time.Minute)
	inconclusive := withCheckout(func(a *Assessment) { a.Verdict, a.Reason = VerdictInconclusive, "query warning" })
	for range 30 {
		expectDecision(t, dr.step(0.9, 10*time.Minute, inconclusive), DecisionNone, "", "inconclusive, not acting")
	}
	if n := len(dr.st.Active.Actions); n != 1 || dr.st.Active.Actions[0].Verification != nil {
		t.Errorf("acted or verified on inconclusive data: %d actions", n)
	}
}

func TestIncidentIDDerived(t *testing.T) {
	svc := shop(t, nil)
	noID := withCheckout(func(a *Assessment) { a.Cause.IncidentID = "" })
	d1, _ := Decide(svc, State{}, observe(0.51, upgraded(), noID), t0)
	d2, _ := Decide(svc, State{}, observe(0.51, upgraded(), noID), t0.Add(3*time.Minute))
	want := fmt.Sprintf("shop-flag-backoff-strategy-decorrelated-%d", t0.Unix())
	if d1.IncidentID != want || d2.IncidentID != want {
		t.Errorf("ids %q %q, want %q (replicas deciding at different times must agree)", d1.IncidentID, d2.IncidentID, want)
	}
}

// TestOtherCauseWhileHolding: a breach attributed to something else (an
// upstream outage) does not resume the incident's ladder; one attributed
// to the incident's cause does.
func TestOtherCauseWhileHolding(t *testing.T) {
	dr := newDriver(t, nil, upgraded())
	dr.step(0.51, 10*time.Minute)
	expectDecision(t, dr.step(0.39, 10*time.Minute), DecisionNone, "", "holding")
	outage := withCheckout(func(a *Assessment) { a.Cause = Cause{Kind: CauseUnknown, Evidence: "payments rejects 40% of attempts"} })
	for range 10 {
		expectDecision(t, dr.step(1.4, time.Minute, outage), DecisionNone, "", "holding")
	}
	if n := len(dr.st.Active.Actions); n != 1 {
		t.Fatalf("acted on an outage: %v", dr.actions())
	}
	expectDecision(t, dr.step(0.45, time.Minute), DecisionAct, RungTune, "")
}

// TestRestoreNotAttemptedWhenPredictedToBreach: the restore stops where the
// model expects the next step to breach, instead of spending a breach on
// verifying it.
func TestRestoreNotAttemptedWhenPredictedToBreach(t *testing.T) {
	dr := newDriver(t, func(s *policy.Service) { s.Backoff = policy.Backoff{} }, upgraded())
	dr.step(0.51, 10*time.Minute) // shrink to 50
	dr.step(0.42, 10*time.Minute) // shrink to 25
	for range 60 {
		dr.step(0.33, time.Minute) // 50% is expected at ~0.45
	}
	if got := dr.actions(); !slices.Equal(got, []string{"inc-1/shrink/1", "inc-1/shrink/2"}) {
		t.Fatalf("actions %v", got)
	}
	if dr.st.Active != nil {
		t.Fatal("incident not resolved")
	}
	inc := dr.st.History[0]
	if inc.Ceiling != 25 || !slices.ContainsFunc(inc.Notes, func(n Note) bool { return strings.Contains(n.Text, "restore to 50% not attempted") }) {
		t.Errorf("ceiling %d, notes %v", inc.Ceiling, inc.Notes)
	}
}

func TestMemoryFlagsConflict(t *testing.T) {
	mf := memFlags(upgraded())
	ch := FlagChange{IdempotencyKey: "k1", Mutation: Mutation{Kind: MutationSetDefaultVariant, FlagKey: "backoff-strategy", Variant: "exponential"}}
	if ok, err := mf.Apply(t.Context(), ch); !ok || err != nil {
		t.Fatal(ok, err)
	}
	ch.IdempotencyKey, ch.Revision = "k2", mf.State().Revision+5
	if _, err := mf.Apply(t.Context(), ch); !errors.Is(err, ErrConflict) {
		t.Errorf("stale revision: %v", err)
	}
	ch.Mutation.FlagKey = "backoff-constants"
	ch.Revision = 0
	if _, err := mf.Apply(t.Context(), ch); err == nil {
		t.Error("mutation of the wrong flag accepted")
	}
}

// TestVerificationPostponedOnOtherCause: an outage during the evaluation
// window does not count as "no improvement".
func TestVerificationPostponedOnOtherCause(t *testing.T) {
	dr := newDriver(t, nil, upgraded())
	dr.step(0.51, 10*time.Minute)
	outage := withCheckout(func(a *Assessment) { a.Cause = Cause{Kind: CauseUnknown} })
	for range 5 {
		expectDecision(t, dr.step(1.2, time.Minute, outage), DecisionNone, "", "verification of inc-1/tune/1 postponed")
	}
	d := dr.step(0.42, time.Minute)
	expectDecision(t, d, DecisionAct, RungTune, "")
	if o := dr.st.Active.Actions[0].Verification.Outcome; o != OutcomeImproved {
		t.Errorf("outcome %s", o)
	}
}

// TestHandOver: a breach no known change explains is escalated once, with
// the evidence, and never written to; when the evidence later names the
// new strategy, the hand-over gives way to mitigation.
func TestHandOver(t *testing.T) {
	dr := newDriver(t, nil, upgraded())
	unknown := withCheckout(func(a *Assessment) {
		a.Cause = Cause{Kind: CauseUnknown, Confidence: 1, Evidence: "none of the known changes explains this: attempts to payments got slower"}
	})
	d := dr.step(0.51, time.Minute, unknown)
	expectDecision(t, d, DecisionEscalate, RungEscalate, "no known change explains it")
	if d.Escalation == nil || !strings.Contains(d.Escalation.Summary, "attempts to payments got slower") {
		t.Fatalf("escalation %+v, want the evidence in its summary", d.Escalation)
	}
	for range 20 {
		if d := dr.step(0.51, time.Minute, unknown); d.Kind != DecisionNone {
			t.Fatalf("after the hand-over: %s %s %q", d.Kind, d.Rung, d.Reason)
		}
	}
	// The attribution moves to the new strategy.
	d = dr.step(0.51, time.Minute)
	expectDecision(t, d, DecisionAct, RungTune, "tune decorrelated")
	if len(dr.st.History) != 1 || !slices.ContainsFunc(dr.st.History[0].Notes, func(n Note) bool { return strings.Contains(n.Text, "superseded") }) {
		t.Errorf("the hand-over incident was not closed as superseded: %+v", dr.st.History)
	}
	if d.IncidentID == dr.st.History[0].ID {
		t.Errorf("mitigation reuses the hand-over's incident %s", d.IncidentID)
	}
	want := []string{"shop-unknown-1740830400/escalate/1", "inc-1/tune/1"}
	if got := dr.actions(); !slices.Equal(got, want) {
		t.Errorf("actions %v, want %v", got, want)
	}
}
