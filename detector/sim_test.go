package detector

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/tailguard/tailguard/promembed"
)

// The scenario service: "shop", /checkout calls the third-party "payments"
// with retries, /search does not call out.

var (
	// tChange is the change time of every scenario.
	tChange = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	// simStart leaves room for a 1h baseline plus the 1m increase window.
	simStart = tChange.Add(-65 * time.Minute)
	simEnd   = tChange.Add(61 * time.Minute)
)

const scrape = 15 * time.Second

var classicBounds = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// sliceSim describes the traffic of one endpoint/strategy combination.
type sliceSim struct {
	endpoint string
	strategy string // empty: no strategy label (no upstream calls)
	// rpm is requests per minute at t; zero means no traffic (and no new
	// samples: the series goes stale if stale is set).
	rpm func(t time.Time) float64
	// median and sigma of the lognormal base latency (seconds).
	median, sigma float64
	// slow is the probability at t that a request waits an extra
	// U(0.3s, 0.8s), e.g. for retries with long backoff.
	slow func(t time.Time) float64
	// retries is the mean number of retries per call to payments at t.
	retries func(t time.Time) float64
	// errors is the probability of a 5xx at t.
	errors float64
	// start and stop bound when the series exist; stop writes staleness
	// markers, as a scrape of a vanished series does.
	start, stop time.Time
	// native also writes a native histogram (schema 3).
	native bool
}

func constant(v float64) func(time.Time) float64 { return func(time.Time) float64 { return v } }

func step(before, after float64, at time.Time) func(time.Time) float64 {
	return func(t time.Time) float64 {
		if t.Before(at) {
			return before
		}
		return after
	}
}

// versionSim is a build info series whose version changes at a time.
type versionSim struct {
	metric   string
	from, to string
	at       time.Time
}

// simulate writes the scenario into a fresh embedded Prometheus.
func simulate(t testing.TB, seed uint64, slices []sliceSim, versions []versionSim) *promembed.DB {
	t.Helper()
	db, err := promembed.Open(promembed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	rng := rand.New(rand.NewPCG(seed, 42))
	app := db.Appender(context.Background())
	for _, s := range slices {
		writeSlice(t, app, rng, s)
	}
	for _, v := range versions {
		old := labels.FromStrings("__name__", v.metric, "job", "shop", "instance", "shop-0", "version", v.from)
		cur := labels.FromStrings("__name__", v.metric, "job", "shop", "instance", "shop-0", "version", v.to)
		for ts := simStart; !ts.After(simEnd); ts = ts.Add(scrape) {
			ls := old
			if !ts.Before(v.at) {
				ls = cur
			}
			must(t, app.Append(ls, ts, 1))
			if !ts.Before(v.at) && ts.Add(-scrape).Before(v.at) {
				must(t, app.AppendStale(old, ts))
			}
		}
	}
	must(t, app.Commit())
	return db
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeSlice(t testing.TB, app *promembed.Appender, rng *rand.Rand, s sliceSim) {
	base := []string{"job", "shop", "endpoint", s.endpoint}
	if s.strategy != "" {
		base = append(base, "strategy", s.strategy)
	}
	ls := func(name string, extra ...string) labels.Labels {
		kv := append([]string{"__name__", name}, base...)
		return labels.FromStrings(append(kv, extra...)...)
	}
	bucketLs := make([]labels.Labels, len(classicBounds)+1)
	for i, b := range classicBounds {
		bucketLs[i] = ls("http_request_duration_seconds_bucket", "le", strconv.FormatFloat(b, 'f', -1, 64))
	}
	bucketLs[len(classicBounds)] = ls("http_request_duration_seconds_bucket", "le", "+Inf")
	countL, sumL := ls("http_request_duration_seconds_count"), ls("http_request_duration_seconds_sum")
	nativeL := ls("http_request_duration_seconds")
	okL, errL := ls("http_requests_total", "code", "200"), ls("http_requests_total", "code", "500")
	var callsL, retriesL labels.Labels
	if s.strategy != "" {
		callsL = labels.FromStrings("__name__", "backoff_calls_total", "strategy", s.strategy, "upstream", "payments", "result", "success")
		retriesL = labels.FromStrings("__name__", "backoff_retries_total", "strategy", s.strategy, "upstream", "payments")
	}

	buckets := make([]float64, len(classicBounds)+1)
	var count, sum, oks, errs, calls, retries float64
	native := map[int]float64{}
	start := s.start
	if start.IsZero() {
		start = simStart
	}
	for ts := start; !ts.After(simEnd); ts = ts.Add(scrape) {
		if !s.stop.IsZero() && !ts.Before(s.stop) {
			all := append([]labels.Labels{countL, sumL, okL, errL}, bucketLs...)
			if s.native {
				all = append(all, nativeL)
			}
			if s.strategy != "" {
				all = append(all, callsL, retriesL)
			}
			for _, l := range all {
				must(t, app.AppendStale(l, ts))
			}
			return
		}
		n := poisson(rng, s.rpm(ts)/60*scrape.Seconds())
		slow := 0.0
		if s.slow != nil {
			slow = s.slow(ts)
		}
		for range n {
			v := s.median * math.Exp(s.sigma*rng.NormFloat64())
			if rng.Float64() < slow {
				v += 0.3 + 0.5*rng.Float64()
			}
			count++
			sum += v
			for i, b := range classicBounds {
				if v <= b {
					buckets[i]++
				}
			}
			buckets[len(classicBounds)]++
			if s.native {
				native[int(math.Ceil(math.Log2(v)*8))]++
			}
			if rng.Float64() < s.errors {
				errs++
			} else {
				oks++
			}
		}
		for i, l := range bucketLs {
			must(t, app.Append(l, ts, buckets[i]))
		}
		must(t, app.Append(countL, ts, count))
		must(t, app.Append(sumL, ts, sum))
		must(t, app.Append(okL, ts, oks))
		must(t, app.Append(errL, ts, errs))
		if s.native {
			must(t, app.AppendFloatHistogram(nativeL, ts, nativeHistogram(native, count, sum)))
		}
		if s.strategy != "" {
			calls += float64(n)
			if s.retries != nil {
				retries += float64(poisson(rng, float64(n)*s.retries(ts)))
			}
			must(t, app.Append(callsL, ts, calls))
			must(t, app.Append(retriesL, ts, retries))
		}
	}
}

// nativeHistogram builds a schema-3 float histogram from bucket counts.
func nativeHistogram(b map[int]float64, count, sum float64) *histogram.FloatHistogram {
	idx := make([]int, 0, len(b))
	for i := range b {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	h := &histogram.FloatHistogram{Schema: 3, Count: count, Sum: sum, ZeroThreshold: 1e-128}
	prev := 0
	for k, i := range idx {
		if k == 0 || i != prev+1 {
			off := i
			if k > 0 {
				off = i - prev - 1
			}
			h.PositiveSpans = append(h.PositiveSpans, histogram.Span{Offset: int32(off), Length: 0})
		}
		h.PositiveSpans[len(h.PositiveSpans)-1].Length++
		h.PositiveBuckets = append(h.PositiveBuckets, b[i])
		prev = i
	}
	return h
}

// poisson draws a Poisson variate: Knuth's method for small means, a
// rounded normal approximation above 50 (enough for traffic generation).
func poisson(rng *rand.Rand, mean float64) int {
	if mean <= 0 {
		return 0
	}
	if mean > 50 {
		return max(0, int(math.Round(mean+math.Sqrt(mean)*rng.NormFloat64())))
	}
	l, k, p := math.Exp(-mean), 0, 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// writeFile writes content to dir/name and returns the path.
func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	must(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}
