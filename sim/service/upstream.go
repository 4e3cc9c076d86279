package service

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/tailguard/tailguard/backoff"
)

// UpstreamConfig describes the third-party dependency the service calls
// with retries.
type UpstreamConfig struct {
	// Name is the upstream label of the retry metrics, e.g. "payments".
	Name string
	// Latency is the latency of a successful attempt.
	Latency LogNormal
	// ErrorLatency is the latency of a failed attempt (a fast 5xx).
	ErrorLatency LogNormal
	// FailureProbability is the chance that an attempt fails on its own.
	FailureProbability float64
	// RepeatFailureProbability is the chance that an attempt fails when the
	// previous attempt of the same call failed (the retry reaches the same
	// degraded backend). Zero means FailureProbability.
	RepeatFailureProbability float64
	// PersistentProbability is the chance that a call meets a failure that
	// lasts an exponentially distributed time of mean PersistentDuration
	// from the call's start: every attempt before it ends fails.
	PersistentProbability float64
	PersistentDuration    time.Duration
	// Capacity is the attempt rate (per second, all clients together) the
	// upstream serves without degrading; zero means unlimited. Above it,
	// with the relative overload o = rate/Capacity − 1, attempts fail with
	// the added probability min(MaxOverloadFailure, OverloadFailure·o) and
	// are slower by the factor 1 + OverloadLatency·o. Retries add to the
	// rate, so they make an overload worse.
	Capacity        float64
	OverloadFailure float64
	OverloadLatency float64
	// RateLimit is the attempt rate (per second) beyond which attempts are
	// rejected at once with 429 Too Many Requests and a Retry-After of
	// RetryAfter; zero means no limit.
	RateLimit  float64
	RetryAfter time.Duration
	// Timeout is the client's per-attempt timeout: a slower attempt fails
	// as a timeout after Timeout. Zero means none.
	Timeout time.Duration
	// Noise makes the latency wander slowly.
	Noise Noise
}

// MaxOverloadFailure bounds the failure probability added by overload.
const MaxOverloadFailure = 0.95

// Noise is a multiplicative latency wander: log-normal, with an AR(1)
// logarithm sampled every NoiseStep, of stationary standard deviation Sigma
// and correlation time Correlation.
type Noise struct {
	Sigma       float64
	Correlation time.Duration
}

// NoiseStep is the resolution of the latency wander.
const NoiseStep = 10 * time.Second

// Brownout is a period in which the upstream flaps: it alternates between
// down periods (exponential, mean Down), in which attempts fail with
// FailureProbability, and up periods (exponential, mean Up).
type Brownout struct {
	From, To           time.Time
	Down, Up           time.Duration
	FailureProbability float64
}

// LatencyShift multiplies the upstream's latency by Factor for every
// client within [From, To).
type LatencyShift struct {
	From, To time.Time
	Factor   float64
}

func (c UpstreamConfig) validate() error {
	prob := func(name string, p float64) error {
		if !(p >= 0 && p <= 1) {
			return fmt.Errorf("upstream %s: %v is not a probability", name, p)
		}
		return nil
	}
	for _, e := range []error{
		prob("failure probability", c.FailureProbability),
		prob("repeat failure probability", c.RepeatFailureProbability),
		prob("persistent failure probability", c.PersistentProbability),
	} {
		if e != nil {
			return e
		}
	}
	switch {
	case c.Name == "":
		return errors.New("upstream: name is empty")
	case c.Latency.Median <= 0 || c.ErrorLatency.Median <= 0:
		return errors.New("upstream: latency medians must be positive")
	case c.Latency.Sigma < 0 || c.ErrorLatency.Sigma < 0 || c.Noise.Sigma < 0:
		return errors.New("upstream: sigmas must not be negative")
	case c.PersistentProbability > 0 && c.PersistentDuration <= 0:
		return errors.New("upstream: persistent failures need a positive duration")
	case c.Capacity < 0 || c.OverloadFailure < 0 || c.OverloadLatency < 0 || c.RateLimit < 0 || c.RetryAfter < 0 || c.Timeout < 0:
		return errors.New("upstream: capacity, overload, rate limit, retry-after and timeout must not be negative")
	case c.Noise.Sigma > 0 && c.Noise.Correlation <= 0:
		return errors.New("upstream: noise needs a positive correlation time")
	}
	return nil
}

// Error is an upstream failure as the client sees it.
type Error struct {
	// Code is the HTTP status: 429, 503, or 504 for a client timeout.
	Code   int
	Reason string
}

func (e *Error) Error() string { return fmt.Sprintf("upstream: %d %s", e.Code, e.Reason) }

// Timeout reports whether the attempt timed out (backoff.IsTimeout).
func (e *Error) Timeout() bool { return e.Code == 504 }

var (
	errUnavailable = &Error{Code: 503, Reason: "service unavailable"}
	errTimeout     = &Error{Code: 504, Reason: "attempt timed out"}
	errLimited     = &Error{Code: 429, Reason: "too many requests"}
)

// interval is a half-open time range in Unix nanoseconds.
type interval struct{ from, to int64 }

// loadSlot is the width of the slots the attempt rate is counted in.
const (
	loadSlot    = int64(50 * time.Millisecond)
	loadWindow  = int64(time.Second)
	loadSlots   = 1 << 13 // 409.6s of slots: attempts are never that far ahead
	loadPerSlot = loadWindow / loadSlot
)

// upstream is the simulated dependency. Requests are simulated one after
// the other in arrival order, each with its own virtual timeline, so when an
// attempt at time t is made, the attempts of requests that arrive later but
// before t are not known yet. The load seen at t is therefore the attempts
// recorded in (t−1s, t] plus, for the part of that second after the
// arrival of the request being simulated (the frontier), the first attempts
// expected from the arrival rate. Retries of those later requests are not
// counted; with retry delays of tens to hundreds of milliseconds that misses
// a small part of a retry storm's load.
type upstream struct {
	cfg    UpstreamConfig
	seed   uint64
	start  time.Time
	down   []interval
	downP  []float64
	shifts []LatencyShift

	noise     []float64
	noiseX    float64
	noiseRand rng

	slots        [loadSlots]struct{ idx, n int64 }
	frontier     int64
	frontierRate float64

	limited error
}

func newUpstream(cfg UpstreamConfig, seed uint64, start time.Time, brownouts []Brownout, shifts []LatencyShift) (*upstream, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	u := &upstream{cfg: cfg, seed: seed, start: start, shifts: shifts}
	u.limited = backoff.RetryAfter(errLimited, cfg.RetryAfter)
	u.noiseRand.seed(seed, streamNoise, 0)
	for i, b := range brownouts {
		if !b.To.After(b.From) || b.Down <= 0 || b.Up <= 0 || !(b.FailureProbability >= 0 && b.FailureProbability <= 1) {
			return nil, fmt.Errorf("brown-out %d: needs From < To, positive Down and Up, and a failure probability", i)
		}
		var r rng
		r.seed(seed, streamBrownout, uint64(i))
		t, down := b.From, true
		for t.Before(b.To) {
			mean := b.Up
			if down {
				mean = b.Down
			}
			next := t.Add(max(r.exp(mean), time.Millisecond))
			if down {
				end := next
				if end.After(b.To) {
					end = b.To
				}
				u.down = append(u.down, interval{t.UnixNano(), end.UnixNano()})
				u.downP = append(u.downP, b.FailureProbability)
			}
			t, down = next, !down
		}
	}
	idx := make([]int, len(u.down))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return u.down[idx[a]].from < u.down[idx[b]].from })
	down, downP := make([]interval, len(idx)), make([]float64, len(idx))
	for i, j := range idx {
		down[i], downP[i] = u.down[j], u.downP[j]
	}
	u.down, u.downP = down, downP
	return u, nil
}

// setFrontier records the arrival time of the request being simulated and
// the rate of first attempts expected then.
func (u *upstream) setFrontier(t time.Time, firstAttemptRate float64) {
	u.frontier, u.frontierRate = t.UnixNano(), firstAttemptRate
}

func (u *upstream) record(t int64) {
	i := t / loadSlot
	s := &u.slots[i&(loadSlots-1)]
	if s.idx != i {
		s.idx, s.n = i, 0
	}
	s.n++
}

// rate returns the attempt rate per second around t (see upstream).
func (u *upstream) rate(t int64) float64 {
	i := t / loadSlot
	var n int64
	for j := i - loadPerSlot + 1; j <= i; j++ {
		if s := &u.slots[j&(loadSlots-1)]; s.idx == j {
			n += s.n
		}
	}
	r := float64(n) * float64(time.Second) / float64(loadWindow)
	if t > u.frontier {
		r += u.frontierRate * float64(min(t-u.frontier, loadWindow)) / float64(time.Second)
	}
	return r
}

// downAt returns the brown-out failure probability at t, or 0.
func (u *upstream) downAt(t int64) float64 {
	i := sort.Search(len(u.down), func(i int) bool { return u.down[i].to > t })
	if i < len(u.down) && u.down[i].from <= t {
		return u.downP[i]
	}
	return 0
}

// latencyFactor returns the factor of noise and shifts at t.
func (u *upstream) latencyFactor(t time.Time) float64 {
	f := 1.0
	if u.cfg.Noise.Sigma > 0 {
		k := int(t.Sub(u.start) / NoiseStep)
		if k < 0 {
			k = 0
		}
		rho := math.Exp(-float64(NoiseStep) / float64(u.cfg.Noise.Correlation))
		for len(u.noise) <= k {
			if len(u.noise) == 0 {
				u.noiseX = u.cfg.Noise.Sigma * u.noiseRand.normal()
			} else {
				u.noiseX = rho*u.noiseX + math.Sqrt(1-rho*rho)*u.cfg.Noise.Sigma*u.noiseRand.normal()
			}
			u.noise = append(u.noise, math.Exp(u.noiseX))
		}
		f *= u.noise[k]
	}
	for _, s := range u.shifts {
		if !t.Before(s.From) && t.Before(s.To) {
			f *= s.Factor
		}
	}
	return f
}

// call is one logical call to the upstream: the attempts of one request.
type call struct {
	rng             rng
	persistentUntil int64
	lastFailed      bool
	attempts        int
}

// attempt simulates one attempt at t by a client whose latency is scaled by
// clientFactor. It draws exactly three random numbers from the call's
// stream, whatever happens.
func (u *upstream) attempt(t time.Time, c *call, clientFactor float64) (time.Duration, error) {
	tn := t.UnixNano()
	u.record(tn)
	c.attempts++
	fail := c.rng.float()
	z := c.rng.normal()
	load := u.rate(tn)

	over := 0.0
	if u.cfg.Capacity > 0 && load > u.cfg.Capacity {
		over = load/u.cfg.Capacity - 1
	}
	slow := clientFactor * u.latencyFactor(t) * (1 + u.cfg.OverloadLatency*over)
	if u.cfg.RateLimit > 0 && load > u.cfg.RateLimit {
		c.lastFailed = false
		return u.cfg.ErrorLatency.at(z), u.limited
	}
	// The failure probability is the union of independent causes, drawn
	// with one uniform: the attempt's own (transient or persistent)
	// failure first, so that the same draw decides it under every policy.
	own := u.cfg.FailureProbability
	if c.lastFailed && u.cfg.RepeatFailureProbability > 0 {
		own = u.cfg.RepeatFailureProbability
	}
	if tn < c.persistentUntil {
		own = 1
	}
	p := own
	if d := u.downAt(tn); d > 0 {
		p = 1 - (1-p)*(1-d)
	}
	if over > 0 {
		p = 1 - (1-p)*(1-min(MaxOverloadFailure, u.cfg.OverloadFailure*over))
	}
	lat, err := u.cfg.Latency.at(z), error(nil)
	if fail < p {
		lat, err = u.cfg.ErrorLatency.at(z), errUnavailable
	}
	lat = time.Duration(float64(lat) * slow)
	if u.cfg.Timeout > 0 && lat > u.cfg.Timeout {
		lat, err = u.cfg.Timeout, errTimeout
	}
	// Only a failure of the attempt's own makes the next attempt of the
	// call more likely to fail; brown-outs and overload are the
	// upstream's state, not the call's.
	c.lastFailed = fail < own
	return lat, err
}
