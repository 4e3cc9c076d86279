package stats

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	mstats "github.com/montanaflynn/stats"
)

// ErrDomain reports an argument outside a function's domain (negative
// counts, x > n, a confidence level outside (0,1), NaN, ...).
var ErrDomain = errors.New("argument out of domain")

func finite(v ...float64) bool {
	for _, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return false
		}
	}
	return true
}

// ZQuantile returns the standard normal quantile Φ⁻¹(p) for p in (0,1), NaN
// otherwise.
func ZQuantile(p float64) float64 {
	if !(p > 0 && p < 1) {
		return math.NaN()
	}
	return mstats.NormPpf(p, 0, 1)
}

// NormalCDF returns Φ(z).
func NormalCDF(z float64) float64 {
	if math.IsNaN(z) {
		return math.NaN()
	}
	return mstats.NormCdf(z, 0, 1)
}

// twoSidedZ returns z_{1-(1-conf)/2}.
func twoSidedZ(conf float64) (float64, error) {
	if !(conf > 0 && conf < 1) {
		return 0, fmt.Errorf("confidence %v not in (0,1): %w", conf, ErrDomain)
	}
	return ZQuantile(1 - (1-conf)/2), nil
}

// BinomialLLR is the log-likelihood ratio of x successes in n trials under
// p1 against p0. Both probabilities must lie in (0,1); otherwise, and for
// non-finite or negative inputs, it returns NaN.
func BinomialLLR(x, n, p0, p1 float64) float64 {
	if !finite(x, n, p0, p1) || x < 0 || n < x || !(p0 > 0 && p0 < 1) || !(p1 > 0 && p1 < 1) {
		return math.NaN()
	}
	return x*math.Log(p1/p0) + (n-x)*math.Log((1-p1)/(1-p0))
}

// PoissonLLR is the log-likelihood ratio of x events over exposure n under
// rate1 against rate0 (both positive). Invalid inputs give NaN.
func PoissonLLR(x, exposure, rate0, rate1 float64) float64 {
	if !finite(x, exposure, rate0, rate1) || x < 0 || exposure < 0 || rate0 <= 0 || rate1 <= 0 {
		return math.NaN()
	}
	return x*math.Log(rate1/rate0) - exposure*(rate1-rate0)
}

// BinomialKL is the Kullback–Leibler divergence KL(Ber(p1) ‖ Ber(p0)) per
// trial: the expected LLR increment per trial once the change happened.
func BinomialKL(p1, p0 float64) float64 {
	if !(p0 > 0 && p0 < 1) || !(p1 > 0 && p1 < 1) {
		return math.NaN()
	}
	return p1*math.Log(p1/p0) + (1-p1)*math.Log((1-p1)/(1-p0))
}

// PoissonKL is KL(Poisson(rate1) ‖ Poisson(rate0)) per unit of exposure.
func PoissonKL(rate1, rate0 float64) float64 {
	if !(rate0 > 0) || !(rate1 > 0) || !finite(rate0, rate1) {
		return math.NaN()
	}
	return rate1*math.Log(rate1/rate0) - rate1 + rate0
}

// CUSUMResult is the outcome of a one-sided CUSUM over a sequence of
// log-likelihood-ratio increments.
type CUSUMResult struct {
	// Alarm is true when the statistic reached the threshold.
	Alarm bool
	// AlarmIndex is the first index at which S ≥ h, or -1.
	AlarmIndex int
	// OnsetIndex estimates the change point of the alarm: the first index
	// of the excursion of S above zero that ended in the alarm, or -1.
	OnsetIndex int
	// Max is the largest value S took, and MaxIndex where (-1 if none).
	Max      float64
	MaxIndex int
	// Last is S after the final increment.
	Last float64
	// Steps counts the increments used (finite ones).
	Steps int
}

// CUSUM runs Page's one-sided CUSUM S_t = max(0, S_{t-1} + llr_t) and
// reports the first time S reaches h. Non-finite increments (missing steps)
// leave S unchanged. A threshold that is not positive and finite yields no
// alarm.
func CUSUM(llr []float64, h float64) CUSUMResult {
	res := CUSUMResult{AlarmIndex: -1, OnsetIndex: -1, MaxIndex: -1}
	valid := h > 0 && !math.IsInf(h, 0)
	s := 0.0
	start := -1 // first index of the current excursion above zero
	for i, l := range llr {
		if !finite(l) {
			continue
		}
		res.Steps++
		s += l
		if s <= 0 {
			s = 0
			start = -1
		} else if start < 0 {
			start = i
		}
		if s > res.Max {
			res.Max, res.MaxIndex = s, i
		}
		if valid && !res.Alarm && s >= h {
			res.Alarm, res.AlarmIndex, res.OnsetIndex = true, i, start
		}
	}
	res.Last = s
	return res
}

// Threshold returns the CUSUM threshold h = ln(ARL0) that keeps the false
// alarms of streams CUSUMs, each updated every step, at or below
// falseAlarmsPerHour in total, by Lorden's bound ARL0 ≥ e^h and a
// Bonferroni split across streams. It also returns ARL0 in steps.
func Threshold(falseAlarmsPerHour float64, streams int, step time.Duration) (h, arl0 float64, err error) {
	if !(falseAlarmsPerHour > 0) || math.IsInf(falseAlarmsPerHour, 0) {
		return 0, 0, fmt.Errorf("false alarms per hour %v must be positive: %w", falseAlarmsPerHour, ErrDomain)
	}
	if streams < 1 {
		return 0, 0, fmt.Errorf("streams %d must be at least 1: %w", streams, ErrDomain)
	}
	if step <= 0 {
		return 0, 0, fmt.Errorf("step %v must be positive: %w", step, ErrDomain)
	}
	stepsPerHour := float64(time.Hour) / float64(step)
	arl0 = float64(streams) * stepsPerHour / falseAlarmsPerHour
	if arl0 < math.E {
		// Fewer than e steps between false alarms is no test at all; keep
		// h ≥ 1.
		arl0 = math.E
	}
	return math.Log(arl0), arl0, nil
}

// ExpectedDelay approximates the CUSUM's detection delay in steps after a
// change, h / I, where I is the expected LLR increment per step after the
// change (the Kullback–Leibler information per step). It returns +Inf when
// I is not positive.
func ExpectedDelay(h, infoPerStep float64) float64 {
	if !(infoPerStep > 0) || math.IsNaN(h) {
		return math.Inf(1)
	}
	return h / infoPerStep
}

// SiegmundARL is Siegmund's approximation of the average run length of a
// one-sided CUSUM on unit-variance normal increments with drift δ = μ − k
// (mean minus reference value) and threshold h, both in standard
// deviations:
//
//	ARL ≈ (e^{−2δb} + 2δb − 1) / (2δ²),  b = h + 1.166,  and b² for δ = 0.
//
// For k = 0.5, h = 4 it gives ≈ 338 in control (δ = −0.5) and ≈ 8.3 for a
// one-sigma shift (δ = 0.5); the exact values are 336 and 8.38 (Montgomery,
// Introduction to Statistical Quality Control, Table 9.3).
func SiegmundARL(delta, h float64) float64 {
	if !finite(delta, h) || h < 0 {
		return math.NaN()
	}
	b := h + 1.166
	if math.Abs(delta) < 1e-12 {
		return b * b
	}
	return (math.Exp(-2*delta*b) + 2*delta*b - 1) / (2 * delta * delta)
}

// MinSamplesForQuantileCI returns the smallest sample size n for which the
// order statistics of n draws from any continuous distribution contain a
// two-sided interval for the q-quantile with coverage at least conf: the
// smallest n with max(q, 1−q)^n ≤ (1−conf)/2. For q = 0.99, conf = 0.95
// that is 368.
func MinSamplesForQuantileCI(q, conf float64) (int, error) {
	if !(q > 0 && q < 1) {
		return 0, fmt.Errorf("quantile %v not in (0,1): %w", q, ErrDomain)
	}
	if !(conf > 0 && conf < 1) {
		return 0, fmt.Errorf("confidence %v not in (0,1): %w", conf, ErrDomain)
	}
	m := math.Max(q, 1-q)
	n := math.Ceil(math.Log((1-conf)/2) / math.Log(m))
	if !(n >= 1 && n <= 1e12) {
		return 0, fmt.Errorf("quantile %v at confidence %v needs more than 10^12 samples: %w", q, conf, ErrDomain)
	}
	// Guard against rounding: n must satisfy the inequality, n-1 must not.
	for math.Pow(m, n) > (1-conf)/2 {
		n++
	}
	for n > 1 && math.Pow(m, n-1) <= (1-conf)/2 {
		n--
	}
	return int(n), nil
}

// Ratio is a ratio estimate with a confidence interval computed on the log
// scale.
type Ratio struct {
	Estimate   float64 `json:"estimate"`
	Lower      float64 `json:"lower"`
	Upper      float64 `json:"upper"`
	LogSE      float64 `json:"log_se"`
	Confidence float64 `json:"confidence"`
}

func newRatio(logEst, se, conf float64) (Ratio, error) {
	z, err := twoSidedZ(conf)
	if err != nil {
		return Ratio{}, err
	}
	r := Ratio{
		Estimate:   math.Exp(logEst),
		Lower:      math.Exp(logEst - z*se),
		Upper:      math.Exp(logEst + z*se),
		LogSE:      se,
		Confidence: conf,
	}
	if !finite(logEst, se) || math.IsNaN(r.Lower) || math.IsNaN(r.Upper) {
		return Ratio{}, fmt.Errorf("ratio exp(%v ± %v·%v) not representable: %w", logEst, z, se, ErrDomain)
	}
	return r, nil
}

// Widen multiplies the log-scale standard error by f ≥ 1 (for example
// √φ for an overdispersion φ) and recomputes the interval.
func (r Ratio) Widen(f float64) Ratio {
	if !(f > 1) || math.IsInf(f, 0) || !(r.Estimate > 0) {
		return r
	}
	out, err := newRatio(math.Log(r.Estimate), r.LogSE*f, r.Confidence)
	if err != nil {
		return r
	}
	return out
}

// RiskRatio estimates (x1/n1)/(x0/n0) with the Katz log interval at level
// conf. When any cell of the 2×2 table is zero, 0.5 is added to every cell
// (Haldane–Anscombe), so the estimate stays finite.
func RiskRatio(x1, n1, x0, n0, conf float64) (Ratio, error) {
	if !finite(x1, n1, x0, n0) || x1 < 0 || x0 < 0 || n1 <= 0 || n0 <= 0 || x1 > n1 || x0 > n0 {
		return Ratio{}, fmt.Errorf("risk ratio of %v/%v over %v/%v: %w", x1, n1, x0, n0, ErrDomain)
	}
	if x1 == 0 || x0 == 0 || x1 == n1 || x0 == n0 {
		x1, x0 = x1+0.5, x0+0.5
		n1, n0 = n1+1, n0+1
	}
	se := math.Sqrt(1/x1 - 1/n1 + 1/x0 - 1/n0)
	return newRatio(math.Log((x1/n1)/(x0/n0)), se, conf)
}

// RateRatio estimates (x1/t1)/(x0/t0) for Poisson counts x over exposures t,
// with the log (Wald) interval ln RR ± z·√(1/x1 + 1/x0). Zero counts get
// 0.5 added to both.
func RateRatio(x1, t1, x0, t0, conf float64) (Ratio, error) {
	if !finite(x1, t1, x0, t0) || x1 < 0 || x0 < 0 || t1 <= 0 || t0 <= 0 {
		return Ratio{}, fmt.Errorf("rate ratio of %v/%v over %v/%v: %w", x1, t1, x0, t0, ErrDomain)
	}
	if x1 == 0 || x0 == 0 {
		x1, x0 = x1+0.5, x0+0.5
	}
	se := math.Sqrt(1/x1 + 1/x0)
	return newRatio(math.Log((x1/t1)/(x0/t0)), se, conf)
}

// DiffInDiff returns the ratio of two ratios, a/b, with the standard error
// of the difference of independent log ratios and the confidence of a.
func DiffInDiff(a, b Ratio) (Ratio, error) {
	if !(a.Estimate > 0) || !(b.Estimate > 0) || !finite(a.Estimate, b.Estimate, a.LogSE, b.LogSE) || a.LogSE < 0 || b.LogSE < 0 {
		return Ratio{}, fmt.Errorf("difference in differences of %v and %v: %w", a.Estimate, b.Estimate, ErrDomain)
	}
	se := math.Sqrt(a.LogSE*a.LogSE + b.LogSE*b.LogSE)
	return newRatio(math.Log(a.Estimate)-math.Log(b.Estimate), se, a.Confidence)
}

// Interval is a confidence interval for a single quantity.
type Interval struct {
	Lower float64 `json:"lower"`
	Upper float64 `json:"upper"`
}

// Wilson returns the Wilson score interval for x successes in n trials.
func Wilson(x, n, conf float64) (Interval, error) {
	if !finite(x, n) || x < 0 || n <= 0 || x > n {
		return Interval{}, fmt.Errorf("proportion %v/%v: %w", x, n, ErrDomain)
	}
	z, err := twoSidedZ(conf)
	if err != nil {
		return Interval{}, err
	}
	p := x / n
	z2 := z * z
	center := (p + z2/(2*n)) / (1 + z2/n)
	half := z / (1 + z2/n) * math.Sqrt(p*(1-p)/n+z2/(4*n*n))
	return Interval{Lower: math.Max(0, center-half), Upper: math.Min(1, center+half)}, nil
}

// Dispersion estimates the binomial overdispersion φ = χ²/(m−1) of m steps
// with xs[i] events out of ns[i] trials around the common proportion p,
// χ² = Σ (x−n·p)² / (n·p·(1−p)). Steps with non-finite or empty counts are
// skipped. The result is at least 1 (no underdispersion credit); with
// fewer than two usable steps, or p outside (0,1), it is 1.
func Dispersion(xs, ns []float64, p float64) float64 {
	return DispersionOf(PearsonChi2(xs, ns, p))
}

// PoissonDispersion is Dispersion for Poisson counts at rate λ per unit of
// exposure: χ² = Σ (x−n·λ)² / (n·λ).
func PoissonDispersion(xs, ns []float64, rate float64) float64 {
	return DispersionOf(PoissonPearsonChi2(xs, ns, rate))
}

// DispersionOf returns max(1, χ²/df), or 1 when df < 1. Sums of χ² and df
// over several streams give a pooled estimate, steadier than any one
// stream's.
func DispersionOf(chi2 float64, df int) float64 {
	if df < 1 || !finite(chi2) {
		return 1
	}
	return math.Max(1, chi2/float64(df))
}

// PearsonChi2 returns Pearson's χ² of binomial counts around p and its
// degrees of freedom (usable steps − 1, one parameter estimated).
func PearsonChi2(xs, ns []float64, p float64) (float64, int) {
	if !(p > 0 && p < 1) {
		return 0, 0
	}
	return pearson(xs, ns, func(n float64) float64 { return n * p * (1 - p) }, p)
}

// PoissonPearsonChi2 is PearsonChi2 for Poisson counts at rate λ.
func PoissonPearsonChi2(xs, ns []float64, rate float64) (float64, int) {
	if !(rate > 0) || math.IsInf(rate, 0) {
		return 0, 0
	}
	return pearson(xs, ns, func(n float64) float64 { return n * rate }, rate)
}

func pearson(xs, ns []float64, variance func(n float64) float64, p float64) (float64, int) {
	m := min(len(xs), len(ns))
	chi2, used := 0.0, 0
	for i := range m {
		x, n := xs[i], ns[i]
		if !finite(x, n) || n <= 0 || x < 0 {
			continue
		}
		v := variance(n)
		if !(v > 0) {
			continue
		}
		d := x - n*p
		chi2 += d * d / v
		used++
	}
	if used < 2 {
		return 0, 0
	}
	return chi2, used - 1
}

// Bucket is one cumulative classic-histogram bucket: Count observations at
// or below UpperBound.
type Bucket struct {
	UpperBound float64
	Count      float64
}

// BucketQuantile estimates the q-quantile from cumulative buckets the way
// Prometheus' histogram_quantile does. The buckets need not be sorted; the
// last one must be +Inf. It returns NaN when there are fewer than two
// buckets, no +Inf bucket, no observations or a non-finite count, -Inf for
// q < 0 and +Inf for q > 1.
func BucketQuantile(q float64, buckets []Bucket) float64 {
	if math.IsNaN(q) {
		return math.NaN()
	}
	if q < 0 {
		return math.Inf(-1)
	}
	if q > 1 {
		return math.Inf(1)
	}
	if len(buckets) < 2 {
		return math.NaN()
	}
	bs := make([]Bucket, len(buckets))
	copy(bs, buckets)
	sort.Slice(bs, func(i, j int) bool { return bs[i].UpperBound < bs[j].UpperBound })
	if !math.IsInf(bs[len(bs)-1].UpperBound, 1) {
		return math.NaN()
	}
	for _, b := range bs {
		if math.IsNaN(b.UpperBound) || !finite(b.Count) {
			return math.NaN()
		}
	}
	// Coalesce buckets with the same bound (le="1" and le="1.0") and
	// enforce monotonicity, as Prometheus does: buckets scraped at slightly
	// different times can be a little off.
	merged := bs[:1]
	for _, b := range bs[1:] {
		if b.UpperBound == merged[len(merged)-1].UpperBound {
			merged[len(merged)-1].Count += b.Count
			continue
		}
		merged = append(merged, b)
	}
	bs = merged
	if len(bs) < 2 {
		return math.NaN()
	}
	for i := 1; i < len(bs); i++ {
		if bs[i].Count < bs[i-1].Count {
			bs[i].Count = bs[i-1].Count
		}
	}
	total := bs[len(bs)-1].Count
	if !(total > 0) {
		return math.NaN()
	}
	rank := q * total
	b := sort.Search(len(bs)-1, func(i int) bool { return bs[i].Count >= rank })
	if b == len(bs)-1 {
		return bs[len(bs)-2].UpperBound
	}
	if b == 0 && bs[0].UpperBound <= 0 {
		return bs[0].UpperBound
	}
	start, end, count := 0.0, bs[b].UpperBound, bs[b].Count
	if b > 0 {
		start = bs[b-1].UpperBound
		count -= bs[b-1].Count
		rank -= bs[b-1].Count
	}
	if count == 0 {
		return end
	}
	return start + (end-start)*(rank/count)
}
