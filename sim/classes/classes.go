// Package classes draws simulator scenarios of the situation classes
// tailguard's judgement is measured on: each class is a family of worlds
// with one kind of truth (an innocent change and a guilty upstream, an
// upgrade no backoff can fix, a slow creep, a long null, ...), and every
// draw picks the world's parameters (pods, rates, upstream latency and
// failures, effect sizes, onsets, brown-out timing and length) from
// ranges. The drawn scenarios are ordinary sim.Scenario values, parsed and
// validated like the YAML files, and can be written out as such.
//
// Nothing here knows tailguard's thresholds: the ranges describe plausible
// worlds of the shop/payments story, not the detector's blind spots.
package classes

import (
	"bytes"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"path"
	"slices"
	"time"

	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/tailguard/tailguard/sim"
)

// Class is one family of situations.
type Class struct {
	// Name is the class's command-line name, e.g. innocent-change.
	Name string
	// Number is the class's number in the list, for the table.
	Number int
	// Summary says what happens and what the right move is.
	Summary string
	draw    func(d *drawer) *sim.Scenario
}

// All returns the classes in their order.
func All() []Class {
	return []Class{
		{Name: "innocent-change", Number: 1, Summary: "a benign flag change, then the upstream slows on its own: blame none of the known changes, no write", draw: innocentChange},
		{Name: "unfixable-upgrade", Number: 2, Summary: "a gateway patch release slows every upstream attempt: blame the upgrade, escalate, keep the strategy", draw: unfixableUpgrade},
		{Name: "brownout-after-change", Number: 3, Summary: "a healthy strategy change, then an upstream brown-out: no alarm, no write", draw: brownoutAfterChange},
		{Name: "second-change", Number: 4, Summary: "hours after a healthy strategy change, a constants change regresses: blame the second change", draw: secondChange},
		{Name: "traffic-growth", Number: 5, Summary: "traffic grows 2-3× with no change and the upstream saturates: none of the known changes, no write", draw: trafficGrowth},
		{Name: "retries-only", Number: 6, Summary: "two changes, one raises the retries (latency fine): tell the strategy change from the constants change", draw: retriesOnly},
		{Name: "native-histograms", Number: 7, Summary: "the story's regression on a service with native histograms only", draw: nativeHistograms},
		{Name: "slow-creep", Number: 8, Summary: "a guilty strategy ramped up over an hour: act before the SLO budget is gone", draw: slowCreep},
		{Name: "long-null", Number: 9, Summary: "12-14 h of diurnal traffic with restarts and benign upgrades: no alarm", draw: longNull},
		{Name: "partial-rollout", Number: 10, Summary: "a guilty strategy on 10-30% of the traffic: the cohort comparison decides", draw: partialRollout},
	}
}

// ByName returns the named class.
func ByName(name string) (Class, bool) {
	i := slices.IndexFunc(All(), func(c Class) bool { return c.Name == name })
	if i < 0 {
		return Class{}, false
	}
	return All()[i], true
}

// Draw returns draw number i of the class for a sweep seed: the same
// (seed, i) always gives the same scenario. configs holds the tailguard
// policy and detector files the scenarios name (tailguard/policy.yml,
// tailguard/detector.yml, tailguard/detector-native.yml), e.g. the
// embedded scenarios.
func (c Class) Draw(seed uint64, i int, configs fs.FS) (*sim.Scenario, error) {
	d := &drawer{r: rand.New(rand.NewPCG(seed, uint64(c.Number)<<32|uint64(i)))}
	sc := c.draw(d)
	sc.Name = fmt.Sprintf("%s-%02d", c.Name, i)
	sc.Seed = d.r.Uint64()>>1 | 1
	b, err := Marshal(sc)
	if err != nil {
		return nil, err
	}
	out, err := sim.ParseScenario(b, func(p string) ([]byte, error) { return fs.ReadFile(configs, path.Clean(p)) })
	if err != nil {
		return nil, fmt.Errorf("class %s draw %d: %w", c.Name, i, err)
	}
	return out, nil
}

// Marshal renders a drawn scenario as the simulator's YAML.
func Marshal(sc *sim.Scenario) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(sc); err != nil {
		return nil, fmt.Errorf("encode scenario %s: %w", sc.Name, err)
	}
	return buf.Bytes(), nil
}

// drawer draws parameters from ranges.
type drawer struct{ r *rand.Rand }

func (d *drawer) float(lo, hi float64) float64 { return lo + (hi-lo)*d.r.Float64() }

func (d *drawer) int(lo, hi int) int { return lo + d.r.IntN(hi-lo+1) }

// dur draws a duration in [lo, hi], rounded to the second.
func (d *drawer) dur(lo, hi time.Duration) model.Duration {
	return model.Duration(time.Duration(d.float(float64(lo), float64(hi))).Round(time.Second))
}

// ms draws a duration in [lo, hi] milliseconds, rounded to the millisecond.
func (d *drawer) ms(lo, hi float64) model.Duration {
	return model.Duration(time.Duration(d.float(lo, hi)) * time.Millisecond)
}

func (d *drawer) coin() bool { return d.r.IntN(2) == 0 }

func md(v time.Duration) model.Duration { return model.Duration(v) }

// world draws the shop and payments of the story: the service, its
// upstream and the legacy strategy, with no events yet.
func (d *drawer) world() *sim.Scenario {
	checkout := d.float(22, 36)
	return &sim.Scenario{
		ScrapeInterval:     md(15 * time.Second),
		EvaluationInterval: md(time.Minute),
		Service: sim.ServiceSpec{
			Job:              "shop",
			Pods:             d.int(5, 12),
			VersionComponent: "dten-gateway",
			Components: []sim.ComponentSpec{
				{Name: "dten-gateway", Metric: "dten_gateway_build_info", Version: "2.3"},
				{Name: "pay-sdk", Metric: "pay_sdk_build_info", Version: "1.4"},
			},
			Endpoints: []sim.EndpointSpec{
				{Name: "/checkout", Rate: checkout, Latency: sim.LogNormalSpec{Median: d.ms(50, 70), Sigma: d.float(0.3, 0.4)}, CallsUpstream: true, ErrorProbability: 0.0005},
				{Name: "/search", Rate: d.float(30, 50), Latency: sim.LogNormalSpec{Median: d.ms(50, 70), Sigma: 0.5}, ErrorProbability: 0.0005},
			},
			Warmup:        sim.WarmupSpec{Duration: md(30 * time.Second), Factor: 1.2},
			DefaultPolicy: legacy(),
		},
		Upstream: sim.UpstreamSpec{
			Name:                     "payments",
			Latency:                  sim.LogNormalSpec{Median: d.ms(60, 80), Sigma: 0.35},
			ErrorLatency:             sim.LogNormalSpec{Median: md(20 * time.Millisecond), Sigma: 0.3},
			FailureProbability:       d.float(0.012, 0.018),
			RepeatFailureProbability: d.float(0.5, 0.6),
			PersistentFailure:        sim.PersistentSpec{Probability: d.float(0.001, 0.002), MeanDuration: d.dur(15*time.Second, 25*time.Second)},
			// Four times the checkout traffic: no overload at normal load.
			Capacity:        4 * checkout,
			OverloadFailure: 2,
			OverloadLatency: 0.5,
			RateLimit:       sim.RateLimitSpec{Limit: 200, RetryAfter: md(time.Second)},
			Timeout:         md(2 * time.Second),
		},
		Flags: sim.FlagsSpec{
			Strategy:  "exponential",
			Variants:  []string{"decorrelated", "exponential"},
			Constants: map[string]sim.ConstantsSpec{"exponential": {Base: md(50 * time.Millisecond), Cap: md(500 * time.Millisecond), MaxAttempts: 3}},
		},
		Truth: sim.Truth{SLO: sim.SLOSpec{Endpoint: "/checkout", Quantile: 0.99, Threshold: md(400 * time.Millisecond), Window: md(5 * time.Minute)}},
		Tailguard: sim.TailguardSpec{
			PolicyFile:   "tailguard/policy.yml",
			DetectorFile: "tailguard/detector.yml",
		},
	}
}

func legacy() sim.ConstantsSpec {
	return sim.ConstantsSpec{Strategy: "exponential", Base: md(50 * time.Millisecond), Cap: md(500 * time.Millisecond), MaxAttempts: 3}
}

// healthy draws decorrelated constants that keep the tail (short first
// delays) and ride out brown-outs (more attempts, a longer cap).
func (d *drawer) healthy() sim.ConstantsSpec {
	return sim.ConstantsSpec{Base: d.ms(15, 30), Cap: d.ms(1000, 2000), MaxAttempts: d.int(5, 6)}
}

// guilty draws decorrelated constants whose long first delays push the
// tail over the SLO (the story's vendor defaults, base 100ms, and longer):
// below a base of about 100ms the p99 lands within a few percent of the
// threshold, a breach no detector can tell from noise within the hour and
// no SRE would call a regression.
func (d *drawer) guilty() sim.ConstantsSpec {
	return sim.ConstantsSpec{Base: d.ms(100, 150), Cap: d.ms(1500, 2500), MaxAttempts: d.int(5, 7)}
}

// onset draws the time of the first change: after the detector's one-hour
// baseline.
func (d *drawer) onset() time.Duration {
	return time.Duration(d.dur(70*time.Minute, 90*time.Minute))
}

func at(t time.Duration) model.Duration { return model.Duration(t.Round(time.Second)) }

func strategyChange(t time.Duration, reason string, c sim.ConstantsSpec) sim.Event {
	return sim.Event{At: at(t), Flags: &sim.FlagsEvent{
		Actor: "operator:deploy", Reason: reason, Strategy: "decorrelated",
		Constants: map[string]sim.ConstantsSpec{"decorrelated": c},
	}}
}

func brownout(d *drawer, t time.Duration) sim.Event {
	return sim.Event{At: at(t), Brownout: &sim.BrownoutEvent{
		Duration: d.dur(8*time.Minute, 15*time.Minute), Down: d.ms(1000, 2000), Up: md(time.Second), FailureProbability: 0.97,
	}}
}

func noAction(from, to time.Duration, reason string) sim.WindowSpec {
	return sim.WindowSpec{From: at(from), To: at(to), Reason: reason}
}

const (
	flagStrategy   = "flag:backoff-strategy"
	flagConstants  = "flag:backoff-constants"
	gateway        = "component:dten-gateway"
	noneKnown      = "none"
	upstreamCallee = "upstream:payments"
)

func innocentChange(d *drawer) *sim.Scenario {
	sc := d.world()
	t0 := d.onset()
	slow := t0 + time.Duration(d.dur(5*time.Minute, 20*time.Minute))
	end := slow + 75*time.Minute
	sc.Duration = at(end)
	sc.Description = "benign decorrelated change, then payments slows on its own for every strategy and pod"
	sc.Events = []sim.Event{
		strategyChange(t0, "enable the decorrelated strategy (short delays) fleet-wide", sim.ConstantsSpec{Base: d.ms(15, 25), Cap: d.ms(800, 1200), MaxAttempts: 4}),
		{At: at(slow), UpstreamLatency: &sim.FactorEvent{Duration: at(end - slow), Factor: d.float(1.8, 2.6)}},
	}
	sc.Truth.Regression, sc.Truth.Onset = true, at(slow)
	sc.Truth.Causes = []string{noneKnown, upstreamCallee}
	sc.Truth.NoAction = []sim.WindowSpec{noAction(t0, end, "payments slowed on its own; the flag change is innocent")}
	return sc
}

func unfixableUpgrade(d *drawer) *sim.Scenario {
	sc := d.world()
	// The new strategy has been on for a while (healthy constants).
	sc.Flags.Strategy = "decorrelated"
	sc.Flags.Constants["decorrelated"] = d.healthy()
	t0 := d.onset()
	end := t0 + 80*time.Minute
	sc.Duration = at(end)
	sc.Description = "dten-gateway 2.3 → 2.3.1 makes every payments attempt slower; the retry ratio does not move"
	sc.Events = []sim.Event{{At: at(t0), Upgrade: &sim.UpgradeEvent{
		Component: "dten-gateway", Version: "2.3.1", Over: d.dur(time.Minute, 4*time.Minute), Restart: true,
		Effect: sim.EffectSpec{UpstreamLatency: d.float(1.9, 2.6)},
	}}}
	sc.Truth.Regression, sc.Truth.Onset = true, at(t0)
	sc.Truth.Causes = []string{gateway}
	sc.Truth.NoAction = []sim.WindowSpec{noAction(t0, end, "no backoff change fixes slower attempts: roll the gateway back")}
	return sc
}

func brownoutAfterChange(d *drawer) *sim.Scenario {
	sc := d.world()
	t0 := d.onset()
	bo := brownout(d, t0+time.Duration(d.dur(20*time.Minute, 40*time.Minute)))
	end := time.Duration(bo.At) + time.Duration(bo.Brownout.Duration) + 40*time.Minute
	sc.Duration = at(end)
	sc.Description = "a healthy decorrelated change, then a payments brown-out it rides out better than the legacy strategy"
	sc.Events = []sim.Event{strategyChange(t0, "enable the decorrelated strategy for brown-outs", d.healthy()), bo}
	sc.Truth.Benefit = true
	sc.Truth.NoAction = []sim.WindowSpec{noAction(t0, end, "the change is healthy; the brown-out is the upstream's")}
	return sc
}

func secondChange(d *drawer) *sim.Scenario {
	sc := d.world()
	t0 := d.onset()
	t1 := t0 + time.Duration(d.dur(90*time.Minute, 150*time.Minute))
	end := t1 + 75*time.Minute
	sc.Duration = at(end)
	sc.Description = "a healthy decorrelated change, then hours later longer delays and more attempts"
	sc.Events = []sim.Event{
		strategyChange(t0, "enable the decorrelated strategy for brown-outs", d.healthy()),
		{At: at(t1), Flags: &sim.FlagsEvent{Actor: "operator:alice", Reason: "more patience with payments",
			Constants: map[string]sim.ConstantsSpec{"decorrelated": d.guilty()}}},
	}
	sc.Truth.Regression, sc.Truth.Onset = true, at(t1)
	sc.Truth.Causes = []string{flagConstants}
	sc.Truth.NoAction = []sim.WindowSpec{noAction(t0, t1, "the first change is healthy")}
	return sc
}

func trafficGrowth(d *drawer) *sim.Scenario {
	sc := d.world()
	// A benign upgrade before the growth: the known change to blame wrongly.
	t0 := d.onset()
	grow := t0 + time.Duration(d.dur(15*time.Minute, 45*time.Minute))
	factor := d.float(2, 3)
	// The upstream saturates at the grown load (calls plus ~3% retries).
	sc.Upstream.Capacity = sc.Service.Endpoints[0].Rate * factor / d.float(1.1, 1.3)
	end := grow + 80*time.Minute
	sc.Duration = at(end)
	sc.Description = "traffic grows 2-3× over 20 minutes with no change; payments saturates"
	sc.Events = []sim.Event{{At: at(t0), Upgrade: &sim.UpgradeEvent{Component: "pay-sdk", Version: "1.4.1", Over: md(2 * time.Minute), Restart: true}}}
	// A ramp in four steps, the last one until the end.
	ramp := 20 * time.Minute
	for k := 1; k <= 4; k++ {
		from := grow + time.Duration(k-1)*ramp/4
		until := grow + time.Duration(k)*ramp/4
		if k == 4 {
			until = end
		}
		sc.Events = append(sc.Events, sim.Event{At: at(from), Traffic: &sim.FactorEvent{Duration: at(until - from), Factor: 1 + (factor-1)*float64(k)/4}})
	}
	sc.Truth.Regression, sc.Truth.Onset = true, at(grow)
	sc.Truth.Causes = []string{noneKnown, upstreamCallee}
	sc.Truth.NoAction = []sim.WindowSpec{noAction(t0, end, "no change explains the load; scale payments")}
	return sc
}

func retriesOnly(d *drawer) *sim.Scenario {
	sc := d.world()
	// A flakier payments: with three attempts its retries stay under the
	// 5% objective (p·(1+r) ≈ 4%), with eight to ten they exceed it
	// (p/(1−r) ≈ 7%), while quick attempts keep the tail.
	sc.Upstream.FailureProbability = d.float(0.022, 0.028)
	sc.Upstream.RepeatFailureProbability = d.float(0.6, 0.7)
	t0 := d.onset()
	t1 := t0 + time.Duration(d.dur(10*time.Minute, 25*time.Minute))
	end := t1 + 70*time.Minute
	sc.Duration = at(end)
	many := sim.ConstantsSpec{Base: d.ms(8, 15), Cap: d.ms(200, 350), MaxAttempts: d.int(8, 10)}
	if d.coin() {
		sc.Description = "a trivial constants change, then a strategy change with short delays and many attempts: more retries, same tail"
		sc.Events = []sim.Event{
			{At: at(t0), Flags: &sim.FlagsEvent{Actor: "operator:alice", Reason: "trim the legacy cap",
				Constants: map[string]sim.ConstantsSpec{"exponential": {Base: md(50 * time.Millisecond), Cap: d.ms(400, 450), MaxAttempts: 3}}}},
			strategyChange(t1, "enable the decorrelated strategy (many quick attempts)", many),
		}
		sc.Truth.Causes = []string{flagStrategy}
		sc.Truth.NoAction = []sim.WindowSpec{noAction(t0, t1, "the constants change is trivial")}
	} else {
		sc.Description = "a benign strategy change, then a constants change to many quick attempts: more retries, same tail"
		sc.Events = []sim.Event{
			strategyChange(t0, "enable the decorrelated strategy (short delays)", sim.ConstantsSpec{Base: d.ms(15, 25), Cap: d.ms(800, 1200), MaxAttempts: 3}),
			{At: at(t1), Flags: &sim.FlagsEvent{Actor: "operator:alice", Reason: "more attempts for payments",
				Constants: map[string]sim.ConstantsSpec{"decorrelated": many}}},
		}
		sc.Truth.Causes = []string{flagConstants}
		sc.Truth.NoAction = []sim.WindowSpec{noAction(t0, t1, "the strategy change is benign")}
	}
	sc.Truth.Regression, sc.Truth.Onset = true, at(t1)
	return sc
}

func nativeHistograms(d *drawer) *sim.Scenario {
	sc := d.world()
	sc.Service.NativeOnly = true
	sc.Tailguard.DetectorFile = "tailguard/detector-native.yml"
	t0 := d.onset()
	bo := brownout(d, t0+time.Duration(d.dur(70*time.Minute, 90*time.Minute)))
	end := time.Duration(bo.At) + time.Duration(bo.Brownout.Duration) + 20*time.Minute
	sc.Duration = at(end)
	sc.Description = "the story's vendor upgrade and guilty decorrelated defaults, native histograms only"
	sc.Events = []sim.Event{
		{At: at(t0), Upgrade: &sim.UpgradeEvent{Component: "dten-gateway", Version: "3.0", Over: d.dur(time.Minute, 3*time.Minute), Restart: true}},
		strategyChange(t0, "vendor upgrade (dten-gateway 3.0) enables the decorrelated strategy", d.guilty()),
		bo,
	}
	sc.Truth.Regression, sc.Truth.Onset, sc.Truth.Benefit = true, at(t0), true
	// The upgrade ships the gateway and both flags at once: any of them,
	// or all, is the right answer.
	sc.Truth.Causes = []string{flagStrategy, flagConstants, gateway}
	return sc
}

func slowCreep(d *drawer) *sim.Scenario {
	sc := d.world()
	t0 := d.onset()
	c := d.guilty()
	sc.Description = "a guilty decorrelated configuration ramped from 10% to 100% over about an hour"
	sc.Events = []sim.Event{{At: at(t0), Flags: &sim.FlagsEvent{Actor: "operator:deploy", Reason: "start the decorrelated rollout",
		Constants: map[string]sim.ConstantsSpec{"decorrelated": c}}}}
	pct, t := 10.0, t0
	steps := d.int(4, 6)
	every := time.Duration(d.dur(10*time.Minute, 15*time.Minute))
	for k := range steps {
		if k > 0 {
			t += every
			pct = 10 + 90*float64(k)/float64(steps-1)
		}
		sc.Events = append(sc.Events, sim.Event{At: at(t + time.Second), Flags: &sim.FlagsEvent{Actor: "operator:deploy",
			Reason: fmt.Sprintf("decorrelated rollout step %d", k+1), Rollout: &sim.RolloutSpec{Variant: "decorrelated", Percent: float64(int(pct))}}})
	}
	end := t + 45*time.Minute
	sc.Duration = at(end)
	sc.Truth.Regression, sc.Truth.Onset = true, at(t0)
	// The guilty constants and the rollout that exposes them ship a
	// second apart: either flag, or both, is the right answer.
	sc.Truth.Causes = []string{flagStrategy, flagConstants}
	return sc
}

func longNull(d *drawer) *sim.Scenario {
	sc := d.world()
	end := time.Duration(d.dur(12*time.Hour, 14*time.Hour))
	sc.Duration = at(end)
	sc.Description = "12-14 h of diurnal traffic, pod restarts and benign upgrades"
	sc.Service.Traffic.Diurnal = &sim.DiurnalSpec{Amplitude: d.float(0.3, 0.5), Period: md(24 * time.Hour), Peak: d.dur(0, 24*time.Hour)}
	// Diurnal peaks must not overload payments.
	sc.Upstream.Capacity *= 1.5
	sc.Events = []sim.Event{
		{At: at(time.Duration(d.dur(2*time.Hour, 4*time.Hour))), Upgrade: &sim.UpgradeEvent{Component: "pay-sdk", Version: "1.4.1", Over: d.dur(time.Minute, 5*time.Minute), Restart: true}},
		{At: at(time.Duration(d.dur(5*time.Hour, 7*time.Hour))), Upgrade: &sim.UpgradeEvent{Component: "dten-gateway", Version: "2.3.1", Over: d.dur(2*time.Minute, 10*time.Minute), Restart: true}},
		// A restart of every pod with no version change (a node drain).
		{At: at(time.Duration(d.dur(8*time.Hour, 11*time.Hour))), Upgrade: &sim.UpgradeEvent{Component: "dten-gateway", Version: "2.3.1", Over: d.dur(2*time.Minute, 10*time.Minute), Restart: true}},
	}
	sc.Truth.NoAction = []sim.WindowSpec{noAction(0, end, "nothing regressed")}
	return sc
}

func partialRollout(d *drawer) *sim.Scenario {
	sc := d.world()
	t0 := d.onset()
	end := t0 + 75*time.Minute
	sc.Duration = at(end)
	pct := float64(d.int(10, 30))
	sc.Description = fmt.Sprintf("guilty decorrelated constants on %.0f%% of the traffic", pct)
	sc.Events = []sim.Event{
		{At: at(t0), Flags: &sim.FlagsEvent{Actor: "operator:deploy", Reason: "canary the decorrelated strategy",
			Constants: map[string]sim.ConstantsSpec{"decorrelated": d.guilty()}}},
		{At: at(t0 + time.Second), Flags: &sim.FlagsEvent{Actor: "operator:deploy", Reason: "canary the decorrelated strategy",
			Rollout: &sim.RolloutSpec{Variant: "decorrelated", Percent: pct}}},
	}
	sc.Truth.Regression, sc.Truth.Onset = true, at(t0)
	sc.Truth.Causes = []string{flagStrategy, flagConstants}
	return sc
}
