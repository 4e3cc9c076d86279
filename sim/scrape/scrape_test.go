package scrape

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/tailguard/tailguard/promembed"
)

var t0 = time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)

func target(pod string) labels.Labels {
	return labels.FromStrings("job", "shop", "instance", pod+":8080", "pod", pod)
}

func find(t *testing.T, ss []Sample, series string) Sample {
	t.Helper()
	for _, s := range ss {
		if s.Labels.String() == series {
			return s
		}
	}
	var names []string
	for _, s := range ss {
		names = append(names, s.Labels.String())
	}
	t.Fatalf("series %s not found; have %q", series, names)
	return Sample{}
}

func TestSamplesCounterGaugeAndLabelCollision(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "http_requests_total", Help: "h"}, []string{"code", "pod"})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "dten_gateway_build_info", Help: "h", ConstLabels: prometheus.Labels{"version": "2.3"}})
	reg.MustRegister(c, g)
	c.WithLabelValues("200", "inner").Add(7)
	g.Set(1)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	ss, err := Samples(mfs, target("shop-0"))
	if err != nil {
		t.Fatal(err)
	}
	if got := find(t, ss, `{__name__="http_requests_total", code="200", exported_pod="inner", instance="shop-0:8080", job="shop", pod="shop-0"}`).V; got != 7 {
		t.Errorf("counter = %v, want 7", got)
	}
	if got := find(t, ss, `{__name__="dten_gateway_build_info", instance="shop-0:8080", job="shop", pod="shop-0", version="2.3"}`).V; got != 1 {
		t.Errorf("gauge = %v, want 1", got)
	}
}

func TestSamplesClassicHistogram(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "http_request_duration_seconds", Help: "h", Buckets: []float64{0.1, 0.4, 1}})
	reg.MustRegister(h)
	for _, v := range []float64{0.05, 0.2, 0.3, 0.5, 2} {
		h.Observe(v)
	}
	mfs, _ := reg.Gather()
	ss, err := Samples(mfs, target("p"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		`{__name__="http_request_duration_seconds_bucket", instance="p:8080", job="shop", le="0.1", pod="p"}`:  1,
		`{__name__="http_request_duration_seconds_bucket", instance="p:8080", job="shop", le="0.4", pod="p"}`:  3,
		`{__name__="http_request_duration_seconds_bucket", instance="p:8080", job="shop", le="1.0", pod="p"}`:  4,
		`{__name__="http_request_duration_seconds_bucket", instance="p:8080", job="shop", le="+Inf", pod="p"}`: 5,
		`{__name__="http_request_duration_seconds_count", instance="p:8080", job="shop", pod="p"}`:             5,
		`{__name__="http_request_duration_seconds_sum", instance="p:8080", job="shop", pod="p"}`:               3.05,
	}
	if len(ss) != len(want) {
		t.Fatalf("got %d samples, want %d", len(ss), len(want))
	}
	for series, v := range want {
		s := find(t, ss, series)
		if s.H != nil || math.Abs(s.V-v) > 1e-9 {
			t.Errorf("%s = %v (histogram %v), want %v", series, s.V, s.H, v)
		}
	}
}

func TestSamplesNativeHistogram(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "lat_seconds", Help: "h", Buckets: []float64{1},
		NativeHistogramBucketFactor: 1.1, NativeHistogramMaxBucketNumber: 100,
	})
	reg.MustRegister(h)
	vals := []float64{0.1, 0.1, 0.25, 0.8, 3}
	for _, v := range vals {
		h.Observe(v)
	}
	mfs, _ := reg.Gather()
	ss, err := Samples(mfs, target("p"))
	if err != nil {
		t.Fatal(err)
	}
	nh := find(t, ss, `{__name__="lat_seconds", instance="p:8080", job="shop", pod="p"}`).H
	if nh == nil {
		t.Fatal("no native histogram sample")
	}
	if nh.Schema != 3 || nh.Count != 5 || math.Abs(nh.Sum-4.25) > 1e-9 {
		t.Errorf("histogram schema=%d count=%d sum=%v, want 3, 5, 4.25", nh.Schema, nh.Count, nh.Sum)
	}
	if err := nh.Validate(); err != nil {
		t.Fatal(err)
	}
	// Every observation lies in the bucket the conversion says it does.
	fh := nh.ToFloat(nil)
	for _, v := range vals {
		var in float64
		it := fh.PositiveBucketIterator()
		for it.Next() {
			b := it.At()
			if v > b.Lower && v <= b.Upper {
				in += b.Count
			}
		}
		if in < 1 {
			t.Errorf("observation %v is in no bucket", v)
		}
	}
	// The classic buckets are kept too.
	if got := find(t, ss, `{__name__="lat_seconds_bucket", instance="p:8080", job="shop", le="1.0", pod="p"}`).V; got != 4 {
		t.Errorf("classic le=1 = %v, want 4", got)
	}
}

func TestHistogramConversionFixed(t *testing.T) {
	u := func(v uint64) *uint64 { return &v }
	f := func(v float64) *float64 { return &v }
	i := func(v int32) *int32 { return &v }
	l := func(v uint32) *uint32 { return &v }
	in := &dto.Histogram{
		SampleCount: u(6), SampleSum: f(12.5), Schema: i(0), ZeroThreshold: f(1e-3), ZeroCount: u(1),
		PositiveSpan:  []*dto.BucketSpan{{Offset: i(1), Length: l(2)}, {Offset: i(1), Length: l(1)}},
		PositiveDelta: []int64{2, -1, 1},
	}
	want := &histogram.Histogram{
		Schema: 0, ZeroThreshold: 1e-3, ZeroCount: 1, Count: 6, Sum: 12.5,
		PositiveSpans:   []histogram.Span{{Offset: 1, Length: 2}, {Offset: 1, Length: 1}},
		PositiveBuckets: []int64{2, -1, 1},
	}
	got := Histogram(in)
	if !got.Equals(want) {
		t.Fatalf("Histogram() = %v, want %v", got, want)
	}
	if fh := FloatHistogram(in); fh.Count != 6 || fh.ZeroCount != 1 || fh.PositiveBuckets[2] != 2 {
		t.Errorf("FloatHistogram() = %v", fh)
	}
	if !IsNative(in) || IsNative(&dto.Histogram{SampleCount: u(1)}) {
		t.Error("IsNative misclassifies")
	}
}

func TestSamplesSummaryAndErrors(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := prometheus.NewSummary(prometheus.SummaryOpts{Name: "rpc_seconds", Help: "h", Objectives: map[float64]float64{0.5: 0.05}})
	reg.MustRegister(s)
	s.Observe(1)
	mfs, _ := reg.Gather()
	ss, err := Samples(mfs, target("p"))
	if err != nil {
		t.Fatal(err)
	}
	find(t, ss, `{__name__="rpc_seconds", instance="p:8080", job="shop", pod="p", quantile="0.5"}`)
	find(t, ss, `{__name__="rpc_seconds_count", instance="p:8080", job="shop", pod="p"}`)

	name, bad := "bad-name", "x"
	if _, err := Samples([]*dto.MetricFamily{{Name: &name, Type: dto.MetricType_GAUGE.Enum(), Metric: []*dto.Metric{{Gauge: &dto.Gauge{}}}}}, target("p")); err == nil {
		t.Error("invalid metric name accepted")
	}
	ln := "bad-label"
	if _, err := Samples([]*dto.MetricFamily{{Name: &bad, Type: dto.MetricType_GAUGE.Enum(), Metric: []*dto.Metric{{Label: []*dto.LabelPair{{Name: &ln, Value: &bad}}, Gauge: &dto.Gauge{}}}}}, target("p")); err == nil {
		t.Error("invalid label name accepted")
	}
}

// db is a promembed database with helpers for the end-to-end tests.
type db struct {
	*promembed.DB
	t *testing.T
}

func openDB(t *testing.T) db {
	t.Helper()
	d, err := promembed.Open(promembed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return db{d, t}
}

func (d db) scrape(s *Scraper, at time.Time, targets ...Target) Stats {
	d.t.Helper()
	app := d.Appender(context.Background())
	st, err := s.Scrape(app, at, targets)
	if err != nil {
		d.t.Fatal(err)
	}
	if err := app.Commit(); err != nil {
		d.t.Fatal(err)
	}
	return st
}

func (d db) vector(q string, at time.Time) model.Vector {
	d.t.Helper()
	v, _, err := d.Query(context.Background(), q, at)
	if err != nil {
		d.t.Fatal(err)
	}
	return v.(model.Vector)
}

func (d db) scalar(q string, at time.Time) float64 {
	d.t.Helper()
	v := d.vector(q, at)
	if len(v) != 1 {
		d.t.Fatalf("%s at %s: %d series, want 1", q, at.Format(time.TimeOnly), len(v))
	}
	return float64(v[0].Value)
}

func TestScrapeEndToEnd(t *testing.T) {
	d := openDB(t)
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "http_requests_total", Help: "h"})
	h := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "http_request_duration_seconds", Help: "h", Buckets: []float64{0.1, 0.4, 1},
		NativeHistogramBucketFactor: 1.1, NativeHistogramMaxBucketNumber: 160,
	})
	reg.MustRegister(c, h)
	s := New()
	tg := Target{Labels: target("shop-0"), Gatherer: reg}
	for i := range 41 { // 10 minutes at 15s
		c.Add(15)
		for range 10 {
			h.Observe(0.05)
		}
		h.Observe(0.5)
		d.scrape(s, t0.Add(time.Duration(i)*15*time.Second), tg)
	}
	end := t0.Add(10 * time.Minute)
	if got := d.scalar(`rate(http_requests_total{job="shop"}[5m])`, end); math.Abs(got-1) > 1e-9 {
		t.Errorf("rate = %v, want 1", got)
	}
	if got := d.scalar(`up{pod="shop-0"}`, end); got != 1 {
		t.Errorf("up = %v, want 1", got)
	}
	// 1 of 11 observations per scrape is above 0.4s, by classic and native histogram alike.
	classic := d.scalar(`1 - sum(rate(http_request_duration_seconds_bucket{le="0.4"}[5m])) / sum(rate(http_request_duration_seconds_count[5m]))`, end)
	native := d.scalar(`histogram_fraction(0.4, +Inf, sum(rate(http_request_duration_seconds[5m])))`, end)
	for name, got := range map[string]float64{"classic": classic, "native": native} {
		if math.Abs(got-1.0/11) > 1e-6 {
			t.Errorf("%s fraction above 0.4s = %v, want %v", name, got, 1.0/11)
		}
	}
	if got := d.scalar(`histogram_count(rate(http_request_duration_seconds[5m]))`, end); math.Abs(got-11.0/15) > 1e-6 {
		t.Errorf("native count rate = %v, want %v", got, 11.0/15)
	}
}

func TestScrapeStaleness(t *testing.T) {
	d := openDB(t)
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	vec := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dten_gateway_build_info", Help: "h"}, []string{"version"})
	regA.MustRegister(vec)
	gB := prometheus.NewGauge(prometheus.GaugeOpts{Name: "pay_sdk_build_info", Help: "h"})
	regB.MustRegister(gB)
	vec.WithLabelValues("2.3").Set(1)
	gB.Set(1)
	a := Target{Labels: target("shop-0"), Gatherer: regA}
	b := Target{Labels: target("shop-1"), Gatherer: regB}
	s := New()
	d.scrape(s, t0, a, b)
	// The version changes: the old series gets a staleness marker.
	vec.Reset()
	vec.WithLabelValues("3.0").Set(1)
	st := d.scrape(s, t0.Add(15*time.Second), a, b)
	if st.Stale != 1 {
		t.Errorf("stale markers = %d, want 1", st.Stale)
	}
	at := t0.Add(20 * time.Second)
	v := d.vector(`dten_gateway_build_info`, at)
	if len(v) != 1 || v[0].Metric["version"] != "3.0" {
		t.Errorf("build info after the change = %v, want only version 3.0", v)
	}
	// Target b goes away: all its series, up included, go stale at once
	// instead of lingering for the 5m lookback.
	st = d.scrape(s, t0.Add(30*time.Second), a)
	if st.Stale != 2 {
		t.Errorf("stale markers = %d, want 2 (series and up)", st.Stale)
	}
	at = t0.Add(35 * time.Second)
	if v := d.vector(`pay_sdk_build_info`, at); len(v) != 0 {
		t.Errorf("series of a removed target still visible: %v", v)
	}
	if v := d.vector(`up{pod="shop-1"}`, at); len(v) != 0 {
		t.Errorf("up of a removed target still visible: %v", v)
	}
}

type failingGatherer struct{}

func (failingGatherer) Gather() ([]*dto.MetricFamily, error) {
	return nil, errors.New("connection refused")
}

func TestScrapeFailureAndGap(t *testing.T) {
	d := openDB(t)
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g", Help: "h"})
	reg.MustRegister(g)
	s := New()
	ok := Target{Labels: target("shop-0"), Gatherer: reg}
	d.scrape(s, t0, ok)
	// The target fails: up=0 and its series go stale.
	app := d.Appender(context.Background())
	st, err := s.Scrape(app, t0.Add(15*time.Second), []Target{{Labels: target("shop-0"), Gatherer: failingGatherer{}}})
	if err == nil || st.Failed != 1 || st.Stale != 1 {
		t.Fatalf("failed scrape: stats %+v, err %v; want one failure, one stale marker and an error", st, err)
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := d.scalar(`up`, t0.Add(20*time.Second)); got != 0 {
		t.Errorf("up = %v, want 0", got)
	}
	if v := d.vector(`g`, t0.Add(20*time.Second)); len(v) != 0 {
		t.Errorf("series of a failed target still visible: %v", v)
	}
	// A gap: no scrapes for 10 minutes (Prometheus down). No markers are
	// written; once the lookback passes, instant queries see nothing.
	d.scrape(s, t0.Add(30*time.Second), ok)
	resume := t0.Add(30*time.Second + 10*time.Minute)
	d.scrape(s, resume, ok)
	if v := d.vector(`up`, t0.Add(30*time.Second+6*time.Minute)); len(v) != 0 {
		t.Errorf("up visible 6m into a gap: %v", v)
	}
	if got := d.scalar(`count_over_time(up[10m1s])`, resume); got != 2 {
		t.Errorf("samples of up in the last 10m1s = %v, want 2 (gap)", got)
	}
}

func TestScrapeRejectsBadTargets(t *testing.T) {
	s := New()
	d := openDB(t)
	app := d.Appender(context.Background())
	defer app.Rollback()
	if _, err := s.Scrape(app, t0, []Target{{Labels: labels.FromStrings("job", "shop"), Gatherer: prometheus.NewRegistry()}}); err == nil {
		t.Error("target without instance accepted")
	}
	tg := Target{Labels: target("a"), Gatherer: prometheus.NewRegistry()}
	if _, err := s.Scrape(app, t0, []Target{tg, tg}); err == nil {
		t.Error("duplicate target accepted")
	}
}
