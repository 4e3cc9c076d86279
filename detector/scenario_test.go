package detector

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tailguard/tailguard/detector/changes"
)

const shopConfig = `
service: shop
baseline: 1h
step: 1m
topology:
  callees:
    payments-api: payments
signals:
  - name: checkout_latency
    kind: latency
    selector: '{job="shop",endpoint="/checkout"}'
    by: [endpoint, strategy]
  - name: search_latency
    kind: latency
    selector: '{job="shop",endpoint="/search"}'
    by: [endpoint]
  - name: payments_retries
    kind: retry_ratio
    selector: '{upstream="payments"}'
    by: [upstream, strategy]
  - name: errors
    kind: error_ratio
    selector: '{job="shop"}'
    by: [endpoint]
changes:
  build_info:
    - component: dten-gateway
      metric: dten_gateway_build_info
      selector: '{job="shop"}'
    - component: search-index
      metric: search_index_build_info
      selector: '{job="shop"}'
      scope: {endpoint: /search}
  flags:
    backoff-strategy: {label: strategy}
`

// flagJournal is the journal line of the backoff-strategy flag moving half
// of the traffic to the decorrelated strategy at tChange.
func flagJournal(at time.Time) string {
	return fmt.Sprintf(`{"seq":1,"time":%q,"actor":"operator:alice","action":"rollout","reason":"vendor upgrade 2025.1","flags":["backoff-strategy"],"changes":[{"kind":"flag","key":"backoff-strategy","before":{"state":"ENABLED","variants":{"legacy":"exponential","new":"decorrelated"},"defaultVariant":"legacy"},"after":{"state":"ENABLED","variants":{"legacy":"exponential","new":"decorrelated"},"defaultVariant":"legacy","targeting":{"fractional":[["new",50],["legacy",50]]}}}],"revisionBefore":1,"revisionAfter":2,"someFutureField":true}
`, at.Format(time.RFC3339))
}

const manifest = `time: 2025-03-01T09:58:00Z
name: vendor-2025.1
actor: ci
components:
  - name: dten-gateway
    from: "2.3"
    to: "3.0"
`

type scenario struct {
	name     string
	slices   []sliceSim
	versions []versionSim
	journal  string
	manifest string
	config   string
}

// run simulates the scenario and analyses (tChange, tChange+1h].
func (sc scenario) run(t testing.TB, seed uint64) *Report {
	t.Helper()
	db := simulate(t, seed, sc.slices, sc.versions)
	dir := t.TempDir()
	text := sc.config
	if text == "" {
		text = shopConfig
	}
	if sc.journal != "" {
		text += fmt.Sprintf("  flag_journal: %s\n", writeFile(t, dir, "flags.json.journal.jsonl", sc.journal))
	}
	cfg, err := ParseConfig(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if sc.manifest != "" {
		cfg.Changes.Manifests = []string{writeFile(t, dir, "manifest.yaml", sc.manifest)}
	}
	src, err := NewChangeSource(cfg, db)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(cfg, db, src)
	if err != nil {
		t.Fatal(err)
	}
	d.now = func() time.Time { return tChange.Add(time.Hour) }
	rep, err := d.Analyze(context.Background(), Request{From: tChange, To: tChange.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatalf("report does not serialise: %v", err)
	}
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	return rep
}

func checkout(strategy string, rpm func(time.Time) float64) sliceSim {
	return sliceSim{
		endpoint: "/checkout", strategy: strategy, rpm: rpm,
		median: 0.1, sigma: 0.35, slow: constant(0), retries: constant(0.01), errors: 0.005,
	}
}

func search(rpm float64) sliceSim {
	return sliceSim{endpoint: "/search", rpm: constant(rpm), median: 0.05, sigma: 0.4, slow: constant(0), errors: 0.002}
}

var dtenUpgrade = versionSim{metric: "dten_gateway_build_info", from: "2.3", to: "3.0", at: tChange}

// backoffRegression is the design's story: the vendor upgrade lands at
// tChange together with a flag rollout moving half of /checkout to the
// decorrelated strategy, whose longer backoff raises tail latency and
// retries to payments.
func backoffRegression() scenario {
	exp := checkout("exponential", step(600, 300, tChange))
	dec := checkout("decorrelated", constant(300))
	dec.start = tChange
	dec.slow = constant(0.04)
	dec.retries = constant(0.03)
	return scenario{
		name:     "backoff regression",
		slices:   []sliceSim{exp, dec, search(1200)},
		versions: []versionSim{dtenUpgrade},
		journal:  flagJournal(tChange),
		manifest: manifest,
	}
}

func findingFor(rep *Report, signal string, slice map[string]string) *Finding {
	want := changes.FormatLabels(slice)
	for i := range rep.Findings {
		f := &rep.Findings[i]
		if f.Signal == signal && changes.FormatLabels(f.Slice) == want {
			return f
		}
	}
	return nil
}

func expectVerdict(t *testing.T, rep *Report, signal string, slice map[string]string, want Verdict) *Finding {
	t.Helper()
	f := findingFor(rep, signal, slice)
	if f == nil {
		t.Fatalf("no finding for %s %v", signal, slice)
	}
	if f.Verdict != want {
		t.Errorf("%s %v: verdict %s (%s), want %s", signal, slice, f.Verdict, f.Reason, want)
	}
	return f
}

func TestScenarioBackoffRegression(t *testing.T) {
	rep := backoffRegression().run(t, 1)

	lat := expectVerdict(t, rep, "checkout_latency", map[string]string{"endpoint": "/checkout", "strategy": "decorrelated"}, Regressed)
	ret := expectVerdict(t, rep, "payments_retries", map[string]string{"upstream": "payments", "strategy": "decorrelated"}, Regressed)
	expectVerdict(t, rep, "checkout_latency", map[string]string{"endpoint": "/checkout", "strategy": "exponential"}, Healthy)
	expectVerdict(t, rep, "search_latency", map[string]string{"endpoint": "/search"}, Healthy)
	expectVerdict(t, rep, "payments_retries", map[string]string{"upstream": "payments", "strategy": "exponential"}, Healthy)
	expectVerdict(t, rep, "errors", map[string]string{"endpoint": "/checkout"}, Healthy)
	expectVerdict(t, rep, "errors", map[string]string{"endpoint": "/search"}, Healthy)
	if rep.Summary.Regressed != 2 {
		t.Errorf("%d regressions, want 2", rep.Summary.Regressed)
	}

	// The declared upgrade and its build info observation are one change;
	// the flag rollout is the other.
	if len(rep.Changes) != 2 {
		t.Fatalf("changes = %v, want the dten-gateway upgrade and the flag rollout", rep.Changes)
	}
	var flagID string
	for _, e := range rep.Changes {
		switch e.Component {
		case "dten-gateway":
			if e.Kind != changes.KindVersion || len(e.Sources) != 2 || e.From != "2.3" || e.To != "3.0" {
				t.Errorf("dten-gateway change = %+v, want a version change seen by build info and the manifest", e)
			}
		case "backoff-strategy":
			flagID = e.ID
			if e.Scope["strategy"] != "decorrelated" {
				t.Errorf("flag scope = %v, want strategy=decorrelated", e.Scope)
			}
		}
	}

	for _, f := range []*Finding{lat, ret} {
		if f.Attribution.Status != AttributionAttributed || f.Attribution.Cause != flagID {
			t.Errorf("%s: attribution %+v, want the flag %s; causes:\n%s", f.Signal, f.Attribution, flagID, causesText(f))
		}
		onset := f.Detection.Onset
		if onset == nil || onset.Before(tChange) || onset.After(tChange.Add(3*time.Minute)) {
			t.Errorf("%s: onset %v, want within 3m after %v", f.Signal, onset, tChange)
		}
		if delay := f.Detection.AlarmAt.Sub(tChange); delay > 10*time.Minute {
			t.Errorf("%s: detected %v after the change, want within 10m", f.Signal, delay)
		}
		t.Logf("%s %v: effect %.2f× [%.2f, %.2f], onset +%v, alarm +%v, cause %s (%.2f vs %.2f)",
			f.Signal, f.Slice, f.Effect.Estimate, f.Effect.Lower, f.Effect.Upper,
			f.Detection.Onset.Sub(tChange), f.Detection.AlarmAt.Sub(tChange),
			f.Causes[0].Change.Component, f.Causes[0].Score, f.Causes[1].Score)
	}
	// The new cohort has no baseline quantile of its own; the old one has.
	if q := lat.Quantile; q == nil || q.Baseline != nil || q.Current == nil || *q.Current < 0.4 {
		t.Errorf("p99 evidence = %+v, want only a current p99 above 400ms", q)
	}
	if q := findingFor(rep, "checkout_latency", map[string]string{"endpoint": "/checkout", "strategy": "exponential"}).Quantile; q == nil || q.Baseline == nil || *q.Baseline > 0.3 {
		t.Errorf("exponential p99 evidence = %+v, want a baseline p99 below 300ms", q)
	}
	if len(rep.Incidents) != 1 || len(rep.Incidents[0].Findings) != 2 || rep.Incidents[0].Cause == nil || rep.Incidents[0].Cause.ID != flagID {
		t.Errorf("incidents = %+v, want one for the flag with both findings", rep.Incidents)
	}
	if rep.Incidents[0].ID != IncidentID("shop", flagID) {
		t.Errorf("incident id not stable")
	}
}

func causesText(f *Finding) string {
	var b strings.Builder
	for _, c := range f.Causes {
		fmt.Fprintf(&b, "  %.3f %s\n", c.Score, c.Change)
		for _, e := range c.Evidence {
			fmt.Fprintf(&b, "      %s\n", e)
		}
	}
	return b.String()
}

func TestScenarioBenignVersionBump(t *testing.T) {
	sc := scenario{
		slices:   []sliceSim{checkout("exponential", constant(600)), search(1200)},
		versions: []versionSim{dtenUpgrade},
		manifest: manifest,
	}
	for seed := uint64(1); seed <= 4; seed++ {
		rep := sc.run(t, seed)
		if rep.Summary.Regressed != 0 || len(rep.Incidents) != 0 {
			t.Errorf("seed %d: %d regressions, %d incidents after a benign upgrade", seed, rep.Summary.Regressed, len(rep.Incidents))
		}
		if rep.Summary.Healthy != rep.Streams {
			t.Errorf("seed %d: %d healthy of %d streams", seed, rep.Summary.Healthy, rep.Streams)
			for _, f := range rep.Findings {
				if f.Verdict != Healthy {
					t.Logf("  %s %v: %s %s", f.Signal, f.Slice, f.Verdict, f.Reason)
				}
			}
		}
		if len(rep.Changes) != 1 {
			t.Errorf("seed %d: changes %v, want the upgrade", seed, rep.Changes)
		}
	}
}

// TestScenarioOtherComponentSameHour: the upgrade lands at tChange and is
// harmless; search-index is upgraded 20 minutes later and slows /search.
func TestScenarioOtherComponentSameHour(t *testing.T) {
	at := tChange.Add(20 * time.Minute)
	s := search(1200)
	s.slow = step(0, 0.05, at)
	sc := scenario{
		slices: []sliceSim{checkout("exponential", constant(600)), s},
		versions: []versionSim{dtenUpgrade,
			{metric: "search_index_build_info", from: "4.1", to: "4.2", at: at}},
		manifest: manifest,
	}
	rep := sc.run(t, 7)
	f := expectVerdict(t, rep, "search_latency", map[string]string{"endpoint": "/search"}, Regressed)
	expectVerdict(t, rep, "checkout_latency", map[string]string{"endpoint": "/checkout", "strategy": "exponential"}, Healthy)
	if rep.Summary.Regressed != 1 {
		t.Errorf("%d regressions, want 1", rep.Summary.Regressed)
	}
	if f.Attribution.Status != AttributionAttributed || !strings.HasPrefix(f.Attribution.Cause, "version/search-index@") {
		t.Fatalf("attribution %+v, want search-index; causes:\n%s", f.Attribution, causesText(f))
	}
	t.Logf("search latency: effect %.2f×, onset +%v after search-index, alarm +%v, scores %.2f (search-index) vs %.2f (dten-gateway)",
		f.Effect.Estimate, f.Detection.Onset.Sub(at), f.Detection.AlarmAt.Sub(at), f.Causes[0].Score, f.Causes[1].Score)
}

// TestScenarioAmbiguous: two whole-service changes at the same minute and a
// regression everywhere: nothing tells them apart.
func TestScenarioAmbiguous(t *testing.T) {
	c := checkout("exponential", constant(600))
	c.slow = step(0, 0.04, tChange)
	sc := scenario{
		slices: []sliceSim{c, search(1200)},
		versions: []versionSim{dtenUpgrade,
			{metric: "search_index_build_info", from: "4.1", to: "4.2", at: tChange}},
		config: strings.Replace(shopConfig, "      scope: {endpoint: /search}\n", "", 1),
	}
	rep := sc.run(t, 3)
	f := expectVerdict(t, rep, "checkout_latency", map[string]string{"endpoint": "/checkout", "strategy": "exponential"}, Regressed)
	if f.Attribution.Status != AttributionAmbiguous || len(f.Attribution.Candidates) != 2 {
		t.Fatalf("attribution %+v, want ambiguous between both; causes:\n%s", f.Attribution, causesText(f))
	}
	if len(rep.Incidents) != 1 || rep.Incidents[0].Status != AttributionAmbiguous || rep.Incidents[0].Cause != nil {
		t.Errorf("incidents = %+v, want one ambiguous", rep.Incidents)
	}
}

func TestScenarioLowTraffic(t *testing.T) {
	c := checkout("exponential", constant(3)) // 180 requests in the baseline hour
	c.slow = step(0, 0.5, tChange)
	rep := scenario{slices: []sliceSim{c, search(1200)}}.run(t, 5)
	f := expectVerdict(t, rep, "checkout_latency", map[string]string{"endpoint": "/checkout", "strategy": "exponential"}, Inconclusive)
	if !strings.Contains(f.Reason, "too few requests in the baseline") {
		t.Errorf("reason %q, want too few requests", f.Reason)
	}
	expectVerdict(t, rep, "payments_retries", map[string]string{"upstream": "payments", "strategy": "exponential"}, Inconclusive)
	expectVerdict(t, rep, "search_latency", map[string]string{"endpoint": "/search"}, Healthy)
	if rep.Summary.Regressed != 0 {
		t.Errorf("regressed on low traffic")
	}
}

func TestScenarioMissingData(t *testing.T) {
	c := checkout("exponential", constant(600))
	c.stop = tChange.Add(10 * time.Minute) // the target goes away
	c.slow = step(0, 0.5, tChange)
	rep := scenario{slices: []sliceSim{c, search(1200)}}.run(t, 6)
	f := expectVerdict(t, rep, "checkout_latency", map[string]string{"endpoint": "/checkout", "strategy": "exponential"}, Inconclusive)
	if !strings.Contains(f.Reason, "no samples since") {
		t.Errorf("reason %q, want stale data", f.Reason)
	}
	expectVerdict(t, rep, "search_latency", map[string]string{"endpoint": "/search"}, Healthy)
	if len(rep.Incidents) != 0 {
		t.Errorf("incidents on missing data: %+v", rep.Incidents)
	}
}

// TestScenarioNative runs the backoff story on native histograms.
func TestScenarioNative(t *testing.T) {
	sc := backoffRegression()
	for i := range sc.slices {
		sc.slices[i].native = true
	}
	sc.config = strings.Replace(shopConfig, "    kind: latency\n", "    kind: latency\n    histogram: native\n", -1)
	rep := sc.run(t, 2)
	f := expectVerdict(t, rep, "checkout_latency", map[string]string{"endpoint": "/checkout", "strategy": "decorrelated"}, Regressed)
	expectVerdict(t, rep, "checkout_latency", map[string]string{"endpoint": "/checkout", "strategy": "exponential"}, Healthy)
	expectVerdict(t, rep, "search_latency", map[string]string{"endpoint": "/search"}, Healthy)
	if !strings.Contains(f.Queries[0].Expr, "histogram_quantile(0.99, sum(increase(http_request_duration_seconds{job=\"shop\",endpoint=\"/checkout\"}[1h])))") {
		t.Errorf("queries = %v", f.Queries)
	}
	if f.Attribution.Status != AttributionAttributed || !strings.HasPrefix(f.Attribution.Cause, "flag/backoff-strategy@") {
		t.Errorf("attribution %+v; causes:\n%s", f.Attribution, causesText(f))
	}
	t.Logf("native: boundary %s, effect %.2f×, alarm +%v", f.Statistic, f.Effect.Estimate, f.Detection.AlarmAt.Sub(tChange))
}

// TestAnalyzeByChange pins the window to a named change.
func TestAnalyzeByChange(t *testing.T) {
	sc := backoffRegression()
	db := simulate(t, 1, sc.slices, sc.versions)
	cfg, err := ParseConfig(strings.NewReader(shopConfig + fmt.Sprintf("  flag_journal: %s\n", writeFile(t, t.TempDir(), "j.jsonl", sc.journal))))
	if err != nil {
		t.Fatal(err)
	}
	src, err := NewChangeSource(cfg, db)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(cfg, db, src)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := d.Analyze(context.Background(), Request{Change: "backoff-strategy", To: tChange.Add(30 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Monitored.Start.Equal(tChange) || rep.Summary.Regressed != 2 {
		t.Errorf("monitored %v, %d regressions", rep.Monitored, rep.Summary.Regressed)
	}
	if _, err := d.Analyze(context.Background(), Request{Change: "no-such-flag", To: tChange.Add(30 * time.Minute)}); err == nil {
		t.Error("unknown change accepted")
	}
	if _, err := d.Analyze(context.Background(), Request{To: tChange}); err == nil {
		t.Error("request without from accepted")
	}
	if _, err := d.Analyze(context.Background(), Request{From: tChange, To: tChange.Add(30 * time.Second)}); err == nil {
		t.Error("window shorter than a step accepted")
	}
}

// TestScenarioObjectiveFloor: the new strategy makes a few more checkouts
// slow and retries more. Against objectives the shift stays within, it is
// healthy, however significant; against tighter ones the same data
// regresses.
func TestScenarioObjectiveFloor(t *testing.T) {
	config := func(latency, retries float64) string {
		c := strings.Replace(shopConfig, "    by: [endpoint, strategy]\n",
			fmt.Sprintf("    by: [endpoint, strategy]\n    boundary: 0.5\n    objective: %v\n", latency), 1)
		return strings.Replace(c, "    by: [upstream, strategy]\n",
			fmt.Sprintf("    by: [upstream, strategy]\n    objective: %v\n", retries), 1)
	}
	sc := func(slow, retries float64, cfg string) scenario {
		s := backoffRegression()
		s.slices[1].slow = constant(slow)
		s.slices[1].retries = constant(retries)
		s.config = cfg
		return s
	}
	dec := map[string]string{"endpoint": "/checkout", "strategy": "decorrelated"}
	decRetries := map[string]string{"upstream": "payments", "strategy": "decorrelated"}
	for seed := uint64(1); seed <= 3; seed++ {
		// ~0.3% slow (from ~0%) and 3% retries (from 1%): within 1% and 5%.
		rep := sc(0.004, 0.03, config(0.01, 0.05)).run(t, seed)
		for _, f := range []*Finding{
			expectVerdict(t, rep, "checkout_latency", dec, Healthy),
			expectVerdict(t, rep, "payments_retries", decRetries, Healthy),
		} {
			if !strings.Contains(f.Reason, "within the objective") {
				t.Errorf("seed %d: %s: reason %q, want the shift reported within the objective", seed, f.Signal, f.Reason)
			}
		}
		if rep.Summary.Regressed != 0 || len(rep.Incidents) != 0 {
			t.Errorf("seed %d: %d regressions within the objectives", seed, rep.Summary.Regressed)
		}
		// The same shifts against objectives they exceed.
		rep = sc(0.004, 0.03, config(0.001, 0.015)).run(t, seed)
		expectVerdict(t, rep, "checkout_latency", dec, Regressed)
		expectVerdict(t, rep, "payments_retries", decRetries, Regressed)
		// Far above the objective: regressed, as without one.
		rep = sc(0.04, 0.03, config(0.01, 0.05)).run(t, seed)
		expectVerdict(t, rep, "checkout_latency", dec, Regressed)
	}
}

// TestScenarioSecondShift: a first change shifts /checkout a little
// (within its objective), 25 minutes later something pushes it far over:
// a second change, or nothing known (a brown-out). The regime in force
// starts at the second shift, not at the first change. A single shift,
// small or large, is not split.
func TestScenarioSecondShift(t *testing.T) {
	second := tChange.Add(25 * time.Minute)
	cfg := strings.Replace(shopConfig, "    by: [endpoint, strategy]\n", "    by: [endpoint, strategy]\n    boundary: 0.5\n    objective: 0.01\n", 1)
	slow := func(first, later float64) func(time.Time) float64 {
		return func(t time.Time) float64 {
			switch {
			case !t.Before(second):
				return later
			case !t.Before(tChange):
				return first
			}
			return 0
		}
	}
	exp := map[string]string{"endpoint": "/checkout", "strategy": "exponential"}
	run := func(seed uint64, first, later float64, versions ...versionSim) *Report {
		co := checkout("exponential", constant(600))
		co.slow = slow(first, later)
		sc := scenario{slices: []sliceSim{co, search(1200)}, config: cfg, manifest: manifest, versions: append([]versionSim{dtenUpgrade}, versions...)}
		return sc.run(t, seed)
	}
	near := func(on *time.Time, at time.Time) bool {
		return on != nil && !on.Before(at.Add(-time.Minute)) && !on.After(at.Add(time.Minute))
	}
	for seed := uint64(1); seed <= 3; seed++ {
		f := expectVerdict(t, run(seed, 0.004, 0.04, versionSim{metric: "search_index_build_info", from: "4.1", to: "4.2", at: second}), "checkout_latency", exp, Regressed)
		if !near(f.Detection.Onset, second) {
			t.Errorf("seed %d: second change: onset %v, want %v", seed, f.Detection.Onset, second)
		}
		f = expectVerdict(t, run(seed, 0.004, 0.04), "checkout_latency", exp, Regressed)
		if !near(f.Detection.Onset, second) {
			t.Errorf("seed %d: unknown second shift: onset %v, want %v", seed, f.Detection.Onset, second)
		}
		if f.Attribution.Status != AttributionUnexplained {
			t.Errorf("seed %d: unknown second shift attributed %+v, want none of the known changes; causes:\n%s", seed, f.Attribution, causesText(f))
		}
		expectVerdict(t, run(seed, 0.004, 0.004), "checkout_latency", exp, Healthy)
		f = expectVerdict(t, run(seed, 0.04, 0.04), "checkout_latency", exp, Regressed)
		if !near(f.Detection.Onset, tChange) {
			t.Errorf("seed %d: one large shift: onset %v, want %v", seed, f.Detection.Onset, tChange)
		}
	}
}
