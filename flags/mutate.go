package flags

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// SetVariant returns a mutation that serves variant to everyone: it becomes
// the flag's default variant and, unless keepTargeting, the targeting rule
// is removed (a rule would otherwise keep overriding the default).
func SetVariant(key, variant string, keepTargeting bool) func(*Document) error {
	return func(d *Document) error {
		f, err := d.Flag(key)
		if err != nil {
			return err
		}
		if err := f.SetDefault(variant); err != nil {
			return fmt.Errorf("flag %q: %w", key, err)
		}
		if !keepTargeting {
			f.Targeting = nil
		}
		return nil
	}
}

// SetState returns a mutation that enables or disables a flag.
func SetState(key string, state State) func(*Document) error {
	return func(d *Document) error {
		if state != StateEnabled && state != StateDisabled {
			return invalidf("state %q: must be ENABLED or DISABLED", state)
		}
		f, err := d.Flag(key)
		if err != nil {
			return err
		}
		f.State = state
		return nil
	}
}

// Bucket is one entry of a fractional rule.
type Bucket struct {
	Variant string
	Weight  int64
}

// FractionalRule returns a targeting rule splitting evaluations between
// the buckets by weight. The bucketing value is flagd's default, the flag
// key concatenated with the evaluation's targeting key, so the same subject
// stays in the same bucket as the split changes, and different flags split
// independently.
func FractionalRule(buckets ...Bucket) (json.RawMessage, error) {
	if len(buckets) == 0 {
		return nil, invalidf("fractional rule needs at least one bucket")
	}
	var sum int64
	args := make([]any, len(buckets))
	for i, b := range buckets {
		if b.Weight < 0 {
			return nil, invalidf("bucket %q: weight %d is negative", b.Variant, b.Weight)
		}
		sum += b.Weight
		args[i] = []any{b.Variant, b.Weight}
	}
	if sum == 0 || sum > math.MaxInt32 {
		return nil, invalidf("bucket weights sum to %d, want 1..%d", sum, math.MaxInt32)
	}
	return json.Marshal(map[string]any{"fractional": args})
}

// RolloutWeights converts a percentage (0-100, at most two decimals) into
// integer weights for the rolled-out variant and the rest: whole percents
// as weights out of 100, otherwise out of 10000.
func RolloutWeights(percent float64) (variant, rest int64, err error) {
	if math.IsNaN(percent) || percent < 0 || percent > 100 {
		return 0, 0, invalidf("percent %v: must be between 0 and 100", percent)
	}
	if percent == math.Trunc(percent) {
		return int64(percent), 100 - int64(percent), nil
	}
	bp := math.Round(percent * 100)
	if math.Abs(bp-percent*100) > 1e-6 {
		return 0, 0, invalidf("percent %v: at most two decimals are supported", percent)
	}
	return int64(bp), 10000 - int64(bp), nil
}

// Rollout returns a mutation that serves variant to percent of evaluations
// (by targeting key) and rest to the others, replacing any targeting rule.
// If rest is empty, the flag's default variant is used.
func Rollout(key, variant, rest string, percent float64) func(*Document) error {
	return func(d *Document) error {
		f, err := d.Flag(key)
		if err != nil {
			return err
		}
		if rest == "" {
			dv, ok := f.Default()
			if !ok {
				return flagInvalidf(key, "no default variant; name the variant for the remaining evaluations")
			}
			rest = dv
		}
		for _, v := range []string{variant, rest} {
			if _, ok := f.Variants[v]; !ok {
				return flagInvalidf(key, "%q is not a variant (have %q)", v, f.VariantNames())
			}
		}
		if variant == rest {
			return flagInvalidf(key, "rollout variant and remaining variant are both %q", variant)
		}
		wv, wr, err := RolloutWeights(percent)
		if err != nil {
			return err
		}
		rule, err := FractionalRule(Bucket{variant, wv}, Bucket{rest, wr})
		if err != nil {
			return err
		}
		f.Targeting = rule
		return nil
	}
}

// TargetingSummary describes the flag's targeting in a few words: "-" for
// none, "fractional a=25% b=75%" for a top-level split with literal
// weights, "rule" otherwise.
func (f *Flag) TargetingSummary() string {
	if !f.HasTargeting() {
		return "-"
	}
	rule, err := decodeJSON(f.Targeting)
	if err != nil {
		return "rule"
	}
	m, ok := rule.(map[string]any)
	if !ok || len(m) != 1 {
		return "rule"
	}
	args, ok := m["fractional"].([]any)
	if !ok {
		return "rule"
	}
	type part struct {
		name   string
		weight float64
	}
	var parts []part
	var sum float64
	for _, a := range args {
		b, ok := a.([]any)
		if !ok {
			if _, isExpr := a.(map[string]any); isExpr && len(parts) == 0 {
				continue
			}
			return "fractional"
		}
		if len(b) == 0 {
			return "fractional"
		}
		name, ok := b[0].(string)
		if !ok {
			return "fractional"
		}
		w := 1.0
		if len(b) > 1 {
			if w, ok = b[1].(float64); !ok {
				return "fractional"
			}
		}
		parts = append(parts, part{name, w})
		sum += w
	}
	if sum <= 0 {
		return "fractional"
	}
	var sb strings.Builder
	sb.WriteString("fractional")
	for _, p := range parts {
		fmt.Fprintf(&sb, " %s=%s%%", p.name, strconv.FormatFloat(math.Round(p.weight/sum*10000)/100, 'f', -1, 64))
	}
	return sb.String()
}
