// Package deploy holds deployment examples for the tailguard sidecar: a
// Dockerfile for a static image and, in kubernetes/, a Deployment running the
// sidecar next to a service with a shared flag file volume. The package has
// no code; its tests check that the manifests are consistent (probes, ports,
// volumes, security context, the seed flag file), that the sidecar's loader
// accepts the example configuration and policy, and that the example alerts
// reach the sidecar's webhook, without a cluster.
package deploy
