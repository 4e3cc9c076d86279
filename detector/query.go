package detector

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/detector/stats"
	"github.com/tailguard/tailguard/querycost"
)

// Querier runs PromQL. The Prometheus HTTP API client (package
// detector/promapi) and the embedded engine (package promembed) both
// implement it, so the detector runs unchanged against either.
type Querier interface {
	// Query evaluates an instant query at ts.
	Query(ctx context.Context, q string, ts time.Time) (model.Value, v1.Warnings, error)
	// QueryRange evaluates a range query.
	QueryRange(ctx context.Context, q string, r v1.Range) (model.Value, v1.Warnings, error)
}

// compiledSignal is a validated signal with parsed templates.
type compiledSignal struct {
	cfg       SignalConfig
	tpls      map[string]*template.Template
	minEffect float64
	poisson   bool
}

// stream holds one slice's per-step counts over baseline and monitored
// steps. Missing steps are NaN.
type stream struct {
	labels map[string]string
	key    string
	n, x   []float64
	nan    int // steps whose values were NaN or infinite
	// badEvents marks steps whose events value was NaN or infinite (nil
	// when none was): such a step is missing, not a step without events.
	badEvents []bool
}

func (s *stream) seenEvents(i int) bool { return s.badEvents != nil && s.badEvents[i] }

// grid is the time layout of an analysis: steps ending at
// start, start+step, ..., each covering (t-step, t].
type grid struct {
	start     time.Time // end of the first baseline step
	step      time.Duration
	baseSteps int
	monSteps  int
	from      time.Time // end of the baseline = start of monitoring
}

func (g grid) steps() int { return g.baseSteps + g.monSteps }

// end returns the end of step i.
func (g grid) end(i int) time.Time { return g.start.Add(time.Duration(i) * g.step) }

// begin returns the start of step i.
func (g grid) begin(i int) time.Time { return g.end(i).Add(-g.step) }

func (g grid) last() time.Time { return g.end(g.steps() - 1) }

func (g grid) rng() v1.Range { return v1.Range{Start: g.start, End: g.last(), Step: g.step} }

// index returns the step index of timestamp t, or -1.
func (g grid) index(t time.Time) int {
	d := t.Sub(g.start)
	i := int(math.Round(float64(d) / float64(g.step)))
	if i < 0 || i >= g.steps() || !g.end(i).Equal(t) {
		// Allow millisecond rounding from the wire.
		if i >= 0 && i < g.steps() && absDur(g.end(i).Sub(t)) < time.Millisecond {
			return i
		}
		return -1
	}
	return i
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// signalData is what was fetched for one signal.
type signalData struct {
	sig      *compiledSignal
	boundary string // latency: the boundary, as used in the queries
	streams  []*stream
	queries  []Query
	warnings []string
	// quantiles per slice key (latency evidence).
	qBase, qCur map[string]float64
	// err makes every slice of the signal inconclusive.
	err string
	// phi is the overdispersion pooled over the baselines of all slices.
	phi float64
}

// query runs one instant query with the configured timeout, recording it
// and its warnings in sd.
func (d *Detector) query(ctx context.Context, sd *signalData, q string, ts time.Time) (model.Value, error) {
	v, w, err := d.instant(ctx, q, ts)
	sd.record(Query{Expr: q, At: new(ts.UTC())}, w)
	return v, err
}

func (d *Detector) instant(ctx context.Context, q string, ts time.Time) (model.Value, v1.Warnings, error) {
	release, err := d.acquire(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("query %q: %w", q, err)
	}
	defer release()
	ctx, cancel := context.WithTimeout(ctx, time.Duration(d.cfg.QueryTimeout))
	defer cancel()
	v, w, err := d.q.Query(ctx, q, ts)
	if err != nil {
		return nil, w, fmt.Errorf("query %q: %w", q, err)
	}
	return v, w, nil
}

func (d *Detector) rangeQuery(ctx context.Context, q string, r v1.Range) (model.Matrix, v1.Warnings, error) {
	release, err := d.acquire(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("query %q: %w", q, err)
	}
	defer release()
	ctx, cancel := context.WithTimeout(ctx, time.Duration(d.cfg.QueryTimeout))
	defer cancel()
	v, w, err := d.q.QueryRange(ctx, q, r)
	if err != nil {
		return nil, w, fmt.Errorf("query %q: %w", q, err)
	}
	m, ok := v.(model.Matrix)
	if !ok {
		return nil, w, fmt.Errorf("query %q: got %s, want a range vector", q, typeName(v))
	}
	return m, w, nil
}

// acquire takes one of the analysis-wide query slots.
func (d *Detector) acquire(ctx context.Context) (func(), error) {
	select {
	case d.slots <- struct{}{}:
		return func() { <-d.slots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// rangePair runs two range queries side by side and records both, in
// order.
func (d *Detector) rangePair(ctx context.Context, sd *signalData, q1, q2 string, r v1.Range) (model.Matrix, model.Matrix, error) {
	var m [2]model.Matrix
	var w [2]v1.Warnings
	var errs [2]error
	var wg sync.WaitGroup
	for i, q := range [2]string{q1, q2} {
		wg.Go(func() { m[i], w[i], errs[i] = d.rangeQuery(ctx, q, r) })
	}
	wg.Wait()
	for i, q := range [2]string{q1, q2} {
		sd.record(Query{Expr: q, Range: &Window{Start: r.Start.UTC(), End: r.End.UTC()}, Step: model.Duration(r.Step)}, w[i])
	}
	if err := errors.Join(errs[0], errs[1]); err != nil {
		return nil, nil, err
	}
	return m[0], m[1], nil
}

func (sd *signalData) record(q Query, w v1.Warnings) {
	sd.queries = append(sd.queries, q)
	sd.warnings = append(sd.warnings, w...)
}

func typeName(v model.Value) string {
	if v == nil {
		return "nothing"
	}
	return v.Type().String()
}

// fetch runs the signal's queries over the grid. Query errors are returned
// (the analysis cannot go on blind); data problems are recorded in
// sd.err and turn into inconclusive findings.
func (d *Detector) fetch(ctx context.Context, sig *compiledSignal, g grid) (*signalData, error) {
	sd := &signalData{sig: sig}
	ctx = querycost.WithSignal(ctx, sig.cfg.Name)
	step := model.Duration(g.step).String()
	baseRange := model.Duration(time.Duration(g.baseSteps) * g.step).String()
	curRange := model.Duration(time.Duration(g.monSteps) * g.step).String()

	if sig.cfg.Kind == KindLatency {
		b, reason, err := d.boundary(ctx, sd, sig, g.from, baseRange)
		if err != nil {
			return nil, err
		}
		if reason != "" {
			sd.err = reason
			return sd, nil
		}
		sd.boundary = b
	}

	data, err := sig.cfg.templateData(step, sd.boundary)
	if err != nil {
		return nil, fmt.Errorf("signal %s: %w", sig.cfg.Name, err)
	}
	total, err := render(sig.tpls[qTotal], data)
	if err != nil {
		return nil, fmt.Errorf("signal %s: render total: %w", sig.cfg.Name, err)
	}
	events, err := render(sig.tpls[qEvents], data)
	if err != nil {
		return nil, fmt.Errorf("signal %s: render events: %w", sig.cfg.Name, err)
	}
	mt, me, err := d.rangePair(ctx, sd, total, events, g.rng())
	if err != nil {
		return nil, fmt.Errorf("signal %s: %w", sig.cfg.Name, err)
	}
	sd.streams = buildStreams(sig.cfg.By, g, mt, me, sig.cfg.Kind != KindLatency)

	if t, ok := sig.tpls[qQuantile]; ok {
		sd.qBase, sd.qCur, err = d.quantiles(ctx, sd, t, data, [2]string{baseRange, curRange}, [2]time.Time{g.from, g.last()})
		if err != nil {
			return nil, fmt.Errorf("signal %s: %w", sig.cfg.Name, err)
		}
	}
	return sd, nil
}

// boundary picks the latency boundary: for classic histograms the bucket
// bound whose baseline exceedance fraction over the whole signal is closest
// to 1−q (or the configured boundary, which must be a bucket bound); for native
// histograms the configured boundary or the baseline quantile, rounded up
// to 3 significant digits. A non-empty reason means no usable boundary.
func (d *Detector) boundary(ctx context.Context, sd *signalData, sig *compiledSignal, at time.Time, baseRange string) (string, string, error) {
	data, err := sig.cfg.templateData(baseRange, "")
	if err != nil {
		return "", "", err
	}
	q := sig.cfg.Quantile
	if sig.cfg.Histogram == HistogramNative {
		if sig.cfg.Boundary > 0 {
			return formatFloat(sig.cfg.Boundary), "", nil
		}
		query, err := render(sig.tpls[qBoundary], data)
		if err != nil {
			return "", "", fmt.Errorf("signal %s: render boundary: %w", sig.cfg.Name, err)
		}
		v, err := d.query(ctx, sd, query, at)
		if err != nil {
			return "", "", fmt.Errorf("signal %s: %w", sig.cfg.Name, err)
		}
		vec, ok := v.(model.Vector)
		if !ok {
			return "", "", fmt.Errorf("signal %s: query %q: got %s, want an instant vector", sig.cfg.Name, query, typeName(v))
		}
		if len(vec) == 0 {
			return "", "no baseline data: the boundary query returned nothing", nil
		}
		b := float64(vec[0].Value)
		if math.IsNaN(b) || math.IsInf(b, 0) || b <= 0 {
			return "", fmt.Sprintf("baseline p%s is %v: no usable latency boundary", quantileName(q), b), nil
		}
		return formatFloat(roundUp3(b)), "", nil
	}

	query, err := render(sig.tpls[qBuckets], data)
	if err != nil {
		return "", "", fmt.Errorf("signal %s: render buckets: %w", sig.cfg.Name, err)
	}
	v, err := d.query(ctx, sd, query, at)
	if err != nil {
		return "", "", fmt.Errorf("signal %s: %w", sig.cfg.Name, err)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return "", "", fmt.Errorf("signal %s: query %q: got %s, want an instant vector", sig.cfg.Name, query, typeName(v))
	}
	type le struct {
		raw   string
		bound float64
		count float64
	}
	var les []le
	for _, s := range vec {
		raw := string(s.Metric["le"])
		b, err := strconv.ParseFloat(raw, 64)
		if err != nil || math.IsNaN(b) {
			return "", fmt.Sprintf("bucket label le=%q is not a number", raw), nil
		}
		les = append(les, le{raw: raw, bound: b, count: float64(s.Value)})
	}
	if len(les) == 0 {
		return "", "no baseline data: the buckets query returned nothing", nil
	}
	slices.SortFunc(les, func(a, b le) int {
		switch {
		case a.bound < b.bound:
			return -1
		case a.bound > b.bound:
			return 1
		}
		return 0
	})
	if sig.cfg.Boundary > 0 {
		for _, l := range les {
			if l.bound == sig.cfg.Boundary {
				return l.raw, "", nil
			}
		}
		return "", "", fmt.Errorf("signal %s: boundary %v is not a bucket bound of %s", sig.cfg.Name, sig.cfg.Boundary, sig.cfg.Metric)
	}
	bs := make([]stats.Bucket, len(les))
	for i, l := range les {
		bs[i] = stats.Bucket{UpperBound: l.bound, Count: l.count}
	}
	if pq := stats.BucketQuantile(q, bs); math.IsNaN(pq) {
		return "", fmt.Sprintf("baseline p%s is NaN: no requests in the baseline, or no +Inf bucket", quantileName(q)), nil
	}
	// The bound whose baseline exceedance fraction is closest to 1−q on a
	// log scale: near the quantile, so the count is a tail statistic, yet
	// with enough exceedances to have power. Coarse buckets make the
	// nearest bound above the quantile useless (a bound at 2× p99 may see
	// a handful of requests an hour).
	total := les[len(les)-1].count
	best, bestDist := "", math.Inf(1)
	for _, l := range les {
		if math.IsInf(l.bound, 1) {
			continue
		}
		frac := (total - l.count) / total
		if !(frac > 0) {
			continue
		}
		if dist := math.Abs(math.Log(frac / (1 - q))); dist <= bestDist {
			best, bestDist = l.raw, dist
		}
	}
	if best == "" {
		return "", fmt.Sprintf("no bucket bound below the baseline maximum: the p%s lies above the highest finite bucket bound", quantileName(q)), nil
	}
	return best, "", nil
}

// roundUp3 rounds v > 0 up to three significant digits.
func roundUp3(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v))-2)
	r := math.Ceil(v/p-1e-9) * p
	// Clean the binary noise: 0.30000000000000004 → 0.3.
	out, err := strconv.ParseFloat(strconv.FormatFloat(r, 'g', 3, 64), 64)
	if err != nil {
		return r
	}
	return out
}

func quantileName(q float64) string {
	return strings.TrimPrefix(formatFloat(q*100), "0")
}

// quantiles runs the quantile template over two ranges ending at two
// times, side by side, and returns the finite values per slice key.
func (d *Detector) quantiles(ctx context.Context, sd *signalData, t *template.Template, data TemplateData, rng [2]string, ts [2]time.Time) (map[string]float64, map[string]float64, error) {
	var qs [2]string
	for i := range qs {
		data.Range = rng[i]
		q, err := render(t, data)
		if err != nil {
			return nil, nil, fmt.Errorf("render quantile: %w", err)
		}
		qs[i] = q
	}
	var v [2]model.Value
	var w [2]v1.Warnings
	var errs [2]error
	var wg sync.WaitGroup
	for i := range qs {
		wg.Go(func() { v[i], w[i], errs[i] = d.instant(ctx, qs[i], ts[i]) })
	}
	wg.Wait()
	var out [2]map[string]float64
	for i := range qs {
		sd.record(Query{Expr: qs[i], At: new(ts[i].UTC())}, w[i])
	}
	for i := range qs {
		if errs[i] != nil {
			return nil, nil, errs[i]
		}
		vec, ok := v[i].(model.Vector)
		if !ok {
			return nil, nil, fmt.Errorf("query %q: got %s, want an instant vector", qs[i], typeName(v[i]))
		}
		out[i] = make(map[string]float64, len(vec))
		for _, s := range vec {
			f := float64(s.Value)
			if math.IsNaN(f) || math.IsInf(f, 0) {
				continue
			}
			out[i][sliceKey(sd.sig.cfg.By, s.Metric)] = f
		}
	}
	return out[0], out[1], nil
}

// sliceKey identifies a slice by its By label values.
func sliceKey(by []string, m model.Metric) string {
	var b strings.Builder
	for _, l := range by {
		b.WriteString(string(m[model.LabelName(l)]))
		b.WriteByte(0xff)
	}
	return b.String()
}

// buildStreams aligns the total and events matrices on the grid. With
// zeroEvents, a step with a total but no events counts 0 events (an absent
// retries or errors counter has counted none).
func buildStreams(by []string, g grid, total, events model.Matrix, zeroEvents bool) []*stream {
	idx := make(map[string]*stream, len(total))
	out := make([]*stream, 0, len(total))
	// The per-step values of every slice share one allocation, sized for
	// the slices the totals name; slices only the events name get their own.
	steps := g.steps()
	block := nanSlice(2 * steps * len(total))
	get := func(m model.Metric) *stream {
		k := sliceKey(by, m)
		if s, ok := idx[k]; ok {
			return s
		}
		var n, x []float64
		if len(block) >= 2*steps {
			n, x, block = block[:steps:steps], block[steps:2*steps:2*steps], block[2*steps:]
		} else {
			n, x = nanSlice(steps), nanSlice(steps)
		}
		s := &stream{key: k, labels: make(map[string]string, len(by)), n: n, x: x}
		for _, l := range by {
			s.labels[l] = string(m[model.LabelName(l)])
		}
		idx[k] = s
		out = append(out, s)
		return s
	}
	fill := func(m model.Matrix, isTotal bool) {
		for _, ss := range m {
			s := get(ss.Metric)
			dst := s.x
			if isTotal {
				dst = s.n
			}
			for _, p := range ss.Values {
				i := g.index(p.Timestamp.Time())
				if i < 0 {
					continue
				}
				v := float64(p.Value)
				if math.IsNaN(v) || math.IsInf(v, 0) {
					s.nan++
					if !isTotal {
						if s.badEvents == nil {
							s.badEvents = make([]bool, g.steps())
						}
						s.badEvents[i] = true
					}
					continue
				}
				if !math.IsNaN(dst[i]) {
					// Two series mapped to one slice: the query did not
					// aggregate by the slice labels. Add them up.
					v += dst[i]
				}
				dst[i] = v
			}
			if len(ss.Histograms) > 0 {
				// A histogram where a count was expected: leave the steps
				// missing; the slice turns inconclusive.
				s.nan += len(ss.Histograms)
			}
		}
	}
	fill(total, true)
	fill(events, false)
	for _, s := range out {
		for i := range s.n {
			n, x := s.n[i], s.x[i]
			if zeroEvents && !math.IsNaN(n) && math.IsNaN(x) && !s.seenEvents(i) {
				x = 0
			}
			if math.IsNaN(n) || math.IsNaN(x) {
				s.n[i], s.x[i] = math.NaN(), math.NaN()
				continue
			}
			// increase() extrapolates; keep 0 ≤ x ≤ n (binomial) and n ≥ 0.
			s.n[i] = math.Max(0, n)
			s.x[i] = math.Max(0, x)
		}
	}
	slices.SortFunc(out, func(a, b *stream) int { return strings.Compare(a.key, b.key) })
	return out
}

func nanSlice(n int) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = math.NaN()
	}
	return s
}
