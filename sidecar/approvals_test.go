package sidecar

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/tailguard/tailguard/controller"
	"github.com/tailguard/tailguard/controller/policy"
	"github.com/tailguard/tailguard/flags/kube"
)

// TestApplyApprovals: a recorded approval applies to the pending plan of
// its incident made before it, once; not to another incident's plan, not
// to a plan made after it, not after approvalTTL.
func TestApplyApprovals(t *testing.T) {
	pol, err := policy.LoadFile("../controller/testdata/policy.example.yml")
	if err != nil {
		t.Fatal(err)
	}
	pol.Services[0].Mode = policy.ModePropose
	if err := pol.Validate(); err != nil {
		t.Fatal(err)
	}
	initial := controller.FlagState{DefaultVariant: "decorrelated", Constants: map[string]controller.Constants{
		"exponential":  {Base: 50 * time.Millisecond, Cap: 500 * time.Millisecond, MaxAttempts: 3},
		"decorrelated": {Base: 100 * time.Millisecond, Cap: 2 * time.Second, MaxAttempts: 6},
	}}
	mem := controller.NewMemoryFlags("backoff-strategy", "backoff-constants", initial)
	ctrl, err := controller.New(controller.Config{Policy: pol, Writer: mem})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	cause := controller.Cause{Kind: controller.CauseFlag, FlagKey: "backoff-strategy", Variant: "decorrelated", IncidentID: "inc-1", Confidence: 0.9}
	obs := controller.Observation{
		Service: "shop",
		Assessments: []controller.Assessment{
			{SLO: "checkout-latency", Value: 0.45, Verdict: controller.VerdictRegressed, Cause: cause, Onset: t0},
			{SLO: "payments-retries", Value: 0.03, Verdict: controller.VerdictHealthy},
			{SLO: "checkout-errors", Value: 0.0005, Verdict: controller.VerdictHealthy},
			{SLO: "search-latency", Value: 0.12, Verdict: controller.VerdictHealthy},
		},
		Retries: controller.RetryStats{Upstream: "payments", Calls: 15000, Retries: 450, AttemptLatency: 40 * time.Millisecond},
		Flags:   initial,
	}
	ctx := context.Background()
	var plan controller.Plan
	for m := 0; m < 30 && plan.ID == ""; m++ {
		if _, err := ctrl.Step(ctx, obs, t0.Add(time.Duration(m)*time.Minute)); err != nil {
			t.Fatal(err)
		}
		for _, p := range ctrl.Plans() {
			if p.Status == controller.PlanPending {
				plan = p
			}
		}
	}
	if plan.ID == "" {
		t.Fatal("no pending plan in propose mode")
	}
	log := slog.New(slog.DiscardHandler)
	at := plan.CreatedAt.Add(time.Minute)
	for _, tc := range []struct {
		name string
		as   []kube.Approval
		now  time.Time
	}{
		{"another incident", []kube.Approval{{Incident: "inc-9", Approver: "operator:alice", At: at}}, at},
		{"made before the plan", []kube.Approval{{Incident: plan.IncidentID, Approver: "operator:alice", At: plan.CreatedAt.Add(-time.Second)}}, at},
		{"another plan", []kube.Approval{{Incident: plan.IncidentID, Plan: "other", Approver: "operator:alice", At: at}}, at},
		{"expired", []kube.Approval{{Incident: plan.IncidentID, Approver: "operator:alice", At: at}}, at.Add(approvalTTL + time.Second)},
	} {
		if got := applyApprovals(ctx, ctrl, "shop", tc.as, tc.now, log); len(got) != 0 {
			t.Errorf("%s: applied %v", tc.name, got)
		}
	}
	good := []kube.Approval{{Incident: plan.IncidentID, Approver: "operator:alice", At: at}}
	if got := applyApprovals(ctx, ctrl, "shop", good, at, log); !slices.Equal(got, []string{plan.ID}) {
		t.Fatalf("applied %v, want [%s]", got, plan.ID)
	}
	if got := applyApprovals(ctx, ctrl, "shop", good, at, log); len(got) != 0 {
		t.Errorf("applied twice: %v", got)
	}
	if n := len(mem.Changes()); n != 1 {
		t.Errorf("%d writes, want 1", n)
	}
}
