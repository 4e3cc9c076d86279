package sim

import (
	"encoding/json"
	"math"
	"time"
)

// jsonFloat encodes NaN and infinities as null, which JSON cannot carry.
func jsonFloat(f float64) *float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	return &f
}

// MarshalJSON encodes a missing value as null.
func (p Point) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		T time.Time `json:"t"`
		V *float64  `json:"v"`
	}{p.T, jsonFloat(p.V)})
}

// MarshalJSON encodes an unknown success ratio as null.
func (b BrownoutResult) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		From    time.Time `json:"from"`
		To      time.Time `json:"to"`
		Success *float64  `json:"success"`
	}{b.From, b.To, jsonFloat(b.Success)})
}

// MarshalJSON encodes a benefit that does not apply as null.
func (r Row) MarshalJSON() ([]byte, error) {
	type plain Row
	return json.Marshal(struct {
		plain
		Benefit *float64 `json:"benefit"`
	}{plain(r), jsonFloat(r.Benefit)})
}

// MarshalJSON encodes a benefit or calibration error that does not apply
// as null.
func (r ClassRow) MarshalJSON() ([]byte, error) {
	type plain ClassRow
	return json.Marshal(struct {
		plain
		Benefit     *float64 `json:"benefit"`
		Calibration *float64 `json:"calibration_error"`
	}{plain(r), jsonFloat(r.Benefit), jsonFloat(r.Calibration)})
}
