package flagbind_test

import (
	"context"
	"fmt"
	"time"

	"github.com/open-feature/go-sdk/openfeature/isolated"
	"github.com/open-feature/go-sdk/openfeature/memprovider"

	"github.com/tailguard/tailguard/backoff"
	"github.com/tailguard/tailguard/backoff/flagbind"
)

func ExampleBinding_Reload() {
	ctx := context.Background()

	// In production the provider would be flagd or a file provider; the
	// flags have the shapes written by tailguard.
	api := isolated.NewAPI()
	defer func() { _ = api.Shutdown(ctx) }()
	_ = api.SetProviderAndWait(ctx, memprovider.NewInMemoryProvider(map[string]memprovider.InMemoryFlag{
		"backoff-strategy": {
			Key: "backoff-strategy", State: memprovider.Enabled, DefaultVariant: "new",
			Variants: map[string]any{"legacy": "full-jitter", "new": "decorrelated"},
		},
		"backoff-constants": {
			Key: "backoff-constants", State: memprovider.Enabled, DefaultVariant: "v1",
			Variants: map[string]any{"v1": map[string]any{
				"decorrelated": map[string]any{"base": "100ms", "cap": "10s", "maxAttempts": 6},
			}},
		},
	}))

	legacy := backoff.Config{Strategy: backoff.FullJitter, Base: 50 * time.Millisecond, Cap: 500 * time.Millisecond, MaxAttempts: 3}
	retrier, _ := backoff.NewRetrier(backoff.RetrierConfig{Policy: backoff.MustNew(legacy), Upstream: "payments"})
	binding, err := flagbind.New(flagbind.Config{
		Client:     api.NewClient(),
		Targets:    []flagbind.Target{retrier},
		Default:    legacy,
		InstanceID: "shop-7f9c",
		Attributes: map[string]any{"service": "shop"},
		Bounds: flagbind.Bounds{
			Cap:         flagbind.Range[time.Duration]{Max: 2 * time.Second},
			MaxAttempts: flagbind.Range[int]{Min: 1, Max: 8},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	// Run(ctx) would keep following the flags; Reload reads them once.
	if err := binding.Reload(ctx); err != nil {
		fmt.Println(err)
	}
	fmt.Println(retrier.Policy())
	// Output: decorrelated(base=100ms cap=2s multiplier=3 maxAttempts=6 maxElapsed=0s)
}

func ExampleBinding_RetryBudget() {
	ctx := context.Background()
	api := isolated.NewAPI()
	defer func() { _ = api.Shutdown(ctx) }()
	_ = api.SetProviderAndWait(ctx, memprovider.NewInMemoryProvider(map[string]memprovider.InMemoryFlag{
		"backoff-strategy": {
			Key: "backoff-strategy", State: memprovider.Enabled, DefaultVariant: "new",
			Variants: map[string]any{"new": "decorrelated"},
		},
		"backoff-constants": {
			Key: "backoff-constants", State: memprovider.Enabled, DefaultVariant: "v1",
			Variants: map[string]any{"v1": map[string]any{
				"decorrelated": map[string]any{"base": "100ms", "cap": "2s", "maxAttempts": 6, "retryBudget": 0.05},
			}},
		},
	}))

	// The service's retry budget: retries below 10% of calls.
	budget, _ := backoff.NewRatioBudget(backoff.RatioBudgetConfig{Ratio: 0.1})
	legacy := backoff.Config{Strategy: backoff.FullJitter, Base: 50 * time.Millisecond, Cap: 500 * time.Millisecond, MaxAttempts: 3}
	retrier, _ := backoff.NewRetrier(backoff.RetrierConfig{Policy: backoff.MustNew(legacy), Upstream: "payments", Budget: budget})
	binding, err := flagbind.New(flagbind.Config{
		Client:  api.NewClient(),
		Targets: []flagbind.Target{retrier},
		Budgets: []flagbind.BudgetTarget{budget},
		Default: legacy,
		Bounds:  flagbind.Bounds{RetryBudget: flagbind.Range[float64]{Min: 0.02, Max: 0.2}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := binding.Reload(ctx); err != nil {
		fmt.Println(err)
	}
	fmt.Println(retrier.Policy(), binding.RetryBudget(), budget.Ratio())
	// Output: decorrelated(base=100ms cap=2s multiplier=3 maxAttempts=6 maxElapsed=0s) 0.05 0.05
}
