package status

import (
	"bytes"
	"flag"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goldenfile "github.com/tailguard/tailguard/internal/golden"
)

var update = flag.Bool("update", false, "rewrite golden files")

var t0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

func exampleView() View {
	var p99 []Point
	for i := range 60 {
		v := 0.25
		if i >= 30 {
			v = 0.6
		}
		if i >= 45 {
			v = 0.32
		}
		if i == 20 {
			v = math.NaN() // a gap
		}
		p99 = append(p99, Point{T: t0.Add(time.Duration(i) * time.Minute), V: v})
	}
	return View{
		Version:        "0.1.0",
		Mode:           "auto",
		Generated:      t0.Add(time.Hour),
		LastEvaluation: t0.Add(time.Hour - 10*time.Second),
		Ready:          true,
		SLOs: []SLO{
			{Service: "shop", Name: "checkout-p99", Objective: "p99 ≤ 400ms over 5m", Current: "320ms", State: StateOK},
			{Service: "shop", Name: "payments-retry-ratio", Objective: "≤ 5%", Current: "3.1%", State: StateAtRisk, Detail: "burn 2.1×"},
		},
		Incidents: []Incident{{
			ID: "inc-3f2a", Service: "shop", Opened: t0.Add(33 * time.Minute), State: "mitigated",
			Cause: `flag backoff-strategy → decorrelated <script>alert(1)</script>`, Confidence: "0.92", Effect: "p99 ×2.4 [2.1, 2.7]",
			Evidence: []string{"onset 10:31, 1m after the change", "shift only in strategy=\"decorrelated\", upstream=\"payments\""},
			Hypotheses: []Hypothesis{
				{Name: "flag backoff-strategy → decorrelated", Score: "0.92", Evidence: "timing 1.00; localisation 1.00"},
				{Name: "none of the known changes", Score: "0.00", Evidence: "timing 0.00: the change is at the onset"},
			},
			Actions: []Action{{Time: t0.Add(36 * time.Minute), Rung: "tune", Summary: "cap 2s → 800ms", Expected: "p99 ≈ 350ms", Observed: "p99 320ms", Result: "improved"}},
			Chart: &Chart{Title: "checkout p99", Unit: "seconds", Series: []Series{{Name: "p99", Points: p99}},
				Threshold: 0.4, HasThreshold: true,
				Markers: []Marker{{T: t0.Add(30 * time.Minute), Label: "upgrade", Kind: "change"}, {T: t0.Add(36 * time.Minute), Label: "tune", Kind: "action"}}},
		}},
		Flags:   []Flag{{Key: "backoff-strategy", State: "ENABLED", Default: "decorrelated", Rollout: "decorrelated 100%", Revision: "7"}},
		Changes: []Change{{Time: t0.Add(30 * time.Minute), Kind: "build_info", Subject: "dten-gateway", Detail: "2.3 → 3.0"}},
		Leaders: []Leader{{Service: "shop", Leader: "shop-7d9f-abcde", Self: true, Detail: "since 10:04:00 UTC"}},
		QueryCost: []QueryCost{
			{Service: "shop", Signal: "all", Queries: 9, Series: 14, Samples: 1130, QueryTime: "48ms", CycleTime: "61ms"},
			{Service: "shop", Signal: "payments_retries", Queries: 2, Series: 4, Samples: 720, QueryTime: "12ms"},
			{Service: "shop", Signal: "slo:latency", Queries: 2, Errors: 1, Series: 1, Samples: 1, QueryTime: "3ms"},
		},
	}
}

func TestRenderGolden(t *testing.T) {
	r, err := NewRenderer()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		view View
	}{
		{"full", exampleView()},
		{"empty", View{Generated: t0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := r.Render(&buf, tc.view); err != nil {
				t.Fatal(err)
			}
			goldenfile.Check(t, filepath.Join("testdata", tc.name+".html"), buf.Bytes(), *update)
		})
	}
}

func TestRenderEscapes(t *testing.T) {
	r, err := NewRenderer()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := r.Render(&buf, exampleView()); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	if strings.Contains(page, "<script>") {
		t.Error("untrusted text rendered as markup")
	}
	for _, want := range []string{"inc-3f2a", "checkout-p99", "backoff-strategy", "cap 2s → 800ms", "<svg", "no data"} {
		if want == "no data" {
			if strings.Contains(page, want) {
				t.Error("chart with data rendered as empty")
			}
			continue
		}
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

func TestSegments(t *testing.T) {
	nan := math.NaN()
	pts := func(vs ...float64) []Point {
		out := make([]Point, len(vs))
		for i, v := range vs {
			out[i] = Point{T: t0.Add(time.Duration(i) * time.Second), V: v}
		}
		return out
	}
	for _, tc := range []struct {
		name string
		in   []Point
		want []int
	}{
		{"empty", nil, nil},
		{"all nan", pts(nan, nan), nil},
		{"one run", pts(1, 2, 3), []int{3}},
		{"gap", pts(1, nan, 2, 3), []int{1, 2}},
		{"edges", pts(nan, 1, 2, math.Inf(1)), []int{2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := segments(tc.in)
			if len(got) != len(tc.want) {
				t.Fatalf("%d segments, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if len(got[i]) != tc.want[i] {
					t.Errorf("segment %d has %d points, want %d", i, len(got[i]), tc.want[i])
				}
			}
		})
	}
}

func TestChartNoData(t *testing.T) {
	svg := string(Chart{Title: "x", Series: []Series{{Name: "a", Points: []Point{{T: t0, V: math.NaN()}}}}}.SVG())
	if !strings.Contains(svg, "no data") || strings.Contains(svg, "polyline") {
		t.Errorf("chart of NaN only: %s", svg)
	}
}

func TestChartScalesIntoFrame(t *testing.T) {
	c := exampleView().Incidents[0].Chart
	_, _, v0, v1, ok := c.bounds()
	if !ok || v0 != 0 || v1 < 0.6 {
		t.Fatalf("bounds = %v..%v ok=%v; want 0..≥0.6", v0, v1, ok)
	}
	svg := string(c.SVG())
	if n := strings.Count(svg, "<polyline"); n != 2 {
		t.Errorf("%d polylines, want 2 (the NaN splits the line)", n)
	}
	if n := strings.Count(svg, `class="marker`); n != 2 {
		t.Errorf("%d markers, want 2", n)
	}
	if !strings.Contains(svg, "SLO 400ms") {
		t.Error("threshold label missing")
	}
}

func TestFormatValue(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		unit string
		want string
	}{
		{0.6, "seconds", "600ms"},
		{2, "seconds", "2s"},
		{0.031, "ratio", "3.10%"},
		{12345, "", "1.23e+04"},
	} {
		if got := formatValue(tc.v, tc.unit); got != tc.want {
			t.Errorf("formatValue(%v, %q) = %q, want %q", tc.v, tc.unit, got, tc.want)
		}
	}
}
