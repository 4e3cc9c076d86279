package backoff_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tailguard/tailguard/backoff"
)

var sinkDuration time.Duration

func BenchmarkDelay(b *testing.B) {
	for _, s := range backoff.Strategies() {
		p := backoff.MustNew(backoff.Config{Strategy: s, Base: 100 * time.Millisecond, Cap: 10 * time.Second})
		b.Run(s.String(), func(b *testing.B) {
			src := rand.NewPCG(1, 2)
			var d time.Duration
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				d = p.Delay(i%8+1, d, src.Uint64())
			}
			sinkDuration = d
		})
	}
}

// noSleep is a clock whose Sleep returns at once.
type noSleep struct{}

func (noSleep) Now() time.Time { return time.Time{} }
func (noSleep) Sleep(ctx context.Context, _ time.Duration) error {
	return ctx.Err()
}

func benchRetrier(b *testing.B, withMetrics, withBudget bool) *backoff.Retrier {
	b.Helper()
	cfg := backoff.RetrierConfig{
		Policy:   backoff.MustNew(backoff.Config{Strategy: backoff.FullJitter, Base: time.Millisecond, Cap: time.Second, MaxAttempts: 10}),
		Upstream: "bench",
		Clock:    noSleep{},
	}
	if withMetrics {
		m, err := backoff.NewMetrics(prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		cfg.Metrics = m
	}
	if withBudget {
		tb, err := backoff.NewTokenBucket(backoff.TokenBucketConfig{})
		if err != nil {
			b.Fatal(err)
		}
		cfg.Budget = tb
	}
	r, err := backoff.NewRetrier(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return r
}

func BenchmarkRetrierSuccess(b *testing.B) {
	for _, tc := range []struct {
		name    string
		metrics bool
	}{{"plain", false}, {"metrics+budget", true}} {
		b.Run(tc.name, func(b *testing.B) {
			r := benchRetrier(b, tc.metrics, tc.metrics)
			ctx := context.Background()
			op := func(context.Context) error { return nil }
			b.ReportAllocs()
			for b.Loop() {
				if err := r.Do(ctx, op); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

var errBench = errors.New("transient")

// BenchmarkRetrierThreeFailures runs calls that fail three times before
// succeeding, with a clock that does not sleep. (A token bucket would run dry
// here: three retries cost 15 tokens and the success returns 5.)
func BenchmarkRetrierThreeFailures(b *testing.B) {
	for _, tc := range []struct {
		name    string
		metrics bool
	}{{"plain", false}, {"metrics", true}} {
		b.Run(tc.name, func(b *testing.B) {
			r := benchRetrier(b, tc.metrics, false)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				n := 0
				err := r.Do(ctx, func(context.Context) error {
					if n++; n <= 3 {
						return errBench
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRetrierParallelSuccess(b *testing.B) {
	r := benchRetrier(b, true, true)
	op := func(context.Context) error { return nil }
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			_ = r.Do(ctx, op)
		}
	})
}

// BenchmarkRatioBudgetSuccess is BenchmarkRetrierSuccess with a ratio budget
// whose ratio another goroutine keeps changing in the "set-ratio" case.
func BenchmarkRatioBudgetSuccess(b *testing.B) {
	for _, tc := range []struct {
		name     string
		setRatio bool
	}{{"static", false}, {"set-ratio", true}} {
		b.Run(tc.name, func(b *testing.B) {
			budget, err := backoff.NewRatioBudget(backoff.RatioBudgetConfig{})
			if err != nil {
				b.Fatal(err)
			}
			r, err := backoff.NewRetrier(backoff.RetrierConfig{
				Policy: backoff.MustNew(backoff.Config{Strategy: backoff.FullJitter, Base: time.Millisecond, Cap: time.Second, MaxAttempts: 10}),
				Clock:  noSleep{}, Budget: budget,
			})
			if err != nil {
				b.Fatal(err)
			}
			done := make(chan struct{})
			var wg sync.WaitGroup
			if tc.setRatio {
				wg.Go(func() {
					for i := 0; ; i++ {
						select {
						case <-done:
							return
						case <-time.After(time.Millisecond):
							_ = budget.SetRatio(0.05 + float64(i%2)*0.05)
						}
					}
				})
			}
			ctx := context.Background()
			op := func(context.Context) error { return nil }
			b.ReportAllocs()
			for b.Loop() {
				if err := r.Do(ctx, op); err != nil {
					b.Fatal(err)
				}
			}
			close(done)
			wg.Wait()
		})
	}
}
