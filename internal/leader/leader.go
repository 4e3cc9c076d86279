// Package leader elects, among the replicas of tailguard, the one that
// decides and writes for each service: a coordination.k8s.io/v1 Lease per
// service. The others keep detecting and serving the read API and the
// status page; their controller steps end at once with a "standby"
// decision (Gate).
//
// The algorithm is client-go's leaderelection: a replica takes the lease
// when it is free or its holder has not renewed it for LeaseDuration (as
// observed on the local clock, so that clock skew between nodes does not
// matter), every write is a compare-and-swap on the Lease's
// resourceVersion, the leader renews every RetryPeriod and steps down when
// it could not renew for RenewDeadline — before the lease expires and
// another replica can take it — and the context its writes run under ends
// then. On shutdown the leader releases the lease so that another takes
// over at once. It is written on the dynamic client because client-go's
// package drags the typed clientset, and with it every Kubernetes API type,
// into the binary (80 MB instead of 30, twice the idle RSS).
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/tailguard/tailguard/controller"
)

// Leases is the coordination.k8s.io/v1 Lease resource.
var Leases = schema.GroupVersionResource{Group: "coordination.k8s.io", Version: "v1", Resource: "leases"}

// LeaseName is the Lease a service's replicas elect their leader with.
func LeaseName(service string) string { return "tailguard-" + service }

// Config is what an election needs.
type Config struct {
	Client              dynamic.Interface
	Namespace, Identity string
	// LeaseDuration > RenewDeadline > RetryPeriod > 0.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

func (c Config) validate() error {
	switch {
	case c.Client == nil || c.Namespace == "" || c.Identity == "":
		return errors.New("client, namespace and identity are required")
	case !(c.RetryPeriod > 0 && c.RetryPeriod < c.RenewDeadline && c.RenewDeadline < c.LeaseDuration):
		return fmt.Errorf("want 0 < retry period (%s) < renew deadline (%s) < lease duration (%s)", c.RetryPeriod, c.RenewDeadline, c.LeaseDuration)
	}
	return nil
}

// Elector is one service's election as seen by this replica.
type Elector struct {
	service string
	cfg     Config
	log     *slog.Logger
	gauge   prometheus.Gauge
	now     func() time.Time

	leading atomic.Bool
	mu      sync.Mutex
	leader  string
	term    context.Context // ends when this replica stops leading
	endTerm context.CancelFunc
	since   time.Time

	// The lease as last observed, and when (local clock).
	observed     lease
	observedTime time.Time
}

// lease is the part of a Lease the election reads.
type lease struct {
	holder          string
	durationSeconds int64
	renewTime       string
	acquireTime     string
	transitions     int64
	resourceVersion string
}

// Electors keeps one election per service until its context ends, so that
// a configuration reload does not hand leadership around.
type Electors struct {
	ctx    context.Context
	log    *slog.Logger
	gauge  *prometheus.GaugeVec
	mu     sync.Mutex
	byName map[string]*Elector
	wg     sync.WaitGroup
}

// NewElectors returns the elections of a replica; they run until ctx ends
// (then the leases held are released).
func NewElectors(ctx context.Context, log *slog.Logger) *Electors {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Electors{ctx: ctx, log: log, byName: map[string]*Elector{},
		gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tailguard_leader",
			Help: "1 while this replica leads a service (decides and writes its flags), 0 while another does.",
		}, []string{"service"})}
}

// Collector exports tailguard_leader{service}.
func (es *Electors) Collector() prometheus.Collector { return es.gauge }

// Wait waits until every election has ended (after the context) and
// released its lease.
func (es *Electors) Wait() { es.wg.Wait() }

// Get returns the service's election, starting it on first use.
func (es *Electors) Get(service string, cfg Config) (*Elector, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("leader election for %s: %w", service, err)
	}
	es.mu.Lock()
	defer es.mu.Unlock()
	if e, ok := es.byName[service]; ok {
		return e, nil
	}
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	e := &Elector{service: service, cfg: cfg, now: time.Now, term: ended, gauge: es.gauge.WithLabelValues(service),
		log: es.log.With("service", service, "lease", LeaseName(service), "identity", cfg.Identity)}
	e.gauge.Set(0)
	es.byName[service] = e
	es.wg.Go(func() { e.run(es.ctx) })
	return e, nil
}

// run campaigns until ctx ends.
func (e *Elector) run(ctx context.Context) {
	t := time.NewTicker(e.cfg.RetryPeriod)
	defer t.Stop()
	var lastRenew time.Time
	for {
		ok, err := e.tryAcquireOrRenew(ctx)
		switch {
		case ok && !e.leading.Load():
			term, end := context.WithCancel(ctx)
			e.mu.Lock()
			e.term, e.endTerm, e.since, e.leader = term, end, e.now(), e.cfg.Identity
			e.mu.Unlock()
			e.leading.Store(true)
			e.gauge.Set(1)
			e.log.Info("leading: this replica decides and writes")
			lastRenew = e.now()
		case ok:
			lastRenew = e.now()
		case e.leading.Load() && e.now().Sub(lastRenew) >= e.cfg.RenewDeadline:
			e.stepDown(fmt.Sprintf("could not renew for %s (%v)", e.cfg.RenewDeadline, err))
		}
		select {
		case <-ctx.Done():
			if e.leading.Load() {
				e.stepDown("shutting down")
				e.release()
			}
			return
		case <-t.C:
		}
	}
}

func (e *Elector) stepDown(why string) {
	e.leading.Store(false)
	e.mu.Lock()
	if e.endTerm != nil {
		e.endTerm()
	}
	e.mu.Unlock()
	e.gauge.Set(0)
	e.log.Warn("stopped leading: no more writes from this replica", "why", why)
}

// tryAcquireOrRenew takes or renews the lease; false when another replica
// holds it (or the API server did not answer).
func (e *Elector) tryAcquireOrRenew(ctx context.Context) (bool, error) {
	// An attempt may take up to half the renew deadline: a slow API server
	// still gets a second attempt before the leader must step down.
	ctx, cancel := context.WithTimeout(ctx, e.cfg.RenewDeadline/2)
	defer cancel()
	leases := e.cfg.Client.Resource(Leases).Namespace(e.cfg.Namespace)
	now := e.now()
	micro := metav1.NewMicroTime(now).UTC().Format(metav1.RFC3339Micro)
	obj, err := leases.Get(ctx, LeaseName(e.service), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		fresh := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
			"metadata": map[string]any{"name": LeaseName(e.service), "namespace": e.cfg.Namespace},
			"spec": map[string]any{
				"holderIdentity": e.cfg.Identity, "leaseDurationSeconds": int64(e.cfg.LeaseDuration / time.Second),
				"acquireTime": micro, "renewTime": micro, "leaseTransitions": int64(0),
			},
		}}
		if _, err := leases.Create(ctx, fresh, metav1.CreateOptions{FieldManager: "tailguard"}); err != nil {
			return false, err
		}
		e.observe(lease{holder: e.cfg.Identity}, now)
		return true, nil
	}
	if err != nil {
		return false, err
	}
	cur := readLease(obj)
	if cur != e.observed {
		e.observe(cur, now)
	}
	e.mu.Lock()
	observedTime := e.observedTime
	e.mu.Unlock()
	duration := time.Duration(cur.durationSeconds) * time.Second
	if cur.holder != "" && cur.holder != e.cfg.Identity && now.Before(observedTime.Add(duration)) {
		return false, nil // held, and not expired as seen here
	}
	spec := map[string]any{
		"holderIdentity": e.cfg.Identity, "leaseDurationSeconds": int64(e.cfg.LeaseDuration / time.Second),
		"renewTime": micro, "acquireTime": cur.acquireTime, "leaseTransitions": cur.transitions,
	}
	if cur.holder != e.cfg.Identity {
		spec["acquireTime"] = micro
		spec["leaseTransitions"] = cur.transitions + 1
	}
	obj.Object["spec"] = spec
	updated, err := leases.Update(ctx, obj, metav1.UpdateOptions{FieldManager: "tailguard"})
	if err != nil {
		return false, err // a conflict: another replica wrote first
	}
	e.observe(readLease(updated), now)
	return true, nil
}

// release gives the lease up on shutdown, as client-go's ReleaseOnCancel.
func (e *Elector) release() {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.RetryPeriod)
	defer cancel()
	leases := e.cfg.Client.Resource(Leases).Namespace(e.cfg.Namespace)
	obj, err := leases.Get(ctx, LeaseName(e.service), metav1.GetOptions{})
	if err != nil || readLease(obj).holder != e.cfg.Identity {
		return
	}
	now := metav1.NewMicroTime(e.now()).UTC().Format(metav1.RFC3339Micro)
	obj.Object["spec"] = map[string]any{"holderIdentity": "", "leaseDurationSeconds": int64(1), "renewTime": now, "acquireTime": now,
		"leaseTransitions": readLease(obj).transitions}
	if _, err := leases.Update(ctx, obj, metav1.UpdateOptions{FieldManager: "tailguard"}); err != nil {
		e.log.Warn("lease not released; another replica takes over when it expires", "err", err)
	}
}

func (e *Elector) observe(l lease, at time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if l.holder != e.observed.holder && l.holder != "" && l.holder != e.cfg.Identity {
		e.log.Info("standby", "leader", l.holder)
	}
	e.observed, e.observedTime = l, at
	e.leader = l.holder
}

func readLease(obj *unstructured.Unstructured) lease {
	l := lease{resourceVersion: obj.GetResourceVersion()}
	l.holder, _, _ = unstructured.NestedString(obj.Object, "spec", "holderIdentity")
	l.durationSeconds, _, _ = unstructured.NestedInt64(obj.Object, "spec", "leaseDurationSeconds")
	l.renewTime, _, _ = unstructured.NestedString(obj.Object, "spec", "renewTime")
	l.acquireTime, _, _ = unstructured.NestedString(obj.Object, "spec", "acquireTime")
	l.transitions, _, _ = unstructured.NestedInt64(obj.Object, "spec", "leaseTransitions")
	return l
}

// Status is what the API and the status page show of an election.
type Status struct {
	Service  string    `json:"service"`
	Leader   string    `json:"leader"`
	Identity string    `json:"identity"`
	Leading  bool      `json:"leading"`
	Since    time.Time `json:"since,omitzero"`
}

// Service returns the service elected for.
func (e *Elector) Service() string { return e.service }

// Leading reports whether this replica leads now.
func (e *Elector) Leading() bool { return e.leading.Load() }

// Status returns the election's state.
func (e *Elector) Status() Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := Status{Service: e.service, Leader: e.leader, Identity: e.cfg.Identity, Leading: e.leading.Load()}
	if st.Leading {
		st.Since = e.since
	}
	return st
}

// Stepper is the controller's Step.
type Stepper interface {
	Step(ctx context.Context, obs controller.Observation, now time.Time) (controller.Decision, error)
}

// Gate lets inner step only while e leads. On the leader the step runs
// under a context that ends when leadership does, so that a write cannot
// outlive the lease; elsewhere it returns a "standby" decision naming the
// leader.
func Gate(inner Stepper, e *Elector) Stepper { return gate{inner: inner, e: e} }

type gate struct {
	inner Stepper
	e     *Elector
}

func (s gate) Step(ctx context.Context, obs controller.Observation, now time.Time) (controller.Decision, error) {
	if !s.e.leading.Load() {
		st := s.e.Status()
		leader := st.Leader
		if leader == "" {
			leader = "no replica yet"
		}
		return controller.Decision{Service: obs.Service, At: now, Kind: controller.DecisionNone,
			Reason: fmt.Sprintf("standby: %s leads %s (lease %s); this replica (%s) decides nothing", leader, obs.Service, LeaseName(obs.Service), st.Identity)}, nil
	}
	s.e.mu.Lock()
	term := s.e.term
	s.e.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(term, cancel)
	defer stop()
	return s.inner.Step(ctx, obs, now)
}
