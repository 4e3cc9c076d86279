// Package detector decides whether a change made a service's tail latency,
// retries or errors worse, by how much, with what confidence, and which
// change did it.
//
// # Pipeline
//
// Analyze runs one pass, pure between its two ends:
//
//  1. Changes: a ChangeSource (see package changes and NewChangeSource)
//     lists what changed in the window: build info version changes seen in
//     Prometheus, flag changes from the flag journal, declared upgrades.
//  2. Queries: every signal is rendered from its templates (SignalConfig,
//     QueryTemplates; defaults follow the metric contract:
//     http_request_duration_seconds, http_requests_total,
//     backoff_calls_total, backoff_retries_total), aggregated server-side
//     with sum by (<slice labels>), and sent through a Querier with a
//     timeout. The same code runs against a Prometheus server
//     (detector/promapi) and the embedded engine (promembed).
//  3. Detection: each slice becomes a stream of per-step counts (trials n,
//     bad events x) over the baseline and the monitored window and gets a
//     Verdict: Regressed, Healthy or Inconclusive.
//  4. Attribution: each regression's candidate changes are scored and
//     ranked; regressions sharing a cause form an Incident.
//
// # Signals as counts
//
//   - latency: requests slower than a boundary B out of all requests. For
//     classic histograms B is the bucket bound whose baseline exceedance
//     fraction is closest to 1−q (q = 0.99 by default) on a log scale, so
//     the count comes straight from two counters (…_count − …_bucket{le=B})
//     and is exactly binomial; histogram_quantile is reported as evidence
//     only, since interpolating inside coarse buckets can hide a 1.5×
//     regression. For native histograms B is the baseline quantile and the
//     count is histogram_fraction(B, +Inf, h) × histogram_count(h).
//   - retry_ratio: retries (Poisson) per logical call, per upstream.
//   - error_ratio: failed requests (binomial) out of requests.
//
// # Verdicts
//
// A slice is Inconclusive, with the reason, when the queries returned
// warnings, its monitored window has more than MaxGapRatio steps without
// data (NaN values count as missing), its last samples are older than
// StaleAfter, its baseline or monitored window has fewer than MinRequests
// trials (by default the smallest n that supports a distribution-free 95%
// interval for the quantile: 368 for p99), or its baseline is missing and
// cannot be borrowed. A slice that did not exist before (a new flag
// variant, a new version label) borrows the baseline of the slices it
// replaced: those agreeing with it on every label value that existed.
//
// Otherwise the test is a bank of three one-sided CUSUMs of
// log-likelihood ratios (package stats) tuned to rate ratios R, R², R⁴ for
// the minimum effect R (default 1.5): the first is the most sensitive to
// shifts near R, the others catch large shifts in a step or two. Each
// step's LLR is divided by the overdispersion φ, the larger of the slice's
// and the signal's pooled Pearson χ²/df over the baseline steps. The
// threshold is
//
//	h = ln(ARL0),  ARL0 = 3·K · (1h / step) / F
//
// for F = FalseAlarmsPerHour over the K slices watched (the factor 3 pays
// for the bank), by Lorden's bound ARL0 ≥ e^h: a conservative Bonferroni
// split of the false-alarm budget. Because the CUSUM restarts at zero it
// can be re-run as often as wanted (each controller loop) without raising
// the false-alarm rate.
//
// A slice is Regressed when a CUSUM alarms, the effect estimate (current
// over baseline rate, Katz log interval for proportions, log-Wald for
// Poisson rates, widened by √φ) is at least R and its lower bound exceeds
// 1. The current window starts at the onset, the first step of the
// CUSUM's final excursion above zero, or at a second, larger shift after
// it: the split of the data since the onset that maximises the
// two-segment likelihood, kept when its log-likelihood ratio (over φ)
// passes h as well and the later rate is at least R times the earlier one
// with confidence. A small healthy shift followed by a brown-out or a
// second, harmful change is then judged from the second shift, not on the
// average since the first. Without an alarm a slice is Healthy when its
// point estimate is below R, and Inconclusive ("not confirmed") otherwise.
//
// A signal may carry its SLO's objective (SignalConfig.Objective: the
// share of requests above the boundary a p99 objective allows, 1%; the
// retry or error ratio allowed). A significant shift whose rate since the
// onset stays within it is Healthy ("within the objective"): real, but not
// felt by users and not worth an action.
//
// # Attribution
//
// Every change is scored for every regression on four criteria, each in
// [0,1] with 0.5 meaning "no information", combined with configurable
// weights (default 0.4, 0.3, 0.15, 0.15):
//
//   - timing: exp(−(onset − change)/TimingDecay) for onsets after the
//     change, 1 within TimingTolerance before it, and 0 (the change is
//     ruled out) for a change later than the onset plus the tolerance;
//   - localisation: with the change's scope labels (e.g.
//     {strategy="decorrelated"}), 0.5 + (f_in − f_out)/2 where f_in and
//     f_out are the fractions of regressed slices inside and outside the
//     scope, over every signal sliced by a scope label; 0 when the finding
//     lies outside the scope; 0.5 + f_in/4 without slices outside the
//     scope to compare with;
//   - cohort: when the scope splits a signal's slices and both sides carry
//     traffic over the same minutes since the change, the difference in
//     differences of the in-scope and out-of-scope rate ratios (each
//     against its own baseline; a new cohort borrows the control's, which
//     reduces the estimate to the concurrent ratio new/old), scored Φ(z)
//     for its z statistic;
//   - topology: when a retry signal regressed for an upstream, 0.8 for
//     changes on the calling side (flags, the service's own components) and
//     0.2 for a change to the callee of that upstream (TopologyConfig):
//     blame the caller whose retries rose, not the callee where latency
//     shows.
//
// A fifth factor multiplies the score of a flag change when the
// upstream's own attempt latency regressed (an attempts signal): a
// backoff flag cannot slow the callee's attempts except by loading it
// with retries, so 0.6 when retries rose too, else 0.2.
//
// Against the changes stands the hypothesis that none of the known
// changes caused the shift: 1 − the best timing score, or 1 when the
// upstream's attempts got slower and no version change or declared upgrade
// near the onset (timing ≥ 0.5) could have slowed them. The best cause is
// attributed when it scores at least MinScore, beats "none" by Margin and
// leads the next by at least Margin; otherwise the finding's attribution
// is unexplained (none of the known changes), ambiguous (the
// indistinguishable changes are listed) or none (no change at all). Every
// cause carries its evidence as sentences with the numbers, and every
// finding its queries with their evaluation times, windows and counts.
//
// # Sources
//
// Page (1954), Continuous inspection schemes; Lorden (1971), Procedures for
// reacting to a change in distribution; Siegmund (1985), Sequential
// Analysis; Reynolds & Stoumbos (1999), A CUSUM chart for monitoring a
// proportion; Lucas (1985), Counted data CUSUMs; Katz et al. (1978),
// Obtaining confidence intervals for the risk ratio in cohort studies;
// Newcombe (1998), Two-sided confidence intervals for the single
// proportion; McCullagh & Nelder (1989), Generalized Linear Models;
// David & Nagaraja (2003), Order Statistics.
package detector
