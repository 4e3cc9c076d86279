// Package sim rehearses tailguard's closed loop without any external
// server: a request-level simulation of the demo service in virtual time,
// scraped into an embedded Prometheus (package promembed), with the
// service's backoff strategy read from a real flag file through the
// OpenFeature provider, so that the controller's writes change its
// behaviour.
//
// # Scenarios
//
// A [Scenario] (YAML, strict, see sim/scenarios) describes the service and
// its third-party upstream (package sim/service), the initial flags, events
// in time (upgrades, flag changes, brown-outs, latency shifts, traffic
// changes, scrape gaps, a corrupted flag file), the ground truth (is there
// a regression, since when, caused by what, is there a benefit to keep)
// and the tailguard configuration to run against it (a controller policy
// and a detector configuration).
//
// # Runs
//
// [Run] builds a world per run (a temporary directory with the flag file
// and its journal, a flags.Store whose clock is virtual, the provider, the
// pods with one flagbind binding each, targeting key = pod name, the
// embedded Prometheus and a scraper), then advances virtual time: requests
// arrive and are simulated one by one, every scrape interval the pods'
// registries are scraped, every evaluation interval the [Cycler] (in
// [ModeTailguard]) or revert-on-alert ([ModeRevert]) runs. After any flag
// change the runner waits, in real time and bounded, until the provider
// serves the file's revision (or has seen it broken or repaired) and makes
// every pod re-read its flags before simulating further, so runs are
// deterministic for a seed.
//
// The tailguard cycler is plugged in through [Options.NewCycler], which
// receives the world as an [Env]. Its [CycleReport] feeds the timeline and
// the detection scores; flag writes are read from the flag journal.
//
// # Scores
//
// [RunScenarios] runs every scenario in the modes it needs (tailguard,
// unguarded, revert-on-alert, and the legacy counterfactual for the
// brown-out benefit) and [Score] turns them into [Row]s: detection and its
// delay, attribution, false alarms, actions, SLO-violation minutes, time to
// SLO restored and the share of the brown-out benefit kept, for tailguard
// and the baselines of package sim/baseline, all measured with PromQL on
// the embedded engine.
package sim
