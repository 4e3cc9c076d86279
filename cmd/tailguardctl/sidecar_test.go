package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tailguard/tailguard/controller"
	"github.com/tailguard/tailguard/controller/policy"
	"github.com/tailguard/tailguard/detector"
	"github.com/tailguard/tailguard/flags"
	"github.com/tailguard/tailguard/promembed"
	"github.com/tailguard/tailguard/sidecar"
)

// sidecarNow is the sidecar's clock in the tests.
var sidecarNow = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// testSidecar is a real sidecar daemon on a copy of testdata/sidecar (the
// shop service in propose mode) against an embedded, empty Prometheus,
// served by an httptest server.
type testSidecar struct {
	d   *sidecar.Daemon
	srv *httptest.Server
	dir string
}

// newTestSidecar starts a sidecar; wrap, when set, wraps its handler.
func newTestSidecar(t *testing.T, wrap func(http.Handler) http.Handler) *testSidecar {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"tailguard.yml", "policy.yml", "flags.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", "sidecar", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	db, err := promembed.Open(promembed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	reg := prometheus.NewRegistry()
	d, err := sidecar.New(sidecar.Options{ConfigFile: filepath.Join(dir, "tailguard.yml"), Registerer: reg, Gatherer: reg,
		Querier: db, Actor: "tailguard/shop-0", Now: func() time.Time { return sidecarNow }})
	if err != nil {
		t.Fatal(err)
	}
	var h http.Handler = d.Handler()
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &testSidecar{d: d, srv: srv, dir: dir}
}

// regress feeds the sidecar's controller cycles in which /checkout's p99
// is 600ms (objective 400ms), attributed to the backoff-strategy flag,
// until it proposes a plan. It returns the incident id.
func (s *testSidecar) regress(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	pol, err := policy.LoadFile(filepath.Join(s.dir, "policy.yml"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := flags.NewStore(flags.StoreConfig{Path: filepath.Join(s.dir, "flags.json")})
	if err != nil {
		t.Fatal(err)
	}
	fw, err := controller.NewFlagsWriter(store, &pol.Services[0])
	if err != nil {
		t.Fatal(err)
	}
	fs, err := fw.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := detector.IncidentID("shop", "flag/backoff-strategy")
	cause := controller.Cause{Kind: controller.CauseFlag, FlagKey: "backoff-strategy", Variant: "decorrelated", IncidentID: id,
		Confidence: 0.92, Evidence: "p99 /checkout ×2.4 on strategy=decorrelated only, from the flag change at 10:00"}
	obs := controller.Observation{
		Service: "shop",
		Assessments: []controller.Assessment{
			{SLO: "checkout-latency", Value: 0.6, Objective: 0.4, Verdict: controller.VerdictRegressed, Cause: cause, Onset: sidecarNow.Add(-2 * time.Hour)},
			{SLO: "payments-retries", Value: 0.03, Objective: 0.05, Verdict: controller.VerdictHealthy},
			{SLO: "checkout-errors", Value: 0.0005, Objective: 0.01, Verdict: controller.VerdictHealthy},
			{SLO: "search-latency", Value: 0.12, Objective: 0.3, Verdict: controller.VerdictHealthy},
		},
		Retries: controller.RetryStats{Upstream: "payments", Calls: 15000, Retries: 450, AttemptLatency: 40 * time.Millisecond},
		Flags:   fs,
	}
	ctrl := s.d.Controller()
	for i := range 5 {
		if _, err := ctrl.Step(ctx, obs, sidecarNow.Add(time.Duration(i-5)*time.Minute)); err != nil {
			t.Fatal(err)
		}
		if len(ctrl.Plans()) > 0 {
			return id
		}
	}
	t.Fatal("the controller proposed no plan")
	return ""
}

// anyTime matches the timestamps in the output. Those of the CLI's own
// clock (declare without --time, journal entries) are masked; the
// sidecar's are fixed.
var anyTime = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)

var tookDuration = regexp.MustCompile(`(took |"duration": )[0-9.]+[µnm]?s?`)

// transcript runs steps through run() and compares stdout, stderr and exit
// codes with the golden file name; replace maps strings (URLs, temporary
// directories) to placeholders.
func transcript(t *testing.T, name string, steps []step, replace map[string]string) {
	t.Helper()
	start := time.Now()
	var out bytes.Buffer
	for _, s := range steps {
		var stdout, stderr bytes.Buffer
		code := run(s.args, strings.NewReader(""), &stdout, &stderr)
		fmt.Fprintf(&out, "$ tailguardctl %s\n[exit %d]\n%s", shellJoin(s.args), code, stdout.String())
		if stderr.Len() > 0 {
			fmt.Fprintf(&out, "--- stderr\n%s", stderr.String())
		}
		out.WriteString("\n")
		if code != s.code {
			t.Errorf("tailguardctl %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(s.args, " "), code, s.code, stdout.String(), stderr.String())
		}
	}
	text := out.String()
	// Longest first: a URL must be replaced before the address inside it,
	// whatever the map's iteration order.
	froms := slices.Collect(maps.Keys(replace))
	slices.SortFunc(froms, func(a, b string) int { return len(b) - len(a) })
	for _, from := range froms {
		text = strings.ReplaceAll(text, from, replace[from])
	}
	text = anyTime.ReplaceAllStringFunc(text, func(ts string) string {
		if t, err := time.Parse(time.RFC3339Nano, ts); err == nil && t.After(start.Add(-time.Minute)) && t.Before(time.Now().Add(time.Minute)) {
			return "TIME"
		}
		return ts
	})
	text = tookDuration.ReplaceAllString(text, "${1}DURATION")
	golden(t, name, []byte(text))
}

func TestSidecarCommands(t *testing.T) {
	tests := []struct {
		name  string
		steps func(id string) []step
	}{
		{"sidecar-read", func(id string) []step {
			return []step{
				cmd(0, "incidents"),
				cmd(0, "-o", "json", "incidents"),
				cmd(0, "plan"),
				cmd(0, "plan", "--incident", "other"),
				cmd(0, "-o", "json", "plan", "--pending"),
				cmd(0, "explain", id),
				cmd(0, "-o", "json", "explain", id),
				cmd(1, "explain", "nope"),
				cmd(2, "explain"),
			}
		}},
		{"sidecar-approve", func(id string) []step {
			return []step{
				cmd(2, "approve", id),
				cmd(2, "--actor", "controller", "approve", id, "--reason", "looks right"),
				cmd(2, "approve", id, "--reason", " "),
				cmd(1, "approve", id, "--plan", "nope", "--reason", "typo"),
				cmd(0, "approve", id, "--reason", "model checked against last week's brown-out"),
				cmd(1, "approve", id, "--reason", "again"),
				cmd(3, "approve", id, "--plan", id+"/tune/1", "--reason", "again"),
				cmd(0, "plan"),
				cmd(0, "explain", id),
				cmd(0, "incidents"),
				cmd(0, "--flag-file", "$DIR/flags.json", "flags", "history"),
			}
		}},
		{"sidecar-approve-plan-json", func(id string) []step {
			return []step{
				cmd(0, "-o", "json", "approve", id+"/tune/1", "--reason", "approve by plan id"),
			}
		}},
		{"sidecar-declare", func(string) []step {
			return []step{
				cmd(0, "declare", "--component", "dten-gateway", "--from", "2.3", "--to", "3.0", "--name", "vendor-2026.11",
					"--time", "2026-11-23T10:00:00Z", "--scope", "job=shop"),
				cmd(0, "-o", "json", "declare", "--component", "payments-sdk", "--to", "1.4", "--time", "2026-11-23T10:05:00Z",
					"--reason", "security fix"),
				cmd(0, "declare", "-f", "testdata/manifest.yml"),
				cmd(0, "declare", "-f", "testdata/manifest.yml", "--time", "2026-11-23"),
				cmd(0, "--actor", "ci", "declare", "--component", "shop", "--to", "7.2"),
				cmd(2, "declare", "-f", "testdata/manifest.yml", "--component", "x"),
				cmd(2, "declare", "--component", "dten-gateway"),
				cmd(2, "declare", "--component", "dten-gateway", "--to", "3.1", "--time", "tomorrow"),
				cmd(5, "declare", "-f", "testdata/manifest-invalid.yml"),
				cmd(4, "declare", "-f", "testdata/missing.yml"),
			}
		}},
		{"sidecar-evaluate", func(string) []step {
			return []step{
				cmd(0, "evaluate", "shop"),
				cmd(1, "evaluate", "cart"),
				cmd(2, "evaluate"),
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSidecar(t, nil)
			id := s.regress(t)
			t.Setenv("TAILGUARD_URL", s.srv.URL)
			t.Setenv("USER", "alice")
			steps := tt.steps(id)
			for _, st := range steps {
				for i, a := range st.args {
					st.args[i] = strings.ReplaceAll(a, "$DIR", s.dir)
				}
			}
			transcript(t, tt.name+".txt", steps, map[string]string{s.srv.URL: "$URL", s.dir: "$DIR"})
		})
	}
}

// TestSidecarEvaluateJSON checks that -o json passes the cycle's result
// through: the API's fields, NaN as null.
func TestSidecarEvaluateJSON(t *testing.T) {
	s := newTestSidecar(t, nil)
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--sidecar.url", s.srv.URL, "-o", "json", "evaluate", "shop"}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, want := range []string{`"service": "shop"`, `"trigger": "manual"`, `"value": null`, `"verdict": "inconclusive"`, `"kind": "none"`} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %s:\n%s", want, stdout.String())
		}
	}
}

func TestSidecarErrors(t *testing.T) {
	// A sidecar behind basic auth (as with an exporter-toolkit web config).
	s := newTestSidecar(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != "s3cret" {
				w.Header().Set("WWW-Authenticate", `Basic realm="tailguard"`)
				http.Error(w, "Unauthorized", http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	dir := t.TempDir()
	httpConfig := filepath.Join(dir, "http.yml")
	if err := os.WriteFile(httpConfig, []byte("basic_auth:\n  username: alice\n  password_file: password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "password"), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badConfig := filepath.Join(dir, "bad.yml")
	if err := os.WriteFile(badConfig, []byte("basic_auth: {username: alice}\nbearer_token: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := l.Addr().String()
	closed := "http://" + closedAddr
	l.Close()
	// Something else than a sidecar.
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/incidents" {
			fmt.Fprintln(w, "<html><body>hello</body></html>")
			return
		}
		http.Error(w, "no route for "+r.URL.EscapedPath()+"\nstack trace", http.StatusInternalServerError)
	}))
	defer other.Close()

	t.Setenv("TAILGUARD_URL", s.srv.URL)
	t.Setenv("USER", "alice")
	steps := []step{
		cmd(1, "incidents"),
		cmd(0, "--sidecar.http.config.file", httpConfig, "incidents"),
		cmd(0, "--sidecar.http.config.file", httpConfig, "-o", "json", "plan"),
		cmd(4, "--sidecar.http.config.file", filepath.Join(dir, "missing.yml"), "incidents"),
		cmd(1, "--sidecar.http.config.file", badConfig, "incidents"),
		cmd(4, "--sidecar.url", closed, "incidents"),
		cmd(4, "--sidecar.url", closed, "approve", "inc-1", "--reason", "x"),
		cmd(2, "--sidecar.url", "localhost:9099", "incidents"),
		cmd(2, "--sidecar.url", "http://localhost:9099", "--sidecar.timeout", "0s", "incidents"),
		cmd(1, "--sidecar.url", other.URL, "incidents"),
		cmd(1, "--sidecar.url", other.URL, "plan"),
		cmd(1, "--sidecar.url", other.URL+"/prefix", "explain", "a/b c"),
	}
	transcript(t, "sidecar-errors.txt", steps, map[string]string{s.srv.URL: "$URL", dir: "$DIR", closed: "$CLOSED", closedAddr: "$CLOSED_ADDR", other.URL: "$OTHER"})
}

func TestAPIErrorExitCode(t *testing.T) {
	for _, tt := range []struct {
		status int
		want   int
	}{
		{http.StatusNotFound, exitError},
		{http.StatusConflict, exitConflict},
		{http.StatusBadRequest, exitInvalid},
		{http.StatusRequestEntityTooLarge, exitInvalid},
		{http.StatusUnauthorized, exitError},
		{http.StatusInternalServerError, exitError},
		{http.StatusServiceUnavailable, exitError},
	} {
		err := fmt.Errorf("approve: %w", &apiError{Status: tt.status, Message: "x"})
		if got := exitCode(err); got != tt.want {
			t.Errorf("status %d: exit %d, want %d", tt.status, got, tt.want)
		}
	}
	if got := exitCode(networkError{&net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "sidecar"}}}); got != exitIO {
		t.Errorf("unreachable sidecar: exit %d, want %d", got, exitIO)
	}
}

func TestErrorMessage(t *testing.T) {
	for _, tt := range []struct{ body, want string }{
		{`{"error": "approve x: unknown plan"}`, "approve x: unknown plan"},
		{"Unauthorized\n", "Unauthorized"},
		{"first\nsecond", "first"},
		{"", "(empty answer)"},
		{`{"other": 1}`, `{"other": 1}`},
		{strings.Repeat("x", 300), strings.Repeat("x", 197) + "..."},
	} {
		if got := errorMessage([]byte(tt.body)); got != tt.want {
			t.Errorf("errorMessage(%q) = %q, want %q", tt.body, got, tt.want)
		}
	}
}

// TestSidecarDeclareWithoutTime declares a JSON manifest without a time:
// it is stamped with the CLI's clock, and the actor is --actor.
func TestSidecarDeclareWithoutTime(t *testing.T) {
	s := newTestSidecar(t, nil)
	var stdout, stderr bytes.Buffer
	before := time.Now().Add(-time.Second)
	code := run([]string{"--sidecar.url", s.srv.URL, "--actor", "ci:pipeline-42", "-o", "json", "declare", "-f", "testdata/manifest-hotfix.json"}, nil, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var events []struct {
		Time      time.Time `json:"time"`
		Component string    `json:"component"`
		To        string    `json:"to"`
		Actor     string    `json:"actor"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &events); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	if len(events) != 1 || events[0].Component != "dten-gateway" || events[0].To != "3.0.1" || events[0].Actor != "ci:pipeline-42" ||
		events[0].Time.Before(before) || events[0].Time.After(time.Now()) {
		t.Errorf("declared %+v", events)
	}
}
