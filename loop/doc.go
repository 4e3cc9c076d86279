// Package loop runs tailguard's control cycle for one service, the one-way
// data flow of the design:
//
//	query → detect → attribute → decide → write flag
//
// Each Cycle
//
//  1. reads the SLIs of the service's SLOs (current value and a forecast
//     one window ahead from the trend) with instant queries,
//  2. lists the changes of the lookback window and, when there are any, runs
//     the detector from the earliest of them: findings per signal slice,
//     ranked causes, incidents,
//  3. maps findings onto the SLOs (Assess, a pure function): an SLO is
//     regressed when a regressed finding covers it, inconclusive when its
//     findings are, healthy otherwise; the cause is the incident's change
//     translated into the controller's terms (a flag change of the policy's
//     strategy flag, or a change of one of the policy's components),
//  4. reads the upstream's retry statistics and the flag file's state, and
//  5. hands the observation to the controller, which decides and writes.
//
// Query failures end the cycle with an error and no decision; data problems
// (NaN, no data, warnings) make the SLO inconclusive, which the controller
// never acts on. Every stage is a span of the cycle's trace when a tracer
// provider is configured.
package loop
