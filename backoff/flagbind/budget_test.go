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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tailguard/tailguard/backoff"
	"github.com/tailguard/tailguard/backoff/flagbind"
)

// configuredRatio is the ratio the services' budgets are built with in the
// tests.
const configuredRatio = 0.1

func newRatioBudget(t *testing.T) *backoff.RatioBudget {
	t.Helper()
	fixed := time.Unix(1_700_000_000, 0) // one window throughout
	b, err := backoff.NewRatioBudget(backoff.RatioBudgetConfig{Ratio: configuredRatio, Now: func() time.Time { return fixed }})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReloadRetryBudget(t *testing.T) {
	bounded := flagbind.Bounds{RetryBudget: flagbind.Range[float64]{Min: 0.02, Max: 0.2}}
	tests := []struct {
		name       string
		constants  any
		bounds     flagbind.Bounds
		want       float64 // ratio in force afterwards
		wantFlag   float64 // Binding.RetryBudget()
		wantReason string  // errors_total reason counted, if any
		wantErr    string
	}{
		{name: "keyed", constants: map[string]any{"decorrelated": map[string]any{"cap": "2s", "retryBudget": 0.05}}, want: 0.05, wantFlag: 0.05},
		{name: "flat", constants: map[string]any{"retryBudget": 0.2}, want: 0.2, wantFlag: 0.2},
		{name: "JSON text", constants: `{"decorrelated": {"retryBudget": 0.3}}`, want: 0.3, wantFlag: 0.3},
		{name: "whole ratio", constants: map[string]any{"retryBudget": 1}, want: 1, wantFlag: 1},
		{name: "omitted keeps the configured budget", constants: map[string]any{"decorrelated": map[string]any{"cap": "1s"}}, want: configuredRatio},
		{name: "other strategy's budget does not apply", constants: map[string]any{"grpc": map[string]any{"retryBudget": 0.5}}, want: configuredRatio},
		{name: "within bounds", constants: map[string]any{"retryBudget": 0.15}, bounds: bounded, want: 0.15, wantFlag: 0.15},
		{name: "above bounds clamped", constants: map[string]any{"retryBudget": 0.5}, bounds: bounded, want: 0.2, wantFlag: 0.2, wantReason: flagbind.ReasonClamped},
		{name: "below bounds clamped", constants: map[string]any{"decorrelated": map[string]any{"retryBudget": 0.001}}, bounds: bounded, want: 0.02, wantFlag: 0.02, wantReason: flagbind.ReasonClamped},
		{name: "string", constants: map[string]any{"retryBudget": "0.1"}, want: configuredRatio, wantReason: flagbind.ReasonInvalid, wantErr: "retryBudget: want a number, got string"},
		{name: "bool in entry", constants: map[string]any{"decorrelated": map[string]any{"retryBudget": true}}, want: configuredRatio, wantReason: flagbind.ReasonInvalid, wantErr: "decorrelated.retryBudget: want a number"},
		{name: "zero", constants: map[string]any{"retryBudget": 0}, want: configuredRatio, wantReason: flagbind.ReasonInvalid, wantErr: "retryBudget: 0 is outside (0, 1]"},
		{name: "negative", constants: map[string]any{"retryBudget": -0.1}, want: configuredRatio, wantReason: flagbind.ReasonInvalid, wantErr: "retryBudget: -0.1 is outside (0, 1]"},
		{name: "above 1", constants: map[string]any{"retryBudget": 1.5}, bounds: bounded, want: configuredRatio, wantReason: flagbind.ReasonInvalid, wantErr: "retryBudget: 1.5 is outside (0, 1]"},
		{name: "percent as JSON text", constants: `{"retryBudget": 10}`, want: configuredRatio, wantReason: flagbind.ReasonInvalid, wantErr: "retryBudget: 10 is outside (0, 1]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client, _ := newClient(t, flags("decorrelated", tc.constants))
			reg := prometheus.NewPedanticRegistry()
			budget := newRatioBudget(t)
			tg := newTarget()
			b := newBinding(t, flagbind.Config{
				Client: client, Targets: []flagbind.Target{tg}, Budgets: []flagbind.BudgetTarget{budget},
				Default: legacy, Bounds: tc.bounds, Registerer: reg,
			})
			err := b.Reload(context.Background())
			if tc.wantErr != "" {
				var fe *flagbind.Error
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.As(err, &fe) || fe.Flag != "backoff-constants" {
					t.Fatalf("Reload = %v, want an error on backoff-constants containing %q", err, tc.wantErr)
				}
				if tg.count() != 0 {
					t.Error("a rejected flag changed the policy")
				}
			} else if err != nil {
				t.Fatalf("Reload = %v", err)
			}
			if got := budget.Ratio(); got != tc.want {
				t.Errorf("budget ratio = %v, want %v", got, tc.want)
			}
			if got := b.RetryBudget(); got != tc.wantFlag {
				t.Errorf("RetryBudget() = %v, want %v", got, tc.wantFlag)
			}
			if err := testutil.GatherAndCompare(reg, strings.NewReader(errorsText(tc.wantReason)), "backoff_policy_errors_total"); err != nil {
				t.Error(err)
			}
			if got := testutil.ToFloat64(constantGauge(t, reg, "retry_budget")); got != tc.want {
				t.Errorf(`backoff_policy_constant{constant="retry_budget"} = %v, want %v`, got, tc.want)
			}
		})
	}
}

// constantGauge returns a collector of the one series
// backoff_policy_constant{constant=name} gathered from reg.
func constantGauge(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "backoff_policy_constant" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "constant" && lp.GetValue() == name {
					g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x", Help: "x"})
					g.Set(m.GetGauge().GetValue())
					return g
				}
			}
		}
	}
	t.Fatalf("no backoff_policy_constant{constant=%q}", name)
	return nil
}

// TestRetryBudgetFollowsFlagChanges changes retryBudget in the flags and
// checks that the retrier's budget in force follows: the ratio, and how
// many retries the retrier gets.
func TestRetryBudgetFollowsFlagChanges(t *testing.T) {
	client, prov := newClient(t, flags("decorrelated", map[string]any{"decorrelated": map[string]any{"base": "1ms", "cap": "1ms", "maxAttempts": 2}}))
	budget := newRatioBudget(t)
	retrier, err := backoff.NewRetrier(backoff.RetrierConfig{Policy: backoff.MustNew(legacy), Budget: budget, Clock: instantClock{}})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	b := newBinding(t, flagbind.Config{
		Client: client, Targets: []flagbind.Target{retrier}, Budgets: []flagbind.BudgetTarget{budget}, Default: legacy,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	ctx := context.Background()
	// retried runs 100 calls that fail once and returns how many were
	// retried.
	retried := func() int {
		n := 0
		for range 100 {
			first := true
			_ = retrier.Do(ctx, func(context.Context) error {
				if first {
					first = false
					return errors.New("transient")
				}
				n++
				return nil
			})
		}
		return n
	}
	steps := []struct {
		constants   any
		wantRatio   float64
		wantRetried int // of 100 more calls, with 100·k calls and the earlier retries in the window
		wantErr     bool
	}{
		// Configured 10%: 10 of the first 100 calls are retried.
		{constants: map[string]any{"decorrelated": map[string]any{"base": "1ms", "cap": "1ms", "maxAttempts": 2}}, wantRatio: 0.1, wantRetried: 10},
		// 50% of 200 calls: 90 more.
		{constants: map[string]any{"decorrelated": map[string]any{"base": "1ms", "cap": "1ms", "maxAttempts": 2, "retryBudget": 0.5}}, wantRatio: 0.5, wantRetried: 90},
		// An invalid flag keeps 50%: 50 more of 300 calls.
		{constants: map[string]any{"decorrelated": map[string]any{"base": "1ms", "cap": "1ms", "maxAttempts": 2, "retryBudget": "50%"}}, wantRatio: 0.5, wantRetried: 50, wantErr: true},
		// Omitted: back to the configured 10%, which 150 of 400 retries exceed.
		{constants: map[string]any{"decorrelated": map[string]any{"base": "1ms", "cap": "1ms", "maxAttempts": 2}}, wantRatio: 0.1, wantRetried: 0},
		// 100% of 500 calls: 100 more.
		{constants: map[string]any{"decorrelated": map[string]any{"base": "1ms", "cap": "1ms", "maxAttempts": 2, "retryBudget": 1}}, wantRatio: 1, wantRetried: 100},
	}
	for i, st := range steps {
		prov.UpdateFlags(flags("decorrelated", st.constants))
		if err := b.Reload(ctx); (err != nil) != st.wantErr {
			t.Fatalf("step %d: Reload = %v, want error %v", i, err, st.wantErr)
		}
		if got := budget.Ratio(); got != st.wantRatio {
			t.Fatalf("step %d: ratio in force %v, want %v", i, got, st.wantRatio)
		}
		if got := retried(); got != st.wantRetried {
			t.Fatalf("step %d: %d of 100 calls retried, want %d", i, got, st.wantRetried)
		}
	}
	if !strings.Contains(logs.String(), "backoff retry budget changed") {
		t.Errorf("budget change not logged:\n%s", logs.String())
	}
}

// instantClock returns from Sleep at once.
type instantClock struct{}

func (instantClock) Now() time.Time { return time.Unix(1_700_000_000, 0) }
func (instantClock) Sleep(ctx context.Context, _ time.Duration) error {
	return ctx.Err()
}

// TestRunFollowsRetryBudget checks the event path: a configuration change
// reaches the budget before the targets see the new policy.
func TestRunFollowsRetryBudget(t *testing.T) {
	client, prov := newClient(t, flags("decorrelated", map[string]any{"decorrelated": map[string]any{"cap": "2s"}}))
	budget := newRatioBudget(t)
	tg := newTarget()
	b := newBinding(t, flagbind.Config{Client: client, Targets: []flagbind.Target{tg}, Budgets: []flagbind.BudgetTarget{budget}, Default: legacy})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- b.Run(ctx) }()
	if p := tg.wait(t); p.Config().Cap != 2*s || budget.Ratio() != configuredRatio {
		t.Fatalf("first policy %v, ratio %v", p, budget.Ratio())
	}
	prov.UpdateFlags(flags("decorrelated", map[string]any{"decorrelated": map[string]any{"cap": "1s", "retryBudget": 0.04}}))
	if p := tg.wait(t); p.Config().Cap != s || budget.Ratio() != 0.04 {
		t.Fatalf("policy after change %v, ratio %v; want cap 1s, ratio 0.04", p, budget.Ratio())
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}

// refusingBudget refuses every ratio.
type refusingBudget struct{ ratio float64 }

func (r *refusingBudget) Ratio() float64 { return r.ratio }
func (r *refusingBudget) SetRatio(v float64) error {
	return fmt.Errorf("ratio %v refused", v)
}

func TestRetryBudgetRefusedIsRolledBack(t *testing.T) {
	client, _ := newClient(t, flags("decorrelated", map[string]any{"cap": "2s", "retryBudget": 0.3}))
	first := newRatioBudget(t)
	tg := newTarget()
	reg := prometheus.NewPedanticRegistry()
	b := newBinding(t, flagbind.Config{
		Client: client, Targets: []flagbind.Target{tg}, Default: legacy, Registerer: reg,
		Budgets: []flagbind.BudgetTarget{first, &refusingBudget{ratio: 0.1}},
	})
	err := b.Reload(context.Background())
	var fe *flagbind.Error
	if !errors.As(err, &fe) || fe.Reason != flagbind.ReasonInvalid || !strings.Contains(err.Error(), "retryBudget: budgets[1]: ratio 0.3 refused") {
		t.Fatalf("Reload = %v, want an invalid retryBudget error naming budgets[1]", err)
	}
	if first.Ratio() != configuredRatio || tg.count() != 0 || b.RetryBudget() != 0 {
		t.Errorf("after a refused budget: first ratio %v, %d policies, RetryBudget %v; want nothing changed", first.Ratio(), tg.count(), b.RetryBudget())
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(errorsText(flagbind.ReasonInvalid)), "backoff_policy_errors_total"); err != nil {
		t.Error(err)
	}
}

func TestRetryBudgetWithoutBudgets(t *testing.T) {
	client, _ := newClient(t, flags("decorrelated", map[string]any{"retryBudget": 0.3}))
	reg := prometheus.NewPedanticRegistry()
	var logs bytes.Buffer
	b := newBinding(t, flagbind.Config{
		Client: client, Targets: []flagbind.Target{newTarget()}, Default: legacy, Registerer: reg,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err := b.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b.RetryBudget() != 0.3 || !strings.Contains(logs.String(), "no retry budget is bound") {
		t.Errorf("RetryBudget() = %v, logs:\n%s", b.RetryBudget(), logs.String())
	}
	// Without budgets there is no retry_budget series.
	if n, err := testutil.GatherAndCount(reg, "backoff_policy_constant"); err != nil || n != 6 {
		t.Errorf("backoff_policy_constant has %d series (%v), want the 6 policy constants", n, err)
	}
}

func TestNewRetryBudgetValidation(t *testing.T) {
	client, _ := newClient(t, nil)
	tg := []flagbind.Target{newTarget()}
	tests := []struct {
		name string
		cfg  flagbind.Config
		want string
	}{
		{"nil budget", flagbind.Config{Client: client, Targets: tg, Default: legacy, Budgets: []flagbind.BudgetTarget{nil}}, "budgets[0] is nil"},
		{"configured ratio outside bounds", flagbind.Config{Client: client, Targets: tg, Default: legacy,
			Budgets: []flagbind.BudgetTarget{newRatioBudget(t)},
			Bounds:  flagbind.Bounds{RetryBudget: flagbind.Range[float64]{Min: 0.2, Max: 0.5}}}, "budgets[0]: ratio 0.1 is outside the retryBudget bounds"},
		{"bound above 1", flagbind.Config{Client: client, Targets: tg, Default: legacy,
			Bounds: flagbind.Bounds{RetryBudget: flagbind.Range[float64]{Max: 2}}}, "bounds: retryBudget: max 2 exceeds 1"},
		{"inverted bound", flagbind.Config{Client: client, Targets: tg, Default: legacy,
			Bounds: flagbind.Bounds{RetryBudget: flagbind.Range[float64]{Min: 0.5, Max: 0.1}}}, "bounds: retryBudget: max 0.1 is below min 0.5"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := flagbind.New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

// TestRetryBudgetConcurrent reloads changing flags while callers share the
// retrier and its budget; run it with -race.
func TestRetryBudgetConcurrent(t *testing.T) {
	constants := func(r float64) map[string]any {
		return map[string]any{"decorrelated": map[string]any{"base": "1ms", "cap": "1ms", "maxAttempts": 3, "retryBudget": r}}
	}
	client, prov := newClient(t, flags("decorrelated", constants(0.1)))
	budget := newRatioBudget(t)
	retrier, err := backoff.NewRetrier(backoff.RetrierConfig{Policy: backoff.MustNew(legacy), Budget: budget, Clock: instantClock{}})
	if err != nil {
		t.Fatal(err)
	}
	b := newBinding(t, flagbind.Config{Client: client, Targets: []flagbind.Target{retrier}, Budgets: []flagbind.BudgetTarget{budget}, Default: legacy})
	ctx := context.Background()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					_ = retrier.Do(ctx, func(context.Context) error { return errors.New("transient") })
				}
			}
		})
	}
	ratios := []float64{0.05, 0.5, 0.2, 1}
	for i := range 40 {
		prov.UpdateFlags(flags("decorrelated", constants(ratios[i%len(ratios)])))
		if err := b.Reload(ctx); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
	if got, want := budget.Ratio(), ratios[39%len(ratios)]; got != want || b.RetryBudget() != want {
		t.Errorf("ratio in force %v (binding %v), want the last flag value %v", got, b.RetryBudget(), want)
	}
}
