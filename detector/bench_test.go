package detector

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/tailguard/tailguard/detector/changes"
	"github.com/tailguard/tailguard/promembed"
)

// BenchmarkAnalyze10kSlices analyses one retry-ratio signal sliced by pod
// into 10,000 slices (20,000 counter series, 1h baseline + 30m monitored,
// 30s scrapes) end to end against the embedded engine: queries, parsing,
// 10,000 sequential tests and attribution over two candidate changes, 50
// of the pods regressing after a flag change scoped to them.
func BenchmarkAnalyze10kSlices(b *testing.B) {
	const (
		pods      = 10_000
		regressed = 50
	)
	db, err := promembed.Open(promembed.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	rng := rand.New(rand.NewPCG(1, 1))
	start, end := tChange.Add(-62*time.Minute), tChange.Add(31*time.Minute)
	app := db.Appender(context.Background())
	for p := range pods {
		pod := fmt.Sprintf("pod-%05d", p)
		strategy := "exponential"
		if p < regressed {
			strategy = "decorrelated"
		}
		calls := labels.FromStrings("__name__", "backoff_calls_total", "pod", pod, "strategy", strategy, "upstream", "payments", "result", "success")
		retries := labels.FromStrings("__name__", "backoff_retries_total", "pod", pod, "strategy", strategy, "upstream", "payments")
		var c, r float64
		for ts := start; !ts.After(end); ts = ts.Add(30 * time.Second) {
			n := poisson(rng, 300) // 600 calls a minute per pod
			rate := 0.01
			if p < regressed && !ts.Before(tChange) {
				rate = 0.03
			}
			c += float64(n)
			r += float64(poisson(rng, float64(n)*rate))
			if err := app.Append(calls, ts, c); err != nil {
				b.Fatal(err)
			}
			if err := app.Append(retries, ts, r); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		b.Fatal(err)
	}
	cfg, err := ParseConfig(strings.NewReader(`
service: shop
signals:
  - name: payments_retries
    kind: retry_ratio
    selector: '{upstream="payments"}'
    by: [pod, strategy]
`))
	if err != nil {
		b.Fatal(err)
	}
	src := changes.Static{
		{ID: "flag/backoff-strategy", Time: tChange, Kind: changes.KindFlag, Component: "backoff-strategy", To: "decorrelated", Scope: map[string]string{"strategy": "decorrelated"}},
		{ID: "version/dten-gateway", Time: tChange, Kind: changes.KindVersion, Component: "dten-gateway", From: "2.3", To: "3.0"},
	}
	d, err := New(cfg, db, src)
	if err != nil {
		b.Fatal(err)
	}
	req := Request{From: tChange, To: tChange.Add(30 * time.Minute)}
	b.ReportAllocs()
	b.ResetTimer()
	var rep *Report
	for range b.N {
		rep, err = d.Analyze(context.Background(), req)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if rep.Streams != pods || rep.Summary.Regressed != regressed || len(rep.Incidents) != 1 || rep.Incidents[0].Cause == nil || rep.Incidents[0].Cause.Component != "backoff-strategy" {
		b.Fatalf("streams %d, summary %+v, incidents %+v", rep.Streams, rep.Summary, rep.Incidents)
	}
	if hwm := peakRSS(); hwm > 0 {
		b.ReportMetric(hwm, "peak-RSS-MiB")
	}
}

// peakRSS returns the process' peak resident set in MiB (Linux), or 0.
func peakRSS() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				return 0
			}
			return kb / 1024
		}
	}
	return 0
}
