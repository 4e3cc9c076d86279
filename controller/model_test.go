package controller

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestEstimateFailureProbability(t *testing.T) {
	for _, tc := range []struct {
		r    float64
		n    int
		want float64
	}{
		{r: 0, n: 6, want: 0},
		{r: math.NaN(), n: 6, want: 0},
		{r: 0.03, n: 0, want: 0.03 / 1.03},   // unbounded: p = r/(1+r)
		{r: 0.5, n: 2, want: 0.5},            // one retry at most: r = p
		{r: 0.75, n: 3, want: 0.5},           // 0.5 + 0.25
		{r: 2, n: 3, want: 0.999},            // r at its bound n−1
		{r: 5, n: 3, want: 0.999},            // beyond: clamped
		{r: 1, n: 0, want: 0.5},              // unbounded
		{r: 0.0309278, n: 6, want: 0.030000}, // p + … + p⁵ at p = 0.03
	} {
		got := EstimateFailureProbability(tc.r, tc.n)
		if math.Abs(got-tc.want) > 1e-5 {
			t.Errorf("EstimateFailureProbability(%v, %d) = %v, want %v", tc.r, tc.n, got, tc.want)
		}
	}
	// Round trip over a grid.
	for _, n := range []int{2, 3, 6, 10} {
		for _, p := range []float64{0.001, 0.01, 0.1, 0.5, 0.9} {
			r := RetriesPerCall(p, n)
			if got := EstimateFailureProbability(r, n); math.Abs(got-p) > 1e-9 {
				t.Errorf("n=%d p=%v: r=%v → %v", n, p, r, got)
			}
		}
	}
}

func TestRetriesAtQuantile(t *testing.T) {
	for _, tc := range []struct {
		p, q float64
		n    int
		want int
	}{
		{p: 0.005, q: 0.99, n: 6, want: 0},
		{p: 0.01, q: 0.99, n: 6, want: 0}, // p^1 = 1−q exactly
		{p: 0.03, q: 0.99, n: 6, want: 1},
		{p: 0.2, q: 0.99, n: 6, want: 2}, // 0.2³ = 0.008 ≤ 0.01
		{p: 0.5, q: 0.99, n: 3, want: 2}, // bounded by n−1
		{p: 0.03, q: 0.999, n: 6, want: 1},
		{p: 0.5, q: 0.5, n: 6, want: 0},
	} {
		if got := RetriesAtQuantile(tc.p, tc.q, tc.n); got != tc.want {
			t.Errorf("RetriesAtQuantile(%v, %v, %d) = %d, want %d", tc.p, tc.q, tc.n, got, tc.want)
		}
	}
	if got := ExhaustionProbability(0.5, 6); got != 1.0/64 {
		t.Errorf("ExhaustionProbability = %v", got)
	}
}

func TestDelayFormulas(t *testing.T) {
	k := Constants{Base: ms(100), Cap: ms(1000), Multiplier: 2, Jitter: 0.2}
	out := make([]float64, 6)
	delays("exponential", effective("exponential", k), []float64{0.5, 0.5, 0.5, 0.5, 0.5, 0.5}, out)
	if want := []float64{0.1, 0.2, 0.4, 0.8, 1, 1}; !slices.EqualFunc(out, want, approx) {
		t.Errorf("exponential %v, want %v", out, want)
	}
	delays("full-jitter", effective("full-jitter", k), []float64{0, 0.5, 0.999, 0.5, 0.5, 0.25}, out)
	if want := []float64{0, 0.1, 0.3996, 0.4, 0.5, 0.25}; !slices.EqualFunc(out, want, approx) {
		t.Errorf("full-jitter %v, want %v", out, want)
	}
	delays("equal-jitter", effective("equal-jitter", k), []float64{0, 1, 0, 0, 0, 0}, out)
	if want := []float64{0.05, 0.2, 0.2, 0.4, 0.5, 0.5}; !slices.EqualFunc(out, want, approx) {
		t.Errorf("equal-jitter %v, want %v", out, want)
	}
	// decorrelated: base + u·(3·prev − base), prev clamped to [base, cap].
	delays("decorrelated", effective("decorrelated", Constants{Base: ms(100), Cap: ms(1000)}), []float64{0.5, 1, 1, 0, 0.5, 1}, out)
	if want := []float64{0.2, 0.6, 1, 0.1, 0.2, 0.6}; !slices.EqualFunc(out, want, approx) {
		t.Errorf("decorrelated %v, want %v", out, want)
	}
	// grpc: exp(n)·(1 ± jitter), multiplier 1.6 by default, capped.
	delays("grpc", effective("grpc", Constants{Base: ms(100), Cap: ms(200)}), []float64{0, 1, 0.5, 1, 0, 0}, out)
	if want := []float64{0.08, 0.192, 0.2, 0.2, 0.16, 0.16}; !slices.EqualFunc(out, want, approx) {
		t.Errorf("grpc %v, want %v", out, want)
	}
}

func approx(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

// TestQuantileClosedForms checks the mixture quantile where it has a closed
// form.
func TestQuantileClosedForms(t *testing.T) {
	u := newUniforms(modelPaths, 10)
	L := ms(40)
	// Exponential, p = 0.03: the 0.99-quantile call makes one retry;
	// P(Y > 2L + base) = p² < 0.01, so the quantile is exactly 2L + base.
	m := newRetryModel(0.03, L, []mixCohort{{1, "exponential", Constants{Base: ms(50), Cap: ms(500), MaxAttempts: 3}}}, u)
	if got := m.Quantile(0.99); math.Abs(got-0.13) > 1e-6 {
		t.Errorf("exponential quantile %v, want 0.13", got)
	}
	// p = 0.005: the quantile call makes no retry: Y = L.
	m = newRetryModel(0.005, L, []mixCohort{{1, "exponential", Constants{Base: ms(50), Cap: ms(500), MaxAttempts: 3}}}, u)
	if got := m.Quantile(0.99); math.Abs(got-0.04) > 1e-6 {
		t.Errorf("no-retry quantile %v, want 0.04", got)
	}
	// Full jitter, p = 0.03, n = 2: P(Y > 2L + x) = p·(1 − x/base) = 0.01
	// ⇒ x = base·(1 − 1/3).
	m = newRetryModel(0.03, L, []mixCohort{{1, "full-jitter", Constants{Base: ms(300), Cap: ms(1000), MaxAttempts: 2}}}, u)
	if got, want := m.Quantile(0.99), 0.08+0.3*(2.0/3); math.Abs(got-want) > 0.005 {
		t.Errorf("full-jitter quantile %v, want %v", got, want)
	}
	// Decorrelated, p = 0.03, n = 2: the first delay is U(base, 3·base):
	// x = base + 2·base·(2/3).
	m = newRetryModel(0.03, L, []mixCohort{{1, "decorrelated", Constants{Base: ms(100), Cap: ms(2000), MaxAttempts: 2}}}, u)
	if got, want := m.Quantile(0.99), 0.08+0.1+0.2*(2.0/3); math.Abs(got-want) > 0.005 {
		t.Errorf("decorrelated quantile %v, want %v", got, want)
	}
	// A 50/50 mix: only half the calls take the long delay.
	m = newRetryModel(0.03, L, []mixCohort{
		{0.5, "decorrelated", Constants{Base: ms(100), Cap: ms(2000), MaxAttempts: 2}},
		{0.5, "exponential", Constants{Base: ms(50), Cap: ms(500), MaxAttempts: 2}},
	}, u)
	// P(Y > 2L + x) = 0.5·0.03·P(U(0.1,0.3) > x) = 0.01 for x > 0.05.
	if got, want := m.Quantile(0.99), 0.08+0.1+0.2*(1.0/3); math.Abs(got-want) > 0.005 {
		t.Errorf("mix quantile %v, want %v", got, want)
	}
	if got := m.RetryRatio(); math.Abs(got-0.03) > 1e-9 {
		t.Errorf("mix retry ratio %v", got)
	}
}

// TestQuantileAgainstBruteForce compares the model with a direct
// simulation of calls, for every strategy, with an independent random
// source.
func TestQuantileAgainstBruteForce(t *testing.T) {
	u := newUniforms(modelPaths, 10)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, strategy := range []string{"exponential", "full-jitter", "equal-jitter", "decorrelated", "grpc"} {
		for _, p := range []float64{0.02, 0.15, 0.4} { // away from p^k = 1−q, where the quantile jumps
			k := effective(strategy, Constants{Base: ms(80), Cap: ms(1500), MaxAttempts: 5})
			m := newRetryModel(p, ms(30), []mixCohort{{1, strategy, k}}, u)
			const calls = 200000
			ys := make([]float64, calls)
			d := make([]float64, k.MaxAttempts-1)
			row := make([]float64, k.MaxAttempts-1)
			for i := range ys {
				for j := range row {
					row[j] = rng.Float64()
				}
				delays(strategy, k, row, d)
				y := 0.03
				for a := 1; a < k.MaxAttempts && rng.Float64() < p; a++ {
					y += 0.03 + d[a-1]
				}
				ys[i] = y
			}
			slices.Sort(ys)
			for _, q := range []float64{0.9, 0.99, 0.999} {
				want := ys[int(q*calls)]
				got := m.Quantile(q)
				if math.Abs(got-want) > 0.03*want+0.002 {
					t.Errorf("%s p=%v q=%v: model %.4f, simulation %.4f", strategy, p, q, got, want)
				}
			}
		}
	}
}

func TestConstantsJSON(t *testing.T) {
	k := Constants{Base: ms(100), Cap: 2 * time.Second, Multiplier: 3, MaxAttempts: 6, MaxElapsed: 10 * time.Second, RetryBudget: 0.1}
	b, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"base":"100ms","cap":"2s","multiplier":3,"maxAttempts":6,"maxElapsed":"10s","retryBudget":0.1}`; string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
	var back Constants
	if err := json.Unmarshal(b, &back); err != nil || back != k {
		t.Errorf("round trip: %v %+v", err, back)
	}
	if err := json.Unmarshal([]byte(`{"base":"fast"}`), &back); err == nil {
		t.Error("bad duration accepted")
	}
}

func FuzzConstantsJSON(f *testing.F) {
	f.Add([]byte(`{"base":"100ms","cap":"2s","multiplier":2,"jitter":0.2,"maxAttempts":6,"maxElapsed":"10s"}`))
	f.Add([]byte(`{"cap":"1h30m"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var k Constants
		if err := json.Unmarshal(b, &k); err != nil {
			return
		}
		out, err := json.Marshal(k)
		if err != nil {
			t.Fatal(err)
		}
		var back Constants
		if err := json.Unmarshal(out, &back); err != nil || back != k {
			t.Fatalf("round trip of %s: %s → %+v (%v)", b, out, back, err)
		}
	})
}

func BenchmarkTuneDecision(b *testing.B) {
	svc := shop(b, nil)
	obs := observe(0.51, upgraded())
	for b.Loop() {
		Decide(svc, State{}, obs, t0)
	}
}
