// Package provider is an OpenFeature provider for Go services that
// evaluates a flagd flag file in process with flagd's semantics (see
// package eval). It watches the file and reloads it within a second of a
// change, emitting PROVIDER_CONFIGURATION_CHANGED with the changed flag
// keys; a file that cannot be read or parsed emits PROVIDER_ERROR and the
// last good flags keep being served until the file is fixed.
//
// Like flagd, the provider judges each flag on its own: the valid flags of a
// partly invalid file are served; a flag that is invalid (a bad state,
// variants or default variant, an unknown operator, a $ref to no evaluator)
// keeps its last good version where there is one and otherwise resolves to
// PARSE_ERROR. Invalid flags are logged, exported as
// tailguard_flag_provider_invalid_flag{flag} when a Registerer is given,
// announced in the PROVIDER_CONFIGURATION_CHANGED event's metadata under
// "invalidFlags", and listed by InvalidFlags. Schema findings inside a
// targeting rule that still compiles (an operator's arguments of the wrong
// shape) are served as flagd serves them: the operator judges its input at
// evaluation time.
package provider

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/open-feature/go-sdk/openfeature"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tailguard/tailguard/flags"
	"github.com/tailguard/tailguard/flags/eval"
)

// Defaults.
const (
	DefaultName     = "tailguard-flagd-file"
	DefaultDebounce = 100 * time.Millisecond
	DefaultResync   = 30 * time.Second
	eventBuffer     = 16
)

// Config configures a Provider.
type Config struct {
	// Path is the flagd flag file.
	Path string
	// Name is reported in the provider metadata; defaults to DefaultName.
	Name string
	// Logger receives reload and evaluation diagnostics; defaults to
	// discarding them.
	Logger *slog.Logger
	// Validator checks the file; NewProvider compiles one if nil.
	Validator *flags.Validator
	// Debounce is how long to wait after a file event before reloading, so
	// a burst of events (write, rename, chmod) causes one reload. Defaults
	// to DefaultDebounce; must be below one second.
	Debounce time.Duration
	// Resync re-reads the file at this interval even without file events,
	// for filesystems that do not deliver them. Defaults to DefaultResync;
	// negative disables it.
	Resync time.Duration
	// Now is the clock behind $flagd.timestamp; defaults to time.Now.
	Now func() time.Time
	// Registerer, if set, receives tailguard_flag_provider_invalid_flag.
	Registerer prometheus.Registerer
}

// Provider is an openfeature.FeatureProvider, StateHandler,
// ContextAwareStateHandler and EventHandler serving a flagd flag file.
type Provider struct {
	path      string
	name      string
	log       *slog.Logger
	validator *flags.Validator
	debounce  time.Duration
	resync    time.Duration
	now       func() time.Time

	set     atomic.Pointer[eval.Set]
	invalid atomic.Pointer[map[string]string]
	events  chan openfeature.Event
	metric  *prometheus.GaugeVec // nil without a Registerer

	mu     sync.Mutex // guards cancel and done
	cancel context.CancelFunc
	done   chan struct{}

	// Owned by whoever holds reloadMu (Init, then the watch loop).
	reloadMu    sync.Mutex
	lastSum     [sha256.Size]byte
	haveSum     bool
	healthy     bool
	lastProblem string
	warned      map[string]bool // findings already logged
}

var (
	_ openfeature.FeatureProvider          = (*Provider)(nil)
	_ openfeature.StateHandler             = (*Provider)(nil)
	_ openfeature.ContextAwareStateHandler = (*Provider)(nil)
	_ openfeature.EventHandler             = (*Provider)(nil)
)

// New validates cfg and returns a Provider. The file is first read by
// Init (or InitWithContext), which the OpenFeature SDK calls when the
// provider is registered.
func New(cfg Config) (*Provider, error) {
	if cfg.Path == "" {
		return nil, errors.New("provider: flag file path is required")
	}
	path, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("provider: flag file path: %w", err)
	}
	p := &Provider{
		path:      path,
		name:      cfg.Name,
		log:       cfg.Logger,
		validator: cfg.Validator,
		debounce:  cfg.Debounce,
		resync:    cfg.Resync,
		now:       cfg.Now,
		events:    make(chan openfeature.Event, eventBuffer),
	}
	if p.name == "" {
		p.name = DefaultName
	}
	if p.log == nil {
		p.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if p.validator == nil {
		if p.validator, err = flags.NewValidator(); err != nil {
			return nil, err
		}
	}
	switch {
	case p.debounce == 0:
		p.debounce = DefaultDebounce
	case p.debounce < 0 || p.debounce >= time.Second:
		return nil, fmt.Errorf("provider: debounce %s: must be between 0 and 1s", p.debounce)
	}
	if p.resync == 0 {
		p.resync = DefaultResync
	}
	if p.now == nil {
		p.now = time.Now
	}
	if cfg.Registerer != nil {
		p.metric = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tailguard_flag_provider_invalid_flag",
			Help: "1 for each flag of the flag file that is invalid; it keeps its last good version or resolves to PARSE_ERROR.",
		}, []string{"flag"})
		if err := cfg.Registerer.Register(p.metric); err != nil {
			return nil, fmt.Errorf("provider: register metrics: %w", err)
		}
	}
	return p, nil
}

// InvalidFlags returns the flags of the current file that are invalid,
// with the reason (and whether the last good version is served), or nil.
func (p *Provider) InvalidFlags() map[string]string {
	if m := p.invalid.Load(); m != nil {
		return maps.Clone(*m)
	}
	return nil
}

// Metadata returns the provider's name.
func (p *Provider) Metadata() openfeature.Metadata { return openfeature.Metadata{Name: p.name} }

// Hooks returns no hooks.
func (p *Provider) Hooks() []openfeature.Hook { return nil }

// EventChannel delivers PROVIDER_CONFIGURATION_CHANGED, PROVIDER_ERROR and
// PROVIDER_READY events after Init.
func (p *Provider) EventChannel() <-chan openfeature.Event { return p.events }

// Revision returns the revision of the flag file being served, or -1 if
// no valid file has been loaded.
func (p *Provider) Revision() int64 {
	if s := p.set.Load(); s != nil {
		return s.Revision()
	}
	return -1
}

// Init loads the file and starts watching it; see InitWithContext.
func (p *Provider) Init(evalCtx openfeature.EvaluationContext) error {
	return p.InitWithContext(context.Background(), evalCtx)
}

// InitWithContext loads the flag file and starts watching its directory.
// If the file is missing or invalid it returns an error (the SDK marks
// the provider ERROR) but keeps watching: once the file becomes valid the
// provider emits PROVIDER_READY.
func (p *Provider) InitWithContext(ctx context.Context, _ openfeature.EvaluationContext) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cancel != nil {
		return nil // already running
	}
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		return &openfeature.ProviderInitError{ErrorCode: openfeature.GeneralCode, Message: "create file watcher: " + err.Error()}
	}
	if err := watcher.Add(filepath.Dir(p.path)); err != nil {
		watcher.Close()
		return &openfeature.ProviderInitError{ErrorCode: openfeature.GeneralCode, Message: fmt.Sprintf("watch %s: %v", filepath.Dir(p.path), err)}
	}
	loadErr := p.reload(ctx, false)
	if err := ctx.Err(); err != nil {
		watcher.Close()
		return err
	}
	loopCtx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.done = make(chan struct{})
	go p.watch(loopCtx, watcher, p.done)
	if loadErr != nil {
		return &openfeature.ProviderInitError{ErrorCode: errorCode(loadErr), Message: loadErr.Error()}
	}
	return nil
}

// Shutdown stops watching the file; see ShutdownWithContext.
func (p *Provider) Shutdown() { _ = p.ShutdownWithContext(context.Background()) }

// ShutdownWithContext stops watching the file. The last loaded flags stay
// available to evaluations.
func (p *Provider) ShutdownWithContext(ctx context.Context) error {
	p.mu.Lock()
	cancel, done := p.cancel, p.done
	p.cancel, p.done = nil, nil
	p.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Provider) watch(ctx context.Context, w *fsnotify.Watcher, done chan struct{}) {
	defer close(done)
	defer w.Close()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	var resync <-chan time.Time
	if p.resync > 0 {
		t := time.NewTicker(p.resync)
		defer t.Stop()
		resync = t.C
	}
	base := filepath.Base(p.path)
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if relevant(ev, base) {
				debounce.Reset(p.debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			p.log.Warn("flag file watcher error", "path", p.path, "err", err)
			debounce.Reset(p.debounce)
		case <-debounce.C:
			p.reloadAndNotify(ctx)
		case <-resync:
			p.reloadAndNotify(ctx)
		}
	}
}

// relevant reports whether a directory event may have changed the flag
// file: any event on the file itself, and any creation, rename or removal
// in the directory (which covers symlink swaps such as Kubernetes
// ConfigMap updates). Writes to other files, such as the journal, are not.
func relevant(ev fsnotify.Event, base string) bool {
	name := filepath.Base(ev.Name)
	if name == base {
		return true
	}
	if strings.HasSuffix(name, flags.JournalSuffix) || strings.HasSuffix(name, flags.LockSuffix) || strings.Contains(name, flags.StateSuffix) {
		return false
	}
	return ev.Has(fsnotify.Create) || ev.Has(fsnotify.Rename) || ev.Has(fsnotify.Remove)
}

func (p *Provider) reloadAndNotify(ctx context.Context) {
	if err := p.reload(ctx, true); err != nil {
		p.log.Warn("flag file rejected, serving the last good flags", "path", p.path, "revision", p.Revision(), "err", err)
	}
}

// reload reads the file and, if it changed and is valid, swaps it in.
// With notify, it emits the events describing the transition; ctx ends
// the wait for the event reader.
func (p *Provider) reload(ctx context.Context, notify bool) error {
	p.reloadMu.Lock()
	defer p.reloadMu.Unlock()
	data, err := os.ReadFile(p.path)
	if err != nil {
		// Forget the last content so that the same file coming back is
		// loaded (and announced) again.
		p.haveSum = false
		err = fmt.Errorf("read flag file: %w", err)
		p.failed(ctx, err, notify)
		return err
	}
	sum := sha256.Sum256(data)
	if p.haveSum && sum == p.lastSum {
		if !p.healthy && p.lastProblem != "" {
			return errors.New(p.lastProblem)
		}
		return nil
	}
	p.lastSum, p.haveSum = sum, true
	doc, problems, err := p.validator.ParseEach(data)
	if err != nil {
		err = fmt.Errorf("flag file %s: %w", p.path, err)
		p.failed(ctx, err, notify)
		return err
	}
	invalid := map[string]string{}
	for _, pr := range problems {
		if pr.Flag != "" && !servable(doc.Flags[pr.Flag]) {
			invalid[pr.Flag] = joinReason(invalid[pr.Flag], pr.Message)
			continue
		}
		if !p.warned[pr.String()] {
			p.log.Warn("flag file: served despite a finding, as flagd serves it", "path", p.path, "problem", pr.String())
		}
	}
	p.warned = map[string]bool{}
	for _, pr := range problems {
		p.warned[pr.String()] = true
	}
	set, err := eval.CompileEach(doc, invalid)
	if err != nil {
		p.failed(ctx, err, notify)
		return err
	}
	broken := set.Broken()
	set, kept := set.Keep(p.set.Load(), slices.Sorted(maps.Keys(broken)))
	for _, k := range kept {
		broken[k] += " (serving its last good version)"
	}
	p.reportInvalid(broken)
	old := p.set.Swap(set)
	recovered := !p.healthy
	p.healthy, p.lastProblem = true, ""
	changed := set.Changed(old)
	p.log.Info("flag file loaded", "path", p.path, "revision", set.Revision(), "changed", changed)
	if !notify {
		return nil
	}
	if recovered {
		p.emit(ctx, openfeature.Event{
			ProviderName: p.name,
			EventType:    openfeature.ProviderReady,
			ProviderEventDetails: openfeature.ProviderEventDetails{
				Message:     fmt.Sprintf("flag file valid again at revision %d", set.Revision()),
				FlagChanges: changed,
			},
		})
	}
	if len(changed) > 0 || len(broken) > 0 {
		md := map[string]any{"revision": set.Revision()}
		msg := fmt.Sprintf("flag file reloaded at revision %d", set.Revision())
		if len(broken) > 0 {
			keys := slices.Sorted(maps.Keys(broken))
			md["invalidFlags"] = strings.Join(keys, ",")
			msg += fmt.Sprintf("; invalid flags: %s", strings.Join(keys, ", "))
		}
		p.emit(ctx, openfeature.Event{
			ProviderName: p.name,
			EventType:    openfeature.ProviderConfigChange,
			ProviderEventDetails: openfeature.ProviderEventDetails{
				Message:       msg,
				FlagChanges:   changed,
				EventMetadata: md,
			},
		})
	}
	return nil
}

// servable reports whether a flag with validation findings can still be
// served, as flagd serves it: what flagd refuses is a flag without a valid
// state, without variants, or whose default variant is not one of them.
// Schema findings elsewhere (metadata types, variants of mixed types, the
// shape of an operator's arguments) are served; the typed evaluation and
// the operators judge them at evaluation time.
func servable(f *flags.Flag) bool {
	if f == nil || (f.State != flags.StateEnabled && f.State != flags.StateDisabled) || len(f.Variants) == 0 {
		return false
	}
	if dv, ok := f.Default(); ok && dv != "" {
		if _, exists := f.Variants[dv]; !exists {
			return false
		}
	}
	return true
}

func joinReason(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// reportInvalid publishes the invalid flags of the file just loaded and
// logs those that are newly invalid or invalid for another reason.
func (p *Provider) reportInvalid(broken map[string]string) {
	var prev map[string]string
	if m := p.invalid.Load(); m != nil {
		prev = *m
	}
	for _, k := range slices.Sorted(maps.Keys(broken)) {
		if prev[k] != broken[k] {
			p.log.Warn("flag is invalid", "path", p.path, "flag", k, "err", broken[k])
		}
	}
	for k := range prev {
		if _, still := broken[k]; !still {
			p.log.Info("flag is valid again", "path", p.path, "flag", k)
		}
	}
	if len(broken) == 0 {
		p.invalid.Store(nil)
	} else {
		p.invalid.Store(&broken)
	}
	if p.metric != nil {
		p.metric.Reset()
		for k := range broken {
			p.metric.WithLabelValues(k).Set(1)
		}
	}
}

// failed records a load failure and, once per distinct problem, emits
// PROVIDER_ERROR. The previously loaded flags stay in place.
func (p *Provider) failed(ctx context.Context, err error, notify bool) {
	msg := err.Error()
	if !p.healthy && msg == p.lastProblem {
		return
	}
	p.healthy, p.lastProblem = false, msg
	if !notify {
		return
	}
	if p.set.Load() != nil {
		msg += " (serving the last good flags)"
	}
	p.emit(ctx, openfeature.Event{
		ProviderName: p.name,
		EventType:    openfeature.ProviderError,
		ProviderEventDetails: openfeature.ProviderEventDetails{
			Message:   msg,
			ErrorCode: errorCode(err),
		},
	})
}

// emit delivers an event, waiting for the reader (the SDK drains the
// channel continuously); it gives up when ctx ends (shutdown).
func (p *Provider) emit(ctx context.Context, ev openfeature.Event) {
	select {
	case p.events <- ev:
	case <-ctx.Done():
	}
}

func errorCode(err error) openfeature.ErrorCode {
	if errors.Is(err, flags.ErrInvalid) {
		return openfeature.ParseErrorCode
	}
	return openfeature.GeneralCode
}

func (p *Provider) resolve(flag string, flatCtx openfeature.FlattenedContext) (eval.Resolution, bool) {
	set := p.set.Load()
	if set == nil {
		return eval.Resolution{}, false
	}
	r := set.Resolve(flag, flatCtx, p.now())
	if r.Detail != "" {
		p.log.Debug("targeting fell back to the default variant", "flag", flag, "detail", r.Detail)
	}
	return r, true
}

func detail(r eval.Resolution) openfeature.ProviderResolutionDetail {
	d := openfeature.ProviderResolutionDetail{
		Reason:       r.Reason,
		Variant:      r.Variant,
		FlagMetadata: openfeature.FlagMetadata(r.Metadata),
	}
	if r.ErrorCode != "" {
		d.ResolutionError = resolutionError(r.ErrorCode, r.ErrorMessage)
	}
	return d
}

func resolutionError(code openfeature.ErrorCode, msg string) openfeature.ResolutionError {
	switch code {
	case openfeature.FlagNotFoundCode:
		return openfeature.NewFlagNotFoundResolutionError(msg)
	case openfeature.ParseErrorCode:
		return openfeature.NewParseErrorResolutionError(msg)
	case openfeature.TypeMismatchCode:
		return openfeature.NewTypeMismatchResolutionError(msg)
	case openfeature.ProviderNotReadyCode:
		return openfeature.NewProviderNotReadyResolutionError(msg)
	default:
		return openfeature.NewGeneralResolutionError(msg)
	}
}

func notReady() openfeature.ProviderResolutionDetail {
	return openfeature.ProviderResolutionDetail{
		Reason:          openfeature.ErrorReason,
		ResolutionError: openfeature.NewProviderNotReadyResolutionError("no valid flag file loaded"),
	}
}

func mismatch(flag string, r eval.Resolution, want string) openfeature.ProviderResolutionDetail {
	return openfeature.ProviderResolutionDetail{
		Reason:          openfeature.ErrorReason,
		ResolutionError: openfeature.NewTypeMismatchResolutionError(fmt.Sprintf("flag %q: variant %q is %T, not %s", flag, r.Variant, r.Value, want)),
		FlagMetadata:    openfeature.FlagMetadata(r.Metadata),
	}
}

// BooleanEvaluation resolves a boolean flag.
func (p *Provider) BooleanEvaluation(_ context.Context, flag string, defaultValue bool, flatCtx openfeature.FlattenedContext) openfeature.BoolResolutionDetail {
	r, ok := p.resolve(flag, flatCtx)
	if !ok {
		return openfeature.BoolResolutionDetail{Value: defaultValue, ProviderResolutionDetail: notReady()}
	}
	if r.UseDefault {
		return openfeature.BoolResolutionDetail{Value: defaultValue, ProviderResolutionDetail: detail(r)}
	}
	v, ok := r.Value.(bool)
	if !ok {
		return openfeature.BoolResolutionDetail{Value: defaultValue, ProviderResolutionDetail: mismatch(flag, r, "a boolean")}
	}
	return openfeature.BoolResolutionDetail{Value: v, ProviderResolutionDetail: detail(r)}
}

// StringEvaluation resolves a string flag.
func (p *Provider) StringEvaluation(_ context.Context, flag string, defaultValue string, flatCtx openfeature.FlattenedContext) openfeature.StringResolutionDetail {
	r, ok := p.resolve(flag, flatCtx)
	if !ok {
		return openfeature.StringResolutionDetail{Value: defaultValue, ProviderResolutionDetail: notReady()}
	}
	if r.UseDefault {
		return openfeature.StringResolutionDetail{Value: defaultValue, ProviderResolutionDetail: detail(r)}
	}
	v, ok := r.Value.(string)
	if !ok {
		return openfeature.StringResolutionDetail{Value: defaultValue, ProviderResolutionDetail: mismatch(flag, r, "a string")}
	}
	return openfeature.StringResolutionDetail{Value: v, ProviderResolutionDetail: detail(r)}
}

// FloatEvaluation resolves a number flag as float64.
func (p *Provider) FloatEvaluation(_ context.Context, flag string, defaultValue float64, flatCtx openfeature.FlattenedContext) openfeature.FloatResolutionDetail {
	r, ok := p.resolve(flag, flatCtx)
	if !ok {
		return openfeature.FloatResolutionDetail{Value: defaultValue, ProviderResolutionDetail: notReady()}
	}
	if r.UseDefault {
		return openfeature.FloatResolutionDetail{Value: defaultValue, ProviderResolutionDetail: detail(r)}
	}
	switch v := r.Value.(type) {
	case float64:
		return openfeature.FloatResolutionDetail{Value: v, ProviderResolutionDetail: detail(r)}
	case int64:
		return openfeature.FloatResolutionDetail{Value: float64(v), ProviderResolutionDetail: detail(r)}
	default:
		return openfeature.FloatResolutionDetail{Value: defaultValue, ProviderResolutionDetail: mismatch(flag, r, "a number")}
	}
}

// IntEvaluation resolves a number flag as int64. Numbers with a fraction
// are a TYPE_MISMATCH: coercion is only done when it loses nothing.
func (p *Provider) IntEvaluation(_ context.Context, flag string, defaultValue int64, flatCtx openfeature.FlattenedContext) openfeature.IntResolutionDetail {
	r, ok := p.resolve(flag, flatCtx)
	if !ok {
		return openfeature.IntResolutionDetail{Value: defaultValue, ProviderResolutionDetail: notReady()}
	}
	if r.UseDefault {
		return openfeature.IntResolutionDetail{Value: defaultValue, ProviderResolutionDetail: detail(r)}
	}
	switch v := r.Value.(type) {
	case int64:
		return openfeature.IntResolutionDetail{Value: v, ProviderResolutionDetail: detail(r)}
	case float64:
		if v == math.Trunc(v) && v >= math.MinInt64 && v < math.MaxInt64 {
			return openfeature.IntResolutionDetail{Value: int64(v), ProviderResolutionDetail: detail(r)}
		}
	}
	return openfeature.IntResolutionDetail{Value: defaultValue, ProviderResolutionDetail: mismatch(flag, r, "an integer")}
}

// ObjectEvaluation resolves an object flag; the value is a
// map[string]any owned by the caller.
func (p *Provider) ObjectEvaluation(_ context.Context, flag string, defaultValue any, flatCtx openfeature.FlattenedContext) openfeature.InterfaceResolutionDetail {
	r, ok := p.resolve(flag, flatCtx)
	if !ok {
		return openfeature.InterfaceResolutionDetail{Value: defaultValue, ProviderResolutionDetail: notReady()}
	}
	if r.UseDefault {
		return openfeature.InterfaceResolutionDetail{Value: defaultValue, ProviderResolutionDetail: detail(r)}
	}
	v, ok := r.Value.(map[string]any)
	if !ok {
		return openfeature.InterfaceResolutionDetail{Value: defaultValue, ProviderResolutionDetail: mismatch(flag, r, "an object")}
	}
	return openfeature.InterfaceResolutionDetail{Value: v, ProviderResolutionDetail: detail(r)}
}
