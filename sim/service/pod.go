package service

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tailguard/tailguard/backoff"
)

// vclock is a pod's virtual clock: the timeline of the request being
// simulated. Sleep moves it forward without waiting.
type vclock struct{ now time.Time }

func (c *vclock) Now() time.Time { return c.now }

func (c *vclock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d > 0 {
		c.now = c.now.Add(d)
	}
	return nil
}

type obsKey struct{ endpoint, strategy, version string }
type reqKey struct {
	endpoint string
	code     int
}

// Pod is one instance of the service, with its own registry, retrier and
// policy binding.
type Pod struct {
	svc     *Service
	name    string
	reg     *prometheus.Registry
	retrier *backoff.Retrier
	binding Reloader
	clock   vclock
	rand    rng
	call    call
	attempt func(context.Context) error

	duration *prometheus.HistogramVec
	requests *prometheus.CounterVec
	builds   map[string]*prometheus.GaugeVec
	obs      map[obsKey]prometheus.Observer
	reqs     map[reqKey]prometheus.Counter

	versions      map[string]string
	effects       map[string]Effect
	ownFactor     float64
	upFactor      float64
	warmUntil     time.Time
	versionMetric string
}

// Name returns the pod's name, its targeting key and pod label.
func (p *Pod) Name() string { return p.name }

// Registry returns the pod's metrics registry.
func (p *Pod) Registry() *prometheus.Registry { return p.reg }

// Policy returns the backoff policy the pod uses now.
func (p *Pod) Policy() *backoff.Policy { return p.retrier.Policy() }

func (s *Service) newPod(ctx context.Context, index int, versions map[string]string, effects map[string]Effect, t time.Time, restarted bool) (*Pod, error) {
	name := s.cfg.PodPrefix + "-" + strconv.Itoa(index)
	p := &Pod{
		svc:  s,
		name: name,
		reg:  prometheus.NewRegistry(),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:                            "http_request_duration_seconds",
			Help:                            "Time to serve an HTTP request, upstream calls and retries included.",
			Buckets:                         s.cfg.Buckets,
			NativeHistogramBucketFactor:     1.1,
			NativeHistogramMaxBucketNumber:  160,
			NativeHistogramMinResetDuration: time.Hour,
		}, []string{"endpoint", "strategy", "version"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_requests_total",
			Help: "HTTP requests served, by endpoint and status code.",
		}, []string{"endpoint", "code"}),
		builds: map[string]*prometheus.GaugeVec{},
		obs:    map[obsKey]prometheus.Observer{},
		reqs:   map[reqKey]prometheus.Counter{},
	}
	if restarted && s.cfg.Warmup > 0 {
		p.warmUntil = t.Add(s.cfg.Warmup)
	}
	p.reg.MustRegister(p.duration, p.requests)
	for _, c := range s.cfg.Components {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: c.Metric,
			Help: fmt.Sprintf("Build information of %s (value 1).", c.Name),
		}, []string{"version"})
		p.reg.MustRegister(g)
		p.builds[c.Name] = g
	}
	m, err := backoff.NewMetrics(p.reg)
	if err != nil {
		return nil, err
	}
	p.retrier, err = backoff.NewRetrier(backoff.RetrierConfig{
		Policy:   backoff.MustNew(s.cfg.Default),
		Upstream: s.cfg.Upstream.Name,
		Metrics:  m,
		Clock:    &p.clock,
		Rand:     &p.rand,
	})
	if err != nil {
		return nil, err
	}
	p.attempt = func(context.Context) error {
		lat, err := s.up.attempt(p.clock.now, &p.call, p.upFactor)
		p.clock.now = p.clock.now.Add(lat)
		return err
	}
	if s.cfg.Bind != nil {
		if p.binding, err = s.cfg.Bind(name, p.retrier, p.reg); err != nil {
			return nil, fmt.Errorf("bind pod %s: %w", name, err)
		}
		// A pod reads its flags at start; if they are unusable it runs
		// with its default policy, as a real service would.
		_ = p.binding.Reload(ctx)
	}
	p.setVersions(versions, effects)
	return p, nil
}

func (p *Pod) setVersions(versions map[string]string, effects map[string]Effect) {
	p.versions, p.effects = versions, effects
	p.ownFactor, p.upFactor = 1, 1
	for _, e := range effects {
		p.ownFactor *= factor(e.Latency)
		p.upFactor *= factor(e.UpstreamLatency)
	}
	for name, g := range p.builds {
		g.Reset()
		g.WithLabelValues(versions[name]).Set(1)
	}
	p.versionMetric = versions[p.svc.cfg.VersionComponent]
	clear(p.obs)
}

func (p *Pod) latencyFactor(t time.Time) float64 {
	f := p.ownFactor
	if t.Before(p.warmUntil) {
		f *= p.svc.cfg.WarmupFactor
	}
	return f
}

func (p *Pod) observe(endpoint, strategy string, code int, lat time.Duration) {
	k := obsKey{endpoint, strategy, p.versionMetric}
	o, ok := p.obs[k]
	if !ok {
		o = p.duration.WithLabelValues(endpoint, strategy, p.versionMetric)
		p.obs[k] = o
	}
	o.Observe(lat.Seconds())
	rk := reqKey{endpoint, code}
	c, ok := p.reqs[rk]
	if !ok {
		c = p.requests.WithLabelValues(endpoint, strconv.Itoa(code))
		p.reqs[rk] = c
	}
	c.Inc()
}

// logOneMinus returns log(1−u) for u in [0, 1).
func logOneMinus(u float64) float64 { return math.Log1p(-u) }
