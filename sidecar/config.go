package sidecar

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/common/config"
	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/controller/policy"
	"github.com/tailguard/tailguard/detector"
	"github.com/tailguard/tailguard/flags"
	"github.com/tailguard/tailguard/internal/yamlpath"
	"github.com/tailguard/tailguard/loop"
)

// Config is the sidecar's configuration file. Relative paths in it are
// resolved against the file's directory.
type Config struct {
	// EvaluationInterval is the time between two cycles of every service.
	// Default 1m.
	EvaluationInterval model.Duration `yaml:"evaluation_interval"`
	// Prometheus is the server the detector queries.
	Prometheus PrometheusConfig `yaml:"prometheus"`
	// FlagFile is the flagd flag file the controller writes. Required
	// unless Kubernetes is set.
	FlagFile string `yaml:"flag_file"`
	// Kubernetes, when set, keeps the flags in an OpenFeature Operator
	// FeatureFlag resource and the journal in a ConfigMap beside it, shared
	// by every replica, and elects one leader per service among the
	// replicas: it alone decides and writes. flag_file is then not used.
	Kubernetes *KubernetesConfig `yaml:"kubernetes,omitempty"`
	// StateFile keeps the controller's state (incidents, verifications,
	// hold and cooldown clocks) across restarts. Default the flag file's
	// path plus flags.StateSuffix. Without it (lost with a pod, say) a
	// restarted sidecar resumes its incidents from the flag journal alone.
	StateFile string `yaml:"state_file"`
	// PolicyFile is the controller policy (services, SLOs, bounds, flags,
	// modes). Required.
	PolicyFile string `yaml:"policy_file"`
	// Services configures detection per service of the policy.
	Services []ServiceConfig `yaml:"services"`
	// Webhook configures the Alertmanager webhook intake.
	Webhook WebhookConfig `yaml:"webhook"`
	// Grafana, when set, receives an annotation per action.
	Grafana *GrafanaConfig `yaml:"grafana,omitempty"`
	// Tracing, when set, exports a trace per cycle over OTLP/HTTP.
	Tracing *TracingConfig `yaml:"tracing,omitempty"`

	// Policy is the parsed policy file.
	Policy *policy.Policy `yaml:"-"`
	// Dir is the directory of the configuration file.
	Dir string `yaml:"-"`
}

// KubernetesConfig says where the shared flag state lives and how the
// replicas elect their leaders.
type KubernetesConfig struct {
	// Kubeconfig is a kubeconfig file; empty means the pod's service
	// account (in-cluster), else $KUBECONFIG or ~/.kube/config.
	Kubeconfig string `yaml:"kubeconfig"`
	// Namespace of the FeatureFlag, its journal and the leases; default the
	// pod's (or the kubeconfig context's) namespace.
	Namespace string `yaml:"namespace"`
	// FeatureFlag is the name of the FeatureFlag resource. Required.
	FeatureFlag string `yaml:"feature_flag"`
	// Identity names this replica in the leases; default $POD_NAME, else
	// the host name.
	Identity string `yaml:"identity"`
	// LeaseDuration, RenewDeadline, RetryPeriod: client-go's leader
	// election timings. Defaults 15s, 10s, 2s. A leader that cannot renew
	// stops writing at RenewDeadline, before the lease expires.
	LeaseDuration model.Duration `yaml:"lease_duration"`
	RenewDeadline model.Duration `yaml:"renew_deadline"`
	RetryPeriod   model.Duration `yaml:"retry_period"`
	// MaxJournalEntries bounds the journal ConfigMap. Default 500.
	MaxJournalEntries int `yaml:"max_journal_entries"`
}

func (k *KubernetesConfig) validate(dir func(string) string) error {
	if k.FeatureFlag == "" {
		return errors.New("kubernetes.feature_flag: required (the name of the FeatureFlag resource)")
	}
	if k.Kubeconfig != "" {
		k.Kubeconfig = dir(k.Kubeconfig)
	}
	if k.Identity == "" {
		k.Identity = os.Getenv("POD_NAME")
	}
	if k.Identity == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("kubernetes.identity: empty and no host name: %w", err)
		}
		k.Identity = h
	}
	def := func(d *model.Duration, v time.Duration) {
		if *d == 0 {
			*d = model.Duration(v)
		}
	}
	def(&k.LeaseDuration, 15*time.Second)
	def(&k.RenewDeadline, 10*time.Second)
	def(&k.RetryPeriod, 2*time.Second)
	if !(k.RetryPeriod > 0 && k.RetryPeriod < k.RenewDeadline && k.RenewDeadline < k.LeaseDuration) {
		return fmt.Errorf("kubernetes: want 0 < retry_period (%s) < renew_deadline (%s) < lease_duration (%s)", k.RetryPeriod, k.RenewDeadline, k.LeaseDuration)
	}
	if k.MaxJournalEntries < 0 {
		return fmt.Errorf("kubernetes.max_journal_entries: must not be negative, got %d", k.MaxJournalEntries)
	}
	return nil
}

// PrometheusConfig says where and how to query.
type PrometheusConfig struct {
	URL string `yaml:"url"`
	// Timeout bounds each query. Default 30s.
	Timeout model.Duration `yaml:"timeout"`
	// HTTPClientConfig: basic auth, bearer token, TLS, proxy, as in
	// Prometheus' own configuration.
	HTTPClientConfig config.HTTPClientConfig `yaml:"http_client_config"`
}

// ServiceConfig configures detection for one service of the policy.
type ServiceConfig struct {
	// Name is the policy service's name.
	Name string `yaml:"name"`
	// SLI names the metrics the SLO queries read.
	SLI loop.SLIConfig `yaml:"sli"`
	// Lookback: how long after a change the service is analysed from it.
	// Default 6h.
	Lookback model.Duration `yaml:"lookback"`
	// DetectorConfig is the detector configuration (its service field is
	// set from Name). Its changes.flag_journal defaults to the flag file's
	// journal.
	DetectorConfig detector.Config `yaml:"detector"`
}

// WebhookConfig configures the Alertmanager webhook intake.
type WebhookConfig struct {
	// QueueSize bounds pending triggers; beyond it the webhook answers 503.
	// Default 64.
	QueueSize int `yaml:"queue_size"`
	// MaxBodyBytes bounds one notification. Default 8 MiB (webhook.DefaultMaxBodyBytes): a whole Alertmanager group of about 70,000 alerts.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// DedupWindow drops repeated firing notifications of one alert. Default
	// 10m.
	DedupWindow model.Duration `yaml:"dedup_window"`
	// MinInterval is the least time between two alert-triggered cycles of a
	// service. Default 30s.
	MinInterval model.Duration `yaml:"min_interval"`
}

// GrafanaConfig configures annotations.
type GrafanaConfig struct {
	URL          string   `yaml:"url"`
	TokenFile    string   `yaml:"token_file"`
	DashboardUID string   `yaml:"dashboard_uid"`
	Tags         []string `yaml:"tags"`
}

// TracingConfig configures OTLP/HTTP trace export.
type TracingConfig struct {
	// Endpoint is host:port of the OTLP/HTTP receiver, e.g. localhost:4318.
	Endpoint string `yaml:"endpoint"`
	// Insecure disables TLS.
	Insecure bool `yaml:"insecure"`
	// SampleRatio of cycles traced. Default 1.
	SampleRatio float64 `yaml:"sample_ratio"`
	// Headers are sent with every export, e.g. an auth token.
	Headers map[string]string `yaml:"headers"`
}

// LoadConfig reads, decodes strictly and validates the file at path, and
// the policy file it names. Errors name the file and the field.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := ParseConfig(b, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes and validates a configuration; dir resolves relative
// paths.
func ParseConfig(b []byte, dir string) (*Config, error) {
	cfg := &Config{Dir: dir}
	if err := yamlpath.Decode(b, cfg); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (c *Config) path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.Dir, p)
}

func (c *Config) validate() error {
	if c.EvaluationInterval == 0 {
		c.EvaluationInterval = model.Duration(time.Minute)
	}
	if c.EvaluationInterval < model.Duration(time.Second) {
		return fmt.Errorf("evaluation_interval: must be at least 1s, got %s", c.EvaluationInterval)
	}
	if c.Prometheus.URL == "" {
		return errors.New("prometheus.url: required")
	}
	if c.Prometheus.Timeout < 0 {
		return fmt.Errorf("prometheus.timeout: must not be negative, got %s", c.Prometheus.Timeout)
	}
	c.Prometheus.HTTPClientConfig.SetDirectory(c.Dir)
	if err := c.Prometheus.HTTPClientConfig.Validate(); err != nil {
		return fmt.Errorf("prometheus.http_client_config: %w", err)
	}
	switch {
	case c.Kubernetes != nil:
		if c.FlagFile != "" {
			return errors.New("flag_file: not used with kubernetes (the flags live in the FeatureFlag resource); remove one")
		}
		if err := c.Kubernetes.validate(c.path); err != nil {
			return err
		}
		// A pod has no file that outlives it: incidents resume from the
		// journal in the cluster unless a state_file is given.
		if c.StateFile != "" {
			c.StateFile = c.path(c.StateFile)
		}
	case c.FlagFile == "":
		return errors.New("flag_file: required (or kubernetes, to keep the flags in the cluster)")
	default:
		c.FlagFile = c.path(c.FlagFile)
		if c.StateFile == "" {
			c.StateFile = c.FlagFile + flags.StateSuffix
		} else {
			c.StateFile = c.path(c.StateFile)
		}
	}
	if c.PolicyFile == "" {
		return errors.New("policy_file: required")
	}
	c.PolicyFile = c.path(c.PolicyFile)
	pol, err := policy.LoadFile(c.PolicyFile)
	if err != nil {
		return fmt.Errorf("policy_file: %w", err)
	}
	c.Policy = pol
	if len(c.Services) == 0 {
		return errors.New("services: at least one service is required")
	}
	seen := map[string]bool{}
	for i := range c.Services {
		s := &c.Services[i]
		field := fmt.Sprintf("services[%d]", i)
		if s.Name == "" {
			return fmt.Errorf("%s.name: required", field)
		}
		if seen[s.Name] {
			return fmt.Errorf("%s.name: duplicate service %q", field, s.Name)
		}
		seen[s.Name] = true
		if _, ok := pol.Service(s.Name); !ok {
			return fmt.Errorf("%s.name: service %q is not in the policy file", field, s.Name)
		}
		if err := s.SLI.Validate(); err != nil {
			return fmt.Errorf("%s.%w", field, err)
		}
		if s.Lookback < 0 {
			return fmt.Errorf("%s.lookback: must not be negative", field)
		}
		dc, err := c.detectorConfig(s)
		if err != nil {
			return fmt.Errorf("%s.detector: %w", field, err)
		}
		s.DetectorConfig = dc
	}
	for _, ps := range pol.Services {
		if !seen[ps.Name] {
			return fmt.Errorf("services: policy service %q has no detector configuration", ps.Name)
		}
	}
	w := &c.Webhook
	if w.QueueSize == 0 {
		w.QueueSize = 64
	}
	if w.QueueSize < 0 {
		return fmt.Errorf("webhook.queue_size: must be positive, got %d", w.QueueSize)
	}
	if w.MaxBodyBytes < 0 {
		return fmt.Errorf("webhook.max_body_bytes: must not be negative, got %d", w.MaxBodyBytes)
	}
	if w.DedupWindow == 0 {
		w.DedupWindow = model.Duration(10 * time.Minute)
	}
	if w.MinInterval == 0 {
		w.MinInterval = model.Duration(30 * time.Second)
	}
	if w.DedupWindow < 0 || w.MinInterval < 0 {
		return errors.New("webhook: durations must not be negative")
	}
	if g := c.Grafana; g != nil {
		if g.URL == "" {
			return errors.New("grafana.url: required when grafana is set")
		}
		g.TokenFile = c.path(g.TokenFile)
	}
	if t := c.Tracing; t != nil {
		if t.Endpoint == "" {
			return errors.New("tracing.endpoint: required when tracing is set")
		}
		if t.SampleRatio == 0 {
			t.SampleRatio = 1
		}
		if t.SampleRatio < 0 || t.SampleRatio > 1 {
			return fmt.Errorf("tracing.sample_ratio: must be in (0, 1], got %v", t.SampleRatio)
		}
	}
	return nil
}

// detectorConfig completes a service's detector configuration: its
// service, the default journal, paths; then validates it.
func (c *Config) detectorConfig(s *ServiceConfig) (detector.Config, error) {
	dc := s.DetectorConfig
	if len(dc.Signals) == 0 {
		return dc, errors.New("signals: at least one signal to watch is required")
	}
	if dc.Service != "" && dc.Service != s.Name {
		return dc, fmt.Errorf("service: %q differs from the service's name %q (leave it out)", dc.Service, s.Name)
	}
	dc.Service = s.Name
	if c.Kubernetes != nil {
		if dc.Changes.FlagJournal != "" {
			return dc, errors.New("changes.flag_journal: not used with kubernetes (the journal lives in the cluster)")
		}
	} else if dc.Changes.FlagJournal == "" {
		dc.Changes.FlagJournal = c.FlagFile + ".journal.jsonl"
	} else {
		dc.Changes.FlagJournal = c.path(dc.Changes.FlagJournal)
	}
	dc.Changes.Manifests = append([]string(nil), dc.Changes.Manifests...)
	for i, m := range dc.Changes.Manifests {
		dc.Changes.Manifests[i] = c.path(m)
	}
	if err := dc.Validate(); err != nil {
		return dc, err
	}
	return dc, nil
}
