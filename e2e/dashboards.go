package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strings"
)

// Dashboard is the part of a Grafana dashboard the end-to-end test runs:
// its variables, the PromQL of every panel target and of every Prometheus
// annotation query.
type Dashboard struct {
	File        string
	UID         string
	Variables   []Variable
	Queries     []PanelQuery
	Annotations []PanelQuery // Panel is the annotation's name
}

// Variable is a templating variable.
type Variable struct {
	Name       string
	Type       string
	Query      string // query and custom variables
	Current    string // current value of a single-value variable
	Multi      bool
	IncludeAll bool
	AllValue   string
}

// PanelQuery is one target of one panel.
type PanelQuery struct {
	Panel string
	RefID string
	Expr  string
}

type grafanaDashboard struct {
	UID         string         `json:"uid"`
	Panels      []grafanaPanel `json:"panels"`
	Annotations struct {
		List []struct {
			Name string `json:"name"`
			Expr string `json:"expr"`
		} `json:"list"`
	} `json:"annotations"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Query      any    `json:"query"`
			Multi      bool   `json:"multi"`
			IncludeAll bool   `json:"includeAll"`
			AllValue   string `json:"allValue"`
			Current    struct {
				Value any `json:"value"`
			} `json:"current"`
		} `json:"list"`
	} `json:"templating"`
}

type grafanaPanel struct {
	Title   string `json:"title"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"` // rows
}

// LoadDashboards reads every *.json dashboard of fsys.
func LoadDashboards(fsys fs.FS) ([]Dashboard, error) {
	names, err := fs.Glob(fsys, "*.json")
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, errors.New("dashboards: no *.json file")
	}
	var out []Dashboard
	for _, name := range names {
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		var g grafanaDashboard
		if err := json.Unmarshal(b, &g); err != nil {
			return nil, fmt.Errorf("dashboard %s: %w", name, err)
		}
		d := Dashboard{File: path.Base(name), UID: g.UID}
		for _, v := range g.Templating.List {
			vv := Variable{Name: v.Name, Type: v.Type, Multi: v.Multi, IncludeAll: v.IncludeAll, AllValue: v.AllValue}
			switch q := v.Query.(type) {
			case string:
				vv.Query = q
			case map[string]any:
				// Newer Grafana stores {"query": "...", "refId": ...}.
				vv.Query, _ = q["query"].(string)
			}
			if s, ok := v.Current.Value.(string); ok {
				vv.Current = s
			}
			d.Variables = append(d.Variables, vv)
		}
		var walk func(ps []grafanaPanel)
		walk = func(ps []grafanaPanel) {
			for _, p := range ps {
				for _, t := range p.Targets {
					if strings.TrimSpace(t.Expr) != "" {
						d.Queries = append(d.Queries, PanelQuery{Panel: p.Title, RefID: t.RefID, Expr: t.Expr})
					}
				}
				walk(p.Panels)
			}
		}
		walk(g.Panels)
		for _, a := range g.Annotations.List {
			if strings.TrimSpace(a.Expr) != "" {
				d.Annotations = append(d.Annotations, PanelQuery{Panel: a.Name, Expr: a.Expr})
			}
		}
		out = append(out, d)
	}
	return out, nil
}

// varRE matches $var, ${var}, ${var:format} and [[var]].
var varRE = regexp.MustCompile(`\$\{([A-Za-z_]\w*)(?::[^}]*)?\}|\[\[([A-Za-z_]\w*)(?::[^\]]*)?\]\]|\$([A-Za-z_]\w*)`)

// Substitute replaces Grafana variables in a query with vals. An undefined
// variable is an error naming it.
func Substitute(query string, vals map[string]string) (string, error) {
	var missing []string
	out := varRE.ReplaceAllStringFunc(query, func(m string) string {
		sm := varRE.FindStringSubmatch(m)
		name := sm[1] + sm[2] + sm[3]
		if v, ok := vals[name]; ok {
			return v
		}
		if !slices.Contains(missing, name) {
			missing = append(missing, name)
		}
		return m
	})
	if len(missing) > 0 {
		return out, fmt.Errorf("undefined variable(s) $%s", strings.Join(missing, ", $"))
	}
	return out, nil
}

// labelValuesRE matches label_values(label) and label_values(selector, label).
var labelValuesRE = regexp.MustCompile(`^\s*label_values\(\s*(?:(.+?)\s*,\s*)?([A-Za-z_]\w*)\s*\)\s*$`)

// ParseLabelValues splits a label_values() variable query into its series
// selector (empty for the one-argument form) and label name.
func ParseLabelValues(q string) (selector, label string, err error) {
	m := labelValuesRE.FindStringSubmatch(q)
	if m == nil {
		return "", "", fmt.Errorf("not a label_values() query: %q", q)
	}
	return m[1], m[2], nil
}
