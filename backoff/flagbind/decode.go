package flagbind

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/backoff"
)

// Keys of a constants object.
const (
	keyBase        = "base"
	keyCap         = "cap"
	keyMultiplier  = "multiplier"
	keyJitter      = "jitter"
	keyMaxAttempts = "maxAttempts"
	keyMaxElapsed  = "maxElapsed"
	keyRetryBudget = "retryBudget"
)

// Constants are the result of decoding a backoff-constants flag value for
// one strategy.
type Constants struct {
	// Config is the default configuration with the constants the flag sets
	// overlaid: base, cap, multiplier, jitter, maxAttempts, maxElapsed.
	Config backoff.Config
	// RetryBudget is the flag's retryBudget, the ratio of retries to calls
	// a [backoff.RatioBudget] allows, in (0, 1]; 0 when the flag omits it.
	RetryBudget float64
}

// ParseConstants decodes a backoff-constants flag value given as JSON the
// way a [Binding] does: it takes the entry for defaults.Strategy (or the flat
// object), overlays the constants it sets onto defaults and checks that
// retryBudget lies in (0, 1]. JSON null yields defaults unchanged. The
// result is neither clamped to bounds nor validated by [backoff.New]. Errors
// name the offending key, for example "decorrelated.cap: ...".
func ParseConstants(data []byte, defaults backoff.Config) (Constants, error) {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return Constants{Config: defaults}, fmt.Errorf("want a JSON object: %w", err)
	}
	return applyConstants(defaults, v)
}

// applyConstants overlays the constants flag value v onto c for strategy
// c.Strategy. v is either keyed by strategy name, each entry an object of
// constants, or a flat object of constants that applies to any strategy. A
// keyed object without an entry for the strategy leaves c unchanged, as does
// a nil v (a disabled flag). Errors name the offending key.
func applyConstants(c backoff.Config, v any) (Constants, error) {
	obj, err := asObject(v)
	if err != nil || obj == nil {
		return Constants{Config: c}, err
	}
	keyed, flat := false, false
	for k := range obj {
		if _, err := backoff.ParseStrategy(k); err == nil {
			keyed = true
		} else {
			flat = true
		}
	}
	if keyed && flat {
		return Constants{Config: c}, fmt.Errorf("mixes strategy keys with constant keys (%s)", strings.Join(sortedKeys(obj), ", "))
	}
	if keyed {
		entry, ok := obj[c.Strategy.String()]
		if !ok {
			return Constants{Config: c}, nil
		}
		if obj, err = asObject(entry); err != nil {
			return Constants{Config: c}, fmt.Errorf("%s: %w", c.Strategy, err)
		}
		k, err := applyFlat(c, obj)
		if err != nil {
			return k, fmt.Errorf("%s.%w", c.Strategy, err)
		}
		return k, nil
	}
	return applyFlat(c, obj)
}

// applyFlat overlays an object of constants onto c.
func applyFlat(c backoff.Config, obj map[string]any) (Constants, error) {
	k := Constants{Config: c}
	for _, key := range sortedKeys(obj) {
		v := obj[key]
		var err error
		switch key {
		case keyBase:
			k.Config.Base, err = asDuration(v)
		case keyCap:
			k.Config.Cap, err = asDuration(v)
		case keyMaxElapsed:
			k.Config.MaxElapsed, err = asDuration(v)
		case keyMultiplier:
			k.Config.Multiplier, err = asFloat(v)
		case keyJitter:
			k.Config.Jitter, err = asFloat(v)
		case keyMaxAttempts:
			k.Config.MaxAttempts, err = asInt(v)
		case keyRetryBudget:
			k.RetryBudget, err = asRatio(v)
		default:
			err = fmt.Errorf("unknown constant (want base, cap, multiplier, jitter, maxAttempts, maxElapsed or retryBudget)")
		}
		if err != nil {
			return k, fmt.Errorf("%s: %w", key, err)
		}
	}
	return k, nil
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// asObject accepts a JSON object as decoded by a provider, or as JSON text.
func asObject(v any) (map[string]any, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case map[string]any:
		return v, nil
	case string:
		return decodeJSONObject([]byte(v))
	case []byte:
		return decodeJSONObject(v)
	default:
		return nil, fmt.Errorf("want an object, got %T", v)
	}
}

func decodeJSONObject(b []byte) (map[string]any, error) {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("want a JSON object: %w", err)
	}
	return m, nil
}

// asDuration accepts a Prometheus duration string such as "1m30s" or
// "250ms".
func asDuration(v any) (time.Duration, error) {
	s, ok := v.(string)
	if !ok {
		return 0, fmt.Errorf("want a duration string such as \"100ms\", got %T %v", v, v)
	}
	d, err := model.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	return time.Duration(d), nil
}

func asFloat(v any) (float64, error) {
	var f float64
	switch v := v.(type) {
	case float64:
		f = v
	case float32:
		f = float64(v)
	case int:
		f = float64(v)
	case int64:
		f = float64(v)
	case json.Number:
		var err error
		if f, err = v.Float64(); err != nil {
			return 0, err
		}
	default:
		return 0, fmt.Errorf("want a number, got %T %v", v, v)
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("want a finite number, got %v", f)
	}
	return f, nil
}

// asRatio accepts a number in (0, 1]. Zero is refused rather than read as
// "no budget": a flag keeps the service's configured budget by omitting the
// key.
func asRatio(v any) (float64, error) {
	f, err := asFloat(v)
	if err != nil {
		return 0, err
	}
	if f <= 0 || f > 1 {
		return 0, fmt.Errorf("%v is outside (0, 1] (omit the key to keep the configured budget)", f)
	}
	return f, nil
}

func asInt(v any) (int, error) {
	f, err := asFloat(v)
	if err != nil {
		return 0, err
	}
	if f != math.Trunc(f) || f < math.MinInt32 || f > math.MaxInt32 {
		return 0, fmt.Errorf("want an integer, got %v", f)
	}
	return int(f), nil
}
