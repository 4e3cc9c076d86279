package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tailguard/tailguard/backoff"
	"github.com/tailguard/tailguard/backoff/flagbind"
	"github.com/tailguard/tailguard/flags/provider"
)

// Endpoints of the shop.
const (
	endpointCheckout = "/checkout"
	endpointSearch   = "/search"
)

// upstream is the upstream label of the retry metrics.
const upstream = "payments"

// durationBuckets are the classic buckets of http_request_duration_seconds.
// They include the SLO threshold of the example (0.4) and the boundaries the
// service dashboard offers (0.1, 0.25, 0.4, 0.5, 1), and are fine enough
// around the threshold for histogram_quantile to place a p99 between 0.25 s
// and 2 s within a few tens of milliseconds.
var durationBuckets = []float64{.005, .01, .025, .05, .1, .15, .2, .25, .3, .4, .5, .6, .75, 1, 1.5, 2, 2.5, 5, 10}

// legacy is the policy in force until the flags are read, and the source of
// every constant the flags leave out: the pre-3.0 strategy of the demo
// story.
var legacy = backoff.Config{
	Strategy:    backoff.Exponential,
	Base:        50 * time.Millisecond,
	Cap:         500 * time.Millisecond,
	MaxAttempts: 3,
}

// bounds limit what the flags may set.
var bounds = flagbind.Bounds{
	Base:        flagbind.Range[time.Duration]{Max: 5 * time.Second},
	Cap:         flagbind.Range[time.Duration]{Max: 30 * time.Second},
	MaxAttempts: flagbind.Range[int]{Min: 1, Max: 10},
}

// config configures the shop.
type config struct {
	ListenAddress string
	FlagFile      string
	InstanceID    string
	Version       string
	// Histograms is histogramsBoth or histogramsNative.
	Histograms string
	Payments   paymentsConfig
	Work       workConfig
	Load       loadConfig
}

// The forms of the request histogram.
const (
	histogramsBoth   = "classic+native"
	histogramsNative = "native"
)

// paymentsConfig configures the fake payments upstream.
type paymentsConfig struct {
	ListenAddress string
	// Latency of one attempt.
	Latency time.Duration
	// FailureRatio is the probability that an attempt fails transiently.
	FailureRatio float64
}

// workConfig is the shop's own work per request: Base plus a uniform
// jitter, plus, for a SlowRatio of requests, Slow plus a uniform jitter.
type workConfig struct {
	Base, Jitter     time.Duration
	SlowRatio        float64
	Slow, SlowJitter time.Duration
}

// loadConfig sets the traffic shopd sends itself.
type loadConfig struct {
	CheckoutRPS, SearchRPS float64
}

func defaultConfig() config {
	return config{
		ListenAddress: ":8080",
		InstanceID:    "shop-0",
		Version:       "3.0",
		Histograms:    histogramsBoth,
		Payments:      paymentsConfig{ListenAddress: "127.0.0.1:0", Latency: 20 * time.Millisecond, FailureRatio: 0.2},
		Work: workConfig{
			Base: 10 * time.Millisecond, Jitter: 20 * time.Millisecond,
			SlowRatio: 0.02, Slow: 150 * time.Millisecond, SlowJitter: 100 * time.Millisecond,
		},
	}
}

func (c config) validate() error {
	switch {
	case c.FlagFile == "":
		return errors.New("flags.file: required")
	case c.InstanceID == "":
		return errors.New("flags.instance-id: required")
	case c.Version == "":
		return errors.New("version: required")
	case c.Histograms != histogramsBoth && c.Histograms != histogramsNative:
		return fmt.Errorf("histograms: must be %q or %q, got %q", histogramsBoth, histogramsNative, c.Histograms)
	case !(c.Payments.FailureRatio >= 0 && c.Payments.FailureRatio < 1):
		return fmt.Errorf("payments.failure-ratio: must be in [0, 1), got %v", c.Payments.FailureRatio)
	case c.Payments.Latency < 0:
		return fmt.Errorf("payments.latency: must not be negative, got %s", c.Payments.Latency)
	case c.Work.Base < 0 || c.Work.Jitter < 0 || c.Work.Slow < 0 || c.Work.SlowJitter < 0:
		return errors.New("latency: durations must not be negative")
	case !(c.Work.SlowRatio >= 0 && c.Work.SlowRatio <= 1):
		return fmt.Errorf("latency.slow-ratio: must be in [0, 1], got %v", c.Work.SlowRatio)
	case !(c.Load.CheckoutRPS >= 0 && c.Load.CheckoutRPS <= maxRPS):
		return fmt.Errorf("load.checkout-rps: must be in [0, %d], got %v", maxRPS, c.Load.CheckoutRPS)
	case !(c.Load.SearchRPS >= 0 && c.Load.SearchRPS <= maxRPS):
		return fmt.Errorf("load.search-rps: must be in [0, %d], got %v", maxRPS, c.Load.SearchRPS)
	}
	return nil
}

// errTransient is payments' transient failure, which the retrier retries.
var errTransient = errors.New("payments: transient failure (503)")

// shop is the running service: its HTTP server, the fake payments
// upstream, the retrier calling it and the flag binding steering the
// retrier.
type shop struct {
	cfg     config
	log     *slog.Logger
	reg     *prometheus.Registry
	retrier *backoff.Retrier
	binding *flagbind.Binding
	api     *openfeature.EvaluationAPI
	client  *http.Client

	lis, plis  net.Listener
	srv, psrv  *http.Server
	paymentsAt string

	duration *prometheus.HistogramVec
	requests *prometheus.CounterVec

	ready     atomic.Bool
	closeOnce sync.Once
}

// newShop listens on both addresses, reads the flags once and returns the
// shop, ready to Run.
func newShop(ctx context.Context, cfg config, log *slog.Logger) (*shop, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &shop{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	s.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	buckets := durationBuckets
	if cfg.Histograms == histogramsNative {
		buckets = nil // with native buckets configured, nil means no classic buckets
	}
	s.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:                            "http_request_duration_seconds",
		Help:                            "Server-side request latency, by endpoint, retry strategy (of /checkout's payments calls) and version.",
		Buckets:                         buckets,
		NativeHistogramBucketFactor:     1.1,
		NativeHistogramMaxBucketNumber:  160,
		NativeHistogramMinResetDuration: time.Hour,
	}, []string{"endpoint", "strategy", "version"})
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "http_requests_total",
		Help: "Requests served, by endpoint and HTTP status code.",
	}, []string{"endpoint", "code"})
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "dten_gateway_build_info",
		Help: "Always 1: the version of the dten-gateway component the shop runs.",
	}, []string{"version"})
	build.WithLabelValues(cfg.Version).Set(1)
	s.reg.MustRegister(s.duration, s.requests, build)
	for _, ep := range []string{endpointCheckout, endpointSearch} {
		s.requests.WithLabelValues(ep, "200")
	}

	bm, err := backoff.NewMetrics(s.reg)
	if err != nil {
		return nil, err
	}
	s.retrier, err = backoff.NewRetrier(backoff.RetrierConfig{Policy: backoff.MustNew(legacy), Upstream: upstream, Metrics: bm})
	if err != nil {
		return nil, err
	}
	if err := s.bindFlags(ctx); err != nil {
		return nil, err
	}

	if s.plis, err = net.Listen("tcp", cfg.Payments.ListenAddress); err != nil {
		s.closeFlags()
		return nil, fmt.Errorf("payments listener: %w", err)
	}
	if s.lis, err = net.Listen("tcp", cfg.ListenAddress); err != nil {
		s.plis.Close()
		s.closeFlags()
		return nil, fmt.Errorf("listener: %w", err)
	}
	s.paymentsAt = "http://" + s.plis.Addr().String() + "/pay"
	s.client = &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: time.Minute},
	}
	s.psrv = &http.Server{Handler: http.HandlerFunc(s.pay), ReadHeaderTimeout: 5 * time.Second}
	s.srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	return s, nil
}

// bindFlags registers the flag file provider and binds the retrier to the
// flags. A missing or broken flag file is an error at start: there is no
// last good policy to keep yet.
func (s *shop) bindFlags(ctx context.Context) error {
	p, err := provider.New(provider.Config{Path: s.cfg.FlagFile, Logger: s.log.With("component", "flags"), Registerer: s.reg})
	if err != nil {
		return err
	}
	s.api = isolated.NewAPI()
	ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.api.SetProviderAndWait(ictx, p); err != nil {
		_ = s.api.Shutdown(context.Background())
		return fmt.Errorf("flag file %s: %w", s.cfg.FlagFile, err)
	}
	s.binding, err = flagbind.New(flagbind.Config{
		Client:     s.api.NewClient(),
		Targets:    []flagbind.Target{s.retrier},
		Default:    legacy,
		Bounds:     bounds,
		InstanceID: s.cfg.InstanceID,
		Attributes: map[string]any{"service": "shop", "version": s.cfg.Version},
		Logger:     s.log.With("component", "backoff"),
		Registerer: s.reg,
	})
	if err != nil {
		s.closeFlags()
		return err
	}
	if err := s.binding.Reload(ctx); err != nil {
		// Logged and counted by the binding; the legacy policy serves.
		s.log.Warn("backoff flags not usable at start, serving the legacy policy", "err", err)
	}
	return nil
}

func (s *shop) closeFlags() {
	if s.api != nil {
		_ = s.api.Shutdown(context.Background())
	}
}

// Addr returns the address of the shop's HTTP server.
func (s *shop) Addr() string { return s.lis.Addr().String() }

// PaymentsAddr returns the address of the fake payments upstream.
func (s *shop) PaymentsAddr() string { return s.plis.Addr().String() }

// Handler returns the shop's HTTP handler.
func (s *shop) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+endpointCheckout, s.checkout)
	mux.HandleFunc("GET "+endpointSearch, s.search)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /-/healthy", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "shop is healthy.") })
	mux.HandleFunc("GET /-/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "shop is not ready.", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "shop is ready.")
	})
	return mux
}

// Run serves, follows the flags and sends the configured load until ctx
// ends or a server fails.
func (s *shop) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	serve := func(name string, srv *http.Server, l net.Listener) {
		if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("%s server: %w", name, err)
		}
	}
	go serve("payments", s.psrv, s.plis)
	go serve("shop", s.srv, s.lis)
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.binding.Run(ctx) })
	base := "http://" + s.Addr()
	for _, l := range []struct {
		endpoint string
		rps      float64
	}{{endpointCheckout, s.cfg.Load.CheckoutRPS}, {endpointSearch, s.cfg.Load.SearchRPS}} {
		if l.rps > 0 {
			wg.Go(func() { generate(ctx, s.client, base+l.endpoint, l.rps) })
		}
	}
	s.ready.Store(true)
	var err error
	select {
	case <-ctx.Done():
		err = ctx.Err()
	case err = <-errc:
	}
	cancel()
	wg.Wait()
	return err
}

// Close shuts the servers down and releases the flag provider.
func (s *shop) Close(ctx context.Context) error {
	var err error
	s.closeOnce.Do(func() {
		s.ready.Store(false)
		err = errors.Join(s.srv.Shutdown(ctx), s.psrv.Shutdown(ctx))
		s.closeFlags()
	})
	return err
}

// checkout does the shop's own work, then calls payments with retries.
func (s *shop) checkout(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	strategy := s.retrier.Policy().Strategy().String()
	ctx := r.Context()
	err := s.work(ctx)
	if err == nil {
		err = s.retrier.Do(ctx, s.callPayments)
	}
	code := http.StatusOK
	switch {
	case ctx.Err() != nil:
		code = statusClientClosed
	case err != nil:
		code = http.StatusBadGateway
	}
	s.observe(endpointCheckout, strategy, code, start)
	if err != nil {
		http.Error(w, "checkout: "+err.Error(), code)
		return
	}
	fmt.Fprintln(w, "order placed")
}

// search does the shop's own work only.
func (s *shop) search(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	code := http.StatusOK
	if err := s.work(r.Context()); err != nil {
		code = statusClientClosed
	}
	s.observe(endpointSearch, "", code, start)
	if code != http.StatusOK {
		http.Error(w, "search: canceled", code)
		return
	}
	fmt.Fprintln(w, "3 results")
}

// statusClientClosed records requests the client gave up on (nginx's 499).
const statusClientClosed = 499

func (s *shop) observe(endpoint, strategy string, code int, start time.Time) {
	s.duration.WithLabelValues(endpoint, strategy, s.cfg.Version).Observe(time.Since(start).Seconds())
	s.requests.WithLabelValues(endpoint, strconv.Itoa(code)).Inc()
}

// work sleeps for the shop's own share of a request.
func (s *shop) work(ctx context.Context) error {
	w := s.cfg.Work
	d := w.Base + uniform(w.Jitter)
	if w.SlowRatio > 0 && rand.Float64() < w.SlowRatio {
		d += w.Slow + uniform(w.SlowJitter)
	}
	return sleep(ctx, d)
}

// callPayments is one attempt: a transient failure is retried, any other
// failure is permanent.
func (s *shop) callPayments(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.paymentsAt, nil)
	if err != nil {
		return backoff.Permanent(err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusServiceUnavailable:
		return errTransient
	}
	return backoff.Permanent(fmt.Errorf("payments: status %d", resp.StatusCode))
}

// pay is the fake payments upstream: it takes its latency, then fails
// transiently with its failure probability.
func (s *shop) pay(w http.ResponseWriter, r *http.Request) {
	if err := sleep(r.Context(), s.cfg.Payments.Latency); err != nil {
		return
	}
	if rand.Float64() < s.cfg.Payments.FailureRatio {
		http.Error(w, errTransient.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "paid")
}

func uniform(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(d)))
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
