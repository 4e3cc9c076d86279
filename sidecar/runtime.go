package sidecar

import (
	"errors"
	"net"

	"context"
	"fmt"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/tailguard/tailguard/controller"
	"github.com/tailguard/tailguard/detector"
	"github.com/tailguard/tailguard/detector/changes"
	"github.com/tailguard/tailguard/detector/promapi"
	"github.com/tailguard/tailguard/flags"
	"github.com/tailguard/tailguard/flags/kube"
	"github.com/tailguard/tailguard/grafana"
	"github.com/tailguard/tailguard/internal/kubeclient"
	"github.com/tailguard/tailguard/internal/leader"
	"github.com/tailguard/tailguard/loop"
	"github.com/tailguard/tailguard/querycost"
)

// runtime is everything built from one configuration. It is replaced as a
// whole on reload.
type runtime struct {
	cfg         *Config
	reg         *prometheus.Registry // metrics of this runtime's parts
	store       *flags.Store
	controller  *controller.Controller
	loops       []*loop.Loop
	byName      map[string]*loop.Loop
	annotator   *grafana.Annotator
	querier     detector.Querier
	kubernetes  *kubeclient.Clients // nil without kubernetes
	electors    []*leader.Elector   // one per service with kubernetes
	kubeBackend *kube.Backend       // the flags in the cluster (kubernetes)
	access      *accessCheck        // what the service account may not do (kubernetes)
}

// buildOptions are the long-lived parts a runtime is built with.
type buildOptions struct {
	logger   *slog.Logger
	querier  detector.Querier // overrides the Prometheus client (tests, embedded engine)
	health   *backendHealth   // told the outcome of every query
	states   func(path string) (*controller.FileStates, error)
	declared *changes.Declared
	tracer   trace.Tracer
	actor    string
	previous *runtime // state to carry over
	// kube builds the clients of the kubernetes configuration; kubeHealth
	// is told the outcome of every API call; elect returns a service's
	// leader election (all three only with kubernetes configured).
	kube       func(*KubernetesConfig) (*kubeclient.Clients, error)
	kubeHealth *backendHealth
	elect      func(service string, ec leader.Config) (*leader.Elector, error)
}

// writers dispatches a controller's flag changes to the service's writer.
type writers map[string]*controller.FlagsWriter

// Journaled implements controller.JournalReader for the service's writer.
func (w writers) Journaled(ctx context.Context, service string) ([]controller.JournaledAction, error) {
	fw, ok := w[service]
	if !ok {
		return nil, fmt.Errorf("journal: no flag writer for service %q", service)
	}
	return fw.Journaled(ctx, service)
}

func (w writers) Apply(ctx context.Context, ch controller.FlagChange) (bool, error) {
	fw, ok := w[ch.Service]
	if !ok {
		return false, fmt.Errorf("apply: no flag writer for service %q", ch.Service)
	}
	return fw.Apply(ctx, ch)
}

func build(cfg *Config, o buildOptions) (*runtime, error) {
	rt := &runtime{cfg: cfg, reg: prometheus.NewRegistry(), byName: map[string]*loop.Loop{}}
	var (
		st          *flags.Store
		journalName string
		readJournal func(context.Context) ([]byte, error)
		clients     *kubeclient.Clients
	)
	if k := cfg.Kubernetes; k != nil {
		var err error
		if clients, err = o.kube(k); err != nil {
			return nil, fmt.Errorf("kubernetes: %w", err)
		}
		var kb *kube.Backend
		st, kb, err = kube.NewStore(kube.Config{
			Dynamic: clients.Dynamic, Namespace: clients.Namespace, Name: k.FeatureFlag,
			MaxEntries: k.MaxJournalEntries, Observe: func(err error) { o.kubeHealth.observe(context.Background(), err) },
		}, nil, nil)
		if err != nil {
			return nil, err
		}
		rt.kubeBackend = kb
		journalName = fmt.Sprintf("configmap:%s/%s", clients.Namespace, kb.JournalName())
		readJournal = func(ctx context.Context) ([]byte, error) {
			es, err := kb.Entries(ctx)
			if err != nil {
				return nil, err
			}
			return flags.AppendJournal(nil, es...)
		}
		// An API server that does not answer now is a readiness problem,
		// not a configuration error: the replica starts, reports it, and
		// reads the flags once it answers. A FeatureFlag that is missing
		// or invalid is an error.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = st.Load(ctx)
		cancel()
		if err != nil && !apiUnavailable(err) {
			return nil, fmt.Errorf("kubernetes.feature_flag: %w", err)
		}
		if err != nil {
			o.logger.Warn("the Kubernetes API server does not answer; starting unready", "err", err)
		}
	} else {
		var err error
		if st, err = flags.NewStore(flags.StoreConfig{Path: cfg.FlagFile}); err != nil {
			return nil, fmt.Errorf("flag store: %w", err)
		}
		if _, err := st.Load(context.Background()); err != nil {
			return nil, fmt.Errorf("flag_file: %w", err)
		}
	}
	rt.store = st
	rt.kubernetes = clients
	if clients != nil {
		rt.access = &accessCheck{dyn: clients.Dynamic, namespace: clients.Namespace, log: o.logger}
		rt.access.refresh(context.Background())
	}

	q := o.querier
	if q == nil {
		pc, err := promapi.New(promapi.Config{
			URL: cfg.Prometheus.URL, HTTPClientConfig: cfg.Prometheus.HTTPClientConfig,
			Timeout: time.Duration(cfg.Prometheus.Timeout), Registerer: rt.reg,
		})
		if err != nil {
			return nil, fmt.Errorf("prometheus: %w", err)
		}
		q = pc
	}
	// Every query, the detector's included, tells the health tracker
	// whether Prometheus answers.
	q = watchedQuerier{q: q, h: o.health}
	rt.querier = q

	ws := writers{}
	for i := range cfg.Policy.Services {
		svc := &cfg.Policy.Services[i]
		fw, err := controller.NewFlagsWriter(st, svc)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", svc.Name, err)
		}
		ws[svc.Name] = fw
	}
	if g := cfg.Grafana; g != nil {
		token := ""
		if g.TokenFile != "" {
			b, err := os.ReadFile(g.TokenFile)
			if err != nil {
				return nil, fmt.Errorf("grafana.token_file: %w", err)
			}
			token = strings.TrimSpace(string(b))
		}
		a, err := grafana.New(grafana.Config{URL: g.URL, Token: token, DashboardUID: g.DashboardUID, Tags: g.Tags})
		if err != nil {
			return nil, err
		}
		rt.annotator = a
	}
	var states controller.StateStore
	if cfg.StateFile != "" {
		fs, err := o.states(cfg.StateFile)
		if err != nil {
			return nil, fmt.Errorf("state_file: %w", err)
		}
		states = fs
	}
	ctrl, err := controller.New(controller.Config{
		Policy: cfg.Policy, Writer: ws, Actor: o.actor, Logger: o.logger.With("component", "controller"),
		Registerer: rt.reg, Notifier: escalationNotifier{annotator: rt.annotator, log: o.logger}, States: states,
	})
	if err != nil {
		return nil, err
	}
	if o.previous != nil {
		// Carry the incidents, actions and verification state over a reload.
		for _, svc := range cfg.Policy.Services {
			if _, ok := o.previous.cfg.Policy.Service(svc.Name); ok {
				if err := ctrl.SetState(o.previous.controller.State(svc.Name)); err != nil {
					o.logger.Warn("controller state not carried over", "service", svc.Name, "err", err)
				}
			}
		}
	}
	rt.controller = ctrl

	lm, err := loop.NewMetrics(rt.reg)
	if err != nil {
		return nil, err
	}
	meter, err := querycost.NewMeter(rt.reg)
	if err != nil {
		return nil, err
	}
	for _, sc := range cfg.Services {
		svc, _ := cfg.Policy.Service(sc.Name)
		// Every query of the service is metered: queries, series, samples
		// and time by signal (tailguard_signal_queries_total and the status page).
		q := meter.Wrap(sc.Name, q)
		src, err := detector.NewChangeSourceReading(sc.DetectorConfig, q, journalName, readJournal)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", sc.Name, err)
		}
		all := loop.OwnChangesFiltered(changes.NewMulti(time.Duration(sc.DetectorConfig.Changes.MergeWindow),
			map[string]changes.Source{"configured": src, "api": o.declared}))
		det, err := detector.New(sc.DetectorConfig, q, all)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", sc.Name, err)
		}
		var stepper loop.Stepper = ctrl
		if k := cfg.Kubernetes; k != nil {
			e, err := o.elect(sc.Name, leader.Config{
				Client: clients.Dynamic, Namespace: clients.Namespace, Identity: k.Identity,
				LeaseDuration: time.Duration(k.LeaseDuration), RenewDeadline: time.Duration(k.RenewDeadline), RetryPeriod: time.Duration(k.RetryPeriod),
			})
			if err != nil {
				return nil, fmt.Errorf("service %s: %w", sc.Name, err)
			}
			stepper = leader.Gate(accessGate{inner: ctrl, a: rt.access, ctrl: ctrl, approvals: rt.kubeBackend.Approvals, log: o.logger}, e)
			rt.electors = append(rt.electors, e)
		}
		l, err := loop.New(loop.Config{
			Service: svc, DetectorConfig: det.Config(), Detector: det, Changes: all, Querier: q,
			Flags: ws[sc.Name], Controller: stepper, SLI: sc.SLI, Lookback: time.Duration(sc.Lookback),
			Tracer: o.tracer, Metrics: lm, Logger: o.logger.With("component", "loop"),
		})
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", sc.Name, err)
		}
		rt.loops = append(rt.loops, l)
		rt.byName[sc.Name] = l
	}
	return rt, nil
}

// escalationNotifier hands escalations to people: a log line at error
// level (which log-based alerting picks up), the escalate series of
// tailguard_actions_total (which TailguardEscalated alerts on), and a
// Grafana annotation when configured.
type escalationNotifier struct {
	annotator *grafana.Annotator
	log       *slog.Logger
}

func (n escalationNotifier) Escalate(ctx context.Context, e controller.Escalation) error {
	n.log.Error("escalating to people", "service", e.Service, "incident", e.IncidentID, "cause", e.Cause.String(), "summary", e.Summary)
	if n.annotator == nil {
		return nil
	}
	_, err := n.annotator.Annotate(ctx, grafana.Annotation{
		Time: time.Now(), Text: fmt.Sprintf("tailguard escalation %s: %s", e.IncidentID, e.Summary),
		Tags: []string{"escalate", e.Service},
	})
	return err
}

// apiUnavailable tells an API server that did not answer from one that
// refused or lacked the object.
func apiUnavailable(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) || utilnet.IsConnectionRefused(err) ||
		utilnet.IsProbableEOF(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err)
}
