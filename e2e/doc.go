// Package e2e runs tailguard end to end against real Prometheus and
// Alertmanager servers, the real cmd/tailguard and cmd/tailguardctl
// binaries and cmd/shopd, an instrumented service using tailguard's backoff
// package and flag provider.
//
// The test itself carries the build tag e2e, so "go test ./..." skips it:
//
//	go test -tags e2e -count=1 -timeout 10m ./e2e/
//
// or "make test-e2e" (hack/test-e2e), which installs the servers on Debian
// first. It reads the servers' paths from the environment, falling back to
// $PATH, and skips with a clear message when one is missing:
//
//	E2E_PROMETHEUS    prometheus
//	E2E_PROMTOOL      promtool
//	E2E_ALERTMANAGER  alertmanager or prometheus-alertmanager (Debian)
//	E2E_CHROMIUM      chromium or chromium-browser (optional: without it the
//	                  status page screenshot is skipped)
//	E2E_ARTIFACTS     directory for the logs of every process, the status
//	                  page and its screenshot, the flag file and journal
//	                  (default: a temporary directory, removed afterwards)
//
// Everything runs on loopback with random free ports, temporary data
// directories and 1 s scrape and rule evaluation intervals. The shipped
// rules in alerts/ are evaluated in compressed time: [ScaleRules] divides
// every range, offset and "for" duration by a constant factor, so that an
// hour of the SLO windows passes in half a minute. The shipped Alertmanager
// example route is used with the webhook URL and 1 s grouping intervals
// substituted ([AlertmanagerConfig]).
//
// The files of this package without the tag are the harness: processes in
// their own process groups, configuration templating, dashboard queries and
// metric scraping. They have unit tests of their own that run with the
// other packages.
package e2e
