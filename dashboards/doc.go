// Package dashboards holds tailguard's Grafana dashboards, embedded so that a
// binary can serve or provision them:
//
//   - tailguard-service.json: a service's tail latency (p99 from classic and
//     native histograms, fraction above the SLO threshold), retry ratio, backoff
//     delays and budget denials, versions, with annotations for version
//     changes and tailguard's actions;
//   - tailguard-health.json: the sidecar's control loop, queries, findings,
//     actions, tuned constants, flag variants, reloads and action budget.
//
// The tests validate each file against the Grafana dashboard JSON schema,
// parse every PromQL expression and check every metric it names against
// docs/metrics.md.
package dashboards

import (
	"embed"
	"io/fs"
)

//go:embed *.json
var files embed.FS

// FS returns the dashboards, one JSON file per dashboard named after its uid.
func FS() fs.FS { return files }
