package sidecar

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/detector"
	"github.com/tailguard/tailguard/promembed"
)

// newTestDaemon runs a daemon on a copy of testdata against an embedded,
// empty Prometheus.
func newTestDaemon(t *testing.T) (*Daemon, *httptest.Server, string) {
	t.Helper()
	db, err := promembed.Open(promembed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return newTestDaemonWith(t, db)
}

// newTestDaemonWith runs a daemon on a copy of testdata against q.
func newTestDaemonWith(t *testing.T, q detector.Querier) (*Daemon, *httptest.Server, string) {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"tailguard.yml", "policy.yml", "flags.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	d, err := New(Options{ConfigFile: filepath.Join(dir, "tailguard.yml"), Registerer: reg, Gatherer: reg, Querier: q,
		Now: func() time.Time { return time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close)
	return d, srv, dir
}

func do(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(strings.TrimSpace(body), "{") {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestProbesAndReload(t *testing.T) {
	d, srv, dir := newTestDaemon(t)
	if code, _ := do(t, "GET", srv.URL+"/-/healthy", ""); code != 200 {
		t.Errorf("healthy: %d", code)
	}
	if code, _ := do(t, "GET", srv.URL+"/-/ready", ""); code != 503 {
		t.Errorf("ready before Prometheus answered: %d, want 503", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if code, _ := do(t, "GET", srv.URL+"/-/ready", ""); code != 200 {
		t.Errorf("ready: %d", code)
	}

	// A broken configuration is refused and the old one keeps serving.
	cfgPath := filepath.Join(dir, "tailguard.yml")
	good, _ := os.ReadFile(cfgPath)
	if err := os.WriteFile(cfgPath, []byte("evaluation_interval: soon\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, body := do(t, "POST", srv.URL+"/-/reload", "")
	if code != 500 || !strings.Contains(body, "evaluation_interval") {
		t.Errorf("reload of a bad config: %d %q", code, body)
	}
	if got := testutil.ToFloat64(d.metrics.reloadOK); got != 0 {
		t.Errorf("reload gauge = %v after a failed reload", got)
	}
	if _, err := d.Evaluate(context.Background(), "shop", "manual"); err != nil {
		t.Errorf("the previous runtime stopped serving: %v", err)
	}
	if err := os.WriteFile(cfgPath, good, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _ := do(t, "PUT", srv.URL+"/-/reload", ""); code != 200 {
		t.Errorf("reload of the good config: %d", code)
	}
	if got := testutil.ToFloat64(d.metrics.reloadOK); got != 1 {
		t.Errorf("reload gauge = %v after a good reload", got)
	}
}

func TestEvaluateWithoutDataIsInconclusive(t *testing.T) {
	_, srv, _ := newTestDaemon(t)
	code, body := do(t, "POST", srv.URL+"/api/v1/evaluate?service=shop", "")
	if code != 200 {
		t.Fatalf("evaluate: %d %s", code, body)
	}
	var res struct {
		Observation struct {
			Assessments []struct {
				SLO     string   `json:"slo"`
				Value   *float64 `json:"value"`
				Verdict string   `json:"verdict"`
			} `json:"assessments"`
		} `json:"observation"`
		Decision struct {
			Kind string `json:"kind"`
		} `json:"decision"`
	}
	if err := json.Unmarshal([]byte(body), &res); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	if len(res.Observation.Assessments) == 0 {
		t.Fatal("no assessments")
	}
	for _, a := range res.Observation.Assessments {
		if a.Verdict != "inconclusive" || a.Value != nil {
			t.Errorf("%s: verdict %s value %v, want inconclusive with a null value", a.SLO, a.Verdict, a.Value)
		}
	}
	if res.Decision.Kind != "none" {
		t.Errorf("decision on no data: %s", res.Decision.Kind)
	}
	if code, _ := do(t, "POST", srv.URL+"/api/v1/evaluate?service=cart", ""); code != 404 {
		t.Errorf("unknown service: %d", code)
	}
	if code, body := do(t, "GET", srv.URL+"/api/v1/findings", ""); code != 200 || !strings.Contains(body, `"service": "shop"`) {
		t.Errorf("findings: %d %s", code, body)
	}
}

func TestChangesAPI(t *testing.T) {
	d, srv, _ := newTestDaemon(t)
	code, body := do(t, "POST", srv.URL+"/api/v1/changes", `{"name":"vendor-2026.11","actor":"ci","components":[{"name":"dten-gateway","from":"2.3","to":"3.0"}]}`)
	if code != 202 || !strings.Contains(body, "dten-gateway") {
		t.Fatalf("declare: %d %s", code, body)
	}
	evs, err := d.declared.Changes(context.Background(), d.now().Add(-time.Minute), d.now().Add(time.Minute))
	if err != nil || len(evs) != 1 || evs[0].To != "3.0" {
		t.Fatalf("declared = %+v, %v", evs, err)
	}
	// A manifest without a time is stamped now, in YAML as in JSON, and a
	// value that mentions "time:" does not count as one.
	for _, body := range []string{
		"name: vendor-2026.12\ncomponents:\n  - {name: dten-gateway, from: \"3.0\", to: \"3.1\"}\n",
		`{"reason":"maintenance time: 5m","components":[{"name":"payments-sdk","to":"1.4"}]}`,
	} {
		code, resp := do(t, "POST", srv.URL+"/api/v1/changes", body)
		if code != 202 || !strings.Contains(resp, `"time": "2026-11-23T12:00:00Z"`) {
			t.Errorf("declare %q without a time: %d %s", body, code, resp)
		}
	}
	for _, bad := range []struct{ body, want string }{
		{`{"components":[]}`, "components"},
		{`{"components":[{"name":"","to":"1"}]}`, "name"},
		{`{"unknown":1}`, "unknown"},
		{`not json`, "decode"},
	} {
		code, body := do(t, "POST", srv.URL+"/api/v1/changes", bad.body)
		if code != 400 || !strings.Contains(body, bad.want) {
			t.Errorf("POST %s: %d %s, want 400 naming %q", bad.body, code, body, bad.want)
		}
	}
}

func TestWebhookTriggersCycle(t *testing.T) {
	d, srv, _ := newTestDaemon(t)
	payload := `{"version":"4","status":"firing","receiver":"tailguard","alerts":[{"status":"firing","labels":{"alertname":"TailLatencyBudgetBurn","tailguard_service":"shop","tailguard_slo":"checkout-latency"},"startsAt":"2026-11-23T11:59:00Z"}]}`
	if code, body := do(t, "POST", srv.URL+"/api/v1/alerts", payload); code != 200 {
		t.Fatalf("webhook: %d %s", code, body)
	}
	if code, _ := do(t, "POST", srv.URL+"/api/v1/alerts", `{"version":"4"`); code != 400 {
		t.Errorf("malformed payload: %d, want 400", code)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	deadline := time.After(30 * time.Second)
	for len(d.Results()) == 0 {
		select {
		case <-deadline:
			t.Fatal("the alert did not trigger a cycle")
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if r := d.Results()[0]; r.Trigger != "alert TailLatencyBudgetBurn" {
		t.Errorf("trigger = %q", r.Trigger)
	}
	if got := testutil.ToFloat64(d.metrics.triggers.WithLabelValues("evaluated")); got != 1 {
		t.Errorf("evaluated triggers = %v", got)
	}
}

func TestStatusPageAndIncidents(t *testing.T) {
	d, srv, _ := newTestDaemon(t)
	if _, err := d.Evaluate(context.Background(), "shop", "manual"); err != nil {
		t.Fatal(err)
	}
	code, body := do(t, "GET", srv.URL+"/", "")
	if code != 200 {
		t.Fatalf("status page: %d", code)
	}
	for _, want := range []string{"checkout-latency", "backoff-strategy", "decorrelated 100%", "no data", "Query cost of the last cycle", "<td>shop</td><td>all</td>", "<td>slo:checkout-latency</td>"} {
		if !strings.Contains(body, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	if code, body := do(t, "GET", srv.URL+"/api/v1/incidents", ""); code != 200 || strings.TrimSpace(body) != "[]" {
		t.Errorf("incidents: %d %s", code, body)
	}
	if code, _ := do(t, "GET", srv.URL+"/api/v1/incidents/nope", ""); code != 404 {
		t.Errorf("unknown incident: %d", code)
	}
	if code, body := do(t, "POST", srv.URL+"/api/v1/incidents/nope/approve", `{"approver":"operator:alice"}`); code != 404 || !strings.Contains(body, "no pending plan") {
		t.Errorf("approve without plan: %d %s", code, body)
	}
	if code, body := do(t, "POST", srv.URL+"/api/v1/incidents/nope/approve", `{"approver":"operator:alice","reason":"checked the model"}`); code != 404 || !strings.Contains(body, "no pending plan") {
		t.Errorf("approve with a reason, without plan: %d %s", code, body)
	}
	if code, body := do(t, "POST", srv.URL+"/api/v1/incidents/nope/approve", `{"approver":"alice"}`); code != 400 || !strings.Contains(body, "approver") {
		t.Errorf("approve with a bad approver: %d %s", code, body)
	}
	code, body = do(t, "GET", srv.URL+"/metrics", "")
	for _, want := range []string{"tailguard_config_last_reload_successful 1", "tailguard_cycles_total", "tailguard_flag_variant_info{flag=\"backoff-strategy\",variant=\"decorrelated\"} 1",
		`tailguard_signal_queries_total{result="ok",service="shop",signal="slo:checkout-latency",type="instant"}`,
		`tailguard_last_cycle_query_cost{measure="queries",service="shop"}`} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestEncodeLenient(t *testing.T) {
	type inner struct {
		F float64 `json:"f"`
	}
	v := struct {
		A float64           `json:"a"`
		B []float64         `json:"b,omitempty"`
		C map[string]inner  `json:"c"`
		D time.Time         `json:"d"`
		E string            `json:"-"`
		G *inner            `json:"g,omitempty"`
		H map[string]string `json:"h,omitempty"`
	}{A: nan(), B: []float64{1, nan()}, C: map[string]inner{"x": {F: nan()}}, D: time.Unix(0, 0).UTC(), E: "hidden"}
	var buf bytes.Buffer
	if err := encodeLenient(&buf, v); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got["a"] != nil || got["b"].([]any)[1] != nil || got["c"].(map[string]any)["x"].(map[string]any)["f"] != nil {
		t.Errorf("NaN not encoded as null: %s", buf.String())
	}
	if got["d"] != "1970-01-01T00:00:00Z" || got["E"] != nil || got["hidden"] != nil {
		t.Errorf("tags or marshalers not honoured: %s", buf.String())
	}
	if _, ok := got["g"]; ok {
		t.Errorf("omitempty pointer encoded: %s", buf.String())
	}
}

func nan() float64 { var z float64; return z / z }

func TestStatusPageNamesInvalidFlags(t *testing.T) {
	_, srv, dir := newTestDaemon(t)
	path := filepath.Join(dir, "flags.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	doc["flags"].(map[string]any)["typo-flag"] = map[string]any{"state": "ON", "variants": map[string]any{"a": true}, "defaultVariant": "a"}
	b, _ = json.Marshal(doc)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	code, body := do(t, "GET", srv.URL+"/", "")
	if code != 200 {
		t.Fatalf("status page: %d", code)
	}
	for _, want := range []string{"typo-flag", `state &#34;ON&#34; is invalid`, "tailguard writes no flag until it is fixed"} {
		if !strings.Contains(body, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
}

// switchableQuerier fails every query with a transport error while down
// is set, and answers from the embedded engine otherwise.
type switchableQuerier struct {
	db   *promembed.DB
	down *atomic.Bool
}

func (s switchableQuerier) Query(ctx context.Context, q string, ts time.Time) (model.Value, v1.Warnings, error) {
	if s.down.Load() {
		return nil, nil, &url.Error{Op: "Post", URL: "http://127.0.0.1:9/api/v1/query", Err: errors.New("connection refused")}
	}
	return s.db.Query(ctx, q, ts)
}

func (s switchableQuerier) QueryRange(ctx context.Context, q string, r v1.Range) (model.Value, v1.Warnings, error) {
	if s.down.Load() {
		return nil, nil, &url.Error{Op: "Post", URL: "http://127.0.0.1:9/api/v1/query_range", Err: errors.New("connection refused")}
	}
	return s.db.QueryRange(ctx, q, r)
}

func TestBlindLoopIsVisible(t *testing.T) {
	db, err := promembed.Open(promembed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	down := &atomic.Bool{}
	d, srv, _ := newTestDaemonWith(t, switchableQuerier{db: db, down: down})
	ctx := context.Background()
	if err := d.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	up := func() float64 {
		t.Helper()
		_, body := do(t, "GET", srv.URL+"/metrics", "")
		for _, line := range strings.Split(body, "\n") {
			if v, ok := strings.CutPrefix(line, "tailguard_prometheus_up "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return f
			}
		}
		t.Fatal("tailguard_prometheus_up not served")
		return -1
	}
	if got := up(); got != 1 {
		t.Errorf("tailguard_prometheus_up = %v while Prometheus answers", got)
	}

	down.Store(true)
	if _, err := d.Evaluate(ctx, "shop", "manual"); err == nil {
		t.Fatal("a cycle without Prometheus succeeded")
	}
	if got := up(); got != 0 {
		t.Errorf("tailguard_prometheus_up = %v while Prometheus is down", got)
	}
	var views []struct {
		Service    string `json:"service"`
		Error      string `json:"error"`
		Prometheus struct {
			Up    bool   `json:"up"`
			Error string `json:"error"`
		} `json:"prometheus"`
		Assessments []struct {
			SLO     string `json:"slo"`
			Verdict string `json:"verdict"`
			Reason  string `json:"reason"`
		} `json:"assessments"`
	}
	_, body := do(t, "GET", srv.URL+"/api/v1/findings", "")
	if err := json.Unmarshal([]byte(body), &views); err != nil || len(views) != 1 {
		t.Fatalf("findings: %v %s", err, body)
	}
	v := views[0]
	if v.Prometheus.Up || !strings.Contains(v.Prometheus.Error, "connection refused") {
		t.Errorf("findings report Prometheus %+v", v.Prometheus)
	}
	if len(v.Assessments) != 4 {
		t.Fatalf("assessments %+v, want one per SLO", v.Assessments)
	}
	for _, a := range v.Assessments {
		if a.Verdict != "inconclusive" || !strings.Contains(a.Reason, "Prometheus unreachable") || !strings.Contains(a.Reason, "no action") {
			t.Errorf("SLO %s while blind: %s %q", a.SLO, a.Verdict, a.Reason)
		}
	}
	_, page := do(t, "GET", srv.URL+"/", "")
	for _, want := range []string{`class="banner"`, "Prometheus is not answering", "takes no action", "inconclusive: Prometheus unreachable"} {
		if !strings.Contains(page, want) {
			t.Errorf("status page lacks %q while blind", want)
		}
	}
	if code, _ := do(t, "GET", srv.URL+"/-/ready", ""); code != http.StatusOK {
		t.Errorf("/-/ready = %d while Prometheus is down; the sidecar must not take its pod out of rotation", code)
	}

	down.Store(false)
	if _, err := d.Evaluate(ctx, "shop", "manual"); err != nil {
		t.Fatal(err)
	}
	if got := up(); got != 1 {
		t.Errorf("tailguard_prometheus_up = %v after Prometheus came back", got)
	}
	if _, page := do(t, "GET", srv.URL+"/", ""); strings.Contains(page, `class="banner"`) {
		t.Error("the blind banner stays after Prometheus came back")
	}
}
