package sidecar

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/tailguard/tailguard/controller"
	"github.com/tailguard/tailguard/controller/policy"
	"github.com/tailguard/tailguard/detector"
	"github.com/tailguard/tailguard/detector/changes"
	"github.com/tailguard/tailguard/flags"
	"github.com/tailguard/tailguard/flags/kube"
	"github.com/tailguard/tailguard/internal/leader"
	"github.com/tailguard/tailguard/loop"
	"github.com/tailguard/tailguard/querycost"
	"github.com/tailguard/tailguard/status"
)

// maxChangeBody bounds a posted change declaration.
const maxChangeBody = 256 << 10

// Handler returns the sidecar's HTTP API:
//
//	GET  /                                 status page
//	GET  /metrics                          the sidecar's metrics
//	GET  /-/healthy, /-/ready              probes (ready once Prometheus answered)
//	POST /-/reload                         reload the configuration
//	POST /api/v1/alerts                    Alertmanager webhook (payload v4)
//	POST /api/v1/changes                   declare a change (upgrade manifest, JSON or YAML)
//	GET  /api/v1/changes                   declared and discovered changes of the last cycles
//	GET  /api/v1/findings                  the last cycle's findings per service
//	GET  /api/v1/incidents                 incidents, with the controller's record
//	GET  /api/v1/incidents/{id}            one incident explained
//	POST /api/v1/incidents/{id}/approve    approve the incident's pending plan (propose mode):
//	                                       {"approver": "operator:<name>", "plan": optional, "reason": optional}
//	GET  /api/v1/plans                     plans
//	POST /api/v1/evaluate?service=NAME     run a cycle of a service now
func (d *Daemon) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.Gatherer(), promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("GET /-/healthy", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "tailguard is healthy.") })
	mux.HandleFunc("GET /-/ready", func(w http.ResponseWriter, _ *http.Request) {
		if why := d.notReady(); why != "" {
			http.Error(w, "tailguard is not ready: "+why+".", http.StatusServiceUnavailable)
			return
		}
		if why := d.degraded(); why != "" {
			fmt.Fprintln(w, "tailguard is ready, degraded: "+why+".")
			return
		}
		fmt.Fprintln(w, "tailguard is ready.")
	})
	reload := func(w http.ResponseWriter, _ *http.Request) {
		if err := d.Reload(); err != nil {
			http.Error(w, "reload failed, previous configuration kept: "+err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "configuration reloaded")
	}
	mux.HandleFunc("POST /-/reload", reload)
	mux.HandleFunc("PUT /-/reload", reload)
	mux.Handle("/api/v1/alerts", d.receiver)
	mux.HandleFunc("POST /api/v1/changes", d.postChange)
	mux.HandleFunc("GET /api/v1/changes", d.getChanges)
	mux.HandleFunc("GET /api/v1/findings", d.getFindings)
	mux.HandleFunc("GET /api/v1/incidents", d.getIncidents)
	mux.HandleFunc("GET /api/v1/incidents/{id}", d.getIncident)
	mux.HandleFunc("POST /api/v1/incidents/{id}/approve", d.approve)
	mux.HandleFunc("GET /api/v1/plans", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, d.Controller().Plans()) })
	mux.HandleFunc("POST /api/v1/evaluate", d.evaluate)
	mux.HandleFunc("GET /{$}", d.statusPage)
	return mux
}

type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		http.Error(w, "encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = buf.WriteTo(w)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, apiError{Error: err.Error()})
}

// postChange accepts an upgrade manifest (JSON or YAML; JSON is YAML):
//
//	{"name": "vendor-2026.11", "time": "2026-11-23T10:00:00Z", "actor": "ci",
//	 "components": [{"name": "dten-gateway", "from": "2.3", "to": "3.0"}]}
//
// A missing time means now.
func (d *Daemon) postChange(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxChangeBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("read body: %w", err))
		return
	}
	m, err := parseManifest(body, d.now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if err := d.Declare(m, "api:"+r.RemoteAddr); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	d.log.Info("change declared", "name", m.Name, "components", len(m.Components), "time", m.Time)
	writeJSON(w, http.StatusAccepted, m.Events("api"))
}

func parseManifest(body []byte, now time.Time) (changes.Manifest, error) {
	// A manifest without a time is stamped now: add the key to the
	// top-level mapping of the document (JSON is YAML), then decode
	// strictly. A body that is not a mapping is left to the decoder's
	// error.
	var doc yaml.Node
	if yaml.Unmarshal(body, &doc) == nil && len(doc.Content) == 1 && doc.Content[0].Kind == yaml.MappingNode {
		top := doc.Content[0]
		stamped := false
		for i := 0; i+1 < len(top.Content); i += 2 {
			if top.Content[i].Value == "time" {
				stamped = true
			}
		}
		if !stamped {
			top.Content = append(top.Content,
				&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "time"},
				&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!timestamp", Value: now.UTC().Format(time.RFC3339Nano)})
			if b, err := yaml.Marshal(&doc); err == nil {
				body = b
			}
		}
	}
	return changes.ParseManifest(bytes.NewReader(body))
}

func (d *Daemon) getChanges(w http.ResponseWriter, _ *http.Request) {
	seen := map[string]bool{}
	out := []changes.Event{}
	for _, res := range d.Results() {
		for _, e := range res.Changes {
			if !seen[e.ID] {
				seen[e.ID] = true
				out = append(out, e)
			}
		}
	}
	slices.SortFunc(out, func(a, b changes.Event) int { return a.Time.Compare(b.Time) })
	writeJSON(w, http.StatusOK, out)
}

// findingsView is one service's last cycle, for GET /api/v1/findings.
type findingsView struct {
	Service string    `json:"service"`
	At      time.Time `json:"at"`
	Error   string    `json:"error,omitempty"`
	// Prometheus says whether the metrics backend answers; while it does
	// not, every SLO is Inconclusive with that reason.
	Prometheus  backendStatus           `json:"prometheus"`
	Assessments []controller.Assessment `json:"assessments"`
	Findings    []detector.Finding      `json:"findings"`
	Incidents   []detector.Incident     `json:"incidents"`
	// Leadership is who decides for the service (kubernetes configured).
	Leadership *leader.Status `json:"leadership,omitempty"`
}

func (d *Daemon) getFindings(w http.ResponseWriter, _ *http.Request) {
	out := []findingsView{}
	backend := d.health.status()
	rt := d.rt.Load()
	for _, res := range d.Results() {
		v := findingsView{Service: res.Service, At: res.At, Error: res.Error, Prometheus: backend, Assessments: res.Observation.Assessments,
			Findings: []detector.Finding{}, Incidents: []detector.Incident{}}
		if res.Report != nil {
			v.Findings, v.Incidents = res.Report.Findings, res.Report.Incidents
		}
		for _, e := range rt.electors {
			if e.Service() == res.Service {
				st := e.Status()
				v.Leadership = &st
			}
		}
		if blind := blindReason(backend, res); blind != "" {
			v.Assessments = nil
			if svc, ok := rt.cfg.Policy.Service(res.Service); ok {
				for _, slo := range svc.SLOs {
					v.Assessments = append(v.Assessments, controller.Assessment{SLO: slo.Name, Value: math.NaN(),
						Verdict: controller.VerdictInconclusive, Reason: blind})
				}
			}
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, sanitize(out))
}

// blindReason says why a service's last cycle saw nothing, or "" when it
// did: its cycle failed while Prometheus was not answering.
func blindReason(b backendStatus, res loop.Result) string {
	if b.Up || res.Error == "" {
		return ""
	}
	msg := "Prometheus unreachable"
	if !b.Since.IsZero() {
		msg += " since " + b.Since.UTC().Format(time.RFC3339)
	}
	if b.Error != "" {
		msg += ": " + b.Error
	}
	return msg + "; no action is taken"
}

func (d *Daemon) getIncidents(w http.ResponseWriter, _ *http.Request) {
	incs := d.Controller().Incidents()
	if incs == nil {
		incs = []controller.IncidentSummary{}
	}
	writeJSON(w, http.StatusOK, incs)
}

func (d *Daemon) getIncident(w http.ResponseWriter, r *http.Request) {
	e, err := d.Controller().Explain(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusNotFound, err)
		return
	}
	writeJSON(w, http.StatusOK, sanitize(e))
}

// approveRequest is the body of POST /api/v1/incidents/{id}/approve.
type approveRequest struct {
	// Approver is who approves, e.g. "operator:alice". Required.
	Approver string `json:"approver"`
	// Plan selects a plan; default the incident's only pending plan.
	Plan string `json:"plan,omitempty"`
	// Reason says why the plan is approved. Optional; it is logged with
	// the approval (the flag journal records the plan's own reason and the
	// approver).
	Reason string `json:"reason,omitempty"`
}

func (d *Daemon) approve(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var req approveRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("decode body: %w", err))
		return
	}
	if !strings.HasPrefix(req.Approver, "operator:") || len(req.Approver) == len("operator:") {
		writeError(w, http.StatusBadRequest, errors.New(`approver: must be "operator:<name>"`))
		return
	}
	ctrl := d.Controller()
	if rt := d.rt.Load(); rt.kubeBackend != nil && !d.leadsPlanOf(rt, id) {
		// Another replica leads: record the approval in the cluster; the
		// leader, which has the plan, applies it in its next cycle.
		a := kube.Approval{Incident: id, Plan: req.Plan, Approver: req.Approver, Reason: req.Reason, At: d.now().UTC()}
		if err := rt.kubeBackend.RecordApproval(r.Context(), a); err != nil {
			writeError(w, http.StatusServiceUnavailable, err)
			return
		}
		d.log.Info("approval recorded in the cluster for the leader", "incident", id, "approver", req.Approver)
		writeJSON(w, http.StatusAccepted, map[string]any{"recorded": a,
			"note": "this replica does not lead the incident's service: the approval is recorded in the cluster and the leader applies it to the incident's pending plan in its next cycle"})
		return
	}
	planID := req.Plan
	if planID == "" {
		var pending []string
		for _, p := range ctrl.Plans() {
			if p.IncidentID == id && p.Status == controller.PlanPending {
				pending = append(pending, p.ID)
			}
		}
		switch len(pending) {
		case 0:
			writeError(w, http.StatusNotFound, fmt.Errorf("incident %s has no pending plan", id))
			return
		case 1:
			planID = pending[0]
		default:
			writeError(w, http.StatusConflict, fmt.Errorf("incident %s has %d pending plans; name one: %s", id, len(pending), strings.Join(pending, ", ")))
			return
		}
	}
	dec2, err := ctrl.Approve(r.Context(), planID, req.Approver, d.now())
	switch {
	case errors.Is(err, controller.ErrUnknownPlan):
		writeError(w, http.StatusNotFound, err)
	case errors.Is(err, controller.ErrPlanNotPending), errors.Is(err, controller.ErrConflict):
		writeError(w, http.StatusConflict, err)
	case err != nil:
		writeError(w, http.StatusInternalServerError, err)
	default:
		d.log.Info("plan approved", "plan", planID, "incident", id, "approver", req.Approver, "reason", req.Reason)
		writeJSON(w, http.StatusOK, dec2)
	}
}

// leadsPlanOf reports whether this replica leads the service of an
// incident it holds a plan for.
func (d *Daemon) leadsPlanOf(rt *runtime, incident string) bool {
	for _, p := range d.Controller().Plans() {
		if p.IncidentID != incident {
			continue
		}
		for _, e := range rt.electors {
			if e.Service() == p.Service && e.Leading() {
				return true
			}
		}
	}
	return false
}

func (d *Daemon) evaluate(w http.ResponseWriter, r *http.Request) {
	svc := r.URL.Query().Get("service")
	if svc == "" {
		writeError(w, http.StatusBadRequest, errors.New("service: query parameter required"))
		return
	}
	res, err := d.Evaluate(r.Context(), svc, "manual")
	if err != nil && res.Service == "" {
		writeError(w, http.StatusNotFound, err)
		return
	}
	writeJSON(w, http.StatusOK, sanitize(res))
}

// sanitize replaces NaN and ±Inf, which JSON cannot carry, with null by a
// round trip through a NaN-tolerant encoding.
func sanitize(v any) any {
	b, err := json.Marshal(v)
	if err == nil {
		return json.RawMessage(b)
	}
	// encoding/json refuses NaN: fall back to a generic walk.
	var buf bytes.Buffer
	if err := encodeLenient(&buf, v); err != nil {
		return apiError{Error: "encode: " + err.Error()}
	}
	return json.RawMessage(buf.Bytes())
}

func (d *Daemon) statusPage(w http.ResponseWriter, r *http.Request) {
	v := d.statusView(r.Context())
	var buf bytes.Buffer
	if err := d.renderer.Render(&buf, v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = buf.WriteTo(w)
}

// statusView builds the status page from the last cycles, the controller's
// incidents and the flag file.
func (d *Daemon) statusView(ctx context.Context) status.View {
	rt := d.rt.Load()
	now := d.now()
	v := status.View{Version: d.opts.Version, Generated: now, Ready: d.Ready()}
	if b := d.health.status(); !b.Up && d.Ready() {
		v.Blind = "Prometheus is not answering"
		if !b.Since.IsZero() {
			v.Blind += " since " + b.Since.UTC().Format("2006-01-02 15:04:05 UTC")
		}
		if b.Error != "" {
			v.Blind += " (" + b.Error + ")"
		}
		v.Blind += ": tailguard sees nothing and takes no action until it answers again."
	}
	if rt.cfg.Kubernetes != nil && !d.kubeReady() {
		st := d.kubeHealth.status()
		msg := "The Kubernetes API server is not answering"
		if !st.Since.IsZero() {
			msg += " since " + st.Since.UTC().Format("2006-01-02 15:04:05 UTC")
		}
		if st.Error != "" {
			msg += " (" + st.Error + ")"
		}
		msg += ": tailguard reads and writes no flag until it answers again."
		v.Blind = strings.TrimSpace(v.Blind + " " + msg)
	}
	if p := rt.access.problem(); p != "" {
		v.Blind = strings.TrimSpace(v.Blind + " Cannot act: " + p + ".")
	}
	for _, e := range rt.electors {
		st := e.Status()
		l := status.Leader{Service: st.Service, Leader: st.Leader, Self: st.Leading}
		if st.Leading {
			l.Detail = "since " + st.Since.UTC().Format("15:04:05 UTC")
		} else {
			l.Detail = "this replica is " + st.Identity
		}
		v.Leaders = append(v.Leaders, l)
	}
	var modes []string
	results := map[string]loop.Result{}
	for _, res := range d.Results() {
		results[res.Service] = res
		if res.Error == "" && res.At.After(v.LastEvaluation) {
			v.LastEvaluation = res.At
		}
	}
	for _, svc := range rt.cfg.Policy.Services {
		if !slices.Contains(modes, string(svc.Mode)) {
			modes = append(modes, string(svc.Mode))
		}
		res := results[svc.Name]
		for _, slo := range svc.SLOs {
			s := status.SLO{Service: svc.Name, Name: slo.Name, Objective: objectiveText(slo), Current: "–", State: status.StateUnknown}
			for _, a := range res.Observation.Assessments {
				if a.SLO != slo.Name {
					continue
				}
				s.Current = formatSLI(slo.Signal, a.Value)
				s.State = sloState(slo, a)
				s.Detail = string(a.Verdict)
				if a.Reason != "" {
					s.Detail += ": " + a.Reason
				}
			}
			if res.Error != "" {
				s.Detail = "last cycle failed: " + res.Error
			}
			if blind := blindReason(d.health.status(), res); blind != "" {
				s.Current, s.State, s.Detail = "–", status.StateUnknown, "inconclusive: "+blind
			}
			v.SLOs = append(v.SLOs, s)
		}
		if !res.At.IsZero() {
			v.QueryCost = append(v.QueryCost, costRows(res)...)
		}
		for _, e := range res.Changes {
			v.Changes = append(v.Changes, status.Change{Time: e.Time, Kind: string(e.Kind), Subject: e.Component, Detail: strings.TrimSpace(e.From + " → " + e.To)})
		}
	}
	v.Mode = strings.Join(modes, ", ")
	v.Flags = d.flagRows(ctx, rt)
	ctrl := rt.controller
	for _, sum := range ctrl.Incidents() {
		if !sum.ResolvedAt.IsZero() && now.Sub(sum.ResolvedAt) > 24*time.Hour {
			continue
		}
		e, err := ctrl.Explain(sum.ID)
		if err != nil || e.Incident == nil {
			continue
		}
		v.Incidents = append(v.Incidents, d.incidentView(ctx, rt, e, results[sum.Service], now))
	}
	return v
}

// costRows lists a cycle's query cost: the total, then each signal.
func costRows(res loop.Result) []status.QueryCost {
	row := func(signal string, c querycost.Cost) status.QueryCost {
		return status.QueryCost{Service: res.Service, Signal: signal, Queries: c.Queries, Errors: c.Errors,
			Series: c.Series, Samples: c.Samples, QueryTime: time.Duration(c.Seconds * float64(time.Second)).Round(time.Millisecond).String()}
	}
	total := row("all", res.Cost.Total)
	total.CycleTime = res.Duration.Round(time.Millisecond).String()
	out := []status.QueryCost{total}
	for _, s := range res.Cost.Signals() {
		out = append(out, row(s, res.Cost.BySignal[s]))
	}
	return out
}

func (d *Daemon) flagRows(ctx context.Context, rt *runtime) []status.Flag {
	snap, err := rt.store.Load(ctx)
	if err != nil {
		// An invalid flag is served by the services' providers in its last
		// good version (or as PARSE_ERROR); tailguard writes nothing until
		// the file is valid again.
		var ve *flags.ValidationError
		if !errors.As(err, &ve) {
			return []status.Flag{{Key: rt.cfg.FlagFile, State: "unreadable: " + err.Error()}}
		}
		rows := []status.Flag{{Key: rt.cfg.FlagFile, State: "invalid: tailguard writes no flag until it is fixed"}}
		for _, p := range ve.Problems {
			key := p.Flag
			if key == "" {
				key = rt.cfg.FlagFile
			}
			rows = append(rows, status.Flag{Key: key, State: "invalid: " + p.Message})
		}
		return rows
	}
	var out []status.Flag
	for _, svc := range rt.cfg.Policy.Services {
		fs, err := controller.FlagStateOf(snap.Doc, svc.Flags.Strategy.Key, svc.Flags.Constants.Key, snap.Revision)
		row := status.Flag{Key: svc.Flags.Strategy.Key, Revision: fmt.Sprint(snap.Revision)}
		if err != nil {
			row.State = "not understood: " + err.Error()
			out = append(out, row)
			continue
		}
		if f, err := snap.Doc.Flag(svc.Flags.Strategy.Key); err == nil {
			row.State = string(f.State)
		}
		row.Default = fs.DefaultVariant
		if len(fs.Rollout) == 0 {
			row.Rollout = fs.DefaultVariant + " 100%"
		} else {
			var parts []string
			for _, vw := range fs.Rollout {
				parts = append(parts, fmt.Sprintf("%s %d%%", vw.Variant, fs.Percent(vw.Variant)))
			}
			row.Rollout = strings.Join(parts, ", ")
		}
		if c, ok := fs.ConstantsFor(svc.Flags.Strategy.NewVariant); ok {
			row.Rollout += " · " + svc.Flags.Strategy.NewVariant + ": " + c.String()
		}
		out = append(out, row)
	}
	return out
}

func (d *Daemon) incidentView(ctx context.Context, rt *runtime, e controller.Explanation, res loop.Result, now time.Time) status.Incident {
	inc := e.Incident
	iv := status.Incident{ID: inc.ID, Service: inc.Service, Opened: inc.OpenedAt, State: string(inc.Phase), Cause: inc.Cause.String()}
	if inc.Cause.Confidence > 0 {
		iv.Confidence = fmt.Sprintf("confidence %.2f", inc.Cause.Confidence)
	}
	if inc.Cause.Evidence != "" {
		iv.Evidence = append(iv.Evidence, inc.Cause.Evidence)
	}
	if res.Report != nil {
		for _, di := range res.Report.Incidents {
			if di.ID == inc.ID || (inc.Cause.IncidentID != "" && di.ID == inc.Cause.IncidentID) {
				iv.Effect = fmt.Sprintf("largest effect ×%.2f", di.MaxEffect)
				iv.Hypotheses = hypotheses(res.Report, di)
			}
		}
	}
	for _, n := range inc.Notes {
		iv.Evidence = append(iv.Evidence, n.At.UTC().Format("15:04")+" "+n.Text)
	}
	if len(iv.Evidence) > 8 {
		iv.Evidence = iv.Evidence[len(iv.Evidence)-8:]
	}
	var markers []status.Marker
	for _, c := range res.Changes {
		markers = append(markers, status.Marker{T: c.Time, Label: c.Component, Kind: "change"})
	}
	for _, a := range inc.Actions {
		act := status.Action{Time: a.At, Rung: string(a.Rung), Summary: a.Reason, Result: string(a.Status)}
		for _, p := range a.Expected {
			act.Expected += fmt.Sprintf("%s %s ", p.SLO, formatFloat(p.Expected))
		}
		if a.Verification != nil {
			act.Observed = fmt.Sprintf("%s (progress %.0f%%)", a.Verification.Outcome, 100*a.Verification.Progress)
		}
		iv.Actions = append(iv.Actions, act)
		markers = append(markers, status.Marker{T: a.At, Label: string(a.Rung), Kind: "action"})
	}
	iv.Chart = d.chart(ctx, rt, inc.Service, inc.OpenedAt, now, markers)
	return iv
}

// hypotheses lists the competing explanations of the detector incident's
// strongest finding, best first: every scored change and "none of the
// known changes".
func hypotheses(rep *detector.Report, di detector.Incident) []status.Hypothesis {
	var best *detector.Finding
	for i := range rep.Findings {
		f := &rep.Findings[i]
		if !slices.Contains(di.Findings, f.ID) || f.Effect == nil {
			continue
		}
		if best == nil || f.Effect.Estimate > best.Effect.Estimate {
			best = f
		}
	}
	if best == nil {
		return nil
	}
	type scored struct {
		h     status.Hypothesis
		score float64
	}
	var hs []scored
	for _, c := range best.Causes {
		hs = append(hs, scored{status.Hypothesis{Name: c.Change.String(), Score: fmt.Sprintf("%.2f", c.Score), Evidence: strings.Join(c.Evidence, "; ")}, c.Score})
	}
	if u := best.Unexplained; u != nil {
		hs = append(hs, scored{status.Hypothesis{Name: "none of the known changes", Score: fmt.Sprintf("%.2f", u.Score), Evidence: strings.Join(u.Evidence, "; ")}, u.Score})
	}
	slices.SortStableFunc(hs, func(a, b scored) int { return cmp.Compare(b.score, a.score) })
	out := make([]status.Hypothesis, len(hs))
	for i, h := range hs {
		out[i] = h.h
	}
	return out
}

func formatFloat(f float64) string {
	if math.IsNaN(f) {
		return "–"
	}
	return fmt.Sprintf("%.3g", f)
}

// chart queries the service's first latency SLO's SLI around the incident.
func (d *Daemon) chart(ctx context.Context, rt *runtime, service string, opened, now time.Time, markers []status.Marker) *status.Chart {
	svc, ok := rt.cfg.Policy.Service(service)
	if !ok {
		return nil
	}
	var sc ServiceConfig
	for _, s := range rt.cfg.Services {
		if s.Name == service {
			sc = s
		}
	}
	for _, slo := range svc.SLOs {
		if slo.Signal != policy.SignalLatency {
			continue
		}
		q, err := loop.SLIQuery(sc.SLI, service, slo)
		if err != nil {
			return nil
		}
		start := opened.Add(-time.Hour)
		if len(markers) > 0 && markers[0].T.Add(-30*time.Minute).Before(start) {
			start = markers[0].T.Add(-30 * time.Minute)
		}
		step := max(now.Sub(start)/120, time.Second)
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		val, _, err := rt.querier.QueryRange(qctx, q, v1.Range{Start: start, End: now, Step: step})
		c := &status.Chart{Title: slo.Name, Unit: "seconds", Threshold: slo.Value(), HasThreshold: true, Markers: markers}
		if m, ok := val.(model.Matrix); err == nil && ok && len(m) > 0 {
			s := status.Series{Name: fmt.Sprintf("p%g %s", 100*quantileOf(slo), slo.Name)}
			for _, p := range m[0].Values {
				s.Points = append(s.Points, status.Point{T: p.Timestamp.Time(), V: float64(p.Value)})
			}
			c.Series = append(c.Series, s)
		}
		return c
	}
	return nil
}

func quantileOf(slo policy.SLO) float64 {
	if slo.Objective.Quantile == 0 {
		return policy.DefaultQuantile
	}
	return slo.Objective.Quantile
}

func objectiveText(slo policy.SLO) string {
	if slo.Signal == policy.SignalLatency {
		return fmt.Sprintf("p%g ≤ %s over %s", 100*quantileOf(slo), slo.Objective.Threshold, slo.Objective.Window)
	}
	return fmt.Sprintf("%s ≤ %.2f%% over %s", slo.Signal, 100*slo.Objective.Ratio, slo.Objective.Window)
}

func formatSLI(sig policy.Signal, v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "no data"
	}
	if sig == policy.SignalLatency {
		return time.Duration(v * float64(time.Second)).Round(time.Millisecond).String()
	}
	return fmt.Sprintf("%.2f%%", 100*v)
}

func sloState(slo policy.SLO, a controller.Assessment) string {
	switch {
	case a.Verdict == controller.VerdictInconclusive || math.IsNaN(a.Value):
		return status.StateUnknown
	case a.Value > slo.Value():
		return status.StateBreaching
	case a.HasForecast && a.Forecast > slo.Value():
		return status.StateAtRisk
	}
	return status.StateOK
}
