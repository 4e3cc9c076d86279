package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newReceiver(t *testing.T, cfg Config) (*Receiver, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return time.Date(2026, 11, 23, 10, 2, 0, 0, time.UTC) }
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r, reg
}

func post(t *testing.T, h http.Handler, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	return postAs(t, h, "application/json", body)
}

func postAs(t *testing.T, h http.Handler, contentType string, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/api/v1/alerts", bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	h.ServeHTTP(rec, req)
	return rec
}

func TestReceiverContentType(t *testing.T) {
	body, err := os.ReadFile("testdata/firing.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ct   string
		want int
	}{
		{"application/json", http.StatusOK},
		{"application/json; charset=utf-8", http.StatusOK},
		{"application/vnd.alertmanager+json", http.StatusOK},
		{"text/plain", http.StatusUnsupportedMediaType},
		{"application/x-www-form-urlencoded", http.StatusUnsupportedMediaType},
		{"", http.StatusUnsupportedMediaType},
		{"application/json; bad=", http.StatusUnsupportedMediaType},
	} {
		r, _ := newReceiver(t, Config{QueueSize: 8})
		rec := postAs(t, r, tc.ct, body)
		if rec.Code != tc.want {
			t.Errorf("Content-Type %q: %d %s, want %d", tc.ct, rec.Code, rec.Body, tc.want)
		}
		if tc.want == http.StatusUnsupportedMediaType {
			if len(r.C()) != 0 {
				t.Errorf("Content-Type %q: a refused notification was queued", tc.ct)
			}
			if got := testutil.ToFloat64(r.notifications.WithLabelValues("unsupported_media_type")); got != 1 {
				t.Errorf("Content-Type %q: unsupported_media_type = %v", tc.ct, got)
			}
		}
	}
}

// An Alertmanager group of 10,000 alerts (about 1.1 MB) fits the default
// limit, and the alerts past the queue are shed with 503 and counted.
func TestReceiverLargeBatchAndShedding(t *testing.T) {
	m := Message{Version: Version, Status: StatusFiring, Receiver: "tailguard", GroupKey: "{}:{}"}
	start := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	for i := range 10000 {
		m.Alerts = append(m.Alerts, Alert{
			Status: StatusFiring, StartsAt: start, GeneratorURL: "http://prometheus:9090/graph?g0.expr=up",
			Labels: map[string]string{"alertname": "TailLatencyBudgetBurn", LabelService: fmt.Sprintf("svc-%d", i%50),
				LabelSLO: "checkout-latency", "instance": fmt.Sprintf("10.0.%d.%d:8080", i/250, i%250), "severity": "warning"},
			Annotations: map[string]string{"summary": "tail latency budget burning"},
		})
	}
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(body) < 1<<20 {
		t.Fatalf("test batch is %d bytes, want over 1 MiB", len(body))
	}
	r, _ := newReceiver(t, Config{QueueSize: 20000})
	if rec := post(t, r, body); rec.Code != http.StatusOK {
		t.Fatalf("%d-byte batch: %d %s", len(body), rec.Code, rec.Body)
	}
	if len(r.C()) != 10000 {
		t.Errorf("queued %d triggers, want 10000", len(r.C()))
	}

	small, _ := newReceiver(t, Config{QueueSize: 100})
	rec := post(t, small, body)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("batch over the queue: %d, Retry-After %q; want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
	if got := testutil.ToFloat64(small.alerts.WithLabelValues(StatusFiring, "shed")); got != 10000 {
		t.Errorf("shed alerts = %v, want 10000", got)
	}
	if len(small.C()) != 0 {
		t.Errorf("a shed notification queued %d triggers", len(small.C()))
	}
}

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"queue", Config{}, "queue size"},
		{"body", Config{QueueSize: 1, MaxBodyBytes: -1}, "max body bytes"},
		{"dedup", Config{QueueSize: 1, DedupWindow: -time.Second}, "dedup window"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New(%+v) = %v, want error naming %q", tc.cfg, err, tc.want)
			}
		})
	}
}

func TestReceiverAcceptsFiring(t *testing.T) {
	body, err := os.ReadFile("testdata/firing.json")
	if err != nil {
		t.Fatal(err)
	}
	r, reg := newReceiver(t, Config{QueueSize: 4})
	rec := post(t, r, body)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	want := []Trigger{
		{Service: "shop", SLO: "checkout-p99", AlertName: "TailLatencySLOBurn", Fingerprint: "c0ffee0000000001"},
		{Service: "shop", AlertName: "RetryRatioSLOBurn", Fingerprint: "c0ffee0000000002"},
	}
	for i, w := range want {
		select {
		case got := <-r.C():
			if got.Service != w.Service || got.SLO != w.SLO || got.AlertName != w.AlertName || got.Fingerprint != w.Fingerprint || got.Status != StatusFiring {
				t.Errorf("trigger %d = %+v, want %+v", i, got, w)
			}
		default:
			t.Fatalf("trigger %d not queued", i)
		}
	}
	if got := testutil.ToFloat64(r.notifications.WithLabelValues("accepted")); got != 1 {
		t.Errorf("accepted notifications = %v, want 1", got)
	}
	if n, err := testutil.GatherAndCount(reg, "tailguard_webhook_alerts_total"); err != nil || n != 1 {
		t.Errorf("alerts series = %d, %v; want 1 (firing/queued)", n, err)
	}
}

func TestReceiverRejectsMalformed(t *testing.T) {
	valid, err := os.ReadFile("testdata/firing.json")
	if err != nil {
		t.Fatal(err)
	}
	replace := func(old, new string) []byte { return bytes.Replace(valid, []byte(old), []byte(new), 1) }
	for _, tc := range []struct {
		name string
		body []byte
		want string
	}{
		{"not json", []byte("{"), "decode payload"},
		{"wrong type", []byte(`{"version": 4}`), "decode payload"},
		{"trailing", append(append([]byte{}, valid...), []byte(`{}`)...), "trailing data"},
		{"version", replace(`"version": "4"`, `"version": "3"`), "version"},
		{"status", replace(`"status": "firing",
  "receiver"`, `"status": "burning",
  "receiver"`), "status"},
		{"no alerts", []byte(`{"version":"4","status":"firing","alerts":[]}`), "alerts: empty"},
		{"alert status", replace(`"status": "firing",
      "labels": {"alertname": "TailLatencySLOBurn"`, `"status": "maybe",
      "labels": {"alertname": "TailLatencySLOBurn"`), "alerts[0].status"},
		{"alertname", replace(`"alertname": "RetryRatioSLOBurn", `, ``), "alerts[1].labels.alertname"},
		{"startsAt", replace(`"startsAt": "2026-11-23T10:01:00Z",`, ``), "alerts[1].startsAt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newReceiver(t, Config{QueueSize: 4})
			rec := post(t, r, tc.body)
			if rec.Code != http.StatusBadRequest {
				t.Fatalf("status = %d, want 400", rec.Code)
			}
			if !strings.Contains(rec.Body.String(), tc.want) {
				t.Errorf("body %q does not name %q", rec.Body.String(), tc.want)
			}
			if len(r.C()) != 0 {
				t.Errorf("malformed payload queued %d triggers", len(r.C()))
			}
			if got := testutil.ToFloat64(r.notifications.WithLabelValues("invalid")); got != 1 {
				t.Errorf("invalid notifications = %v, want 1", got)
			}
		})
	}
}

func TestReceiverLimitsBody(t *testing.T) {
	r, _ := newReceiver(t, Config{QueueSize: 4, MaxBodyBytes: 64})
	rec := post(t, r, []byte(`{"version":"4","status":"firing","alerts":[`+strings.Repeat(" ", 100)+`]}`))
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("status = %d, want 413", rec.Code)
	}
}

func TestReceiverMethod(t *testing.T) {
	r, _ := newReceiver(t, Config{QueueSize: 4})
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/alerts", nil))
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != http.MethodPost {
		t.Fatalf("GET: status %d allow %q", rec.Code, rec.Header().Get("Allow"))
	}
}

func TestReceiverOverloadThenRetry(t *testing.T) {
	body, err := os.ReadFile("testdata/firing.json")
	if err != nil {
		t.Fatal(err)
	}
	r, _ := newReceiver(t, Config{QueueSize: 3, DedupWindow: time.Hour})
	if rec := post(t, r, body); rec.Code != http.StatusOK {
		t.Fatalf("first: %d", rec.Code)
	}
	// A different notification with two new alerts does not fit in the one
	// free slot: 503, nothing queued, nothing remembered.
	other := bytes.ReplaceAll(body, []byte("c0ffee"), []byte("beef00"))
	rec := post(t, r, other)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("overload: status %d retry-after %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	if len(r.C()) != 2 {
		t.Fatalf("queue holds %d, want 2 (all-or-nothing)", len(r.C()))
	}
	<-r.C()
	<-r.C()
	// Alertmanager's retry of the refused notification must be accepted.
	if rec := post(t, r, other); rec.Code != http.StatusOK {
		t.Fatalf("retry after overload: %d", rec.Code)
	}
	if len(r.C()) != 2 {
		t.Fatalf("queue holds %d after retry, want 2", len(r.C()))
	}
}

func TestReceiverDedup(t *testing.T) {
	body, err := os.ReadFile("testdata/firing.json")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 23, 10, 2, 0, 0, time.UTC)
	r, _ := newReceiver(t, Config{QueueSize: 10, DedupWindow: 10 * time.Minute, Now: func() time.Time { return now }})
	for range 3 {
		if rec := post(t, r, body); rec.Code != http.StatusOK {
			t.Fatalf("status %d", rec.Code)
		}
	}
	if len(r.C()) != 2 {
		t.Fatalf("queued %d triggers for three identical notifications, want 2", len(r.C()))
	}
	if got := testutil.ToFloat64(r.alerts.WithLabelValues(StatusFiring, "duplicate")); got != 4 {
		t.Errorf("duplicates = %v, want 4", got)
	}
	now = now.Add(11 * time.Minute)
	post(t, r, body)
	if len(r.C()) != 4 {
		t.Fatalf("after the window: queued %d, want 4", len(r.C()))
	}
}

func TestReceiverUnmapped(t *testing.T) {
	r, _ := newReceiver(t, Config{QueueSize: 4})
	body := []byte(`{"version":"4","status":"resolved","alerts":[{"status":"resolved","labels":{"alertname":"X"},"startsAt":"2026-11-23T10:00:00Z"}]}`)
	if rec := post(t, r, body); rec.Code != http.StatusOK {
		t.Fatalf("status %d", rec.Code)
	}
	if len(r.C()) != 0 {
		t.Fatal("an alert naming no service was queued")
	}
	if got := testutil.ToFloat64(r.alerts.WithLabelValues(StatusResolved, "unmapped")); got != 1 {
		t.Errorf("unmapped = %v, want 1", got)
	}
}

func TestReceiverConcurrent(t *testing.T) {
	body, err := os.ReadFile("testdata/firing.json")
	if err != nil {
		t.Fatal(err)
	}
	r, _ := newReceiver(t, Config{QueueSize: 7})
	var wg sync.WaitGroup
	codes := make(chan int, 20)
	for range 20 {
		wg.Go(func() { codes <- post(t, r, body).Code })
	}
	wg.Wait()
	close(codes)
	ok, busy := 0, 0
	for c := range codes {
		switch c {
		case http.StatusOK:
			ok++
		case http.StatusServiceUnavailable:
			busy++
		default:
			t.Errorf("unexpected status %d", c)
		}
	}
	if ok != 3 || busy != 17 || len(r.C()) != 6 {
		t.Fatalf("ok=%d busy=%d queued=%d; want 3, 17, 6", ok, busy, len(r.C()))
	}
}

func FuzzDecode(f *testing.F) {
	if b, err := os.ReadFile("testdata/firing.json"); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"a","job":"j"},"startsAt":"2026-01-01T00:00:00Z"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(bytes.NewReader(b))
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("Decode accepted a message Validate rejects: %v", err)
		}
		ts, unmapped := m.Triggers(time.Unix(0, 0))
		if len(ts)+len(unmapped) != len(m.Alerts) {
			t.Fatalf("%d triggers + %d unmapped != %d alerts", len(ts), len(unmapped), len(m.Alerts))
		}
	})
}
