package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/tailguard/tailguard/backoff"
	"github.com/tailguard/tailguard/backoff/flagbind"
	"github.com/tailguard/tailguard/controller"
	"github.com/tailguard/tailguard/flags"
	"github.com/tailguard/tailguard/flags/provider"
	"github.com/tailguard/tailguard/promembed"
	"github.com/tailguard/tailguard/sim/scrape"
	"github.com/tailguard/tailguard/sim/service"
)

// world is everything one run owns: the flag file and its store, the
// OpenFeature provider the pods read it through, the service, the embedded
// Prometheus and the scraper.
type world struct {
	sc      *Scenario
	seed    uint64
	log     *slog.Logger
	clock   *Clock
	dir     string
	file    string
	store   *flags.Store
	valid   *flags.Validator
	db      *promembed.DB
	api     *openfeature.EvaluationAPI
	prov    *provider.Provider
	svc     *service.Service
	scr     *scrape.Scraper
	sidecar *prometheus.Registry

	syncTimeout time.Duration
	// Provider event counters, to wait for the provider to see a broken
	// file or its repair.
	errEvents, readyEvents atomic.Int64
	fileValid              bool
	errSeen, readySeen     int64
	// ownWrites are the journal entries the scenario and the baselines
	// made; all others are the cycler's.
	ownWrites map[int64]bool
}

func newWorld(ctx context.Context, sc *Scenario, seed uint64, syncTimeout time.Duration, log *slog.Logger) (w *world, err error) {
	w = &world{sc: sc, seed: seed, log: log, clock: &Clock{}, syncTimeout: syncTimeout, ownWrites: map[int64]bool{}, fileValid: true}
	w.clock.set(sc.Start)
	defer func() {
		if err != nil {
			w.close()
		}
	}()
	if w.dir, err = os.MkdirTemp("", "tailguard-sim-"); err != nil {
		return nil, fmt.Errorf("create run directory: %w", err)
	}
	w.file = filepath.Join(w.dir, "flags.json")
	if w.valid, err = flags.NewValidator(); err != nil {
		return nil, err
	}
	doc, err := initialFlags(sc)
	if err != nil {
		return nil, err
	}
	if err := w.valid.Validate(doc); err != nil {
		return nil, fmt.Errorf("initial flag file: %w", err)
	}
	data, err := flags.Marshal(doc)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(w.file, data, 0o644); err != nil {
		return nil, fmt.Errorf("write flag file: %w", err)
	}
	if w.store, err = flags.NewStore(flags.StoreConfig{Path: w.file, Validator: w.valid, Now: w.clock.Now}); err != nil {
		return nil, err
	}
	if w.db, err = promembed.Open(promembed.Options{}); err != nil {
		return nil, err
	}
	if w.prov, err = provider.New(provider.Config{Path: w.file, Validator: w.valid, Debounce: 5 * time.Millisecond, Now: w.clock.Now, Logger: log}); err != nil {
		return nil, err
	}
	w.api = isolated.NewAPI()
	onErr := openfeature.EventCallback(ptr(func(openfeature.EventDetails) { w.errEvents.Add(1) }))
	onReady := openfeature.EventCallback(ptr(func(openfeature.EventDetails) { w.readyEvents.Add(1) }))
	w.api.AddHandler(openfeature.ProviderError, onErr)
	w.api.AddHandler(openfeature.ProviderReady, onReady)
	if err := w.api.SetProviderAndWait(ctx, w.prov); err != nil {
		return nil, fmt.Errorf("start flag provider: %w", err)
	}
	w.readySeen = w.readyEvents.Load()
	client := w.api.NewClient()
	def, err := sc.Service.DefaultPolicy.Config("")
	if err != nil {
		return nil, err
	}
	bind := func(pod string, r *backoff.Retrier, reg prometheus.Registerer) (service.Reloader, error) {
		return flagbind.New(flagbind.Config{
			Client: client, Targets: []flagbind.Target{r}, Default: def,
			StrategyFlag: sc.Flags.StrategyKey, ConstantsFlag: sc.Flags.ConstantsKey,
			InstanceID: pod, Attributes: map[string]any{"service": sc.Service.Job},
			Registerer: reg, Logger: log,
		})
	}
	if w.svc, err = service.New(serviceConfig(sc, seed, def, bind)); err != nil {
		return nil, err
	}
	w.scr = scrape.New()
	w.sidecar = prometheus.NewRegistry()
	return w, nil
}

func ptr[T any](v T) *T { return &v }

func (w *world) close() {
	if w.api != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = w.api.Shutdown(ctx)
		cancel()
	}
	if w.prov != nil {
		w.prov.Shutdown()
	}
	if w.db != nil {
		_ = w.db.Close()
	}
	if w.dir != "" {
		_ = os.RemoveAll(w.dir)
	}
}

// initialFlags builds the scenario's initial flag file in the format the
// controller's FlagsWriter reads and writes.
func initialFlags(sc *Scenario) (*flags.Document, error) {
	f := sc.Flags
	variants := map[string]json.RawMessage{}
	for _, v := range f.Variants {
		b, _ := json.Marshal(v)
		variants[v] = b
	}
	consts, err := constantsJSON(nil, f.Constants)
	if err != nil {
		return nil, err
	}
	def, constDef := f.Strategy, "default"
	doc := &flags.Document{
		Schema: "https://flagd.dev/schema/v0/flags.json",
		Flags: map[string]*flags.Flag{
			f.StrategyKey:  {State: flags.StateEnabled, Variants: variants, DefaultVariant: &def},
			f.ConstantsKey: {State: flags.StateEnabled, Variants: map[string]json.RawMessage{"default": consts}, DefaultVariant: &constDef},
		},
	}
	doc.SetRevision(1)
	return doc, nil
}

// constantsJSON overlays per-strategy constants on the constants object
// raw (nil for an empty object).
func constantsJSON(raw json.RawMessage, set map[string]ConstantsSpec) (json.RawMessage, error) {
	obj := map[string]json.RawMessage{}
	if len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &obj); err != nil {
			return nil, fmt.Errorf("constants flag: not an object: %w", err)
		}
	}
	for _, k := range sortedKeys(set) {
		c := set[k]
		b, err := json.Marshal(controller.Constants{
			Base: time.Duration(c.Base), Cap: time.Duration(c.Cap), Multiplier: c.Multiplier, Jitter: c.Jitter,
			MaxAttempts: c.MaxAttempts, MaxElapsed: time.Duration(c.MaxElapsed),
		})
		if err != nil {
			return nil, err
		}
		obj[k] = b
	}
	return json.Marshal(obj)
}

// serviceConfig translates the scenario into the service model's terms.
func serviceConfig(sc *Scenario, seed uint64, def backoff.Config, bind service.Binder) service.Config {
	s, u := sc.Service, sc.Upstream
	cfg := service.Config{
		Pods: s.Pods, PodPrefix: s.Job, VersionComponent: s.VersionComponent,
		Warmup: time.Duration(s.Warmup.Duration), WarmupFactor: s.Warmup.Factor, NativeOnly: s.NativeOnly,
		Default: def, Bind: bind, Seed: seed, Start: sc.Start,
		Upstream: service.UpstreamConfig{
			Name:                     u.Name,
			Latency:                  logNormal(u.Latency),
			ErrorLatency:             logNormal(u.ErrorLatency),
			FailureProbability:       u.FailureProbability,
			RepeatFailureProbability: u.RepeatFailureProbability,
			PersistentProbability:    u.PersistentFailure.Probability,
			PersistentDuration:       time.Duration(u.PersistentFailure.MeanDuration),
			Capacity:                 u.Capacity,
			OverloadFailure:          u.OverloadFailure,
			OverloadLatency:          u.OverloadLatency,
			RateLimit:                u.RateLimit.Limit,
			RetryAfter:               time.Duration(u.RateLimit.RetryAfter),
			Timeout:                  time.Duration(u.Timeout),
			Noise:                    service.Noise{Sigma: u.Noise.Sigma, Correlation: time.Duration(u.Noise.Correlation)},
		},
	}
	for _, e := range s.Endpoints {
		cfg.Endpoints = append(cfg.Endpoints, service.EndpointConfig{
			Name: e.Name, Rate: e.Rate, Latency: logNormal(e.Latency), CallsUpstream: e.CallsUpstream, ErrorProbability: e.ErrorProbability,
		})
	}
	for _, c := range s.Components {
		cfg.Components = append(cfg.Components, service.Component{Name: c.Name, Metric: c.Metric, Version: c.Version})
	}
	type factorWindow struct {
		from, to time.Time
		f        float64
	}
	var traffic []factorWindow
	for _, e := range sc.Events {
		at := sc.At(e.At)
		switch {
		case e.Brownout != nil:
			b := e.Brownout
			cfg.Brownouts = append(cfg.Brownouts, service.Brownout{From: at, To: at.Add(time.Duration(b.Duration)),
				Down: time.Duration(b.Down), Up: time.Duration(b.Up), FailureProbability: b.FailureProbability})
		case e.UpstreamLatency != nil:
			cfg.Shifts = append(cfg.Shifts, service.LatencyShift{From: at, To: at.Add(time.Duration(e.UpstreamLatency.Duration)), Factor: e.UpstreamLatency.Factor})
		case e.Traffic != nil:
			traffic = append(traffic, factorWindow{at, at.Add(time.Duration(e.Traffic.Duration)), e.Traffic.Factor})
		}
	}
	d := s.Traffic.Diurnal
	if d != nil || len(traffic) > 0 {
		start := sc.Start
		cfg.Traffic = func(t time.Time) float64 {
			f := 1.0
			if d != nil {
				phase := 2 * math.Pi * float64(t.Sub(start)-time.Duration(d.Peak)) / float64(d.Period)
				f *= 1 + d.Amplitude*math.Cos(phase)
			}
			for _, w := range traffic {
				if !t.Before(w.from) && t.Before(w.to) {
					f *= w.f
				}
			}
			return f
		}
	}
	return cfg
}

func logNormal(l LogNormalSpec) service.LogNormal {
	return service.LogNormal{Median: time.Duration(l.Median), Sigma: l.Sigma}
}

// sync waits until the provider serves what the flag file holds now (a
// new revision, a broken file, or its repair) and then makes every pod
// re-read its flags. Waiting in real time keeps the run deterministic: the
// service simulates no further request until the pods see the change.
func (w *world) sync(ctx context.Context) error {
	data, err := os.ReadFile(w.file)
	if err != nil {
		return fmt.Errorf("read flag file: %w", err)
	}
	doc, perr := w.valid.Parse(data)
	valid := perr == nil
	var cond func() bool
	var what string
	switch {
	case valid && w.fileValid:
		rev := doc.Revision()
		cond, what = func() bool { return w.prov.Revision() == rev }, fmt.Sprintf("revision %d", rev)
	case valid && !w.fileValid:
		rev, seen := doc.Revision(), w.readySeen
		cond, what = func() bool { return w.readyEvents.Load() > seen && w.prov.Revision() == rev }, fmt.Sprintf("the repaired file (revision %d)", rev)
	case !valid && w.fileValid:
		seen := w.errSeen
		cond, what = func() bool { return w.errEvents.Load() > seen }, "the broken file"
	default:
		cond, what = func() bool { return true }, ""
	}
	deadline := time.Now().Add(w.syncTimeout)
	for !cond() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("flag provider did not load %s within %s (serving revision %d)", what, w.syncTimeout, w.prov.Revision())
		}
		time.Sleep(time.Millisecond)
	}
	w.fileValid, w.errSeen, w.readySeen = valid, w.errEvents.Load(), w.readyEvents.Load()
	// A pod whose flags are unusable keeps its last good policy (and
	// counts it in backoff_policy_errors_total); that is not the run's
	// error.
	_ = w.svc.Reload(ctx)
	return nil
}

// scrapeAll scrapes every pod and the sidecar's registry at t.
func (w *world) scrapeAll(ctx context.Context, t time.Time) error {
	job := w.sc.Service.Job
	var targets []scrape.Target
	for _, p := range w.svc.Pods() {
		targets = append(targets, scrape.Target{
			Labels:   labels.FromStrings("job", job, "instance", p.Name()+":8080", "pod", p.Name()),
			Gatherer: p.Registry(),
		})
	}
	targets = append(targets, scrape.Target{
		Labels:   labels.FromStrings("job", "tailguard", "instance", "tailguard:9099"),
		Gatherer: w.sidecar,
	})
	app := w.db.Appender(ctx)
	if _, err := w.scr.Scrape(app, t, targets); err != nil {
		_ = app.Rollback()
		return fmt.Errorf("scrape at %s: %w", t.Format(time.RFC3339), err)
	}
	return app.Commit()
}

// update writes a flag change through the store as one of the scenario's
// own actors and waits for the pods to see it.
func (w *world) update(ctx context.Context, mutate func(*flags.Document) error, meta flags.ChangeMeta) (flags.Entry, error) {
	e, err := w.store.Update(ctx, flags.AnyRevision, mutate, meta)
	if err != nil {
		return e, err
	}
	w.ownWrites[e.Seq] = true
	return e, w.sync(ctx)
}

// flagsMutation returns the mutation of a flags event.
func (w *world) flagsMutation(ev *FlagsEvent) func(*flags.Document) error {
	f := w.sc.Flags
	return func(d *flags.Document) error {
		if ev.Strategy != "" {
			if err := flags.SetVariant(f.StrategyKey, ev.Strategy, false)(d); err != nil {
				return err
			}
		}
		if r := ev.Rollout; r != nil {
			if err := flags.Rollout(f.StrategyKey, r.Variant, "", r.Percent)(d); err != nil {
				return err
			}
		}
		if len(ev.Constants) > 0 {
			cf, err := d.Flag(f.ConstantsKey)
			if err != nil {
				return err
			}
			dv, ok := cf.Default()
			if !ok {
				return fmt.Errorf("flag %q: no default variant holding the constants", f.ConstantsKey)
			}
			if cf.Variants[dv], err = constantsJSON(cf.Variants[dv], ev.Constants); err != nil {
				return err
			}
		}
		return nil
	}
}

// corrupt overwrites the flag file with content (default: its first half)
// and returns what it held before.
func (w *world) corrupt(ctx context.Context, content string) ([]byte, error) {
	before, err := os.ReadFile(w.file)
	if err != nil {
		return nil, fmt.Errorf("read flag file: %w", err)
	}
	data := []byte(content)
	if content == "" {
		data = before[:len(before)/2]
	}
	if err := os.WriteFile(w.file, data, 0o644); err != nil {
		return nil, fmt.Errorf("write flag file: %w", err)
	}
	return before, w.sync(ctx)
}

// restore writes data back as the flag file.
func (w *world) restore(ctx context.Context, data []byte) error {
	if err := os.WriteFile(w.file, data, 0o644); err != nil {
		return fmt.Errorf("write flag file: %w", err)
	}
	return w.sync(ctx)
}

// journal returns the journal entries after seq.
func (w *world) journal(ctx context.Context, after int64) ([]flags.Entry, error) {
	es, err := w.store.History(ctx, flags.HistoryFilter{})
	if err != nil {
		return nil, err
	}
	i := sort.Search(len(es), func(i int) bool { return es[i].Seq > after })
	return es[i:], nil
}

// describeStrategy summarises which pods run which policy.
func (w *world) describeStrategy() string {
	counts := map[string]int{}
	for _, p := range w.svc.Pods() {
		counts[p.Policy().String()]++
	}
	keys := sortedKeys(counts)
	s := ""
	for i, k := range keys {
		if i > 0 {
			s += "; "
		}
		s += fmt.Sprintf("%d/%d pods %s", counts[k], len(w.svc.Pods()), k)
	}
	return s
}

var errNoOldVariant = errors.New("the policy names no old variant")

// oldVariant returns the strategy flag's old variant from the policy.
func (w *world) oldVariant() (string, error) {
	svc, ok := w.sc.Policy.Service(w.sc.Service.Job)
	if !ok || svc.Flags.Strategy.OldVariant == "" {
		return "", errNoOldVariant
	}
	return svc.Flags.Strategy.OldVariant, nil
}

// lastChange returns the latest deploy (upgrade or flag event) at or
// before t, as a cause string, and its time.
func lastChange(sc *Scenario, t time.Time) (string, time.Time) {
	var cause string
	var at time.Time
	for _, e := range sc.Events {
		et := sc.At(e.At)
		if et.After(t) || et.Before(at) {
			continue
		}
		switch {
		case e.Flags != nil:
			key := sc.Flags.StrategyKey
			if e.Flags.Strategy == "" && e.Flags.Rollout == nil {
				key = sc.Flags.ConstantsKey
			}
			cause, at = "flag:"+key, et
		case e.Upgrade != nil:
			cause, at = "component:"+e.Upgrade.Component, et
		}
	}
	return cause, at
}

// changeTimes returns the times of the scenario's deploys.
func changeTimes(sc *Scenario) []time.Time {
	var out []time.Time
	for _, e := range sc.Events {
		if e.Flags != nil || e.Upgrade != nil {
			out = append(out, sc.At(e.At))
		}
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return slices.Compact(out)
}
