// Package stats holds the statistics behind tailguard's regression detector:
// pure functions on numbers, with no I/O, no clocks and no randomness.
//
// # Counts, not percentiles
//
// Every signal is reduced to a count of "bad" events x out of n trials per
// time step: requests slower than a latency boundary out of all requests,
// retries out of logical calls, errors out of requests. The latency boundary
// is a bucket boundary near the baseline p99, so the exceedance count comes
// straight from histogram buckets and, unlike an interpolated
// histogram_quantile, is an exact binomial count. That makes likelihood
// ratios, exact intervals and the CUSUM's false-alarm guarantees valid.
//
// # Sequential test: CUSUM on counts
//
// Page's CUSUM (Page 1954) accumulates per-step log-likelihood ratios
//
//	S_0 = 0,  S_t = max(0, S_{t-1} + ℓ_t),  alarm when S_t ≥ h
//
// with, for a binomial step (x of n, in-control p0, out-of-control p1 = R·p0),
//
//	ℓ = x·ln(p1/p0) + (n−x)·ln((1−p1)/(1−p0))            (BinomialLLR)
//
// and for a Poisson step (x events over exposure n at rate λ0 vs λ1 = R·λ0),
//
//	ℓ = x·ln(λ1/λ0) − n·(λ1−λ0)                           (PoissonLLR)
//
// (Reynolds & Stoumbos 1999 for the Bernoulli CUSUM; Lucas 1985 for the
// Poisson CUSUM). Because the statistic restarts at zero, checking it again
// and again as data arrives does not inflate the false-alarm rate: the
// guarantee is on the run length, not on a fixed sample.
//
// Threshold. For a CUSUM of log-likelihood ratios, Lorden (1971) gives
// ARL0 ≥ e^h, where ARL0 is the expected number of in-control steps before
// a false alarm. Threshold therefore takes
//
//	h = ln(ARL0),  ARL0 = K · (1 h / Δ) / F
//
// for a target of F false alarms per hour over K streams watched at once,
// each updated every Δ (a Bonferroni split of F across the streams). The
// bound is conservative: Siegmund's corrected diffusion approximation
// (Siegmund 1985, §X.2), implemented for reference by SiegmundARL, puts the
// true ARL0 higher still when the per-step information is small. The
// expected detection delay grows only with ln(ARL0):
// delay ≈ h / I1 steps, where I1 = KL(p1‖p0) per step (Lorden 1971;
// ExpectedDelay).
//
// Onset. After an alarm the change point is estimated as the first step of
// the final excursion of S above zero (the step after S was last 0); this is
// the maximum-likelihood change point for the CUSUM's alternative (Page 1954;
// Basseville & Nikiforov 1993, §2.2).
//
// Overdispersion. Real request streams are burstier than binomial. Dispersion
// estimates φ = Pearson χ²/(m−1) from the baseline steps (McCullagh & Nelder
// 1989, §4.5); the detector divides each ℓ by φ (a quasi-likelihood CUSUM)
// and widens intervals by √φ, so a bursty baseline does not raise false
// alarms.
//
// # Effect size and intervals
//
//   - RiskRatio: ratio of two proportions with the Katz log interval
//     (Katz et al. 1978): ln RR ± z·√(1/x1 − 1/n1 + 1/x0 − 1/n0), with
//     Haldane's +0.5 correction when a count is zero.
//   - RateRatio: ratio of two Poisson rates, ln RR ± z·√(1/x1 + 1/x0).
//   - Wilson: score interval for one proportion (Wilson 1927; Newcombe 1998).
//   - DiffInDiff: difference-in-differences of two log ratios, as used for
//     concurrent cohorts: exp(ln RR_a − ln RR_b), SE = √(SE_a² + SE_b²).
//
// # How much data a quantile needs
//
// A distribution-free two-sided confidence interval at level c for the
// q-quantile from order statistics exists only when q^n ≤ (1−c)/2 and
// (1−q)^n ≤ (1−c)/2 (David & Nagaraja 2003, §7.1): for p99 at 95% that is
// n ≥ 368 (MinSamplesForQuantileCI). Below that the detector abstains.
//
// # Quantiles from classic buckets
//
// BucketQuantile reproduces Prometheus' histogram_quantile: linear
// interpolation inside the bucket holding the rank, the lowest bucket
// starting at 0 when its upper bound is positive, and the highest finite
// bound returned for ranks in the +Inf bucket.
package stats
