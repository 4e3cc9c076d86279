package dashboards

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/tailguard/tailguard/docs"
)

// schemaPath is a copy of the Grafana dashboard JSON schema (draft-07) from
// grafana/grafana-foundation-sdk.
const schemaPath = "testdata/grafana-dashboard.json"

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	f, err := os.Open(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("%s: %v", schemaPath, err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft7)
	const url = "https://tailguard.invalid/grafana-dashboard.json"
	if err := c.AddResource(url, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(url)
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

// The parts of a dashboard this package checks; the schema covers the rest.
type dashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Panels        []panel
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []annotation `json:"list"`
	} `json:"annotations"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // of a row
}

type annotation struct {
	Name       string         `json:"name"`
	Datasource *datasourceRef `json:"datasource"`
	Expr       string         `json:"expr"`
}

type variable struct {
	Type       string         `json:"type"`
	Name       string         `json:"name"`
	Query      any            `json:"query"`
	Datasource *datasourceRef `json:"datasource"`
	Multi      bool           `json:"multi"`
	IncludeAll bool           `json:"includeAll"`
	Current    struct {
		Value any `json:"value"`
	} `json:"current"`
}

// builtinVars are Grafana's global variables that can appear in a PromQL
// query, with a value that keeps the query valid.
var builtinVars = map[string]string{
	"__interval":      "1m",
	"__rate_interval": "4m",
	"__range":         "6h",
	"__interval_ms":   "60000",
	"__range_ms":      "21600000",
	"__range_s":       "21600",
}

// multiValue replaces a multi-value variable. Grafana expands those to a
// regular expression (a|b), which only works with =~ and !~; lintExpr flags
// it inside = and !=.
const multiValue = "multi_a|multi_b"

// placeholder replaces a single-value query variable.
const placeholder = "placeholder"

// varRE matches $var, ${var}, ${var:format} and [[var]].
var varRE = regexp.MustCompile(`\$\{([A-Za-z_]\w*)(?::[^}]*)?\}|\[\[([A-Za-z_]\w*)(?::[^\]]*)?\]\]|\$([A-Za-z_]\w*)`)

// substitute replaces Grafana variables in a query: built-ins by a valid
// duration or number, custom, constant and textbox variables by their
// current value, multi-value variables by multiValue, the others by
// placeholder. An undefined variable is an error.
func substitute(query string, vars map[string]string) (string, error) {
	var errs []error
	out := varRE.ReplaceAllStringFunc(query, func(m string) string {
		sm := varRE.FindStringSubmatch(m)
		name := sm[1] + sm[2] + sm[3]
		if v, ok := builtinVars[name]; ok {
			return v
		}
		if v, ok := vars[name]; ok {
			return v
		}
		errs = append(errs, fmt.Errorf("undefined variable $%s", name))
		return m
	})
	return out, errors.Join(errs...)
}

func variableValues(vs []variable) map[string]string {
	out := map[string]string{}
	for _, v := range vs {
		switch {
		case v.Multi || v.IncludeAll:
			out[v.Name] = multiValue
		case v.Type == "custom" || v.Type == "constant" || v.Type == "textbox":
			if s, ok := v.Current.Value.(string); ok && s != "" {
				out[v.Name] = s
			} else if q, ok := v.Query.(string); ok {
				out[v.Name], _, _ = strings.Cut(q, ",")
			}
		default:
			out[v.Name] = placeholder
		}
	}
	return out
}

// lintExpr substitutes the variables in a PromQL query, parses it and checks
// every metric it names against the catalogue.
func lintExpr(query string, vars map[string]string, cat *docs.Catalogue) error {
	if strings.TrimSpace(query) == "" {
		return errors.New("empty expression")
	}
	expr, err := substitute(query, vars)
	if err != nil {
		return err
	}
	if err := cat.CheckExpr(expr); err != nil {
		return err
	}
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return err // unreachable: CheckExpr parsed it
	}
	var errs []error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		for _, m := range vs.LabelMatchers {
			if (m.Type == labels.MatchEqual || m.Type == labels.MatchNotEqual) && strings.Contains(m.Value, multiValue) {
				errs = append(errs, fmt.Errorf("multi-value variable in %s: use =~ or !~", m))
			}
		}
		return nil
	})
	return errors.Join(errs...)
}

// variableQueryRE matches the Prometheus data source's variable queries that
// contain PromQL.
var variableQueryRE = regexp.MustCompile(`^\s*(label_values|query_result)\((.*)\)\s*$`)

// variableExpr returns the PromQL inside a query variable's query:
// label_values(<selector>, <label>), query_result(<expr>). label_values(<label>)
// has none.
func variableExpr(q string) (string, error) {
	m := variableQueryRE.FindStringSubmatch(q)
	if m == nil {
		return "", fmt.Errorf("unsupported variable query %q", q)
	}
	if m[1] == "query_result" {
		return m[2], nil
	}
	i := strings.LastIndex(m[2], ",")
	if i < 0 {
		return "", nil
	}
	return m[2][:i], nil
}

// lint checks one dashboard: the schema, unique panel ids, non-overlapping
// grid positions, the datasource variable on every Prometheus query, and
// every PromQL expression (panel targets, annotation queries, query
// variables). It returns all problems joined.
func lint(data []byte, sch *jsonschema.Schema, cat *docs.Catalogue) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("json: %w", err)
	}
	var errs []error
	if err := sch.Validate(inst); err != nil {
		errs = append(errs, fmt.Errorf("schema: %w", err))
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return errors.Join(append(errs, fmt.Errorf("json: %w", err))...)
	}
	fail := func(where string, err error) { errs = append(errs, fmt.Errorf("%s: %w", where, err)) }
	vars := variableValues(d.Templating.List)
	checkDS := func(where string, ds *datasourceRef) {
		if ds != nil && ds.Type == "prometheus" && ds.UID != "${datasource}" {
			fail(where, fmt.Errorf("datasource uid %q, want ${datasource}", ds.UID))
		}
	}

	for _, v := range d.Templating.List {
		where := fmt.Sprintf("variable %q", v.Name)
		if v.Type != "query" {
			continue
		}
		checkDS(where, v.Datasource)
		q, ok := v.Query.(string)
		if !ok {
			fail(where, errors.New("query is not a string"))
			continue
		}
		expr, err := variableExpr(q)
		if err != nil {
			fail(where, err)
			continue
		}
		if expr == "" {
			continue
		}
		if err := lintExpr(expr, vars, cat); err != nil {
			fail(where, err)
		}
	}

	for i, a := range d.Annotations.List {
		where := fmt.Sprintf("annotation %d %q", i, a.Name)
		checkDS(where, a.Datasource)
		if a.Datasource == nil || a.Datasource.Type != "prometheus" {
			continue
		}
		if err := lintExpr(a.Expr, vars, cat); err != nil {
			fail(where, err)
		}
	}

	ids := map[int]string{}
	var boxes []panel
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
			if prev, ok := ids[p.ID]; ok {
				fail(where, fmt.Errorf("id %d also used by %q", p.ID, prev))
			}
			ids[p.ID] = p.Title
			boxes = append(boxes, p)
			checkDS(where, p.Datasource)
			if p.Type != "row" && len(p.Targets) == 0 {
				fail(where, errors.New("no targets"))
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				where := fmt.Sprintf("%s target %s", where, tg.RefID)
				if tg.RefID == "" || refs[tg.RefID] {
					fail(where, errors.New("refId empty or not unique"))
				}
				refs[tg.RefID] = true
				checkDS(where, tg.Datasource)
				if err := lintExpr(tg.Expr, vars, cat); err != nil {
					fail(where, err)
				}
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for i, a := range boxes {
		for _, b := range boxes[i+1:] {
			ag, bg := a.GridPos, b.GridPos
			if ag.X < bg.X+bg.W && bg.X < ag.X+ag.W && ag.Y < bg.Y+bg.H && bg.Y < ag.Y+ag.H {
				fail(fmt.Sprintf("panel %d %q", a.ID, a.Title), fmt.Errorf("overlaps panel %d %q", b.ID, b.Title))
			}
		}
	}
	return errors.Join(errs...)
}

func TestDashboards(t *testing.T) {
	sch := compileSchema(t)
	cat, err := docs.Load()
	if err != nil {
		t.Fatal(err)
	}
	names, err := fs.Glob(FS(), "*.json")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"tailguard-health.json", "tailguard-service.json"}) {
		t.Fatalf("embedded dashboards = %v", names)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			data, err := fs.ReadFile(FS(), name)
			if err != nil {
				t.Fatal(err)
			}
			if err := lint(data, sch, cat); err != nil {
				t.Error(err)
			}
			var d dashboard
			if err := json.Unmarshal(data, &d); err != nil {
				t.Fatal(err)
			}
			if d.UID+".json" != name {
				t.Errorf("uid %q does not match the file name", d.UID)
			}
			if d.SchemaVersion != 39 {
				t.Errorf("schemaVersion %d, want 39", d.SchemaVersion)
			}
		})
	}
}

// TestDashboardsShowTheirMetrics requires the health dashboard to show every
// tailguard_* metric of the sidecar and the service dashboard every backoff_*
// metric and the service-side flag provider's tailguard_flag_provider_*, so a
// metric added to the catalogue is not forgotten on the dashboards.
func TestDashboardsShowTheirMetrics(t *testing.T) {
	cat, err := docs.Load()
	if err != nil {
		t.Fatal(err)
	}
	const serviceSide = "tailguard_flag_provider_"
	owns := map[string]func(string) bool{
		"tailguard-health.json": func(n string) bool {
			return strings.HasPrefix(n, "tailguard_") && !strings.HasPrefix(n, serviceSide)
		},
		"tailguard-service.json": func(n string) bool {
			return strings.HasPrefix(n, "backoff_") || strings.HasPrefix(n, serviceSide)
		},
	}
	for file, owned := range owns {
		data, err := fs.ReadFile(FS(), file)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatal(err)
		}
		vars := variableValues(d.Templating.List)
		used := map[string]bool{}
		var walk func(ps []panel)
		walk = func(ps []panel) {
			for _, p := range ps {
				for _, tg := range p.Targets {
					for _, n := range metricNames(t, tg.Expr, vars) {
						if m, ok := cat.Lookup(n); ok {
							used[m.Name] = true
						}
					}
				}
				walk(p.Panels)
			}
		}
		walk(d.Panels)
		for _, m := range cat.Metrics() {
			if owned(m.Name) && !used[m.Name] {
				t.Errorf("%s: no panel shows %s", file, m.Name)
			}
		}
	}
}

func metricNames(t *testing.T, query string, vars map[string]string) []string {
	t.Helper()
	expr, err := substitute(query, vars)
	if err != nil {
		t.Fatal(err)
	}
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok && vs.Name != "" {
			names = append(names, vs.Name)
		}
		return nil
	})
	return names
}

// minimal returns a small valid dashboard with a row holding one panel, an
// annotation query and a query variable; the cases of TestLintRejects break
// one part of it each.
func minimal() map[string]any {
	ds := map[string]any{"type": "prometheus", "uid": "${datasource}"}
	return map[string]any{
		"uid": "test", "title": "test", "schemaVersion": 39,
		"templating": map[string]any{"list": []any{
			map[string]any{"type": "datasource", "name": "datasource", "query": "prometheus"},
			map[string]any{"type": "query", "name": "job", "datasource": ds, "query": "label_values(backoff_calls_total, job)"},
			map[string]any{"type": "query", "name": "upstream", "datasource": ds, "multi": true, "includeAll": true,
				"query": `label_values(backoff_calls_total{job="$job"}, upstream)`},
			map[string]any{"type": "custom", "name": "le", "query": "0.25,0.4", "current": map[string]any{"text": "0.4", "value": "0.4"}},
		}},
		"annotations": map[string]any{"list": []any{
			map[string]any{"name": "actions", "enable": true, "iconColor": "red", "datasource": ds,
				"expr": `increase(tailguard_actions_total[$__interval]) > 0`},
		}},
		"panels": []any{
			map[string]any{"type": "row", "id": 1, "collapsed": false, "title": "row",
				"gridPos": map[string]any{"h": 1, "w": 24, "x": 0, "y": 0},
				"panels": []any{
					map[string]any{"type": "timeseries", "id": 2, "title": "retries", "datasource": ds,
						"gridPos": map[string]any{"h": 8, "w": 12, "x": 0, "y": 1},
						"targets": []any{map[string]any{"refId": "A", "datasource": ds,
							"expr": `sum(rate(backoff_retries_total{job="$job", upstream=~"$upstream"}[$__rate_interval])) / sum(rate(backoff_calls_total{job="$job"}[$__rate_interval]))`}}},
				}},
			map[string]any{"type": "timeseries", "id": 3, "title": "slow", "datasource": ds,
				"gridPos": map[string]any{"h": 8, "w": 12, "x": 12, "y": 1},
				"targets": []any{map[string]any{"refId": "A", "datasource": ds,
					"expr": `1 - sum(rate(http_request_duration_seconds_bucket{le="$le"}[5m])) / sum(rate(http_request_duration_seconds_count[5m])) > bool ${le}`}}},
		},
	}
}

// at walks a path of map keys and slice indexes in a decoded dashboard.
func at(v any, path ...any) map[string]any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			v = v.(map[string]any)[k]
		case int:
			v = v.([]any)[k]
		}
	}
	return v.(map[string]any)
}

func TestLintRejects(t *testing.T) {
	sch := compileSchema(t)
	cat, err := docs.Load()
	if err != nil {
		t.Fatal(err)
	}
	encode := func(d map[string]any) []byte {
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if err := lint(encode(minimal()), sch, cat); err != nil {
		t.Fatalf("minimal dashboard: %v", err)
	}
	rowTarget := func(d map[string]any) map[string]any { return at(d, "panels", 0, "panels", 0, "targets", 0) }
	tests := []struct {
		name    string
		mutate  func(d map[string]any)
		wantErr string
	}{
		{"bad expression", func(d map[string]any) {
			at(d, "panels", 1, "targets", 0)["expr"] = `sum(rate(backoff_calls_total[5m])`
		}, `panel 3 "slow" target A: parse:`},
		{"undocumented metric in a row's panel", func(d map[string]any) {
			rowTarget(d)["expr"] = `rate(backoff_retry_total[5m])`
		}, `panel 2 "retries" target A: undocumented metric "backoff_retry_total"`},
		{"undocumented metric in an annotation", func(d map[string]any) {
			at(d, "annotations", "list", 0)["expr"] = `changes(tailguard_version[$__interval]) > 0`
		}, `annotation 0 "actions": undocumented metric "tailguard_version"`},
		{"undocumented metric in a variable", func(d map[string]any) {
			at(d, "templating", "list", 1)["query"] = `label_values(shop_requests_total, job)`
		}, `variable "job": undocumented metric "shop_requests_total"`},
		{"unsupported variable query", func(d map[string]any) {
			at(d, "templating", "list", 1)["query"] = `metrics(backoff_.*)`
		}, `unsupported variable query`},
		{"undefined variable", func(d map[string]any) {
			rowTarget(d)["expr"] = `rate(backoff_calls_total{job="$service"}[5m])`
		}, "undefined variable $service"},
		{"multi-value variable with =", func(d map[string]any) {
			rowTarget(d)["expr"] = `rate(backoff_calls_total{upstream="$upstream"}[5m])`
		}, "multi-value variable"},
		{"empty expression", func(d map[string]any) { rowTarget(d)["expr"] = "" }, "empty expression"},
		{"hard-coded datasource", func(d map[string]any) {
			at(d, "panels", 1)["datasource"] = map[string]any{"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
		}, `datasource uid "P1809F7CD0C75ACF3"`},
		{"duplicate panel id", func(d map[string]any) { at(d, "panels", 1)["id"] = 2 }, "id 2 also used"},
		{"duplicate refId", func(d map[string]any) {
			p := at(d, "panels", 1)
			p["targets"] = append(p["targets"].([]any), map[string]any{"refId": "A", "expr": "up"})
		}, "refId empty or not unique"},
		{"overlapping panels", func(d map[string]any) { at(d, "panels", 1, "gridPos")["x"] = 6 }, "overlaps"},
		{"schema: panel too wide", func(d map[string]any) { at(d, "panels", 1, "gridPos")["w"] = 30 }, "schema:"},
		{"schema: unknown property", func(d map[string]any) { d["rows"] = []any{} }, "schema:"},
		{"schema: no templating", func(d map[string]any) { delete(d, "templating") }, "schema:"},
		{"schema: row without panels", func(d map[string]any) { delete(at(d, "panels", 0), "panels") }, "schema:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := minimal()
			tt.mutate(d)
			err := lint(encode(d), sch, cat)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("lint() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestSubstitute(t *testing.T) {
	vars := map[string]string{"job": "placeholder", "le": "0.4"}
	tests := []struct {
		in, want, wantErr string
	}{
		{`rate(x{job="$job"}[$__rate_interval])`, `rate(x{job="placeholder"}[4m])`, ""},
		{`x{job="${job}"} > ${le:raw}`, `x{job="placeholder"} > 0.4`, ""},
		{`x{job="[[job]]"}[$__range]`, `x{job="placeholder"}[6h]`, ""},
		{`label_replace(x, "a", "$1", "b", "(.*)")`, `label_replace(x, "a", "$1", "b", "(.*)")`, ""},
		{`x{job="$nope"}`, "", "undefined variable $nope"},
	}
	for _, tt := range tests {
		got, err := substitute(tt.in, vars)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("substitute(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("substitute(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}
