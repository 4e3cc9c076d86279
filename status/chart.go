package status

import (
	"fmt"
	"html/template"
	"math"
	"strings"
	"time"
)

// Point is one sample of a chart series.
type Point struct {
	T time.Time
	V float64
}

// Series is a named line of a chart. NaN values break the line, so gaps in
// the data are shown as gaps.
type Series struct {
	Name   string
	Points []Point
}

// Marker is a vertical line at a point in time: a change event or an action.
type Marker struct {
	T     time.Time
	Label string
	// Kind selects the marker's colour: "change", "action" or "alert".
	Kind string
}

// Chart is a small time-series chart rendered as inline SVG.
type Chart struct {
	Title        string
	Unit         string
	Series       []Series
	Markers      []Marker
	Threshold    float64 // drawn when HasThreshold is set, e.g. the SLO objective
	HasThreshold bool
}

const (
	chartW, chartH         = 560.0, 180.0
	padL, padR, padT, padB = 56.0, 12.0, 14.0, 24.0
	plotW                  = chartW - padL - padR
	plotH                  = chartH - padT - padB
)

var seriesColours = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b"}

func markerColour(kind string) string {
	switch kind {
	case "action":
		return "#2ca02c"
	case "alert":
		return "#d62728"
	default:
		return "#ff7f0e"
	}
}

// bounds returns the time and value ranges covering every finite point, the
// markers and the threshold. ok is false when there is nothing to draw.
func (c Chart) bounds() (t0, t1 time.Time, v0, v1 float64, ok bool) {
	v0, v1 = math.Inf(1), math.Inf(-1)
	see := func(t time.Time) {
		if t0.IsZero() || t.Before(t0) {
			t0 = t
		}
		if t1.IsZero() || t.After(t1) {
			t1 = t
		}
	}
	for _, s := range c.Series {
		for _, p := range s.Points {
			if math.IsNaN(p.V) || math.IsInf(p.V, 0) {
				continue
			}
			see(p.T)
			v0, v1 = math.Min(v0, p.V), math.Max(v1, p.V)
			ok = true
		}
	}
	if !ok {
		return t0, t1, 0, 0, false
	}
	for _, m := range c.Markers {
		see(m.T)
	}
	if c.HasThreshold && !math.IsNaN(c.Threshold) && !math.IsInf(c.Threshold, 0) {
		v0, v1 = math.Min(v0, c.Threshold), math.Max(v1, c.Threshold)
	}
	v0 = math.Min(v0, 0)
	if v1 <= v0 {
		v1 = v0 + 1
	}
	v1 += (v1 - v0) * 0.05
	if !t1.After(t0) {
		t1 = t0.Add(time.Minute)
	}
	return t0, t1, v0, v1, true
}

// SVG renders the chart. A chart with no finite point renders a short note
// instead of an empty frame.
func (c Chart) SVG() template.HTML {
	t0, t1, v0, v1, ok := c.bounds()
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" role="img" aria-label="%s" viewBox="0 0 %.0f %.0f" width="%.0f" height="%.0f" xmlns="http://www.w3.org/2000/svg">`,
		template.HTMLEscapeString(c.Title), chartW, chartH, chartW, chartH)
	fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="#fafafa" stroke="#ccc"/>`, padL, padT, plotW, plotH)
	if !ok {
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle" fill="#666">no data</text></svg>`, padL+plotW/2, padT+plotH/2)
		return template.HTML(b.String())
	}
	span := t1.Sub(t0).Seconds()
	x := func(t time.Time) float64 { return padL + plotW*t.Sub(t0).Seconds()/span }
	y := func(v float64) float64 { return padT + plotH*(1-(v-v0)/(v1-v0)) }

	// Axis labels: value range and time range.
	fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end" font-size="10" fill="#444">%s</text>`, padL-4, padT+8, formatValue(v1, c.Unit))
	fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end" font-size="10" fill="#444">%s</text>`, padL-4, padT+plotH, formatValue(v0, c.Unit))
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" font-size="10" fill="#444">%s</text>`, padL, chartH-6, t0.UTC().Format("15:04"))
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="end" font-size="10" fill="#444">%s</text>`, padL+plotW, chartH-6, t1.UTC().Format("15:04 UTC"))

	if c.HasThreshold {
		ty := y(c.Threshold)
		fmt.Fprintf(&b, `<line class="threshold" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#d62728" stroke-dasharray="4 3"/>`, padL, ty, padL+plotW, ty)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end" font-size="10" fill="#d62728">SLO %s</text>`, padL+plotW-2, ty-3, formatValue(c.Threshold, c.Unit))
	}
	for _, m := range c.Markers {
		mx := x(m.T)
		col := markerColour(m.Kind)
		fmt.Fprintf(&b, `<line class="marker %s" x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="%s"><title>%s</title></line>`,
			template.HTMLEscapeString(m.Kind), mx, padT, mx, padT+plotH, col, template.HTMLEscapeString(m.T.UTC().Format("15:04:05")+" "+m.Label))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" font-size="9" fill="%s">%s</text>`, mx+2, padT+9, col, template.HTMLEscapeString(m.Label))
	}
	for i, s := range c.Series {
		col := seriesColours[i%len(seriesColours)]
		for _, seg := range segments(s.Points) {
			if len(seg) == 1 {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="1.5" fill="%s"/>`, x(seg[0].T), y(seg[0].V), col)
				continue
			}
			b.WriteString(`<polyline fill="none" stroke-width="1.5" stroke="` + col + `" points="`)
			for j, p := range seg {
				if j > 0 {
					b.WriteByte(' ')
				}
				fmt.Fprintf(&b, "%.1f,%.1f", x(p.T), y(p.V))
			}
			b.WriteString(`"/>`)
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" font-size="10" fill="%s">%s</text>`, padL+6+float64(i)*140, padT+plotH-4, col, template.HTMLEscapeString(s.Name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// segments splits points into runs of finite values.
func segments(ps []Point) [][]Point {
	var out [][]Point
	start := -1
	for i, p := range ps {
		finite := !math.IsNaN(p.V) && !math.IsInf(p.V, 0)
		switch {
		case finite && start < 0:
			start = i
		case !finite && start >= 0:
			out = append(out, ps[start:i])
			start = -1
		}
	}
	if start >= 0 {
		out = append(out, ps[start:])
	}
	return out
}

func formatValue(v float64, unit string) string {
	switch unit {
	case "seconds":
		return (time.Duration(v * float64(time.Second))).Round(time.Millisecond).String()
	case "ratio":
		return fmt.Sprintf("%.2f%%", v*100)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}
