// Package simmodel is a minimal, deterministic model of the demo scenario's
// service for closed-loop tests of the controller in virtual time: a
// service whose /checkout endpoint calls the third-party upstream payments
// with retries, under a fractional rollout of backoff strategies.
//
// Each simulated minute draws a fixed number of requests at uniform times.
// A request spends its own processing time, then calls payments: each
// attempt fails with the minute's failure probability (after a failure
// latency) or succeeds (after a success latency); between attempts it
// sleeps the strategy's delay. During a brown-out payments flaps between
// down periods, where every attempt is rejected at once, and up periods
// with a limited capacity per 100 ms slot, where attempts beyond the
// capacity are rejected too: a retry storm (quick retries piling into the
// slots after a down period) makes failures load-dependent.
//
// The strategies' delays follow the backoff package's formulas but are
// implemented here independently, so that the controller's model is
// checked against a separate implementation. Everything is seeded: the same
// configuration, minute and rollout give the same figures.
package simmodel

import (
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// Strategy is a backoff strategy with its constants. Zero Multiplier and
// Jitter take the backoff package's defaults.
type Strategy struct {
	Name        string
	Base, Cap   time.Duration
	Multiplier  float64
	Jitter      float64
	MaxAttempts int
}

// Cohort is a strategy's share of the traffic.
type Cohort struct {
	Weight   float64
	Strategy Strategy
}

// LogNormal is a log-normal latency distribution by its median and the
// standard deviation of its logarithm.
type LogNormal struct {
	Median time.Duration
	Sigma  float64
}

func (l LogNormal) draw(rng *rand.Rand) float64 {
	return l.Median.Seconds() * math.Exp(l.Sigma*rng.NormFloat64())
}

// BrownOut is a period during which payments flaps and has a limited
// capacity.
type BrownOut struct {
	Start    time.Time
	Duration time.Duration
	// Down and Up bound the uniformly drawn lengths of the down and up
	// periods.
	Down, Up [2]time.Duration
	// Capacity is the number of attempts payments accepts per 100 ms slot
	// while up.
	Capacity int
}

// Config configures a Sim.
type Config struct {
	Seed              uint64
	RequestsPerMinute int
	// Service is the endpoint's own processing time.
	Service LogNormal
	// Success and Failure are the latencies of a successful and a failed
	// attempt; Rejected is the latency of an attempt rejected during a
	// brown-out.
	Success, Failure LogNormal
	Rejected         time.Duration
	// FailureProbability returns the per-attempt failure probability at t.
	FailureProbability func(t time.Time) float64
	BrownOuts          []BrownOut
}

// Sim simulates minutes of traffic.
type Sim struct {
	cfg Config
	// down holds, per brown-out, the sorted start/end times of its down
	// periods.
	down [][][2]time.Time
	// slots counts attempts per 100 ms slot during brown-outs.
	slots map[int64]int
}

// New returns a simulator.
func New(cfg Config) *Sim {
	s := &Sim{cfg: cfg, slots: map[int64]int{}}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0xb0))
	for _, b := range cfg.BrownOuts {
		var periods [][2]time.Time
		t := b.Start
		end := b.Start.Add(b.Duration)
		for t.Before(end) {
			d := uniformDur(rng, b.Down)
			periods = append(periods, [2]time.Time{t, minTime(t.Add(d), end)})
			t = t.Add(d + uniformDur(rng, b.Up))
		}
		s.down = append(s.down, periods)
	}
	return s
}

func uniformDur(rng *rand.Rand, r [2]time.Duration) time.Duration {
	return r[0] + time.Duration(rng.Float64()*float64(r[1]-r[0]))
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// Stats are one minute's figures, for all requests and per strategy.
type Stats struct {
	Start time.Time
	// Latencies of the requests in seconds, sorted.
	Latencies []float64
	Requests  int
	Failed    int
	// Calls to payments (one per request), Attempts, Retries and the sum
	// of the attempts' latencies.
	Calls, Attempts, Retries int
	AttemptSeconds           float64
	// Rejected counts attempts rejected by a brown-out.
	Rejected int
	// ByStrategy holds the same figures per strategy name (without
	// latencies).
	ByStrategy map[string]*Counts
}

// Counts are per-strategy figures.
type Counts struct {
	Requests, Failed, Attempts, Retries int
}

// Minute simulates the minute starting at start with the given rollout.
func (s *Sim) Minute(start time.Time, cohorts []Cohort) Stats {
	cfg := s.cfg
	minute := start.Unix() / 60
	rng := rand.New(rand.NewPCG(cfg.Seed, uint64(minute)))
	st := Stats{Start: start, ByStrategy: map[string]*Counts{}}
	for k := range s.slots {
		if k < slotOf(start.Add(-time.Minute)) {
			delete(s.slots, k)
		}
	}
	arrivals := make([]float64, cfg.RequestsPerMinute)
	for i := range arrivals {
		arrivals[i] = rng.Float64() * 60
	}
	slices.Sort(arrivals)
	var total float64
	for _, c := range cohorts {
		total += c.Weight
	}
	st.Latencies = make([]float64, 0, len(arrivals))
	for _, at := range arrivals {
		// Cohort choice.
		x := rng.Float64() * total
		var strat Strategy
		for _, c := range cohorts {
			strat = c.Strategy
			if x < c.Weight {
				break
			}
			x -= c.Weight
		}
		cnt := st.ByStrategy[strat.Name]
		if cnt == nil {
			cnt = &Counts{}
			st.ByStrategy[strat.Name] = cnt
		}
		t0 := start.Add(time.Duration(at * float64(time.Second)))
		own := cfg.Service.draw(rng)
		t := t0
		prev := 0.0
		ok := false
		n := max(strat.MaxAttempts, 1)
		attempts := 0
		for a := 1; a <= n; a++ {
			attempts++
			lat, success, rejected := s.attempt(rng, t)
			st.AttemptSeconds += lat
			if rejected {
				st.Rejected++
			}
			t = t.Add(secs(lat))
			if success {
				ok = true
				break
			}
			if a < n {
				d := delay(strat, a, prev, rng.Float64())
				prev = d
				t = t.Add(secs(d))
			}
		}
		lat := own + t.Sub(t0).Seconds()
		st.Latencies = append(st.Latencies, lat)
		st.Requests++
		st.Calls++
		st.Attempts += attempts
		st.Retries += attempts - 1
		cnt.Requests++
		cnt.Attempts += attempts
		cnt.Retries += attempts - 1
		if !ok {
			st.Failed++
			cnt.Failed++
		}
	}
	slices.Sort(st.Latencies)
	return st
}

func secs(v float64) time.Duration { return time.Duration(v * float64(time.Second)) }

func slotOf(t time.Time) int64 { return t.UnixNano() / int64(100*time.Millisecond) }

// attempt returns the latency and outcome of one attempt started at t.
func (s *Sim) attempt(rng *rand.Rand, t time.Time) (lat float64, success, rejected bool) {
	for i, b := range s.cfg.BrownOuts {
		if t.Before(b.Start) || !t.Before(b.Start.Add(b.Duration)) {
			continue
		}
		periods := s.down[i]
		j, _ := slices.BinarySearchFunc(periods, t, func(p [2]time.Time, t time.Time) int {
			if p[1].After(t) {
				return 1
			}
			return -1
		})
		if j < len(periods) && !t.Before(periods[j][0]) {
			return s.cfg.Rejected.Seconds(), false, true
		}
		slot := slotOf(t)
		s.slots[slot]++
		if s.slots[slot] > b.Capacity {
			return s.cfg.Rejected.Seconds(), false, true
		}
	}
	if rng.Float64() < s.cfg.FailureProbability(t) {
		return s.cfg.Failure.draw(rng), false, false
	}
	return s.cfg.Success.draw(rng), true, false
}

// delay returns the sleep before retry number retry (1 for the first).
func delay(s Strategy, retry int, prev, u float64) float64 {
	base, capv := s.Base.Seconds(), s.Cap.Seconds()
	m := s.Multiplier
	if m == 0 {
		switch s.Name {
		case "decorrelated":
			m = 3
		case "grpc":
			m = 1.6
		default:
			m = 2
		}
	}
	exp := math.Min(capv, base*math.Pow(m, float64(retry-1)))
	switch s.Name {
	case "exponential":
		return exp
	case "full-jitter":
		return u * exp
	case "equal-jitter":
		return exp/2 + u*exp/2
	case "decorrelated":
		pv := math.Min(math.Max(prev, base), capv)
		return math.Min(capv, base+u*(m*pv-base))
	case "grpc":
		j := s.Jitter
		if j == 0 {
			j = 0.2
		}
		return math.Min(math.Max(exp*(1+j*(2*u-1)), 0), capv)
	}
	return 0
}

// Quantile returns the q-quantile of sorted values (nearest rank).
func Quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// Demo returns the configuration of the demo scenario. Before upgrade,
// payments fails 1% of attempts; the dten-gateway 3.0 upgrade surfaces more
// transient failures (3%). The service's own latency has a median of 80ms;
// a successful attempt takes ~35ms, a failed one ~150ms (a timeout).
// With the legacy strategy this gives a /checkout p99 of ~250ms; with
// decorrelated (base 100ms) after the upgrade ~510ms.
func Demo(seed uint64, upgrade time.Time, brownOuts ...BrownOut) Config {
	return Config{
		Seed:              seed,
		RequestsPerMinute: 3000,
		Service:           LogNormal{Median: 80 * time.Millisecond, Sigma: 0.3},
		Success:           LogNormal{Median: 35 * time.Millisecond, Sigma: 0.35},
		Failure:           LogNormal{Median: 150 * time.Millisecond, Sigma: 0.25},
		Rejected:          5 * time.Millisecond,
		FailureProbability: func(t time.Time) float64 {
			if t.Before(upgrade) {
				return 0.01
			}
			return 0.03
		},
		BrownOuts: brownOuts,
	}
}

// DemoBrownOut is a payments brown-out of the demo: for ten minutes
// payments is down for 0.6–2s at a time, up for 0.4–1s in between, and
// accepts at most 20 attempts per 100ms while up (four times the offered
// load).
func DemoBrownOut(start time.Time) BrownOut {
	return BrownOut{
		Start: start, Duration: 10 * time.Minute,
		Down:     [2]time.Duration{600 * time.Millisecond, 2 * time.Second},
		Up:       [2]time.Duration{400 * time.Millisecond, time.Second},
		Capacity: 20,
	}
}

// Legacy is the strategy before the upgrade: exponential, base 50ms, cap
// 500ms, 3 attempts.
func Legacy() Strategy {
	return Strategy{Name: "exponential", Base: 50 * time.Millisecond, Cap: 500 * time.Millisecond, MaxAttempts: 3}
}

// Decorrelated is the strategy the upgrade rolls out: decorrelated jitter,
// base 100ms, cap 2s, 6 attempts.
func Decorrelated() Strategy {
	return Strategy{Name: "decorrelated", Base: 100 * time.Millisecond, Cap: 2 * time.Second, MaxAttempts: 6}
}
