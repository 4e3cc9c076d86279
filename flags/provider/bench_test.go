package provider

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"
)

func benchClient(b *testing.B) *openfeature.Client {
	b.Helper()
	data, err := os.ReadFile("testdata/flags.json")
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "flags.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
	p, err := New(Config{Path: path, Resync: -1})
	if err != nil {
		b.Fatal(err)
	}
	api := isolated.NewAPI()
	ctx := context.Background()
	if err := api.SetProviderAndWait(ctx, p); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = api.Shutdown(ctx) })
	return api.NewClient()
}

// BenchmarkClientStatic evaluates a flag without targeting through the
// OpenFeature client.
func BenchmarkClientStatic(b *testing.B) {
	c := benchClient(b)
	ctx := context.Background()
	evalCtx := openfeature.NewEvaluationContext("user-1", map[string]any{"email": "a@example.com"})
	b.ReportAllocs()
	for b.Loop() {
		if v, err := c.IntValue(ctx, "max-attempts", 1, evalCtx); err != nil || v != 6 {
			b.Fatal(v, err)
		}
	}
}

// BenchmarkClientFractional evaluates a 25/75 fractional rollout, as
// tailguard writes it, through the OpenFeature client, with a different
// targeting key each time.
func BenchmarkClientFractional(b *testing.B) {
	c := benchClient(b)
	ctx := context.Background()
	evalCtxs := make([]openfeature.EvaluationContext, 1024)
	for i := range evalCtxs {
		evalCtxs[i] = openfeature.NewEvaluationContext("user-"+strconv.Itoa(i), map[string]any{"email": "a@example.com"})
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		d, err := c.StringValueDetails(ctx, "backoff-strategy", "none", evalCtxs[i%len(evalCtxs)])
		if err != nil || d.Reason != openfeature.TargetingMatchReason {
			b.Fatal(d, err)
		}
		i++
	}
}

// BenchmarkClientFractionalExpression evaluates a fractional rule bucketing
// on an expression (flag key and email), which goes through JsonLogic.
func BenchmarkClientFractionalExpression(b *testing.B) {
	c := benchClient(b)
	ctx := context.Background()
	evalCtxs := make([]openfeature.EvaluationContext, 1024)
	for i := range evalCtxs {
		evalCtxs[i] = openfeature.NewEvaluationContext("user-"+strconv.Itoa(i), map[string]any{"email": "user" + strconv.Itoa(i) + "@example.com"})
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		d, err := c.BooleanValueDetails(ctx, "checkout-split", false, evalCtxs[i%len(evalCtxs)])
		if err != nil || d.Reason != openfeature.TargetingMatchReason {
			b.Fatal(d, err)
		}
		i++
	}
}
