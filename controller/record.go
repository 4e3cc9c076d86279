package controller

import (
	"slices"
	"time"

	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/controller/policy"
)

// Rung is a step of the action ladder, or one of the steps of the restore
// path.
type Rung string

// The rungs, in ladder order, then the restore path.
const (
	RungTune     Rung = "tune"
	RungShrink   Rung = "shrink"
	RungFlip     Rung = "flip"
	RungEscalate Rung = "escalate"
	// RungRestore raises the new strategy's rollout after an incident.
	RungRestore Rung = "restore"
	// RungRevert undoes a restore step that regressed.
	RungRevert Rung = "revert"
	// RungUndo takes back a mitigation that verification showed did not
	// help: a probe of the hypothesis that the flags cause the breach.
	RungUndo Rung = "undo"
)

// ladder lists the mitigation rungs in order.
var ladder = []Rung{RungTune, RungShrink, RungFlip, RungEscalate}

func rungIndex(r Rung) int { return slices.Index(ladder, r) }

// Phase is the life-cycle phase of an incident.
type Phase string

// The phases.
const (
	// PhaseMitigating: the ladder is being climbed.
	PhaseMitigating Phase = "mitigating"
	// PhaseHolding: the last action brought the SLOs within objective; the
	// controller holds and waits for them to stay recovered.
	PhaseHolding Phase = "holding"
	// PhaseRestoring: the new strategy's rollout is being raised again.
	PhaseRestoring Phase = "restoring"
	// PhaseEscalated: the ladder is exhausted; people were alerted.
	PhaseEscalated Phase = "escalated"
	// PhaseResolved: the SLOs held for the hold time; the incident is
	// closed.
	PhaseResolved Phase = "resolved"
)

// Outcome is the result of verifying an action.
type Outcome string

// The outcomes.
const (
	// OutcomeRecovered: no SLO breaches any more.
	OutcomeRecovered Outcome = "recovered"
	// OutcomeImproved: the gap to the recovery threshold closed by at least
	// verification.minImprovement, but an SLO still breaches.
	OutcomeImproved Outcome = "improved"
	// OutcomeNoImprovement: the gap did not close enough.
	OutcomeNoImprovement Outcome = "no-improvement"
	// OutcomeWorse: the gap grew by more than verification.minImprovement.
	OutcomeWorse Outcome = "worse"
	// OutcomeRegressed: a restore step made an SLO breach.
	OutcomeRegressed Outcome = "regressed"
	// OutcomeMarginal: after a restore step the SLOs are within objective
	// but not recovered; restoring stops there.
	OutcomeMarginal Outcome = "marginal"
)

// ApplyStatus says what became of an action.
type ApplyStatus string

// The statuses.
const (
	// StatusApplied: this controller wrote the change.
	StatusApplied ApplyStatus = "applied"
	// StatusAppliedElsewhere: the idempotency key had already been applied,
	// by another replica or an earlier attempt.
	StatusAppliedElsewhere ApplyStatus = "applied-elsewhere"
	// StatusNotified: an escalation was handed to the notifier.
	StatusNotified ApplyStatus = "notified"
)

// SLOReading is one SLO's state as the controller classified it.
type SLOReading struct {
	SLO       string        `json:"slo"`
	Signal    policy.Signal `json:"signal"`
	Value     float64       `json:"value"`
	Forecast  *float64      `json:"forecast,omitempty"`
	Objective float64       `json:"objective"`
	Verdict   Verdict       `json:"verdict"`
	// Breaching: the value (or its forecast) exceeds objective·(1+enter).
	Breaching bool `json:"breaching"`
	// Recovered: the value is at most objective·(1−exit).
	Recovered bool   `json:"recovered"`
	Reason    string `json:"reason,omitempty"`
	Finding   string `json:"finding,omitempty"`
}

// Prediction is the model's expectation for one SLO.
type Prediction struct {
	SLO    string        `json:"slo"`
	Signal policy.Signal `json:"signal"`
	// Observed is the SLI when the decision was made; for a breaching
	// SLO the higher of the SLI and its forecast, the level the action
	// is sized for.
	Observed float64 `json:"observed"`
	// ModelBefore and ModelAfter are the modelled retry contributions
	// (latency: the retry part of the quantile, in seconds; retry_ratio:
	// retries per call; error_ratio: share of calls exhausting their
	// attempts) before and after the action.
	ModelBefore float64 `json:"modelBefore"`
	ModelAfter  float64 `json:"modelAfter"`
	// Expected is Observed + ModelAfter − ModelBefore.
	Expected float64 `json:"expected"`
	// Target is the value the action aims at (objective·(1−exit)) for a
	// breaching SLO, the objective otherwise.
	Target    float64 `json:"target"`
	Objective float64 `json:"objective"`
	// RetriesBefore and RetriesAfter are the retries k the quantile call
	// experiences (latency SLOs).
	RetriesBefore int `json:"retriesBefore,omitempty"`
	RetriesAfter  int `json:"retriesAfter,omitempty"`
	// Observed after verification.
	Verified *float64 `json:"verified,omitempty"`
}

// ModelReport records the inputs and outputs of the retry model for a
// decision.
type ModelReport struct {
	// Strategy is the strategy tuned; Share its traffic share.
	Strategy string  `json:"strategy"`
	Share    float64 `json:"share"`
	// RetryRatio is the observed retries per call; FailureProbability the
	// per-attempt failure probability p estimated from it.
	RetryRatio         float64        `json:"retryRatio"`
	FailureProbability float64        `json:"failureProbability"`
	AttemptLatency     model.Duration `json:"attemptLatency"`
	// Current and Chosen are the strategy's constants before and after.
	Current Constants `json:"current"`
	Chosen  Constants `json:"chosen"`
	// ExhaustBefore and ExhaustAfter are the modelled shares of calls
	// failing every attempt at p.
	ExhaustBefore float64 `json:"exhaustBefore"`
	ExhaustAfter  float64 `json:"exhaustAfter"`
	// ResilienceFailure is FailureProbability^maxAttempts at the policy's
	// brown-out failure probability; RetrySpan the expected sum of all
	// retry delays, both for the chosen constants.
	ResilienceFailure float64        `json:"resilienceFailure,omitempty"`
	RetrySpanBefore   model.Duration `json:"retrySpanBefore,omitempty"`
	RetrySpan         model.Duration `json:"retrySpan,omitempty"`
	// Candidates evaluated and how many met every constraint and target.
	Candidates int `json:"candidates"`
	Feasible   int `json:"feasible"`
	// GoalMet says whether the chosen constants are predicted to bring
	// every breaching SLO to its target.
	GoalMet bool   `json:"goalMet"`
	Why     string `json:"why"`
}

// Verification is the check of an action's effect.
type Verification struct {
	At       time.Time    `json:"at"`
	Outcome  Outcome      `json:"outcome"`
	Readings []SLOReading `json:"readings"`
	// Progress is the fraction of the gap to the recovery threshold closed
	// by the action (1 = fully; negative = worse).
	Progress float64 `json:"progress"`
	Note     string  `json:"note,omitempty"`
}

// Action is one flag write (or escalation) of an incident.
type Action struct {
	Seq            int       `json:"seq"`
	Rung           Rung      `json:"rung"`
	At             time.Time `json:"at"`
	IdempotencyKey string    `json:"idempotencyKey"`
	Reason         string    `json:"reason"`
	// Mutation is the change; Undo restores the state before it.
	Mutation *Mutation `json:"mutation,omitempty"`
	Undo     *Mutation `json:"undo,omitempty"`
	// NewPercent is the new variant's rollout after a change of the
	// strategy flag.
	NewPercent *int `json:"newPercent,omitempty"`
	// Trigger are the SLO readings the action was decided on.
	Trigger []SLOReading `json:"trigger"`
	// Model explains a tuning choice.
	Model *ModelReport `json:"model,omitempty"`
	// Expected are the model's predictions per SLO.
	Expected []Prediction `json:"expected,omitempty"`
	// Verification is set once the evaluation window has passed.
	Verification *Verification `json:"verification,omitempty"`
	Status       ApplyStatus   `json:"status"`
	Actor        string        `json:"actor,omitempty"`
	Approver     string        `json:"approver,omitempty"`
}

// Note is a timestamped event of an incident that is not an action, for
// example a verification result or a blocked action.
type Note struct {
	At   time.Time `json:"at"`
	Text string    `json:"text"`
}

// Incident is the unit the controller acts on: findings sharing a cause.
type Incident struct {
	ID       string    `json:"id"`
	Service  string    `json:"service"`
	Cause    Cause     `json:"cause"`
	OpenedAt time.Time `json:"openedAt"`
	Phase    Phase     `json:"phase"`
	// Rung is the rung the next mitigation starts from.
	Rung Rung `json:"rung"`
	// StartPercent is the new variant's rollout when the incident opened;
	// Ceiling the highest percentage a restore may reach.
	StartPercent int `json:"startPercent"`
	Ceiling      int `json:"ceiling"`
	// RecoveredSince is when every SLO last became recovered; zero while
	// one is not.
	RecoveredSince time.Time    `json:"recoveredSince,omitzero"`
	Escalated      bool         `json:"escalated,omitempty"`
	Trigger        []SLOReading `json:"trigger"`
	Actions        []Action     `json:"actions"`
	Notes          []Note       `json:"notes,omitempty"`
	ResolvedAt     time.Time    `json:"resolvedAt,omitzero"`
}

// pending returns the last action if it awaits verification.
func (inc *Incident) pending() *Action {
	if n := len(inc.Actions); n > 0 {
		a := &inc.Actions[n-1]
		if a.Verification == nil && a.Rung != RungEscalate && a.Rung != RungRevert && a.Rung != RungUndo {
			return a
		}
	}
	return nil
}

// maxNotes bounds an incident's notes; maxHistory the resolved incidents
// kept per service.
const (
	maxNotes   = 200
	maxHistory = 50
)

func (inc *Incident) note(at time.Time, text string) {
	if n := len(inc.Notes); n > 0 && inc.Notes[n-1].Text == text {
		return
	}
	if len(inc.Notes) >= maxNotes {
		inc.Notes = slices.Delete(inc.Notes, 0, 1)
	}
	inc.Notes = append(inc.Notes, Note{At: at, Text: text})
}

func (inc Incident) clone() Incident {
	c := inc
	c.Trigger = slices.Clone(inc.Trigger)
	c.Actions = slices.Clone(inc.Actions)
	for i := range c.Actions {
		// Verification fills in Expected[].Verified.
		c.Actions[i].Expected = slices.Clone(c.Actions[i].Expected)
	}
	c.Notes = slices.Clone(inc.Notes)
	return c
}

// State is the controller's memory of one service: the active incident,
// the resolved ones and the pacing of its actions. It is a plain value:
// Decide and Commit return a new State and never modify their argument.
type State struct {
	Service string `json:"service"`
	// Version increases with every change; plans record the version they
	// were made on.
	Version uint64 `json:"version"`
	// LastActionAt is the time of the last flag write.
	LastActionAt time.Time `json:"lastActionAt,omitzero"`
	// ActionTimes are the flag writes of the last hour, for the budget.
	ActionTimes []time.Time `json:"actionTimes,omitempty"`
	Active      *Incident   `json:"active,omitempty"`
	// History holds resolved incidents, oldest first.
	History []Incident `json:"history,omitempty"`
}

// Clone returns a deep copy of s.
func (s State) Clone() State {
	c := s
	c.ActionTimes = slices.Clone(s.ActionTimes)
	if s.Active != nil {
		a := s.Active.clone()
		c.Active = &a
	}
	c.History = make([]Incident, len(s.History))
	for i, inc := range s.History {
		c.History[i] = inc.clone()
	}
	return c
}

// Incident returns the incident with the given id, active or resolved.
func (s State) Incident(id string) (Incident, bool) {
	if s.Active != nil && s.Active.ID == id {
		return s.Active.clone(), true
	}
	for i := len(s.History) - 1; i >= 0; i-- {
		if s.History[i].ID == id {
			return s.History[i].clone(), true
		}
	}
	return Incident{}, false
}

// BudgetRemaining returns how many flag writes the budget still allows at
// now.
func (s State) BudgetRemaining(svc *policy.Service, now time.Time) int {
	n := 0
	for _, t := range s.ActionTimes {
		if now.Sub(t) < time.Hour {
			n++
		}
	}
	return max(svc.MaxActionsPerHour-n, 0)
}

// DecisionKind classifies a decision.
type DecisionKind string

// The decision kinds.
const (
	// DecisionNone: nothing to do (the reason says why).
	DecisionNone DecisionKind = "none"
	// DecisionAct: write the change.
	DecisionAct DecisionKind = "act"
	// DecisionEscalate: alert people; nothing is written.
	DecisionEscalate DecisionKind = "escalate"
)

// Escalation asks people to take over an incident.
type Escalation struct {
	Service    string       `json:"service"`
	IncidentID string       `json:"incidentId"`
	Cause      Cause        `json:"cause"`
	Summary    string       `json:"summary"`
	Readings   []SLOReading `json:"readings"`
}

// Decision is the outcome of one cycle for one service.
type Decision struct {
	Service    string       `json:"service"`
	At         time.Time    `json:"at"`
	Kind       DecisionKind `json:"kind"`
	IncidentID string       `json:"incidentId,omitempty"`
	Rung       Rung         `json:"rung,omitempty"`
	Reason     string       `json:"reason"`
	// Change is the write (act).
	Change *FlagChange `json:"change,omitempty"`
	// Escalation is the alert (escalate).
	Escalation *Escalation `json:"escalation,omitempty"`
	// Action is the record Commit appends to the incident (act, escalate).
	Action *Action `json:"action,omitempty"`
}
