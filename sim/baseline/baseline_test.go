package baseline

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/tailguard/tailguard/alerts"
	"github.com/tailguard/tailguard/promembed"
)

var t0 = time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)

func TestMannWhitney(t *testing.T) {
	tests := []struct {
		name    string
		x, y    []float64
		u, z, p float64
	}{
		// R: wilcox.test(c(4,5,6), c(1,2,3), alternative = "greater",
		// exact = FALSE, correct = TRUE): W = 9, p-value = 0.04043.
		{"separated", []float64{1, 2, 3}, []float64{4, 5, 6}, 9, 1.7457431218879391, 0.04042779918502615},
		// Ties: ranks 1, 3, 3, 3, 5.5, 5.5, 7, 8; Σ(t³−t) = 24 + 6.
		{"ties", []float64{1, 2, 2, 3}, []float64{2, 3, 4, 5}, 13.5, 1.4883513944689681, 0.06832912386907376},
		// R's wilcox.test documentation example (x greater than y): W = 35;
		// without continuity correction p = 0.1103, with it 0.1223.
		{"R example", []float64{1.15, 0.88, 0.90, 0.74, 1.21}, []float64{0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46}, 35, 1.1635076278220096, 0.12231180256349167},
		{"R example reversed", []float64{0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46}, []float64{1.15, 0.88, 0.90, 0.74, 1.21}, 15, -1.2859821149611683, 0.9007753482039937},
		{"all equal", []float64{2, 2, 2}, []float64{2, 2}, 3, 0, 0.5},
		{"NaN dropped", []float64{1, 2, 3, math.NaN()}, []float64{4, 5, 6, math.Inf(1)}, 9, 1.7457431218879391, 0.04042779918502615},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := MannWhitney(tt.x, tt.y)
			if err != nil {
				t.Fatal(err)
			}
			if got.U != tt.u || math.Abs(got.Z-tt.z) > 1e-9 || math.Abs(got.P-tt.p) > 1e-9 {
				t.Errorf("MannWhitney = %+v, want U=%v z=%v p=%v", got, tt.u, tt.z, tt.p)
			}
		})
	}
	// Without the continuity correction the R example gives p = 0.1103.
	r, _ := MannWhitney([]float64{1.15, 0.88, 0.90, 0.74, 1.21}, []float64{0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46})
	sd := (r.U - 25 - 0.5) / r.Z
	if p := 0.5 * math.Erfc((r.U-25)/sd/math.Sqrt2); math.Abs(p-0.1103) > 5e-5 {
		t.Errorf("uncorrected p = %.4f, want 0.1103 (R)", p)
	}
	if _, err := MannWhitney([]float64{1}, []float64{1, 2}); err == nil {
		t.Error("a sample of one accepted")
	}
}

func TestEpisodes(t *testing.T) {
	times := make([]time.Time, 12)
	for i := range times {
		times[i] = t0.Add(time.Duration(i) * time.Minute)
	}
	b := func(s string) []bool {
		out := make([]bool, len(s))
		for i, c := range s {
			out[i] = c == '1'
		}
		return out
	}
	tests := []struct {
		active string
		for_   time.Duration
		want   [][2]int // start, end index (-1: still firing)
	}{
		{"000000000000", 0, nil},
		{"011000000000", 0, [][2]int{{1, 3}}},
		{"011110000000", 2 * time.Minute, [][2]int{{3, 5}}},
		{"011011111111", 2 * time.Minute, [][2]int{{6, -1}}},
		{"010101010101", time.Minute, nil},
		{"111111111111", 5 * time.Minute, [][2]int{{5, -1}}},
	}
	for _, tt := range tests {
		got := Episodes(times, b(tt.active), tt.for_)
		if len(got) != len(tt.want) {
			t.Errorf("%s for %s: %d episodes, want %d", tt.active, tt.for_, len(got), len(tt.want))
			continue
		}
		for i, w := range tt.want {
			end := time.Time{}
			if w[1] >= 0 {
				end = times[w[1]]
			}
			if !got[i].Start.Equal(times[w[0]]) || !got[i].End.Equal(end) {
				t.Errorf("%s for %s: episode %d = %v–%v, want %v–%v", tt.active, tt.for_, i, got[i].Start, got[i].End, times[w[0]], end)
			}
		}
	}
	merged := MergeEpisodes([]Episode{
		{Start: times[5], End: times[7], Label: "b"},
		{Start: times[1], End: times[3], Label: "a"},
		{Start: times[3], End: times[4], Label: "c"},
		{Start: times[9], Label: "d"},
		{Start: times[10], End: times[11], Label: "e"},
	})
	if len(merged) != 3 || !merged[0].End.Equal(times[4]) || merged[0].Label != "a" || !merged[2].End.IsZero() {
		t.Errorf("MergeEpisodes = %+v", merged)
	}
}

func openDB(t *testing.T) *promembed.DB {
	t.Helper()
	db, err := promembed.Open(promembed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// writeGauge writes one sample per 15s of v(t) for the series ls over [from, to).
func writeGauge(t *testing.T, db *promembed.DB, ls labels.Labels, from, to time.Time, v func(time.Time) float64) {
	t.Helper()
	app := db.Appender(context.Background())
	for ts := from; ts.Before(to); ts = ts.Add(15 * time.Second) {
		if err := app.Append(ls, ts, v(ts)); err != nil {
			t.Fatal(err)
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
}

func TestRuleEvaluateAndActive(t *testing.T) {
	db := openDB(t)
	bad := t0.Add(30 * time.Minute)
	writeGauge(t, db, labels.FromStrings("__name__", "p99", "job", "shop"), t0, t0.Add(time.Hour), func(ts time.Time) float64 {
		if ts.Before(bad) {
			return 0.3
		}
		return 0.6
	})
	r := Rule{Name: "high", Expr: `p99 > 0.4`, For: 5 * time.Minute}
	eps, err := r.Evaluate(context.Background(), db, t0, t0.Add(55*time.Minute), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 1 || !eps[0].Start.Equal(bad.Add(5*time.Minute)) || !eps[0].End.IsZero() || eps[0].Label != "high" {
		t.Fatalf("episodes = %+v, want one from %s, still firing", eps, bad.Add(5*time.Minute))
	}
	for at, want := range map[time.Time]bool{bad.Add(-time.Minute): false, bad.Add(time.Minute): true} {
		got, err := r.Active(context.Background(), db, at)
		if err != nil || got != want {
			t.Errorf("Active at %s = %v, %v; want %v", at.Format("15:04"), got, err, want)
		}
	}
	// The static threshold expression is valid PromQL on the engine.
	s := StaticThreshold(SLO{Job: "shop", Endpoint: "/checkout", Quantile: 0.99, Threshold: 400 * time.Millisecond, Window: 5 * time.Minute})
	if !strings.Contains(s.Expr, `le) (rate(http_request_duration_seconds_bucket{job="shop",endpoint="/checkout"}[5m]))) > 0.4`) || s.For != 5*time.Minute {
		t.Errorf("StaticThreshold = %+v", s)
	}
	if _, err := s.Active(context.Background(), db, bad); err != nil {
		t.Errorf("static threshold does not evaluate: %v", err)
	}
}

func TestBurnRateRulesFromAlertsPackage(t *testing.T) {
	db := openDB(t)
	// /checkout with 0.5% of requests above 0.4s for an hour, then 30%.
	bad := t0.Add(time.Hour)
	end := t0.Add(2 * time.Hour)
	app := db.Appender(context.Background())
	var total, slow float64
	for ts := t0; ts.Before(end); ts = ts.Add(15 * time.Second) {
		frac := 0.005
		if !ts.Before(bad) {
			frac = 0.3
		}
		total += 300
		slow += 300 * frac
		base := []string{"job", "shop", "endpoint", "/checkout", "instance", "shop-0:8080"}
		for _, s := range []struct {
			ls labels.Labels
			v  float64
		}{
			{labels.FromStrings(append(base, "__name__", "http_request_duration_seconds_count")...), total},
			{labels.FromStrings(append(base, "__name__", "http_request_duration_seconds_bucket", "le", "0.4")...), total - slow},
			{labels.FromStrings(append(base, "__name__", "http_request_duration_seconds_bucket", "le", "+Inf")...), total},
		} {
			if err := app.Append(s.ls, ts, s.v); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	rs, err := LoadRules(alerts.FS(), "slo-shop.rules.yml", "slo-alerts.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	eps, err := rs.Evaluate(context.Background(), db, t0, end, time.Minute, map[string]string{"service": "shop"})
	if err != nil {
		t.Fatal(err)
	}
	var page *Episode
	for i, e := range eps {
		if e.Start.Before(bad) {
			t.Errorf("%s fired at %s, before the burn started", e.Label, e.Start.Format("15:04"))
		}
		if e.Label == "TailLatencyBudgetBurn (critical)" && page == nil {
			page = &eps[i]
		}
	}
	// With only 74 minutes of data, the 6h window passes 6× (6%) after
	// about 14 minutes of 30%; the 1h window would pass 14.4% after 28.
	if page == nil || page.Start.Before(bad.Add(10*time.Minute)) || page.Start.After(bad.Add(30*time.Minute)) {
		t.Fatalf("page = %+v, want TailLatencyBudgetBurn (critical) 10–30 minutes after %s; all: %+v", page, bad.Format("15:04"), eps)
	}
	if _, err := LoadRules(alerts.FS(), "missing.rules.yml"); err == nil {
		t.Error("missing rule file accepted")
	}
}

func TestJudge(t *testing.T) {
	db := openDB(t)
	change, same := t0.Add(time.Hour), t0.Add(2*time.Hour)
	// A metric that doubles at the first change and does not move at the
	// second; small deterministic wiggle so that values are not all tied.
	writeGauge(t, db, labels.FromStrings("__name__", "m"), t0, t0.Add(3*time.Hour), func(ts time.Time) float64 {
		w := 0.01 * float64(ts.Minute()%7)
		if !ts.Before(change) {
			return 2 + w
		}
		return 1 + w
	})
	j := Judge{Metrics: []Metric{{Name: "m", Expr: "m"}}, Before: 30 * time.Minute, Warmup: 5 * time.Minute, After: 30 * time.Minute,
		Step: time.Minute, Alpha: 0.01, MinRatio: 1.1}
	vs, err := j.Judge(context.Background(), db, []time.Time{change, same, same.Add(time.Minute), t0.Add(170 * time.Minute)}, t0.Add(3*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 2 {
		t.Fatalf("%d verdicts, want 2 (changes a minute apart merge, the last has no full window): %+v", len(vs), vs)
	}
	if !vs[0].Failed || !vs[0].At.Equal(change.Add(35*time.Minute)) {
		t.Errorf("first verdict = %+v, want a failure at %s", vs[0], change.Add(35*time.Minute).Format("15:04"))
	}
	if vs[1].Failed || !vs[1].Change.Equal(same.Add(time.Minute)) {
		t.Errorf("second verdict = %+v, want a pass of the change at %s", vs[1], same.Add(time.Minute).Format("15:04"))
	}
	if err := (Judge{}).Validate(); err == nil {
		t.Error("empty judge validated")
	}
}
