package querycost

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"
)

// fixed answers every query with the same value, or fails.
type fixed struct {
	v   model.Value
	err error
}

func (f fixed) Query(context.Context, string, time.Time) (model.Value, v1.Warnings, error) {
	return f.v, nil, f.err
}

func (f fixed) QueryRange(context.Context, string, v1.Range) (model.Value, v1.Warnings, error) {
	return f.v, nil, f.err
}

func matrix(series, points int) model.Matrix {
	m := make(model.Matrix, series)
	for i := range m {
		m[i] = &model.SampleStream{Metric: model.Metric{"pod": model.LabelValue(rune('a' + i))}, Values: make([]model.SamplePair, points)}
	}
	return m
}

func TestSize(t *testing.T) {
	for _, tc := range []struct {
		name            string
		v               model.Value
		series, samples int
	}{
		{"matrix", matrix(3, 90), 3, 270},
		{"histograms", model.Matrix{{Histograms: make([]model.SampleHistogramPair, 4)}}, 1, 4},
		{"vector", model.Vector{{}, {}}, 2, 2},
		{"empty vector", model.Vector{}, 0, 0},
		{"scalar", &model.Scalar{}, 0, 1},
		{"nothing", nil, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if s, n := Size(tc.v); s != tc.series || n != tc.samples {
				t.Errorf("Size = %d series, %d samples; want %d, %d", s, n, tc.series, tc.samples)
			}
		})
	}
}

func TestMeterCountsBySignalAndTally(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := NewMeter(reg)
	if err != nil {
		t.Fatal(err)
	}
	ok := m.Wrap("shop", fixed{v: matrix(10, 90)})
	bad := m.Wrap("shop", fixed{err: errors.New("connection refused")})

	ctx, cycle := WithTally(context.Background())
	sig := WithSignal(ctx, "payments_retries")
	for range 2 {
		if _, _, err := ok.QueryRange(sig, "q", v1.Range{}); err != nil {
			t.Fatal(err)
		}
	}
	inner, sub := WithTally(WithSignal(ctx, "slo:latency"))
	if _, _, err := ok.Query(inner, "q", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := bad.Query(ctx, "q", time.Time{}); err == nil {
		t.Fatal("want the error through")
	}

	got := cycle.Summary()
	if got.Total.Queries != 4 || got.Total.Errors != 1 || got.Total.Series != 30 || got.Total.Samples != 2700 {
		t.Errorf("cycle total %+v", got.Total)
	}
	if c := got.BySignal["payments_retries"]; c.Queries != 2 || c.Series != 20 || c.Samples != 1800 {
		t.Errorf("payments_retries %+v", c)
	}
	if c := got.BySignal[Unnamed]; c.Queries != 1 || c.Errors != 1 {
		t.Errorf("unnamed %+v", c)
	}
	if s := sub.Summary(); s.Total.Queries != 1 || s.Total.Samples != 900 || len(s.BySignal) != 1 {
		t.Errorf("nested tally %+v, want only its own query", s)
	}
	if want := []string{Unnamed, "payments_retries", "slo:latency"}; strings.Join(got.Signals(), ",") != strings.Join(want, ",") {
		t.Errorf("signals %v, want %v", got.Signals(), want)
	}

	if err := testutil.CollectAndCompare(m.queries, strings.NewReader(`
# HELP tailguard_signal_queries_total Queries sent to the metrics backend, by service, signal, type (instant, range) and result (ok, error).
# TYPE tailguard_signal_queries_total counter
tailguard_signal_queries_total{result="error",service="shop",signal="other",type="instant"} 1
tailguard_signal_queries_total{result="ok",service="shop",signal="payments_retries",type="range"} 2
tailguard_signal_queries_total{result="ok",service="shop",signal="slo:latency",type="instant"} 1
`)); err != nil {
		t.Error(err)
	}
	if v := testutil.ToFloat64(m.samples.WithLabelValues("shop", "payments_retries")); v != 1800 {
		t.Errorf("samples %v", v)
	}
	if n := testutil.CollectAndCount(m.duration); n != 3 {
		t.Errorf("duration series %d, want 3", n)
	}
}

func TestNilMeterStillTallies(t *testing.T) {
	var m *Meter
	ctx, tally := WithTally(context.Background())
	if _, _, err := m.Wrap("shop", fixed{v: model.Vector{{}}}).Query(ctx, "q", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if s := tally.Summary(); s.Total.Queries != 1 || s.Total.Samples != 1 {
		t.Errorf("tally %+v", s.Total)
	}
}
