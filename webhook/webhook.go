// Package webhook receives Alertmanager webhook notifications (payload version 4)
// and turns firing alerts into evaluation triggers for the control loop.
//
// The receiver is deliberately strict about what it accepts and lenient about
// load: a body that is not JSON by its Content-Type is answered with 415, a
// malformed payload with 400 and a reason naming the field, a payload over the
// size limit with 413, and a full intake queue with 503 and Retry-After so
// that Alertmanager retries later (the alerts refused are counted as shed).
// Nothing a sender does can crash the process or block the handler.
//
// The payload types are defined here rather than imported from
// github.com/prometheus/alertmanager: the webhook format is a small, stable,
// documented JSON contract, and importing the Alertmanager module would pull its
// whole dependency tree into the sidecar for six struct definitions.
package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Version is the webhook payload version this receiver understands.
const Version = "4"

// DefaultMaxBodyBytes bounds the size of one notification. Alertmanager
// sends a whole alert group in one notification unless the receiver's
// max_alerts truncates it; 8 MiB holds a group of about 70,000 alerts
// (a 10,000-alert batch is about 1.1 MB).
const DefaultMaxBodyBytes = 8 << 20

// Message is the body Alertmanager posts to a webhook receiver.
type Message struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   int               `json:"truncatedAlerts"`
	Status            string            `json:"status"`
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []Alert           `json:"alerts"`
}

// Alert is one alert of a notification.
type Alert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// Status values of an alert or a notification.
const (
	StatusFiring   = "firing"
	StatusResolved = "resolved"
)

// Labels that map an alert onto a tailguard service and SLO. An alert without
// LabelService falls back to the "service" and then the "job" label.
const (
	LabelService = "tailguard_service"
	LabelSLO     = "tailguard_slo"
)

// Trigger asks the control loop to evaluate a service (and, when known, one of
// its SLOs) now, or records that an alert resolved.
type Trigger struct {
	Service     string            `json:"service"`
	SLO         string            `json:"slo,omitempty"`
	AlertName   string            `json:"alertname"`
	Status      string            `json:"status"`
	Fingerprint string            `json:"fingerprint"`
	StartsAt    time.Time         `json:"startsAt"`
	EndsAt      time.Time         `json:"endsAt,omitzero"`
	Labels      map[string]string `json:"labels"`
	Received    time.Time         `json:"received"`
}

// Decode reads and validates one notification. Errors name the field at fault.
func Decode(r io.Reader) (*Message, error) {
	dec := json.NewDecoder(r)
	var m Message
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decode payload: %w", err)
	}
	if dec.More() {
		return nil, errors.New("decode payload: trailing data after the JSON object")
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks the fields the receiver relies on.
func (m *Message) Validate() error {
	if m.Version != Version {
		return fmt.Errorf("version: got %q, want %q", m.Version, Version)
	}
	if m.Status != StatusFiring && m.Status != StatusResolved {
		return fmt.Errorf("status: got %q, want %q or %q", m.Status, StatusFiring, StatusResolved)
	}
	if len(m.Alerts) == 0 {
		return errors.New("alerts: empty")
	}
	for i, a := range m.Alerts {
		if a.Status != StatusFiring && a.Status != StatusResolved {
			return fmt.Errorf("alerts[%d].status: got %q, want %q or %q", i, a.Status, StatusFiring, StatusResolved)
		}
		if len(a.Labels) == 0 {
			return fmt.Errorf("alerts[%d].labels: empty", i)
		}
		if a.Labels["alertname"] == "" {
			return fmt.Errorf("alerts[%d].labels.alertname: missing", i)
		}
		if a.StartsAt.IsZero() {
			return fmt.Errorf("alerts[%d].startsAt: missing", i)
		}
	}
	return nil
}

// Triggers maps the alerts of a notification to triggers. Alerts that name no
// service are skipped and reported by their alert names.
func (m *Message) Triggers(now time.Time) (ts []Trigger, unmapped []string) {
	for _, a := range m.Alerts {
		svc := firstNonEmpty(a.Labels[LabelService], m.CommonLabels[LabelService], a.Labels["service"], a.Labels["job"])
		if svc == "" {
			unmapped = append(unmapped, a.Labels["alertname"])
			continue
		}
		ts = append(ts, Trigger{
			Service:     svc,
			SLO:         firstNonEmpty(a.Labels[LabelSLO], m.CommonLabels[LabelSLO], a.Labels["slo"]),
			AlertName:   a.Labels["alertname"],
			Status:      a.Status,
			Fingerprint: fingerprint(a),
			StartsAt:    a.StartsAt,
			EndsAt:      a.EndsAt,
			Labels:      a.Labels,
			Received:    now,
		})
	}
	return ts, unmapped
}

func fingerprint(a Alert) string {
	if a.Fingerprint != "" {
		return a.Fingerprint
	}
	keys := make([]string, 0, len(a.Labels))
	for k := range a.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(a.Labels[k])
		b.WriteByte(',')
	}
	return b.String()
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// Config configures a Receiver.
type Config struct {
	// QueueSize bounds the triggers waiting for the control loop; when it is
	// full the receiver answers 503 and Alertmanager retries.
	QueueSize int
	// MaxBodyBytes bounds one notification; 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// DedupWindow drops a repeated firing notification of the same alert
	// (same fingerprint and start) received within the window. 0 disables it.
	DedupWindow time.Duration
	// Registerer receives the receiver's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Receiver is an http.Handler for Alertmanager's webhook. Accepted triggers are
// delivered on C.
type Receiver struct {
	cfg   Config
	queue chan Trigger
	now   func() time.Time

	mu   sync.Mutex
	seen map[string]time.Time

	notifications *prometheus.CounterVec
	alerts        *prometheus.CounterVec
}

// New returns a Receiver after validating cfg.
func New(cfg Config) (*Receiver, error) {
	if cfg.QueueSize <= 0 {
		return nil, fmt.Errorf("queue size: must be > 0, got %d", cfg.QueueSize)
	}
	if cfg.MaxBodyBytes < 0 {
		return nil, fmt.Errorf("max body bytes: must be ≥ 0, got %d", cfg.MaxBodyBytes)
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.DedupWindow < 0 {
		return nil, fmt.Errorf("dedup window: must be ≥ 0, got %s", cfg.DedupWindow)
	}
	r := &Receiver{
		cfg:   cfg,
		queue: make(chan Trigger, cfg.QueueSize),
		now:   cfg.Now,
		seen:  make(map[string]time.Time),
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailguard_webhook_notifications_total",
			Help: "Alertmanager notifications received, by result (accepted, invalid, unsupported_media_type, too_large, overloaded).",
		}, []string{"result"}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tailguard_webhook_alerts_total",
			Help: "Alerts received through the webhook, by status and outcome (queued, duplicate, unmapped, shed).",
		}, []string{"status", "outcome"}),
	}
	if r.now == nil {
		r.now = time.Now
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{r.notifications, r.alerts} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register webhook metrics: %w", err)
			}
		}
	}
	return r, nil
}

// C delivers accepted triggers to the control loop.
func (r *Receiver) C() <-chan Trigger { return r.queue }

// ServeHTTP implements the webhook endpoint.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed: use POST", http.StatusMethodNotAllowed)
		return
	}
	if ct := req.Header.Get("Content-Type"); !isJSON(ct) {
		r.notifications.WithLabelValues("unsupported_media_type").Inc()
		w.Header().Set("Accept-Post", "application/json")
		http.Error(w, fmt.Sprintf("Content-Type %q: want application/json", ct), http.StatusUnsupportedMediaType)
		return
	}
	body := http.MaxBytesReader(w, req.Body, r.cfg.MaxBodyBytes)
	msg, err := Decode(body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			r.notifications.WithLabelValues("too_large").Inc()
			http.Error(w, fmt.Sprintf("payload larger than %d bytes", r.cfg.MaxBodyBytes), http.StatusRequestEntityTooLarge)
			return
		}
		r.notifications.WithLabelValues("invalid").Inc()
		http.Error(w, "invalid webhook payload: "+err.Error(), http.StatusBadRequest)
		return
	}
	now := r.now()
	triggers, unmapped := msg.Triggers(now)
	for range unmapped {
		r.alerts.WithLabelValues(msg.Status, "unmapped").Inc()
	}
	// All or nothing: either every new trigger of the notification is queued,
	// or none is and Alertmanager retries the whole notification.
	if shed := r.accept(triggers, now); shed > 0 {
		r.alerts.WithLabelValues(msg.Status, "shed").Add(float64(shed))
		r.notifications.WithLabelValues("overloaded").Inc()
		w.Header().Set("Retry-After", "5")
		http.Error(w, "intake queue full, retry later", http.StatusServiceUnavailable)
		return
	}
	r.notifications.WithLabelValues("accepted").Inc()
	w.WriteHeader(http.StatusOK)
}

// isJSON reports whether a Content-Type names JSON: application/json or a
// +json type, with any parameters.
func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// accept queues the triggers that are not duplicates, or none of them when
// the queue cannot take them all, and returns how many it refused (0 when it
// queued them). Only queued triggers are remembered for deduplication, so a
// notification refused with 503 is accepted on retry.
//
// A firing alert already queued within the dedup window is a duplicate: the
// repeat notifications Alertmanager sends every repeat_interval, or its
// retries after a timeout, do not trigger the loop again and again.
func (r *Receiver) accept(ts []Trigger, now time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, t := range r.seen {
		if now.Sub(t) > r.cfg.DedupWindow {
			delete(r.seen, k)
		}
	}
	fresh := make([]Trigger, 0, len(ts))
	keys := make([]string, 0, len(ts))
	for _, t := range ts {
		key := t.Status + "|" + t.Fingerprint + "|" + t.StartsAt.UTC().Format(time.RFC3339Nano)
		if _, dup := r.seen[key]; dup && r.cfg.DedupWindow > 0 {
			r.alerts.WithLabelValues(t.Status, "duplicate").Inc()
			continue
		}
		fresh = append(fresh, t)
		keys = append(keys, key)
	}
	if cap(r.queue)-len(r.queue) < len(fresh) {
		return len(fresh)
	}
	for i, t := range fresh {
		r.queue <- t // cannot block: capacity was checked under the lock, and only accept sends.
		r.alerts.WithLabelValues(t.Status, "queued").Inc()
		if r.cfg.DedupWindow > 0 {
			r.seen[keys[i]] = now
		}
	}
	return 0
}
