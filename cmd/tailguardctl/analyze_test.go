package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alecthomas/kingpin/v2"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/tailguard/tailguard/detector"
	"github.com/tailguard/tailguard/promembed"
)

var analyzeChange = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)

// promServer serves the query API from an embedded Prometheus holding a
// retry-ratio regression at analyzeChange, and records the queries and
// the Authorization header.
type promServer struct {
	db   *promembed.DB
	mu   sync.Mutex
	auth []string
	qs   []string
}

func newPromServer(t *testing.T) *promServer {
	t.Helper()
	db, err := promembed.Open(promembed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	app := db.Appender(context.Background())
	calls := labels.FromStrings("__name__", "backoff_calls_total", "strategy", "decorrelated", "upstream", "payments", "result", "success")
	retries := labels.FromStrings("__name__", "backoff_retries_total", "strategy", "decorrelated", "upstream", "payments")
	var c, r float64
	for ts := analyzeChange.Add(-70 * time.Minute); !ts.After(analyzeChange.Add(31 * time.Minute)); ts = ts.Add(15 * time.Second) {
		c += 250 // 1000 calls a minute
		rate := 0.01
		if !ts.Before(analyzeChange) {
			rate = 0.04
		}
		r += math.Round(250 * rate)
		if err := app.Append(calls, ts, c); err != nil {
			t.Fatal(err)
		}
		if err := app.Append(retries, ts, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	return &promServer{db: db}
}

func (p *promServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	p.mu.Lock()
	p.auth = append(p.auth, r.Header.Get("Authorization"))
	p.qs = append(p.qs, r.Form.Get("query"))
	p.mu.Unlock()
	ts := func(k string) time.Time {
		f, _ := strconv.ParseFloat(r.Form.Get(k), 64)
		return time.UnixMilli(int64(f * 1000)).UTC()
	}
	var (
		v   model.Value
		err error
	)
	switch r.URL.Path {
	case "/api/v1/query":
		v, _, err = p.db.Query(r.Context(), r.Form.Get("query"), ts("time"))
	case "/api/v1/query_range":
		step, _ := strconv.ParseFloat(r.Form.Get("step"), 64)
		v, _, err = p.db.QueryRange(r.Context(), r.Form.Get("query"), v1.Range{Start: ts("start"), End: ts("end"), Step: time.Duration(step * float64(time.Second))})
	default:
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusUnprocessableEntity)
		_ = json.NewEncoder(w).Encode(map[string]string{"status": "error", "errorType": "execution", "error": err.Error()})
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": map[string]any{"resultType": v.Type().String(), "result": v}})
}

func analyzeFiles(t *testing.T) (configPath, httpConfigPath string) {
	t.Helper()
	dir := t.TempDir()
	manifest := filepath.Join(dir, "upgrade.yaml")
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(manifest, "time: 2025-03-01T10:00:00Z\nname: vendor-2025.1\ncomponents:\n  - {name: payments-client, from: \"1.0\", to: \"2.0\"}\n")
	configPath = filepath.Join(dir, "detector.yml")
	write(configPath, fmt.Sprintf(`service: shop
signals:
  - name: payments_retries
    kind: retry_ratio
    selector: '{upstream="payments"}'
    by: [strategy]
changes:
  manifests: [%s]
`, manifest))
	httpConfigPath = filepath.Join(dir, "http.yml")
	write(httpConfigPath, "authorization:\n  credentials: s3cret\n")
	return configPath, httpConfigPath
}

func parseAnalyze(t *testing.T, args ...string) *analyzeCmd {
	t.Helper()
	app := kingpin.New("tailguardctl", "")
	c := registerAnalyze(app)
	if _, err := app.Parse(append([]string{"analyze"}, args...)); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	return c
}

func TestAnalyzeCommand(t *testing.T) {
	prom := newPromServer(t)
	srv := httptest.NewServer(prom)
	defer srv.Close()
	cfg, httpCfg := analyzeFiles(t)
	common := []string{"--prometheus.url=" + srv.URL, "--config=" + cfg, "--http.config.file=" + httpCfg, "--until=2025-03-01T10:30:00Z"}

	var text bytes.Buffer
	c := parseAnalyze(t, append(common, "--since=30m")...)
	if err := c.run(context.Background(), &text, "text"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"tailguard analysis of shop",
		"declared  payments-client  1.0→2.0",
		"caused by declared payments-client 1.0→2.0 at 2025-03-01T10:00:00Z",
		`payments_retries {strategy="decorrelated"}`,
		"sum by (strategy) (increase(backoff_calls_total{upstream=\"payments\"}[1m]))",
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
	for _, a := range prom.auth {
		if a != "Bearer s3cret" {
			t.Fatalf("Authorization = %q, want the configured bearer token", a)
		}
	}

	var js bytes.Buffer
	c = parseAnalyze(t, append(common, "--change=payments-client", "--service=shop-eu", "--exit-code")...)
	err := c.run(context.Background(), &js, "json")
	if !errors.Is(err, errRegressions) {
		t.Errorf("err = %v, want regressions found", err)
	}
	var rep detector.Report
	if err := json.Unmarshal(js.Bytes(), &rep); err != nil {
		t.Fatalf("json output: %v\n%s", err, js.String())
	}
	if rep.Service != "shop-eu" || rep.Summary.Regressed != 1 || !rep.Monitored.Start.Equal(analyzeChange) || len(rep.Incidents) != 1 {
		t.Errorf("report = %+v", rep)
	}
}

func TestAnalyzeCommandErrors(t *testing.T) {
	cfg, _ := analyzeFiles(t)
	for _, tc := range []struct {
		args   []string
		output string
		want   string
	}{
		{[]string{"--prometheus.url=http://x", "--config=" + cfg}, "text", "exactly one of --since and --change"},
		{[]string{"--prometheus.url=http://x", "--config=" + cfg, "--since=1h", "--change=a"}, "text", "exactly one of"},
		{[]string{"--prometheus.url=http://x", "--config=" + cfg, "--since=1h"}, "yaml", "output format"},
		{[]string{"--prometheus.url=http://x", "--config=" + cfg, "--since=1h", "--until=yesterday"}, "text", "--until"},
		{[]string{"--prometheus.url=http://x", "--config=/nonexistent", "--since=1h"}, "text", "read detector config"},
		{[]string{"--prometheus.url=http://x", "--config=" + cfg, "--since=1h", "--http.config.file=/nonexistent"}, "text", "http config"},
		{[]string{"--prometheus.url=::", "--config=" + cfg, "--since=1h"}, "text", "prometheus url"},
	} {
		c := parseAnalyze(t, tc.args...)
		err := c.run(context.Background(), &bytes.Buffer{}, tc.output)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
	}
	app := kingpin.New("tailguardctl", "")
	registerAnalyze(app)
	if _, err := app.Parse([]string{"analyze", "--since=1h"}); err == nil {
		t.Error("missing required flags accepted")
	}
	if got, err := parseAnalyzeTime("1740823200.5"); err != nil || !got.Equal(analyzeChange.Add(500*time.Millisecond)) {
		t.Errorf("unix time = %v, %v", got, err)
	}
}
