package detector

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/tailguard/tailguard/detector/changes"
	"github.com/tailguard/tailguard/promembed"
)

// manySlices is a service with one retry-ratio and one error-ratio signal
// sliced by pod (1h baseline + 30m monitored, 30s scrapes): the first
// regressed pods get three times the retries after a flag change scoped to
// their strategy. Every seventh pod has no retries series until it first
// retries, every eleventh has no error series at all, and a latency
// histogram exists on every tenth pod, so that every query path and the
// absent-series cases are exercised.
type manySlices struct {
	db  *promembed.DB
	det *Detector
	req Request
}

// With onDisk, the samples are written as a persisted TSDB block (as
// Prometheus keeps all but the last two hours) and the database is opened
// over it: the samples are then file-backed pages, not heap, and the
// process' memory is mostly the analysis'.
func newManySlices(tb testing.TB, pods, regressed int, latency, onDisk bool) *manySlices {
	tb.Helper()
	var (
		newAppender func() sampleAppender
		bw          *tsdb.BlockWriter
		head        *promembed.DB
		dir         = tb.TempDir()
	)
	if onDisk {
		var err error
		bw, err = tsdb.NewBlockWriter(promslog.NewNopLogger(), dir, 4*time.Hour.Milliseconds())
		if err != nil {
			tb.Fatal(err)
		}
		newAppender = func() sampleAppender { return bw.Appender(context.Background()) }
	} else {
		var err error
		head, err = promembed.Open(promembed.Options{})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { head.Close() })
		newAppender = func() sampleAppender { return headAppender{head.Appender(context.Background())} }
	}
	rng := rand.New(rand.NewPCG(1, 1))
	start, end := tChange.Add(-62*time.Minute), tChange.Add(31*time.Minute)
	bounds := []string{"0.05", "0.1", "0.25", "0.5", "1", "+Inf"}
	// Commit a few hundred pods at a time: one huge commit would make the
	// fixture's own peak memory dwarf the analysis.
	const batch = 250
	for lo := 0; lo < pods; lo += batch {
		app := newAppender()
		for p := lo; p < min(pods, lo+batch); p++ {
			pod := fmt.Sprintf("pod-%05d", p)
			strategy := "exponential"
			if p < regressed {
				strategy = "decorrelated"
			}
			calls := labels.FromStrings("__name__", "backoff_calls_total", "pod", pod, "strategy", strategy, "upstream", "payments", "result", "success")
			retries := labels.FromStrings("__name__", "backoff_retries_total", "pod", pod, "strategy", strategy, "upstream", "payments")
			reqs := labels.FromStrings("__name__", "http_requests_total", "pod", pod, "code", "200")
			errs := labels.FromStrings("__name__", "http_requests_total", "pod", pod, "code", "500")
			var c, r, ok, bad float64
			var hist []float64
			for ts := start; !ts.After(end); ts = ts.Add(30 * time.Second) {
				n := poisson(rng, 300) // 600 calls a minute per pod
				rate := 0.01
				if p < regressed && !ts.Before(tChange) {
					rate = 0.03
				}
				c += float64(n)
				r += float64(poisson(rng, float64(n)*rate))
				if err := appendAt(app, calls, ts, c); err != nil {
					tb.Fatal(err)
				}
				if p%7 != 3 || r > 0 {
					if err := appendAt(app, retries, ts, r); err != nil {
						tb.Fatal(err)
					}
				}
				e := poisson(rng, float64(n)*0.002)
				ok += float64(n - e)
				bad += float64(e)
				if err := appendAt(app, reqs, ts, ok); err != nil {
					tb.Fatal(err)
				}
				if p%11 != 5 {
					if err := appendAt(app, errs, ts, bad); err != nil {
						tb.Fatal(err)
					}
				}
				if !latency || p%10 != 0 {
					continue
				}
				if hist == nil {
					hist = make([]float64, len(bounds))
				}
				for range n {
					v := rng.ExpFloat64() * 0.08
					for i, b := range bounds {
						if le, _ := strconv.ParseFloat(b, 64); v <= le {
							hist[i]++
						}
					}
				}
				for i, b := range bounds {
					l := labels.FromStrings("__name__", "http_request_duration_seconds_bucket", "pod", pod, "le", b)
					if err := appendAt(app, l, ts, hist[i]); err != nil {
						tb.Fatal(err)
					}
				}
				cnt := labels.FromStrings("__name__", "http_request_duration_seconds_count", "pod", pod)
				if err := appendAt(app, cnt, ts, hist[len(hist)-1]); err != nil {
					tb.Fatal(err)
				}
			}
		}
		if err := app.Commit(); err != nil {
			tb.Fatal(err)
		}
	}
	db := head
	if onDisk {
		if _, err := bw.Flush(context.Background()); err != nil {
			tb.Fatal(err)
		}
		if err := bw.Close(); err != nil {
			tb.Fatal(err)
		}
		var err error
		db, err = promembed.Open(promembed.Options{Dir: dir})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { db.Close() })
	}
	conf := `
service: shop
signals:
  - name: payments_retries
    kind: retry_ratio
    selector: '{upstream="payments"}'
    by: [pod, strategy]
`
	if latency {
		conf += `
  - name: errors
    kind: error_ratio
    metric: http_requests_total
    by: [pod]
  - name: latency
    kind: latency
    histogram: classic
    metric: http_request_duration_seconds
    by: [pod]
`
	}
	cfg, err := ParseConfig(strings.NewReader(conf))
	if err != nil {
		tb.Fatal(err)
	}
	src := changes.Static{
		{ID: "flag/backoff-strategy", Time: tChange, Kind: changes.KindFlag, Component: "backoff-strategy", To: "decorrelated", Scope: map[string]string{"strategy": "decorrelated"}},
		{ID: "version/dten-gateway", Time: tChange, Kind: changes.KindVersion, Component: "dten-gateway", From: "2.3", To: "3.0"},
	}
	d, err := New(cfg, db, src)
	if err != nil {
		tb.Fatal(err)
	}
	d.now = func() time.Time { return tChange.Add(31 * time.Minute) }
	return &manySlices{db: db, det: d, req: Request{From: tChange, To: tChange.Add(30 * time.Minute)}}
}

// headAppender adapts the embedded database's appender to storage.Appender.
type headAppender struct{ a *promembed.Appender }

func (h headAppender) Append(_ storage.SeriesRef, l labels.Labels, t int64, v float64) (storage.SeriesRef, error) {
	return 0, h.a.Append(l, time.UnixMilli(t), v)
}
func (h headAppender) Commit() error { return h.a.Commit() }

// sampleAppender is what the fixture needs of an appender.
type sampleAppender interface {
	Append(storage.SeriesRef, labels.Labels, int64, float64) (storage.SeriesRef, error)
	Commit() error
}

func appendAt(app sampleAppender, l labels.Labels, ts time.Time, v float64) error {
	_, err := app.Append(0, l, ts.UnixMilli(), v)
	return err
}

// TestAnalyzeManySlicesGolden pins the findings and incidents of a
// many-slice analysis, so that work on the analysis' speed and memory
// cannot change its results. The queries are left out: their text may
// change while their results must not.
func TestAnalyzeManySlicesGolden(t *testing.T) {
	ms := newManySlices(t, 150, 8, true, false)
	rep, err := ms.det.Analyze(context.Background(), ms.req)
	if err != nil {
		t.Fatal(err)
	}
	for i := range rep.Findings {
		rep.Findings[i].Queries = nil
	}
	got, err := json.MarshalIndent(struct {
		Summary   Summary
		Threshold float64
		Findings  []Finding
		Incidents []Incident
	}{rep.Summary, rep.Threshold, rep.Findings, rep.Incidents}, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "many_slices_findings.golden.json", append(got, '\n'))
	if rep.Summary.Regressed == 0 || rep.Summary.Healthy == 0 {
		t.Errorf("summary %+v: want regressed and healthy slices", rep.Summary)
	}
}

// BenchmarkAnalyze10kSlices analyses one retry-ratio signal sliced by pod
// into 10,000 slices (20,000 counter series, 1h baseline + 30m monitored,
// 30s scrapes) end to end against the embedded engine: queries, parsing,
// 10,000 sequential tests and attribution over two candidate changes, 50
// of the pods regressing after a flag change scoped to them.
//
// The samples sit in a persisted block, as in a Prometheus server, so the
// process' memory is mostly the analysis'. Reported per query concurrency:
// allocations per slice; the process' peak RSS during the analyses and the
// part of it above the resident set before the first analysis (the
// analysis' own peak).
func BenchmarkAnalyze10kSlices(b *testing.B) {
	const (
		pods      = 10_000
		regressed = 50
	)
	ms := newManySlices(b, pods, regressed, false, true)
	for _, conc := range []int{1, DefaultQueryConcurrency} {
		b.Run(fmt.Sprintf("query_concurrency=%d", conc), func(b *testing.B) {
			ms.det.slots = make(chan struct{}, conc)
			runtime.GC()
			debug.FreeOSMemory()
			resetPeakRSS()
			before := rss()
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			b.ReportAllocs()
			b.ResetTimer()
			var rep *Report
			var err error
			for range b.N {
				rep, err = ms.det.Analyze(context.Background(), ms.req)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			runtime.ReadMemStats(&m1)
			if rep.Streams != pods || rep.Summary.Regressed != regressed || len(rep.Incidents) != 1 || rep.Incidents[0].Cause == nil || rep.Incidents[0].Cause.Component != "backoff-strategy" {
				b.Fatalf("streams %d, summary %+v, incidents %+v", rep.Streams, rep.Summary, rep.Incidents)
			}
			if hwm := peakRSS(); hwm > 0 {
				b.ReportMetric(hwm, "peak-RSS-MiB")
				b.ReportMetric(hwm-before, "analysis-peak-MiB")
			}
			b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/float64(b.N)/pods, "allocs/slice")
		})
	}
}

// resetPeakRSS resets the kernel's peak RSS of this process (Linux ≥ 4.0).
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSS and rss return the process' peak and current resident set in
// MiB (Linux), or 0.
func peakRSS() float64 { return procStatus("VmHWM:") }
func rss() float64     { return procStatus("VmRSS:") }

func procStatus(field string) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), field); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				return 0
			}
			return kb / 1024
		}
	}
	return 0
}
