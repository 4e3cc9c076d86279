package flagbind_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"
	"github.com/open-feature/go-sdk/openfeature/memprovider"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tailguard/tailguard/backoff"
	"github.com/tailguard/tailguard/backoff/flagbind"
)

const (
	ms = time.Millisecond
	s  = time.Second
)

// legacy is the service's compiled-in configuration in the tests.
var legacy = backoff.Config{Strategy: backoff.FullJitter, Base: 50 * ms, Cap: 500 * ms, MaxAttempts: 3}

func flag(key string, value any) memprovider.InMemoryFlag {
	return memprovider.InMemoryFlag{
		Key:            key,
		State:          memprovider.Enabled,
		DefaultVariant: "on",
		Variants:       map[string]any{"on": value},
	}
}

func flags(strategy, constants any) map[string]memprovider.InMemoryFlag {
	m := map[string]memprovider.InMemoryFlag{}
	if strategy != nil {
		m["backoff-strategy"] = flag("backoff-strategy", strategy)
	}
	if constants != nil {
		m["backoff-constants"] = flag("backoff-constants", constants)
	}
	return m
}

// newClient serves the flags from an in-memory provider on an isolated API.
func newClient(t *testing.T, fl map[string]memprovider.InMemoryFlag) (*openfeature.Client, *memprovider.InMemoryProvider) {
	t.Helper()
	api := isolated.NewAPI()
	prov := memprovider.NewInMemoryProvider(fl)
	ctx := context.Background()
	if err := api.SetProviderAndWait(ctx, prov); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Shutdown(ctx) })
	return api.NewClient(), prov
}

// target records the policies it receives.
type target struct {
	mu       sync.Mutex
	policies []*backoff.Policy
	changed  chan *backoff.Policy
}

func newTarget() *target { return &target{changed: make(chan *backoff.Policy, 16)} }

func (t *target) SetPolicy(p *backoff.Policy) {
	t.mu.Lock()
	t.policies = append(t.policies, p)
	t.mu.Unlock()
	t.changed <- p
}

func (t *target) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.policies)
}

func (t *target) wait(tb testing.TB) *backoff.Policy {
	tb.Helper()
	select {
	case p := <-t.changed:
		return p
	case <-time.After(10 * time.Second):
		tb.Fatal("no policy change")
		return nil
	}
}

func newBinding(t *testing.T, cfg flagbind.Config) *flagbind.Binding {
	t.Helper()
	b, err := flagbind.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReload(t *testing.T) {
	tests := []struct {
		name       string
		strategy   any
		constants  any
		bounds     flagbind.Bounds
		want       backoff.Config // normalized; zero if the flags are rejected
		wantReason string         // errors_total reason counted, if any
		wantErr    string
	}{
		{
			name:      "keyed constants",
			strategy:  "decorrelated",
			constants: map[string]any{"decorrelated": map[string]any{"base": "100ms", "cap": "2s", "maxAttempts": float64(6)}, "exponential": map[string]any{"base": "1s"}},
			want:      backoff.Config{Strategy: backoff.Decorrelated, Base: 100 * ms, Cap: 2 * s, Multiplier: 3, MaxAttempts: 6},
		},
		{
			name:      "flat constants",
			strategy:  "grpc",
			constants: map[string]any{"base": "1s", "cap": "2m", "multiplier": 1.6, "jitter": 0.2, "maxAttempts": 10, "maxElapsed": "5m"},
			want:      backoff.Config{Strategy: backoff.GRPC, Base: s, Cap: 2 * time.Minute, Multiplier: 1.6, Jitter: 0.2, MaxAttempts: 10, MaxElapsed: 5 * time.Minute},
		},
		{
			name:      "constants as JSON text",
			strategy:  "equal-jitter",
			constants: `{"equal-jitter": {"cap": "1s"}}`,
			want:      backoff.Config{Strategy: backoff.EqualJitter, Base: 50 * ms, Cap: s, Multiplier: 2, MaxAttempts: 3},
		},
		{
			name:      "no entry for the strategy keeps the defaults",
			strategy:  "exponential",
			constants: map[string]any{"decorrelated": map[string]any{"base": "100ms"}},
			want:      backoff.Config{Strategy: backoff.Exponential, Base: 50 * ms, Cap: 500 * ms, Multiplier: 2, MaxAttempts: 3},
		},
		{
			name:       "clamped to bounds",
			strategy:   "decorrelated",
			constants:  map[string]any{"cap": "1h", "maxAttempts": 0, "multiplier": 50},
			bounds:     flagbind.Bounds{Cap: flagbind.Range[time.Duration]{Min: 100 * ms, Max: 5 * s}, MaxAttempts: flagbind.Range[int]{Min: 1, Max: 8}, Multiplier: flagbind.Range[float64]{Min: 1, Max: 4}},
			want:       backoff.Config{Strategy: backoff.Decorrelated, Base: 50 * ms, Cap: 5 * s, Multiplier: 4, MaxAttempts: 8},
			wantReason: flagbind.ReasonClamped,
		},
		{
			name:       "strategy default multiplier clamped",
			strategy:   "decorrelated",
			constants:  map[string]any{},
			bounds:     flagbind.Bounds{Multiplier: flagbind.Range[float64]{Min: 1, Max: 2.5}},
			want:       backoff.Config{Strategy: backoff.Decorrelated, Base: 50 * ms, Cap: 500 * ms, Multiplier: 2.5, MaxAttempts: 3},
			wantReason: flagbind.ReasonClamped,
		},
		{name: "strategy flag missing", constants: map[string]any{}, wantReason: flagbind.ReasonMissing, wantErr: `flag "backoff-strategy" (missing)`},
		{name: "constants flag missing", strategy: "grpc", wantReason: flagbind.ReasonMissing, wantErr: `flag "backoff-constants" (missing)`},
		{name: "unknown strategy", strategy: "linear", constants: map[string]any{}, wantReason: flagbind.ReasonInvalid, wantErr: `unknown strategy "linear"`},
		{name: "strategy of the wrong type", strategy: true, constants: map[string]any{}, wantReason: flagbind.ReasonInvalid, wantErr: "TYPE_MISMATCH"},
		{
			name: "strategy not allowed", strategy: "exponential", constants: map[string]any{},
			bounds:     flagbind.Bounds{Strategies: []backoff.Strategy{backoff.FullJitter, backoff.Decorrelated}},
			wantReason: flagbind.ReasonInvalid, wantErr: "not allowed",
		},
		{name: "constants not an object", strategy: "grpc", constants: 42, wantReason: flagbind.ReasonInvalid, wantErr: "want an object, got int"},
		{name: "constants bad JSON", strategy: "grpc", constants: `{"cap":`, wantReason: flagbind.ReasonInvalid, wantErr: "want a JSON object"},
		{name: "unknown constant", strategy: "grpc", constants: map[string]any{"grpc": map[string]any{"ceiling": "1s"}}, wantReason: flagbind.ReasonInvalid, wantErr: "grpc.ceiling: unknown constant"},
		{name: "bad duration", strategy: "grpc", constants: map[string]any{"cap": "fast"}, wantReason: flagbind.ReasonInvalid, wantErr: "cap: not a valid duration string"},
		{name: "duration as number", strategy: "grpc", constants: map[string]any{"base": 0.1}, wantReason: flagbind.ReasonInvalid, wantErr: `base: want a duration string such as "100ms"`},
		{name: "fractional attempts", strategy: "grpc", constants: map[string]any{"maxAttempts": 2.5}, wantReason: flagbind.ReasonInvalid, wantErr: "maxAttempts: want an integer"},
		{name: "multiplier as string", strategy: "grpc", constants: map[string]any{"multiplier": "2"}, wantReason: flagbind.ReasonInvalid, wantErr: "multiplier: want a number"},
		{name: "entry not an object", strategy: "grpc", constants: map[string]any{"grpc": "fast"}, wantReason: flagbind.ReasonInvalid, wantErr: "grpc: want a JSON object"},
		{name: "mixed keys", strategy: "grpc", constants: map[string]any{"grpc": map[string]any{}, "cap": "1s"}, wantReason: flagbind.ReasonInvalid, wantErr: "mixes strategy keys"},
		{name: "cap below base", strategy: "grpc", constants: map[string]any{"base": "2s", "cap": "1s"}, wantReason: flagbind.ReasonInvalid, wantErr: "invalid backoff config: cap: 1s is below base 2s"},
		{name: "jitter out of range", strategy: "grpc", constants: map[string]any{"jitter": 2}, wantReason: flagbind.ReasonInvalid, wantErr: "jitter: 2 is outside [0, 1]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client, _ := newClient(t, flags(tc.strategy, tc.constants))
			reg := prometheus.NewPedanticRegistry()
			tg := newTarget()
			var logs bytes.Buffer
			b := newBinding(t, flagbind.Config{
				Client: client, Targets: []flagbind.Target{tg}, Default: legacy, Bounds: tc.bounds,
				Registerer: reg, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
			})
			before := b.Policy()
			err := b.Reload(context.Background())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Reload = %v, want error containing %q", err, tc.wantErr)
				}
				var fe *flagbind.Error
				if !errors.As(err, &fe) || fe.Reason != tc.wantReason {
					t.Errorf("error %v does not carry reason %q", err, tc.wantReason)
				}
				if b.Policy() != before || tg.count() != 0 {
					t.Error("a rejected flag changed the policy")
				}
				if !strings.Contains(logs.String(), "keeping the last good policy") {
					t.Errorf("rejection not logged: %s", logs.String())
				}
			} else {
				if err != nil {
					t.Fatalf("Reload = %v", err)
				}
				if got := b.Policy().Config(); got != tc.want {
					t.Errorf("policy = %+v, want %+v", got, tc.want)
				}
				if tg.count() != 1 {
					t.Errorf("target got %d policies, want 1", tg.count())
				}
			}
			if err := testutil.GatherAndCompare(reg, strings.NewReader(errorsText(tc.wantReason)), "backoff_policy_errors_total"); err != nil {
				t.Error(err)
			}
		})
	}
}

// errorsText is the exposition of backoff_policy_errors_total with 1 for
// reason (if not empty) and 0 for the others.
func errorsText(reason string) string {
	var sb strings.Builder
	sb.WriteString("# HELP backoff_policy_errors_total Backoff flag evaluations whose result was rejected (missing, invalid, evaluation; the last good policy was kept) or clamped to bounds.\n")
	sb.WriteString("# TYPE backoff_policy_errors_total counter\n")
	for _, r := range []string{flagbind.ReasonClamped, flagbind.ReasonEvaluation, flagbind.ReasonInvalid, flagbind.ReasonMissing} {
		v := 0
		if r == reason {
			v = 1
		}
		fmt.Fprintf(&sb, "backoff_policy_errors_total{reason=%q} %d\n", r, v)
	}
	return sb.String()
}

func TestReloadKeepsLastGoodPolicy(t *testing.T) {
	client, prov := newClient(t, flags("decorrelated", map[string]any{"decorrelated": map[string]any{"base": "100ms", "cap": "2s"}}))
	retrier, err := backoff.NewRetrier(backoff.RetrierConfig{Policy: backoff.MustNew(legacy)})
	if err != nil {
		t.Fatal(err)
	}
	b := newBinding(t, flagbind.Config{Client: client, Targets: []flagbind.Target{retrier}, Default: legacy})
	ctx := context.Background()
	if err := b.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	good := retrier.Policy()
	if good.Strategy() != backoff.Decorrelated || good.Config().Cap != 2*s {
		t.Fatalf("policy = %v", good)
	}
	// An unchanged flag does not hand out a new policy.
	if err := b.Reload(ctx); err != nil || retrier.Policy() != good {
		t.Fatalf("unchanged flags replaced the policy (%v)", err)
	}
	for _, bad := range []map[string]memprovider.InMemoryFlag{
		flags("decorrelated", nil),
		flags(nil, map[string]any{}),
		flags("decorrelated", map[string]any{"decorrelated": map[string]any{"cap": "-1s"}}),
	} {
		prov.UpdateFlags(bad)
		if err := b.Reload(ctx); err == nil {
			t.Fatalf("Reload accepted %v", bad)
		}
		if retrier.Policy() != good || b.Policy() != good {
			t.Fatalf("policy changed to %v", retrier.Policy())
		}
	}
}

func TestRunFollowsEvents(t *testing.T) {
	client, prov := newClient(t, flags("decorrelated", map[string]any{"decorrelated": map[string]any{"base": "100ms", "cap": "2s", "maxAttempts": 6}}))
	tg := newTarget()
	reg := prometheus.NewPedanticRegistry()
	b := newBinding(t, flagbind.Config{Client: client, Targets: []flagbind.Target{tg}, Default: legacy, Registerer: reg})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- b.Run(ctx) }()

	// The provider is ready: Run reads the flags at once.
	if p := tg.wait(t); p.Strategy() != backoff.Decorrelated || p.Config().MaxAttempts != 6 {
		t.Fatalf("first policy = %v", p)
	}
	// A configuration change is picked up.
	prov.UpdateFlags(flags("decorrelated", map[string]any{"decorrelated": map[string]any{"base": "100ms", "cap": "1s", "maxAttempts": 4}}))
	if p := tg.wait(t); p.Config().Cap != s || p.Config().MaxAttempts != 4 {
		t.Fatalf("policy after change = %v", p)
	}
	want := `
# HELP backoff_policy_constant Constants of the backoff policy in force (base_seconds, cap_seconds, multiplier, jitter, max_attempts, max_elapsed_seconds; 0 means unbounded for the max_ constants) and retry_budget, the ratio of the first bound retry budget.
# TYPE backoff_policy_constant gauge
backoff_policy_constant{constant="base_seconds"} 0.1
backoff_policy_constant{constant="cap_seconds"} 1
backoff_policy_constant{constant="jitter"} 0
backoff_policy_constant{constant="max_attempts"} 4
backoff_policy_constant{constant="max_elapsed_seconds"} 0
backoff_policy_constant{constant="multiplier"} 3
# HELP backoff_policy_info Strategy of the backoff policy in force (value 1).
# TYPE backoff_policy_info gauge
backoff_policy_info{strategy="decorrelated"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "backoff_policy_constant", "backoff_policy_info"); err != nil {
		t.Error(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}

func TestEvaluationContext(t *testing.T) {
	// The strategy depends on the targeting key and an attribute, as a
	// fractional rollout or a targeting rule would.
	eval := func(f memprovider.InMemoryFlag, fc openfeature.FlattenedContext) (any, openfeature.ProviderResolutionDetail) {
		v := "full-jitter"
		if fc[openfeature.TargetingKey] == "shop-7" && fc["service"] == "shop" {
			v = "decorrelated"
		}
		return v, openfeature.ProviderResolutionDetail{Reason: openfeature.TargetingMatchReason, Variant: v}
	}
	fl := flags(nil, map[string]any{})
	fl["backoff-strategy"] = memprovider.InMemoryFlag{Key: "backoff-strategy", State: memprovider.Enabled, ContextEvaluator: &eval}
	client, _ := newClient(t, fl)
	for _, tc := range []struct {
		instance string
		want     backoff.Strategy
	}{{"shop-7", backoff.Decorrelated}, {"shop-8", backoff.FullJitter}} {
		b := newBinding(t, flagbind.Config{
			Client: client, Targets: []flagbind.Target{newTarget()}, Default: legacy,
			InstanceID: tc.instance, Attributes: map[string]any{"service": "shop"},
		})
		if err := b.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := b.Policy().Strategy(); got != tc.want {
			t.Errorf("instance %s: strategy %v, want %v", tc.instance, got, tc.want)
		}
	}
}

func TestCustomFlagKeysAndDisabledFlag(t *testing.T) {
	fl := map[string]memprovider.InMemoryFlag{
		"payments-strategy":  flag("payments-strategy", "grpc"),
		"payments-constants": flag("payments-constants", map[string]any{"cap": "3s"}),
	}
	client, prov := newClient(t, fl)
	b := newBinding(t, flagbind.Config{
		Client: client, Targets: []flagbind.Target{newTarget()}, Default: legacy,
		StrategyFlag: "payments-strategy", ConstantsFlag: "payments-constants",
	})
	if err := b.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c := b.Policy().Config(); c.Strategy != backoff.GRPC || c.Cap != 3*s {
		t.Fatalf("policy = %v", b.Policy())
	}
	// A disabled flag evaluates to the default: the compiled-in strategy.
	disabled := fl["payments-strategy"]
	disabled.State = memprovider.Disabled
	prov.UpdateFlags(map[string]memprovider.InMemoryFlag{"payments-strategy": disabled, "payments-constants": fl["payments-constants"]})
	if err := b.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c := b.Policy().Config(); c.Strategy != legacy.Strategy || c.Cap != 3*s {
		t.Fatalf("policy with a disabled strategy flag = %v", b.Policy())
	}
}

func TestNewValidation(t *testing.T) {
	client, _ := newClient(t, nil)
	tg := []flagbind.Target{newTarget()}
	tests := []struct {
		name string
		cfg  flagbind.Config
		want string
	}{
		{"no client", flagbind.Config{Targets: tg, Default: legacy}, "client is nil"},
		{"no targets", flagbind.Config{Client: client, Default: legacy}, "targets: at least one"},
		{"nil target", flagbind.Config{Client: client, Targets: []flagbind.Target{nil}, Default: legacy}, "targets[0] is nil"},
		{"invalid default", flagbind.Config{Client: client, Targets: tg}, "default: invalid backoff config: strategy"},
		{"default outside bounds", flagbind.Config{Client: client, Targets: tg, Default: legacy,
			Bounds: flagbind.Bounds{Cap: flagbind.Range[time.Duration]{Max: 100 * ms}}}, "default: cap is outside the bounds"},
		{"default attempts unbounded", flagbind.Config{Client: client, Targets: tg, Default: backoff.Config{Strategy: backoff.GRPC, Cap: s},
			Bounds: flagbind.Bounds{MaxAttempts: flagbind.Range[int]{Min: 1, Max: 5}}}, "default: maxAttempts is outside"},
		{"default strategy not allowed", flagbind.Config{Client: client, Targets: tg, Default: legacy,
			Bounds: flagbind.Bounds{Strategies: []backoff.Strategy{backoff.GRPC}}}, "strategy full-jitter is not allowed"},
		{"inverted range", flagbind.Config{Client: client, Targets: tg, Default: legacy,
			Bounds: flagbind.Bounds{Base: flagbind.Range[time.Duration]{Min: s, Max: ms}}}, "bounds: base: max 1ms is below min 1s"},
		{"negative min", flagbind.Config{Client: client, Targets: tg, Default: legacy,
			Bounds: flagbind.Bounds{Jitter: flagbind.Range[float64]{Min: -1}}}, "bounds: jitter: min -1 is negative"},
		{"invalid strategy bound", flagbind.Config{Client: client, Targets: tg, Default: legacy,
			Bounds: flagbind.Bounds{Strategies: []backoff.Strategy{9}}}, "bounds: strategies: invalid strategy 9"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := flagbind.New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want error containing %q", err, tc.want)
			}
		})
	}
	reg := prometheus.NewRegistry()
	ok := flagbind.Config{Client: client, Targets: tg, Default: legacy, Registerer: reg}
	if _, err := flagbind.New(ok); err != nil {
		t.Fatal(err)
	}
	if _, err := flagbind.New(ok); err == nil {
		t.Error("second binding on the same registry registered its metrics")
	}
}

// failingProvider fails every evaluation with a general error.
type failingProvider struct{ openfeature.NoopProvider }

func (failingProvider) StringEvaluation(_ context.Context, _ string, def string, _ openfeature.FlattenedContext) openfeature.StringResolutionDetail {
	return openfeature.StringResolutionDetail{Value: def, ProviderResolutionDetail: openfeature.ProviderResolutionDetail{
		ResolutionError: openfeature.NewGeneralResolutionError("backend unreachable"), Reason: openfeature.ErrorReason,
	}}
}

func TestReloadProviderError(t *testing.T) {
	api := isolated.NewAPI()
	ctx := context.Background()
	if err := api.SetProviderAndWait(ctx, &failingProvider{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Shutdown(ctx) })
	reg := prometheus.NewPedanticRegistry()
	b := newBinding(t, flagbind.Config{Client: api.NewClient(), Targets: []flagbind.Target{newTarget()}, Default: legacy, Registerer: reg})
	err := b.Reload(ctx)
	var fe *flagbind.Error
	if !errors.As(err, &fe) || fe.Reason != flagbind.ReasonEvaluation || fe.Flag != flagbind.DefaultStrategyFlag {
		t.Fatalf("Reload = %v, want an evaluation error on the strategy flag", err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(errorsText(flagbind.ReasonEvaluation)), "backoff_policy_errors_total"); err != nil {
		t.Error(err)
	}
	if b.Policy().Config().Cap != legacy.Cap {
		t.Errorf("policy changed to %v", b.Policy())
	}
}
