package awssim

import (
	"math"
	"time"
)

// Figure is a published result at 100 clients. A zero field was not
// published.
type Figure struct {
	Calls float64
	Time  time.Duration
}

// PublishedClients is the client count of the published figures.
const PublishedClients = 100

// Published are the figures of the original simulation at 100 clients, by
// strategy name.
var Published = map[string]Figure{
	"None":         {Calls: 2421},
	"Exponential":  {Calls: 1855, Time: 63 * time.Second},
	"EqualJitter":  {Calls: 812},
	"FullJitter":   {Calls: 796, Time: 4900 * time.Millisecond},
	"Decorrelated": {Calls: 1001, Time: 4500 * time.Millisecond},
}

// Deviation is the relative difference of a result from a published figure.
type Deviation struct {
	Strategy string
	// Calls and Time are (ours − published) / published; NaN where the
	// figure was not published.
	Calls, Time float64
}

// Worst returns the larger absolute deviation, ignoring NaN.
func (d Deviation) Worst() float64 {
	w := 0.0
	for _, v := range []float64{d.Calls, d.Time} {
		if !math.IsNaN(v) {
			w = max(w, math.Abs(v))
		}
	}
	return w
}

// Compare returns the deviation of r from the published figure for its
// strategy, and false if there is none (unknown strategy or another client
// count).
func Compare(r Result) (Deviation, bool) {
	f, ok := Published[r.Strategy]
	if !ok || r.Clients != PublishedClients {
		return Deviation{}, false
	}
	d := Deviation{Strategy: r.Strategy, Calls: math.NaN(), Time: math.NaN()}
	if f.Calls > 0 {
		d.Calls = (r.Calls - f.Calls) / f.Calls
	}
	if f.Time > 0 {
		d.Time = float64(r.Time-f.Time) / float64(f.Time)
	}
	return d, true
}
