// Package status renders the sidecar's status page: the SLOs and their state,
// open incidents with their evidence and the actions taken, the flags the
// controller may touch, and a small inline SVG chart of each incident's signal
// around the change. The page is plain HTML with no script, so it works behind
// any proxy and in a terminal browser.
//
// Rendering is a pure function of a View; the daemon builds the View from its
// state on each request.
package status

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io"
	"time"
)

//go:embed page.html.tmpl
var templates embed.FS

// View is everything the page shows.
type View struct {
	Title     string
	Version   string
	Mode      string
	Generated time.Time
	// LastEvaluation is the end of the last successful control-loop cycle.
	LastEvaluation time.Time
	Ready          bool
	// Blind, when set, says the metrics backend is not answering: shown as
	// a banner above everything else.
	Blind     string
	SLOs      []SLO
	Incidents []Incident
	Flags     []Flag
	Changes   []Change
	// Leaders says, per service, which replica decides and writes (with the
	// flags in Kubernetes); empty otherwise.
	Leaders []Leader
	// QueryCost is what the last cycle of each service cost the metrics
	// backend: a total row per service (Signal "all"), then one per signal.
	QueryCost []QueryCost
}

// Leader is the leadership of one service among the replicas.
type Leader struct {
	Service string
	Leader  string
	Self    bool
	Detail  string
}

// QueryCost is one row of the query-cost table.
type QueryCost struct {
	Service   string
	Signal    string
	Queries   int
	Errors    int
	Series    int
	Samples   int
	QueryTime string
	// CycleTime is the wall time of the whole cycle (total rows only).
	CycleTime string
}

// SLO states.
const (
	StateOK        = "ok"
	StateAtRisk    = "at-risk"
	StateBreaching = "breaching"
	StateUnknown   = "unknown"
)

// SLO is one objective of one service.
type SLO struct {
	Service   string
	Name      string
	Objective string
	Current   string
	State     string
	Detail    string
}

// Incident is a group of findings sharing a cause, and what was done about it.
type Incident struct {
	ID         string
	Service    string
	Opened     time.Time
	State      string
	Cause      string
	Confidence string
	Effect     string
	Evidence   []string
	// Hypotheses are the competing explanations of the incident's
	// strongest finding, best first: each known change and "none of the
	// known changes", with their scores.
	Hypotheses []Hypothesis
	Actions    []Action
	Chart      *Chart
}

// Hypothesis is one explanation of a finding with its score and evidence.
type Hypothesis struct {
	Name     string
	Score    string
	Evidence string
}

// Action is one step the controller took or proposed.
type Action struct {
	Time     time.Time
	Rung     string
	Summary  string
	Result   string
	Expected string
	Observed string
}

// Flag is the state of one feature flag the controller may touch.
type Flag struct {
	Key      string
	State    string
	Default  string
	Rollout  string
	Revision string
}

// Change is a recent change event.
type Change struct {
	Time    time.Time
	Kind    string
	Subject string
	Detail  string
}

// incidentClass maps an incident state to the CSS class of its badge.
func incidentClass(state string) string {
	switch state {
	case "resolved", "closed":
		return StateOK
	case "mitigated", "holding", "restoring", "verifying", "proposed":
		return StateAtRisk
	default:
		return StateBreaching
	}
}

// Renderer renders Views. It is safe for concurrent use.
type Renderer struct {
	tmpl *template.Template
}

// NewRenderer parses the page template.
func NewRenderer() (*Renderer, error) {
	t, err := template.New("page.html.tmpl").Funcs(template.FuncMap{
		"ts": func(t time.Time) string {
			if t.IsZero() {
				return "never"
			}
			return t.UTC().Format("2006-01-02 15:04:05 UTC")
		},
		"incidentClass": incidentClass,
		"ago": func(now, t time.Time) string {
			if t.IsZero() {
				return "never"
			}
			return now.Sub(t).Round(time.Second).String() + " ago"
		},
	}).ParseFS(templates, "page.html.tmpl")
	if err != nil {
		return nil, fmt.Errorf("parse status page template: %w", err)
	}
	return &Renderer{tmpl: t}, nil
}

// Render writes the page for v. The output is buffered, so a template error
// never leaves a half-written page.
func (r *Renderer) Render(w io.Writer, v View) error {
	if v.Title == "" {
		v.Title = "tailguard"
	}
	var buf bytes.Buffer
	if err := r.tmpl.Execute(&buf, v); err != nil {
		return fmt.Errorf("render status page: %w", err)
	}
	_, err := buf.WriteTo(w)
	return err
}
