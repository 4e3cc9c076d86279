package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/config"
	"gopkg.in/yaml.v3"

	"github.com/tailguard/tailguard/controller"
	"github.com/tailguard/tailguard/detector/changes"
	"github.com/tailguard/tailguard/flags"
)

// maxAnswer bounds an answer of the sidecar's API.
const maxAnswer = 64 << 20

// sidecarFlags say where the sidecar's HTTP API is and how to reach it.
type sidecarFlags struct {
	url            string
	httpConfigFile string
	timeout        time.Duration
}

// registerSidecar adds the commands that talk to the sidecar's HTTP API,
// in the manner of amtool: incidents, explain, plan, approve, declare and
// evaluate, and the global flags that locate the sidecar.
func registerSidecar(app *kingpin.Application, g *globalFlags) commands {
	sf := &sidecarFlags{}
	app.Flag("sidecar.url", "Base URL of the tailguard sidecar's HTTP API (incidents, explain, plan, approve, declare, evaluate).").
		Envar("TAILGUARD_URL").Default("http://localhost:9099").StringVar(&sf.url)
	app.Flag("sidecar.http.config.file", "HTTP client configuration for the sidecar (basic auth, authorization, TLS, proxy), in Prometheus' http_config format; for a sidecar behind a web config (--web.config.file).").
		PlaceHolder("PATH").StringVar(&sf.httpConfigFile)
	app.Flag("sidecar.timeout", "Longest time a request to the sidecar may take (evaluate runs a whole cycle).").
		Default("2m").DurationVar(&sf.timeout)
	cmds := commands{}

	app.Command("incidents", "List the sidecar's incidents, active and resolved, newest first.")
	cmds["incidents"] = func(ctx context.Context) error { return incidentsCmd(ctx, g, sf) }

	explain := app.Command("explain", "Explain an incident: its cause, trigger readings, actions with model inputs, expected and observed effects, plans.")
	explainID := explain.Arg("incident", "Incident id (see incidents).").Required().String()
	cmds["explain"] = func(ctx context.Context) error { return explainCmd(ctx, g, sf, *explainID) }

	plan := app.Command("plan", "List the plans proposed in propose mode, pending first, then newest first.")
	planIncident := plan.Flag("incident", "Only the plans of this incident.").String()
	planPending := plan.Flag("pending", "Only pending plans.").Bool()
	cmds["plan"] = func(ctx context.Context) error { return planCmd(ctx, g, sf, *planIncident, *planPending) }

	approve := app.Command("approve", `Approve an incident's pending plan: the sidecar applies it now on behalf of --actor ("operator:<name>").`)
	approveID := approve.Arg("incident", "Incident id, or the id of a plan (see plan).").Required().String()
	approvePlan := approve.Flag("plan", "The plan to approve, when the incident has more than one pending.").String()
	approveReason := approve.Flag("reason", "Why the plan is approved (logged by the sidecar with the approval).").Required().String()
	cmds["approve"] = func(ctx context.Context) error {
		return approveCmd(ctx, g, sf, *approveID, *approvePlan, *approveReason)
	}

	declare := app.Command("declare", declareHelp)
	d := &declareFlags{scope: map[string]string{}}
	declare.Flag("file", "Upgrade manifest (YAML or JSON; /dev/stdin reads standard input).").Short('f').PlaceHolder("PATH").StringVar(&d.file)
	declare.Flag("component", "Component that changed, e.g. dten-gateway.").StringVar(&d.component)
	declare.Flag("from", "Version before the change.").StringVar(&d.from)
	declare.Flag("to", "Version after the change.").StringVar(&d.to)
	declare.Flag("scope", "Slice label the change touches, as KEY=VALUE (repeatable; default: the whole service).").PlaceHolder("KEY=VALUE").StringMapVar(&d.scope)
	declare.Flag("name", "Name of the upgrade package or release.").StringVar(&d.name)
	declare.Flag("time", "When the change was applied: RFC 3339, a date, or a duration ago such as 10m (default: the manifest's time, else now).").StringVar(&d.time)
	declare.Flag("reason", "Why the change was made.").StringVar(&d.reason)
	cmds["declare"] = func(ctx context.Context) error { return declareCmd(ctx, g, sf, d) }

	evaluate := app.Command("evaluate", "Run a control cycle of a service now and show its assessments and decision.")
	evaluateSvc := evaluate.Arg("service", "Service name (of the sidecar's policy).").Required().String()
	cmds["evaluate"] = func(ctx context.Context) error { return evaluateCmd(ctx, g, sf, *evaluateSvc) }

	return cmds
}

const declareHelp = `Declare a change (an upgrade) to the sidecar, so that regressions after it can be attributed to it.

Either name one component with --component, --from and --to, or give a
manifest with -f:

  time: 2026-11-23T10:00:00Z     # optional: default now (or --time)
  name: vendor-2026.11
  components:
    - {name: dten-gateway, from: "2.3", to: "3.0", scope: {job: shop}}

The actor is --actor unless the manifest names one.`

// sidecarAPI is a client of the sidecar's HTTP API.
type sidecarAPI struct {
	base    *url.URL
	client  *http.Client
	timeout time.Duration
}

func (f *sidecarFlags) api() (*sidecarAPI, error) {
	u, err := url.Parse(f.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef("--sidecar.url %q: want http(s)://host[:port][/path]", f.url)
	}
	hc := config.DefaultHTTPClientConfig
	if f.httpConfigFile != "" {
		c, _, err := config.LoadHTTPConfigFile(f.httpConfigFile)
		if err != nil {
			return nil, fmt.Errorf("sidecar http config %s: %w", f.httpConfigFile, err)
		}
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("sidecar http config %s: %w", f.httpConfigFile, err)
		}
		hc = *c
	}
	client, err := config.NewClientFromConfig(hc, "tailguardctl", config.WithUserAgent("tailguardctl"))
	if err != nil {
		return nil, fmt.Errorf("sidecar http config: %w", err)
	}
	if f.timeout <= 0 {
		return nil, usagef("--sidecar.timeout %s: must be positive", f.timeout)
	}
	return &sidecarAPI{base: u, client: client, timeout: f.timeout}, nil
}

// apiError is an error answer of the sidecar. Its exit code follows the
// status: 404 → 1 (not found), 409 → 3 (conflict), 400 and 413 → 5 (the
// request is invalid), other → 1.
type apiError struct {
	Method  string
	URL     string
	Status  int
	Message string // the answer's "error" field, or the start of its body
}

func (e *apiError) Error() string {
	return fmt.Sprintf("sidecar answered %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

func (e *apiError) ExitCode() int {
	switch e.Status {
	case http.StatusConflict:
		return exitConflict
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return exitInvalid
	default:
		return exitError
	}
}

// isStatus reports whether err is an answer of the sidecar with status code.
func isStatus(err error, code int) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.Status == code
}

// networkError is a request that got no (complete) answer: the sidecar is
// unreachable, the connection broke or the request timed out. Exit code 4.
type networkError struct{ err error }

func (e networkError) Error() string { return "sidecar unreachable: " + e.err.Error() }
func (e networkError) Unwrap() error { return e.err }
func (e networkError) ExitCode() int { return exitIO }

// invalidError is a request found invalid before it is sent. Exit code 5.
type invalidError struct{ err error }

func (e invalidError) Error() string { return e.err.Error() }
func (e invalidError) Unwrap() error { return e.err }
func (e invalidError) ExitCode() int { return exitInvalid }

// do sends a request to path (relative to the base URL) and returns the
// body of a 2xx answer; other answers are *apiError.
func (a *sidecarAPI) do(ctx context.Context, method, path string, query url.Values, body any) ([]byte, error) {
	u := a.base.JoinPath(path)
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, networkError{err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, networkError{fmt.Errorf("%s %q: read answer: %w", method, u, err)}
	}
	if resp.StatusCode/100 != 2 {
		return nil, &apiError{Method: method, URL: u.String(), Status: resp.StatusCode, Message: errorMessage(b)}
	}
	return b, nil
}

// errorMessage extracts the API's {"error": "..."} or else the first line
// of a body.
func errorMessage(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	s, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
	if r := []rune(s); len(r) > 200 {
		s = string(r[:197]) + "..."
	}
	if s == "" {
		s = "(empty answer)"
	}
	return s
}

// passJSON writes an answer of the API as indented JSON: -o json shows
// what the API says, unchanged but for the layout.
func passJSON(g *globalFlags, body []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(body), "", "  "); err != nil {
		return fmt.Errorf("sidecar answer is not JSON: %w", err)
	}
	buf.WriteByte('\n')
	if _, err := buf.WriteTo(g.stdout); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// decode unmarshals an answer for text output.
func decode(body []byte, what string, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decode %s: the answer is not what a tailguard sidecar sends (check --sidecar.url): %w", what, err)
	}
	return nil
}

// get fetches path and either passes it through (-o json) or decodes it
// into v and calls text.
func get(ctx context.Context, g *globalFlags, sf *sidecarFlags, path, what string, v any, text func(io.Writer) error) error {
	api, err := sf.api()
	if err != nil {
		return err
	}
	body, err := api.do(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return err
	}
	if g.json() {
		return passJSON(g, body)
	}
	if err := decode(body, what, v); err != nil {
		return err
	}
	return text(g.stdout)
}

func incidentsCmd(ctx context.Context, g *globalFlags, sf *sidecarFlags) error {
	var list []controller.IncidentSummary
	return get(ctx, g, sf, "/api/v1/incidents", "incidents", &list, func(w io.Writer) error {
		if len(list) == 0 {
			_, err := fmt.Fprintln(w, "no incidents")
			return err
		}
		return controller.RenderIncidents(w, list)
	})
}

func explainCmd(ctx context.Context, g *globalFlags, sf *sidecarFlags, id string) error {
	var e controller.Explanation
	err := get(ctx, g, sf, "/api/v1/incidents/"+url.PathEscape(id), "incident", &e, func(w io.Writer) error {
		return controller.RenderExplanation(w, e)
	})
	if isStatus(err, http.StatusNotFound) {
		return fmt.Errorf("incident %q not found (see tailguardctl incidents): %w", id, err)
	}
	return err
}

func planCmd(ctx context.Context, g *globalFlags, sf *sidecarFlags, incident string, pending bool) error {
	api, err := sf.api()
	if err != nil {
		return err
	}
	body, err := api.do(ctx, http.MethodGet, "/api/v1/plans", nil, nil)
	if err != nil {
		return err
	}
	// Filter on the raw answers, so that -o json passes them unchanged.
	var raw []json.RawMessage
	if err := decode(body, "plans", &raw); err != nil {
		return err
	}
	kept := []json.RawMessage{}
	var plans []controller.Plan
	for _, r := range raw {
		var p controller.Plan
		if err := decode(r, "plan", &p); err != nil {
			return err
		}
		if (incident != "" && p.IncidentID != incident) || (pending && p.Status != controller.PlanPending) {
			continue
		}
		kept = append(kept, r)
		plans = append(plans, p)
	}
	if g.json() {
		b, err := json.Marshal(kept)
		if err != nil {
			return fmt.Errorf("encode plans: %w", err)
		}
		return passJSON(g, b)
	}
	// The API lists pending plans first; keep that order whatever the
	// sidecar's version.
	slices.SortStableFunc(plans, func(a, b controller.Plan) int {
		return boolRank(a.Status != controller.PlanPending) - boolRank(b.Status != controller.PlanPending)
	})
	if len(plans) == 0 {
		_, err := fmt.Fprintln(g.stdout, "no plans")
		return err
	}
	return controller.RenderPlans(g.stdout, plans)
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

func approveCmd(ctx context.Context, g *globalFlags, sf *sidecarFlags, id, plan, reason string) error {
	if name, ok := strings.CutPrefix(g.actor, flags.ActorOperatorPrefix); !ok || name == "" {
		return usagef(`approve: --actor must be "%s<name>", got %q: plans are approved by people`, flags.ActorOperatorPrefix, g.actor)
	}
	if strings.TrimSpace(reason) == "" {
		return usagef("approve: --reason must not be empty")
	}
	api, err := sf.api()
	if err != nil {
		return err
	}
	incident := id
	if plan == "" {
		// The argument may name a plan rather than an incident.
		body, err := api.do(ctx, http.MethodGet, "/api/v1/plans", nil, nil)
		if err != nil {
			return err
		}
		var plans []controller.Plan
		if err := decode(body, "plans", &plans); err != nil {
			return err
		}
		for _, p := range plans {
			if p.ID == id {
				incident, plan = p.IncidentID, p.ID
			}
		}
	}
	req := struct {
		Approver string `json:"approver"`
		Plan     string `json:"plan,omitempty"`
		Reason   string `json:"reason"`
	}{g.actor, plan, reason}
	body, err := api.do(ctx, http.MethodPost, "/api/v1/incidents/"+url.PathEscape(incident)+"/approve", nil, req)
	switch {
	case isStatus(err, http.StatusNotFound):
		return fmt.Errorf("approve %s: nothing to approve (see tailguardctl plan --pending): %w", id, err)
	case isStatus(err, http.StatusConflict):
		return fmt.Errorf("approve %s: refused, nothing was applied: %w", id, err)
	case err != nil:
		return err
	}
	if g.json() {
		return passJSON(g, body)
	}
	var d controller.Decision
	if err := decode(body, "decision", &d); err != nil {
		return err
	}
	if d.Change != nil {
		plan = controller.StepOf(d.Change.IdempotencyKey)
	}
	fmt.Fprintf(g.stdout, "approved plan %s of incident %s as %s; the sidecar applied:\n", plan, incident, g.actor)
	return controller.RenderDecision(g.stdout, d)
}

// declareFlags are the declare command's flags.
type declareFlags struct {
	file      string
	component string
	from      string
	to        string
	scope     map[string]string
	name      string
	time      string
	reason    string
}

// manifest builds the manifest to declare from the flags or the file.
func (d *declareFlags) manifest(g *globalFlags) (changes.Manifest, error) {
	var m changes.Manifest
	single := d.component != "" || d.from != "" || d.to != "" || len(d.scope) > 0
	switch {
	case d.file != "" && single:
		return m, usagef("declare: give either -f or --component/--from/--to/--scope, not both")
	case d.file == "" && (d.component == "" || d.to == ""):
		return m, usagef("declare: --component and --to (or -f MANIFEST) are required")
	case d.file != "":
		b, err := os.ReadFile(d.file)
		if err != nil {
			return m, fmt.Errorf("read manifest: %w", err)
		}
		// Strict, as the sidecar decodes it; a missing time is filled in
		// below rather than refused.
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("manifest is empty")
			}
			return m, invalidError{fmt.Errorf("manifest %s: %w", d.file, err)}
		}
	default:
		m.Components = []changes.ManifestComponent{{Name: d.component, From: d.from, To: d.to, Scope: d.scope}}
	}
	if d.name != "" {
		m.Name = d.name
	}
	if d.reason != "" {
		m.Reason = d.reason
	}
	if d.time != "" {
		t, err := parseTime(d.time, g.now())
		if err != nil {
			return m, err
		}
		m.Time = t
	}
	if m.Time.IsZero() {
		m.Time = g.now()
	}
	m.Time = m.Time.UTC()
	if m.Actor == "" {
		m.Actor = g.actor
	}
	if err := m.Validate(); err != nil {
		return m, invalidError{err}
	}
	return m, nil
}

func declareCmd(ctx context.Context, g *globalFlags, sf *sidecarFlags, d *declareFlags) error {
	m, err := d.manifest(g)
	if err != nil {
		return err
	}
	api, err := sf.api()
	if err != nil {
		return err
	}
	body, err := api.do(ctx, http.MethodPost, "/api/v1/changes", nil, m)
	if err != nil {
		return fmt.Errorf("declare: %w", err)
	}
	if g.json() {
		return passJSON(g, body)
	}
	var events []changes.Event
	if err := decode(body, "declared changes", &events); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "declared %d change(s)", len(events))
	if m.Name != "" {
		fmt.Fprintf(g.stdout, " of %s", m.Name)
	}
	fmt.Fprintln(g.stdout, ":")
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tCOMPONENT\tFROM\tTO\tSCOPE\tID")
	for _, e := range events {
		scope := "-"
		if len(e.Scope) > 0 {
			var parts []string
			for _, k := range sortedKeys(e.Scope) {
				parts = append(parts, k+"="+e.Scope[k])
			}
			scope = strings.Join(parts, ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.UTC().Format(time.RFC3339), e.Component, orDashString(e.From), e.To, scope, e.ID)
	}
	return tw.Flush()
}

func orDashString(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// evaluation is the part of a cycle's result (loop.Result) the text output
// shows. Values are pointers: the API sends null for NaN (no data).
type evaluation struct {
	Service     string        `json:"service"`
	At          time.Time     `json:"at"`
	Trigger     string        `json:"trigger"`
	Duration    time.Duration `json:"duration"`
	Error       string        `json:"error"`
	Observation struct {
		Assessments []struct {
			SLO       string             `json:"slo"`
			Value     *float64           `json:"value"`
			Objective *float64           `json:"objective"`
			Verdict   controller.Verdict `json:"verdict"`
			Reason    string             `json:"reason"`
			Cause     controller.Cause   `json:"cause"`
		} `json:"assessments"`
	} `json:"observation"`
	Decision controller.Decision `json:"decision"`
}

func evaluateCmd(ctx context.Context, g *globalFlags, sf *sidecarFlags, service string) error {
	api, err := sf.api()
	if err != nil {
		return err
	}
	body, err := api.do(ctx, http.MethodPost, "/api/v1/evaluate", url.Values{"service": {service}}, nil)
	if isStatus(err, http.StatusNotFound) {
		return fmt.Errorf("service %q not found in the sidecar's configuration: %w", service, err)
	}
	if err != nil {
		return err
	}
	var ev evaluation
	if err := decode(body, "cycle result", &ev); err != nil {
		return err
	}
	if g.json() {
		err = passJSON(g, body)
	} else {
		err = renderEvaluation(g.stdout, ev)
	}
	if err != nil {
		return err
	}
	if ev.Error != "" {
		return reportedError{fmt.Errorf("cycle of %s failed: %s", service, ev.Error)}
	}
	return nil
}

func renderEvaluation(w io.Writer, ev evaluation) error {
	fmt.Fprintf(w, "service %s evaluated at %s (trigger %s, took %s)\n", ev.Service, ev.At.UTC().Format(time.RFC3339),
		ev.Trigger, ev.Duration.Round(time.Millisecond))
	if ev.Error != "" {
		fmt.Fprintf(w, "cycle failed: %s\n", ev.Error)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLO\tVALUE\tOBJECTIVE\tVERDICT\tCAUSE\tREASON")
	for _, a := range ev.Observation.Assessments {
		cause := "-"
		if a.Cause.Kind != "" {
			cause = a.Cause.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.SLO, number(a.Value), number(a.Objective), a.Verdict, cause, orDashString(a.Reason))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprint(w, "decision: ")
	return controller.RenderDecision(w, ev.Decision)
}

func number(v *float64) string {
	if v == nil {
		return "no data"
	}
	return fmt.Sprintf("%.4g", *v)
}
