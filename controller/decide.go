package controller

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/controller/policy"
)

// reading is one SLO of the policy with its assessment, classified.
type reading struct {
	slo       policy.SLO
	a         Assessment
	objective float64
	// worst is max(value, forecast): the level a breaching SLO is judged
	// from.
	worst     float64
	breaching bool
	recovered bool
}

func (r reading) export() SLOReading {
	out := SLOReading{
		SLO: r.slo.Name, Signal: r.slo.Signal, Value: r.a.Value, Objective: r.objective,
		Verdict: r.a.Verdict, Breaching: r.breaching, Recovered: r.recovered, Reason: r.a.Reason, Finding: r.a.Finding,
	}
	if r.a.HasForecast {
		f := r.a.Forecast
		out.Forecast = &f
	}
	return out
}

// cycle holds the inputs of one decision.
type cycle struct {
	svc      *policy.Service
	obs      Observation
	now      time.Time
	readings []reading
	mc       *modelContext
}

func (c *cycle) model() *modelContext {
	if c.mc == nil {
		c.mc = newModelContext(c.svc, c.obs)
	}
	return c.mc
}

func finiteNonNeg(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) && v >= 0 }

// classify reads every SLO of the policy from the observation. It returns
// the reasons the cycle is inconclusive, if any.
func classify(svc *policy.Service, obs Observation) ([]reading, []string) {
	var out []reading
	var inconclusive []string
	for _, slo := range svc.SLOs {
		a, ok := obs.assessment(slo.Name)
		switch {
		case !ok:
			inconclusive = append(inconclusive, fmt.Sprintf("slo %s: no assessment", slo.Name))
			continue
		case a.Verdict == VerdictInconclusive && withinEnter(svc, slo, a):
			// The SLI holds: whether the detector has confirmed a shift
			// there yet does not matter to any action on the others (whose
			// predictions must keep it within its objective anyway).
			a.Verdict, a.Reason = VerdictHealthy, "within objective; detector: "+a.Reason
		case a.Verdict == VerdictInconclusive:
			inconclusive = append(inconclusive, fmt.Sprintf("slo %s: inconclusive: %s", slo.Name, a.Reason))
			continue
		case a.Verdict != VerdictRegressed && a.Verdict != VerdictHealthy:
			inconclusive = append(inconclusive, fmt.Sprintf("slo %s: unknown verdict %q", slo.Name, a.Verdict))
			continue
		case !finiteNonNeg(a.Value):
			inconclusive = append(inconclusive, fmt.Sprintf("slo %s: value %v", slo.Name, a.Value))
			continue
		}
		if a.HasForecast && !finiteNonNeg(a.Forecast) {
			a.HasForecast = false
		}
		obj := slo.Value()
		enter := obj * (1 + svc.Hysteresis.Enter)
		r := reading{slo: slo, a: a, objective: obj, worst: a.Value}
		if a.HasForecast {
			r.worst = max(r.worst, a.Forecast)
		}
		r.breaching = r.worst > enter
		r.recovered = a.Value <= obj*(1-svc.Hysteresis.Exit) && !(a.HasForecast && a.Forecast > obj)
		out = append(out, r)
	}
	return out, inconclusive
}

// withinEnter reports whether an assessment's SLI, and its forecast, are
// numbers at or below the level that would make the SLO breach.
func withinEnter(svc *policy.Service, slo policy.SLO, a Assessment) bool {
	enter := slo.Value() * (1 + svc.Hysteresis.Enter)
	if !finiteNonNeg(a.Value) || a.Value > enter {
		return false
	}
	return !a.HasForecast || (finiteNonNeg(a.Forecast) && a.Forecast <= enter)
}

func exportReadings(rs []reading) []SLOReading {
	out := make([]SLOReading, len(rs))
	for i, r := range rs {
		out[i] = r.export()
	}
	return out
}

// Decide is the controller's decision function. From a service's policy,
// its state, one cycle's observation and the time, it returns the decision
// and the new state. It is pure: no I/O, no clock, and st is not modified.
//
// The returned state carries the bookkeeping of the cycle (an incident
// opened, a verification recorded, recovery tracked) but not the decided
// action: the caller applies the decision's change and records it with
// Commit, or, in observe and propose mode, does not.
func Decide(svc *policy.Service, st State, obs Observation, now time.Time) (Decision, State) {
	st = st.Clone()
	st.Service = svc.Name
	st.ActionTimes = slices.DeleteFunc(st.ActionTimes, func(t time.Time) bool { return now.Sub(t) >= time.Hour })
	d := Decision{Service: svc.Name, At: now, Kind: DecisionNone}
	if obs.Service != "" && obs.Service != svc.Name {
		d.Reason = fmt.Sprintf("observation is for service %q", obs.Service)
		return d, st
	}
	c := &cycle{svc: svc, obs: obs, now: now}
	readings, inconclusive := classify(svc, obs)
	c.readings = readings
	inc := st.Active
	if inc != nil {
		d.IncidentID = inc.ID
		if c.adopt(&st) > 0 {
			inc = st.Active
		}
	}
	if len(inconclusive) > 0 {
		d.Reason = "inconclusive, not acting: " + strings.Join(inconclusive, "; ")
		if inc != nil {
			inc.RecoveredSince = time.Time{}
			inc.note(now, d.Reason)
		}
		return d, st
	}
	if inc == nil {
		if !c.resume(&st) {
			return c.open(&st, d)
		}
		inc = st.Active
		d.IncidentID = inc.ID
	}

	if c.allRecovered() {
		if inc.RecoveredSince.IsZero() {
			inc.RecoveredSince = now
		}
	} else {
		inc.RecoveredSince = time.Time{}
	}

	if a := inc.pending(); a != nil {
		due := a.At.Add(time.Duration(svc.EvaluationWindow))
		if now.Before(due) {
			d.Reason = fmt.Sprintf("verifying %s (%s) until %s", a.Rung, a.IdempotencyKey, due.UTC().Format(time.RFC3339))
			return d, st
		}
		return c.afterVerification(&st, d, a)
	}

	switch inc.Phase {
	case PhaseMitigating:
		if !c.anyBreaching() {
			inc.Phase = PhaseHolding
			d.Reason = "SLOs back within objective before the next action: holding"
			inc.note(now, d.Reason)
			return d, st
		}
		return c.climb(&st, d, inc.Rung)
	case PhaseHolding, PhaseEscalated:
		if inc.Phase == PhaseEscalated && handedOver(inc) && c.mitigable(inc) {
			// The evidence now names a change the policy governs: the
			// hand-over gives way to mitigation.
			inc.note(now, "superseded: a breaching regression is now attributed to a change this policy mitigates")
			d, st = c.resolve(&st, d)
			return c.open(&st, d)
		}
		if inc.Phase == PhaseHolding && c.attributedBreach(inc) {
			inc.Phase = PhaseMitigating
			inc.note(now, "SLO breaching again while holding: resuming at rung "+string(inc.Rung))
			return c.climb(&st, d, inc.Rung)
		}
		return c.holdOrRestore(&st, d)
	case PhaseRestoring:
		// A restore step was verified and the next one is waiting for the
		// cooldown or the budget.
		return c.restore(&st, d)
	}
	d.Reason = fmt.Sprintf("incident %s in phase %s", inc.ID, inc.Phase)
	return d, st
}

func (c *cycle) allRecovered() bool {
	for _, r := range c.readings {
		if !r.recovered {
			return false
		}
	}
	return true
}

func (c *cycle) anyBreaching() bool {
	return slices.ContainsFunc(c.readings, func(r reading) bool { return r.breaching })
}

// attributedBreach reports whether an SLO breaches with a regression
// attributed to the incident's cause. Breaches with another cause (an
// upstream outage, a different change) are not the incident's to act on.
func (c *cycle) attributedBreach(inc *Incident) bool {
	return slices.ContainsFunc(c.readings, func(r reading) bool {
		return r.breaching && r.a.Verdict == VerdictRegressed && sameCause(inc, r.a.Cause)
	})
}

func sameCause(inc *Incident, c Cause) bool {
	if c.IncidentID != "" {
		return c.IncidentID == inc.ID || c.IncidentID == inc.Cause.IncidentID
	}
	return c.key() == inc.Cause.key()
}

// breachCauses describes the causes of the breaching SLOs.
func (c *cycle) breachCauses() string {
	var out []string
	for _, r := range c.readings {
		if r.breaching {
			out = append(out, fmt.Sprintf("%s: %s (%s)", r.slo.Name, r.a.Verdict, r.a.Cause))
		}
	}
	return strings.Join(out, ", ")
}

// controlled says whether the policy's levers address cause.
func controlled(svc *policy.Service, cause Cause) (bool, string) {
	switch cause.Kind {
	case CauseFlag:
		sf := svc.Flags.Strategy
		switch {
		case cause.FlagKey == sf.Key && (cause.Variant == "" || slices.Contains(servedVariants(cause.Variant), sf.NewVariant)):
			return true, ""
		case cause.FlagKey == sf.Key:
			return false, fmt.Sprintf("cause is variant %q of %s, not the new variant %q", cause.Variant, sf.Key, sf.NewVariant)
		case cause.FlagKey != "" && cause.FlagKey == svc.Flags.Constants.Key:
			return true, ""
		}
		return false, fmt.Sprintf("flag %q is not controlled by this policy", cause.FlagKey)
	case CauseComponent:
		if slices.Contains(svc.Components, cause.Component) {
			return true, ""
		}
		return false, fmt.Sprintf("component %q is not listed in the policy's components", cause.Component)
	case CauseAmbiguous:
		return false, "attribution is ambiguous: leaving it to people"
	}
	return false, "no known change explains it"
}

// servedVariants returns the variants of a flag setting as the change
// journal describes it: "decorrelated", or a rollout's
// "exponential+decorrelated (targeted)".
func servedVariants(v string) []string {
	return strings.Split(strings.TrimSuffix(v, " (targeted)"), "+")
}

// open opens an incident when an attributed regression breaches (or is
// about to breach) an SLO, and decides its first action.
func (c *cycle) open(st *State, d Decision) (Decision, State) {
	var trig []reading
	for _, r := range c.readings {
		if r.breaching && r.a.Verdict == VerdictRegressed {
			trig = append(trig, r)
		}
	}
	if len(trig) == 0 {
		if c.anyBreaching() {
			d.Reason = "SLO breaching without a regression verdict: not a change to act on"
		} else {
			d.Reason = "all SLOs within objective"
		}
		return d, *st
	}
	best := trig[0]
	for _, r := range trig[1:] {
		if r.a.Cause.Confidence > best.a.Cause.Confidence {
			best = r
		}
	}
	cause := best.a.Cause
	if ok, why := controlled(c.svc, cause); !ok {
		if cause.Kind == CauseAmbiguous {
			// More data may tell the changes apart.
			d.Reason = fmt.Sprintf("slo %s regressed: %s", best.slo.Name, why)
			return d, *st
		}
		return c.handOver(st, d, best, why)
	}
	if cause.Confidence < c.svc.Attribution.MinConfidence {
		d.Reason = fmt.Sprintf("slo %s regressed, attributed to %s with confidence %.2f < %.2f: not acting",
			best.slo.Name, cause, cause.Confidence, c.svc.Attribution.MinConfidence)
		return d, *st
	}
	newV := c.svc.Flags.Strategy.NewVariant
	if c.obs.Flags.Share(newV) == 0 && !slices.ContainsFunc(trig, func(r reading) bool { return r.a.Cause.FlagKey == c.svc.Flags.Constants.Key }) {
		d.Reason = fmt.Sprintf("slo %s regressed (%s) but %s serves no traffic: nothing to gate", best.slo.Name, cause, newV)
		return d, *st
	}
	id := incidentID(c.svc.Name, cause, best.a.Onset, c.now, c.svc.EvaluationWindow)
	for n := 2; st.hasHistory(id); n++ {
		id = fmt.Sprintf("%s-%d", strings.TrimSuffix(id, fmt.Sprintf("-%d", n-1)), n)
	}
	start := c.obs.Flags.Percent(newV)
	inc := &Incident{
		ID: id, Service: c.svc.Name, Cause: cause, OpenedAt: c.now, Phase: PhaseMitigating, Rung: RungTune,
		StartPercent: start, Ceiling: start, Trigger: exportReadings(c.readings),
	}
	inc.note(c.now, fmt.Sprintf("opened: %s regressed (%s), attributed to %s (confidence %.2f)",
		best.slo.Name, describeReading(best), cause, cause.Confidence))
	st.Active = inc
	d.IncidentID = id
	return c.climb(st, d, RungTune)
}

// handOver opens an incident for a breaching regression that is not the
// policy's to mitigate (no known change explains it, or the change is not
// one its flags govern) and escalates it at once, with the evidence: no
// flag write can help, and people need to know.
func (c *cycle) handOver(st *State, d Decision, best reading, why string) (Decision, State) {
	cause := best.a.Cause
	id := incidentID(c.svc.Name, cause, best.a.Onset, c.now, c.svc.EvaluationWindow)
	for n := 2; st.hasHistory(id); n++ {
		id = fmt.Sprintf("%s-%d", strings.TrimSuffix(id, fmt.Sprintf("-%d", n-1)), n)
	}
	start := c.obs.Flags.Percent(c.svc.Flags.Strategy.NewVariant)
	inc := &Incident{
		ID: id, Service: c.svc.Name, Cause: cause, OpenedAt: c.now, Phase: PhaseMitigating, Rung: RungEscalate,
		StartPercent: start, Ceiling: start, Trigger: exportReadings(c.readings),
	}
	inc.note(c.now, fmt.Sprintf("opened: %s regressed (%s), %s: handing over", best.slo.Name, describeReading(best), why))
	st.Active = inc
	d.IncidentID = id
	summary := fmt.Sprintf("%s: incident %s: %s regressed (%s); not a change this policy mitigates (%s), no flag write",
		c.svc.Name, id, best.slo.Name, describeReading(best), why)
	if cause.Evidence != "" {
		summary += "; evidence: " + cause.Evidence
	}
	return c.escalateWith(st, d, summary)
}

// handedOver reports whether inc was handed over without any flag write.
func handedOver(inc *Incident) bool {
	return inc.Escalated && !slices.ContainsFunc(inc.Actions, func(a Action) bool { return a.Mutation != nil })
}

// mitigable reports whether an SLO breaches with a regression the policy
// may act on: attributed, with enough confidence, to a change it governs
// other than inc's cause.
func (c *cycle) mitigable(inc *Incident) bool {
	return slices.ContainsFunc(c.readings, func(r reading) bool {
		ok, _ := controlled(c.svc, r.a.Cause)
		return r.breaching && r.a.Verdict == VerdictRegressed && ok &&
			r.a.Cause.Confidence >= c.svc.Attribution.MinConfidence && !sameCause(inc, r.a.Cause)
	})
}

// resume rebuilds, from the observation's journal, an incident that the
// state does not hold (this replica restarted, or another one acted
// first) while it still matters: its last action is being verified, or an
// SLO breaches with a regression of its cause. It returns whether it did.
func (c *cycle) resume(st *State) bool {
	var j JournaledAction
	found := false
	for i := len(c.obs.Journal) - 1; i >= 0; i-- {
		if !st.hasHistory(c.obs.Journal[i].Incident) {
			j, found = c.obs.Journal[i], true
			break
		}
	}
	if !found {
		return false
	}
	inc := &Incident{ID: j.Incident, Service: c.svc.Name, Cause: j.Cause, OpenedAt: j.OpenedAt, Phase: PhaseMitigating,
		Rung: RungTune, Trigger: exportReadings(c.readings)}
	verifying := c.now.Before(j.At.Add(time.Duration(c.svc.EvaluationWindow)))
	current := c.obs.Flags.Percent(c.svc.Flags.Strategy.NewVariant)
	inc.StartPercent, inc.Ceiling = c.journaledStart(j.Incident, current)
	// Still holding a shrink or flip back: the restore path is its to take.
	holding := current < inc.StartPercent
	if !verifying && !holding && !c.attributedBreach(inc) {
		return false
	}
	st.Active = inc
	n := c.adopt(st)
	st.Active.note(c.now, fmt.Sprintf("resumed from the journal: %d action(s) of %s, the last at %s", n, inc.Cause, j.At.UTC().Format(time.RFC3339)))
	return true
}

// journaledStart returns the new variant's rollout before the incident's
// first journaled change of the strategy flag (what its undo restores),
// else current.
func (c *cycle) journaledStart(incident string, current int) (start, ceiling int) {
	for _, j := range c.obs.Journal {
		u := j.Action.Undo
		if j.Incident != incident || u == nil || u.Kind == MutationSetConstants {
			continue
		}
		before, err := u.Apply(FlagState{}, c.svc.Flags.Strategy.Key, c.svc.Flags.Constants.Key)
		if err != nil {
			break
		}
		p := before.Percent(c.svc.Flags.Strategy.NewVariant)
		return p, p
	}
	return current, current
}

// adopt records the journaled actions of the active incident that the
// state lacks, as applied by whoever wrote them, and returns how many.
func (c *cycle) adopt(st *State) int {
	n := 0
	for _, j := range c.obs.Journal {
		inc := st.Active
		if j.Incident != inc.ID || slices.ContainsFunc(inc.Actions, func(a Action) bool { return a.IdempotencyKey == j.Action.IdempotencyKey }) {
			continue
		}
		a := j.Action
		next, err := Commit(*st, Decision{IncidentID: inc.ID, Action: &a}, StatusAppliedElsewhere, j.Actor, "", j.At)
		if err != nil {
			continue
		}
		*st = next
		switch a.Rung {
		case RungTune, RungShrink, RungFlip:
			st.Active.Rung = a.Rung
		}
		st.Active.note(c.now, fmt.Sprintf("adopted %s from the journal (written by %s at %s)", StepOf(a.IdempotencyKey), cmp.Or(j.Actor, "another replica"), j.At.UTC().Format(time.RFC3339)))
		n++
	}
	return n
}

func (s *State) hasHistory(id string) bool {
	return slices.ContainsFunc(s.History, func(inc Incident) bool { return inc.ID == id })
}

// incidentID derives a stable incident id when the detector gives none:
// service, cause and onset (or, without an onset, the start of the current
// evaluation window, which replicas agree on except at its boundary).
func incidentID(service string, cause Cause, onset, now time.Time, window model.Duration) string {
	if cause.IncidentID != "" {
		return cause.IncidentID
	}
	if onset.IsZero() {
		onset = now.Truncate(time.Duration(window))
	}
	key := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' {
			return r
		}
		return '-'
	}, cause.key())
	return fmt.Sprintf("%s-%s-%d", service, key, onset.Unix())
}

func describeReading(r reading) string {
	s := fmt.Sprintf("%s > %s", formatSLI(r.slo.Signal, r.a.Value), formatSLI(r.slo.Signal, r.objective))
	if r.a.Value <= r.objective {
		s = fmt.Sprintf("%s, forecast %s > %s", formatSLI(r.slo.Signal, r.a.Value), formatSLI(r.slo.Signal, r.a.Forecast), formatSLI(r.slo.Signal, r.objective))
	}
	return s
}

// formatSLI formats an SLI value: a duration for latency, a percentage
// for ratios.
func formatSLI(sig policy.Signal, v float64) string {
	if sig == policy.SignalLatency {
		return time.Duration(v * float64(time.Second)).Round(time.Millisecond).String()
	}
	return fmt.Sprintf("%.2f%%", 100*v)
}

// gate checks the cooldown and the action budget.
func (c *cycle) gate(st *State) (bool, string) {
	if !st.LastActionAt.IsZero() {
		until := st.LastActionAt.Add(time.Duration(c.svc.Cooldown))
		if c.now.Before(until) {
			return false, "cooldown until " + until.UTC().Format(time.RFC3339)
		}
	}
	if st.BudgetRemaining(c.svc, c.now) == 0 {
		return false, fmt.Sprintf("action budget exhausted: %d actions in the last hour (max %d)", len(st.ActionTimes), c.svc.MaxActionsPerHour)
	}
	return true, ""
}

// step is a candidate action on a rung.
type step struct {
	rung     Rung
	key      string
	reason   string
	mutation Mutation
	undo     Mutation
	model    *ModelReport
	expected []Prediction
	// percent is the new variant's rollout after a strategy flag change.
	percent int
}

// climb decides the next action of a mitigating incident, starting at rung
// from and moving up while a rung is exhausted.
func (c *cycle) climb(st *State, d Decision, from Rung) (Decision, State) {
	inc := st.Active
	if !c.attributedBreach(inc) {
		d.Reason = fmt.Sprintf("SLOs breaching, but not with a regression attributed to %s (%s): waiting", inc.Cause, c.breachCauses())
		inc.note(c.now, d.Reason)
		return d, *st
	}
	if from != RungEscalate {
		// Checked first: choosing the next step may run the model.
		if ok, blocked := c.gate(st); !ok {
			d.Rung = from
			d.Reason = fmt.Sprintf("next: %s or above, blocked: %s", from, blocked)
			inc.note(c.now, d.Reason)
			return d, *st
		}
	}
	var skipped []string
	for i := max(rungIndex(from), 0); i < len(ladder)-1; i++ {
		r := ladder[i]
		s, why := c.stepFor(inc, r)
		if s == nil {
			skipped = append(skipped, fmt.Sprintf("%s: %s", r, why))
			continue
		}
		inc.Rung = r
		if len(skipped) > 0 {
			s.reason += " (skipped " + strings.Join(skipped, "; ") + ")"
		}
		return c.act(st, d, s), *st
	}
	inc.Rung = RungEscalate
	return c.escalate(st, d, skipped)
}

// stepFor returns the action rung r would take, or why it can not act.
func (c *cycle) stepFor(inc *Incident, r Rung) (*step, string) {
	switch r {
	case RungTune:
		return c.tuneStep(inc)
	case RungShrink:
		return c.shrinkStep(inc)
	case RungFlip:
		return c.flipStep(inc)
	}
	return nil, "not a mitigation rung"
}

func (c *cycle) act(st *State, d Decision, s *step) Decision {
	inc := st.Active
	d.Kind = DecisionAct
	d.Rung = s.rung
	d.Reason = s.reason
	m, u := s.mutation, s.undo
	s.key = changeKey(s.key, m)
	d.Change = &FlagChange{
		Service: c.svc.Name, IncidentID: inc.ID, IdempotencyKey: s.key, Rung: s.rung,
		Reason: s.reason, Mutation: m, Undo: u, Revision: c.obs.Flags.Revision,
	}
	d.Action = &Action{
		Rung: s.rung, At: c.now, IdempotencyKey: s.key, Reason: s.reason,
		Mutation: &m, Undo: &u, Trigger: exportReadings(c.readings), Model: s.model, Expected: s.expected,
	}
	if s.rung != RungTune {
		p := s.percent
		d.Action.NewPercent = &p
	}
	return d
}

func (c *cycle) escalate(st *State, d Decision, skipped []string) (Decision, State) {
	inc := st.Active
	if inc.Escalated {
		d.Rung = RungEscalate
		d.Reason = "ladder exhausted; escalated earlier, waiting for people or recovery"
		return d, *st
	}
	if len(inc.Actions) == 0 && inc.Rung == RungEscalate {
		// A hand-over whose escalation was not recorded (observe mode).
		return c.escalateWith(st, d, fmt.Sprintf("%s: incident %s (%s): not a change this policy mitigates, no flag write", c.svc.Name, inc.ID, inc.Cause))
	}
	var breaching []string
	for _, r := range c.readings {
		if r.breaching {
			breaching = append(breaching, fmt.Sprintf("%s %s", r.slo.Name, describeReading(r)))
		}
	}
	summary := fmt.Sprintf("%s: incident %s (%s): automatic mitigation exhausted", c.svc.Name, inc.ID, inc.Cause)
	if len(breaching) > 0 {
		summary += "; breaching: " + strings.Join(breaching, ", ")
	}
	if len(skipped) > 0 {
		summary += "; " + strings.Join(skipped, "; ")
	}
	return c.escalateWith(st, d, summary)
}

// escalateWith decides the escalation of the active incident.
func (c *cycle) escalateWith(st *State, d Decision, summary string) (Decision, State) {
	inc := st.Active
	d.Kind = DecisionEscalate
	d.Rung = RungEscalate
	d.Reason = summary
	d.Escalation = &Escalation{Service: c.svc.Name, IncidentID: inc.ID, Cause: inc.Cause, Summary: summary, Readings: exportReadings(c.readings)}
	d.Action = &Action{Rung: RungEscalate, At: c.now, IdempotencyKey: stepKey(inc, RungEscalate), Reason: summary, Trigger: exportReadings(c.readings)}
	return d, *st
}

// rolloutMutation sets the new variant to pct percent, the old one to the
// rest.
func (c *cycle) rolloutMutation(pct int) Mutation {
	sf := c.svc.Flags.Strategy
	return Mutation{Kind: MutationSetRollout, FlagKey: sf.Key, Rollout: []VariantWeight{
		{Variant: sf.NewVariant, Weight: pct}, {Variant: sf.OldVariant, Weight: 100 - pct},
	}}
}

// rolloutUndo is the mutation restoring the strategy flag as observed.
func (c *cycle) rolloutUndo() Mutation {
	f := c.obs.Flags
	key := c.svc.Flags.Strategy.Key
	if len(f.Rollout) == 0 {
		return Mutation{Kind: MutationSetDefaultVariant, FlagKey: key, Variant: f.DefaultVariant}
	}
	return Mutation{Kind: MutationSetRollout, FlagKey: key, Rollout: slices.Clone(f.Rollout), Variant: f.DefaultVariant}
}

// changeKey is the idempotency key of a flag change: the step
// (<incident>/<rung>/<n>) and, after "#", a digest of the change itself.
// Two replicas that decide the same step differently hold different keys,
// so neither can take the other's write for its own: the loser's
// compare-and-swap fails, it re-reads and decides again from the winner's
// change. The same change decided twice (a retry, a restart) has one key
// and is written once.
func changeKey(step string, m Mutation) string {
	b, err := json.Marshal(m)
	if err != nil {
		// A Mutation always marshals; keep the step key rather than fail.
		return step
	}
	sum := sha256.Sum256(b)
	return step + "#" + hex.EncodeToString(sum[:4])
}

// StepOf returns the step part of an idempotency key, <incident>/<rung>/<n>:
// plans are named by it, whatever change the step settles on.
func StepOf(key string) string {
	step, _, _ := strings.Cut(key, "#")
	return step
}

// stepKey returns the step of the next action on rung r: incident id, rung
// and the ordinal of the action on that rung (changeKey adds the change).
func stepKey(inc *Incident, r Rung) string {
	n := 1
	for _, a := range inc.Actions {
		if a.Rung == r {
			n++
		}
	}
	return fmt.Sprintf("%s/%s/%d", inc.ID, r, n)
}

func (c *cycle) shrinkStep(inc *Incident) (*step, string) {
	sf := c.svc.Flags.Strategy
	cur := c.obs.Flags.Percent(sf.NewVariant)
	next := -1
	for _, p := range sf.Rollout {
		if p < cur {
			next = p
			break
		}
	}
	if next < 0 {
		return nil, fmt.Sprintf("%s at %d%%, no lower allowed percentage", sf.NewVariant, cur)
	}
	s := &step{
		rung: RungShrink, key: stepKey(inc, RungShrink),
		mutation: c.rolloutMutation(next), undo: c.rolloutUndo(), percent: next,
	}
	s.expected = c.predictShare(float64(next) / 100)
	s.reason = fmt.Sprintf("shrink %s rollout %d%% → %d%%%s", sf.NewVariant, cur, next, expectSummary(s.expected))
	return s, ""
}

// predictedGain is the progress the predictions promise on the breaching
// SLOs: the largest share of an SLO's gap to its recovery threshold that
// the predicted change (the model's effect, Observed → Expected) closes,
// or, when the change makes a breaching SLO worse by more than
// verification.minImprovement of its gap, that negative share. Without a
// prediction for a breaching SLO it is NaN.
func (c *cycle) predictedGain(ps []Prediction) float64 {
	best, worst := math.Inf(-1), math.Inf(1)
	for _, r := range c.readings {
		if !r.breaching {
			continue
		}
		i := slices.IndexFunc(ps, func(p Prediction) bool { return p.SLO == r.slo.Name })
		if i < 0 {
			return math.NaN()
		}
		target := r.objective * (1 - c.svc.Hysteresis.Exit)
		gap := max(r.worst-target, r.objective*0.01)
		g := (ps[i].Observed - ps[i].Expected) / gap
		best, worst = max(best, g), min(worst, g)
	}
	switch {
	case math.IsInf(best, -1):
		return math.NaN()
	case worst < -c.svc.Verification.MinImprovement:
		return worst
	}
	return best
}

func (c *cycle) flipStep(inc *Incident) (*step, string) {
	sf := c.svc.Flags.Strategy
	if c.obs.Flags.Share(sf.NewVariant) == 0 {
		return nil, fmt.Sprintf("%s already serves no traffic", sf.NewVariant)
	}
	s := &step{
		rung: RungFlip, key: stepKey(inc, RungFlip),
		mutation: Mutation{Kind: MutationSetDefaultVariant, FlagKey: sf.Key, Variant: sf.OldVariant},
		undo:     c.rolloutUndo(),
	}
	s.expected = c.predictShare(0)
	s.reason = fmt.Sprintf("flip %s back to %s%s", sf.Key, sf.OldVariant, expectSummary(s.expected))
	return s, ""
}

// predictShare predicts the SLIs with the new variant at share.
func (c *cycle) predictShare(share float64) []Prediction {
	mc := c.model()
	if !mc.ok {
		return nil
	}
	sf := c.svc.Flags.Strategy
	mix := []mixCohort{}
	for _, v := range []string{sf.NewVariant, sf.OldVariant} {
		w := share
		if v == sf.OldVariant {
			w = 1 - share
		}
		if w == 0 {
			continue
		}
		k, ok := c.obs.Flags.ConstantsFor(v)
		if !ok {
			return nil
		}
		mix = append(mix, mixCohort{Weight: w, Strategy: v, Constants: k})
	}
	return mc.predict(c, mc.build(mix))
}

func expectSummary(ps []Prediction) string {
	var parts []string
	for _, p := range ps {
		if before, after := formatSLI(p.Signal, p.Observed), formatSLI(p.Signal, p.Expected); before != after {
			parts = append(parts, fmt.Sprintf("%s %s → %s", p.SLO, before, after))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "; expected " + strings.Join(parts, ", ")
}

// progress returns the fraction of the gap between the breaching SLOs of
// the trigger and their recovery thresholds that was closed since.
func (c *cycle) progress(trigger []SLOReading) float64 {
	prog := math.Inf(1)
	for _, t := range trigger {
		if !t.Breaching {
			continue
		}
		for _, r := range c.readings {
			if r.slo.Name != t.SLO {
				continue
			}
			target := r.objective * (1 - c.svc.Hysteresis.Exit)
			before := t.Value
			if t.Forecast != nil {
				before = max(before, *t.Forecast)
			}
			gap := max(before-target, r.objective*0.01)
			prog = min(prog, (before-r.a.Value)/gap)
		}
	}
	if math.IsInf(prog, 1) {
		return 0
	}
	return prog
}

// afterVerification verifies the pending action a and decides what
// follows.
func (c *cycle) afterVerification(st *State, d Decision, a *Action) (Decision, State) {
	inc := st.Active
	if a.Rung != RungRestore && c.anyBreaching() && !c.attributedBreach(inc) {
		// Something else is going on (an upstream outage, another
		// change): the data can not tell whether the action helped.
		d.Reason = fmt.Sprintf("verification of %s postponed: breaching SLOs not attributed to %s (%s)", StepOf(a.IdempotencyKey), inc.Cause, c.breachCauses())
		inc.note(c.now, d.Reason)
		return d, *st
	}
	v := &Verification{At: c.now, Readings: exportReadings(c.readings), Progress: c.progress(a.Trigger)}
	for i := range a.Expected {
		for _, r := range c.readings {
			if r.slo.Name == a.Expected[i].SLO {
				x := r.a.Value
				a.Expected[i].Verified = &x
			}
		}
	}
	a.Verification = v
	minImp := c.svc.Verification.MinImprovement

	if a.Rung == RungRestore {
		switch {
		case c.anyBreaching():
			v.Outcome = OutcomeRegressed
			v.Note = "restore step made an SLO breach: reverting it"
			return c.revert(st, d, a)
		case c.allRecovered():
			v.Outcome = OutcomeRecovered
			inc.note(c.now, fmt.Sprintf("restore %s verified: SLOs recovered", a.IdempotencyKey))
			return c.restore(st, d)
		default:
			v.Outcome = OutcomeMarginal
			inc.Ceiling = c.obs.Flags.Percent(c.svc.Flags.Strategy.NewVariant)
			inc.Phase = PhaseHolding
			v.Note = fmt.Sprintf("SLOs within objective but not recovered: restore stops at %d%%", inc.Ceiling)
			inc.note(c.now, v.Note)
			d.Reason = v.Note
			return d, *st
		}
	}

	switch {
	case !c.anyBreaching():
		v.Outcome = OutcomeRecovered
	case v.Progress >= minImp:
		v.Outcome = OutcomeImproved
	case v.Progress < -minImp:
		v.Outcome = OutcomeWorse
	default:
		v.Outcome = OutcomeNoImprovement
	}
	inc.note(c.now, fmt.Sprintf("verified %s: %s (progress %.0f%%)", a.IdempotencyKey, v.Outcome, 100*v.Progress))
	switch v.Outcome {
	case OutcomeRecovered:
		inc.Phase = PhaseHolding
		d.Reason = fmt.Sprintf("%s verified: SLOs within objective, holding", a.Rung)
		return d, *st
	case OutcomeImproved:
		// More of what works: the same rung, its next step.
		return c.climb(st, d, a.Rung)
	default:
		next := a.Rung
		if i := rungIndex(a.Rung); i >= 0 && i+1 < len(ladder) {
			next = ladder[i+1]
		}
		if a.Rung == RungShrink || a.Rung == RungFlip {
			// Less of the new strategy did not help: it is not what
			// breaches, and more of the same lever will not help either.
			next = RungEscalate
		}
		inc.Rung = next
		if a.Undo != nil && rungIndex(a.Rung) >= 0 {
			return c.undo(st, d, a)
		}
		return c.climb(st, d, next)
	}
}

// undo takes back the verified action a, which did not help: a write that
// does not help is a cost (of the error budget, of people's trust) and
// keeps nothing. The next cycle climbs on from the incident's rung.
func (c *cycle) undo(st *State, d Decision, a *Action) (Decision, State) {
	inc := st.Active
	s := &step{
		rung: RungUndo, key: stepKey(inc, RungUndo), mutation: *a.Undo,
		reason: fmt.Sprintf("undo %s: verified %s (progress %.0f%%, need %.0f%%)",
			StepOf(a.IdempotencyKey), a.Verification.Outcome, 100*a.Verification.Progress, 100*c.svc.Verification.MinImprovement),
	}
	if a.Mutation != nil {
		s.undo = *a.Mutation
	}
	if a.Undo.FlagKey == c.svc.Flags.Strategy.Key {
		s.percent = percentOf(*a.Undo, c.svc.Flags.Strategy.NewVariant)
	} else {
		s.percent = c.obs.Flags.Percent(c.svc.Flags.Strategy.NewVariant)
	}
	if ok, blocked := c.gate(st); !ok {
		// Keep the action pending: its verification and undo run again
		// next cycle.
		a.Verification = nil
		d.Rung = RungUndo
		d.Reason = "next: " + s.reason + ", blocked: " + blocked
		inc.note(c.now, d.Reason)
		return d, *st
	}
	inc.note(c.now, s.reason)
	return c.act(st, d, s), *st
}

// holdDuration is how long every SLO must stay recovered before an
// incident resolves or its rollout is restored.
func (c *cycle) holdDuration() time.Duration {
	return max(time.Duration(c.svc.Restore.HoldTime), time.Duration(c.svc.EvaluationWindow))
}

// holdOrRestore handles a holding or escalated incident: once every SLO
// has stayed recovered for the hold time, restore or resolve.
func (c *cycle) holdOrRestore(st *State, d Decision) (Decision, State) {
	inc := st.Active
	hold := c.holdDuration()
	if inc.RecoveredSince.IsZero() {
		d.Reason = fmt.Sprintf("holding (%s): SLOs within objective, not yet recovered", inc.Phase)
		return d, *st
	}
	if held := c.now.Sub(inc.RecoveredSince); held < hold {
		d.Reason = fmt.Sprintf("holding (%s): recovered for %s of %s", inc.Phase, held, hold)
		return d, *st
	}
	if inc.Phase == PhaseHolding && c.restoreTarget(inc) >= 0 {
		return c.restore(st, d)
	}
	return c.resolve(st, d)
}

func (c *cycle) resolve(st *State, d Decision) (Decision, State) {
	inc := st.Active
	inc.Phase = PhaseResolved
	inc.ResolvedAt = c.now
	pct := c.obs.Flags.Percent(c.svc.Flags.Strategy.NewVariant)
	inc.note(c.now, fmt.Sprintf("resolved: SLOs recovered for %s; %s at %d%%", c.holdDuration(), c.svc.Flags.Strategy.NewVariant, pct))
	st.History = append(st.History, *inc)
	if len(st.History) > maxHistory {
		st.History = slices.Delete(st.History, 0, len(st.History)-maxHistory)
	}
	st.Active = nil
	d.Reason = fmt.Sprintf("incident %s resolved; %s at %d%%", inc.ID, c.svc.Flags.Strategy.NewVariant, pct)
	return d, *st
}

// restoreTarget returns the next rollout percentage of the restore path,
// or -1.
func (c *cycle) restoreTarget(inc *Incident) int {
	if !c.svc.Restore.Enabled {
		return -1
	}
	cur := c.obs.Flags.Percent(c.svc.Flags.Strategy.NewVariant)
	limit := min(inc.StartPercent, inc.Ceiling)
	allowed := append(slices.Clone(c.svc.Flags.Strategy.Rollout), inc.StartPercent)
	next := -1
	for _, p := range allowed {
		if p > cur && p <= limit && (next < 0 || p < next) {
			next = p
		}
	}
	return next
}

// restore raises the rollout one step, or resolves the incident when the
// restore path is done.
func (c *cycle) restore(st *State, d Decision) (Decision, State) {
	inc := st.Active
	target := c.restoreTarget(inc)
	if target < 0 {
		return c.resolve(st, d)
	}
	if !c.allRecovered() {
		inc.Phase = PhaseHolding
		d.Reason = "restore paused: SLOs not recovered"
		return d, *st
	}
	inc.Phase = PhaseRestoring
	sf := c.svc.Flags.Strategy
	cur := c.obs.Flags.Percent(sf.NewVariant)
	s := &step{
		rung: RungRestore, key: stepKey(inc, RungRestore),
		mutation: c.rolloutMutation(target), undo: c.rolloutUndo(), percent: target,
	}
	if target == inc.StartPercent {
		// Back to the exact pre-incident shape of the flag.
		if m, ok := firstRolloutUndo(inc); ok {
			s.mutation = m
		}
	}
	s.expected = c.predictShare(float64(target) / 100)
	for _, p := range s.expected {
		if p.Expected > p.Objective {
			// The model expects the step to breach: stop here rather than
			// spend a breach on verifying it.
			inc.Ceiling = cur
			inc.Phase = PhaseHolding
			inc.note(c.now, fmt.Sprintf("restore to %d%% not attempted: %s expected at %s > %s; rollout stays at %d%%",
				target, p.SLO, formatSLI(p.Signal, p.Expected), formatSLI(p.Signal, p.Objective), cur))
			return c.resolve(st, d)
		}
	}
	s.reason = fmt.Sprintf("restore %s rollout %d%% → %d%%: SLOs recovered for %s%s",
		sf.NewVariant, cur, target, c.holdDuration(), expectSummary(s.expected))
	if ok, blocked := c.gate(st); !ok {
		d.Rung = RungRestore
		d.Reason = "next: " + s.reason + ", blocked: " + blocked
		return d, *st
	}
	return c.act(st, d, s), *st
}

// firstRolloutUndo returns the undo of the incident's first change to the
// strategy flag.
func firstRolloutUndo(inc *Incident) (Mutation, bool) {
	for _, a := range inc.Actions {
		if (a.Rung == RungShrink || a.Rung == RungFlip) && a.Undo != nil {
			return *a.Undo, true
		}
	}
	return Mutation{}, false
}

// revert undoes a restore step that regressed and caps further restores
// below it.
func (c *cycle) revert(st *State, d Decision, a *Action) (Decision, State) {
	inc := st.Active
	if a.Undo == nil {
		return c.escalate(st, d, []string{"restore step has no undo"})
	}
	s := &step{
		rung: RungRevert, key: stepKey(inc, RungRevert),
		mutation: *a.Undo, undo: c.rolloutUndo(), percent: percentOf(*a.Undo, c.svc.Flags.Strategy.NewVariant),
	}
	s.reason = fmt.Sprintf("revert %s: %s", a.IdempotencyKey, strings.Join(breachList(c.readings), ", "))
	if ok, blocked := c.gate(st); !ok {
		// Do not lose the revert: keep the restore step pending as
		// regressed and retry next cycle.
		a.Verification = nil
		d.Rung = RungRevert
		d.Reason = "next: " + s.reason + ", blocked: " + blocked
		inc.note(c.now, d.Reason)
		return d, *st
	}
	return c.act(st, d, s), *st
}

// percentOf returns the new variant's share after mutation m of the
// strategy flag.
func percentOf(m Mutation, newVariant string) int {
	if m.Kind == MutationSetDefaultVariant || len(m.Rollout) == 0 {
		if m.Variant == newVariant {
			return 100
		}
		return 0
	}
	return FlagState{Rollout: m.Rollout}.Percent(newVariant)
}

func breachList(rs []reading) []string {
	var out []string
	for _, r := range rs {
		if r.breaching {
			out = append(out, fmt.Sprintf("%s %s", r.slo.Name, describeReading(r)))
		}
	}
	return out
}

// ErrStale is returned by Commit when the decision no longer matches the
// state's active incident.
var ErrStale = errors.New("decision is stale")

// Commit records the decision's action in the incident as applied at at
// with the given status, and returns the new state. st is not modified.
func Commit(st State, d Decision, status ApplyStatus, actor, approver string, at time.Time) (State, error) {
	if d.Action == nil {
		return st, nil
	}
	if st.Active == nil || st.Active.ID != d.IncidentID {
		return st, fmt.Errorf("commit %s: %w: incident %s is not active", d.Action.IdempotencyKey, ErrStale, d.IncidentID)
	}
	if slices.ContainsFunc(st.Active.Actions, func(a Action) bool { return a.IdempotencyKey == d.Action.IdempotencyKey }) {
		return st, fmt.Errorf("commit %s: %w: already recorded", d.Action.IdempotencyKey, ErrStale)
	}
	st = st.Clone()
	inc := st.Active
	a := *d.Action
	a.Seq = len(inc.Actions) + 1
	a.At = at
	a.Status = status
	a.Actor = actor
	a.Approver = approver
	a.Expected = slices.Clone(a.Expected)
	inc.Actions = append(inc.Actions, a)
	switch a.Rung {
	case RungTune, RungShrink, RungFlip:
		inc.Phase = PhaseMitigating
	case RungRestore:
		inc.Phase = PhaseRestoring
	case RungUndo:
		inc.Phase = PhaseMitigating
	case RungRevert:
		if a.NewPercent != nil {
			inc.Ceiling = *a.NewPercent
		}
		inc.Phase = PhaseHolding
		inc.Rung = RungShrink
		inc.RecoveredSince = time.Time{}
	case RungEscalate:
		inc.Escalated = true
		inc.Phase = PhaseEscalated
	}
	if a.Rung != RungEscalate {
		st.LastActionAt = at
		st.ActionTimes = append(st.ActionTimes, at)
	}
	st.Version++
	return st, nil
}
