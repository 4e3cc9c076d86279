package service

import (
	"math"
	"math/rand/v2"
	"time"
)

// Stream identifiers: every random quantity of the model is drawn from its
// own stream, seeded from the run's seed, the stream and an index (the
// request number, the brown-out number), so that runs of the same scenario
// under different backoff policies see the same arrivals, the same request
// latencies and the same upstream luck for the same attempt of the same
// request (common random numbers). Only what the policy really changes (when
// attempts happen, and so the upstream's load) differs between runs.
const (
	streamArrivals uint64 = iota + 1
	streamRequest
	streamAttempts
	streamRetrier
	streamBrownout
	streamNoise
)

// rng is a PCG generator that can be re-seeded cheaply for every request.
// It is not safe for concurrent use; the simulation is single-threaded.
type rng struct{ pcg rand.PCG }

func (r *rng) seed(seed, stream, index uint64) {
	r.pcg.Seed(seed^(stream*0x9e3779b97f4a7c15), index*0xbf58476d1ce4e5b9+stream)
}

// Uint64 implements rand.Source, so a retrier can draw its jitter from it.
func (r *rng) Uint64() uint64 { return r.pcg.Uint64() }

// float returns a uniform value in [0, 1).
func (r *rng) float() float64 { return float64(r.pcg.Uint64()>>11) * 0x1p-53 }

// normal returns a standard normal value from exactly two uniforms
// (Box–Muller), so that the number of draws never depends on the value.
func (r *rng) normal() float64 {
	u1 := 1 - r.float() // (0, 1]
	u2 := r.float()
	return math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*u2)
}

// exp returns an exponential value with the given mean.
func (r *rng) exp(mean time.Duration) time.Duration {
	return time.Duration(-math.Log(1-r.float()) * float64(mean))
}

// LogNormal is a latency distribution: Median·e^(Sigma·Z), Z standard normal.
type LogNormal struct {
	Median time.Duration
	Sigma  float64
}

// at returns the latency for the standard normal value z.
func (d LogNormal) at(z float64) time.Duration {
	return time.Duration(float64(d.Median) * math.Exp(d.Sigma*z))
}
