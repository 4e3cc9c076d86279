package detector

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/tailguard/tailguard/detector/changes"
)

func TestUnexplainedHypothesis(t *testing.T) {
	onset := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	flag := changes.Event{ID: "flag/backoff-strategy@1", Kind: changes.KindFlag, Component: "backoff-strategy", Time: onset.Add(-10 * time.Minute)}
	version := changes.Event{ID: "version/dten-gateway@3.0", Kind: changes.KindVersion, Component: "dten-gateway", Time: onset}
	for _, tc := range []struct {
		name     string
		slower   []string
		causes   []Cause
		want     float64
		evidence string
	}{
		{"no change at all", nil, nil, 1, "no known change precedes the onset"},
		{"a change right at the onset", nil, []Cause{{Change: flag, Timing: 1}}, 0, "its timing 1.00"},
		{"a change well before", nil, []Cause{{Change: flag, Timing: 0.3}}, 0.7, "its timing 0.30"},
		{"slower attempts, only a flag change", []string{"payments"}, []Cause{{Change: flag, Timing: 1}}, 1, "mechanism 1.00"},
		{"slower attempts and a version change at the onset", []string{"payments"},
			[]Cause{{Change: flag, Timing: 1}, {Change: version, Timing: 0.9}}, 0, "a version change near the onset can explain it"},
		{"slower attempts, version change long before", []string{"payments"},
			[]Cause{{Change: flag, Timing: 0.8}, {Change: version, Timing: 0.2}}, 1, "mechanism 1.00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &attributor{slower: tc.slower}
			h := a.unexplained(&Finding{onset: onset}, tc.causes)
			if math.Abs(h.Score-tc.want) > 1e-9 {
				t.Errorf("score %v, want %v; evidence %q", h.Score, tc.want, h.Evidence)
			}
			if !strings.Contains(strings.Join(h.Evidence, "; "), tc.evidence) {
				t.Errorf("evidence %q, want it to say %q", h.Evidence, tc.evidence)
			}
		})
	}
}
