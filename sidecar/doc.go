// Package sidecar assembles tailguard's long-running sidecar from its
// configuration: one control loop per service of the policy, a shared
// controller writing the flag file, the Alertmanager webhook intake, the
// change API, the status page and the sidecar's own metrics. cmd/tailguard
// runs it.
//
// A configuration reload builds a complete new runtime first and swaps it in
// only when every part of it was built; the controller's incident state is
// carried over, and the old runtime keeps serving when the new
// configuration is bad.
package sidecar
