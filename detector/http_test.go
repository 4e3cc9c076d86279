package detector

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/detector/promapi"

	goldenfile "github.com/tailguard/tailguard/internal/golden"
)

var update = flag.Bool("update", false, "rewrite golden files")

// fakeProm serves the Prometheus query API from a Querier (the embedded
// engine) and records every query it receives, so tests can check the exact
// PromQL sent over the wire.
type fakeProm struct {
	backend Querier
	mu      sync.Mutex
	log     []string
	// mangle, if set, may rewrite a result and add warnings.
	mangle func(q string, v model.Value) (model.Value, []string)
}

func (f *fakeProm) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	q := r.Form.Get("query")
	var (
		v    model.Value
		warn v1.Warnings
		err  error
		line string
	)
	ctx := r.Context()
	switch r.URL.Path {
	case "/api/v1/query":
		ts := parseTime(r.Form.Get("time"))
		line = fmt.Sprintf("instant time=%s %s", ts.UTC().Format(time.RFC3339), q)
		v, warn, err = f.backend.Query(ctx, q, ts)
	case "/api/v1/query_range":
		step, _ := strconv.ParseFloat(r.Form.Get("step"), 64)
		rg := v1.Range{Start: parseTime(r.Form.Get("start")), End: parseTime(r.Form.Get("end")), Step: time.Duration(step * float64(time.Second))}
		line = fmt.Sprintf("range start=%s end=%s step=%s %s", rg.Start.UTC().Format(time.RFC3339), rg.End.UTC().Format(time.RFC3339), rg.Step, q)
		v, warn, err = f.backend.QueryRange(ctx, q, rg)
	default:
		http.NotFound(w, r)
		return
	}
	f.mu.Lock()
	f.log = append(f.log, line)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusUnprocessableEntity)
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "error", "errorType": "execution", "error": err.Error()})
		return
	}
	if f.mangle != nil {
		var extra []string
		v, extra = f.mangle(q, v)
		warn = append(warn, extra...)
	}
	body := map[string]any{
		"status": "success",
		"data":   map[string]any{"resultType": v.Type().String(), "result": v},
	}
	if len(warn) > 0 {
		body["warnings"] = warn
	}
	_ = json.NewEncoder(w).Encode(body)
}

func parseTime(s string) time.Time {
	f, _ := strconv.ParseFloat(s, 64)
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(math.Round(frac*1e9))).UTC()
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	goldenfile.Check(t, filepath.Join("testdata", name), got, *update)
}

// httpDetector runs the backoff scenario behind the fake HTTP API.
func httpDetector(t *testing.T, mangle func(string, model.Value) (model.Value, []string)) (*Detector, *fakeProm) {
	t.Helper()
	sc := backoffRegression()
	db := simulate(t, 1, sc.slices, sc.versions)
	fake := &fakeProm{backend: db, mangle: mangle}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	client, err := promapi.New(promapi.Config{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg, err := ParseConfig(strings.NewReader(shopConfig + fmt.Sprintf("  flag_journal: %s\n", writeFile(t, dir, "flags.json.journal.jsonl", sc.journal))))
	if err != nil {
		t.Fatal(err)
	}
	src, err := NewChangeSource(cfg, client)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(cfg, client, src)
	if err != nil {
		t.Fatal(err)
	}
	d.now = func() time.Time { return tChange.Add(time.Hour) }
	return d, fake
}

// TestHTTPGolden runs the backoff story against Prometheus' HTTP API and
// checks the exact PromQL sent and the JSON report.
func TestHTTPGolden(t *testing.T) {
	d, fake := httpDetector(t, nil)
	rep, err := d.Analyze(context.Background(), Request{From: tChange, To: tChange.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	// Queries run side by side, so their order of arrival varies: the
	// golden file holds them sorted.
	sent := slices.Sorted(slices.Values(fake.log))
	golden(t, "backoff_queries.golden", []byte(strings.Join(sent, "\n")+"\n"))

	var js bytes.Buffer
	must(t, rep.WriteJSON(&js))
	// Paths of temporary files vary between runs.
	out := strings.ReplaceAll(js.String(), filepath.Dir(d.cfg.Changes.FlagJournal), "TMP")
	golden(t, "backoff_report.golden.json", []byte(out))

	var txt bytes.Buffer
	must(t, rep.WriteText(&txt))
	golden(t, "backoff_report.golden.txt", []byte(strings.ReplaceAll(txt.String(), filepath.Dir(d.cfg.Changes.FlagJournal), "TMP")))

	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("report JSON does not decode: %v", err)
	}
	if back.Summary != rep.Summary || len(back.Findings) != len(rep.Findings) {
		t.Errorf("round trip changed the report")
	}
}

// TestHTTPDataProblems: warnings, NaN and missing results over the wire
// give inconclusive findings naming the problem, never a verdict.
func TestHTTPDataProblems(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mangle func(q string, v model.Value) (model.Value, []string)
		signal string
		want   string
	}{
		{
			name: "warnings",
			mangle: func(q string, v model.Value) (model.Value, []string) {
				if strings.Contains(q, "backoff_retries_total") {
					return v, []string{"PromQL warning: encountered a mix of histograms and floats"}
				}
				return v, nil
			},
			signal: "payments_retries",
			want:   "query warnings: PromQL warning",
		},
		{
			name: "NaN counts",
			mangle: func(q string, v model.Value) (model.Value, []string) {
				if m, ok := v.(model.Matrix); ok && strings.Contains(q, "backoff_calls_total") {
					for _, ss := range m {
						for i := range ss.Values {
							if i%2 == 0 {
								ss.Values[i].Value = model.SampleValue(math.NaN())
							}
						}
					}
				}
				return v, nil
			},
			signal: "payments_retries",
			want:   "values were NaN",
		},
		{
			name: "empty result",
			mangle: func(q string, v model.Value) (model.Value, []string) {
				if strings.Contains(q, "_bucket") && strings.HasPrefix(q, "sum by (le)") && strings.Contains(q, "/search") {
					return model.Vector{}, nil
				}
				return v, nil
			},
			signal: "search_latency",
			want:   "no baseline data",
		},
		{
			name: "NaN quantile",
			mangle: func(q string, v model.Value) (model.Value, []string) {
				if vec, ok := v.(model.Vector); ok && strings.HasPrefix(q, "sum by (le)") && strings.Contains(q, "/search") {
					for _, s := range vec {
						s.Value = model.SampleValue(math.NaN())
					}
				}
				return v, nil
			},
			signal: "search_latency",
			want:   "is NaN",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := httpDetector(t, tc.mangle)
			rep, err := d.Analyze(context.Background(), Request{From: tChange, To: tChange.Add(time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, f := range rep.Findings {
				if f.Signal != tc.signal {
					continue
				}
				n++
				if f.Verdict != Inconclusive || !strings.Contains(f.Reason, tc.want) {
					t.Errorf("%v: %s %q, want inconclusive with %q", f.Slice, f.Verdict, f.Reason, tc.want)
				}
			}
			if n == 0 {
				t.Errorf("no finding for %s", tc.signal)
			}
			var buf bytes.Buffer
			if err := rep.WriteJSON(&buf); err != nil {
				t.Errorf("report with NaN data does not serialise: %v", err)
			}
		})
	}
}

func TestHTTPQueryErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"status":"error","errorType":"bad_data","error":"parse error"}`))
	}))
	defer srv.Close()
	client, err := promapi.New(promapi.Config{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(strings.NewReader(shopConfig))
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(cfg, client, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.Analyze(context.Background(), Request{From: tChange, To: tChange.Add(time.Hour)})
	if err == nil || !strings.Contains(err.Error(), "checkout_latency") || !strings.Contains(err.Error(), "parse error") {
		t.Errorf("err = %v, want the signal and the server's message", err)
	}

	// A context deadline ends the analysis with an error.
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer slow.Close()
	defer close(release)
	client, err = promapi.New(promapi.Config{URL: slow.URL, Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	d, err = New(cfg, client, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Analyze(context.Background(), Request{From: tChange, To: tChange.Add(time.Hour)}); err == nil {
		t.Error("timed-out query not reported")
	}
}

// nopQuerier answers every query with an empty result.
type nopQuerier struct{}

func (nopQuerier) Query(context.Context, string, time.Time) (model.Value, v1.Warnings, error) {
	return model.Vector{}, nil, nil
}

func (nopQuerier) QueryRange(context.Context, string, v1.Range) (model.Value, v1.Warnings, error) {
	return model.Matrix{}, nil, nil
}
