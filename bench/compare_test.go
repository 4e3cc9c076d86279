package bench_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	cenkalti "github.com/cenkalti/backoff/v5"

	"github.com/tailguard/tailguard/backoff"
)

var sink time.Duration

// BenchmarkDelay compares the computation of one delay. cenkalti's
// ExponentialBackOff (initial 100ms, ±50%, ×1.5, max 10s) is stateful and
// draws from math/rand/v2's runtime generator; its equivalent here is the
// grpc strategy with the same constants, whose random input comes from the
// same generator. The sequence restarts every 8 retries on both sides.
func BenchmarkDelay(b *testing.B) {
	b.Run("cenkalti/ExponentialBackOff", func(b *testing.B) {
		eb := &cenkalti.ExponentialBackOff{
			InitialInterval:     100 * time.Millisecond,
			RandomizationFactor: 0.5,
			Multiplier:          1.5,
			MaxInterval:         10 * time.Second,
		}
		eb.Reset()
		var d time.Duration
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if i%8 == 0 {
				eb.Reset()
			}
			d = eb.NextBackOff()
		}
		sink = d
	})
	cfgs := []struct {
		name string
		cfg  backoff.Config
	}{
		{"tailguard/grpc-equivalent", backoff.Config{Strategy: backoff.GRPC, Base: 100 * time.Millisecond, Cap: 10 * time.Second, Multiplier: 1.5, Jitter: 0.5}},
		{"tailguard/exponential", backoff.Config{Strategy: backoff.Exponential, Base: 100 * time.Millisecond, Cap: 10 * time.Second}},
		{"tailguard/full-jitter", backoff.Config{Strategy: backoff.FullJitter, Base: 100 * time.Millisecond, Cap: 10 * time.Second}},
		{"tailguard/equal-jitter", backoff.Config{Strategy: backoff.EqualJitter, Base: 100 * time.Millisecond, Cap: 10 * time.Second}},
		{"tailguard/decorrelated", backoff.Config{Strategy: backoff.Decorrelated, Base: 100 * time.Millisecond, Cap: 10 * time.Second}},
	}
	for _, c := range cfgs {
		p := backoff.MustNew(c.cfg)
		b.Run(c.name, func(b *testing.B) {
			var d time.Duration
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				d = p.Delay(i%8+1, d, rand.Uint64())
			}
			sink = d
		})
	}
}

var errTransient = errors.New("transient")

// Both retry loops use equivalent no-wait settings: a backoff whose delays
// are all zero, at most 10 attempts, real timers/clocks.
func cenkaltiRetry(ctx context.Context, op cenkalti.Operation[int]) (int, error) {
	return cenkalti.Retry(ctx, op, cenkalti.WithBackOff(&cenkalti.ZeroBackOff{}), cenkalti.WithMaxTries(10))
}

func newRetrier(b *testing.B) *backoff.Retrier {
	b.Helper()
	r, err := backoff.NewRetrier(backoff.RetrierConfig{
		Policy: backoff.MustNew(backoff.Config{Strategy: backoff.Exponential, MaxAttempts: 10}), // Base = Cap = 0
	})
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// BenchmarkRetrySuccess compares a call whose first attempt succeeds.
func BenchmarkRetrySuccess(b *testing.B) {
	ctx := context.Background()
	b.Run("cenkalti/Retry", func(b *testing.B) {
		op := func() (int, error) { return 1, nil }
		b.ReportAllocs()
		for b.Loop() {
			if _, err := cenkaltiRetry(ctx, op); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("tailguard/Retry", func(b *testing.B) {
		r := newRetrier(b)
		op := func(context.Context) (int, error) { return 1, nil }
		b.ReportAllocs()
		for b.Loop() {
			if _, err := backoff.Retry(ctx, r, op); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("tailguard/Do", func(b *testing.B) {
		r := newRetrier(b)
		op := func(context.Context) error { return nil }
		b.ReportAllocs()
		for b.Loop() {
			if err := r.Do(ctx, op); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRetryThreeFailures compares a call that fails three times, then
// succeeds.
func BenchmarkRetryThreeFailures(b *testing.B) {
	ctx := context.Background()
	b.Run("cenkalti/Retry", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			n := 0
			_, err := cenkaltiRetry(ctx, func() (int, error) {
				if n++; n <= 3 {
					return 0, errTransient
				}
				return n, nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("tailguard/Retry", func(b *testing.B) {
		r := newRetrier(b)
		b.ReportAllocs()
		for b.Loop() {
			n := 0
			_, err := backoff.Retry(ctx, r, func(context.Context) (int, error) {
				if n++; n <= 3 {
					return 0, errTransient
				}
				return n, nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}
