package controller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tailguard/tailguard/controller/policy"
)

// Notifier hands escalations to people, for example as an Alertmanager
// alert or a Grafana annotation.
type Notifier interface {
	Escalate(ctx context.Context, e Escalation) error
}

// Config configures a Controller.
type Config struct {
	// Policy is the validated policy. Required.
	Policy *policy.Policy
	// Writer applies flag changes. Required.
	Writer FlagWriter
	// Notifier receives escalations. Optional: without one, escalations
	// are only returned by Step and recorded.
	Notifier Notifier
	// Actor identifies this controller in the journal, for example
	// "tailguard/shop-7f9c". Default "tailguard".
	Actor string
	// Logger logs decisions. Optional.
	Logger *slog.Logger
	// Registerer registers the controller's metrics. Optional.
	Registerer prometheus.Registerer
	// States keeps the services' states across restarts. Optional: without
	// it a restarted controller resumes its incidents from the flag
	// journal alone (when the writer is a JournalReader).
	States StateStore
}

// PlanStatus is the status of a proposed action.
type PlanStatus string

// The plan statuses.
const (
	PlanPending   PlanStatus = "pending"
	PlanApproved  PlanStatus = "approved"
	PlanRejected  PlanStatus = "rejected"
	PlanWithdrawn PlanStatus = "withdrawn"
)

// Plan is an action proposed in propose mode, applied once approved. Its
// ID is the step of the action's idempotency key (StepOf), the same on
// every replica; a plan whose change is re-decided keeps its ID.
type Plan struct {
	ID         string     `json:"id"`
	Service    string     `json:"service"`
	IncidentID string     `json:"incidentId"`
	CreatedAt  time.Time  `json:"createdAt"`
	UpdatedAt  time.Time  `json:"updatedAt"`
	Status     PlanStatus `json:"status"`
	Decision   Decision   `json:"decision"`
	// BaseActions is the number of actions the incident had when the plan
	// was made; a plan is stale once another action was recorded.
	BaseActions int       `json:"baseActions"`
	Note        string    `json:"note,omitempty"`
	DecidedBy   string    `json:"decidedBy,omitempty"`
	DecidedAt   time.Time `json:"decidedAt,omitzero"`
}

// Errors of the plan API.
var (
	ErrUnknownPlan     = errors.New("unknown plan")
	ErrPlanNotPending  = errors.New("plan is not pending")
	ErrUnknownIncident = errors.New("unknown incident")
	ErrUnknownService  = errors.New("service not in policy")
)

// maxPlans and maxObserved bound the plans and observe-mode decisions kept.
const (
	maxPlans    = 200
	maxObserved = 100
)

// Controller runs Decide for each observation, applies decisions according
// to the service's mode and keeps the state, plans and records. It is safe
// for concurrent use.
type Controller struct {
	pol      *policy.Policy
	writer   FlagWriter
	notifier Notifier
	actor    string
	log      *slog.Logger
	metrics  *metrics

	store StateStore

	mu       sync.Mutex
	states   map[string]State
	plans    map[string]*Plan
	observed map[string][]Decision
}

// New returns a controller for cfg.
func New(cfg Config) (*Controller, error) {
	if cfg.Policy == nil {
		return nil, errors.New("controller: policy is required")
	}
	if err := cfg.Policy.Validate(); err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	if cfg.Writer == nil {
		return nil, errors.New("controller: writer is required")
	}
	c := &Controller{
		pol: cfg.Policy, writer: cfg.Writer, notifier: cfg.Notifier, actor: cmp.Or(cfg.Actor, "tailguard"),
		log: cfg.Logger, states: map[string]State{}, plans: map[string]*Plan{}, observed: map[string][]Decision{},
		store: cfg.States,
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	c.metrics = m
	for _, s := range cfg.Policy.Services {
		c.states[s.Name] = State{Service: s.Name}
		m.budget.WithLabelValues(s.Name).Set(float64(s.MaxActionsPerHour))
	}
	if c.store != nil {
		saved, err := c.store.LoadStates(context.Background())
		if err != nil {
			return nil, fmt.Errorf("controller: %w", err)
		}
		for _, st := range saved {
			if _, ok := cfg.Policy.Service(st.Service); ok {
				c.states[st.Service] = st.Clone()
				c.exportTuned(st.Service)
			}
		}
	}
	return c, nil
}

// exportTuned sets tailguard_tuned_constant from the last tune of the
// service's active incident, whoever wrote it (this process, another
// replica, or this replica before a restart); the caller holds c.mu.
func (c *Controller) exportTuned(service string) {
	inc := c.states[service].Active
	if inc == nil {
		return
	}
	for i := len(inc.Actions) - 1; i >= 0; i-- {
		a := inc.Actions[i]
		if a.Rung == RungTune && a.Mutation != nil && a.Mutation.Constants != nil {
			c.metrics.setTuned(service, effective(a.Mutation.Strategy, *a.Mutation.Constants))
			return
		}
	}
}

// persist saves a service's state; the caller holds c.mu. A failure is
// logged: the journal still guards against repeated and lost writes.
func (c *Controller) persist(ctx context.Context, service string) {
	if c.store == nil {
		return
	}
	if err := c.store.SaveState(context.WithoutCancel(ctx), c.states[service].Clone()); err != nil {
		c.log.Warn("controller state not saved", "service", service, "err", err)
	}
}

// Step decides on one observation at now and, depending on the service's
// mode, applies the decision (auto), stores it as a plan (propose) or only
// records it (observe: nothing is written and no escalation is sent; the
// decisions show in Explain). In propose mode escalations are sent at once:
// they write nothing. An error from the writer or notifier is returned with
// the decision; the action is then decided and tried again on the next
// Step. Step holds the controller's lock while writing.
func (c *Controller) Step(ctx context.Context, obs Observation, now time.Time) (Decision, error) {
	svc, ok := c.pol.Service(obs.Service)
	if !ok {
		return Decision{}, fmt.Errorf("step %q: %w", obs.Service, ErrUnknownService)
	}
	if jr, ok := c.writer.(JournalReader); ok && obs.Journal == nil {
		js, err := jr.Journaled(ctx, svc.Name)
		if err != nil {
			// Without the journal a replica could repeat another's action:
			// decide nothing this cycle.
			return Decision{Service: svc.Name, At: now, Kind: DecisionNone, Reason: "journal unreadable: " + err.Error()},
				fmt.Errorf("step %q: read journal: %w", svc.Name, err)
		}
		obs.Journal = js
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	d, next := Decide(svc, c.states[svc.Name], obs, now)
	c.states[svc.Name] = next
	defer func() {
		c.metrics.budget.WithLabelValues(svc.Name).Set(float64(c.states[svc.Name].BudgetRemaining(svc, now)))
		c.exportTuned(svc.Name)
		c.persist(ctx, svc.Name)
	}()
	log := c.log.With("service", svc.Name, "mode", svc.Mode, "decision", d.Kind, "incident", d.IncidentID, "rung", d.Rung)
	if d.Kind == DecisionNone {
		log.Debug("no action", "reason", d.Reason)
		if svc.Mode == policy.ModePropose && d.Rung == "" {
			c.withdraw(svc.Name, "", now, "no action proposed any more: "+d.Reason)
		}
		return d, nil
	}
	switch svc.Mode {
	case policy.ModeObserve:
		c.observe(svc.Name, d)
		log.Info("observe mode: not acting", "reason", d.Reason, "key", d.Action.IdempotencyKey)
		return d, nil
	case policy.ModePropose:
		if d.Kind == DecisionAct {
			c.propose(svc.Name, d, now)
			log.Info("proposed", "plan", d.Change.IdempotencyKey, "reason", d.Reason)
			return d, nil
		}
	}
	return d, c.apply(ctx, svc, d, "", now, log)
}

// apply writes (or notifies) d and commits it. The caller holds c.mu.
func (c *Controller) apply(ctx context.Context, svc *policy.Service, d Decision, approver string, now time.Time, log *slog.Logger) (err error) {
	// The write is the "act" span of the caller's cycle trace, from the
	// caller's tracer provider (a no-op one when the cycle is not traced).
	ctx, span := trace.SpanFromContext(ctx).TracerProvider().Tracer("github.com/tailguard/tailguard/controller").Start(ctx, "act",
		trace.WithAttributes(attribute.String("rung", string(d.Rung)), attribute.String("incident", d.IncidentID)))
	defer func() {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	status := StatusNotified
	switch d.Kind {
	case DecisionAct:
		ch := *d.Change
		ch.Actor = c.actor
		if inc := c.states[svc.Name].Active; inc != nil && d.Action != nil {
			rec := Record{Incident: inc.ID, Cause: inc.Cause, OpenedAt: inc.OpenedAt, Action: *d.Action}
			rec.Action.At, rec.Action.Actor, rec.Action.Approver = now, c.actor, approver
			ch.Record = &rec
		}
		if approver != "" {
			ch.Reason += " (approved by " + approver + ")"
		}
		applied, err := c.writer.Apply(ctx, ch)
		if err != nil {
			c.metrics.actions.WithLabelValues(string(d.Rung), "failed").Inc()
			log.Error("flag write", "key", ch.IdempotencyKey, "err", err)
			return fmt.Errorf("apply %s: %w", ch.IdempotencyKey, err)
		}
		status = StatusApplied
		if !applied {
			status = StatusAppliedElsewhere
		}
	case DecisionEscalate:
		if c.notifier != nil {
			if err := c.notifier.Escalate(ctx, *d.Escalation); err != nil {
				c.metrics.actions.WithLabelValues(string(d.Rung), "failed").Inc()
				return fmt.Errorf("escalate %s: %w", d.IncidentID, err)
			}
		}
	}
	next, err := Commit(c.states[svc.Name], d, status, c.actor, approver, now)
	if err != nil {
		return err
	}
	c.states[svc.Name] = next
	result := map[ApplyStatus]string{StatusApplied: "applied", StatusAppliedElsewhere: "duplicate", StatusNotified: "notified"}[status]
	c.metrics.actions.WithLabelValues(string(d.Rung), result).Inc()
	if d.Rung == RungTune && d.Change != nil && d.Change.Mutation.Constants != nil {
		c.metrics.setTuned(svc.Name, effective(d.Change.Mutation.Strategy, *d.Change.Mutation.Constants))
	}
	log.Info("action", "status", status, "key", d.Action.IdempotencyKey, "reason", d.Reason)
	return nil
}

func (c *Controller) observe(service string, d Decision) {
	list := c.observed[service]
	if n := len(list); n > 0 && list[n-1].Action.IdempotencyKey == d.Action.IdempotencyKey {
		list[n-1] = d
		return
	}
	c.metrics.actions.WithLabelValues(string(d.Rung), "observed").Inc()
	list = append(list, d)
	if len(list) > maxObserved {
		list = slices.Delete(list, 0, len(list)-maxObserved)
	}
	c.observed[service] = list
}

func (c *Controller) propose(service string, d Decision, now time.Time) {
	id := StepOf(d.Change.IdempotencyKey)
	c.withdraw(service, id, now, "superseded by "+id)
	if p, ok := c.plans[id]; ok && p.Status == PlanPending {
		p.Decision, p.UpdatedAt = d, now
		return
	}
	base := 0
	if inc := c.states[service].Active; inc != nil {
		base = len(inc.Actions)
	}
	c.plans[id] = &Plan{ID: id, Service: service, IncidentID: d.IncidentID, CreatedAt: now, UpdatedAt: now,
		Status: PlanPending, Decision: d, BaseActions: base}
	c.metrics.actions.WithLabelValues(string(d.Rung), "proposed").Inc()
	c.prunePlans()
}

// withdraw marks the service's pending plans other than keep withdrawn.
func (c *Controller) withdraw(service, keep string, now time.Time, note string) {
	for id, p := range c.plans {
		if p.Service == service && p.Status == PlanPending && id != keep {
			p.Status, p.Note, p.DecidedAt = PlanWithdrawn, note, now
		}
	}
}

func (c *Controller) prunePlans() {
	if len(c.plans) <= maxPlans {
		return
	}
	var done []*Plan
	for _, p := range c.plans {
		if p.Status != PlanPending {
			done = append(done, p)
		}
	}
	slices.SortFunc(done, func(a, b *Plan) int { return a.UpdatedAt.Compare(b.UpdatedAt) })
	for _, p := range done[:max(0, min(len(done), len(c.plans)-maxPlans))] {
		delete(c.plans, p.ID)
	}
}

// Plans returns all plans, pending first, then newest first.
func (c *Controller) Plans() []Plan {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Plan, 0, len(c.plans))
	for _, p := range c.plans {
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b Plan) int {
		if (a.Status == PlanPending) != (b.Status == PlanPending) {
			if a.Status == PlanPending {
				return -1
			}
			return 1
		}
		return cmp.Or(b.UpdatedAt.Compare(a.UpdatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// Approve applies a pending plan at now on behalf of approver. The plan
// must still match the incident (no action recorded since) and the
// cooldown and action budget must allow it.
func (c *Controller) Approve(ctx context.Context, planID, approver string, now time.Time) (Decision, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.plans[planID]
	if !ok {
		return Decision{}, fmt.Errorf("approve %s: %w", planID, ErrUnknownPlan)
	}
	if p.Status != PlanPending {
		return p.Decision, fmt.Errorf("approve %s: %w (%s)", planID, ErrPlanNotPending, p.Status)
	}
	svc, ok := c.pol.Service(p.Service)
	if !ok {
		return p.Decision, fmt.Errorf("approve %s: service %q: %w", planID, p.Service, ErrUnknownService)
	}
	st := c.states[svc.Name]
	if st.Active == nil || st.Active.ID != p.IncidentID || len(st.Active.Actions) != p.BaseActions {
		p.Status, p.Note, p.DecidedAt = PlanWithdrawn, "stale: the incident changed since the plan was made", now
		return p.Decision, fmt.Errorf("approve %s: %w: incident changed since the plan was made", planID, ErrStale)
	}
	if ok, why := (&cycle{svc: svc, now: now}).gate(&st); !ok {
		return p.Decision, fmt.Errorf("approve %s: %s", planID, why)
	}
	log := c.log.With("service", svc.Name, "plan", planID, "approver", approver)
	if err := c.apply(ctx, svc, p.Decision, approver, now, log); err != nil {
		return p.Decision, err
	}
	c.persist(ctx, svc.Name)
	p.Status, p.DecidedBy, p.DecidedAt = PlanApproved, approver, now
	return p.Decision, nil
}

// Reject rejects a pending plan. The controller proposes it again on a
// later cycle if the situation still calls for it.
func (c *Controller) Reject(planID, by string, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.plans[planID]
	if !ok {
		return fmt.Errorf("reject %s: %w", planID, ErrUnknownPlan)
	}
	if p.Status != PlanPending {
		return fmt.Errorf("reject %s: %w (%s)", planID, ErrPlanNotPending, p.Status)
	}
	p.Status, p.DecidedBy, p.DecidedAt = PlanRejected, by, now
	return nil
}

// State returns a copy of a service's state, for persistence or display.
func (c *Controller) State(service string) State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.states[service].Clone()
}

// SetState replaces a service's state, for example with one persisted
// before a restart.
func (c *Controller) SetState(st State) error {
	if _, ok := c.pol.Service(st.Service); !ok {
		return fmt.Errorf("set state %q: %w", st.Service, ErrUnknownService)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.states[st.Service] = st.Clone()
	c.persist(context.Background(), st.Service)
	return nil
}

// IncidentSummary is one line of the incident list.
type IncidentSummary struct {
	ID         string    `json:"id"`
	Service    string    `json:"service"`
	Cause      Cause     `json:"cause"`
	Phase      Phase     `json:"phase"`
	Rung       Rung      `json:"rung"`
	Actions    int       `json:"actions"`
	OpenedAt   time.Time `json:"openedAt"`
	ResolvedAt time.Time `json:"resolvedAt,omitzero"`
}

// Incidents lists active and resolved incidents, newest first.
func (c *Controller) Incidents() []IncidentSummary {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []IncidentSummary
	add := func(inc *Incident) {
		out = append(out, IncidentSummary{ID: inc.ID, Service: inc.Service, Cause: inc.Cause, Phase: inc.Phase, Rung: inc.Rung,
			Actions: len(inc.Actions), OpenedAt: inc.OpenedAt, ResolvedAt: inc.ResolvedAt})
	}
	for _, st := range c.states {
		if st.Active != nil {
			add(st.Active)
		}
		for i := range st.History {
			add(&st.History[i])
		}
	}
	slices.SortFunc(out, func(a, b IncidentSummary) int { return cmp.Or(b.OpenedAt.Compare(a.OpenedAt), cmp.Compare(a.ID, b.ID)) })
	return out
}

// Explanation is everything recorded about an incident: its actions with
// their model inputs and outputs, expected and observed effects, pending
// plans and, in observe mode, the decisions that were not applied.
type Explanation struct {
	Service  string      `json:"service"`
	Mode     policy.Mode `json:"mode"`
	Incident *Incident   `json:"incident,omitempty"`
	Plans    []Plan      `json:"plans,omitempty"`
	Observed []Decision  `json:"observed,omitempty"`
}

// Explain returns the record of an incident.
func (c *Controller) Explain(incidentID string) (Explanation, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, svc := range c.pol.Services {
		e := Explanation{Service: svc.Name, Mode: svc.Mode}
		if inc, ok := c.states[svc.Name].Incident(incidentID); ok {
			e.Incident = &inc
		}
		for _, p := range c.plans {
			if p.IncidentID == incidentID {
				e.Plans = append(e.Plans, *p)
			}
		}
		slices.SortFunc(e.Plans, func(a, b Plan) int { return a.CreatedAt.Compare(b.CreatedAt) })
		for _, d := range c.observed[svc.Name] {
			if d.IncidentID == incidentID {
				e.Observed = append(e.Observed, d)
			}
		}
		if e.Incident != nil || len(e.Plans) > 0 || len(e.Observed) > 0 {
			return e, nil
		}
	}
	return Explanation{}, fmt.Errorf("explain %s: %w", incidentID, ErrUnknownIncident)
}
