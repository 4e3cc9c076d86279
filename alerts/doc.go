// Package alerts holds tailguard's Prometheus rules: the SLO recording rules
// and multi-window, multi-burn-rate alerts for tail latency and retry ratio,
// the alerts on tailguard's own health, and an example Alertmanager route to
// the sidecar's webhook. promtool checks and unit-tests the rules
// (hack/test-rules); this package's tests check what promtool cannot: that
// every metric is documented, that SLO groups are consistent and that every
// alert has a firing and a silent test case.
package alerts

import (
	"embed"
	"io/fs"
)

//go:embed *.rules.yml alertmanager.example.yml
var files embed.FS

// FS returns the rule files (*.rules.yml) and alertmanager.example.yml.
func FS() fs.FS { return files }
