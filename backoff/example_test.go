package backoff_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tailguard/tailguard/backoff"
)

func ExampleRetrier_Do() {
	policy, err := backoff.New(backoff.Config{
		Strategy:    backoff.FullJitter,
		Base:        time.Millisecond,
		Cap:         10 * time.Millisecond,
		MaxAttempts: 5,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	metrics, err := backoff.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		fmt.Println(err)
		return
	}
	budget, err := backoff.NewTokenBucket(backoff.TokenBucketConfig{}) // AWS SDK defaults
	if err != nil {
		fmt.Println(err)
		return
	}
	r, err := backoff.NewRetrier(backoff.RetrierConfig{
		Policy:   policy,
		Upstream: "payments",
		Metrics:  metrics,
		Budget:   budget,
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	attempts := 0
	err = r.Do(context.Background(), func(ctx context.Context) error {
		attempts++
		if attempts < 3 {
			return errors.New("503 service unavailable")
		}
		return nil
	})
	fmt.Println("error:", err, "attempts:", attempts)
	// Output: error: <nil> attempts: 3
}

func ExampleRetrier_Do_stopReason() {
	r, _ := backoff.NewRetrier(backoff.RetrierConfig{
		Policy: backoff.MustNew(backoff.Config{Strategy: backoff.Exponential, Base: time.Millisecond, Cap: time.Millisecond, MaxAttempts: 3}),
	})
	errUnavailable := errors.New("503 service unavailable")
	err := r.Do(context.Background(), func(context.Context) error { return errUnavailable })

	reason, _ := backoff.Stopped(err)
	fmt.Println(reason)
	fmt.Println(errors.Is(err, backoff.ErrExhausted), errors.Is(err, errUnavailable))
	fmt.Println(err)

	err = r.Do(context.Background(), func(context.Context) error {
		return backoff.Permanent(errors.New("400 bad request"))
	})
	fmt.Println(err)
	// Output:
	// exhausted
	// true true
	// retry attempts exhausted after 3 attempts: 503 service unavailable
	// permanent error after 1 attempt: 400 bad request
}

func ExampleRetry() {
	r, _ := backoff.NewRetrier(backoff.RetrierConfig{
		Policy: backoff.MustNew(backoff.Config{Strategy: backoff.Decorrelated, Base: time.Millisecond, Cap: 5 * time.Millisecond}),
	})
	n := 0
	status, err := backoff.Retry(context.Background(), r, func(context.Context) (int, error) {
		if n++; n == 1 {
			// The server asked to wait: the next delay is at least 2ms,
			// and never more than the policy's cap.
			return http.StatusTooManyRequests, backoff.RetryAfter(errors.New("429"), 2*time.Millisecond)
		}
		return http.StatusOK, nil
	})
	fmt.Println(status, err)
	// Output: 200 <nil>
}

func ExamplePolicy_Delay() {
	p := backoff.MustNew(backoff.Config{Strategy: backoff.Exponential, Base: 100 * time.Millisecond, Cap: time.Second})
	var prev time.Duration
	for retry := 1; retry <= 6; retry++ {
		prev = p.Delay(retry, prev, 0) // the random input is unused without jitter
		fmt.Print(prev, " ")
	}
	fmt.Println()
	// Output: 100ms 200ms 400ms 800ms 1s 1s
}

func ExampleNew() {
	_, err := backoff.New(backoff.Config{Strategy: backoff.GRPC, Base: 2 * time.Second, Cap: time.Second})
	fmt.Println(err)
	var ce *backoff.ConfigError
	if errors.As(err, &ce) {
		fmt.Println("field:", ce.Field)
	}
	// Output:
	// invalid backoff config: cap: 1s is below base 2s
	// field: cap
}
