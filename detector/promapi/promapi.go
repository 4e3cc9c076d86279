// Package promapi queries a Prometheus server over its HTTP API for the
// detector. The connection is configured with prometheus/common's
// HTTPClientConfig, so basic auth, bearer tokens, OAuth2, TLS and proxies
// work as in Prometheus' own configuration files.
package promapi

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
)

// DefaultTimeout bounds each query when Config.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// Config configures a Client.
type Config struct {
	// URL is the Prometheus base URL, e.g. http://prometheus:9090.
	URL string
	// HTTPClientConfig configures authentication, TLS and proxying.
	HTTPClientConfig config.HTTPClientConfig
	// Timeout bounds each query on the client and is passed to the server
	// as the evaluation timeout. Default 30s.
	Timeout time.Duration
	// Registerer, if set, receives tailguard_queries_total and
	// tailguard_query_errors_total, labelled by kind (instant, range).
	Registerer prometheus.Registerer
}

// Client runs instant and range queries. It implements detector.Querier.
type Client struct {
	api     v1.API
	timeout time.Duration
	queries *prometheus.CounterVec
	errors  *prometheus.CounterVec
}

// LoadHTTPConfigFile reads an HTTPClientConfig YAML file (relative file
// paths in it are resolved against its directory) and validates it.
func LoadHTTPConfigFile(path string) (config.HTTPClientConfig, error) {
	cfg, _, err := config.LoadHTTPConfigFile(path)
	if err != nil {
		return config.HTTPClientConfig{}, fmt.Errorf("http config %s: %w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return config.HTTPClientConfig{}, fmt.Errorf("http config %s: %w", path, err)
	}
	return *cfg, nil
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	if cfg.URL == "" {
		return nil, errors.New("prometheus url is empty")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("prometheus url %q: want http(s)://host[:port][/path]", cfg.URL)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("query timeout %v must not be negative", cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if err := cfg.HTTPClientConfig.Validate(); err != nil {
		return nil, fmt.Errorf("http client config: %w", err)
	}
	hc, err := config.NewClientFromConfig(cfg.HTTPClientConfig, "tailguard")
	if err != nil {
		return nil, fmt.Errorf("http client: %w", err)
	}
	ac, err := api.NewClient(api.Config{Address: cfg.URL, Client: hc})
	if err != nil {
		return nil, fmt.Errorf("prometheus client: %w", err)
	}
	c := &Client{api: v1.NewAPI(ac), timeout: cfg.Timeout}
	if cfg.Registerer != nil {
		c.queries = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailguard_queries_total",
			Help: "Prometheus queries sent by the detector, by kind (instant, range).",
		}, []string{"kind"})
		c.errors = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailguard_query_errors_total",
			Help: "Prometheus queries that failed, by kind (instant, range).",
		}, []string{"kind"})
		for _, k := range []string{"instant", "range"} {
			c.queries.WithLabelValues(k)
			c.errors.WithLabelValues(k)
		}
		if err := cfg.Registerer.Register(c.queries); err != nil {
			return nil, fmt.Errorf("register query metrics: %w", err)
		}
		if err := cfg.Registerer.Register(c.errors); err != nil {
			return nil, fmt.Errorf("register query metrics: %w", err)
		}
	}
	return c, nil
}

// Query evaluates an instant query at ts.
func (c *Client) Query(ctx context.Context, q string, ts time.Time) (model.Value, v1.Warnings, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	v, w, _, err := c.api.Query(ctx, q, ts, v1.WithTimeout(c.timeout))
	c.count("instant", err)
	if err != nil {
		return nil, w, fmt.Errorf("instant query: %w", err)
	}
	return v, w, nil
}

// QueryRange evaluates a range query.
func (c *Client) QueryRange(ctx context.Context, q string, r v1.Range) (model.Value, v1.Warnings, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	v, w, _, err := c.api.QueryRange(ctx, q, r, v1.WithTimeout(c.timeout))
	c.count("range", err)
	if err != nil {
		return nil, w, fmt.Errorf("range query: %w", err)
	}
	return v, w, nil
}

func (c *Client) count(kind string, err error) {
	if c.queries == nil {
		return
	}
	c.queries.WithLabelValues(kind).Inc()
	if err != nil {
		c.errors.WithLabelValues(kind).Inc()
	}
}
