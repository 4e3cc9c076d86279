// Package docs holds tailguard's reference documentation and reads the metric
// catalogue in metrics.md, the list of every metric the project exposes or
// reads. Tests of the dashboards, the alerting rules and the sidecar check the
// metric names they use against it.
package docs
