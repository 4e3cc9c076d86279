// Package service simulates the demo service `shop` request by request, in
// virtual time: endpoints with their own latency, one of which calls a
// third-party upstream through tailguard's backoff.Retrier, several pods
// with their own Prometheus registry and flag binding, and an upstream with
// transient and persistent failures, rate limiting with Retry-After,
// load-dependent failures, brown-outs and latency drift.
//
// Nothing waits in real time. Each request has its own virtual timeline:
// the retrier's Clock is virtual, so a backoff sleep just moves the
// request's clock forward. Requests are simulated in arrival order; metrics
// are recorded when a request is simulated, so a request is counted in the
// scrape after its arrival, seconds before a real service would count it.
//
// Randomness comes from per-request streams derived from the seed (see
// random.go), so a run is reproducible and runs under different policies
// are paired.
package service

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tailguard/tailguard/backoff"
)

// DefaultBuckets are the classic buckets of http_request_duration_seconds.
// They contain the SLO thresholds of the demo policy (0.3s and 0.4s), so
// that an SLI can count requests above them exactly.
var DefaultBuckets = []float64{.005, .01, .025, .05, .075, .1, .15, .2, .25, .3, .4, .5, .6, .8, 1, 1.5, 2, 3, 5, 10}

// EndpointConfig describes one endpoint.
type EndpointConfig struct {
	// Name is the endpoint label, e.g. "/checkout".
	Name string
	// Rate is the request rate over all pods, per second, at traffic
	// factor 1.
	Rate float64
	// Latency is the endpoint's own processing time; an upstream call, if
	// any, comes on top of it.
	Latency LogNormal
	// CallsUpstream makes every request call the upstream.
	CallsUpstream bool
	// ErrorProbability is the chance of an internal error (500).
	ErrorProbability float64
}

// Component is a versioned part of the service, exported as
// <metric>{version="..."} 1.
type Component struct {
	Name    string
	Metric  string
	Version string
}

// Effect is what running a component version does to a pod. Zero factors
// mean 1.
type Effect struct {
	// Latency multiplies the endpoints' own latency.
	Latency float64
	// UpstreamLatency multiplies the latency of the pod's upstream attempts
	// (a client library change, for example).
	UpstreamLatency float64
}

func factor(f float64) float64 {
	if f == 0 {
		return 1
	}
	return f
}

// Reloader re-reads a pod's policy from wherever it comes from;
// *flagbind.Binding implements it.
type Reloader interface {
	Reload(ctx context.Context) error
}

// Binder connects a new pod's retrier to its policy source and registers
// the source's metrics with reg. The simulator binds every pod to the flag
// file through flagbind and the OpenFeature provider, with the pod name as
// targeting key.
type Binder func(pod string, r *backoff.Retrier, reg prometheus.Registerer) (Reloader, error)

// Record describes one simulated request.
type Record struct {
	Endpoint string
	Pod      string
	Strategy string
	Start    time.Time
	Latency  time.Duration
	Code     int
	// Attempts is the number of upstream attempts, 0 without a call.
	Attempts int
}

// Config configures a Service.
type Config struct {
	// Pods is the number of pods, named <PodPrefix>-0 … <PodPrefix>-<n-1>.
	Pods      int
	PodPrefix string
	Endpoints []EndpointConfig
	Upstream  UpstreamConfig
	// Components are exported as build info metrics.
	Components []Component
	// VersionComponent names the component whose version is the version
	// label of the request metrics.
	VersionComponent string
	// Traffic returns the traffic factor at a time; nil means 1.
	Traffic func(time.Time) float64
	// Warmup is how long a restarted pod is slower, by WarmupFactor.
	Warmup       time.Duration
	WarmupFactor float64
	// Buckets are the classic buckets; default DefaultBuckets.
	Buckets []float64
	// NativeOnly drops the classic buckets: the request histogram is a
	// native histogram only, as on services that migrated.
	NativeOnly bool
	Brownouts  []Brownout
	Shifts     []LatencyShift
	// Default is the policy a pod uses until its binding reads one.
	Default backoff.Config
	// Bind binds each new pod's retrier; nil keeps Default.
	Bind Binder
	// Observe, if set, is called for every request.
	Observe func(Record)
	Seed    uint64
	// Start is the virtual time the simulation starts at.
	Start time.Time
}

var nameRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

func (c *Config) validate() error {
	if c.Pods < 1 || c.Pods > 256 {
		return fmt.Errorf("pods: %d is outside [1, 256]", c.Pods)
	}
	if c.PodPrefix == "" {
		return errors.New("pod prefix is empty")
	}
	if len(c.Endpoints) == 0 {
		return errors.New("endpoints: none")
	}
	seen := map[string]bool{}
	for i, e := range c.Endpoints {
		switch {
		case e.Name == "" || seen[e.Name]:
			return fmt.Errorf("endpoints[%d]: name %q is empty or used twice", i, e.Name)
		case !(e.Rate >= 0):
			return fmt.Errorf("endpoints[%d]: rate %v is negative", i, e.Rate)
		case e.Latency.Median <= 0 || e.Latency.Sigma < 0:
			return fmt.Errorf("endpoints[%d]: latency needs a positive median and a non-negative sigma", i)
		case !(e.ErrorProbability >= 0 && e.ErrorProbability <= 1):
			return fmt.Errorf("endpoints[%d]: error probability %v is not a probability", i, e.ErrorProbability)
		}
		seen[e.Name] = true
	}
	for i, comp := range c.Components {
		if comp.Name == "" || comp.Version == "" || !nameRE.MatchString(comp.Metric) {
			return fmt.Errorf("components[%d]: needs a name, a version and a valid metric name", i)
		}
	}
	if c.WarmupFactor == 0 {
		c.WarmupFactor = 1
	}
	if c.NativeOnly {
		c.Buckets = []float64{}
	} else if c.Buckets == nil {
		c.Buckets = DefaultBuckets
	}
	if c.Start.IsZero() {
		return errors.New("start time is zero")
	}
	if _, err := backoff.New(c.Default); err != nil {
		return fmt.Errorf("default policy: %w", err)
	}
	return nil
}

// Service is the simulated service. It is not safe for concurrent use.
type Service struct {
	cfg      Config
	up       *upstream
	pods     []*Pod
	now      time.Time
	next     []time.Time // next arrival per endpoint
	count    []uint64    // arrivals per endpoint so far
	arrivals []rng
	req      rng
	upRate   float64 // rate of upstream-calling requests at factor 1
}

// New validates cfg and starts the service's pods at cfg.Start.
func New(cfg Config) (*Service, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	up, err := newUpstream(cfg.Upstream, cfg.Seed, cfg.Start, cfg.Brownouts, cfg.Shifts)
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	s := &Service{
		cfg: cfg, up: up, now: cfg.Start,
		next:     make([]time.Time, len(cfg.Endpoints)),
		count:    make([]uint64, len(cfg.Endpoints)),
		arrivals: make([]rng, len(cfg.Endpoints)),
	}
	for i, e := range cfg.Endpoints {
		s.arrivals[i].seed(cfg.Seed, streamArrivals, uint64(i))
		s.next[i] = s.nextArrival(i, cfg.Start)
		if e.CallsUpstream {
			s.upRate += e.Rate
		}
	}
	versions := map[string]string{}
	for _, c := range cfg.Components {
		versions[c.Name] = c.Version
	}
	for i := range cfg.Pods {
		p, err := s.newPod(context.Background(), i, versions, map[string]Effect{}, cfg.Start, false)
		if err != nil {
			return nil, err
		}
		s.pods = append(s.pods, p)
	}
	return s, nil
}

func (s *Service) traffic(t time.Time) float64 {
	if s.cfg.Traffic == nil {
		return 1
	}
	return max(0, s.cfg.Traffic(t))
}

// nextArrival draws the arrival after t of endpoint i. With a time-varying
// rate the gap is drawn at the rate of t, which is exact enough for rates
// that change over minutes; a zero rate is polled every second.
func (s *Service) nextArrival(i int, t time.Time) time.Time {
	r := &s.arrivals[i]
	u := r.float()
	rate := s.cfg.Endpoints[i].Rate * s.traffic(t)
	if !(rate > 0) {
		return t.Add(time.Second)
	}
	gap := time.Duration(-logOneMinus(u) / rate * float64(time.Second))
	return t.Add(max(gap, time.Microsecond))
}

// Now returns the virtual time the service has been simulated up to.
func (s *Service) Now() time.Time { return s.now }

// Pods returns the pods in index order.
func (s *Service) Pods() []*Pod { return s.pods }

// Advance simulates every request arriving in [Now, to).
func (s *Service) Advance(ctx context.Context, to time.Time) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		e := -1
		for i, t := range s.next {
			if t.Before(to) && (e < 0 || t.Before(s.next[e])) {
				e = i
			}
		}
		if e < 0 {
			break
		}
		at := s.next[e]
		s.serve(ctx, e, at)
		s.next[e] = s.nextArrival(e, at)
	}
	if to.After(s.now) {
		s.now = to
	}
	return nil
}

// serve simulates one request of endpoint e arriving at a.
func (s *Service) serve(ctx context.Context, e int, a time.Time) {
	ep := &s.cfg.Endpoints[e]
	id := uint64(e)<<40 | s.count[e]
	s.count[e]++
	r := &s.req
	r.seed(s.cfg.Seed, streamRequest, id)
	pod := s.pods[int(r.float()*float64(len(s.pods)))%len(s.pods)]
	own := time.Duration(float64(ep.Latency.at(r.normal())) * pod.latencyFactor(a))
	persistent := r.float() < s.cfg.Upstream.PersistentProbability
	var persistFor time.Duration
	if s.cfg.Upstream.PersistentDuration > 0 {
		persistFor = r.exp(s.cfg.Upstream.PersistentDuration)
	}
	internalError := r.float() < ep.ErrorProbability

	policy := pod.retrier.Policy()
	strategy := policy.Strategy().String()
	end, code, attempts := a.Add(own), 200, 0
	if ep.CallsUpstream {
		start := a.Add(own / 2)
		c := &pod.call
		*c = call{}
		c.rng.seed(s.cfg.Seed, streamAttempts, id)
		if persistent {
			c.persistentUntil = start.Add(persistFor).UnixNano()
		}
		pod.clock.now = start
		pod.rand.seed(s.cfg.Seed, streamRetrier, id)
		s.up.setFrontier(a, s.upRate*s.traffic(a))
		if err := pod.retrier.Do(ctx, pod.attempt); err != nil {
			code = 502
		}
		attempts = c.attempts
		end = pod.clock.now.Add(own - own/2)
	}
	if internalError {
		code = 500
	}
	lat := end.Sub(a)
	pod.observe(ep.Name, strategy, code, lat)
	if s.cfg.Observe != nil {
		s.cfg.Observe(Record{Endpoint: ep.Name, Pod: pod.name, Strategy: strategy, Start: a, Latency: lat, Code: code, Attempts: attempts})
	}
}

// Reload makes every pod re-read its policy, and returns the errors of the
// pods that kept their last good policy.
func (s *Service) Reload(ctx context.Context) error {
	var errs []error
	for _, p := range s.pods {
		if p.binding == nil {
			continue
		}
		if err := p.binding.Reload(ctx); err != nil {
			errs = append(errs, fmt.Errorf("pod %s: %w", p.name, err))
		}
	}
	return errors.Join(errs...)
}

// Upgrade sets a pod's component version, with the effect the new version
// has. With restart the pod restarts at t: fresh registry (counters start
// from zero, as after a real restart), fresh retrier that reads its policy
// at start, and a warm-up period.
func (s *Service) Upgrade(ctx context.Context, pod int, component, version string, effect Effect, restart bool, t time.Time) error {
	if pod < 0 || pod >= len(s.pods) {
		return fmt.Errorf("upgrade: pod %d does not exist", pod)
	}
	p := s.pods[pod]
	if _, ok := p.versions[component]; !ok {
		return fmt.Errorf("upgrade: unknown component %q", component)
	}
	versions := cloneMap(p.versions)
	effects := cloneMap(p.effects)
	versions[component] = version
	effects[component] = effect
	if !restart {
		p.setVersions(versions, effects)
		return nil
	}
	np, err := s.newPod(ctx, pod, versions, effects, t, true)
	if err != nil {
		return err
	}
	s.pods[pod] = np
	return nil
}

// Versions returns the component versions a pod runs.
func (s *Service) Versions(pod int) map[string]string { return cloneMap(s.pods[pod].versions) }

func cloneMap[V any](m map[string]V) map[string]V {
	out := make(map[string]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
