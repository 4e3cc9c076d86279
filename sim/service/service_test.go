package service

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tailguard/tailguard/backoff"
)

var t0 = time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)

var legacy = backoff.Config{Strategy: backoff.Exponential, Base: 50 * time.Millisecond, Cap: 500 * time.Millisecond, MaxAttempts: 3}

func baseConfig(observe func(Record)) Config {
	return Config{
		Pods: 4, PodPrefix: "shop",
		Endpoints: []EndpointConfig{
			{Name: "/checkout", Rate: 20, Latency: LogNormal{Median: 60 * time.Millisecond, Sigma: 0.35}, CallsUpstream: true},
			{Name: "/search", Rate: 30, Latency: LogNormal{Median: 60 * time.Millisecond, Sigma: 0.5}},
		},
		Upstream: UpstreamConfig{
			Name: "payments", Latency: LogNormal{Median: 70 * time.Millisecond, Sigma: 0.35},
			ErrorLatency: LogNormal{Median: 20 * time.Millisecond, Sigma: 0.3}, FailureProbability: 0.02,
		},
		Components:       []Component{{Name: "dten-gateway", Metric: "dten_gateway_build_info", Version: "2.3"}},
		VersionComponent: "dten-gateway",
		Default:          legacy,
		Seed:             1,
		Start:            t0,
		Observe:          observe,
	}
}

func TestRandomStreams(t *testing.T) {
	var a, b rng
	a.seed(1, streamRequest, 7)
	b.seed(1, streamRequest, 7)
	for range 10 {
		if a.Uint64() != b.Uint64() {
			t.Fatal("equal seeds give different streams")
		}
	}
	b.seed(1, streamRequest, 8)
	if a.Uint64() == b.Uint64() {
		t.Error("different indices give the same stream")
	}
	var sum, sq float64
	const n = 200000
	for range n {
		z := a.normal()
		sum += z
		sq += z * z
	}
	if mean, sd := sum/n, math.Sqrt(sq/n-(sum/n)*(sum/n)); math.Abs(mean) > 0.01 || math.Abs(sd-1) > 0.01 {
		t.Errorf("normal(): mean %.4f sd %.4f, want 0 and 1", mean, sd)
	}
	var e float64
	for range n {
		e += float64(a.exp(time.Second))
	}
	if mean := e / n / float64(time.Second); math.Abs(mean-1) > 0.01 {
		t.Errorf("exp(1s) mean %.4fs", mean)
	}
}

func TestServiceDeterministicAndRates(t *testing.T) {
	run := func(seed uint64) []Record {
		var recs []Record
		cfg := baseConfig(func(r Record) { recs = append(recs, r) })
		cfg.Seed = seed
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Advance(context.Background(), t0.Add(10*time.Minute)); err != nil {
			t.Fatal(err)
		}
		if !s.Now().Equal(t0.Add(10 * time.Minute)) {
			t.Errorf("Now() = %s", s.Now())
		}
		return recs
	}
	a, b, c := run(1), run(1), run(2)
	if len(a) != len(b) {
		t.Fatalf("same seed: %d and %d requests", len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed: request %d differs: %+v vs %+v", i, a[i], b[i])
		}
	}
	if len(a) == len(c) && a[len(a)/2] == c[len(c)/2] {
		t.Error("different seeds give the same run")
	}
	counts := map[string]int{}
	pods := map[string]int{}
	var prev time.Time
	for _, r := range a {
		counts[r.Endpoint]++
		pods[r.Pod]++
		if r.Start.Before(prev) {
			t.Fatal("requests not simulated in arrival order")
		}
		prev = r.Start
		if r.Endpoint == "/search" && r.Attempts != 0 {
			t.Fatal("/search called the upstream")
		}
		if r.Endpoint == "/checkout" && (r.Attempts < 1 || r.Attempts > 3) {
			t.Fatalf("/checkout made %d attempts, want 1..3", r.Attempts)
		}
	}
	// 600s at 20 and 30 per second, Poisson: within 5 standard deviations.
	for ep, want := range map[string]float64{"/checkout": 12000, "/search": 18000} {
		if got := float64(counts[ep]); math.Abs(got-want) > 5*math.Sqrt(want) {
			t.Errorf("%s: %v requests, want about %v", ep, got, want)
		}
	}
	if len(pods) != 4 {
		t.Errorf("requests went to %d pods, want 4", len(pods))
	}
}

func TestRetriesRunOnVirtualTime(t *testing.T) {
	var recs []Record
	cfg := baseConfig(func(r Record) { recs = append(recs, r) })
	cfg.Endpoints = cfg.Endpoints[:1]
	cfg.Endpoints[0].Latency = LogNormal{Median: 10 * time.Millisecond}
	cfg.Upstream.FailureProbability = 1
	cfg.Upstream.ErrorLatency = LogNormal{Median: 20 * time.Millisecond}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if err := s.Advance(context.Background(), t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if time.Since(began) > 10*time.Second {
		t.Errorf("a minute of virtual time took %s of real time", time.Since(began))
	}
	// Every call fails three times: 10ms own + 3×20ms + 50ms + 100ms sleeps.
	for _, r := range recs {
		if r.Code != 502 || r.Attempts != 3 || r.Latency != 220*time.Millisecond {
			t.Fatalf("request %+v, want 502 after 3 attempts and 220ms", r)
		}
	}
	reg := s.Pods()[0].Registry()
	if got := sumCounter(t, reg, "backoff_calls_total", map[string]string{"result": "exhausted"}); got == 0 {
		t.Error("no exhausted calls counted")
	}
}

// sumCounter sums the counters of a metric family whose labels match.
func sumCounter(t *testing.T, reg *prometheus.Registry, name string, match map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := match[lp.GetName()]; ok && v != lp.GetValue() {
					continue metrics
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func TestUpstreamLoadAndBrownout(t *testing.T) {
	cfg := UpstreamConfig{Name: "p", Latency: LogNormal{Median: time.Millisecond}, ErrorLatency: LogNormal{Median: time.Millisecond}}
	bo := Brownout{From: t0.Add(time.Minute), To: t0.Add(2 * time.Minute), Down: time.Second, Up: time.Second, FailureProbability: 1}
	u, err := newUpstream(cfg, 1, t0, []Brownout{bo}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var down time.Duration
	for _, iv := range u.down {
		if iv.from < bo.From.UnixNano() || iv.to > bo.To.UnixNano() || iv.to <= iv.from {
			t.Fatalf("down interval %v outside the brown-out", iv)
		}
		down += time.Duration(iv.to - iv.from)
	}
	if down < 15*time.Second || down > 45*time.Second {
		t.Errorf("down %s of a 1m brown-out, want about half", down)
	}
	if u.downAt(t0.UnixNano()) != 0 || u.downAt(u.down[0].from) != 1 {
		t.Error("downAt misplaces the down intervals")
	}
	// 50 attempts in the last second, none before: rate 50/s; with the
	// frontier 0.5s behind at 40/s expected first attempts, 70/s.
	at := t0.Add(10 * time.Second)
	for i := range 50 {
		u.record(at.Add(-time.Duration(i) * 10 * time.Millisecond).UnixNano())
	}
	u.setFrontier(at.Add(-10*time.Second), 0)
	if got := u.rate(at.UnixNano()); got != 50 {
		t.Errorf("rate = %v, want 50", got)
	}
	u.setFrontier(at.Add(-500*time.Millisecond), 40)
	if got := u.rate(at.UnixNano()); math.Abs(got-70) > 1e-9 {
		t.Errorf("rate with frontier = %v, want 70", got)
	}
	// Rate limiting answers 429 with Retry-After.
	u.cfg.RateLimit, u.cfg.RetryAfter = 10, time.Second
	u.limited = backoff.RetryAfter(errLimited, time.Second)
	var c call
	_, err = u.attempt(at, &c, 1)
	var ue *Error
	if !errors.As(err, &ue) || ue.Code != 429 {
		t.Errorf("attempt above the rate limit: %v, want 429", err)
	}
	var ra *backoff.RetryAfterError
	if !errors.As(err, &ra) || ra.Delay != time.Second {
		t.Errorf("429 without Retry-After: %v", err)
	}
	if _, err := newUpstream(UpstreamConfig{Name: "p"}, 1, t0, nil, nil); err == nil {
		t.Error("upstream without latency accepted")
	}
}

func TestUpgradeRestartsPod(t *testing.T) {
	s, err := New(baseConfig(nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Advance(ctx, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	before := s.Pods()[0]
	if err := s.Upgrade(ctx, 0, "dten-gateway", "3.0", Effect{}, true, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	after := s.Pods()[0]
	if after == before || after.Name() != "shop-0" {
		t.Fatal("restart did not replace the pod")
	}
	if got := s.Versions(0)["dten-gateway"]; got != "3.0" {
		t.Errorf("version = %q, want 3.0", got)
	}
	n, err := testutil.GatherAndCount(after.Registry(), "http_requests_total")
	if err != nil || n != 0 {
		t.Errorf("a restarted pod has %d request series (err %v), want 0", n, err)
	}
	if err := testutil.GatherAndCompare(after.Registry(), stringsReader(`# HELP dten_gateway_build_info Build information of dten-gateway (value 1).
# TYPE dten_gateway_build_info gauge
dten_gateway_build_info{version="3.0"} 1
`), "dten_gateway_build_info"); err != nil {
		t.Error(err)
	}
	if err := s.Upgrade(ctx, 1, "dten-gateway", "3.0", Effect{}, false, t0); err != nil || s.Pods()[1] == nil {
		t.Errorf("upgrade without restart: %v", err)
	}
	if err := s.Upgrade(ctx, 9, "dten-gateway", "3.0", Effect{}, false, t0); err == nil {
		t.Error("upgrade of a missing pod accepted")
	}
	if err := s.Upgrade(ctx, 0, "nope", "1", Effect{}, false, t0); err == nil {
		t.Error("upgrade of an unknown component accepted")
	}
}

func TestConfigValidation(t *testing.T) {
	for name, mutate := range map[string]func(*Config){
		"no pods":         func(c *Config) { c.Pods = 0 },
		"no endpoints":    func(c *Config) { c.Endpoints = nil },
		"duplicate":       func(c *Config) { c.Endpoints[1].Name = c.Endpoints[0].Name },
		"bad probability": func(c *Config) { c.Endpoints[0].ErrorProbability = 2 },
		"bad component":   func(c *Config) { c.Components[0].Metric = "bad-name" },
		"bad policy":      func(c *Config) { c.Default = backoff.Config{} },
		"no start":        func(c *Config) { c.Start = time.Time{} },
	} {
		cfg := baseConfig(nil)
		mutate(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }
