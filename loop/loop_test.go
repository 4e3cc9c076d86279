package loop

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/controller"
	"github.com/tailguard/tailguard/controller/policy"
	"github.com/tailguard/tailguard/detector"
	"github.com/tailguard/tailguard/detector/changes"
	"github.com/tailguard/tailguard/detector/stats"
	"github.com/tailguard/tailguard/flags"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func testService(t *testing.T) *policy.Service {
	t.Helper()
	p, err := policy.Parse([]byte(`
services:
  - name: shop
    mode: auto
    upstream: payments
    components: [dten-gateway]
    slos:
      - name: checkout-latency
        signal: latency
        selector: {endpoint: /checkout}
        objective: {quantile: 0.99, threshold: 400ms, window: 5m}
      - name: payments-retries
        signal: retry_ratio
        selector: {upstream: payments}
        objective: {ratio: 0.05, window: 5m}
      - name: checkout-errors
        signal: error_ratio
        selector: {endpoint: /checkout}
        objective: {ratio: 0.01, window: 5m}
    backoff:
      cap: {min: 500ms, max: 5s, maxStep: 1s}
    flags:
      strategy: {key: backoff-strategy, newVariant: decorrelated, oldVariant: exponential, rollout: [100, 50, 0]}
      constants: {key: backoff-constants}
`))
	if err != nil {
		t.Fatal(err)
	}
	svc, _ := p.Service("shop")
	return svc
}

func testDetectorConfig(t *testing.T) detector.Config {
	t.Helper()
	cfg, err := detector.ParseConfig(strings.NewReader(`
service: shop
signals:
  - name: checkout_latency
    kind: latency
    selector: '{job="shop",endpoint="/checkout"}'
    by: [strategy]
  - name: search_latency
    kind: latency
    selector: '{job="shop",endpoint="/search"}'
  - name: payments_retries
    kind: retry_ratio
    selector: '{job="shop",upstream="payments"}'
  - name: payments_attempts
    kind: latency
    attempts: true
    selector: '{job="shop",upstream="payments"}'
`))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestSLIQuery(t *testing.T) {
	svc := testService(t)
	for _, tc := range []struct {
		cfg  SLIConfig
		slo  int
		want string
	}{
		{SLIConfig{}, 0, `histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{job="shop",endpoint="/checkout"}[5m])))`},
		{SLIConfig{Histogram: "native", Job: "shop-prod"}, 0, `histogram_quantile(0.99, sum(rate(http_request_duration_seconds{job="shop-prod",endpoint="/checkout"}[5m])))`},
		{SLIConfig{}, 1, `sum(rate(backoff_retries_total{job="shop",upstream="payments"}[5m])) / sum(rate(backoff_calls_total{job="shop",upstream="payments"}[5m]))`},
		{SLIConfig{}, 2, `(sum(rate(http_requests_total{job="shop",endpoint="/checkout",code=~"5.."}[5m])) or vector(0)) / sum(rate(http_requests_total{job="shop",endpoint="/checkout"}[5m]))`},
	} {
		got, err := SLIQuery(tc.cfg, "shop", svc.SLOs[tc.slo])
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("SLIQuery(%s)\n got %s\nwant %s", svc.SLOs[tc.slo].Name, got, tc.want)
		}
	}
	if err := (SLIConfig{Histogram: "sparse"}).Validate(); err == nil || !strings.Contains(err.Error(), "sli.histogram") {
		t.Errorf("Validate of a bad histogram type: %v", err)
	}
	if err := (SLIConfig{CallsMetric: "bad name"}).Validate(); err == nil || !strings.Contains(err.Error(), "sli.calls_metric") {
		t.Errorf("Validate of a bad metric name: %v", err)
	}
}

func TestScalarOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    model.Value
		want float64
		err  string
	}{
		{"value", model.Vector{{Value: 0.25}}, 0.25, ""},
		{"scalar", &model.Scalar{Value: 1}, 1, ""},
		{"empty", model.Vector{}, math.NaN(), "no data"},
		{"nan", model.Vector{{Value: model.SampleValue(math.NaN())}}, math.NaN(), "NaN"},
		{"inf", model.Vector{{Value: model.SampleValue(math.Inf(1))}}, math.Inf(1), "+Inf"},
		{"two", model.Vector{{Value: 1}, {Value: 2}}, math.NaN(), "2 series"},
		{"matrix", model.Matrix{}, math.NaN(), "want vector"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := scalarOf(tc.v)
			if tc.err == "" {
				if err != nil || got != tc.want {
					t.Fatalf("scalarOf = %v, %v; want %v", got, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("scalarOf err = %v, want %q", err, tc.err)
			}
		})
	}
}

func ptime(t time.Time) *time.Time { return &t }

func TestAssess(t *testing.T) {
	svc := testService(t)
	sc, err := scopes(testDetectorConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	upgrade := changes.Event{ID: "flag/backoff-strategy@x", Kind: changes.KindFlag, Component: "backoff-strategy", From: "exponential", To: "decorrelated", Time: t0.Add(-time.Hour)}
	bump := changes.Event{ID: "version/dten-gateway@x", Kind: changes.KindVersion, Component: "dten-gateway", From: "2.3", To: "3.0", Time: t0.Add(-time.Hour)}
	readings := []Reading{
		{SLO: "checkout-latency", Value: 0.6, Previous: 0.5},
		{SLO: "payments-retries", Value: 0.03, Previous: math.NaN()},
		{SLO: "checkout-errors", Value: math.NaN(), Err: errNoData},
	}
	regressed := detector.Finding{
		ID: "f1", Signal: "checkout_latency", Kind: detector.KindLatency, Slice: map[string]string{"strategy": "decorrelated"},
		Verdict: detector.Regressed, Reason: "p99 ×2.4", Effect: &stats.Ratio{Estimate: 2.4},
		Detection:   &detector.Detection{Onset: ptime(t0.Add(-58 * time.Minute))},
		Causes:      []detector.Cause{{Change: upgrade, Score: 0.82, Evidence: []string{"onset 2m after", "only strategy=decorrelated"}}, {Change: bump, Score: 0.5}},
		Attribution: detector.Attribution{Status: detector.AttributionAttributed, Cause: upgrade.ID},
	}
	healthyOld := detector.Finding{ID: "f2", Signal: "checkout_latency", Kind: detector.KindLatency, Slice: map[string]string{"strategy": "exponential"}, Verdict: detector.Healthy}
	searchRegressed := detector.Finding{ID: "f3", Signal: "search_latency", Kind: detector.KindLatency, Verdict: detector.Regressed, Attribution: detector.Attribution{Status: detector.AttributionNone}}
	retriesInconclusive := detector.Finding{ID: "f4", Signal: "payments_retries", Kind: detector.KindRetryRatio, Verdict: detector.Inconclusive, Reason: "120 calls, need 368"}
	rep := &detector.Report{
		Changes:   []changes.Event{upgrade, bump},
		Findings:  []detector.Finding{healthyOld, regressed, searchRegressed, retriesInconclusive},
		Incidents: []detector.Incident{{ID: "inc-1", Findings: []string{"f1"}}},
	}

	got := Assess(svc, readings, rep, sc)
	if len(got) != 3 {
		t.Fatalf("%d assessments, want 3", len(got))
	}
	lat := got[0]
	wantCause := controller.Cause{Kind: controller.CauseFlag, FlagKey: "backoff-strategy", Variant: "decorrelated", IncidentID: "inc-1", Confidence: 0.82, Evidence: "onset 2m after; only strategy=decorrelated"}
	if lat.Verdict != controller.VerdictRegressed || lat.Cause != wantCause || lat.Finding != "f1" || !lat.Onset.Equal(t0.Add(-58*time.Minute)) {
		t.Errorf("checkout latency = %+v", lat)
	}
	if !lat.HasForecast || math.Abs(lat.Forecast-0.7) > 1e-9 || lat.Objective != 0.4 {
		t.Errorf("forecast/objective = %v %v %v, want 0.7 (trend) and 0.4", lat.HasForecast, lat.Forecast, lat.Objective)
	}
	if got[1].Verdict != controller.VerdictInconclusive || got[1].Reason != "120 calls, need 368" || got[1].HasForecast {
		t.Errorf("payments retries = %+v, want inconclusive from its finding, no forecast", got[1])
	}
	if got[2].Verdict != controller.VerdictInconclusive || !strings.Contains(got[2].Reason, "no data") {
		t.Errorf("checkout errors = %+v, want inconclusive: no data", got[2])
	}

	// Without a report (no change in the lookback window) SLOs with data
	// are healthy with an unknown cause.
	got = Assess(svc, readings, nil, sc)
	if got[0].Verdict != controller.VerdictHealthy || got[0].Cause.Kind != controller.CauseUnknown {
		t.Errorf("no report: %+v", got[0])
	}

	// Ambiguous attribution.
	amb := regressed
	amb.Attribution = detector.Attribution{Status: detector.AttributionAmbiguous, Candidates: []string{upgrade.ID, bump.ID}}
	rep.Findings = []detector.Finding{amb}
	got = Assess(svc, readings, rep, sc)
	if c := got[0].Cause; c.Kind != controller.CauseFlag || c.FlagKey != "backoff-strategy" || c.Variant != "decorrelated" || c.Confidence != 0.82 {
		t.Errorf("ambiguous between the strategy flag and a policy component: %+v, want the strategy flag", c)
	}
	other := changes.Event{ID: "version/pay-sdk@x", Kind: changes.KindVersion, Component: "pay-sdk", To: "1.5", Time: t0.Add(-time.Hour)}
	rep.Changes = append(rep.Changes, other)
	amb.Attribution = detector.Attribution{Status: detector.AttributionAmbiguous, Candidates: []string{upgrade.ID, other.ID}}
	rep.Findings = []detector.Finding{amb}
	got = Assess(svc, readings, rep, sc)
	if got[0].Cause.Kind != controller.CauseAmbiguous || !strings.Contains(got[0].Cause.Evidence, other.ID) {
		t.Errorf("ambiguous with a change the policy does not govern: %+v", got[0].Cause)
	}

	// A component change.
	comp := regressed
	comp.Attribution = detector.Attribution{Status: detector.AttributionAttributed, Cause: bump.ID}
	rep.Findings = []detector.Finding{comp}
	got = Assess(svc, readings, rep, sc)
	if c := got[0].Cause; c.Kind != controller.CauseComponent || c.Component != "dten-gateway" || c.Version != "3.0" || c.Confidence != 0.5 {
		t.Errorf("component: %+v", c)
	}
}

func TestCovers(t *testing.T) {
	svc := testService(t)
	sc, err := scopes(testDetectorConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	checkout := svc.SLOs[0]
	for _, tc := range []struct {
		signal string
		slice  map[string]string
		want   bool
	}{
		{"checkout_latency", nil, true},
		{"checkout_latency", map[string]string{"strategy": "decorrelated"}, true},
		{"search_latency", nil, false},
		{"payments_retries", nil, false},
		{"checkout_latency", map[string]string{"endpoint": "/search"}, false},
		// The upstream's attempt latency is evidence about causes.
		{"payments_attempts", nil, false},
	} {
		if got := covers(checkout, sc[tc.signal], tc.slice); got != tc.want {
			t.Errorf("covers(checkout-latency, %s, %v) = %v, want %v", tc.signal, tc.slice, got, tc.want)
		}
	}
}

// fakeQuerier answers instant queries from a table keyed by query and time
// offset from t0.
type fakeQuerier struct {
	values map[string]float64
	err    error
	warn   v1.Warnings
	seen   []string
}

func (f *fakeQuerier) Query(_ context.Context, q string, ts time.Time) (model.Value, v1.Warnings, error) {
	f.seen = append(f.seen, q)
	if f.err != nil {
		return nil, nil, f.err
	}
	v, ok := f.values[q]
	if !ok {
		return model.Vector{}, f.warn, nil
	}
	if ts.Before(t0) {
		v *= 0.9
	}
	return model.Vector{{Value: model.SampleValue(v), Timestamp: model.TimeFromUnixNano(ts.UnixNano())}}, f.warn, nil
}

func (f *fakeQuerier) QueryRange(context.Context, string, v1.Range) (model.Value, v1.Warnings, error) {
	return nil, nil, errors.New("not used")
}

type fakeAnalyzer struct {
	rep *detector.Report
	req []detector.Request
}

func (f *fakeAnalyzer) Analyze(_ context.Context, req detector.Request) (*detector.Report, error) {
	f.req = append(f.req, req)
	return f.rep, nil
}

type fakeChanges []changes.Event

func (f fakeChanges) Changes(_ context.Context, from, to time.Time) ([]changes.Event, error) {
	var out []changes.Event
	for _, e := range f {
		if !e.Time.Before(from) && !e.Time.After(to) {
			out = append(out, e)
		}
	}
	return out, nil
}

type memReader struct{ m *controller.MemoryFlags }

func (r memReader) Read(context.Context) (controller.FlagState, error) { return r.m.State(), nil }

type recordingStepper struct{ obs []controller.Observation }

func (r *recordingStepper) Step(_ context.Context, obs controller.Observation, now time.Time) (controller.Decision, error) {
	r.obs = append(r.obs, obs)
	return controller.Decision{Service: obs.Service, At: now, Kind: controller.DecisionNone, Reason: "test"}, nil
}

func newTestLoop(t *testing.T, q *fakeQuerier, an *fakeAnalyzer, ch fakeChanges, st *recordingStepper, reg prometheus.Registerer) *Loop {
	t.Helper()
	svc := testService(t)
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(Config{
		Service: svc, DetectorConfig: testDetectorConfig(t), Detector: an, Changes: ch, Querier: q,
		Flags:      memReader{controller.NewMemoryFlags("backoff-strategy", "backoff-constants", controller.FlagState{DefaultVariant: "decorrelated", Revision: 3})},
		Controller: st, Metrics: m,
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestCycle(t *testing.T) {
	svc := testService(t)
	q := &fakeQuerier{values: map[string]float64{}}
	for _, slo := range svc.SLOs {
		expr, _ := SLIQuery(SLIConfig{}, "shop", slo)
		q.values[expr] = map[string]float64{"checkout-latency": 0.6, "payments-retries": 0.03, "checkout-errors": 0.001}[slo.Name]
	}
	calls, retries, _ := RetryQueries(SLIConfig{}, "shop", "payments", 5*time.Minute)
	q.values[calls], q.values[retries] = 50, 1.5
	upgrade := changes.Event{ID: "u", Kind: changes.KindVersion, Component: "dten-gateway", To: "3.0", Time: t0.Add(-30 * time.Minute)}
	old := changes.Event{ID: "old", Kind: changes.KindVersion, Component: "x", Time: t0.Add(-7 * time.Hour)}
	an := &fakeAnalyzer{rep: &detector.Report{Changes: []changes.Event{upgrade}}}
	st := &recordingStepper{}
	reg := prometheus.NewRegistry()
	l := newTestLoop(t, q, an, fakeChanges{old, upgrade}, st, reg)

	res, err := l.Cycle(context.Background(), t0, "interval")
	if err != nil {
		t.Fatal(err)
	}
	if len(an.req) != 1 || !an.req[0].From.Equal(upgrade.Time) || !an.req[0].To.Equal(t0) {
		t.Fatalf("analyze requests = %+v, want one from the upgrade (the older change is out of the lookback)", an.req)
	}
	if len(st.obs) != 1 {
		t.Fatalf("controller stepped %d times", len(st.obs))
	}
	obs := st.obs[0]
	if obs.Retries.Calls != 50 || obs.Retries.Retries != 1.5 || obs.Retries.Exhausted != 0 || obs.Flags.Revision != 3 {
		t.Errorf("observation retries/flags = %+v / %+v", obs.Retries, obs.Flags)
	}
	if len(obs.Assessments) != 3 || obs.Assessments[0].Value != 0.6 || !obs.Assessments[0].HasForecast {
		t.Errorf("assessments = %+v", obs.Assessments)
	}
	if last, ok := l.Last(); !ok || !last.At.Equal(res.At) {
		t.Errorf("Last() = %v, %v", last.At, ok)
	}
	if got := testutil.ToFloat64(l.cfg.Metrics.cycles.WithLabelValues("shop", "ok")); got != 1 {
		t.Errorf("ok cycles = %v", got)
	}
	if got := testutil.ToFloat64(l.cfg.Metrics.sli.WithLabelValues("shop", "checkout-latency")); got != 0.6 {
		t.Errorf("sli gauge = %v", got)
	}
}

func TestCycleQueryErrorTakesNoDecision(t *testing.T) {
	q := &fakeQuerier{err: errors.New("connection refused")}
	st := &recordingStepper{}
	l := newTestLoop(t, q, &fakeAnalyzer{}, nil, st, nil)
	res, err := l.Cycle(context.Background(), t0, "interval")
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %v", err)
	}
	if len(st.obs) != 0 {
		t.Fatal("the controller was asked to decide on a failed cycle")
	}
	if res.Error == "" {
		t.Error("result does not carry the error")
	}
}

func TestCycleWarningsAreInconclusive(t *testing.T) {
	svc := testService(t)
	q := &fakeQuerier{values: map[string]float64{}, warn: v1.Warnings{"PromQL info: metric might not be a counter"}}
	for _, slo := range svc.SLOs {
		expr, _ := SLIQuery(SLIConfig{}, "shop", slo)
		q.values[expr] = 0.1
	}
	st := &recordingStepper{}
	l := newTestLoop(t, q, &fakeAnalyzer{}, nil, st, nil)
	if _, err := l.Cycle(context.Background(), t0, "interval"); err != nil {
		t.Fatal(err)
	}
	for _, a := range st.obs[0].Assessments {
		if a.Verdict != controller.VerdictInconclusive || !strings.Contains(a.Reason, "warnings") {
			t.Errorf("%s = %s (%s), want inconclusive on warnings", a.SLO, a.Verdict, a.Reason)
		}
	}
}

func TestOwnChangesFiltered(t *testing.T) {
	src := fakeChanges{
		{ID: "a", Kind: changes.KindFlag, Actor: flags.ActorController, Time: t0},
		{ID: "b", Kind: changes.KindFlag, Actor: "operator:alice", Time: t0},
		{ID: "c", Kind: changes.KindVersion, Time: t0},
	}
	got, err := OwnChangesFiltered(src).Changes(context.Background(), t0.Add(-time.Hour), t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "b" || got[1].ID != "c" {
		t.Errorf("filtered = %+v, want b and c", got)
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "service policy") {
		t.Errorf("New(empty) = %v", err)
	}
}
