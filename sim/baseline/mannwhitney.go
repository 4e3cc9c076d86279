package baseline

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// UTest is the result of a one-sided Mann–Whitney U test of whether the
// second sample tends to be larger than the first.
type UTest struct {
	// U is the statistic of the second sample: the number of pairs (x, y)
	// with y > x, ties counting one half.
	U float64
	// Z is the standardised statistic with continuity and tie correction.
	Z float64
	// P is the one-sided p-value from the normal approximation.
	P float64
}

// MannWhitney tests whether y tends to be larger than x. It uses the
// normal approximation with a continuity correction of ½ and the tie
// correction of the variance, as R's wilcox.test(exact = FALSE, correct =
// TRUE) and SciPy's mannwhitneyu(method="asymptotic") do; it needs at
// least two values in each sample. NaN values are dropped.
func MannWhitney(x, y []float64) (UTest, error) {
	x, y = finite(x), finite(y)
	nx, ny := float64(len(x)), float64(len(y))
	if len(x) < 2 || len(y) < 2 {
		return UTest{}, fmt.Errorf("mann-whitney: need at least 2 values per sample, have %d and %d", len(x), len(y))
	}
	type obs struct {
		v    float64
		isY  bool
		rank float64
	}
	all := make([]obs, 0, len(x)+len(y))
	for _, v := range x {
		all = append(all, obs{v: v})
	}
	for _, v := range y {
		all = append(all, obs{v: v, isY: true})
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].v < all[j].v })
	var ties float64 // Σ(t³ − t) over groups of ties
	for i := 0; i < len(all); {
		j := i
		for j < len(all) && all[j].v == all[i].v {
			j++
		}
		r := float64(i+j+1) / 2 // average of ranks i+1 … j
		for k := i; k < j; k++ {
			all[k].rank = r
		}
		if t := float64(j - i); t > 1 {
			ties += t*t*t - t
		}
		i = j
	}
	var ry float64
	for _, o := range all {
		if o.isY {
			ry += o.rank
		}
	}
	n := nx + ny
	u := ry - ny*(ny+1)/2
	mean := nx * ny / 2
	variance := nx * ny / 12 * ((n + 1) - ties/(n*(n-1)))
	if variance <= 0 {
		// Every value is the same: no evidence either way.
		return UTest{U: u, Z: 0, P: 0.5}, nil
	}
	z := (u - mean - 0.5) / math.Sqrt(variance)
	return UTest{U: u, Z: z, P: 0.5 * math.Erfc(z/math.Sqrt2)}, nil
}

func finite(v []float64) []float64 {
	out := make([]float64, 0, len(v))
	for _, f := range v {
		if !math.IsNaN(f) && !math.IsInf(f, 0) {
			out = append(out, f)
		}
	}
	return out
}

// median returns the median of the finite values of v, NaN if none.
func median(v []float64) float64 {
	f := finite(v)
	if len(f) == 0 {
		return math.NaN()
	}
	sort.Float64s(f)
	if len(f)%2 == 1 {
		return f[len(f)/2]
	}
	return (f[len(f)/2-1] + f[len(f)/2]) / 2
}

// Metric is one metric a canary judge compares: a PromQL expression giving
// one value per step (a per-minute p99, a retry ratio).
type Metric struct {
	Name string
	Expr string
}

// Judge is a fixed-window canary judge in the style of Kayenta's
// NetflixACAJudge: for every change, it compares a metric's per-step values
// in the window after the change (skipping a warm-up) with those in the
// window before it, and fails the change when the values after are larger
// with p < Alpha and their median is at least MinRatio times the median
// before. The verdict comes at the end of the window after the change.
type Judge struct {
	Metrics []Metric
	// Before and After are the window lengths; Warmup is skipped after the
	// change; Step is the resolution (one value per step).
	Before, Warmup, After, Step time.Duration
	Alpha                       float64
	MinRatio                    float64
}

// Verdict is the judgement of one change.
type Verdict struct {
	Change time.Time `json:"change"`
	At     time.Time `json:"at"`
	Failed bool      `json:"failed"`
	// Detail gives each metric's medians, ratio and p-value.
	Detail []string `json:"detail"`
}

// Validate checks the judge's settings.
func (j Judge) Validate() error {
	switch {
	case len(j.Metrics) == 0:
		return errors.New("judge: no metrics")
	case j.Before <= 0 || j.After <= 0 || j.Step <= 0 || j.Warmup < 0:
		return errors.New("judge: windows and step must be positive")
	case !(j.Alpha > 0 && j.Alpha < 0.5):
		return fmt.Errorf("judge: alpha %v is outside (0, 0.5)", j.Alpha)
	case !(j.MinRatio >= 1):
		return fmt.Errorf("judge: min ratio %v is below 1", j.MinRatio)
	}
	return nil
}

// Judge judges the changes at the given times, merging changes that come
// within the warm-up of each other (the judgement starts after the last).
// Changes whose window after ends later than end are not judged.
func (j Judge) Judge(ctx context.Context, q Querier, changes []time.Time, end time.Time) ([]Verdict, error) {
	if err := j.Validate(); err != nil {
		return nil, err
	}
	cs := append([]time.Time(nil), changes...)
	sort.Slice(cs, func(a, b int) bool { return cs[a].Before(cs[b]) })
	var merged []time.Time
	for _, c := range cs {
		if n := len(merged); n > 0 && c.Sub(merged[n-1]) <= j.Warmup {
			merged[n-1] = c
			continue
		}
		merged = append(merged, c)
	}
	var out []Verdict
	for _, c := range merged {
		first := c.Add(j.Warmup)
		at := first.Add(j.After)
		if at.After(end) {
			continue
		}
		v := Verdict{Change: c, At: at}
		for _, m := range j.Metrics {
			before, err := values(ctx, q, m.Expr, c.Add(-j.Before), c.Add(-j.Step), j.Step)
			if err != nil {
				return nil, fmt.Errorf("judge %s: %w", m.Name, err)
			}
			after, err := values(ctx, q, m.Expr, first.Add(j.Step), at, j.Step)
			if err != nil {
				return nil, fmt.Errorf("judge %s: %w", m.Name, err)
			}
			t, err := MannWhitney(before, after)
			if err != nil {
				v.Detail = append(v.Detail, fmt.Sprintf("%s: no judgement (%v)", m.Name, err))
				continue
			}
			mb, ma := median(before), median(after)
			ratio := ma / mb
			fail := t.P < j.Alpha && (ratio >= j.MinRatio || (mb == 0 && ma > 0))
			v.Failed = v.Failed || fail
			v.Detail = append(v.Detail, fmt.Sprintf("%s: median %.4g → %.4g (×%.2f), U=%.0f p=%.2g", m.Name, mb, ma, ratio, t.U, t.P))
		}
		out = append(out, v)
	}
	return out, nil
}

// values returns one value per step in [from, to]; steps without a value
// are NaN. Several series are summed.
func values(ctx context.Context, q Querier, expr string, from, to time.Time, step time.Duration) ([]float64, error) {
	if to.Before(from) {
		return nil, nil
	}
	n := int(to.Sub(from)/step) + 1
	out := make([]float64, n)
	for i := range out {
		out[i] = math.NaN()
	}
	v, _, err := q.QueryRange(ctx, expr, v1.Range{Start: from, End: to, Step: step})
	if err != nil {
		return nil, err
	}
	m, ok := v.(model.Matrix)
	if !ok {
		return nil, fmt.Errorf("range query returned %s, not a matrix", v.Type())
	}
	for _, ss := range m {
		for _, p := range ss.Values {
			if i := stepIndex(from, step, p.Timestamp.Time()); i >= 0 && i < n {
				if math.IsNaN(out[i]) {
					out[i] = 0
				}
				out[i] += float64(p.Value)
			}
		}
	}
	return out, nil
}
