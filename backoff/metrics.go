package backoff

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DelayBuckets are the classic buckets of backoff_delay_seconds, from 1ms to
// one minute. The histogram also has native (sparse) buckets.
var DelayBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// AttemptBuckets are the classic buckets of backoff_attempt_duration_seconds,
// from 5ms to 10s. The histogram also has native (sparse) buckets.
var AttemptBuckets = []float64{.005, .01, .025, .05, .075, .1, .15, .2, .3, .5, .75, 1, 2, 5, 10}

// Metrics holds the retry metrics shared by the retriers of a process. Create
// it once per registry with [NewMetrics] and pass it to every
// [RetrierConfig]; each retrier labels its series with its own upstream.
//
//	backoff_calls_total{strategy,upstream,result}   calls finished; result is success or a Reason
//	backoff_attempts_total{strategy,upstream}       attempts, the first included
//	backoff_retries_total{strategy,upstream}        attempts after the first
//	backoff_budget_denied_total{strategy,upstream}  retries refused by the budget
//	backoff_delay_seconds{strategy,upstream}        histogram of the delays slept
//	backoff_attempt_duration_seconds{strategy,upstream}  histogram of the attempts' own durations
//
// The attempt durations are the upstream's latency as the caller sees it,
// delays excluded: a backoff change cannot move them (short of overloading
// the upstream), so a rise there points at the upstream or at the client
// code, not at the retry policy.
type Metrics struct {
	calls    *prometheus.CounterVec
	attempts *prometheus.CounterVec
	retries  *prometheus.CounterVec
	denied   *prometheus.CounterVec
	delay    *prometheus.HistogramVec
	attempt  *prometheus.HistogramVec
}

// NewMetrics creates the retry metrics and registers them with reg. A nil
// reg leaves them unregistered.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	labels := []string{"strategy", "upstream"}
	m := &Metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backoff_calls_total",
			Help: "Calls (logical operations) finished by the retrier, by result: success, exhausted, permanent, budget_denied, context or max_elapsed.",
		}, []string{"strategy", "upstream", "result"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backoff_attempts_total",
			Help: "Attempts made by the retrier, the first attempt of each call included.",
		}, labels),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backoff_retries_total",
			Help: "Attempts after the first of a call.",
		}, labels),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backoff_budget_denied_total",
			Help: "Retries refused by the retry budget.",
		}, labels),
		delay: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:                            "backoff_delay_seconds",
			Help:                            "Delays slept between attempts.",
			Buckets:                         DelayBuckets,
			NativeHistogramBucketFactor:     1.1,
			NativeHistogramMaxBucketNumber:  100,
			NativeHistogramMinResetDuration: time.Hour,
		}, labels),
		attempt: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:                            "backoff_attempt_duration_seconds",
			Help:                            "Durations of the attempts themselves (the upstream's latency as the caller sees it), delays excluded.",
			Buckets:                         AttemptBuckets,
			NativeHistogramBucketFactor:     1.1,
			NativeHistogramMaxBucketNumber:  100,
			NativeHistogramMinResetDuration: time.Hour,
		}, labels),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.calls, m.attempts, m.retries, m.denied, m.delay, m.attempt} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register backoff metrics: %w", err)
			}
		}
	}
	return m, nil
}

// instruments are the child metrics of one strategy and upstream, resolved
// once so that recording allocates nothing.
type instruments struct {
	attempts prometheus.Counter
	retries  prometheus.Counter
	denied   prometheus.Counter
	delay    prometheus.Observer
	attempt  prometheus.Observer
	calls    [numReasons]prometheus.Counter // index 0: success
}

func (m *Metrics) instruments(strategy Strategy, upstream string) *instruments {
	s := strategy.String()
	ins := &instruments{
		attempts: m.attempts.WithLabelValues(s, upstream),
		retries:  m.retries.WithLabelValues(s, upstream),
		denied:   m.denied.WithLabelValues(s, upstream),
		delay:    m.delay.WithLabelValues(s, upstream),
		attempt:  m.attempt.WithLabelValues(s, upstream),
	}
	for i := range ins.calls {
		ins.calls[i] = m.calls.WithLabelValues(s, upstream, reasonNames[i])
	}
	return ins
}
