package promembed

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
)

var t0 = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)

func open(t *testing.T, opts Options) *DB {
	t.Helper()
	db, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return db
}

// writeCounter appends a counter growing by perStep every 15s over [from, to).
func writeCounter(t *testing.T, db *DB, ls labels.Labels, from, to time.Time, perStep float64) {
	t.Helper()
	app := db.Appender(context.Background())
	v := 0.0
	for ts := from; ts.Before(to); ts = ts.Add(15 * time.Second) {
		if err := app.Append(ls, ts, v); err != nil {
			t.Fatal(err)
		}
		v += perStep
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
}

func TestQueryInstantAndRange(t *testing.T) {
	db := open(t, Options{})
	writeCounter(t, db, labels.FromStrings("__name__", "req_total", "job", "a"), t0, t0.Add(time.Hour), 15)
	writeCounter(t, db, labels.FromStrings("__name__", "req_total", "job", "b"), t0, t0.Add(time.Hour), 30)
	ctx := context.Background()

	v, w, err := db.Query(ctx, `sum by (job) (rate(req_total[5m]))`, t0.Add(30*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if len(w) != 0 {
		t.Fatalf("warnings: %v", w)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		t.Fatalf("got %T, want model.Vector", v)
	}
	got := map[string]float64{}
	for _, s := range vec {
		got[string(s.Metric["job"])] = float64(s.Value)
	}
	if math.Abs(got["a"]-1) > 1e-9 || math.Abs(got["b"]-2) > 1e-9 {
		t.Fatalf("rates = %v, want a=1 b=2", got)
	}

	r := v1.Range{Start: t0.Add(10 * time.Minute), End: t0.Add(20 * time.Minute), Step: time.Minute}
	v, _, err = db.QueryRange(ctx, `sum(increase(req_total[1m]))`, r)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := v.(model.Matrix)
	if !ok || len(m) != 1 {
		t.Fatalf("got %T %v, want one stream", v, v)
	}
	if len(m[0].Values) != 11 {
		t.Fatalf("got %d points, want 11", len(m[0].Values))
	}
	for _, p := range m[0].Values {
		if math.Abs(float64(p.Value)-180) > 1e-6 {
			t.Fatalf("increase = %v at %v, want 180", p.Value, p.Timestamp)
		}
	}
	if !m[0].Values[0].Timestamp.Time().Equal(r.Start) {
		t.Fatalf("first point at %v, want %v", m[0].Values[0].Timestamp.Time(), r.Start)
	}

	v, _, err = db.Query(ctx, `scalar(sum(req_total))`, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := v.(*model.Scalar); !ok {
		t.Fatalf("got %T, want *model.Scalar", v)
	}
}

func TestStalenessAndLookback(t *testing.T) {
	db := open(t, Options{LookbackDelta: 2 * time.Minute})
	ctx := context.Background()
	gone := labels.FromStrings("__name__", "up", "instance", "gone")
	quiet := labels.FromStrings("__name__", "up", "instance", "quiet")
	app := db.Appender(ctx)
	for _, ls := range []labels.Labels{gone, quiet} {
		if err := app.Append(ls, t0, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := app.AppendStale(gone, t0.Add(15*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}

	count := func(at time.Time) int {
		v, _, err := db.Query(ctx, `up`, at)
		if err != nil {
			t.Fatal(err)
		}
		return len(v.(model.Vector))
	}
	if n := count(t0.Add(10 * time.Second)); n != 2 {
		t.Errorf("before the stale marker: %d series, want 2", n)
	}
	if n := count(t0.Add(30 * time.Second)); n != 1 {
		t.Errorf("after the stale marker: %d series, want 1", n)
	}
	if n := count(t0.Add(3 * time.Minute)); n != 0 {
		t.Errorf("after the lookback delta: %d series, want 0", n)
	}
}

func TestNativeHistogram(t *testing.T) {
	db := open(t, Options{})
	ctx := context.Background()
	ls := labels.FromStrings("__name__", "lat_seconds", "job", "a")
	app := db.Appender(ctx)
	// Schema 0: bucket i covers (2^(i-1), 2^i]. 90 observations in (0.5,1],
	// 10 in (1,2] per scrape.
	for i := 0; i <= 40; i++ {
		n := uint64(i)
		h := &histogram.Histogram{
			Schema:          0,
			Count:           100 * n,
			Sum:             100 * float64(n),
			PositiveSpans:   []histogram.Span{{Offset: 0, Length: 2}},
			PositiveBuckets: []int64{int64(90 * n), int64(10*n) - int64(90*n)},
		}
		if err := app.AppendHistogram(ls, t0.Add(time.Duration(i)*15*time.Second), h); err != nil {
			t.Fatal(err)
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	at := t0.Add(10 * time.Minute)

	v, _, err := db.Query(ctx, `histogram_fraction(1, +Inf, sum(increase(lat_seconds[5m])))`, at)
	if err != nil {
		t.Fatal(err)
	}
	if got := float64(v.(model.Vector)[0].Value); math.Abs(got-0.1) > 1e-9 {
		t.Errorf("fraction above 1s = %v, want 0.1", got)
	}
	v, _, err = db.Query(ctx, `histogram_count(sum(increase(lat_seconds[5m])))`, at)
	if err != nil {
		t.Fatal(err)
	}
	if got := float64(v.(model.Vector)[0].Value); math.Abs(got-2000) > 1e-6 {
		t.Errorf("count = %v, want 2000", got)
	}

	v, _, err = db.Query(ctx, `lat_seconds`, at)
	if err != nil {
		t.Fatal(err)
	}
	s := v.(model.Vector)[0]
	if s.Histogram == nil {
		t.Fatal("raw selector returned no histogram")
	}
	if s.Histogram.Count != 4000 || len(s.Histogram.Buckets) != 2 {
		t.Fatalf("histogram = %v, want count 4000 and 2 buckets", s.Histogram)
	}
	b := s.Histogram.Buckets[1]
	if b.Boundaries != 0 || b.Lower != 1 || b.Upper != 2 || b.Count != 400 {
		t.Errorf("bucket = %+v, want left-open (1,2] with 400", b)
	}

	v, _, err = db.QueryRange(ctx, `sum(increase(lat_seconds[1m]))`, v1.Range{Start: at.Add(-2 * time.Minute), End: at, Step: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	m := v.(model.Matrix)
	if len(m) != 1 || len(m[0].Histograms) != 3 || len(m[0].Values) != 0 {
		t.Fatalf("range result = %v, want 3 histogram points", m)
	}
}

func TestWarningsAndErrors(t *testing.T) {
	db := open(t, Options{})
	ctx := context.Background()
	app := db.Appender(ctx)
	if err := app.Append(labels.FromStrings("__name__", "bad_bucket", "le", "x"), t0, 1); err != nil {
		t.Fatal(err)
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	_, w, err := db.Query(ctx, `histogram_quantile(0.9, bad_bucket)`, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(w) == 0 || !strings.Contains(strings.Join(w, " "), "le") {
		t.Errorf("warnings = %v, want one about the le label", w)
	}

	if _, _, err := db.Query(ctx, `sum(`, t0); err == nil {
		t.Error("parse error not reported")
	}
	if _, _, err := db.QueryRange(ctx, `up`, v1.Range{Start: t0, End: t0.Add(time.Minute)}); err == nil {
		t.Error("zero step accepted")
	}
	if _, _, err := db.QueryRange(ctx, `up`, v1.Range{Start: t0, End: t0.Add(-time.Minute), Step: time.Second}); err == nil {
		t.Error("end before start accepted")
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := db.Query(canceled, `up`, t0); err == nil {
		t.Error("canceled context not reported")
	}
}

func TestAppendErrors(t *testing.T) {
	db := open(t, Options{})
	ctx := context.Background()
	ls := labels.FromStrings("__name__", "x")
	app := db.Appender(ctx)
	if err := app.Append(ls, t0, 1); err != nil {
		t.Fatal(err)
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	app = db.Appender(ctx)
	if err := app.Append(ls, t0.Add(-time.Minute), 1); err == nil {
		t.Error("out-of-order sample accepted")
	}
	if err := app.AppendHistogram(ls, t0, nil); err == nil {
		t.Error("nil histogram accepted")
	}
	if err := app.AppendFloatHistogram(ls, t0, nil); err == nil {
		t.Error("nil float histogram accepted")
	}
	if err := app.Rollback(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{LookbackDelta: -1}); err == nil {
		t.Error("negative lookback accepted")
	}
}

func TestPersistentDir(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	writeCounter(t, db, labels.FromStrings("__name__", "c"), t0, t0.Add(time.Minute), 1)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, Options{Dir: dir})
	v, _, err := db.Query(context.Background(), `c`, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if len(v.(model.Vector)) != 1 {
		t.Fatalf("reopened database lost its samples: %v", v)
	}
}
