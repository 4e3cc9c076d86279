//go:build e2e && linux

package e2e

import (
	"math"
	"testing"
)

// TestFitScale checks the growth fit on rows that follow a known law.
func TestFitScale(t *testing.T) {
	var rows []scaleRow
	for _, z := range []scaleSize{{1, 10}, {1, 100}, {10, 10}, {10, 100}, {100, 10}, {100, 100}} {
		rows = append(rows, scaleRow{size: z, roundSeconds: 0.3 + 0.02*float64(z.services) + 0.0008*float64(z.services*z.slices)})
	}
	a, b, c, r2, ok := fitScale(rows)
	if !ok || math.Abs(a-0.3) > 1e-9 || math.Abs(b-0.02) > 1e-9 || math.Abs(c-0.0008) > 1e-12 || r2 < 0.999999 {
		t.Errorf("fit = %v, %v, %v (R² %v, ok %v); want 0.3, 0.02, 0.0008", a, b, c, r2, ok)
	}
	if _, _, _, _, ok := fitScale(rows[:3]); ok {
		t.Error("a fit of three sizes should be refused")
	}
}
