package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// waitTimeout bounds how long a test waits for the flag provider to pick up
// a change; it guards against hangs and is not a latency assertion (a
// reload takes about the provider's debounce).
const waitTimeout = 10 * time.Second

const flagsLegacy = `{
  "flags": {
    "backoff-strategy": {"state": "ENABLED", "variants": {"exponential": "exponential", "decorrelated": "decorrelated"}, "defaultVariant": "%s"},
    "backoff-constants": {"state": "ENABLED", "defaultVariant": "v",
      "variants": {"v": {"exponential": {"base": "1ms", "cap": "2ms", "maxAttempts": 3},
                         "decorrelated": {"base": "2ms", "cap": "8ms", "maxAttempts": 5}}}}
  }
}`

func writeFlags(t *testing.T, path, strategy string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, fmt.Appendf(nil, flagsLegacy, strategy), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// newTestShop runs a shop on loopback with no own latency.
func newTestShop(t *testing.T, mod func(*config)) (*shop, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "flags.json")
	writeFlags(t, path, "exponential")
	cfg := defaultConfig()
	cfg.ListenAddress = "127.0.0.1:0"
	cfg.FlagFile = path
	cfg.Payments.Latency = 0
	cfg.Payments.FailureRatio = 0
	cfg.Work = workConfig{}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := newShop(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	// Run marks the shop ready once its servers and load are started; wait
	// for that as a client polling /-/ready would.
	for deadline := time.Now().Add(10 * time.Second); !s.ready.Load(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			cancel()
			t.Fatal("the shop did not become ready within 10s")
		}
	}
	t.Cleanup(func() {
		cancel()
		<-done
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if err := s.Close(sctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s, path
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestConfigValidate(t *testing.T) {
	ok := defaultConfig()
	ok.FlagFile = "flags.json"
	if err := ok.validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*config)
		want string
	}{
		{"no flag file", func(c *config) { c.FlagFile = "" }, "flags.file"},
		{"no instance", func(c *config) { c.InstanceID = "" }, "flags.instance-id"},
		{"no version", func(c *config) { c.Version = "" }, "version"},
		{"failure ratio 1", func(c *config) { c.Payments.FailureRatio = 1 }, "payments.failure-ratio"},
		{"failure ratio negative", func(c *config) { c.Payments.FailureRatio = -0.1 }, "payments.failure-ratio"},
		{"negative latency", func(c *config) { c.Payments.Latency = -time.Second }, "payments.latency"},
		{"negative work", func(c *config) { c.Work.Jitter = -time.Second }, "latency"},
		{"slow ratio", func(c *config) { c.Work.SlowRatio = 2 }, "latency.slow-ratio"},
		{"rps", func(c *config) { c.Load.CheckoutRPS = maxRPS + 1 }, "load.checkout-rps"},
		{"search rps", func(c *config) { c.Load.SearchRPS = -1 }, "load.search-rps"},
		{"histograms", func(c *config) { c.Histograms = "classic" }, "histograms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			err := c.validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("validate() = %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

func TestRunFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"--help"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "--flags.file") {
		t.Errorf("--help: exit %d, output %q", code, out.String())
	}
	out.Reset()
	if code := run(nil, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "flags.file") {
		t.Errorf("no --flags.file: exit %d, stderr %q", code, errOut.String())
	}
	errOut.Reset()
	missing := filepath.Join(t.TempDir(), "nope.json")
	if code := run([]string{"--flags.file=" + missing, "--web.listen-address=127.0.0.1:0"}, &out, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "nope.json") {
		t.Errorf("missing flag file: exit %d, stderr %q", code, errOut.String())
	}
}

// The shop serves both endpoints with the catalogue's metrics and follows
// the flag file: a changed strategy is in force without a restart.
func TestShopServesAndFollowsFlags(t *testing.T) {
	s, path := newTestShop(t, nil)
	base := "http://" + s.Addr()
	for _, ep := range []string{endpointCheckout, endpointSearch} {
		if code, body := get(t, base+ep); code != http.StatusOK {
			t.Errorf("GET %s: %d %s", ep, code, body)
		}
	}
	if code, _ := get(t, base+"/-/ready"); code != http.StatusOK {
		t.Errorf("ready: %d", code)
	}
	_, metrics := get(t, base+"/metrics")
	for _, want := range []string{
		`http_request_duration_seconds_bucket{endpoint="/checkout",strategy="exponential",version="3.0",le="0.4"} 1`,
		`http_request_duration_seconds_count{endpoint="/search",strategy="",version="3.0"} 1`,
		`http_requests_total{code="200",endpoint="/checkout"} 1`,
		`dten_gateway_build_info{version="3.0"} 1`,
		`backoff_policy_info{strategy="exponential"} 1`,
		`backoff_policy_constant{constant="max_attempts"} 3`,
		`backoff_calls_total{result="success",strategy="exponential",upstream="payments"} 1`,
		`backoff_retries_total{strategy="exponential",upstream="payments"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	writeFlags(t, path, "decorrelated")
	deadline := time.Now().Add(waitTimeout)
	for s.retrier.Policy().Strategy().String() != "decorrelated" {
		if time.Now().After(deadline) {
			t.Fatalf("the strategy flag change was not picked up within %s", waitTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := get(t, base+endpointCheckout); code != http.StatusOK {
		t.Errorf("checkout after the change: %d", code)
	}
	_, metrics = get(t, base+"/metrics")
	for _, want := range []string{
		`http_request_duration_seconds_count{endpoint="/checkout",strategy="decorrelated",version="3.0"} 1`,
		`backoff_policy_info{strategy="decorrelated"} 1`,
		`backoff_policy_constant{constant="max_attempts"} 5`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics after the change lack %s", want)
		}
	}
	if strings.Contains(metrics, `backoff_policy_info{strategy="exponential"}`) {
		t.Error("the previous strategy is still exported")
	}
}

// With --histograms=native the request histogram has native buckets only:
// the text exposition then carries no classic buckets, the protobuf one a
// native histogram.
func TestNativeHistogramsOnly(t *testing.T) {
	s, _ := newTestShop(t, func(c *config) { c.Histograms = histogramsNative })
	base := "http://" + s.Addr()
	if code, _ := get(t, base+endpointCheckout); code != http.StatusOK {
		t.Fatalf("checkout: %d", code)
	}
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "http_request_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			if len(h.GetBucket()) != 0 {
				t.Errorf("classic buckets exported: %v", h.GetBucket())
			}
			if h.GetSchema() == 0 && len(h.GetPositiveSpan()) == 0 && h.GetZeroThreshold() == 0 {
				t.Errorf("no native histogram in %v", h)
			}
			found = true
		}
	}
	if !found {
		t.Fatal("http_request_duration_seconds not gathered")
	}
	// The text format shows a native-only histogram as its +Inf bucket.
	if _, metrics := get(t, base+"/metrics"); strings.Contains(metrics, `le="0.4"`) {
		t.Error("the text exposition has classic buckets")
	}
}

// Transient payments failures are retried up to the policy's attempts,
// other failures are not retried; both fail the checkout with 502.
func TestCheckoutRetries(t *testing.T) {
	for _, tc := range []struct {
		name             string
		status           int
		attempts         int64
		result           string
		retries, results float64
	}{
		{"transient", http.StatusServiceUnavailable, 3, "exhausted", 2, 1},
		{"permanent", http.StatusInternalServerError, 1, "permanent", 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int64
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				calls.Add(1)
				w.WriteHeader(tc.status)
			}))
			defer up.Close()
			s, _ := newTestShop(t, nil)
			s.paymentsAt = up.URL
			if code, _ := get(t, "http://"+s.Addr()+endpointCheckout); code != http.StatusBadGateway {
				t.Errorf("checkout: %d, want 502", code)
			}
			if got := calls.Load(); got != tc.attempts {
				t.Errorf("payments called %d times, want %d", got, tc.attempts)
			}
			if got := testutil.ToFloat64(s.requests.WithLabelValues(endpointCheckout, "502")); got != 1 {
				t.Errorf("http_requests_total{code=502} = %v", got)
			}
			_, metrics := get(t, "http://"+s.Addr()+"/metrics")
			for _, want := range []string{
				fmt.Sprintf(`backoff_calls_total{result=%q,strategy="exponential",upstream="payments"} %v`, tc.result, tc.results),
				fmt.Sprintf(`backoff_retries_total{strategy="exponential",upstream="payments"} %v`, tc.retries),
			} {
				if !strings.Contains(metrics, want) {
					t.Errorf("metrics lack %s", want)
				}
			}
		})
	}
}

// The fake payments upstream fails about its failure ratio of attempts.
func TestPaymentsFailureRatio(t *testing.T) {
	s, _ := newTestShop(t, func(c *config) { c.Payments.FailureRatio = 0.5 })
	const n = 400
	failed := 0
	for range n {
		rec := httptest.NewRecorder()
		s.pay(rec, httptest.NewRequest(http.MethodGet, "/pay", nil))
		if rec.Code == http.StatusServiceUnavailable {
			failed++
		}
	}
	// Binomial(400, 0.5): 4.9 standard deviations either side.
	if failed < 150 || failed > 250 {
		t.Errorf("%d of %d attempts failed, want about half", failed, n)
	}
}

func TestGenerate(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { hits.Add(1) }))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		generate(ctx, srv.Client(), srv.URL, 200)
		close(done)
	}()
	deadline := time.Now().Add(waitTimeout)
	for hits.Load() < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests within %s at 200 rps", hits.Load(), waitTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("generate did not return after its context ended")
	}
}
