package stats

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func near(a, b, tol float64) bool {
	if math.IsInf(a, 0) || math.IsInf(b, 0) {
		return a == b
	}
	return math.Abs(a-b) <= tol
}

func TestZQuantile(t *testing.T) {
	for _, tc := range []struct{ p, want float64 }{
		{0.975, 1.959963984540054},
		{0.5, 0},
		{0.95, 1.6448536269514722},
		{0.995, 2.5758293035489004},
		{0.025, -1.959963984540054},
	} {
		if got := ZQuantile(tc.p); !near(got, tc.want, 1e-8) {
			t.Errorf("ZQuantile(%v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	for _, p := range []float64{0, 1, -1, math.NaN()} {
		if got := ZQuantile(p); !math.IsNaN(got) {
			t.Errorf("ZQuantile(%v) = %v, want NaN", p, got)
		}
	}
	if got := NormalCDF(1.959963984540054); !near(got, 0.975, 1e-9) {
		t.Errorf("NormalCDF(1.96) = %v", got)
	}
}

func TestMinSamplesForQuantileCI(t *testing.T) {
	for _, tc := range []struct {
		q, conf float64
		want    int
	}{
		{0.99, 0.95, 368}, // ln(0.025)/ln(0.99) = 367.04
		{0.99, 0.90, 299}, // ln(0.05)/ln(0.99) = 298.07
		{0.5, 0.95, 6},    // the classic median result: 0.5^6 = 0.0156 ≤ 0.025 < 0.5^5
		{0.9, 0.95, 36},
		{0.95, 0.95, 72},
		{0.999, 0.95, 3688},
		{0.01, 0.95, 368}, // symmetric in q ↔ 1−q
	} {
		got, err := MinSamplesForQuantileCI(tc.q, tc.conf)
		if err != nil || got != tc.want {
			t.Errorf("MinSamplesForQuantileCI(%v, %v) = %d, %v; want %d", tc.q, tc.conf, got, err, tc.want)
		}
	}
	for _, bad := range [][2]float64{{0, 0.95}, {1, 0.95}, {0.99, 1}, {0.99, 0}, {math.NaN(), 0.9}} {
		if _, err := MinSamplesForQuantileCI(bad[0], bad[1]); !errors.Is(err, ErrDomain) {
			t.Errorf("MinSamplesForQuantileCI(%v) err = %v, want ErrDomain", bad, err)
		}
	}
}

func TestLLRAndKL(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  float64
		want float64
	}{
		{"binomial 5/1000 at p 1%→2%", BinomialLLR(5, 1000, 0.01, 0.02), -6.635873703898145},
		{"binomial 0/0", BinomialLLR(0, 0, 0.01, 0.02), 0},
		{"poisson 7 over 500 at λ 1%→2%", PoissonLLR(7, 500, 0.01, 0.02), -0.1479697360803831},
		{"binomial KL 2% vs 1%", BinomialKL(0.02, 0.01), 0.003913619576461304},
		{"poisson KL λ=2 vs 1", PoissonKL(2, 1), 2*math.Log(2) - 1},
	} {
		if !near(tc.got, tc.want, 1e-12) {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	for _, v := range []float64{
		BinomialLLR(2, 1, 0.01, 0.02), BinomialLLR(-1, 10, 0.01, 0.02), BinomialLLR(1, 10, 0, 0.02),
		BinomialLLR(1, 10, 0.01, 1), BinomialLLR(math.NaN(), 10, 0.01, 0.02), PoissonLLR(1, 10, 0, 1),
		PoissonLLR(1, math.Inf(1), 1, 2), BinomialKL(0, 0.5), PoissonKL(-1, 1),
	} {
		if !math.IsNaN(v) {
			t.Errorf("invalid input gave %v, want NaN", v)
		}
	}
}

func TestCUSUM(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		name               string
		llr                []float64
		h                  float64
		alarm              bool
		alarmIdx, onsetIdx int
		max, last          float64
		steps              int
	}{
		{"hand computed", []float64{1, -2, 3, 1, 1}, 4, true, 3, 2, 5, 5, 5},
		{"resets at zero", []float64{2, -5, 1, 1, 1, 1}, 4, true, 5, 2, 4, 4, 6},
		{"no alarm", []float64{1, 1, -3, 1}, 4, false, -1, -1, 2, 1, 4},
		{"missing steps skipped", []float64{3, nan, math.Inf(1), 2}, 4, true, 3, 0, 5, 5, 2},
		{"empty", nil, 4, false, -1, -1, 0, 0, 0},
		{"invalid threshold never alarms", []float64{10, 10}, math.NaN(), false, -1, -1, 20, 20, 2},
		{"zero threshold never alarms", []float64{10}, 0, false, -1, -1, 10, 10, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := CUSUM(tc.llr, tc.h)
			if r.Alarm != tc.alarm || r.AlarmIndex != tc.alarmIdx || r.OnsetIndex != tc.onsetIdx ||
				r.Max != tc.max || r.Last != tc.last || r.Steps != tc.steps {
				t.Errorf("CUSUM = %+v", r)
			}
		})
	}
}

func TestThreshold(t *testing.T) {
	h, arl0, err := Threshold(0.01, 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// 10 streams × 60 steps/h / 0.01 per hour = 60,000 steps.
	if !near(arl0, 60000, 1e-6) || !near(h, 11.002099841204238, 1e-12) {
		t.Errorf("Threshold = %v, %v", h, arl0)
	}
	if h, _, _ := Threshold(1e6, 1, time.Hour); h < 1 {
		t.Errorf("h = %v, want at least 1", h)
	}
	for _, bad := range []struct {
		f float64
		k int
		d time.Duration
	}{{0, 1, time.Minute}, {math.Inf(1), 1, time.Minute}, {0.1, 0, time.Minute}, {0.1, 1, 0}} {
		if _, _, err := Threshold(bad.f, bad.k, bad.d); !errors.Is(err, ErrDomain) {
			t.Errorf("Threshold(%v) err = %v", bad, err)
		}
	}
}

func TestSiegmundARL(t *testing.T) {
	// Montgomery, Table 9.3 (k = 1/2): h=4 → 336 / 8.38, h=5 → 930 / 10.4.
	for _, tc := range []struct{ delta, h, want, tol float64 }{
		{-0.5, 4, 336, 3},
		{0.5, 4, 8.38, 0.1},
		{-0.5, 5, 930, 10},
		{0.5, 5, 10.4, 0.1},
		{0, 4, 5.166 * 5.166, 1e-9},
	} {
		if got := SiegmundARL(tc.delta, tc.h); !near(got, tc.want, tc.tol) {
			t.Errorf("SiegmundARL(%v, %v) = %v, want %v±%v", tc.delta, tc.h, got, tc.want, tc.tol)
		}
	}
	if !math.IsNaN(SiegmundARL(math.NaN(), 1)) || !math.IsInf(ExpectedDelay(3, 0), 1) || ExpectedDelay(10, 2) != 5 {
		t.Error("edge cases")
	}
}

func TestRiskRatio(t *testing.T) {
	// Katz log interval; the same numbers as R's epitools::riskratio.wald.
	for _, tc := range []struct {
		x1, n1, x0, n0  float64
		est, low, upper float64
	}{
		{20, 100, 10, 100, 2, 0.9865632067317821, 4.054479198804628},
		{30, 1000, 10, 1000, 3, 1.4745052273578412, 6.103742348968852},
		{0, 50, 5, 50, 0.0909090909090909, 0.005160002133539394, 1.601639417200884}, // Haldane
	} {
		r, err := RiskRatio(tc.x1, tc.n1, tc.x0, tc.n0, 0.95)
		if err != nil {
			t.Fatal(err)
		}
		if !near(r.Estimate, tc.est, 1e-9) || !near(r.Lower, tc.low, 1e-8) || !near(r.Upper, tc.upper, 1e-8) {
			t.Errorf("RiskRatio(%v/%v vs %v/%v) = %+v", tc.x1, tc.n1, tc.x0, tc.n0, r)
		}
	}
	r, err := RateRatio(30, 1000, 15, 1000, 0.95)
	if err != nil || !near(r.Estimate, 2, 1e-12) || !near(r.Lower, 1.0761094202541792, 1e-8) || !near(r.Upper, 3.717094121390734, 1e-8) {
		t.Errorf("RateRatio = %+v, %v", r, err)
	}
	w := r.Widen(2)
	if !near(w.LogSE, 2*r.LogSE, 1e-12) || w.Lower >= r.Lower || w.Upper <= r.Upper || w.Estimate != r.Estimate {
		t.Errorf("Widen = %+v", w)
	}
	if r.Widen(0.5) != r {
		t.Error("Widen narrowed")
	}
	d, err := DiffInDiff(Ratio{Estimate: 4, LogSE: 0.3, Confidence: 0.95}, Ratio{Estimate: 2, LogSE: 0.4, Confidence: 0.95})
	if err != nil || !near(d.Estimate, 2, 1e-12) || !near(d.LogSE, 0.5, 1e-12) {
		t.Errorf("DiffInDiff = %+v, %v", d, err)
	}
	for _, bad := range [][4]float64{{11, 10, 1, 10}, {1, 0, 1, 10}, {-1, 10, 1, 10}, {math.NaN(), 10, 1, 10}} {
		if _, err := RiskRatio(bad[0], bad[1], bad[2], bad[3], 0.95); !errors.Is(err, ErrDomain) {
			t.Errorf("RiskRatio(%v) err = %v", bad, err)
		}
	}
	if _, err := RiskRatio(1, 10, 1, 10, 1.5); !errors.Is(err, ErrDomain) {
		t.Errorf("confidence 1.5 accepted")
	}
	if _, err := RateRatio(1, 0, 1, 1, 0.95); !errors.Is(err, ErrDomain) {
		t.Errorf("zero exposure accepted")
	}
	if _, err := DiffInDiff(Ratio{}, Ratio{Estimate: 1}); !errors.Is(err, ErrDomain) {
		t.Errorf("zero ratio accepted")
	}
}

func TestWilson(t *testing.T) {
	// Newcombe (1998), Statistics in Medicine 17:857–872, Table I, method 3.
	for _, tc := range []struct{ x, n, low, up float64 }{
		{81, 263, 0.2553, 0.3662},
		{15, 148, 0.0624, 0.1605},
		{0, 20, 0, 0.1611},
		{1, 29, 0.0061, 0.1718},
	} {
		iv, err := Wilson(tc.x, tc.n, 0.95)
		if err != nil || !near(iv.Lower, tc.low, 5e-5) || !near(iv.Upper, tc.up, 5e-5) {
			t.Errorf("Wilson(%v/%v) = %+v, %v; want [%v, %v]", tc.x, tc.n, iv, err, tc.low, tc.up)
		}
	}
	if _, err := Wilson(1, 0, 0.95); !errors.Is(err, ErrDomain) {
		t.Error("n=0 accepted")
	}
}

func TestDispersion(t *testing.T) {
	ns := []float64{1000, 1000, 1000, 1000}
	// Exactly binomial-sized deviations: χ² = 4·(±√(npq))²/npq = 4 → φ = 4/3.
	sd := math.Sqrt(1000 * 0.01 * 0.99)
	xs := []float64{10 + sd, 10 - sd, 10 + sd, 10 - sd}
	if got := Dispersion(xs, ns, 0.01); !near(got, 4.0/3, 1e-9) {
		t.Errorf("Dispersion = %v, want 4/3", got)
	}
	if got := Dispersion([]float64{10, 10, 10}, []float64{1000, 1000, 1000}, 0.01); got != 1 {
		t.Errorf("underdispersed = %v, want 1", got)
	}
	bursty := []float64{0, 40, 0, 0}
	if got := Dispersion(bursty, ns, 0.01); got < 10 {
		t.Errorf("bursty = %v, want large", got)
	}
	if got := PoissonDispersion([]float64{0, 40, 0, 0}, ns, 0.01); got < 10 {
		t.Errorf("poisson bursty = %v, want large", got)
	}
	c1, d1 := PearsonChi2(xs, ns, 0.01)
	c2, d2 := PoissonPearsonChi2(bursty, ns, 0.01)
	if !near(c1, 4, 1e-9) || d1 != 3 || d2 != 3 || DispersionOf(c1+c2, d1+d2) <= 1 || DispersionOf(5, 0) != 1 {
		t.Errorf("pooled χ² = %v/%d + %v/%d", c1, d1, c2, d2)
	}
	if Dispersion(nil, nil, 0.5) != 1 || Dispersion(xs, ns, 0) != 1 || PoissonDispersion(xs, ns, math.NaN()) != 1 {
		t.Error("degenerate inputs must give 1")
	}
}

func TestBucketQuantile(t *testing.T) {
	inf := math.Inf(1)
	b := []Bucket{{0.1, 50}, {0.25, 90}, {0.5, 99}, {1, 100}, {inf, 100}}
	for _, tc := range []struct{ q, want float64 }{
		{0.5, 0.1},   // rank 50 is the top of the first bucket
		{0.25, 0.05}, // interpolated from 0 in the first bucket
		{0.9, 0.25},  // rank 90
		{0.99, 0.5},  // rank 99
		{0.95, 0.25 + 0.25*(5.0/9)},
		{1, 1},
		{-0.1, math.Inf(-1)},
		{1.1, inf},
	} {
		if got := BucketQuantile(tc.q, b); !near(got, tc.want, 1e-12) {
			t.Errorf("BucketQuantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	// Rank in the +Inf bucket: highest finite bound.
	if got := BucketQuantile(0.99, []Bucket{{1, 10}, {inf, 100}}); got != 1 {
		t.Errorf("+Inf bucket: %v", got)
	}
	// Unsorted input, duplicate bounds and non-monotonic counts.
	if got := BucketQuantile(0.5, []Bucket{{inf, 100}, {1, 25}, {1, 25}, {0.5, 51}}); !near(got, 0.5*50/51, 1e-12) {
		t.Errorf("messy buckets: %v", got)
	}
	for _, bad := range [][]Bucket{nil, {{inf, 1}}, {{1, 1}, {2, 2}}, {{1, 0}, {inf, 0}}, {{1, math.NaN()}, {inf, 1}}} {
		if got := BucketQuantile(0.5, bad); !math.IsNaN(got) {
			t.Errorf("BucketQuantile(%v) = %v, want NaN", bad, got)
		}
	}
}

// TestCUSUMFalseAlarmRate checks Lorden's bound empirically: binomial
// streams in control must alarm no more often than once per e^h steps.
func TestCUSUMFalseAlarmRate(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const (
		p0      = 0.01
		n       = 400
		streams = 200
		steps   = 1000
	)
	p1 := 2 * p0
	h, arl0, err := Threshold(1, 1, time.Hour/60) // ARL0 = 60 steps: a deliberately loose threshold so alarms happen
	if err != nil {
		t.Fatal(err)
	}
	alarms := 0
	llr := make([]float64, steps)
	for range streams {
		for i := range llr {
			llr[i] = BinomialLLR(binomial(rng, n, p0), n, p0, p1)
		}
		// Count every alarm, restarting after each, as a watcher would.
		for rest := llr; ; {
			r := CUSUM(rest, h)
			if !r.Alarm {
				break
			}
			alarms++
			rest = rest[r.AlarmIndex+1:]
		}
	}
	rate := float64(alarms) / (streams * steps)
	t.Logf("h=%.2f: %d false alarms in %d in-control steps (rate %.5f, bound %.5f)", h, alarms, streams*steps, rate, 1/arl0)
	if rate > 1/arl0 {
		t.Errorf("false alarms %d in %d steps: rate %.5f exceeds 1/ARL0 = %.5f", alarms, streams*steps, rate, 1/arl0)
	}
	if alarms == 0 {
		t.Errorf("no false alarm at all at h = %.2f: the simulation is not exercising the bound", h)
	}
}

// TestCUSUMDetectionDelay checks the delay after a doubling of p0 against
// the h/KL approximation.
func TestCUSUMDetectionDelay(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const (
		p0 = 0.01
		n  = 1000
	)
	p1 := 2 * p0
	h, _, _ := Threshold(0.01, 100, time.Minute)
	want := ExpectedDelay(h, n*BinomialKL(p1, p0))
	total := 0.0
	const runs = 300
	for range runs {
		var llr []float64
		for i := 0; ; i++ {
			llr = append(llr, BinomialLLR(binomial(rng, n, p1), n, p0, p1))
			if r := CUSUM(llr, h); r.Alarm {
				total += float64(r.AlarmIndex + 1)
				break
			}
		}
	}
	mean := total / runs
	t.Logf("h=%.2f: mean delay %.2f steps, h/KL = %.2f", h, mean, want)
	// The approximation ignores the overshoot, so the mean is a little
	// larger; it must be of the same size.
	if mean < 0.8*want || mean > want+3 {
		t.Errorf("mean delay %.2f steps, approximation %.2f", mean, want)
	}
}

// binomial draws Binomial(n, p) by geometric skips between successes,
// O(n·p) per draw.
func binomial(rng *rand.Rand, n int, p float64) float64 {
	k, i := 0, 0
	lq := math.Log1p(-p)
	for {
		i += int(math.Floor(math.Log(1-rng.Float64())/lq)) + 1
		if i > n {
			return float64(k)
		}
		k++
	}
}
