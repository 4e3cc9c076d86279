//go:build e2e && linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/dashboards"
	"github.com/tailguard/tailguard/flags"
)

// The SLO of /checkout and the queries that watch it from outside.
const (
	sloSeconds         = 0.4
	checkoutP99Classic = `histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{job="shop",endpoint="/checkout"}[20s])))`
	alertName          = "TailLatencyBudgetBurn"
)

// The parts of the sidecar's API answers the test reads.
type findingsView struct {
	Service     string `json:"service"`
	Error       string `json:"error"`
	Assessments []struct {
		SLO     string `json:"slo"`
		Verdict string `json:"verdict"`
		Reason  string `json:"reason"`
	} `json:"assessments"`
	Findings []struct {
		ID          string            `json:"id"`
		Signal      string            `json:"signal"`
		Slice       map[string]string `json:"slice"`
		Verdict     string            `json:"verdict"`
		Reason      string            `json:"reason"`
		Attribution struct {
			Status string `json:"status"`
			Cause  string `json:"cause"`
		} `json:"attribution"`
		Causes []struct {
			Change struct {
				ID        string `json:"id"`
				Kind      string `json:"kind"`
				Component string `json:"component"`
				Actor     string `json:"actor"`
			} `json:"change"`
			Score float64 `json:"score"`
		} `json:"causes"`
	} `json:"findings"`
	Incidents []struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		Cause  *struct {
			Component string `json:"component"`
		} `json:"cause"`
	} `json:"incidents"`
}

type incidentSummary struct {
	ID    string `json:"id"`
	Phase string `json:"phase"`
	Rung  string `json:"rung"`
	Cause struct {
		Kind       string  `json:"kind"`
		FlagKey    string  `json:"flagKey"`
		Variant    string  `json:"variant"`
		Confidence float64 `json:"confidence"`
	} `json:"cause"`
	Actions int `json:"actions"`
}

type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

type amAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
	EndsAt      time.Time         `json:"endsAt"`
	Fingerprint string            `json:"fingerprint"`
	Status      struct {
		State string `json:"state"`
	} `json:"status"`
	GeneratorURL string `json:"generatorURL"`
}

// TestEndToEnd runs the demo story against real servers: a baseline under
// the legacy strategy; an operator switches backoff-strategy to
// decorrelated with large constants; Prometheus sees /checkout's p99 rise
// and fires the shipped burn-rate alert; Alertmanager routes it to the
// sidecar; the sidecar attributes the regression to the flag change and
// acts on the flag file (first failing while the flag directory is
// read-only, then succeeding); shopd follows the flag; the p99 recovers.
// Then the status page, the dashboards, a malformed and a duplicate
// webhook payload, and Prometheus going away and coming back.
func TestEndToEnd(t *testing.T) {
	r := newRun(t)
	t.Cleanup(r.saveArtifacts)
	t.Cleanup(r.dumpLogs)
	must := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow()
		}
	}

	must("setup", func(t *testing.T) {
		r.build(t)
		r.configure(t)
		r.startAll(t)
	})

	must("baseline", func(t *testing.T) {
		// The detector's baseline is 25 s (5 steps of 5 s): let Prometheus
		// collect a little more than that before the change.
		r.eventually(t, 90*time.Second, "30 s of shop samples in Prometheus", func(ctx context.Context) error {
			v, err := r.query(ctx, `count_over_time(up{job="shop"}[1m])`)
			if err != nil {
				return err
			}
			if v < 30 {
				return fmt.Errorf("%v samples", v)
			}
			return nil
		})
		ctx := context.Background()
		p99, err := r.query(ctx, r.checkoutP99())
		if err != nil {
			t.Fatal(err)
		}
		r.logf("baseline /checkout p99 = %.3fs (SLO %.1fs)", p99, sloSeconds)
		if !(p99 < sloSeconds) {
			t.Fatalf("baseline /checkout p99 %.3fs is not under the SLO: the scenario needs a healthy baseline", p99)
		}
		if r.evaluatesRules() {
			if as := r.promAlerts(t, alertName); len(as) > 0 {
				t.Errorf("%s fires before any change: %+v", alertName, as)
			}
		}
		if ok := r.metric(t, "tailguard_cycles_total", map[string]string{"result": "ok"}); ok < 1 {
			t.Errorf("no successful sidecar cycle during the baseline")
		}
		if a := r.metric(t, "tailguard_actions_total", nil); a != 0 {
			t.Errorf("the sidecar acted during the baseline: tailguard_actions_total = %v", a)
		}
		if es := r.journal(t); len(es) != 0 {
			t.Errorf("journal has %d entries before any change", len(es))
		}
	})

	var (
		readOnly        bool
		undoReadOnly    func()
		beforeFault     []byte
		beforeJournal   []byte
		beforeNames     []string
		incidentID      string
		controllerEntry flags.Entry
	)
	must("operator switches backoff-strategy to decorrelated", func(t *testing.T) {
		out, err := exec.Command(r.tailguardctl, "--flag-file", r.flagFile, "--actor", "operator:e2e",
			"flags", "set", "backoff-strategy", "decorrelated",
			"--reason", "release 3.0: decorrelated jitter rides out payments brown-outs").CombinedOutput()
		if err != nil {
			t.Fatalf("tailguardctl flags set: %v\n%s", err, out)
		}
		r.logf("tailguardctl: %s", strings.TrimSpace(string(out)))
		es := r.journal(t)
		if len(es) != 1 || es[0].Actor != "operator:e2e" || !slices.Contains(es[0].Flags, "backoff-strategy") {
			t.Fatalf("journal after the switch: %+v", es)
		}

		// Fault: the flag directory refuses writes from now on, so the
		// sidecar's first action must fail (loudly) and be retried.
		how, undo, err := MakeReadOnly(r.flagDir)
		if err != nil {
			r.logf("SKIP: read-only flag directory fault: %v", err)
			return
		}
		var once sync.Once
		undoReadOnly = func() {
			once.Do(func() {
				if err := undo(); err != nil {
					t.Errorf("undo read-only flag directory: %v", err)
				}
			})
		}
		r.t.Cleanup(undoReadOnly)
		readOnly = true
		beforeFault, _ = r.flagFileState(t)
		beforeJournal, _ = os.ReadFile(r.flagFile + ".journal.jsonl")
		beforeNames = dirNames(t, r.flagDir)
		r.logf("flag directory made read-only by %s", how)
	})

	must("prometheus shows the p99 rise", func(t *testing.T) {
		r.eventually(t, 45*time.Second, "/checkout p99 above the SLO in Prometheus", func(ctx context.Context) error {
			v, err := r.query(ctx, r.checkoutP99())
			if err != nil {
				return err
			}
			if !(v > sloSeconds) {
				return fmt.Errorf("p99 %.3fs", v)
			}
			r.logf("/checkout p99 = %.3fs", v)
			return nil
		})
	})

	if r.evaluatesRules() {
		must("prometheus fires the shipped burn-rate alert", func(t *testing.T) {
			r.eventually(t, 60*time.Second, alertName+" firing in Prometheus", func(ctx context.Context) error {
				for _, a := range r.promAlerts(t, alertName) {
					if a.State == "firing" && a.Labels["tailguard_service"] == "shop" && a.Labels["tailguard_slo"] == "checkout-latency" {
						r.logf("%s severity=%s firing", alertName, a.Labels["severity"])
						return nil
					}
				}
				return errNotYet
			})
			// The burn rates behind it, in compressed time (1h is 30 s).
			var rates []string
			for _, w := range []string{"5m", "30m", "1h", "6h"} {
				v, err := r.query(context.Background(), fmt.Sprintf(`slo:sli_error:ratio_rate%s{slo="checkout-latency"}`, w))
				if err != nil {
					t.Fatal(err)
				}
				rates = append(rates, fmt.Sprintf("%s %.1f%%", w, 100*v))
			}
			r.logf("slow-request fraction over the scaled windows: %s (critical: 5m and 1h above 14.4%%, or 30m and 6h above 6%%; "+
				"warning: 2h and 1d above 3%%, or 6h and 3d above 1%%)", strings.Join(rates, ", "))
		})

		must("alertmanager has the alert", func(t *testing.T) {
			r.eventually(t, 30*time.Second, alertName+" active in Alertmanager", func(ctx context.Context) error {
				as, err := r.amAlerts(ctx, alertName)
				if err != nil {
					return err
				}
				for _, a := range as {
					if a.Status.State == "active" && a.Labels["tailguard_service"] == "shop" {
						return nil
					}
				}
				return fmt.Errorf("%d alerts, none active for shop", len(as))
			})
		})

		must("the sidecar received the alert", func(t *testing.T) {
			r.eventually(t, 30*time.Second, "webhook notification for "+alertName+" in the sidecar", func(ctx context.Context) error {
				if _, ok := r.logContains("tailguard", "alert="+alertName, "service=shop"); !ok {
					return fmt.Errorf("no log line for alert=%s", alertName)
				}
				fs, err := r.sidecarMetrics(ctx)
				if err != nil {
					return err
				}
				acc, _ := fs.Sum("tailguard_webhook_notifications_total", map[string]string{"result": "accepted"})
				trig, _ := fs.Sum("tailguard_alert_triggers_total", nil)
				if acc < 1 || trig < 1 {
					return fmt.Errorf("accepted notifications %v, alert triggers %v", acc, trig)
				}
				return nil
			})
		})
	} else {
		r.logf("SKIP: burn-rate alert, Alertmanager and webhook phases: %s single-node evaluates no rules (vmalert does); the sidecar's own cycles detect and act", r.backend)
	}

	must("the sidecar attributes the regression to backoff-strategy", func(t *testing.T) {
		r.eventually(t, 60*time.Second, "regressed finding attributed to backoff-strategy", func(ctx context.Context) error {
			var views []findingsView
			if err := GetJSON(ctx, "http://"+r.addrs.Tailguard+"/api/v1/findings", &views); err != nil {
				return err
			}
			for _, v := range views {
				if v.Service != "shop" {
					continue
				}
				for _, f := range v.Findings {
					if f.Signal != "checkout_latency" || f.Verdict != "regressed" || f.Slice["strategy"] != "decorrelated" {
						continue
					}
					if f.Attribution.Status != "attributed" {
						return fmt.Errorf("finding %s regressed but attribution is %s", f.ID, f.Attribution.Status)
					}
					for _, c := range f.Causes {
						if c.Change.ID == f.Attribution.Cause && c.Change.Component == "backoff-strategy" && c.Change.Actor == "operator:e2e" {
							r.logf("finding %s: %s; cause %s (score %.2f)", f.ID, f.Reason, c.Change.ID, c.Score)
							return nil
						}
					}
					return fmt.Errorf("finding %s attributed to %s, not to the backoff-strategy change", f.ID, f.Attribution.Cause)
				}
				return fmt.Errorf("no regressed checkout_latency finding yet (%d findings, error %q)", len(v.Findings), v.Error)
			}
			return fmt.Errorf("no findings for shop")
		})
		r.eventually(t, 30*time.Second, "incident opened by the controller", func(ctx context.Context) error {
			var incs []incidentSummary
			if err := GetJSON(ctx, "http://"+r.addrs.Tailguard+"/api/v1/incidents", &incs); err != nil {
				return err
			}
			for _, inc := range incs {
				if inc.Cause.Kind == "flag" && inc.Cause.FlagKey == "backoff-strategy" {
					incidentID = inc.ID
					r.logf("incident %s: phase %s, rung %s, confidence %.2f", inc.ID, inc.Phase, inc.Rung, inc.Cause.Confidence)
					return nil
				}
			}
			return fmt.Errorf("incidents: %+v", incs)
		})
	})

	if readOnly {
		must("fault: read-only flag directory: the action fails loudly and is retried", func(t *testing.T) {
			r.eventually(t, 60*time.Second, "two failed flag writes", func(ctx context.Context) error {
				fs, err := r.sidecarMetrics(ctx)
				if err != nil {
					return err
				}
				failed, _ := fs.Sum("tailguard_actions_total", map[string]string{"result": "failed"})
				if failed < 2 {
					return fmt.Errorf("tailguard_actions_total{result=\"failed\"} = %v", failed)
				}
				if applied, _ := fs.Sum("tailguard_actions_total", map[string]string{"result": "applied"}); applied != 0 {
					return fmt.Errorf("an action was applied to a read-only directory")
				}
				return nil
			})
			line, ok := r.logContains("tailguard", "level=ERROR", `msg="flag write"`)
			if !ok {
				t.Errorf("no error log line for the failed flag write")
			} else {
				r.logf("sidecar log: %s", line)
			}
			after, _ := r.flagFileState(t) // fails the test if the file is not valid
			if string(after) != string(beforeFault) {
				t.Errorf("the flag file changed in the read-only directory")
			}
			if j, _ := os.ReadFile(r.flagFile + ".journal.jsonl"); string(j) != string(beforeJournal) {
				t.Errorf("the journal changed although no write succeeded:\n%s", j)
			}
			if names := dirNames(t, r.flagDir); !slices.Equal(names, beforeNames) {
				t.Errorf("flag directory holds %v, want %v (a temporary file left behind?)", names, beforeNames)
			}
			undoReadOnly()
			r.logf("flag directory writable again")
		})
	}

	must("the sidecar changes the flag file, journaled with the incident", func(t *testing.T) {
		r.eventually(t, 45*time.Second, "journal entry by the controller", func(context.Context) error {
			for _, e := range r.journal(t) {
				if e.Actor == flags.ActorController {
					controllerEntry = e
					return nil
				}
			}
			return errNotYet
		})
		e := controllerEntry
		r.logf("journal: seq %d %s by %s, incident %s, key %s: %s", e.Seq, e.Action, e.Actor, e.Incident, e.IdempotencyKey, e.Reason)
		if e.Incident == "" || e.Incident != incidentID {
			t.Errorf("journal entry incident %q, want the controller's incident %q", e.Incident, incidentID)
		}
		if !strings.HasPrefix(e.IdempotencyKey, incidentID+"/") {
			t.Errorf("idempotency key %q does not name incident %q", e.IdempotencyKey, incidentID)
		}
		if _, rev := r.flagFileState(t); rev < e.RevisionAfter {
			t.Errorf("flag file at revision %d, journal says %d", rev, e.RevisionAfter)
		}
		names := dirNames(t, r.flagDir)
		for _, n := range names {
			if n != "flags.json" && n != "flags.json.journal.jsonl" && n != "flags.json.lock" && n != "flags.json"+flags.StateSuffix {
				t.Errorf("unexpected file %s next to the flag file", n)
			}
		}
		if applied := r.metric(t, "tailguard_actions_total", map[string]string{"result": "applied"}); applied < 1 {
			t.Errorf("tailguard_actions_total{result=\"applied\"} = %v", applied)
		}
		r.eventually(t, 10*time.Second, "Grafana annotation of the action", func(context.Context) error {
			for _, a := range r.grafana.annotations() {
				if slices.Contains(a.Tags, "tailguard") && slices.Contains(a.Tags, e.Action) && strings.Contains(a.Text, incidentID) {
					r.logf("annotation: tags %v: %s", a.Tags, a.Text)
					return nil
				}
			}
			return fmt.Errorf("annotations: %+v", r.grafana.annotations())
		})
	})

	must("shopd picks up the change", func(t *testing.T) {
		want := r.expectedPolicy(t, controllerEntry)
		r.logf("expected shop policy after %s: %v", controllerEntry.Action, want)
		check := func(fs Families) error {
			for k, v := range want {
				var got float64
				var ok bool
				if strings.HasPrefix(k, "strategy=") {
					got, ok = fs.Sum("backoff_policy_info", map[string]string{"strategy": strings.TrimPrefix(k, "strategy=")})
				} else {
					got, ok = fs.Sum("backoff_policy_constant", map[string]string{"constant": k})
				}
				if !ok || got != v {
					return fmt.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
				}
			}
			return nil
		}
		r.eventually(t, 15*time.Second, "shopd's backoff_policy gauges follow the flag file", func(ctx context.Context) error {
			fs, err := Scrape(ctx, "http://"+r.addrs.Shop+"/metrics")
			if err != nil {
				return err
			}
			return check(fs)
		})
		r.eventually(t, 15*time.Second, "Prometheus sees shopd's new policy", func(ctx context.Context) error {
			for k, v := range want {
				q := fmt.Sprintf(`backoff_policy_constant{job="shop",constant=%q}`, k)
				if s, ok := strings.CutPrefix(k, "strategy="); ok {
					q = fmt.Sprintf(`backoff_policy_info{job="shop",strategy=%q}`, s)
				}
				got, err := r.query(ctx, q)
				if err != nil {
					return err
				}
				if got != v {
					return fmt.Errorf("%s = %v, want %v", q, got, v)
				}
			}
			return nil
		})
	})

	t.Run("the signal recovers", func(t *testing.T) {
		r.eventually(t, 100*time.Second, "/checkout p99 back under the SLO (Prometheus and sidecar)", func(ctx context.Context) error {
			v, err := r.query(ctx, r.checkoutP99())
			if err != nil {
				return err
			}
			fs, err := r.sidecarMetrics(ctx)
			if err != nil {
				return err
			}
			sli, ok := fs.Sum("tailguard_slo_sli", map[string]string{"service": "shop", "slo": "checkout-latency"})
			if !(v < sloSeconds) || !ok || !(sli < sloSeconds) {
				return fmt.Errorf("Prometheus p99 %.3fs, sidecar SLI %.3fs", v, sli)
			}
			r.logf("/checkout p99 = %.3fs (Prometheus), %.3fs (sidecar)", v, sli)
			return nil
		})
		var incs []incidentSummary
		if err := GetJSON(context.Background(), "http://"+r.addrs.Tailguard+"/api/v1/incidents", &incs); err != nil {
			t.Fatal(err)
		}
		for _, inc := range incs {
			r.logf("incident %s: phase %s, rung %s, %d action(s)", inc.ID, inc.Phase, inc.Rung, inc.Actions)
			if inc.Phase == "escalated" {
				t.Errorf("incident %s escalated", inc.ID)
			}
		}
		for _, e := range r.journal(t) {
			r.logf("journal: seq %d %s by %s (%s): %s", e.Seq, e.Action, e.Actor, e.IdempotencyKey, e.Reason)
		}
	})

	t.Run("status page shows the incident", func(t *testing.T) {
		r.statusPage(t, incidentID)
	})

	must("kill -9 of the sidecar: the restarted one resumes the incident", func(t *testing.T) {
		before := r.journal(t)
		r.mu.Lock()
		p := r.procs["tailguard"]
		r.stopped["tailguard"] = true
		r.mu.Unlock()
		p.Kill()
		r.logf("sidecar killed (SIGKILL) after %d journal entries", len(before))
		r.startProc(t, "tailguard", r.tailguard,
			"--config.file="+filepath.Join(r.dir, "tailguard.yml"), "--web.listen-address="+r.addrs.Tailguard,
			"--log.level=debug", "--actor=tailguard-e2e")
		r.eventually(t, 30*time.Second, "restarted sidecar shows the incident with its action", func(ctx context.Context) error {
			var incs []incidentSummary
			if err := GetJSON(ctx, "http://"+r.addrs.Tailguard+"/api/v1/incidents", &incs); err != nil {
				return err
			}
			for _, inc := range incs {
				if inc.ID == incidentID && inc.Actions >= 1 {
					r.logf("after the restart: incident %s, phase %s, rung %s, %d action(s)", inc.ID, inc.Phase, inc.Rung, inc.Actions)
					return nil
				}
			}
			return fmt.Errorf("incidents after the restart: %+v", incs)
		})
		// A few cycles later no step of the incident was written twice.
		time.Sleep(6 * time.Second)
		steps := map[string]int{}
		for _, e := range r.journal(t) {
			if e.Actor == flags.ActorController {
				step, _, _ := strings.Cut(e.IdempotencyKey, "#")
				steps[step]++
				if steps[step] > 1 {
					t.Errorf("step %s written twice after the restart", step)
				}
			}
		}
	})

	t.Run("fault: malformed and duplicate webhook payloads", func(t *testing.T) {
		r.webhookFaults(t)
	})

	t.Run("every dashboard panel has data", func(t *testing.T) {
		r.dashboards(t)
	})

	t.Run("fault: Prometheus stopped and restarted", func(t *testing.T) {
		r.prometheusOutage(t)
	})
	r.logf("done")
}

// promAlerts lists Prometheus' alerts named name.
func (r *run) promAlerts(t *testing.T, name string) []promAlert {
	t.Helper()
	var resp struct {
		Data struct {
			Alerts []promAlert `json:"alerts"`
		} `json:"data"`
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := GetJSON(ctx, "http://"+r.addrs.Prometheus+"/api/v1/alerts", &resp); err != nil {
		t.Fatal(err)
	}
	var out []promAlert
	for _, a := range resp.Data.Alerts {
		if a.Labels["alertname"] == name {
			out = append(out, a)
		}
	}
	return out
}

// amAlerts lists Alertmanager's alerts named name.
func (r *run) amAlerts(ctx context.Context, name string) ([]amAlert, error) {
	var as []amAlert
	u := "http://" + r.addrs.Alertmanager + "/api/v2/alerts?filter=" + url.QueryEscape(fmt.Sprintf("alertname=%q", name))
	err := GetJSON(ctx, u, &as)
	return as, err
}

// expectedPolicy returns the backoff_policy gauges shopd must show after
// the controller's change e: the strategy in force (decorrelated after a
// tune; exponential after a shrink, the policy's rollout going from 100 %
// straight to 0 %, or a flip) with its constants from the flag file.
func (r *run) expectedPolicy(t *testing.T, e flags.Entry) map[string]float64 {
	t.Helper()
	strategy := map[string]string{"tune": "decorrelated", "shrink": "exponential", "flip": "exponential"}[e.Action]
	if strategy == "" {
		t.Fatalf("controller action %q: the test knows tune, shrink and flip", e.Action)
	}
	b, _ := r.flagFileState(t)
	var doc struct {
		Flags map[string]struct {
			DefaultVariant string                     `json:"defaultVariant"`
			Variants       map[string]json.RawMessage `json:"variants"`
		} `json:"flags"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	c := doc.Flags["backoff-constants"]
	var byStrategy map[string]map[string]any
	if err := json.Unmarshal(c.Variants[c.DefaultVariant], &byStrategy); err != nil {
		t.Fatalf("backoff-constants: %v", err)
	}
	k := byStrategy[strategy]
	want := map[string]float64{"strategy=" + strategy: 1}
	for field, gauge := range map[string]string{"base": "base_seconds", "cap": "cap_seconds"} {
		if s, ok := k[field].(string); ok {
			d, err := model.ParseDuration(s)
			if err != nil {
				t.Fatalf("backoff-constants %s.%s: %v", strategy, field, err)
			}
			want[gauge] = time.Duration(d).Seconds()
		}
	}
	if n, ok := k["maxAttempts"].(float64); ok {
		want["max_attempts"] = n
	}
	return want
}

// statusPage fetches the status page, checks it names the incident and
// screenshots it in headless Chromium.
func (r *run) statusPage(t *testing.T, incidentID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	u := "http://" + r.addrs.Tailguard + "/"
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	html, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /: %v %v", resp.Status, err)
	}
	_ = os.WriteFile(filepath.Join(r.art, "status.html"), html, 0o644)
	for _, want := range []string{incidentID, "checkout-latency", "backoff-strategy", "<svg"} {
		if !strings.Contains(string(html), want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	if r.chromium == "" {
		t.Skip("SKIP: status page screenshot: chromium not found (install Debian's chromium package or set E2E_CHROMIUM)")
	}
	shot := filepath.Join(r.art, "status.png")
	_ = os.Remove(shot)
	profile := t.TempDir()
	cctx, ccancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer ccancel()
	cmd := exec.CommandContext(cctx, r.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--hide-scrollbars",
		"--user-data-dir="+profile, "--window-size=1200,1400", "--screenshot="+shot, u)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	logf, err := os.Create(filepath.Join(r.art, "logs", "chromium.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	start := time.Now()
	err = cmd.Run()
	// Chromium leaves helper processes in its group: end them all.
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if err != nil {
		t.Fatalf("chromium: %v (see %s)", err, logf.Name())
	}
	fi, err := os.Stat(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	colors := map[[4]uint32]bool{}
	bnd := img.Bounds()
	for y := bnd.Min.Y; y < bnd.Max.Y && len(colors) < 64; y += 7 {
		for x := bnd.Min.X; x < bnd.Max.X; x += 7 {
			cr, cg, cb, ca := img.At(x, y).RGBA()
			colors[[4]uint32{cr, cg, cb, ca}] = true
		}
	}
	r.logf("screenshot %s: %d bytes, %dx%d, ≥%d colours, %.1fs", shot, fi.Size(), bnd.Dx(), bnd.Dy(), len(colors), time.Since(start).Seconds())
	if fi.Size() < 20<<10 || bnd.Dx() != 1200 || bnd.Dy() != 1400 || len(colors) < 8 {
		t.Errorf("screenshot looks empty: %d bytes, %dx%d, %d colours", fi.Size(), bnd.Dx(), bnd.Dy(), len(colors))
	}
}

// webhookFaults posts malformed payloads and a duplicate of Alertmanager's
// own notification to the sidecar's webhook.
func (r *run) webhookFaults(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hook := "http://" + r.addrs.Tailguard + "/api/v1/alerts"
	invalid0 := r.metric(t, "tailguard_webhook_notifications_total", map[string]string{"result": "invalid"})
	for _, bad := range []struct{ body, want string }{
		{`{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"X"}`, "decode"},
		{`{"version":"4","status":"firing","receiver":"tailguard","alerts":[{"status":"firing","labels":{}}]}`, "labels"},
		{`{"version":"3","status":"firing","alerts":[]}`, "version"},
	} {
		code, body, err := post(ctx, hook, bad.body)
		if err != nil {
			t.Fatal(err)
		}
		if code != http.StatusBadRequest || !strings.Contains(body, bad.want) {
			t.Errorf("malformed payload %s: %d %q, want 400 naming %q", bad.body, code, body, bad.want)
		}
	}
	if got := r.metric(t, "tailguard_webhook_notifications_total", map[string]string{"result": "invalid"}) - invalid0; got != 3 {
		t.Errorf("invalid notifications counted: %v, want 3", got)
	}

	if !r.evaluatesRules() {
		r.logf("SKIP: duplicate webhook notification: no alert reached Alertmanager (%s evaluates no rules)", r.backend)
		return
	}
	// Alertmanager's notification of the firing alert, sent again twice:
	// the sidecar must not evaluate it again and again.
	as, err := r.amAlerts(ctx, alertName)
	if err != nil || len(as) == 0 {
		t.Fatalf("alert to replay: %v (%d alerts)", err, len(as))
	}
	a := as[0]
	msg := map[string]any{
		"version": "4", "groupKey": "{}:{alertname=\"" + alertName + "\"}", "status": "firing", "receiver": "tailguard",
		"groupLabels": map[string]string{"alertname": alertName}, "commonLabels": a.Labels, "commonAnnotations": a.Annotations,
		"externalURL": "http://" + r.addrs.Alertmanager,
		"alerts": []map[string]any{{
			"status": "firing", "labels": a.Labels, "annotations": a.Annotations, "startsAt": a.StartsAt,
			"endsAt": time.Time{}, "generatorURL": a.GeneratorURL, "fingerprint": a.Fingerprint,
		}},
	}
	payload, _ := json.Marshal(msg)
	dup := map[string]string{"status": "firing", "outcome": "duplicate"}
	queued := map[string]string{"status": "firing", "outcome": "queued"}
	dup0, queued0 := r.metric(t, "tailguard_webhook_alerts_total", dup), r.metric(t, "tailguard_webhook_alerts_total", queued)
	for i := range 2 {
		code, body, err := post(ctx, hook, string(payload))
		if err != nil || code != http.StatusOK {
			t.Fatalf("replayed notification %d: %d %q %v", i+1, code, body, err)
		}
	}
	dups := r.metric(t, "tailguard_webhook_alerts_total", dup) - dup0
	queuedN := r.metric(t, "tailguard_webhook_alerts_total", queued) - queued0
	r.logf("replayed notification twice: %v duplicate, %v queued", dups, queuedN)
	if dups < 1 || dups+queuedN != 2 || queuedN > 1 {
		t.Errorf("two identical notifications: %v counted duplicate, %v queued; want the second (at least) deduplicated", dups, queuedN)
	}
	if err := r.httpOK(ctx, "http://"+r.addrs.Tailguard+"/-/healthy"); err != nil {
		t.Errorf("sidecar after bad payloads: %v", err)
	}
}

// noDataReason says why a dashboard query cannot have data in this run, or
// "" when it must have data.
func (r *run) noDataReason(key, expr string) string {
	// The catalogue's histograms with both forms, read in their native form.
	readsNative := !strings.Contains(expr, "_bucket") &&
		(strings.Contains(expr, "http_request_duration_seconds{") || strings.Contains(expr, "backoff_delay_seconds{"))
	switch {
	case r.native && strings.Contains(expr, "http_request_duration_seconds_bucket"):
		return "classic buckets: the service exports native histograms only"
	case r.native && strings.Contains(expr, "backoff_delay_seconds_bucket"):
		return "classic buckets: a Prometheus that scrapes native histograms keeps only the native form of a histogram that has both"
	case !r.native && readsNative && r.backend == backendVictoriaMetrics:
		return "native histogram: VictoriaMetrics scrapes the text format, which carries classic buckets only"
	case !r.native && readsNative:
		return "native histogram: the classic runs scrape without native histograms (Debian's Prometheus 2.42 ingests either " +
			"the native or the classic form, not both), keeping the classic buckets the SLO rules read"
	case !r.evaluatesRules() && (strings.Contains(expr, "slo:") || strings.Contains(expr, "ALERTS")):
		return "recording rules and alerts: " + r.backend + " single-node evaluates no rules (vmalert does)"
	case !r.evaluatesRules() && (strings.Contains(expr, "tailguard_webhook_") || strings.Contains(expr, "tailguard_alert_triggers_")):
		return "webhook intake: no alert reaches the sidecar while " + r.backend + " evaluates no rules"
	case strings.Contains(expr, "tailguard_leader{"):
		return "leader election: the e2e sidecar keeps its flags in a file, without replicas; internal/leader and sidecar test it on a real API server"
	}
	return ""
}

// dashboards runs every panel query of the shipped dashboards over the run
// and requires data, except for the allow-listed queries.
func (r *run) dashboards(t *testing.T) {
	ds, err := LoadDashboards(dashboards.FS())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	end := time.Now()
	rng := v1.Range{Start: r.start, End: end, Step: 5 * time.Second}
	total, empty := 0, 0
	for _, d := range ds {
		vals := map[string]string{
			"__rate_interval": "30s", "__interval": "15s", "__range": model.Duration(end.Sub(r.start)).String(),
			"datasource": "prometheus",
		}
		for _, v := range d.Variables {
			switch {
			case v.Type == "datasource":
				continue
			case v.Type == "query":
				sel, label, err := ParseLabelValues(v.Query)
				if err != nil {
					t.Errorf("%s variable %s: %v", d.File, v.Name, err)
					continue
				}
				if sel, err = Substitute(sel, vals); err != nil {
					t.Errorf("%s variable %s: %v", d.File, v.Name, err)
					continue
				}
				var matches []string
				if sel != "" {
					matches = []string{sel}
				}
				lvs, _, _, err := r.prom.LabelValues(ctx, label, matches, r.start, end)
				if err != nil || len(lvs) == 0 {
					t.Errorf("%s variable %s (%s): no values: %v", d.File, v.Name, v.Query, err)
					continue
				}
				if v.Multi || v.IncludeAll {
					vals[v.Name] = cmpOr(v.AllValue, ".+")
				} else {
					ss := make([]string, len(lvs))
					for i, lv := range lvs {
						ss[i] = string(lv)
					}
					sort.Strings(ss)
					vals[v.Name] = ss[0]
				}
			case v.Multi || v.IncludeAll:
				vals[v.Name] = cmpOr(v.AllValue, ".+")
			default:
				vals[v.Name] = cmpOr(v.Current, strings.SplitN(v.Query, ",", 2)[0])
			}
		}
		for _, q := range d.Queries {
			total++
			key := d.File + "/" + q.Panel + "/" + q.RefID
			expr, err := Substitute(q.Expr, vals)
			if err != nil {
				t.Errorf("%s: %v", key, err)
				continue
			}
			val, warns, _, err := r.prom.QueryRange(ctx, expr, rng)
			if err != nil {
				t.Errorf("%s: %s: %v", key, expr, err)
				continue
			}
			n := 0
			if m, ok := val.(model.Matrix); ok {
				for _, s := range m {
					n += len(s.Values) + len(s.Histograms)
				}
			}
			reason := r.noDataReason(key, expr)
			allowed := reason != ""
			switch {
			case n > 0 && allowed:
				r.logf("%s: allow-listed (%s) but has data now", key, reason)
			case n > 0:
			case allowed:
				empty++
				r.logf("%s: no data, allowed: %s", key, reason)
			default:
				empty++
				t.Errorf("%s: no data for %s (warnings %v)", key, expr, warns)
			}
		}
		// Annotation queries mark events (version changes, actions, failed
		// reloads) and may rightly be empty: they must run without error.
		for _, a := range d.Annotations {
			key := d.File + "/annotation " + a.Panel
			expr, err := Substitute(a.Expr, vals)
			if err != nil {
				t.Errorf("%s: %v", key, err)
				continue
			}
			if _, _, _, err := r.prom.QueryRange(ctx, expr, rng); err != nil {
				t.Errorf("%s: %s: %v", key, expr, err)
			}
		}
		r.logf("%s: %d panel and %d annotation queries; variables %v", d.File, len(d.Queries), len(d.Annotations), vals)
	}
	r.logf("dashboards: %d queries, %d without data", total, empty)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// prometheusOutage stops Prometheus for a few cycles: the sidecar's cycles
// fail, it counts query errors, stays ready and takes no action; when
// Prometheus is back its cycles succeed again.
func (r *run) prometheusOutage(t *testing.T) {
	journal0, _ := os.ReadFile(r.flagFile + ".journal.jsonl")
	errors0 := r.metric(t, "tailguard_cycles_total", map[string]string{"service": "shop", "result": "error"})
	qerr0 := r.metric(t, "tailguard_query_errors_total", nil)
	actions0 := r.metric(t, "tailguard_actions_total", nil)

	r.stop(t, "prometheus")
	r.logf("Prometheus stopped")
	down := time.Now()
	r.eventually(t, 30*time.Second, "two failed sidecar cycles with query errors", func(ctx context.Context) error {
		fs, err := r.sidecarMetrics(ctx)
		if err != nil {
			return err
		}
		e, _ := fs.Sum("tailguard_cycles_total", map[string]string{"service": "shop", "result": "error"})
		q, _ := fs.Sum("tailguard_query_errors_total", nil)
		if e-errors0 < 2 || q <= qerr0 {
			return fmt.Errorf("%v failed cycles, %v query errors since the stop", e-errors0, q-qerr0)
		}
		return nil
	})
	ctx := context.Background()
	if err := r.httpOK(ctx, "http://"+r.addrs.Tailguard+"/-/ready"); err != nil {
		t.Errorf("sidecar not ready while Prometheus is down: %v", err)
	}
	var views []findingsView
	if err := GetJSON(ctx, "http://"+r.addrs.Tailguard+"/api/v1/findings", &views); err != nil {
		t.Fatal(err)
	}
	if len(views) == 0 || views[0].Error == "" {
		t.Errorf("findings do not report the failed cycle: %+v", views)
	} else {
		r.logf("findings while Prometheus is down: error %q", views[0].Error)
	}
	html, err := httpGet(ctx, "http://"+r.addrs.Tailguard+"/")
	if err != nil || !strings.Contains(html, "Prometheus is not answering") || !strings.Contains(html, "inconclusive: Prometheus unreachable") {
		t.Errorf("status page does not say the loop is blind (%v)", err)
	}
	if up := r.metric(t, "tailguard_prometheus_up", nil); up != 0 {
		t.Errorf("tailguard_prometheus_up = %v while Prometheus is down", up)
	}
	for _, a := range views[0].Assessments {
		if a.Verdict != "inconclusive" || !strings.Contains(a.Reason, "Prometheus unreachable") {
			t.Errorf("SLO %s while Prometheus is down: %s %q", a.SLO, a.Verdict, a.Reason)
		}
	}
	if j, _ := os.ReadFile(r.flagFile + ".journal.jsonl"); string(j) != string(journal0) {
		t.Errorf("the journal changed while Prometheus was down")
	}
	if a := r.metric(t, "tailguard_actions_total", nil); a != actions0 {
		t.Errorf("tailguard_actions_total moved from %v to %v while Prometheus was down", actions0, a)
	}

	r.startPrometheus(t)
	r.logf("Prometheus restarted after %.1fs down", time.Since(down).Seconds())
	ok0 := r.metric(t, "tailguard_cycles_total", map[string]string{"service": "shop", "result": "ok"})
	r.eventually(t, 60*time.Second, "sidecar cycles succeed again", func(ctx context.Context) error {
		if err := r.httpOK(ctx, "http://"+r.addrs.Prometheus+"/-/ready"); err != nil {
			return err
		}
		fs, err := r.sidecarMetrics(ctx)
		if err != nil {
			return err
		}
		ok, _ := fs.Sum("tailguard_cycles_total", map[string]string{"service": "shop", "result": "ok"})
		if ok-ok0 < 2 {
			return fmt.Errorf("%v successful cycles since the restart", ok-ok0)
		}
		return nil
	})
	if err := r.httpOK(ctx, "http://"+r.addrs.Tailguard+"/-/ready"); err != nil {
		t.Errorf("sidecar not ready after Prometheus came back: %v", err)
	}
	if up := r.metric(t, "tailguard_prometheus_up", nil); up != 1 {
		t.Errorf("tailguard_prometheus_up = %v after Prometheus came back", up)
	}
	var after []findingsView // fresh: decoding into views would keep its old fields
	if err := GetJSON(ctx, "http://"+r.addrs.Tailguard+"/api/v1/findings", &after); err != nil {
		t.Fatal(err)
	}
	if len(after) == 0 || after[0].Error != "" {
		t.Errorf("findings still report an error: %+v", after)
	}
}

func httpGet(ctx context.Context, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return string(b), err
}
