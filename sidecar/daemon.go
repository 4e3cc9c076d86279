package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/tailguard/tailguard/controller"
	"github.com/tailguard/tailguard/detector"
	"github.com/tailguard/tailguard/detector/changes"
	"github.com/tailguard/tailguard/grafana"
	"github.com/tailguard/tailguard/internal/kubeclient"
	"github.com/tailguard/tailguard/internal/leader"
	"github.com/tailguard/tailguard/loop"
	"github.com/tailguard/tailguard/status"
	"github.com/tailguard/tailguard/webhook"
)

// Options configure a Daemon.
type Options struct {
	// ConfigFile is the configuration file. Required.
	ConfigFile string
	// Registerer and Gatherer are the process's registry: the daemon's
	// own metrics go there, and /metrics serves it together with the
	// metrics of the current runtime.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// Logger logs; nil logs nothing.
	Logger *slog.Logger
	// Querier replaces the Prometheus client built from the configuration
	// (the embedded engine, tests).
	Querier detector.Querier
	// Kubernetes replaces the clients built from the kubernetes
	// configuration (tests).
	Kubernetes func(*KubernetesConfig) (*kubeclient.Clients, error)
	// TracerProvider traces cycles; nil traces nothing.
	TracerProvider trace.TracerProvider
	// Actor names this replica in decisions, e.g. the pod name.
	Actor string
	// Version is shown on the status page.
	Version string
	// Now returns the time cycles are evaluated at; nil means time.Now.
	Now func() time.Time
	// CycleTimeout bounds one cycle, including its flag write. A shutdown
	// waits for the cycle in flight at most this long. Default 2m.
	CycleTimeout time.Duration
}

// Daemon is the running sidecar.
type Daemon struct {
	opts     Options
	log      *slog.Logger
	tracer   trace.Tracer
	now      func() time.Time
	declared *changes.Declared
	receiver *webhook.Receiver
	renderer *status.Renderer

	rt      atomic.Pointer[runtime]
	reloadM sync.Mutex

	ready      atomic.Bool
	mu         sync.Mutex
	lastAlert  map[string]time.Time // service → last alert-triggered cycle
	annotated  map[string]bool      // idempotency keys already annotated
	lastErrors map[string]string
	health     *backendHealth
	kubeHealth *backendHealth                    // the Kubernetes API server (kubernetes configured)
	states     map[string]*controller.FileStates // by path, shared by the runtimes
	// electors elect the leader of each service (kubernetes configured);
	// they run until Close.
	electors *leader.Electors
	stopBg   context.CancelFunc

	metrics daemonMetrics
}

type daemonMetrics struct {
	reloadOK    prometheus.Gauge
	reloadTime  prometheus.Gauge
	ready       prometheus.Gauge
	flagVariant *prometheus.GaugeVec
	annotations *prometheus.CounterVec
	triggers    *prometheus.CounterVec
}

// New loads the configuration and builds the first runtime. A bad
// configuration at start is an error: there is no last good one to keep.
func New(o Options) (*Daemon, error) {
	if o.ConfigFile == "" {
		return nil, errors.New("config file: required")
	}
	if o.Registerer == nil || o.Gatherer == nil {
		reg := prometheus.NewRegistry()
		o.Registerer, o.Gatherer = reg, reg
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CycleTimeout == 0 {
		o.CycleTimeout = 2 * time.Minute
	}
	if o.Actor == "" {
		o.Actor = "tailguard"
	}
	tp := o.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	d := &Daemon{
		opts: o, log: o.Logger, tracer: tp.Tracer("github.com/tailguard/tailguard/loop"), now: o.Now,
		declared: changes.NewDeclared(256), lastAlert: map[string]time.Time{}, annotated: map[string]bool{},
		lastErrors: map[string]string{}, health: newBackendHealth(o.Now), states: map[string]*controller.FileStates{},
		kubeHealth: newKubeHealth(o.Now),
	}
	bg, stop := context.WithCancel(context.Background())
	d.stopBg = stop
	d.electors = leader.NewElectors(bg, o.Logger.With("component", "leader-election"))
	r, err := status.NewRenderer()
	if err != nil {
		return nil, err
	}
	d.renderer = r
	if err := d.registerMetrics(); err != nil {
		return nil, err
	}
	cfg, err := LoadConfig(o.ConfigFile)
	if err != nil {
		d.metrics.reloadOK.Set(0)
		return nil, err
	}
	recv, err := webhook.New(webhook.Config{
		QueueSize: cfg.Webhook.QueueSize, MaxBodyBytes: cfg.Webhook.MaxBodyBytes,
		DedupWindow: time.Duration(cfg.Webhook.DedupWindow), Registerer: o.Registerer,
	})
	if err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	d.receiver = recv
	rt, err := build(cfg, d.buildOptions(nil))
	if err != nil {
		d.metrics.reloadOK.Set(0)
		return nil, err
	}
	d.rt.Store(rt)
	d.metrics.reloadOK.Set(1)
	d.metrics.reloadTime.SetToCurrentTime()
	return d, nil
}

func (d *Daemon) registerMetrics() error {
	m := daemonMetrics{
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tailguard_config_last_reload_successful",
			Help: "1 if the last configuration load succeeded, 0 if it failed and the previous configuration is still in force.",
		}),
		reloadTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tailguard_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful configuration load.",
		}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tailguard_ready",
			Help: "1 once Prometheus answered a query, 0 before.",
		}),
		flagVariant: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tailguard_flag_variant_info",
			Help: "1 for the variant a flag currently serves by default, per the strategy and constants flags of the policy.",
		}, []string{"flag", "variant"}),
		annotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailguard_annotations_total",
			Help: "Grafana annotations posted for actions, by result (ok, error).",
		}, []string{"result"}),
		triggers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailguard_alert_triggers_total",
			Help: "Alertmanager alerts received for a service, by outcome (evaluated, throttled, resolved, unknown_service).",
		}, []string{"outcome"}),
	}
	for _, c := range []prometheus.Collector{m.reloadOK, m.reloadTime, m.ready, m.flagVariant, m.annotations, m.triggers, d.health.gauge, d.kubeHealth.gauge, d.electors.Collector()} {
		if err := d.opts.Registerer.Register(c); err != nil {
			return fmt.Errorf("register sidecar metrics: %w", err)
		}
	}
	d.metrics = m
	return nil
}

func (d *Daemon) buildOptions(prev *runtime) buildOptions {
	return buildOptions{logger: d.log, querier: d.opts.Querier, health: d.health, states: d.stateStore, declared: d.declared, tracer: d.tracer, actor: d.opts.Actor, previous: prev,
		kube: d.kubeClients, kubeHealth: d.kubeHealth, elect: d.electors.Get}
}

// kubeClients builds the clients of a kubernetes configuration
// (Options.Kubernetes overrides it in tests).
func (d *Daemon) kubeClients(k *KubernetesConfig) (*kubeclient.Clients, error) {
	if d.opts.Kubernetes != nil {
		return d.opts.Kubernetes(k)
	}
	rc, ns, err := kubeclient.Load(k.Kubeconfig, k.Namespace)
	if err != nil {
		return nil, err
	}
	return kubeclient.New(rc, ns)
}

// Close stops the leader elections, releasing the leases this replica
// holds so that another replica takes over at once. Run calls it when it
// returns.
func (d *Daemon) Close() { d.stopBg() }

// stateStore returns the state store at path, one per path for the
// daemon's life, so that a runtime being replaced and its successor never
// write the file from two different pictures of the states.
func (d *Daemon) stateStore(path string) (*controller.FileStates, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s, ok := d.states[path]; ok {
		return s, nil
	}
	s, err := controller.NewFileStates(path)
	if err != nil {
		return nil, err
	}
	d.states[path] = s
	return s, nil
}

// Reload reads the configuration again and swaps in a new runtime. On
// error the current runtime keeps running.
func (d *Daemon) Reload() error {
	d.reloadM.Lock()
	defer d.reloadM.Unlock()
	cfg, err := LoadConfig(d.opts.ConfigFile)
	if err == nil {
		var rt *runtime
		if rt, err = build(cfg, d.buildOptions(d.rt.Load())); err == nil {
			d.rt.Store(rt)
		}
	}
	if err != nil {
		d.metrics.reloadOK.Set(0)
		d.log.Error("configuration reload failed; keeping the previous configuration", "err", err)
		return err
	}
	d.metrics.reloadOK.Set(1)
	d.metrics.reloadTime.SetToCurrentTime()
	d.log.Info("configuration reloaded", "file", d.opts.ConfigFile)
	return nil
}

// Ready reports whether Prometheus has answered and, with kubernetes
// configured, the API server too (the flags were read once). Like the
// Prometheus part, it stays true when the API server goes away later: the
// sidecar shares the service's pod, and a control-plane outage must not
// take every pod of the service out of rotation. The outage is reported
// instead (degraded, /-/ready's body, tailguard_kubernetes_up, the status
// page), and nothing is written meanwhile.
func (d *Daemon) Ready() bool { return d.ready.Load() && d.kubeStarted() }

func (d *Daemon) kubeStarted() bool {
	return d.rt.Load().cfg.Kubernetes == nil || d.kubeHealth.answeredOnce()
}

func (d *Daemon) kubeReady() bool {
	return d.rt.Load().cfg.Kubernetes == nil || d.kubeHealth.status().Up
}

// notReady says why the replica is not ready, or "".
func (d *Daemon) notReady() string {
	switch {
	case !d.ready.Load():
		return "Prometheus has not answered yet"
	case !d.kubeStarted():
		st := d.kubeHealth.status()
		return "the Kubernetes API server has not answered yet (" + st.Error + ")"
	}
	return ""
}

// degraded says what a ready replica cannot do now, or "".
func (d *Daemon) degraded() string {
	if !d.kubeReady() {
		st := d.kubeHealth.status()
		return "the Kubernetes API server does not answer (" + st.Error + "): no flag is read or written until it does"
	}
	return ""
}

// WaitReady queries Prometheus until it answers or ctx ends.
func (d *Daemon) WaitReady(ctx context.Context) error {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, _, err := d.rt.Load().querier.Query(qctx, "vector(1)", d.now())
		cancel()
		if err == nil {
			d.ready.Store(true)
			d.metrics.ready.Set(1)
			d.log.Info("Prometheus answered; ready")
			return nil
		}
		d.log.Debug("Prometheus not answering yet", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Run runs the control loop until ctx ends: a cycle of every service each
// evaluation interval, and an immediate cycle of a service when an alert
// for it fires. A cycle in flight when ctx ends runs to completion (within
// CycleTimeout), so a flag write is never cut off.
func (d *Daemon) Run(ctx context.Context) error {
	defer d.Close()
	go func() { _ = d.WaitReady(ctx) }()
	interval := time.Duration(d.rt.Load().cfg.EvaluationInterval)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			d.CycleAll(ctx, "interval")
			if iv := time.Duration(d.rt.Load().cfg.EvaluationInterval); iv != interval {
				interval = iv
				ticker.Reset(interval)
			}
		case t := <-d.receiver.C():
			d.onAlert(ctx, t)
		}
	}
}

// CycleAll runs one cycle of every service.
func (d *Daemon) CycleAll(ctx context.Context, trigger string) {
	rt := d.rt.Load()
	for _, l := range rt.loops {
		d.cycle(ctx, rt, l, trigger)
	}
}

// Evaluate runs one cycle of a service now.
func (d *Daemon) Evaluate(ctx context.Context, service, trigger string) (loop.Result, error) {
	rt := d.rt.Load()
	l, ok := rt.byName[service]
	if !ok {
		return loop.Result{}, fmt.Errorf("evaluate: unknown service %q", service)
	}
	return d.cycle(ctx, rt, l, trigger)
}

func (d *Daemon) cycle(ctx context.Context, rt *runtime, l *loop.Loop, trigger string) (loop.Result, error) {
	// Detached from ctx: a shutdown must not cut a flag write short.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.opts.CycleTimeout)
	defer cancel()
	res, err := l.Cycle(cctx, d.now(), trigger)
	d.mu.Lock()
	if err != nil {
		d.lastErrors[l.Service()] = err.Error()
	} else {
		delete(d.lastErrors, l.Service())
	}
	d.mu.Unlock()
	if err == nil {
		d.recordFlags(rt, res)
		d.annotate(ctx, rt, res)
	}
	return res, err
}

func (d *Daemon) recordFlags(rt *runtime, res loop.Result) {
	svc, ok := rt.cfg.Policy.Service(res.Service)
	if !ok {
		return
	}
	key := svc.Flags.Strategy.Key
	fs := res.Observation.Flags
	for _, v := range []string{svc.Flags.Strategy.NewVariant, svc.Flags.Strategy.OldVariant} {
		d.metrics.flagVariant.DeleteLabelValues(key, v)
	}
	if fs.DefaultVariant != "" {
		d.metrics.flagVariant.WithLabelValues(key, fs.DefaultVariant).Set(1)
	}
}

// annotate posts a Grafana annotation for an applied action, once per
// idempotency key.
func (d *Daemon) annotate(ctx context.Context, rt *runtime, res loop.Result) {
	if rt.annotator == nil || res.Decision.Kind != controller.DecisionAct || res.Decision.Change == nil {
		return
	}
	key := res.Decision.Change.IdempotencyKey
	d.mu.Lock()
	done := d.annotated[key]
	d.annotated[key] = true
	d.mu.Unlock()
	if done {
		return
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_, err := rt.annotator.Annotate(actx, grafana.Annotation{
		Time: res.At,
		Text: fmt.Sprintf("%s %s (%s): %s", res.Decision.Rung, res.Service, res.Decision.IncidentID, res.Decision.Reason),
		Tags: []string{"action", string(res.Decision.Rung), res.Service},
	})
	if err != nil {
		d.metrics.annotations.WithLabelValues("error").Inc()
		d.log.Warn("grafana annotation failed", "err", err)
		return
	}
	d.metrics.annotations.WithLabelValues("ok").Inc()
}

// onAlert evaluates the alert's service now, at most once per
// webhook.min_interval; resolved alerts are recorded only.
func (d *Daemon) onAlert(ctx context.Context, t webhook.Trigger) {
	rt := d.rt.Load()
	log := d.log.With("alert", t.AlertName, "service", t.Service, "status", t.Status)
	if t.Status == webhook.StatusResolved {
		d.metrics.triggers.WithLabelValues("resolved").Inc()
		log.Info("alert resolved")
		return
	}
	l, ok := rt.byName[t.Service]
	if !ok {
		d.metrics.triggers.WithLabelValues("unknown_service").Inc()
		log.Warn("alert for a service not in the configuration")
		return
	}
	now := d.now()
	d.mu.Lock()
	last := d.lastAlert[t.Service]
	throttled := now.Sub(last) < time.Duration(rt.cfg.Webhook.MinInterval)
	if !throttled {
		d.lastAlert[t.Service] = now
	}
	d.mu.Unlock()
	if throttled {
		d.metrics.triggers.WithLabelValues("throttled").Inc()
		log.Debug("alert-triggered cycle throttled")
		return
	}
	d.metrics.triggers.WithLabelValues("evaluated").Inc()
	log.Info("alert fired: evaluating now")
	_, _ = d.cycle(ctx, rt, l, "alert "+t.AlertName)
}

// Declare records a declared change (an upgrade manifest posted by CI/CD).
func (d *Daemon) Declare(m changes.Manifest, source string) error {
	return d.declared.Add(m, source)
}

// Receiver is the Alertmanager webhook handler.
func (d *Daemon) Receiver() *webhook.Receiver { return d.receiver }

// Controller returns the current runtime's controller.
func (d *Daemon) Controller() *controller.Controller { return d.rt.Load().controller }

// Results returns the last cycle result of every service.
func (d *Daemon) Results() []loop.Result {
	var out []loop.Result
	for _, l := range d.rt.Load().loops {
		if r, ok := l.Last(); ok {
			out = append(out, r)
		}
	}
	return out
}

// Gatherer returns the process's metrics and the current runtime's.
func (d *Daemon) Gatherer() prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		return prometheus.Gatherers{d.opts.Gatherer, d.rt.Load().reg}.Gather()
	})
}
