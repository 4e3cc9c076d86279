package backoff_test

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tailguard/tailguard/backoff"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := backoff.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	payments := newRetrier(t, backoff.RetrierConfig{Policy: backoff.MustNew(expoPolicy), Clock: newFakeClock(), Metrics: m, Upstream: "payments"})
	search := newRetrier(t, backoff.RetrierConfig{
		Policy: backoff.MustNew(expoPolicy), Clock: newFakeClock(), Metrics: m, Upstream: "search",
		Budget: budgetFunc(func(error) bool { return false }),
	})
	ctx := context.Background()
	var calls int
	_ = payments.Do(ctx, failing(&calls)) // success at once
	calls = 0
	_ = payments.Do(ctx, failing(&calls, errTransient, errTransient)) // 2 retries: 100ms, 200ms
	calls = 0
	_ = payments.Do(ctx, failing(&calls, repeat(errTransient, 9)...)) // exhausted after 5: 100..800ms
	calls = 0
	_ = payments.Do(ctx, failing(&calls, backoff.Permanent(errTransient))) // permanent
	calls = 0
	_ = search.Do(ctx, failing(&calls, errTransient)) // budget denied
	payments.SetPolicy(backoff.MustNew(backoff.Config{Strategy: backoff.FullJitter, Cap: 0}))
	calls = 0
	_ = payments.Do(ctx, failing(&calls, errTransient)) // full-jitter, one retry of 0s

	want := `
# HELP backoff_attempts_total Attempts made by the retrier, the first attempt of each call included.
# TYPE backoff_attempts_total counter
backoff_attempts_total{strategy="exponential",upstream="payments"} 10
backoff_attempts_total{strategy="exponential",upstream="search"} 1
backoff_attempts_total{strategy="full-jitter",upstream="payments"} 2
# HELP backoff_budget_denied_total Retries refused by the retry budget.
# TYPE backoff_budget_denied_total counter
backoff_budget_denied_total{strategy="exponential",upstream="payments"} 0
backoff_budget_denied_total{strategy="exponential",upstream="search"} 1
backoff_budget_denied_total{strategy="full-jitter",upstream="payments"} 0
# HELP backoff_calls_total Calls (logical operations) finished by the retrier, by result: success, exhausted, permanent, budget_denied, context or max_elapsed.
# TYPE backoff_calls_total counter
backoff_calls_total{result="budget_denied",strategy="exponential",upstream="payments"} 0
backoff_calls_total{result="budget_denied",strategy="exponential",upstream="search"} 1
backoff_calls_total{result="budget_denied",strategy="full-jitter",upstream="payments"} 0
backoff_calls_total{result="context",strategy="exponential",upstream="payments"} 0
backoff_calls_total{result="context",strategy="exponential",upstream="search"} 0
backoff_calls_total{result="context",strategy="full-jitter",upstream="payments"} 0
backoff_calls_total{result="exhausted",strategy="exponential",upstream="payments"} 1
backoff_calls_total{result="exhausted",strategy="exponential",upstream="search"} 0
backoff_calls_total{result="exhausted",strategy="full-jitter",upstream="payments"} 0
backoff_calls_total{result="max_elapsed",strategy="exponential",upstream="payments"} 0
backoff_calls_total{result="max_elapsed",strategy="exponential",upstream="search"} 0
backoff_calls_total{result="max_elapsed",strategy="full-jitter",upstream="payments"} 0
backoff_calls_total{result="permanent",strategy="exponential",upstream="payments"} 1
backoff_calls_total{result="permanent",strategy="exponential",upstream="search"} 0
backoff_calls_total{result="permanent",strategy="full-jitter",upstream="payments"} 0
backoff_calls_total{result="success",strategy="exponential",upstream="payments"} 2
backoff_calls_total{result="success",strategy="exponential",upstream="search"} 0
backoff_calls_total{result="success",strategy="full-jitter",upstream="payments"} 1
# HELP backoff_retries_total Attempts after the first of a call.
# TYPE backoff_retries_total counter
backoff_retries_total{strategy="exponential",upstream="payments"} 6
backoff_retries_total{strategy="exponential",upstream="search"} 0
backoff_retries_total{strategy="full-jitter",upstream="payments"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"backoff_attempts_total", "backoff_budget_denied_total", "backoff_calls_total", "backoff_retries_total"); err != nil {
		t.Error(err)
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "backoff_delay_seconds" {
			continue
		}
		for _, metric := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range metric.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			h := metric.GetHistogram()
			switch labels["strategy"] + "/" + labels["upstream"] {
			case "exponential/payments":
				found = true
				if h.GetSampleCount() != 6 || math.Abs(h.GetSampleSum()-1.8) > 1e-9 {
					t.Errorf("delay histogram: count %d sum %v, want 6 and 1.8", h.GetSampleCount(), h.GetSampleSum())
				}
			case "full-jitter/payments":
				if h.GetSampleCount() != 1 || h.GetSampleSum() != 0 {
					t.Errorf("full-jitter delay histogram: count %d sum %v", h.GetSampleCount(), h.GetSampleSum())
				}
			case "exponential/search":
				if h.GetSampleCount() != 0 {
					t.Errorf("a denied retry was observed as a delay")
				}
			}
		}
	}
	if !found {
		t.Fatal("backoff_delay_seconds{strategy=\"exponential\",upstream=\"payments\"} missing")
	}
	if n := testutil.CollectAndCount(reg, "backoff_delay_seconds"); n != 3 {
		t.Errorf("%d delay series, want 3", n)
	}
}

func TestNewMetricsRegistrationConflict(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := backoff.NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := backoff.NewMetrics(reg); err == nil {
		t.Fatal("registering the metrics twice succeeded")
	}
	if _, err := backoff.NewMetrics(nil); err != nil {
		t.Fatalf("unregistered metrics: %v", err)
	}
}
