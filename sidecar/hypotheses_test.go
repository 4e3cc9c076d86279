package sidecar

import (
	"testing"
	"time"

	"github.com/tailguard/tailguard/detector"
	"github.com/tailguard/tailguard/detector/changes"
	"github.com/tailguard/tailguard/detector/stats"
)

func TestHypotheses(t *testing.T) {
	at := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	flag := changes.Event{ID: "flag/backoff-strategy@1", Kind: changes.KindFlag, Component: "backoff-strategy", From: "exponential", To: "decorrelated", Time: at}
	gw := changes.Event{ID: "version/dten-gateway@3.0", Kind: changes.KindVersion, Component: "dten-gateway", From: "2.3", To: "3.0", Time: at}
	rep := &detector.Report{
		Findings: []detector.Finding{
			{ID: "weak", Effect: &stats.Ratio{Estimate: 2}, Causes: []detector.Cause{{Change: flag, Score: 0.1}}},
			{ID: "strong", Effect: &stats.Ratio{Estimate: 9},
				Causes:      []detector.Cause{{Change: flag, Score: 0.15, Evidence: []string{"mechanism 0.20"}}, {Change: gw, Score: 0.4}},
				Unexplained: &detector.Hypothesis{Score: 1, Evidence: []string{"mechanism 1.00: attempts to [payments] got slower"}}},
			{ID: "other incident", Effect: &stats.Ratio{Estimate: 50}},
		},
	}
	hs := hypotheses(rep, detector.Incident{ID: "i", Findings: []string{"weak", "strong"}})
	if len(hs) != 3 {
		t.Fatalf("hypotheses %+v, want the strongest finding's two changes and none", hs)
	}
	if hs[0].Name != "none of the known changes" || hs[0].Score != "1.00" || hs[0].Evidence != "mechanism 1.00: attempts to [payments] got slower" {
		t.Errorf("first hypothesis %+v, want none of the known changes at 1.00", hs[0])
	}
	if hs[1].Score != "0.40" || hs[2].Score != "0.15" || hs[2].Evidence != "mechanism 0.20" {
		t.Errorf("hypotheses not best first: %+v", hs)
	}
	if hs := hypotheses(rep, detector.Incident{ID: "j", Findings: []string{"gone"}}); hs != nil {
		t.Errorf("hypotheses of an incident without findings: %+v", hs)
	}
}
