package simmodel

import (
	"math"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

type figures struct {
	p99, retries, errors float64
	brownOutSuccess      float64
}

func measure(cfg Config, s Strategy) figures {
	sim := New(cfg)
	var lat []float64
	var f figures
	req, failed, retries := 0, 0, 0
	for m := range 5 {
		st := sim.Minute(t0.Add(time.Duration(m)*time.Minute), []Cohort{{1, s}})
		lat = append(lat, st.Latencies...)
		req, failed, retries = req+st.Requests, failed+st.Failed, retries+st.Retries
	}
	f.p99 = Quantile(sortedCopy(lat), 0.99)
	f.retries = float64(retries) / float64(req)
	f.errors = float64(failed) / float64(req)
	breq, bfailed := 0, 0
	for m := 100; m < 110; m++ {
		st := sim.Minute(t0.Add(time.Duration(m)*time.Minute), []Cohort{{1, s}})
		breq, bfailed = breq+st.Requests, bfailed+st.Failed
	}
	f.brownOutSuccess = 1 - float64(bfailed)/float64(breq)
	return f
}

func sortedCopy(x []float64) []float64 {
	y := slices.Clone(x)
	slices.Sort(y)
	return y
}

// TestDemoShape checks that the model reproduces the scenario's shape: the
// upgrade's strategy raises the p99 past the SLO but survives brown-outs
// the legacy strategy fails; tuning must keep the retry span to keep that.
func TestDemoShape(t *testing.T) {
	bo := DemoBrownOut(t0.Add(100 * time.Minute))
	before := Demo(1, t0.Add(time.Hour), bo)
	after := Demo(1, t0, bo)
	dec := Decorrelated()
	short := Strategy{Name: "decorrelated", Base: 20 * time.Millisecond, Cap: 2 * time.Second, MaxAttempts: 8}
	long := Strategy{Name: "decorrelated", Base: 20 * time.Millisecond, Cap: 2 * time.Second, MaxAttempts: 10}
	for _, tc := range []struct {
		name     string
		cfg      Config
		s        Strategy
		p99      [2]float64
		retries  [2]float64
		brownOut [2]float64
	}{
		{"legacy before upgrade", before, Legacy(), [2]float64{0.2, 0.3}, [2]float64{0.008, 0.012}, [2]float64{0, 0.5}},
		{"legacy after upgrade", after, Legacy(), [2]float64{0.3, 0.38}, [2]float64{0.025, 0.035}, [2]float64{0, 0.5}},
		{"decorrelated after upgrade", after, dec, [2]float64{0.45, 0.6}, [2]float64{0.025, 0.035}, [2]float64{0.85, 1}},
		{"decorrelated, short span", after, short, [2]float64{0.3, 0.36}, [2]float64{0.025, 0.035}, [2]float64{0, 0.82}},
		{"decorrelated, long span", after, long, [2]float64{0.3, 0.36}, [2]float64{0.025, 0.035}, [2]float64{0.85, 1}},
	} {
		f := measure(tc.cfg, tc.s)
		t.Logf("%-28s p99 %.0fms retries %.2f%% errors %.3f%% brown-out success %.1f%%", tc.name, 1000*f.p99, 100*f.retries, 100*f.errors, 100*f.brownOutSuccess)
		in := func(v float64, r [2]float64) bool { return v >= r[0] && v <= r[1] }
		if !in(f.p99, tc.p99) || !in(f.retries, tc.retries) || !in(f.brownOutSuccess, tc.brownOut) {
			t.Errorf("%s: p99 %.3f (want %v), retries %.4f (want %v), brown-out success %.3f (want %v)",
				tc.name, f.p99, tc.p99, f.retries, tc.retries, f.brownOutSuccess, tc.brownOut)
		}
	}
}

func TestDeterministic(t *testing.T) {
	a := measure(Demo(7, t0), Decorrelated())
	b := measure(Demo(7, t0), Decorrelated())
	if a != b {
		t.Errorf("same seed, different figures: %+v %+v", a, b)
	}
}

func TestDelayCapped(t *testing.T) {
	for _, name := range []string{"exponential", "full-jitter", "equal-jitter", "decorrelated", "grpc"} {
		s := Strategy{Name: name, Base: 100 * time.Millisecond, Cap: time.Second}
		prev := 0.0
		for r := 1; r < 30; r++ {
			for _, u := range []float64{0, 0.5, 0.999} {
				d := delay(s, r, prev, u)
				if d < 0 || d > 1 || math.IsNaN(d) {
					t.Fatalf("%s retry %d: delay %v outside [0, cap]", name, r, d)
				}
			}
			prev = delay(s, r, prev, 0.7)
		}
	}
}
