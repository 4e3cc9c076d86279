package controller

import (
	"testing"
	"time"

	"github.com/tailguard/tailguard/controller/policy"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// loadPolicy loads the example policy and lets the test edit the shop
// service before validating it again.
func loadPolicy(t testing.TB, edit func(s *policy.Service)) *policy.Policy {
	t.Helper()
	p, err := policy.LoadFile("testdata/policy.example.yml")
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(&p.Services[0])
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	return p
}

func shop(t testing.TB, edit func(s *policy.Service)) *policy.Service {
	t.Helper()
	return &loadPolicy(t, edit).Services[0]
}

var (
	legacyConstants = Constants{Base: ms(50), Cap: ms(500), MaxAttempts: 3}
	newConstants    = Constants{Base: ms(100), Cap: 2 * time.Second, MaxAttempts: 6}
)

// upgraded is the flag state right after the upgrade: decorrelated serves
// everything.
func upgraded() FlagState {
	return FlagState{DefaultVariant: "decorrelated", Constants: map[string]Constants{
		"exponential": legacyConstants, "decorrelated": newConstants,
	}}
}

// rolledOut is the flag state with decorrelated at pct percent.
func rolledOut(pct int) FlagState {
	f := upgraded()
	f.Rollout = []VariantWeight{{"decorrelated", pct}, {"exponential", 100 - pct}}
	return f
}

var upgradeCause = Cause{Kind: CauseFlag, FlagKey: "backoff-strategy", Variant: "decorrelated", IncidentID: "inc-1", Confidence: 0.9}

// observe builds an observation of the shop service with the given
// /checkout p99 (seconds): regressed above 0.3, healthy below.
func observe(p99 float64, flags FlagState, opts ...func(*Observation)) Observation {
	verdict := VerdictHealthy
	if p99 > 0.3 {
		verdict = VerdictRegressed
	}
	o := Observation{
		Service: "shop",
		Assessments: []Assessment{
			{SLO: "checkout-latency", Value: p99, Verdict: verdict, Cause: upgradeCause, Onset: t0},
			{SLO: "payments-retries", Value: 0.03, Verdict: VerdictHealthy},
			{SLO: "checkout-errors", Value: 0.0005, Verdict: VerdictHealthy},
			{SLO: "search-latency", Value: 0.12, Verdict: VerdictHealthy},
		},
		Retries: RetryStats{Upstream: "payments", Calls: 15000, Retries: 450, AttemptLatency: ms(40)},
		Flags:   flags,
	}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

func withCheckout(edit func(a *Assessment)) func(*Observation) {
	return func(o *Observation) { edit(&o.Assessments[0]) }
}
