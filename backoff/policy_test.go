package backoff_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tailguard/tailguard/backoff"
)

const (
	ms = time.Millisecond
	s  = time.Second
)

func TestNewRejectsInvalidFields(t *testing.T) {
	valid := backoff.Config{Strategy: backoff.FullJitter, Base: 100 * ms, Cap: 2 * s}
	tests := []struct {
		name  string
		edit  func(*backoff.Config)
		field string
	}{
		{"missing strategy", func(c *backoff.Config) { c.Strategy = 0 }, "strategy"},
		{"unknown strategy", func(c *backoff.Config) { c.Strategy = 42 }, "strategy"},
		{"negative base", func(c *backoff.Config) { c.Base = -1 }, "base"},
		{"base above MaxDelay", func(c *backoff.Config) { c.Base, c.Cap = backoff.MaxDelay+1, backoff.MaxDelay+1 }, "base"},
		{"cap below base", func(c *backoff.Config) { c.Cap = 50 * ms }, "cap"},
		{"cap above MaxDelay", func(c *backoff.Config) { c.Cap = backoff.MaxDelay + 1 }, "cap"},
		{"multiplier below 1", func(c *backoff.Config) { c.Multiplier = 0.5 }, "multiplier"},
		{"multiplier negative", func(c *backoff.Config) { c.Multiplier = -2 }, "multiplier"},
		{"multiplier above 100", func(c *backoff.Config) { c.Multiplier = 101 }, "multiplier"},
		{"multiplier NaN", func(c *backoff.Config) { c.Multiplier = math.NaN() }, "multiplier"},
		{"multiplier Inf", func(c *backoff.Config) { c.Multiplier = math.Inf(1) }, "multiplier"},
		{"jitter negative", func(c *backoff.Config) { c.Jitter = -0.1 }, "jitter"},
		{"jitter above 1", func(c *backoff.Config) { c.Jitter = 1.5 }, "jitter"},
		{"jitter NaN", func(c *backoff.Config) { c.Jitter = math.NaN() }, "jitter"},
		{"negative max attempts", func(c *backoff.Config) { c.MaxAttempts = -1 }, "maxAttempts"},
		{"negative max elapsed", func(c *backoff.Config) { c.MaxElapsed = -s }, "maxElapsed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid
			tc.edit(&cfg)
			p, err := backoff.New(cfg)
			if err == nil {
				t.Fatalf("New(%+v) = %v, want error", cfg, p)
			}
			var ce *backoff.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is %T, want *ConfigError", err, err)
			}
			if ce.Field != tc.field {
				t.Errorf("field = %q, want %q (error: %v)", ce.Field, tc.field, err)
			}
			if cfg.Validate() == nil {
				t.Error("Validate accepted what New rejected")
			}
		})
	}
}

func TestNewFillsDefaults(t *testing.T) {
	tests := []struct {
		cfg            backoff.Config
		wantMultiplier float64
		wantJitter     float64
	}{
		{backoff.Config{Strategy: backoff.Exponential, Cap: s}, 2, 0},
		{backoff.Config{Strategy: backoff.FullJitter, Cap: s}, 2, 0},
		{backoff.Config{Strategy: backoff.EqualJitter, Cap: s, Jitter: 0.5}, 2, 0},
		{backoff.Config{Strategy: backoff.Decorrelated, Cap: s}, 3, 0},
		{backoff.Config{Strategy: backoff.GRPC, Cap: s}, 1.6, 0.2},
		{backoff.Config{Strategy: backoff.GRPC, Cap: s, Multiplier: 1.5, Jitter: 0.1}, 1.5, 0.1},
	}
	for _, tc := range tests {
		t.Run(tc.cfg.Strategy.String(), func(t *testing.T) {
			got := backoff.MustNew(tc.cfg).Config()
			if got.Multiplier != tc.wantMultiplier || got.Jitter != tc.wantJitter {
				t.Errorf("multiplier, jitter = %v, %v; want %v, %v", got.Multiplier, got.Jitter, tc.wantMultiplier, tc.wantJitter)
			}
		})
	}
}

func TestStrategyNames(t *testing.T) {
	want := []string{"exponential", "full-jitter", "equal-jitter", "decorrelated", "grpc"}
	for i, s := range backoff.Strategies() {
		if s.String() != want[i] {
			t.Errorf("Strategies()[%d] = %q, want %q", i, s, want[i])
		}
		got, err := backoff.ParseStrategy(want[i])
		if err != nil || got != s {
			t.Errorf("ParseStrategy(%q) = %v, %v", want[i], got, err)
		}
		text, err := s.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back backoff.Strategy
		if err := back.UnmarshalText(text); err != nil || back != s {
			t.Errorf("text round trip of %v = %v, %v", s, back, err)
		}
	}
	for _, bad := range []string{"", "Full-Jitter", "none", "fulljitter"} {
		if _, err := backoff.ParseStrategy(bad); err == nil {
			t.Errorf("ParseStrategy(%q) succeeded", bad)
		}
	}
	if _, err := backoff.Strategy(0).MarshalText(); err == nil {
		t.Error("MarshalText of the zero strategy succeeded")
	}
	if got := backoff.Strategy(9).String(); got != "Strategy(9)" {
		t.Errorf("String of invalid strategy = %q", got)
	}
}

const (
	rndMin = uint64(0)
	rndMax = uint64(math.MaxUint64)
	rndMid = uint64(1) << 63
)

func TestDelay(t *testing.T) {
	expo := backoff.MustNew(backoff.Config{Strategy: backoff.Exponential, Base: 100 * ms, Cap: s})
	full := backoff.MustNew(backoff.Config{Strategy: backoff.FullJitter, Base: 100 * ms, Cap: s})
	equal := backoff.MustNew(backoff.Config{Strategy: backoff.EqualJitter, Base: 100 * ms, Cap: s})
	decor := backoff.MustNew(backoff.Config{Strategy: backoff.Decorrelated, Base: 100 * ms, Cap: s})
	grpc := backoff.MustNew(backoff.Config{Strategy: backoff.GRPC, Base: s, Cap: 120 * s})
	slow := backoff.MustNew(backoff.Config{Strategy: backoff.Exponential, Base: ms, Cap: backoff.MaxDelay, Multiplier: 1.01})
	const ns = time.Nanosecond
	tests := []struct {
		name  string
		p     *backoff.Policy
		retry int
		prev  time.Duration
		rnd   uint64
		want  time.Duration
	}{
		{"exponential first", expo, 1, 0, rndMax, 100 * ms},
		{"exponential second", expo, 2, 0, rndMid, 200 * ms},
		{"exponential fourth", expo, 4, 0, 7, 800 * ms},
		{"exponential capped", expo, 5, 0, 7, s},
		{"exponential far beyond cap", expo, 1 << 30, 0, 7, s},
		{"exponential retry 0 is first", expo, 0, 0, 7, 100 * ms},
		{"exponential negative retry is first", expo, -5, 0, 7, 100 * ms},
		{"full jitter low", full, 3, 0, rndMin, 0},
		{"full jitter mid", full, 3, 0, rndMid, 200 * ms},
		{"full jitter high stays below exp", full, 3, 0, rndMax, 400*ms - ns},
		{"full jitter capped", full, 10, 0, rndMid, 500 * ms},
		{"equal jitter low", equal, 3, 0, rndMin, 200 * ms},
		{"equal jitter mid", equal, 3, 0, rndMid, 300 * ms},
		{"equal jitter capped high", equal, 10, 0, rndMax, s - ns},
		{"decorrelated first low", decor, 1, 0, rndMin, 100 * ms},
		{"decorrelated first mid", decor, 1, 0, rndMid, 200 * ms},
		{"decorrelated grows from prev", decor, 2, 200 * ms, rndMid, 350 * ms},
		{"decorrelated prev below base", decor, 2, 10 * ms, rndMin, 100 * ms},
		{"decorrelated capped", decor, 5, 900 * ms, rndMax, s},
		{"decorrelated prev above cap", decor, 5, time.Hour, rndMin, 100 * ms},
		{"grpc low", grpc, 1, 0, rndMin, 800 * ms},
		{"grpc mid", grpc, 2, 0, rndMid, 1600 * ms},
		{"grpc capped high", grpc, 30, 0, rndMax, 120 * s},
		{"grpc capped low", grpc, 30, 0, rndMin, 96 * s},
		{"multiplier near 1 beyond table", slow, 200, 0, 0, time.Duration(float64(ms) * math.Pow(1.01, 199))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.p.Delay(tc.retry, tc.prev, tc.rnd)
			if diff := got - tc.want; diff < -2*ns || diff > 2*ns {
				t.Errorf("Delay(%d, %v, %#x) = %v, want %v", tc.retry, tc.prev, tc.rnd, got, tc.want)
			}
		})
	}
}

func TestDelayZeroBaseAndCap(t *testing.T) {
	for _, s := range backoff.Strategies() {
		p := backoff.MustNew(backoff.Config{Strategy: s})
		for retry := 1; retry < 5; retry++ {
			if d := p.Delay(retry, 0, rndMax); d != 0 {
				t.Errorf("%v: Delay(%d) = %v, want 0", s, retry, d)
			}
		}
	}
}

// TestDelayDistribution checks the mean of each jittered strategy against
// its expectation, with a fixed seed.
func TestDelayDistribution(t *testing.T) {
	const n = 200000
	tests := []struct {
		strategy backoff.Strategy
		retry    int
		prev     time.Duration
		want     float64 // expected mean in ms
	}{
		{backoff.FullJitter, 3, 0, 200},          // U(0, 400)
		{backoff.EqualJitter, 3, 0, 300},         // 200 + U(0, 200)
		{backoff.Decorrelated, 2, 200 * ms, 350}, // U(100, 600)
		{backoff.GRPC, 3, 0, 256},                // 100·1.6²·U(0.8, 1.2)
	}
	for _, tc := range tests {
		t.Run(tc.strategy.String(), func(t *testing.T) {
			p := backoff.MustNew(backoff.Config{Strategy: tc.strategy, Base: 100 * ms, Cap: 10 * s})
			src := rand.NewPCG(1, 2)
			var sum float64
			for range n {
				sum += float64(p.Delay(tc.retry, tc.prev, src.Uint64())) / float64(ms)
			}
			if mean := sum / n; math.Abs(mean-tc.want) > tc.want*0.01 {
				t.Errorf("mean = %.2fms, want %.0fms ± 1%%", mean, tc.want)
			}
		})
	}
}

func TestPolicyString(t *testing.T) {
	tests := []struct {
		cfg  backoff.Config
		want string
	}{
		{backoff.DefaultConfig(), "full-jitter(base=100ms cap=10s multiplier=2 maxAttempts=5 maxElapsed=30s)"},
		{backoff.Config{Strategy: backoff.GRPC, Base: s, Cap: 2 * s}, "grpc(base=1s cap=2s multiplier=1.6 jitter=0.2 maxAttempts=0 maxElapsed=0s)"},
	}
	for _, tc := range tests {
		if got := backoff.MustNew(tc.cfg).String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}

func TestMustNewPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("MustNew did not panic on an invalid config")
		}
	}()
	backoff.MustNew(backoff.Config{})
}

func TestDelayDoesNotAllocate(t *testing.T) {
	for _, st := range backoff.Strategies() {
		p := backoff.MustNew(backoff.Config{Strategy: st, Base: ms, Cap: s})
		var d time.Duration
		allocs := testing.AllocsPerRun(100, func() { d = p.Delay(3, d, 12345) })
		if allocs != 0 {
			t.Errorf("%v: %v allocs per Delay", st, allocs)
		}
	}
}

func FuzzDelay(f *testing.F) {
	f.Add(uint8(1), int64(ms), int64(s), 2.0, 0.0, 3, int64(0), uint64(0))
	f.Add(uint8(4), int64(5*ms), int64(2*s), 3.0, 0.0, 7, int64(3*s), rndMax)
	f.Add(uint8(5), int64(s), int64(120*s), 1.6, 0.2, 40, int64(0), rndMid)
	f.Add(uint8(2), int64(0), int64(0), 0.0, 0.0, -1, int64(-5), uint64(99))
	f.Add(uint8(3), int64(backoff.MaxDelay), int64(backoff.MaxDelay), 100.0, 1.0, 1<<40, int64(math.MaxInt64), rndMax)
	f.Fuzz(func(t *testing.T, strategy uint8, base, cap int64, mult, jitter float64, retry int, prev int64, rnd uint64) {
		cfg := backoff.Config{
			Strategy:   backoff.Strategy(strategy),
			Base:       time.Duration(base),
			Cap:        time.Duration(cap),
			Multiplier: mult,
			Jitter:     jitter,
		}
		p, err := backoff.New(cfg)
		if err != nil {
			var ce *backoff.ConfigError
			if !errors.As(err, &ce) || ce.Field == "" {
				t.Fatalf("New(%+v) error %v does not name a field", cfg, err)
			}
			return
		}
		got := p.Config()
		if got.Base < 0 || got.Cap < got.Base || got.Cap > backoff.MaxDelay || got.Multiplier < 1 || got.Jitter < 0 || got.Jitter > 1 {
			t.Fatalf("New accepted inconsistent config %+v", got)
		}
		d := p.Delay(retry, time.Duration(prev), rnd)
		if d < 0 || d > got.Cap {
			t.Fatalf("%v: Delay(%d, %v, %#x) = %v, outside [0, %v]", p, retry, time.Duration(prev), rnd, d, got.Cap)
		}
		if s := p.Strategy(); (s == backoff.Decorrelated) && d < got.Base {
			t.Fatalf("%v: decorrelated Delay = %v below base", p, d)
		}
	})
}
