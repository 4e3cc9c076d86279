package alerts

import (
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"

	"github.com/tailguard/tailguard/internal/golden"
)

var update = flag.Bool("update", false, "rewrite native/slo-shop.rules.yml from slo-shop.rules.yml")

// classicSlowFraction is the tail-latency SLI of slo-shop.rules.yml: the
// fraction of requests above the threshold bucket, from classic buckets.
var classicSlowFraction = regexp.MustCompile(`\(\n\s+sum by \(job, endpoint\) \(rate\(http_request_duration_seconds_count\{([^}]*)\}\[(\w+)\]\)\)\n` +
	`\s+-\n` +
	`\s+sum by \(job, endpoint\) \(rate\(http_request_duration_seconds_bucket\{[^}]*, le="([0-9.]+)"\}\[\w+\]\)\)\n` +
	`\s+\)\n` +
	`\s+/\n` +
	`\s+sum by \(job, endpoint\) \(rate\(http_request_duration_seconds_count\{[^}]*\}\[\w+\]\)\)`)

var thresholdComment = regexp.MustCompile(`slower than the le="([0-9.]+)" bucket\.`)

const nativeHeader = `# SLO definitions for the example service shop, for services that export
# native histograms only: the same groups, records and labels as
# ../slo-shop.rules.yml, with the tail-latency SLI read from the native
# histogram by histogram_fraction. Load this file instead of that one (the
# two record the same series); the alerts in ../slo-alerts.rules.yml serve
# both. The threshold need not be a bucket boundary: histogram_fraction
# interpolates within the native bucket that holds it.
#
# Generated from ../slo-shop.rules.yml by alerts/native_test.go (go test
# ./alerts -update); edit that file, not this one.
`

// nativeRules derives the native-histogram variant of slo-shop.rules.yml.
func nativeRules(classic string) (string, int) {
	n := 0
	out := classicSlowFraction.ReplaceAllStringFunc(classic, func(m string) string {
		n++
		sub := classicSlowFraction.FindStringSubmatch(m)
		return "histogram_fraction(" + sub[3] + ", +Inf, sum by (job, endpoint) (rate(http_request_duration_seconds{" + sub[1] + "}[" + sub[2] + "])))"
	})
	out = thresholdComment.ReplaceAllString(out, "slower than ${1} s, read from the native histogram.")
	// Replace the leading comment block with the native one.
	body := out[strings.Index(out, "groups:"):]
	return nativeHeader + body, n
}

func TestNativeRulesFollowClassic(t *testing.T) {
	classic, err := os.ReadFile("slo-shop.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	native, n := nativeRules(string(classic))
	if n != 7 {
		t.Fatalf("rewrote %d tail-latency SLI expressions, want the 7 windows", n)
	}
	if strings.Contains(native, "_bucket") {
		t.Error("the native rules still read classic buckets")
	}
	golden.Check(t, "native/slo-shop.rules.yml", []byte(native), *update)
	var rf ruleFile
	if err := decodeStrict([]byte(native), &rf); err != nil {
		t.Fatal(err)
	}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if _, err := parser.NewParser(parser.Options{}).ParseExpr(r.Expr); err != nil {
				t.Errorf("%s %s: %v", g.Name, r.Record, err)
			}
		}
	}
}
