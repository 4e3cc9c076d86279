package sim

import (
	"context"
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/controller/policy"
	"github.com/tailguard/tailguard/detector"
	"github.com/tailguard/tailguard/promembed"
)

// Cycler is tailguard's control cycle as the simulator drives it: query,
// detect, attribute, decide, write the flag file. The runner calls it every
// evaluation interval with the virtual time; it must do its I/O (queries,
// flag writes, journal) before it returns, so that the runner can let the
// service pick up its flag writes before simulating further.
//
// An error is recorded in the timeline and the run goes on, as the sidecar
// would try again on its next cycle.
type Cycler interface {
	Cycle(ctx context.Context, now time.Time) (CycleReport, error)
}

// CyclerFunc adapts a function to Cycler.
type CyclerFunc func(ctx context.Context, now time.Time) (CycleReport, error)

// Cycle calls f.
func (f CyclerFunc) Cycle(ctx context.Context, now time.Time) (CycleReport, error) {
	return f(ctx, now)
}

// NopCycler never finds or does anything: the "no guard" run.
type NopCycler struct{}

// Cycle returns an empty report.
func (NopCycler) Cycle(context.Context, time.Time) (CycleReport, error) { return CycleReport{}, nil }

// CycleReport is what one cycle saw and did, in the simulator's terms. The
// adapter around the sidecar's loop fills it from the loop's result; the
// runner takes the timeline and the scores from it (and flag writes from
// the flag journal, whatever the report says).
type CycleReport struct {
	// Findings are the detector's verdicts of this cycle; healthy ones may
	// be left out.
	Findings []Finding
	// Actions are the controller's decisions of this cycle that did
	// something or were meant to (applied, proposed, failed, escalated).
	Actions []Action
	// Verifications are the checks of earlier actions made in this cycle.
	Verifications []Verification
	// Notes are other things worth a timeline line, for example "flag file
	// invalid, not acting".
	Notes []string
}

// Verdicts of a Finding.
const (
	VerdictRegressed    = "regressed"
	VerdictHealthy      = "healthy"
	VerdictInconclusive = "inconclusive"
)

// Finding is one detector verdict on a signal slice.
type Finding struct {
	// Signal names the detector signal, e.g. checkout_latency.
	Signal string
	// Slice holds the slice labels, e.g. {endpoint: /checkout, strategy: decorrelated}.
	Slice map[string]string
	// Verdict is regressed, healthy or inconclusive.
	Verdict string
	// Effect is the estimated ratio current/baseline with its interval
	// [EffectLow, EffectHigh] at level Confidence; zero when unknown.
	Effect, EffectLow, EffectHigh, Confidence float64
	// Onset is the estimated start of the regression.
	Onset time.Time
	// Cause is the attributed change as "flag:<key>" or
	// "component:<name>", "ambiguous", or empty when unattributed.
	Cause string
	// CauseDetail describes it, e.g. "backoff-strategy → decorrelated".
	CauseDetail string
	// CauseScore is the attribution's score or confidence in [0, 1].
	CauseScore float64
	// Evidence explains the attribution.
	Evidence []string
	// Reason summarises the verdict.
	Reason string
}

// Action is one decision of the controller.
type Action struct {
	Incident string
	// Rung is tune, shrink, flip, escalate, restore or revert.
	Rung string
	// Status is applied, applied-elsewhere, proposed, observed, notified
	// or failed.
	Status string
	// Change describes the flag change, e.g. "decorrelated cap 2s → 1s".
	Change string
	Reason string
	// Expected is the model's expectation, e.g. "p99 612ms → 371ms".
	Expected string
}

// Verification is the check of an earlier action.
type Verification struct {
	Incident string
	Rung     string
	// Outcome is recovered, improved, no-improvement, worse, regressed or
	// marginal.
	Outcome string
	Detail  string
	// Calibration holds the action's predicted and verified effect per
	// SLO, where the action carried a prediction.
	Calibration []Calibration `json:"calibration,omitempty"`
}

// Calibration is one SLO's predicted and verified value after an action.
type Calibration struct {
	SLO       string  `json:"slo"`
	Predicted float64 `json:"predicted"`
	Verified  float64 `json:"verified"`
	// Objective scales the error: |verified − predicted| / objective.
	Objective float64 `json:"objective"`
}

// Error returns |verified − predicted| relative to the objective, NaN when
// the objective is not positive.
func (c Calibration) Error() float64 {
	if !(c.Objective > 0) {
		return math.NaN()
	}
	return math.Abs(c.Verified-c.Predicted) / c.Objective
}

// Querier runs PromQL; *promembed.DB implements it, as does the HTTP API
// client.
type Querier interface {
	Query(ctx context.Context, q string, ts time.Time) (model.Value, v1.Warnings, error)
	QueryRange(ctx context.Context, q string, r v1.Range) (model.Value, v1.Warnings, error)
}

// Clock is the run's virtual clock. It is safe for concurrent use.
type Clock struct{ ns atomic.Int64 }

// Now returns the virtual time.
func (c *Clock) Now() time.Time { return time.Unix(0, c.ns.Load()).UTC() }

func (c *Clock) set(t time.Time) { c.ns.Store(t.UnixNano()) }

// Env is what a Cycler is built from: the world of one run.
type Env struct {
	// Scenario is the scenario being run.
	Scenario *Scenario
	// DB is the embedded Prometheus holding the scraped samples; it is
	// also the Querier.
	DB      *promembed.DB
	Querier Querier
	// FlagFile is the flag file the service reads; JournalPath its
	// journal. A flags.Store for FlagFile must use Clock.Now as its Now,
	// so that journal entries carry virtual times.
	FlagFile    string
	JournalPath string
	// Dir is a scratch directory for the cycler's own state.
	Dir string
	// Registerer takes the sidecar's own metrics (tailguard_*).
	Registerer prometheus.Registerer
	// Start is the virtual start time; Clock tells the virtual time.
	Start time.Time
	Clock *Clock
	// Policy is the controller policy (a fresh copy per run).
	Policy *policy.Policy
	// Detector is the detector configuration with Changes.FlagJournal
	// set to JournalPath.
	Detector detector.Config
	// Logger receives the cycler's logs.
	Logger *slog.Logger
}
