package classes

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tailguard/tailguard/sim"
	"github.com/tailguard/tailguard/sim/scenarios"
)

func TestDrawIsDeterministicAndValid(t *testing.T) {
	for _, c := range All() {
		t.Run(c.Name, func(t *testing.T) {
			var prev []byte
			for i := range 4 {
				a, err := c.Draw(7, i, scenarios.FS())
				if err != nil {
					t.Fatalf("draw %d: %v", i, err)
				}
				b, err := c.Draw(7, i, scenarios.FS())
				if err != nil {
					t.Fatalf("draw %d again: %v", i, err)
				}
				ya, _ := Marshal(a)
				yb, _ := Marshal(b)
				if !bytes.Equal(ya, yb) {
					t.Fatalf("draw %d differs between two calls with the same seed", i)
				}
				if bytes.Equal(ya, prev) {
					t.Fatalf("draw %d equals draw %d: the draws do not vary", i, i-1)
				}
				prev = ya
				checkTruth(t, a)
			}
			other, err := c.Draw(8, 0, scenarios.FS())
			if err != nil {
				t.Fatal(err)
			}
			first, _ := c.Draw(7, 0, scenarios.FS())
			yo, _ := Marshal(other)
			yf, _ := Marshal(first)
			if bytes.Equal(yo, yf) {
				t.Fatal("another seed gives the same draw")
			}
		})
	}
}

// checkTruth checks what the sweep's scoring relies on.
func checkTruth(t *testing.T, sc *sim.Scenario) {
	t.Helper()
	tr := sc.Truth
	if tr.Regression {
		if len(tr.Causes) == 0 {
			t.Errorf("%s: a regression without causes", sc.Name)
		}
		if tr.Onset <= 0 || tr.Onset >= sc.Duration {
			t.Errorf("%s: onset %v outside the run (%v)", sc.Name, tr.Onset, sc.Duration)
		}
		// The detector needs an hour of baseline before the first change.
		if time.Duration(tr.Onset) < time.Hour {
			t.Errorf("%s: onset %v leaves less than an hour of baseline", sc.Name, tr.Onset)
		}
	} else if len(tr.Causes) > 0 {
		t.Errorf("%s: causes %v without a regression", sc.Name, tr.Causes)
	}
	for _, w := range tr.NoAction {
		if w.From >= w.To || w.To > sc.Duration {
			t.Errorf("%s: no-action window %v–%v outside the run", sc.Name, w.From, w.To)
		}
	}
	if len(sc.Events) == 0 {
		t.Errorf("%s: no events", sc.Name)
	}
}

func TestClassesCoverTheList(t *testing.T) {
	var nums []int
	for _, c := range All() {
		nums = append(nums, c.Number)
		if got, ok := ByName(c.Name); !ok || got.Number != c.Number {
			t.Errorf("ByName(%q) = %v, %v", c.Name, got.Number, ok)
		}
		if c.Summary == "" || strings.ContainsAny(c.Name, " _") {
			t.Errorf("class %d: name %q or summary missing", c.Number, c.Name)
		}
	}
	if !slices.Equal(nums, []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}) {
		t.Errorf("classes %v, want 1-10 in order", nums)
	}
	if _, ok := ByName("nope"); ok {
		t.Error("ByName(nope) found a class")
	}
}

// The classes whose right move includes "none of the known changes" say
// so; the flag-caused ones name a flag.
func TestTruthCauses(t *testing.T) {
	want := map[string]string{
		"innocent-change":   "none",
		"traffic-growth":    "none",
		"unfixable-upgrade": "component:dten-gateway",
		"second-change":     "flag:backoff-constants",
		"slow-creep":        "flag:backoff-strategy",
		"partial-rollout":   "flag:backoff-strategy",
		"native-histograms": "flag:backoff-strategy",
	}
	for name, cause := range want {
		c, _ := ByName(name)
		sc, err := c.Draw(1, 0, scenarios.FS())
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(sc.Truth.Causes, cause) {
			t.Errorf("%s: causes %v, want %s among them", name, sc.Truth.Causes, cause)
		}
	}
}
