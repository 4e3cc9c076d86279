package report

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
	"time"

	"github.com/tailguard/tailguard/sim"
	"github.com/tailguard/tailguard/status"
)

// runNames label the runs in charts.
var runNames = map[sim.Mode]string{
	sim.ModeTailguard: "tailguard",
	sim.ModeUnguarded: "no guard",
	sim.ModeRevert:    "revert",
	sim.ModeLegacy:    "legacy",
}

var runOrder = []sim.Mode{sim.ModeTailguard, sim.ModeUnguarded, sim.ModeRevert, sim.ModeLegacy}

// Primary returns the run whose timeline a report tells: tailguard's if
// there is one, else the unguarded run.
func Primary(r sim.ScenarioResult) *sim.Result {
	if t := r.Runs[sim.ModeTailguard]; t != nil {
		return t
	}
	return r.Runs[sim.ModeUnguarded]
}

type htmlEntry struct {
	Time, Rel, Kind, Text string
}

type htmlRow struct {
	sim.Row
	DelayText, BenefitText string
}

type htmlChart struct {
	Title string
	SVG   template.HTML
}

type htmlData struct {
	Title       string
	Description string
	Truth       string
	Generated   string
	Primary     string
	Charts      []htmlChart
	Timeline    []htmlEntry
	Rows        []htmlRow
	Notes       []string
	Footer      string
}

// HTML writes a self-contained report of one scenario's runs: charts of
// the SLO quantile, the retry ratio, the share of pods on the new strategy
// and the other endpoints' latency, each run as a line, with the changes,
// detections and actions of the primary run as markers; then its
// timeline and the bench rows.
func HTML(w io.Writer, r sim.ScenarioResult, footer string) error {
	sc := r.Scenario
	primary := Primary(r)
	if primary == nil {
		return fmt.Errorf("report %s: no run to report", sc.Name)
	}
	thr := time.Duration(sc.Truth.SLO.Threshold).Seconds()
	markers := markers(primary)
	latCap, retryCap := 4*thr, 0.25
	charts := []status.Chart{
		{
			Title: fmt.Sprintf("p%g of %s over %s (values above %s shown at %s)", 100*sc.Truth.SLO.Quantile, sc.Truth.SLO.Endpoint,
				sc.Truth.SLO.Window, seconds(latCap), seconds(latCap)),
			Unit: "seconds", Series: series(r, func(s sim.Series) []sim.Point { return s.Latency }, latCap),
			Markers: markers, Threshold: thr, HasThreshold: true,
		},
		{
			Title: fmt.Sprintf("retries per call to %s (values above %s shown at %s)", sc.Upstream.Name, percent(retryCap), percent(retryCap)),
			Unit:  "ratio", Series: series(r, func(s sim.Series) []sim.Point { return s.RetryRatio }, retryCap), Markers: markers,
		},
		{
			Title: "share of pods on the new strategy", Unit: "ratio",
			Series: series(r, func(s sim.Series) []sim.Point { return s.NewShare }, 1), Markers: markers,
		},
		{
			Title: fmt.Sprintf("p%g of the other endpoints (they never call %s)", 100*sc.Truth.SLO.Quantile, sc.Upstream.Name),
			Unit:  "seconds", Series: series(r, func(s sim.Series) []sim.Point { return s.OtherLatency }, latCap), Markers: markers,
		},
	}
	d := htmlData{
		Title:       "tailguard simulation: " + sc.Name,
		Description: strings.TrimSpace(sc.Description),
		Truth:       truthText(sc),
		Generated:   fmt.Sprintf("seed %d, %s of virtual time from %s UTC", primary.Seed, sc.Duration, sc.Start.Format("2006-01-02 15:04")),
		Primary:     runNames[primary.Mode],
		Footer:      footer,
	}
	for _, c := range charts {
		d.Charts = append(d.Charts, htmlChart{Title: c.Title, SVG: c.SVG()})
	}
	ref := sc.Start
	if sc.Truth.Regression {
		ref = sc.At(sc.Truth.Onset)
	}
	for _, e := range primary.Timeline {
		d.Timeline = append(d.Timeline, htmlEntry{Time: e.At.UTC().Format("15:04:05"), Rel: rel(e.At.Sub(ref)), Kind: e.Kind, Text: e.Text})
	}
	for _, row := range r.Rows {
		hr := htmlRow{Row: row, DelayText: "-", BenefitText: benefitText(row.Benefit)}
		if row.Delay != nil {
			hr.DelayText = fmtDuration(*row.Delay)
		}
		d.Rows = append(d.Rows, hr)
		for _, n := range row.Notes {
			d.Notes = append(d.Notes, row.Guard+": "+n)
		}
	}
	return page.Execute(w, d)
}

func truthText(sc *sim.Scenario) string {
	t := sc.Truth
	if !t.Regression {
		return "no regression: any alarm is a false alarm, any flag write unnecessary"
	}
	s := fmt.Sprintf("regression from T = %s UTC, caused by %s", sc.At(t.Onset).Format("15:04"), strings.Join(t.Causes, " or "))
	if t.Benefit {
		s += "; the change has a brown-out benefit worth keeping"
	}
	return s
}

// series collects one series from every run, values clipped at limit.
func series(r sim.ScenarioResult, get func(sim.Series) []sim.Point, limit float64) []status.Series {
	var out []status.Series
	for _, m := range runOrder {
		res := r.Runs[m]
		if res == nil {
			continue
		}
		pts := get(res.Series)
		s := status.Series{Name: runNames[m], Points: make([]status.Point, len(pts))}
		for i, p := range pts {
			s.Points[i] = status.Point{T: p.T, V: math.Min(p.V, limit)}
		}
		out = append(out, s)
	}
	return out
}

// markers are the primary run's changes, brown-outs, first detection and
// actions; markers at the same time are merged.
func markers(res *sim.Result) []status.Marker {
	var out []status.Marker
	detected := false
	for _, e := range res.Timeline {
		kind := ""
		switch e.Kind {
		case "change", "upstream":
			kind = "change"
		case "action":
			kind = "action"
		case "detection":
			if detected {
				continue
			}
			kind, detected = "alert", true
		}
		if kind == "" || e.Label == "" {
			continue
		}
		if n := len(out); n > 0 && out[n-1].T.Equal(e.At) {
			if !strings.Contains(out[n-1].Label, e.Label) {
				out[n-1].Label += ", " + e.Label
			}
			continue
		}
		out = append(out, status.Marker{T: e.At, Label: e.Label, Kind: kind})
	}
	return out
}

var page = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{.Title}}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 2em; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 1em; }
figure { margin: 0; } figcaption { font-size: 0.85em; color: #444; }
table { border-collapse: collapse; font-size: 0.85em; }
td, th { border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
td.k { color: #666; white-space: nowrap; } td.t { font-family: ui-monospace, monospace; white-space: nowrap; }
tr.detection td, tr.attribution td { background: #fff3f3; } tr.action td { background: #f1fbf1; }
tr.change td, tr.upstream td { background: #fff8ec; } tr.verification td { background: #f3f6ff; }
.muted { color: #666; font-size: 0.85em; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
<p>{{.Description}}</p>
<p><b>Ground truth:</b> {{.Truth}}. <span class="muted">{{.Generated}}.</span></p>
<h2>Signals</h2>
<p class="muted">Markers show the changes (orange), the first detection (red) and the flag writes (green) of the {{.Primary}} run.</p>
<div class="charts">
{{range .Charts}}<figure>{{.SVG}}<figcaption>{{.Title}}</figcaption></figure>
{{end}}</div>
<h2>Guards compared</h2>
<table>
<tr><th>guard</th><th>detected</th><th>delay</th><th>attribution</th><th>false alarms</th><th>actions</th><th>SLO minutes</th><th>restored after</th><th>benefit kept</th></tr>
{{range .Rows}}<tr><td>{{.Guard}}</td><td>{{.Detected}}</td><td>{{.DelayText}}</td><td>{{.Attribution}}</td><td>{{.FalseAlarms}}</td><td>{{.Actions}}</td><td>{{.SLOMinutes}}</td><td>{{.Restored}}</td><td>{{.BenefitText}}</td></tr>
{{end}}</table>
{{range .Notes}}<p class="muted">{{.}}</p>
{{end}}
<h2>Timeline ({{.Primary}} run)</h2>
<table>
{{range .Timeline}}<tr class="{{.Kind}}"><td class="t">{{.Time}}</td><td class="t">{{.Rel}}</td><td class="k">{{.Kind}}</td><td>{{.Text}}</td></tr>
{{end}}</table>
{{if .Footer}}<p class="muted">{{.Footer}}</p>{{end}}
</body>
</html>
`))
