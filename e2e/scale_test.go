//go:build e2e && linux

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scaleSize is one point of the scale benchmark: services watched by one
// sidecar, each with slices pods.
type scaleSize struct{ services, slices int }

// scaleRow is what one size measured.
type scaleRow struct {
	size                     scaleSize
	series                   int
	rounds                   int
	roundSeconds             float64 // wall time of one cycle of every service
	queries, seriesRead      float64 // per round
	samplesRead              float64
	promCPU                  float64 // cores, during the rounds
	promRSSPeak, promRSSIdle float64 // MiB
	sidecarRSSPeak           float64 // MiB
	regressed                float64 // regressed findings per round
}

// TestScale measures what one sidecar watching many services costs, against
// a real Prometheus holding synthetic history written with promtool tsdb
// create-blocks-from openmetrics: per size, the wall time of a cycle of
// every service, the queries, series and samples it reads, Prometheus' CPU
// and memory during the cycles and the sidecar's peak RSS. Skipped unless
// E2E_SCALE is set (hack/bench-scale, make bench-scale); E2E_SCALE_SIZES
// overrides the sizes ("1x10,10x100,...").
func TestScale(t *testing.T) {
	if os.Getenv("E2E_SCALE") == "" {
		t.Skip("set E2E_SCALE=1 to run the scale benchmark; see hack/bench-scale")
	}
	prom, promtool := lookBin("E2E_PROMETHEUS", "prometheus"), lookBin("E2E_PROMTOOL", "promtool")
	if prom == "" || promtool == "" {
		t.Skip("SKIP: scale: prometheus or promtool not found (install Debian's prometheus package or set E2E_PROMETHEUS and E2E_PROMTOOL)")
	}
	sizes := []scaleSize{{1, 10}, {1, 100}, {10, 10}, {10, 100}, {100, 10}, {100, 100}}
	if s := os.Getenv("E2E_SCALE_SIZES"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			var z scaleSize
			if _, err := fmt.Sscanf(f, "%dx%d", &z.services, &z.slices); err != nil {
				t.Fatalf("E2E_SCALE_SIZES: %q: %v", f, err)
			}
			sizes = append(sizes, z)
		}
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	bin := filepath.Join(work, "tailguard")
	build := exec.Command("go", "build", "-buildvcs=false", "-o", bin, "./cmd/tailguard")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var rows []scaleRow
	for _, z := range sizes {
		row := measureScale(t, work, prom, promtool, bin, z)
		rows = append(rows, row)
		t.Logf("scale %dx%d: %.2fs per round", z.services, z.slices, row.roundSeconds)
	}
	printScale(os.Stdout, rows)
}

// The synthetic world: a change 30 minutes before now after a 1h baseline,
// 30 s scrapes, and history running 12 minutes into the future so that the
// cycles of the measurement see data.
const (
	scaleScrape   = 30 * time.Second
	scaleBaseline = 65 * time.Minute
	scaleSince    = 30 * time.Minute
	scaleAhead    = 12 * time.Minute
	scaleRounds   = 4
)

var (
	scaleBounds      = []string{"0.05", "0.1", "0.25", "0.5", "+Inf"}
	scaleBoundValues = []float64{0.05, 0.1, 0.25, 0.5, math.Inf(1)}
)

func measureScale(t *testing.T, work, prom, promtool, bin string, z scaleSize) scaleRow {
	t.Helper()
	dir := filepath.Join(work, fmt.Sprintf("%dx%d", z.services, z.slices))
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(scaleScrape)
	om := filepath.Join(dir, "history.om")
	series := writeHistory(t, om, z, now)
	cmd := exec.Command(promtool, "tsdb", "create-blocks-from", "openmetrics", om, filepath.Join(dir, "data"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool create-blocks-from: %v\n%s", err, lastLines(string(out), 20))
	}
	_ = os.Remove(om)

	pport, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "prometheus.yml"), "global:\n  scrape_interval: 30s\nscrape_configs: []\n")
	pp, err := Start("prometheus", filepath.Join(dir, "prometheus.log"), dir, nil, prom,
		"--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--storage.tsdb.retention.time=30d", "--web.listen-address="+HostPort(pport))
	if err != nil {
		t.Fatal(err)
	}
	defer pp.Stop(10 * time.Second)
	waitHTTP(t, "http://"+HostPort(pport)+"/-/ready", time.Minute)

	writeSidecarConfig(t, dir, z, HostPort(pport))
	tport, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	promIdle := rssMiB(t, pp.Pid())
	sp, err := Start("tailguard", filepath.Join(dir, "tailguard.log"), dir, nil, bin,
		"--config.file="+filepath.Join(dir, "tailguard.yml"), "--web.listen-address="+HostPort(tport), "--actor=tailguard-scale")
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Stop(10 * time.Second)
	metricsURL := "http://" + HostPort(tport) + "/metrics"
	waitHTTP(t, "http://"+HostPort(tport)+"/-/healthy", time.Minute)

	// The first round warms caches; measure the next scaleRounds.
	count := func() float64 { return scrapeValue(t, metricsURL, "tailguard_loop_duration_seconds_count") }
	waitFor(t, 5*time.Minute, "first round", func() bool { return count() >= float64(z.services) })
	row := scaleRow{size: z, series: series, promRSSIdle: promIdle}
	c0, s0 := count(), scrapeValue(t, metricsURL, "tailguard_loop_duration_seconds_sum")
	q0, ser0, smp0 := scrapeValue(t, metricsURL, "tailguard_signal_queries_total"), scrapeValue(t, metricsURL, "tailguard_signal_query_series_total"), scrapeValue(t, metricsURL, "tailguard_signal_query_samples_total")
	f0 := scrapeValue(t, metricsURL, `tailguard_findings_total{verdict="regressed"}`)
	cpu0, w0 := cpuSeconds(t, pp.Pid()), time.Now()
	target := c0 + float64(scaleRounds*z.services)
	deadline := time.Now().Add(time.Duration(scaleRounds)*15*time.Second + 10*time.Minute)
	for count() < target {
		if time.Now().After(deadline) {
			t.Fatalf("%dx%d: %v of %v cycles after the deadline", z.services, z.slices, count()-c0, target-c0)
		}
		row.promRSSPeak = math.Max(row.promRSSPeak, rssMiB(t, pp.Pid()))
		row.sidecarRSSPeak = math.Max(row.sidecarRSSPeak, rssMiB(t, sp.Pid()))
		time.Sleep(200 * time.Millisecond)
	}
	// Prometheus' CPU over the measurement, scaled to the share of the wall
	// time the sidecar spent cycling (it idles between the rounds).
	wall := time.Since(w0).Seconds()
	dc := count() - c0
	rounds := dc / float64(z.services)
	busy := scrapeValue(t, metricsURL, "tailguard_loop_duration_seconds_sum") - s0
	row.rounds = int(rounds)
	row.roundSeconds = busy / rounds
	row.promCPU = (cpuSeconds(t, pp.Pid()) - cpu0) / math.Min(wall, math.Max(busy, 1e-3))
	row.queries = (scrapeValue(t, metricsURL, "tailguard_signal_queries_total") - q0) / rounds
	row.seriesRead = (scrapeValue(t, metricsURL, "tailguard_signal_query_series_total") - ser0) / rounds
	row.samplesRead = (scrapeValue(t, metricsURL, "tailguard_signal_query_samples_total") - smp0) / rounds
	row.regressed = (scrapeValue(t, metricsURL, `tailguard_findings_total{verdict="regressed"}`) - f0) / rounds
	row.promRSSPeak = math.Max(row.promRSSPeak, rssMiB(t, pp.Pid()))
	row.sidecarRSSPeak = math.Max(row.sidecarRSSPeak, rssMiB(t, sp.Pid()))
	if row.regressed < float64(z.services) {
		t.Errorf("%dx%d: %.1f regressed findings per round, want at least one per service (the first pod of each regresses)", z.services, z.slices, row.regressed)
	}
	return row
}

// writeHistory writes the synthetic history of every service as
// OpenMetrics and returns the number of series. Per pod: backoff calls and
// retries (the first pod of each service retries 3× as often after the
// change) and a classic latency histogram; per service: a build info
// series whose version changes scaleSince before now.
func writeHistory(t *testing.T, path string, z scaleSize, now time.Time) int {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	start, end, change := now.Add(-scaleSince-scaleBaseline), now.Add(scaleAhead), now.Add(-scaleSince)
	var steps []time.Time
	for ts := start; !ts.After(end); ts = ts.Add(scaleScrape) {
		steps = append(steps, ts)
	}
	sec := func(ts time.Time) string { return strconv.FormatInt(ts.Unix(), 10) }
	rng := rand.New(rand.NewPCG(uint64(z.services), uint64(z.slices)))
	series := 0
	job := func(s int) string { return fmt.Sprintf("svc-%03d", s) }
	pod := func(p int) string { return fmt.Sprintf("pod-%03d", p) }

	fmt.Fprintln(w, "# TYPE backoff_calls counter")
	for s := range z.services {
		for p := range z.slices {
			series++
			c := 0.0
			for _, ts := range steps {
				c += float64(150 + rng.IntN(60))
				fmt.Fprintf(w, "backoff_calls_total{job=%q,pod=%q,upstream=\"payments\",strategy=\"exponential\",result=\"success\"} %g %s\n", job(s), pod(p), c, sec(ts))
			}
		}
	}
	fmt.Fprintln(w, "# TYPE backoff_retries counter")
	for s := range z.services {
		for p := range z.slices {
			series++
			r := 0.0
			for _, ts := range steps {
				rate := 0.01
				if p == 0 && !ts.Before(change) {
					rate = 0.03
				}
				r += math.Round(180 * rate * (0.7 + 0.6*rng.Float64()))
				fmt.Fprintf(w, "backoff_retries_total{job=%q,pod=%q,upstream=\"payments\",strategy=\"exponential\"} %g %s\n", job(s), pod(p), r, sec(ts))
			}
		}
	}
	fmt.Fprintln(w, "# TYPE http_request_duration_seconds histogram")
	for s := range z.services {
		for p := range z.slices {
			series += len(scaleBounds) + 2
			cum := make([]float64, len(scaleBounds))
			sum := 0.0
			for _, ts := range steps {
				// Exponential latencies (mean 40ms), bucket by bucket: a
				// normal draw around each bucket's expected count.
				n := float64(150 + rng.IntN(60))
				left, below := n, 0.0
				for i := range scaleBounds {
					k := left
					if i < len(scaleBounds)-1 {
						p := (math.Exp(-below/0.04) - math.Exp(-scaleBoundValues[i]/0.04)) / math.Exp(-below/0.04)
						k = math.Min(left, math.Max(0, math.Round(left*p+math.Sqrt(left*p*(1-p))*rng.NormFloat64())))
						below = scaleBoundValues[i]
					}
					left -= k
					for j := i; j < len(cum); j++ {
						cum[j] += k
					}
				}
				sum += n * 0.04
				for i, b := range scaleBounds {
					fmt.Fprintf(w, "http_request_duration_seconds_bucket{job=%q,pod=%q,endpoint=\"/checkout\",le=%q} %g %s\n", job(s), pod(p), b, cum[i], sec(ts))
				}
				fmt.Fprintf(w, "http_request_duration_seconds_count{job=%q,pod=%q,endpoint=\"/checkout\"} %g %s\n", job(s), pod(p), cum[len(cum)-1], sec(ts))
				fmt.Fprintf(w, "http_request_duration_seconds_sum{job=%q,pod=%q,endpoint=\"/checkout\"} %g %s\n", job(s), pod(p), sum, sec(ts))
			}
		}
	}
	fmt.Fprintln(w, "# TYPE dten_gateway_build_info gauge")
	for s := range z.services {
		for _, v := range []struct {
			version  string
			from, to time.Time
		}{{"2.3", start, change.Add(-scaleScrape)}, {"3.0", change, end}} {
			series++
			for _, ts := range steps {
				if ts.Before(v.from) || ts.After(v.to) {
					continue
				}
				fmt.Fprintf(w, "dten_gateway_build_info{job=%q,version=%q} 1 %s\n", job(s), v.version, sec(ts))
			}
		}
	}
	fmt.Fprintln(w, "# EOF")
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return series
}

// writeSidecarConfig writes one sidecar watching every service in observe
// mode (it decides, writes nothing).
func writeSidecarConfig(t *testing.T, dir string, z scaleSize, prom string) {
	t.Helper()
	var cfg, pol strings.Builder
	fmt.Fprintf(&cfg, "evaluation_interval: 15s\nprometheus:\n  url: http://%s\n  timeout: 60s\nflag_file: flags.json\npolicy_file: policy.yml\nservices:\n", prom)
	pol.WriteString("services:\n")
	flags := []string{}
	for s := range z.services {
		name := fmt.Sprintf("svc-%03d", s)
		fmt.Fprintf(&cfg, `  - name: %[1]s
    sli:
      job: %[1]s
    lookback: 2h
    detector:
      query_timeout: 60s
      signals:
        - name: checkout_latency
          kind: latency
          selector: '{job="%[1]s",endpoint="/checkout"}'
          by: [pod]
        - name: payments_retries
          kind: retry_ratio
          selector: '{job="%[1]s",upstream="payments"}'
          by: [pod]
      changes:
        build_info:
          - component: dten-gateway
            metric: dten_gateway_build_info
            selector: '{job="%[1]s"}'
`, name)
		fmt.Fprintf(&pol, `  - name: %[1]s
    mode: observe
    upstream: payments
    components: [dten-gateway]
    slos:
      - name: checkout-latency
        signal: latency
        selector: {endpoint: /checkout}
        objective: {quantile: 0.99, threshold: 400ms, window: 5m}
    backoff:
      base:        {min: 20ms,  max: 300ms, maxStep: 280ms}
      cap:         {min: 200ms, max: 3s,    maxStep: 2s}
      maxAttempts: {min: 2,     max: 6,     maxStep: 2}
      attemptLatency: 20ms
    flags:
      strategy: {key: %[1]s-strategy, newVariant: decorrelated, oldVariant: exponential, rollout: [100, 0]}
      constants: {key: %[1]s-constants}
`, name)
		flags = append(flags, fmt.Sprintf(`"%[1]s-strategy": {"state": "ENABLED", "variants": {"exponential": "exponential", "decorrelated": "decorrelated"}, "defaultVariant": "exponential"},
"%[1]s-constants": {"state": "ENABLED", "variants": {"v1": {"exponential": {"base": "50ms", "cap": "500ms", "maxAttempts": 3}, "decorrelated": {"base": "300ms", "cap": "3s", "maxAttempts": 6}}}, "defaultVariant": "v1"}`, name))
	}
	write(t, filepath.Join(dir, "tailguard.yml"), cfg.String())
	write(t, filepath.Join(dir, "policy.yml"), pol.String())
	write(t, filepath.Join(dir, "flags.json"), `{"$schema": "https://flagd.dev/schema/v0/flags.json", "flags": {`+strings.Join(flags, ",\n")+"}}\n")
}

func printScale(w io.Writer, rows []scaleRow) {
	fmt.Fprintln(w, "scale: one sidecar, a cycle of every service; real Prometheus over promtool-written history")
	fmt.Fprintf(w, "%-9s %7s %8s %9s %8s %8s %10s %9s %11s %11s %9s\n",
		"size", "slices", "series", "round s", "queries", "series", "samples", "prom CPU", "prom MiB", "(idle MiB)", "side MiB")
	for _, r := range rows {
		fmt.Fprintf(w, "%3dx%-5d %7d %8d %9.3f %8.0f %8.0f %10.0f %8.2fc %11.0f %11.0f %9.1f\n",
			r.size.services, r.size.slices, r.size.services*r.size.slices, r.series, r.roundSeconds, r.queries, r.seriesRead,
			r.samplesRead, r.promCPU, r.promRSSPeak, r.promRSSIdle, r.sidecarRSSPeak)
	}
	// Least squares of the round time on the services and the slices
	// watched: services are cycled one after another, each with a fixed
	// number of queries, and each slice adds series to read and test.
	if a, perService, perSlice, r2, ok := fitScale(rows); ok {
		fmt.Fprintf(w, "growth: round time ≈ %.3f s + %.1f ms × services + %.3f ms × slices (R² %.3f)\n", a, 1000*perService, 1000*perSlice, r2)
		for _, svc := range []int{1, 10, 100} {
			if fit := (15 - a - perService*float64(svc)) / perSlice; fit > 0 {
				fmt.Fprintf(w, "        a 15 s loop fits %d service(s) with about %.0f slices in all (%.0f each)\n", svc, fit, fit/float64(svc))
			}
		}
	}
}

// fitScale fits round = a + b·services + c·slices by least squares.
func fitScale(rows []scaleRow) (a, b, c, r2 float64, ok bool) {
	if len(rows) < 4 {
		return 0, 0, 0, 0, false
	}
	// Normal equations XᵀX β = Xᵀy for X = [1, services, slices].
	var m [3][4]float64
	for _, r := range rows {
		x := [3]float64{1, float64(r.size.services), float64(r.size.services * r.size.slices)}
		for i := range 3 {
			for j := range 3 {
				m[i][j] += x[i] * x[j]
			}
			m[i][3] += x[i] * r.roundSeconds
		}
	}
	for i := range 3 { // Gauss–Jordan with partial pivoting
		p := i
		for k := i + 1; k < 3; k++ {
			if math.Abs(m[k][i]) > math.Abs(m[p][i]) {
				p = k
			}
		}
		m[i], m[p] = m[p], m[i]
		if math.Abs(m[i][i]) < 1e-12 {
			return 0, 0, 0, 0, false
		}
		for k := range 3 {
			if k == i {
				continue
			}
			f := m[k][i] / m[i][i]
			for j := i; j < 4; j++ {
				m[k][j] -= f * m[i][j]
			}
		}
	}
	a, b, c = m[0][3]/m[0][0], m[1][3]/m[1][1], m[2][3]/m[2][2]
	var mean, ssr, sst float64
	for _, r := range rows {
		mean += r.roundSeconds / float64(len(rows))
	}
	for _, r := range rows {
		pred := a + b*float64(r.size.services) + c*float64(r.size.services*r.size.slices)
		ssr += (r.roundSeconds - pred) * (r.roundSeconds - pred)
		sst += (r.roundSeconds - mean) * (r.roundSeconds - mean)
	}
	return a, b, c, 1 - ssr/math.Max(sst, 1e-12), true
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func waitHTTP(t *testing.T, url string, within time.Duration) {
	t.Helper()
	waitFor(t, within, url, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func waitFor(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// scrapeValue sums the samples of a metric (with an optional {label
// matcher} prefix, matched textually) on a /metrics page.
func scrapeValue(t *testing.T, url, name string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sum := 0.0
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	base, matcher, _ := strings.Cut(name, "{")
	for s.Scan() {
		line := s.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		metric, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		mname, labels, _ := strings.Cut(metric, "{")
		if mname != base || (matcher != "" && !strings.Contains(labels, strings.TrimSuffix(matcher, "}"))) {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
