package awssim_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/tailguard/tailguard/bench/awssim"
)

// TestPublishedFigures runs the original's setup at 100 clients and checks
// every published figure within 5%.
func TestPublishedFigures(t *testing.T) {
	p := awssim.DefaultParams()
	strategies, err := awssim.Strategies(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range strategies {
		t.Run(s.Name, func(t *testing.T) {
			t.Parallel()
			r, err := awssim.Run(p, s, awssim.PublishedClients)
			if err != nil {
				t.Fatal(err)
			}
			d, ok := awssim.Compare(r)
			if !ok {
				t.Fatalf("no published figure for %s", s.Name)
			}
			f := awssim.Published[s.Name]
			t.Logf("calls %.1f (published %.0f, %+.1f%%), time %v", r.Calls, f.Calls, 100*d.Calls, r.Time.Round(time.Millisecond))
			if f.Time > 0 {
				t.Logf("time published %v, %+.1f%%", f.Time, 100*d.Time)
			}
			if d.Worst() > 0.05 {
				t.Errorf("deviation from the published figures above 5%%: calls %+.1f%%, time %+.1f%%", 100*d.Calls, 100*d.Time)
			}
		})
	}
}

// TestShape checks the qualitative result of the original across client
// counts: jitter does far less work than no backoff or plain exponential,
// and plain exponential is by far the slowest.
func TestShape(t *testing.T) {
	p := awssim.DefaultParams()
	p.Trials = 20
	strategies, err := awssim.Strategies(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{20, 60, 150} {
		res := map[string]awssim.Result{}
		for _, s := range strategies {
			r, err := awssim.Run(p, s, n)
			if err != nil {
				t.Fatal(err)
			}
			res[s.Name] = r
		}
		if !(res["FullJitter"].Calls < res["Exponential"].Calls && res["Exponential"].Calls < res["None"].Calls) {
			t.Errorf("N=%d: calls not ordered FullJitter < Exponential < None: %+v", n, res)
		}
		if res["EqualJitter"].Calls > res["Decorrelated"].Calls*1.2 {
			t.Errorf("N=%d: equal jitter does much more work than decorrelated: %+v", n, res)
		}
		for _, name := range []string{"None", "EqualJitter", "FullJitter", "Decorrelated"} {
			if res[name].Time >= res["Exponential"].Time {
				t.Errorf("N=%d: %s is not faster than Exponential: %+v", n, name, res)
			}
		}
		if res["None"].Calls < float64(n) || res["Exponential"].Calls < float64(n) {
			t.Errorf("N=%d: fewer writes than clients: %+v", n, res)
		}
	}
}

func TestRunIsDeterministic(t *testing.T) {
	p := awssim.DefaultParams()
	p.Trials = 5
	strategies, err := awssim.Strategies(p)
	if err != nil {
		t.Fatal(err)
	}
	s := strategies[3]
	a, _ := awssim.Run(p, s, 30)
	b, _ := awssim.Run(p, s, 30)
	if a != b {
		t.Fatalf("same seed, different results: %+v, %+v", a, b)
	}
	p.Seed++
	c, _ := awssim.Run(p, s, 30)
	if a == c {
		t.Errorf("another seed gave the same result %+v", a)
	}
}

func TestSingleClientWritesOnce(t *testing.T) {
	p := awssim.DefaultParams()
	p.Trials = 10
	p.NetStdDev = 0
	strategies, _ := awssim.Strategies(p)
	for _, s := range strategies {
		r, err := awssim.Run(p, s, 1)
		if err != nil {
			t.Fatal(err)
		}
		// Read request, version, write request, result: four crossings.
		if r.Calls != 1 || r.Time != 4*p.NetMean {
			t.Errorf("%s: %+v, want 1 call in 40ms", s.Name, r)
		}
	}
}

func TestRunValidation(t *testing.T) {
	p := awssim.DefaultParams()
	strategies, _ := awssim.Strategies(p)
	tests := []struct {
		edit    func(*awssim.Params)
		clients int
		want    string
	}{
		{func(p *awssim.Params) { p.Trials = 0 }, 10, "trials"},
		{func(*awssim.Params) {}, 0, "clients"},
		{func(p *awssim.Params) { p.NetStdDev = -1 }, 10, "network delay"},
	}
	for _, tc := range tests {
		q := p
		tc.edit(&q)
		if _, err := awssim.Run(q, strategies[0], tc.clients); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("Run = %v, want error about %s", err, tc.want)
		}
	}
	p.Cap = p.Base // base·2 > cap
	if _, err := awssim.Strategies(p); err == nil {
		t.Error("Strategies accepted a cap below the exponential base")
	}
}

func TestCompare(t *testing.T) {
	d, ok := awssim.Compare(awssim.Result{Strategy: "FullJitter", Clients: 100, Calls: 796 * 1.02, Time: 4900 * time.Millisecond * 97 / 100})
	if !ok || math.Abs(d.Calls-0.02) > 1e-9 || math.Abs(d.Time+0.03) > 1e-9 || math.Abs(d.Worst()-0.03) > 1e-9 {
		t.Errorf("Compare = %+v, %v", d, ok)
	}
	d, _ = awssim.Compare(awssim.Result{Strategy: "EqualJitter", Clients: 100, Calls: 812})
	if !math.IsNaN(d.Time) || d.Worst() != 0 {
		t.Errorf("unpublished time: %+v", d)
	}
	if _, ok := awssim.Compare(awssim.Result{Strategy: "FullJitter", Clients: 50}); ok {
		t.Error("compared a result at 50 clients")
	}
}

func TestSweepIndependentOfWorkers(t *testing.T) {
	p := awssim.DefaultParams()
	p.Trials = 3
	strategies, _ := awssim.Strategies(p)
	clients := []int{10, 20, 30}
	one, err := awssim.Sweep(p, strategies, clients, 1)
	if err != nil {
		t.Fatal(err)
	}
	four, err := awssim.Sweep(p, strategies, clients, 4)
	if err != nil {
		t.Fatal(err)
	}
	for ci := range clients {
		for si := range strategies {
			if one[ci][si] != four[ci][si] || one[ci][si].Clients != clients[ci] || one[ci][si].Strategy != strategies[si].Name {
				t.Errorf("[%d][%d]: %+v with 1 worker, %+v with 4", ci, si, one[ci][si], four[ci][si])
			}
		}
	}
	if _, err := awssim.Sweep(p, strategies, []int{0}, 2); err == nil {
		t.Error("Sweep with 0 clients succeeded")
	}
}
