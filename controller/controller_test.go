package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tailguard/tailguard/controller/policy"

	goldenfile "github.com/tailguard/tailguard/internal/golden"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func newController(t *testing.T, pol *policy.Policy, w FlagWriter, actor string, reg prometheus.Registerer) *Controller {
	t.Helper()
	c, err := New(Config{Policy: pol, Writer: w, Actor: actor, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func memFlags(f FlagState) *MemoryFlags {
	return NewMemoryFlags("backoff-strategy", "backoff-constants", f)
}

func TestNewValidates(t *testing.T) {
	pol := loadPolicy(t, nil)
	if _, err := New(Config{Policy: pol}); err == nil {
		t.Error("no writer accepted")
	}
	if _, err := New(Config{Writer: memFlags(upgraded())}); err == nil {
		t.Error("no policy accepted")
	}
	pol.Services[0].MaxActionsPerHour = 0
	if _, err := New(Config{Policy: pol, Writer: memFlags(upgraded())}); err == nil || !strings.Contains(err.Error(), "maxActionsPerHour") {
		t.Errorf("invalid policy: %v", err)
	}
	if _, err := newController(t, loadPolicy(t, nil), memFlags(upgraded()), "a", nil).Step(context.Background(), Observation{Service: "cart"}, t0); !errors.Is(err, ErrUnknownService) {
		t.Errorf("unknown service: %v", err)
	}
}

func TestModeObserve(t *testing.T) {
	pol := loadPolicy(t, func(s *policy.Service) { s.Mode = policy.ModeObserve })
	mf := memFlags(upgraded())
	c := newController(t, pol, mf, "a", nil)
	ctx := context.Background()
	for i := range 5 {
		d, err := c.Step(ctx, observe(0.51, mf.State()), t0.Add(time.Duration(i)*time.Minute))
		if err != nil || d.Kind != DecisionAct || d.Rung != RungTune {
			t.Fatalf("step %d: %v %s %s", i, err, d.Kind, d.Rung)
		}
	}
	if n := len(mf.Changes()); n != 0 {
		t.Fatalf("observe mode wrote %d changes", n)
	}
	e, err := c.Explain("inc-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Observed) != 1 || e.Incident == nil || len(e.Incident.Actions) != 0 {
		t.Errorf("explanation: %d observed, incident %+v", len(e.Observed), e.Incident)
	}
}

func TestModePropose(t *testing.T) {
	pol := loadPolicy(t, func(s *policy.Service) { s.Mode = policy.ModePropose })
	mf := memFlags(upgraded())
	c := newController(t, pol, mf, "a", nil)
	ctx := context.Background()
	now := t0
	for range 3 {
		if _, err := c.Step(ctx, observe(0.51, mf.State()), now); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Minute)
	}
	plans := c.Plans()
	if len(plans) != 1 || plans[0].Status != PlanPending || plans[0].ID != "inc-1/tune/1" {
		t.Fatalf("plans %+v", plans)
	}
	if len(mf.Changes()) != 0 {
		t.Fatal("propose mode wrote before approval")
	}
	if _, err := c.Approve(ctx, "nope", "alice", now); !errors.Is(err, ErrUnknownPlan) {
		t.Errorf("unknown plan: %v", err)
	}
	d, err := c.Approve(ctx, plans[0].ID, "alice", now)
	if err != nil {
		t.Fatal(err)
	}
	if ch := mf.Changes(); len(ch) != 1 || StepOf(ch[0].IdempotencyKey) != "inc-1/tune/1" || !strings.Contains(ch[0].Reason, "approved by alice") {
		t.Fatalf("changes %+v", ch)
	}
	if _, err := c.Approve(ctx, plans[0].ID, "bob", now); !errors.Is(err, ErrPlanNotPending) {
		t.Errorf("second approval: %v", err)
	}
	st := c.State("shop")
	a := st.Active.Actions[0]
	if a.Approver != "alice" || !a.At.Equal(now) || a.IdempotencyKey != d.Change.IdempotencyKey {
		t.Errorf("recorded action %+v", a)
	}
	// Verification runs from the approval time.
	d, _ = c.Step(ctx, observe(0.51, mf.State()), now.Add(9*time.Minute))
	if !strings.Contains(d.Reason, "verifying tune") {
		t.Errorf("before the window: %s", d.Reason)
	}
	// No improvement: the tune's undo is proposed and approved, then the
	// shrink is proposed; the SLO then recovers and the plan is withdrawn.
	now = now.Add(10 * time.Minute)
	if d, _ = c.Step(ctx, observe(0.51, mf.State()), now); d.Rung != RungUndo {
		t.Fatalf("got %s: %s", d.Rung, d.Reason)
	}
	if _, err := c.Approve(ctx, "inc-1/undo/1", "alice", now); err != nil {
		t.Fatal(err)
	}
	now = now.Add(5 * time.Minute)
	if d, _ = c.Step(ctx, observe(0.51, mf.State()), now); d.Rung != RungShrink {
		t.Fatalf("got %s: %s", d.Rung, d.Reason)
	}
	if err := c.Reject("inc-1/shrink/1", "bob", now); err != nil {
		t.Fatal(err)
	}
	if d, _ = c.Step(ctx, observe(0.51, mf.State()), now.Add(time.Minute)); d.Rung != RungShrink {
		t.Fatalf("got %s: %s", d.Rung, d.Reason)
	}
	if p := c.Plans()[0]; p.Status != PlanPending || p.ID != "inc-1/shrink/1" {
		t.Fatalf("re-proposed plan %+v", p)
	}
	if _, err := c.Step(ctx, observe(0.39, mf.State()), now.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if p := c.Plans(); p[0].Status != PlanWithdrawn && p[1].Status != PlanWithdrawn {
		t.Errorf("plan not withdrawn: %+v", p)
	}
	if _, err := c.Approve(ctx, "inc-1/shrink/1", "alice", now.Add(3*time.Minute)); !errors.Is(err, ErrPlanNotPending) {
		t.Errorf("approving a withdrawn plan: %v", err)
	}
	var buf bytes.Buffer
	if err := RenderPlans(&buf, c.Plans()); err != nil || !strings.Contains(buf.String(), "inc-1/shrink/1") {
		t.Errorf("plans table: %v\n%s", err, buf.String())
	}
}

type failingWriter struct {
	fail  bool
	inner *MemoryFlags
}

func (f *failingWriter) Apply(ctx context.Context, ch FlagChange) (bool, error) {
	if f.fail {
		return false, errors.New("flag file: permission denied")
	}
	return f.inner.Apply(ctx, ch)
}

func TestWriteErrorRetries(t *testing.T) {
	mf := memFlags(upgraded())
	w := &failingWriter{fail: true, inner: mf}
	reg := prometheus.NewPedanticRegistry()
	c := newController(t, loadPolicy(t, nil), w, "a", reg)
	ctx := context.Background()
	if _, err := c.Step(ctx, observe(0.51, mf.State()), t0); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("got %v", err)
	}
	if n := len(c.State("shop").Active.Actions); n != 0 {
		t.Fatal("failed write recorded as an action")
	}
	w.fail = false
	d, err := c.Step(ctx, observe(0.51, mf.State()), t0.Add(time.Minute))
	if err != nil || StepOf(d.Change.IdempotencyKey) != "inc-1/tune/1" {
		t.Fatalf("retry: %v %+v", err, d.Change)
	}
	if got := testutil.ToFloat64(c.metrics.actions.WithLabelValues("tune", "failed")); got != 1 {
		t.Errorf("failed actions %v", got)
	}
	if got := testutil.ToFloat64(c.metrics.actions.WithLabelValues("tune", "applied")); got != 1 {
		t.Errorf("applied actions %v", got)
	}
	if got := testutil.ToFloat64(c.metrics.tuned.WithLabelValues("shop", "base_seconds")); got != 0.05 {
		t.Errorf("tuned base %v", got)
	}
	if got := testutil.ToFloat64(c.metrics.budget.WithLabelValues("shop")); got != 3 {
		t.Errorf("budget remaining %v", got)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n == 0 {
		t.Errorf("gather: %d %v", n, err)
	}
}

type notifier struct{ got []Escalation }

func (n *notifier) Escalate(_ context.Context, e Escalation) error {
	n.got = append(n.got, e)
	return nil
}

func TestEscalationNotifies(t *testing.T) {
	pol := loadPolicy(t, func(s *policy.Service) { s.Backoff = policy.Backoff{}; s.Flags.Strategy.Rollout = []int{100} })
	mf := memFlags(upgraded())
	n := &notifier{}
	c, err := New(Config{Policy: pol, Writer: mf, Notifier: n})
	if err != nil {
		t.Fatal(err)
	}
	now := t0
	for range 60 {
		if _, err := c.Step(context.Background(), observe(0.51, mf.State()), now); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Minute)
	}
	if len(n.got) != 1 || n.got[0].IncidentID != "inc-1" || !strings.Contains(n.got[0].Summary, "automatic mitigation exhausted") {
		t.Fatalf("escalations %+v", n.got)
	}
	if got := c.Incidents(); len(got) != 1 || got[0].Phase != PhaseEscalated {
		t.Errorf("incidents %+v", got)
	}
}

// TestReplicas runs three controllers on one flag store: each rung is
// written exactly once, and every replica records the same actions.
func TestReplicas(t *testing.T) {
	pol := loadPolicy(t, nil)
	mf := memFlags(upgraded())
	var cs []*Controller
	for _, name := range []string{"a", "b", "c"} {
		cs = append(cs, newController(t, pol, mf, "tailguard/"+name, nil))
	}
	ctx := context.Background()
	now := t0
	late := newController(t, pol, mf, "tailguard/late", nil)
	for m := range 60 {
		obs := observe(0.51, mf.State())
		for i, c := range cs {
			// Replicas see the cycle at slightly different times.
			if _, err := c.Step(ctx, obs, now.Add(time.Duration(i)*7*time.Second)); err != nil {
				t.Fatal(err)
			}
		}
		// A replica started after the shrink replays the ladder without
		// writing anything new.
		if m >= 15 {
			if _, err := late.Step(ctx, obs, now); err != nil {
				t.Fatal(err)
			}
		}
		now = now.Add(time.Minute)
	}
	var keys []string
	for _, ch := range mf.Changes() {
		keys = append(keys, StepOf(ch.IdempotencyKey))
	}
	want := []string{"inc-1/tune/1", "inc-1/undo/1", "inc-1/shrink/1", "inc-1/undo/2"}
	if !slices.Equal(keys, want) {
		t.Fatalf("changes %v, want %v", keys, want)
	}
	for _, c := range cs {
		var got []string
		for _, a := range c.State("shop").Active.Actions {
			got = append(got, StepOf(a.IdempotencyKey))
		}
		if len(got) < len(want) || !slices.Equal(got[:len(want)], want) {
			t.Errorf("replica actions %v", got)
		}
	}
	for _, a := range late.State("shop").Active.Actions {
		if a.Status == StatusApplied {
			t.Errorf("late replica wrote %s", a.IdempotencyKey)
		}
	}
	a := cs[0].State("shop").Active.Actions[0]
	b := cs[1].State("shop").Active.Actions[0]
	if a.Status != StatusApplied || b.Status != StatusAppliedElsewhere {
		t.Errorf("statuses %s %s", a.Status, b.Status)
	}
}

// TestExplainGolden renders the record of a whole incident (tune twice,
// hold, resolve) as text and JSON.
func TestExplainGolden(t *testing.T) {
	mf := memFlags(upgraded())
	c := newController(t, loadPolicy(t, nil), mf, "tailguard/a", nil)
	ctx := context.Background()
	now := t0
	p99 := []float64{0.51, 0.42, 0.35}
	for i := range 60 {
		v := p99[min(i/10, 2)]
		if _, err := c.Step(ctx, observe(v, mf.State()), now); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Minute)
	}
	e, err := c.Explain("inc-1")
	if err != nil {
		t.Fatal(err)
	}
	var txt bytes.Buffer
	if err := RenderExplanation(&txt, e); err != nil {
		t.Fatal(err)
	}
	var js bytes.Buffer
	if err := RenderJSON(&js, e); err != nil {
		t.Fatal(err)
	}
	var back Explanation
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("JSON does not decode: %v", err)
	}
	if back.Incident == nil || len(back.Incident.Actions) != len(e.Incident.Actions) ||
		*back.Incident.Actions[0].Mutation.Constants != *e.Incident.Actions[0].Mutation.Constants {
		t.Error("JSON round trip lost the actions")
	}
	var list bytes.Buffer
	if err := RenderIncidents(&list, c.Incidents()); err != nil {
		t.Fatal(err)
	}
	var dec bytes.Buffer
	d, _ := c.Step(ctx, observe(0.34, mf.State()), now)
	if err := RenderDecision(&dec, d); err != nil {
		t.Fatal(err)
	}
	out := txt.String() + "\n" + list.String() + "\n" + dec.String()
	goldenfile.Check(t, "testdata/explain.golden", []byte(out), *update)
	if _, err := c.Explain("inc-404"); !errors.Is(err, ErrUnknownIncident) {
		t.Errorf("unknown incident: %v", err)
	}
}

func TestStateRoundTrip(t *testing.T) {
	mf := memFlags(upgraded())
	c := newController(t, loadPolicy(t, nil), mf, "a", nil)
	if _, err := c.Step(context.Background(), observe(0.51, mf.State()), t0); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(c.State("shop"))
	if err != nil {
		t.Fatal(err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	c2 := newController(t, loadPolicy(t, nil), mf, "b", nil)
	if err := c2.SetState(st); err != nil {
		t.Fatal(err)
	}
	// The restarted replica verifies the action it did not take.
	d, err := c2.Step(context.Background(), observe(0.51, mf.State()), t0.Add(10*time.Minute))
	if err != nil || d.Rung != RungUndo {
		t.Fatalf("after restore: %v %s %s", err, d.Rung, d.Reason)
	}
}
