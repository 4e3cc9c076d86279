package sim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/tailguard/tailguard/alerts"
	"github.com/tailguard/tailguard/controller/policy"
	"github.com/tailguard/tailguard/flags"
	"github.com/tailguard/tailguard/sim/baseline"
	"github.com/tailguard/tailguard/sim/service"
)

// Mode says what guards a run.
type Mode string

// The modes.
const (
	// ModeTailguard runs the cycler built by Options.NewCycler.
	ModeTailguard Mode = "tailguard"
	// ModeUnguarded runs without any guard; the detect-only baselines
	// (static threshold, burn-rate alerts, canary judge) are evaluated on
	// its data afterwards. It is also what the new strategy achieves
	// untuned.
	ModeUnguarded Mode = "unguarded"
	// ModeRevert runs the revert-on-alert baseline, which acts.
	ModeRevert Mode = "revert-on-alert"
	// ModeLegacy is the counterfactual without the scenario's flag
	// changes: what the old strategy achieves.
	ModeLegacy Mode = "legacy"
)

// Options configure a run.
type Options struct {
	Mode Mode
	// Seed overrides the scenario's seed when not zero.
	Seed uint64
	// NewCycler builds the tailguard cycler of a ModeTailguard run. This is
	// where the sidecar's control loop is plugged in.
	NewCycler func(Env) (Cycler, error)
	// Until shortens the run to this much virtual time (tests); zero runs
	// the whole scenario.
	Until time.Duration
	// SyncTimeout bounds the real time waited for the flag provider to
	// load a change. Default 2s.
	SyncTimeout time.Duration
	// Logger receives diagnostics. Default: discarded.
	Logger *slog.Logger
}

// Entry is one line of a run's timeline.
type Entry struct {
	At time.Time `json:"at"`
	// Kind is change, upstream, detection, attribution, recovery, action,
	// verification, alert, note, error or state.
	Kind string `json:"kind"`
	Text string `json:"text"`
	// Label is a short name for chart markers, e.g. "tune".
	Label string `json:"label,omitempty"`
}

// Detection is a regressed finding of one cycle.
type Detection struct {
	At      time.Time `json:"at"`
	Finding Finding   `json:"finding"`
}

// Write is a flag change made by a guard (the cycler or revert-on-alert).
type Write struct {
	At       time.Time `json:"at"`
	Actor    string    `json:"actor"`
	Action   string    `json:"action"`
	Incident string    `json:"incident,omitempty"`
	Reason   string    `json:"reason"`
	Revision int64     `json:"revision"`
}

// Revert records what revert-on-alert did.
type Revert struct {
	At time.Time `json:"at"`
	// Blamed is the last deploy before the alert, as a cause string.
	Blamed  string `json:"blamed"`
	Applied bool   `json:"applied"`
	Note    string `json:"note,omitempty"`
}

// BrownoutResult is the checkout success ratio during one brown-out.
type BrownoutResult struct {
	From    time.Time `json:"from"`
	To      time.Time `json:"to"`
	Success float64   `json:"success"`
}

// Result is everything a run produced.
type Result struct {
	Scenario string        `json:"scenario"`
	Mode     Mode          `json:"mode"`
	Seed     uint64        `json:"seed"`
	Start    time.Time     `json:"start"`
	End      time.Time     `json:"end"`
	Timeline []Entry       `json:"timeline"`
	Cycles   int           `json:"cycles"`
	Errors   int           `json:"cycle_errors"`
	Wall     time.Duration `json:"wall_ns"`

	Detections []Detection `json:"detections,omitempty"`
	Actions    []Action    `json:"actions,omitempty"`
	// Verifications are the checks of the guard's actions, with their
	// predicted and verified effects.
	Verifications []Verification `json:"verifications,omitempty"`
	Writes        []Write        `json:"writes,omitempty"`
	Revert        *Revert        `json:"revert,omitempty"`
	// Alerts holds the firing episodes of each evaluated baseline rule
	// set: "static", "burn-rate".
	Alerts   map[string][]baseline.Episode `json:"alerts,omitempty"`
	Verdicts []baseline.Verdict            `json:"canary_verdicts,omitempty"`

	Series    Series           `json:"series"`
	Brownouts []BrownoutResult `json:"brownouts,omitempty"`
}

// Run simulates the scenario once.
func Run(ctx context.Context, sc *Scenario, opts Options) (*Result, error) {
	if opts.Mode == "" {
		opts.Mode = ModeUnguarded
	}
	if opts.Mode == ModeTailguard && opts.NewCycler == nil {
		return nil, errors.New("run: tailguard mode needs a NewCycler")
	}
	if opts.SyncTimeout == 0 {
		opts.SyncTimeout = 2 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	seed := cmp.Or(opts.Seed, sc.Seed)
	began := time.Now()
	w, err := newWorld(ctx, sc, seed, opts.SyncTimeout, log)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", sc.Name, err)
	}
	defer w.close()
	r := &runner{w: w, sc: sc, opts: opts, res: &Result{Scenario: sc.Name, Mode: opts.Mode, Seed: seed, Start: sc.Start}, last: map[string]Finding{}}
	if err := r.run(ctx); err != nil {
		return nil, fmt.Errorf("run %s (%s): %w", sc.Name, opts.Mode, err)
	}
	r.res.Wall = time.Since(began)
	return r.res, nil
}

type runner struct {
	w      *world
	sc     *Scenario
	opts   Options
	res    *Result
	cycler Cycler

	// Timeline de-duplication.
	last      map[string]Finding // by signal+slice: the last verdict seen
	lastNotes map[string]bool
	lastErr   string
	seq       int64 // last journal entry seen

	// revert-on-alert
	activeAt time.Time
	reverted bool
}

// step is something scheduled at a time.
type step struct {
	at    time.Time
	kind  string
	text  string
	label string
	do    func(ctx context.Context) error
}

func (r *runner) add(t time.Time, kind, format string, args ...any) {
	r.res.Timeline = append(r.res.Timeline, Entry{At: t, Kind: kind, Text: fmt.Sprintf(format, args...)})
}

// addLabelled adds an entry with a marker label.
func (r *runner) addLabelled(t time.Time, kind, label, format string, args ...any) {
	r.res.Timeline = append(r.res.Timeline, Entry{At: t, Kind: kind, Label: label, Text: fmt.Sprintf(format, args...)})
}

func (r *runner) schedule() []step {
	sc, w := r.sc, r.w
	var steps []step
	for i := range sc.Events {
		e := &sc.Events[i]
		at := sc.At(e.At)
		switch {
		case e.Upgrade != nil:
			u := e.Upgrade
			n := sc.Service.Pods
			from := ""
			for _, c := range sc.Service.Components {
				if c.Name == u.Component {
					from = c.Version
				}
			}
			for p := range n {
				pt := at.Add(time.Duration(u.Over) * time.Duration(p) / time.Duration(n))
				s := step{at: pt, do: func(ctx context.Context) error {
					return w.svc.Upgrade(ctx, p, u.Component, u.Version, effect(u.Effect), u.Restart, pt)
				}}
				if p == 0 {
					how := "at once"
					if u.Over > 0 {
						how = "over " + u.Over.String()
					}
					restart := ""
					if u.Restart {
						restart = ", pods restart"
					}
					s.kind, s.text = "change", fmt.Sprintf("upgrade %s %s → %s starts (%d pods %s%s)", u.Component, from, u.Version, n, how, restart)
					s.label = u.Component + " " + u.Version
				}
				steps = append(steps, s)
			}
		case e.Flags != nil:
			if r.opts.Mode == ModeLegacy {
				continue
			}
			f := e.Flags
			steps = append(steps, step{at: at, kind: "change", text: describeFlags(sc, f), label: flagsLabel(sc, f), do: func(ctx context.Context) error {
				action := flags.ActionSet
				if f.Rollout != nil {
					action = flags.ActionRollout
				}
				_, err := w.update(ctx, w.flagsMutation(f), flags.ChangeMeta{Actor: f.Actor, Action: action, Reason: f.Reason})
				if err != nil {
					return fmt.Errorf("flag change at %s: %w", e.At, err)
				}
				return nil
			}})
		case e.Brownout != nil:
			b := e.Brownout
			steps = append(steps,
				step{at: at, kind: "upstream", label: "brown-out", text: fmt.Sprintf("%s brown-out starts: flapping (down ~%s, up ~%s, %.0f%% failures while down) for %s",
					sc.Upstream.Name, b.Down, b.Up, 100*b.FailureProbability, b.Duration)},
				step{at: at.Add(time.Duration(b.Duration)), kind: "upstream", text: sc.Upstream.Name + " brown-out ends"})
		case e.UpstreamLatency != nil:
			u := e.UpstreamLatency
			steps = append(steps,
				step{at: at, kind: "upstream", text: fmt.Sprintf("%s latency ×%g for %s", sc.Upstream.Name, u.Factor, u.Duration)},
				step{at: at.Add(time.Duration(u.Duration)), kind: "upstream", text: sc.Upstream.Name + " latency back to normal"})
		case e.Traffic != nil:
			tr := e.Traffic
			steps = append(steps,
				step{at: at, kind: "upstream", text: fmt.Sprintf("traffic ×%g for %s", tr.Factor, tr.Duration)},
				step{at: at.Add(time.Duration(tr.Duration)), kind: "upstream", text: "traffic back to normal"})
		case e.ScrapeGap != nil:
			steps = append(steps,
				step{at: at, kind: "change", label: "scrape gap", text: fmt.Sprintf("Prometheus stops scraping for %s", e.ScrapeGap.Duration)},
				step{at: at.Add(time.Duration(e.ScrapeGap.Duration)), kind: "change", text: "Prometheus scrapes again"})
		case e.CorruptFlagFile != nil:
			c := e.CorruptFlagFile
			var saved []byte
			steps = append(steps, step{at: at, kind: "change", label: "flag file broken", text: "the flag file is overwritten with invalid content (a bad manual edit)", do: func(ctx context.Context) error {
				var err error
				saved, err = w.corrupt(ctx, c.Content)
				return err
			}})
			if c.Duration > 0 {
				steps = append(steps, step{at: at.Add(time.Duration(c.Duration)), kind: "change", label: "flag file restored", text: "the flag file is restored", do: func(ctx context.Context) error {
					return w.restore(ctx, saved)
				}})
			}
		}
	}
	slices.SortStableFunc(steps, func(a, b step) int { return a.at.Compare(b.at) })
	return steps
}

func effect(e EffectSpec) service.Effect {
	return service.Effect{Latency: e.Latency, UpstreamLatency: e.UpstreamLatency}
}

// freshPolicy parses the scenario's policy again, so that a cycler cannot
// change the scenario's copy.
func freshPolicy(sc *Scenario) (*policy.Policy, error) {
	p, err := policy.Parse(sc.PolicyYAML)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return p, nil
}

func describeFlags(sc *Scenario, f *FlagsEvent) string {
	var parts []string
	if f.Strategy != "" {
		parts = append(parts, fmt.Sprintf("%s → %s", sc.Flags.StrategyKey, f.Strategy))
	}
	if f.Rollout != nil {
		parts = append(parts, fmt.Sprintf("%s → %s on %g%% of pods", sc.Flags.StrategyKey, f.Rollout.Variant, f.Rollout.Percent))
	}
	for _, k := range sortedKeys(f.Constants) {
		parts = append(parts, fmt.Sprintf("%s.%s = %s", sc.Flags.ConstantsKey, k, describeConstants(f.Constants[k])))
	}
	return fmt.Sprintf("flag change by %s: %s (%s)", f.Actor, strings.Join(parts, ", "), f.Reason)
}

// flagsLabel is the marker label of a flags event.
func flagsLabel(sc *Scenario, f *FlagsEvent) string {
	switch {
	case f.Strategy != "":
		return "→ " + f.Strategy
	case f.Rollout != nil:
		return fmt.Sprintf("%s %g%%", f.Rollout.Variant, f.Rollout.Percent)
	}
	return sc.Flags.ConstantsKey
}

func describeConstants(c ConstantsSpec) string {
	var s []string
	if c.Base != 0 {
		s = append(s, "base "+c.Base.String())
	}
	if c.Cap != 0 {
		s = append(s, "cap "+c.Cap.String())
	}
	if c.Multiplier != 0 {
		s = append(s, fmt.Sprintf("multiplier %g", c.Multiplier))
	}
	if c.MaxAttempts != 0 {
		s = append(s, fmt.Sprintf("%d attempts", c.MaxAttempts))
	}
	if c.MaxElapsed != 0 {
		s = append(s, "max elapsed "+c.MaxElapsed.String())
	}
	return strings.Join(s, ", ")
}

func (r *runner) inGap(t time.Time) bool {
	for _, e := range r.sc.Events {
		if e.ScrapeGap != nil {
			from := r.sc.At(e.At)
			if !t.Before(from) && t.Before(from.Add(time.Duration(e.ScrapeGap.Duration))) {
				return true
			}
		}
	}
	return false
}

func (r *runner) run(ctx context.Context) error {
	sc, w := r.sc, r.w
	if r.opts.Mode == ModeTailguard {
		det := sc.Detector
		det.Signals = slices.Clone(det.Signals)
		det.Changes.FlagJournal = flags.JournalPath(w.store.Path())
		pol, err := freshPolicy(sc)
		if err != nil {
			return err
		}
		env := Env{
			Scenario: sc, DB: w.db, Querier: w.db, FlagFile: w.store.Path(), JournalPath: det.Changes.FlagJournal,
			Dir: w.dir, Registerer: w.sidecar, Start: sc.Start, Clock: w.clock, Policy: pol, Detector: det, Logger: r.opts.Logger,
		}
		if r.cycler, err = r.opts.NewCycler(env); err != nil {
			return fmt.Errorf("build cycler: %w", err)
		}
	}
	end := sc.End()
	if r.opts.Until > 0 && sc.Start.Add(r.opts.Until).Before(end) {
		end = sc.Start.Add(r.opts.Until)
	}
	r.res.End = end
	r.add(sc.Start, "state", "start: %s; flag %s = %s", w.describeStrategy(), sc.Flags.StrategyKey, sc.Flags.Strategy)
	steps := r.schedule()
	scrapeEvery, evalEvery := time.Duration(sc.ScrapeInterval), time.Duration(sc.EvaluationInterval)
	nextScrape, nextEval := sc.Start, sc.Start.Add(evalEvery)
	for i := 0; ; {
		t := minTime(nextScrape, nextEval, end)
		if i < len(steps) && steps[i].at.Before(t) {
			t = steps[i].at
		}
		if err := w.svc.Advance(ctx, t); err != nil {
			return err
		}
		w.clock.set(t)
		for ; i < len(steps) && !steps[i].at.After(t); i++ {
			s := steps[i]
			if s.text != "" {
				r.addLabelled(t, s.kind, s.label, "%s", s.text)
			}
			if s.do != nil {
				if err := s.do(ctx); err != nil {
					// A scenario step that fails (a flag change refused
					// because the file is broken) is part of the story.
					r.add(t, "error", "%v", err)
				}
			}
		}
		if t.Equal(nextScrape) {
			if !r.inGap(t) {
				if err := w.scrapeAll(ctx, t); err != nil {
					return err
				}
			}
			nextScrape = nextScrape.Add(scrapeEvery)
		}
		if t.Equal(nextEval) {
			if err := r.evaluate(ctx, t); err != nil {
				return err
			}
			nextEval = nextEval.Add(evalEvery)
		}
		if !t.Before(end) {
			break
		}
	}
	if err := r.readJournal(ctx, end); err != nil {
		return err
	}
	r.add(end, "state", "end: %s", w.describeStrategy())
	return r.measure(ctx, end)
}

func minTime(ts ...time.Time) time.Time {
	m := ts[0]
	for _, t := range ts[1:] {
		if t.Before(m) {
			m = t
		}
	}
	return m
}

// evaluate runs the cycler (or revert-on-alert) at t.
func (r *runner) evaluate(ctx context.Context, t time.Time) error {
	switch r.opts.Mode {
	case ModeTailguard:
		r.res.Cycles++
		rep, err := r.cycler.Cycle(ctx, t)
		if err != nil {
			r.res.Errors++
			if msg := err.Error(); msg != r.lastErr {
				r.add(t, "error", "cycle: %s", msg)
				r.lastErr = msg
			}
		} else {
			r.lastErr = ""
		}
		r.record(t, rep)
		if err := r.w.sync(ctx); err != nil {
			return err
		}
		return r.readJournal(ctx, t)
	case ModeRevert:
		return r.revertOnAlert(ctx, t)
	}
	return nil
}

// record turns a cycle report into timeline entries, without repeating
// what the previous cycles already said.
func (r *runner) record(t time.Time, rep CycleReport) {
	seen := map[string]bool{}
	for _, f := range rep.Findings {
		key := f.Signal + " " + sliceText(f.Slice)
		seen[key] = true
		prev, had := r.last[key]
		r.last[key] = f
		if f.Verdict == VerdictRegressed {
			r.res.Detections = append(r.res.Detections, Detection{At: t, Finding: f})
		}
		switch {
		case f.Verdict == VerdictRegressed && (!had || prev.Verdict != VerdictRegressed):
			r.addLabelled(t, "detection", "detected", "%s %s regressed: %s%s", f.Signal, sliceText(f.Slice), effectText(f), onsetText(f))
			if f.Cause != "" {
				r.add(t, "attribution", "%s", causeText(f))
			}
		case f.Verdict == VerdictRegressed && f.Cause != prev.Cause:
			r.add(t, "attribution", "%s", causeText(f))
		case f.Verdict == VerdictHealthy && had && prev.Verdict == VerdictRegressed:
			r.add(t, "recovery", "%s %s healthy again", f.Signal, sliceText(f.Slice))
		case f.Verdict == VerdictInconclusive && had && prev.Verdict == VerdictRegressed:
			r.add(t, "note", "%s %s inconclusive: %s", f.Signal, sliceText(f.Slice), f.Reason)
		}
	}
	// Findings the report no longer lists are healthy (or not watched).
	for key, f := range r.last {
		if !seen[key] && f.Verdict == VerdictRegressed {
			r.add(t, "recovery", "%s %s no longer regressed", f.Signal, sliceText(f.Slice))
			delete(r.last, key)
		}
	}
	r.res.Verifications = append(r.res.Verifications, rep.Verifications...)
	for _, v := range rep.Verifications {
		r.add(t, "verification", "%s %s verified: %s%s", v.Incident, v.Rung, v.Outcome, prefixed(": ", v.Detail))
	}
	for _, a := range rep.Actions {
		r.res.Actions = append(r.res.Actions, a)
		text := fmt.Sprintf("%s %s (%s)", a.Rung, a.Status, a.Incident)
		if a.Change != "" {
			text += ": " + a.Change
		}
		if a.Expected != "" {
			text += "; expected " + a.Expected
		}
		if a.Reason != "" {
			text += "; " + a.Reason
		}
		r.add(t, "action", "%s", text)
	}
	notes := map[string]bool{}
	for _, n := range rep.Notes {
		notes[n] = true
		if !r.lastNotes[n] {
			r.add(t, "note", "%s", n)
		}
	}
	r.lastNotes = notes
}

func prefixed(p, s string) string {
	if s == "" {
		return ""
	}
	return p + s
}

func sliceText(s map[string]string) string {
	keys := slices.Sorted(maps.Keys(s))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + s[k]
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func effectText(f Finding) string {
	if f.Effect == 0 {
		return strings.TrimSpace(f.Reason)
	}
	s := fmt.Sprintf("effect ×%.2f", f.Effect)
	if f.EffectHigh > 0 {
		s += fmt.Sprintf(" [%.2f, %.2f]", f.EffectLow, f.EffectHigh)
		if f.Confidence > 0 {
			s += fmt.Sprintf(" at %.0f%% confidence", 100*f.Confidence)
		}
	}
	return s
}

func onsetText(f Finding) string {
	if f.Onset.IsZero() {
		return ""
	}
	return ", onset " + f.Onset.UTC().Format("15:04:05")
}

func causeText(f Finding) string {
	s := "attributed to " + f.Cause
	if f.CauseDetail != "" {
		s += " (" + f.CauseDetail + ")"
	}
	if f.CauseScore > 0 {
		s += fmt.Sprintf(", score %.2f", f.CauseScore)
	}
	if len(f.Evidence) > 0 {
		s += ": " + strings.Join(f.Evidence, "; ")
	}
	return s
}

// readJournal records the guards' flag writes since the last call.
func (r *runner) readJournal(ctx context.Context, t time.Time) error {
	es, err := r.w.journal(ctx, r.seq)
	if err != nil {
		// The journal lives next to the flag file and stays readable when
		// the file is broken; a failure here is a real problem.
		return fmt.Errorf("read flag journal: %w", err)
	}
	for _, e := range es {
		r.seq = e.Seq
		if r.w.ownWrites[e.Seq] {
			continue
		}
		r.res.Writes = append(r.res.Writes, Write{At: e.Time, Actor: e.Actor, Action: e.Action, Incident: e.Incident, Reason: e.Reason, Revision: e.RevisionAfter})
		r.addLabelled(t, "action", e.Action, "flag write r%d by %s (%s, %s): %s", e.RevisionAfter, e.Actor, e.Action, strings.Join(e.Flags, ", "), e.Reason)
		r.add(t, "state", "%s", r.w.describeStrategy())
	}
	return nil
}

// revertOnAlert is the Flagger/Argo-style baseline: on the first firing of
// the static threshold alert, flip the strategy flag back to the old
// variant, blaming the last deploy.
func (r *runner) revertOnAlert(ctx context.Context, t time.Time) error {
	if r.reverted {
		return nil
	}
	rule := baseline.StaticThreshold(r.slo())
	active, err := rule.Active(ctx, r.w.db, t)
	if err != nil {
		return err
	}
	if !active {
		r.activeAt = time.Time{}
		return nil
	}
	if r.activeAt.IsZero() {
		r.activeAt = t
	}
	if t.Sub(r.activeAt) < rule.For {
		return nil
	}
	blamed, _ := lastChange(r.sc, t)
	if r.res.Revert == nil {
		r.res.Revert = &Revert{At: t, Blamed: blamed}
		r.add(t, "alert", "%s firing: revert-on-alert blames the last deploy (%s)", rule.Name, cmp.Or(blamed, "none"))
	}
	rv := r.res.Revert
	old, err := r.w.oldVariant()
	if err != nil {
		r.reverted, rv.Note = true, err.Error()
		return nil
	}
	e, err := r.w.update(ctx, flags.SetVariant(r.sc.Flags.StrategyKey, old, false), flags.ChangeMeta{
		Actor: "operator:revert-on-alert", Action: flags.ActionRollback,
		Reason: fmt.Sprintf("%s firing: revert to %s", rule.Name, old),
	})
	switch {
	case errors.Is(err, flags.ErrNoChange):
		r.reverted, rv.Note = true, "the flag already served "+old
		r.add(t, "note", "revert-on-alert: nothing to revert, %s already serves %s", r.sc.Flags.StrategyKey, old)
		return nil
	case err != nil:
		// Like a rollout controller, try again at the next evaluation.
		if msg := err.Error(); msg != rv.Note {
			rv.Note = msg
			r.add(t, "error", "revert-on-alert: %v", err)
		}
		return nil
	}
	r.reverted, rv.Applied, rv.Note = true, true, ""
	r.res.Writes = append(r.res.Writes, Write{At: e.Time, Actor: e.Actor, Action: e.Action, Reason: e.Reason, Revision: e.RevisionAfter})
	r.addLabelled(t, "action", "revert", "revert-on-alert flips %s back to %s (r%d)", r.sc.Flags.StrategyKey, old, e.RevisionAfter)
	r.add(t, "state", "%s", r.w.describeStrategy())
	return nil
}

func (r *runner) slo() baseline.SLO {
	s := r.sc.Truth.SLO
	return baseline.SLO{Job: r.sc.Service.Job, Endpoint: s.Endpoint, Upstream: r.sc.Upstream.Name,
		Quantile: s.Quantile, Threshold: time.Duration(s.Threshold), Window: time.Duration(s.Window), Native: r.sc.Service.NativeOnly}
}

// measure computes the run's series and brown-out results and, for an
// unguarded run, evaluates the detect-only baselines.
func (r *runner) measure(ctx context.Context, end time.Time) error {
	var err error
	if r.res.Series, err = measureSeries(ctx, r.w.db, r.sc, end); err != nil {
		return err
	}
	if r.res.Brownouts, err = measureBrownouts(ctx, r.w.db, r.sc, end); err != nil {
		return err
	}
	r.res.Alerts = map[string][]baseline.Episode{}
	step := time.Duration(r.sc.EvaluationInterval)
	switch r.opts.Mode {
	case ModeUnguarded:
		if r.res.Alerts[BaselineStatic], err = baseline.StaticThreshold(r.slo()).Evaluate(ctx, r.w.db, r.sc.Start, end, step); err != nil {
			return err
		}
		rules, err := baseline.LoadRules(alerts.FS(), "slo-shop.rules.yml", "slo-alerts.rules.yml")
		if err != nil {
			return err
		}
		eps, err := rules.Evaluate(ctx, r.w.db, r.sc.Start, end, step, map[string]string{"service": r.sc.Service.Job})
		if err != nil {
			return err
		}
		r.res.Alerts[BaselineBurnRate] = eps
		if r.res.Verdicts, err = canaryJudge(r.sc).Judge(ctx, r.w.db, changeTimes(r.sc), end); err != nil {
			return err
		}
		for _, v := range r.res.Verdicts {
			verdict := "passes"
			if v.Failed {
				verdict = "FAILS"
			}
			r.add(v.At, "alert", "canary judge: the change at %s %s (%s)", v.Change.UTC().Format("15:04"), verdict, strings.Join(v.Detail, "; "))
		}
	case ModeRevert:
		if r.res.Alerts[BaselineStatic], err = baseline.StaticThreshold(r.slo()).Evaluate(ctx, r.w.db, r.sc.Start, end, step); err != nil {
			return err
		}
	}
	for name, eps := range r.res.Alerts {
		for _, e := range eps {
			r.add(e.Start, "alert", "%s: %s fires", name, e.Label)
		}
	}
	slices.SortStableFunc(r.res.Timeline, func(a, b Entry) int { return a.At.Compare(b.At) })
	return nil
}

// Baseline names.
const (
	BaselineStatic   = "static threshold"
	BaselineBurnRate = "burn-rate"
	BaselineCanary   = "canary judge"
	BaselineRevert   = "revert-on-alert"
)

// canaryJudge is the Kayenta-style judge of the scenario's SLO endpoint:
// per-minute p99 and retry ratio, 30 minutes before against 30 minutes
// after a 5-minute warm-up, one-sided U test at 1%, at least 10% worse.
func canaryJudge(sc *Scenario) baseline.Judge {
	s := sc.Truth.SLO
	sel := fmt.Sprintf(`{job=%q,endpoint=%q}`, sc.Service.Job, s.Endpoint)
	up := fmt.Sprintf(`{job=%q,upstream=%q}`, sc.Service.Job, sc.Upstream.Name)
	quantile := fmt.Sprintf(`histogram_quantile(%g, sum by (le) (rate(http_request_duration_seconds_bucket%s[1m])))`, s.Quantile, sel)
	if sc.Service.NativeOnly {
		quantile = fmt.Sprintf(`histogram_quantile(%g, sum(rate(http_request_duration_seconds%s[1m])))`, s.Quantile, sel)
	}
	return baseline.Judge{
		Metrics: []baseline.Metric{
			{Name: fmt.Sprintf("p%g %s", 100*s.Quantile, s.Endpoint), Expr: quantile},
			{Name: "retry ratio " + sc.Upstream.Name, Expr: fmt.Sprintf(`sum(rate(backoff_retries_total%s[1m])) / sum(rate(backoff_calls_total%s[1m]))`, up, up)},
		},
		Before: 30 * time.Minute, Warmup: 5 * time.Minute, After: 30 * time.Minute, Step: time.Minute,
		Alpha: 0.01, MinRatio: 1.1,
	}
}
