package detector

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tailguard/tailguard/detector/changes"
	"github.com/tailguard/tailguard/detector/stats"
	"github.com/tailguard/tailguard/querycost"
)

// ChangeSource lists the changes in a time range. changes.Multi, built from
// configuration by NewChangeSource, implements it.
type ChangeSource interface {
	Changes(ctx context.Context, from, to time.Time) ([]changes.Event, error)
}

// Detector analyses a service's signals around its changes.
type Detector struct {
	cfg     Config
	q       Querier
	src     ChangeSource
	signals []*compiledSignal
	now     func() time.Time
	// slots bounds the queries in flight (Config.QueryConcurrency).
	slots chan struct{}
}

// New validates cfg and returns a Detector querying q for signals and src
// for changes (src may be nil: no candidate causes).
func New(cfg Config, q Querier, src ChangeSource) (*Detector, error) {
	if q == nil {
		return nil, errors.New("detector: querier is nil")
	}
	cfg.Signals = append([]SignalConfig(nil), cfg.Signals...)
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("detector config: %w", err)
	}
	d := &Detector{cfg: cfg, q: q, src: src, now: time.Now, slots: make(chan struct{}, cfg.QueryConcurrency)}
	for _, s := range cfg.Signals {
		tpls, err := s.templates()
		if err != nil {
			return nil, fmt.Errorf("signal %s: %w", s.Name, err)
		}
		me := s.MinEffect
		if me == 0 {
			me = cfg.Detection.MinEffect
		}
		d.signals = append(d.signals, &compiledSignal{cfg: s, tpls: tpls, minEffect: me, poisson: s.Kind == KindRetryRatio})
	}
	return d, nil
}

// Config returns the validated configuration, defaults applied.
func (d *Detector) Config() Config { return d.cfg }

// NewChangeSource builds the change sources the configuration declares:
// build info metrics (queried through q), the flag journal and manifests.
func NewChangeSource(cfg Config, q Querier) (ChangeSource, error) {
	return NewChangeSourceReading(cfg, q, "", nil)
}

// NewChangeSourceReading is NewChangeSource with the flag journal read by
// readJournal (named name) instead of from changes.flag_journal: for a flag
// store that keeps its journal outside the file system.
func NewChangeSourceReading(cfg Config, q Querier, name string, readJournal func(context.Context) ([]byte, error)) (ChangeSource, error) {
	sources := map[string]changes.Source{}
	if len(cfg.Changes.BuildInfo) > 0 {
		if q == nil {
			return nil, errors.New("change source: build_info needs a querier")
		}
		b, err := changes.NewBuildInfoSource(q, time.Duration(cfg.Step), cfg.Changes.BuildInfo...)
		if err != nil {
			return nil, fmt.Errorf("changes.%w", err)
		}
		sources["build_info"] = b
	}
	if readJournal != nil {
		j, err := changes.NewJournalReaderSource(name, readJournal, cfg.Changes.Flags)
		if err != nil {
			return nil, err
		}
		sources["flag journal"] = j
	} else if cfg.Changes.FlagJournal != "" {
		j, err := changes.NewJournalSource(cfg.Changes.FlagJournal, cfg.Changes.Flags)
		if err != nil {
			return nil, err
		}
		sources["flag journal"] = j
	}
	for i, p := range cfg.Changes.Manifests {
		sources[fmt.Sprintf("manifest %d (%s)", i, p)] = changes.ManifestFile(p)
	}
	return changes.NewMulti(time.Duration(cfg.Changes.MergeWindow), sources), nil
}

// Request says what to analyse.
type Request struct {
	// From is the end of the baseline and the start of the monitored
	// window (usually the earliest change of interest). Required unless
	// Change is set.
	From time.Time
	// To is the end of the monitored window; zero means now.
	To time.Time
	// Change names a change (its ID, or a component or flag key: the latest
	// such change within the configured lookback); From becomes its time.
	Change string
}

// Analyze runs one analysis: it discovers the changes, queries every
// signal, tests every slice, ranks the candidate causes of each regression
// and groups regressions into incidents. Query failures are errors; data
// problems (NaN, gaps, warnings, too little traffic) are inconclusive
// findings.
func (d *Detector) Analyze(ctx context.Context, req Request) (*Report, error) {
	to := req.To
	if to.IsZero() {
		to = d.now()
	}
	from := req.From
	var evs []changes.Event
	step := time.Duration(d.cfg.Step)
	if req.Change != "" {
		all, err := d.changes(ctx, to.Add(-time.Duration(d.cfg.ChangeLookback)), to)
		if err != nil {
			return nil, err
		}
		ev, ok := findChange(all, req.Change)
		if !ok {
			return nil, fmt.Errorf("change %q not found between %s and %s", req.Change, fmtTime(to.Add(-time.Duration(d.cfg.ChangeLookback))), fmtTime(to))
		}
		if from.IsZero() {
			from = ev.Time
		}
		for _, e := range all {
			if !e.Time.Before(from.Add(-step)) {
				evs = append(evs, e)
			}
		}
	}
	if from.IsZero() {
		return nil, errors.New("request: from or change is required")
	}
	if !from.Before(to) {
		return nil, fmt.Errorf("request: from %s is not before to %s", fmtTime(from), fmtTime(to))
	}
	monSteps := int(to.Sub(from) / step)
	if monSteps < 1 {
		return nil, fmt.Errorf("request: window %s is shorter than one step (%s)", to.Sub(from), step)
	}
	baseSteps := int(time.Duration(d.cfg.Baseline) / step)
	g := grid{
		start:     from.Add(-time.Duration(baseSteps-1) * step),
		step:      step,
		baseSteps: baseSteps,
		monSteps:  monSteps,
		from:      from,
	}
	if req.Change == "" {
		// Look back by the merge window so a declaration made a little
		// before the observed change merges with it.
		all, err := d.changes(ctx, from.Add(-time.Duration(d.cfg.Changes.MergeWindow)), g.last())
		if err != nil {
			return nil, err
		}
		for _, e := range all {
			if !e.Time.Before(from.Add(-step)) {
				evs = append(evs, e)
			}
		}
	}

	// Signals are fetched side by side; the query slots bound the load.
	sds := make([]*signalData, len(d.signals))
	errs := make([]error, len(d.signals))
	var wg sync.WaitGroup
	for i, sig := range d.signals {
		wg.Go(func() { sds[i], errs[i] = d.fetch(ctx, sig, g) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}

	streams := 0
	for _, sd := range sds {
		streams += max(1, len(sd.streams))
	}
	h, arl0, err := stats.Threshold(d.cfg.Detection.FalseAlarmsPerHour, streams*cusumBank, step)
	if err != nil {
		return nil, fmt.Errorf("threshold: %w", err)
	}

	rep := &Report{
		Service:            d.cfg.Service,
		GeneratedAt:        d.now().UTC(),
		Baseline:           Window{Start: g.begin(0), End: from},
		Monitored:          Window{Start: from, End: g.last()},
		Step:               d.cfg.Step,
		Streams:            streams,
		Threshold:          h,
		FalseAlarmsPerHour: d.cfg.Detection.FalseAlarmsPerHour,
		Changes:            evs,
	}
	if rep.Changes == nil {
		rep.Changes = []changes.Event{}
	}
	findings := make([]*Finding, 0, streams)
	minReqMax := 0.0
	for _, sd := range sds {
		minReq := float64(d.cfg.minRequests(sd.sig.cfg.Quantile))
		minReqMax = math.Max(minReqMax, minReq)
		p := detectParams{
			h: h, arl0: arl0,
			confidence:  d.cfg.Detection.Confidence,
			minRequests: minReq,
			maxGap:      d.cfg.Detection.MaxGapRatio,
			staleSteps:  max(1, int(math.Ceil(float64(d.cfg.Detection.StaleAfter)/float64(step)))),
		}
		sd.phi = signalDispersion(sd, g, minReq)
		findings = append(findings, d.signalFindings(sd, g, p)...)
	}
	a := newAttributor(&d.cfg, g, sds, findings, evs, minReqMax)
	a.attribute()

	sortFindings(findings)
	rep.Findings = make([]Finding, len(findings))
	for i, f := range findings {
		f.sig, f.stream = nil, nil
		rep.Findings[i] = *f
		switch f.Verdict {
		case Regressed:
			rep.Summary.Regressed++
		case Healthy:
			rep.Summary.Healthy++
		default:
			rep.Summary.Inconclusive++
		}
	}
	rep.Incidents = incidents(d.cfg.Service, rep.Findings, evs)
	return rep, nil
}

func (d *Detector) changes(ctx context.Context, from, to time.Time) ([]changes.Event, error) {
	if d.src == nil {
		return nil, nil
	}
	evs, err := d.src.Changes(querycost.WithSignal(ctx, "changes"), from, to)
	if err != nil {
		return nil, fmt.Errorf("discover changes: %w", err)
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Time.Before(evs[j].Time) })
	return evs, nil
}

// findChange matches an ID exactly, else the latest change of a component
// or flag key.
func findChange(evs []changes.Event, name string) (changes.Event, bool) {
	for _, e := range evs {
		if e.ID == name {
			return e, true
		}
	}
	var best changes.Event
	found := false
	for _, e := range evs {
		if e.Component == name && (!found || e.Time.After(best.Time)) {
			best, found = e, true
		}
	}
	return best, found
}

// signalFindings evaluates every slice of one signal.
func (d *Detector) signalFindings(sd *signalData, g grid, p detectParams) []*Finding {
	cfg := sd.sig.cfg
	base := func(labels map[string]string) *Finding {
		return &Finding{
			ID:        findingID(d.cfg.Service, cfg.Name, labels),
			Service:   d.cfg.Service,
			Signal:    cfg.Name,
			Kind:      cfg.Kind,
			Statistic: statistic(sd),
			Slice:     cloneLabels(labels),
			Baseline:  Window{Start: g.begin(0), End: g.from},
			Monitored: Window{Start: g.from, End: g.last()},
			Step:      d.cfg.Step,
			Queries:   sd.queries,
			Warnings:  sd.warnings,
			sig:       sd.sig,
		}
	}
	if sd.err != "" || len(sd.streams) == 0 {
		f := base(nil)
		f.inconclusive("%s", firstNonEmpty(sd.err, "no data: the queries returned no series"))
		return []*Finding{f}
	}
	out := make([]*Finding, 0, len(sd.streams))
	for _, s := range sd.streams {
		f := base(s.labels)
		f.stream = s
		if len(sd.warnings) > 0 {
			f.inconclusive("query warnings: %s", strings.Join(sd.warnings, "; "))
		} else {
			evaluate(f, s, sd, g, p)
		}
		if cfg.Kind == KindLatency {
			qs := &QuantileShift{Quantile: cfg.Quantile}
			if v, ok := sd.qBase[s.key]; ok {
				qs.Baseline = &v
			}
			if v, ok := sd.qCur[s.key]; ok {
				qs.Current = &v
			}
			f.Quantile = qs
		}
		out = append(out, f)
	}
	return out
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// verdictOrder sorts regressions first, then inconclusive, then healthy.
var verdictOrder = map[Verdict]int{Regressed: 0, Inconclusive: 1, Healthy: 2}

func sortFindings(fs []*Finding) {
	keys := make(map[*Finding]string, len(fs))
	for _, f := range fs {
		keys[f] = changes.FormatLabels(f.Slice)
	}
	slices.SortStableFunc(fs, func(a, b *Finding) int {
		return cmp.Or(cmp.Compare(verdictOrder[a.Verdict], verdictOrder[b.Verdict]), strings.Compare(a.Signal, b.Signal), strings.Compare(keys[a], keys[b]))
	})
}
