package flagbind

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/tailguard/tailguard/backoff"
)

// FuzzConstants feeds arbitrary JSON through decoding, clamping and
// validation: it must never panic, and an accepted policy must keep every
// delay within [0, Cap] and the constants within the bounds.
func FuzzConstants(f *testing.F) {
	f.Add("decorrelated", `{"decorrelated":{"base":"100ms","cap":"2s","maxAttempts":6}}`, uint64(1))
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
		cfg, err = applyConstants(cfg, v)
		if err != nil {
			return
		}
		cfg, _ = bounds.clamp(cfg)
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
