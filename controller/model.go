package controller

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"time"

	"github.com/tailguard/tailguard/controller/policy"
)

// Model parameters. The delay distributions are evaluated on modelPaths
// sample paths drawn from a fixed seed, the same paths for every candidate
// (common random numbers), so that comparing two candidates is not blurred
// by sampling noise and every decision is reproducible.
const (
	modelPaths = 1024
	modelSeed1 = 0x7461696c
	modelSeed2 = 0x67756172
	// unboundedAttempts is the attempt count assumed for maxAttempts 0.
	unboundedAttempts = policy.MaxAttemptsLimit
	// maxFailureProbability keeps the estimate of p below 1.
	maxFailureProbability = 0.999
	// negligible is the share of the tail probability 1−q below which a
	// retry count is left out of the q-quantile: leaving it out moves the
	// quantile by less than this share of the tail mass.
	negligible = 1e-4
)

// EstimateFailureProbability returns the per-attempt failure probability p
// that explains the observed retry ratio r (retries per logical call) when
// every call makes at most n attempts and attempts fail independently:
//
//	r = E[attempts] − 1 = p + p² + … + p^(n−1) = (p − pⁿ)/(1 − p)
//
// For unbounded attempts this is the familiar p = r/(1+r); for bounded
// attempts r can not exceed n−1 and p is found by bisection (r is strictly
// increasing in p). n ≤ 0 means unbounded. The result is clamped to
// [0, 0.999].
func EstimateFailureProbability(r float64, n int) float64 {
	if !(r > 0) {
		return 0
	}
	if n <= 0 {
		return min(r/(1+r), maxFailureProbability)
	}
	if r >= float64(n-1) {
		return maxFailureProbability
	}
	lo, hi := 0.0, 1.0
	for range 100 {
		mid := (lo + hi) / 2
		if RetriesPerCall(mid, n) < r {
			lo = mid
		} else {
			hi = mid
		}
	}
	return min((lo+hi)/2, maxFailureProbability)
}

// RetriesPerCall returns the expected retries per logical call,
// p + p² + … + p^(n−1), for per-attempt failure probability p and at most n
// attempts.
func RetriesPerCall(p float64, n int) float64 {
	var r, pk float64 = 0, 1
	for range n - 1 {
		pk *= p
		r += pk
	}
	return r
}

// ExhaustionProbability returns pⁿ, the probability that all n attempts of
// a call fail.
func ExhaustionProbability(p float64, n int) float64 { return math.Pow(p, float64(n)) }

// RetriesAtQuantile returns the number of retries k that the q-quantile
// call experiences: the smallest k with P(at least k+1 failures) = p^(k+1)
// ≤ 1−q, at most n−1.
func RetriesAtQuantile(p, q float64, n int) int {
	for k := 0; k < n-1; k++ {
		if math.Pow(p, float64(k+1)) <= (1-q)*(1+1e-9) {
			return k
		}
	}
	return max(n-1, 0)
}

// effective returns c with the backoff package's defaults filled in.
func effective(strategy string, c Constants) Constants {
	if c.Multiplier == 0 {
		switch strategy {
		case policy.StrategyDecorrelated:
			c.Multiplier = 3
		case policy.StrategyGRPC:
			c.Multiplier = 1.6
		default:
			c.Multiplier = 2
		}
	}
	if strategy == policy.StrategyGRPC {
		if c.Jitter == 0 {
			c.Jitter = 0.2
		}
	} else {
		c.Jitter = 0
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = unboundedAttempts
	}
	if c.Cap < c.Base {
		c.Cap = c.Base
	}
	return c
}

// delays fills out[0:len(out)] with the delays, in seconds, before retries
// 1..len(out) of one call, driven by the uniform variates u. The formulas
// are those of the backoff package, with exp(n) = min(cap, base·m^(n−1)):
//
//	exponential    exp(n)
//	full-jitter    u·exp(n)
//	equal-jitter   exp(n)/2 + u·exp(n)/2
//	decorrelated   min(cap, base + u·(m·clamp(prev, base, cap) − base))
//	grpc           clamp(exp(n)·(1 + j·(2u−1)), 0, cap)
func delays(strategy string, c Constants, u, out []float64) {
	const (
		exponential = iota
		fullJitter
		equalJitter
		decorrelated
		grpc
	)
	kind := exponential
	switch strategy {
	case policy.StrategyFullJitter:
		kind = fullJitter
	case policy.StrategyEqualJitter:
		kind = equalJitter
	case policy.StrategyDecorrelated:
		kind = decorrelated
	case policy.StrategyGRPC:
		kind = grpc
	}
	base, capv, m, j := c.Base.Seconds(), c.Cap.Seconds(), c.Multiplier, c.Jitter
	e, prev := base, 0.0
	for i := range out {
		x := min(e, capv)
		var d float64
		switch kind {
		case exponential:
			d = x
		case fullJitter:
			d = u[i] * x
		case equalJitter:
			d = x/2 + u[i]*x/2
		case decorrelated:
			pv := min(max(prev, base), capv)
			d = min(capv, base+u[i]*(m*pv-base))
		case grpc:
			d = min(max(x*(1+j*(2*u[i]-1)), 0), capv)
		}
		out[i] = d
		prev = d
		e *= m
	}
}

// uniforms is a fixed table of uniform variates: one row per sample path,
// one column per retry.
type uniforms [][]float64

func newUniforms(paths, retries int) uniforms {
	rng := rand.New(rand.NewPCG(modelSeed1, modelSeed2))
	u := make(uniforms, paths)
	for i := range u {
		u[i] = make([]float64, retries)
		for j := range u[i] {
			u[i][j] = rng.Float64()
		}
	}
	return u
}

// cohortModel is the distribution of the retry delays of the calls that
// use one strategy with one set of constants.
type cohortModel struct {
	weight   float64
	strategy string
	c        Constants // effective
	n        int
	// sums[k-1] holds the sum of the first k delays on every sample path,
	// k = 1..n−1; sorted[k-1] says whether it has been sorted yet (sorting
	// is deferred: most quantiles only look at the first few k).
	sums   [][]float64
	sorted []bool
	// span is the mean of the sum of all n−1 delays; means[k-1] the mean
	// of S_k.
	span  float64
	means []float64
}

// withAttempts returns the model of the same delays with at most n ≤ cm.n
// attempts: the first n−1 delays of every path are the same, so the sums
// are shared.
func (cm *cohortModel) withAttempts(n int) cohortModel {
	out := *cm
	out.n = n
	out.c.MaxAttempts = n
	out.sums, out.sorted, out.means = cm.sums[:max(n-1, 0)], cm.sorted[:max(n-1, 0)], cm.means[:max(n-1, 0)]
	out.span = 0
	if n > 1 {
		out.span = cm.means[n-2]
	}
	return out
}

func newCohortModel(weight float64, strategy string, c Constants, u uniforms) cohortModel {
	c = effective(strategy, c)
	cm := cohortModel{weight: weight, strategy: strategy, c: c, n: c.MaxAttempts}
	retries := cm.n - 1
	if retries <= 0 {
		return cm
	}
	cm.sums = make([][]float64, retries)
	cm.sorted = make([]bool, retries)
	cm.means = make([]float64, retries)
	for k := range cm.sums {
		cm.sums[k] = make([]float64, len(u))
	}
	d := make([]float64, retries)
	for i, row := range u {
		delays(strategy, c, row[:retries], d)
		var s float64
		for k, v := range d {
			s += v
			cm.sums[k][i] = s
		}
	}
	for k, s := range cm.sums {
		var total float64
		for _, v := range s {
			total += v
		}
		cm.means[k] = total / float64(len(s))
	}
	cm.span = cm.means[retries-1]
	return cm
}

// tail returns P(S_k > x) for the sum S_k of the first k delays.
func (cm *cohortModel) tail(k int, x float64) float64 {
	if k == 0 {
		if x < 0 {
			return 1
		}
		return 0
	}
	s := cm.sums[k-1]
	if !cm.sorted[k-1] {
		slices.Sort(s)
		cm.sorted[k-1] = true
	}
	i := sort.Search(len(s), func(i int) bool { return s[i] > x })
	return float64(len(s)-i) / float64(len(s))
}

// retryModel is the model of the retry contribution to a service's
// latency, retries and failures, for per-attempt failure probability p,
// per-attempt latency L (seconds) and a mix of cohorts (the fractional
// rollout of the strategy flag).
type retryModel struct {
	p, L    float64
	cohorts []cohortModel
}

// pK returns P(K = k) for a call with at most n attempts: the first k
// attempts fail and the next succeeds, or, for k = n−1, the first n−1 fail.
func pK(p float64, k, n int) float64 {
	if k == n-1 {
		return math.Pow(p, float64(k))
	}
	return math.Pow(p, float64(k)) * (1 - p)
}

// latencyTail returns P(Y > t) for the retry part of a call's latency,
// Y = (K+1)·L + S_K, leaving out retry counts with less probability than
// cutoff.
func (m *retryModel) latencyTail(t, cutoff float64) float64 {
	var tail float64
	for i := range m.cohorts {
		cm := &m.cohorts[i]
		var ct float64
		for k := 0; k < cm.n; k++ {
			w := pK(m.p, k, cm.n)
			if w < cutoff {
				continue
			}
			ct += w * cm.tail(k, t-float64(k+1)*m.L)
		}
		tail += cm.weight * ct
	}
	return tail
}

// Quantile returns the q-quantile of Y, in seconds.
func (m *retryModel) Quantile(q float64) float64 {
	hi := 0.0
	for _, cm := range m.cohorts {
		top := float64(cm.n) * m.L
		if len(cm.sums) > 0 {
			top += slices.Max(cm.sums[len(cm.sums)-1])
		}
		hi = max(hi, top)
	}
	hi += 1e-6
	lo, want := 0.0, (1-q)*(1+1e-9)
	cutoff := (1 - q) * negligible
	for range 60 {
		mid := (lo + hi) / 2
		if m.latencyTail(mid, cutoff) <= want {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi
}

// RetryRatio returns the expected retries per call, limited by each
// cohort's retry budget.
func (m *retryModel) RetryRatio() float64 {
	var r float64
	for _, cm := range m.cohorts {
		x := RetriesPerCall(m.p, cm.n)
		if cm.c.RetryBudget > 0 {
			x = min(x, cm.c.RetryBudget)
		}
		r += cm.weight * x
	}
	return r
}

// ExhaustRatio returns the expected share of calls that fail all attempts.
func (m *retryModel) ExhaustRatio() float64 {
	var e float64
	for _, cm := range m.cohorts {
		e += cm.weight * ExhaustionProbability(m.p, cm.n)
	}
	return e
}

// mixCohort is one strategy's share of traffic with its constants.
type mixCohort struct {
	Weight    float64
	Strategy  string
	Constants Constants
}

// estimateMixFailureProbability solves Σ wᵢ·r(p, nᵢ) = r for p.
func estimateMixFailureProbability(r float64, mix []mixCohort) float64 {
	if len(mix) == 1 {
		return EstimateFailureProbability(r, effective(mix[0].Strategy, mix[0].Constants).MaxAttempts)
	}
	if !(r > 0) {
		return 0
	}
	f := func(p float64) float64 {
		var s float64
		for _, c := range mix {
			s += c.Weight * RetriesPerCall(p, effective(c.Strategy, c.Constants).MaxAttempts)
		}
		return s
	}
	if f(maxFailureProbability) <= r {
		return maxFailureProbability
	}
	lo, hi := 0.0, maxFailureProbability
	for range 100 {
		mid := (lo + hi) / 2
		if f(mid) < r {
			lo = mid
		} else {
			hi = mid
		}
	}
	return (lo + hi) / 2
}

// newRetryModel builds the model of a mix.
func newRetryModel(p float64, attemptLatency time.Duration, mix []mixCohort, u uniforms) *retryModel {
	m := &retryModel{p: p, L: attemptLatency.Seconds()}
	for _, c := range mix {
		if c.Weight > 0 {
			m.cohorts = append(m.cohorts, newCohortModel(c.Weight, c.Strategy, c.Constants, u))
		}
	}
	return m
}

// retrySpan returns the expected sum of all n−1 delays of a strategy.
func retrySpan(strategy string, c Constants, u uniforms) time.Duration {
	cm := newCohortModel(1, strategy, c, u)
	return time.Duration(cm.span * float64(time.Second))
}
