// Package promembed runs a Prometheus time-series database and PromQL engine
// inside the process.
//
// It is the stand-in for a Prometheus server in tests, in the scenario
// simulator and in the demo: samples (floats, native histograms, staleness
// markers) are written with explicit timestamps, so virtual time works, and
// are queried through Query and QueryRange, which have the same signatures and
// the same result types (github.com/prometheus/common/model values and
// warnings) as the HTTP API client used against a real server. Code written
// against that small querying interface runs unchanged on both.
//
// The storage is Prometheus' own TSDB (github.com/prometheus/prometheus/tsdb)
// and queries run on Prometheus' own engine (promql.Engine), so lookback,
// staleness markers, counter resets, extrapolation in rate/increase, classic
// and native histogram functions all behave exactly as in a Prometheus server
// of the same version. Native histograms need no switch: TSDB always stores
// them.
package promembed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
)

// Defaults applied by Open to zero Options fields.
const (
	DefaultLookbackDelta = 5 * time.Minute
	DefaultQueryTimeout  = 2 * time.Minute
	DefaultMaxSamples    = 50_000_000
	DefaultBlockDuration = 24 * time.Hour
)

// Options configures an embedded database. The zero value is usable.
type Options struct {
	// Dir is the TSDB directory. Empty means a fresh temporary directory
	// that Close removes.
	Dir string
	// LookbackDelta is how far back an instant selector looks for the last
	// sample of a series (Prometheus' --query.lookback-delta). Default 5m.
	LookbackDelta time.Duration
	// QueryTimeout bounds each query evaluation. Default 2m.
	QueryTimeout time.Duration
	// MaxSamples bounds the samples one query may hold in memory.
	// Default 50,000,000.
	MaxSamples int
	// BlockDuration is the time range of the in-memory head before it is
	// compacted to disk. Writers must append within the head's range, so a
	// simulator that writes hours of virtual time at once keeps the default
	// of 24h.
	BlockDuration time.Duration
	// OutOfOrderTimeWindow accepts samples that many time units older than
	// the newest sample of their series. Zero rejects out-of-order samples,
	// as Prometheus does by default.
	OutOfOrderTimeWindow time.Duration
	// EnableExperimentalFunctions enables PromQL functions marked
	// experimental (Prometheus' --enable-feature=promql-experimental-functions).
	EnableExperimentalFunctions bool
	// Logger receives TSDB and engine logs. Default: discarded.
	Logger *slog.Logger
}

// DB is an embedded Prometheus: a TSDB and a PromQL engine over it.
// It is safe for concurrent use.
type DB struct {
	tsdb    *tsdb.DB
	engine  *promql.Engine
	dir     string
	tempDir bool
	opts    promql.QueryOpts
}

// Open creates (or reopens) the database described by opts.
func Open(opts Options) (*DB, error) {
	if opts.LookbackDelta < 0 || opts.QueryTimeout < 0 || opts.MaxSamples < 0 ||
		opts.BlockDuration < 0 || opts.OutOfOrderTimeWindow < 0 {
		return nil, errors.New("promembed options: durations and limits must not be negative")
	}
	if opts.LookbackDelta == 0 {
		opts.LookbackDelta = DefaultLookbackDelta
	}
	if opts.QueryTimeout == 0 {
		opts.QueryTimeout = DefaultQueryTimeout
	}
	if opts.MaxSamples == 0 {
		opts.MaxSamples = DefaultMaxSamples
	}
	if opts.BlockDuration == 0 {
		opts.BlockDuration = DefaultBlockDuration
	}
	if opts.Logger == nil {
		opts.Logger = promslog.NewNopLogger()
	}

	dir, temp := opts.Dir, false
	if dir == "" {
		d, err := os.MkdirTemp("", "promembed-")
		if err != nil {
			return nil, fmt.Errorf("create tsdb directory: %w", err)
		}
		dir, temp = d, true
	}

	topts := tsdb.DefaultOptions()
	topts.MinBlockDuration = opts.BlockDuration.Milliseconds()
	topts.MaxBlockDuration = opts.BlockDuration.Milliseconds()
	topts.RetentionDuration = 0
	topts.OutOfOrderTimeWindow = opts.OutOfOrderTimeWindow.Milliseconds()
	if temp {
		// The data is disposable: no write-ahead log, no lock file.
		topts.WALSegmentSize = -1
		topts.NoLockfile = true
	}
	db, err := tsdb.Open(dir, opts.Logger, nil, topts, tsdb.NewDBStats())
	if err != nil {
		if temp {
			_ = os.RemoveAll(dir)
		}
		return nil, fmt.Errorf("open tsdb in %s: %w", dir, err)
	}

	engine := promql.NewEngine(promql.EngineOpts{
		Logger:               opts.Logger,
		MaxSamples:           opts.MaxSamples,
		Timeout:              opts.QueryTimeout,
		LookbackDelta:        opts.LookbackDelta,
		EnableAtModifier:     true,
		EnableNegativeOffset: true,
		// Prometheus' default for subqueries without a step is the global
		// evaluation interval (1m).
		NoStepSubqueryIntervalFn: func(int64) int64 { return time.Minute.Milliseconds() },
		Parser: parser.NewParser(parser.Options{
			EnableExperimentalFunctions: opts.EnableExperimentalFunctions,
		}),
	})
	return &DB{
		tsdb:    db,
		engine:  engine,
		dir:     dir,
		tempDir: temp,
		opts:    promql.NewPrometheusQueryOpts(false, opts.LookbackDelta, nil),
	}, nil
}

// Close closes the database and removes its directory when Open created it.
func (db *DB) Close() error {
	err := db.tsdb.Close()
	if db.tempDir {
		if rerr := os.RemoveAll(db.dir); rerr != nil && err == nil {
			err = fmt.Errorf("remove tsdb directory: %w", rerr)
		}
	}
	return err
}

// Storage returns the underlying storage, for callers that need Prometheus'
// own interfaces (for example a rules manager).
func (db *DB) Storage() storage.Storage { return db.tsdb }

// Appender starts a write transaction. Samples become visible to queries on
// Commit. An Appender is not safe for concurrent use; open one per goroutine.
func (db *DB) Appender(ctx context.Context) *Appender {
	return &Appender{app: db.tsdb.AppenderV2(ctx)}
}

// Query evaluates an instant query at ts.
func (db *DB) Query(ctx context.Context, q string, ts time.Time) (model.Value, v1.Warnings, error) {
	qry, err := db.engine.NewInstantQuery(ctx, db.tsdb, db.opts, q, ts)
	if err != nil {
		return nil, nil, fmt.Errorf("parse query %q: %w", q, err)
	}
	defer qry.Close()
	return convertResult(qry.Exec(ctx), q)
}

// QueryRange evaluates a range query over r.
func (db *DB) QueryRange(ctx context.Context, q string, r v1.Range) (model.Value, v1.Warnings, error) {
	if r.Step <= 0 {
		return nil, nil, errors.New("query range: step must be positive")
	}
	if r.End.Before(r.Start) {
		return nil, nil, errors.New("query range: end is before start")
	}
	qry, err := db.engine.NewRangeQuery(ctx, db.tsdb, db.opts, q, r.Start, r.End, r.Step)
	if err != nil {
		return nil, nil, fmt.Errorf("parse query %q: %w", q, err)
	}
	defer qry.Close()
	return convertResult(qry.Exec(ctx), q)
}

// Appender writes samples in one transaction.
type Appender struct {
	app storage.AppenderV2
}

// Append adds a float sample.
func (a *Appender) Append(ls labels.Labels, t time.Time, v float64) error {
	if _, err := a.app.Append(0, ls, 0, t.UnixMilli(), v, nil, nil, storage.AOptions{}); err != nil {
		return fmt.Errorf("append %s: %w", ls, err)
	}
	return nil
}

// AppendHistogram adds an integer native histogram sample.
func (a *Appender) AppendHistogram(ls labels.Labels, t time.Time, h *histogram.Histogram) error {
	if h == nil {
		return fmt.Errorf("append %s: nil histogram", ls)
	}
	if _, err := a.app.Append(0, ls, 0, t.UnixMilli(), 0, h, nil, storage.AOptions{}); err != nil {
		return fmt.Errorf("append histogram %s: %w", ls, err)
	}
	return nil
}

// AppendFloatHistogram adds a float native histogram sample.
func (a *Appender) AppendFloatHistogram(ls labels.Labels, t time.Time, fh *histogram.FloatHistogram) error {
	if fh == nil {
		return fmt.Errorf("append %s: nil histogram", ls)
	}
	if _, err := a.app.Append(0, ls, 0, t.UnixMilli(), 0, nil, fh, storage.AOptions{}); err != nil {
		return fmt.Errorf("append histogram %s: %w", ls, err)
	}
	return nil
}

// AppendStale writes a staleness marker, as a Prometheus scrape does when a
// series disappears from a target or the target goes away: from t on,
// instant selectors no longer return the series.
func (a *Appender) AppendStale(ls labels.Labels, t time.Time) error {
	return a.Append(ls, t, math.Float64frombits(value.StaleNaN))
}

// Commit makes the appended samples visible. The Appender must not be used
// afterwards.
func (a *Appender) Commit() error {
	if err := a.app.Commit(); err != nil {
		return fmt.Errorf("commit samples: %w", err)
	}
	return nil
}

// Rollback discards the appended samples. The Appender must not be used
// afterwards.
func (a *Appender) Rollback() error {
	if err := a.app.Rollback(); err != nil {
		return fmt.Errorf("roll back samples: %w", err)
	}
	return nil
}

func convertResult(res *promql.Result, q string) (model.Value, v1.Warnings, error) {
	warnings, _ := res.Warnings.AsStrings(q, 0, 0)
	var w v1.Warnings
	if len(warnings) > 0 {
		w = v1.Warnings(warnings)
	}
	if res.Err != nil {
		return nil, w, fmt.Errorf("execute query %q: %w", q, res.Err)
	}
	switch v := res.Value.(type) {
	case promql.Vector:
		out := make(model.Vector, 0, len(v))
		for _, s := range v {
			ms := &model.Sample{
				Metric:    metric(s.Metric),
				Timestamp: model.Time(s.T),
				Value:     model.SampleValue(s.F),
			}
			if s.H != nil {
				ms.Histogram = sampleHistogram(s.H)
				ms.Value = 0
			}
			out = append(out, ms)
		}
		return out, w, nil
	case promql.Matrix:
		out := make(model.Matrix, 0, len(v))
		for _, s := range v {
			ss := &model.SampleStream{Metric: metric(s.Metric)}
			if len(s.Floats) > 0 {
				ss.Values = make([]model.SamplePair, len(s.Floats))
				for i, p := range s.Floats {
					ss.Values[i] = model.SamplePair{Timestamp: model.Time(p.T), Value: model.SampleValue(p.F)}
				}
			}
			if len(s.Histograms) > 0 {
				ss.Histograms = make([]model.SampleHistogramPair, len(s.Histograms))
				for i, p := range s.Histograms {
					ss.Histograms[i] = model.SampleHistogramPair{Timestamp: model.Time(p.T), Histogram: sampleHistogram(p.H)}
				}
			}
			out = append(out, ss)
		}
		return out, w, nil
	case promql.Scalar:
		return &model.Scalar{Timestamp: model.Time(v.T), Value: model.SampleValue(v.V)}, w, nil
	case promql.String:
		return &model.String{Timestamp: model.Time(v.T), Value: v.V}, w, nil
	default:
		return nil, w, fmt.Errorf("execute query %q: unexpected result type %T", q, res.Value)
	}
}

func metric(ls labels.Labels) model.Metric {
	m := make(model.Metric, ls.Len())
	ls.Range(func(l labels.Label) {
		m[model.LabelName(l.Name)] = model.LabelValue(l.Value)
	})
	return m
}

// sampleHistogram converts a native histogram the way Prometheus' HTTP API
// encodes it: count, sum and the non-empty buckets with their boundaries.
func sampleHistogram(h *histogram.FloatHistogram) *model.SampleHistogram {
	out := &model.SampleHistogram{
		Count: model.FloatString(h.Count),
		Sum:   model.FloatString(h.Sum),
	}
	it := h.AllBucketIterator()
	for it.Next() {
		b := it.At()
		if b.Count == 0 {
			continue
		}
		var boundaries int32
		switch {
		case b.LowerInclusive && b.UpperInclusive:
			boundaries = 3
		case b.LowerInclusive:
			boundaries = 1
		case b.UpperInclusive:
			boundaries = 0
		default:
			boundaries = 2
		}
		out.Buckets = append(out.Buckets, &model.HistogramBucket{
			Boundaries: boundaries,
			Lower:      model.FloatString(b.Lower),
			Upper:      model.FloatString(b.Upper),
			Count:      model.FloatString(b.Count),
		})
	}
	return out
}
