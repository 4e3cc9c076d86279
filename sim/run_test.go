package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/controller"
	"github.com/tailguard/tailguard/flags"
)

// scriptedCycler stands in for the sidecar's loop: it reports the
// decorrelated cohort of /checkout as regressed while its p99 is over the
// SLO, and on a fixed script tunes the constants (10 minutes after the
// onset) and halves the rollout (20 minutes after), through the
// controller's FlagsWriter on a flags.Store in virtual time, as the real
// loop does.
type scriptedCycler struct {
	env    Env
	writer *controller.FlagsWriter
	onset  time.Time
	step   int
}

func newScripted(env Env) (Cycler, error) {
	store, err := flags.NewStore(flags.StoreConfig{Path: env.FlagFile, Now: env.Clock.Now})
	if err != nil {
		return nil, err
	}
	svc, ok := env.Policy.Service(env.Scenario.Service.Job)
	if !ok {
		return nil, fmt.Errorf("no service %q in the policy", env.Scenario.Service.Job)
	}
	w, err := controller.NewFlagsWriter(store, svc)
	if err != nil {
		return nil, err
	}
	return &scriptedCycler{env: env, writer: w, onset: env.Scenario.At(env.Scenario.Truth.Onset)}, nil
}

func (c *scriptedCycler) Cycle(ctx context.Context, now time.Time) (CycleReport, error) {
	if !now.Equal(c.env.Clock.Now()) {
		return CycleReport{}, fmt.Errorf("cycle at %s but the clock says %s", now, c.env.Clock.Now())
	}
	v, _, err := c.env.Querier.Query(ctx, `histogram_quantile(0.99, sum by (le, strategy) (rate(http_request_duration_seconds_bucket{job="shop",endpoint="/checkout"}[5m])))`, now)
	if err != nil {
		return CycleReport{}, err
	}
	var rep CycleReport
	for _, s := range v.(model.Vector) {
		if s.Metric["strategy"] == "decorrelated" && float64(s.Value) > 0.4 {
			rep.Findings = append(rep.Findings, Finding{
				Signal: "checkout_latency", Slice: map[string]string{"endpoint": "/checkout", "strategy": "decorrelated"},
				Verdict: VerdictRegressed, Effect: float64(s.Value) / 0.27, EffectLow: 1.5, EffectHigh: 2.5, Confidence: 0.95,
				Cause: "flag:backoff-strategy", CauseDetail: "backoff-strategy → decorrelated", CauseScore: 0.9,
			})
		}
	}
	changes := []controller.FlagChange{
		{IncidentID: "inc-1", Rung: controller.RungTune, IdempotencyKey: "inc-1/tune/1", Reason: "p99 over the SLO",
			Mutation: controller.Mutation{Kind: controller.MutationSetConstants, FlagKey: "backoff-constants", Strategy: "decorrelated",
				Constants: &controller.Constants{Base: 20 * time.Millisecond, Cap: time.Second, MaxAttempts: 6}}},
		{IncidentID: "inc-1", Rung: controller.RungShrink, IdempotencyKey: "inc-1/shrink/1", Reason: "halve the rollout",
			Mutation: controller.Mutation{Kind: controller.MutationSetRollout, FlagKey: "backoff-strategy",
				Rollout: []controller.VariantWeight{{Variant: "decorrelated", Weight: 50}, {Variant: "exponential", Weight: 50}}}},
	}
	if c.step < len(changes) && !now.Before(c.onset.Add(time.Duration(c.step+1)*10*time.Minute)) {
		ch := changes[c.step]
		c.step++
		applied, err := c.writer.Apply(ctx, ch)
		if err != nil {
			return rep, err
		}
		rep.Actions = append(rep.Actions, Action{Incident: ch.IncidentID, Rung: string(ch.Rung), Status: fmt.Sprint(applied), Change: ch.Mutation.String()})
	}
	return rep, nil
}

// testSync is generous: the race detector and a busy machine slow the
// provider's file watching down.
const testSync = 10 * time.Second

func loadTiny(t *testing.T) *Scenario {
	t.Helper()
	sc, err := LoadScenarioFile("testdata/tiny.yml")
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func TestEndToEndWithScriptedCycler(t *testing.T) {
	sc := loadTiny(t)
	results, err := RunScenarios(context.Background(), []*Scenario{sc}, BenchOptions{NewCycler: newScripted, Options: Options{SyncTimeout: testSync}})
	if err != nil {
		t.Fatal(err)
	}
	r := results[0]
	tg := r.Runs[ModeTailguard]
	if tg == nil || r.Runs[ModeUnguarded] == nil || r.Runs[ModeRevert] == nil || r.Runs[ModeLegacy] == nil {
		t.Fatalf("runs missing: %v", r.Runs)
	}
	onset := sc.At(sc.Truth.Onset)

	// The cycler's writes reach the journal with virtual times, and the
	// pods pick them up before the next request.
	if len(tg.Writes) != 2 || tg.Writes[0].Actor != flags.ActorController || !tg.Writes[0].At.Equal(onset.Add(10*time.Minute)) ||
		!tg.Writes[1].At.Equal(onset.Add(20*time.Minute)) {
		t.Fatalf("writes = %+v, want the controller's two writes at T+10m and T+20m", tg.Writes)
	}
	text := timelineText(tg)
	for _, want := range []string{
		"upgrade dten-gateway 2.3 → 3.0 starts",
		"flag change by operator:deploy: backoff-strategy → decorrelated",
		"checkout_latency {endpoint=/checkout, strategy=decorrelated} regressed: effect ×",
		"attributed to flag:backoff-strategy (backoff-strategy → decorrelated), score 0.90",
		"flag write r3 by controller (tune, backoff-constants)",
		"decorrelated(base=20ms cap=1s multiplier=3 maxAttempts=6",
		"flag write r4 by controller (shrink, backoff-strategy)",
		"payments brown-out starts",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("timeline lacks %q:\n%s", want, text)
		}
	}
	// After the 50% rollout, the new strategy's share of pods (a
	// per-pod fractional split) is what the pods run.
	share := lastValue(tg.Series.NewShare)
	if share <= 0 || share >= 1 || math.Mod(share*4, 1) != 0 {
		t.Errorf("share of pods on decorrelated after the 50%% rollout = %v, want a fraction of 4 pods strictly between 0 and 1", share)
	}

	// The baselines ran on the unguarded data; revert-on-alert acted.
	u := r.Runs[ModeUnguarded]
	if len(u.Alerts[BaselineStatic]) == 0 || len(u.Verdicts) != 1 || !u.Verdicts[0].Failed {
		t.Errorf("unguarded run: static episodes %v, canary verdicts %+v; want a static alert and a failed canary", u.Alerts[BaselineStatic], u.Verdicts)
	}
	rv := r.Runs[ModeRevert]
	if rv.Revert == nil || !rv.Revert.Applied || rv.Revert.Blamed != "flag:backoff-strategy" || len(rv.Writes) != 1 {
		t.Errorf("revert-on-alert: %+v, writes %+v", rv.Revert, rv.Writes)
	}
	if got := lastValue(rv.Series.NewShare); got != 0 {
		t.Errorf("after revert-on-alert, share on decorrelated = %v, want 0", got)
	}
	// The brown-out: the legacy strategy loses checkouts the new one keeps.
	if l, n := meanSuccess(r.Runs[ModeLegacy].Brownouts), meanSuccess(u.Brownouts); !(n-l > 0.1) {
		t.Errorf("brown-out success: legacy %.2f, new %.2f; want the new strategy clearly ahead", l, n)
	}

	rows := map[string]Row{}
	for _, row := range r.Rows {
		rows[row.Guard] = row
	}
	if got := rows[GuardTailguard]; got.Detected != "y" || got.Attribution != "y" || got.Actions != 2 || got.FalseAlarms != 0 {
		t.Errorf("tailguard row = %+v", got)
	}
	if got := rows[BaselineRevert]; got.Actions != 1 || got.Attribution != "y" || !(got.Benefit < 0.2) {
		t.Errorf("revert-on-alert row = %+v, want one action and the benefit lost", got)
	}
	if got := rows[BaselineStatic]; got.Detected != "y" || got.Attribution != "n/a" || got.Benefit != 1 {
		t.Errorf("static threshold row = %+v", got)
	}
	if _, err := json.Marshal(r); err != nil {
		t.Errorf("result does not encode as JSON: %v", err)
	}
}

func timelineText(res *Result) string {
	var b strings.Builder
	for _, e := range res.Timeline {
		fmt.Fprintf(&b, "%s %s %s\n", e.At.Format("15:04:05"), e.Kind, e.Text)
	}
	return b.String()
}

func lastValue(pts []Point) float64 {
	for i := len(pts) - 1; i >= 0; i-- {
		if !math.IsNaN(pts[i].V) {
			return pts[i].V
		}
	}
	return math.NaN()
}

func TestRunIsDeterministic(t *testing.T) {
	sc := loadTiny(t)
	run := func(seed uint64) *Result {
		res, err := Run(context.Background(), sc, Options{Mode: ModeUnguarded, Seed: seed, Until: 50 * time.Minute, SyncTimeout: testSync})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	a, b, c := run(5), run(5), run(6)
	for name, pair := range map[string][2][]Point{
		"latency": {a.Series.Latency, b.Series.Latency}, "retry_ratio": {a.Series.RetryRatio, b.Series.RetryRatio},
		"error_ratio": {a.Series.ErrorRatio, b.Series.ErrorRatio},
	} {
		if !samePoints(pair[0], pair[1]) {
			t.Errorf("%s differs between runs with the same seed", name)
		}
	}
	if timelineText(a) != timelineText(b) {
		t.Errorf("timelines differ:\n%s\n---\n%s", timelineText(a), timelineText(b))
	}
	if samePoints(a.Series.Latency, c.Series.Latency) {
		t.Error("different seeds give the same latency series")
	}
	if !a.End.Equal(sc.Start.Add(50 * time.Minute)) {
		t.Errorf("Until not applied: end %s", a.End)
	}
}

func samePoints(a, b []Point) bool {
	if len(a) != len(b) || len(a) == 0 {
		return false
	}
	for i := range a {
		if !a[i].T.Equal(b[i].T) || (a[i].V != b[i].V && !(math.IsNaN(a[i].V) && math.IsNaN(b[i].V))) {
			return false
		}
	}
	return true
}

func TestBrokenFlagFileAndGaps(t *testing.T) {
	sc := loadTiny(t)
	sc.Events = append(sc.Events,
		Event{At: model.Duration(42 * time.Minute), CorruptFlagFile: &CorruptionSpec{Duration: model.Duration(5 * time.Minute)}},
		Event{At: model.Duration(44 * time.Minute), Flags: &FlagsEvent{Actor: "operator:alice", Reason: "try to roll back", Strategy: "exponential"}},
		Event{At: model.Duration(20 * time.Minute), ScrapeGap: &DurationEvent{Duration: model.Duration(10 * time.Minute)}},
	)
	res, err := Run(context.Background(), sc, Options{Mode: ModeUnguarded, Until: 50 * time.Minute, SyncTimeout: testSync})
	if err != nil {
		t.Fatal(err)
	}
	text := timelineText(res)
	for _, want := range []string{
		"the flag file is overwritten with invalid content",
		"flag change at 44m: current flag file is invalid, fix it first",
		"the flag file is restored",
		"Prometheus stops scraping for 10m",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("timeline lacks %q:\n%s", want, text)
		}
	}
	// The pods kept the last good flags (decorrelated) throughout.
	if got := lastValue(res.Series.NewShare); got != 1 {
		t.Errorf("share on decorrelated = %v, want 1 (last good flags kept)", got)
	}
	// Ten minutes without scrapes: the 5m-window series has a hole.
	var missing int
	for _, p := range res.Series.Latency {
		if p.T.After(sc.Start.Add(20*time.Minute)) && p.T.Before(sc.Start.Add(30*time.Minute)) && math.IsNaN(p.V) {
			missing++
		}
	}
	if missing < 3 {
		t.Errorf("%d minutes without a value during the scrape gap, want several", missing)
	}
}

func TestRunNeedsCycler(t *testing.T) {
	if _, err := Run(context.Background(), loadTiny(t), Options{Mode: ModeTailguard}); err == nil {
		t.Error("tailguard mode without a cycler accepted")
	}
}
