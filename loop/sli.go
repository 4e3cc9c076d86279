package loop

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/controller/policy"
)

// SLIConfig names the metrics the SLI queries read. Zero fields take the
// defaults of the project's metric catalogue.
type SLIConfig struct {
	// Job is the job label of the service's series; default the service
	// name.
	Job string `yaml:"job"`
	// LatencyMetric is the request duration histogram. Default
	// http_request_duration_seconds.
	LatencyMetric string `yaml:"latency_metric"`
	// Histogram is "classic" (default) or "native".
	Histogram string `yaml:"histogram"`
	// RequestsMetric counts requests by code. Default http_requests_total.
	RequestsMetric string `yaml:"requests_metric"`
	// ErrorMatcher selects failed requests. Default code=~"5..".
	ErrorMatcher string `yaml:"error_matcher"`
	// CallsMetric and RetriesMetric are the backoff package's counters.
	// Defaults backoff_calls_total and backoff_retries_total.
	CallsMetric   string `yaml:"calls_metric"`
	RetriesMetric string `yaml:"retries_metric"`
}

func (c SLIConfig) withDefaults(service string) SLIConfig {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.Job, service)
	def(&c.LatencyMetric, "http_request_duration_seconds")
	def(&c.Histogram, "classic")
	def(&c.RequestsMetric, "http_requests_total")
	def(&c.ErrorMatcher, `code=~"5.."`)
	def(&c.CallsMetric, "backoff_calls_total")
	def(&c.RetriesMetric, "backoff_retries_total")
	return c
}

// Validate checks the fields.
func (c SLIConfig) Validate() error {
	if c.Histogram != "" && c.Histogram != "classic" && c.Histogram != "native" {
		return fmt.Errorf("sli.histogram: want classic or native, got %q", c.Histogram)
	}
	for name, m := range map[string]string{
		"sli.latency_metric": c.LatencyMetric, "sli.requests_metric": c.RequestsMetric,
		"sli.calls_metric": c.CallsMetric, "sli.retries_metric": c.RetriesMetric,
	} {
		if m != "" && !model.LegacyValidation.IsValidMetricName(m) {
			return fmt.Errorf("%s: %q is not a metric name", name, m)
		}
	}
	return nil
}

// selector renders {job="…",k="v",…} with the keys sorted, plus extra
// matchers verbatim.
func selector(job string, labels map[string]string, extra ...string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	ms := []string{"job=" + strconv.Quote(job)}
	for _, k := range keys {
		if k == "job" {
			continue
		}
		ms = append(ms, k+"="+strconv.Quote(labels[k]))
	}
	ms = append(ms, extra...)
	return "{" + strings.Join(ms, ",") + "}"
}

// SLIQuery returns the PromQL of an SLO's SLI over its window.
func SLIQuery(c SLIConfig, service string, slo policy.SLO) (string, error) {
	c = c.withDefaults(service)
	w := slo.Objective.Window.String()
	switch slo.Signal {
	case policy.SignalLatency:
		q := slo.Objective.Quantile
		if q == 0 {
			q = policy.DefaultQuantile
		}
		qs := strconv.FormatFloat(q, 'g', -1, 64)
		sel := selector(c.Job, slo.Selector)
		if c.Histogram == "native" {
			return fmt.Sprintf("histogram_quantile(%s, sum(rate(%s%s[%s])))", qs, c.LatencyMetric, sel, w), nil
		}
		return fmt.Sprintf("histogram_quantile(%s, sum by (le) (rate(%s_bucket%s[%s])))", qs, c.LatencyMetric, sel, w), nil
	case policy.SignalRetryRatio:
		sel := selector(c.Job, slo.Selector)
		return fmt.Sprintf("sum(rate(%s%s[%s])) / sum(rate(%s%s[%s]))", c.RetriesMetric, sel, w, c.CallsMetric, sel, w), nil
	case policy.SignalErrorRatio:
		sel := selector(c.Job, slo.Selector)
		errSel := selector(c.Job, slo.Selector, c.ErrorMatcher)
		// or vector(0): no failed request at all is a ratio of 0, not "no data".
		return fmt.Sprintf("(sum(rate(%s%s[%s])) or vector(0)) / sum(rate(%s%s[%s]))", c.RequestsMetric, errSel, w, c.RequestsMetric, sel, w), nil
	}
	return "", fmt.Errorf("slo %s: unknown signal %q", slo.Name, slo.Signal)
}

// RetryQueries returns the queries of the upstream's logical calls, retries
// and exhausted calls per second over window.
func RetryQueries(c SLIConfig, service, upstream string, window time.Duration) (calls, retries, exhausted string) {
	c = c.withDefaults(service)
	sel := selector(c.Job, map[string]string{"upstream": upstream})
	w := model.Duration(window).String()
	exSel := selector(c.Job, map[string]string{"upstream": upstream, "result": "exhausted"})
	return fmt.Sprintf("sum(rate(%s%s[%s]))", c.CallsMetric, sel, w),
		fmt.Sprintf("sum(rate(%s%s[%s]))", c.RetriesMetric, sel, w),
		fmt.Sprintf("sum(rate(%s%s[%s])) or vector(0)", c.CallsMetric, exSel, w)
}

// scalarOf extracts the single value of an instant query result. No series,
// several series, NaN and ±Inf are errors saying which.
func scalarOf(v model.Value) (float64, error) {
	var f float64
	switch r := v.(type) {
	case model.Vector:
		if len(r) == 0 {
			return math.NaN(), errNoData
		}
		if len(r) > 1 {
			return math.NaN(), fmt.Errorf("%d series, want 1", len(r))
		}
		f = float64(r[0].Value)
	case *model.Scalar:
		f = float64(r.Value)
	default:
		return math.NaN(), fmt.Errorf("result type %s, want vector", v.Type())
	}
	if math.IsNaN(f) {
		return f, errNaN
	}
	if math.IsInf(f, 0) {
		return f, fmt.Errorf("value %v", f)
	}
	return f, nil
}
