// Package backoff retries operations with capped, jittered backoff, a retry
// budget, Prometheus metrics and OpenTelemetry span events, under a policy
// that can be swapped at runtime.
//
// # Policies
//
// A [Policy] is an immutable value built from a validated [Config] by [New].
// It is safe to share between goroutines and retriers. Five strategies are
// available; n is the retry number (1 for the first retry), u a uniform random
// value in [0, 1) and exp(n) = min(Cap, Base·Multiplier^(n-1)):
//
//	exponential    exp(n)                                  (no jitter)
//	full-jitter    u·exp(n)
//	equal-jitter   exp(n)/2 + u·exp(n)/2
//	decorrelated   min(Cap, Base + u·(Multiplier·prev − Base)), prev = previous delay (Base at first)
//	grpc           exp(n)·(1 + Jitter·(2u − 1))               (gRPC connection backoff)
//
// Cap is a hard ceiling on every delay of every strategy, including a
// server-requested Retry-After. [Policy.Delay] is a pure function of its
// arguments: the random input is passed in, so it neither allocates nor locks.
//
// # Retrier
//
// A [Retrier] runs an operation until it succeeds or one of the stop
// conditions holds; the returned *[Error] names the [Reason]: the attempts
// are exhausted (MaxAttempts), the error is [Permanent], the retry [Budget]
// denied a retry, the context ended, or the next delay would exceed
// MaxElapsed. [Retrier.SetPolicy] swaps the policy atomically; a call in
// flight keeps the policy it started with.
//
// # Retry budgets
//
// Two budgets are provided. [TokenBucket] follows the retry quota of the AWS
// SDK for Go v2: a bucket of 500 tokens, 5 tokens per retry, 10 per retry of
// a timeout, 1 token back for every call whose first attempt succeeds and the
// retry's cost back when a retried attempt succeeds. [RatioBudget] follows the
// per-client retry budget of Google's SRE book: retries are allowed while
// they stay below 10% of the calls seen in a sliding 10 s window. Its ratio
// can be changed at runtime with [RatioBudget.SetRatio].
//
// # Instrumentation
//
// [NewMetrics] registers the backoff_* metrics with a caller-supplied
// prometheus.Registerer. All series carry the labels strategy and upstream;
// child metrics are resolved once per strategy, so a call whose first attempt
// succeeds allocates nothing, with or without metrics.
//
// # Flags
//
// Package flagbind binds the policy, and the ratio of a [RatioBudget], to
// OpenFeature flags: the string flag backoff-strategy names the strategy,
// the object flag backoff-constants sets its constants base, cap,
// multiplier, jitter, maxAttempts, maxElapsed (the [Config] fields) and
// retryBudget (the [RatioBudget] ratio, in (0, 1]).
package backoff
