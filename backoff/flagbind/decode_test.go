package flagbind

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tailguard/tailguard/backoff"
)

// FuzzConstants feeds arbitrary JSON through decoding, clamping and
// validation: it must never panic, and an accepted policy must keep every
// delay within [0, Cap] and the constants within the bounds.
func FuzzConstants(f *testing.F) {
	f.Add("decorrelated", `{"decorrelated":{"base":"100ms","cap":"2s","maxAttempts":6,"retryBudget":0.1}}`, uint64(1))
	f.Add("decorrelated", `{"retryBudget":0.5}`, uint64(6))
	f.Add("grpc", `{"base":"1s","cap":"2m","multiplier":1.6,"jitter":0.2,"maxElapsed":"10m"}`, uint64(2))
	f.Add("full-jitter", `{"cap":"1h","maxAttempts":0}`, uint64(3))
	f.Add("exponential", `{"multiplier":1e308,"base":"1y"}`, uint64(4))
	f.Add("equal-jitter", `{"equal-jitter":{"cap":"-1s"},"x":1}`, uint64(5))
	bounds := Bounds{
		Base:        Range[time.Duration]{Min: time.Millisecond, Max: time.Second},
		Cap:         Range[time.Duration]{Min: 10 * time.Millisecond, Max: 30 * time.Second},
		Multiplier:  Range[float64]{Min: 1, Max: 5},
		Jitter:      Range[float64]{Max: 0.5},
		MaxAttempts: Range[int]{Min: 1, Max: 10},
		MaxElapsed:  Range[time.Duration]{Max: time.Minute},
		RetryBudget: Range[float64]{Min: 0.01, Max: 0.2},
	}
	def := backoff.Config{Strategy: backoff.FullJitter, Base: 50 * time.Millisecond, Cap: 500 * time.Millisecond, MaxAttempts: 3}
	f.Fuzz(func(t *testing.T, strategy, constants string, rnd uint64) {
		s, err := backoff.ParseStrategy(strategy)
		if err != nil {
			return
		}
		var v any
		if json.Unmarshal([]byte(constants), &v) != nil {
			v = constants
		}
		cfg := def
		cfg.Strategy = s
		k, err := applyConstants(cfg, v)
		if err != nil {
			return
		}
		if k.RetryBudget != 0 && !(k.RetryBudget > 0 && k.RetryBudget <= 1) {
			t.Fatalf("retryBudget %v accepted", k.RetryBudget)
		}
		if r, _ := bounds.clampRetryBudget(k.RetryBudget); r != 0 && !bounds.RetryBudget.contains(r) {
			t.Fatalf("retryBudget %v outside the bounds after clamping", r)
		}
		cfg, _ = bounds.clamp(k.Config)
		p, err := backoff.New(cfg)
		if err != nil {
			return
		}
		if field := bounds.check(p.Config()); field != "" {
			cfg, _ = bounds.clamp(p.Config())
			if p, err = backoff.New(cfg); err != nil {
				return
			}
		}
		if field := bounds.check(p.Config()); field != "" {
			t.Fatalf("%v: %s outside the bounds after clamping", p, field)
		}
		for retry := 1; retry < 20; retry++ {
			if d := p.Delay(retry, 0, rnd); d < 0 || d > p.Config().Cap {
				t.Fatalf("%v: Delay(%d) = %v", p, retry, d)
			}
		}
	})
}

func TestParseConstants(t *testing.T) {
	def := backoff.Config{Strategy: backoff.Decorrelated, Base: 50 * time.Millisecond, Cap: 500 * time.Millisecond, MaxAttempts: 3}
	all := backoff.Config{Strategy: backoff.Decorrelated, Base: 100 * time.Millisecond, Cap: 2 * time.Second, Multiplier: 2.5,
		Jitter: 0.3, MaxAttempts: 6, MaxElapsed: 10 * time.Second}
	tests := []struct {
		name, data string
		want       Constants
		wantErr    string
	}{
		{name: "every constant keyed",
			data: `{"decorrelated":{"base":"100ms","cap":"2s","multiplier":2.5,"jitter":0.3,"maxAttempts":6,"maxElapsed":"10s","retryBudget":0.1}}`,
			want: Constants{Config: all, RetryBudget: 0.1}},
		{name: "every constant flat",
			data: `{"base":"100ms","cap":"2s","multiplier":2.5,"jitter":0.3,"maxAttempts":6,"maxElapsed":"10s","retryBudget":0.1}`,
			want: Constants{Config: all, RetryBudget: 0.1}},
		{name: "omitted constants keep the defaults", data: `{"decorrelated":{"cap":"1s"}}`,
			want: Constants{Config: backoff.Config{Strategy: backoff.Decorrelated, Base: 50 * time.Millisecond, Cap: time.Second, MaxAttempts: 3}}},
		{name: "other strategy", data: `{"grpc":{"cap":"1s","retryBudget":0.5}}`, want: Constants{Config: def}},
		{name: "null", data: `null`, want: Constants{Config: def}},
		{name: "not JSON", data: `{"cap":`, wantErr: "want a JSON object"},
		{name: "not an object", data: `[1]`, wantErr: "want an object"},
		{name: "retryBudget string", data: `{"decorrelated":{"retryBudget":"10%"}}`, wantErr: "decorrelated.retryBudget: want a number"},
		{name: "retryBudget zero", data: `{"retryBudget":0}`, wantErr: "retryBudget: 0 is outside (0, 1]"},
		{name: "retryBudget above 1", data: `{"retryBudget":1.01}`, wantErr: "retryBudget: 1.01 is outside (0, 1]"},
		{name: "unknown constant", data: `{"retryRatio":0.1}`, wantErr: "retryRatio: unknown constant (want base, cap, multiplier, jitter, maxAttempts, maxElapsed or retryBudget)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseConstants([]byte(tc.data), def)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseConstants = %v, want error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("ParseConstants = %+v, want %+v", got, tc.want)
			}
		})
	}
}
