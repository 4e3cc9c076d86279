package detector

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/detector/changes"
	"github.com/tailguard/tailguard/detector/stats"
)

// Verdict is the outcome for one signal slice.
type Verdict string

// Verdicts. Inconclusive never leads to an action.
const (
	Regressed    Verdict = "regressed"
	Healthy      Verdict = "healthy"
	Inconclusive Verdict = "inconclusive"
)

// Attribution statuses.
const (
	// AttributionNone: no regression, or no candidate scored MinScore.
	AttributionNone = "none"
	// AttributionAttributed: one change stands out.
	AttributionAttributed = "attributed"
	// AttributionAmbiguous: the best changes score within the margin; the
	// controller must not act on one of them alone.
	AttributionAmbiguous = "ambiguous"
	// AttributionUnexplained: the hypothesis that none of the known
	// changes caused the regression scores at least as well as the best
	// change (the upstream slowed on its own, the load grew, ...).
	AttributionUnexplained = "unexplained"
)

// Window is a half-open time interval (Start, End].
type Window struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// Counts are the trials and events behind a finding.
type Counts struct {
	// BaselineTrials and BaselineEvents are summed over the baseline window.
	BaselineTrials float64 `json:"baseline_trials"`
	BaselineEvents float64 `json:"baseline_events"`
	// CurrentTrials and CurrentEvents are summed over CurrentWindow: from
	// the onset to the end after an alarm, the whole monitored window
	// otherwise.
	CurrentTrials float64 `json:"current_trials"`
	CurrentEvents float64 `json:"current_events"`
	CurrentWindow Window  `json:"current_window"`
	// BaselinePooledFrom lists the slices whose baseline stood in for a
	// slice that did not exist before (a new flag variant, a new version).
	BaselinePooledFrom []map[string]string `json:"baseline_pooled_from,omitempty"`
}

// QuantileShift reports the watched latency quantile before and after, from
// histogram_quantile (evidence only: the test runs on exceedance counts).
type QuantileShift struct {
	Quantile float64  `json:"quantile"`
	Baseline *float64 `json:"baseline_seconds,omitempty"`
	Current  *float64 `json:"current_seconds,omitempty"`
}

// Detection reports the sequential test.
type Detection struct {
	// Test names the test, e.g. "binomial CUSUM".
	Test string `json:"test"`
	// P0 is the baseline rate (events per trial) and P1 the alternative
	// the CUSUM is tuned to (P0 × MinEffect).
	P0 float64 `json:"p0"`
	P1 float64 `json:"p1"`
	// Dispersion is the overdispersion φ ≥ 1 estimated from the baseline;
	// log-likelihood ratios are divided by it and intervals widened by √φ.
	Dispersion float64 `json:"dispersion"`
	// Threshold is h; ARL0 the in-control average run length (steps) it
	// guarantees at least.
	Threshold float64 `json:"threshold"`
	ARL0      float64 `json:"arl0_steps"`
	// Statistic is the largest CUSUM value reached.
	Statistic float64    `json:"statistic"`
	Alarm     bool       `json:"alarm"`
	AlarmAt   *time.Time `json:"alarm_at,omitempty"`
	// Onset is the estimated start of the shift.
	Onset *time.Time `json:"onset,omitempty"`
	// Information is the evidence (in nats) the monitored data would carry
	// for a MinEffect shift: Threshold/Information approximates the
	// detection delay, in units of the monitored window.
	Information float64 `json:"information"`
	// Steps counts the monitored steps with data.
	Steps int `json:"steps"`
}

// Query is one PromQL query behind a finding, with where it was evaluated:
// at an instant, or over a range at a step.
type Query struct {
	Expr  string         `json:"expr"`
	At    *time.Time     `json:"at,omitempty"`
	Range *Window        `json:"range,omitempty"`
	Step  model.Duration `json:"step,omitempty"`
}

// String renders the query with its evaluation time or range.
func (q Query) String() string {
	switch {
	case q.At != nil:
		return fmt.Sprintf("@%s  %s", fmtTime(*q.At), q.Expr)
	case q.Range != nil:
		return fmt.Sprintf("[%s, %s] step %s  %s", fmtTime(q.Range.Start), fmtTime(q.Range.End), q.Step, q.Expr)
	}
	return q.Expr
}

// Cause is one candidate change ranked for a finding.
type Cause struct {
	Change changes.Event `json:"change"`
	// Score combines the criteria with the configured weights, 0..1.
	Score float64 `json:"score"`
	// Criteria scores, each 0..1; 0.5 means "no information".
	Timing       float64 `json:"timing"`
	Localisation float64 `json:"localisation"`
	Cohort       float64 `json:"cohort"`
	Topology     float64 `json:"topology"`
	// Mechanism multiplies the weighted score: 1 when the change can
	// produce what was seen, less when it cannot (a backoff flag does not
	// make the upstream's attempts slower).
	Mechanism float64 `json:"mechanism"`
	// Evidence explains each score with numbers.
	Evidence []string `json:"evidence"`
}

// Hypothesis is the competing explanation "none of the known changes":
// its score comes from the same evidence as the causes' (how far the
// onset lies from every change, whether the upstream's own attempts got
// slower with no change that could slow them).
type Hypothesis struct {
	Score    float64  `json:"score"`
	Evidence []string `json:"evidence"`
}

// Attribution summarises the causes of a finding.
type Attribution struct {
	Status string `json:"status"`
	// Cause is the ID of the blamed change when Status is attributed.
	Cause string `json:"cause,omitempty"`
	// Candidates lists the IDs within the margin when Status is ambiguous.
	Candidates []string `json:"candidates,omitempty"`
}

// Finding is the verdict for one signal slice, with its evidence.
type Finding struct {
	// ID is stable for a service, signal and slice.
	ID      string     `json:"id"`
	Service string     `json:"service"`
	Signal  string     `json:"signal"`
	Kind    SignalKind `json:"kind"`
	// Statistic says what was counted, e.g. "requests slower than 0.5s".
	Statistic string            `json:"statistic"`
	Slice     map[string]string `json:"slice"`
	Verdict   Verdict           `json:"verdict"`
	// Reason explains an Inconclusive verdict, or summarises the others.
	Reason    string         `json:"reason"`
	Baseline  Window         `json:"baseline"`
	Monitored Window         `json:"monitored"`
	Step      model.Duration `json:"step"`
	Counts    Counts         `json:"counts"`
	Effect    *stats.Ratio   `json:"effect,omitempty"`
	Quantile  *QuantileShift `json:"quantile,omitempty"`
	Detection *Detection     `json:"detection,omitempty"`
	Causes    []Cause        `json:"causes,omitempty"`
	// Unexplained is the hypothesis that none of the known changes caused
	// a regressed finding, scored against Causes.
	Unexplained *Hypothesis     `json:"unexplained,omitempty"`
	Attribution Attribution     `json:"attribution"`
	Queries     []Query         `json:"queries"`
	Notes       []string        `json:"notes,omitempty"`
	Warnings    []string        `json:"warnings,omitempty"`
	onset       time.Time       // zero when no alarm
	sig         *compiledSignal // back reference for attribution
	stream      *stream
}

// Incident groups regressed findings that share a cause: the unit the
// controller acts on. Its ID is stable for a service and cause.
type Incident struct {
	ID      string `json:"id"`
	Service string `json:"service"`
	// Status is attributed, ambiguous or none (unexplained).
	Status string `json:"status"`
	// Cause is the blamed change when Status is attributed.
	Cause *changes.Event `json:"cause,omitempty"`
	// Candidates lists the indistinguishable changes when ambiguous.
	Candidates []string `json:"candidates,omitempty"`
	// Findings lists the IDs of the regressed findings.
	Findings []string `json:"findings"`
	// Onset is the earliest onset among the findings.
	Onset *time.Time `json:"onset,omitempty"`
	// MaxEffect is the largest effect estimate among the findings.
	MaxEffect float64 `json:"max_effect"`
}

// Summary counts verdicts.
type Summary struct {
	Regressed    int `json:"regressed"`
	Healthy      int `json:"healthy"`
	Inconclusive int `json:"inconclusive"`
}

// Report is the result of one analysis.
type Report struct {
	Service     string         `json:"service"`
	GeneratedAt time.Time      `json:"generated_at"`
	Baseline    Window         `json:"baseline"`
	Monitored   Window         `json:"monitored"`
	Step        model.Duration `json:"step"`
	// Streams is the number of slices watched; Threshold the CUSUM h that
	// keeps FalseAlarmsPerHour over all of them.
	Streams            int             `json:"streams"`
	Threshold          float64         `json:"threshold"`
	FalseAlarmsPerHour float64         `json:"false_alarms_per_hour"`
	Changes            []changes.Event `json:"changes"`
	Summary            Summary         `json:"summary"`
	Incidents          []Incident      `json:"incidents"`
	Findings           []Finding       `json:"findings"`
}

// hashID returns 16 hex digits of SHA-256 over parts.
func hashID(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func findingID(service, signal string, slice map[string]string) string {
	return hashID(service, signal, changes.FormatLabels(slice))
}

// IncidentID returns the stable incident ID for a service and a cause key
// (a change ID, or "ambiguous:" and the candidate IDs).
func IncidentID(service, causeKey string) string {
	return hashID("incident", service, causeKey)
}

// incidents groups regressed findings by attribution.
func incidents(service string, findings []Finding, events []changes.Event) []Incident {
	byID := map[string]changes.Event{}
	for _, e := range events {
		byID[e.ID] = e
	}
	groups := map[string]*Incident{}
	var order []string
	for _, f := range findings {
		if f.Verdict != Regressed {
			continue
		}
		var key string
		switch f.Attribution.Status {
		case AttributionAttributed:
			key = f.Attribution.Cause
		case AttributionAmbiguous:
			key = "ambiguous:" + strings.Join(f.Attribution.Candidates, "|")
		default:
			key = "unattributed"
		}
		inc, ok := groups[key]
		if !ok {
			inc = &Incident{ID: IncidentID(service, key), Service: service, Status: f.Attribution.Status}
			if f.Attribution.Status == AttributionAttributed {
				if e, ok := byID[f.Attribution.Cause]; ok {
					inc.Cause = &e
				}
			}
			inc.Candidates = slices.Clone(f.Attribution.Candidates)
			groups[key] = inc
			order = append(order, key)
		}
		inc.Findings = append(inc.Findings, f.ID)
		if f.Detection != nil && f.Detection.Onset != nil && (inc.Onset == nil || f.Detection.Onset.Before(*inc.Onset)) {
			t := *f.Detection.Onset
			inc.Onset = &t
		}
		if f.Effect != nil && f.Effect.Estimate > inc.MaxEffect {
			inc.MaxEffect = f.Effect.Estimate
		}
	}
	out := make([]Incident, 0, len(order))
	for _, k := range order {
		out = append(out, *groups[k])
	}
	return out
}

func cloneLabels(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return maps.Clone(m)
}
