// Package scrape turns Prometheus registries into samples the way a
// Prometheus server's scrape does, for simulations that run in virtual time.
//
// A [Scraper] gathers each [Target]'s registry, converts the metric families
// (counters, gauges, untyped, summaries, classic and native histograms) into
// series with the target's labels attached, and appends them at the
// timestamp it is given. Like Prometheus it records up{job,instance} for
// every target, writes staleness markers for series that disappear from a
// target and for every series of a target that is no longer scraped or whose
// scrape fails, and keeps a metric's own label that collides with a target
// label as exported_<name> (honor_labels: false). Classic histograms become
// _bucket (with le, +Inf included), _sum and _count series; native
// histograms are appended as native histogram samples, and a histogram that
// has both is stored both ways (always_scrape_classic_histograms: true).
//
// Scrape intervals and gaps are the caller's business: a skipped scrape is
// simply not made, as when the Prometheus server itself is down.
package scrape

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
)

// Appender receives samples. *promembed.Appender implements it.
type Appender interface {
	Append(ls labels.Labels, t time.Time, v float64) error
	AppendHistogram(ls labels.Labels, t time.Time, h *histogram.Histogram) error
	AppendFloatHistogram(ls labels.Labels, t time.Time, fh *histogram.FloatHistogram) error
	AppendStale(ls labels.Labels, t time.Time) error
}

// Sample is one series' value at a scrape: a float (H and FH nil), an
// integer native histogram (H) or a float native histogram (FH).
type Sample struct {
	Labels labels.Labels
	V      float64
	H      *histogram.Histogram
	FH     *histogram.FloatHistogram
}

// Target is one scrape target: a registry and the labels its series get.
type Target struct {
	// Labels are the target labels; job and instance are required.
	Labels labels.Labels
	// Gatherer is the target's registry.
	Gatherer prometheus.Gatherer
}

// Stats counts what one Scrape did.
type Stats struct {
	Targets int
	Samples int
	Stale   int
	Failed  int
}

// Scraper remembers the series each target exposed at its last scrape, to
// write staleness markers. It is not safe for concurrent use.
type Scraper struct {
	last map[string]*targetState
	buf  []byte
}

type targetState struct {
	labels labels.Labels
	series map[string]labels.Labels // key: labels.Bytes
}

// New returns a Scraper that has scraped nothing yet.
func New() *Scraper { return &Scraper{last: map[string]*targetState{}} }

// Scrape gathers every target and appends its samples at t, with
// staleness markers for the series that went away since the previous
// Scrape (including every series of a target missing from targets). A
// target whose Gatherer fails gets up=0 and staleness markers for all its
// series; its error is returned, joined with the others, after all targets
// are done. An append error stops the scrape at once: the caller should
// roll the appender back.
func (s *Scraper) Scrape(app Appender, t time.Time, targets []Target) (Stats, error) {
	var st Stats
	var gatherErrs []error
	current := map[string]bool{}
	for _, tg := range targets {
		if tg.Labels.Get(model.JobLabel) == "" || tg.Labels.Get(model.InstanceLabel) == "" {
			return st, fmt.Errorf("target %s: labels job and instance are required", tg.Labels)
		}
		key := tg.Labels.String()
		if current[key] {
			return st, fmt.Errorf("target %s: listed twice", key)
		}
		current[key] = true
		st.Targets++
		prev := s.last[key]
		if prev == nil {
			prev = &targetState{labels: tg.Labels, series: map[string]labels.Labels{}}
			s.last[key] = prev
		}
		up := 1.0
		var samples []Sample
		mfs, err := tg.Gatherer.Gather()
		if err == nil {
			samples, err = Samples(mfs, tg.Labels)
		}
		if err != nil {
			gatherErrs = append(gatherErrs, fmt.Errorf("scrape %s: %w", key, err))
			up, samples = 0, nil
			st.Failed++
		}
		seen := make(map[string]labels.Labels, len(samples))
		for _, smp := range samples {
			s.buf = smp.Labels.Bytes(s.buf)
			seen[string(s.buf)] = smp.Labels
			if err := appendSample(app, smp, t); err != nil {
				return st, err
			}
			st.Samples++
		}
		for k, ls := range prev.series {
			if _, ok := seen[k]; !ok {
				if err := app.AppendStale(ls, t); err != nil {
					return st, err
				}
				st.Stale++
			}
		}
		prev.series = seen
		if err := app.Append(upLabels(tg.Labels), t, up); err != nil {
			return st, err
		}
		st.Samples++
	}
	for _, key := range sortedKeys(s.last) {
		if current[key] {
			continue
		}
		ts := s.last[key]
		for _, ls := range ts.series {
			if err := app.AppendStale(ls, t); err != nil {
				return st, err
			}
			st.Stale++
		}
		if err := app.AppendStale(upLabels(ts.labels), t); err != nil {
			return st, err
		}
		st.Stale++
		delete(s.last, key)
	}
	return st, errors.Join(gatherErrs...)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func upLabels(target labels.Labels) labels.Labels {
	b := labels.NewBuilder(target)
	b.Set(model.MetricNameLabel, "up")
	return b.Labels()
}

func appendSample(app Appender, s Sample, t time.Time) error {
	switch {
	case s.H != nil:
		return app.AppendHistogram(s.Labels, t, s.H)
	case s.FH != nil:
		return app.AppendFloatHistogram(s.Labels, t, s.FH)
	default:
		return app.Append(s.Labels, t, s.V)
	}
}

// Samples converts gathered metric families into samples carrying the
// target labels. It is a pure function. Samples of one metric come out
// together, in the order Gather returned the metrics; a series that occurs
// twice is an error.
func Samples(mfs []*dto.MetricFamily, target labels.Labels) ([]Sample, error) {
	var out []Sample
	sb := labels.NewScratchBuilder(16)
	for _, mf := range mfs {
		name := mf.GetName()
		if !model.LegacyValidation.IsValidMetricName(name) {
			return nil, fmt.Errorf("metric family %q: invalid metric name", name)
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if ln := lp.GetName(); !model.LegacyValidation.IsValidLabelName(ln) || ln == model.MetricNameLabel {
					return nil, fmt.Errorf("metric %s: invalid label name %q", name, ln)
				}
			}
			ls := func(suffix, extraName, extraValue string) labels.Labels {
				return seriesLabels(&sb, name+suffix, m.GetLabel(), target, extraName, extraValue)
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out = append(out, Sample{Labels: ls("", "", ""), V: m.GetCounter().GetValue()})
			case dto.MetricType_GAUGE:
				out = append(out, Sample{Labels: ls("", "", ""), V: m.GetGauge().GetValue()})
			case dto.MetricType_UNTYPED:
				out = append(out, Sample{Labels: ls("", "", ""), V: m.GetUntyped().GetValue()})
			case dto.MetricType_SUMMARY:
				out = appendSummary(out, ls, m.GetSummary())
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				var err error
				if out, err = appendHistogram(out, ls, m.GetHistogram(), mf.GetType() == dto.MetricType_GAUGE_HISTOGRAM); err != nil {
					return nil, fmt.Errorf("metric %s: %w", ls("", "", ""), err)
				}
			default:
				return nil, fmt.Errorf("metric family %q: unsupported type %v", name, mf.GetType())
			}
		}
	}
	seen := make(map[string]struct{}, len(out))
	var buf []byte
	for _, smp := range out {
		buf = smp.Labels.Bytes(buf)
		if _, dup := seen[string(buf)]; dup {
			return nil, fmt.Errorf("duplicate series %s", smp.Labels)
		}
		seen[string(buf)] = struct{}{}
	}
	return out, nil
}

// seriesLabels builds name + metric labels + target labels (+ one extra
// label such as le); a metric label that collides with a target label is
// kept as exported_<name>.
func seriesLabels(sb *labels.ScratchBuilder, name string, lps []*dto.LabelPair, target labels.Labels, extraName, extraValue string) labels.Labels {
	sb.Reset()
	sb.Add(model.MetricNameLabel, name)
	for _, lp := range lps {
		ln := lp.GetName()
		if target.Has(ln) || ln == extraName {
			ln = "exported_" + ln
		}
		sb.Add(ln, lp.GetValue())
	}
	target.Range(func(l labels.Label) { sb.Add(l.Name, l.Value) })
	if extraName != "" {
		sb.Add(extraName, extraValue)
	}
	sb.Sort()
	return sb.Labels()
}

// labelsFunc builds the labels of one of a metric's series: the metric
// name plus suffix, and an optional extra label.
type labelsFunc func(suffix, extraName, extraValue string) labels.Labels

func appendSummary(out []Sample, ls labelsFunc, s *dto.Summary) []Sample {
	for _, q := range s.GetQuantile() {
		out = append(out, Sample{Labels: ls("", model.QuantileLabel, labels.FormatOpenMetricsFloat(q.GetQuantile())), V: q.GetValue()})
	}
	return append(out,
		Sample{Labels: ls("_sum", "", ""), V: s.GetSampleSum()},
		Sample{Labels: ls("_count", "", ""), V: float64(s.GetSampleCount())},
	)
}

func appendHistogram(out []Sample, ls labelsFunc, h *dto.Histogram, gauge bool) ([]Sample, error) {
	native := IsNative(h)
	if native {
		if h.GetSampleCountFloat() > 0 || h.GetZeroCountFloat() > 0 || len(h.GetPositiveCount()) > 0 || len(h.GetNegativeCount()) > 0 {
			fh := FloatHistogram(h)
			if gauge {
				fh.CounterResetHint = histogram.GaugeType
			}
			if err := fh.Validate(); err != nil {
				return out, fmt.Errorf("native histogram: %w", err)
			}
			out = append(out, Sample{Labels: ls("", "", ""), FH: fh})
		} else {
			ih := Histogram(h)
			if gauge {
				ih.CounterResetHint = histogram.GaugeType
			}
			if err := ih.Validate(); err != nil {
				return out, fmt.Errorf("native histogram: %w", err)
			}
			out = append(out, Sample{Labels: ls("", "", ""), H: ih})
		}
	}
	if native && len(h.GetBucket()) == 0 {
		return out, nil
	}
	count := float64(h.GetSampleCount())
	if h.GetSampleCountFloat() > 0 {
		count = h.GetSampleCountFloat()
	}
	sawInf := false
	for _, b := range h.GetBucket() {
		c := float64(b.GetCumulativeCount())
		if b.GetCumulativeCountFloat() > 0 {
			c = b.GetCumulativeCountFloat()
		}
		if math.IsInf(b.GetUpperBound(), 1) {
			sawInf = true
		}
		out = append(out, Sample{Labels: ls("_bucket", model.BucketLabel, labels.FormatOpenMetricsFloat(b.GetUpperBound())), V: c})
	}
	if !sawInf {
		out = append(out, Sample{Labels: ls("_bucket", model.BucketLabel, "+Inf"), V: count})
	}
	out = append(out,
		Sample{Labels: ls("_sum", "", ""), V: h.GetSampleSum()},
		Sample{Labels: ls("_count", "", ""), V: count},
	)
	return out, nil
}

// IsNative reports whether h carries a native histogram, by Prometheus'
// rule: it has spans, a zero threshold or a zero count. Client libraries add
// an empty span to a native histogram without observations.
func IsNative(h *dto.Histogram) bool {
	return len(h.GetPositiveSpan()) > 0 || len(h.GetNegativeSpan()) > 0 || h.GetZeroThreshold() > 0 || h.GetZeroCount() > 0
}

func spans(in []*dto.BucketSpan) []histogram.Span {
	if len(in) == 0 {
		return nil
	}
	out := make([]histogram.Span, len(in))
	for i, s := range in {
		out[i] = histogram.Span{Offset: s.GetOffset(), Length: s.GetLength()}
	}
	return out
}

// Histogram converts the native part of h to an integer histogram, as
// Prometheus stores it. Bucket counts stay delta-encoded, as in h.
func Histogram(h *dto.Histogram) *histogram.Histogram {
	return &histogram.Histogram{
		Schema:          h.GetSchema(),
		ZeroThreshold:   h.GetZeroThreshold(),
		ZeroCount:       h.GetZeroCount(),
		Count:           h.GetSampleCount(),
		Sum:             h.GetSampleSum(),
		PositiveSpans:   spans(h.GetPositiveSpan()),
		NegativeSpans:   spans(h.GetNegativeSpan()),
		PositiveBuckets: append([]int64(nil), h.GetPositiveDelta()...),
		NegativeBuckets: append([]int64(nil), h.GetNegativeDelta()...),
	}
}

// FloatHistogram converts the native part of h to a float histogram; it
// reads the float counts if h has them and the integer deltas otherwise.
func FloatHistogram(h *dto.Histogram) *histogram.FloatHistogram {
	if len(h.GetPositiveCount()) == 0 && len(h.GetNegativeCount()) == 0 && h.GetSampleCountFloat() == 0 && h.GetZeroCountFloat() == 0 {
		return Histogram(h).ToFloat(nil)
	}
	return &histogram.FloatHistogram{
		Schema:          h.GetSchema(),
		ZeroThreshold:   h.GetZeroThreshold(),
		ZeroCount:       h.GetZeroCountFloat(),
		Count:           h.GetSampleCountFloat(),
		Sum:             h.GetSampleSum(),
		PositiveSpans:   spans(h.GetPositiveSpan()),
		NegativeSpans:   spans(h.GetNegativeSpan()),
		PositiveBuckets: append([]float64(nil), h.GetPositiveCount()...),
		NegativeBuckets: append([]float64(nil), h.GetNegativeCount()...),
	}
}
