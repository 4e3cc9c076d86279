//go:build e2e && linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/flags"
)

// timeScale compresses the shipped rules: an hour of SLO window is 30 s.
var timeScale = TimeScale{Factor: 120, Floor: 4 * time.Second}

// Shop parameters: payments fails 20% of attempts after 20 ms; the legacy
// strategy keeps /checkout's p99 near 250 ms, decorrelated with a 300 ms
// base pushes about a fifth of the requests over the 400 ms SLO.
var shopArgs = []string{
	"--payments.latency=20ms", "--payments.failure-ratio=0.2",
	"--latency.base=10ms", "--latency.jitter=20ms",
	"--latency.slow-ratio=0.02", "--latency.slow=100ms", "--latency.slow-jitter=100ms",
	"--load.checkout-rps=40", "--load.search-rps=100",
	"--version=3.0", "--flags.instance-id=shop-0",
}

// run is one end-to-end setup: the binaries, their configuration and the
// running processes.
type run struct {
	t     *testing.T
	start time.Time
	root  string // module root
	dir   string // configuration and data
	art   string // artifacts

	prometheus, promtool, alertmanager, chromium string
	tailguard, tailguardctl, shopd               string

	// backend is the server the sidecar queries and that scrapes the
	// targets: backendPrometheus (r.prometheus, any version) or
	// backendVictoriaMetrics (r.prometheus is then victoria-metrics).
	backend string
	// native: shopd exports native histograms only, Prometheus ingests
	// them, the sidecar and the SLO rules read them.
	native bool

	addrs    Addrs
	flagDir  string
	flagFile string
	prom     v1.API

	grafana *fakeGrafana

	mu      sync.Mutex
	procs   map[string]*Process
	stopped map[string]bool // stopped on purpose
}

// lookBin returns the path of the first name found in env or on $PATH.
func lookBin(env string, names ...string) string {
	if p := os.Getenv(env); p != "" {
		return p
	}
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	return ""
}

// The metrics backends of a run (E2E_BACKEND).
const (
	backendPrometheus      = "prometheus"
	backendVictoriaMetrics = "victoriametrics"
)

func newRun(t *testing.T) *run {
	r := &run{t: t, start: time.Now(), procs: map[string]*Process{}, stopped: map[string]bool{}}
	r.backend = cmpOr(os.Getenv("E2E_BACKEND"), backendPrometheus)
	r.native = os.Getenv("E2E_NATIVE_HISTOGRAMS") == "1"
	switch {
	case r.backend == backendPrometheus:
		r.prometheus = lookBin("E2E_PROMETHEUS", "prometheus")
	case r.backend == backendVictoriaMetrics && !r.native:
		r.prometheus = lookBin("E2E_VICTORIAMETRICS", "victoria-metrics")
		if r.prometheus == "" {
			t.Skip("SKIP: e2e on VictoriaMetrics: victoria-metrics not found (set E2E_VICTORIAMETRICS; hack/test-e2e builds it)")
		}
	default:
		t.Fatalf("E2E_BACKEND %q with E2E_NATIVE_HISTOGRAMS=%v: want %q (classic or native histograms) or %q (classic)",
			r.backend, r.native, backendPrometheus, backendVictoriaMetrics)
	}
	r.promtool = lookBin("E2E_PROMTOOL", "promtool")
	r.alertmanager = lookBin("E2E_ALERTMANAGER", "alertmanager", "prometheus-alertmanager")
	r.chromium = lookBin("E2E_CHROMIUM", "chromium", "chromium-browser")
	for name, p := range map[string]string{"prometheus": r.prometheus, "promtool": r.promtool, "alertmanager": r.alertmanager} {
		if p == "" {
			t.Skipf("SKIP: e2e: %s not found (install Debian's prometheus and prometheus-alertmanager packages, set E2E_PROMETHEUS, E2E_PROMTOOL and E2E_ALERTMANAGER, or run make test-e2e)", name)
		}
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root %s: %v", root, err)
	}
	r.root = root
	r.dir = t.TempDir()
	r.art = os.Getenv("E2E_ARTIFACTS")
	if r.art == "" {
		r.art = filepath.Join(r.dir, "artifacts")
	}
	if err := os.MkdirAll(r.art, 0o755); err != nil {
		t.Fatal(err)
	}
	r.logf("backend %s (%s), native histograms only: %v; artifacts in %s", r.backend, r.prometheus, r.native, r.art)
	return r
}

// evaluatesRules reports whether the backend evaluates the shipped rules
// and sends alerts to Alertmanager: Prometheus does; VictoriaMetrics
// single-node leaves both to vmalert, which the run does not start.
func (r *run) evaluatesRules() bool { return r.backend == backendPrometheus }

// checkoutP99 is /checkout's p99 as the test reads it from outside, from the
// histogram form the service exports.
func (r *run) checkoutP99() string {
	if r.native {
		return `histogram_quantile(0.99, sum(rate(http_request_duration_seconds{job="shop",endpoint="/checkout"}[20s])))`
	}
	return checkoutP99Classic
}

// logf logs with the time since the start of the run.
func (r *run) logf(format string, args ...any) {
	r.t.Helper()
	r.t.Logf("[%6.1fs] %s", time.Since(r.start).Seconds(), fmt.Sprintf(format, args...))
}

// build compiles the binaries under test.
func (r *run) build(t *testing.T) {
	bin := filepath.Join(r.dir, "bin")
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go tool: %v", err)
	}
	cmd := exec.Command(goTool, "build", "-buildvcs=false", "-o", bin+string(filepath.Separator), "./cmd/tailguard", "./cmd/tailguardctl", "./cmd/shopd")
	cmd.Dir = r.root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	r.tailguard = filepath.Join(bin, "tailguard")
	r.tailguardctl = filepath.Join(bin, "tailguardctl")
	r.shopd = filepath.Join(bin, "shopd")
}

// configure picks the ports and writes every configuration file.
func (r *run) configure(t *testing.T) {
	var ports [4]int
	for i := range ports {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		for slices.Contains(ports[:i], p) {
			if p, err = FreePort(); err != nil {
				t.Fatal(err)
			}
		}
		ports[i] = p
	}
	r.grafana = newFakeGrafana(r.t) // lives as long as the run, not the setup step
	r.addrs = Addrs{Prometheus: HostPort(ports[0]), Alertmanager: HostPort(ports[1]), Shop: HostPort(ports[2]), Tailguard: HostPort(ports[3]),
		Grafana: r.grafana.addr}

	write := func(path string, b []byte) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	read := func(path string) []byte {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	render := func(path string) []byte {
		t.Helper()
		b, err := Render(path, TemplateData{Addrs: r.addrs, NativeHistograms: r.native})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	// The flag file, as a deployment ships it: no journal entry, so the
	// first change the sidecar sees is the operator's.
	r.flagDir = filepath.Join(r.dir, "flags")
	r.flagFile = filepath.Join(r.flagDir, "flags.json")
	write(r.flagFile, read("testdata/flags.json"))
	write(filepath.Join(r.dir, "policy.yml"), read("testdata/policy.yml"))
	write(filepath.Join(r.dir, "tailguard.yml"), render("testdata/tailguard.yml.tmpl"))

	// Prometheus with the shipped rules in compressed time.
	write(filepath.Join(r.dir, "prometheus", "prometheus.yml"), render("testdata/prometheus.yml.tmpl"))
	rules, err := filepath.Glob(filepath.Join(r.root, "alerts", "*.rules.yml"))
	if err != nil || len(rules) == 0 {
		t.Fatalf("shipped rules: %v (%d files)", err, len(rules))
	}
	if r.native {
		// The native-histogram variant of the shop's SLO rules replaces
		// the classic one.
		for i, f := range rules {
			if filepath.Base(f) == "slo-shop.rules.yml" {
				rules[i] = filepath.Join(r.root, "alerts", "native", "slo-shop.rules.yml")
			}
		}
	}
	var scaled []string
	for _, f := range rules {
		out, err := ScaleRules(read(f), timeScale)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		dst := filepath.Join(r.dir, "prometheus", "rules", filepath.Base(f))
		write(dst, out)
		scaled = append(scaled, dst)
	}
	r.promtoolCheck(t, append([]string{"check", "rules"}, scaled...)...)
	r.promtoolCheck(t, "check", "config", filepath.Join(r.dir, "prometheus", "prometheus.yml"))

	// Alertmanager with the shipped example route.
	am, err := AlertmanagerConfig(read(filepath.Join(r.root, "alerts", "alertmanager.example.yml")),
		"tailguard", "http://"+r.addrs.Tailguard+"/api/v1/alerts", time.Second, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(r.dir, "alertmanager", "alertmanager.yml"), am)
	for _, f := range []string{"prometheus/prometheus.yml", "alertmanager/alertmanager.yml", "tailguard.yml", "policy.yml"} {
		write(filepath.Join(r.art, "config", filepath.Base(f)), read(filepath.Join(r.dir, f)))
	}
}

func (r *run) promtoolCheck(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(r.promtool, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// startProc starts a named process, logging to the artifacts, and stops it
// when the test ends.
func (r *run) startProc(t *testing.T, name, bin string, args ...string) *Process {
	t.Helper()
	logPath := filepath.Join(r.art, "logs", name+".log")
	r.mu.Lock()
	restart := r.procs[name] != nil
	r.mu.Unlock()
	if !restart {
		_ = os.Remove(logPath) // of an earlier run; a restart appends
	}
	p, err := Start(name, logPath, r.dir, nil, bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	first := r.procs[name] == nil
	r.procs[name] = p
	delete(r.stopped, name)
	r.mu.Unlock()
	if first {
		r.t.Cleanup(func() {
			r.mu.Lock()
			p := r.procs[name]
			r.mu.Unlock()
			if err := p.Stop(10 * time.Second); err != nil {
				r.t.Logf("stop %s: %v", name, err)
			}
		})
	}
	return p
}

func (r *run) proc(name string) *Process {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.procs[name]
}

// startAll starts shopd, the sidecar, Alertmanager and Prometheus and waits
// until each is ready and Prometheus scrapes both targets.
func (r *run) startAll(t *testing.T) {
	histograms := "--histograms=classic+native"
	if r.native {
		histograms = "--histograms=native"
	}
	r.startProc(t, "shopd", r.shopd, append([]string{
		"--web.listen-address=" + r.addrs.Shop, "--flags.file=" + r.flagFile, "--log.level=info", histograms,
	}, shopArgs...)...)
	r.startProc(t, "tailguard", r.tailguard,
		"--config.file="+filepath.Join(r.dir, "tailguard.yml"), "--web.listen-address="+r.addrs.Tailguard,
		"--log.level=debug", "--actor=tailguard-e2e")
	r.startProc(t, "alertmanager", r.alertmanager,
		"--config.file="+filepath.Join(r.dir, "alertmanager", "alertmanager.yml"),
		"--storage.path="+filepath.Join(r.dir, "alertmanager", "data"),
		"--web.listen-address="+r.addrs.Alertmanager, "--cluster.listen-address=", "--log.level=info")
	r.startPrometheus(t)

	for _, c := range []struct{ name, url string }{
		{"shopd", "http://" + r.addrs.Shop + "/-/ready"},
		{"tailguard", "http://" + r.addrs.Tailguard + "/-/healthy"},
		{"alertmanager", "http://" + r.addrs.Alertmanager + "/-/ready"},
		{"prometheus", "http://" + r.addrs.Prometheus + "/-/ready"},
	} {
		r.eventually(t, 30*time.Second, c.name+" ready", func(ctx context.Context) error { return r.httpOK(ctx, c.url) })
	}
	client, err := api.NewClient(api.Config{Address: "http://" + r.addrs.Prometheus})
	if err != nil {
		t.Fatal(err)
	}
	r.prom = v1.NewAPI(client)
	r.eventually(t, 30*time.Second, "Prometheus scrapes shop and tailguard", func(ctx context.Context) error {
		v, err := r.query(ctx, `sum(up{job=~"shop|tailguard"})`)
		if err != nil {
			return err
		}
		if v != 2 {
			return fmt.Errorf("%v of 2 targets up", v)
		}
		return nil
	})
	r.eventually(t, 30*time.Second, "tailguard ready (Prometheus answered)", func(ctx context.Context) error {
		return r.httpOK(ctx, "http://"+r.addrs.Tailguard+"/-/ready")
	})
}

// startPrometheus starts the metrics backend (named "prometheus" whatever
// it is).
func (r *run) startPrometheus(t *testing.T) {
	if r.backend == backendVictoriaMetrics {
		// VictoriaMetrics reads the scrape part of prometheus.yml; by
		// default it hides the newest 30 s from queries, which would blind
		// a 25 s baseline.
		r.startProc(t, "prometheus", r.prometheus,
			"-promscrape.config="+filepath.Join(r.dir, "prometheus", "prometheus.yml"),
			"-promscrape.config.strictParse=false",
			"-storageDataPath="+filepath.Join(r.dir, "prometheus", "data"),
			"-retentionPeriod=1d",
			"-httpListenAddr="+r.addrs.Prometheus,
			"-search.latencyOffset=1s",
			"-loggerLevel=INFO")
		return
	}
	r.startProc(t, "prometheus", r.prometheus,
		"--config.file="+filepath.Join(r.dir, "prometheus", "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(r.dir, "prometheus", "data"),
		"--storage.tsdb.retention.time=1d",
		"--web.listen-address="+r.addrs.Prometheus,
		"--rules.alert.resend-delay=1s",
		"--log.level=info")
}

// eventually polls f until it returns nil or timeout passes, then fails
// the test with f's last error. It returns how long it took.
func (r *run) eventually(t *testing.T, timeout time.Duration, what string, f func(ctx context.Context) error) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	var last error
	for {
		for name, p := range r.snapshotProcs() {
			if done, err := p.Exited(); done {
				t.Fatalf("%s: %s exited (%v); see %s", what, name, err, p.LogPath())
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		last = f(ctx)
		cancel()
		if last == nil {
			took := time.Since(start)
			r.logf("%s: ok after %.1fs", what, took.Seconds())
			return took
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, last)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (r *run) snapshotProcs() map[string]*Process {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]*Process{}
	for k, v := range r.procs {
		if !r.stopped[k] {
			out[k] = v
		}
	}
	return out
}

// stop stops a process on purpose: eventually no longer fails when it is
// gone.
func (r *run) stop(t *testing.T, name string) {
	t.Helper()
	r.mu.Lock()
	p := r.procs[name]
	r.stopped[name] = true
	r.mu.Unlock()
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatalf("stop %s: %v", name, err)
	}
}

func (r *run) httpOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

// query runs an instant query that must return exactly one sample.
func (r *run) query(ctx context.Context, q string) (float64, error) {
	v, warns, _, err := r.prom.Query(ctx, q, time.Now())
	if err != nil {
		return 0, fmt.Errorf("query %s: %w", q, err)
	}
	if len(warns) > 0 {
		return 0, fmt.Errorf("query %s: warnings %v", q, warns)
	}
	vec, ok := v.(model.Vector)
	if !ok || len(vec) != 1 {
		return 0, fmt.Errorf("query %s: got %v, want one sample", q, v)
	}
	return float64(vec[0].Value), nil
}

// sidecarMetrics scrapes the sidecar's /metrics.
func (r *run) sidecarMetrics(ctx context.Context) (Families, error) {
	return Scrape(ctx, "http://"+r.addrs.Tailguard+"/metrics")
}

// metric returns the sum of a sidecar metric's samples matching labels (0
// when there is none).
func (r *run) metric(t *testing.T, name string, match map[string]string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fs, err := r.sidecarMetrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := fs.Sum(name, match)
	return v
}

// logContains reports whether a process's log has a line containing every
// one of parts.
func (r *run) logContains(name string, parts ...string) (string, bool) {
	b, err := os.ReadFile(r.proc(name).LogPath())
	if err != nil {
		return "", false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		ok := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				ok = false
				break
			}
		}
		if ok {
			return line, true
		}
	}
	return "", false
}

// journal reads the flag journal as the flag store does.
func (r *run) journal(t *testing.T) []flags.Entry {
	t.Helper()
	st, err := flags.NewStore(flags.StoreConfig{Path: r.flagFile})
	if err != nil {
		t.Fatal(err)
	}
	es, err := st.History(context.Background(), flags.HistoryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// flagFileState reads the flag file, checks it is valid and returns its
// bytes and revision.
func (r *run) flagFileState(t *testing.T) ([]byte, int64) {
	t.Helper()
	b, err := os.ReadFile(r.flagFile)
	if err != nil {
		t.Fatal(err)
	}
	v, err := flags.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := v.Parse(b)
	if err != nil {
		t.Fatalf("flag file is not valid: %v\n%s", err, b)
	}
	return b, doc.Revision()
}

// dirNames lists a directory.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// dumpLogs logs the end of every process log when the test failed.
func (r *run) dumpLogs() {
	if !r.t.Failed() {
		return
	}
	for name, p := range r.snapshotProcs() {
		b, err := os.ReadFile(p.LogPath())
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		r.t.Logf("--- last lines of %s (%s):\n%s", name, p.LogPath(), strings.Join(lines, "\n"))
	}
}

// saveArtifacts copies the flag file and journal.
func (r *run) saveArtifacts() {
	for _, f := range []string{r.flagFile, r.flagFile + ".journal.jsonl"} {
		if b, err := os.ReadFile(f); err == nil {
			_ = os.WriteFile(filepath.Join(r.art, filepath.Base(f)), b, 0o644)
		}
	}
}

// post sends body to url and returns the status and response body.
func post(ctx context.Context, url, body string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

var errNotYet = errors.New("not yet")

// fakeGrafana answers Grafana's annotations API and records what the
// sidecar posts.
type fakeGrafana struct {
	addr string
	mu   sync.Mutex
	got  []annotation
}

type annotation struct {
	DashboardUID string   `json:"dashboardUID"`
	Time         int64    `json:"time"`
	Tags         []string `json:"tags"`
	Text         string   `json:"text"`
}

func newFakeGrafana(t *testing.T) *fakeGrafana {
	g := &fakeGrafana{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost || req.URL.Path != "/api/annotations" {
			http.Error(w, `{"message":"not found"}`, http.StatusNotFound)
			return
		}
		var a annotation
		if err := json.NewDecoder(req.Body).Decode(&a); err != nil {
			http.Error(w, `{"message":"bad request"}`, http.StatusBadRequest)
			return
		}
		g.mu.Lock()
		g.got = append(g.got, a)
		id := len(g.got)
		g.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":%d,"message":"Annotation added"}`, id)
	}))
	t.Cleanup(srv.Close)
	g.addr = srv.Listener.Addr().String()
	return g
}

func (g *fakeGrafana) annotations() []annotation {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.got)
}
