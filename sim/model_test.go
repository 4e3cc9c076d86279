package sim

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/backoff"
	"github.com/tailguard/tailguard/sim/scenarios"
	"github.com/tailguard/tailguard/sim/service"
)

// modelStats summarises the requests of one policy.
type modelStats struct {
	p99, retryRatio, brownoutSuccess float64
	search                           []time.Duration
}

// simulateStory runs the story's service model (no flags, no scraping)
// under one policy: 20 minutes of normal traffic, then a 10-minute
// brown-out like the story's.
func simulateStory(t *testing.T, sc *Scenario, pol backoff.Config) modelStats {
	t.Helper()
	bo := sc.Events[slices.IndexFunc(sc.Events, func(e Event) bool { return e.Brownout != nil })].Brownout
	short := *sc
	short.Events = []Event{{At: model.Duration(20 * time.Minute), Brownout: &BrownoutEvent{
		Duration: model.Duration(10 * time.Minute), Down: bo.Down, Up: bo.Up, FailureProbability: bo.FailureProbability}}}
	brownFrom := sc.Start.Add(20 * time.Minute)
	var lat []time.Duration
	var st modelStats
	var calls, retries, brown, brownOK float64
	cfg := serviceConfig(&short, sc.Seed, pol, nil)
	cfg.Observe = func(r service.Record) {
		switch {
		case r.Endpoint == "/search":
			st.search = append(st.search, r.Latency)
		case r.Start.Before(brownFrom):
			lat = append(lat, r.Latency)
			calls++
			retries += float64(r.Attempts - 1)
		default:
			brown++
			if r.Code == 200 {
				brownOK++
			}
		}
	}
	svc, err := service.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Advance(context.Background(), brownFrom.Add(10*time.Minute)); err != nil {
		t.Fatal(err)
	}
	slices.Sort(lat)
	st.p99 = lat[len(lat)*99/100].Seconds()
	st.retryRatio = retries / calls
	st.brownoutSuccess = brownOK / brown
	return st
}

// TestStoryModelShape checks that the story's service model has the shape
// design.md describes, without tailguard: the new strategy pushes the p99
// of /checkout over the 400ms SLO and raises the retry ratio, leaves
// /search alone, and keeps checkouts succeeding in a brown-out where the
// legacy strategy fails about half of them.
func TestStoryModelShape(t *testing.T) {
	sc, err := LoadScenario(scenarios.FS(), "story")
	if err != nil {
		t.Fatal(err)
	}
	legacyCfg, err := sc.Service.DefaultPolicy.Config("")
	if err != nil {
		t.Fatal(err)
	}
	newCfg := backoff.Config{Strategy: backoff.Decorrelated, Base: 100 * time.Millisecond, Cap: 2 * time.Second, MaxAttempts: 6}
	legacy, next := simulateStory(t, sc, legacyCfg), simulateStory(t, sc, newCfg)
	t.Logf("legacy: p99 %.0fms, retry ratio %.2f%%, brown-out success %.1f%%", 1000*legacy.p99, 100*legacy.retryRatio, 100*legacy.brownoutSuccess)
	t.Logf("new:    p99 %.0fms, retry ratio %.2f%%, brown-out success %.1f%%", 1000*next.p99, 100*next.retryRatio, 100*next.brownoutSuccess)
	check := func(name string, v, lo, hi float64) {
		t.Helper()
		if v < lo || v > hi {
			t.Errorf("%s = %.4g, want within [%g, %g]", name, v, lo, hi)
		}
	}
	check("legacy p99 (s)", legacy.p99, 0.22, 0.32)
	check("new p99 (s)", next.p99, 0.43, 0.70)
	check("legacy retry ratio", legacy.retryRatio, 0.015, 0.035)
	check("new retry ratio", next.retryRatio, 0.03, 0.06)
	check("retry ratio rise", next.retryRatio/legacy.retryRatio, 1.3, 2.5)
	check("legacy brown-out success", legacy.brownoutSuccess, 0.35, 0.6)
	check("new brown-out success", next.brownoutSuccess, 0.75, 0.95)
	// /search does not call payments: with paired random streams its
	// requests are identical under both policies.
	if !slices.Equal(legacy.search, next.search) || len(legacy.search) == 0 {
		t.Error("/search latencies depend on the backoff policy")
	}
}
