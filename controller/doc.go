// Package controller is tailguard's decision and action layer: it turns the
// detector's assessments into bounded, verified, reversible flag changes.
//
// # Data flow
//
// Each cycle, for each service of the policy (package policy), the daemon
// builds an [Observation]: one [Assessment] per SLO (the SLI, its forecast,
// the detector's verdict and the attributed [Cause]), the retry statistics
// of the upstream the backoff flags govern ([RetryStats]) and the current
// [FlagState]. [Decide] is a pure function of the policy, the service's
// [State], the observation and the time; it returns a [Decision] and the
// new state. [Controller] wraps it: it applies decisions through a
// [FlagWriter] according to the service's mode, records them with
// [Commit], keeps plans for approval and answers [Controller.Explain].
//
// # The ladder
//
// An incident opens when an SLO breaches, or is forecast to breach, its
// objective·(1+hysteresis.enter), the detector says Regressed and the cause
// is one the policy controls (the strategy or constants flag, or a listed
// component) with at least attribution.minConfidence. The controller then
// climbs:
//
//  1. tune: change the new strategy's constants within their hard bounds
//     and maximum step, chosen from the model below;
//  2. shrink: lower the new strategy's fractional rollout to the next
//     allowed percentage;
//  3. flip: make the old strategy the default, without rollout;
//  4. escalate: hand the incident to people (an alert or annotation).
//
// A rung that can not act (the model predicts no useful gain, the rollout is
// at its lowest percentage, the new strategy already serves nothing) is
// skipped. After each action the controller waits the evaluation window and
// verifies with the next assessments: all SLOs within objective → hold;
// the gap to objective·(1−hysteresis.exit) closed by at least
// verification.minImprovement → the next step of the same rung (tune again,
// shrink further); otherwise → the next rung.
//
// It never acts while any SLO's assessment is Inconclusive or missing, and
// only on breaches attributed to the incident's cause: while another cause
// (an upstream outage, another change) explains a breach it waits, and
// postpones verifications. One incident per service is active at a time. It
// keeps at least the cooldown between two writes and at most
// maxActionsPerHour writes in any rolling hour. It never oscillates: the
// ladder only moves one way (tuning towards shorter retry latency, rollouts
// downwards), and the only upward move, restore, needs every SLO at or below
// objective·(1−exit) for the hold time; a restore step that makes an SLO
// breach is reverted and caps every later restore of the incident below it.
//
// # Restore
//
// With restore enabled, once every SLO has stayed recovered for
// restore.holdTime, the new strategy's rollout is raised again to the next
// allowed percentage, one verified step at a time, up to where it was when
// the incident opened ("gate, then re-enable"). A step the model expects to
// push an SLO over its objective is not attempted: the rollout stays where
// it is. Tuned constants are kept.
// Without restore the incident resolves after the hold. Every action
// records its undo mutation; the flag store's journal undoes an incident as
// a whole.
//
// # The retry model
//
// Tuning picks constants from a model of what retries add to a call, not by
// trial. Calls to the upstream make at most n attempts, each failing
// independently with probability p; between attempts the strategy sleeps
// (exp(i) = min(cap, base·m^(i−1)) for retry i, u uniform in [0,1)):
//
//	exponential    exp(i)
//	full-jitter    u·exp(i)
//	equal-jitter   exp(i)/2 + u·exp(i)/2
//	decorrelated   min(cap, base + u·(m·prev − base)), prev clamped to [base, cap], m = 3
//	grpc           clamp(exp(i)·(1 + jitter·(2u − 1)), 0, cap), m = 1.6, jitter 0.2
//
// Failure probability. The retries per call are r = p + p² + … + p^(n−1) =
// (p − pⁿ)/(1 − p): for unbounded attempts that is p = r/(1+r); with n
// bounded the observed r is inverted by bisection ([EstimateFailureProbability]).
// During a fractional rollout the cohorts' retry counts are mixed:
// Σ wᵥ·r(p, nᵥ) = r.
//
// Latency. The number of retries K of a call has P(K = k) = p^k·(1−p) for
// k < n−1 and P(K = n−1) = p^(n−1). The q-quantile call makes k retries,
// k the smallest with P(at least k+1 failures) = p^(k+1) ≤ 1−q
// ([RetriesAtQuantile]); its retry part is Y = (K+1)·L + S_K, L the
// per-attempt latency and S_K the sum of the first K delays. The model
// computes the exact mixture quantile of Y, P(Y > t) = Σᵥ wᵥ Σₖ P(K=k)·
// P(S_k > t − (k+1)·L), with the distribution of S_k evaluated on 1024
// fixed-seed sample paths of the delay formulas above (the same paths for
// every candidate, so comparisons are free of sampling noise and decisions
// reproducible). The prediction is anchored on the observation: expected
// SLI = observed SLI + Y_q(candidate) − Y_q(current), so what the model does
// not capture (the service's own latency, the upstream's latency spread)
// cancels out.
//
// Failures and retries. A call fails when all n attempts fail: pⁿ must stay
// within the error objective (expected error ratio = observed +
// Σwᵥpⁿᵛ(candidate) − Σwᵥpⁿᵛ(current)); the expected retry ratio is
// Σ wᵥ·min(budgetᵥ, r(p, nᵥ)).
//
// Resilience. The new strategy is usually there for a reason, for example to
// ride out an upstream's brown-outs. backoff.resilience states it: at the
// brown-out failure probability p*, p*ⁿ ≤ maxFailureRatio, and the expected
// sum of all n−1 delays (the time the retries spread over) stays at least
// minRetrySpan. Tuning never makes either worse than the policy allows.
//
// Choice. The candidates are the current constants moved by up to one
// maxStep (in half steps for base, cap and attempts, whole steps for the
// others) within the hard bounds. A candidate is feasible if cap ≥ base, no
// SLO that is not breaching is pushed over its objective, and the
// resilience constraints hold. Among the feasible candidates that bring
// every breaching SLO to objective·(1−exit), the smallest change wins (the
// sum of each change relative to its bound range, attempts weighted
// double); if none does, the one closing the largest share of the gap wins,
// provided it closes at least verification.minImprovement of it; otherwise
// tuning is exhausted and the ladder moves on. The chosen constants, the
// inputs (r, p, L, shares) and the outputs (k, retry part of the quantile,
// expected SLIs, pⁿ, brown-out exhaustion, retry span) are recorded in the
// action's [ModelReport].
//
// Limits of the model: attempts are assumed independent with one failure
// probability and one latency; a retry budget and maxElapsed are not
// modelled in the latency; the anchored prediction assumes the non-retry
// latency does not change with the constants.
//
// # Writes
//
// Every write is a [FlagChange] with the incident id, an idempotency key,
// the reason, the actor, the mutation and its undo, and the controller's
// [Record] of the action, which the writer journals with it. The key is
// the step (incident id, rung, ordinal on the rung: "inc/tune/2") and a
// digest of the change ("inc/tune/2#9f3a01c2"): replicas that decide the
// same change derive the same key and the writer applies it once; replicas
// that decide the step differently cannot take each other's write for
// their own: the loser's compare-and-swap fails and it decides again.
//
// Before each decision the controller reads the journaled actions of the
// service ([JournalReader]) and [Decide] adopts those its state lacks, so
// that a replica that restarted, or lost a race, resumes the incident (its
// rung, its pending verification) instead of repeating a step. A
// [StateStore] keeps the rest of the state across restarts.
package controller
